//! Health: is the release that was just applied healthy, still on its
//! way, or failed? A pure function of what was read from the cluster (the
//! applied objects, the ReplicaSets and pods of their namespaces) and the
//! time, so every rule is unit-tested on recorded objects.
//!
//! Rules per kind follow kstatus (sigs.k8s.io/cli-utils), which is
//! stricter than `kubectl rollout status`:
//! - Deployment: observed generation caught up; updated, ready and
//!   available replicas equal the desired count; no old replicas left;
//!   `ProgressDeadlineExceeded` is a failure.
//! - StatefulSet: observed generation; ready and updated replicas equal
//!   the desired count; the current revision is the update revision
//!   (`OnDelete`: observed is enough; a `partition`: the pods above it
//!   updated).
//! - DaemonSet: observed generation; updated, ready and available pods
//!   equal the desired number scheduled.
//! - Job: `Complete` is healthy, `Failed` a failure.
//! - PersistentVolumeClaim: `Bound`. Service of type LoadBalancer: an
//!   ingress address.
//! - Custom resources: observed generation (status and condition);
//!   `Ready=True` healthy, `Stalled=True` failed, `Ready` otherwise
//!   progressing, no conditions healthy.
//! - Everything else: healthy once applied.
//!
//! Guarantees: it fails fast on evidence instead of waiting out the
//! deadline, taken only from pods of the generation being judged: a pod
//! of the new revision in `CrashLoopBackOff` with at least
//! [`CRASH_RESTARTS`] restarts, or waiting in an image or configuration
//! error for [`STUCK_FOR`], is a failure at once. Malformed objects never
//! panic (they count as progressing until the deadline).

use std::time::Duration;

use serde_json::Value;

use ferry_manifests::object::ObjectRef;

/// Restarts after which a crash-looping pod fails the release.
pub const CRASH_RESTARTS: i64 = 2;
/// How long a pod may wait in an image or configuration error.
pub const STUCK_FOR: Duration = Duration::from_secs(30);
/// Waiting reasons that fail the release after [`STUCK_FOR`].
const STUCK_REASONS: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// The health of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectHealth {
    Healthy,
    /// What it waits for: `web: 1 of 2 updated replicas available`.
    Progressing(String),
    Failed(String),
}

/// One pod's part of the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvidence {
    pub pod: String,
    pub container: String,
    /// `CrashLoopBackOff`, `ImagePullBackOff`, ... or `Running`.
    pub reason: String,
    pub restarts: i64,
    pub message: String,
}

/// Why a release failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `Deployment.apps placement-dev/recruitment-rank-app`.
    pub object: String,
    /// One line: what failed.
    pub summary: String,
    pub pods: Vec<PodEvidence>,
}

/// The verdict on a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// What is still awaited, one entry per object.
    Progressing(Vec<String>),
    Failed(Evidence),
}

