//! `ferry-pipelines`: the CI side of ferry. `.github/workflows/` only call it.
//!
//! Exit codes: 0 success; 1 a check failed (the gate, or policy findings
//! with `diff --check-policy`); 2 usage; 3 any other error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ferry_inference::artifact::{self, Artifact};
use ferry_inference::forest::ForestParams;
use ferry_inference::train::Step;
use ferry_manifests::git::GitFiles;
use ferry_manifests::render::Files;
use ferry_pipelines::github::{GitHub, Upsert};
use ferry_pipelines::{bump, gate, golden, review};

mod promote;
mod release;

#[derive(Parser)]
#[command(
    name = "ferry-pipelines",
    version,
    about = "Train and gate the model, bump image tags, review environment changes, report to GitHub, promote.",
    after_help = "Exit codes: 0 success, 1 a check failed (gate, policy), 2 usage error, 3 other error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum State {
    Pending,
    Success,
    Failure,
    Error,
}

#[derive(Subcommand)]
enum Command {
    /// Train the model (deterministic) and write the artifact and a model card.
    Train {
        #[arg(long, default_value = "inference/data/Train_Data.csv")]
        data: PathBuf,
        #[arg(long, default_value = "inference/model/placement.json")]
        out: PathBuf,
        /// Where to write the model card (Markdown).
        #[arg(long)]
        card: Option<PathBuf>,
        #[arg(long, default_value_t = ForestParams::default().seed)]
        seed: u64,
    },
    /// Check a model against the committed thresholds and the released
    /// model (no metric worse by more than the tolerance). Exit 1 says
    /// which metric failed by how much.
    Gate {
        /// The new artifact.
        #[arg(long, default_value = "inference/model/placement.json")]
        model: PathBuf,
        /// The released model's artifact at a git revision (e.g. origin/main).
        #[arg(long)]
        released_rev: Option<String>,
        /// Or the released artifact as a file.
        #[arg(long, conflicts_with = "released_rev")]
        released: Option<PathBuf>,
        #[arg(long, default_value = "inference/model/gate.json")]
        thresholds: PathBuf,
        /// There is no released model yet: check the thresholds only.
        /// Without it a missing released model closes the gate (exit 1)
        /// instead of letting any model through.
        #[arg(long)]
        first_release: bool,
    },
    /// Point environments/ENV at a new image tag (and digest), changing
    /// nothing else in its kustomization.yaml. Running it twice changes
    /// nothing the second time. With --golden-model, also write the
    /// prediction cases of that model to environments/ENV/golden.jsonl.
    Bump {
        #[command(flatten)]
        bump: BumpArgs,
        #[command(flatten)]
        golden: GoldenArgs,
        /// Check that the bump can be made (the kustomization has an
        /// `images:` entry for IMAGE) and write nothing.
        #[arg(long, conflicts_with = "golden_model")]
        dry_run: bool,
    },
    /// Write the prediction cases of a model: the first N rows of a CSV
    /// the model was not trained on, each with the model's answer, as JSON
    /// lines `{"request": ..., "answer": ...}` (what the controller's
    /// `healthCheck.predictions` sends each new pod and expects back).
    Golden {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// How many rows.
        #[arg(long, default_value_t = 50)]
        cases: usize,
    },
    /// Point environments/ENV at a released image on the tip of BRANCH and
    /// push it there: fetch, bump, commit, push, and start again from the
    /// new tip when someone pushed meanwhile (the bump is made again, never
    /// rebased). With --golden-model, the same commit writes the image's
    /// prediction cases to environments/ENV/golden.jsonl (computed before
    /// the tip is fetched, from the model the image was built with). When the remote refuses BRANCH as protected, with
    /// --pull-request-if-protected the commit goes to `release/ENV-TAG` and
    /// a pull request that merges itself once its checks pass (GITHUB_TOKEN,
    /// GITHUB_REPOSITORY, GITHUB_API_URL); it then prints `branch=BRANCH`
    /// for `start-checks`. Never backwards: when the environment on the tip
    /// already runs a tag naming a commit that contains the one TAG names
    /// (`<version>-<commit>`), nothing is written and it says so (exit 0).
    ReleaseBump {
        #[command(flatten)]
        bump: BumpArgs,
        #[command(flatten)]
        golden: GoldenArgs,
        #[arg(long, default_value = "origin")]
        remote: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Pushes tried before giving up on a branch that keeps moving.
        #[arg(long, default_value_t = 5)]
        attempts: u32,
        #[arg(long)]
        pull_request_if_protected: bool,
        #[command(flatten)]
        github: GitHubArgs,
    },
    /// Render every environment at two revisions with the controller's
    /// renderer and print the review as Markdown (one GitHub comment).
    Diff {
        #[arg(long)]
        base: String,
        #[arg(long)]
        head: String,
        /// Write the Markdown here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Exit 1 when the head has policy findings or does not render.
        #[arg(long)]
        check_policy: bool,
    },
    /// Create or update the pull request's review comment (found by its
    /// hidden marker). GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL.
    Comment {
        #[arg(long)]
        pr: u64,
        #[arg(long)]
        body_file: PathBuf,
        /// The login the comment is posted as: only a comment by it is
        /// updated (GITHUB_TOKEN in Actions posts as github-actions[bot]).
        #[arg(
            long,
            env = "FERRY_COMMENT_AUTHOR",
            default_value = "github-actions[bot]"
        )]
        author: String,
        /// Update our comment if there is one, never create one (a pull
        /// request that no longer changes any environment).
        #[arg(long)]
        update_only: bool,
        #[command(flatten)]
        github: GitHubArgs,
    },
    /// Promote the image an environment runs (by digest) to another: a
    /// branch with the change is pushed to origin and a pull request opened
    /// (GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL).
    Promote {
        #[arg(long, default_value = "dev")]
        from: String,
        #[arg(long, default_value = "prod")]
        to: String,
        /// The image to promote, when the environment has several.
        #[arg(long)]
        image: Option<String>,
        /// The branch the pull request goes into.
        #[arg(long, default_value = "main")]
        base: String,
        /// Only write the change to the working tree: no branch, push or pull request.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        github: GitHubArgs,
    },
    /// Start the checks of a pull request that a workflow token opened
    /// (GitHub starts no workflow for those, so required checks would
    /// never report): dispatch the CI workflow on BRANCH and set
    /// `ferry/policy` on its head from a review from the merge base with
    /// BASE. GITHUB_TOKEN (actions: write, statuses: write),
    /// GITHUB_REPOSITORY, GITHUB_API_URL.
    StartChecks {
        #[arg(long)]
        branch: String,
        #[arg(long, default_value = "main")]
        base: String,
        #[arg(long, default_value = "origin")]
        remote: String,
        /// The workflow file to dispatch (it must allow workflow_dispatch).
        #[arg(long, default_value = "ci.yml")]
        workflow: String,
        /// Where the status links to (e.g. this run).
        #[arg(long)]
        target_url: Option<String>,
        #[command(flatten)]
        github: GitHubArgs,
    },
    /// Make a fork release to itself: rewrite every place that names the
    /// upstream (the image names in environments/base, the overlays and the
    /// controller's install, the repository URL in the Environments, the
    /// image names in the workflows). Run it once in a fresh fork, from the
    /// repository's root, and commit the result. Running it again changes
    /// nothing.
    Init {
        /// The fork on GitHub, OWNER/NAME.
        #[arg(long)]
        repository: String,
        /// Where the fork's images go [default: ghcr.io/<owner, lowercase>].
        #[arg(long)]
        image_prefix: Option<String>,
        /// The repository's root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
    /// Set a commit status.
    Status {
        #[arg(long)]
        sha: String,
        #[arg(long, value_enum)]
        state: State,
        #[arg(long)]
        context: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        target_url: Option<String>,
        #[command(flatten)]
        github: GitHubArgs,
    },
}

