//! The shape every object must have to be rendered, checked where objects
//! enter (each resource file) and after every step that may change them
//! (patches), so the transformers only ever see well-formed objects.
//!
//! Guarantees: an object that passes has a non-empty string `apiVersion`
//! and `kind`, a `metadata` mapping with a non-empty string `name`, a
//! string `namespace` when set, string-to-string `labels` and
//! `annotations` when set, and a mapping `spec` when set. kustomize
//! refuses the objects this refuses; the error names the file, the object
//! and the field.

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
    Ok(())
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
        ] {
            let message = error(value);
            assert!(message.starts_with("env/app.yaml: "), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }
}