fn int(value: &Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn conditions(value: &Value) -> impl Iterator<Item = &Value> {
    value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The condition of type `kind` in an object's `status.conditions`.
pub fn condition<'a>(value: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions(value).find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Whether the object's controller has seen its current generation
/// (objects without one have nothing to catch up). Until it has, a
/// workload's newest pods are the previous release's.
pub fn generation_caught_up(object: &Value) -> bool {
    match (
        int(object, "/metadata/generation"),
        int(object, "/status/observedGeneration"),
    ) {
        (Some(generation), Some(observed)) => observed >= generation,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

fn name(object: &Value) -> &str {
    text(object, "/metadata/name").unwrap_or("")
}

fn deployment(object: &Value) -> ObjectHealth {
    let n = name(object);
    if let Some(c) = condition(object, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        let message = c.get("message").and_then(Value::as_str).unwrap_or("");
        return ObjectHealth::Failed(format!("{n}: progress deadline exceeded: {message}"));
    }
    if !generation_caught_up(object) {
        return ObjectHealth::Progressing(format!("{n}: the new generation is not observed yet"));
    }
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let total = int(object, "/status/replicas").unwrap_or(0);
    let updated = int(object, "/status/updatedReplicas").unwrap_or(0);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    let available = int(object, "/status/availableReplicas").unwrap_or(0);
    if updated < desired {
        return ObjectHealth::Progressing(format!("{n}: {updated} of {desired} replicas updated"));
    }
    if total > updated {
        return ObjectHealth::Progressing(format!(
            "{n}: {} old replicas still running",
            total - updated
        ));
    }
    if ready < desired || available < desired {
        return ObjectHealth::Progressing(format!(
            "{n}: {} of {desired} updated replicas available",
            available.min(ready)
        ));
    }
    ObjectHealth::Healthy
}

fn stateful_set(object: &Value) -> ObjectHealth {
    let n = name(object);
    if !generation_caught_up(object) {
        return ObjectHealth::Progressing(format!("{n}: the new generation is not observed yet"));
    }
    let desired = int(object, "/spec/replicas").unwrap_or(1);
    let ready = int(object, "/status/readyReplicas").unwrap_or(0);
    let updated = int(object, "/status/updatedReplicas").unwrap_or(0);
    // As kstatus: with `OnDelete` pods change only when deleted, so the
    // roll-out is done once observed; with a partition, once the pods at
    // and above it are updated.
    if text(object, "/spec/updateStrategy/type") == Some("OnDelete") {
        return ObjectHealth::Healthy;
    }
    let partition = int(object, "/spec/updateStrategy/rollingUpdate/partition").unwrap_or(0);
    if partition > 0 {
        let expected = desired.saturating_sub(partition).max(0);
        if updated < expected {
            return ObjectHealth::Progressing(format!(
                "{n}: {updated} of {expected} replicas above the partition updated"
            ));
        }
        return ObjectHealth::Healthy;
    }
    let current = text(object, "/status/currentRevision");
    let update = text(object, "/status/updateRevision");
    if updated < desired || (update.is_some() && current != update) {
        return ObjectHealth::Progressing(format!("{n}: {updated} of {desired} replicas updated"));
    }
    if ready < desired {
        return ObjectHealth::Progressing(format!("{n}: {ready} of {desired} replicas ready"));
    }
    ObjectHealth::Healthy
}

fn daemon_set(object: &Value) -> ObjectHealth {
    let n = name(object);
    if !generation_caught_up(object) {
        return ObjectHealth::Progressing(format!("{n}: the new generation is not observed yet"));
    }
    let desired = int(object, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int(object, "/status/updatedNumberScheduled").unwrap_or(0);
    let ready = int(object, "/status/numberReady").unwrap_or(0);
    let available = int(object, "/status/numberAvailable").unwrap_or(0);
    if updated < desired || ready < desired || available < desired {
        return ObjectHealth::Progressing(format!(
            "{n}: {} of {desired} pods updated and available",
            updated.min(ready).min(available)
        ));
    }
    ObjectHealth::Healthy
}

fn is_true(c: Option<&Value>) -> bool {
    c.and_then(|c| c.get("status")).and_then(Value::as_str) == Some("True")
}

fn job(object: &Value) -> ObjectHealth {
    let n = name(object);
    if is_true(condition(object, "Failed")) {
        let message = condition(object, "Failed")
            .and_then(|c| c.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        return ObjectHealth::Failed(format!("{n}: the Job failed: {message}"));
    }
    if is_true(condition(object, "Complete")) {
        return ObjectHealth::Healthy;
    }
    ObjectHealth::Progressing(format!("{n}: the Job has not completed"))
}

fn custom(object: &Value) -> ObjectHealth {
    let n = name(object);
    // As kstatus: conditions speak of the generation their controller
    // observed; before it caught up they say nothing about this one (a
    // resource that reports no observed generation is taken as it is).
    let generation = int(object, "/metadata/generation");
    if let (Some(g), Some(seen)) = (generation, int(object, "/status/observedGeneration"))
        && seen < g
    {
        return ObjectHealth::Progressing(format!("{n}: the new generation is not observed yet"));
    }
    let stale = |c: &Value| {
        matches!(
            (c.get("observedGeneration").and_then(Value::as_i64), generation),
            (Some(seen), Some(g)) if seen < g
        )
    };
    if let Some(c) = condition(object, "Stalled").filter(|c| is_true(Some(c)) && !stale(c)) {
        let message = c.get("message").and_then(Value::as_str).unwrap_or("");
        return ObjectHealth::Failed(format!("{n}: Stalled: {message}"));
    }
    match condition(object, "Ready") {
        None => ObjectHealth::Healthy,
        Some(c) if stale(c) => {
            ObjectHealth::Progressing(format!("{n}: Ready speaks of an older generation"))
        }
        Some(c) if is_true(Some(c)) => ObjectHealth::Healthy,
        Some(c) => {
            let message = c.get("message").and_then(Value::as_str).unwrap_or("");
            ObjectHealth::Progressing(format!("{n}: not Ready: {message}"))
        }
    }
}

/// Whether [`object_health`] can find an object of this kind anything but
/// Healthy: the others (ConfigMaps, ServiceAccounts, Ingresses, RBAC...)
/// are Healthy whatever they hold, so a look at a release need not read
/// them.
pub fn judged_by_state(id: &ObjectRef) -> bool {
    match (id.group.as_str(), id.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => true,
        ("", "PersistentVolumeClaim" | "Service") => true,
        (group, _) => {
            !group.is_empty()
                && !group.ends_with(".k8s.io")
                && !matches!(group, "apps" | "batch" | "policy" | "autoscaling")
        }
    }
}

/// The health of one live object, by kind.
pub fn object_health(object: &Value) -> ObjectHealth {
    let id = ObjectRef::of(object);
    match (id.group.as_str(), id.kind.as_str()) {
        ("apps", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        ("", "PersistentVolumeClaim") => match text(object, "/status/phase") {
            Some("Bound") => ObjectHealth::Healthy,
            phase => ObjectHealth::Progressing(format!(
                "{}: {} (not Bound)",
                name(object),
                phase.unwrap_or("Pending")
            )),
        },
        ("", "Service") if text(object, "/spec/type") == Some("LoadBalancer") => {
            let has_ingress = object
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .is_some_and(|i| !i.is_empty());
            if has_ingress {
                ObjectHealth::Healthy
            } else {
                ObjectHealth::Progressing(format!("{}: no load balancer address yet", name(object)))
            }
        }
        (group, _)
            if !group.is_empty()
                && !group.ends_with(".k8s.io")
                && !matches!(group, "apps" | "batch" | "policy" | "autoscaling") =>
        {
            custom(object)
        }
        _ => ObjectHealth::Healthy,
    }
}

fn label<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn owned_by(object: &Value, owner_uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
}

/// Every pod of a workload, of any revision: owned by it, or (for a
/// Deployment) by one of its ReplicaSets.
pub fn all_pods<'a>(
    workload: &Value,
    replica_sets: &'a [Value],
    pods: &'a [Value],
) -> Vec<&'a Value> {
    let namespace = text(workload, "/metadata/namespace");
    let in_namespace = |o: &&Value| text(o, "/metadata/namespace") == namespace;
    let uid = text(workload, "/metadata/uid").unwrap_or("");
    let owners: Vec<&str> = std::iter::once(uid)
        .chain(
            replica_sets
                .iter()
                .filter(in_namespace)
                .filter(|rs| owned_by(rs, uid))
                .filter_map(|rs| text(rs, "/metadata/uid")),
        )
        .collect();
    pods.iter()
        .filter(in_namespace)
        .filter(|p| owners.iter().any(|o| owned_by(p, o)))
        .collect()
}

/// The pods of a workload's current revision: for a Deployment, those of
/// its ReplicaSet with the highest revision; for a StatefulSet, its pods
/// of `status.updateRevision` (`controller-revision-hash`); for a
/// DaemonSet, its pods of its generation (`pod-template-generation`).
/// Pods are matched by owner, so a selector's form does not matter.
pub fn new_pods<'a>(
    workload: &Value,
    replica_sets: &'a [Value],
    pods: &'a [Value],
) -> Vec<&'a Value> {
    let namespace = text(workload, "/metadata/namespace");
    let in_namespace = |o: &&Value| text(o, "/metadata/namespace") == namespace;
    let uid = text(workload, "/metadata/uid").unwrap_or("");
    let owned = pods
        .iter()
        .filter(in_namespace)
        .filter(|p| owned_by(p, uid));
    match ObjectRef::of(workload).kind.as_str() {
        "Deployment" => {
            let revision = |rs: &Value| {
                text(
                    rs,
                    "/metadata/annotations/deployment.kubernetes.io~1revision",
                )
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
            };
            let newest = replica_sets
                .iter()
                .filter(in_namespace)
                .filter(|rs| owned_by(rs, uid))
                .max_by_key(|rs| revision(rs));
            let Some(newest) = newest else {
                return Vec::new();
            };
            let rs_uid = text(newest, "/metadata/uid").unwrap_or("");
            pods.iter()
                .filter(in_namespace)
                .filter(|p| owned_by(p, rs_uid))
                .collect()
        }
        "StatefulSet" => {
            let update = text(workload, "/status/updateRevision");
            owned
                .filter(|p| update.is_none() || label(p, "controller-revision-hash") == update)
                .collect()
        }
        "DaemonSet" => {
            let generation = int(workload, "/metadata/generation").map(|g| g.to_string());
            owned
                .filter(|p| {
                    generation.is_none()
                        || label(p, "pod-template-generation") == generation.as_deref()
                })
                .collect()
        }
        _ => owned.collect(),
    }
}

/// Seconds since the epoch of an RFC 3339 time, as the API writes them.
pub fn seconds(time: &str) -> Option<i64> {
    time.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// What one pod says about the release: a failure (crash loop, image or
/// configuration error held too long), or its state as evidence.
pub fn pod_evidence(pod: &Value, since: i64, now: i64) -> (bool, Vec<PodEvidence>) {
    let pod_name = name(pod).to_owned();
    let created = text(pod, "/metadata/creationTimestamp")
        .and_then(seconds)
        .unwrap_or(since);
    let waiting_since = created.max(since);
    let mut failed = false;
    let mut evidence = Vec::new();
    for list in ["initContainerStatuses", "containerStatuses"] {
        let statuses = pod
            .pointer(&format!("/status/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for status in statuses {
            let restarts = status
                .get("restartCount")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let container = status
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let waiting = status.pointer("/state/waiting");
            let reason = waiting
                .and_then(|w| w.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or(if status.pointer("/state/running").is_some() {
                    "Running"
                } else {
                    ""
                })
                .to_owned();
            let mut message = waiting
                .and_then(|w| w.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(terminated) = status.pointer("/lastState/terminated") {
                let code = terminated
                    .get("exitCode")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let why = terminated
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                message = format!("{message} (last exit {code} {why})")
                    .trim()
                    .to_owned();
            }
            let crash_loop = reason == "CrashLoopBackOff" && restarts >= CRASH_RESTARTS;
            let stuck = STUCK_REASONS.contains(&reason.as_str())
                && now - waiting_since >= STUCK_FOR.as_secs() as i64;
            failed |= crash_loop || stuck;
            if reason != "Running" || restarts > 0 {
                evidence.push(PodEvidence {
                    pod: pod_name.clone(),
                    container,
                    reason,
                    restarts,
                    message,
                });
            }
        }
    }
    (failed, evidence)
}

/// The verdict on a release from its live objects, the ReplicaSets and
/// pods of their namespaces, the time its apply ended (`since`) and now
/// (seconds since the epoch), under `timeout`.
pub fn assess(
    objects: &[Value],
    replica_sets: &[Value],
    pods: &[Value],
    since: i64,
    now: i64,
    timeout: Duration,
) -> Verdict {
    let mut waiting = Vec::new();
    for object in objects {
        let id = ObjectRef::of(object).to_string();
        let workload = matches!(
            ObjectRef::of(object).kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        );
        // Until the workload's controller has seen this generation, its
        // newest pods are the previous release's: no evidence from them.
        let evidence_pods: Vec<PodEvidence> = if workload && generation_caught_up(object) {
            let mut failed = false;
            let mut evidence = Vec::new();
            for pod in new_pods(object, replica_sets, pods) {
                let (f, e) = pod_evidence(pod, since, now);
                failed |= f;
                evidence.extend(e);
            }
            if failed {
                let worst = evidence
                    .iter()
                    .find(|e| {
                        e.reason == "CrashLoopBackOff" || STUCK_REASONS.contains(&e.reason.as_str())
                    })
                    .map(|e| format!("{} in {} ({} restarts)", e.pod, e.reason, e.restarts))
                    .unwrap_or_default();
                return Verdict::Failed(Evidence {
                    object: id,
                    summary: format!("pods of the new revision are failing: {worst}"),
                    pods: evidence,
                });
            }
            evidence
        } else {
            Vec::new()
        };
        match object_health(object) {
            ObjectHealth::Healthy => {}
            ObjectHealth::Failed(summary) => {
                return Verdict::Failed(Evidence {
                    object: id,
                    summary,
                    pods: evidence_pods,
                });
            }
            ObjectHealth::Progressing(what) => {
                if now - since >= timeout.as_secs() as i64 {
                    return Verdict::Failed(Evidence {
                        object: id,
                        summary: format!("not healthy within {} s: {what}", timeout.as_secs()),
                        pods: evidence_pods,
                    });
                }
                waiting.push(what);
            }
        }
    }
    if waiting.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Progressing(waiting)
    }
}

#[cfg(test)]
mod tests {
    mod not_judged_by_state {
        use super::super::*;
        use proptest::prelude::*;

        fn kinds() -> impl Strategy<Value = (String, String)> {
            let groups = [
                "",
                "apps",
                "batch",
                "policy",
                "autoscaling",
                "networking.k8s.io",
                "rbac.authorization.k8s.io",
                "example.com",
                "ferry.dev",
            ];
            let kinds = [
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "Job",
                "CronJob",
                "Service",
                "PersistentVolumeClaim",
                "ConfigMap",
                "Namespace",
                "Ingress",
                "Role",
                "Widget",
            ];
            (
                prop::sample::select(groups.to_vec()),
                prop::sample::select(kinds.to_vec()),
            )
                .prop_map(|(g, k)| (g.to_owned(), k.to_owned()))
        }

        fn states() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                "[A-Za-z]{0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map(
                        prop::sample::select(vec![
                            "type",
                            "status",
                            "conditions",
                            "phase",
                            "loadBalancer",
                            "ingress",
                            "replicas",
                            "observedGeneration"
                        ]),
                        inner,
                        0..4,
                    )
                    .prop_map(|m| Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                    )),
                ]
            })
        }

        proptest! {
            /// A look may leave out what this says is not judged by its
            /// state: whatever such an object holds, it is Healthy.
            #[test]
            fn an_object_not_judged_by_state_is_healthy_whatever_it_holds(
                (group, kind) in kinds(), spec in states(), status in states(),
            ) {
                let api_version = if group.is_empty() { "v1".to_owned() } else { format!("{group}/v1") };
                let object = serde_json::json!({"apiVersion": api_version, "kind": kind,
                    "metadata": {"name": "x", "namespace": "n", "generation": 2},
                    "spec": spec, "status": status});
                if !judged_by_state(&ObjectRef::of(&object)) {
                    prop_assert_eq!(object_health(&object), ObjectHealth::Healthy);
                }
            }
        }
    }

    use super::*;
    use serde_json::json;

    const T0: i64 = 1_800_000_000;

    fn deployment(replicas: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "dev", "uid": "d1", "generation": 2},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
               "status": status})
    }

    fn rs(uid: &str, revision: &str) -> Value {
        json!({"metadata": {"name": format!("web-{uid}"), "namespace": "dev", "uid": uid,
               "annotations": {"deployment.kubernetes.io/revision": revision},
               "ownerReferences": [{"uid": "d1"}]}})
    }

    fn pod(name: &str, rs_uid: &str, status: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "dev", "labels": {"app": "web"},
               "creationTimestamp": "2027-01-15T08:00:00Z", "ownerReferences": [{"uid": rs_uid}]},
               "status": status})
    }

    fn waiting(reason: &str, restarts: i64) -> Value {
        json!({"containerStatuses": [{"name": "app", "restartCount": restarts, "state": {"waiting": {"reason": reason, "message": "back-off"}},
               "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]})
    }

    #[test]
    fn a_deployment_is_healthy_only_when_every_replica_is_new_ready_and_available() {
        let done = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(object_health(&deployment(2, done)), ObjectHealth::Healthy);
        for (status, expected) in [
            (
                json!({"observedGeneration": 1}),
                "web: the new generation is not observed yet",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2}),
                "web: 1 of 2 replicas updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3}),
                "web: 1 old replicas still running",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}),
                "web: 1 of 2 updated replicas available",
            ),
        ] {
            assert_eq!(
                object_health(&deployment(2, status)),
                ObjectHealth::Progressing(expected.into())
            );
        }
        let deadline = json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet web-2 has timed out"}]});
        assert!(
            matches!(object_health(&deployment(2, deadline)), ObjectHealth::Failed(m) if m.contains("progress deadline"))
        );
    }

    #[test]
    fn other_kinds_follow_kstatus() {
        let job = |c: &str| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "status": {"conditions": [{"type": c, "status": "True"}]}});
        assert_eq!(object_health(&job("Complete")), ObjectHealth::Healthy);
        assert!(matches!(
            object_health(&job("Failed")),
            ObjectHealth::Failed(_)
        ));
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p"}, "status": {"phase": "Pending"}});
        assert!(matches!(object_health(&pvc), ObjectHealth::Progressing(_)));
        let lb = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert!(matches!(object_health(&lb), ObjectHealth::Progressing(_)));
        let cr = |c: Value| json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "status": {"conditions": c}});
        assert_eq!(
            object_health(&cr(json!([{"type": "Ready", "status": "True"}]))),
            ObjectHealth::Healthy
        );
        assert!(matches!(
            object_health(&cr(json!([{"type": "Stalled", "status": "True"}]))),
            ObjectHealth::Failed(_)
        ));
        assert!(matches!(
            object_health(&cr(json!([{"type": "Ready", "status": "False"}]))),
            ObjectHealth::Progressing(_)
        ));
        let ss = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "generation": 1}, "spec": {"replicas": 1},
                        "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"}});
        assert!(matches!(object_health(&ss), ObjectHealth::Progressing(_)));
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"},
                        "status": {"desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberReady": 2, "numberAvailable": 2}});
        assert_eq!(object_health(&ds), ObjectHealth::Healthy);
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        assert_eq!(object_health(&cm), ObjectHealth::Healthy);
    }

    #[test]
    fn a_crash_loop_of_the_new_revision_fails_at_once_with_evidence() {
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2}),
        );
        let sets = [rs("old", "1"), rs("new", "2")];
        let running = json!({"containerStatuses": [{"name": "app", "restartCount": 0, "state": {"running": {}}}]});
        let pods = [
            pod("web-old-a", "old", running.clone()),
            pod("web-new-a", "new", waiting("CrashLoopBackOff", 2)),
        ];
        let verdict = assess(
            std::slice::from_ref(&d),
            &sets,
            &pods,
            T0,
            T0 + 5,
            Duration::from_secs(300),
        );
        let Verdict::Failed(evidence) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(evidence.object, "Deployment.apps dev/web");
        assert_eq!(evidence.pods.len(), 1);
        assert_eq!(
            (evidence.pods[0].pod.as_str(), evidence.pods[0].restarts),
            ("web-new-a", 2)
        );
        assert!(
            evidence.pods[0].message.contains("last exit 3"),
            "{evidence:?}"
        );
        // One restart is not yet a crash loop; old pods never count.
        let pods = [
            pod("web-old-a", "old", waiting("CrashLoopBackOff", 9)),
            pod("web-new-a", "new", waiting("CrashLoopBackOff", 1)),
        ];
        assert!(matches!(
            assess(&[d], &sets, &pods, T0, T0 + 5, Duration::from_secs(300)),
            Verdict::Progressing(_)
        ));
    }

    /// The review's finding: before the Deployment controller has seen a
    /// rollback's generation, its newest ReplicaSet is the crash-looping
    /// release's, and the rollback was failed on those pods.
    #[test]
    fn no_evidence_is_taken_before_the_generation_is_observed() {
        let d = deployment(
            2,
            json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 0, "availableReplicas": 0}),
        );
        let sets = [rs("bad", "2")];
        let pods = [pod("web-bad-a", "bad", waiting("CrashLoopBackOff", 5))];
        assert!(matches!(
            assess(&[d], &sets, &pods, T0, T0 + 5, Duration::from_secs(300)),
            Verdict::Progressing(_)
        ));
    }

    #[test]
    fn stale_conditions_and_update_strategies_follow_kstatus() {
        let cr = |generation: i64, observed: Value, c: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Gadget",
            "metadata": {"name": "g", "generation": generation}, "status": {"observedGeneration": observed, "conditions": c}})
        };
        let ready = json!([{"type": "Ready", "status": "True"}]);
        assert!(matches!(
            object_health(&cr(2, json!(1), ready.clone())),
            ObjectHealth::Progressing(_)
        ));
        assert_eq!(
            object_health(&cr(2, json!(2), ready)),
            ObjectHealth::Healthy
        );
        let stale_ready = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g", "generation": 2},
            "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}});
        assert!(
            matches!(object_health(&stale_ready), ObjectHealth::Progressing(m) if m.contains("older generation"))
        );

        let sts = |strategy: Value, updated: i64| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "generation": 3}, "spec": {"replicas": 3, "updateStrategy": strategy},
            "status": {"observedGeneration": 3, "readyReplicas": 3, "updatedReplicas": updated, "currentRevision": "a", "updateRevision": "b"}})
        };
        assert_eq!(
            object_health(&sts(json!({"type": "OnDelete"}), 0)),
            ObjectHealth::Healthy
        );
        let partition = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        assert!(matches!(
            object_health(&sts(partition.clone(), 0)),
            ObjectHealth::Progressing(_)
        ));
        assert_eq!(object_health(&sts(partition, 1)), ObjectHealth::Healthy);
        assert!(matches!(
            object_health(&sts(json!({"type": "RollingUpdate"}), 3)),
            ObjectHealth::Progressing(_)
        ));
    }

    #[test]
    fn stateful_and_daemon_set_pods_are_those_of_the_current_revision() {
        let owned = |name: &str, owner: &str, labels: Value| {
            json!({"metadata": {"name": name, "namespace": "dev",
            "labels": labels, "ownerReferences": [{"uid": owner}]}})
        };
        // The selector uses matchExpressions: pods are found by owner.
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "namespace": "dev", "uid": "s1"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["s"]}]}},
            "status": {"updateRevision": "s-new"}});
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d", "namespace": "dev", "uid": "d9", "generation": 4}});
        let pods = [
            owned("s-0", "s1", json!({"controller-revision-hash": "s-new"})),
            owned("s-1", "s1", json!({"controller-revision-hash": "s-old"})),
            owned("other", "x", json!({"controller-revision-hash": "s-new"})),
            owned("d-a", "d9", json!({"pod-template-generation": "4"})),
            owned("d-b", "d9", json!({"pod-template-generation": "3"})),
        ];
        let names = |w: &Value| {
            new_pods(w, &[], &pods)
                .iter()
                .map(|p| name(p).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&sts), ["s-0"]);
        assert_eq!(names(&ds), ["d-a"]);
    }

    #[test]
    fn an_image_error_fails_after_thirty_seconds() {
        let d = deployment(
            1,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
        );
        let sets = [rs("new", "2")];
        let pods = [pod("web-new-a", "new", waiting("ImagePullBackOff", 0))];
        let created = seconds("2027-01-15T08:00:00Z").unwrap();
        assert!(matches!(
            assess(
                std::slice::from_ref(&d),
                &sets,
                &pods,
                created,
                created + 29,
                Duration::from_secs(300)
            ),
            Verdict::Progressing(_)
        ));
        assert!(matches!(
            assess(
                &[d],
                &sets,
                &pods,
                created,
                created + 30,
                Duration::from_secs(300)
            ),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn the_deadline_turns_waiting_into_failure() {
        let d = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1}),
        );
        let v = assess(
            std::slice::from_ref(&d),
            &[],
            &[],
            T0,
            T0 + 10,
            Duration::from_secs(60),
        );
        assert_eq!(
            v,
            Verdict::Progressing(vec!["web: 1 of 2 updated replicas available".into()])
        );
        let Verdict::Failed(e) = assess(&[d], &[], &[], T0, T0 + 60, Duration::from_secs(60))
        else {
            panic!()
        };
        assert!(e.summary.starts_with("not healthy within 60 s"), "{e:?}");
    }

    #[test]
    fn malformed_objects_never_panic() {
        for odd in [
            json!(null),
            json!(7),
            json!({"kind": 3}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "status": "x", "spec": []}),
        ] {
            let _ = object_health(&odd);
            let _ = assess(
                std::slice::from_ref(&odd),
                std::slice::from_ref(&odd),
                std::slice::from_ref(&odd),
                T0,
                T0,
                Duration::from_secs(1),
            );
            let _ = pod_evidence(&odd, T0, T0);
        }
    }
}
