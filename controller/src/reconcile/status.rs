//! The Environment's status as a pure function of the previous status and
//! what a reconcile did ([`Outcome`]), as linkerd's policy controller
//! computes its status: decided here, written in one step elsewhere.
//!
//! Conditions (kstatus-style): `Ready`, `Reconciling`, `Stalled` and
//! `Healthy`. Revisions: `lastAttemptedRevision` is what git asked for,
//! `lastAppliedRevision` what runs on the cluster (after a rollback, the
//! healthy revision), `lastHealthyRevision` the last that passed its gate,
//! `failedRevision` the one that failed it.
//!
//! Guarantees: a failure keeps what was applied (revision, digest,
//! inventory); a condition's transition time changes only when its status
//! does.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::history::Entry;
use crate::crd::{EnvironmentStatus, Rollout, STATUS_HISTORY, condition, reason};
use crate::failure::FailureClass;

use super::outcome::Outcome;

/// Wait before retrying a transient failure.
pub const RETRY: Duration = Duration::from_secs(10);

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn text(self) -> &'static str {
        match self {
            Tri::True => "True",
            Tri::False => "False",
            Tri::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Tri {
    fn from(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }
}

fn set(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: impl Into<Tri>,
    reason: &str,
    message: &str,
    now: &Time,
    generation: i64,
) {
    let status = status.into().text().to_owned();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != kind);
    conditions.push(Condition {
        type_: kind.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: transition,
        observed_generation: Some(generation),
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// `main@1f3c2ab0aaaa`: a revision id shortened for messages. Ids come
/// back from the API server (the status), so any text must do.
pub fn short_id(id: &str) -> String {
    match id.split_once("@sha1:") {
        Some((reference, commit)) => {
            format!(
                "{reference}@{}",
                commit.chars().take(12).collect::<String>()
            )
        }
        None => id.to_owned(),
    }
}

/// When and for which generation conditions are set.
#[derive(Clone, Copy)]
struct Stamp<'a> {
    now: &'a Time,
    generation: i64,
}

/// The conditions one outcome sets: status, reason and message each;
/// `Healthy` only when the outcome says something about health.
struct Conditions<'a> {
    ready: (Tri, &'a str, &'a str),
    reconciling: (bool, &'a str, &'a str),
    stalled: (bool, &'a str, &'a str),
    healthy: Option<(Tri, &'a str, &'a str)>,
}

impl Conditions<'_> {
    fn write(self, conditions: &mut Vec<Condition>, at: Stamp<'_>) {
        let (now, generation) = (at.now, at.generation);
        let (status, reason, message) = self.ready;
        set(
            conditions,
            condition::READY,
            status,
            reason,
            message,
            now,
            generation,
        );
        let (status, reason, message) = self.reconciling;
        set(
            conditions,
            condition::RECONCILING,
            status,
            reason,
            message,
            now,
            generation,
        );
        let (status, reason, message) = self.stalled;
        set(
            conditions,
            condition::STALLED,
            status,
            reason,
            message,
            now,
            generation,
        );
        if let Some((status, reason, message)) = self.healthy {
            set(
                conditions,
                condition::HEALTHY,
                status,
                reason,
                message,
                now,
                generation,
            );
        }
    }
}

