//! Apply: carry out a plan with server-side apply, in dependency order, and
//! prune what left git.
//!
//! Guarantees: nothing is applied unless planning (a dry run of every
//! object, with the same ownership rules) succeeded first, which the
//! caller ensures by passing a [`Plan`]. Objects are applied in the order
//! Namespaces, CRDs, ServiceAccounts and RBAC, ConfigMaps and Secrets,
//! Services, workloads, then autoscalers and disruption budgets, so each
//! finds what it refers to. Prunes run only after every apply succeeded,
//! in the reverse order, and only on objects of the inventory that carry
//! this Environment's label ([`crate::cluster::ownership`]): those ferry created
//! are deleted, those it adopted are released, anything else is left
//! alone.

use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use serde_json::Value;

use crate::cluster::discovery::Resolver;
use crate::cluster::drift::Drift;
use crate::cluster::owned::Remembering;
use crate::cluster::ownership::{self, PruneVerdict};
use crate::cluster::plan::{Action, Plan};
use crate::cluster::ssa::{FIELD_MANAGER, managers};
use crate::crd::reason;
use crate::failure::{self, FailureClass};
use ferry_manifests::object::ObjectRef;
use ferry_manifests::order::apply_rank;

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub pruned: usize,
    /// Adopted objects that left git: released, not deleted.
    pub released: usize,
    /// Objects whose hand-edited fields were set back to git's values.
    pub drift: Vec<(ObjectRef, Vec<Drift>)>,
    /// Everything ferry now manages for the environment.
    pub inventory: Vec<ObjectRef>,
}

impl Applied {
    /// Objects the apply changed in the cluster: created, updated, pruned
    /// or released.
    pub fn changes(&self) -> usize {
        self.created + self.updated + self.pruned + self.released
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "{object} is managed by {managers}, who set fields git also sets: {message}; remove the other manager's fields or set force in the Environment"
    )]
    Conflict {
        object: ObjectRef,
        managers: String,
        message: String,
    },
    #[error("failed to apply {object} ({code}): {message}")]
    Rejected {
        object: ObjectRef,
        code: u16,
        message: String,
    },
    #[error("failed to {verb} {object}")]
    Request {
        verb: &'static str,
        object: ObjectRef,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// See [`crate::failure`]: the API server's answer decides.
    pub fn class(&self) -> FailureClass {
        match self {
            ApplyError::Conflict { .. } => FailureClass::Terminal,
            ApplyError::Rejected { code, .. } => failure::of_status(*code),
            ApplyError::Request { source, .. } => failure::of_error(source),
        }
    }

    /// The condition reason it is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::Conflict { .. } => reason::CONFLICT,
            ApplyError::Rejected { code: 403, .. } => reason::FORBIDDEN,
            ApplyError::Request { source, .. } if failure::is_forbidden(source) => {
                reason::FORBIDDEN
            }
            _ if self.class() == FailureClass::Transient => reason::APPLY_FAILED,
            _ => reason::VALIDATION_FAILED,
        }
    }
}

fn request(verb: &'static str, object: &ObjectRef) -> impl FnOnce(kube::Error) -> ApplyError {
    let object = object.clone();
    move |source| ApplyError::Request {
        verb,
        object,
        source,
    }
}

/// Applies `plan`; prunes only when `prune`, and only objects labelled for
/// `owner` (without an owner nothing is pruned). With `remembering`, the
/// cache of owned objects learns what each apply left and forgets what
/// was pruned.
pub async fn apply(
    resolver: &mut Resolver,
    plan: &Plan,
    prune: bool,
    owner: Option<&str>,
    remembering: Option<Remembering<'_>>,
) -> Result<Applied, ApplyError> {
    let mut changes: Vec<_> = plan.changes.iter().collect();
    changes.sort_by_key(|c| (apply_rank(&c.object.kind), c.object.clone()));
    let (prunes, changes): (Vec<_>, Vec<_>) =
        changes.into_iter().partition(|c| c.action == Action::Prune);
    let mut applied = Applied::default();
    for change in &changes {
        let object = &change.object;
        match (change.action, &change.desired) {
            (Action::Create | Action::Update, Some(desired)) => {
                let live = apply_one(resolver, object, desired, change.force).await?;
                if let (Some(r), Some(hash)) = (remembering, change.remember) {
                    r.remember(object, hash, &live);
                }
                if change.action == Action::Create {
                    applied.created += 1;
                } else {
                    applied.updated += 1;
                }
                if !change.drift.is_empty() {
                    applied.drift.push((object.clone(), change.drift.clone()));
                }
            }
            _ => applied.unchanged += 1,
        }
        applied.inventory.push(object.clone());
    }
    for change in prunes.iter().rev() {
        let object = &change.object;
        let Some(owner) = owner.filter(|_| prune) else {
            // Pruning is off: the object stays, and stays in the inventory.
            applied.inventory.push(object.clone());
            continue;
        };
        if let Some(r) = remembering {
            r.cache.forget(r.owner, object);
        }
        match prune_one(resolver, object, owner).await? {
            Pruned::Deleted => applied.pruned += 1,
            Pruned::Released => applied.released += 1,
            Pruned::Gone | Pruned::Skipped => {}
        }
    }
    applied.inventory.sort();
    Ok(applied)
}

