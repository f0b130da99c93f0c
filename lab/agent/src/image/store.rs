//! The node's images: pulled over the registry API, checked blob by blob,
//! unpacked once per manifest digest, and kept under the lab's folder:
//!
//! - `images/blobs/sha256/HEX`: every blob, stored only after its digest matched;
//! - `images/unpacked/HEX/{rootfs/,config.json}`: one root filesystem per
//!   platform manifest (`config.json` is written last: a directory without
//!   it is an unfinished unpack and is done again);
//! - `images/refs/KEY`: the manifest digest a reference last resolved to,
//!   for `imagePullPolicy: IfNotPresent` and `Never`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use sha2::{Digest, Sha256};

use super::layers::{self, LayerError};
use super::manifest::{self, Answer, Descriptor, ManifestError, RunConfig};
use super::reference::{Reference, ReferenceError};
use super::registry::{Credentials, RegistryError, Repository};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The container's policy, or Kubernetes' default for its reference
    /// (`Always` for `:latest` or no tag, else `IfNotPresent`).
    pub fn of(container: &Container, reference: &Reference) -> PullPolicy {
        match container.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ if reference.digest.is_none() && reference.tag.as_deref() == Some("latest") => {
                PullPolicy::Always
            }
            _ => PullPolicy::IfNotPresent,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("image {0} is not present on the node and its imagePullPolicy is Never")]
    NeverPull(String),
    #[error("failed to pull {reference} from {host}")]
    Registry {
        reference: String,
        host: String,
        #[source]
        source: RegistryError,
    },
    #[error("failed to pull {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("failed to unpack {reference}")]
    Layer {
        reference: String,
        #[source]
        source: LayerError,
    },
    #[error("failed to store {reference} under {path}")]
    Store {
        reference: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    /// The container's waiting reason, as the kubelet gives it.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::Reference(_) => "InvalidImageName",
            PullError::NeverPull(_) => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }

    /// The error with every cause, for the pod's status and its Event.
    pub fn message(&self) -> String {
        crate::error_chain(self)
    }
}

/// A pulled image, ready to run.
#[derive(Debug, Clone)]
pub struct Image {
    /// The platform manifest's digest.
    pub digest: String,
    pub rootfs: PathBuf,
    pub config: RunConfig,
    /// False when it was already on the node.
    pub pulled: bool,
}

