//! When an Environment is deleted: what it applied is deleted (owned
//! objects) or released (adopted ones) in reverse dependency order, or,
//! with `prune: false`, left in place.

use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::cluster::apply;
use crate::cluster::discovery::Resolver;
use crate::cluster::plan::{Action as PlanAction, Change, Plan};
use crate::crd::Environment;

use super::context::{Context, client_for, owner_of};
use super::error::ReconcileError;

/// Deletes (or releases) what the Environment applied; with
/// `prune: false` leaves it all in place.
pub async fn cleanup(env: &Environment, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any());
    let inventory = env
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    if !env.spec.prune {
        tracing::info!(
            objects = inventory.len(),
            "Environment deleted with prune: false; orphaning what it applied"
        );
        return Ok(Action::await_change());
    }
    let client = client_for(ctx, env).map_err(|message| ReconcileError::Cleanup {
        name: name.clone(),
        message,
    })?;
    let mut resolver = Resolver::shared(client, ctx.discovery.clone());
    let plan = Plan {
        changes: inventory
            .iter()
            .map(|object| Change {
                object: object.clone(),
                action: PlanAction::Prune,
                diff: String::new(),
                desired: None,
                validated: true,
                force: false,
                drift: Vec::new(),
                remember: None,
            })
            .collect(),
    };
    let owner = owner_of(env);
    ctx.owned.forget_environment(&owner);
    let applied = apply::apply(&mut resolver, &plan, true, Some(&owner), None)
        .await
        .map_err(|e| ReconcileError::Cleanup {
            name: name.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(
        pruned = applied.pruned,
        released = applied.released,
        "Environment deleted; removed what it applied"
    );
    Ok(Action::await_change())
}