/// Server-side applies one object, and returns it as applied; a conflict
/// names the other managers.
async fn apply_one(
    resolver: &mut Resolver,
    object: &ObjectRef,
    desired: &Value,
    force: bool,
) -> Result<Value, ApplyError> {
    let api = resolver
        .api(object)
        .await
        .map_err(request("resolve", object))?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    match api
        .patch(&object.name, &params, &Patch::Apply(desired))
        .await
    {
        Ok(applied) => Ok(serde_json::to_value(applied).unwrap_or_default()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let live = api.get_opt(&object.name).await.ok().flatten();
            let live = live
                .map(|l| serde_json::to_value(l).unwrap_or_default())
                .unwrap_or_default();
            let others: Vec<String> = managers(&live)
                .into_iter()
                .filter(|m| m != FIELD_MANAGER)
                .collect();
            Err(ApplyError::Conflict {
                object: object.clone(),
                managers: others.join(", "),
                message: e.message,
            })
        }
        Err(kube::Error::Api(e)) => Err(ApplyError::Rejected {
            object: object.clone(),
            code: e.code,
            message: e.message,
        }),
        Err(source) => Err(request("apply", object)(source)),
    }
}

/// What pruning one object did.
enum Pruned {
    Deleted,
    Released,
    /// It was gone already.
    Gone,
    /// It no longer carries the owner's label: left alone.
    Skipped,
}

/// Deletes an object that left git when `owner` owns it, releases it when
/// it was adopted, and leaves it alone otherwise.
async fn prune_one(
    resolver: &mut Resolver,
    object: &ObjectRef,
    owner: &str,
) -> Result<Pruned, ApplyError> {
    let api = resolver
        .api(object)
        .await
        .map_err(request("resolve", object))?;
    let Some(live) = api
        .get_opt(&object.name)
        .await
        .map_err(request("read", object))?
    else {
        return Ok(Pruned::Gone);
    };
    let live = serde_json::to_value(live).unwrap_or_default();
    match ownership::prune_verdict(&live, owner) {
        PruneVerdict::Delete => {
            let delete = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match api.delete(&object.name, &delete).await {
                Ok(_) => Ok(Pruned::Deleted),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(Pruned::Gone),
                Err(source) => Err(request("prune", object)(source)),
            }
        }
        PruneVerdict::Release => {
            release(&api, object).await?;
            Ok(Pruned::Released)
        }
        PruneVerdict::Skip => {
            tracing::warn!(%object, "not pruning: it no longer carries this Environment's label");
            Ok(Pruned::Skipped)
        }
    }
}

/// Lets go of an adopted object: removes ferry's label and mark and
/// ferry's managed fields entry, so the fields it set stay as they are
/// and belong to nobody.
pub async fn release(
    api: &kube::Api<kube::api::DynamicObject>,
    object: &ObjectRef,
) -> Result<(), ApplyError> {
    let labels = serde_json::json!({"metadata": {
        "labels": {ownership::ENVIRONMENT_LABEL: null},
        "annotations": {ownership::ADOPTED_ANNOTATION: null},
    }});
    let params = PatchParams {
        field_manager: Some("ferry-release".into()),
        ..PatchParams::default()
    };
    api.patch(&object.name, &params, &Patch::Merge(&labels))
        .await
        .map_err(request("release", object))?;
    let Some(live) = api
        .get_opt(&object.name)
        .await
        .map_err(request("read", object))?
    else {
        return Ok(());
    };
    let entries = serde_json::to_value(&live.metadata.managed_fields).unwrap_or(Value::Null);
    let kept: Vec<Value> = entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let manager = e.get("manager").and_then(Value::as_str);
            manager != Some(FIELD_MANAGER) && manager != Some("ferry-release")
        })
        .cloned()
        .collect();
    if kept.len() != entries.as_array().map_or(0, Vec::len) {
        // An empty list would reset the managed fields to one entry for
        // the patch itself; a single entry of nobody keeps it empty.
        let managed = if kept.is_empty() {
            serde_json::json!([{}])
        } else {
            Value::Array(kept)
        };
        let patch = serde_json::json!({"metadata": {"managedFields": managed}});
        api.patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(request("release", object))?;
    }
    Ok(())
}
