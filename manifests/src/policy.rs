//! Policy rules over rendered manifests: what every environment must
//! satisfy, and what production must satisfy on top.
//!
//! The rules are plain functions over parsed objects, so the same findings
//! come out of the test suite, the pull-request review and the controller.
//! A finding names the object and the rule, and says what to change.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// The rules, each with a stable name used in findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Every container sets CPU and memory limits.
    Limits,
    /// Every container of a long-running workload has readiness and
    /// liveness probes.
    Probes,
    /// No container may run as root.
    NonRoot,
    /// Images carry a tag other than `latest`, or a digest.
    ImageTag,
    /// Production runs at least two replicas (the autoscaler's minimum
    /// when one targets the workload).
    ProdReplicas,
    /// Production workloads are covered by a PodDisruptionBudget.
    ProdDisruptionBudget,
    /// Production images are pinned by digest.
    ProdDigest,
    /// Pod Security is never relaxed through git: a Namespace enforces
    /// `restricted` (its audit and warn levels, when set, too), and no pod
    /// is privileged, shares the node's network, PID or IPC namespace, or
    /// mounts a path of the node.
    PodSecurity,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Limits => "container-limits",
            Rule::Probes => "container-probes",
            Rule::NonRoot => "non-root",
            Rule::ImageTag => "image-tag",
            Rule::ProdReplicas => "prod-replicas",
            Rule::ProdDisruptionBudget => "prod-disruption-budget",
            Rule::ProdDigest => "prod-image-digest",
            Rule::PodSecurity => "pod-security",
        }
    }
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `Kind/namespace/name`.
    pub object: String,
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}]: {}",
            self.object,
            self.rule.name(),
            self.message
        )
    }
}

/// Which rule set applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Standard,
    Production,
}

impl Tier {
    /// `prod` and `production` environments are production.
    pub fn of_environment(name: &str) -> Self {
        if matches!(name, "prod" | "production") {
            Tier::Production
        } else {
            Tier::Standard
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn id(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        str_at(object, &["kind"]).unwrap_or("?"),
        str_at(object, &["metadata", "namespace"]).unwrap_or("-"),
        str_at(object, &["metadata", "name"]).unwrap_or("?")
    )
}

/// The pod template of a workload, and whether it runs continuously.
fn pod_template(object: &Value) -> Option<(&Value, bool)> {
    match str_at(object, &["kind"])? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
            Some((object.get("spec")?.get("template")?, true))
        }
        "Job" => Some((object.get("spec")?.get("template")?, false)),
        "CronJob" => Some((object.pointer("/spec/jobTemplate/spec/template")?, false)),
        "Pod" => Some((object, true)),
        _ => None,
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) else {
        return false;
    };
    !match_labels.is_empty() && match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Checks rendered objects against the rules of `tier`. Findings are
/// sorted, so the output is stable.
pub fn check(objects: &[Value], tier: Tier) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut push = |object: &Value, rule: Rule, message: String| {
        findings.push(Finding {
            object: id(object),
            rule,
            message,
        });
    };
    // HPA targets by (namespace, kind, name) -> minReplicas.
    let autoscaled: BTreeMap<(String, String, String), i64> = objects
        .iter()
        .filter(|o| str_at(o, &["kind"]) == Some("HorizontalPodAutoscaler"))
        .filter_map(|o| {
            let ns = str_at(o, &["metadata", "namespace"])
                .unwrap_or("")
                .to_owned();
            let kind = str_at(o, &["spec", "scaleTargetRef", "kind"])?.to_owned();
            let name = str_at(o, &["spec", "scaleTargetRef", "name"])?.to_owned();
            Some((
                (ns, kind, name),
                o.pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1),
            ))
        })
        .collect();
    let budgets: Vec<&Value> = objects
        .iter()
        .filter(|o| str_at(o, &["kind"]) == Some("PodDisruptionBudget"))
        .collect();

    for object in objects {
        if str_at(object, &["kind"]) == Some("Namespace") {
            for message in relaxed_pod_security(object) {
                push(object, Rule::PodSecurity, message);
            }
        }
        let Some((template, long_running)) = pod_template(object) else {
            continue;
        };
        let pod_spec = template.get("spec").unwrap_or(&Value::Null);
        for message in host_access(pod_spec) {
            push(object, Rule::PodSecurity, message);
        }
        let pod_security = pod_spec.get("securityContext").unwrap_or(&Value::Null);
        let containers = ["initContainers", "containers"].iter().flat_map(|k| {
            pod_spec
                .get(*k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(move |c| (*k, c))
        });
        for (list, container) in containers {
            let name = str_at(container, &["name"]).unwrap_or("?");
            let limits = container.pointer("/resources/limits");
            for resource in ["cpu", "memory"] {
                if limits.and_then(|l| l.get(resource)).is_none() {
                    push(
                        object,
                        Rule::Limits,
                        format!(
                            "container {name} has no {resource} limit; set resources.limits.{resource}"
                        ),
                    );
                }
            }
            if long_running && list == "containers" {
                for probe in ["readinessProbe", "livenessProbe"] {
                    if container.get(probe).is_none() {
                        push(
                            object,
                            Rule::Probes,
                            format!(
                                "container {name} has no {probe}; add one so rollouts and restarts follow its health"
                            ),
                        );
                    }
                }
            }
            let security = container.get("securityContext").unwrap_or(&Value::Null);
            let setting = |key: &str| security.get(key).or_else(|| pod_security.get(key));
            let run_as_user = setting("runAsUser").and_then(Value::as_i64);
            let non_root = setting("runAsNonRoot").and_then(Value::as_bool) == Some(true);
            if run_as_user == Some(0) || (!non_root && run_as_user.is_none()) {
                push(
                    object,
                    Rule::NonRoot,
                    format!(
                        "container {name} may run as root; set securityContext.runAsNonRoot: true and a non-zero runAsUser"
                    ),
                );
            }
            let image = str_at(container, &["image"]).unwrap_or("");
            let (repository, tag, digest) = crate::image::parse(image);
            if digest.is_none() && tag.is_none_or(|t| t == "latest") {
                push(
                    object,
                    Rule::ImageTag,
                    format!(
                        "container {name} uses image {image:?} without a fixed tag; use a release tag or a digest, not latest"
                    ),
                );
            }
            if tier == Tier::Production && digest.is_none_or(|d| !d.starts_with("sha256:")) {
                push(
                    object,
                    Rule::ProdDigest,
                    format!(
                        "container {name} uses image {image:?}, not pinned by digest; production images are {repository}@sha256:..."
                    ),
                );
            }
        }
        if tier == Tier::Production && long_running && str_at(object, &["kind"]) != Some("Pod") {
            let key = (
                str_at(object, &["metadata", "namespace"])
                    .unwrap_or("")
                    .to_owned(),
                str_at(object, &["kind"]).unwrap_or("").to_owned(),
                str_at(object, &["metadata", "name"])
                    .unwrap_or("")
                    .to_owned(),
            );
            let (replicas, source) = match autoscaled.get(&key) {
                Some(min) => (*min, "its HorizontalPodAutoscaler's minReplicas"),
                None => (
                    object
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1),
                    "spec.replicas",
                ),
            };
            if str_at(object, &["kind"]) != Some("DaemonSet") && replicas < 2 {
                push(
                    object,
                    Rule::ProdReplicas,
                    format!("{source} is {replicas}; production runs at least 2 replicas"),
                );
            }
            let labels = template.pointer("/metadata/labels").unwrap_or(&Value::Null);
            let covered = budgets.iter().any(|b| {
                str_at(b, &["metadata", "namespace"]) == str_at(object, &["metadata", "namespace"])
                    && b.pointer("/spec/selector")
                        .is_some_and(|s| labels_match(s, labels))
            });
            if !covered {
                push(object, Rule::ProdDisruptionBudget, "no PodDisruptionBudget selects its pods; add one with minAvailable of at least 1".into());
            }
        }
    }
    findings.sort();
    findings
}

