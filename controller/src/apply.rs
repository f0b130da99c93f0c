//! Apply: carry out a plan with server-side apply, in dependency order, and
//! prune what left git.
//!
//! Guarantees: nothing is applied unless planning (a dry run of every
//! object) succeeded first, which the caller ensures by passing a [`Plan`].
//! Objects are applied in the order Namespaces, CRDs, ServiceAccounts and
//! RBAC, ConfigMaps and Secrets, Services, workloads, then autoscalers and
//! disruption budgets, so each finds what it refers to. Field ownership
//! conflicts are reported, not overridden, unless `force`. Pruning deletes
//! only objects of ferry's inventory that ferry still manages (its field
//! manager is on the live object); it never deletes anything else.

use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use serde_json::Value;

use crate::inventory::ObjectRef;
use crate::plan::{Action, FIELD_MANAGER, Plan, Resolver};

/// Position of a kind in the apply order; unknown kinds (custom
/// resources) go after workloads and before autoscalers.
pub fn apply_rank(kind: &str) -> usize {
    const ORDER: [&[&str]; 8] = [
        &["Namespace"],
        &["CustomResourceDefinition"],
        &[
            "ServiceAccount",
            "ClusterRole",
            "Role",
            "ClusterRoleBinding",
            "RoleBinding",
        ],
        &[
            "ConfigMap",
            "Secret",
            "PersistentVolumeClaim",
            "LimitRange",
            "ResourceQuota",
            "NetworkPolicy",
        ],
        &["Service"],
        &[
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "Pod",
        ],
        &[],
        &["HorizontalPodAutoscaler", "PodDisruptionBudget"],
    ];
    ORDER
        .iter()
        .position(|group| group.contains(&kind))
        .unwrap_or(6)
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub pruned: usize,
    /// Everything ferry now manages for the environment.
    pub inventory: Vec<ObjectRef>,
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
    #[error("failed to apply {object}: {message}")]
    Rejected { object: ObjectRef, message: String },
    #[error("failed to {verb} {object}")]
    Request {
        verb: &'static str,
        object: ObjectRef,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Conflicts and rejections need a change in git or the cluster;
    /// request failures may pass on retry.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, ApplyError::Request { .. })
    }
}

fn managers(live: &Value) -> Vec<String> {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("manager").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// Applies `plan`; prunes only when `prune`.
pub async fn apply(
    resolver: &mut Resolver,
    plan: &Plan,
    force: bool,
    prune: bool,
) -> Result<Applied, ApplyError> {
    let mut changes: Vec<_> = plan.changes.iter().collect();
    changes.sort_by_key(|c| (apply_rank(&c.object.kind), c.object.clone()));
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = force;
    let mut applied = Applied::default();
    for change in &changes {
        let object = &change.object;
        let api = resolver
            .api(object)
            .await
            .map_err(|source| ApplyError::Request {
                verb: "resolve",
                object: object.clone(),
                source,
            })?;
        match (change.action, &change.desired) {
            (Action::Unchanged, _) => {
                applied.unchanged += 1;
                applied.inventory.push(object.clone());
            }
            (Action::Create | Action::Update, Some(desired)) => {
                match api
                    .patch(&object.name, &params, &Patch::Apply(desired))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        let live = api.get_opt(&object.name).await.ok().flatten();
                        let live = live
                            .map(|l| serde_json::to_value(l).unwrap_or_default())
                            .unwrap_or_default();
                        let others: Vec<String> = managers(&live)
                            .into_iter()
                            .filter(|m| m != FIELD_MANAGER)
                            .collect();
                        return Err(ApplyError::Conflict {
                            object: object.clone(),
                            managers: others.join(", "),
                            message: e.message,
                        });
                    }
                    Err(kube::Error::Api(e)) => {
                        return Err(ApplyError::Rejected {
                            object: object.clone(),
                            message: e.message,
                        });
                    }
                    Err(source) => {
                        return Err(ApplyError::Request {
                            verb: "apply",
                            object: object.clone(),
                            source,
                        });
                    }
                }
                if change.action == Action::Create {
                    applied.created += 1;
                } else {
                    applied.updated += 1;
                }
                applied.inventory.push(object.clone());
            }
            (Action::Prune, _) if prune => {
                let live =
                    api.get_opt(&object.name)
                        .await
                        .map_err(|source| ApplyError::Request {
                            verb: "read",
                            object: object.clone(),
                            source,
                        })?;
                let Some(live) = live else { continue };
                let live = serde_json::to_value(live).unwrap_or_default();
                if !managers(&live).iter().any(|m| m == FIELD_MANAGER) {
                    tracing::warn!(%object, "not pruning: ferry no longer manages it");
                    continue;
                }
                let delete = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                match api.delete(&object.name, &delete).await {
                    Ok(_) => applied.pruned += 1,
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::Request {
                            verb: "prune",
                            object: object.clone(),
                            source,
                        });
                    }
                }
            }
            // Pruning is off: the object stays, and stays in the inventory.
            (Action::Prune, _) => applied.inventory.push(object.clone()),
            (Action::Create | Action::Update, None) => {}
        }
    }
    applied.inventory.sort();
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::apply_rank;

    #[test]
    fn dependency_order() {
        let kinds = [
            "PodDisruptionBudget",
            "Deployment",
            "Service",
            "ConfigMap",
            "RoleBinding",
            "CustomResourceDefinition",
            "Namespace",
            "Widget",
        ];
        let mut sorted = kinds.to_vec();
        sorted.sort_by_key(|k| apply_rank(k));
        assert_eq!(
            sorted,
            [
                "Namespace",
                "CustomResourceDefinition",
                "RoleBinding",
                "ConfigMap",
                "Service",
                "Deployment",
                "Widget",
                "PodDisruptionBudget"
            ]
        );
    }
}
