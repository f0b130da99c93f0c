//! Releasing a revision as the Environment's deployer: placed, planned
//! and applied; the commits it superseded; the healthy commit kept for
//! rollbacks. Which revision, and when, is [`super::machine`]'s decision.

use serde_json::Value;

use crate::cluster::discovery::{Resolver, scopes};
use crate::cluster::owned::Remembering;
use crate::cluster::sync::{self, SyncOptions};
use crate::cluster::target;
use crate::crd::{Environment, EnvironmentStatus, Placement, reason};
use crate::failure::{self, FailureClass};
use crate::source::cache::{Revision, SourceSpec};
use ferry_manifests::object::ObjectRef;
use ferry_manifests::render;

use super::context::{Context, client_for, owner_of};
use super::fetch::{Durations, millis, source_of};
use super::machine::Released;
use super::outcome::{Outcome, failed};
use super::record;

/// The most skipped commits one sync records (the newest of them).
const SUPERSEDED_LIMIT: usize = 20;

/// Places (in `placement`'s namespace), plans and applies rendered
/// objects as the Environment's deployer.
pub async fn apply_desired(
    env: &Environment,
    ctx: &Context,
    revision: &Revision,
    mut desired: Vec<(Value, String)>,
    placement: &Placement,
) -> Result<Released, Outcome> {
    use FailureClass::Terminal;
    let spec = &env.spec;
    let client = client_for(ctx, env)
        .map_err(|message| failed(Some(revision), Terminal, reason::INVALID_SPEC, message))?;
    let mut resolver = Resolver::shared(client, ctx.discovery.clone());
    let known = match scopes(&mut resolver, &desired).await {
        Ok(k) => k,
        Err(e) => {
            let class = failure::of_error(&e);
            return Err(failed(
                Some(revision),
                class,
                reason::APPLY_FAILED,
                format!("failed to discover the API: {e}"),
            ));
        }
    };
    let scope_of = |id: &ObjectRef| {
        known
            .iter()
            .find(|(k, _)| k.same_object(id) || (k.group == id.group && k.kind == id.kind))
            .map(|(_, s)| *s)
    };
    if let Err(e) = target::place(
        &mut desired,
        placement.target_namespace.as_deref(),
        scope_of,
    ) {
        return Err(failed(
            Some(revision),
            Terminal,
            reason::NAMESPACE_NOT_ALLOWED,
            e,
        ));
    }
    let digest = render::digest(&desired.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>());
    let inventory = env
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let owner = owner_of(env);
    let environment = (
        kube::ResourceExt::namespace(env).unwrap_or_default(),
        kube::ResourceExt::name_any(env),
    );
    let options = SyncOptions {
        force: spec.force,
        prune: spec.prune,
        owner: Some(&owner),
        remembering: Some(Remembering {
            cache: &ctx.owned,
            environment: &environment,
            owner: &owner,
        }),
    };
    match sync::plan_and_apply(&mut resolver, &desired, &inventory, options).await {
        Ok((applied, timings)) => {
            tracing::debug!(
                plan_ms = timings.plan.as_millis() as u64,
                apply_ms = timings.apply.as_millis() as u64,
                "synced"
            );
            let objects: Vec<Value> = desired.into_iter().map(|(o, _)| o).collect();
            Ok(Released {
                applied,
                digest,
                images: record::images(&objects),
                durations: Durations::from([
                    ("plan".to_owned(), millis(timings.plan)),
                    ("apply".to_owned(), millis(timings.apply)),
                ]),
            })
        }
        Err(e) => {
            let mut message = failure::describe(&e);
            if e.reason() == reason::FORBIDDEN && !message.contains(failure::FORBIDDEN_HINT) {
                message = format!("{message}; {}", failure::FORBIDDEN_HINT);
            }
            Err(failed(Some(revision), e.class(), e.reason(), message))
        }
    }
}

/// The commits after the last one tried and before `revision`: git moved
/// past them before they were looked at, so they were never applied.
/// Empty when that cannot be told (first sync, history rewritten).
pub async fn superseded_by(
    ctx: &Context,
    source: SourceSpec,
    status: &EnvironmentStatus,
    revision: &Revision,
) -> Vec<Revision> {
    let Some(from) = status
        .last_attempted_revision
        .as_deref()
        .and_then(|r| r.rsplit_once("@sha1:"))
        .map(|(_, commit)| commit.to_owned())
    else {
        return Vec::new();
    };
    if from == revision.commit {
        return Vec::new();
    }
    let cache = ctx.cache.clone();
    let to = revision.commit.clone();
    let skipped = tokio::task::spawn_blocking(move || {
        cache.commits_between(&source, &from, &to, SUPERSEDED_LIMIT)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    record::unrecorded(skipped, &status.history)
}

/// Keeps a healthy commit reachable in the cache for later rollbacks.
pub async fn pin(env: &Environment, ctx: &Context, revision: &str) {
    let Some((_, commit)) = revision.split_once("@sha1:") else {
        return;
    };
    let Ok(source) = source_of(env, ctx).await else {
        return;
    };
    let cache = ctx.cache.clone();
    let commit = commit.to_owned();
    let pinned = tokio::task::spawn_blocking(move || cache.pin(&source, &commit)).await;
    if !matches!(pinned, Ok(Ok(()))) {
        tracing::warn!(%revision, "failed to pin the healthy commit in the cache; a rollback would fetch it by id");
    }
}