/// The Pod Security labels of a Namespace that are weaker than
/// `restricted` (or missing, for `enforce`: the cluster's default applies
/// then, `privileged` unless configured otherwise).
fn relaxed_pod_security(namespace: &Value) -> Vec<String> {
    const PREFIX: &str = "pod-security.kubernetes.io/";
    let labels = namespace.pointer("/metadata/labels");
    let label = |key: &str| {
        labels
            .and_then(|l| l.get(format!("{PREFIX}{key}")))
            .map(|v| v.as_str().unwrap_or("").to_owned())
    };
    let mut found = Vec::new();
    match label("enforce") {
        Some(level) if level == "restricted" => {}
        Some(level) => found.push(format!(
            "label {PREFIX}enforce is {level:?}; environments enforce \"restricted\""
        )),
        None => found.push(format!(
            "no label {PREFIX}enforce; set it to \"restricted\" (without it the cluster's default applies)"
        )),
    }
    for mode in ["audit", "warn"] {
        if let Some(level) = label(mode).filter(|l| l != "restricted") {
            found.push(format!(
                "label {PREFIX}{mode} is {level:?}; set it to \"restricted\" or leave it out"
            ));
        }
    }
    for mode in ["enforce", "audit", "warn"] {
        let key = format!("{mode}-version");
        if let Some(version) = label(&key).filter(|v| v != "latest") {
            found.push(format!(
                "label {PREFIX}{key} is {version:?}; an older version of the rules may allow more: leave it out or set \"latest\""
            ));
        }
    }
    found
}

