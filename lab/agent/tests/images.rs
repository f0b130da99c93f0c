//! Images as the node agent pulls them from the lab's registry: by digest,
//! run from their own root filesystem with their own user and entrypoint;
//! the registry's refusals (an unknown tag, a wrong pull secret) in the
//! container's waiting state; a blob altered in the registry's storage
//! refused. Against a running lab (`lab/up`), like acceptance.rs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_lab_testkit::{k, kubectl, lab_enabled, wait_until};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn lab_dir() -> PathBuf {
    std::env::var_os("FERRY_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ferry/lab"))
}

/// Builds an image with lab/image; returns its manifest digest.
fn image(args: &[&str]) -> String {
    let out = Command::new(repo_root().join("lab/image"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lab/image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Namespace(String);

impl Namespace {
    fn new(name: &str) -> Self {
        let _ = kubectl(
            &["delete", "namespace", name, "--wait=true", "--timeout=60s"],
            None,
        );
        k(&["create", "namespace", name]);
        Namespace(name.to_owned())
    }

    fn apply(&self, yaml: &str) {
        let out = kubectl(&["apply", "-n", &self.0, "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pod(&self, name: &str) -> Value {
        ferry_lab_testkit::get(&["-n", &self.0, "pod", name]).unwrap_or(Value::Null)
    }

    /// Waits for the pod's container to wait with `reason`; returns its message.
    fn waiting(&self, pod: &str, reason: &str) -> String {
        let mut message = String::new();
        wait_until(reason, Duration::from_secs(60), || {
            let waiting = &self.pod(pod)["status"]["containerStatuses"][0]["state"]["waiting"];
            message = waiting["message"].as_str().unwrap_or_default().to_owned();
            waiting["reason"] == reason
        });
        message
    }

    fn logs_when_done(&self, pod: &str) -> String {
        wait_until("the pod to finish", Duration::from_secs(60), || {
            self.pod(pod)["status"]["phase"] == "Succeeded"
        });
        k(&["-n", &self.0, "logs", pod])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

/// A pod of one container; `Always` so that every pod meets the registry
/// (with `IfNotPresent`, a pod without the secret would run the image a
/// pod with it pulled, as on any Kubernetes node).
fn pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n{extra}  containers: [{{name: main, image: \"{image}\", imagePullPolicy: Always}}]\n"
    )
}

const WHOAMI: &str = "import os; print('uid', os.getuid(), 'gid', os.getgid(), 'cwd', os.getcwd(), 'host files', os.path.exists('/etc/hostname') or os.path.exists('/work'), 'argv0', os.sys.executable)";

#[test]
fn an_image_pulled_by_digest_runs_as_its_user_from_its_own_root() {
    if !lab_enabled("an_image_pulled_by_digest_runs_as_its_user_from_its_own_root") {
        return;
    }
    let digest = image(&[
        "--user",
        "65532",
        "ferry-lab-test/whoami:1",
        "python3",
        "-c",
        WHOAMI,
    ]);
    let ns = Namespace::new("lab-test-image-digest");
    // Pulled through the mirror by digest (an index-less OCI manifest).
    ns.apply(&pod(
        "by-digest",
        &format!("ferry-lab-test/whoami@{digest}"),
        "",
    ));
    let logs = ns.logs_when_done("by-digest");
    assert!(
        logs.contains("uid 65532 gid 65532 cwd / host files False argv0 /usr/bin/python3"),
        "{logs}"
    );
    // runAsUser wins over the image's USER, as in Kubernetes.
    ns.apply(&pod(
        "run-as",
        &format!("127.0.0.1:5000/ferry-lab-test/whoami@{digest}"),
        "  securityContext: {runAsUser: 1234, runAsGroup: 4321}\n",
    ));
    let logs = ns.logs_when_done("run-as");
    assert!(logs.contains("uid 1234 gid 4321"), "{logs}");
    let events = k(&[
        "-n",
        &ns.0,
        "get",
        "events",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains(&format!("({digest})")), "{events}");
}

#[test]
fn registry_refusals_show_in_the_containers_state() {
    if !lab_enabled("registry_refusals_show_in_the_containers_state") {
        return;
    }
    image(&[
        "ferry-lab-test/private:1",
        "/bin/sh",
        "-c",
        "echo pulled with a secret",
    ]);
    let ns = Namespace::new("lab-test-image-refusals");
    ns.apply(&pod(
        "unknown-tag",
        "ferry-lab-test/private:no-such-tag",
        "",
    ));
    let message = ns.waiting("unknown-tag", "ImagePullBackOff");
    assert!(
        message.contains("404") && message.contains("manifest unknown"),
        "{message}"
    );

    let credentials = std::fs::read_to_string(lab_dir().join("registry/credentials")).unwrap();
    let (user, password) = credentials.trim().split_once(':').unwrap();
    let secret = |name: &str, password: &str| {
        k(&[
            "-n",
            &ns.0,
            "create",
            "secret",
            "docker-registry",
            name,
            "--docker-server=127.0.0.1:5001",
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
        ]);
    };
    secret("wrong", "not-the-password");
    secret("right", password);
    let private = "127.0.0.1:5001/ferry-lab-test/private:1";
    ns.apply(&pod("no-secret", private, ""));
    ns.apply(&pod(
        "wrong-secret",
        private,
        "  imagePullSecrets: [{name: wrong}]\n",
    ));
    ns.apply(&pod(
        "right-secret",
        private,
        "  imagePullSecrets: [{name: right}]\n",
    ));
    for pod in ["no-secret", "wrong-secret"] {
        let message = ns.waiting(pod, "ImagePullBackOff");
        assert!(
            message.contains("401") && message.contains("UNAUTHORIZED"),
            "{pod}: {message}"
        );
    }
    assert_eq!(
        ns.logs_when_done("right-secret").trim(),
        "pulled with a secret"
    );
}

#[test]
fn a_blob_altered_in_the_registry_is_refused() {
    if !lab_enabled("a_blob_altered_in_the_registry_is_refused") {
        return;
    }
    // A layer no other image has, so that neither the registry nor the
    // node has it already.
    let unique = std::env::temp_dir().join(format!("ferry-unique-{}", std::process::id()));
    std::fs::write(&unique, format!("{:?}", std::time::SystemTime::now())).unwrap();
    let digest = image(&[
        "--add",
        unique.to_str().unwrap(),
        "ferry-lab-test/altered:1",
        "/bin/sh",
        "-c",
        "echo unaltered",
    ]);
    std::fs::remove_file(&unique).unwrap();
    let blobs = lab_dir().join("registry/storage/docker/registry/v2/blobs/sha256");
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        blobs.join(&hex[..2]).join(hex).join("data")
    };
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, &bytes).unwrap();

    let ns = Namespace::new("lab-test-image-altered");
    ns.apply(&pod("altered", "ferry-lab-test/altered:1", ""));
    let message = ns.waiting("altered", "ImagePullBackOff");
    assert!(message.contains("refusing it"), "{message}");
    assert!(
        message.contains(manifest["layers"][0]["digest"].as_str().unwrap()),
        "{message}"
    );
}
