//! One synchronisation of rendered objects with the cluster: plan, then
//! apply. Shared by the reconcile loop and `ferry-controller sync`.
//!
//! Objects in namespaces that do not exist yet cannot be dry-run, so when
//! the plan holds such objects the new Namespaces are created first and the
//! plan is made again; everything else is applied only after every object
//! passed its dry run.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apply::{self, Applied, ApplyError};
use crate::environment::reason;
use crate::inventory::ObjectRef;
use crate::plan::{self, Plan, PlanError, Resolver};

/// Where the time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub plan: Duration,
    pub apply: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl SyncError {
    /// Needs a change in git or the cluster (true), or may pass on retry.
    pub fn is_terminal(&self) -> bool {
        match self {
            SyncError::Plan(e) => e.is_terminal(),
            SyncError::Apply(e) => e.is_terminal(),
        }
    }

    /// The condition reason it is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Plan(e) if e.is_terminal() => reason::VALIDATION_FAILED,
            SyncError::Apply(ApplyError::Conflict { .. }) => reason::CONFLICT,
            SyncError::Apply(ApplyError::Rejected { .. }) => reason::VALIDATION_FAILED,
            _ => reason::APPLY_FAILED,
        }
    }
}

/// Plans `desired` against the cluster and applies it.
pub async fn plan_and_apply(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
    inventory: &[ObjectRef],
    force: bool,
    prune: bool,
) -> Result<(Applied, Timings), SyncError> {
    let started = Instant::now();
    let mut plan = plan::plan(resolver, desired, inventory).await?;
    let mut staged_created = 0;
    if plan.changes.iter().any(|c| !c.validated) {
        let namespaces = Plan {
            changes: plan
                .changes
                .iter()
                .filter(|c| c.object.kind == "Namespace" && c.object.group.is_empty())
                .cloned()
                .collect(),
        };
        staged_created = apply::apply(resolver, &namespaces, force, false)
            .await?
            .created;
        plan = plan::plan(resolver, desired, inventory).await?;
    }
    let planned = Instant::now();
    let mut applied = apply::apply(resolver, &plan, force, prune).await?;
    // The namespaces created first show up again as unchanged.
    applied.created += staged_created;
    applied.unchanged = applied.unchanged.saturating_sub(staged_created);
    let timings = Timings {
        plan: planned - started,
        apply: planned.elapsed(),
    };
    Ok((applied, timings))
}
