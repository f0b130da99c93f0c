//! The controller as users run it: its image pulled from the lab's
//! registry, installed from `environments/controller` in two steps (the
//! CRD, then everything else: RBAC, the deployers, the Deployment with two
//! replicas and leader election), in-cluster configuration (the service
//! account token the node mounts, the API server at
//! `KUBERNETES_SERVICE_HOST`). It applies an Environment from a git server,
//! and when its leader pod is deleted the other replica takes over and
//! applies the next commit.
//!
//! The other controller tests run the binary on the host (impersonating
//! the controller's service account) because they start, stop, restart and
//! fault many controllers in a minute; this one proves the install.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Lab, repo_root};
use ferry_lab_testkit::{k, kubectl, lab_enabled, lab_image, wait_until};
use serde_json::Value;

/// Serves `base` over the git protocol at the pod bridge's gateway, which
/// pods reach; killed on drop.
struct GitDaemon(Child);

impl GitDaemon {
    fn start(base: &std::path::Path, port: u16) -> GitDaemon {
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=10.244.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        wait_until("git daemon to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("10.244.0.1", port)).is_ok()
        });
        GitDaemon(child)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The controller pods: (name, ready).
fn controller_pods() -> Vec<(String, bool)> {
    let pods: Value = serde_json::from_str(&k(&[
        "-n",
        "ferry-system",
        "get",
        "pods",
        "-l",
        "app=ferry-controller",
        "-o",
        "json",
    ]))
    .unwrap();
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                ready,
            )
        })
        .collect()
}

/// The Lease's holder; the Lease lives in the Environments' namespace.
fn leader(namespace: &str) -> String {
    kubectl(
        &[
            "-n",
            namespace,
            "get",
            "lease",
            "ferry-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    )
    .stdout
    .into_iter()
    .map(char::from)
    .collect()
}

fn controller_logs() -> String {
    let out = kubectl(
        &[
            "-n",
            "ferry-system",
            "logs",
            "-l",
            "app=ferry-controller",
            "--tail",
            "20",
            "--prefix",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_installed_controller_applies_from_git_and_fails_over() {
    if !lab_enabled("the_installed_controller_applies_from_git_and_fails_over") {
        return;
    }
    let _uninstall = Uninstall;
    let mut lab = Lab::new("in-cluster", "ctrl-test");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _git = GitDaemon::start(&lab.work, port);
    lab.served_at = Some(format!("git://10.244.0.1:{port}/repo"));

    // The image the install names (environments/controller/deployment pins
    // its tag), built from this build's binary into the lab's registry.
    let install = repo_root().join("environments/controller");
    let rendered = k(&["kustomize", install.to_str().unwrap()]);
    let image = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .expect("the install names the controller's image")
        .to_owned();
    lab_image(&[
        "--user",
        "65532",
        &image,
        env!("CARGO_BIN_EXE_ferry-controller"),
    ]);

    // Step 1 of docs/eks.md: the CRD, served before anything uses it.
    k(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        install.join("crd.yaml").to_str().unwrap(),
    ]);
    k(&[
        "wait",
        "--for",
        "condition=established",
        "crd/environments.ferry.dev",
        "--timeout=30s",
    ]);
    // The deployers' namespaces exist before the install (docs/eks.md).
    for ns in ["placement-dev", "placement-prod"] {
        let _ = kubectl(&["create", "namespace", ns], None);
    }
    // Step 2, as rendered; this lab's Environments live in `in-cluster-system`
    // (the other tests' controllers keep out of it).
    let rendered = rendered.replace(
        "- --namespace\n        - ferry-system",
        &format!("- --namespace\n        - {}", lab.system),
    );
    assert!(
        rendered.contains(&lab.system),
        "the install's --namespace argument moved"
    );
    let out = kubectl(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&rendered),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    wait_until(
        "two ready controller replicas and a leader",
        Duration::from_secs(120),
        || {
            let pods = controller_pods();
            let leader = leader(&lab.system);
            pods.len() == 2 && pods.iter().all(|p| p.1) && pods.iter().any(|p| p.0 == leader)
        },
    );

    // The install's admission policy lets a deployer write no Namespace
    // below restricted Pod Security; the fixture's plain Namespace is the
    // administrator's here (Lab::new made it).
    lab.edit("kustomization.yaml", "[namespace.yaml, ", "[");
    let first = lab.commit("first");
    lab.environment("test", "");
    lab.wait_applied("test", &first);
    assert_eq!(
        k(&[
            "-n",
            &lab.target,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}"
        ]),
        "1"
    );

    // The leader goes; the other replica takes the Lease and carries on.
    let old = leader(&lab.system);
    k(&["-n", "ferry-system", "delete", "pod", &old, "--wait=false"]);
    wait_until("another replica to lead", Duration::from_secs(60), || {
        let now = leader(&lab.system);
        !now.is_empty() && now != old
    });
    lab.edit("config.yaml", "mode: fast", "mode: careful");
    let second = lab.commit("second");
    lab.wait_applied("test", &second);
    assert_eq!(
        k(&[
            "-n",
            &lab.target,
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.mode}"
        ]),
        "careful"
    );
    let logs = controller_logs();
    assert!(logs.contains("leading"), "{logs}");

    lab.delete_environment("test");
}

/// Uninstalls on drop, the test passed or not: the other tests' controllers
/// (on the host, without the admission policy) must not meet the install.
struct Uninstall;

impl Drop for Uninstall {
    fn drop(&mut self) {
        common::remove_whole_install();
    }
}
