//! `ferry-controller`: the GitOps controller's command line.
//!
//! Exit codes: 0 success (for `diff`: no differences); 1 for `diff`:
//! differences found, for the other commands: failure; 2 usage; for `diff`,
//! above 1 (3) an error, as `kubectl diff` does.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry_controller::plan::{self, Resolver};
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
    /// Show what applying an environment would change in the cluster
    /// (the current KUBECONFIG context): a server-side dry run of every
    /// object compared with the live one, as `kubectl diff --server-side`
    /// does. Secret values are redacted.
    Diff {
        /// The kustomization directory, e.g. environments/dev.
        path: PathBuf,
        /// Diff the files of this revision instead of the working tree.
        #[arg(long)]
        revision: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Diff { path, revision } = &cli.command {
        return match diff(path, revision.as_deref()) {
            Ok(false) => ExitCode::SUCCESS,
            Ok(true) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(3)
            }
        };
    }
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Renders PATH from the working tree or a revision, with origins.
fn render_path(
    path: &std::path::Path,
    revision: Option<&str>,
) -> anyhow::Result<Vec<(serde_json::Value, String)>> {
    let cwd = std::env::current_dir()?;
    let absolute = cwd.join(path);
    Ok(match revision {
        Some(revision) => {
            let (files, root) = GitFiles::discover(&cwd, revision)?;
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
        // Relative to the current directory, so `..` may reach shared
        // bases, as kustomize allows within the repository.
        None => {
            let relative = absolute.strip_prefix(&cwd).unwrap_or(path);
            render::render_with_origins(&Disk::new(&cwd), &relative.to_string_lossy())?
        }
    })
}

/// Prints the plan's diffs; true when anything would change.
fn diff(path: &std::path::Path, revision: Option<&str>) -> anyhow::Result<bool> {
    let desired = render_path(path, revision)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plan = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let mut resolver = Resolver::new(client);
        anyhow::Ok(plan::plan(&mut resolver, &desired, &[]).await?)
    })?;
    let mut out = std::io::stdout().lock();
    for change in &plan.changes {
        if !change.diff.is_empty() {
            let _ = write!(out, "{}", change.diff);
        }
    }
    eprintln!("{}", plan::summary(&plan));
    Ok(plan.has_changes())
}

fn try_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Diff { .. } => unreachable!("handled in main"),
        Command::Render { path, revision } => {
            let objects: Vec<serde_json::Value> = render_path(&path, revision.as_deref())?
                .into_iter()
                .map(|(o, _)| o)
                .collect();
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
