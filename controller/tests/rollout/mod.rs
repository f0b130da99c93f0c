//! What the rollout scenarios share (rollback.rs, faults.rs): the test
//! images, clients through the LoadBalancer, a first healthy release, and
//! waiting for verdicts.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Lab, condition, repo_root};
use ferry_lab_testkit::{k, wait_until};

pub const CANDIDATE: &str = r#"{"gender":"M","ssc_p":71,"ssc_b":"Central","hsc_p":58.66,"hsc_b":"Central","hsc_s":"Science","degree_p":58,"degree_t":"Sci&Tech","etest_p":56,"mba_p":61.3,"specialisation":"Mkt&Fin","workex":"Yes"}"#;

/// Builds an image of `command` (its program, libraries and the files
/// `add` names) into the lab's registry with lab/image.
pub fn image(name: &str, add: &[&std::path::Path], command: &[&str]) {
    let add: Vec<&str> = add
        .iter()
        .flat_map(|p| ["--add", p.to_str().unwrap()])
        .collect();
    ferry_lab_testkit::lab_image(&[&add[..], &[name], command].concat());
}

pub fn inference_bin() -> String {
    std::env::var("FERRY_INFERENCE_BIN")
        .expect("FERRY_INFERENCE_BIN names the ferry-inference binary (scripts/test sets it)")
}

/// A second good image, one that never becomes ready (its readiness
/// endpoint answers 503 for ever), and one that is ready but answers 500
/// to predictions. (A corrupted model makes ferry-inference exit at start:
/// that is the crash loop of ferry-lab-test/crash:1.)
pub fn register_images() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(register_images_now);
}

pub fn register_images_now() {
    let model = repo_root().join("inference/model/placement.json");
    image(
        "ferry-lab-test/inference:2",
        &[&model],
        &[
            &inference_bin(),
            "serve",
            "--model",
            model.to_str().unwrap(),
        ],
    );
    let never_ready = concat!(
        "import http.server\n",
        "class H(http.server.BaseHTTPRequestHandler):\n",
        "    def log_message(self, *a): pass\n",
        "    def do_GET(self):\n",
        "        self.send_response(503); self.end_headers()\n",
        "http.server.ThreadingHTTPServer(('0.0.0.0', 9696), H).serve_forever()\n",
    );
    image(
        "ferry-lab-test/never-ready:1",
        &[],
        &["python3", "-c", never_ready],
    );
    let wrong = concat!(
        "import http.server\n",
        "class H(http.server.BaseHTTPRequestHandler):\n",
        "    def log_message(self, *a): pass\n",
        "    def do_GET(self):\n",
        "        self.send_response(200 if self.path.startswith('/v2/health') else 404); self.end_headers()\n",
        "    def do_POST(self):\n",
        "        self.rfile.read(int(self.headers.get('Content-Length', 0)))\n",
        "        self.send_response(500); self.send_header('Content-Type', 'application/json'); self.end_headers()\n",
        "        self.wfile.write(b'{\"error\": \"the model is broken\"}')\n",
        "http.server.ThreadingHTTPServer(('0.0.0.0', 9696), H).serve_forever()\n",
    );
    image("ferry-lab-test/wrong:1", &[], &["python3", "-c", wrong]);
}

/// `POST /predict` through the LoadBalancer; true for a 200.
pub fn predict(address: &str) -> bool {
    predict_outcome(address).is_ok()
}

/// `POST /predict` through the LoadBalancer: the body of a 200, otherwise
/// what went wrong (the status line, or the I/O error and its step).
pub fn predict_outcome(address: &str) -> Result<String, String> {
    let address: std::net::SocketAddr = address.parse().map_err(|e| format!("address: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| format!("set timeout: {e}"))?;
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{CANDIDATE}",
        CANDIDATE.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default())
    } else if response.is_empty() {
        Err("closed without an answer".to_owned())
    } else {
        Err(response.lines().next().unwrap_or("").to_owned())
    }
}

