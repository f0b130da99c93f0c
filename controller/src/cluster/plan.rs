//! Plan: what applying the rendered objects would change, object by
//! object, found the way `kubectl diff --server-side` finds it: a
//! server-side dry-run apply of each desired object with ferry's field
//! manager, compared with the live object, both without the fields the
//! server owns.
//!
//! Guarantees: planning writes nothing to the cluster. Every object is
//! dry-run, so a plan that returns `Ok` is one the API server accepted
//! object by object (validation, admission, field ownership); an invalid
//! object fails the whole plan with its name and the file it came from.
//! Secret values never appear in a diff.

use std::collections::BTreeMap;

use ferry_manifests::diff::{normalize, redact_pair, redacted, unified_diff};
use ferry_manifests::object::{ObjectRef, orphans};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::cluster::discovery::{DefinedKind, Resolver, defined_kinds};
use crate::cluster::drift::{self, Drift};
use crate::cluster::owned::Remembering;
use crate::cluster::ownership::{self, Ownership, SsaPolicy};
use crate::cluster::ssa::{FIELD_MANAGER, managers};
use crate::crd::reason;
use crate::failure::{self, FailureClass};

/// What applying does to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Create,
    Update,
    Unchanged,
    /// In ferry's inventory, no longer in git: delete (when pruning is on).
    Prune,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Prune => "prune",
        }
    }
}

/// One object's planned change.
#[derive(Debug, Clone)]
pub struct Change {
    pub object: ObjectRef,
    pub action: Action,
    /// Unified diff of live and desired (YAML, Secret data redacted).
    pub diff: String,
    /// The rendered object (absent for prunes).
    pub desired: Option<Value>,
    /// The API server accepted a dry run of it (false only for objects in
    /// namespaces this plan creates, or of kinds whose CRD it creates).
    pub validated: bool,
    /// Apply taking over fields other managers own: the Environment asks
    /// for it, or the object is already ferry's (drift correction).
    pub force: bool,
    /// Fields git sets that another manager changed (see [`crate::cluster::drift`]).
    pub drift: Vec<Drift>,
    /// The hash the cache of owned objects remembers the desired object
    /// by, once applied ([`crate::cluster::owned`]).
    pub remember: Option<u64>,
}

/// All changes, in the order they would be applied.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Unchanged)
    }

    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the API server does not know {kind} {api_version} (from {origin}); install its CRD or fix apiVersion/kind"
    )]
    UnknownKind {
        api_version: String,
        kind: String,
        origin: String,
        #[source]
        source: kube::Error,
    },
    #[error("{object} (from {origin}) was refused by the API server ({code}): {message}")]
    Invalid {
        object: ObjectRef,
        origin: String,
        code: u16,
        message: String,
    },
    #[error(
        "{object} (from {origin}) has fields git sets that {managers} also set: {message}; remove the other manager's fields or set force in the Environment"
    )]
    Conflict {
        object: ObjectRef,
        origin: String,
        managers: String,
        message: String,
    },
    #[error(
        "{object} (from {origin}) belongs to Environment {owner} (label {label}); two Environments must not render the same object"
    )]
    OwnedElsewhere {
        object: ObjectRef,
        origin: String,
        owner: String,
        label: &'static str,
    },
    #[error("{object} (from {origin}): {message}")]
    Policy {
        object: ObjectRef,
        origin: String,
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

impl PlanError {
    /// Terminal (the manifests or the cluster must change) or transient
    /// (the API server was unavailable): see [`crate::failure`].
    pub fn class(&self) -> FailureClass {
        match self {
            PlanError::Invalid { code, .. } => failure::of_status(*code),
            PlanError::Request { source, .. } => failure::of_error(source),
            _ => FailureClass::Terminal,
        }
    }

    /// The condition reason it is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::Invalid { code: 403, .. } => reason::FORBIDDEN,
            PlanError::Request { source, .. } if failure::is_forbidden(source) => reason::FORBIDDEN,
            PlanError::Conflict { .. } | PlanError::OwnedElsewhere { .. } => reason::CONFLICT,
            _ if self.class() == FailureClass::Transient => reason::APPLY_FAILED,
            _ => reason::VALIDATION_FAILED,
        }
    }
}

