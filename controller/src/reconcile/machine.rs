//! The release as one state machine: the states a release of an
//! Environment can be in ([`State`], read from the status alone), what can
//! happen in one reconcile ([`Event`]), and the step that decides which
//! effects to carry out and what they lead to ([`step`]).
//!
//! The step talks to the world only through [`World`]: the reconcile
//! gives it the live one (git, the API server, HTTP checks, GitHub), the
//! simulation (`tests/simulation.rs`) a seeded model with faults at every
//! effect. Every decision is here or in the pure functions it calls
//! ([`super::decide`], [`crate::gate::checks`]), so both run the same
//! code. [`TRANSITIONS`] lists every transition; docs/controller.md shows
//! the same table, and a test keeps the two equal.
//!
//! Guarantees: a transient failure never ends a rollback (it stays
//! pending and is retried with back-off); a release whose objects cannot
//! be read fails at its deadline like one that never becomes healthy; a
//! newer commit replaces a release that is not yet healthy (unless
//! `cancelOnNewRevision: false`); a failed revision is not applied again
//! until git moves or `ferry.dev/retry` changes, while what runs keeps
//! being corrected for drift; a rollback renders the healthy revision
//! from the path and namespace it was healthy with; a release records
//! what it is about to apply before it applies, and a step that finds
//! that record unanswered (the status write after the apply failed, or
//! the controller stopped) applies it again first, so the status never
//! stays behind what runs.

use std::time::Duration;

use crate::cluster::apply::Applied;
use crate::crd::{
    Applying, EnvironmentStatus, HttpCheck, Placement, Rollout, condition, parse_interval,
};
use crate::failure::FailureClass;
use crate::gate::checks::{self, Attempt};
use crate::gate::health::{self, Evidence, Verdict};
use crate::source::cache::Revision;

use super::decide::{self, AfterVerdict, Decision, Note};
use super::fetch::Durations;
use super::outcome::{Outcome, message_of};

/// Where a release of an Environment stands, read from its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No release in progress and no failed revision held.
    InSync,
    /// A release applied and being judged.
    Releasing,
    /// A release failed its gate; the rollback is decided and not yet
    /// applied in full.
    RollbackPending,
    /// The rollback applied and being judged.
    RollingBack,
    /// Git asks for a revision that failed; the healthy one runs.
    Holding,
    /// A revision failed and nothing healthy runs for sure (first
    /// release, rollback disabled, or the rollback failed too).
    Failed,
}

impl State {
    /// The state a status describes.
    pub fn of(status: &EnvironmentStatus) -> State {
        match &status.rollout {
            Some(r) if r.pending => State::RollbackPending,
            Some(r) if r.rolling_back_from.is_some() => State::RollingBack,
            Some(_) => State::Releasing,
            None if status.failed_revision.is_none() => State::InSync,
            None => {
                let healthy = status
                    .condition(condition::HEALTHY)
                    .is_some_and(|c| c.status == "True");
                let runs_healthy = status.last_applied_revision.is_some()
                    && status.last_applied_revision == status.last_healthy_revision
                    && status.last_applied_revision != status.failed_revision;
                if healthy && runs_healthy {
                    State::Holding
                } else {
                    State::Failed
                }
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::InSync => "InSync",
            State::Releasing => "Releasing",
            State::RollbackPending => "RollbackPending",
            State::RollingBack => "RollingBack",
            State::Holding => "Holding",
            State::Failed => "Failed",
        }
    }
}

/// What happened in one reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A revision was applied and its gate starts (new commit, retry,
    /// changed spec).
    Released,
    /// The revision already judged healthy was applied again: drift set
    /// back, nothing new to judge.
    Settled,
    /// Git asks for the failed revision: nothing new applied; what runs
    /// was corrected for drift.
    Held,
    /// The gate is still waiting.
    Waiting,
    /// The gate passed.
    Passed,
    /// The gate failed (evidence, deadline, checks, or objects that could
    /// not be read until the deadline).
    GateFailed,
    /// A newer commit replaced the release or rollback being judged.
    Superseded,
    /// The rollback was applied in full; its gate starts.
    RollbackApplied,
    /// Something failed that may pass by itself: retried with back-off.
    TransientError,
    /// Something failed that git, the cluster or the spec must change.
    TerminalError,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Released => "Released",
            Event::Settled => "Settled",
            Event::Held => "Held",
            Event::Waiting => "Waiting",
            Event::Passed => "Passed",
            Event::GateFailed => "GateFailed",
            Event::Superseded => "Superseded",
            Event::RollbackApplied => "RollbackApplied",
            Event::TransientError => "TransientError",
            Event::TerminalError => "TerminalError",
        }
    }
}

