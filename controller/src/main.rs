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
    after_help = "Exit codes: 0 success, 1 failure, 2 usage error. `diff`: 0 no differences, 1 differences, 3 error. `history verify`: 0 verified, 1 broken, 3 error."
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
    /// Run the controller: reconcile every `Environment` (or those of one
    /// namespace) in the cluster of KUBECONFIG or the pod's service
    /// account, and serve /metrics and /healthz.
    Run {
        /// Where bare clones of the repositories are kept.
        #[arg(long, env = "FERRY_CACHE_DIR", default_value = "/var/cache/ferry")]
        cache_dir: PathBuf,
        /// Address of the HTTP endpoint (/metrics, /healthz).
        #[arg(long, env = "FERRY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
        http_addr: std::net::SocketAddr,
        /// Watch only this namespace's Environments (default: all).
        #[arg(long, env = "FERRY_WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// A file holding the GitHub webhook's shared secret (a mounted
        /// Secret); enables `POST /hooks/github`.
        #[arg(long, env = "FERRY_WEBHOOK_SECRET_FILE")]
        webhook_secret_file: Option<PathBuf>,
        /// A file holding a bearer token (a mounted Secret) that the status
        /// page and API then require; the probes and /metrics stay open.
        #[arg(long, env = "FERRY_API_TOKEN_FILE")]
        api_token_file: Option<PathBuf>,
        /// Run as one of several replicas: only the holder of the Lease
        /// `ferry-controller` reconciles; every replica serves the API.
        #[arg(long, env = "FERRY_LEADER_ELECTION")]
        leader_election: bool,
        /// The Lease's namespace (default: --namespace, else ferry-system).
        #[arg(long, env = "FERRY_LEASE_NAMESPACE")]
        lease_namespace: Option<String>,
        /// This replica's name in the Lease (default: $HOSTNAME, the pod's name).
        #[arg(long, env = "FERRY_IDENTITY")]
        identity: Option<String>,
        /// The status API's address as people reach it (e.g.
        /// https://ferry.example.com); GitHub deployment statuses then
        /// link to their history entry.
        #[arg(long, env = "FERRY_PUBLIC_URL")]
        public_url: Option<String>,
        /// At most this many Environments reconciled at once (each one is
        /// never reconciled twice at once).
        #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
    },
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
    /// removed or reordered. Exit 0 verified, 1 broken, 3 error.
    Verify {
        /// NAMESPACE/NAME: read the history from the cluster.
        environment: Option<String>,
        /// Verify an exported file instead: a JSON list of entries, oldest
        /// first (`history export`), or a page of the status API.
        #[arg(long, conflicts_with = "environment")]
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
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

/// Renders PATH from the working tree or a revision, with origins.
///
/// From the working tree any path works, as with `kubectl kustomize`:
/// relative or absolute, inside a repository or not, with `..` reaching
/// wherever the files are. With a revision, PATH must lie in a git
/// repository, whose tree at that revision is read instead.
fn render_path(
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

/// Reads the history of `NAMESPACE/NAME` from the cluster.
fn read_history(environment: &str) -> anyhow::Result<Vec<ferry_controller::history::Entry>> {
    let (namespace, name) = environment
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{environment:?} is not NAMESPACE/NAME"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        anyhow::Ok(ferry_controller::journal::read(&client, namespace, name).await?)
    })
}

/// Verifies a history; true when the chain holds. Says what it found.
fn verify_history(
    environment: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    use ferry_controller::history::{self, Entry};
    // A whole history (from the cluster, or exported) starts at entry 1,
    // so entries removed from its start are caught; a page of the API may
    // start anywhere.
    let mut first = 1;
    let entries: Vec<Entry> = match (environment, file) {
        (Some(environment), _) => read_history(environment)?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?;
            match value {
                serde_json::Value::Array(_) => serde_json::from_value(value)?,
                // A page of the status API lists the newest first.
                serde_json::Value::Object(mut page) => {
                    let entries = page.remove("entries").unwrap_or_default();
                    let mut entries: Vec<Entry> = serde_json::from_value(entries)?;
                    entries.reverse();
                    first = entries.first().map_or(1, |e| e.sequence);
                    entries
                }
                _ => anyhow::bail!(
                    "{} holds neither a list of entries nor a history page",
                    file.display()
                ),
            }
        }
        (None, None) => anyhow::bail!("name the Environment (NAMESPACE/NAME) or --file"),
    };
    match history::verify(&entries, first) {
        Ok(verified) => {
            println!(
                "verified: {} entries, chain head {}",
                verified.entries, verified.head
            );
            Ok(true)
        }
        Err(broken) => {
            println!("broken: {broken}");
            Ok(false)
        }
    }
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
        // As `kubectl diff --server-side --force-conflicts`: show what git
        // would set even where another manager owns the field.
        let options = plan::PlanOptions {
            force: true,
            owner: None,
        };
        anyhow::Ok(plan::plan(&mut resolver, &desired, &[], options).await?)
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

