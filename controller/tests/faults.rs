//! What the controller does when things around it break, with faults the
//! lab makes on demand (`lab/fault`), against the real
//! `ferry-controller run`. Each scenario ends with the Environment on the
//! right revision and its history verified.
//!
//! Runs when FERRY_LAB_TESTS=1 (scripts/test sets it after lab/up).

mod common;
mod rollout;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, alone, condition, fault, history_results};
use ferry_lab_testkit::{k, kubectl, wait_until};
use rollout::{
    Traffic, assert_bystander_untouched, healthy_release, release, wait_healthy, wait_rolled_back,
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A git remote that accepts connections and never answers: the
/// Environment says so (`Reconciling`, the fetch's timeout), another
/// Environment keeps reconciling meanwhile, and the first recovers by
/// itself once the remote answers.
#[test]
fn a_hanging_git_remote_is_reported_and_recovered_from_without_holding_others() {
    let Some(_alone) =
        alone("a_hanging_git_remote_is_reported_and_recovered_from_without_holding_others")
    else {
        return;
    };
    let (lab, _) = Lab::running("flt-git", "ctrl-test", "");
    // A second path of the same repository, for the Environment whose
    // remote hangs (its objects are its own).
    let other = lab.repo.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("config.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: from-git-daemon, namespace: {}}}\ndata: {{served: \"yes\"}}\n",
            lab.target
        ),
    )
    .unwrap();
    lab.commit("a second path");

    let port = free_port();
    let mut hang = fault(&["git-hang", &port.to_string(), "45"]);
    let started = Instant::now();
    wait_until(
        "the hanging remote to listen",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let manifest = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {{name: hung, namespace: {}}}\nspec:\n  source: {{url: \"git://127.0.0.1:{port}/repo\", ref: main, path: other, timeout: 10s}}\n  interval: 10s\n  targetNamespace: {}\n  serviceAccountName: ferry-deployer\n",
        lab.system, lab.target
    );
    let out = kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reported: still trying, and why.
    let s = lab.wait_condition_within(
        "hung",
        "Reconciling",
        "True",
        "FetchFailed",
        None,
        Duration::from_secs(40),
    );
    let message = condition(&s, "Reconciling").2;
    assert!(
        message.contains("no answer within 10 s") || message.contains("timed out"),
        "{message}"
    );
    assert_eq!(condition(&s, "Ready").0, "False", "{s}");

    // Meanwhile the other Environment is not held up: a new commit applies.
    lab.edit("config.yaml", "mode: fast", "mode: faster");
    let during = lab.commit("applied while the other remote hangs");
    lab.wait_applied("test", &during);
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the commit was applied only after the hang ended"
    );
    let _ = hang.wait();

    // The remote answers now: the Environment recovers by itself.
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            &format!("--base-path={}", lab.work.display()),
            &format!("--port={port}"),
            "--listen=127.0.0.1",
        ])
        .arg(&lab.work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon runs");
    let head = lab.commit("nothing new");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = lab.status("hung");
        if s["lastAppliedRevision"] == format!("main@sha1:{head}")
            && condition(&s, "Ready").0 == "True"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {s:#}\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let served = k(&[
        "get",
        "configmap",
        "-n",
        &lab.target,
        "from-git-daemon",
        "-o",
        "jsonpath={.data.served}",
    ]);
    assert_eq!(served.trim(), "yes");
    // The failure was recorded once, not once per retry.
    let said = lab.verified_history("hung");
    assert!(said.contains("verified"), "{said}");
    let entries = lab.history("hung");
    let failures = entries
        .iter()
        .filter(|e| e["result"] == "FetchFailed")
        .count();
    assert_eq!(failures, 1, "{entries:#?}");
    assert_eq!(entries.last().unwrap()["result"], "Healthy", "{entries:#?}");
    lab.verified_history("test");
}

