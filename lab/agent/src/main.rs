//! `ferry-lab-agent`: the lab's node agent. Started by `lab/up`.
//!
//! Exit codes: 0 after SIGTERM/Ctrl-C and a clean stop; 1 on a failure to
//! start (unreadable kubeconfig, no network namespaces); 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferry_lab_agent::agent::{self, Settings};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Registers lab nodes with the API server and runs the pods bound to them
/// as local processes in their own network namespaces.
#[derive(Parser)]
#[command(name = "ferry-lab-agent", version)]
struct Cli {
    /// Kubeconfig with rights to nodes, leases, pods, services, endpoint
    /// slices, config maps, secrets and events.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The lab's state directory: images/ (pulled images) and pods/ (logs).
    #[arg(long)]
    lab_dir: PathBuf,
    /// Nodes to register, as NAME=ZONE.
    #[arg(long = "node", default_values_t = ["lab-node-a=us-east-1a".to_string(), "lab-node-b=us-east-1b".to_string()])]
    nodes: Vec<String>,
    /// Serving certificate (PEM) of the kubelet log endpoint (port 10250).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The registry (HOST:PORT, plain HTTP) every image is pulled from
    /// unless its reference names a loopback registry itself; the
    /// repository path is kept (`ghcr.io/acme/app:1` is pulled as
    /// `HOST:PORT/acme/app:1`), as containerd's mirrors do.
    #[arg(long)]
    registry_mirror: Option<String>,
    /// The nodes' region label.
    #[arg(long, default_value = "us-east-1")]
    region: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(try_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn try_main(cli: Cli) -> anyhow::Result<()> {
    let nodes = cli
        .nodes
        .iter()
        .map(|n| {
            n.split_once('=')
                .map(|(name, zone)| (name.to_owned(), zone.to_owned()))
                .with_context(|| format!("--node {n:?}: expected NAME=ZONE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kubeconfig = Kubeconfig::read_from(&cli.kubeconfig)
        .with_context(|| format!("failed to read {}", cli.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let api_server = config.cluster_url.authority().and_then(|a| {
        format!("{}:{}", a.host(), a.port_u16().unwrap_or(443))
            .parse()
            .ok()
    });
    if api_server.is_none() {
        tracing::warn!(server = %config.cluster_url, "pods cannot reach the API server: the kubeconfig's server is not an IP address (lab/up writes 127.0.0.1)");
    }
    let client = kube::Client::try_from(config)?;
    let settings = Settings {
        lab_dir: cli.lab_dir,
        nodes,
        region: cli.region,
        tls: cli.tls_cert.zip(cli.tls_key),
        registry_mirror: cli.registry_mirror,
        api_server,
    };
    agent::run(client, settings, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