/// Every transition: state, event, next state, and what the step does on
/// the way. A step that ends anywhere else is a bug (the simulation
/// checks it after every step).
pub const TRANSITIONS: &[(State, Event, State, &str)] = {
    use Event::*;
    use State::*;
    &[
        (
            InSync,
            Released,
            Releasing,
            "fetch, render, apply, prune; record Applied",
        ),
        (
            InSync,
            Settled,
            InSync,
            "fetch, render, apply (drift set back); no record",
        ),
        (InSync, TransientError, InSync, "retry with back-off"),
        (
            InSync,
            TerminalError,
            InSync,
            "Stalled; look again at the interval",
        ),
        (
            Releasing,
            Waiting,
            Releasing,
            "observe, HTTP checks due by their period",
        ),
        (Releasing, Passed, InSync, "record Healthy; pin the commit"),
        (
            Releasing,
            GateFailed,
            RollbackPending,
            "record HealthCheckFailed; Event with evidence; go on at once",
        ),
        (
            Releasing,
            GateFailed,
            Failed,
            "record HealthCheckFailed (no healthy revision, or rollback disabled)",
        ),
        (
            Releasing,
            Superseded,
            Releasing,
            "fetch the newer head, apply it; record Superseded, Applied",
        ),
        (
            Releasing,
            TransientError,
            Releasing,
            "objects not readable before the deadline; retry",
        ),
        (
            Releasing,
            TerminalError,
            Releasing,
            "the deployer cannot be impersonated; retry at the interval",
        ),
        (
            RollbackPending,
            RollbackApplied,
            RollingBack,
            "fetch the healthy commit, render it at its placement, apply; record RollingBack",
        ),
        (
            RollbackPending,
            TransientError,
            RollbackPending,
            "retry the rollback with back-off",
        ),
        (
            RollbackPending,
            TerminalError,
            Failed,
            "record RollbackFailed",
        ),
        (
            RollbackPending,
            Superseded,
            Releasing,
            "a newer commit is applied instead of the rollback",
        ),
        (RollingBack, Waiting, RollingBack, "observe"),
        (RollingBack, Passed, Holding, "record RolledBack; pin"),
        (RollingBack, GateFailed, Failed, "record RollbackFailed"),
        (
            RollingBack,
            Superseded,
            Releasing,
            "a newer commit replaces the rollback",
        ),
        (RollingBack, TransientError, RollingBack, "retry"),
        (
            RollingBack,
            TerminalError,
            RollingBack,
            "retry at the interval",
        ),
        (
            Holding,
            Held,
            Holding,
            "render the running revision, apply it (drift set back)",
        ),
        (
            Holding,
            Released,
            Releasing,
            "git moved or a retry: apply; record Applied",
        ),
        (Holding, TransientError, Holding, "retry with back-off"),
        (Holding, TerminalError, Holding, "Stalled"),
        (
            Failed,
            Held,
            Failed,
            "nothing applied: the failed revision is not applied again",
        ),
        (
            Failed,
            Released,
            Releasing,
            "git moved or a retry: apply; record Applied",
        ),
        (Failed, TransientError, Failed, "retry with back-off"),
        (Failed, TerminalError, Failed, "Stalled"),
    ]
};

/// Whether `(from, event, to)` is a transition of [`TRANSITIONS`].
pub fn allowed(from: State, event: Event, to: State) -> bool {
    TRANSITIONS
        .iter()
        .any(|(f, e, t, _)| (*f, *e, *t) == (from, event, to))
}

/// What a step knows before it starts.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub status: &'a EnvironmentStatus,
    /// The `ferry.dev/retry` annotation.
    pub retry: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: i64,
    pub health_timeout: Duration,
    pub http: &'a [HttpCheck],
    pub rollback_enabled: bool,
    pub cancel_on_new_revision: bool,
    /// Whether git's head is to be looked at while a release is judged
    /// ([`head_due`]).
    pub head_due: bool,
    /// Where the spec renders and places a revision now.
    pub placement: Placement,
}

