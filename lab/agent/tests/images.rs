//! Images as the node agent pulls them from the lab's registry: by digest,
//! run from their own root filesystem with their own user and entrypoint;
//! an index resolved to this node's platform (its arm64 entry holding an
//! AArch64 program);
//! the registry's refusals (an unknown tag, a wrong pull secret) in the
//! container's waiting state; a blob altered in the registry's storage
//! refused. Against a running lab (`lab/up`), like acceptance.rs.

use std::process::Command;
use std::time::Duration;

use ferry_lab_testkit::{fresh_namespace, k, kubectl, lab_dir, lab_enabled, succeeded, wait_until};
use serde_json::Value;

use ferry_lab_testkit::lab_image as image;

struct Namespace(String);

impl Namespace {
    fn new(name: &str) -> Self {
        fresh_namespace(name);
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

/// A static ELF executable for `machine` (62 x86-64, 183 AArch64) that
/// writes `message` to stdout and exits 0: the smallest program an image
/// of each platform can hold, made here because this machine has no
/// cross toolchain for AArch64.
fn tiny_elf(machine: u16, message: &[u8]) -> Vec<u8> {
    let base: u64 = 0x400000;
    let header_len = 64 + 56;
    let len = message.len() as u32;
    let mut code: Vec<u8> = Vec::new();
    if machine == 62 {
        code.extend([0xb8, 1, 0, 0, 0, 0xbf, 1, 0, 0, 0]); // mov eax, 1 (write); mov edi, 1
        code.extend([0x48, 0x8d, 0x35, 16, 0, 0, 0]); // lea rsi, [rip + 16]: the message
        code.extend([0xba]); // mov edx, len
        code.extend(len.to_le_bytes());
        code.extend([0x0f, 0x05, 0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]); // syscall; exit(0)
    } else {
        for word in [
            0xd280_0020u32,           // mov x0, #1
            0x1000_00e1,              // adr x1, +28: the message
            0xd280_0002 | (len << 5), // mov x2, #len
            0xd280_0808,              // mov x8, #64 (write)
            0xd400_0001,              // svc #0
            0xd280_0000,              // mov x0, #0
            0xd280_0ba8,              // mov x8, #93 (exit)
            0xd400_0001,              // svc #0
        ] {
            code.extend(word.to_le_bytes());
        }
    }
    code.extend(message);
    let total = (header_len + code.len()) as u64;
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend(2u16.to_le_bytes()); // executable
    elf.extend(machine.to_le_bytes());
    elf.extend(1u32.to_le_bytes());
    elf.extend((base + header_len as u64).to_le_bytes()); // entry
    elf.extend(64u64.to_le_bytes()); // program headers
    elf.extend(0u64.to_le_bytes()); // no section headers
    elf.extend(0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        elf.extend(v.to_le_bytes());
    }
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(5u32.to_le_bytes()); // read + execute
    elf.extend(0u64.to_le_bytes());
    for v in [base, base, total, total, 0x1000] {
        elf.extend(v.to_le_bytes());
    }
    elf.extend(code);
    elf
}

#[test]
fn an_index_resolves_to_this_nodes_platform() {
    if !lab_enabled("an_index_resolves_to_this_nodes_platform") {
        return;
    }
    // An index of two images built as scripts/images builds them (buildah,
    // FROM scratch), each holding its platform's program.
    let work = std::env::temp_dir().join(format!("ferry-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // buildah: scripts/prerequisites installs it.
    let buildah = |args: &[&str]| -> String {
        succeeded(
            Command::new("buildah")
                .arg("--root")
                .arg(work.join("storage"))
                .arg("--runroot")
                .arg(work.join("run"))
                .args(["--storage-driver", "vfs"])
                .args(args),
        )
    };
    buildah(&["manifest", "create", "localhost/platforms"]);
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183)] {
        let program = work.join(format!("hello-{arch}"));
        std::fs::write(
            &program,
            tiny_elf(machine, format!("hello from {arch}\n").as_bytes()),
        )
        .unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let container = buildah(&["from", "--quiet", "--arch", arch, "scratch"]);
        buildah(&["copy", &container, program.to_str().unwrap(), "/hello"]);
        buildah(&[
            "config",
            "--entrypoint",
            r#"["/hello"]"#,
            "--arch",
            arch,
            "--os",
            "linux",
            &container,
        ]);
        let image = format!("localhost/platforms-{arch}");
        buildah(&["commit", "--quiet", "--rm", &container, &image]);
        buildah(&["manifest", "add", "localhost/platforms", &image]);
    }
    buildah(&[
        "manifest",
        "push",
        "--all",
        "--quiet",
        "--tls-verify=false",
        "localhost/platforms",
        "docker://127.0.0.1:5000/ferry-lab-test/platforms:1",
    ]);

    let ns = Namespace::new("lab-test-image-index");
    ns.apply(&pod("platforms", "ferry-lab-test/platforms:1", ""));
    assert_eq!(ns.logs_when_done("platforms").trim(), "hello from amd64");

    // The arm64 entry holds an AArch64 program (its ELF header says so).
    let get = |path: &str, accept: &str| -> Vec<u8> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-H",
                &format!("Accept: {accept}"),
                &format!("http://127.0.0.1:5000/v2/ferry-lab-test/platforms/{path}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {path}");
        out.stdout
    };
    let index: Value = serde_json::from_slice(&get(
        "manifests/1",
        "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
    ))
    .unwrap();
    let arm64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .expect("an arm64 entry");
    let manifest: Value = serde_json::from_slice(&get(
        &format!("manifests/{}", arm64["digest"].as_str().unwrap()),
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    ))
    .unwrap();
    let layer = get(
        &format!(
            "blobs/{}",
            manifest["layers"][0]["digest"].as_str().unwrap()
        ),
        "*/*",
    );
    let reader: Box<dyn std::io::Read> = if layer.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&layer[..]))
    } else {
        Box::new(&layer[..])
    };
    let mut archive = tar::Archive::new(reader);
    let mut hello = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().ends_with("hello"))
        .expect("/hello in the arm64 layer");
    let mut elf = Vec::new();
    std::io::Read::read_to_end(&mut hello, &mut elf).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        183,
        "e_machine of the arm64 program"
    );
    let _ = std::fs::remove_dir_all(&work);
}

const WHO_AM_I_IN_THE_CLUSTER: &str = r#"
import json, os, ssl, http.client
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
namespace = open(f"{sa}/namespace").read()
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
api = http.client.HTTPSConnection(os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"]), context=context)
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
api.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
answer = json.load(api.getresponse())
print("namespace", namespace, "user", answer["status"]["userInfo"]["username"])
"#;

/// A pod reaches the API server as its service account, as in a cluster:
/// `KUBERNETES_SERVICE_HOST`/`PORT`, the API server's certificate checked
/// against the mounted CA, the mounted token bound to the pod.
#[test]
fn a_pod_talks_to_the_api_server_as_its_service_account() {
    if !lab_enabled("a_pod_talks_to_the_api_server_as_its_service_account") {
        return;
    }
    image(&[
        "--user",
        "65532",
        "ferry-lab-test/in-cluster:1",
        "python3",
        "-c",
        WHO_AM_I_IN_THE_CLUSTER,
    ]);
    let ns = Namespace::new("lab-test-in-cluster");
    ns.apply(&pod("who", "ferry-lab-test/in-cluster:1", ""));
    let logs = ns.logs_when_done("who");
    assert_eq!(
        logs.trim(),
        "namespace lab-test-in-cluster user system:serviceaccount:lab-test-in-cluster:default"
    );
}