/// Clients through the LoadBalancer, counting answers, until stopped.
/// Failures are printed with their wall-clock time when it stops, to be
/// matched against the lab's logs.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    /// 200s whose answer was not the expected one.
    wrong: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(address: String) -> Traffic {
        Traffic::expecting(address, None)
    }

    /// As [`Traffic::start`], counting the 200s whose body is not
    /// `expected` (the good model's answer) as answered by a wrong model.
    pub fn expecting(address: String, expected: Option<String>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let wrong = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, w, f) = (stop.clone(), ok.clone(), wrong.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match predict_outcome(&address) {
                    Ok(body) => {
                        o.fetch_add(1, Ordering::Relaxed);
                        if expected.as_ref().is_some_and(|e| *e != body) {
                            w.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        let at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        f.lock()
                            .unwrap()
                            .push(format!("{:.3} {e}", at.as_secs_f64()));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Traffic {
            stop,
            ok,
            wrong,
            failures,
            thread: Some(thread),
        }
    }

    /// Stops; `(ok, failed, answered by a wrong model)`.
    pub fn stop_counting_wrong(self) -> (usize, usize, usize) {
        let wrong = self.wrong.clone();
        let (ok, failed) = self.stop();
        (ok, failed, wrong.load(Ordering::Relaxed))
    }

    /// Stops; `(ok, failed)`.
    pub fn stop(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failures = self.failures.lock().unwrap();
        for f in failures.iter() {
            eprintln!("failed request at unix time {f}");
        }
        (self.ok.load(Ordering::Relaxed), failures.len())
    }
}

/// A lab with the rollout fixture, the controller, and the first (good)
/// release healthy; the LoadBalancer's address.
pub fn healthy_release(name: &str, spec: &str) -> (Lab, String, String) {
    healthy_release_with(name, spec, |_| {})
}

/// As [`healthy_release`], with `prepare` run before the Environment exists.
pub fn healthy_release_with(
    name: &str,
    spec: &str,
    prepare: impl FnOnce(&Lab),
) -> (Lab, String, String) {
    register_images();
    let (lab, first) = Lab::running_with(name, "rollout", spec, |lab| {
        // Someone else's object in the target namespace: no scenario may
        // touch it (see `assert_bystander_untouched`).
        k(&[
            "create",
            "configmap",
            "bystander",
            "-n",
            &lab.target,
            "--from-literal=owner=someone-else",
        ]);
        prepare(lab)
    });
    let version = lab.get("configmap", "bystander").unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(lab.work.join("bystander-version"), version).unwrap();
    wait_healthy(&lab, &first);
    let mut address = String::new();
    // On a loaded 2-core machine, after API server restarts by the fault
    // tests, the first answer through the load balancer took over 30 s once.
    wait_until("the load balancer", Duration::from_secs(60), || {
        let ip = lab.get("service", "placement").and_then(|s| {
            s["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .map(str::to_owned)
        });
        if let Some(ip) = ip {
            address = format!("{ip}:80");
        }
        !address.is_empty() && predict(&address)
    });
    (lab, address, first)
}

/// The ConfigMap `bystander` that [`healthy_release`] made (not from git)
/// is still there, unchanged.
pub fn assert_bystander_untouched(lab: &Lab) {
    let before = std::fs::read_to_string(lab.work.join("bystander-version")).unwrap();
    let now = lab
        .get("configmap", "bystander")
        .expect("someone else's ConfigMap is gone");
    assert_eq!(
        now["metadata"]["resourceVersion"].as_str(),
        Some(before.as_str()),
        "someone else's ConfigMap was changed: {now:#}"
    );
}

/// A bad release committed under traffic and rolled back: the commit,
/// the seconds from it to rollback complete, and the client requests
/// through the LoadBalancer during the episode (ok, failed).
pub fn bad_release_episode(
    lab: &Lab,
    address: &str,
    good: &str,
    image: &str,
    message: &str,
) -> (String, f64, usize, usize) {
    let traffic = Traffic::start(address.to_owned());
    let bad = release(lab, image, message);
    let since = Instant::now();
    lab.reconcile_now("test");
    let seconds = wait_rolled_back(lab, good, &bad, since);
    let (ok, failed) = traffic.stop();
    (bad, seconds, ok, failed)
}

pub fn wait_healthy(lab: &Lab, commit: &str) {
    lab.wait_applied("test", commit);
    let s = lab.status("test");
    assert_eq!(condition(&s, "Healthy").0, "True", "{s}");
    assert_eq!(s["lastHealthyRevision"], format!("main@sha1:{commit}"));
}

pub fn release(lab: &Lab, image: &str, message: &str) -> String {
    let app = std::fs::read_to_string(lab.repo.join("env/app.yaml")).unwrap();
    let current = app
        .lines()
        .find(|l| l.trim_start().starts_with("image:"))
        .unwrap()
        .trim()
        .to_owned();
    lab.edit("app.yaml", &current, &format!("image: {image}"));
    lab.commit(message)
}

pub fn deployed_image(lab: &Lab) -> String {
    lab.get("deployment", "placement").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits for the rollback of `bad` to `good`; the seconds it took from `since`.
pub fn wait_rolled_back(lab: &Lab, good: &str, bad: &str, since: Instant) -> f64 {
    let s = lab.wait_condition_within(
        "test",
        "Stalled",
        "True",
        "RolledBack",
        Some(bad),
        Duration::from_secs(180),
    );
    let seconds = since.elapsed().as_secs_f64();
    assert_eq!(s["lastAppliedRevision"], format!("main@sha1:{good}"), "{s}");
    assert_eq!(s["lastHealthyRevision"], format!("main@sha1:{good}"), "{s}");
    assert_eq!(s["failedRevision"], format!("main@sha1:{bad}"), "{s}");
    assert_eq!(condition(&s, "Healthy").0, "True", "{s}");
    assert_eq!(
        condition(&s, "Ready"),
        (
            "False".into(),
            "RolledBack".into(),
            condition(&s, "Ready").2
        )
    );
    seconds
}