/// The status after `outcome`, from the previous one. Pure.
pub fn next_status(
    previous: &EnvironmentStatus,
    generation: i64,
    outcome: &Outcome,
    now: &Time,
) -> EnvironmentStatus {
    let mut status = previous.clone();
    status.observed_generation = Some(generation);
    // The release being applied stays recorded until a step answers it:
    // one that failed for now, or did not run, did not.
    let unanswered = matches!(
        outcome,
        Outcome::Suspended
            | Outcome::Failed {
                class: FailureClass::Transient,
                ..
            }
    );
    if !unanswered {
        status.applying = None;
    }
    let at = Stamp { now, generation };
    match outcome {
        Outcome::Applied { .. } => applied(&mut status, outcome, at),
        Outcome::Progressing {
            message,
            http_streaks,
            http_attempted_at,
        } => progressing(&mut status, message, http_streaks, http_attempted_at, at),
        Outcome::RollbackStarted { to, failed, reason } => {
            rollback_started(&mut status, to, failed, reason, at)
        }
        Outcome::Healthy { revision, .. } => healthy(&mut status, revision, at),
        Outcome::RolledBack {
            healthy,
            failed,
            reason,
        } => rolled_back(&mut status, healthy, failed, reason, at),
        Outcome::HealthFailed {
            revision,
            reason,
            rollback_disabled,
        } => health_failed(&mut status, revision, reason, *rollback_disabled, at),
        Outcome::RollbackFailed {
            failed,
            reason,
            rollback,
        } => rollback_failed(&mut status, failed, reason, rollback, at),
        Outcome::Held { revision, .. } => {
            status.last_attempted_revision = Some(revision.id());
        }
        Outcome::Failed {
            revision,
            class,
            reason,
            message,
        } => {
            let terminal = *class == FailureClass::Terminal;
            let retrying = format!("retrying with back-off: {message}");
            Conditions {
                ready: (Tri::False, reason, message),
                reconciling: (!terminal, reason, if terminal { "" } else { &retrying }),
                stalled: (terminal, reason, if terminal { message } else { "" }),
                healthy: None,
            }
            .write(&mut status.conditions, at);
            if let Some(revision) = revision {
                status.last_attempted_revision = Some(revision.id());
            }
        }
        Outcome::Suspended => set(
            &mut status.conditions,
            condition::RECONCILING,
            false,
            reason::SUSPENDED,
            "spec.suspend is true",
            now,
            generation,
        ),
    }
    status
}

/// A revision applied: settled (healthy again, nothing changed), a
/// release whose gate starts, or a rollback whose gate starts.
fn applied(status: &mut EnvironmentStatus, outcome: &Outcome, at: Stamp<'_>) {
    let Outcome::Applied {
        revision,
        digest,
        applied,
        judge,
        rollback_from,
        retry,
        placement,
        ..
    } = outcome
    else {
        return;
    };
    status.last_applied_revision = Some(revision.id());
    status.manifests_digest = Some(digest.clone());
    status.inventory = applied.inventory.clone();
    if let Some(retry) = retry {
        status.last_handled_retry = Some(retry.clone());
    }
    let id = short_id(&revision.id());
    let objects = applied.inventory.len();
    let rollout = |rolling_back_from: Option<&(String, String)>| Rollout {
        revision: revision.id(),
        started_at: at.now.0.to_string(),
        rolling_back_from: rolling_back_from.map(|(failed, _)| failed.clone()),
        failure: rolling_back_from.map(|(_, why)| why.clone()),
        placement: Some(placement.clone()),
        ..Rollout::default()
    };
    match (judge, rollback_from) {
        // The healthy revision again (nothing to judge): when its verdict
        // stands (Ready and Healthy, as that verdict wrote them), they stay
        // as written, so a step that changed nothing writes no status.
        (false, _)
            if status.rollout.is_none()
                && status.last_healthy_revision.as_deref() == Some(revision.id().as_str())
                && status.last_attempted_revision == status.last_healthy_revision
                && [condition::READY, condition::HEALTHY]
                    .iter()
                    .all(|kind| status.condition(kind).is_some_and(|c| c.status == "True")) => {}
        (false, _) => {
            status.last_attempted_revision = Some(revision.id());
            status.rollout = None;
            let message = format!("applied {id} ({objects} objects), healthy");
            Conditions {
                ready: (Tri::True, reason::APPLIED, &message),
                reconciling: (false, reason::APPLIED, ""),
                stalled: (false, reason::APPLIED, ""),
                healthy: None,
            }
            .write(&mut status.conditions, at);
        }
        (true, None) => {
            status.last_attempted_revision = Some(revision.id());
            let message = format!("applied {id} ({objects} objects); waiting for it to be healthy");
            Conditions {
                ready: (Tri::Unknown, reason::PROGRESSING, &message),
                reconciling: (true, reason::PROGRESSING, &message),
                stalled: (false, reason::PROGRESSING, ""),
                healthy: Some((Tri::Unknown, reason::PROGRESSING, &message)),
            }
            .write(&mut status.conditions, at);
            status.rollout = Some(rollout(None));
        }
        (true, Some((failed, why))) => {
            let message = format!("rolling back to {id}: {} failed: {why}", short_id(failed));
            rolling_back(status, &message, failed, why, at);
            status.rollout = Some(rollout(rollback_from.as_ref()));
        }
    }
}

