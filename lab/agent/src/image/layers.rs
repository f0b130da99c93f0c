//! Layers unpacked into a root filesystem, in order, as the OCI image spec
//! describes: a layer is a tar (plain or gzip), `.wh.NAME` deletes NAME of
//! the layers below, `.wh..wh..opq` empties its directory of what the
//! layers below put there. A layer comes from a registry, so it is
//! untrusted: no entry, whiteout or link may reach outside the root (the
//! `tar` crate checks entries; whiteouts are checked here).

use std::io::{Read, Seek};
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("failed to read layer {layer}")]
    Read {
        layer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer {layer} has an entry {entry:?} outside the image's root; refusing the image")]
    Escapes { layer: String, entry: String },
    #[error("layer {layer} is {media_type}, which the lab cannot unpack (plain or gzip tar only)")]
    Unsupported { layer: String, media_type: String },
    #[error("failed to apply whiteout {entry:?} of layer {layer}")]
    Whiteout {
        layer: String,
        entry: String,
        #[source]
        source: std::io::Error,
    },
}

/// A layer's entry path made relative and plain: `None` when it has `..`
/// or anything else that is not a name.
pub fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What a whiteout entry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout {
    /// Delete this path of the layers below.
    Remove(PathBuf),
    /// Empty this directory of what the layers below put in it.
    Opaque(PathBuf),
}

/// The whiteout an entry path is, if it is one.
pub fn whiteout(entry: &Path) -> Option<Whiteout> {
    let name = entry.file_name()?.to_str()?;
    let parent = entry.parent().unwrap_or(Path::new("")).to_owned();
    if name == OPAQUE {
        Some(Whiteout::Opaque(parent))
    } else {
        name.strip_prefix(WHITEOUT)
            .filter(|n| !n.is_empty())
            .map(|n| Whiteout::Remove(parent.join(n)))
    }
}

