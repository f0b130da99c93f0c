//! The built-in transformers, in kustomize's order after patches:
//! namespace, name prefix and suffix, labels, annotations, images,
//! replicas; then name references follow renamed objects.

use std::collections::BTreeMap;

use serde_json::Value;

use super::kustomization::{ImageOverride, LabelSet, ReplicaOverride};

/// Kinds without a namespace. Anything else, custom resources included,
/// is treated as namespaced, as kustomize does without a schema.
const CLUSTER_SCOPED: [&str; 22] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "ComponentStatus",
];

pub fn kind(object: &Value) -> &str {
    object.get("kind").and_then(Value::as_str).unwrap_or("")
}

pub fn name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn is_cluster_scoped(object: &Value) -> bool {
    CLUSTER_SCOPED.contains(&kind(object))
}

fn group(object: &Value) -> &str {
    object
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .map_or("", |(g, _)| g)
}

/// Sets `value` at `path`, creating mappings on the way; does nothing
/// where the path runs into something that is not a mapping, so no input
/// can make a transformer panic.
pub fn set(object: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for key in parents {
        let Value::Object(map) = current else { return };
        current = map
            .entry(*key)
            .or_insert_with(|| Value::Object(Default::default()));
    }
    if let Value::Object(map) = current {
        map.insert((*last).to_owned(), value);
    }
}

