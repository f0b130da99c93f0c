//! The objects ferry owns, as the cluster has them now: one watch per kind
//! (every object carrying ferry's owner label, in all namespaces), started
//! when an Environment first plans an object of that kind, shared by all
//! Environments, and stopped when no Environment applies that kind any
//! more. It holds a fingerprint per object, not the object: an owner and a
//! 64-bit hash of what a hand edit can change (the object without its
//! status and the fields the server keeps for itself).
//!
//! What it answers: whether an object is exactly as ferry left it, so that
//! planning the same desired object again needs no request at all (no GET,
//! no dry run); and, when an owned object changes or goes, which
//! Environment to wake so that a hand edit is reverted at once instead of
//! at the next interval; and, while a release is judged, when the status
//! of one of its objects changes, so that the look that finds it Healthy
//! (or failed) comes as soon as the cluster says so, not at the next
//! poll.
//!
//! Guarantees: an answer is "unchanged" only while the kind's watch is in
//! sync (listed, not failing) and the object's owner label, uid and
//! content match what ferry remembered for that exact desired object at
//! its last plan or apply; anything else (a kind being listed, a watch
//! failing or refused by RBAC, an object never seen, an edit, a new commit)
//! sends the object down the full path: read, dry-run, compare. So the
//! cache can make a reconcile cheaper, never make it miss a change it
//! would otherwise see.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::cluster::ownership::ENVIRONMENT_LABEL;
use ferry_manifests::diff::normalize;
use ferry_manifests::object::ObjectRef;

/// A kind, as discovery names it: group, version, kind.
type Kind = (String, String, String);
/// An object of a kind: namespace (none for cluster-scoped) and name.
type Place = (Option<String>, String);

/// An Environment, by namespace and name: whom a change wakes.
pub type Woken = (String, String);

/// Hand edits come in bursts (a `kubectl scale`, then a `kubectl edit` a
/// moment later): an Environment is woken this long after the first
/// change, once, so that one reconcile sets them all back and one Event
/// names them all.
pub const WAKE_AFTER: Duration = Duration::from_millis(1500);

/// A judged release's Environment is woken this long after a status
/// change of one of its objects: a workload's controller writes its
/// status several times in a row, and one look covers them.
pub const STATUS_WAKE_AFTER: Duration = Duration::from_millis(200);

/// Annotations the cluster's own controllers write on objects ferry
/// applies, right after each apply: not a hand edit, and not a field git
/// sets, so not part of a fingerprint (each would wake the Environment
/// and cost a read after every release).
const WRITTEN_BY_THE_CLUSTER: &[&str] = &["deployment.kubernetes.io/revision"];

/// A kind the controller may not list is asked again this long after,
/// not at every plan (its RBAC may have been granted meanwhile).
const REFUSED_FOR: Duration = Duration::from_secs(600);

/// What ferry remembers of an object it planned or applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// The desired object (as rendered, with the apply's options).
    desired: u64,
    /// The live object right after (see [`OwnedObjects::fingerprint`]).
    live: u64,
}

/// One owned object in a kind's watch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    owner: String,
    fingerprint: u64,
    /// The status and the generation, hashed: what health reads.
    status: u64,
}

#[derive(Default)]
struct KindState {
    /// Listed and watching: absent objects are absent, present ones as
    /// they are now.
    synced: bool,
    /// When the API server refused to list the kind (403).
    refused_at: Option<std::time::Instant>,
    objects: HashMap<Place, Entry>,
    /// The listing in progress (after a watch restart).
    listing: Option<HashMap<Place, Entry>>,
}

struct KindWatch {
    state: Arc<Mutex<KindState>>,
    task: JoinHandle<()>,
}

