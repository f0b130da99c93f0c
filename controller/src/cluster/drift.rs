//! Drift: fields git sets that someone changed in the cluster since ferry
//! applied them (`kubectl edit`, `kubectl scale`), found by comparing the
//! live object with ferry's server-side dry run and asking the live
//! object's managed fields who set each changed field.
//!
//! Guarantees (pure): a field counts as drift only when a field manager
//! other than ferry owns it in the live object, so a change that comes
//! from git is never reported as drift, and fields git does not set never
//! appear (the dry run leaves them as they are).

use serde_json::Value;

use crate::cluster::ssa::FIELD_MANAGER;

/// One field git sets that another manager changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Dotted path, list items as `[i]`: `spec.replicas`, `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The field managers that own it in the live object (not ferry).
    pub managers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn changed(before: &Value, after: &Value, path: &mut Vec<Segment>, out: &mut Vec<Vec<Segment>>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (x, y) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                if x != y {
                    path.push(Segment::Key(key.clone()));
                    changed(x, y, path, out);
                    path.pop();
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if x != y {
                    path.push(Segment::Index(i));
                    changed(x, y, path, out);
                    path.pop();
                }
            }
        }
        (a, b) if a != b => out.push(path.clone()),
        _ => {}
    }
}

fn dotted(path: &[Segment]) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Key(k) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(k);
            }
            Segment::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// Whether a `fieldsV1` tree covers `path`. List items are identified by
/// keys (`k:{...}`) the path does not carry, so the walk stops at the
/// first list: a manager owning any item of that list counts.
fn covers(fields: &Value, path: &[Segment]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return true;
    };
    match first {
        Segment::Key(key) => fields
            .get(format!("f:{key}"))
            .is_some_and(|child| covers(child, rest)),
        Segment::Index(_) => fields.as_object().is_some_and(|m| {
            m.keys()
                .any(|k| k.starts_with("k:") || k.starts_with("i:") || k.starts_with("v:"))
        }),
    }
}

/// The managers (other than ferry) that own `path` in `live`.
fn owners(live: &Value, path: &[Segment]) -> Vec<String> {
    let mut managers: Vec<String> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let manager = entry.get("manager").and_then(Value::as_str)?;
            let fields = entry.get("fieldsV1")?;
            (manager != FIELD_MANAGER && covers(fields, path)).then(|| manager.to_owned())
        })
        .collect();
    managers.sort();
    managers.dedup();
    managers
}

/// Fields where `live` differs from `after` (ferry's dry run) that a
/// manager other than ferry owns in `live`. Both objects as the API server
/// returns them; `metadata` other than labels and annotations, and
/// `status`, are not compared.
pub fn detect(live: &Value, after: &Value) -> Vec<Drift> {
    let strip = |v: &Value| {
        let mut v = ferry_manifests::diff::normalize(v.clone());
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| k == "labels" || k == "annotations");
        }
        v
    };
    let mut paths = Vec::new();
    changed(&strip(live), &strip(after), &mut Vec::new(), &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let managers = owners(live, &path);
            (!managers.is_empty()).then(|| Drift {
                field: dotted(&path),
                managers,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn live(replicas: i64, managed: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "managedFields": managed, "resourceVersion": "7"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": "a:1"}]}}}})
    }

    #[test]
    fn a_hand_scaled_deployment_is_drift_by_its_manager() {
        let managed = json!([
            {"manager": "ferry", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]);
        let drift = detect(&live(5, managed), &live(2, json!([])));
        assert_eq!(
            drift,
            vec![Drift {
                field: "spec.replicas".into(),
                managers: vec!["kubectl".into()]
            }]
        );
    }

    #[test]
    fn a_change_from_git_is_not_drift() {
        let managed = json!([
            {"manager": "ferry", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]);
        assert!(detect(&live(1, managed), &live(2, json!([]))).is_empty());
    }

    #[test]
    fn list_items_are_attributed_to_who_owns_the_list() {
        let mut before = live(
            1,
            json!([
                {"manager": "kubectl-edit", "operation": "Update",
                 "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}}}}}}
            ]),
        );
        let after = live(1, json!([]));
        before["spec"]["template"]["spec"]["containers"][0]["image"] = "b:2".into();
        let drift = detect(&before, &after);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].field, "spec.template.spec.containers[0].image");
        assert_eq!(drift[0].managers, vec!["kubectl-edit".to_owned()]);
    }

    #[test]
    fn malformed_managed_fields_are_no_owners() {
        let odd = live(5, json!("nonsense"));
        assert!(detect(&odd, &live(2, json!([]))).is_empty());
        let odd = live(5, json!([{"manager": 3}, {"fieldsV1": 1}, 7]));
        assert!(detect(&odd, &live(2, json!([]))).is_empty());
    }
}
