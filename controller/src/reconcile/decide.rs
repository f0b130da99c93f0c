//! The reconcile's decisions, as pure functions of the status and what
//! happened: which step to take, what a verdict leads to, and what an
//! outcome asks for next (requeue, events, metrics).
//!
//! Guarantees: a revision that failed its gate is not applied again until
//! the branch moves to another commit or `ferry.dev/retry` changes (no
//! flapping); a rollout in progress is resumed from the status alone, so
//! a restarted controller finishes the job.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use crate::cluster::apply::Applied;
use crate::crd::{EnvironmentStatus, Rollout, reason};
use crate::failure::FailureClass;
use crate::gate::health::{Evidence, Verdict};

use super::outcome::Outcome;
use super::status::{RETRY, retry_after, short_id};

/// How often a release being judged is looked at again.
pub const JUDGE_EVERY: Duration = Duration::from_secs(2);

/// A note for an Event: its type, reason and text.
pub type Note = (EventType, &'static str, String);

/// What a reconcile with no release in progress does with the revision
/// git asks for (a release in progress is the state machine's to judge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Git asks for the revision that failed and nobody asked to retry:
    /// leave the cluster on what it runs.
    Hold,
    /// Apply the revision git asks for.
    Apply,
}

/// Decides for `head` (the `ref@sha1:` id git resolves to now) given the
/// status and the current `ferry.dev/retry` annotation.
pub fn decide(status: &EnvironmentStatus, head: &str, retry: Option<&str>) -> Decision {
    let retry_asked = retry.is_some() && retry != status.last_handled_retry.as_deref();
    if status.failed_revision.as_deref() == Some(head) && !retry_asked {
        return Decision::Hold;
    }
    Decision::Apply
}

/// Whether an apply of `id` with `digest` was the revision that already
/// passed its gate, rendered the same: then there is nothing to judge,
/// whatever drift the apply set back (a drift fix is not a release).
pub fn settled(status: &EnvironmentStatus, id: &str, digest: &str) -> bool {
    let id = Some(id);
    status.last_healthy_revision.as_deref() == id
        && status.last_applied_revision.as_deref() == id
        && status.manifests_digest.as_deref() == Some(digest)
        && status.failed_revision.is_none()
}

/// What a verdict on the release in `status.rollout` leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterVerdict {
    /// Still waiting: look again.
    Wait(Outcome),
    /// Passed its gate (a release, or a rollback's revision): keep its
    /// commit for later rollbacks, and end with this outcome and event.
    Passed(Outcome, Note),
    /// Failed: apply the last healthy revision `to` again.
    RollBack { to: String, why: String },
    /// Failed, with nothing to roll back to, rollback disabled, or the
    /// rollback's own revision failing: stop on this outcome.
    Failed(Outcome),
}

/// Decides what the verdict on `rollout` leads to. `streaks`: the HTTP
/// checks' streaks after this look; `verified`: how the release's pods
/// were verified before traffic, told by its Healthy outcome.
pub fn after_verdict(
    verdict: &Verdict,
    streaks: Vec<i32>,
    rollout: &Rollout,
    status: &EnvironmentStatus,
    rollback_enabled: bool,
    verified: Option<String>,
) -> AfterVerdict {
    match verdict {
        Verdict::Progressing(waiting) => AfterVerdict::Wait(Outcome::Progressing {
            message: waiting.join("; "),
            http_streaks: streaks,
            http_attempted_at: Vec::new(),
        }),
        Verdict::Healthy => match &rollout.rolling_back_from {
            Some(failed_revision) => {
                let why = rollout.failure.clone().unwrap_or_default();
                let note = format!(
                    "rolled back to {}: {} failed: {why}",
                    short_id(&rollout.revision),
                    short_id(failed_revision)
                );
                AfterVerdict::Passed(
                    Outcome::RolledBack {
                        healthy: rollout.revision.clone(),
                        failed: failed_revision.clone(),
                        reason: why,
                    },
                    (EventType::Warning, "RolledBack", note),
                )
            }
            None => AfterVerdict::Passed(
                Outcome::Healthy {
                    revision: rollout.revision.clone(),
                    verified,
                },
                (
                    EventType::Normal,
                    "Healthy",
                    format!("{} is healthy", short_id(&rollout.revision)),
                ),
            ),
        },
        Verdict::Failed(evidence) => {
            let why = reason_of(evidence);
            if let Some(from) = &rollout.rolling_back_from {
                return AfterVerdict::Failed(Outcome::RollbackFailed {
                    failed: from.clone(),
                    reason: rollout.failure.clone().unwrap_or_default(),
                    rollback: why,
                });
            }
            let healthy = status
                .last_healthy_revision
                .clone()
                .filter(|h| *h != rollout.revision);
            match healthy {
                Some(to) if rollback_enabled => AfterVerdict::RollBack { to, why },
                _ => AfterVerdict::Failed(Outcome::HealthFailed {
                    revision: rollout.revision.clone(),
                    reason: why,
                    rollback_disabled: !rollback_enabled,
                }),
            }
        }
    }
}

