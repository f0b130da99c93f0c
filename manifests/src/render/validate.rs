//! The shape every object must have to be rendered, checked where objects
//! enter (each resource file) and after every step that may change them
//! (patches), so the transformers only ever see well-formed objects.
//!
//! Guarantees: an object that passes has a non-empty string `apiVersion`
//! and `kind`, a `metadata` mapping with a non-empty string `name`, a
//! string `namespace` when set, string-to-string `labels` and
//! `annotations` when set, and a mapping `spec` when set; in workloads,
//! every field on the way to a name kustomize may rewrite (ConfigMaps,
//! Secrets, volumes, service accounts in the pod template) is a mapping
//! or a list of mappings, never a scalar. kustomize refuses the objects
//! this refuses; the error names the file, the object and the field.

use serde_json::Value;

use super::error::RenderError;

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn invalid(what: &str, message: String) -> String {
    format!("{what}: {message}")
}

fn string_map(value: Option<&Value>, field: &str, what: &str) -> Result<(), String> {
    let Some(value) = value else { return Ok(()) };
    let Some(map) = value.as_object() else {
        return Err(invalid(
            what,
            format!(
                "`{field}` must be a mapping of strings, found {}",
                describe(value)
            ),
        ));
    };
    for (key, v) in map {
        if !v.is_string() {
            return Err(invalid(
                what,
                format!(
                    "`{field}.{key}` must be a string, found {} (quote it)",
                    describe(v)
                ),
            ));
        }
    }
    Ok(())
}

/// Checks one object; `file` is where it came from.
pub fn object(object: &Value, file: &str) -> Result<(), RenderError> {
    check(object).map_err(|message| RenderError::Invalid {
        file: file.to_owned(),
        message,
    })
}

