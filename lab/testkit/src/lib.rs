//! What every test against the lab needs: whether the lab is there to use,
//! kubectl with and without input, and waiting for a condition with a
//! deadline. Tests drive the lab the way a user does, through kubectl.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// True when the lab tests should run (`scripts/test` brings the lab up and
/// sets FERRY_LAB_TESTS=1). Otherwise says the test was skipped.
pub fn lab_enabled(test: &str) -> bool {
    let enabled = std::env::var("FERRY_LAB_TESTS").is_ok_and(|v| v == "1");
    if !enabled {
        eprintln!("skipped {test}: no lab (scripts/test runs lab/up and sets FERRY_LAB_TESTS=1)");
    }
    enabled
}

/// Runs kubectl, feeding `stdin` when given.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())
            .expect("kubectl reads its input");
    }
    child.wait_with_output().expect("kubectl runs")
}

/// kubectl that must succeed; its stdout.
pub fn k(args: &[&str]) -> String {
    let out = kubectl(args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl get -o json ARGS`, `None` when it fails (not found).
pub fn get(args: &[&str]) -> Option<Value> {
    let mut full = vec!["get", "-o", "json"];
    full.extend_from_slice(args);
    let out = kubectl(&full, None);
    if out.status.success() {
        serde_json::from_slice(&out.stdout).ok()
    } else {
        None
    }
}

/// Polls `done` every 250 ms; fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs git in `dir` as a fixed author; its trimmed stdout.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command
        .args([
            "-c",
            "user.name=Ada Lovelace",
            "-c",
            "user.email=ada@example.com",
        ])
        .args(args)
        .current_dir(dir);
    succeeded(&mut command)
}

/// Runs `command`, which must succeed (else the test fails with its
/// stderr); its trimmed stdout.
pub fn succeeded(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Copies a directory tree (files and folders only).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the target folder");
    for entry in std::fs::read_dir(from).expect("read the source folder") {
        let entry = entry.expect("read a folder entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

/// Serves `app` on a free port of 127.0.0.1 from a thread of its own (for
/// fake servers in tests that are themselves synchronous); its address.
pub fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// The repository's root.
pub fn repo_root() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `lab/image ARGS`: builds an image into the lab's registry; its manifest
/// digest.
pub fn lab_image(args: &[&str]) -> String {
    succeeded(Command::new(repo_root().join("lab/image")).args(args))
}

/// Namespace `name` made afresh for a test (one left by an earlier run is
/// deleted first); returns once its default service account exists.
pub fn fresh_namespace(name: &str) {
    let _ = kubectl(
        &["delete", "namespace", name, "--wait=true", "--timeout=60s"],
        None,
    );
    k(&["create", "namespace", name]);
    wait_until(
        "the default service account",
        Duration::from_secs(30),
        || {
            kubectl(&["-n", name, "get", "serviceaccount", "default"], None)
                .status
                .success()
        },
    );
}

/// The lab's state directory (`lab/up`'s `FERRY_LAB_DIR`).
pub fn lab_dir() -> std::path::PathBuf {
    std::env::var_os("FERRY_LAB_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/ferry/lab")
        })
}

/// Writes `out`, a kubeconfig that reaches the API server at the address
/// and with the CA of `kubeconfig` (the lab's, or lab/api-proxy's) and
/// authenticates as service account `namespace/account` with a bound token
/// from the TokenRequest API, valid for six hours: a process on the host
/// then holds exactly the rights the account's RBAC grants, as it would
/// in a pod.
pub fn service_account_kubeconfig(
    kubeconfig: &std::path::Path,
    namespace: &str,
    account: &str,
    out: &std::path::Path,
) {
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 kubeconfig path");
    let field = |path: &str| {
        k(&[
            "--kubeconfig",
            kubeconfig,
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
        ])
    };
    let server = field("server");
    let ca = field("certificate-authority-data");
    let token = k(&["create", "token", account, "-n", namespace, "--duration=6h"]);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {account}\n  user:\n    token: {token}\n\
         contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: {account}\n\
         current-context: lab\n",
        token = token.trim()
    );
    std::fs::write(out, text).expect("the kubeconfig is written");
}
