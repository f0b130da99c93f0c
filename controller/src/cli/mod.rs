//! `ferry-controller`: the GitOps controller's command line, one file per
//! subcommand.
//!
//! Exit codes: 0 success (for `diff`: no differences); 1 for `diff`:
//! differences found, for the other commands: failure; 2 usage; for `diff`,
//! above 1 (3) an error, as `kubectl diff` does.

mod crd;
mod diff;
mod history;
mod render;
mod run;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps a Kubernetes namespace equal to what git says.
#[derive(Parser)]
#[command(
    name = "ferry-controller",
    version,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error. `diff`: 0 no differences, 1 differences, 3 error. `history verify`: 0 verified, 1 broken, 3 error."
)]
pub struct Cli {
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
        /// Add the readiness gate `ferry.dev/verified` to every pod
        /// template, as the controller does for an Environment with
        /// `healthCheck.beforeTraffic: true`.
        #[arg(long)]
        before_traffic: bool,
    },
    /// Run the controller: reconcile every `Environment` (or those of one
    /// namespace) in the cluster of KUBECONFIG or the pod's service
    /// account, and serve /metrics and /healthz.
    Run(run::RunArgs),
    /// Apply an environment once (render, plan, apply; no pruning), as the
    /// controller would, and report the time each phase took. For a first
    /// install or a benchmark; the controller keeps it in sync afterwards.
    Sync {
        /// The kustomization directory, e.g. environments/dev.
        path: PathBuf,
        /// Apply the files of this revision instead of the working tree.
        #[arg(long)]
        revision: Option<String>,
        /// Take over fields other field managers own.
        #[arg(long)]
        force: bool,
    },
    /// Read or verify an Environment's audit history (the chained log the
    /// controller keeps in ConfigMaps beside the Environment).
    History {
        #[command(subcommand)]
        action: HistoryAction,
    },
    /// Print the Environment CustomResourceDefinition (YAML), generated
    /// from the Rust types: `ferry-controller crd > environments/controller/crd.yaml`.
    Crd,
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

#[derive(Subcommand)]
enum HistoryAction {
    /// Print the whole history of NAMESPACE/NAME as JSON, oldest first,
    /// read from the cluster of KUBECONFIG.
    Export {
        /// NAMESPACE/NAME of the Environment.
        environment: String,
    },
    /// Recompute the hash chain and name the first entry that was changed,
    /// removed or reordered; with NAMESPACE/NAME also the entries missing
    /// after the newest one the Environment's status (and, with
    /// --against-github, a GitHub deployment status) names. Exit 0
    /// verified, 1 broken, 3 error.
    Verify {
        /// NAMESPACE/NAME: read the history from the cluster.
        environment: Option<String>,
        /// Verify an exported file instead: a JSON list of entries, oldest
        /// first (`history export`), or a page of the status API.
        #[arg(long, conflicts_with = "environment")]
        file: Option<PathBuf>,
        /// Also compare with the chain heads in the statuses of the
        /// Environment's GitHub deployments (`spec.github`), the witness
        /// outside the cluster: a history trimmed or rewritten together
        /// with the status is caught there. Signs in with GITHUB_TOKEN when
        /// set, else with the Secret `spec.github.secretRef` names (which
        /// KUBECONFIG must let you read).
        #[arg(long, requires = "environment")]
        against_github: bool,
        /// How many of the environment's newest GitHub deployments to read.
        #[arg(
            long,
            default_value_t = 300,
            requires = "against_github",
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000)
        )]
        github_deployments: usize,
    },
}

/// Parses the command line, runs the command, and turns its result into
/// the exit code documented above.
pub fn main() -> ExitCode {
    match try_main(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The exit code of a command that checks something: 0 it passed, 1 it
/// did not, 3 it could not tell (the error is printed).
fn check(passed: anyhow::Result<bool>) -> ExitCode {
    match passed {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::History {
            action:
                HistoryAction::Verify {
                    environment,
                    file,
                    against_github,
                    github_deployments,
                },
        } => Ok(check(history::verify(
            environment.as_deref(),
            file.as_deref(),
            against_github.then_some(github_deployments),
        ))),
        // Changes to make are a failed check.
        Command::Diff { path, revision } => Ok(check(
            diff::diff(&path, revision.as_deref()).map(|changes| !changes),
        )),
        Command::History {
            action: HistoryAction::Export { environment },
        } => history::export(&environment),
        Command::Sync {
            path,
            revision,
            force,
        } => sync::sync(&path, revision.as_deref(), force),
        Command::Crd => {
            print!("{}", crd::yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(args),
        Command::Render {
            path,
            revision,
            before_traffic,
        } => render::render(&path, revision.as_deref(), before_traffic),
    }
}
