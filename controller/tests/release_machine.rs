//! The release state machine's holes, closed, on the real API server:
//! each scenario is one the review found where a failed release stayed
//! live or a fix waited (docs/controller.md, "The release as a state
//! machine"); the simulation (`tests/simulation.rs`) checks the same
//! properties under many more fault orders.
//!
//! Runs when FERRY_LAB_TESTS=1 (scripts/test sets it after lab/up).

mod common;
mod rollout;

use std::time::{Duration, Instant};

use common::{Lab, alone, condition, fault, history_results};
use ferry_lab_testkit::{k, kubectl, wait_until};
use rollout::{healthy_release, release, wait_rolled_back};

/// Waits until `commit` is applied (not yet judged).
fn wait_applied_only(lab: &Lab, commit: &str) {
    wait_until("the release to be applied", Duration::from_secs(60), || {
        lab.status("test")["lastAppliedRevision"] == format!("main@sha1:{commit}")
    });
}

/// Waits until the Deployment's controller has seen its current
/// generation (the release's pods are being made).
fn wait_observed(lab: &Lab) {
    wait_until(
        "the Deployment's generation to be observed",
        Duration::from_secs(60),
        || {
            lab.get("deployment", "placement")
                .is_some_and(|d| d["status"]["observedGeneration"] == d["metadata"]["generation"])
        },
    );
}

/// The review's point 4: until the Deployment controller has seen a
/// rollback's generation, the newest ReplicaSet is the crash-looping
/// release's, and the rollback was failed on its pods (a false
/// RollbackFailed). With kube-controller-manager stopped for 20 s from
/// before the verdict, the rollback waits for its own generation and
/// completes.
#[test]
fn a_rollback_is_not_failed_on_the_previous_release_s_pods() {
    let Some(_alone) = alone("a_rollback_is_not_failed_on_the_previous_release_s_pods") else {
        return;
    };
    let (lab, _, good) = healthy_release("rm-cm-paused", "");
    let bad = release(&lab, "ferry-lab-test/crash:1", "release: crashes");
    lab.reconcile_now("test");
    wait_applied_only(&lab, &bad);
    wait_observed(&lab);
    let since = Instant::now();
    let mut paused = fault(&["restart", "kube-controller-manager", "20"]);
    wait_rolled_back(&lab, &good, &bad, since);
    assert!(paused.wait().unwrap().success(), "lab/fault restart failed");
    let entries = history_results(&lab, "test");
    assert!(
        !entries.iter().any(|(result, _)| result == "RollbackFailed"),
        "a false RollbackFailed: {entries:?}\n{}",
        lab.log()
    );
}

/// The review's point 3: a fix pushed while a release that never becomes
/// ready is judged waited for that release's whole deadline (5 minutes by
/// default). Now the newer commit replaces it within one interval (10 s
/// here), with no webhook, and the replaced release is recorded
/// Superseded.
#[test]
fn a_fix_pushed_during_a_bad_release_is_applied_within_an_interval() {
    let Some(_alone) = alone("a_fix_pushed_during_a_bad_release_is_applied_within_an_interval")
    else {
        return;
    };
    let (lab, _, _) = healthy_release("rm-preempt", "");
    let bad = release(&lab, "ferry-lab-test/never-ready:1", "release: never ready");
    lab.reconcile_now("test");
    wait_applied_only(&lab, &bad);
    std::thread::sleep(Duration::from_secs(3));
    let fix = release(&lab, "ferry-lab-test/inference:2", "release: the fix");
    let pushed = Instant::now();
    wait_until("the fix to be applied", Duration::from_secs(60), || {
        lab.status("test")["lastAppliedRevision"] == format!("main@sha1:{fix}")
    });
    let waited = pushed.elapsed();
    eprintln!(
        "a fix pushed during a never-ready release: applied {:.1} s after the push",
        waited.as_secs_f64()
    );
    assert!(
        waited < Duration::from_secs(25),
        "the fix waited {waited:?} (interval 10 s)"
    );
    lab.wait_condition_within(
        "test",
        "Healthy",
        "True",
        "Healthy",
        None,
        Duration::from_secs(120),
    );
    let s = lab.status("test");
    assert_eq!(s["lastHealthyRevision"], format!("main@sha1:{fix}"), "{s}");
    let entries = history_results(&lab, "test");
    assert!(
        entries.contains(&("Superseded".to_owned(), format!("main@sha1:{bad}"))),
        "{entries:?}"
    );
}