/// The conditions and failure of a rollback decided or under way.
fn rolling_back(
    status: &mut EnvironmentStatus,
    message: &str,
    failed: &str,
    why: &str,
    at: Stamp<'_>,
) {
    Conditions {
        ready: (Tri::False, reason::PROGRESSING, message),
        reconciling: (true, reason::PROGRESSING, message),
        stalled: (false, reason::PROGRESSING, ""),
        healthy: Some((Tri::False, reason::HEALTH_CHECK_FAILED, message)),
    }
    .write(&mut status.conditions, at);
    status.failed_revision = Some(failed.to_owned());
    status.failed_reason = Some(why.to_owned());
}

/// A release failed its gate and the rollback is decided: the failed
/// revision is recorded now, so that a restart or a failed apply of the
/// rollback never forgets it; the rollback itself is applied next, where
/// the healthy revision was healthy (`lastHealthyPlacement`).
fn rollback_started(
    status: &mut EnvironmentStatus,
    to: &str,
    failed: &str,
    why: &str,
    at: Stamp<'_>,
) {
    let message = format!(
        "rolling back to {}: {} failed: {why}",
        short_id(to),
        short_id(failed)
    );
    rolling_back(status, &message, failed, why, at);
    status.rollout = Some(Rollout {
        revision: to.to_owned(),
        started_at: at.now.0.to_string(),
        rolling_back_from: Some(failed.to_owned()),
        failure: Some(why.to_owned()),
        pending: true,
        placement: status.last_healthy_placement.clone(),
        ..Rollout::default()
    });
}

/// The gate is still waiting (on a rollback, `Healthy` stays False).
fn progressing(
    status: &mut EnvironmentStatus,
    message: &str,
    streaks: &[i32],
    attempted_at: &[i64],
    at: Stamp<'_>,
) {
    let waiting = format!("waiting: {message}");
    let rolling_back = status
        .rollout
        .as_ref()
        .is_some_and(|r| r.rolling_back_from.is_some());
    let healthy = if rolling_back {
        (Tri::False, reason::HEALTH_CHECK_FAILED, waiting.as_str())
    } else {
        (Tri::Unknown, reason::PROGRESSING, waiting.as_str())
    };
    Conditions {
        ready: (Tri::Unknown, reason::PROGRESSING, &waiting),
        reconciling: (true, reason::PROGRESSING, &waiting),
        stalled: (false, reason::PROGRESSING, ""),
        healthy: Some(healthy),
    }
    .write(&mut status.conditions, at);
    if let Some(rollout) = &mut status.rollout {
        rollout.http_streaks = streaks.to_vec();
        rollout.http_attempted_at = attempted_at.to_vec();
    }
}

/// The release passed its gate: the failure, if any, is over.
fn healthy(status: &mut EnvironmentStatus, revision: &str, at: Stamp<'_>) {
    let message = format!("applied {}, healthy", short_id(revision));
    Conditions {
        ready: (Tri::True, reason::APPLIED, &message),
        reconciling: (false, reason::HEALTHY, ""),
        stalled: (false, reason::HEALTHY, ""),
        healthy: Some((Tri::True, reason::HEALTHY, &message)),
    }
    .write(&mut status.conditions, at);
    status.last_healthy_revision = Some(revision.to_owned());
    status.last_healthy_placement = status.rollout.as_ref().and_then(|r| r.placement.clone());
    status.failed_revision = None;
    status.failed_reason = None;
    status.rollout = None;
}

