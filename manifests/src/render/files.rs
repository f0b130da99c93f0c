//! Where rendering reads files from: a directory on disk, or (for the
//! controller) a commit's tree. Paths are `/`-separated and relative to the
//! root; `..` is resolved lexically and may not leave the root.

use std::path::{Path, PathBuf};

use super::error::RenderError;

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// Read access to a tree of files.
pub trait Files {
    /// The file's bytes; `Ok(None)` when there is no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RenderError>;
    /// The directory's entries; `Ok(None)` when there is no such directory.
    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, RenderError>;
}

/// Joins `base` and `relative` and normalizes `.` and `..`. A path that
/// starts with `/` stays absolute (for [`Disk`] rooted at `/`); `..` never
/// leaves the root.
pub fn join(base: &str, relative: &str) -> Result<String, RenderError> {
    let absolute = base.starts_with('/') || relative.starts_with('/');
    let mut parts: Vec<&str> = if relative.starts_with('/') {
        Vec::new()
    } else {
        base.split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect()
    };
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(RenderError::OutsideRoot {
                        path: format!("{base}/{relative}"),
                    });
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Ok(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// A directory on disk.
#[derive(Debug, Clone)]
pub struct Disk {
    root: PathBuf,
}

impl Disk {
    pub fn new(root: &Path) -> Self {
        Disk {
            root: root.to_owned(),
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl Files for Disk {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RenderError> {
        let full = self.path(path);
        if !full.is_file() {
            return Ok(None);
        }
        std::fs::read(&full)
            .map(Some)
            .map_err(|source| RenderError::Read {
                path: path.to_owned(),
                source,
            })
    }

    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, RenderError> {
        let full = self.path(path);
        if !full.is_dir() {
            return Ok(None);
        }
        let read = |source| RenderError::Read {
            path: path.to_owned(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&full).map_err(read)? {
            let entry = entry.map_err(read)?;
            entries.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: entry.file_type().map_err(read)?.is_dir(),
            });
        }
        entries.sort();
        Ok(Some(entries))
    }
}

/// Files held in memory: for tests, and for trees read out of git.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl Memory {
    pub fn new() -> Self {
        Memory::default()
    }

    /// Adds a file at a normalized path.
    pub fn insert(&mut self, path: &str, bytes: impl Into<Vec<u8>>) {
        self.files
            .insert(path.trim_matches('/').to_owned(), bytes.into());
    }
}

impl Files for Memory {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RenderError> {
        Ok(self.files.get(path).cloned())
    }

    fn list(&self, path: &str) -> Result<Option<Vec<Entry>>, RenderError> {
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut entries = std::collections::BTreeSet::new();
        for key in self.files.keys() {
            if let Some(rest) = key.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((dir, _)) => entries.insert(Entry {
                        name: dir.to_owned(),
                        is_dir: true,
                    }),
                    None => entries.insert(Entry {
                        name: rest.to_owned(),
                        is_dir: false,
                    }),
                };
            }
        }
        Ok((!entries.is_empty()).then(|| entries.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_lists_files_and_folders() {
        let mut m = Memory::new();
        m.insert("env/dev/kustomization.yaml", "resources: []");
        m.insert("env/base/a.yaml", "");
        assert_eq!(m.list("env").unwrap().unwrap().len(), 2);
        assert!(m.list("env/dev").unwrap().unwrap()[0].name == "kustomization.yaml");
        assert!(m.list("nope").unwrap().is_none());
        assert!(m.read("env/base/a.yaml").unwrap().is_some());
    }

    #[test]
    fn joins_and_normalizes() {
        assert_eq!(
            join("environments/dev", "../base").unwrap(),
            "environments/base"
        );
        assert_eq!(
            join("environments/dev", "./patch.yaml").unwrap(),
            "environments/dev/patch.yaml"
        );
        assert_eq!(join("", "a/b/../c").unwrap(), "a/c");
        assert!(join("a", "../../etc").is_err());
        assert_eq!(join("/tmp/env/dev", "../base").unwrap(), "/tmp/env/base");
        assert_eq!(join("", "/tmp/env").unwrap(), "/tmp/env");
        assert!(join("/tmp", "../../etc").is_err());
    }
}