/// Sets the value at a `/`-separated path, creating maps on the way when
/// `create`; a `[]` segment applies to every element of a list.
fn set_map_entries(
    value: &mut Value,
    path: &[&str],
    entries: &BTreeMap<String, String>,
    create: bool,
) {
    let Some((first, rest)) = path.split_first() else {
        if value.is_null() && create {
            *value = Value::Object(Default::default());
        }
        if let Value::Object(map) = value {
            for (k, v) in entries {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
        return;
    };
    if let Some(field) = first.strip_suffix("[]") {
        if let Some(Value::Array(items)) = value.get_mut(field) {
            for item in items {
                set_map_entries(item, rest, entries, create);
            }
        }
        return;
    }
    if value.get(*first).is_none() {
        if !create {
            return;
        }
        set(value, &[first], Value::Object(Default::default()));
    }
    if let Some(next) = value.get_mut(*first) {
        set_map_entries(next, rest, entries, create);
    }
}

const WORKLOADS: [&str; 5] = [
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "ReplicationController",
];

/// Where labels go: metadata everywhere, pod templates when asked, and
/// selectors (kustomize's `commonLabels` field specs) when asked.
fn label_paths(object: &Value, templates: bool, selectors: bool) -> Vec<(Vec<&'static str>, bool)> {
    let k = kind(object);
    let mut paths = vec![(vec!["metadata", "labels"], true)];
    if templates {
        if WORKLOADS.contains(&k) || k == "Job" {
            paths.push((vec!["spec", "template", "metadata", "labels"], true));
        }
        if k == "StatefulSet" {
            paths.push((
                vec!["spec", "volumeClaimTemplates[]", "metadata", "labels"],
                true,
            ));
        }
        if k == "CronJob" {
            paths.push((vec!["spec", "jobTemplate", "metadata", "labels"], true));
            paths.push((
                vec![
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "metadata",
                    "labels",
                ],
                true,
            ));
        }
    }
    if selectors {
        match k {
            "Service" | "ReplicationController" => paths.push((vec!["spec", "selector"], true)),
            "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => {
                paths.push((vec!["spec", "selector", "matchLabels"], true));
                if k == "Deployment" || k == "StatefulSet" {
                    for affinity in ["podAffinity", "podAntiAffinity"] {
                        paths.push((
                            vec![
                                "spec",
                                "template",
                                "spec",
                                "affinity",
                                affinity,
                                "preferredDuringSchedulingIgnoredDuringExecution[]",
                                "podAffinityTerm",
                                "labelSelector",
                                "matchLabels",
                            ],
                            false,
                        ));
                        paths.push((
                            vec![
                                "spec",
                                "template",
                                "spec",
                                "affinity",
                                affinity,
                                "requiredDuringSchedulingIgnoredDuringExecution[]",
                                "labelSelector",
                                "matchLabels",
                            ],
                            false,
                        ));
                    }
                    paths.push((
                        vec![
                            "spec",
                            "template",
                            "spec",
                            "topologySpreadConstraints[]",
                            "labelSelector",
                            "matchLabels",
                        ],
                        false,
                    ));
                }
            }
            "Job" => paths.push((vec!["spec", "selector", "matchLabels"], false)),
            "CronJob" => paths.push((
                vec!["spec", "jobTemplate", "spec", "selector", "matchLabels"],
                false,
            )),
            "PodDisruptionBudget" if group(object) == "policy" => {
                paths.push((vec!["spec", "selector", "matchLabels"], false))
            }
            "NetworkPolicy" => {
                paths.push((vec!["spec", "podSelector", "matchLabels"], false));
                paths.push((
                    vec!["spec", "ingress[]", "from[]", "podSelector", "matchLabels"],
                    false,
                ));
                paths.push((
                    vec!["spec", "egress[]", "to[]", "podSelector", "matchLabels"],
                    false,
                ));
            }
            _ => {}
        }
    }
    paths
}

/// `commonLabels` (selectors and templates too) and `labels` entries.
pub fn labels(objects: &mut [Value], common: &BTreeMap<String, String>, sets: &[LabelSet]) {
    let mut passes: Vec<(&BTreeMap<String, String>, bool, bool)> = Vec::new();
    if !common.is_empty() {
        passes.push((common, true, true));
    }
    for set in sets {
        passes.push((
            &set.pairs,
            set.include_templates || set.include_selectors,
            set.include_selectors,
        ));
    }
    for (entries, templates, selectors) in passes {
        for object in objects.iter_mut() {
            for (path, create) in label_paths(object, templates, selectors) {
                set_map_entries(object, &path, entries, create);
            }
        }
    }
}

/// `commonAnnotations`: metadata and pod templates.
pub fn annotations(objects: &mut [Value], entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        return;
    }
    for object in objects.iter_mut() {
        set_map_entries(object, &["metadata", "annotations"], entries, true);
        let k = kind(object).to_owned();
        if WORKLOADS.contains(&k.as_str()) || k == "Job" {
            set_map_entries(
                object,
                &["spec", "template", "metadata", "annotations"],
                entries,
                true,
            );
        }
        if k == "CronJob" {
            set_map_entries(
                object,
                &["spec", "jobTemplate", "metadata", "annotations"],
                entries,
                true,
            );
            set_map_entries(
                object,
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "metadata",
                    "annotations",
                ],
                entries,
                true,
            );
        }
    }
}

/// `namespace`: on every namespaced object.
pub fn namespace(objects: &mut [Value], namespace: &str) {
    for object in objects.iter_mut() {
        if !is_cluster_scoped(object) {
            set(object, &["metadata", "namespace"], namespace.into());
        }
        if matches!(kind(object), "RoleBinding" | "ClusterRoleBinding")
            && let Some(Value::Array(subjects)) = object.get_mut("subjects")
        {
            for s in subjects {
                if s.get("kind").and_then(Value::as_str) == Some("ServiceAccount") {
                    set(s, &["namespace"], namespace.into());
                }
            }
        }
    }
}

/// A rename done by a transformer or generator, for name references.
#[derive(Debug, Clone, PartialEq)]
pub struct Rename {
    pub kind: String,
    pub from: String,
    pub to: String,
}

