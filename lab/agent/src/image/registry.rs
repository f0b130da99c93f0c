//! The registry API (OCI distribution) as far as a pull needs it: a
//! manifest by tag or digest, a blob into a file. Every byte is checked
//! against the digest that named it before anything uses it. The lab's
//! registries speak plain HTTP on loopback; credentials go as HTTP basic
//! auth, as the distribution registry's htpasswd auth expects.

use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest;

/// Manifests are small; containerd refuses ones over 4 MiB too.
const MAX_MANIFEST: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("failed to reach the registry at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry said no: `message` is what it said (its error codes
    /// and messages), for the pod's status.
    #[error("the registry answered {status} for {url}: {message}{}", hint(.status))]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "{what} {expected} arrived with digest {actual}; refusing it (altered in the registry or on the way): push the image again"
    )]
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{what} {digest} is larger than the {limit} bytes it was announced with")]
    TooLarge {
        what: &'static str,
        digest: String,
        limit: u64,
    },
    #[error("failed to write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to do about a registry's refusal, for the statuses a user can act on.
fn hint(status: &u16) -> &'static str {
    match status {
        401 | 403 => {
            "; give the pod an imagePullSecret (type kubernetes.io/dockerconfigjson) that this registry accepts"
        }
        404 => "; check the image's name, tag or digest, or push the image to this registry",
        _ => "",
    }
}

/// A registry's user and password, from a pull secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// One registry, one repository, one set of credentials.
pub struct Repository<'a> {
    pub http: &'a reqwest::Client,
    pub host: &'a str,
    pub name: &'a str,
    pub credentials: Option<&'a Credentials>,
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a registry's error body says: its `errors[].code` and `message`
/// (the distribution spec's form), else the body's first line.
pub fn error_message(status: u16, body: &[u8]) -> String {
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let text = |k: &str| {
                        e.get(k)
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    format!("{} ({})", text("message"), text("code"))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty());
    said.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let first = text.lines().next().unwrap_or_default().trim().to_owned();
        if first.is_empty() {
            format!("HTTP {status}")
        } else {
            first.chars().take(200).collect()
        }
    })
}

impl Repository<'_> {
    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match self.credentials {
            Some(c) => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password));
                request.header("Authorization", format!("Basic {token}"))
            }
            None => request,
        }
    }

    async fn send(
        &self,
        url: String,
        accept: Option<String>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.get(&url);
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let mut response = request
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > 64 << 10 {
                break;
            }
        }
        Err(RegistryError::Refused {
            url,
            status,
            message: error_message(status, &body),
        })
    }

    /// The manifest `reference` (a tag or a digest) names, with its content
    /// type and digest. A digest reference is checked against the body.
    pub async fn manifest(
        &self,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String), RegistryError> {
        let url = format!(
            "http://{}/v2/{}/manifests/{reference}",
            self.host, self.name
        );
        let mut response = self.send(url.clone(), Some(manifest::accept())).await?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_MANIFEST {
                        return Err(RegistryError::TooLarge {
                            what: "manifest",
                            digest: reference.to_owned(),
                            limit: MAX_MANIFEST as u64,
                        });
                    }
                }
                Ok(None) => break,
                Err(source) => return Err(RegistryError::Unreachable { url, source }),
            }
        }
        let digest = sha256(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::DigestMismatch {
                what: "manifest",
                expected: reference.to_owned(),
                actual: digest,
            });
        }
        Ok((body, content_type, digest))
    }

    /// Streams blob `digest` (at most `size` bytes) into `path`, hashing as
    /// it goes; `path` exists afterwards only if the digest matched.
    pub async fn blob_to_file(
        &self,
        digest: &str,
        size: u64,
        path: &Path,
    ) -> Result<(), RegistryError> {
        let url = format!("http://{}/v2/{}/blobs/{digest}", self.host, self.name);
        let mut response = self.send(url.clone(), None).await?;
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        let write_error = |source| RegistryError::Write {
            path: partial.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(write_error)?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let outcome = async {
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        written += chunk.len() as u64;
                        if written > size {
                            return Err(RegistryError::TooLarge {
                                what: "blob",
                                digest: digest.to_owned(),
                                limit: size,
                            });
                        }
                        hasher.update(&chunk);
                        file.write_all(&chunk).await.map_err(write_error)?;
                    }
                    Ok(None) => break,
                    Err(source) => {
                        return Err(RegistryError::Unreachable {
                            url: url.clone(),
                            source,
                        });
                    }
                }
            }
            file.flush().await.map_err(write_error)?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(RegistryError::DigestMismatch {
                    what: "blob",
                    expected: digest.to_owned(),
                    actual,
                });
            }
            tokio::fs::rename(&partial, path).await.map_err(write_error)
        }
        .await;
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_registrys_own_words_reach_the_pod() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"9"}}]}"#;
        assert_eq!(
            error_message(404, body),
            "manifest unknown (MANIFEST_UNKNOWN)"
        );
        assert_eq!(error_message(401, b""), "HTTP 401");
        assert_eq!(error_message(502, b"bad gateway\nmore"), "bad gateway");
    }

    #[test]
    fn credentials_do_not_show_in_debug_output() {
        let c = Credentials {
            username: "lab".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }

    proptest! {
        #[test]
        fn reading_an_error_body_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200), status in 0u16..600) {
            let _ = error_message(status, &body);
        }
    }
}
