//! `sync`: apply an environment once (render, plan, apply; no pruning) and
//! report the time each phase took.

use std::path::Path;
use std::process::ExitCode;

use crate::cluster::discovery::Resolver;

pub fn sync(path: &Path, revision: Option<&str>, force: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let desired = super::render::render_path(path, revision)?;
    let rendered = started.elapsed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (applied, timings) = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        let mut resolver = Resolver::new(client);
        anyhow::Ok(
            crate::cluster::sync::plan_and_apply(
                &mut resolver,
                &desired,
                &[],
                crate::cluster::sync::SyncOptions {
                    force,
                    prune: false,
                    owner: None,
                    remembering: None,
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
