//! The GitHub webhook against the lab: a signed push makes the
//! Environments that follow the repository reconcile at once, and the
//! history records who pushed; unsigned, wrongly signed and replayed
//! deliveries change nothing.

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
    // A verdict is followed by one more look at git 2 s later (so a
    // commit pushed while a release was judged waits no interval): let
    // it pass first.
    std::thread::sleep(Duration::from_secs(4));
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
