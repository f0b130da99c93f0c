//! The reconcile loop: for each `Environment`, fetch, render, plan, apply,
//! judge, and record what happened in its status, its history, in Events
//! and in metrics.
//!
//! The conductor is [`reconcile`]: it reads the Environment, handles the
//! finalizer, and runs one [`step`]. A step is the release step
//! ([`judge::step`]: judge the release in progress, or [`release`] the
//! revision git asks for, or roll back) and its record. Every decision is
//! a pure function ([`decide`], [`status`], [`record`], [`trigger`]) of
//! the status and an [`outcome::Outcome`]; the rest carries them out.
//!
//! Failures fall in two classes ([`crate::failure`]), each with its
//! conditions and requeue:
//! - terminal (render, validation, namespace guard, conflicts, missing
//!   permissions): git, the cluster or the Environment must change.
//!   `Stalled=True`, `Ready=False`; looked at again at the interval, and at
//!   once when the Environment changes.
//! - transient (fetch, credentials, API errors such as 429, 5xx and
//!   timeouts): may pass by themselves. `Reconciling=True`, `Ready=False`;
//!   retried with back-off ([`status::retry_after`]: 10 s, growing with the time
//!   spent failing).
//!
//! Guarantees: a failure before applying changes nothing in the cluster;
//! the last applied revision, digest and inventory stay as they were until
//! a revision is applied in full. Each reconcile reads the Environment
//! fresh from the API server (not the watch cache), so it prunes from the
//! latest inventory; the status is computed by [`status::next_status`], a pure
//! function, and written ([`write`]) with optimistic concurrency (a newer status is
//! never overwritten: on a conflict it is read again and recomputed).
//! A finalizer deletes what the Environment applied when it is deleted
//! with `prune: true` (owned objects only; adopted ones are released), or
//! orphans it with `prune: false`.

pub mod before_traffic;
pub mod cleanup;
pub mod context;
pub mod decide;
pub mod error;
pub mod fetch;
pub mod judge;
pub mod machine;
pub mod outcome;
pub mod record;
pub mod release;
pub mod status;
pub mod step;
pub mod trigger;
pub mod write;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizing};

pub use context::Context;
pub use decide::JUDGE_EVERY;
pub use error::ReconcileError;

use crate::crd::{Environment, FINALIZER};

/// Reconciles one Environment; see the module docs.
///
/// Each reconcile is one step: apply the revision git asks for (or hold
/// it, when it failed its gate), or, while a release is being judged,
/// look at it once more (every [`JUDGE_EVERY`]) and, when it failed, roll
/// back. A restarted controller resumes from the status.
#[tracing::instrument(skip_all, fields(environment = %format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any())))]
pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let (ns, name) = (env.namespace().unwrap_or_default(), env.name_any());
    let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh, not from the watch cache: the inventory pruning trusts.
    let read = |source| ReconcileError::Read {
        name: format!("{ns}/{name}"),
        source,
    };
    let Some(fresh) = api.get_opt(&name).await.map_err(read)? else {
        return Ok(Action::await_change());
    };
    // A new Environment gets its finalizer first, and the step goes on
    // from the object that write returns (as fresh as a read): one
    // reconcile, not two.
    let fresh = if fresh.metadata.deletion_timestamp.is_none()
        && !fresh.finalizers().iter().any(|f| f == FINALIZER)
    {
        match with_finalizer(&api, &fresh).await {
            Ok(added) => added,
            // Changed meanwhile: start again from what it is now.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(50)));
            }
            Err(source) => {
                return Err(ReconcileError::Write {
                    name: format!("{ns}/{name}"),
                    source,
                });
            }
        }
    } else {
        fresh
    };
    let action = finalizer::finalizer(&api, FINALIZER, Arc::new(fresh), |event| async {
        // A panic past the step's own guard (recording, status, cleanup)
        // is retried as an I/O error, never the end of the process.
        let work = async {
            match event {
                Finalizing::Apply(env) => step::run(&env, &ctx, &api).await,
                Finalizing::Cleanup(env) => cleanup::cleanup(&env, &ctx).await,
            }
        };
        step::contained(work).await.unwrap_or_else(|message| {
            Err(ReconcileError::Panicked {
                name: format!("{ns}/{name}"),
                message,
            })
        })
    })
    .await
    .map_err(|source| ReconcileError::Finalizer {
        name: format!("{ns}/{name}"),
        source: Box::new(source),
    })?;
    Ok(action)
}

/// Adds ferry's finalizer to `env` as read (its resourceVersion makes the
/// write fail with 409 if it changed since); the Environment written.
async fn with_finalizer(api: &Api<Environment>, env: &Environment) -> kube::Result<Environment> {
    let mut finalizers = env.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": env.resource_version(),
    }});
    api.patch(
        &env.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// Retries after a failed read, status write or cleanup.
pub fn error_policy(_env: Arc<Environment>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %crate::failure::describe(error), "reconcile error");
    ctx.metrics.record_error("transient", "ControllerIOFailed");
    Action::requeue(status::RETRY)
}