struct Shared {
    client: Client,
    hasher: RandomState,
    kinds: Mutex<HashMap<Kind, KindWatch>>,
    /// By owner label value, then object.
    memory: Mutex<HashMap<String, HashMap<ObjectRef, Seen>>>,
    /// Owner label value to Environment.
    environments: Mutex<HashMap<String, Woken>>,
    wake: mpsc::UnboundedSender<Woken>,
    /// The object whose change woke an Environment, until its reconcile
    /// takes it.
    changes: Mutex<HashMap<Woken, String>>,
    /// Environments to be woken at the end of their [`WAKE_AFTER`].
    pending: Mutex<std::collections::HashSet<Woken>>,
    /// Environments whose release is being judged: a status change of
    /// one of their objects wakes them.
    judging: Mutex<std::collections::HashSet<Woken>>,
}

/// The watch-fed fingerprints of owned objects, shared by all reconciles
/// (cheap to clone).
#[derive(Clone)]
pub struct OwnedObjects {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OwnedObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kinds, objects) = self.size();
        write!(f, "OwnedObjects({kinds} kinds, {objects} objects)")
    }
}

/// One Environment's use of the cache: what its plans consult and its
/// plans and applies remember.
#[derive(Debug, Clone, Copy)]
pub struct Remembering<'a> {
    pub cache: &'a OwnedObjects,
    pub environment: &'a Woken,
    /// Its owner label value ([`crate::cluster::ownership::owner_id`]).
    pub owner: &'a str,
}