/// The failure's one line for conditions and the history.
fn reason_of(evidence: &Evidence) -> String {
    cap_line(&format!("{}: {}", evidence.object, evidence.summary))
}

/// One line of at most 300 characters, for condition messages.
pub fn cap_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= 300 {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(299).collect::<String>())
    }
}

/// What the conductor does after an outcome besides writing the status.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    /// When to look again; `None`: only when the Environment changes.
    pub requeue: Option<Duration>,
    /// Events to publish, in order.
    pub events: Vec<Note>,
    /// The error counted in `ferry_reconcile_errors_total`: its class
    /// label and reason.
    pub error: Option<(&'static str, &'static str)>,
}

/// The requeue, events and error an outcome asks for. `interval`: the
/// Environment's; `previous`: the status before this reconcile (for the
/// back-off of transient failures).
pub fn after_outcome(
    outcome: &Outcome,
    previous: &EnvironmentStatus,
    interval: Duration,
    now: &Time,
) -> FollowUp {
    let mut events = Vec::new();
    let mut error = None;
    let requeue = match outcome {
        Outcome::Applied {
            revision,
            applied,
            judge,
            ..
        } => {
            if applied.changes() > 0 {
                let note = format!(
                    "applied {} ({}): {} created, {} updated, {} pruned, {} released",
                    short_id(&revision.id()),
                    revision.subject(),
                    applied.created,
                    applied.updated,
                    applied.pruned,
                    applied.released
                );
                events.push((EventType::Normal, "Applied", note));
            }
            if !applied.drift.is_empty() {
                events.push((EventType::Warning, "DriftCorrected", drift_note(applied)));
            }
            Some(if *judge { JUDGE_EVERY } else { interval })
        }
        Outcome::Progressing { .. } => Some(JUDGE_EVERY),
        // The rollback is applied by the next reconcile, at once.
        Outcome::RollbackStarted { .. } => Some(Duration::ZERO),
        Outcome::Held { corrected, .. } => {
            if let Some(applied) = corrected.as_ref().filter(|a| !a.drift.is_empty()) {
                events.push((EventType::Warning, "DriftCorrected", drift_note(applied)));
            }
            Some(interval)
        }
        // A verdict ends the judging: git is looked at again soon after, so
        // a commit pushed meanwhile waits no interval more.
        Outcome::Healthy { .. } | Outcome::RolledBack { .. } => Some(JUDGE_EVERY),
        Outcome::HealthFailed { .. } | Outcome::RollbackFailed { .. } => {
            error = Some(("terminal", reason::HEALTH_CHECK_FAILED));
            Some(JUDGE_EVERY)
        }
        Outcome::Failed {
            class,
            reason,
            message,
            ..
        } => {
            error = Some((class.label(), *reason));
            events.push((EventType::Warning, *reason, message.clone()));
            let judging = previous.rollout.as_ref().is_some_and(|r| !r.pending);
            Some(if *class == FailureClass::Terminal {
                interval
            } else if judging {
                // A release being judged keeps being looked at: its
                // deadline holds whether or not its objects can be read.
                retry_after(previous, now, interval).min(RETRY)
            } else {
                retry_after(previous, now, interval)
            })
        }
        Outcome::Suspended => None,
    };
    FollowUp {
        requeue,
        events,
        error,
    }
}

