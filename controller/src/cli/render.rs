//! `render`: an environment as multi-document YAML in apply order, from
//! the working tree or a revision.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use ferry_manifests::git::GitFiles;
use ferry_manifests::render::{self, Disk};

/// Prints PATH rendered (with the readiness gate of `beforeTraffic` when
/// asked), and its digest to stderr.
pub fn render(
    path: &Path,
    revision: Option<&str>,
    before_traffic: bool,
) -> anyhow::Result<ExitCode> {
    let mut objects: Vec<serde_json::Value> = render_path(path, revision)?
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    if before_traffic {
        ferry_manifests::readiness::add_verified_gate(objects.iter_mut());
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(render::to_yaml(&objects).as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    eprintln!(
        "{} objects, digest {}",
        objects.len(),
        render::digest(&objects)
    );
    Ok(ExitCode::SUCCESS)
}

/// Renders PATH from the working tree or a revision, with origins.
///
/// From the working tree any path works, as with `kubectl kustomize`:
/// relative or absolute, inside a repository or not, with `..` reaching
/// wherever the files are. With a revision, PATH must lie in a git
/// repository, whose tree at that revision is read instead.
pub fn render_path(
    path: &std::path::Path,
    revision: Option<&str>,
) -> anyhow::Result<Vec<(serde_json::Value, String)>> {
    let absolute = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| anyhow::anyhow!("failed to resolve {}: {e}", path.display()))?;
    Ok(match revision {
        Some(revision) => {
            let (files, root) = GitFiles::discover(&absolute, revision).map_err(|e| {
                anyhow::anyhow!(
                    "--revision reads files from git, but {} is not in a git repository \
                     (or {revision} is not a revision of it): {e}",
                    path.display()
                )
            })?;
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            let relative = absolute.strip_prefix(&root).map_err(|_| {
                anyhow::anyhow!(
                    "{} is outside the repository at {}",
                    path.display(),
                    root.display()
                )
            })?;
            let rev = files.revision(revision)?;
            eprintln!(
                "rendering {} at {} ({})",
                relative.display(),
                rev.id(),
                rev.subject()
            );
            render::render_with_origins(&files, &relative.to_string_lossy())?
        }
        None => render::render_with_origins(
            &Disk::new(std::path::Path::new("/")),
            &absolute.to_string_lossy(),
        )?,
    })
}
