//! `POST /hooks/github`: a push to a watched repository and branch makes
//! the Environments that follow it reconcile at once, instead of at their
//! interval.
//!
//! Guarantees: only deliveries signed with the shared secret are acted on
//! (`X-Hub-Signature-256`, HMAC-SHA256 over the raw body, compared in
//! constant time; a delivery signed only with SHA-1 is refused); a push
//! whose signed body an Environment was already triggered by is not
//! acted on again for it, whatever its `X-GitHub-Delivery` (which the
//! signature does not cover), on any replica and after restarts: the
//! body's digest is kept, bounded, in the Environment's
//! `ferry.dev/pushes-seen` annotation, written with the trigger itself,
//! so a delivery that failed is not remembered and its redelivery is
//! acted on; bodies over 5 MiB are refused; `ping` and other events
//! answer 204 and do nothing. A push reaches an Environment through its
//! `ferry.dev/requested-at` annotation (and `ferry.dev/requested-by`
//! naming, from the signed body, the pusher, the commit pushed and the
//! body's digest, for the history), so whichever controller leads acts
//! on it.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::crd::Environment;

/// The largest delivery read: GitHub caps deliveries at 25 MB but
/// truncates push payloads well below this (a push of 3,000 commits or
/// more is delivered without them), and a push is all this endpoint reads.
pub const BODY_LIMIT: usize = 5 * 1024 * 1024;
/// Deliveries read at once, at most: the body is read whole before its
/// signature can be checked, so this bounds what unsigned requests can
/// make the controller hold (`CONCURRENT_DELIVERIES × BODY_LIMIT`); more
/// wait their turn.
pub const CONCURRENT_DELIVERIES: usize = 4;
/// Pushes remembered per Environment against replays.
const REMEMBERED: usize = 20;
/// The annotation that remembers them.
pub const PUSHES_SEEN: &str = "ferry.dev/pushes-seen";

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "the delivery has no X-Hub-Signature-256 header (a SHA-1 signature alone is not accepted)"
    )]
    Missing,
    #[error("X-Hub-Signature-256 is not sha256=<hex>")]
    Malformed,
    #[error(
        "X-Hub-Signature-256 does not match the body and the shared secret; set the webhook's secret on GitHub to the one in --webhook-secret-file"
    )]
    Mismatch,
}

/// Checks `X-Hub-Signature-256` against the raw body, in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The digest a push is remembered by: the first 16 hex digits of the
/// sha256 of its body, which the signature covers.
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(body))[..16].to_owned()
}

/// Whether `env` was already triggered by the push of `digest`.
pub fn seen(env: &Environment, digest: &str) -> bool {
    env.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PUSHES_SEEN))
        .is_some_and(|list| list.split(',').any(|d| d == digest))
}

/// The annotation's value with `digest` added, the oldest dropped past
/// [`REMEMBERED`] (whatever was written there by hand).
pub fn remember(existing: Option<&str>, digest: &str) -> String {
    let mut list: Vec<&str> = existing
        .unwrap_or("")
        .split(',')
        .filter(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_hexdigit()) && *d != digest)
        .collect();
    list.push(digest);
    let excess = list.len().saturating_sub(REMEMBERED);
    list[excess..].join(",")
}

/// What a push says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The repository's URLs (clone, SSH, web).
    pub urls: Vec<String>,
    /// `refs/heads/main`, `refs/tags/v1`.
    pub reference: String,
    pub pusher: String,
    /// The commit pushed (`after`), when the body names one.
    pub after: Option<String>,
}