impl Remembering<'_> {
    /// See [`OwnedObjects::remember`].
    pub fn remember(&self, object: &ObjectRef, desired: u64, live: &Value) {
        self.cache
            .remember(self.environment, self.owner, object, desired, live);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn kind_of(object: &ObjectRef) -> Kind {
    (
        object.group.clone(),
        object.version.clone(),
        object.kind.clone(),
    )
}

fn place_of(object: &ObjectRef) -> Place {
    (object.namespace.clone(), object.name.clone())
}

impl OwnedObjects {
    /// The cache, reading with `client`, and the stream of Environments
    /// to wake (one item per change of an owned object that ferry did not
    /// make).
    pub fn new(client: Client) -> (OwnedObjects, mpsc::UnboundedReceiver<Woken>) {
        let (wake, woken) = mpsc::unbounded();
        let shared = Shared {
            client,
            hasher: RandomState::new(),
            kinds: Mutex::default(),
            memory: Mutex::default(),
            environments: Mutex::default(),
            wake,
            changes: Mutex::default(),
            pending: Mutex::default(),
            judging: Mutex::default(),
        };
        let owned = OwnedObjects {
            shared: Arc::new(shared),
        };
        (owned, woken)
    }

    /// What can change in `live` by hand, hashed: the object without its
    /// status, apiVersion and kind (list items lack them), the fields the
    /// server sets for itself (resourceVersion, managedFields, generation)
    /// and the annotations its controllers write, with its uid (deleted
    /// and created again is a change).
    /// Takes the object, so the watch's events are not copied again.
    fn fingerprint(&self, live: Value) -> u64 {
        let uid = live
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut object = normalize(live);
        if let Some(map) = object.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                for key in WRITTEN_BY_THE_CLUSTER {
                    annotations.remove(*key);
                }
            }
            // None left is the same as none at all.
            if metadata
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(|a| a.is_empty())
            {
                metadata.remove("annotations");
            }
        }
        let bytes = serde_json::to_vec(&object).unwrap_or_default();
        self.shared.hasher.hash_one((bytes, uid))
    }

    /// The hash of a desired object with what else decides its apply.
    /// (Whether it is in the inventory does not: an answer from the cache
    /// needs the object labelled for its Environment, which decides alone.)
    pub fn desired(&self, object: &Value, force: bool) -> u64 {
        let bytes = serde_json::to_vec(object).unwrap_or_default();
        self.shared.hasher.hash_one((bytes, force))
    }

    /// Whether `object` of Environment `owner` is exactly as ferry left it
    /// when it last planned or applied `desired` there; starts the watch
    /// of its kind when there is none.
    pub fn unchanged(
        &self,
        resource: &ApiResource,
        object: &ObjectRef,
        owner: &str,
        desired: u64,
    ) -> bool {
        let Some(entry) = self.entry(resource, object) else {
            return false;
        };
        let memory = lock(&self.shared.memory);
        let seen = memory.get(owner).and_then(|m| m.get(object));
        entry.owner == owner
            && seen
                == Some(&Seen {
                    desired,
                    live: entry.fingerprint,
                })
    }

    /// Whether the cache knows `object` exists (owned by any Environment);
    /// `false` says nothing: not every object is owned.
    pub fn exists(&self, resource: &ApiResource, object: &ObjectRef) -> bool {
        self.entry(resource, object).is_some()
    }

    fn entry(&self, resource: &ApiResource, object: &ObjectRef) -> Option<Entry> {
        let state = self.watch(resource, object);
        let state = lock(&state);
        if !state.synced {
            return None;
        }
        state.objects.get(&place_of(object)).cloned()
    }

    /// Remembers that `object` of Environment `environment` (whose owner
    /// label value is `owner`) was planned or applied from `desired` and
    /// is `live` now.
    pub fn remember(
        &self,
        environment: &Woken,
        owner: &str,
        object: &ObjectRef,
        desired: u64,
        live: &Value,
    ) {
        let seen = Seen {
            desired,
            live: self.fingerprint(live.clone()),
        };
        lock(&self.shared.environments).insert(owner.to_owned(), environment.clone());
        lock(&self.shared.memory)
            .entry(owner.to_owned())
            .or_default()
            .insert(object.clone(), seen);
    }

    /// Forgets what was remembered of `object` (pruned, released, or
    /// failed to apply); stops its kind's watch when nothing else of that
    /// kind is remembered.
    pub fn forget(&self, owner: &str, object: &ObjectRef) {
        if let Some(objects) = lock(&self.shared.memory).get_mut(owner) {
            objects.remove(object);
        }
        self.stop_unused();
    }

    /// Forgets an Environment (deleted) and everything it applied.
    pub fn forget_environment(&self, owner: &str) {
        lock(&self.shared.memory).remove(owner);
        if let Some(environment) = lock(&self.shared.environments).remove(owner) {
            lock(&self.shared.judging).remove(&environment);
        }
        self.stop_unused();
    }

    /// Whether `environment` has a release being judged now: while it
    /// has, a status change of an object it applied wakes it
    /// [`STATUS_WAKE_AFTER`] later.
    pub fn judging(&self, environment: &Woken, judging: bool) {
        let mut set = lock(&self.shared.judging);
        if judging {
            set.insert(environment.clone());
        } else {
            set.remove(environment);
        }
    }

    /// The object whose change woke `environment`, once: the trigger its
    /// reconcile records.
    pub fn take_change(&self, environment: &Woken) -> Option<String> {
        lock(&self.shared.changes).remove(environment)
    }

    /// Kinds watched now, and objects in their caches.
    pub fn size(&self) -> (usize, usize) {
        let kinds = lock(&self.shared.kinds);
        let objects = kinds.values().map(|k| lock(&k.state).objects.len()).sum();
        (kinds.len(), objects)
    }

    fn stop_unused(&self) {
        let used: std::collections::HashSet<Kind> = lock(&self.shared.memory)
            .values()
            .flat_map(|objects| objects.keys().map(kind_of))
            .collect();
        lock(&self.shared.kinds).retain(|kind, watch| {
            let keep = used.contains(kind);
            if !keep {
                tracing::debug!(kind = ?kind, "no Environment applies this kind any more; its watch stops");
                watch.task.abort();
            }
            keep
        });
    }

    /// The state of `object`'s kind, its watch started if need be.
    fn watch(&self, resource: &ApiResource, object: &ObjectRef) -> Arc<Mutex<KindState>> {
        let kind = kind_of(object);
        let mut kinds = lock(&self.shared.kinds);
        if let Some(watch) = kinds.get(&kind) {
            let refused = lock(&watch.state)
                .refused_at
                .is_some_and(|at| at.elapsed() < REFUSED_FOR);
            if refused || !watch.task.is_finished() {
                return watch.state.clone();
            }
        }
        let state = Arc::new(Mutex::new(KindState::default()));
        let api: Api<DynamicObject> = Api::all_with(self.shared.client.clone(), resource);
        let task = tokio::spawn(feed(
            api,
            kind.clone(),
            state.clone(),
            Arc::downgrade(&self.shared),
        ));
        tracing::debug!(kind = ?kind, "watching the owned objects of a kind");
        kinds.insert(
            kind,
            KindWatch {
                state: state.clone(),
                task,
            },
        );
        state
    }
}