/// The prediction cases a bump writes with the image (`bump`, `release-bump`).
#[derive(clap::Args)]
struct GoldenArgs {
    /// The model the new image serves: its answers to the rows of
    /// --golden-data become the cases the controller verifies each new pod
    /// with (`healthCheck.predictions`), in environments/ENV/golden.jsonl.
    #[arg(long, requires = "golden_data")]
    golden_model: Option<PathBuf>,
    /// Rows the model was not trained on (CSV, any column order).
    #[arg(long, requires = "golden_model")]
    golden_data: Option<PathBuf>,
}

impl GoldenArgs {
    /// Both, or None.
    fn paths(&self) -> Option<(&Path, &Path)> {
        self.golden_model
            .as_deref()
            .zip(self.golden_data.as_deref())
    }
}

/// Which image of which environment to point where (`bump`, `release-bump`).
#[derive(clap::Args)]
struct BumpArgs {
    #[arg(long)]
    env: String,
    /// The image's name in the kustomization's `images:` list.
    #[arg(long)]
    image: String,
    #[arg(long)]
    tag: String,
    /// sha256:... (without it, an existing digest is removed).
    #[arg(long)]
    digest: Option<String>,
}

impl BumpArgs {
    /// `text` (environment's kustomization.yaml, named `label`) bumped.
    fn apply(&self, text: &str, label: &str) -> Result<String, bump::BumpError> {
        bump::bump(text, label, &self.image, &self.tag, self.digest.as_deref())
    }
}