/// Whether a step that judges a release looks at git's head first: when
/// a reconcile was asked for (a webhook, `ferry.dev/requested-at`), when
/// git was not looked at since the controller started, or once per
/// interval.
pub fn head_due(looked_secs_ago: Option<u64>, interval: Duration, requested: bool) -> bool {
    requested || looked_secs_ago.is_none_or(|s| s >= interval.as_secs())
}

/// What an apply did, with the digest of what was applied, its images and
/// the time each phase took (fetch, render, plan, apply).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Released {
    pub applied: Applied,
    pub digest: String,
    pub images: Vec<String>,
    pub durations: Durations,
}

/// One look at a release: the verdict of the workload rules, and one
/// attempt per HTTP check that was due (`None`: not due, or the
/// workloads are not healthy yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub verdict: Verdict,
    pub attempts: Vec<Option<Attempt>>,
    /// With `beforeTraffic`, once healthy: how its pods were verified.
    pub verified: Option<String>,
}

/// The effects a step can ask for. Errors are `Outcome::Failed`.
#[allow(async_fn_in_trait)] // used with concrete worlds only; Send follows from them
pub trait World {
    /// A fetched and rendered revision.
    type Rendered;
    fn revision(rendered: &Self::Rendered) -> &Revision;
    /// Fetches git's head and renders it as the spec says.
    async fn fetch_head(&mut self) -> Result<Self::Rendered, Outcome>;
    /// Fetches the commit of `revision` and renders it at `placement`.
    async fn fetch_at(
        &mut self,
        revision: &str,
        placement: &Placement,
    ) -> Result<Self::Rendered, Outcome>;
    /// Commits between the last one tried and `rendered`'s, never applied.
    async fn superseded(&mut self, rendered: &Self::Rendered) -> Vec<Revision>;
    /// Records in the status the release about to be applied
    /// (`status.applying`), before its apply.
    async fn intend(&mut self, applying: &Applying) -> Result<(), Outcome>;
    /// Places, plans, applies and prunes.
    async fn apply(
        &mut self,
        rendered: Self::Rendered,
        placement: &Placement,
    ) -> Result<Released, Outcome>;
    /// Reads the release's objects and makes the HTTP checks marked due.
    async fn look(&mut self, rollout: &Rollout, due: &[bool]) -> Result<Look, Outcome>;
    /// A release or rollback starts (reported to GitHub).
    fn started(&mut self, revision: &str, rollback_from: Option<&str>);
    /// A revision passed its gate (its commit is kept for rollbacks).
    async fn passed(&mut self, revision: &str);
    /// The Event of a failed gate, with the evidence.
    async fn gate_failed(&mut self, rollout: &Rollout, evidence: Option<&Evidence>) -> Note;
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Stepped {
    pub outcome: Outcome,
    pub event: Event,
    pub notes: Vec<Note>,
    /// Whether git's head was looked at while judging and dealt with (not
    /// newer, or applied): the clock of [`head_due`] starts again only
    /// then, so a head that could not be read or applied is tried at the
    /// next look, not an interval later.
    pub head_seen: bool,
}

fn ended(outcome: Outcome, event: Event) -> Stepped {
    Stepped {
        outcome,
        event,
        notes: Vec::new(),
        head_seen: false,
    }
}

/// A failure's event: terminal or transient by its class.
fn failure(outcome: Outcome) -> Stepped {
    let event = if is_terminal(&outcome) {
        Event::TerminalError
    } else {
        Event::TransientError
    };
    ended(outcome, event)
}

fn is_terminal(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Failed {
            class: FailureClass::Terminal,
            ..
        }
    )
}

