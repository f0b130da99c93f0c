//! Promotion: production gets exactly the image that was tested, by
//! digest. Reads the image reference an environment runs and writes it
//! into another, with the same byte-preserving edit as `bump`.

use serde_json::Value;

use crate::bump::{self, BumpError};

/// The image reference of an environment's `images:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
    pub digest: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PromoteError {
    #[error("{file}: not a kustomization ({reason})")]
    Parse { file: String, reason: String },
    #[error("{file} has {count} `images:` entries; name the one to promote with --image")]
    WhichImage { file: String, count: usize },
    #[error("{file} has no `images:` entry named {image}")]
    NoEntry { file: String, image: String },
    #[error(
        "{file}: {image} is not pinned by digest (newTag and digest); the release pipeline writes both when it bumps, promote only what was released that way"
    )]
    NotPinned { file: String, image: String },
    #[error(transparent)]
    Bump(#[from] BumpError),
}

/// The image `from` runs (the only entry, or the one named `image`).
pub fn image_of(text: &str, file: &str, image: Option<&str>) -> Result<ImageRef, PromoteError> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| PromoteError::Parse {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    let entries = doc["images"].as_array().cloned().unwrap_or_default();
    let entry = match image {
        Some(name) => bump::image_entry(&doc, name).ok_or_else(|| PromoteError::NoEntry {
            file: file.to_owned(),
            image: name.to_owned(),
        })?,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(PromoteError::WhichImage {
                file: file.to_owned(),
                count: entries.len(),
            });
        }
    };
    let name = entry["name"].as_str().unwrap_or("").to_owned();
    match (entry["newTag"].as_str(), entry["digest"].as_str()) {
        (Some(tag), Some(digest)) if digest.starts_with("sha256:") => Ok(ImageRef {
            name,
            tag: tag.to_owned(),
            digest: digest.to_owned(),
        }),
        _ => Err(PromoteError::NotPinned {
            file: file.to_owned(),
            image: name,
        }),
    }
}

/// `to`'s kustomization with `image` promoted into it.
pub fn promote(to_text: &str, to_file: &str, image: &ImageRef) -> Result<String, PromoteError> {
    Ok(bump::bump(
        to_text,
        to_file,
        &image.name,
        &image.tag,
        Some(&image.digest),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn copies_tag_and_digest() {
        let dev = format!("images:\n  - name: app\n    newTag: 0.2.0\n    digest: {DIGEST}\n");
        let prod = "# prod\nimages:\n  - name: app\n    newTag: 0.1.0\n    digest: sha256:0000\n";
        let image = image_of(&dev, "dev", None).unwrap();
        let out = promote(prod, "prod", &image).unwrap();
        assert_eq!(
            out,
            format!("# prod\nimages:\n  - name: app\n    newTag: 0.2.0\n    digest: {DIGEST}\n")
        );
    }

    #[test]
    fn refuses_what_is_not_pinned() {
        let err = image_of(
            "images:\n  - name: app\n    newTag: 0.2.0\n",
            "environments/dev/kustomization.yaml",
            None,
        )
        .unwrap_err();
        assert!(matches!(err, PromoteError::NotPinned { .. }), "{err}");
        let two = "images:\n  - {name: a, newTag: '1'}\n  - {name: b, newTag: '1'}\n";
        assert!(matches!(
            image_of(two, "f", None),
            Err(PromoteError::WhichImage { count: 2, .. })
        ));
    }
}
