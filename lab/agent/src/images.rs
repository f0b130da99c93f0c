//! The lab's image store: `lab/image NAME:TAG COMMAND [ARGS...]` writes one
//! JSON file per image, and a container's image reference is looked up here
//! instead of being pulled.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A registered image: its normalized name and its entrypoint (the whole
/// command line; the image has no separate default arguments).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Image {
    pub name: String,
    pub entrypoint: Vec<String>,
}

/// Images registered under a directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// `name` with `:latest` added when it has neither tag nor digest, as
/// container runtimes read references.
pub fn normalize(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    }
}

impl ImageStore {
    pub fn new(dir: &Path) -> Self {
        ImageStore {
            dir: dir.to_owned(),
        }
    }

    /// The file `lab/image` writes for a normalized name.
    fn path_for(&self, name: &str) -> PathBuf {
        let digest = hex::encode(Sha256::digest(name.as_bytes()));
        self.dir.join(format!("{}.json", &digest[..32]))
    }

    /// The image for a reference, if registered and readable.
    pub fn lookup(&self, reference: &str) -> Option<Image> {
        let name = normalize(reference);
        let text = std::fs::read_to_string(self.path_for(&name)).ok()?;
        let image: Image = serde_json::from_str(&text).ok()?;
        (image.name == name && !image.entrypoint.is_empty()).then_some(image)
    }
}

/// The command line a container runs, with Kubernetes' rules: `command`
/// replaces the image's entrypoint (and its arguments), `args` alone are
/// appended to the entrypoint.
pub fn command_line(image: &Image, container: &Container) -> Vec<String> {
    let args = container.args.clone().unwrap_or_default();
    match &container.command {
        Some(command) if !command.is_empty() => command.iter().cloned().chain(args).collect(),
        _ => image.entrypoint.iter().cloned().chain(args).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_a_runtime() {
        assert_eq!(normalize("busybox"), "busybox:latest");
        assert_eq!(normalize("ghcr.io/acme/app:1.2"), "ghcr.io/acme/app:1.2");
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(normalize("app@sha256:abc"), "app@sha256:abc");
    }

    #[test]
    fn command_and_args_override_as_in_kubernetes() {
        let image = Image {
            name: "app:1".into(),
            entrypoint: vec!["/bin/app".into(), "serve".into()],
        };
        let mut c = Container::default();
        assert_eq!(command_line(&image, &c), ["/bin/app", "serve"]);
        c.args = Some(vec!["--port".into(), "1".into()]);
        assert_eq!(
            command_line(&image, &c),
            ["/bin/app", "serve", "--port", "1"]
        );
        c.command = Some(vec!["/bin/sh".into(), "-c".into()]);
        c.args = Some(vec!["exit 3".into()]);
        assert_eq!(command_line(&image, &c), ["/bin/sh", "-c", "exit 3"]);
    }

    #[test]
    fn finds_what_lab_image_wrote() {
        let dir = std::env::temp_dir().join(format!("ferry-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = ImageStore::new(&dir);
        let name = "busybox:latest";
        std::fs::write(
            store.path_for(name),
            format!(r#"{{"name": "{name}", "entrypoint": ["/bin/true"]}}"#),
        )
        .unwrap();
        assert_eq!(store.lookup("busybox").unwrap().entrypoint, ["/bin/true"]);
        assert!(store.lookup("busybox:2").is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
