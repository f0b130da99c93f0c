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

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope, pinned_kind};
use serde_json::Value;

use crate::drift::{self, Drift};
use crate::environment::reason;
use crate::failure::{self, FailureClass};
use crate::inventory::{ObjectRef, orphans};
use crate::ownership::{self, Ownership, SsaPolicy};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "ferry";

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
    /// Fields git sets that another manager changed (see [`crate::drift`]).
    pub drift: Vec<Drift>,
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
    /// The owning Environment's label value ([`crate::ownership`]); `None`
    /// for the command line, which neither labels nor checks owners.
    pub owner: Option<&'a str>,
}

type Resolved = (ApiResource, ApiCapabilities);
type KindKey = (String, String, String);

/// Discovery shared by reconciles: what a kind resolved to, and when.
pub type DiscoveryCache = std::sync::Arc<std::sync::Mutex<HashMap<KindKey, (Resolved, Instant)>>>;

/// How long a shared discovery answer is trusted; a kind that is not
/// found is never cached, so a new CRD is seen at once.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Resolves kinds to API resources, once per kind (and, with a shared
/// cache, once per [`DISCOVERY_TTL`] across reconciles).
pub struct Resolver {
    client: Client,
    cache: HashMap<KindKey, Resolved>,
    shared: Option<DiscoveryCache>,
}

impl Resolver {
    pub fn new(client: Client) -> Self {
        Resolver {
            client,
            cache: HashMap::new(),
            shared: None,
        }
    }

    /// A resolver that reads and fills `shared`.
    pub fn shared(client: Client, shared: DiscoveryCache) -> Self {
        Resolver {
            shared: Some(shared),
            ..Resolver::new(client)
        }
    }

    /// Forgets `object`'s kind (after the API said it is not there).
    pub fn forget(&mut self, object: &ObjectRef) {
        let key = (
            object.group.clone(),
            object.version.clone(),
            object.kind.clone(),
        );
        self.cache.remove(&key);
        if let Some(mut shared) = self.shared.as_ref().and_then(|s| s.lock().ok()) {
            shared.remove(&key);
        }
    }

    pub async fn resolve(
        &mut self,
        object: &ObjectRef,
    ) -> Result<(ApiResource, ApiCapabilities), kube::Error> {
        let key = (
            object.group.clone(),
            object.version.clone(),
            object.kind.clone(),
        );
        if let Some(found) = self.cache.get(&key) {
            return Ok(found.clone());
        }
        let fresh = self.shared.as_ref().and_then(|shared| {
            let shared = shared.lock().ok()?;
            let (found, at) = shared.get(&key)?;
            (at.elapsed() < DISCOVERY_TTL).then(|| found.clone())
        });
        if let Some(found) = fresh {
            self.cache.insert(key, found.clone());
            return Ok(found);
        }
        let gvk = GroupVersionKind::gvk(&object.group, &object.version, &object.kind);
        let found = pinned_kind(&self.client, &gvk).await?;
        if let Some(mut shared) = self.shared.as_ref().and_then(|s| s.lock().ok()) {
            shared.insert(key.clone(), (found.clone(), Instant::now()));
        }
        self.cache.insert(key, found.clone());
        Ok(found)
    }

    /// The dynamic API for an object (namespaced or cluster-scoped).
    pub async fn api(&mut self, object: &ObjectRef) -> Result<Api<DynamicObject>, kube::Error> {
        let (resource, capabilities) = self.resolve(object).await?;
        Ok(match (capabilities.scope, &object.namespace) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            (Scope::Namespaced, None) => {
                Api::default_namespaced_with(self.client.clone(), &resource)
            }
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &resource),
        })
    }
}

/// Drops what the server owns, so live and desired compare on what git says.
pub fn normalize(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
            "selfLink",
        ] {
            meta.remove(key);
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    object
}

