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
