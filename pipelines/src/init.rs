//! `init`: make a fork release to itself. The manifests, the controller's
//! install and the workflows name the upstream's repository and images;
//! a fork that forgets one renders an image no tag pins (the overlay's
//! `images:` entry no longer matches the base), or follows the upstream's
//! repository. This rewrites every such name, and nothing else.
//!
//! Guarantees: the edit is textual (comments, order and quoting stay);
//! running it twice changes nothing the second time; after it, no file it
//! looks at names the upstream (a test checks the project's own files).

use std::path::{Path, PathBuf};

/// The repository the project's files name.
pub const UPSTREAM_REPOSITORY: &str = "ferry-dev/ferry";
/// The image prefix the project's files name.
pub const UPSTREAM_IMAGES: &str = "ghcr.io/ferry-dev";
/// The folders whose files a fork must rewrite, relative to the
/// repository's root.
pub const FOLDERS: [&str; 2] = ["environments", ".github/workflows"];

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "{0:?} is not OWNER/NAME (letters, digits, '-', '_' and '.'; e.g. --repository acme/placement)"
    )]
    Repository(String),
    #[error(
        "{0:?} is not an image prefix: a registry host and a lowercase path, no tag (e.g. ghcr.io/acme or 123456789012.dkr.ecr.us-east-1.amazonaws.com/acme)"
    )]
    Prefix(String),
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a fork is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    /// OWNER/NAME on GitHub.
    pub repository: String,
    /// Where its images go, e.g. `ghcr.io/acme` (no trailing `/`).
    pub images: String,
}

impl Fork {
    /// Checks both names; the image prefix defaults to
    /// `ghcr.io/<owner, lowercase>` (GHCR wants lowercase names).
    pub fn new(repository: &str, images: Option<&str>) -> Result<Fork, InitError> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        let (owner, name) = repository
            .split_once('/')
            .filter(|(o, n)| part_ok(o) && part_ok(n))
            .ok_or_else(|| InitError::Repository(repository.to_owned()))?;
        let images = match images {
            Some(prefix) => prefix.trim_end_matches('/').to_owned(),
            None => format!("ghcr.io/{}", owner.to_ascii_lowercase()),
        };
        if !is_image_prefix(&images) {
            return Err(InitError::Prefix(images));
        }
        Ok(Fork {
            repository: format!("{owner}/{name}"),
            images,
        })
    }

    /// `text` with the upstream's names replaced by the fork's.
    pub fn rewrite(&self, text: &str) -> String {
        text.replace(&format!("{UPSTREAM_IMAGES}/"), &format!("{}/", self.images))
            .replace(
                &format!("github.com/{UPSTREAM_REPOSITORY}"),
                &format!("github.com/{}", self.repository),
            )
            .replace(
                &format!("repository: {UPSTREAM_REPOSITORY}"),
                &format!("repository: {}", self.repository),
            )
    }
}

/// `host[:port]/path`: a registry host (letters, digits, `.`, `-`, an
/// optional numeric port) and a non-empty lowercase repository path.
fn is_image_prefix(prefix: &str) -> bool {
    let Some((host, path)) = prefix.split_once('/') else {
        return false;
    };
    let (name, port) = host.split_once(':').unwrap_or((host, "0"));
    let host_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit());
    host_ok
        && path.split('/').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        })
}

/// Whether `text` still names the upstream.
pub fn names_upstream(text: &str) -> bool {
    text.contains(UPSTREAM_IMAGES) || text.contains(UPSTREAM_REPOSITORY)
}

/// What [`init`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// The files rewritten, relative to the root.
    pub changed: Vec<PathBuf>,
    /// The lines that still name the upstream after the rewrite (a form
    /// the rewrite does not know): `path:line: text`, to edit by hand.
    pub left: Vec<String>,
}

/// Rewrites every file under [`FOLDERS`] of `root`, reading each once.
pub fn init(root: &Path, fork: &Fork) -> Result<Report, InitError> {
    let mut report = Report::default();
    for folder in FOLDERS {
        for path in files_under(&root.join(folder))? {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue; // not text: nothing to name
            };
            let rewritten = fork.rewrite(&text);
            for (n, line) in rewritten.lines().enumerate() {
                if names_upstream(line) {
                    let line = line.trim();
                    report
                        .left
                        .push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
            if rewritten != text {
                std::fs::write(&path, rewritten).map_err(|source| InitError::Write {
                    path: path.clone(),
                    source,
                })?;
                report
                    .changed
                    .push(path.strip_prefix(root).unwrap_or(&path).to_owned());
            }
        }
    }
    Ok(report)
}

/// Every file under `dir`, sorted (none when it does not exist).
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(InitError::Read { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| InitError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_prefix_defaults_to_the_owners_ghcr() {
        let fork = Fork::new("Acme/placement", None).unwrap();
        assert_eq!(fork.images, "ghcr.io/acme");
        assert_eq!(
            Fork::new("acme/p", Some("localhost:5000/acme/"))
                .unwrap()
                .images,
            "localhost:5000/acme"
        );
        for bad in ["acme", "acme/", "/p", "a/b/c", "a b/c", ""] {
            assert!(Fork::new(bad, None).is_err(), "{bad}");
        }
        for bad in [
            "ghcr.io",
            "ghcr.io/Acme",
            "ghcr.io/acme:1",
            "ghcr.io/a@sha256",
            "ghcr.io//a",
        ] {
            assert!(Fork::new("acme/p", Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_names_are_rewritten_and_nothing_else() {
        let fork = Fork::new("acme/placement", Some("ghcr.io/acme")).unwrap();
        let text = "image: ghcr.io/ferry-dev/placement # ghcr.io/ferry-devices/x\nurl: https://github.com/ferry-dev/ferry.git\n# github: {repository: ferry-dev/ferry}\nname: ferry-dev\n";
        let once = fork.rewrite(text);
        assert_eq!(
            once,
            "image: ghcr.io/acme/placement # ghcr.io/ferry-devices/x\nurl: https://github.com/acme/placement.git\n# github: {repository: acme/placement}\nname: ferry-dev\n"
        );
        assert_eq!(fork.rewrite(&once), once, "twice changes nothing");
    }
}