/// Checks one object; the message names the object and the field.
pub fn check(object: &Value) -> Result<(), String> {
    let Some(map) = object.as_object() else {
        return Err(invalid(
            "an object",
            format!(
                "expected a Kubernetes object (a mapping), found {}",
                describe(object)
            ),
        ));
    };
    let text = |field: &str| {
        map.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let kind = text("kind");
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let what = match (kind, name) {
        (Some(k), Some(n)) => format!("{k} {n}"),
        (Some(k), None) => format!("a {k}"),
        (None, Some(n)) => format!("object {n}"),
        (None, None) => "an object".to_owned(),
    };
    for field in ["apiVersion", "kind"] {
        if text(field).is_none() {
            let found = map.get(field).map_or("nothing", describe);
            return Err(invalid(
                &what,
                format!("`{field}` must be a non-empty string, found {found}"),
            ));
        }
    }
    let Some(metadata) = map.get("metadata") else {
        return Err(invalid(&what, "`metadata` is missing".into()));
    };
    let Some(meta) = metadata.as_object() else {
        return Err(invalid(
            &what,
            format!("`metadata` must be a mapping, found {}", describe(metadata)),
        ));
    };
    if name.is_none() {
        return Err(invalid(
            &what,
            "`metadata.name` must be a non-empty string".into(),
        ));
    }
    if let Some(ns) = meta.get("namespace")
        && !ns.is_string()
    {
        return Err(invalid(
            &what,
            format!(
                "`metadata.namespace` must be a string, found {}",
                describe(ns)
            ),
        ));
    }
    string_map(meta.get("labels"), "metadata.labels", &what)?;
    string_map(meta.get("annotations"), "metadata.annotations", &what)?;
    if let Some(spec) = map.get("spec")
        && !spec.is_object()
    {
        return Err(invalid(
            &what,
            format!("`spec` must be a mapping, found {}", describe(spec)),
        ));
    }
    if let Some(pod) = kind.and_then(pod_spec_path) {
        for reference in POD_REFERENCES {
            let path: Vec<&str> = pod.iter().chain(reference.iter()).copied().collect();
            walk(object, &path, "").map_err(|message| invalid(&what, message))?;
        }
    }
    Ok(())
}

/// Where a workload kind keeps its pod spec.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// The names in a pod spec that kustomize's name references rewrite (the
/// last segment is the name itself).
const POD_REFERENCES: &[&[&str]] = &[
    &["containers", "env", "valueFrom", "configMapKeyRef", "name"],
    &["containers", "env", "valueFrom", "secretKeyRef", "name"],
    &["containers", "envFrom", "configMapRef", "name"],
    &["containers", "envFrom", "secretRef", "name"],
    &[
        "initContainers",
        "env",
        "valueFrom",
        "configMapKeyRef",
        "name",
    ],
    &["initContainers", "env", "valueFrom", "secretKeyRef", "name"],
    &["initContainers", "envFrom", "configMapRef", "name"],
    &["initContainers", "envFrom", "secretRef", "name"],
    &["volumes", "configMap", "name"],
    &["volumes", "secret", "secretName"],
    &["volumes", "persistentVolumeClaim", "claimName"],
    &["volumes", "projected", "sources", "configMap", "name"],
    &["volumes", "projected", "sources", "secret", "name"],
    &["imagePullSecrets", "name"],
    &["serviceAccountName"],
];

/// Follows `path` through mappings and every item of lists, as kustomize
/// does when it looks for a name: a scalar on the way is an error, a
/// missing or null field ends the walk.
fn walk(value: &Value, path: &[&str], at: &str) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    match value {
        Value::Null => Ok(()),
        Value::Object(map) => match map.get(*first) {
            Some(next) => {
                let at = if at.is_empty() {
                    (*first).to_owned()
                } else {
                    format!("{at}.{first}")
                };
                walk(next, rest, &at)
            }
            None => Ok(()),
        },
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, path, &format!("{at}[{i}]"))),
        scalar => Err(format!(
            "`{at}` must be a mapping or a list of mappings, found {} (kustomize looks for the names of ConfigMaps, Secrets and volumes there)",
            describe(scalar)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(value: Value) -> String {
        object(&value, "env/app.yaml").unwrap_err().to_string()
    }

    #[test]
    fn well_formed_objects_pass() {
        object(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}}, "data": {}}),
            "f",
        )
        .unwrap();
        // A mapping or null where kustomize expects a list is accepted, as
        // kustomize accepts it; so is a scalar in a kind without a pod.
        for spec in [
            json!({"template": {"spec": {"containers": {"name": "a"}, "volumes": null}}}),
            json!({"template": {"spec": {"containers": [{"name": "a", "args": "x"}]}}}),
        ] {
            object(
                &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": spec}),
                "f",
            )
            .unwrap();
        }
        object(
            &json!({"apiVersion": "x/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"template": 7}}),
            "f",
        )
        .unwrap();
    }

    #[test]
    fn what_kustomize_refuses_is_refused_naming_the_field() {
        for (value, expected) in [
            (
                json!({"apiVersion": "v1", "metadata": {"name": "c"}}),
                "object c: `kind` must be a non-empty string, found nothing",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "hello"}),
                "a ConfigMap: `metadata` must be a mapping, found a string",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": 7}),
                "`metadata` must be a mapping, found a number",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
                "`metadata.name` must be a non-empty string",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": "x"}),
                "Deployment d: `spec` must be a mapping, found a string",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": true}}}),
                "`metadata.labels.a` must be a string, found a boolean (quote it)",
            ),
            (
                json!(["a"]),
                "expected a Kubernetes object (a mapping), found a list",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": "hello"}}}}),
                "Deployment d: `spec.template.spec.containers` must be a mapping or a list of mappings, found a string",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "env": [7]}]}}),
                "`spec.containers[0].env[0]` must be a mapping or a list of mappings, found a number",
            ),
            (
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": "x"}}}}),
                "`spec.jobTemplate.spec.template` must be a mapping",
            ),
        ] {
            let message = error(value);
            assert!(message.starts_with("env/app.yaml: "), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }
}