/// How many prediction cases a bump writes.
const GOLDEN_CASES: usize = 50;

/// The prediction cases of the model at `model` for the first `count`
/// rows of `data`.
fn golden_text(model: &Path, data: &Path, count: usize) -> anyhow::Result<String> {
    let artifact = artifact::load(model)
        .with_context(|| format!("failed to load the model {}", model.display()))?;
    let csv = std::fs::read(data).with_context(|| format!("failed to read {}", data.display()))?;
    let text = golden::cases(&artifact.model, &csv, count)?;
    eprintln!(
        "{} prediction cases of model {}",
        text.lines().count(),
        artifact.sha256
    );
    Ok(text)
}

/// Writes [`golden_text`] to `out`.
fn write_golden(model: &Path, data: &Path, out: &Path, count: usize) -> anyhow::Result<()> {
    let text = golden_text(model, data, count)?;
    std::fs::write(out, &text).with_context(|| format!("failed to write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// `environments/ENV/golden.jsonl`: the prediction cases of the image ENV
/// runs.
fn golden_file(env: &str) -> PathBuf {
    PathBuf::from("environments").join(env).join("golden.jsonl")
}

/// `environments/ENV/kustomization.yaml`.
fn kustomization(env: &str) -> PathBuf {
    PathBuf::from("environments")
        .join(env)
        .join("kustomization.yaml")
}

#[derive(clap::Args)]
struct GitHubArgs {
    #[arg(long, env = "GITHUB_REPOSITORY", default_value = "")]
    repo: String,
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    api_url: String,
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true, default_value = "")]
    token: String,
}

impl GitHubArgs {
    /// Whether a token and a repository were given (checked before any
    /// work that only makes sense with them).
    fn is_set(&self) -> bool {
        !self.token.is_empty() && !self.repo.is_empty()
    }

    /// Runs `work` with a client of the repository on a runtime of its own
    /// (the client needs one around it from its creation on).
    fn run<T, F>(&self, work: impl FnOnce(GitHub) -> F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = GitHub::new(&self.api_url, &self.token, &self.repo)?;
            work(client).await
        })
    }
}

fn run_git(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .output()
        .context("failed to run git")?;
    anyhow::ensure!(
        out.status.success(),
        "git {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A failed check (exit 1), as opposed to an error (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CheckFailed(String);

fn main() -> ExitCode {
    match try_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<CheckFailed>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(3)
        }
    }
}

fn read_artifact_at(rev: &str, path: &str) -> anyhow::Result<Option<Artifact>> {
    let (files, root) = GitFiles::discover(&std::env::current_dir()?, rev)?;
    let cwd = std::env::current_dir()?;
    let relative = cwd.join(path);
    let relative = relative.strip_prefix(&root).unwrap_or(Path::new(path));
    match files.read(&relative.to_string_lossy())? {
        Some(bytes) => Ok(Some(
            Artifact::from_bytes(&bytes).with_context(|| format!("the model at {rev}"))?,
        )),
        None => Ok(None),
    }
}

/// The first 12 characters of a digest from git (never panics on a short
/// or odd one).
fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

