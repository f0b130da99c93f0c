//! Verified before traffic (`healthCheck.beforeTraffic`): each new pod of
//! a release carries the readiness gate `ferry.dev/verified` (added at
//! render, see [`ferry_manifests::readiness`]), so it takes no traffic
//! until ferry sets that condition. Once a pod's containers are ready,
//! the HTTP checks addressed to pods (`{{.podIP}}`) are made against that
//! pod alone, and the prediction check ([`super::predictions`]) with the
//! cases of the release's commit; the condition then says True (the pod
//! becomes Ready, the rolling update goes on) or False with the failing
//! check (the release fails at once).
//!
//! Guarantees: a pod's condition is set once, by its verification, and
//! never changed afterwards (a False pod stays out of traffic); a pod
//! found False (by an earlier look, or before a controller restart) fails
//! the release as soon as it is seen; which pods need verifying is a pure
//! function of what was observed ([`pending`], [`refused`]), so a new
//! controller verifies the pods its predecessor left.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use ferry_manifests::object::ObjectRef;
use ferry_manifests::readiness::{GATED_KINDS, VERIFIED, is_gated};

use crate::crd::parse_interval;
use crate::crd::{HttpCheck, Predictions};

use super::checks::{self, HTTP_FAILURES};
use super::health::{Evidence, all_pods, condition, new_pods};
use super::observe::{NOTE_LIMIT, Observation, cap};
use super::predictions::{Case, Tally, agrees, class_of};

/// The reason of a pod's condition, and of the Warning, when it failed.
pub const REFUSED: &str = "VerificationFailed";

/// A gated pod of a release's new revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPod {
    /// The workload it belongs to (`Deployment.apps ns/name`).
    pub workload: String,
    pub namespace: String,
    pub name: String,
    pub ip: String,
}

/// Pods of the new revision of each gated workload.
fn gated_pods(observation: &Observation) -> Vec<(GatedPod, &Value)> {
    let mut found = Vec::new();
    for object in &observation.objects {
        let id = ObjectRef::of(object);
        if !GATED_KINDS.contains(&id.kind.as_str()) {
            continue;
        }
        for pod in new_pods(object, &observation.replica_sets, &observation.pods) {
            if !is_gated(pod) {
                continue;
            }
            let text = |pointer: &str| {
                pod.pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            found.push((
                GatedPod {
                    workload: id.to_string(),
                    namespace: text("/metadata/namespace"),
                    name: text("/metadata/name"),
                    ip: text("/status/podIP"),
                },
                pod,
            ));
        }
    }
    found
}

/// The status of condition `kind` of a pod, if it has one.
fn status_of<'a>(pod: &'a Value, kind: &str) -> Option<&'a str> {
    condition(pod, kind)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
}

/// The gated pods whose containers are ready and that have no verdict
/// yet: the ones to verify now.
pub fn pending(observation: &Observation) -> Vec<GatedPod> {
    gated_pods(observation)
        .into_iter()
        .filter(|(p, pod)| {
            !p.ip.is_empty()
                && pod.pointer("/metadata/deletionTimestamp").is_none()
                && status_of(pod, "ContainersReady") == Some("True")
                && status_of(pod, VERIFIED).is_none()
        })
        .map(|(p, _)| p)
        .collect()
}

