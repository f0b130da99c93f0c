//! `ferry-controller`: the GitOps controller's command line.
//!
//! Exit codes: 0 success; 1 failure (the environment does not render: the
//! message names the file and field); 2 usage.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_controller::render::{self, Disk};
use ferry_controller::source::GitFiles;

/// Keeps a Kubernetes namespace equal to what git says.
#[derive(Parser)]
#[command(
    name = "ferry-controller",
    version,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render an environment (a kustomization or a folder of YAML) and
    /// print it as multi-document YAML in apply order, like
    /// `kubectl kustomize PATH`. The digest of what was rendered, the one
    /// the controller records when it applies, goes to stderr.
    Render {
        /// The kustomization directory, e.g. environments/dev.
        path: PathBuf,
        /// Render the files of this revision (a commit, branch or tag of
        /// the git repository around PATH) instead of the working tree.
        #[arg(long)]
        revision: Option<String>,
    },
}

fn main() -> ExitCode {
    match try_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Render { path, revision } => {
            let cwd = std::env::current_dir()?;
            let absolute = cwd.join(&path);
            let objects = match revision {
                Some(revision) => {
                    let (files, root) = GitFiles::discover(&cwd, &revision)?;
                    let relative = absolute.strip_prefix(&root).map_err(|_| {
                        anyhow::anyhow!(
                            "{} is outside the repository at {}",
                            path.display(),
                            root.display()
                        )
                    })?;
                    let rev = files.revision(&revision)?;
                    eprintln!(
                        "rendering {} at {} ({})",
                        relative.display(),
                        rev.id(),
                        rev.subject()
                    );
                    render::render(&files, &relative.to_string_lossy())?
                }
                // Relative to the current directory, so `..` may reach shared
                // bases, as kustomize allows within the repository.
                None => {
                    let relative = absolute.strip_prefix(&cwd).unwrap_or(&path);
                    render::render(&Disk::new(&cwd), &relative.to_string_lossy())?
                }
            };
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
            Ok(())
        }
    }
}