/// The review's point 2: a deployer that may not list pods made judging
/// endless (the deadline lived where it never ran). Now the release fails
/// at its deadline: "could not observe".
#[test]
fn a_release_that_cannot_be_observed_fails_at_its_deadline() {
    let Some(_alone) = alone("a_release_that_cannot_be_observed_fails_at_its_deadline") else {
        return;
    };
    let (lab, _, _) = healthy_release("rm-blind", "");
    lab.environment(
        "test",
        "\n  healthCheck: {timeout: 20s}\n  rollback: {enabled: false}",
    );
    // The deployer loses `list pods` in its namespace only.
    let blind = format!("ferry-test-blind-{}", lab.target);
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {blind}}}\nrules:\n- apiGroups: [\"\"]\n  resources: [services, configmaps]\n  verbs: [get, create, patch, delete]\n- apiGroups: [apps]\n  resources: [deployments]\n  verbs: [get, create, patch, delete]\n- apiGroups: [apps]\n  resources: [replicasets]\n  verbs: [get, list]\n"
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&role));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k(&["delete", "rolebinding", "ferry-deployer", "-n", &lab.target]);
    k(&[
        "create",
        "rolebinding",
        "ferry-deployer",
        "-n",
        &lab.target,
        &format!("--clusterrole={blind}"),
        &format!("--serviceaccount={}:ferry-deployer", lab.target),
    ]);
    let next = release(&lab, "ferry-lab-test/inference:2", "release: judged blind");
    lab.reconcile_now("test");
    let s = lab.wait_condition_within(
        "test",
        "Healthy",
        "False",
        "HealthCheckFailed",
        None,
        Duration::from_secs(120),
    );
    k(&["delete", "clusterrole", &blind]);
    assert_eq!(s["failedRevision"], format!("main@sha1:{next}"), "{s}");
    let reason = s["failedReason"].as_str().unwrap_or("");
    assert!(reason.contains("could not observe"), "{s}");
    assert!(s.get("rollout").is_none(), "judging goes on: {s}");
}

/// The review's point 6: while a failed revision was held, hand edits
/// stayed until git moved. Now the healthy revision that runs is applied
/// again at every interval: a `kubectl scale` is set back.
#[test]
fn a_hand_edit_is_set_back_while_a_failed_revision_is_held() {
    let Some(_alone) = alone("a_hand_edit_is_set_back_while_a_failed_revision_is_held") else {
        return;
    };
    let (lab, _, good) = healthy_release("rm-held", "");
    let bad = release(&lab, "ferry-lab-test/crash:1", "release: crashes");
    let since = Instant::now();
    lab.reconcile_now("test");
    wait_rolled_back(&lab, &good, &bad, since);
    k(&[
        "scale",
        "deployment",
        "placement",
        "-n",
        &lab.target,
        "--replicas=3",
    ]);
    wait_until(
        "the hand edit to be set back",
        Duration::from_secs(40),
        || {
            lab.get("deployment", "placement")
                .is_some_and(|d| d["spec"]["replicas"] == 2)
        },
    );
    let s = lab.status("test");
    assert_eq!(
        s["failedRevision"],
        format!("main@sha1:{bad}"),
        "still held: {s}"
    );
    assert_eq!(condition(&s, "Healthy").0, "True", "{s}");
    let entries = history_results(&lab, "test");
    assert_eq!(
        entries
            .iter()
            .filter(|(_, r)| *r == format!("main@sha1:{bad}"))
            .count(),
        2,
        "the failed revision was not applied again: {entries:?}"
    );
}