/// The first gated pod of the new revision that failed its verification,
/// as the evidence that fails the release.
pub fn refused(observation: &Observation) -> Option<Evidence> {
    gated_pods(observation).into_iter().find_map(|(p, pod)| {
        (status_of(pod, VERIFIED) == Some("False")).then(|| {
            let why = condition(pod, VERIFIED)
                .and_then(|c| c.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("no reason recorded");
            refusal(&p, why)
        })
    })
}

/// How the gated pods of the new revision were verified, for the history
/// entry of a release that passed: how many, and what their verdicts said
/// (each distinct one once). `None` when no pod is gated.
pub fn summary(observation: &Observation) -> Option<String> {
    let mut said: Vec<String> = Vec::new();
    let mut verified = 0;
    for (_, pod) in gated_pods(observation) {
        if status_of(pod, VERIFIED) != Some("True") {
            continue;
        }
        verified += 1;
        let message = condition(pod, VERIFIED)
            .and_then(|c| c.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !message.is_empty() && !said.contains(&message) {
            said.push(message);
        }
    }
    (verified > 0).then(|| {
        let pods = if verified == 1 { "pod" } else { "pods" };
        cap(
            &format!(
                "{verified} {pods} verified before traffic: {}",
                said.join(" | ")
            ),
            NOTE_LIMIT,
        )
    })
}

/// The evidence of a pod that failed its verification.
pub fn refusal(pod: &GatedPod, why: &str) -> Evidence {
    Evidence {
        object: pod.workload.clone(),
        summary: format!(
            "pod {} failed its verification before traffic: {why}",
            pod.name
        ),
        pods: Vec::new(),
    }
}

/// The checks a pod is verified with: those addressed to each pod.
pub fn per_pod(checks: &[HttpCheck]) -> Vec<&HttpCheck> {
    checks
        .iter()
        .filter(|c| c.url.contains("{{.podIP}}"))
        .collect()
}

/// A Ready pod of the revision that runs (not the new one) of a gated
/// workload: what `compareWithRunning` asks.
pub fn running_pod(observation: &Observation) -> Option<String> {
    observation.objects.iter().find_map(|object| {
        if !GATED_KINDS.contains(&ObjectRef::of(object).kind.as_str()) {
            return None;
        }
        let new: Vec<&Value> = new_pods(object, &observation.replica_sets, &observation.pods);
        all_pods(object, &observation.replica_sets, &observation.pods)
            .into_iter()
            .filter(|p| !new.iter().any(|n| std::ptr::eq(*n, *p)))
            .filter(|p| status_of(p, "Ready") == Some("True"))
            .find_map(|p| p.pointer("/status/podIP").and_then(Value::as_str))
            .map(str::to_owned)
    })
}

/// What every pod of a look is verified with.
pub struct Plan<'a> {
    /// The HTTP checks addressed to each pod.
    pub checks: Vec<&'a HttpCheck>,
    /// The prediction check and its cases (from the release's commit).
    pub predictions: Option<(&'a Predictions, Vec<Case>)>,
    /// What a pod of the running revision answered the cases, for
    /// `compareWithRunning` (`None`: no such pod, or not asked).
    pub running: Option<Vec<Value>>,
}

/// Sends each case's request to the pod at `ip` (8 at a time, in order),
/// and returns the answers; an error names the case.
pub async fn ask(
    http: &reqwest::Client,
    url: &str,
    ip: &str,
    cases: &[Case],
) -> Result<Vec<Value>, String> {
    let url = checks::pod_url(url, ip);
    let requests: Vec<(usize, String)> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| (i + 1, case.request.to_string()))
        .collect();
    futures::stream::iter(requests)
        .map(|(number, body)| ask_one(http.clone(), url.clone(), number, body))
        .buffered(8)
        .try_collect()
        .await
}

/// One case's request and its answer (owned arguments: the futures of
/// [`ask`] borrow nothing).
async fn ask_one(
    http: reqwest::Client,
    url: String,
    number: usize,
    body: String,
) -> Result<Value, String> {
    let failed = |why: String| format!("case {number}: {why}");
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| failed(format!("no answer: {}", e.without_url())))?;
    let status = response.status().as_u16();
    let body = checks::read_body(response).await.map_err(failed)?;
    if !(200..300).contains(&status) {
        return Err(failed(format!("status {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| failed(format!("the answer is not JSON: {e}")))
}

/// Verifies one pod: the HTTP checks, then the predictions. On success, a
/// line for the Event; `Err` names what failed and its answer.
pub async fn verify(http: &reqwest::Client, plan: &Plan<'_>, ip: &str) -> Result<String, String> {
    check_http(http, &plan.checks, ip).await?;
    let mut said = Vec::new();
    if !plan.checks.is_empty() {
        said.push(format!("{} HTTP checks passed", plan.checks.len()));
    }
    if let Some((spec, cases)) = &plan.predictions {
        let answers = ask(http, &spec.url, ip, cases)
            .await
            .map_err(|why| format!("predictions: {why}"))?;
        let wanted: Vec<Value> = cases.iter().map(|c| c.answer.clone()).collect();
        let tally = Tally::of(&wanted, &answers, agrees);
        if !tally.within(spec.max_disagreement) {
            return Err(format!(
                "predictions: not the model CI gated: {}",
                tally.describe(spec.max_disagreement)
            ));
        }
        said.push(format!(
            "{} of {} predictions as CI's model",
            tally.cases - tally.disagreements,
            tally.cases
        ));
        if let (Some(compare), Some(running)) = (&spec.compare_with_running, &plan.running) {
            let classes = |answers: &[Value]| answers.iter().map(class_of).collect::<Vec<_>>();
            let tally = Tally::of(&classes(running), &classes(&answers), |a, b| a == b);
            if !tally.within(compare.max_disagreement) {
                return Err(format!(
                    "predictions: too many classes change against the running revision: {}",
                    tally.describe(compare.max_disagreement)
                ));
            }
            said.push(format!(
                "{} of {} classes changed against the running revision",
                tally.disagreements, tally.cases
            ));
        }
    }
    if said.is_empty() {
        said.push("containers ready; no check is addressed to pods".to_owned());
    }
    Ok(said.join("; "))
}

/// Each check must pass `successThreshold` attempts in a row, `period`
/// apart, and fails after [`HTTP_FAILURES`] in a row.
async fn check_http(http: &reqwest::Client, checks: &[&HttpCheck], ip: &str) -> Result<(), String> {
    let ips = [ip.to_owned()];
    for check in checks {
        let needed = check.success_threshold.max(1);
        let period = parse_interval(&check.period)
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(10));
        let (mut streak, mut failures) = (0, 0);
        loop {
            let attempt = checks::attempt(http, check, &ips).await;
            if attempt.ok {
                streak += 1;
                failures = 0;
                if streak >= needed {
                    break;
                }
            } else {
                streak = 0;
                failures += 1;
                if failures >= HTTP_FAILURES {
                    return Err(attempt.detail);
                }
            }
            tokio::time::sleep(period).await;
        }
    }
    Ok(())
}

/// Sets the pod's condition `ferry.dev/verified` (a strategic merge of
/// `status.conditions`, by type, as the kubelet writes its own).
pub async fn set_verdict(
    client: &Client,
    pod: &GatedPod,
    verdict: &Result<String, String>,
) -> Result<(), kube::Error> {
    let (status, reason, message) = match verdict {
        Ok(said) => ("True", "Verified", cap(said, NOTE_LIMIT)),
        Err(why) => ("False", REFUSED, cap(why, NOTE_LIMIT)),
    };
    let patch = json!({"status": {"conditions": [{
        "type": VERIFIED,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    pods.patch_status(
        &pod.name,
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(pods: Vec<Value>) -> Observation {
        Observation {
            objects: vec![json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "dev", "uid": "d1"}})],
            replica_sets: vec![
                json!({"metadata": {"name": "web-2", "namespace": "dev", "uid": "rs2",
                "annotations": {"deployment.kubernetes.io/revision": "2"},
                "ownerReferences": [{"uid": "d1"}]}}),
            ],
            pods,
        }
    }

    fn pod(name: &str, gated: bool, conditions: Value) -> Value {
        let gates = if gated {
            json!([{"conditionType": VERIFIED}])
        } else {
            json!([])
        };
        json!({"metadata": {"name": name, "namespace": "dev", "ownerReferences": [{"uid": "rs2"}]},
               "spec": {"readinessGates": gates},
               "status": {"podIP": "10.0.0.1", "conditions": conditions}})
    }

    #[test]
    fn ready_gated_pods_without_a_verdict_are_pending() {
        let ready = json!([{"type": "ContainersReady", "status": "True"}]);
        let seen = observation(vec![
            pod("a", true, ready.clone()),
            pod(
                "b",
                true,
                json!([{"type": "ContainersReady", "status": "False"}]),
            ),
            pod("c", false, ready.clone()),
            pod(
                "d",
                true,
                json!([{"type": "ContainersReady", "status": "True"}, {"type": VERIFIED, "status": "True"}]),
            ),
        ]);
        let names: Vec<String> = pending(&seen).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(refused(&seen), None);
    }

    #[test]
    fn a_refused_pod_is_the_evidence_of_a_failed_release() {
        let seen = observation(vec![pod(
            "a",
            true,
            json!([{"type": VERIFIED, "status": "False", "message": "POST http://10.0.0.1:9696/predict: status 500"}]),
        )]);
        let evidence = refused(&seen).unwrap();
        assert_eq!(evidence.object, "Deployment.apps dev/web");
        assert!(
            evidence
                .summary
                .contains("pod a failed its verification before traffic: POST")
        );
        assert!(pending(&seen).is_empty());
    }

    #[test]
    fn a_passing_release_says_how_its_pods_were_verified() {
        let passed = |name: &str| {
            pod(
                name,
                true,
                json!([{"type": VERIFIED, "status": "True", "message": "50 of 50 predictions as CI's model"}]),
            )
        };
        let seen = observation(vec![passed("a"), passed("b"), pod("c", false, json!([]))]);
        assert_eq!(
            summary(&seen).as_deref(),
            Some("2 pods verified before traffic: 50 of 50 predictions as CI's model")
        );
        assert_eq!(
            summary(&observation(vec![pod("c", false, json!([]))])),
            None
        );
    }

    #[test]
    fn only_checks_addressed_to_pods_verify_a_pod() {
        let checks: Vec<HttpCheck> = [
            "http://{{.podIP}}:9696/v2/health/ready",
            "http://placement/predict",
        ]
        .iter()
        .map(|u| serde_json::from_value(json!({"url": u})).unwrap())
        .collect();
        let chosen: Vec<&str> = per_pod(&checks).iter().map(|c| c.url.as_str()).collect();
        assert_eq!(chosen, ["http://{{.podIP}}:9696/v2/health/ready"]);
    }
}
