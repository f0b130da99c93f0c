//! Discovery: which API resource serves a kind, and whether it is
//! namespaced, cached per resolver and (shared) across reconciles; and
//! the kinds a revision defines itself with its own CRDs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_manifests::object::ObjectRef;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope, pinned_kind};
use serde_json::Value;

use crate::cluster::target::Scope as Placement;

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

/// Each desired object's scope, from discovery or, for kinds the revision
/// itself defines, from its CRD.
pub async fn scopes(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
) -> Result<Vec<(ObjectRef, Placement)>, kube::Error> {
    let crds = defined_kinds(desired);
    let mut out = Vec::new();
    for (object, _) in desired {
        let id = ObjectRef::of(object);
        match resolver.resolve(&id).await {
            Ok((_, capabilities)) => {
                let scope = match capabilities.scope {
                    Scope::Cluster => Placement::Cluster,
                    Scope::Namespaced => Placement::Namespaced,
                };
                out.push((id, scope));
            }
            Err(e) if crate::failure::is_unknown_kind(&e) => {
                if let Some(defined) = crds.iter().find(|k| k.defines(&id)) {
                    let scope = if defined.namespaced {
                        Placement::Namespaced
                    } else {
                        Placement::Cluster
                    };
                    out.push((id, scope));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