fn model_changes(base: &str, head: &str) -> anyhow::Result<Option<String>> {
    let path = "inference/model/placement.json";
    let (old, new) = (read_artifact_at(base, path)?, read_artifact_at(head, path)?);
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(None);
    };
    if old.sha256 == new.sha256 {
        return Ok(None);
    }
    let (before, after) = (gate::metrics(&old.model), gate::metrics(&new.model));
    let mut text = format!(
        "**Model** `{}` → `{}` (training data `{}` → `{}`)\n\n| metric | before | after |\n|---|---|---|\n",
        old.model.version,
        new.model.version,
        short(&old.model.training_data.sha256),
        short(&new.model.training_data.sha256)
    );
    for (name, value) in &after {
        text.push_str(&format!(
            "| {name} | {:.4} | {value:.4} |\n",
            before.get(name).copied().unwrap_or(f64::NAN)
        ));
    }
    Ok(Some(text))
}

/// The review of every environment from `base` to `head` (revisions of the
/// repository the working directory is in) as Markdown, and the names of
/// the environments with policy findings or that do not render at `head`.
fn review_between(base: &str, head: &str) -> anyhow::Result<(String, Vec<String>)> {
    let cwd = std::env::current_dir()?;
    let (base_files, _) = GitFiles::discover(&cwd, base)?;
    let (head_files, _) = GitFiles::discover(&cwd, head)?;
    let mut names = review::environments(&head_files);
    for n in review::environments(&base_files) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let reviews: Vec<_> = names
        .iter()
        .map(|env| {
            eprintln!("rendering environments/{env} at {base} and {head}");
            review::review(&base_files, &head_files, env)
        })
        .collect();
    let model = model_changes(base, head)?;
    let text = review::markdown(&reviews, model.as_deref(), review::COMMENT_LIMIT);
    let failing = reviews
        .iter()
        .filter(|r| r.error.is_some() || !r.findings.is_empty())
        .map(|r| r.name.clone())
        .collect();
    Ok((text, failing))
}