/// The review's point 1: a 503 during a rollback ended it for good
/// (RollbackFailed) and the bad release stayed. Here the API answers 503
/// from the moment the gate fails; the rollback completes once it ends,
/// and each step is recorded once.
#[test]
fn a_rollback_interrupted_by_api_errors_completes_once_they_end() {
    let Some(_alone) = alone("a_rollback_interrupted_by_api_errors_completes_once_they_end") else {
        return;
    };
    let (mut lab, _, good) = healthy_release("rm-503", "");
    lab.use_api_proxy();
    let bad = release(&lab, "ferry-lab-test/crash:1", "release: crashes");
    let since = Instant::now();
    lab.reconcile_now("test");
    // The test reads the API server directly; the controller through the
    // proxy that the fault makes answer 503.
    wait_until("the gate to fail", Duration::from_secs(120), || {
        lab.status("test")["failedRevision"] == format!("main@sha1:{bad}")
    });
    let mut errors = fault(&["api-errors", "503", "20"]);
    assert!(
        errors.wait().unwrap().success(),
        "lab/fault api-errors failed"
    );
    wait_rolled_back(&lab, &good, &bad, since);
    let revision = |c: &str| format!("main@sha1:{c}");
    let entries = history_results(&lab, "test");
    let tail: Vec<(String, String)> = entries
        .iter()
        .filter(|(result, _)| !result.ends_with("Failed") || result == "HealthCheckFailed")
        .cloned()
        .collect();
    assert_eq!(
        tail[tail.len() - 4..],
        [
            ("Applied".to_owned(), revision(&bad)),
            ("HealthCheckFailed".to_owned(), revision(&bad)),
            ("RollingBack".to_owned(), revision(&good)),
            ("RolledBack".to_owned(), revision(&good)),
        ],
        "{entries:?}"
    );
    assert!(
        !entries.iter().any(|(result, _)| result == "RollbackFailed"),
        "{entries:?}\n{}",
        lab.log()
    );
}

/// The known gap the state machine left: a status write that failed right
/// after an apply left the status naming the revision that ran before,
/// and when git's head meanwhile did not render, it stayed so until git
/// moved (the healthy revision was even applied back over the release).
/// Now the release about to be applied is recorded first
/// (`status.applying`), and a step that finds that record unanswered
/// applies it again. Here the record is left as a failed status write
/// leaves it (written while the Environment is suspended), with git's head
/// a commit that does not render: the release is applied and judged, and
/// the record cleared.
#[test]
fn a_release_whose_apply_the_status_missed_is_applied_again() {
    let Some(_alone) = alone("a_release_whose_apply_the_status_missed_is_applied_again") else {
        return;
    };
    let (lab, _, good) = healthy_release("rm-unrecorded", "");
    lab.environment("test", "\n  suspend: true");
    lab.wait_condition("test", "Reconciling", "False", "Suspended", None);
    let missed = release(&lab, "ferry-lab-test/inference:2", "release: inference 2");
    lab.edit("kustomization.yaml", "app.yaml]", "app.yaml, gone.yaml]");
    let broken = lab.commit("names a file that is not there");
    let record = format!(
        "{{\"status\":{{\"applying\":{{\"revision\":\"main@sha1:{missed}\",\"placement\":{{\"path\":\"env\",\"targetNamespace\":\"{}\"}}}}}}}}",
        lab.target
    );
    let out = kubectl(
        &[
            "patch",
            "environment",
            "test",
            "-n",
            &lab.system,
            "--subresource=status",
            "--type=merge",
            "-p",
            &record,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.environment("test", "");
    lab.wait_condition_within(
        "test",
        "Healthy",
        "True",
        "Healthy",
        Some(&missed),
        Duration::from_secs(120),
    );
    let s = lab.status("test");
    assert_eq!(
        s["lastAppliedRevision"],
        format!("main@sha1:{missed}"),
        "{s}"
    );
    assert_eq!(
        s["lastHealthyRevision"],
        format!("main@sha1:{missed}"),
        "{s}"
    );
    assert!(s.get("applying").is_none(), "the record stays: {s}");
    assert_eq!(
        rollout::deployed_image(&lab),
        "ferry-lab-test/inference:2",
        "{s}"
    );
    // Then git's head is looked at again: it does not render.
    let s = lab.wait_condition("test", "Stalled", "True", "RenderFailed", Some(&broken));
    assert_eq!(
        s["lastAppliedRevision"],
        format!("main@sha1:{missed}"),
        "{s}"
    );
    let entries = history_results(&lab, "test");
    assert!(
        entries.contains(&("Applied".to_owned(), format!("main@sha1:{missed}"))),
        "{entries:?}"
    );
    assert_ne!(good, missed);
}
