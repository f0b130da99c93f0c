//! What a registry answers, read: image indexes (and Docker manifest
//! lists), image manifests and image configs, in their OCI and Docker
//! forms. All of it is untrusted: nothing here panics, and every digest
//! that is later used as a file name is checked to be a sha256 digest.

use serde::Deserialize;

use super::reference::is_sha256_digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header of a manifest request: every form read here.
pub fn accept() -> String {
    [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("failed to read the {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("the {what} names {digest:?}, which is not a sha256 digest")]
    BadDigest { what: &'static str, digest: String },
    #[error("the image has no manifest for linux/{architecture}; it has {available}")]
    NoPlatform {
        architecture: String,
        available: String,
    },
    #[error("the image is for {os}/{architecture}, this node runs linux/{expected}")]
    WrongPlatform {
        os: String,
        architecture: String,
        expected: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// A pointer to a blob or a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A manifest endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Index(Vec<Descriptor>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

fn checked(what: &'static str, d: Descriptor) -> Result<Descriptor, ManifestError> {
    if is_sha256_digest(&d.digest) {
        Ok(d)
    } else {
        Err(ManifestError::BadDigest {
            what,
            digest: d.digest,
        })
    }
}

/// Reads a manifest endpoint's body; `content_type` is the response's
/// header, used when the body does not say what it is.
pub fn parse(body: &[u8], content_type: &str) -> Result<Answer, ManifestError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Malformed {
        what: "manifest",
        message: e.to_string(),
    })?;
    let kind = raw
        .media_type
        .as_deref()
        .unwrap_or_else(|| content_type.split(';').next().unwrap_or_default().trim());
    let is_index = kind == OCI_INDEX
        || kind == DOCKER_LIST
        || (raw.manifests.is_some() && raw.config.is_none());
    if is_index {
        let manifests = raw.manifests.unwrap_or_default();
        return manifests
            .into_iter()
            .map(|d| checked("index", d))
            .collect::<Result<_, _>>()
            .map(Answer::Index);
    }
    let config = raw.config.ok_or_else(|| ManifestError::Malformed {
        what: "manifest",
        message: "it has neither `manifests` nor `config`".into(),
    })?;
    Ok(Answer::Manifest {
        config: checked("manifest", config)?,
        layers: raw
            .layers
            .unwrap_or_default()
            .into_iter()
            .map(|d| checked("manifest", d))
            .collect::<Result<_, _>>()?,
    })
}

/// The architecture name images use for the machine this runs on.
pub fn this_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The index entry for linux/`architecture`.
pub fn pick<'a>(
    entries: &'a [Descriptor],
    architecture: &str,
) -> Result<&'a Descriptor, ManifestError> {
    entries
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == architecture)
        })
        .ok_or_else(|| ManifestError::NoPlatform {
            architecture: architecture.to_owned(),
            available: entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// What of an image config decides how its container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RunConfig>,
}

/// Reads an image config and checks it is for linux/`architecture`.
pub fn parse_config(body: &[u8], architecture: &str) -> Result<RunConfig, ManifestError> {
    let raw: RawConfig = serde_json::from_slice(body).map_err(|e| ManifestError::Malformed {
        what: "image config",
        message: e.to_string(),
    })?;
    if raw.os != "linux" || raw.architecture != architecture {
        return Err(ManifestError::WrongPlatform {
            os: raw.os,
            architecture: raw.architecture,
            expected: architecture.to_owned(),
        });
    }
    Ok(raw.config.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn reads_an_index_and_picks_this_platform() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            digest('a'),
            digest('b')
        );
        let Answer::Index(entries) = parse(body.as_bytes(), "").unwrap() else {
            panic!("not an index")
        };
        assert_eq!(pick(&entries, "amd64").unwrap().digest, digest('b'));
        let err = pick(&entries, "riscv64").unwrap_err().to_string();
        assert!(err.contains("linux/arm64, linux/amd64"), "{err}");
    }

    #[test]
    fn reads_a_docker_manifest_by_its_content_type() {
        let body = format!(
            r#"{{"config":{{"digest":"{}","size":3}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":4}}]}}"#,
            digest('c'),
            digest('d')
        );
        let Answer::Manifest { config, layers } = parse(body.as_bytes(), DOCKER_MANIFEST).unwrap()
        else {
            panic!("not a manifest")
        };
        assert_eq!((config.size, layers.len()), (3, 1));
    }

    #[test]
    fn refuses_a_digest_that_could_name_another_file() {
        let body = r#"{"config":{"digest":"sha256:../../etc/passwd","size":3},"layers":[]}"#;
        assert!(matches!(
            parse(body.as_bytes(), OCI_MANIFEST),
            Err(ManifestError::BadDigest { .. })
        ));
    }

    #[test]
    fn a_config_for_another_platform_is_refused() {
        let body = br#"{"architecture":"arm64","os":"linux","config":{"User":"65532"}}"#;
        assert!(parse_config(body, "amd64").is_err());
        assert_eq!(
            parse_config(body, "arm64").unwrap().user.as_deref(),
            Some("65532")
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_answer(body in proptest::collection::vec(any::<u8>(), 0..300), ct in "\\PC{0,40}") {
            let _ = parse(&body, &ct);
            let _ = parse_config(&body, "amd64");
        }

        #[test]
        fn never_panics_on_json_shaped_answers(
            key in "(manifests|config|layers|mediaType|digest|size|platform)",
            value in "(null|1|\"x\"|\\[\\]|\\{\\}|\\[\\{\"digest\":\"sha256:a\",\"size\":-1\\}\\])",
        ) {
            let body = format!("{{\"{key}\":{value}}}");
            let _ = parse(body.as_bytes(), "");
            let _ = parse_config(body.as_bytes(), "amd64");
        }
    }
}