/// Keeps `state` in step with the watch of `api`'s owned objects, and
/// wakes the owner of each object that changed other than as ferry left
/// it. Ends when the controller may not list the kind (every object of
/// it then takes the full path) or the cache is gone.
async fn feed(
    api: Api<DynamicObject>,
    kind: Kind,
    state: Arc<Mutex<KindState>>,
    shared: std::sync::Weak<Shared>,
) {
    let config = watcher::Config::default().labels(ENVIRONMENT_LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let owned = OwnedObjects { shared };
        let mut current = lock(&state);
        let state = &mut *current;
        match event {
            Ok(watcher::Event::Init) => state.listing = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(object)) => {
                let (place, entry) = owned.entry_of(&object);
                state.listing.get_or_insert_default().insert(place, entry);
            }
            Ok(watcher::Event::InitDone) => {
                let listed = state.listing.take().unwrap_or_default();
                let before = std::mem::replace(&mut state.objects, listed);
                state.synced = true;
                let mut places: Vec<&Place> = before.keys().chain(state.objects.keys()).collect();
                places.sort();
                places.dedup();
                for place in places {
                    owned.changed(&kind, place, before.get(place), state.objects.get(place));
                }
            }
            Ok(watcher::Event::Apply(object)) => {
                let (place, entry) = owned.entry_of(&object);
                let old = state.objects.insert(place.clone(), entry.clone());
                owned.changed(&kind, &place, old.as_ref(), Some(&entry));
            }
            Ok(watcher::Event::Delete(object)) => {
                let (place, _) = owned.entry_of(&object);
                let old = state.objects.remove(&place);
                owned.changed(&kind, &place, old.as_ref(), None);
            }
            Err(e) => {
                state.synced = false;
                let refused = matches!(&e, watcher::Error::InitialListFailed(kube::Error::Api(s))
                    | watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 403);
                if refused {
                    state.refused_at = Some(std::time::Instant::now());
                    tracing::info!(kind = ?kind, error = %e, "the controller may not list this kind: its objects are read one by one at each plan (grant list and watch in environments/controller/rbac.yaml to spare the requests)");
                    return;
                }
                tracing::debug!(kind = ?kind, error = %e, "the watch of owned objects failed; planning reads them until it recovers");
            }
        }
    }
}

impl OwnedObjects {
    fn entry_of(&self, object: &DynamicObject) -> (Place, Entry) {
        let place = (object.namespace(), object.name_any());
        let owner = object
            .labels()
            .get(ENVIRONMENT_LABEL)
            .cloned()
            .unwrap_or_default();
        let live = serde_json::to_value(object).unwrap_or_default();
        let status = self.status_of(&live);
        let entry = Entry {
            owner,
            fingerprint: self.fingerprint(live),
            status,
        };
        (place, entry)
    }

    /// What health reads of `live` that a hand edit does not change (its
    /// status, and the generation its controller compares), hashed.
    fn status_of(&self, live: &Value) -> u64 {
        let status = serde_json::to_vec(live.get("status").unwrap_or(&Value::Null));
        let generation = live.pointer("/metadata/generation").and_then(Value::as_i64);
        self.shared
            .hasher
            .hash_one((status.unwrap_or_default(), generation))
    }

