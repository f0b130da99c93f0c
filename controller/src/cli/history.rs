//! `history export` and `history verify`: the audit history, read from the
//! cluster or a file, and its hash chain checked.

use std::process::ExitCode;

use crate::audit::chain::{self, Entry};
use crate::crd::Environment;

/// Prints the whole history of NAMESPACE/NAME as JSON, oldest first.
pub fn export(environment: &str) -> anyhow::Result<ExitCode> {
    let (entries, _) = read(environment)?;
    println!("{}", serde_json::to_string_pretty(&entries)?);
    Ok(ExitCode::SUCCESS)
}

/// Reads the history of `NAMESPACE/NAME` from the cluster, and the
/// entries its status names (none when the Environment is gone).
fn read(environment: &str) -> anyhow::Result<(Vec<Entry>, Vec<Entry>)> {
    let (namespace, name) = environment
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{environment:?} is not NAMESPACE/NAME"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let entries = crate::audit::journal::read(&client, namespace, name).await?;
        let api: kube::Api<Environment> = kube::Api::namespaced(client, namespace);
        let witness = api
            .get_opt(name)
            .await?
            .and_then(|e| e.status)
            .map(|s| s.history)
            .unwrap_or_default();
        anyhow::Ok((entries, witness))
    })
}

/// Verifies a history; true when the chain holds. Says what it found.
pub fn verify(environment: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<bool> {
    // A whole history (from the cluster, or exported) starts at entry 1,
    // so entries removed from its start are caught; a page of the API may
    // start anywhere.
    let mut first = 1;
    let mut witness = Vec::new();
    let entries: Vec<Entry> = match (environment, file) {
        (Some(environment), _) => {
            let (entries, named) = read(environment)?;
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