/// How to plan: the same rules the apply follows.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions<'a> {
    /// Take over fields other managers own, on every object.
    pub force: bool,
    /// The owning Environment's label value ([`crate::cluster::ownership`]); `None`
    /// for the command line, which neither labels nor checks owners.
    pub owner: Option<&'a str>,
    /// The cache of owned objects, for the controller: an object exactly
    /// as this Environment left it for the same desired object is planned
    /// unchanged without a request.
    pub remembering: Option<Remembering<'a>>,
    /// Namespaces this sync created a moment ago (its first stage, see
    /// [`crate::cluster::sync`]): known to exist, not read again.
    pub created_namespaces: &'a [String],
}

/// Plans `desired` (with the file each came from) against the cluster;
/// objects of `inventory` that left git are planned as prunes.
///
/// An object in a namespace that does not exist yet, or of a kind whose
/// CRD is among the desired objects and not installed yet, cannot be
/// dry-run; it is planned as a create of the rendered object, unvalidated
/// ([`Change::validated`]), so a diff can show it. Syncing creates the
/// namespaces and CRDs first and plans again ([`crate::cluster::sync`]).
///
/// With an owner, every object is labelled for it and checked: an object
/// another Environment owns is a conflict, an object already ferry's is
/// dry-run with force (drift is corrected), any other conflict is
/// reported unless `force`. The dry run uses exactly the ownership rules
/// the apply will use, so a conflict stops the sync before anything
/// changes.
pub async fn plan(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
    inventory: &[ObjectRef],
    options: PlanOptions<'_>,
) -> Result<Plan, PlanError> {
    let context = Planning {
        new_namespaces: missing_namespaces(resolver, desired, options).await?,
        new_kinds: defined_kinds(desired),
        inventory,
        options,
    };
    let mut changes = Vec::new();
    for (object, origin) in desired {
        if let Some(change) = plan_object(resolver, &context, object, origin).await? {
            changes.push(change);
        }
    }
    let kept: Vec<ObjectRef> = desired.iter().map(|(o, _)| ObjectRef::of(o)).collect();
    for gone in orphans(inventory, &kept) {
        if let Some(change) = plan_prune(resolver, gone).await? {
            changes.push(change);
        }
    }
    Ok(Plan { changes })
}

/// What planning each object needs to know about the others.
struct Planning<'a> {
    /// Namespaces a desired Namespace creates and that do not exist yet.
    new_namespaces: Vec<String>,
    /// Kinds the desired CRDs define.
    new_kinds: Vec<DefinedKind>,
    inventory: &'a [ObjectRef],
    options: PlanOptions<'a>,
}

/// A create of the rendered object that the API server could not dry-run
/// yet (its namespace or its CRD comes with the same sync).
fn unvalidated(id: &ObjectRef, object: &Value, options: PlanOptions<'_>) -> Change {
    let object = match options.owner {
        Some(owner) => ownership::stamp(object, owner, &Ownership::Absent),
        None => object.clone(),
    };
    Change {
        object: id.clone(),
        action: Action::Create,
        diff: unified_diff(id, &Value::Null, &redacted(&object)),
        desired: Some(object),
        validated: false,
        force: options.force,
        drift: Vec::new(),
        remember: None,
    }
}

