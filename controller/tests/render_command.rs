//! `ferry-controller render` as people run it: any path, as
//! `kubectl kustomize` takes it, and `--revision` from git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn ferry_render(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-controller"))
        .arg("render")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// `render` takes any path, as `kubectl kustomize` does: absolute, outside
/// any repository, or reaching up with `..`; `--revision` needs a
/// repository and says so.
#[test]
fn render_works_on_any_path() {
    let outside = std::env::temp_dir().join(format!("ferry-render-path-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    ferry_lab_testkit::copy_dir(
        &repo().join("manifests/tests/fixtures/render/prefix-labels"),
        &outside,
    );
    let overlay = outside.join("overlay");
    let expected = ferry_render(
        &["manifests/tests/fixtures/render/prefix-labels/overlay"],
        &repo(),
    );
    assert!(
        expected.status.success(),
        "{}",
        String::from_utf8_lossy(&expected.stderr)
    );
    for (path, cwd) in [
        (overlay.to_str().unwrap(), repo()),
        (".", overlay.clone()),
        ("../overlay", outside.join("base")),
        ("overlay", outside.clone()),
    ] {
        let out = ferry_render(&[path], &cwd);
        assert!(
            out.status.success(),
            "render {path} in {}: {}",
            cwd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout,
            expected.stdout,
            "render {path} in {}",
            cwd.display()
        );
    }
    let out = ferry_render(&[overlay.to_str().unwrap(), "--revision", "HEAD"], &repo());
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("is not in a git repository"), "{message}");
    let _ = std::fs::remove_dir_all(&outside);
}

/// `--before-traffic` shows the readiness gate the controller adds for an
/// Environment with `healthCheck.beforeTraffic`: on the Deployment's pod
/// template, nowhere else, and kubectl takes the result as a Deployment.
#[test]
fn before_traffic_shows_the_readiness_gate() {
    let plain = ferry_render(&["environments/dev"], &repo());
    let gated = ferry_render(&["environments/dev", "--before-traffic"], &repo());
    assert!(
        gated.status.success(),
        "{}",
        String::from_utf8_lossy(&gated.stderr)
    );
    let (plain, gated) = (
        String::from_utf8_lossy(&plain.stdout).into_owned(),
        String::from_utf8_lossy(&gated.stdout).into_owned(),
    );
    assert!(!plain.contains("readinessGates"));
    let documents: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&gated)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let gated_kinds: Vec<&str> = documents
        .iter()
        .filter(|o| o.pointer("/spec/template/spec/readinessGates").is_some())
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(gated_kinds, ["Deployment"], "{gated}");
    let deployment = documents
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["readinessGates"],
        serde_json::json!([{"conditionType": "ferry.dev/verified"}])
    );
}
