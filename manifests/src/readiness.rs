//! Verified before traffic: the readiness gate ferry adds to the pod
//! templates of an Environment with `healthCheck.beforeTraffic`. A pod
//! with the gate is not Ready, so it is in no Service's ready endpoints,
//! until ferry has verified it and set the pod condition of the same name
//! to True. A transform of the rendered objects, so `ferry-controller
//! render --before-traffic` and a pull request's diff show what the
//! controller applies.
//!
//! Guarantees: only Deployments, StatefulSets and DaemonSets get the gate
//! (the workloads whose pods serve traffic through Services and whose
//! rollout waits for readiness); a template that already has it is left
//! as it is, so the transform is idempotent; any other shape of object
//! (no template, a template that is not a mapping) is left untouched,
//! never a panic.

use serde_json::{Map, Value, json};

/// The readiness gate's condition type, set on pods through `pods/status`.
pub const VERIFIED: &str = "ferry.dev/verified";

/// The kinds whose pod templates get the gate.
pub const GATED_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// Adds the readiness gate [`VERIFIED`] to the pod template of every
/// Deployment, StatefulSet and DaemonSet in `objects`; how many templates
/// gained it.
pub fn add_verified_gate<'a>(objects: impl IntoIterator<Item = &'a mut Value>) -> usize {
    let mut added = 0;
    for object in objects {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        if !GATED_KINDS.contains(&kind) {
            continue;
        }
        let Some(pod) = object
            .pointer_mut("/spec/template/spec")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if add_to(pod) {
            added += 1;
        }
    }
    added
}

fn add_to(pod: &mut Map<String, Value>) -> bool {
    let gates = pod
        .entry("readinessGates")
        .or_insert_with(|| Value::Array(Vec::new()));
    if gates.is_null() {
        *gates = Value::Array(Vec::new());
    }
    let Some(gates) = gates.as_array_mut() else {
        return false;
    };
    if gates
        .iter()
        .any(|g| g.get("conditionType").and_then(Value::as_str) == Some(VERIFIED))
    {
        return false;
    }
    gates.push(json!({ "conditionType": VERIFIED }));
    true
}

/// Whether a pod (as the API server returns it) carries the gate.
pub fn is_gated(pod: &Value) -> bool {
    pod.pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|g| g.get("conditionType").and_then(Value::as_str) == Some(VERIFIED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn workloads_get_the_gate_once_and_other_kinds_none() {
        let mut objects = [
            json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": []}}}}),
            json!({"kind": "StatefulSet", "spec": {"template": {"spec": {"readinessGates": [{"conditionType": "other"}]}}}}),
            json!({"kind": "DaemonSet", "spec": {"template": {"spec": {"readinessGates": null}}}}),
            json!({"kind": "Job", "spec": {"template": {"spec": {}}}}),
            json!({"kind": "Deployment", "spec": {"template": "x"}}),
            json!({"kind": "Deployment", "spec": {"template": {"spec": {"readinessGates": "x"}}}}),
        ];
        assert_eq!(add_verified_gate(objects.iter_mut()), 3);
        assert_eq!(add_verified_gate(objects.iter_mut()), 0, "idempotent");
        assert!(is_gated(&objects[0]["spec"]["template"]));
        assert_eq!(
            objects[1]["spec"]["template"]["spec"]["readinessGates"],
            json!([{"conditionType": "other"}, {"conditionType": VERIFIED}])
        );
        assert!(is_gated(&objects[2]["spec"]["template"]));
        assert_eq!(objects[3]["spec"]["template"]["spec"], json!({}));
        assert_eq!(objects[4]["spec"]["template"], "x");
    }

    proptest! {
        #[test]
        fn any_object_is_handled(text in "\\PC{0,200}") {
            if let Ok(mut value) = serde_json::from_str::<Value>(&text) {
                add_verified_gate(std::iter::once(&mut value));
            }
            let mut deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": text.clone()}}});
            add_verified_gate(std::iter::once(&mut deployment));
        }
    }
}