/// One step of the release: see the module docs.
pub async fn step<W: World>(facts: &Facts<'_>, world: &mut W) -> Stepped {
    if let Some(applying) = &facts.status.applying
        && let Some(stepped) = apply_again(facts, applying, world).await
    {
        return stepped;
    }
    let Some(rollout) = facts.status.rollout.clone() else {
        return from_git(facts, world).await;
    };
    let mut head_seen = false;
    if facts.cancel_on_new_revision && facts.head_due {
        match preempt(facts, &rollout, world).await {
            Preempt::Replaced(mut stepped) => {
                stepped.head_seen = true;
                return stepped;
            }
            Preempt::Failed(stepped) => return stepped,
            Preempt::Unchanged => head_seen = true,
            Preempt::Unread => {}
        }
    }
    let mut stepped = if rollout.pending {
        apply_rollback(facts, &rollout, world).await
    } else {
        judge(facts, &rollout, world).await
    };
    stepped.head_seen = head_seen;
    stepped
}

/// What looking at git's head while judging came to.
enum Preempt {
    /// A newer commit was applied in place of the release judged.
    Replaced(Stepped),
    /// A newer commit could not be applied for now (transient).
    Failed(Stepped),
    /// Nothing newer to apply (or nothing that can ever be applied).
    Unchanged,
    /// Git's head could not be read.
    Unread,
}

fn retry_asked(facts: &Facts<'_>) -> bool {
    facts.retry.is_some() && facts.retry != facts.status.last_handled_retry.as_deref()
}

/// No release in progress: apply what git asks for, or hold it.
async fn from_git<W: World>(facts: &Facts<'_>, world: &mut W) -> Stepped {
    let rendered = match world.fetch_head().await {
        Ok(r) => r,
        Err(outcome) => {
            // Git's head cannot be applied for good (it does not render,
            // a path is gone): what runs is still kept as git last said.
            if is_terminal(&outcome)
                && let Some(Err(e)) = correct_running(facts, world).await
            {
                tracing::debug!(?e, "failed to set back drift of the running revision");
            }
            return failure(outcome);
        }
    };
    let revision = W::revision(&rendered).clone();
    match decide::decide(facts.status, &revision.id(), facts.retry) {
        Decision::Hold => hold(facts, revision, world).await,
        Decision::Apply => release(facts, rendered, None, &facts.placement, world).await,
    }
}

/// A release whose apply the status does not tell of (`status.applying`):
/// it may run in full or in part, so it is applied again, as the release
/// it was (replacing the release or rollback in progress, if any), before
/// git's head is looked at. `None` when it cannot ever be applied (its
/// commit is gone, it no longer renders) or it is the failed revision
/// with no retry asked: the step goes on as if it were not there, and
/// the status it writes forgets it.
async fn apply_again<W: World>(
    facts: &Facts<'_>,
    applying: &Applying,
    world: &mut W,
) -> Option<Stepped> {
    let status = facts.status;
    if status.failed_revision.as_deref() == Some(applying.revision.as_str()) && !retry_asked(facts)
    {
        return None;
    }
    let rendered = match world
        .fetch_at(&applying.revision, &applying.placement)
        .await
    {
        Ok(r) => r,
        Err(outcome) if is_terminal(&outcome) => {
            tracing::warn!(revision = %applying.revision, ?outcome, "a release whose apply was not recorded can no longer be applied; going on from git");
            return None;
        }
        Err(outcome) => return Some(failure(outcome)),
    };
    let preempted = status
        .rollout
        .as_ref()
        .filter(|r| r.revision != applying.revision);
    Some(release(facts, rendered, preempted, &applying.placement, world).await)
}

/// Applies the running revision again when it is the one that passed its
/// gate (so hand edits and deleted objects are set back while git asks
/// for something that cannot run). `None`: nothing known healthy runs.
async fn correct_running<W: World>(
    facts: &Facts<'_>,
    world: &mut W,
) -> Option<Result<Applied, Outcome>> {
    let status = facts.status;
    let running = status.last_applied_revision.clone()?;
    let healthy_runs = matches!(State::of(status), State::Holding | State::InSync)
        && status.last_healthy_revision.as_deref() == Some(running.as_str());
    if !healthy_runs {
        return None;
    }
    let placement = status
        .last_healthy_placement
        .clone()
        .unwrap_or_else(|| facts.placement.clone());
    let rendered = match world.fetch_at(&running, &placement).await {
        Ok(r) => r,
        Err(outcome) => return Some(Err(outcome)),
    };
    Some(
        world
            .apply(rendered, &placement)
            .await
            .map(|released| released.applied),
    )
}