/// Replaces Secret values with markers that show whether a value changed.
pub fn redact_pair(live: &mut Value, desired: &mut Value) {
    let is_secret = |v: &Value| v.get("kind").and_then(Value::as_str) == Some("Secret");
    if !is_secret(live) && !is_secret(desired) {
        return;
    }
    for field in ["data", "stringData"] {
        let live_values = live
            .get(field)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Object(map)) = desired.get_mut(field) {
            for (key, value) in map.iter_mut() {
                let same = live_values.get(key) == Some(value);
                *value = Value::String(
                    if same {
                        "<redacted>"
                    } else {
                        "<redacted, changed>"
                    }
                    .into(),
                );
            }
        }
        if let Some(Value::Object(map)) = live.get_mut(field) {
            for value in map.values_mut() {
                *value = Value::String("<redacted>".into());
            }
        }
    }
    // The last-applied annotation of client-side apply would carry the values too.
    for object in [live, desired] {
        if let Some(Value::Object(a)) = object.pointer_mut("/metadata/annotations") {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

fn to_yaml(value: &Value) -> String {
    if value.is_null() {
        String::new()
    } else {
        crate::render::yaml::to_string(value)
    }
}

/// A unified diff between live and desired YAML, empty when equal.
pub fn unified_diff(object: &ObjectRef, live: &Value, desired: &Value) -> String {
    unified_diff_labeled(object, live, desired, "live", "git")
}

/// A unified diff between two objects' YAML with the given side labels.
pub fn unified_diff_labeled(
    object: &ObjectRef,
    a: &Value,
    b: &Value,
    left: &str,
    right: &str,
) -> String {
    let (a, b) = (to_yaml(a), to_yaml(b));
    if a == b {
        return String::new();
    }
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{left}/{object}"), &format!("{right}/{object}"))
        .to_string()
}

/// Plans `desired` (with the file each came from) against the cluster;
/// objects of `inventory` that left git are planned as prunes.
///
/// An object in a namespace that does not exist yet, or of a kind whose
/// CRD is among the desired objects and not installed yet, cannot be
/// dry-run; it is planned as a create of the rendered object, unvalidated
/// ([`Change::validated`]), so a diff can show it. Syncing creates the
/// namespaces and CRDs first and plans again ([`crate::sync`]).
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
    let mut changes = Vec::new();
    let mut kept = Vec::new();
    let new_namespaces = missing_namespaces(resolver, desired).await?;
    let new_kinds = defined_kinds(desired);
    for (object, origin) in desired {
        let id = ObjectRef::of(object);
        kept.push(id.clone());
        let unvalidated = |object: &Value| {
            let object = match options.owner {
                Some(owner) => ownership::stamp(object, owner, &Ownership::Absent),
                None => object.clone(),
            };
            Change {
                object: id.clone(),
                action: Action::Create,
                diff: unified_diff(&id, &Value::Null, &redacted(&object)),
                desired: Some(object),
                validated: false,
                force: options.force,
                drift: Vec::new(),
            }
        };
        if id.kind != "Namespace"
            && let Some(ns) = &id.namespace
            && new_namespaces.contains(ns)
        {
            changes.push(unvalidated(object));
            continue;
        }
        let policy = ownership::ssa_policy(object).map_err(|message| PlanError::Policy {
            object: id.clone(),
            origin: origin.clone(),
            message,
        })?;
        let api = match resolver.api(&id).await {
            Ok(api) => api,
            Err(e) if failure::is_unknown_kind(&e) && new_kinds.iter().any(|k| k.defines(&id)) => {
                changes.push(unvalidated(object));
                continue;
            }
            Err(source) if failure::is_unknown_kind(&source) => {
                return Err(PlanError::UnknownKind {
                    api_version: id.api_version(),
                    kind: id.kind.clone(),
                    origin: origin.clone(),
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
        let live = read_live(&api, &id).await?;
        let in_inventory = inventory.iter().any(|i| i.same_object(&id));
        let (ownership, object) = match options.owner {
            Some(owner) => {
                let ownership = ownership::classify(live.as_ref(), owner, in_inventory);
                if let Ownership::Elsewhere(other) = ownership {
                    return Err(PlanError::OwnedElsewhere {
                        object: id,
                        origin: origin.clone(),
                        owner: other,
                        label: ownership::ENVIRONMENT_LABEL,
                    });
                }
                let stamped = ownership::stamp(object, owner, &ownership);
                (ownership, stamped)
            }
            None => (Ownership::Absent, object.clone()),
        };
        match (policy, &live) {
            (SsaPolicy::Ignore, _) => continue,
            (SsaPolicy::IfNotPresent, Some(_)) => {
                changes.push(Change {
                    object: id,
                    action: Action::Unchanged,
                    diff: String::new(),
                    desired: None,
                    validated: true,
                    force: false,
                    drift: Vec::new(),
                });
                continue;
            }
            _ => {}
        }
        let force = options.force || matches!(ownership, Ownership::Ours { .. });
        let mut dry_run = PatchParams::apply(FIELD_MANAGER).dry_run();
        dry_run.force = force;
        let applied = match api.patch(&id.name, &dry_run, &Patch::Apply(&object)).await {
            Ok(applied) => serde_json::to_value(applied).unwrap_or_default(),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let others: Vec<String> = live
                    .as_ref()
                    .map(managers)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| m != FIELD_MANAGER)
                    .collect();
                return Err(PlanError::Conflict {
                    object: id,
                    origin: origin.clone(),
                    managers: if others.is_empty() {
                        "another field manager".into()
                    } else {
                        others.join(", ")
                    },
                    message: e.message,
                });
            }
            Err(kube::Error::Api(e)) => {
                if e.code == 404 {
                    // The kind may be gone (a CRD deleted): discover it
                    // again next time instead of trusting the cache.
                    resolver.forget(&id);
                }
                let hint = if e.code == 403 {
                    format!("; {}", failure::FORBIDDEN_HINT)
                } else {
                    String::new()
                };
                return Err(PlanError::Invalid {
                    object: id,
                    origin: origin.clone(),
                    code: e.code,
                    message: format!("{}{hint}", e.message),
                });
            }
            Err(source) => {
                return Err(PlanError::Request {
                    verb: "dry-run",
                    object: id,
                    source,
                });
            }
        };
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
        changes.push(Change {
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
        });
    }
    for gone in orphans(inventory, &kept) {
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
        // Already gone: nothing to prune.
        let Some(live) = live else { continue };
        let mut before = normalize(serde_json::to_value(live).unwrap_or_default());
        redact_pair(&mut before, &mut Value::Null);
        let diff = unified_diff(gone, &before, &Value::Null);
        changes.push(Change {
            object: gone.clone(),
            action: Action::Prune,
            diff,
            desired: None,
            validated: true,
            force: false,
            drift: Vec::new(),
        });
    }
    Ok(Plan { changes })
}

/// Field managers of a live object.
pub fn managers(live: &Value) -> Vec<String> {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("manager").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// A kind that a desired CustomResourceDefinition defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinedKind {
    /// The CRD itself.
    pub crd: ObjectRef,
    pub group: String,
    pub kind: String,
    pub namespaced: bool,
    /// A version the CRD serves, to address its resources.
    pub served_version: Option<String>,
}

impl DefinedKind {
    /// Whether `object` is of this kind.
    pub fn defines(&self, object: &ObjectRef) -> bool {
        self.group == object.group && self.kind == object.kind
    }
}

/// The kinds the desired CRDs define (CRDs missing group or kind define
/// none; the API server refuses them in the dry run).
pub fn defined_kinds(desired: &[(Value, String)]) -> Vec<DefinedKind> {
    desired
        .iter()
        .filter(|(o, _)| ObjectRef::of(o).kind == "CustomResourceDefinition")
        .filter_map(|(o, _)| {
            let text = |pointer: &str| o.pointer(pointer).and_then(Value::as_str);
            let served_version = o
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|v| v.get("served").and_then(Value::as_bool) == Some(true))
                .and_then(|v| v.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            Some(DefinedKind {
                crd: ObjectRef::of(o),
                group: text("/spec/group")?.to_owned(),
                kind: text("/spec/names/kind")?.to_owned(),
                namespaced: text("/spec/scope") != Some("Cluster"),
                served_version,
            })
        })
        .collect()
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

/// A copy with Secret values redacted, for diffs of new objects.
fn redacted(object: &Value) -> Value {
    let mut copy = object.clone();
    redact_pair(&mut Value::Null, &mut copy);
    copy
}

/// Namespaces that desired objects live in, that are created by a desired
/// Namespace object and do not exist yet.
async fn missing_namespaces(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
) -> Result<Vec<String>, PlanError> {
    let mut missing = Vec::new();
    for (object, _) in desired {
        let id = ObjectRef::of(object);
        if id.kind != "Namespace" || !id.group.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_drops_server_fields() {
        let live = json!({"metadata": {"name": "a", "uid": "x", "resourceVersion": "9", "managedFields": [], "labels": {"k": "v"}},
                          "spec": {"x": 1}, "status": {"ready": true}});
        assert_eq!(
            normalize(live),
            json!({"metadata": {"name": "a", "labels": {"k": "v"}}, "spec": {"x": 1}})
        );
    }

    #[test]
    fn secrets_are_redacted_but_changes_show() {
        let mut live = json!({"kind": "Secret", "data": {"a": "MQ==", "b": "Mg=="}});
        let mut desired = json!({"kind": "Secret", "data": {"a": "MQ==", "b": "Mw=="}});
        redact_pair(&mut live, &mut desired);
        assert_eq!(live["data"], json!({"a": "<redacted>", "b": "<redacted>"}));
        assert_eq!(
            desired["data"],
            json!({"a": "<redacted>", "b": "<redacted, changed>"})
        );
        let id = ObjectRef::of(
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
        );
        let diff = unified_diff(&id, &live, &desired);
        assert!(
            diff.contains("+  b: \"<redacted, changed>\"") && !diff.contains("Mw=="),
            "{diff}"
        );
    }

    #[test]
    fn equal_objects_have_no_diff() {
        let id = ObjectRef::of(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        );
        let v = json!({"data": {"a": "1"}});
        assert_eq!(unified_diff(&id, &v, &v), "");
        assert!(unified_diff(&id, &v, &json!({"data": {"a": "2"}})).contains("-  a: \"1\""));
    }
}
