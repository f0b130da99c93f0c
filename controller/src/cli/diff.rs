//! `diff`: what applying an environment would change, as
//! `kubectl diff --server-side` shows it.

use std::io::Write;

use crate::cluster::discovery::Resolver;
use crate::cluster::plan;

/// Prints the plan's diffs; true when anything would change.
pub fn diff(path: &std::path::Path, revision: Option<&str>) -> anyhow::Result<bool> {
    let desired = super::render::render_path(path, revision)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let plan = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let mut resolver = Resolver::new(client);
        // As `kubectl diff --server-side --force-conflicts`: show what git
        // would set even where another manager owns the field.
        let options = plan::PlanOptions {
            remembering: None,
            force: true,
            owner: None,
            created_namespaces: &[],
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
