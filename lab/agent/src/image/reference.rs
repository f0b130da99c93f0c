//! Image references as a container runtime reads them (`[HOST[:PORT]/]PATH[:TAG][@DIGEST]`,
//! Docker Hub and `library/` implied), and where the lab fetches them from.
//!
//! A reference comes from a Pod spec, so it is untrusted: parsing never
//! panics, and a digest is only accepted in the one form (`sha256:` and 64
//! lowercase hex digits) that is safe to use as a file name.

use std::fmt;

/// The registry a reference without a host names.
pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("{0:?} is not an image reference: {1}")]
    Invalid(String, &'static str),
}

/// A parsed reference. `tag` is `latest` when neither tag nor digest was
/// given; with a digest, the digest decides what is pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// True for `sha256:` followed by 64 lowercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A path component of a repository: lowercase alphanumerics separated by
/// `.`, `_`, `__` or dashes, as the distribution spec allows.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut previous_separator = false;
    for (i, b) in bytes.iter().enumerate() {
        if alnum(b) {
            previous_separator = false;
            continue;
        }
        let allowed = match b {
            b'-' => !previous_separator || bytes[i - 1] == b'-',
            b'.' => !previous_separator,
            // `__` is one separator; a third underscore is not allowed.
            b'_' => {
                !previous_separator || (bytes[i - 1] == b'_' && (i < 2 || alnum(&bytes[i - 2])))
            }
            _ => false,
        };
        if !allowed {
            return false;
        }
        previous_separator = true;
    }
    true
}

fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let invalid = |why| ReferenceError::Invalid(text.to_owned(), why);
        if text.is_empty() || text.len() > 512 {
            return Err(invalid("empty or longer than 512 characters"));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(invalid(
                        "the digest is not sha256: and 64 lowercase hex digits",
                    ));
                }
                (name, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((before, tag)) if !tag.contains('/') => {
                if !is_tag(tag) {
                    return Err(invalid("the tag has characters a tag cannot have"));
                }
                (before, Some(tag.to_owned()))
            }
            _ => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !is_host(first) {
                    return Err(invalid("the registry is not HOST or HOST:PORT"));
                }
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if !path.split('/').all(is_path_component) {
            return Err(invalid(
                "the repository must be lowercase letters, digits and . _ - between slashes",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest if
    /// there is one, the tag otherwise.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The registry the lab fetches this reference from: a loopback
    /// registry named in the reference itself, else the mirror (the lab
    /// reaches no other registry) keeping the repository path, as
    /// containerd's mirrors do.
    pub fn source<'a>(&'a self, mirror: Option<&'a str>) -> &'a str {
        let host = self.registry.split(':').next().unwrap_or_default();
        if host == "localhost" || host.starts_with("127.") {
            return &self.registry;
        }
        mirror.unwrap_or(&self.registry)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_references_as_a_runtime_does() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = Reference::parse("ferry-lab-test/inference:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/ferry-lab-test/inference:1");
        let r = Reference::parse("127.0.0.1:5000/a/b").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse(&format!("ghcr.io/acme/app:1.2@{D}")).unwrap();
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = Reference::parse(&format!("localhost/app@{D}")).unwrap();
        assert_eq!((r.registry.as_str(), r.tag.as_deref()), ("localhost", None));
    }

    #[test]
    fn refuses_what_no_registry_could_serve() {
        for bad in [
            "",
            "UPPER/case",
            "app:",
            "app@sha256:abc",
            "app@sha512:00",
            "a//b",
            "ghcr.io/../etc",
            "a/-b",
            "app:-tag",
            "a___b",
            "a.-b",
            "host:99999999/a",
            &format!("a@{}", D.to_uppercase()),
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Reference::parse("x/a__b.c-d/e_f").is_ok());
    }

    #[test]
    fn the_lab_mirrors_every_registry_but_its_own() {
        let mirror = Some("127.0.0.1:5000");
        let r = Reference::parse("ghcr.io/acme/app:1").unwrap();
        assert_eq!(r.source(mirror), "127.0.0.1:5000");
        assert_eq!(r.source(None), "ghcr.io");
        let r = Reference::parse("127.0.0.1:5001/acme/app:1").unwrap();
        assert_eq!(r.source(mirror), "127.0.0.1:5001");
    }

    proptest! {
        #[test]
        fn never_panics_and_what_it_accepts_reads_back(text in "\\PC{0,80}") {
            if let Ok(r) = Reference::parse(&text) {
                prop_assert!(r.digest.as_deref().is_none_or(is_sha256_digest));
                prop_assert!(!r.repository.contains(".."));
                prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
            }
        }

        #[test]
        fn well_formed_references_parse(
            host in "[a-z]{1,8}\\.[a-z]{2,3}(:[0-9]{1,5})?",
            path in "[a-z0-9]{1,6}([-._][a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,6}){0,2}",
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        ) {
            let r = Reference::parse(&format!("{host}/{path}:{tag}")).unwrap();
            prop_assert_eq!((r.registry, r.repository, r.tag), (host, path, Some(tag)));
        }
    }
}
