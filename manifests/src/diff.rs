//! Comparing objects as `kubectl diff` shows them: server-owned fields
//! dropped, Secret values redacted (a change still shows, its value never
//! does), a unified diff of the YAML.

use serde_json::Value;

use crate::object::ObjectRef;

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

/// A copy with Secret values redacted, for diffs of new objects.
pub fn redacted(object: &Value) -> Value {
    let mut copy = object.clone();
    redact_pair(&mut Value::Null, &mut copy);
    copy
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
