//! The `kustomization.yaml` fields ferry implements. Any other field is an
//! error that names it, never a silent difference from kustomize.
//!
//! Guarantees: a field of the wrong type is refused naming the field, as
//! kustomize (Go's JSON decoding) refuses it: `namePrefix: 7` or a label
//! value `true` is not quietly read as a string. A null field is read as
//! absent, as Go reads it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// Reads a kustomization's text; the error names the field and says what
/// it should be.
pub fn parse(text: &str) -> Result<Kustomization, String> {
    let mut value: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Ok(Kustomization::default());
    }
    drop_nulls(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if inner.starts_with("unknown field") || path == "." {
            inner
        } else if inner.starts_with("invalid type") {
            format!("`{path}`: {inner} (kustomize refuses it too; quote a value meant as text)")
        } else {
            format!("`{path}`: {inner}")
        }
    })
}

/// Removes the null-valued fields of every mapping.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// File names kustomize looks for, in its order.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    /// Older name of `resources` for directories.
    #[serde(default)]
    pub bases: Vec<String>,
    pub namespace: Option<String>,
    pub name_prefix: Option<String>,
    pub name_suffix: Option<String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: Vec<LabelSet>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub images: Vec<ImageOverride>,
    #[serde(default)]
    pub replicas: Vec<ReplicaOverride>,
    #[serde(default)]
    pub patches: Vec<PatchEntry>,
    /// Older form: files holding strategic-merge patches.
    #[serde(default)]
    pub patches_strategic_merge: Vec<String>,
    /// Older form: JSON 6902 patches with their targets.
    #[serde(default)]
    pub patches_json6902: Vec<PatchEntry>,
    #[serde(default)]
    pub config_map_generator: Vec<Generator>,
    #[serde(default)]
    pub secret_generator: Vec<Generator>,
    pub generator_options: Option<GeneratorOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSet {
    #[serde(default)]
    pub pairs: BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageOverride {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaOverride {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchEntry {
    pub path: Option<String>,
    pub patch: Option<String>,
    pub target: Option<Target>,
    /// Accepted for compatibility; only the defaults are implemented.
    pub options: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub group: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub annotation_selector: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Generator {
    pub name: String,
    pub namespace: Option<String>,
    pub behavior: Option<String>,
    #[serde(default)]
    pub literals: Vec<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub envs: Vec<String>,
    /// Secrets only: the Secret's type (default Opaque).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub options: Option<GeneratorOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GeneratorOptions {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub disable_name_suffix_hash: Option<bool>,
    pub immutable: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_of_the_wrong_type_is_refused_naming_it() {
        for (text, expected) in [
            (
                "namePrefix: 7",
                "`namePrefix`: invalid type: integer `7`, expected a string",
            ),
            (
                "commonLabels: {a: true}",
                "`commonLabels.a`: invalid type: boolean `true`",
            ),
            (
                "images: [{name: x, newTag: 2}]",
                "`images[0].newTag`: invalid type: integer `2`",
            ),
            (
                "resources: a.yaml",
                "`resources`: invalid type: string \"a.yaml\", expected a sequence",
            ),
            ("labels: [{pairs: {b: 1}}]", "`labels[0].pairs.b`"),
        ] {
            let message = parse(text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn nulls_read_as_absent_and_unknown_fields_are_named() {
        let k = parse("resources:\nnamePrefix: p-\nimages: [{name: x, newTag: null}]").unwrap();
        assert!(k.resources.is_empty());
        assert_eq!(k.name_prefix.as_deref(), Some("p-"));
        assert_eq!(k.images[0].new_tag, None);
        assert!(parse("").unwrap().resources.is_empty());
        assert!(
            parse("helmCharts: []")
                .unwrap_err()
                .starts_with("unknown field `helmCharts`")
        );
    }
}
