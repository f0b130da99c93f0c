//! `ferry-controller`: the GitOps controller's command line.
//!
//! Exit codes: 0 success; 1 failure (the environment does not render: the
//! message names the file and field); 2 usage.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_controller::render::{self, Disk};

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
        Command::Render { path } => {
            // Render relative to the current directory so `..` may reach
            // shared bases, as kustomize allows within the repository.
            let root = std::env::current_dir()?;
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            let objects = render::render(&Disk::new(&root), &relative.to_string_lossy())?;
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