/// The change for one desired object; `None` for an object git says to
/// ignore (`ferry.dev/ssa: Ignore`).
///
/// Longer than most (about 90 lines) on purpose: it is one sequence read
/// top to bottom (discover, read the live object, claim it, honour its
/// SSA policy, dry-run, compare), each step a call or a short match that
/// maps its failure to the `PlanError` naming the object and its file;
/// split further, the error mapping would be scattered.
async fn plan_object(
    resolver: &mut Resolver,
    context: &Planning<'_>,
    object: &Value,
    origin: &str,
) -> Result<Option<Change>, PlanError> {
    let options = context.options;
    let id = ObjectRef::of(object);
    if id.kind != "Namespace"
        && let Some(ns) = &id.namespace
        && context.new_namespaces.contains(ns)
    {
        return Ok(Some(unvalidated(&id, object, options)));
    }
    // Applied by this sync's first stage a moment ago, as desired: the
    // watch may not show it yet, and nothing is left to plan.
    if id.is_namespace() && options.created_namespaces.contains(&id.name) {
        return Ok(Some(unchanged(id, None)));
    }
    let policy = ownership::ssa_policy(object).map_err(|message| PlanError::Policy {
        object: id.clone(),
        origin: origin.to_owned(),
        message,
    })?;
    let api = match resolver.api(&id).await {
        Ok(api) => api,
        Err(e)
            if failure::is_unknown_kind(&e) && context.new_kinds.iter().any(|k| k.defines(&id)) =>
        {
            return Ok(Some(unvalidated(&id, object, options)));
        }
        Err(source) if failure::is_unknown_kind(&source) => {
            return Err(PlanError::UnknownKind {
                api_version: id.api_version(),
                kind: id.kind.clone(),
                origin: origin.to_owned(),
                source,
            });
        }
        Err(source) => {
            return Err(PlanError::Request {
                verb: "discover",
                object: id,
                source,
            });
        }
    };
    let in_inventory = context.inventory.iter().any(|i| i.same_object(&id));
    // Objects left to people after their creation (or never applied) are
    // not remembered.
    let remembering = options
        .remembering
        .filter(|_| policy == SsaPolicy::Override)
        .map(|r| (r, r.cache.desired(object, options.force)));
    if let Some((r, hash)) = remembering
        && let Ok((resource, _)) = resolver.resolve(&id).await
        && r.cache.unchanged(&resource, &id, r.owner, hash)
    {
        return Ok(Some(unchanged(id, Some(hash))));
    }
    // A Namespace found missing a moment ago by this same plan is not
    // read again.
    let live = if id.is_namespace() && context.new_namespaces.contains(&id.name) {
        None
    } else {
        read_live(&api, &id).await?
    };
    let (ownership, object) = claim(object, live.as_ref(), options, in_inventory, &id, origin)?;
    match (policy, &live) {
        (SsaPolicy::Ignore, _) => return Ok(None),
        (SsaPolicy::IfNotPresent, Some(_)) => return Ok(Some(unchanged(id, None))),
        _ => {}
    }
    let force = options.force || matches!(ownership, Ownership::Ours { .. });
    let applied = dry_run(resolver, &api, &id, &object, force, live.as_ref(), origin).await?;
    let drift = match (&ownership, &live) {
        (Ownership::Ours { .. }, Some(live)) => drift::detect(live, &applied),
        _ => Vec::new(),
    };
    let mut after = normalize(applied);
    let mut before = live.clone().map(normalize).unwrap_or(Value::Null);
    redact_pair(&mut before, &mut after);
    let action = match &live {
        None => Action::Create,
        Some(_) if before == after => Action::Unchanged,
        Some(_) => Action::Update,
    };
    let diff = unified_diff(&id, &before, &after);
    if let (Some((r, hash)), Action::Unchanged, Some(live)) = (remembering, action, &live) {
        r.remember(&id, hash, live);
    }
    Ok(Some(Change {
        object: id,
        action,
        diff,
        desired: Some(object),
        validated: true,
        force,
        drift: if action == Action::Update {
            drift
        } else {
            Vec::new()
        },
        remember: remembering.map(|(_, hash)| hash),
    }))
}

/// An object left as it is: `IfNotPresent` and present, or exactly as
/// this Environment left it for the same desired object (`remember`).
fn unchanged(object: ObjectRef, remember: Option<u64>) -> Change {
    Change {
        object,
        action: Action::Unchanged,
        diff: String::new(),
        desired: None,
        validated: true,
        force: false,
        drift: Vec::new(),
        remember,
    }
}

/// Whose the object is now, and the object as ferry applies it (labelled
/// for its owner); one that another Environment owns is a conflict.
// A plan makes at most one PlanError, as the async steps beside this one
// (which the lint does not see): boxing it would buy nothing.
#[allow(clippy::result_large_err)]
fn claim(
    object: &Value,
    live: Option<&Value>,
    options: PlanOptions<'_>,
    in_inventory: bool,
    id: &ObjectRef,
    origin: &str,
) -> Result<(Ownership, Value), PlanError> {
    let Some(owner) = options.owner else {
        return Ok((Ownership::Absent, object.clone()));
    };
    let ownership = ownership::classify(live, owner, in_inventory);
    if let Ownership::Elsewhere(other) = ownership {
        return Err(PlanError::OwnedElsewhere {
            object: id.clone(),
            origin: origin.to_owned(),
            owner: other,
            label: ownership::ENVIRONMENT_LABEL,
        });
    }
    let stamped = ownership::stamp(object, owner, &ownership);
    Ok((ownership, stamped))
}