/// Git asks for the revision that failed: it is not applied; the healthy
/// revision, when it runs, is applied again ([`correct_running`]).
async fn hold<W: World>(facts: &Facts<'_>, revision: Revision, world: &mut W) -> Stepped {
    match correct_running(facts, world).await.transpose() {
        Ok(corrected) => ended(
            Outcome::Held {
                revision,
                corrected,
            },
            Event::Held,
        ),
        Err(outcome) => failure(outcome),
    }
}

/// Applies `rendered` at `placement` as a release; `preempted`: the
/// release or rollback it replaces. A release that starts (not the
/// running revision applied again) is recorded in `status.applying`
/// first; when that record cannot be written, nothing is applied.
async fn release<W: World>(
    facts: &Facts<'_>,
    rendered: W::Rendered,
    preempted: Option<&Rollout>,
    placement: &Placement,
    world: &mut W,
) -> Stepped {
    let status = facts.status;
    let revision = W::revision(&rendered).clone();
    let id = revision.id();
    if status.last_applied_revision.as_deref() != Some(id.as_str())
        || status.failed_revision.is_some()
        || preempted.is_some()
    {
        let applying = Applying {
            revision: id.clone(),
            placement: placement.clone(),
        };
        if status.applying.as_ref() != Some(&applying)
            && let Err(outcome) = world.intend(&applying).await
        {
            return failure(outcome);
        }
        world.started(&id, None);
    }
    let superseded = world.superseded(&rendered).await;
    let released = match world.apply(rendered, placement).await {
        Ok(r) => r,
        Err(outcome) => return failure(outcome),
    };
    let judge = preempted.is_some() || !decide::settled(status, &id, &released.digest);
    let event = match (preempted, judge) {
        (Some(_), _) => Event::Superseded,
        (None, true) => Event::Released,
        (None, false) => Event::Settled,
    };
    let outcome = Outcome::Applied {
        revision,
        digest: released.digest,
        applied: released.applied,
        judge,
        rollback_from: None,
        retry: facts.retry.map(str::to_owned),
        images: released.images,
        durations: released.durations,
        superseded,
        preempted: preempted.map(|r| r.revision.clone()),
        placement: placement.clone(),
    };
    ended(outcome, event)
}

/// A release or rollback in progress: when git's head moved to a commit
/// that is neither the one judged nor one that failed, it is applied
/// instead. A head that does not render is left for when the release
/// ends (it is reported then).
async fn preempt<W: World>(facts: &Facts<'_>, rollout: &Rollout, world: &mut W) -> Preempt {
    let rendered = match world.fetch_head().await {
        Ok(r) => r,
        Err(outcome) if is_terminal(&outcome) => return Preempt::Unchanged,
        Err(outcome) => {
            tracing::debug!(
                ?outcome,
                "git's head could not be read while judging; judging goes on"
            );
            return Preempt::Unread;
        }
    };
    let id = W::revision(&rendered).id();
    let status = facts.status;
    let failed_before =
        status.failed_revision.as_deref() == Some(id.as_str()) && !retry_asked(facts);
    if id == rollout.revision
        || rollout.rolling_back_from.as_deref() == Some(id.as_str())
        || failed_before
    {
        return Preempt::Unchanged;
    }
    let stepped = release(facts, rendered, Some(rollout), &facts.placement, world).await;
    match &stepped.outcome {
        // A newer head that cannot be applied for good does not stop the
        // judging of what runs.
        outcome if is_terminal(outcome) => Preempt::Unchanged,
        Outcome::Failed { .. } => Preempt::Failed(stepped),
        _ => Preempt::Replaced(stepped),
    }
}

