//! The controller against the lab: it keeps a namespace equal to git
//! through a sequence of commits, and its verdicts match `kubectl diff`.
//!
//! Runs when FERRY_LAB_TESTS=1 (scripts/test sets it after lab/up); the CRD
//! drift test runs everywhere.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Lab, condition, repo_root};
use ferry_lab_testkit::{get, k, kubectl, lab_enabled, wait_until};

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

/// The controller keeps a namespace equal to git commit by commit, as its
/// install RBAC allows (impersonating the Environment's deployer), and
/// never touches what it did not create.
#[test]
fn keeps_the_namespace_equal_to_git_commit_by_commit() {
    if !lab_enabled("keeps_the_namespace_equal_to_git_commit_by_commit") {
        return;
    }
    let mut lab = Lab::new("ctrl-test", "ctrl-test");
    let target = lab.target.clone();
    let configmap = |name: &str| get(&["configmap", "-n", &target, name]);
    // Something ferry did not create: it must never be touched.
    k(&[
        "create",
        "configmap",
        "bystander",
        "-n",
        &target,
        "--from-literal=owner=someone-else",
    ]);
    let first = lab.commit("first");
    lab.start_controller();
    lab.environment("test", "");

    // 1. Into an empty namespace (which ferry adopts: it existed).
    lab.wait_applied("test", &first);
    assert_eq!(configmap("settings").unwrap()["data"]["mode"], "fast");
    assert!(configmap("extra").is_some());
    let status = lab.status("test");
    assert_eq!(status["inventory"].as_array().unwrap().len(), 5, "{status}");
    let namespace = get(&["namespace", &target]).unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["ferry.dev/owned-by"],
        format!("{}.test", lab.system)
    );
    assert_eq!(
        namespace["metadata"]["annotations"]["ferry.dev/adopted"],
        "true"
    );
    let listed = k(&["get", "environments", "-n", &lab.system]);
    assert!(
        listed.contains("READY") && listed.contains("True") && listed.contains(&first),
        "{listed}"
    );

    // 2. A replica count changes: applied.
    lab.edit("app.yaml", "replicas: 1", "replicas: 2");
    let second = lab.commit("two replicas");
    lab.wait_applied("test", &second);
    assert_eq!(
        get(&["deployment", "-n", &target, "web"]).unwrap()["spec"]["replicas"],
        2
    );

    // 3. An object leaves git: pruned; the bystander stays.
    lab.write(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n",
    );
    let third = lab.commit("drop extra");
    lab.wait_applied("test", &third);
    wait_until("extra to be pruned", Duration::from_secs(20), || {
        configmap("extra").is_none()
    });
    assert!(
        configmap("bystander").is_some(),
        "ferry touched an object it did not create"
    );

    // 4. An invalid object next to a valid change: nothing is applied.
    lab.edit("config.yaml", "mode: fast", "mode: slow");
    lab.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 99999}]\n",
    );
    lab.edit("kustomization.yaml", "app.yaml]", "app.yaml, bad.yaml]");
    let fourth = lab.commit("invalid service");
    let s = lab.wait_condition("test", "Stalled", "True", "ValidationFailed", Some(&fourth));
    let (_, _, message) = condition(&s, "Stalled");
    assert!(
        message.contains(&format!("Service {target}/bad")) && message.contains("env/bad.yaml"),
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
    std::fs::remove_file(lab.repo.join("env/bad.yaml")).unwrap();
    lab.edit("kustomization.yaml", "app.yaml, bad.yaml]", "app.yaml]");
    let fifth = lab.commit("remove the invalid service");
    lab.wait_applied("test", &fifth);
    assert_eq!(configmap("settings").unwrap()["data"]["mode"], "slow");

    // 6. The repository becomes unreachable: nothing changes.
    std::fs::rename(&lab.repo, lab.work.join("moved")).unwrap();
    let s = lab.wait_condition("test", "Ready", "False", "FetchFailed", None);
    assert_eq!(condition(&s, "Reconciling").0, "True");
    assert_eq!(condition(&s, "Stalled").0, "False");
    assert_eq!(s["lastAppliedRevision"], format!("main@sha1:{fifth}"));
    assert_eq!(configmap("settings").unwrap()["data"]["mode"], "slow");
    assert!(configmap("bystander").is_some());
    let events = lab.events("test");
    assert!(
        events.contains("Applied") && events.contains("FetchFailed"),
        "{events}"
    );
    std::fs::rename(lab.work.join("moved"), &lab.repo).unwrap();

    // 7. The Environment is deleted (prune: true): what ferry created goes,
    // the adopted namespace is released, the bystander stays.
    lab.delete_environment("test");
    assert!(configmap("settings").is_none(), "{}", lab.log());
    assert!(get(&["deployment", "-n", &target, "web"]).is_none());
    assert!(configmap("bystander").is_some());
    let namespace =
        get(&["namespace", &target]).expect("the adopted namespace is released, not deleted");
    assert!(
        namespace["metadata"]["labels"]
            .get("ferry.dev/owned-by")
            .is_none(),
        "{namespace}"
    );
    assert!(
        namespace["metadata"]["deletionTimestamp"].is_null(),
        "{namespace}"
    );
    lab.stop_controller();
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

/// The Environments whose `ferry_environment_healthy` series the
/// controller serving on `port` exports: those it has judged.
fn judged_by(port: u16) -> std::collections::BTreeSet<String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("ferry_environment_healthy{"))
        .filter_map(|l| {
            l.split("name=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// Two shards of 100 Environments each and the controller without a shard
/// (10 unlabelled ones), each with its own Lease: every Environment
/// reaches Healthy, and each is judged by exactly one controller, its
/// shard's.
#[test]
fn shards_split_the_environments_and_none_is_reconciled_by_two() {
    if !lab_enabled("shards_split_the_environments_and_none_is_reconciled_by_two") {
        return;
    }
    let mut lab = Lab::new("shards", "ctrl-test");
    let (shard_size, unsharded) = (100, 10);
    let total = 2 * shard_size + unsharded;
    let shard_of = |i: usize| match i / shard_size {
        0 => Some("a"),
        1 => Some("b"),
        _ => None,
    };
    let _ = std::fs::remove_dir_all(lab.repo.join("env"));
    let mut environments = String::new();
    for i in 0..total {
        let dir = lab.repo.join(format!("env-{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("configmap.yaml"),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i:03}, namespace: {}}}\ndata: {{i: \"{i}\"}}\n", lab.target),
        )
        .unwrap();
        let labels = shard_of(i)
            .map(|s| format!(", labels: {{ferry.dev/shard: {s}}}"))
            .unwrap_or_default();
        environments.push_str(&format!(
            "---\napiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {{name: env-{i:03}, namespace: {}{labels}}}\nspec:\n  source: {{url: \"{}\", ref: main, path: env-{i:03}}}\n  interval: 10m\n  targetNamespace: {}\n  serviceAccountName: ferry-deployer\n",
            lab.system,
            lab.url(),
            lab.target
        ));
    }
    lab.commit("two hundred and ten environments");
    let mut ports = Vec::new();
    for shard in [Some("a"), Some("b"), None] {
        lab.controller_env = shard
            .map(|s| vec![("FERRY_SHARD".to_owned(), s.to_owned())])
            .unwrap_or_default();
        let port = lab.start_replica(&format!("controller-{}", shard.unwrap_or("unsharded")));
        ports.push((shard, port));
    }
    lab.controller_env.clear();
    let out = kubectl(&["apply", "-f", "-"], Some(&environments));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "every Environment to be Healthy",
        Duration::from_secs(300),
        || {
            let list =
                ferry_lab_testkit::get(&["environments", "-n", &lab.system]).unwrap_or_default();
            let healthy = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter(|e| condition(&e["status"], "Healthy").0 == "True")
                        .count()
                })
                .unwrap_or(0);
            healthy == total
        },
    );
    let mut seen = std::collections::BTreeMap::<String, Vec<&str>>::new();
    for (shard, port) in &ports {
        for name in judged_by(*port) {
            seen.entry(name)
                .or_default()
                .push(shard.unwrap_or("unsharded"));
        }
    }
    assert_eq!(seen.len(), total, "judged: {seen:?}");
    for (name, by) in &seen {
        let i: usize = name.trim_start_matches("env-").parse().unwrap();
        assert_eq!(
            by,
            &[shard_of(i).unwrap_or("unsharded")],
            "{name} judged by {by:?}"
        );
    }
    // Each shard elected its leader with its own Lease.
    let leases = k(&["get", "leases", "-n", &lab.system, "-o", "name"]);
    for lease in [
        "ferry-controller",
        "ferry-controller-shard-a",
        "ferry-controller-shard-b",
    ] {
        assert!(
            leases.lines().any(|l| l.ends_with(&format!("/{lease}"))),
            "{leases}"
        );
    }
    for (shard, _) in &ports {
        lab.kill_replica(&format!("controller-{}", shard.unwrap_or("unsharded")));
    }
}
