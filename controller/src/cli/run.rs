//! `run`: the controller itself; reads its secrets, sets up logging and
//! hands over to [`crate::runtime::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runtime::run::{Election, Tuning};

#[derive(clap::Args)]
pub struct RunArgs {
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
    /// `ferry-controller` (a shard's: `ferry-controller-shard-NAME`)
    /// reconciles; every replica serves the API.
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
    /// Reconcile only the Environments labelled `ferry.dev/shard: NAME`
    /// (without it: only those without the label). Each shard runs as its
    /// own Deployment and elects its leader with its own Lease,
    /// `ferry-controller-shard-NAME` (environments/controller/shards/).
    #[arg(long, env = "FERRY_SHARD")]
    shard: Option<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
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
        shard,
    } = args;
    let shard = crate::runtime::shard::Shard::new(shard.as_deref())?;
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
            Some(crate::serve::api::Webhook { secret })
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
    runtime.block_on(crate::runtime::run::run(
        cache_dir,
        http_addr,
        namespace,
        webhook,
        token,
        election,
        Tuning {
            public_url,
            concurrency,
            shard,
        },
    ))?;
    Ok(ExitCode::SUCCESS)
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