/// Applies the rollback decided in `rollout` (pending): its healthy
/// revision, rendered where it was healthy. A transient failure keeps it
/// pending (retried with back-off); only a terminal one ends it.
async fn apply_rollback<W: World>(facts: &Facts<'_>, rollout: &Rollout, world: &mut W) -> Stepped {
    let failed_revision = rollout.rolling_back_from.clone().unwrap_or_default();
    let why = rollout.failure.clone().unwrap_or_default();
    let placement = rollout
        .placement
        .clone()
        .unwrap_or_else(|| facts.placement.clone());
    let given_up = |outcome: Outcome| -> Stepped {
        if !is_terminal(&outcome) {
            // Kept pending: the status keeps the rollout.
            let outcome = match outcome {
                Outcome::Failed {
                    class,
                    reason,
                    message,
                    ..
                } => Outcome::Failed {
                    revision: None,
                    class,
                    reason,
                    message: format!("rolling back to {}: {message}", rollout.revision),
                },
                other => other,
            };
            return failure(outcome);
        }
        ended(
            Outcome::RollbackFailed {
                failed: failed_revision.clone(),
                reason: why.clone(),
                rollback: message_of(&outcome),
            },
            Event::TerminalError,
        )
    };
    world.started(&rollout.revision, Some(&failed_revision));
    let rendered = match world.fetch_at(&rollout.revision, &placement).await {
        Ok(r) => r,
        Err(outcome) => return given_up(outcome),
    };
    let revision = W::revision(&rendered).clone();
    match world.apply(rendered, &placement).await {
        Ok(released) => ended(
            Outcome::Applied {
                revision,
                digest: released.digest,
                applied: released.applied,
                judge: true,
                rollback_from: Some((failed_revision.clone(), why.clone())),
                retry: None,
                images: released.images,
                durations: released.durations,
                superseded: Vec::new(),
                preempted: None,
                placement,
            },
            Event::RollbackApplied,
        ),
        Err(outcome) => given_up(outcome),
    }
}

/// Which HTTP checks are due: never attempted, or attempted at least
/// their `period` ago.
pub fn checks_due(http: &[HttpCheck], attempted_at: &[i64], now: i64) -> Vec<bool> {
    http.iter()
        .enumerate()
        .map(|(i, check)| {
            let period = parse_interval(&check.period)
                .map_or(1, |p| i64::try_from(p.as_secs()).unwrap_or(i64::MAX));
            attempted_at
                .get(i)
                .is_none_or(|at| now.saturating_sub(*at) >= period)
        })
        .collect()
}

/// The verdict with the HTTP checks counted: streaks advance only on the
/// attempts made (those due), so `period` holds however often the
/// release is looked at.
fn with_http(
    facts: &Facts<'_>,
    rollout: &Rollout,
    look: Look,
    since: i64,
) -> (Verdict, Vec<i32>, Vec<i64>) {
    let mut streaks = rollout.http_streaks.clone();
    let mut attempted_at = rollout.http_attempted_at.clone();
    let http = facts.http;
    if look.verdict != Verdict::Healthy || http.is_empty() {
        return (look.verdict, streaks, attempted_at);
    }
    streaks.resize(http.len(), 0);
    attempted_at.resize(http.len(), 0);
    let mut attempts = Vec::new();
    for i in 0..http.len() {
        match look.attempts.get(i).cloned().flatten() {
            Some(attempt) => {
                streaks[i] = checks::next_streak(streaks[i], attempt.ok);
                attempted_at[i] = facts.now;
                attempts.push(attempt);
            }
            None => attempts.push(Attempt {
                ok: streaks[i] > 0,
                detail: "not due yet".into(),
            }),
        }
    }
    let counted = checks::judge_checks(http, &streaks, &attempts);
    let verdict = checks::with_checks(counted, facts.now - since, facts.health_timeout);
    (verdict, streaks, attempted_at)
}