/// `Deployment.apps dev/web: spec.replicas (by kubectl); ...`
fn drift_note(applied: &Applied) -> String {
    let objects: Vec<String> = applied
        .drift
        .iter()
        .map(|(object, fields)| {
            let fields: Vec<String> = fields
                .iter()
                .map(|d| format!("{} (changed by {})", d.field, d.managers.join(", ")))
                .collect();
            format!("{object}: {}", fields.join(", "))
        })
        .collect();
    format!("set back to git's values: {}", objects.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn rollout(revision: &str, rolling_back_from: Option<&str>) -> Rollout {
        Rollout {
            revision: revision.into(),
            started_at: "2027-01-01T00:00:00Z".into(),
            rolling_back_from: rolling_back_from.map(Into::into),
            failure: rolling_back_from.map(|_| "crash loop".into()),
            ..Rollout::default()
        }
    }

    fn failing() -> Verdict {
        Verdict::Failed(Evidence {
            object: "Deployment.apps dev/web".into(),
            summary: "crash loop\nsecond line".into(),
            pods: Vec::new(),
        })
    }

    #[test]
    fn a_failed_release_rolls_back_to_the_last_healthy_revision_when_enabled() {
        let status = EnvironmentStatus {
            last_healthy_revision: Some("main@sha1:good".into()),
            ..EnvironmentStatus::default()
        };
        let release = rollout("main@sha1:bad", None);
        assert_eq!(
            after_verdict(&failing(), vec![], &release, &status, true, None),
            AfterVerdict::RollBack {
                to: "main@sha1:good".into(),
                why: "Deployment.apps dev/web: crash loop".into()
            }
        );
        let AfterVerdict::Failed(Outcome::HealthFailed {
            rollback_disabled, ..
        }) = after_verdict(&failing(), vec![], &release, &status, false, None)
        else {
            panic!("rollback disabled: the failure stays");
        };
        assert!(rollback_disabled);
        // A first release (or one whose last healthy revision is itself)
        // has nothing to go back to.
        let first = EnvironmentStatus::default();
        assert!(matches!(
            after_verdict(&failing(), vec![], &release, &first, true, None),
            AfterVerdict::Failed(Outcome::HealthFailed {
                rollback_disabled: false,
                ..
            })
        ));
        let same = EnvironmentStatus {
            last_healthy_revision: Some("main@sha1:bad".into()),
            ..EnvironmentStatus::default()
        };
        assert!(matches!(
            after_verdict(&failing(), vec![], &release, &same, true, None),
            AfterVerdict::Failed(Outcome::HealthFailed { .. })
        ));
    }

    #[test]
    fn a_rollback_that_fails_its_gate_is_not_rolled_back_again() {
        let status = EnvironmentStatus {
            last_healthy_revision: Some("main@sha1:older".into()),
            ..EnvironmentStatus::default()
        };
        let rolling_back = rollout("main@sha1:good", Some("main@sha1:bad"));
        assert_eq!(
            after_verdict(&failing(), vec![], &rolling_back, &status, true, None),
            AfterVerdict::Failed(Outcome::RollbackFailed {
                failed: "main@sha1:bad".into(),
                reason: "crash loop".into(),
                rollback: "Deployment.apps dev/web: crash loop".into(),
            })
        );
    }

    #[test]
    fn a_healthy_verdict_ends_the_release_or_the_rollback() {
        let status = EnvironmentStatus::default();
        let AfterVerdict::Passed(outcome, (kind, reason, _)) = after_verdict(
            &Verdict::Healthy,
            vec![],
            &rollout("main@sha1:new", None),
            &status,
            true,
            None,
        ) else {
            panic!("healthy");
        };
        assert_eq!(
            (outcome, kind, reason),
            (
                Outcome::Healthy {
                    revision: "main@sha1:new".into(),
                    verified: None,
                },
                EventType::Normal,
                "Healthy"
            )
        );
        let back = rollout("main@sha1:good", Some("main@sha1:bad"));
        let AfterVerdict::Passed(outcome, (kind, _, note)) =
            after_verdict(&Verdict::Healthy, vec![], &back, &status, true, None)
        else {
            panic!("rolled back");
        };
        assert!(matches!(outcome, Outcome::RolledBack { .. }));
        assert_eq!(kind, EventType::Warning);
        assert!(
            note.contains("rolled back to main@good") && note.contains("main@bad failed"),
            "{note}"
        );
        assert_eq!(
            after_verdict(
                &Verdict::Progressing(vec!["a".into(), "b".into()]),
                vec![2],
                &back,
                &status,
                true,
                None
            ),
            AfterVerdict::Wait(Outcome::Progressing {
                message: "a; b".into(),
                http_streaks: vec![2],
                http_attempted_at: vec![],
            })
        );
    }

    #[test]
    fn outcomes_ask_for_their_requeue_events_and_error() {
        let now = Time(Timestamp::now());
        let previous = EnvironmentStatus::default();
        let interval = Duration::from_secs(60);
        let failure = |class| Outcome::Failed {
            revision: None,
            class,
            reason: reason::FETCH_FAILED,
            message: "unreachable".into(),
        };
        let terminal = after_outcome(&failure(FailureClass::Terminal), &previous, interval, &now);
        assert_eq!(terminal.requeue, Some(interval));
        assert_eq!(terminal.error, Some(("terminal", reason::FETCH_FAILED)));
        assert_eq!(terminal.events.len(), 1);
        let transient = after_outcome(&failure(FailureClass::Transient), &previous, interval, &now);
        assert_eq!(transient.requeue, Some(super::super::status::RETRY));
        let progressing = Outcome::Progressing {
            message: String::new(),
            http_streaks: vec![],
            http_attempted_at: vec![],
        };
        let judging = after_outcome(&progressing, &previous, interval, &now);
        assert_eq!(
            (judging.requeue, judging.events.len()),
            (Some(JUDGE_EVERY), 0)
        );
        let failed = Outcome::HealthFailed {
            revision: "main@sha1:bad".into(),
            reason: String::new(),
            rollback_disabled: false,
        };
        assert_eq!(
            after_outcome(&failed, &previous, interval, &now).error,
            Some(("terminal", reason::HEALTH_CHECK_FAILED))
        );
        assert_eq!(
            after_outcome(&Outcome::Suspended, &previous, interval, &now).requeue,
            None
        );
    }

    #[test]
    fn long_reasons_are_cut_to_one_line() {
        assert_eq!(cap_line("one\ntwo"), "one");
        let long = cap_line(&"x".repeat(400));
        assert_eq!(long.chars().count(), 300);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn a_failed_revision_is_held_until_the_branch_moves_or_a_retry() {
        let mut status = EnvironmentStatus {
            failed_revision: Some("main@sha1:bad".into()),
            ..EnvironmentStatus::default()
        };
        assert_eq!(decide(&status, "main@sha1:bad", None), Decision::Hold);
        assert_eq!(decide(&status, "main@sha1:new", None), Decision::Apply);
        assert_eq!(decide(&status, "main@sha1:bad", Some("1")), Decision::Apply);
        status.last_handled_retry = Some("1".into());
        assert_eq!(decide(&status, "main@sha1:bad", Some("1")), Decision::Hold);
        assert_eq!(decide(&status, "main@sha1:bad", Some("2")), Decision::Apply);
    }
}
