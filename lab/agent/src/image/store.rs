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

    /// The image of `container`, pulled as its `imagePullPolicy` says (or
    /// Kubernetes' default for its reference); `credentials` answers for a
    /// registry host (the reference's own, then the mirror).
    pub async fn pull(
        &self,
        container: &Container,
        credentials: &(dyn Fn(&str) -> Option<Credentials> + Sync),
    ) -> Result<Image, PullError> {
        let reference = Reference::parse(container.image.as_deref().unwrap_or_default())?;
        let policy = PullPolicy::of(container, &reference);
        let _one_at_a_time = self.pulling.lock().await;
        if policy != PullPolicy::Always
            && let Some(image) = self.local(&reference)
        {
            return Ok(image);
        }
        if policy == PullPolicy::Never {
            return Err(PullError::NeverPull(reference.to_string()));
        }
        let host = reference.source(self.mirror.as_deref());
        let creds = credentials(&reference.registry).or_else(|| credentials(host));
        let pull = Pull {
            name: reference.to_string(),
            repo: Repository {
                http: &self.http,
                host,
                name: &reference.repository,
                credentials: creds.as_ref(),
            },
        };
        let (digest, config, layers) = pull.resolve(reference.manifest_reference()).await?;
        let run = match self.load(&digest) {
            Some(image) => image.config,
            None => {
                self.fetch_and_unpack(&pull, &digest, &config, &layers)
                    .await?
            }
        };
        let ref_file = self.ref_file(&reference);
        write_atomically(&ref_file, digest.as_bytes()).map_err(|e| pull.store(&ref_file, e))?;
        Ok(Image {
            rootfs: self.unpacked(&digest).join("rootfs"),
            digest,
            config: run,
            pulled: true,
        })
    }

    /// Fetches the config and the layers the node lacks, unpacks them under
    /// `unpacked/DIGEST`; the image's run config.
    async fn fetch_and_unpack(
        &self,
        pull: &Pull<'_>,
        digest: &str,
        config: &Descriptor,
        layers: &[Descriptor],
    ) -> Result<RunConfig, PullError> {
        let blobs = self.dir.join("blobs").join("sha256");
        let config_path = pull.blob(&blobs, config).await?;
        let config_bytes = std::fs::read(&config_path).map_err(|e| pull.store(&config_path, e))?;
        let run = manifest::parse_config(&config_bytes, manifest::this_architecture())
            .map_err(|e| pull.manifest(e))?;
        let mut files = Vec::new();
        for layer in layers {
            files.push((pull.blob(&blobs, layer).await?, layer.media_type.clone()));
        }
        let target = self.unpacked(digest);
        let (on_disk, at) = (run.clone(), target.clone());
        tokio::task::spawn_blocking(move || unpack_all(&files, &at, &on_disk))
            .await
            .map_err(|e| pull.store(&target, std::io::Error::other(e)))?
            .map_err(|e| match e {
                UnpackError::Layer(source) => PullError::Layer {
                    reference: pull.name.clone(),
                    source,
                },
                UnpackError::Store(path, source) => pull.store(&path, source),
            })?;
        Ok(run)
    }
}

/// One pull from one repository: every error names the reference and the
/// registry it came from.
struct Pull<'a> {
    name: String,
    repo: Repository<'a>,
}

impl Pull<'_> {
    fn registry(&self, source: RegistryError) -> PullError {
        PullError::Registry {
            reference: self.name.clone(),
            host: self.repo.host.to_owned(),
            source,
        }
    }

    fn manifest(&self, source: ManifestError) -> PullError {
        PullError::Manifest {
            reference: self.name.clone(),
            source,
        }
    }

    fn store(&self, path: &Path, source: std::io::Error) -> PullError {
        PullError::Store {
            reference: self.name.clone(),
            path: path.display().to_string(),
            source,
        }
    }

    /// The platform manifest `reference` (a tag or a digest) leads to, for
    /// this node's architecture through an index when there is one: its
    /// digest, config and layers.
    async fn resolve(
        &self,
        reference: &str,
    ) -> Result<(String, Descriptor, Vec<Descriptor>), PullError> {
        let (body, content_type, mut digest) = self
            .repo
            .manifest(reference)
            .await
            .map_err(|e| self.registry(e))?;
        let mut answer = manifest::parse(&body, &content_type).map_err(|e| self.manifest(e))?;
        if let Answer::Index(entries) = &answer {
            let entry = manifest::pick(entries, manifest::this_architecture())
                .map_err(|e| self.manifest(e))?;
            let (body, content_type, entry_digest) = self
                .repo
                .manifest(&entry.digest)
                .await
                .map_err(|e| self.registry(e))?;
            answer = manifest::parse(&body, &content_type).map_err(|e| self.manifest(e))?;
            digest = entry_digest;
        }
        match answer {
            Answer::Manifest { config, layers } => Ok((digest, config, layers)),
            Answer::Index(_) => Err(self.manifest(ManifestError::Malformed {
                what: "index",
                message: "an index entry for this platform is another index".into(),
            })),
        }
    }

    /// The blob's file under `dir`, fetched unless already stored.
    async fn blob(&self, dir: &Path, d: &Descriptor) -> Result<PathBuf, PullError> {
        let path = dir.join(hex_of(&d.digest));
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(dir).map_err(|e| self.store(dir, e))?;
        self.repo
            .blob_to_file(&d.digest, d.size, &path)
            .await
            .map_err(|e| self.registry(e))?;
        Ok(path)
    }
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