/// The rollback's revision passed its gate: healthy, but git asks for a
/// revision that failed (Stalled until git moves or a retry).
fn rolled_back(
    status: &mut EnvironmentStatus,
    healthy: &str,
    failed: &str,
    why: &str,
    at: Stamp<'_>,
) {
    let message = format!(
        "rolled back to {}: {} failed its health gate: {why}; push a fix or set the annotation ferry.dev/retry to try it again",
        short_id(healthy),
        short_id(failed)
    );
    let is_healthy = format!("{} is healthy", short_id(healthy));
    Conditions {
        ready: (Tri::False, reason::ROLLED_BACK, &message),
        reconciling: (false, reason::ROLLED_BACK, ""),
        stalled: (true, reason::ROLLED_BACK, &message),
        healthy: Some((Tri::True, reason::HEALTHY, &is_healthy)),
    }
    .write(&mut status.conditions, at);
    status.last_healthy_revision = Some(healthy.to_owned());
    if let Some(placement) = status.rollout.as_ref().and_then(|r| r.placement.clone()) {
        status.last_healthy_placement = Some(placement);
    }
    status.failed_revision = Some(failed.to_owned());
    status.failed_reason = Some(why.to_owned());
    status.rollout = None;
}

/// The release failed its gate and stays (nothing to roll back to, or
/// rollback disabled).
fn health_failed(
    status: &mut EnvironmentStatus,
    revision: &str,
    why: &str,
    rollback_disabled: bool,
    at: Stamp<'_>,
) {
    let left = if rollback_disabled {
        "rollback is disabled"
    } else {
        "there is no healthy revision to roll back to"
    };
    let message = format!(
        "{} failed its health gate: {why}; {left}, so the cluster is left as it is",
        short_id(revision)
    );
    Conditions {
        ready: (Tri::False, reason::HEALTH_CHECK_FAILED, &message),
        reconciling: (false, reason::HEALTH_CHECK_FAILED, ""),
        stalled: (true, reason::HEALTH_CHECK_FAILED, &message),
        healthy: Some((Tri::False, reason::HEALTH_CHECK_FAILED, &message)),
    }
    .write(&mut status.conditions, at);
    status.failed_revision = Some(revision.to_owned());
    status.failed_reason = Some(why.to_owned());
    status.rollout = None;
}

/// Restoring the healthy revision failed too.
fn rollback_failed(
    status: &mut EnvironmentStatus,
    failed: &str,
    why: &str,
    rollback: &str,
    at: Stamp<'_>,
) {
    let message = format!(
        "{} failed its health gate: {why}; rolling back failed too: {rollback}",
        short_id(failed)
    );
    Conditions {
        ready: (Tri::False, reason::ROLLBACK_FAILED, &message),
        reconciling: (false, reason::ROLLBACK_FAILED, ""),
        stalled: (true, reason::ROLLBACK_FAILED, &message),
        healthy: Some((Tri::False, reason::ROLLBACK_FAILED, &message)),
    }
    .write(&mut status.conditions, at);
    status.failed_revision = Some(failed.to_owned());
    status.failed_reason = Some(why.to_owned());
    status.rollout = None;
}

/// How long to wait before retrying a transient failure: [`RETRY`] at
/// first, then as long as the environment has already been failing
/// (`Reconciling=True` since its last transition), so the wait roughly
/// doubles with each retry; never more than the interval or 5 minutes,
/// never less than the interval when that is shorter than [`RETRY`].
pub fn retry_after(previous: &EnvironmentStatus, now: &Time, interval: Duration) -> Duration {
    let failing_for = previous
        .condition(condition::RECONCILING)
        .filter(|c| c.status == "True")
        .and_then(|c| {
            now.0
                .duration_since(c.last_transition_time.0)
                .try_into()
                .ok()
        })
        .unwrap_or(Duration::ZERO);
    failing_for.clamp(RETRY.min(interval), interval.min(Duration::from_secs(300)))
}

