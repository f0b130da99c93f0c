//! The GitHub webhook against the lab: a signed push makes the
//! Environments that follow the repository reconcile at once, and the
//! history records who pushed; unsigned, wrongly signed and replayed
//! deliveries change nothing.

mod common;

use std::time::{Duration, Instant};

use common::{Lab, WEBHOOK_SECRET};
use ferry_lab_testkit::lab_enabled;
use hmac::Mac;

fn post(lab: &Lab, delivery: &str, signature: Option<&str>, body: &str) -> u16 {
    let mut args = vec![
        "-sS".to_owned(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-H".into(),
        "X-GitHub-Event: push".into(),
        "-H".into(),
        format!("X-GitHub-Delivery: {delivery}"),
        "--data-binary".into(),
        body.to_owned(),
    ];
    if let Some(s) = signature {
        args.extend(["-H".into(), format!("X-Hub-Signature-256: {s}")]);
    }
    args.push(format!(
        "http://127.0.0.1:{}/hooks/github",
        lab.metrics_port
    ));
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

fn sign(body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn a_signed_push_triggers_the_environments_that_follow_it() {
    if !lab_enabled("a_signed_push_triggers_the_environments_that_follow_it") {
        return;
    }
    // A long interval: only the webhook can explain a quick reconcile.
    let (lab, _) = Lab::running("hook", "ctrl-test", "\n  interval: 1h");
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
        trigger.starts_with("webhook:") && trigger.contains("github push by ada (delivery d-4)"),
        "{trigger}"
    );
}
