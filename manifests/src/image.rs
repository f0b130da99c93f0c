//! Container image references as manifests write them
//! (`registry:port/repository:tag@digest`), split for the policy rules
//! and the renderer's `images` transform alike.
//!
//! Guarantees: any text splits without a panic (it comes from git), and
//! the parts put back together give the text again.

/// `(repository, tag, digest)` of an image reference. The tag is what
/// follows the last `:` after the last `/` (so a registry's port is not a
/// tag), the digest what follows the first `@`.
pub fn parse(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(&rest[last_slash + i + 1..]),
            digest,
        ),
        None => (rest, None, digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_references() {
        assert_eq!(parse("app"), ("app", None, None));
        assert_eq!(
            parse("localhost:5000/app:1"),
            ("localhost:5000/app", Some("1"), None)
        );
        assert_eq!(
            parse("ghcr.io/a/b:1@sha256:ff"),
            ("ghcr.io/a/b", Some("1"), Some("sha256:ff"))
        );
        assert_eq!(
            parse("localhost:5000/app"),
            ("localhost:5000/app", None, None)
        );
    }

    proptest! {
        #[test]
        fn any_text_splits_and_joins_again(image in "\\PC{0,40}") {
            let (repository, tag, digest) = parse(&image);
            let mut joined = repository.to_owned();
            if let Some(tag) = tag {
                joined = format!("{joined}:{tag}");
            }
            if let Some(digest) = digest {
                joined = format!("{joined}@{digest}");
            }
            prop_assert_eq!(joined, image);
        }
    }
}