fn open(layer: &Path, media_type: &str) -> Result<Box<dyn Read>, LayerError> {
    let name = layer.display().to_string();
    let read_error = |source| LayerError::Read {
        layer: name.clone(),
        source,
    };
    if media_type.contains("zstd") {
        return Err(LayerError::Unsupported {
            layer: name,
            media_type: media_type.to_owned(),
        });
    }
    let mut file = std::fs::File::open(layer).map_err(read_error)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(read_error)?;
    file.rewind().map_err(read_error)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// `root`/`relative` if its parent, with every symlink resolved, is still
/// inside `root`; so a whiteout cannot delete through a link.
fn inside(root: &Path, relative: &Path) -> std::io::Result<Option<PathBuf>> {
    let Some(name) = relative.file_name() else {
        return Ok(None);
    };
    let parent = root.join(relative.parent().unwrap_or(Path::new("")));
    let parent = match parent.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(parent
        .starts_with(root.canonicalize()?)
        .then(|| parent.join(name)))
}

fn remove(path: &Path) -> std::io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn apply(root: &Path, w: &Whiteout) -> std::io::Result<()> {
    match w {
        Whiteout::Remove(path) => match inside(root, path)? {
            Some(target) => remove(&target),
            None => Ok(()),
        },
        Whiteout::Opaque(dir) => {
            let target = if dir.as_os_str().is_empty() {
                Some(root.to_owned())
            } else {
                inside(root, dir)?
            };
            let Some(target) = target.filter(|t| t.is_dir() && !t.is_symlink()) else {
                return Ok(());
            };
            for entry in std::fs::read_dir(&target)? {
                remove(&entry?.path())?;
            }
            Ok(())
        }
    }
}

/// Applies one layer on top of `root`. Whiteouts go first (they speak of
/// the layers below, never of their own layer's entries), then the entries.
pub fn unpack(layer: &Path, media_type: &str, root: &Path) -> Result<(), LayerError> {
    let name = layer.display().to_string();
    let read_error = |source| LayerError::Read {
        layer: name.clone(),
        source,
    };
    let mut whiteouts = Vec::new();
    let mut archive = tar::Archive::new(open(layer, media_type)?);
    for entry in archive.entries().map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let path = entry.path().map_err(read_error)?.into_owned();
        let escapes = || LayerError::Escapes {
            layer: name.clone(),
            entry: path.display().to_string(),
        };
        let rel = relative(&path).ok_or_else(escapes)?;
        if let Some(w) = whiteout(&rel) {
            whiteouts.push((rel, w));
        }
    }
    for (entry, w) in &whiteouts {
        apply(root, w).map_err(|source| LayerError::Whiteout {
            layer: name.clone(),
            entry: entry.display().to_string(),
            source,
        })?;
    }
    let mut archive = tar::Archive::new(open(layer, media_type)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let path = entry.path().map_err(read_error)?.into_owned();
        if relative(&path).and_then(|r| whiteout(&r)).is_some() {
            continue;
        }
        if !entry.unpack_in(root).map_err(read_error)? {
            return Err(LayerError::Escapes {
                layer: name.clone(),
                entry: path.display().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferry-layers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A layer file of (path, contents); `None` contents make a directory.
    fn layer(dir: &Path, name: &str, entries: &[(&str, Option<&str>)], gzip: bool) -> PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let out: Box<dyn std::io::Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(file)
        };
        let mut builder = tar::Builder::new(out);
        for (p, contents) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match contents {
                Some(c) => {
                    header.set_size(c.len() as u64);
                    header.set_mode(0o644);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder.append_data(&mut header, p, c.as_bytes()).unwrap();
                }
                None => {
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_entry_type(tar::EntryType::Directory);
                    builder.append_data(&mut header, p, &[][..]).unwrap();
                }
            }
        }
        builder.into_inner().unwrap().flush().unwrap();
        path
    }

    #[test]
    fn whiteouts_remove_what_lower_layers_put_there() {
        let dir = temp("whiteouts");
        let root = dir.join("root");
        std::fs::create_dir(&root).unwrap();
        let lower = layer(
            &dir,
            "lower.tar",
            &[
                ("etc/", None),
                ("etc/a", Some("a")),
                ("etc/b", Some("b")),
                ("opt/", None),
                ("opt/old", Some("old")),
                ("bin/", None),
                ("bin/tool", Some("1")),
            ],
            false,
        );
        let upper = layer(
            &dir,
            "upper.tar.gz",
            &[
                ("opt/new", Some("new")),
                ("opt/.wh..wh..opq", Some("")),
                ("etc/.wh.a", Some("")),
                ("bin/tool", Some("2")),
            ],
            true,
        );
        unpack(&lower, "application/vnd.oci.image.layer.v1.tar", &root).unwrap();
        unpack(&upper, "application/vnd.oci.image.layer.v1.tar+gzip", &root).unwrap();
        assert!(!root.join("etc/a").exists());
        assert_eq!(std::fs::read_to_string(root.join("etc/b")).unwrap(), "b");
        assert!(
            !root.join("opt/old").exists(),
            "the opaque directory kept a lower file"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("opt/new")).unwrap(),
            "new"
        );
        assert_eq!(std::fs::read_to_string(root.join("bin/tool")).unwrap(), "2");
        assert!(!root.join("etc/.wh.a").exists() && !root.join("opt/.wh..wh..opq").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_whiteout_through_a_symlink_deletes_nothing_outside() {
        let dir = temp("symlink");
        let root = dir.join("root");
        let outside = dir.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let upper = layer(&dir, "upper.tar", &[("link/.wh.precious", Some(""))], false);
        unpack(&upper, "", &root).unwrap();
        assert!(outside.join("precious").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_whiteouts() {
        assert_eq!(
            whiteout(Path::new("a/.wh.b")),
            Some(Whiteout::Remove("a/b".into()))
        );
        assert_eq!(
            whiteout(Path::new("a/.wh..wh..opq")),
            Some(Whiteout::Opaque("a".into()))
        );
        assert_eq!(whiteout(Path::new(".wh.")), None);
        assert_eq!(whiteout(Path::new("a/b")), None);
        assert_eq!(relative(Path::new("/./a/b")), Some("a/b".into()));
        assert_eq!(relative(Path::new("a/../../b")), None);
    }

    proptest! {
        #[test]
        fn entry_paths_never_leave_the_root(path in "(/|\\.\\./|\\./|[a-z.]{1,4}/){0,5}[a-z.]{0,6}") {
            if let Some(rel) = relative(Path::new(&path)) {
                prop_assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));
            }
            let _ = whiteout(Path::new(&path));
        }

        #[test]
        fn any_bytes_as_a_layer_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let dir = temp("fuzz");
            let file = dir.join("layer");
            std::fs::write(&file, &bytes).unwrap();
            let _ = unpack(&file, "", &dir.join("root"));
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
