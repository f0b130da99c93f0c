//! One reconcile of a live Environment, start to end: the release step
//! ([`super::judge::step`]), then its record: the history sealed in the
//! journal, the GitHub report, Events, metrics, and the status.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Event;
use kube::{Resource, ResourceExt};

use crate::audit::journal::{self, JournalError};
use crate::crd::history::Entry;
use crate::crd::{Environment, EnvironmentStatus, MIN_INTERVAL, condition, parse_interval, reason};
use crate::failure::{self, FailureClass};
use crate::gate::health;
use crate::gate::observe::{NOTE_LIMIT, cap};
use crate::github::Step;

use super::context::Context;
use super::decide::{self, Note};
use super::error::ReconcileError;
use super::judge;
use super::outcome::{Outcome, failed};
use super::record;
use super::trigger::trigger;
use super::write::write_status;

/// Runs one step and records it; the requeue comes from
/// [`decide::after_outcome`].
pub async fn run(
    env: &Environment,
    ctx: &Context,
    api: &Api<Environment>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let (ns, name) = (env.namespace().unwrap_or_default(), env.name_any());
    let environment = (ns.clone(), name.clone());
    let changed = ctx.owned.take_change(&environment);
    let trigger = trigger(env, ctx.first_since_start(env), changed.as_deref());
    let before = env.status.clone().unwrap_or_default();
    // Judging from the start of the step: a workload's controller may
    // answer the apply before this step has written its status.
    ctx.owned.judging(&environment, true);
    let interval = parse_interval(&env.spec.interval).map(|i| i.max(MIN_INTERVAL));
    // With the Environment as the step's own status patch left it, if any.
    let (outcome, mut events, stored) = match interval {
        _ if env.spec.suspend => (Outcome::Suspended, Vec::new(), None),
        None => {
            let message = format!(
                "spec.interval {:?} is not a duration of at most 168h such as 30s, 5m or 1h30m",
                env.spec.interval
            );
            let invalid = failed(None, FailureClass::Terminal, reason::INVALID_SPEC, message);
            (invalid, Vec::new(), None)
        }
        Some(interval) => contained(judge::step(env, ctx, interval))
            .await
            .map(|(stepped, stored)| (stepped.outcome, stepped.notes, stored))
            .unwrap_or_else(|message| {
                let message = format!(
                    "the controller panicked reconciling this Environment: {message}; \
                 this is a bug in ferry-controller: report it with this message"
                );
                let panicked = failed(
                    None,
                    FailureClass::Terminal,
                    reason::RECONCILE_PANICKED,
                    message,
                );
                (panicked, Vec::new(), None)
            }),
    };
    let interval = interval.unwrap_or(Duration::from_secs(300));

    // The audit history: appended before the status is written, so the
    // status never shows an entry the log lacks; when it cannot be, the
    // status is not written either, and the step is done again (what was
    // sealed already is not sealed twice).
    let sealed = record_history(env, ctx, &outcome, &trigger, &before)
        .await
        .map_err(|source| ReconcileError::History {
            name: format!("{ns}/{name}"),
            source: Box::new(source),
        })?;
    // After this step's own reports: lets the reporter post what GitHub
    // missed even when nothing new happened.
    ctx.github.report(env, Step::Reconciled);
    log_and_count(ctx, &outcome);
    if matches!(outcome, Outcome::RollbackStarted { .. }) {
        ctx.metrics.record_rollback();
    }
    let follow = decide::after_outcome(&outcome, &before, interval, &Time(Timestamp::now()));
    if let Some((class, reason)) = follow.error {
        ctx.metrics.record_error(class, reason);
    }
    events.extend(follow.events);
    publish(env, ctx, events, sealed.last()).await;

    let written = write_status(api, env, stored.as_ref(), &outcome, &sealed)
        .await
        .map_err(|source| ReconcileError::Status {
            name: format!("{ns}/{name}"),
            source,
        })?;
    // While a release is judged, its objects' status changes wake this
    // Environment, so its verdict need not wait for the next poll.
    ctx.owned.judging(
        &environment,
        written.rollout.as_ref().is_some_and(|r| !r.pending),
    );
    if let Some(healthy) = written.condition(condition::HEALTHY) {
        ctx.metrics
            .record_healthy(&ns, &name, healthy.status == "True");
    }
    ctx.metrics.observe_duration(started.elapsed());
    Ok(follow
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// Runs `step`; a panic in it (a bug, for whatever input) is caught and
/// becomes its message, so that it costs this reconcile of this
/// Environment and not the process that reconciles all of them.
pub async fn contained<T>(step: impl std::future::Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
}

/// Seals the entries `outcome` records into the journal, reports each
/// newly sealed one to GitHub, and returns them all; an error when one
/// could not be sealed.
async fn record_history(
    env: &Environment,
    ctx: &Context,
    outcome: &Outcome,
    trigger: &str,
    before: &EnvironmentStatus,
) -> Result<Vec<Entry>, JournalError> {
    let (ns, name) = (env.namespace().unwrap_or_default(), env.name_any());
    let health_ms = before
        .rollout
        .as_ref()
        .and_then(|r| health::seconds(&r.started_at))
        .map(|since| u64::try_from(Timestamp::now().as_second() - since).unwrap_or(0) * 1000);
    let entries = record::entries_for(
        outcome,
        &format!("{ns}/{name}"),
        trigger,
        &Timestamp::now().to_string(),
        health_ms,
        before.history.last(),
    );
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let failed = |e: JournalError| {
        tracing::warn!(error = %failure::describe(&e), "failed to append to the history");
        ctx.metrics.record_error("transient", "HistoryWriteFailed");
        e
    };
    // Entries a previous attempt sealed before its status write failed
    // are taken as they are, not appended (nor reported) again; a tail
    // the journal lost is put back from the status first.
    let (unacknowledged, restored, mut tip) =
        journal::unacknowledged(&ctx.client, &ns, &name, &before.history)
            .await
            .map_err(failed)?;
    if let (Some(from), Some(to)) = (restored.first(), restored.last()) {
        tracing::warn!(
            from,
            to,
            "the history had lost its newest entries (a chunk deleted or trimmed); put back from the status"
        );
        ctx.metrics.record_error("transient", "HistoryTailRestored");
    }
    let done = journal::already_sealed(&unacknowledged, &entries);
    let mut sealed = unacknowledged[unacknowledged.len() - done..].to_vec();
    for entry in entries.into_iter().skip(done) {
        let entry = journal::append(&ctx.client, &ns, &name, &mut tip, entry)
            .await
            .map_err(failed)?;
        ctx.metrics.record_history(&ns, &name, entry.sequence);
        ctx.github
            .report(env, Step::Recorded(Box::new(entry.clone())));
        sealed.push(entry);
    }
    Ok(sealed)
}

/// Logs what was applied or what failed, and counts applied objects.
fn log_and_count(ctx: &Context, outcome: &Outcome) {
    match outcome {
        Outcome::Applied {
            revision, applied, ..
        } => {
            tracing::info!(revision = %revision.id(), created = applied.created, updated = applied.updated, pruned = applied.pruned, released = applied.released, drifted = applied.drift.len(), "applied");
            ctx.metrics.record_applied(
                [
                    ("created", applied.created),
                    ("updated", applied.updated),
                    ("pruned", applied.pruned),
                    ("released", applied.released),
                ],
                applied.drift.len(),
            );
        }
        Outcome::Failed {
            class,
            reason,
            message,
            ..
        } => {
            tracing::warn!(class = class.label(), reason, %message, "reconcile failed");
        }
        _ => {}
    }
}

/// Publishes the Events, the first one naming the history's new head.
async fn publish(env: &Environment, ctx: &Context, mut events: Vec<Note>, head: Option<&Entry>) {
    if let (Some(sealed), Some(first)) = (head, events.first_mut()) {
        first.2 = format!(
            "{} [history #{}, chain head {}]",
            first.2, sealed.sequence, sealed.sha256
        );
    }
    let reference = env.object_ref(&());
    for (type_, reason, note) in events {
        let event = Event {
            type_,
            reason: reason.into(),
            // The API refuses notes over 1 KiB.
            note: Some(cap(&note, NOTE_LIMIT)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "failed to publish an event");
        }
    }
}
