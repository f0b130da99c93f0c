//! Releasing a revision: the one git asks for (unless it failed its gate),
//! or the last healthy one again (a rollback); placed, planned and applied
//! as the Environment's deployer. Its gate is judged next.

use kube::ResourceExt;
use serde_json::Value;

use crate::cluster::apply::Applied;
use crate::cluster::discovery::{Resolver, scopes};
use crate::cluster::sync::{self, SyncOptions};
use crate::cluster::target;
use crate::crd::{Environment, EnvironmentStatus, RETRY, reason};
use crate::failure::{self, FailureClass};
use crate::github::Step;
use crate::source::cache::{Revision, SourceSpec};
use ferry_manifests::object::ObjectRef;
use ferry_manifests::render;

use super::context::{Context, client_for, owner_of};
use super::decide::{self, Decision};
use super::fetch::{Durations, Fetched, fetch_and_render, millis, source_of};
use super::outcome::{Outcome, failed};
use super::record;

/// The most skipped commits one sync records (the newest of them).
const SUPERSEDED_LIMIT: usize = 20;

/// What an apply did, with the digest of what was applied, its images and
/// the time plan and apply took.
struct Released {
    applied: Applied,
    digest: String,
    images: Vec<String>,
    durations: Durations,
}

/// Places, plans and applies rendered objects as the Environment's
/// deployer.
async fn apply_desired(
    env: &Environment,
    ctx: &Context,
    revision: &Revision,
    mut desired: Vec<(Value, String)>,
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
    if let Err(e) = target::place(&mut desired, spec.target_namespace.as_deref(), scope_of) {
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
    let options = SyncOptions {
        force: spec.force,
        prune: spec.prune,
        owner: Some(&owner),
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

/// Fetch, render, plan and apply the revision git asks for, unless it is
/// the one that failed its gate ([`decide::decide`]).
pub async fn apply_head(env: &Environment, ctx: &Context) -> Outcome {
    let Fetched {
        revision,
        desired,
        mut durations,
        source,
    } = match fetch_and_render(env, ctx, None).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    let status = env.status.clone().unwrap_or_default();
    let retry = env.annotations().get(RETRY).cloned();
    let decision = decide::decide(&status, &revision.id(), retry.as_deref());
    tracing::debug!(revision = %revision.id(), ?decision, "git asks for");
    if decision == Decision::Hold {
        return Outcome::Held { revision };
    }
    if status.last_applied_revision.as_deref() != Some(revision.id().as_str())
        || status.failed_revision.is_some()
    {
        ctx.github.report(
            env,
            Step::Started {
                revision: revision.id(),
                rollback_from: None,
            },
        );
    }
    let released = match apply_desired(env, ctx, &revision, desired).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    durations.extend(released.durations);
    let superseded = superseded_by(ctx, source, &status, &revision).await;
    let judge = !decide::settled(&status, &revision.id(), &released.applied);
    Outcome::Applied {
        revision,
        digest: released.digest,
        applied: released.applied,
        judge,
        rollback_from: None,
        retry,
        images: released.images,
        durations,
        superseded,
    }
}

/// The commits after the last one tried and before `revision`: git moved
/// past them before they were looked at, so they were never applied.
/// Empty when that cannot be told (first sync, history rewritten).
async fn superseded_by(
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

/// Applies the last healthy revision again (rendered from git at its
/// commit, with the same safe plan, apply and prune); its gate is judged
/// next, as any release's.
pub async fn roll_back(
    env: &Environment,
    ctx: &Context,
    healthy: &str,
    failed_revision: &str,
    why: &str,
) -> Outcome {
    let rollback_failed = |rollback: String| Outcome::RollbackFailed {
        failed: failed_revision.to_owned(),
        reason: why.to_owned(),
        rollback,
    };
    let Some((_, commit)) = healthy.split_once("@sha1:") else {
        return rollback_failed(format!("{healthy} is not a revision id"));
    };
    let Fetched {
        revision,
        desired,
        mut durations,
        ..
    } = match fetch_and_render(env, ctx, Some(commit.to_owned())).await {
        Ok(r) => r,
        Err(Outcome::Failed { message, .. }) => return rollback_failed(message),
        Err(other) => return other,
    };
    ctx.github.report(
        env,
        Step::Started {
            revision: revision.id(),
            rollback_from: Some(failed_revision.to_owned()),
        },
    );
    match apply_desired(env, ctx, &revision, desired).await {
        Ok(released) => {
            durations.extend(released.durations);
            Outcome::Applied {
                revision,
                digest: released.digest,
                applied: released.applied,
                judge: true,
                rollback_from: Some((failed_revision.to_owned(), why.to_owned())),
                retry: None,
                images: released.images,
                durations,
                superseded: Vec::new(),
            }
        }
        Err(Outcome::Failed { message, .. }) => rollback_failed(message),
        Err(other) => other,
    }
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