    /// Wakes the Environment that remembers the object at `place` when it
    /// is no longer as that Environment left it: edited, relabelled or
    /// deleted by someone else. A change ferry made itself matches what
    /// it remembered, and wakes no one. A change of status alone wakes
    /// the owner only while its release is judged.
    fn changed(&self, kind: &Kind, place: &Place, before: Option<&Entry>, after: Option<&Entry>) {
        if before == after {
            return;
        }
        if let (Some(b), Some(a)) = (before, after)
            && (&b.owner, b.fingerprint) == (&a.owner, a.fingerprint)
        {
            self.status_changed(&a.owner);
            return;
        }
        let object = ObjectRef {
            group: kind.0.clone(),
            version: kind.1.clone(),
            kind: kind.2.clone(),
            namespace: place.0.clone(),
            name: place.1.clone(),
        };
        let owners = [before, after].into_iter().flatten().map(|e| &e.owner);
        let memory = lock(&self.shared.memory);
        let environments = lock(&self.shared.environments);
        for owner in owners {
            let Some(seen) = memory.get(owner).and_then(|m| m.get(&object)) else {
                continue;
            };
            let as_left = after.is_some_and(|a| &a.owner == owner && a.fingerprint == seen.live);
            if let Some(environment) = environments.get(owner).filter(|_| !as_left) {
                self.wake(environment, &object);
            }
        }
    }

    /// Wakes the Environment of `owner` when its release is being judged.
    fn status_changed(&self, owner: &str) {
        let Some(environment) = lock(&self.shared.environments).get(owner).cloned() else {
            return;
        };
        if lock(&self.shared.judging).contains(&environment) {
            self.wake_after(&environment, STATUS_WAKE_AFTER);
        }
    }

    /// Wakes `environment` [`WAKE_AFTER`] from now, unless it is to be
    /// woken already; `object` is the first change of the burst.
    fn wake(&self, environment: &Woken, object: &ObjectRef) {
        tracing::debug!(%object, environment = %format!("{}/{}", environment.0, environment.1), "an owned object changed: waking its Environment");
        lock(&self.shared.changes)
            .entry(environment.clone())
            .or_insert_with(|| object.to_string());
        self.wake_after(environment, WAKE_AFTER);
    }