fn try_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train {
            data,
            out,
            card,
            seed,
        } => {
            let csv = ferry_inference::data::read(&data)?;
            let params = ForestParams {
                seed,
                ..ForestParams::default()
            };
            let artifact = ferry_inference::train::train(&csv, &params, &mut |step| match step {
                Step::Fold { protocol, fold, of } => eprintln!("[{protocol} cv] fold {fold}/{of}"),
                Step::Final => eprintln!("fitting the final forest"),
            })?;
            artifact.write(&out)?;
            eprintln!(
                "wrote {} (version {}, sha256 {})",
                out.display(),
                artifact.model.version,
                artifact.sha256
            );
            if let Some(card) = card {
                std::fs::write(&card, gate::model_card(&artifact.model, &artifact.sha256))
                    .with_context(|| format!("failed to write {}", card.display()))?;
            }
            Ok(())
        }
        Command::Gate {
            model,
            released_rev,
            released,
            thresholds,
            first_release,
        } => {
            let new = artifact::load(&model)?;
            let text = std::fs::read_to_string(&thresholds)
                .with_context(|| format!("failed to read {}", thresholds.display()))?;
            let thresholds: gate::Thresholds = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a gate file", thresholds.display()))?;
            let baseline = match (released_rev, released) {
                (Some(rev), _) => read_artifact_at(&rev, &model.to_string_lossy())?,
                (None, Some(path)) => Some(artifact::load(&path)?),
                (None, None) => None,
            };
            let mut failures =
                gate::check(&new.model, baseline.as_ref().map(|a| &a.model), &thresholds);
            if baseline.is_none() && !first_release {
                failures.insert(0, gate::Failure(
                    "no released model to compare with: give --released-rev or --released (--first-release for the very first one)".to_owned(),
                ));
            }
            if failures.is_empty() {
                eprintln!("gate open: {} {}", new.model.name, new.model.version);
                Ok(())
            } else {
                let lines: Vec<String> =
                    failures.into_iter().map(|f| format!("  {}", f.0)).collect();
                Err(CheckFailed(format!(
                    "gate closed for {}:\n{}",
                    new.model.version,
                    lines.join("\n")
                ))
                .into())
            }
        }
        Command::Golden {
            model,
            data,
            out,
            cases,
        } => write_golden(&model, &data, &out, cases),
        Command::Bump {
            bump,
            golden,
            dry_run,
        } => {
            if let Some((model, data)) = golden.paths() {
                write_golden(model, data, &golden_file(&bump.env), GOLDEN_CASES)?;
            }
            let file = kustomization(&bump.env);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let bumped = bump.apply(&text, &file.to_string_lossy())?;
            let BumpArgs {
                image, tag, digest, ..
            } = &bump;
            if dry_run {
                eprintln!(
                    "{}: {image} can be bumped (dry run: nothing written)",
                    file.display()
                );
            } else if bumped == text {
                eprintln!("{} already points at {image}:{tag}", file.display());
            } else {
                std::fs::write(&file, bumped)
                    .with_context(|| format!("failed to write {}", file.display()))?;
                eprintln!(
                    "{}: {image} -> {tag}{}",
                    file.display(),
                    digest.as_ref().map(|d| format!("@{d}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Diff {
            base,
            head,
            output,
            check_policy,
        } => {
            let (text, failing) = review_between(&base, &head)?;
            match output {
                Some(path) => std::fs::write(&path, &text)
                    .with_context(|| format!("failed to write {}", path.display()))?,
                None => print!("{text}"),
            }
            if check_policy && !failing.is_empty() {
                return Err(CheckFailed(format!(
                    "policy findings or render errors in: {}",
                    failing.join(", ")
                ))
                .into());
            }
            Ok(())
        }
        Command::Comment {
            pr,
            body_file,
            author,
            update_only,
            github,
        } => {
            let body = std::fs::read_to_string(&body_file)
                .with_context(|| format!("failed to read {}", body_file.display()))?;
            let body = if body.contains(review::MARKER) {
                body
            } else {
                format!("{}\n{body}", review::MARKER)
            };
            let (author, body) = (&author, &body);
            let upserted = github.run(|client| async move {
                Ok(client
                    .upsert_comment(pr, review::MARKER, author, body, !update_only)
                    .await?)
            })?;
            match upserted {
                Upsert::Created(id) => eprintln!("created comment {id} on #{pr}"),
                Upsert::Updated(id) => eprintln!("updated comment {id} on #{pr}"),
                Upsert::None => eprintln!("no comment of ours on #{pr}: none created"),
            }
            Ok(())
        }
        Command::ReleaseBump {
            bump,
            golden,
            remote,
            branch,
            attempts,
            pull_request_if_protected,
            github,
        } => release::release_bump(
            &bump,
            golden.paths(),
            &remote,
            &branch,
            attempts,
            pull_request_if_protected,
            &github,
        ),
        Command::Promote {
            from,
            to,
            image,
            base,
            local,
            github,
        } => promote::promote(&from, &to, image.as_deref(), &base, local, &github),
        Command::Init {
            repository,
            image_prefix,
            root,
        } => {
            use ferry_pipelines::init;
            let fork = init::Fork::new(&repository, image_prefix.as_deref())?;
            let report = init::init(&root, &fork)?;
            for file in &report.changed {
                eprintln!("rewrote {}", file.display());
            }
            anyhow::ensure!(
                report.left.is_empty(),
                "still naming the upstream (edit these by hand):\n{}",
                report.left.join("\n")
            );
            eprintln!(
                "{} files name {} and {}/...; commit them (docs/eks.md, step 1)",
                report.changed.len(),
                fork.repository,
                fork.images
            );
            Ok(())
        }
        Command::StartChecks {
            branch,
            base,
            remote,
            workflow,
            target_url,
            github,
        } => release::start_checks(
            &branch,
            &base,
            &remote,
            &workflow,
            target_url.as_deref(),
            &github,
        ),
        Command::Status {
            sha,
            state,
            context,
            description,
            target_url,
            github,
        } => {
            let state = match state {
                State::Pending => octocrab::models::StatusState::Pending,
                State::Success => octocrab::models::StatusState::Success,
                State::Failure => octocrab::models::StatusState::Failure,
                State::Error => octocrab::models::StatusState::Error,
            };
            let (sha, context, description) = (&sha, &context, &description);
            let target_url = target_url.as_deref();
            github.run(|client| async move {
                Ok(client
                    .set_status(sha, state, context, description, target_url)
                    .await?)
            })?;
            eprintln!("status {context} set on {sha}");
            Ok(())
        }
    }
}
