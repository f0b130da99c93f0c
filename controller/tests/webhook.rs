//! The GitHub webhook against the lab: a signed push makes the
//! Environments that follow the repository reconcile at once, and the
//! history records who pushed; unsigned, wrongly signed and replayed
//! deliveries change nothing, and fifty unsigned 25 MB bodies at once do
//! not grow the controller past 128 MiB (the install's limit is 256 MiB).

mod common;

use std::time::{Duration, Instant};

use common::{Lab, webhook_post as post, webhook_sign as sign};
use ferry_lab_testkit::lab_enabled;

#[test]
fn a_signed_push_triggers_the_environments_that_follow_it() {
    if !lab_enabled("a_signed_push_triggers_the_environments_that_follow_it") {
        return;
    }
    // A long interval: only the webhook can explain a quick reconcile.
    let (lab, _) = Lab::running("hook", "ctrl-test", "\n  interval: 1h");
    // Unsigned floods first; the signed push below must still work after
    // them. A verdict is followed by one more look at git 2 s later (so a
    // commit pushed while a release was judged waits no interval): that
    // passes during the floods, or after.
    let settled = Instant::now() + Duration::from_secs(4);
    let peaks = flood(&lab);
    std::thread::sleep(settled.saturating_duration_since(Instant::now()));
    eprintln!(
        "50 parallel unsigned 25 MB POSTs: peak resident memory {peaks:?} MiB (content-length, chunked)"
    );
    for peak in peaks {
        assert!(
            peak < 128.0,
            "the controller grew to {peak} MiB under unsigned POSTs"
        );
    }
    lab.edit("config.yaml", "mode: fast", "mode: pushed");
    let pushed = lab.commit("pushed");
    let body = format!(
        r#"{{"ref": "refs/heads/main", "repository": {{"clone_url": "{}"}}, "pusher": {{"name": "ada"}}}}"#,
        lab.url()
    );
    let attempted = || lab.status("test")["lastAttemptedRevision"] == format!("main@sha1:{pushed}");

    assert_eq!(post(&lab, "d-1", None, &body), 401);
    assert_eq!(post(&lab, "d-2", Some("sha1=00ff"), &body), 401);
    assert_eq!(post(&lab, "d-3", Some(&sign("another body")), &body), 401);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!attempted(), "an unsigned delivery triggered a reconcile");

    let sent = Instant::now();
    assert_eq!(post(&lab, "d-4", Some(&sign(&body)), &body), 202);
    while !attempted() {
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the push did not trigger a reconcile: {}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = sent.elapsed();
    eprintln!("push received to apply started (attempted revision in the status): {started:?}");
    assert_eq!(
        post(&lab, "d-4", Some(&sign(&body)), &body),
        200,
        "a replay is acknowledged and ignored"
    );
    // The delivery id is not signed: a captured push replayed with a
    // fresh one is the same signed body, and is ignored too.
    assert_eq!(
        post(&lab, "d-5-fresh", Some(&sign(&body)), &body),
        200,
        "a replay with a new delivery id is ignored"
    );
    lab.wait_applied("test", &pushed);
    let history = lab.status("test")["history"].clone();
    let applied = history
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["result"] == "Applied")
        .unwrap()
        .clone();
    let trigger = applied["trigger"].as_str().unwrap();
    assert!(
        trigger.starts_with("webhook:")
            && trigger.contains("github push by ada (body sha256:")
            && !trigger.contains("d-4"),
        "{trigger}"
    );
}

/// Sends 50 unsigned 25 MB POSTs at once, with a Content-Length and then
/// chunked, and returns the controller's peak resident memory (MiB) in
/// each round, sampled every 20 ms.
fn flood(lab: &Lab) -> [f64; 2] {
    let pid = lab.controller_pid().expect("the controller runs");
    let body = lab.work.join("flood-body");
    std::fs::write(&body, vec![b'x'; 25_000_000]).unwrap();
    let rss = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    let round = |chunked: bool| {
        let mut curls: Vec<_> = (0..50)
            .map(|i| {
                let mut curl = std::process::Command::new("curl");
                curl.args(["-s", "-o", "/dev/null", "-H", "Expect:"])
                    .args(["-H", "X-GitHub-Event: push"])
                    .args(["-H", &format!("X-GitHub-Delivery: flood-{chunked}-{i}")])
                    .arg("--data-binary")
                    .arg(format!("@{}", body.display()));
                if chunked {
                    curl.args(["-H", "Transfer-Encoding: chunked"]);
                }
                curl.arg(format!(
                    "http://127.0.0.1:{}/hooks/github",
                    lab.metrics_port
                ))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        let mut peak = rss();
        let started = Instant::now();
        while curls.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the POSTs did not finish"
            );
            peak = peak.max(rss());
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    };
    let peaks = [round(false), round(true)];
    let _ = std::fs::remove_file(&body);
    peaks
}
