//! The status page in a real browser: headless Chromium (Debian's
//! `chromium`, which .ci/run installs) loads the page from the controller's
//! router and the rendered document shows the Environment, its health, its
//! history with the rollback highlighted, and no injected markup.
//!
//! Runs when FERRY_LAB_TESTS=1 (scripts/test sets it); it needs no cluster.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ferry_controller::crd::Environment;
use ferry_controller::serve::api::{ApiState, router};
use ferry_controller::telemetry::metrics::Metrics;
use kube::runtime::{reflector, watcher};
use serde_json::json;

fn environment() -> Environment {
    serde_json::from_value(json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "dev", "namespace": "ferry-system", "creationTimestamp": "2027-01-01T00:00:00Z"},
        "spec": {"source": {"url": "https://github.com/ferry-dev/ferry.git", "path": "environments/dev"}},
        "status": {
            "lastAppliedRevision": "main@sha1:1f3c2ab0aaaaaaaaaaaa",
            "lastAttemptedRevision": "main@sha1:9e0d44b0bbbbbbbbbbbb",
            "conditions": [
                {"type": "Healthy", "status": "True", "reason": "Healthy", "message": "", "lastTransitionTime": "2027-01-01T00:00:00Z"},
                {"type": "Ready", "status": "False", "reason": "RolledBack", "message": "rolled back", "lastTransitionTime": "2027-01-01T00:00:00Z"}
            ],
            "history": [
                {"sequence": 1, "time": "2027-01-01T00:00:00Z", "environment": "ferry-system/dev", "revision": "main@sha1:9e0d44b0bbbbbbbbbbbb",
                 "trigger": "webhook: <img src=x onerror=alert(1)>", "result": "HealthCheckFailed", "summary": "crash loop", "previous": "p", "sha256": "h1"},
                {"sequence": 2, "time": "2027-01-01T00:00:05Z", "environment": "ferry-system/dev", "revision": "main@sha1:1f3c2ab0aaaaaaaaaaaa",
                 "trigger": "gate", "result": "RolledBack", "summary": "back to the healthy revision", "previous": "h1", "sha256": "h2"}
            ]
        }
    }))
    .unwrap()
}

#[test]
fn the_page_renders_in_chromium() {
    if !ferry_lab_testkit::lab_enabled("the_page_renders_in_chromium") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (reader, mut writer) = reflector::store::<Environment>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(environment()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let state = Arc::new(ApiState {
        environments: reader,
        client: None,
        metrics: Arc::new(Metrics::default()),
        watching: Arc::new(AtomicBool::new(true)),
        listed: Arc::new(AtomicBool::new(true)),
        webhook: None,
        token: None,
        verifications: Default::default(),
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, router(state)).await });

    let profile = std::env::temp_dir().join(format!("ferry-chromium-{}", std::process::id()));
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{address}/"))
        .output()
        .expect("chromium is installed (.ci/run installs Debian's chromium)");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("ferry-system/dev"), "{dom}");
    assert!(
        dom.contains("<tr class=\"rollback\">"),
        "the rollback is highlighted: {dom}"
    );
    assert!(
        dom.contains("https://github.com/ferry-dev/ferry/commit/1f3c2ab0aaaaaaaaaaaa"),
        "{dom}"
    );
    assert!(
        !dom.contains("<img"),
        "markup from the history was injected: {dom}"
    );
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
}
