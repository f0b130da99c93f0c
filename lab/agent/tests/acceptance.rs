//! The lab, tried as a new user would with kubectl: nodes in two zones, zone
//! spreading, pods answering on their IPs and behind a LoadBalancer, a
//! rolling update without a failed request, restarts, replacement,
//! CrashLoopBackOff and ProgressDeadlineExceeded, image pull errors, and
//! server-side apply and diff.
//!
//! These run against a running lab (`lab/up`). `scripts/test` brings it up,
//! builds the test images into the lab's registry and sets FERRY_LAB_TESTS=1; without that
//! variable each test says it was skipped and passes, so `cargo test` works
//! on a machine without the lab.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ferry_lab_testkit::{
    fresh_namespace, k, kubectl, lab_dir, lab_enabled, lab_image, repo_root, wait_until,
};
use serde_json::Value;

fn get_json(args: &[&str]) -> Value {
    ferry_lab_testkit::get(args).unwrap_or_else(|| panic!("kubectl get {args:?} failed"))
}

/// The image every test deploys: ferry-inference, built by scripts/test.
const IMAGE: &str = "ferry-lab-test/inference:1";
/// An image whose process exits at once.
const CRASHING_IMAGE: &str = "ferry-lab-test/crash:1";

fn apply(namespace: &str, yaml: &str) {
    let out = kubectl(
        &["apply", "--server-side", "-n", namespace, "-f", "-"],
        Some(yaml),
    );
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace for one test, deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn new(name: &str) -> Self {
        fresh_namespace(name);
        Namespace(name.to_owned())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

fn deployment(name: &str, replicas: u32, image: &str, version: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: 600
  selector: {{matchLabels: {{app: {name}}}}}
  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  {extra_spec}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 20
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {{matchLabels: {{app: {name}}}}}}}
      containers:
      - name: app
        image: {image}
        env:
        - {{name: VERSION, value: "{version}"}}
        - {{name: FERRY_SHUTDOWN_DELAY, value: "2"}}
        - {{name: FERRY_LOG, value: warn}}
        ports: [{{name: http, containerPort: 9696}}]
        readinessProbe: {{httpGet: {{path: /v2/health/ready, port: http}}, periodSeconds: 1}}
        livenessProbe: {{httpGet: {{path: /v2/health/live, port: http}}, periodSeconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

fn pods(ns: &str, app: &str) -> Vec<Value> {
    get_json(&["pods", "-n", ns, "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn wait_ready(ns: &str, app: &str, count: usize) -> Vec<Value> {
    let mut found = Vec::new();
    wait_until(
        &format!("{count} ready pods of {app}"),
        Duration::from_secs(90),
        || {
            found = pods(ns, app)
                .into_iter()
                .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            found.len() == count
        },
    );
    found
}

fn load_balancer_ip(ns: &str, service: &str) -> String {
    let mut ip = String::new();
    wait_until("the load balancer address", Duration::from_secs(30), || {
        ip =
            get_json(&["service", "-n", ns, service])["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .unwrap_or("")
                .to_owned();
        !ip.is_empty()
    });
    ip
}

/// One HTTP request; the status code, or an error for a failed connection.
fn http(addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {response:?}"))?;
    Ok((
        status,
        response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    ))
}

const CANDIDATE: &str = r#"[{"gender":"M","ssc_p":71,"ssc_b":"Central","hsc_p":58.66,"hsc_b":"Central","hsc_s":"Science","degree_p":58,"degree_t":"Sci&Tech","etest_p":56,"mba_p":61.3,"specialisation":"Mkt&Fin","workex":"Yes"}]"#;

#[test]
fn two_ready_nodes_in_two_zones() {
    if !lab_enabled("two_ready_nodes_in_two_zones") {
        return;
    }
    let nodes = get_json(&["nodes", "-l", "ferry.dev/lab=true"]);
    let mut zones: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|n| {
            n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"]);
    assert_eq!(nodes["items"][0]["status"]["capacity"]["cpu"], "2");
}

#[test]
fn zone_spread_pods_answer_on_pod_ips_and_behind_the_load_balancer() {
    if !lab_enabled("zone_spread_pods_answer_on_pod_ips_and_behind_the_load_balancer") {
        return;
    }
    let ns = Namespace::new("lab-test-spread");
    apply(&ns.0, &deployment("web", 2, IMAGE, "1", ""));
    let pods = wait_ready(&ns.0, "web", 2);
    let mut nodes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["lab-node-a", "lab-node-b"], "one pod per zone");
    for pod in &pods {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let (status, body) = http(&format!("{ip}:9696"), "GET", "/health", "").unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "{\"status\":\"healthy\"}\n"),
            "pod {ip}"
        );
    }
    let lb = load_balancer_ip(&ns.0, "web");
    let (status, body) = http(&format!("{lb}:80"), "POST", "/predict", CANDIDATE).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("{\"Placement\":"), "{body}");
}

#[test]
fn rolling_update_replaces_pods_one_at_a_time_without_a_failed_request() {
    if !lab_enabled("rolling_update_replaces_pods_one_at_a_time_without_a_failed_request") {
        return;
    }
    let ns = Namespace::new("lab-test-rollout");
    apply(&ns.0, &deployment("web", 2, IMAGE, "1", ""));
    let before: Vec<String> = wait_ready(&ns.0, "web", 2)
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let lb = format!("{}:80", load_balancer_ip(&ns.0, "web"));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, ok, failed, lb) = (stop.clone(), ok.clone(), failed.clone(), lb.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            // Bounded: stops when told, or after 10,000 requests.
            for _ in 0..10_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match http(&lb, "POST", "/predict", CANDIDATE) {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        failures.push(format!("{other:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        })
    };

    // Watch the ready count while the rollout runs: maxUnavailable 0 means
    // it never drops below 2, and maxSurge 1 that it never passes 3.
    apply(&ns.0, &deployment("web", 2, IMAGE, "2", ""));
    let mut min_ready = usize::MAX;
    let mut max_pods = 0;
    wait_until("the rollout", Duration::from_secs(120), || {
        let all = pods(&ns.0, "web");
        let live: Vec<&Value> = all
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        min_ready = min_ready.min(live.iter().filter(|p| ready(p)).count());
        max_pods = max_pods.max(live.len());
        let d = get_json(&["deployment", "-n", &ns.0, "web"]);
        d["status"]["updatedReplicas"] == 2
            && d["status"]["availableReplicas"] == 2
            && d["status"]["replicas"] == 2
            && d["status"]["observedGeneration"] == d["metadata"]["generation"]
    });
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let failures = client.join().unwrap();

    let after: Vec<String> = wait_ready(&ns.0, "web", 2)
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every pod was replaced: {before:?} -> {after:?}"
    );
    assert!(min_ready >= 2, "ready pods dropped to {min_ready}");
    assert!(
        max_pods <= 3,
        "{max_pods} pods at once: more than one surge pod"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "too few requests to judge: {}",
        ok.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during the rollout: {failures:?}"
    );
}

fn container_status(pod: &Value) -> Value {
    pod["status"]["containerStatuses"][0].clone()
}

#[test]
fn a_failing_readiness_probe_takes_the_pod_out_of_its_endpoints() {
    if !lab_enabled("a_failing_readiness_probe_takes_the_pod_out_of_its_endpoints") {
        return;
    }
    let ns = Namespace::new("lab-test-readiness");
    // The inference image with a shell added; its exec probe runs in the
    // container's root, which is the image unpacked on the node (shared by
    // the containers of one image: the lab has no per-container layer), so
    // a file written there switches readiness.
    let model = repo_root()
        .join("inference/model/placement.json")
        .canonicalize()
        .unwrap();
    let inference = std::env::var("FERRY_INFERENCE_BIN")
        .expect("FERRY_INFERENCE_BIN names the ferry-inference binary (scripts/test sets it)");
    let model = model.to_str().unwrap();
    let digest = lab_image(&[
        "--add",
        "/bin/sh",
        "--add",
        model,
        "ferry-lab-test/gated:1",
        &inference,
        "serve",
        "--model",
        model,
    ]);
    let flag_name = format!("ferry-lab-ready-{}", std::process::id());
    let flag = lab_dir()
        .join("images/unpacked")
        .join(digest.trim().trim_start_matches("sha256:"))
        .join("rootfs/tmp")
        .join(&flag_name);
    let probe = format!(
        "readinessProbe: {{exec: {{command: [/bin/sh, -c, \"test -f /tmp/{flag_name}\"]}}, periodSeconds: 1, failureThreshold: 1}}"
    );
    let yaml = deployment("gated", 1, "ferry-lab-test/gated:1", "1", "").replace(
        "readinessProbe: {httpGet: {path: /v2/health/ready, port: http}, periodSeconds: 1}",
        &probe,
    );
    apply(&ns.0, &yaml);
    let endpoint_ready = || -> Option<bool> {
        let slices = get_json(&[
            "endpointslices",
            "-n",
            &ns.0,
            "-l",
            "kubernetes.io/service-name=gated",
        ]);
        slices["items"][0]["endpoints"][0]["conditions"]["ready"].as_bool()
    };
    wait_until(
        "a running, unready pod listed as not ready",
        Duration::from_secs(60),
        || {
            endpoint_ready() == Some(false)
                && pods(&ns.0, "gated")
                    .first()
                    .is_some_and(|p| p["status"]["phase"] == "Running")
        },
    );
    let pod = pods(&ns.0, "gated").remove(0);
    assert!(!ready(&pod));
    assert_eq!(pod["status"]["phase"], "Running");

    std::fs::write(&flag, b"").unwrap();
    wait_until("the pod to become ready", Duration::from_secs(30), || {
        endpoint_ready() == Some(true)
    });
    std::fs::remove_file(&flag).unwrap();
    wait_until("the pod to drop out again", Duration::from_secs(30), || {
        endpoint_ready() == Some(false)
    });
    // Readiness never restarts a container.
    assert_eq!(
        container_status(&pods(&ns.0, "gated")[0])["restartCount"],
        0
    );
}

#[test]
fn a_killed_container_restarts_and_a_deleted_pod_is_replaced() {
    if !lab_enabled("a_killed_container_restarts_and_a_deleted_pod_is_replaced") {
        return;
    }
    let ns = Namespace::new("lab-test-restart");
    apply(&ns.0, &deployment("web", 1, IMAGE, "1", ""));
    let pod = wait_ready(&ns.0, "web", 1).remove(0);
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    let pid = container_status(&pod)["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("ferry-lab://")
        .to_owned();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until("the restart", Duration::from_secs(60), || {
        let p = get_json(&["pod", "-n", &ns.0, &name]);
        container_status(&p)["restartCount"] == 1 && ready(&p)
    });
    let p = get_json(&["pod", "-n", &ns.0, &name]);
    assert_eq!(
        container_status(&p)["lastState"]["terminated"]["exitCode"],
        137
    );

    k(&["delete", "pod", "-n", &ns.0, &name, "--wait=false"]);
    let replacement = wait_ready(&ns.0, "web", 1).remove(0);
    assert_ne!(replacement["metadata"]["name"], name.as_str());
    wait_until("the old pod to go", Duration::from_secs(60), || {
        !kubectl(&["get", "pod", "-n", &ns.0, &name], None)
            .status
            .success()
    });
}

#[test]
fn a_crashing_image_ends_in_crash_loop_back_off_and_progress_deadline_exceeded() {
    if !lab_enabled("a_crashing_image_ends_in_crash_loop_back_off_and_progress_deadline_exceeded") {
        return;
    }
    let ns = Namespace::new("lab-test-crash");
    let yaml = deployment("crash", 1, CRASHING_IMAGE, "1", "").replace(
        "progressDeadlineSeconds: 600",
        "progressDeadlineSeconds: 15",
    );
    apply(&ns.0, &yaml);
    wait_until("CrashLoopBackOff", Duration::from_secs(60), || {
        pods(&ns.0, "crash").iter().any(|p| {
            let s = container_status(p);
            s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && s["restartCount"].as_i64().unwrap_or(0) >= 1
        })
    });
    wait_until("ProgressDeadlineExceeded", Duration::from_secs(90), || {
        get_json(&["deployment", "-n", &ns.0, "crash"])["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "ProgressDeadlineExceeded"
            })
    });
    let out = kubectl(
        &[
            "rollout",
            "status",
            "-n",
            &ns.0,
            "deployment/crash",
            "--timeout=5s",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeded its progress deadline"));
}

#[test]
fn an_unknown_image_waits_in_image_pull_back_off() {
    if !lab_enabled("an_unknown_image_waits_in_image_pull_back_off") {
        return;
    }
    let ns = Namespace::new("lab-test-pull");
    apply(
        &ns.0,
        &deployment("missing", 1, "ferry-lab-test/not-registered:9", "1", ""),
    );
    let mut reasons = Vec::new();
    let mut message = String::new();
    wait_until("ImagePullBackOff", Duration::from_secs(60), || {
        if let Some(p) = pods(&ns.0, "missing").first() {
            let waiting = &container_status(p)["state"]["waiting"];
            if let Some(r) = waiting["reason"].as_str() {
                if reasons.last().map(String::as_str) != Some(r) {
                    reasons.push(r.to_owned());
                }
                message = waiting["message"].as_str().unwrap_or_default().to_owned();
            }
        }
        reasons.last().is_some_and(|r| r == "ImagePullBackOff")
    });
    // The registry's own words: the lab's registry has no such tag.
    assert!(message.contains("manifest unknown"), "{message}");
    assert!(
        reasons.contains(&"ErrImagePull".to_owned()) || reasons.len() == 1,
        "{reasons:?}"
    );
}

#[test]
fn server_side_apply_and_diff_work() {
    if !lab_enabled("server_side_apply_and_diff_work") {
        return;
    }
    let ns = Namespace::new("lab-test-diff");
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: a}\n";
    apply(&ns.0, config);
    let same = kubectl(
        &["diff", "--server-side", "-n", &ns.0, "-f", "-"],
        Some(config),
    );
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    let changed = kubectl(
        &["diff", "--server-side", "-n", &ns.0, "-f", "-"],
        Some(&config.replace("mode: a", "mode: b")),
    );
    assert_eq!(changed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&changed.stdout).contains("+  mode: b"));
    let managers = get_json(&[
        "configmap",
        "-n",
        &ns.0,
        "settings",
        "--show-managed-fields",
    ]);
    assert_eq!(
        managers["metadata"]["managedFields"][0]["manager"],
        "kubectl"
    );
    assert_eq!(
        managers["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
}
