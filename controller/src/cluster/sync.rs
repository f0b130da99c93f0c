//! One synchronisation of rendered objects with the cluster: plan, then
//! apply. Shared by the reconcile loop and `ferry-controller sync`.
//!
//! Objects in namespaces that do not exist yet, and custom resources of
//! kinds whose CRD comes in the same revision, cannot be dry-run. When the
//! plan holds such objects, the new Namespaces and CRDs (which did pass
//! their dry run) are applied first, the CRDs are waited for until they
//! are Established and served, and the plan is made again; everything
//! else is applied only after every object passed its dry run.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::apply::{self, Applied, ApplyError};
use crate::cluster::discovery::Resolver;
use crate::cluster::owned::Remembering;
use crate::cluster::plan::{self, Plan, PlanError, PlanOptions};
use crate::crd::reason;
use crate::failure::FailureClass;
use ferry_manifests::object::ObjectRef;

/// How long CRDs of a revision may take to be Established.
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error(
        "CustomResourceDefinition {name} was not Established within {seconds} s; its custom resources were not applied"
    )]
    CrdNotEstablished { name: String, seconds: u64 },
}

impl SyncError {
    /// Needs a change in git or the cluster, or may pass on retry.
    pub fn class(&self) -> FailureClass {
        match self {
            SyncError::Plan(e) => e.class(),
            SyncError::Apply(e) => e.class(),
            SyncError::CrdNotEstablished { .. } => FailureClass::Transient,
        }
    }

    /// The condition reason it is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Plan(e) => e.reason(),
            SyncError::Apply(e) => e.reason(),
            SyncError::CrdNotEstablished { .. } => reason::APPLY_FAILED,
        }
    }
}

/// How to sync.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncOptions<'a> {
    pub force: bool,
    pub prune: bool,
    /// The owning Environment ([`crate::cluster::ownership::owner_id`]); `None` for
    /// the command line: no labels, no ownership checks, no prune.
    pub owner: Option<&'a str>,
    /// The cache of owned objects ([`crate::cluster::owned`]); `None` for
    /// the command line.
    pub remembering: Option<Remembering<'a>>,
}

fn is_staged(object: &ObjectRef) -> bool {
    object.is_namespace()
        || (object.kind == "CustomResourceDefinition" && object.group == "apiextensions.k8s.io")
}

/// Plans `desired` against the cluster and applies it.
pub async fn plan_and_apply(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
    inventory: &[ObjectRef],
    options: SyncOptions<'_>,
) -> Result<(Applied, Timings), SyncError> {
    let started = Instant::now();
    let plan_options = PlanOptions {
        force: options.force,
        owner: options.owner,
        remembering: options.remembering,
        created_namespaces: &[],
    };
    let mut plan = plan::plan(resolver, desired, inventory, plan_options).await?;
    let mut staged = Applied::default();
    if plan.changes.iter().any(|c| !c.validated) {
        let first = Plan {
            changes: plan
                .changes
                .iter()
                .filter(|c| c.validated && is_staged(&c.object))
                .cloned()
                .collect(),
        };
        staged = apply::apply(resolver, &first, false, options.owner, options.remembering).await?;
        for change in first
            .changes
            .iter()
            .filter(|c| c.object.kind == "CustomResourceDefinition")
        {
            wait_established(resolver, &change.object, desired).await?;
        }
        let created: Vec<String> = first
            .changes
            .iter()
            .filter(|c| c.object.is_namespace())
            .map(|c| c.object.name.clone())
            .collect();
        let again = PlanOptions {
            created_namespaces: &created,
            ..plan_options
        };
        plan = plan::plan(resolver, desired, inventory, again).await?;
    }
    let planned = Instant::now();
    let mut applied = apply::apply(
        resolver,
        &plan,
        options.prune,
        options.owner,
        options.remembering,
    )
    .await?;
    // What was created first shows up again as unchanged.
    applied.created += staged.created;
    applied.updated += staged.updated;
    applied.unchanged = applied
        .unchanged
        .saturating_sub(staged.created + staged.updated);
    let timings = Timings {
        plan: planned - started,
        apply: planned.elapsed(),
    };
    Ok((applied, timings))
}

/// Waits until the CRD is Established and discovery serves its kind.
async fn wait_established(
    resolver: &mut Resolver,
    crd: &ObjectRef,
    desired: &[(Value, String)],
) -> Result<(), SyncError> {
    let deadline = Instant::now() + CRD_ESTABLISHED_TIMEOUT;
    let served = crate::cluster::discovery::defined_kinds(desired)
        .into_iter()
        .find(|k| k.crd.same_object(crd))
        .and_then(|k| {
            Some(ObjectRef {
                group: k.group,
                version: k.served_version?,
                kind: k.kind,
                namespace: None,
                name: String::new(),
            })
        });
    loop {
        let established = match resolver.api(crd).await {
            Ok(api) => api
                .get_opt(&crd.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|live| {
                    let live = serde_json::to_value(live).unwrap_or_default();
                    live.pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|c| {
                            c.get("type").and_then(Value::as_str) == Some("Established")
                                && c.get("status").and_then(Value::as_str) == Some("True")
                        })
                }),
            Err(_) => false,
        };
        let discoverable = match &served {
            Some(kind) => resolver.resolve(kind).await.is_ok(),
            None => true,
        };
        if established && discoverable {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SyncError::CrdNotEstablished {
                name: crd.name.clone(),
                seconds: CRD_ESTABLISHED_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
