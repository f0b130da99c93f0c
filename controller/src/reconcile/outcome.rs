//! How a reconcile ended, as a value: the status, the history, the
//! events, the metrics and the requeue are each computed from it.

use crate::cluster::apply::Applied;
use crate::crd::Placement;
use crate::failure::FailureClass;
use crate::source::cache::Revision;

/// How a reconcile ended.
// One Outcome exists per reconcile, moved and never stored in bulk, so the
// size of `Applied` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A revision was applied and its health gate starts (`judge`), or it
    /// was the healthy revision again with nothing to change (`!judge`).
    /// `rollback_from`: the failed revision and why, when this apply is a
    /// rollback.
    Applied {
        revision: Revision,
        digest: String,
        applied: Applied,
        judge: bool,
        rollback_from: Option<(String, String)>,
        retry: Option<String>,
        /// Container images of what was applied (for the history).
        images: Vec<String>,
        /// Milliseconds per phase: fetch, render, plan, apply.
        durations: std::collections::BTreeMap<String, u64>,
        /// Commits after the last one tried and before this one, oldest
        /// first, that were never applied (a newer commit came first).
        superseded: Vec<Revision>,
        /// The release or rollback this one replaced before its verdict.
        preempted: Option<String>,
        /// Where it was rendered from and placed.
        placement: Placement,
    },
    /// The gate is still waiting: what for, and the HTTP checks' streaks
    /// and times of their last attempts.
    Progressing {
        message: String,
        http_streaks: Vec<i32>,
        http_attempted_at: Vec<i64>,
    },
    /// The release failed its gate; the rollback to `to` (rendered where
    /// it was healthy) is decided and applied next.
    RollbackStarted {
        to: String,
        failed: String,
        reason: String,
    },
    /// The revision passed its gate.
    Healthy {
        revision: String,
        /// With `beforeTraffic`: its pods' verification, for the history.
        verified: Option<String>,
    },
    /// The rollback's revision passed its gate.
    RolledBack {
        healthy: String,
        failed: String,
        reason: String,
    },
    /// The revision failed its gate and was left in place (first release,
    /// or rollback disabled).
    HealthFailed {
        revision: String,
        reason: String,
        rollback_disabled: bool,
    },
    /// Restoring the healthy revision failed too.
    RollbackFailed {
        failed: String,
        reason: String,
        rollback: String,
    },
    /// Git asks for a revision that failed; it was not applied. What runs
    /// was applied again when it is the healthy revision (`corrected`).
    Held {
        revision: Revision,
        corrected: Option<Applied>,
    },
    Failed {
        revision: Option<Revision>,
        class: FailureClass,
        reason: &'static str,
        message: String,
    },
    Suspended,
}

/// A failure of `class`, with its condition reason and message.
pub fn failed(
    revision: Option<&Revision>,
    class: FailureClass,
    reason: &'static str,
    message: impl std::fmt::Display,
) -> Outcome {
    Outcome::Failed {
        revision: revision.cloned(),
        class,
        reason,
        message: message.to_string(),
    }
}

/// The message of a failure (empty for any other outcome).
pub fn message_of(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Failed { message, .. } => message.clone(),
        _ => String::new(),
    }
}