pub struct ImageStore {
    dir: PathBuf,
    mirror: Option<String>,
    http: reqwest::Client,
    /// One pull at a time: two pods of one image unpack it once.
    pulling: tokio::sync::Mutex<()>,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl ImageStore {
    /// `mirror` is the registry every reference that does not name a
    /// loopback registry is fetched from.
    pub fn new(dir: &Path, mirror: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        ImageStore {
            dir: dir.to_owned(),
            mirror,
            http,
            pulling: tokio::sync::Mutex::new(()),
        }
    }

    fn ref_file(&self, reference: &Reference) -> PathBuf {
        let key = hex::encode(Sha256::digest(reference.to_string().as_bytes()));
        self.dir.join("refs").join(&key[..32])
    }

    fn unpacked(&self, digest: &str) -> PathBuf {
        self.dir.join("unpacked").join(hex_of(digest))
    }

    /// The image if it was unpacked completely.
    fn load(&self, digest: &str) -> Option<Image> {
        let dir = self.unpacked(digest);
        let config = std::fs::read(dir.join("config.json")).ok()?;
        Some(Image {
            digest: digest.to_owned(),
            rootfs: dir.join("rootfs"),
            config: serde_json::from_slice(&config).ok()?,
            pulled: false,
        })
    }

    fn local(&self, reference: &Reference) -> Option<Image> {
        let digest = std::fs::read_to_string(self.ref_file(reference)).ok()?;
        self.load(digest.trim())
    }

    /// The image `text` names, pulled when `policy` says so; `credentials`
    /// answers for a registry host (the reference's own, then the mirror).
    pub async fn pull(
        &self,
        text: &str,
        policy: PullPolicy,
        credentials: &(dyn Fn(&str) -> Option<Credentials> + Sync),
    ) -> Result<Image, PullError> {
        let reference = Reference::parse(text)?;
        let _one_at_a_time = self.pulling.lock().await;
        if policy != PullPolicy::Always
            && let Some(image) = self.local(&reference)
        {
            return Ok(image);
        }
        if policy == PullPolicy::Never {
            return Err(PullError::NeverPull(reference.to_string()));
        }
        let host = reference.source(self.mirror.as_deref()).to_owned();
        let creds = credentials(&reference.registry).or_else(|| credentials(&host));
        let repo = Repository {
            http: &self.http,
            host: &host,
            name: &reference.repository,
            credentials: creds.as_ref(),
        };
        let name = reference.to_string();
        let registry_error = |source| PullError::Registry {
            reference: name.clone(),
            host: host.clone(),
            source,
        };
        let manifest_error = |source| PullError::Manifest {
            reference: name.clone(),
            source,
        };
        let architecture = manifest::this_architecture();
        let (body, content_type, mut digest) = repo
            .manifest(reference.manifest_reference())
            .await
            .map_err(registry_error)?;
        let mut answer = manifest::parse(&body, &content_type).map_err(manifest_error)?;
        if let Answer::Index(entries) = &answer {
            let entry = manifest::pick(entries, architecture).map_err(manifest_error)?;
            let (body, content_type, entry_digest) =
                repo.manifest(&entry.digest).await.map_err(registry_error)?;
            answer = manifest::parse(&body, &content_type).map_err(manifest_error)?;
            digest = entry_digest;
        }
        let Answer::Manifest { config, layers } = answer else {
            return Err(manifest_error(ManifestError::Malformed {
                what: "index",
                message: "an index entry for this platform is another index".into(),
            }));
        };
        let image = match self.load(&digest) {
            Some(image) => image,
            None => {
                let store_error = |path: &Path, source| PullError::Store {
                    reference: name.clone(),
                    path: path.display().to_string(),
                    source,
                };
                let config_path = self.blob(&repo, &config).await.map_err(|e| match e {
                    BlobError::Registry(e) => registry_error(e),
                    BlobError::Store(path, e) => store_error(&path, e),
                })?;
                let config_bytes =
                    std::fs::read(&config_path).map_err(|e| store_error(&config_path, e))?;
                let run =
                    manifest::parse_config(&config_bytes, architecture).map_err(manifest_error)?;
                let mut files = Vec::new();
                for layer in &layers {
                    let path = self.blob(&repo, layer).await.map_err(|e| match e {
                        BlobError::Registry(e) => registry_error(e),
                        BlobError::Store(path, e) => store_error(&path, e),
                    })?;
                    files.push((path, layer.media_type.clone()));
                }
                let target = self.unpacked(&digest);
                let run_for_disk = run.clone();
                tokio::task::spawn_blocking(move || unpack_all(&files, &target, &run_for_disk))
                    .await
                    .map_err(|e| store_error(&self.unpacked(&digest), std::io::Error::other(e)))?
                    .map_err(|e| match e {
                        UnpackError::Layer(source) => PullError::Layer {
                            reference: name.clone(),
                            source,
                        },
                        UnpackError::Store(path, source) => store_error(&path, source),
                    })?;
                Image {
                    digest: digest.clone(),
                    rootfs: self.unpacked(&digest).join("rootfs"),
                    config: run,
                    pulled: true,
                }
            }
        };
        let ref_file = self.ref_file(&reference);
        write_atomically(&ref_file, digest.as_bytes()).map_err(|e| PullError::Store {
            reference: name.clone(),
            path: ref_file.display().to_string(),
            source: e,
        })?;
        Ok(Image {
            pulled: true,
            ..image
        })
    }

    /// The blob's file, fetched unless already stored.
    async fn blob(&self, repo: &Repository<'_>, d: &Descriptor) -> Result<PathBuf, BlobError> {
        let dir = self.dir.join("blobs").join("sha256");
        let path = dir.join(hex_of(&d.digest));
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).map_err(|e| BlobError::Store(dir.clone(), e))?;
        repo.blob_to_file(&d.digest, d.size, &path)
            .await
            .map_err(BlobError::Registry)?;
        Ok(path)
    }
}

enum BlobError {
    Registry(RegistryError),
    Store(PathBuf, std::io::Error),
}

enum UnpackError {
    Layer(LayerError),
    Store(PathBuf, std::io::Error),
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// Unpacks `layers` in order into `target/rootfs` and then writes
/// `target/config.json`, the mark of a finished image.
fn unpack_all(
    layers: &[(PathBuf, String)],
    target: &Path,
    run: &RunConfig,
) -> Result<(), UnpackError> {
    let store = |p: &Path| {
        let p = p.to_owned();
        move |e| UnpackError::Store(p, e)
    };
    let rootfs = target.join("rootfs");
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(store(target))?;
    }
    std::fs::create_dir_all(&rootfs).map_err(store(&rootfs))?;
    for (layer, media_type) in layers {
        layers::unpack(layer, media_type, &rootfs).map_err(UnpackError::Layer)?;
    }
    let config = serde_json::to_vec(run)
        .map_err(|e| UnpackError::Store(target.join("config.json"), e.into()))?;
    write_atomically(&target.join("config.json"), &config).map_err(store(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_default_pull_policies() {
        let c = Container::default();
        let p = |r: &str| PullPolicy::of(&c, &Reference::parse(r).unwrap());
        assert_eq!(p("app"), PullPolicy::Always);
        assert_eq!(p("app:latest"), PullPolicy::Always);
        assert_eq!(p("app:1"), PullPolicy::IfNotPresent);
        let d = format!("app@sha256:{}", "0".repeat(64));
        assert_eq!(p(&d), PullPolicy::IfNotPresent);
        let c = Container {
            image_pull_policy: Some("Never".into()),
            ..Container::default()
        };
        assert_eq!(
            PullPolicy::of(&c, &Reference::parse("app").unwrap()),
            PullPolicy::Never
        );
    }
}