/// The object as the API server would store it: a server-side dry-run
/// apply, its refusal turned into a [`PlanError`] that names the object,
/// the file and what to do.
async fn dry_run(
    resolver: &mut Resolver,
    api: &Api<DynamicObject>,
    id: &ObjectRef,
    object: &Value,
    force: bool,
    live: Option<&Value>,
    origin: &str,
) -> Result<Value, PlanError> {
    let mut params = PatchParams::apply(FIELD_MANAGER).dry_run();
    params.force = force;
    match api.patch(&id.name, &params, &Patch::Apply(object)).await {
        Ok(applied) => Ok(serde_json::to_value(applied).unwrap_or_default()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let others: Vec<String> = live
                .map(managers)
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m != FIELD_MANAGER)
                .collect();
            Err(PlanError::Conflict {
                object: id.clone(),
                origin: origin.to_owned(),
                managers: if others.is_empty() {
                    "another field manager".into()
                } else {
                    others.join(", ")
                },
                message: e.message,
            })
        }
        Err(kube::Error::Api(e)) => {
            if e.code == 404 {
                // The kind may be gone (a CRD deleted): discover it
                // again next time instead of trusting the cache.
                resolver.forget(id);
            }
            let hint = if e.code == 403 {
                format!("; {}", failure::FORBIDDEN_HINT)
            } else {
                String::new()
            };
            Err(PlanError::Invalid {
                object: id.clone(),
                origin: origin.to_owned(),
                code: e.code,
                message: format!("{}{hint}", e.message),
            })
        }
        Err(source) => Err(PlanError::Request {
            verb: "dry-run",
            object: id.clone(),
            source,
        }),
    }
}

/// The prune of an object that left git, with what it holds now; `None`
/// when it is already gone.
async fn plan_prune(
    resolver: &mut Resolver,
    gone: &ObjectRef,
) -> Result<Option<Change>, PlanError> {
    let live = match resolver.api(gone).await {
        Ok(api) => api
            .get_opt(&gone.name)
            .await
            .map_err(|source| PlanError::Request {
                verb: "read",
                object: gone.clone(),
                source,
            })?,
        // Its kind is gone from the cluster: so is the object.
        Err(e) if failure::is_unknown_kind(&e) => None,
        Err(source) => {
            return Err(PlanError::Request {
                verb: "discover",
                object: gone.clone(),
                source,
            });
        }
    };
    let Some(live) = live else { return Ok(None) };
    let mut before = normalize(serde_json::to_value(live).unwrap_or_default());
    redact_pair(&mut before, &mut Value::Null);
    Ok(Some(Change {
        object: gone.clone(),
        action: Action::Prune,
        diff: unified_diff(gone, &before, &Value::Null),
        desired: None,
        validated: true,
        force: false,
        drift: Vec::new(),
        remember: None,
    }))
}

/// The live object, `None` when it does not exist.
async fn read_live(api: &Api<DynamicObject>, id: &ObjectRef) -> Result<Option<Value>, PlanError> {
    let live = api
        .get_opt(&id.name)
        .await
        .map_err(|source| PlanError::Request {
            verb: "read",
            object: id.clone(),
            source,
        })?;
    Ok(live.map(|o| serde_json::to_value(o).unwrap_or_default()))
}

/// Namespaces that desired objects live in, that are created by a desired
/// Namespace object and do not exist yet (one the cache of owned objects
/// holds, or this sync just created, is not read).
async fn missing_namespaces(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
    options: PlanOptions<'_>,
) -> Result<Vec<String>, PlanError> {
    let mut missing = Vec::new();
    for (object, _) in desired {
        let id = ObjectRef::of(object);
        if !id.is_namespace() || options.created_namespaces.contains(&id.name) {
            continue;
        }
        let api = resolver
            .api(&id)
            .await
            .map_err(|source| PlanError::Request {
                verb: "discover",
                object: id.clone(),
                source,
            })?;
        if let Some(r) = options.remembering
            && let Ok((resource, _)) = resolver.resolve(&id).await
            && r.cache.exists(&resource, &id)
        {
            continue;
        }
        if read_live(&api, &id).await?.is_none() {
            missing.push(id.name.clone());
        }
    }
    Ok(missing)
}

/// Counts per action, for messages: `2 created, 1 updated, 4 unchanged`.
pub fn summary(plan: &Plan) -> String {
    let mut counts: BTreeMap<Action, usize> = BTreeMap::new();
    for c in &plan.changes {
        *counts.entry(c.action).or_default() += 1;
    }
    let words = |a: Action| match a {
        Action::Create => "to create",
        Action::Update => "to update",
        Action::Unchanged => "unchanged",
        Action::Prune => "to prune",
    };
    counts
        .iter()
        .map(|(a, n)| format!("{n} {}", words(*a)))
        .collect::<Vec<_>>()
        .join(", ")
}