/// The status to write after `outcome`: [`next_status`], the request
/// annotation it handled, and the history entries sealed for it (the
/// newest [`STATUS_HISTORY`] kept). Pure.
pub fn status_after(
    previous: &EnvironmentStatus,
    generation: i64,
    outcome: &Outcome,
    now: &Time,
    requested_at: Option<String>,
    retry: Option<String>,
    sealed: &[Entry],
) -> EnvironmentStatus {
    let mut status = next_status(previous, generation, outcome, now);
    status.last_handled_request = requested_at;
    // A retry asked for before a release failed is not a retry of that
    // failure: the failed revision is held until the next one.
    let failed_now = matches!(
        outcome,
        Outcome::RollbackStarted { .. }
            | Outcome::HealthFailed { .. }
            | Outcome::RollbackFailed { .. }
    );
    if failed_now && retry.is_some() {
        status.last_handled_retry = retry;
    }
    for entry in sealed {
        if !status.history.iter().any(|e| e.sequence == entry.sequence) {
            status.history.push(entry.clone());
        }
    }
    let excess = status.history.len().saturating_sub(STATUS_HISTORY);
    status.history.drain(..excess);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::apply::Applied;
    use crate::source::cache::Revision;
    use k8s_openapi::jiff::Timestamp;

    fn revision(commit: &str) -> Revision {
        Revision {
            reference: "main".into(),
            commit: commit.into(),
            author: "a".into(),
            email: "e".into(),
            committer: "c".into(),
            time: 0,
            message: "m".into(),
        }
    }

    fn time(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn condition<'a>(s: &'a EnvironmentStatus, kind: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == kind).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn failed(
        class: FailureClass,
        reason: &'static str,
        message: &str,
        revision: Option<&str>,
    ) -> Outcome {
        Outcome::Failed {
            revision: revision.map(self::revision),
            class,
            reason,
            message: message.into(),
        }
    }

    fn applied(commit: &str, judge: bool, rollback_from: Option<(&str, &str)>) -> Outcome {
        Outcome::Applied {
            revision: revision(commit),
            digest: format!("sha256:{commit}"),
            applied: Applied::default(),
            judge,
            rollback_from: rollback_from.map(|(a, b)| (a.to_owned(), b.to_owned())),
            retry: None,
            images: Vec::new(),
            durations: Default::default(),
            superseded: Vec::new(),
            preempted: None,
            placement: crate::crd::Placement {
                path: "environments/dev".into(),
                target_namespace: None,
            },
        }
    }

    #[test]
    fn short_ids_take_any_text() {
        assert_eq!(
            short_id("main@sha1:1f3c2ab0aaaaaaaaaaaa"),
            "main@1f3c2ab0aaaa"
        );
        assert_eq!(short_id("main@sha1:ééééééééééééé"), "main@éééééééééééé");
        assert_eq!(short_id("odd"), "odd");
    }

    #[test]
    fn the_release_being_applied_is_forgotten_only_once_a_step_answers_it() {
        let recorded = EnvironmentStatus {
            applying: Some(crate::crd::Applying {
                revision: revision("b").id(),
                placement: crate::crd::Placement {
                    path: "environments/dev".into(),
                    target_namespace: None,
                },
            }),
            ..EnvironmentStatus::default()
        };
        let at = time(1000);
        let transient = failed(FailureClass::Transient, reason::APPLY_FAILED, "503", None);
        let terminal = failed(FailureClass::Terminal, reason::RENDER_FAILED, "bad", None);
        for unanswered in [transient, Outcome::Suspended] {
            let s = next_status(&recorded, 1, &unanswered, &at);
            assert_eq!(s.applying, recorded.applying, "{unanswered:?}");
        }
        for answered in [applied("b", true, None), terminal] {
            let s = next_status(&recorded, 1, &answered, &at);
            assert_eq!(s.applying, None, "{answered:?}");
        }
    }

    #[test]
    fn transient_retries_back_off_with_the_time_spent_failing() {
        let transient = failed(
            FailureClass::Transient,
            reason::FETCH_FAILED,
            "unreachable",
            None,
        );
        let failing = next_status(&EnvironmentStatus::default(), 1, &transient, &time(1000));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            retry_after(&EnvironmentStatus::default(), &time(1000), hour),
            RETRY
        );
        assert_eq!(retry_after(&failing, &time(1005), hour), RETRY);
        assert_eq!(
            retry_after(&failing, &time(1040), hour),
            Duration::from_secs(40)
        );
        assert_eq!(
            retry_after(&failing, &time(9000), hour),
            Duration::from_secs(300)
        );
        assert_eq!(
            retry_after(&failing, &time(9000), Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn an_apply_starts_the_gate_and_a_healthy_verdict_makes_it_ready() {
        let s = next_status(
            &EnvironmentStatus::default(),
            3,
            &applied("1f3c2ab0aaaaaaaaaaaa", true, None),
            &time(10),
        );
        assert_eq!(condition(&s, "Ready"), ("Unknown", "Progressing"));
        assert_eq!(condition(&s, "Healthy"), ("Unknown", "Progressing"));
        assert_eq!(condition(&s, "Reconciling"), ("True", "Progressing"));
        assert_eq!(
            s.last_applied_revision.as_deref(),
            Some("main@sha1:1f3c2ab0aaaaaaaaaaaa")
        );
        assert_eq!(
            s.rollout.as_ref().unwrap().revision,
            "main@sha1:1f3c2ab0aaaaaaaaaaaa"
        );
        assert_eq!(s.observed_generation, Some(3));

        let s = next_status(
            &s,
            3,
            &Outcome::Progressing {
                message: "web: 1 of 2 updated replicas available".into(),
                http_streaks: vec![],
                http_attempted_at: vec![],
            },
            &time(12),
        );
        assert!(
            s.conditions
                .iter()
                .any(|c| c.message == "waiting: web: 1 of 2 updated replicas available")
        );

        let s = next_status(
            &s,
            3,
            &Outcome::Healthy {
                revision: "main@sha1:1f3c2ab0aaaaaaaaaaaa".into(),
                verified: None,
            },
            &time(14),
        );
        assert_eq!(condition(&s, "Ready"), ("True", "Applied"));
        assert_eq!(condition(&s, "Healthy"), ("True", "Healthy"));
        assert_eq!(condition(&s, "Stalled"), ("False", "Healthy"));
        assert_eq!(
            s.last_healthy_revision.as_deref(),
            Some("main@sha1:1f3c2ab0aaaaaaaaaaaa")
        );
        assert!(s.rollout.is_none());
        // The same revision applied again with nothing to judge: the
        // verdict's status stands, so no status write is needed.
        let again = applied("1f3c2ab0aaaaaaaaaaaa", false, None);
        assert_eq!(next_status(&s, 3, &again, &time(16)), s);
    }

    #[test]
    fn a_failed_revision_rolled_back_leaves_the_cluster_healthy_and_git_stalled() {
        let healthy = next_status(
            &EnvironmentStatus::default(),
            1,
            &applied("good", true, None),
            &time(10),
        );
        let healthy = next_status(
            &healthy,
            1,
            &Outcome::Healthy {
                revision: "main@sha1:good".into(),
                verified: None,
            },
            &time(12),
        );
        assert!(healthy.last_healthy_placement.is_some());
        let attempted = next_status(&healthy, 1, &applied("bad", true, None), &time(20));
        let decided = next_status(
            &attempted,
            1,
            &Outcome::RollbackStarted {
                to: "main@sha1:good".into(),
                failed: "main@sha1:bad".into(),
                reason: "web-1 in CrashLoopBackOff".into(),
            },
            &time(25),
        );
        assert!(decided.rollout.as_ref().unwrap().pending);
        assert_eq!(decided.failed_revision.as_deref(), Some("main@sha1:bad"));
        assert_eq!(condition(&decided, "Reconciling"), ("True", "Progressing"));
        let rolling = next_status(
            &decided,
            1,
            &applied(
                "good",
                true,
                Some(("main@sha1:bad", "web-1 in CrashLoopBackOff")),
            ),
            &time(30),
        );
        assert_eq!(
            rolling.last_attempted_revision.as_deref(),
            Some("main@sha1:bad")
        );
        assert_eq!(
            rolling.last_applied_revision.as_deref(),
            Some("main@sha1:good")
        );
        assert_eq!(
            condition(&rolling, "Healthy"),
            ("False", "HealthCheckFailed")
        );
        assert_eq!(
            rolling
                .rollout
                .as_ref()
                .unwrap()
                .rolling_back_from
                .as_deref(),
            Some("main@sha1:bad")
        );
        let done = next_status(
            &rolling,
            1,
            &Outcome::RolledBack {
                healthy: "main@sha1:good".into(),
                failed: "main@sha1:bad".into(),
                reason: "web-1 in CrashLoopBackOff".into(),
            },
            &time(40),
        );
        assert_eq!(condition(&done, "Healthy"), ("True", "Healthy"));
        assert_eq!(condition(&done, "Ready"), ("False", "RolledBack"));
        assert_eq!(condition(&done, "Stalled"), ("True", "RolledBack"));
        assert_eq!(done.failed_revision.as_deref(), Some("main@sha1:bad"));
        assert_eq!(
            done.failed_reason.as_deref(),
            Some("web-1 in CrashLoopBackOff")
        );
        assert_eq!(
            done.last_applied_revision.as_deref(),
            Some("main@sha1:good")
        );
        assert_eq!(
            done.last_attempted_revision.as_deref(),
            Some("main@sha1:bad")
        );
        assert!(done.rollout.is_none());
        // A new good commit clears the failure.
        let next = next_status(&done, 1, &applied("fix", true, None), &time(50));
        let next = next_status(
            &next,
            1,
            &Outcome::Healthy {
                revision: "main@sha1:fix".into(),
                verified: None,
            },
            &time(52),
        );
        assert!(next.failed_revision.is_none());
        assert_eq!(condition(&next, "Stalled"), ("False", "Healthy"));
    }

    #[test]
    fn without_a_way_back_the_failure_is_stalled_with_both_stories() {
        let s = next_status(
            &EnvironmentStatus::default(),
            1,
            &applied("first", true, None),
            &time(10),
        );
        let s = next_status(
            &s,
            1,
            &Outcome::HealthFailed {
                revision: "main@sha1:first".into(),
                reason: "ImagePullBackOff".into(),
                rollback_disabled: false,
            },
            &time(40),
        );
        assert_eq!(condition(&s, "Stalled"), ("True", "HealthCheckFailed"));
        assert_eq!(condition(&s, "Healthy"), ("False", "HealthCheckFailed"));
        assert!(
            s.conditions
                .iter()
                .any(|c| c.message.contains("no healthy revision to roll back to"))
        );
        let s = next_status(
            &s,
            1,
            &Outcome::RollbackFailed {
                failed: "main@sha1:b".into(),
                reason: "crash".into(),
                rollback: "apply refused".into(),
            },
            &time(50),
        );
        assert_eq!(condition(&s, "Stalled"), ("True", "RollbackFailed"));
        assert!(
            s.conditions
                .iter()
                .any(|c| c.message.contains("crash") && c.message.contains("apply refused"))
        );
    }

    #[test]
    fn failures_keep_what_was_applied_and_say_how_they_are_retried() {
        let good = next_status(
            &EnvironmentStatus::default(),
            1,
            &applied("aaa", false, None),
            &time(10),
        );
        assert_eq!(condition(&good, "Ready"), ("True", "Applied"));
        let terminal = failed(
            FailureClass::Terminal,
            reason::VALIDATION_FAILED,
            "bad object",
            Some("bbb"),
        );
        let s = next_status(&good, 1, &terminal, &time(20));
        assert_eq!(condition(&s, "Ready"), ("False", "ValidationFailed"));
        assert_eq!(condition(&s, "Stalled"), ("True", "ValidationFailed"));
        assert_eq!(s.last_applied_revision.as_deref(), Some("main@sha1:aaa"));
        assert_eq!(s.last_attempted_revision.as_deref(), Some("main@sha1:bbb"));
        assert_eq!(s.manifests_digest.as_deref(), Some("sha256:aaa"));
        let transient = failed(
            FailureClass::Transient,
            reason::FETCH_FAILED,
            "unreachable",
            None,
        );
        let s = next_status(&good, 1, &transient, &time(30));
        assert_eq!(condition(&s, "Reconciling"), ("True", "FetchFailed"));
        assert_eq!(condition(&s, "Stalled").0, "False");
        let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
        // Stalled stayed False since the first write: its transition time too.
        assert_eq!(stalled.last_transition_time, time(10));
    }
}
