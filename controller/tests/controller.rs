//! The controller against the lab: it keeps a namespace equal to git
//! through a sequence of commits, and its verdicts match `kubectl diff`.
//!
//! Runs when FERRY_LAB_TESTS=1 (scripts/test sets it after lab/up); the CRD
//! drift test runs everywhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_lab_testkit::{get, git, k, kubectl, lab_enabled, wait_until};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn the_committed_crd_matches_the_types() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry-controller"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(repo_root().join("environments/controller/crd.yaml")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "environments/controller/crd.yaml is stale: run `ferry-controller crd > environments/controller/crd.yaml`"
    );
}

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SYSTEM: &str = "ctrl-test-system";
const TARGET: &str = "ctrl-test";

fn environment(url: &str) -> String {
    format!(
        r#"apiVersion: ferry.dev/v1alpha1
kind: Environment
metadata: {{name: test, namespace: {SYSTEM}}}
spec:
  source: {{url: "{url}", ref: main, path: env}}
  targetNamespace: {TARGET}
  interval: 2s
"#
    )
}

fn status() -> Value {
    get(&["environment", "-n", SYSTEM, "test"])
        .map(|e| e["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition(status: &Value, kind: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    let field = |k: &str| c.and_then(|c| c[k].as_str()).unwrap_or("").to_owned();
    (field("status"), field("reason"), field("message"))
}

fn wait_applied(commit: &str) {
    wait_until(
        &format!("commit {commit} applied"),
        Duration::from_secs(60),
        || {
            let s = status();
            s["lastAppliedRevision"] == format!("main@sha1:{commit}")
                && condition(&s, "Ready").0 == "True"
        },
    );
}

fn configmap(name: &str) -> Option<Value> {
    get(&["configmap", "-n", TARGET, name])
}

#[test]
fn keeps_the_namespace_equal_to_git_commit_by_commit() {
    if !lab_enabled("keeps_the_namespace_equal_to_git_commit_by_commit") {
        return;
    }
    for ns in [TARGET, SYSTEM] {
        let _ = kubectl(
            &["delete", "namespace", ns, "--wait=true", "--timeout=90s"],
            None,
        );
    }
    // The CRD and the controller's RBAC from its install manifests: the
    // controller below runs as its service account, so this also shows the
    // RBAC rules are enough (and the API server refuses anything else).
    for file in ["crd.yaml", "namespace.yaml", "rbac.yaml"] {
        let path = repo_root().join("environments/controller").join(file);
        k(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
    }
    wait_until(
        "the RBAC rules to take effect",
        Duration::from_secs(30),
        || {
            let out = kubectl(
                &[
                    "auth",
                    "can-i",
                    "list",
                    "environments.ferry.dev",
                    "--as",
                    "system:serviceaccount:ferry-system:ferry-controller",
                    "-A",
                ],
                None,
            );
            String::from_utf8_lossy(&out.stdout).trim() == "yes"
        },
    );
    k(&["create", "namespace", SYSTEM]);
    k(&["create", "namespace", TARGET]);
    // Something ferry did not create: it must never be touched.
    k(&[
        "create",
        "configmap",
        "bystander",
        "-n",
        TARGET,
        "--from-literal=owner=someone-else",
    ]);

    let work = std::env::temp_dir().join(format!("ferry-controller-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let repo = work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let env = repo.join("env");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controller/ctrl-test");
    std::fs::create_dir_all(&env).unwrap();
    for file in [
        "kustomization.yaml",
        "namespace.yaml",
        "config.yaml",
        "app.yaml",
    ] {
        std::fs::copy(fixture.join(file), env.join(file)).unwrap();
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);

    let controller = Controller(
        Command::new(env!("CARGO_BIN_EXE_ferry-controller"))
            .args(["run", "--namespace", SYSTEM, "--http-addr", "127.0.0.1:0"])
            .arg("--cache-dir")
            .arg(work.join("cache"))
            .env("FERRY_LOG", "info")
            .env(
                "KUBE_RS_DEBUG_IMPERSONATE_USER",
                "system:serviceaccount:ferry-system:ferry-controller",
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("controller.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("file://{}", repo.display());
    let out = kubectl(&["apply", "-f", "-"], Some(&environment(&url)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 1. Into an empty namespace.
    wait_applied(&first);
    assert_eq!(configmap("settings").unwrap()["data"]["mode"], "fast");
    assert!(configmap("extra").is_some());
    let inventory = status()["inventory"].as_array().unwrap().len();
    assert_eq!(inventory, 5, "{}", status());
    let listed = k(&["get", "environments", "-n", SYSTEM]);
    assert!(
        listed.contains("READY") && listed.contains("True") && listed.contains(&first),
        "{listed}"
    );

    let commit = |message: &str| {
        git(&repo, &["commit", "-q", "-am", message]);
        git(&repo, &["rev-parse", "HEAD"])
    };
    let edit = |file: &str, from: &str, to: &str| {
        let path = env.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };

    // 2. A replica count changes: applied.
    edit("app.yaml", "replicas: 1", "replicas: 2");
    let second = commit("two replicas");
    wait_applied(&second);
    assert_eq!(
        get(&["deployment", "-n", TARGET, "web"]).unwrap()["spec"]["replicas"],
        2
    );

    // 3. An object leaves git: pruned; the bystander stays.
    std::fs::write(
        env.join("config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    )
    .unwrap();
    let third = commit("drop extra");
    wait_applied(&third);
    wait_until("extra to be pruned", Duration::from_secs(20), || {
        configmap("extra").is_none()
    });
    assert!(
        configmap("bystander").is_some(),
        "ferry touched an object it did not create"
    );

    // 4. An invalid object next to a valid change: nothing is applied.
    edit("config.yaml", "mode: fast", "mode: slow");
    std::fs::write(
        env.join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 99999}]\n",
    )
    .unwrap();
    edit("kustomization.yaml", "app.yaml]", "app.yaml, bad.yaml]");
    git(&repo, &["add", "."]);
    let fourth = commit("invalid service");
    wait_until(
        "the invalid commit to stall",
        Duration::from_secs(60),
        || {
            let s = status();
            s["lastAttemptedRevision"] == format!("main@sha1:{fourth}")
                && condition(&s, "Stalled").0 == "True"
        },
    );
    let s = status();
    let (_, reason, message) = condition(&s, "Stalled");
    assert_eq!(reason, "ValidationFailed");
    assert!(
        message.contains("Service ctrl-test/bad") && message.contains("env/bad.yaml"),
        "{message}"
    );
    assert_eq!(s["lastAppliedRevision"], format!("main@sha1:{third}"));
    assert_eq!(
        configmap("settings").unwrap()["data"]["mode"],
        "fast",
        "part of an invalid revision was applied"
    );
    assert_eq!(condition(&s, "Ready").0, "False");

    // 5. Fixed: applied again.
    std::fs::remove_file(env.join("bad.yaml")).unwrap();
    edit("kustomization.yaml", "app.yaml, bad.yaml]", "app.yaml]");
    git(&repo, &["add", "."]);
    let fifth = commit("remove the invalid service");
    wait_applied(&fifth);
    assert_eq!(configmap("settings").unwrap()["data"]["mode"], "slow");

    // 6. The repository becomes unreachable: nothing changes.
    std::fs::rename(&repo, work.join("moved")).unwrap();
    wait_until("the fetch failure", Duration::from_secs(60), || {
        condition(&status(), "Ready").1 == "FetchFailed"
    });
    let s = status();
    assert_eq!(condition(&s, "Reconciling").0, "True");
    assert_eq!(condition(&s, "Stalled").0, "False");
    assert_eq!(s["lastAppliedRevision"], format!("main@sha1:{fifth}"));
    assert_eq!(configmap("settings").unwrap()["data"]["mode"], "slow");
    assert!(configmap("bystander").is_some());
    let events = k(&[
        "get",
        "events",
        "-n",
        SYSTEM,
        "--field-selector",
        "involvedObject.name=test",
    ]);
    assert!(
        events.contains("Applied") && events.contains("FetchFailed"),
        "{events}"
    );

    drop(controller);
    let _ = std::fs::remove_dir_all(&work);
    for ns in [TARGET, SYSTEM] {
        let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
    }
}

fn diff_codes(dir: &Path) -> (i32, i32) {
    let ours = Command::new(env!("CARGO_BIN_EXE_ferry-controller"))
        .args(["diff", dir.to_str().unwrap()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap();
    let theirs = Command::new("kubectl")
        .args([
            "diff",
            "--server-side",
            "--force-conflicts",
            "-k",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap();
    (ours, theirs)
}

#[test]
fn diff_verdicts_match_kubectl_diff_server_side() {
    if !lab_enabled("diff_verdicts_match_kubectl_diff_server_side") {
        return;
    }
    let ns = "ctrl-diff-test";
    let _ = kubectl(
        &["delete", "namespace", ns, "--wait=true", "--timeout=90s"],
        None,
    );
    k(&["create", "namespace", ns]);
    let dir = std::env::temp_dir().join(format!("ferry-diff-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controller/ctrl-test");
    for file in ["config.yaml", "app.yaml"] {
        std::fs::copy(fixture.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!("namespace: {ns}\nresources: [config.yaml, app.yaml]\n"),
    )
    .unwrap();

    // Nothing there yet: both see differences.
    assert_eq!(diff_codes(&dir), (1, 1));
    k(&["apply", "--server-side", "-k", dir.to_str().unwrap()]);
    // Applied: both see none.
    assert_eq!(diff_codes(&dir), (0, 0));
    // A field git does not set changes in the cluster: still none.
    k(&[
        "annotate",
        "configmap",
        "-n",
        ns,
        "settings",
        "note=by-hand",
    ]);
    assert_eq!(diff_codes(&dir), (0, 0));
    // A field git sets changes in the cluster: both see it.
    k(&[
        "patch",
        "configmap",
        "-n",
        ns,
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":"edited"}}"#,
    ]);
    assert_eq!(diff_codes(&dir), (1, 1));
    // Git changes: both see it.
    k(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        dir.to_str().unwrap(),
    ]);
    let app = std::fs::read_to_string(dir.join("app.yaml"))
        .unwrap()
        .replace("replicas: 1", "replicas: 3");
    std::fs::write(dir.join("app.yaml"), app).unwrap();
    assert_eq!(diff_codes(&dir), (1, 1));

    let _ = std::fs::remove_dir_all(&dir);
    let _ = kubectl(&["delete", "namespace", ns, "--wait=false"], None);
}