/// What a pod spec takes from the node: privileged containers, the node's
/// network, PID or IPC namespace, paths of its filesystem.
fn host_access(pod_spec: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod_spec.get(key).and_then(Value::as_bool) == Some(true) {
            found.push(format!(
                "{key} is true; pods of an environment stay in their own namespaces"
            ));
        }
    }
    let volumes = pod_spec.get("volumes").and_then(Value::as_array);
    for volume in volumes.into_iter().flatten() {
        if volume.get("hostPath").is_some() {
            let name = str_at(volume, &["name"]).unwrap_or("?");
            found.push(format!(
                "volume {name} mounts a path of the node (hostPath); use a volume of the cluster"
            ));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let containers = pod_spec.get(list).and_then(Value::as_array);
        for container in containers.into_iter().flatten() {
            if container
                .pointer("/securityContext/privileged")
                .and_then(Value::as_bool)
                == Some(true)
            {
                let name = str_at(container, &["name"]).unwrap_or("?");
                found.push(format!(
                    "container {name} is privileged; remove securityContext.privileged"
                ));
            }
        }
    }
    found
}

/// Parses multi-document YAML (as `kubectl kustomize` prints) into objects.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, serde_norway::Error> {
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(container: Value, replicas: Option<i64>) -> Value {
        let mut d = json!({
            "kind": "Deployment",
            "metadata": {"name": "app", "namespace": "ns"},
            "spec": {"template": {"metadata": {"labels": {"app": "x"}},
                      "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000}, "containers": [container]}}}
        });
        if let Some(r) = replicas {
            d["spec"]["replicas"] = json!(r);
        }
        d
    }

    fn good_container(image: &str) -> Value {
        json!({"name": "c", "image": image,
               "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
               "readinessProbe": {}, "livenessProbe": {}})
    }

    fn rules(findings: &[Finding]) -> Vec<Rule> {
        findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn a_good_workload_passes() {
        assert_eq!(
            check(
                &[deployment(good_container("app:1.0"), None)],
                Tier::Standard
            ),
            []
        );
    }

    #[test]
    fn each_standard_rule_fires() {
        let bare = json!({"name": "c", "image": "app"});
        let findings = check(&[deployment(bare, None)], Tier::Standard);
        assert_eq!(
            rules(&findings),
            [
                Rule::Limits,
                Rule::Limits,
                Rule::Probes,
                Rule::Probes,
                Rule::ImageTag
            ]
        );
        assert!(
            findings[0]
                .to_string()
                .starts_with("Deployment/ns/app [container-limits]: container c has no cpu limit")
        );
        let mut root = good_container("app:latest");
        root["securityContext"] = json!({"runAsUser": 0});
        assert_eq!(
            rules(&check(&[deployment(root, None)], Tier::Standard)),
            [Rule::NonRoot, Rule::ImageTag]
        );
    }

    #[test]
    fn production_wants_replicas_budget_and_digest() {
        let d = deployment(good_container("app:1.0"), Some(1));
        assert_eq!(
            rules(&check(std::slice::from_ref(&d), Tier::Production)),
            [
                Rule::ProdReplicas,
                Rule::ProdDisruptionBudget,
                Rule::ProdDigest
            ]
        );
        let pinned = deployment(good_container("app:1.0@sha256:abc"), Some(1));
        let hpa = json!({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "app", "namespace": "ns"},
                         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "app"}, "minReplicas": 2}});
        let pdb = json!({"kind": "PodDisruptionBudget", "metadata": {"name": "app", "namespace": "ns"},
                         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}});
        assert_eq!(check(&[pinned, hpa, pdb], Tier::Production), []);
    }

    /// The review's reproduction: the deployer may patch its own
    /// Namespace, so a pull request setting `privileged` passed the rules.
    #[test]
    fn pod_security_is_never_relaxed_through_git() {
        let namespace = |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", "labels": labels}});
        let kept = namespace(json!({"pod-security.kubernetes.io/enforce": "restricted",
                                    "pod-security.kubernetes.io/warn": "restricted"}));
        assert_eq!(check(&[kept], Tier::Standard), []);
        for (labels, expected) in [
            (
                json!({"pod-security.kubernetes.io/enforce": "privileged"}),
                1,
            ),
            (json!({}), 1),
            (
                json!({"pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/audit": "baseline",
                    "pod-security.kubernetes.io/enforce-version": "v1.24"}),
                2,
            ),
            (json!({"pod-security.kubernetes.io/enforce": 7}), 1),
        ] {
            let findings = check(&[namespace(labels.clone())], Tier::Standard);
            assert_eq!(findings.len(), expected, "{labels}: {findings:#?}");
            assert!(
                findings
                    .iter()
                    .all(|f| f.rule == Rule::PodSecurity && f.object == "Namespace/-/dev")
            );
        }
        let mut host = deployment(good_container("app:1.0"), None);
        host["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        host["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "root", "hostPath": {"path": "/"}}]);
        host["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
            json!({"privileged": true});
        let findings = check(&[host], Tier::Standard);
        assert_eq!(rules(&findings), [Rule::PodSecurity; 3], "{findings:#?}");
    }
}