fn try_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::History {
            action: HistoryAction::Verify { environment, file },
        } => Ok(check(verify_history(
            environment.as_deref(),
            file.as_deref(),
        ))),
        // Changes to make are a failed check.
        Command::Diff { path, revision } => Ok(check(
            diff(&path, revision.as_deref()).map(|changes| !changes),
        )),
        Command::History {
            action: HistoryAction::Export { environment },
        } => {
            let entries = read_history(&environment)?;
            println!("{}", serde_json::to_string_pretty(&entries)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            path,
            revision,
            force,
        } => {
            let started = std::time::Instant::now();
            let desired = render_path(&path, revision.as_deref())?;
            let rendered = started.elapsed();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (applied, timings) = runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                let mut resolver = Resolver::new(client);
                anyhow::Ok(
                    ferry_controller::sync::plan_and_apply(
                        &mut resolver,
                        &desired,
                        &[],
                        ferry_controller::sync::SyncOptions {
                            force,
                            prune: false,
                            owner: None,
                        },
                    )
                    .await?,
                )
            })?;
            println!(
                "{} objects: render {:.1} ms, plan {:.1} ms, apply {:.1} ms; {} created, {} updated, {} unchanged",
                desired.len(),
                rendered.as_secs_f64() * 1000.0,
                timings.plan.as_secs_f64() * 1000.0,
                timings.apply.as_secs_f64() * 1000.0,
                applied.created,
                applied.updated,
                applied.unchanged
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            cache_dir,
            http_addr,
            namespace,
            webhook_secret_file,
            api_token_file,
            leader_election,
            lease_namespace,
            identity,
            public_url,
            concurrency,
        } => {
            init_tracing();
            let token = match api_token_file {
                Some(file) => {
                    let token = std::fs::read_to_string(&file).map_err(|e| {
                        anyhow::anyhow!("failed to read the API token {}: {e}", file.display())
                    })?;
                    let token = token.trim().to_owned();
                    anyhow::ensure!(
                        !token.is_empty(),
                        "the API token {} is empty",
                        file.display()
                    );
                    Some(token)
                }
                None => None,
            };
            let webhook = match webhook_secret_file {
                Some(file) => {
                    let secret = std::fs::read(&file).map_err(|e| {
                        anyhow::anyhow!("failed to read the webhook secret {}: {e}", file.display())
                    })?;
                    let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
                    anyhow::ensure!(
                        !secret.is_empty(),
                        "the webhook secret {} is empty",
                        file.display()
                    );
                    Some(ferry_controller::api::Webhook {
                        secret,
                        deliveries: Default::default(),
                    })
                }
                None => None,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let election = leader_election.then(|| Election {
                namespace: lease_namespace
                    .or_else(|| namespace.clone())
                    .unwrap_or_else(|| "ferry-system".into()),
                identity: identity.unwrap_or_else(|| {
                    std::env::var("HOSTNAME")
                        .unwrap_or_else(|_| format!("ferry-controller-{}", std::process::id()))
                }),
            });
            runtime.block_on(run(
                cache_dir,
                http_addr,
                namespace,
                webhook,
                token,
                election,
                Tuning {
                    public_url,
                    concurrency,
                },
            ))?;
            Ok(ExitCode::SUCCESS)
        }
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The CRD as YAML, with a header saying where it comes from.
fn crd_yaml() -> anyhow::Result<String> {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(ferry_controller::environment::Environment::crd())?;
    Ok(format!(
        "# Generated by `ferry-controller crd` from controller/src/environment.rs; do not edit.\n{}",
        serde_norway::to_string(&whole_numbers(crd))?
    ))
}

/// schemars writes integer bounds as floats (`maximum: 65535.0`); the API
/// server and kubectl keep them as integers, so the CRD does too.
fn whole_numbers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, whole_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

async fn run(
    cache_dir: PathBuf,
    http_addr: std::net::SocketAddr,
    namespace: Option<String>,
    webhook: Option<ferry_controller::api::Webhook>,
    token: Option<String>,
    election: Option<Election>,
    tuning: Tuning,
) -> anyhow::Result<()> {
    use ferry_controller::environment::Environment;
    use ferry_controller::metrics::Metrics;
    use ferry_controller::reconcile::{self, Context};
    use futures::StreamExt;
    use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    std::fs::create_dir_all(&cache_dir).map_err(|e| {
        anyhow::anyhow!(
            "failed to create the cache directory {}: {e}",
            cache_dir.display()
        )
    })?;
    // A remote that accepts connections and never answers is cut off
    // here; each Environment's overall timeout bounds the rest.
    ferry_controller::source::set_network_timeouts(
        std::time::Duration::from_secs(15),
        std::time::Duration::from_secs(30),
    )?;
    let config = kube::Config::infer().await?;
    let metrics = std::sync::Arc::new(Metrics::default());
    let client = ferry_controller::counting::client(config.clone(), metrics.clone())?;
    let context = std::sync::Arc::new(Context::new(
        client.clone(),
        config,
        cache_dir,
        metrics.clone(),
        tuning.public_url,
    ));
    let environments: kube::Api<Environment> = match &namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    // Fails early, with a message, when the CRD is not installed.
    environments
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            let hint = match &e {
                kube::Error::Api(s) if s.code == 404 => {
                    "install the CRD: kubectl apply -f environments/controller/crd.yaml"
                }
                kube::Error::Api(s) if s.code == 403 => {
                    "grant the RBAC rules of environments/controller/rbac.yaml"
                }
                _ => "check KUBECONFIG and that the API server is reachable",
            };
            anyhow::anyhow!("failed to list Environments ({e}); {hint}")
        })?;

    // Healthy while the watch of Environments works: it turns false when
    // the watch fails (and true again when it recovers), and for good
    // when the reconcile loop ends. Ready once the first list is in.
    let watching = Arc::new(AtomicBool::new(true));
    let listed = Arc::new(AtomicBool::new(false));
    let (cache, writer) = reflector::store();
    let state = Arc::new(ferry_controller::api::ApiState {
        environments: cache,
        client: Some(client.clone()),
        metrics: metrics.clone(),
        watching: watching.clone(),
        listed: listed.clone(),
        webhook,
        token,
    });
    let app = ferry_controller::api::router(state);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("failed to listen on {http_addr}: {e}"))?;
    tracing::info!(%http_addr, namespace = namespace.as_deref().unwrap_or("<all>"), "ferry-controller running");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The status API's cache, on every replica.
    let watch_state = watching.clone();
    let api_cache = watcher(environments.clone(), watcher::Config::default())
        .default_backoff()
        .inspect(move |event| {
            watch_state.store(event.is_ok(), Ordering::Relaxed);
            if matches!(event, Ok(watcher::Event::InitDone)) {
                listed.store(true, Ordering::Relaxed);
            }
        })
        .reflect(writer)
        .for_each(|_| async {});
    let api_cache = tokio::spawn(api_cache);

    // With leader election, only the holder of the Lease reconciles.
    let (leading_tx, mut leading) = tokio::sync::watch::channel(election.is_none());
    if let Some(election) = election {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client.clone(), &election.namespace);
        tracing::info!(identity = %election.identity, lease = %format!("{}/ferry-controller", election.namespace), "waiting to lead");
        tokio::spawn(ferry_controller::leader::run(
            leases,
            "ferry-controller".into(),
            election.identity,
            leading_tx,
        ));
        let signal = tokio::signal::ctrl_c();
        tokio::select! {
            led = leading.wait_for(|l| *l) => { led?; }
            _ = signal => {
                server.abort();
                return Ok(());
            }
        }
    }

    // Reconcile on spec changes (generation) and on a request through the
    // annotation, not on our own status writes; the interval requeue
    // covers new commits.
    let (reader, writer) = reflector::store();
    let changes = watcher(environments, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_request, Default::default());
    let controller = Controller::for_stream(changes, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(tuning.concurrency))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile queue");
            }
        });
    let lost = leading.wait_for(|l| !*l);
    tokio::select! {
        _ = controller => {}
        _ = lost => {
            // Another replica may lead now: stop at once rather than
            // reconcile beside it; the pod restarts as a follower.
            api_cache.abort();
            server.abort();
            anyhow::bail!("lost the leader Lease; stopping so that only the new leader reconciles");
        }
    }
    api_cache.abort();
    watching.store(false, Ordering::Relaxed);
    server.abort();
    tracing::info!("stopped");
    Ok(())
}

/// What `run` is told besides where to listen and whom to watch.
struct Tuning {
    public_url: Option<String>,
    concurrency: u16,
}

/// Where and as whom to take part in leader election.
struct Election {
    namespace: String,
    identity: String,
}

/// Changes when the spec does, when someone asks for a reconcile with
/// `kubectl annotate environment NAME ferry.dev/requested-at="$(date)" --overwrite`,
/// or for a retry of a failed revision with `ferry.dev/retry`.
fn spec_or_request(env: &ferry_controller::environment::Environment) -> Option<u64> {
    use kube::ResourceExt;
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env.metadata.generation.hash(&mut hasher);
    env.annotations()
        .get(ferry_controller::environment::REQUESTED_AT)
        .hash(&mut hasher);
    env.annotations()
        .get(ferry_controller::environment::RETRY)
        .hash(&mut hasher);
    Some(hasher.finish())
}