    /// Wakes `environment` `delay` from now, unless it is to be woken
    /// already.
    fn wake_after(&self, environment: &Woken, delay: Duration) {
        if !lock(&self.shared.pending).insert(environment.clone()) {
            return;
        }
        let (shared, environment) = (self.shared.clone(), environment.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lock(&shared.pending).remove(&environment);
            let _ = shared.wake.unbounded_send(environment);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cache() -> OwnedObjects {
        // A client is needed to build one; no request is made here.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        OwnedObjects::new(client).0
    }

    fn deployment(replicas: i64, resource_version: &str, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "a", "uid": "u-1",
                            "resourceVersion": resource_version, "generation": 3,
                            "labels": {ENVIRONMENT_LABEL: "sys.dev"},
                            "managedFields": [{"manager": "ferry"}]},
               "spec": {"replicas": replicas}, "status": status})
    }

    #[tokio::test]
    async fn a_fingerprint_changes_with_an_edit_not_with_status_or_bookkeeping() {
        let owned = cache();
        let base = owned.fingerprint(deployment(2, "10", json!({})));
        assert_eq!(
            base,
            owned.fingerprint(deployment(2, "11", json!({"readyReplicas": 2})))
        );
        assert_ne!(base, owned.fingerprint(deployment(3, "12", json!({}))));
        let mut listed = deployment(2, "13", json!({}));
        listed.as_object_mut().unwrap().remove("kind");
        listed.as_object_mut().unwrap().remove("apiVersion");
        assert_eq!(base, owned.fingerprint(listed), "list items lack kind");
        let mut again = deployment(2, "14", json!({}));
        again["metadata"]["uid"] = "u-2".into();
        assert_ne!(base, owned.fingerprint(again), "deleted and made again");
        let mut revised = deployment(2, "15", json!({}));
        revised["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "2"});
        assert_eq!(base, owned.fingerprint(revised), "the cluster's own mark");
        let mut labelled = deployment(2, "15", json!({}));
        labelled["metadata"]["labels"][ENVIRONMENT_LABEL] = "sys.prod".into();
        assert_ne!(base, owned.fingerprint(labelled));
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_change_ferry_did_not_make_wakes_its_environment() {
        let (owned, mut woken) = {
            let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
            OwnedObjects::new(Client::try_from(config).unwrap())
        };
        // What was woken once WAKE_AFTER has passed.
        async fn settled(woken: &mut mpsc::UnboundedReceiver<Woken>) -> Vec<Woken> {
            tokio::time::sleep(WAKE_AFTER * 2).await;
            std::iter::from_fn(|| woken.try_recv().ok()).collect()
        }
        let kind: Kind = ("apps".into(), "v1".into(), "Deployment".into());
        let place: Place = (Some("a".into()), "web".into());
        let object = ObjectRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("a".into()),
            name: "web".into(),
        };
        let environment: Woken = ("sys".into(), "dev".into());
        let applied = deployment(2, "10", json!({}));
        owned.remember(&environment, "sys.dev", &object, 7, &applied);
        let entry = |v: &Value| Entry {
            owner: "sys.dev".into(),
            fingerprint: owned.fingerprint(v.clone()),
            status: owned.status_of(v),
        };
        // ferry's own apply, seen by the watch, then a status update:
        // nobody is woken.
        owned.changed(&kind, &place, None, Some(&entry(&applied)));
        let status_only = deployment(2, "11", json!({"replicas": 2}));
        owned.changed(
            &kind,
            &place,
            Some(&entry(&applied)),
            Some(&entry(&status_only)),
        );
        assert!(settled(&mut woken).await.is_empty());
        // While its release is judged, a status update wakes it soon.
        owned.judging(&environment, true);
        let ready = deployment(2, "11", json!({"replicas": 2, "readyReplicas": 2}));
        owned.changed(
            &kind,
            &place,
            Some(&entry(&status_only)),
            Some(&entry(&ready)),
        );
        tokio::time::sleep(STATUS_WAKE_AFTER * 2).await;
        assert_eq!(woken.try_recv().ok(), Some(environment.clone()));
        assert_eq!(owned.take_change(&environment), None, "not a hand edit");
        owned.judging(&environment, false);
        owned.changed(
            &kind,
            &place,
            Some(&entry(&ready)),
            Some(&entry(&status_only)),
        );
        assert!(settled(&mut woken).await.is_empty(), "judged: no more");
        // kubectl scale, twice in a burst: woken once, after WAKE_AFTER.
        let scaled = deployment(5, "12", json!({}));
        owned.changed(&kind, &place, Some(&entry(&applied)), Some(&entry(&scaled)));
        assert!(woken.try_recv().is_err(), "not before WAKE_AFTER");
        let again = deployment(6, "13", json!({}));
        owned.changed(&kind, &place, Some(&entry(&scaled)), Some(&entry(&again)));
        assert_eq!(settled(&mut woken).await, vec![environment.clone()]);
        assert_eq!(
            owned.take_change(&environment).as_deref(),
            Some("Deployment.apps a/web")
        );
        assert_eq!(owned.take_change(&environment), None);
        // Deleted: woken.
        owned.changed(&kind, &place, Some(&entry(&applied)), None);
        assert_eq!(settled(&mut woken).await, vec![environment.clone()]);
        // An object it never applied: nobody.
        let other: Place = (Some("a".into()), "other".into());
        owned.changed(&kind, &other, None, Some(&entry(&applied)));
        assert!(settled(&mut woken).await.is_empty());
        // Forgotten (pruned): nobody.
        owned.forget("sys.dev", &object);
        owned.changed(&kind, &place, Some(&entry(&applied)), None);
        assert!(settled(&mut woken).await.is_empty());
    }

    #[tokio::test]
    async fn nothing_is_unchanged_before_its_kind_is_listed() {
        let owned = cache();
        let object = ObjectRef {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("a".into()),
            name: "c".into(),
        };
        let resource = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        owned.remember(
            &("sys".into(), "dev".into()),
            "sys.dev",
            &object,
            1,
            &json!({}),
        );
        assert!(!owned.unchanged(&resource, &object, "sys.dev", 1));
        assert!(!owned.exists(&resource, &object));
        assert_eq!(owned.size().0, 1, "its watch was started");
        owned.forget("sys.dev", &object);
        assert_eq!(owned.size().0, 0, "and stopped when unused");
    }
}
