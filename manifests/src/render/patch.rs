//! Patches: strategic merge (the common cases, with Kubernetes' merge keys
//! for the lists that have them) and JSON 6902 (RFC 6902, via json-patch).
//!
//! Guarantees: a strategic-merge patch whose value meets a value of another
//! kind in the object (a mapping where the object has a list, a list where
//! it has a scalar, ...) is refused, naming the field, as kustomize refuses
//! it; a value that meets nothing or null is simply set.

use serde_json::{Map, Value};

/// The key a list of objects is merged by, for the lists where Kubernetes'
/// strategic merge patch merges rather than replaces. `None`: replace.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases" => Some(if field == "hostAliases" { "ip" } else { "name" }),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "topologySpreadConstraints" => Some("topologyKey"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" => items.iter().find_map(|i| {
            if i.get("containerPort").is_some() {
                Some("containerPort")
            } else if i.get("port").is_some() {
                Some("port")
            } else {
                None
            }
        }),
        _ => None,
    }
}

/// Whether a patch map asks to delete what it matches (`$patch: delete`).
pub fn is_delete(patch: &Value) -> bool {
    patch.get("$patch").and_then(Value::as_str) == Some("delete")
}

/// Applies a strategic-merge patch to `target` in place. On an error the
/// target may be partly patched (the render fails as a whole).
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    merge_at(target, patch, "")
}

fn merge_at(target: &mut Value, patch: &Value, path: &str) -> Result<(), String> {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => merge_maps(target, patch, path),
        (target, patch) => {
            same_kind(target, patch, path)?;
            *target = clean(patch);
            Ok(())
        }
    }
}

/// The node kinds kustomize's merge tells apart.
fn node_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Object(_) => "a mapping",
        Value::Array(_) => "a list",
        _ => "a scalar",
    }
}

/// Refuses a patch value that meets a non-null value of another kind.
fn same_kind(target: &Value, patch: &Value, path: &str) -> Result<(), String> {
    let (have, want) = (node_kind(target), node_kind(patch));
    if have == want || have == "null" || want == "null" {
        return Ok(());
    }
    let field = if path.is_empty() { "the object" } else { path };
    Err(format!(
        "`{field}` is {have} in the object but {want} in the patch; kustomize refuses to merge them (make the patch's value {have}, or replace the field with a JSON 6902 patch)"
    ))
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A patch value with its directives removed, for places it is copied whole.
fn clean(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
        other => other.clone(),
    }
}

fn merge_maps(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = clean(&Value::Object(patch.clone()))
            .as_object()
            .cloned()
            .unwrap_or_default();
        return Ok(());
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        let path = child(path, key);
        if !is_delete(value)
            && let Some(existing) = target.get(key)
        {
            same_kind(existing, value, &path)?;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(_) if is_delete(value) => {
                target.remove(key);
            }
            Value::Object(p) => match target.get_mut(key) {
                Some(Value::Object(t)) => merge_maps(t, p, &path)?,
                _ => {
                    target.insert(key.clone(), clean(value));
                }
            },
            Value::Array(items) => {
                let merged = match (target.get(key), merge_key(key, items)) {
                    (Some(Value::Array(existing)), Some(merge_by)) => {
                        merge_lists(existing, items, merge_by, &path)?
                    }
                    _ => items.iter().filter(|i| !is_delete(i)).map(clean).collect(),
                };
                target.insert(key.clone(), Value::Array(merged));
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    Ok(())
}

/// Items the patch names come first, in the patch's order (merged with
/// the existing item of the same key, or new), then the existing items the
/// patch does not mention: the order `kubectl kustomize` produces.
fn merge_lists(
    existing: &[Value],
    patch: &[Value],
    key: &str,
    path: &str,
) -> Result<Vec<Value>, String> {
    let mut rest: Vec<Option<Value>> = existing.iter().cloned().map(Some).collect();
    let mut result = Vec::new();
    for item in patch {
        let id = item.get(key);
        let position = id.and_then(|id| {
            rest.iter()
                .position(|e| e.as_ref().and_then(|e| e.get(key)) == Some(id))
        });
        let current = position.and_then(|i| rest[i].take());
        if is_delete(item) {
            continue;
        }
        match current {
            Some(mut merged) => {
                let id = id.map(|v| v.to_string()).unwrap_or_default();
                merge_at(&mut merged, item, &format!("{path}[{key}={id}]"))?;
                result.push(merged);
            }
            None => result.push(clean(item)),
        }
    }
    result.extend(rest.into_iter().flatten());
    Ok(result)
}

/// Applies RFC 6902 operations (given as parsed YAML or JSON) to `target`.
pub fn json6902(target: &mut Value, operations: &Value) -> Result<(), String> {
    let patch: json_patch::Patch =
        serde_json::from_value(operations.clone()).map_err(|e| e.to_string())?;
    json_patch::patch(target, &patch).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_maps_and_named_lists() {
        let mut d = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}}}});
        strategic_merge(
            &mut d,
            &json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "app", "env": [{"name": "B", "value": "2"}]},
                {"name": "side", "$patch": "delete"}
            ]}}}}),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 3);
        let containers = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["image"], "a:1");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "B", "value": "2"}, {"name": "A", "value": "1"}])
        );
    }

    #[test]
    fn null_removes_and_unkeyed_lists_replace() {
        let mut d = json!({"a": 1, "b": {"c": 2}, "args": ["x", "y"]});
        strategic_merge(&mut d, &json!({"a": null, "args": ["z"]})).unwrap();
        assert_eq!(d, json!({"b": {"c": 2}, "args": ["z"]}));
    }

    #[test]
    fn a_value_meeting_another_kind_is_refused_naming_the_field() {
        let object = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]}
        ]}}}});
        for (patch, field, kinds) in [
            (
                json!({"spec": {"template": {"spec": {"containers": {"name": "app"}}}}}),
                "`spec.template.spec.containers`",
                "a list in the object but a mapping",
            ),
            (
                json!({"spec": {"replicas": {"a": 1}}}),
                "`spec.replicas`",
                "a scalar in the object but a mapping",
            ),
            (
                json!({"spec": {"template": ["x"]}}),
                "`spec.template`",
                "a mapping in the object but a list",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "ports": {"containerPort": 81}}]}}}}),
                "`spec.template.spec.containers[name=\"app\"].ports`",
                "a list in the object but a mapping",
            ),
        ] {
            let message = strategic_merge(&mut object.clone(), &patch).unwrap_err();
            assert!(
                message.contains(field) && message.contains(kinds),
                "{message}"
            );
        }
        // Null on either side, a new field and `$patch: delete` are no conflict.
        let mut d = object.clone();
        strategic_merge(
            &mut d,
            &json!({"spec": {"replicas": null, "paused": {"x": 1}, "template": {"$patch": "delete"}}}),
        )
        .unwrap();
        assert_eq!(d, json!({"spec": {"paused": {"x": 1}}}));
    }

    #[test]
    fn applies_rfc6902() {
        let mut d = json!({"spec": {"replicas": 1}});
        json6902(
            &mut d,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 4);
        assert!(json6902(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