/// Judges the release or rollback in `rollout` once.
async fn judge<W: World>(facts: &Facts<'_>, rollout: &Rollout, world: &mut W) -> Stepped {
    let since = health::seconds(&rollout.started_at).unwrap_or(facts.now);
    let deadline = i64::try_from(facts.health_timeout.as_secs()).unwrap_or(i64::MAX);
    let due = checks_due(facts.http, &rollout.http_attempted_at, facts.now);
    let mut verified = None;
    let (verdict, streaks, attempted_at) = match world.look(rollout, &due).await {
        Ok(mut look) => {
            verified = look.verified.take();
            with_http(facts, rollout, look, since)
        }
        Err(outcome) if facts.now - since >= deadline => {
            let evidence = Evidence {
                object: "the release's objects".into(),
                summary: format!(
                    "could not observe them within {} s: {}",
                    facts.health_timeout.as_secs(),
                    message_of(&outcome)
                ),
                pods: Vec::new(),
            };
            (
                Verdict::Failed(evidence),
                rollout.http_streaks.clone(),
                rollout.http_attempted_at.clone(),
            )
        }
        Err(outcome) => return failure(outcome),
    };
    let evidence = match &verdict {
        Verdict::Failed(evidence) => Some(evidence),
        _ => None,
    };
    let next = decide::after_verdict(
        &verdict,
        streaks,
        rollout,
        facts.status,
        facts.rollback_enabled,
        verified,
    );
    match next {
        AfterVerdict::Wait(Outcome::Progressing {
            message,
            http_streaks,
            ..
        }) => ended(
            Outcome::Progressing {
                message,
                http_streaks,
                http_attempted_at: attempted_at,
            },
            Event::Waiting,
        ),
        AfterVerdict::Wait(outcome) => ended(outcome, Event::Waiting),
        AfterVerdict::Passed(outcome, note) => {
            world.passed(&rollout.revision).await;
            Stepped {
                notes: vec![note],
                ..ended(outcome, Event::Passed)
            }
        }
        AfterVerdict::RollBack { to, why } => {
            let note = world.gate_failed(rollout, evidence).await;
            let decided = Outcome::RollbackStarted {
                to,
                failed: rollout.revision.clone(),
                reason: why,
            };
            Stepped {
                notes: vec![note],
                ..ended(decided, Event::GateFailed)
            }
        }
        AfterVerdict::Failed(outcome) => {
            let note = world.gate_failed(rollout, evidence).await;
            Stepped {
                notes: vec![note],
                ..ended(outcome, Event::GateFailed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_table_is_the_machines() {
        let doc = include_str!("../../../docs/controller.md");
        let documented: Vec<(String, String, String)> = doc
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line
                    .trim()
                    .trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect();
                let code = |c: &str| c.strip_prefix('`')?.strip_suffix('`').map(str::to_owned);
                match cells.as_slice() {
                    [from, event, to, _] => Some((code(from)?, code(event)?, code(to)?)),
                    _ => None,
                }
            })
            .collect();
        let table: Vec<(String, String, String)> = TRANSITIONS
            .iter()
            .map(|(f, e, t, _)| {
                (
                    f.name().to_owned(),
                    e.name().to_owned(),
                    t.name().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            documented, table,
            "docs/controller.md's table of transitions differs from TRANSITIONS"
        );
    }

    #[test]
    fn the_state_is_read_from_the_status() {
        let mut status = EnvironmentStatus::default();
        assert_eq!(State::of(&status), State::InSync);
        status.rollout = Some(Rollout::default());
        assert_eq!(State::of(&status), State::Releasing);
        status.rollout = Some(Rollout {
            rolling_back_from: Some("main@sha1:bad".into()),
            ..Rollout::default()
        });
        assert_eq!(State::of(&status), State::RollingBack);
        status.rollout.as_mut().unwrap().pending = true;
        assert_eq!(State::of(&status), State::RollbackPending);
        status.rollout = None;
        status.failed_revision = Some("main@sha1:bad".into());
        assert_eq!(State::of(&status), State::Failed);
        status.last_applied_revision = Some("main@sha1:good".into());
        status.last_healthy_revision = Some("main@sha1:good".into());
        status
            .conditions
            .push(k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: condition::HEALTHY.into(),
                status: "True".into(),
                reason: "Healthy".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            });
        assert_eq!(State::of(&status), State::Holding);
    }

    #[test]
    fn checks_are_due_by_their_period() {
        let check = |period: &str| HttpCheck {
            period: period.into(),
            ..serde_json::from_value(serde_json::json!({"url": "http://x/"})).unwrap()
        };
        let http = [check("10s"), check("1s")];
        assert_eq!(checks_due(&http, &[], 100), vec![true, true]);
        assert_eq!(checks_due(&http, &[95, 99], 100), vec![false, true]);
        assert_eq!(checks_due(&http, &[90, 100], 100), vec![true, false]);
    }

    #[test]
    fn git_is_looked_at_while_judging_once_per_interval_or_when_asked() {
        let minute = Duration::from_secs(60);
        assert!(head_due(None, minute, false));
        assert!(!head_due(Some(10), minute, false));
        assert!(head_due(Some(10), minute, true));
        assert!(head_due(Some(60), minute, false));
    }
}