/// `namePrefix` / `namePrefix`: every object but Namespaces and CRDs.
pub fn prefix_suffix(objects: &mut [Value], prefix: &str, suffix: &str, renames: &mut Vec<Rename>) {
    if prefix.is_empty() && suffix.is_empty() {
        return;
    }
    for object in objects.iter_mut() {
        if matches!(kind(object), "Namespace" | "CustomResourceDefinition") {
            continue;
        }
        let from = name(object).to_owned();
        let to = format!("{prefix}{from}{suffix}");
        renames.push(Rename {
            kind: kind(object).to_owned(),
            from,
            to: to.clone(),
        });
        set(object, &["metadata", "name"], Value::String(to));
    }
}

/// Pod specs inside an object.
fn pod_specs(object: &mut Value) -> Vec<&mut Value> {
    let k = kind(object).to_owned();
    let pointer = match k.as_str() {
        "Pod" => "/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    object.pointer_mut(pointer).into_iter().collect()
}

/// `images`: rewrite matching container images' name, tag and digest.
pub fn images(objects: &mut [Value], overrides: &[ImageOverride]) {
    if overrides.is_empty() {
        return;
    }
    for object in objects.iter_mut() {
        for spec in pod_specs(object) {
            for list in ["initContainers", "containers", "ephemeralContainers"] {
                let Some(Value::Array(containers)) = spec.get_mut(list) else {
                    continue;
                };
                for container in containers {
                    let Some(image) = container.get("image").and_then(Value::as_str) else {
                        continue;
                    };
                    let (repository, tag, digest) = crate::image::parse(image);
                    let Some(o) = overrides.iter().find(|o| o.name == repository) else {
                        continue;
                    };
                    let repository = o.new_name.as_deref().unwrap_or(repository);
                    let tag = o
                        .new_tag
                        .as_deref()
                        .or(if o.digest.is_some() { None } else { tag });
                    let digest =
                        o.digest
                            .as_deref()
                            .or(if o.new_tag.is_some() { None } else { digest });
                    let mut new = repository.to_owned();
                    if let Some(t) = tag {
                        new = format!("{new}:{t}");
                    }
                    if let Some(d) = digest {
                        new = format!("{new}@{d}");
                    }
                    set(container, &["image"], Value::String(new));
                }
            }
        }
    }
}

/// `replicas`: set `spec.replicas` of named workloads (by the name in the
/// resources, before this kustomization's prefix and suffix, or after).
pub fn replicas(objects: &mut [Value], overrides: &[ReplicaOverride], renames: &[Rename]) {
    for o in overrides {
        for object in objects.iter_mut() {
            let current = name(object);
            let named = current == o.name
                || renames
                    .iter()
                    .any(|r| r.kind == kind(object) && r.from == o.name && r.to == current);
            if named
                && matches!(
                    kind(object),
                    "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
                )
            {
                set(object, &["spec", "replicas"], o.count.into());
            }
        }
    }
}

/// Follows renames into the fields that refer to objects by name.
pub fn name_references(objects: &mut [Value], renames: &[Rename]) {
    if renames.is_empty() {
        return;
    }
    let renamed = |kind: &str, name: &str| -> Option<String> {
        renames
            .iter()
            .rev()
            .find(|r| r.kind == kind && r.from == name)
            .map(|r| r.to.clone())
    };
    let fix = |value: Option<&mut Value>, kind: &str| {
        if let Some(v) = value
            && let Some(new) = v.as_str().and_then(|n| renamed(kind, n))
        {
            *v = Value::String(new);
        }
    };
    for object in objects.iter_mut() {
        let k = kind(object).to_owned();
        if k == "HorizontalPodAutoscaler" {
            let target_kind = object
                .pointer("/spec/scaleTargetRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            fix(
                object.pointer_mut("/spec/scaleTargetRef/name"),
                &target_kind,
            );
        }
        if matches!(k.as_str(), "RoleBinding" | "ClusterRoleBinding") {
            let role_kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            fix(object.pointer_mut("/roleRef/name"), &role_kind);
            if let Some(Value::Array(subjects)) = object.get_mut("subjects") {
                for s in subjects
                    .iter_mut()
                    .filter(|s| s.get("kind").and_then(Value::as_str) == Some("ServiceAccount"))
                {
                    fix(s.get_mut("name"), "ServiceAccount");
                }
            }
        }
        if k == "StatefulSet" {
            fix(object.pointer_mut("/spec/serviceName"), "Service");
        }
        for spec in pod_specs(object) {
            fix(spec.get_mut("serviceAccountName"), "ServiceAccount");
            if let Some(Value::Array(secrets)) = spec.get_mut("imagePullSecrets") {
                for s in secrets {
                    fix(s.get_mut("name"), "Secret");
                }
            }
            if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
                for v in volumes {
                    fix(v.pointer_mut("/configMap/name"), "ConfigMap");
                    fix(v.pointer_mut("/secret/secretName"), "Secret");
                    fix(
                        v.pointer_mut("/persistentVolumeClaim/claimName"),
                        "PersistentVolumeClaim",
                    );
                    if let Some(Value::Array(sources)) = v.pointer_mut("/projected/sources") {
                        for s in sources {
                            fix(s.pointer_mut("/configMap/name"), "ConfigMap");
                            fix(s.pointer_mut("/secret/name"), "Secret");
                        }
                    }
                }
            }
            for list in ["initContainers", "containers", "ephemeralContainers"] {
                let Some(Value::Array(containers)) = spec.get_mut(list) else {
                    continue;
                };
                for c in containers {
                    if let Some(Value::Array(env)) = c.get_mut("env") {
                        for e in env {
                            fix(
                                e.pointer_mut("/valueFrom/configMapKeyRef/name"),
                                "ConfigMap",
                            );
                            fix(e.pointer_mut("/valueFrom/secretKeyRef/name"), "Secret");
                        }
                    }
                    if let Some(Value::Array(from)) = c.get_mut("envFrom") {
                        for f in from {
                            fix(f.pointer_mut("/configMapRef/name"), "ConfigMap");
                            fix(f.pointer_mut("/secretRef/name"), "Secret");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn common_labels_reach_selectors_and_templates() {
        let mut objects = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}}}}),
        ];
        let common = BTreeMap::from([("team".to_owned(), "ml".to_owned())]);
        labels(&mut objects, &common, &[]);
        assert_eq!(objects[0]["metadata"]["labels"]["team"], "ml");
        assert_eq!(objects[0]["spec"]["selector"]["matchLabels"]["team"], "ml");
        assert_eq!(
            objects[0]["spec"]["template"]["metadata"]["labels"]["team"],
            "ml"
        );
    }

    #[test]
    fn images_keep_or_replace_tag_and_digest() {
        let mut objects = vec![
            json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "ghcr.io/x/app:1"}, {"name": "b", "image": "other:2"}]}}}}),
        ];
        let o = ImageOverride {
            name: "ghcr.io/x/app".into(),
            new_tag: Some("2".into()),
            digest: Some("sha256:ab".into()),
            ..Default::default()
        };
        images(&mut objects, &[o]);
        let c = &objects[0]["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "ghcr.io/x/app:2@sha256:ab");
        assert_eq!(c[1]["image"], "other:2");
    }

    #[test]
    fn renames_follow_into_references() {
        let mut objects = vec![
            json!({"kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "app"}}}),
            json!({"kind": "Deployment", "spec": {"template": {"spec": {"volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}}}}),
        ];
        let renames = vec![
            Rename {
                kind: "Deployment".into(),
                from: "app".into(),
                to: "p-app".into(),
            },
            Rename {
                kind: "ConfigMap".into(),
                from: "cfg".into(),
                to: "cfg-abc".into(),
            },
        ];
        name_references(&mut objects, &renames);
        assert_eq!(objects[0]["spec"]["scaleTargetRef"]["name"], "p-app");
        assert_eq!(
            objects[1]["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
            "cfg-abc"
        );
    }
}
