//! The health gate's I/O edge: read what [`crate::gate::health`] judges (the
//! applied objects, the ReplicaSets and pods of their namespaces), and
//! gather the evidence of a failure (the pods' last events and the last
//! lines of a crashing container's log), as the Environment's deployer.
//!
//! Guarantees: reads only; the evidence is capped so it fits an Event.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use kube::Client;
use kube::api::{Api, ListParams, LogParams};
use serde_json::Value;

use crate::cluster::discovery::Resolver;
use crate::gate::health::{self, Evidence};
use ferry_manifests::object::ObjectRef;

/// Events carry at most 1 KiB of note.
pub const NOTE_LIMIT: usize = 1000;

/// What the gate looks at.
#[derive(Debug, Default)]
pub struct Observation {
    pub objects: Vec<Value>,
    pub replica_sets: Vec<Value>,
    pub pods: Vec<Value>,
}

/// Reads the live objects of `inventory` that health is judged by
/// ([`health::judged_by_state`]: a ConfigMap or an Ingress is Healthy
/// whatever it holds, and is not read), and the ReplicaSets and pods of
/// the namespaces that hold workloads whose controller has seen their
/// current generation: before that, their pods are the previous
/// release's and no verdict reads them ([`health::assess`]), so a look
/// soon after an apply spares two lists per namespace.
pub async fn observe(
    resolver: &mut Resolver,
    client: &Client,
    inventory: &[ObjectRef],
) -> Result<Observation, kube::Error> {
    let mut observation = Observation::default();
    let mut namespaces = BTreeSet::new();
    for object in inventory.iter().filter(|o| health::judged_by_state(o)) {
        let api = match resolver.api(object).await {
            Ok(api) => api,
            Err(e) if crate::failure::is_unknown_kind(&e) => continue,
            Err(e) => return Err(e),
        };
        if let Some(live) = api.get_opt(&object.name).await? {
            let live_value = serde_json::to_value(live).unwrap_or_default();
            if matches!(
                object.kind.as_str(),
                "Deployment" | "StatefulSet" | "DaemonSet"
            ) && health::generation_caught_up(&live_value)
                && let Some(ns) = &object.namespace
            {
                namespaces.insert(ns.clone());
            }
            observation.objects.push(live_value);
        }
    }
    for ns in namespaces {
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        for rs in sets.list(&ListParams::default()).await? {
            observation
                .replica_sets
                .push(serde_json::to_value(rs).unwrap_or_default());
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        for pod in pods.list(&ListParams::default()).await? {
            observation
                .pods
                .push(serde_json::to_value(pod).unwrap_or_default());
        }
    }
    Ok(observation)
}

/// IPs of the pods of the workloads' newest revisions (for HTTP checks
/// with `{{.podIP}}`).
pub fn new_pod_ips(observation: &Observation) -> Vec<String> {
    let mut ips = Vec::new();
    for object in &observation.objects {
        if !matches!(
            ObjectRef::of(object).kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        ) {
            continue;
        }
        for pod in health::new_pods(object, &observation.replica_sets, &observation.pods) {
            if let Some(ip) = pod.pointer("/status/podIP").and_then(Value::as_str) {
                ips.push(ip.to_owned());
            }
        }
    }
    ips.sort();
    ips.dedup();
    ips
}

/// `text` cut to at most `limit` bytes, ending with an ellipsis when cut.
pub fn cap(text: &str, limit: usize) -> String {
    cap_marked(text, limit, "…")
}

/// `text` in at most `limit` bytes (`mark` included, when `limit` leaves
/// room for it), cut at a character boundary and ending with `mark` when
/// it was longer.
pub fn cap_marked(text: &str, limit: usize, mark: &str) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", &text[..end])
}

/// The evidence as text, in two parts by who may read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Described {
    /// The failing object, each pod's waiting reason and restarts, its
    /// last events: for the Environment's Event.
    pub text: String,
    /// The last log lines of each crashing container (empty when none):
    /// only for where readers of the pods' namespace look, since people
    /// who may read the Environment may not read `pods/log` there.
    pub logs: String,
}

/// The evidence: see [`Described`]; each part capped at `limit` bytes.
pub async fn describe(
    client: &Client,
    namespace: Option<&str>,
    evidence: &Evidence,
    limit: usize,
) -> Described {
    let mut text = format!("{}: {}", evidence.object, evidence.summary);
    let mut logs = String::new();
    for pod in evidence.pods.iter().take(3) {
        text.push_str(&format!(
            "\npod {} container {}: {} ({} restarts){}",
            pod.pod,
            pod.container,
            pod.reason,
            pod.restarts,
            if pod.message.is_empty() {
                String::new()
            } else {
                format!(": {}", pod.message)
            }
        ));
        let Some(ns) = namespace else { continue };
        let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
        let params = ListParams::default().fields(&format!("involvedObject.name={}", pod.pod));
        if let Ok(list) = events.list(&params).await {
            let mut items: Vec<_> = list.items;
            items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
            for e in items.iter().rev().take(2) {
                text.push_str(&format!(
                    "\n  event {}: {}",
                    e.reason.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("").trim()
                ));
            }
        }
        if pod.restarts > 0 {
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            for previous in [true, false] {
                let params = LogParams {
                    container: Some(pod.container.clone()),
                    tail_lines: Some(5),
                    previous,
                    limit_bytes: Some(2048),
                    ..LogParams::default()
                };
                if let Ok(log) = pods.logs(&pod.pod, &params).await
                    && !log.trim().is_empty()
                {
                    if !logs.is_empty() {
                        logs.push('\n');
                    }
                    logs.push_str(&format!(
                        "pod {} container {} log: {}",
                        pod.pod,
                        pod.container,
                        log.trim().replace('\n', "\n       ")
                    ));
                    break;
                }
            }
        }
    }
    Described {
        text: cap(&text, limit),
        logs: cap(&logs, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_capped_on_a_character_boundary() {
        assert_eq!(cap("short", 10), "short");
        let capped = cap(&"é".repeat(800), NOTE_LIMIT);
        assert!(
            capped.len() <= NOTE_LIMIT + 3 && capped.ends_with('…'),
            "{}",
            capped.len()
        );
    }
}