/// etcd frozen for 20 s in the middle of a sync: requests time out, the
/// controller backs off and finishes once etcd thaws, without `Stalled`.
#[test]
fn a_frozen_etcd_during_a_sync_delays_it_but_does_not_stall_it() {
    let Some(_alone) = alone("a_frozen_etcd_during_a_sync_delays_it_but_does_not_stall_it") else {
        return;
    };
    let (lab, _) = Lab::running("flt-etcd", "ctrl-test", "");
    lab.edit("config.yaml", "mode: fast", "mode: frozen");
    let next = lab.commit("committed while etcd is frozen");
    let mut pause = fault(&["etcd-pause", "20"]);
    std::thread::sleep(Duration::from_millis(500));
    // The request for a reconcile cannot even be written while etcd is
    // frozen; the interval (10 s) brings the commit in.
    let frozen_until = Instant::now() + Duration::from_secs(20);
    let mut stalled = false;
    while Instant::now() < frozen_until {
        let s = lab.status("test");
        stalled |= condition(&s, "Stalled").0 == "True";
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = pause.wait();
    lab.wait_applied("test", &next);
    let s = lab.status("test");
    assert!(!stalled, "Stalled while etcd was frozen: {s:#}");
    assert_eq!(condition(&s, "Ready").0, "True", "{s:#}");
    let mode = k(&[
        "get",
        "configmap",
        "-n",
        &lab.target,
        "settings",
        "-o",
        "jsonpath={.data.mode}",
    ]);
    assert_eq!(mode.trim(), "frozen");
    lab.verified_history("test");
}

/// The results and revisions of Environment `name`'s history, which must
/// verify.
/// The API server restarts while a good release is being applied: the
/// release ends healthy, each step is in the history once, and clients
/// through the LoadBalancer see no failed request.
#[test]
fn an_api_server_restart_during_a_good_release_loses_nothing() {
    let Some(_alone) = alone("an_api_server_restart_during_a_good_release_loses_nothing") else {
        return;
    };
    let (lab, address, first) = healthy_release("flt-api", "");
    let traffic = Traffic::start(address);
    let good = release(
        &lab,
        "ferry-lab-test/inference:2",
        "release: good, during a restart",
    );
    lab.reconcile_now("test");
    std::thread::sleep(Duration::from_millis(300));
    let mut restart = fault(&["apiserver-restart", "3"]);
    let status = restart.wait().unwrap();
    assert!(status.success(), "lab/fault apiserver-restart failed");
    // The lab's controller-manager needs up to a minute to resume its
    // watches (the new API server refuses them until its RBAC cache is
    // filled, then client-go backs off), and the rollout waits for it.
    lab.reconcile_now("test");
    let deadline = Instant::now() + Duration::from_secs(180);
    while lab.status("test")["lastHealthyRevision"] != format!("main@sha1:{good}") {
        assert!(
            Instant::now() < deadline,
            "the release never became healthy: {:#}\n{}",
            lab.status("test"),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_healthy(&lab, &good);
    let (ok, failed) = traffic.stop();
    eprintln!("API server restart mid-release: {ok} requests ok, {failed} failed");
    assert_eq!(failed, 0, "clients saw failures through the LoadBalancer");
    assert!(ok > 10);
    let revision = |c: &str| format!("main@sha1:{c}");
    assert_eq!(
        history_results(&lab, "test"),
        [
            ("Applied".to_owned(), revision(&first)),
            ("Healthy".to_owned(), revision(&first)),
            ("Applied".to_owned(), revision(&good)),
            ("Healthy".to_owned(), revision(&good)),
        ]
    );
    assert_bystander_untouched(&lab);
}

/// The API server answers 429 for 30 s during one good release, then 503
/// (open watches cut too) for 30 s during the next: the controller backs
/// off and retries, never reports `Stalled`, both releases end healthy
/// with each step once in the history, and clients see no failure.
#[test]
fn throttled_or_unavailable_api_delays_a_release_but_never_stalls_it() {
    let Some(_alone) = alone("throttled_or_unavailable_api_delays_a_release_but_never_stalls_it")
    else {
        return;
    };
    let (mut lab, address, first) = healthy_release("flt-429", "");
    lab.use_api_proxy();
    let proxy_log_start = std::fs::metadata(common::lab_dir().join("logs/api-proxy.log"))
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let traffic = Traffic::start(address);
    let mut expected = vec![
        ("Applied".to_owned(), format!("main@sha1:{first}")),
        ("Healthy".to_owned(), format!("main@sha1:{first}")),
    ];
    let never_stalled = |lab: &Lab, during: &str| {
        let s = lab.status("test");
        let (stalled, reason, message) = condition(&s, "Stalled");
        assert_ne!(
            stalled,
            "True",
            "Stalled during {during}: {reason}: {message}\n{}",
            lab.log()
        );
    };
    for (code, image) in [
        ("429", "ferry-lab-test/inference:2"),
        ("503", "ferry-lab-test/inference:1"),
    ] {
        let mut errors = fault(&["api-errors", code, "30"]);
        // The fault is on before the release is asked for.
        std::thread::sleep(Duration::from_secs(1));
        let commit = release(&lab, image, &format!("release: during {code} answers"));
        lab.reconcile_now("test");
        while errors.try_wait().unwrap().is_none() {
            never_stalled(&lab, code);
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            errors.wait().unwrap().success(),
            "lab/fault api-errors failed"
        );
        let deadline = Instant::now() + Duration::from_secs(180);
        while lab.status("test")["lastHealthyRevision"] != format!("main@sha1:{commit}") {
            never_stalled(&lab, &format!("the recovery from {code}"));
            assert!(
                Instant::now() < deadline,
                "the release never became healthy after {code}: {:#}\n{}",
                lab.status("test"),
                lab.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        wait_healthy(&lab, &commit);
        expected.push(("Applied".to_owned(), format!("main@sha1:{commit}")));
        expected.push(("Healthy".to_owned(), format!("main@sha1:{commit}")));
    }
    let (ok, failed) = traffic.stop();
    eprintln!("429 and 503 from the API: {ok} requests ok, {failed} failed");
    assert_eq!(failed, 0, "clients saw failures through the LoadBalancer");
    // The faults reached the controller (else this test proves nothing);
    // kube's client retries 429 itself, so the proxy's log tells.
    let proxy_log = std::fs::read_to_string(common::lab_dir().join("logs/api-proxy.log")).unwrap();
    let refused = &proxy_log[proxy_log_start.min(proxy_log.len())..];
    for code in ["429", "503"] {
        let seen = format!("answered {code} to ");
        assert!(
            refused.contains(&seen),
            "the controller never met a {code}:\n{refused}"
        );
    }
    assert_eq!(history_results(&lab, "test"), expected);
    assert_bystander_untouched(&lab);
}

/// A bad release, and 5 s later a good commit: the good one ends healthy
/// and the history tells both stories.
#[test]
fn a_good_commit_right_after_a_bad_one_wins() {
    let Some(_alone) = alone("a_good_commit_right_after_a_bad_one_wins") else {
        return;
    };
    let (lab, _, first) = healthy_release("flt-race", "");
    let bad = release(&lab, "ferry-lab-test/crash:1", "release: crashes");
    lab.reconcile_now("test");
    std::thread::sleep(Duration::from_secs(5));
    let good = release(&lab, "ferry-lab-test/inference:2", "release: the fix");
    lab.reconcile_now("test");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = lab.status("test");
        if s["lastHealthyRevision"] == format!("main@sha1:{good}")
            && s["lastAppliedRevision"] == format!("main@sha1:{good}")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fix never won: {s:#}\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let entries = history_results(&lab, "test");
    let about = |c: &str| {
        entries
            .iter()
            .filter(|(_, r)| *r == format!("main@sha1:{c}"))
            .map(|(result, _)| result.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(about(&first)[..2], ["Applied", "Healthy"], "{entries:?}");
    assert!(about(&bad).contains(&"Applied"), "{entries:?}");
    assert!(
        about(&bad).contains(&"HealthCheckFailed"),
        "the bad release's verdict is recorded: {entries:?}"
    );
    assert_eq!(
        entries.last().map(|(r, v)| (r.as_str(), v.clone())),
        Some(("Healthy", format!("main@sha1:{good}"))),
        "{entries:?}"
    );
    assert_bystander_untouched(&lab);
}

/// Two commits within one interval: only the newest is applied, and the
/// one skipped is in the history as superseded.
#[test]
fn of_two_commits_within_an_interval_the_newest_is_applied_the_other_recorded() {
    let Some(_alone) =
        alone("of_two_commits_within_an_interval_the_newest_is_applied_the_other_recorded")
    else {
        return;
    };
    let (lab, first) = Lab::running("flt-two", "ctrl-test", "\n  interval: 5m");
    lab.edit("config.yaml", "mode: fast", "mode: skipped");
    let skipped = lab.commit("never applied");
    lab.edit("config.yaml", "mode: skipped", "mode: newest");
    let newest = lab.commit("applied");
    lab.wait_applied("test", &newest);
    let revision = |c: &str| format!("main@sha1:{c}");
    wait_until(
        "the newest commit's verdict",
        Duration::from_secs(30),
        || lab.status("test")["lastHealthyRevision"] == revision(&newest),
    );
    let entries = history_results(&lab, "test");
    assert_eq!(
        entries,
        [
            ("Applied".to_owned(), revision(&first)),
            ("Healthy".to_owned(), revision(&first)),
            ("Superseded".to_owned(), revision(&skipped)),
            ("Applied".to_owned(), revision(&newest)),
            ("Healthy".to_owned(), revision(&newest)),
        ]
    );
}

/// etcd frozen for 20 s as a rollback starts: the rollback finishes once
/// etcd thaws, and the history has each step once.
#[test]
fn a_rollback_survives_a_frozen_etcd() {
    let Some(_alone) = alone("a_rollback_survives_a_frozen_etcd") else {
        return;
    };
    let (lab, _, good) = healthy_release("flt-rb-etcd", "");
    let bad = release(&lab, "ferry-lab-test/crash:1", "release: crashes");
    lab.reconcile_now("test");
    wait_until("the rollback to start", Duration::from_secs(120), || {
        lab.status("test")["failedRevision"] == format!("main@sha1:{bad}")
    });
    let mut pause = fault(&["etcd-pause", "20"]);
    assert!(
        pause.wait().unwrap().success(),
        "lab/fault etcd-pause failed"
    );
    wait_rolled_back(&lab, &good, &bad, Instant::now());
    let revision = |c: &str| format!("main@sha1:{c}");
    let entries = history_results(&lab, "test");
    assert_eq!(
        entries,
        [
            ("Applied".to_owned(), revision(&good)),
            ("Healthy".to_owned(), revision(&good)),
            ("Applied".to_owned(), revision(&bad)),
            ("HealthCheckFailed".to_owned(), revision(&bad)),
            ("RollingBack".to_owned(), revision(&good)),
            ("RolledBack".to_owned(), revision(&good)),
        ]
    );
    assert_bystander_untouched(&lab);
}
