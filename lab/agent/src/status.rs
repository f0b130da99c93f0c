//! A pod's status as the kubelet reports it, computed from what the agent
//! knows about its containers. Pure: no clock reads, no I/O.
//!
//! Guarantees: a pod is Ready only when every container is ready and the
//! condition of every readiness gate in its spec is True, as the kubelet
//! decides; the agent reports only the conditions it owns (the caller
//! merges them by type), so a gate's condition set by someone else is
//! never overwritten.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A finished run of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at: Time,
    pub finished_at: Time,
}

/// Where a container is, without the process handle.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Waiting { reason: String, message: String },
    Running { started_at: Time },
    Terminated(Terminated),
}

/// What the status needs to know of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub phase: Phase,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    /// The startup probe passed (or there is none) while running.
    pub started: bool,
    /// Running, started, and the readiness probe passed (or there is none).
    pub ready: bool,
    /// `ferry-lab://<pid>` while a process exists.
    pub container_id: Option<String>,
}

fn terminated_state(t: &Terminated, container_id: Option<&String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        started_at: Some(t.started_at.clone()),
        finished_at: Some(t.finished_at.clone()),
        container_id: container_id.cloned(),
        message: None,
    }
}

fn state_of(view: &ContainerView) -> ContainerState {
    match &view.phase {
        Phase::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (!message.is_empty()).then(|| message.clone()),
            }),
            ..ContainerState::default()
        },
        Phase::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started_at.clone()),
            }),
            ..ContainerState::default()
        },
        Phase::Terminated(t) => ContainerState {
            terminated: Some(terminated_state(t, view.container_id.as_ref())),
            ..ContainerState::default()
        },
    }
}

fn condition(kind: &str, ok: bool, since: &Time, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        last_transition_time: Some(since.clone()),
        reason: (!ok).then(|| reason.unwrap_or("ContainersNotReady").to_owned()),
        ..PodCondition::default()
    }
}

/// The status of a pod with these containers. `since` stamps the
/// conditions; the caller keeps earlier stamps for unchanged conditions
/// by passing the previous status to [`keep_transition_times`].
pub fn pod_status(
    containers: &[ContainerView],
    host_ip: &str,
    pod_ip: Option<&str>,
    start_time: &Time,
    since: &Time,
) -> PodStatus {
    let any_running = containers
        .iter()
        .any(|c| matches!(c.phase, Phase::Running { .. }));
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let phase = if any_running || containers.iter().any(|c| c.restart_count > 0) {
        "Running"
    } else {
        "Pending"
    };
    let statuses = containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: format!("ferry-lab://{}", c.image),
            container_id: c.container_id.clone(),
            ready: c.ready,
            started: Some(c.started),
            restart_count: c.restart_count,
            state: Some(state_of(c)),
            last_state: Some(
                c.last
                    .as_ref()
                    .map(|t| ContainerState {
                        terminated: Some(terminated_state(t, None)),
                        ..ContainerState::default()
                    })
                    .unwrap_or_default(),
            ),
            ..ContainerStatus::default()
        })
        .collect();
    PodStatus {
        phase: Some(phase.to_owned()),
        host_ip: Some(host_ip.to_owned()),
        host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP {
            ip: host_ip.to_owned(),
        }]),
        pod_ip: pod_ip.map(str::to_owned),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip: ip.to_owned() }]),
        start_time: Some(start_time.clone()),
        conditions: Some(vec![
            condition(
                "PodReadyToStartContainers",
                pod_ip.is_some(),
                since,
                Some("SandboxNotReady"),
            ),
            condition("Initialized", true, since, None),
            condition("ContainersReady", all_ready, since, None),
            condition("Ready", all_ready, since, None),
            condition("PodScheduled", true, since, None),
        ]),
        container_statuses: Some(statuses),
        ..PodStatus::default()
    }
}

/// Holds the Ready condition False while a readiness gate of `pod` is not
/// True (its condition missing or of another status), with the kubelet's
/// reason and message.
pub fn apply_readiness_gates(status: &mut PodStatus, pod: &Pod) {
    let gates = pod
        .spec
        .iter()
        .flat_map(|s| s.readiness_gates.iter().flatten());
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let mut unmet = None;
    for gate in gates {
        let found = conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == gate.condition_type);
        match found {
            Some(c) if c.status == "True" => {}
            Some(c) => {
                unmet = Some(format!(
                    "the status of pod readiness gate {:?} is not \"True\", but {}",
                    gate.condition_type, c.status
                ));
                break;
            }
            None => {
                unmet = Some(format!(
                    "corresponding condition of pod readiness gate {:?} does not exist.",
                    gate.condition_type
                ));
                break;
            }
        }
    }
    let Some(message) = unmet else { return };
    for c in status.conditions.iter_mut().flatten() {
        if c.type_ == "Ready" && c.status == "True" {
            c.status = "False".to_owned();
            c.reason = Some("ReadinessGatesNotReady".to_owned());
            c.message = Some(message.clone());
        }
    }
}

