//! `history export` and `history verify`: the audit history, read from the
//! cluster or a file, and its hash chain checked against the witnesses:
//! the Environment's status and, on request, GitHub's deployment statuses.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Secret;

use crate::audit::chain::{self, Entry, Witnessed};
use crate::crd::Environment;
use crate::github::auth_from;
use crate::github::client::{Auth, Repository};

/// Prints the whole history of NAMESPACE/NAME as JSON, oldest first.
pub fn export(environment: &str) -> anyhow::Result<ExitCode> {
    let (entries, _) = read(environment, None)?;
    println!("{}", serde_json::to_string_pretty(&entries)?);
    Ok(ExitCode::SUCCESS)
}

/// Reads the history of `NAMESPACE/NAME` from the cluster, and the heads
/// its witnesses name: its status (none when the Environment is gone)
/// and, when `github` gives how many deployments to read, GitHub.
fn read(environment: &str, github: Option<usize>) -> anyhow::Result<(Vec<Entry>, Vec<Witnessed>)> {
    let (namespace, name) = environment
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{environment:?} is not NAMESPACE/NAME"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let entries = crate::audit::journal::read(&client, namespace, name).await?;
        let api: kube::Api<Environment> = kube::Api::namespaced(client.clone(), namespace);
        let found = api.get_opt(name).await?;
        let status = found
            .as_ref()
            .and_then(|e| e.status.as_ref())
            .map(|s| s.history.as_slice())
            .unwrap_or_default();
        let mut witness = chain::witnessed_by_status(status);
        if let Some(limit) = github {
            let env = found.ok_or_else(|| {
                anyhow::anyhow!(
                    "Environment {environment} does not exist: its spec.github names where to look"
                )
            })?;
            witness.extend(github_heads(&client, &env, namespace, limit).await?);
        }
        anyhow::Ok((entries, witness))
    })
}

/// The heads in the statuses of the Environment's GitHub deployments.
async fn github_heads(
    client: &kube::Client,
    env: &Environment,
    namespace: &str,
    limit: usize,
) -> anyhow::Result<Vec<Witnessed>> {
    let name = kube::ResourceExt::name_any(env);
    let spec = env.spec.github.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "Environment {namespace}/{name} has no spec.github: there is nothing to compare with"
        )
    })?;
    let auth = match std::env::var("GITHUB_TOKEN") {
        Ok(token) if !token.trim().is_empty() => Auth::Token(token.trim().to_owned()),
        _ => {
            let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
            let secret = secrets.get(&spec.secret_ref.name).await.map_err(|e| {
                anyhow::anyhow!(
                    "failed to read Secret {namespace}/{} for GitHub's token ({e}); set GITHUB_TOKEN instead",
                    spec.secret_ref.name
                )
            })?;
            auth_from(&secret.data.unwrap_or_default()).map_err(|problem| {
                anyhow::anyhow!("Secret {namespace}/{} {problem}", spec.secret_ref.name)
            })?
        }
    };
    let environment = spec.environment.clone().unwrap_or(name);
    let repository = Repository::new(&spec.api_url, &auth, &spec.repository)?;
    let (heads, deployments) = repository.witnessed_heads(&environment, limit).await?;
    let newest = heads.iter().map(|h| h.sequence).max();
    eprintln!(
        "GitHub: {} chain heads in the statuses of {deployments} deployments of {environment:?} in {}{}",
        heads.len(),
        spec.repository,
        newest
            .map(|n| format!(", the newest #{n}"))
            .unwrap_or_default()
    );
    Ok(heads)
}

/// Verifies a history; true when the chain holds. Says what it found.
/// `github`: also against GitHub, reading this many deployments.
pub fn verify(
    environment: Option<&str>,
    file: Option<&std::path::Path>,
    github: Option<usize>,
) -> anyhow::Result<bool> {
    // A whole history (from the cluster, or exported) starts at entry 1,
    // so entries removed from its start are caught; a page of the API may
    // start anywhere.
    let mut first = 1;
    let mut witness = Vec::new();
    let entries: Vec<Entry> = match (environment, file) {
        (Some(environment), _) => {
            let (entries, named) = read(environment, github)?;
            witness = named;
            entries
        }
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
    match chain::verify_against(&entries, first, &witness) {
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