/// Reads a push event's body (untrusted: missing fields are errors).
pub fn parse_push(body: &[u8]) -> Result<Push, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let reference = value
        .get("ref")
        .and_then(Value::as_str)
        .ok_or("the push has no ref")?
        .to_owned();
    let repository = value
        .get("repository")
        .ok_or("the push has no repository")?;
    let urls: Vec<String> = ["clone_url", "ssh_url", "git_url", "html_url", "url"]
        .iter()
        .filter_map(|k| {
            repository
                .get(*k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    if urls.is_empty() {
        return Err("the push names no repository URL".into());
    }
    let pusher = value
        .pointer("/pusher/name")
        .or_else(|| value.pointer("/sender/login"))
        .and_then(Value::as_str)
        .unwrap_or("someone")
        .to_owned();
    let after = value
        .get("after")
        .and_then(Value::as_str)
        .filter(|a| a.len() == 40 && a.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    Ok(Push {
        urls,
        reference,
        pusher,
        after,
    })
}

/// `github.com/owner/repo` from any of its URL forms (https with or
/// without credentials, ssh, `git@host:path`, with or without `.git`).
pub fn repository_key(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.replacen(':', "/", usize::from(!url.contains("://")));
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.split(':').next().unwrap_or(host);
    format!(
        "{}/{}",
        host.to_ascii_lowercase(),
        path.to_ascii_lowercase()
    )
}

/// Whether `env` follows the pushed repository and reference.
pub fn follows(env: &Environment, push: &Push) -> bool {
    let key = repository_key(&env.spec.source.url);
    let same_repository = push.urls.iter().any(|u| repository_key(u) == key);
    let reference = &env.spec.source.reference;
    let same_ref = push.reference == format!("refs/heads/{reference}")
        || push.reference == format!("refs/tags/{reference}");
    same_repository && same_ref
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn only_the_right_sha256_signature_passes() {
        let body = br#"{"zen": "Keep it logically awesome."}"#;
        assert_eq!(
            verify_signature(b"s3cr3t", body, Some(&sign(b"s3cr3t", body))),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"s3cr3t", body, Some(&sign(b"other", body))),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cr3t", b"changed", Some(&sign(b"s3cr3t", body))),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s3cr3t", body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"s3cr3t", body, Some("sha1=abcdef")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"s3cr3t", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_push_is_remembered_by_its_signed_body_and_the_memory_is_bounded() {
        let a = body_digest(b"{\"ref\": \"refs/heads/main\"}");
        assert_eq!(a.len(), 16);
        assert_ne!(a, body_digest(b"{}"));
        let mut env: Environment = serde_json::from_value(serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment", "metadata": {"name": "dev", "namespace": "ferry-system"},
            "spec": {"source": {"url": "https://github.com/ferry-dev/ferry", "path": "environments/dev"}}})).unwrap();
        assert!(!seen(&env, &a));
        let list = remember(None, &a);
        env.metadata.annotations = Some([(PUSHES_SEEN.to_owned(), list.clone())].into());
        assert!(seen(&env, &a));
        assert!(!seen(&env, &body_digest(b"other")));
        assert_eq!(remember(Some(&list), &a), a, "remembered once");
        let mut list = "junk,<script>".to_owned();
        for i in 0..30 {
            list = remember(Some(&list), &body_digest(format!("{i}").as_bytes()));
        }
        let kept: Vec<&str> = list.split(',').collect();
        assert_eq!(kept.len(), REMEMBERED);
        assert_eq!(*kept.last().unwrap(), body_digest(b"29"));
    }

    #[test]
    fn pushes_match_environments_by_repository_and_branch() {
        for (a, b) in [
            (
                "https://github.com/ferry-dev/ferry.git",
                "git@github.com:ferry-dev/ferry.git",
            ),
            (
                "https://x-access-token:t@github.com/Ferry-Dev/ferry",
                "https://github.com/ferry-dev/ferry.git",
            ),
            (
                "ssh://git@github.com/ferry-dev/ferry.git",
                "https://github.com/ferry-dev/ferry",
            ),
        ] {
            assert_eq!(repository_key(a), repository_key(b), "{a} vs {b}");
        }
        assert_ne!(
            repository_key("https://github.com/ferry-dev/ferry"),
            repository_key("https://github.com/ferry-dev/other")
        );
        let push = parse_push(br#"{"ref": "refs/heads/main", "repository": {"clone_url": "https://github.com/ferry-dev/ferry.git", "ssh_url": "git@github.com:ferry-dev/ferry.git"}, "pusher": {"name": "ada"}}"#).unwrap();
        assert_eq!(push.pusher, "ada");
        let env = |url: &str, reference: &str| -> Environment {
            serde_json::from_value(serde_json::json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment", "metadata": {"name": "dev", "namespace": "ferry-system"},
                "spec": {"source": {"url": url, "ref": reference, "path": "environments/dev"}}})).unwrap()
        };
        assert!(follows(
            &env("https://github.com/ferry-dev/ferry.git", "main"),
            &push
        ));
        assert!(!follows(
            &env("https://github.com/ferry-dev/ferry.git", "release"),
            &push
        ));
        assert!(!follows(
            &env("https://github.com/someone/ferry.git", "main"),
            &push
        ));
        assert!(parse_push(b"[]").is_err());
        assert!(parse_push(br#"{"ref": "refs/heads/main", "repository": {}}"#).is_err());
    }

    proptest! {
        /// Untrusted bodies and headers never panic.
        #[test]
        fn never_panics(body in prop::collection::vec(any::<u8>(), 0..64), header in "\\PC{0,80}") {
            let _ = verify_signature(b"k", &body, Some(&header));
            let _ = parse_push(&body);
            let _ = repository_key(&header);
            let _ = remember(Some(&header), &body_digest(&body));
        }
    }
}