/// `status` as a strategic-merge patch: conditions merge by type, so a
/// reason or message a condition no longer has is sent as null (removed),
/// not left from before.
pub fn as_patch(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(conditions) = value
        .get_mut("conditions")
        .and_then(serde_json::Value::as_array_mut)
    {
        for condition in conditions
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            for field in ["reason", "message"] {
                condition.entry(field).or_insert(serde_json::Value::Null);
            }
        }
    }
    value
}

/// Keeps a condition's previous `lastTransitionTime` when its status did
/// not change, as the kubelet does.
pub fn keep_transition_times(new: &mut PodStatus, old: &PodStatus) {
    let Some(conditions) = new.conditions.as_mut() else {
        return;
    };
    for c in conditions {
        if let Some(prev) = old
            .conditions
            .iter()
            .flatten()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn view(phase: Phase, ready: bool) -> ContainerView {
        ContainerView {
            name: "app".into(),
            image: "app:1".into(),
            phase,
            last: None,
            restart_count: 0,
            started: ready,
            ready,
            container_id: None,
        }
    }

    fn condition_of<'a>(s: &'a PodStatus, kind: &str) -> &'a str {
        &s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
            .status
    }

    #[test]
    fn ready_only_when_every_container_is() {
        let running = Phase::Running {
            started_at: time(1),
        };
        let s = pod_status(
            &[view(running.clone(), true)],
            "127.0.1.1",
            Some("10.244.1.2"),
            &time(0),
            &time(2),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(condition_of(&s, "Ready"), "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
        let s = pod_status(
            &[
                view(running, true),
                view(
                    Phase::Running {
                        started_at: time(1),
                    },
                    false,
                ),
            ],
            "127.0.1.1",
            Some("10.244.1.2"),
            &time(0),
            &time(2),
        );
        assert_eq!(condition_of(&s, "Ready"), "False");
        assert_eq!(condition_of(&s, "ContainersReady"), "False");
    }

    #[test]
    fn a_readiness_gate_holds_ready_until_its_condition_is_true() {
        let running = Phase::Running {
            started_at: time(1),
        };
        let ready = pod_status(&[view(running, true)], "h", Some("p"), &time(0), &time(2));
        let pod = |conditions: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "spec": {"containers": [], "readinessGates": [{"conditionType": "ferry.dev/verified"}]},
                "status": {"conditions": conditions}
            }))
            .unwrap()
        };
        let ready_with = |conditions| {
            let mut s = ready.clone();
            apply_readiness_gates(&mut s, &pod(conditions));
            s
        };
        let missing = ready_with(serde_json::json!([]));
        assert_eq!(condition_of(&missing, "Ready"), "False");
        assert_eq!(condition_of(&missing, "ContainersReady"), "True");
        let reason = |s: &PodStatus| {
            let c = s
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap();
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        };
        assert_eq!(reason(&missing).0, "ReadinessGatesNotReady");
        assert!(reason(&missing).1.contains("does not exist"));
        let refused =
            ready_with(serde_json::json!([{"type": "ferry.dev/verified", "status": "False"}]));
        assert_eq!(condition_of(&refused, "Ready"), "False");
        assert!(reason(&refused).1.contains("but False"));
        let verified =
            ready_with(serde_json::json!([{"type": "ferry.dev/verified", "status": "True"}]));
        assert_eq!(condition_of(&verified, "Ready"), "True");
        // No gates: the containers decide.
        let mut plain = ready.clone();
        apply_readiness_gates(&mut plain, &Pod::default());
        assert_eq!(plain, ready);
        // Once True, the patch clears the reason the False left.
        let patch = as_patch(&verified);
        let conditions = patch["conditions"].as_array().unwrap();
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert!(ready["reason"].is_null() && ready.get("reason").is_some());
    }

    #[test]
    fn pull_errors_keep_the_pod_pending_with_the_reason() {
        let waiting = Phase::Waiting {
            reason: "ImagePullBackOff".into(),
            message: "not in the store".into(),
        };
        let s = pod_status(
            &[view(waiting, false)],
            "127.0.1.1",
            Some("10.244.1.2"),
            &time(0),
            &time(1),
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let state = s.container_statuses.unwrap()[0].state.clone().unwrap();
        assert_eq!(
            state.waiting.unwrap().reason.as_deref(),
            Some("ImagePullBackOff")
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let running = Phase::Running {
            started_at: time(1),
        };
        let old = pod_status(
            &[view(running.clone(), false)],
            "h",
            Some("p"),
            &time(0),
            &time(5),
        );
        let mut new = pod_status(&[view(running, true)], "h", Some("p"), &time(0), &time(9));
        keep_transition_times(&mut new, &old);
        let t = |s: &PodStatus, k: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == k)
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(t(&new, "PodScheduled"), Some(time(5)));
        assert_eq!(t(&new, "Ready"), Some(time(9)));
    }
}
