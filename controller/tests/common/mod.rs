//! What the controller's lab tests share: a pair of namespaces (the
//! Environments' and the target), the controller's install RBAC, a deployer
//! account in the target, a git repository to commit to, and the real
//! `ferry-controller run` watching the Environments' namespace as the
//! controller's service account.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_lab_testkit::{get, git, k, kubectl, wait_until};
use hmac::Mac;
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/controller")
        .join(path)
}

/// The GitHub webhook secret the tests' controllers use.
pub const WEBHOOK_SECRET: &str = "s3cr3t-webhook";

/// One test's corner of the lab.
pub struct Lab {
    /// Where the Environments live (the controller watches it).
    pub system: String,
    /// Where they apply (their targetNamespace).
    pub target: String,
    pub work: PathBuf,
    /// A git repository; Environments follow its `main`.
    pub repo: PathBuf,
    /// Where the repository is served when not at its `file://` path (a
    /// controller in a pod cannot read the host's files).
    pub served_at: Option<String>,
    pub metrics_port: u16,
    /// The controller reaches the API server through lab/api-proxy.
    via_api_proxy: bool,
    controller: Option<Child>,
    /// Replicas with leader election: identity, HTTP port, process.
    replicas: Vec<(String, u16, Child)>,
    /// Variables of the controller's process, from its next start.
    pub controller_env: Vec<(String, String)>,
}

/// Lets Environments left by an earlier run go without a controller.
fn strip_finalizers(ns: &str) {
    let names = kubectl(&["get", "environments", "-n", ns, "-o", "name"], None);
    for env in String::from_utf8_lossy(&names.stdout).lines() {
        let _ = kubectl(
            &[
                "patch",
                env,
                "-n",
                ns,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
        );
    }
}

fn delete_namespace(ns: &str, wait: bool) {
    strip_finalizers(ns);
    let wait = if wait { "--wait=true" } else { "--wait=false" };
    let _ = kubectl(&["delete", "namespace", ns, wait, "--timeout=90s"], None);
}

/// Removes what a whole install (the demo's, or in_cluster.rs's) adds
/// beyond the CRD and RBAC: its admission policy refuses the fixtures'
/// plain Namespaces to deployers, and its controller would act beside the
/// test's.
pub fn remove_whole_install() {
    for args in [
        &[
            "-n",
            "ferry-system",
            "delete",
            "deployment",
            "ferry-controller",
        ][..],
        &[
            "delete",
            "validatingadmissionpolicybinding",
            "ferry-deployer-pod-security",
        ],
        &[
            "delete",
            "validatingadmissionpolicy",
            "ferry-deployer-pod-security",
        ],
    ] {
        let args = [
            args,
            &["--ignore-not-found", "--wait=true", "--timeout=60s"],
        ]
        .concat();
        let _ = kubectl(&args, None);
    }
}

/// The CRD and the controller's RBAC from its install manifests, and no
/// whole install.
pub fn install_controller_rbac() {
    remove_whole_install();
    for file in ["crd.yaml", "namespace.yaml", "rbac.yaml"] {
        let path = repo_root().join("environments/controller").join(file);
        k(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            path.to_str().unwrap(),
        ]);
    }
    wait_until(
        "the RBAC rules to take effect",
        Duration::from_secs(30),
        || {
            let out = kubectl(
                &[
                    "auth",
                    "can-i",
                    "impersonate",
                    "serviceaccounts/ferry-deployer",
                    "--as",
                    "system:serviceaccount:ferry-system:ferry-controller",
                ],
                None,
            );
            String::from_utf8_lossy(&out.stdout).trim() == "yes"
        },
    );
    wait_until("the CRD to be served", Duration::from_secs(30), || {
        kubectl(&["get", "environments", "-A"], None)
            .status
            .success()
    });
}

impl Lab {
    /// Fresh namespaces `NAME-system` and `NAME`, the deployer in `NAME`,
    /// and a repository whose `env/` holds the files of `fixture_dir`.
    pub fn new(name: &str, fixture_dir: &str) -> Lab {
        let system = format!("{name}-system");
        let target = name.to_owned();
        for ns in [&target, &system] {
            delete_namespace(ns, true);
        }
        install_controller_rbac();
        k(&["create", "namespace", &system]);
        k(&["create", "namespace", &target]);
        // What the install grants in ferry-system, here.
        k(&[
            "create",
            "rolebinding",
            "ferry-controller-environments",
            "-n",
            &system,
            "--clusterrole=ferry-controller-environments",
            "--serviceaccount=ferry-system:ferry-controller",
        ]);
        let deployer = std::fs::read_to_string(fixture("deployer.yaml"))
            .unwrap()
            .replace("NAMESPACE", &target);
        let out = kubectl(&["apply", "--server-side", "-f", "-"], Some(&deployer));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let work = std::env::temp_dir().join(format!("ferry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let repo = work.join("repo");
        std::fs::create_dir_all(repo.join("env")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        ferry_lab_testkit::copy_dir(&fixture(fixture_dir), &repo.join("env"));
        // The fixtures say NAMESPACE where the target namespace goes.
        for entry in std::fs::read_dir(repo.join("env")).unwrap() {
            let path = entry.unwrap().path();
            if let Ok(text) = std::fs::read_to_string(&path) {
                std::fs::write(&path, text.replace("NAMESPACE", &target)).unwrap();
            }
        }
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Lab {
            system,
            target,
            work,
            repo,
            served_at: None,
            metrics_port,
            via_api_proxy: false,
            controller: None,
            replicas: Vec::new(),
            controller_env: Vec::new(),
        }
    }

    /// A lab whose first commit is applied (and healthy) by a running
    /// controller through Environment `test` with `spec`; that commit.
    pub fn running(name: &str, fixture_dir: &str, spec: &str) -> (Lab, String) {
        Lab::running_with(name, fixture_dir, spec, |_| {})
    }

    /// As [`Lab::running`], with `prepare` run before the Environment
    /// exists (to create Secrets it refers to).
    pub fn running_with(
        name: &str,
        fixture_dir: &str,
        spec: &str,
        prepare: impl FnOnce(&Lab),
    ) -> (Lab, String) {
        let mut lab = Lab::new(name, fixture_dir);
        prepare(&lab);
        let first = lab.commit("first");
        lab.start_controller();
        lab.environment("test", spec);
        lab.wait_applied("test", &first);
        (lab, first)
    }

    /// Deletes Environment `name` and waits until it is gone (its
    /// finalizer done).
    pub fn delete_environment(&self, name: &str) {
        k(&[
            "delete",
            "environment",
            "-n",
            &self.system,
            name,
            "--wait=true",
            "--timeout=60s",
        ]);
    }

    pub fn url(&self) -> String {
        self.served_at
            .clone()
            .unwrap_or_else(|| format!("file://{}", self.repo.display()))
    }

    /// `ferry-controller run` for this lab's Environments, as the
    /// controller's service account, serving on `port`, logging to `log`.
    fn controller_command(&self, port: u16, cache: &str, log: std::fs::File) -> Command {
        // bench/soak/run measures the release build.
        let binary = std::env::var_os("FERRY_CONTROLLER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferry-controller")));
        let mut command = Command::new(binary);
        command
            .args(["run", "--namespace", &self.system])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cache-dir")
            .arg(self.work.join(cache))
            .arg("--public-url")
            .arg(format!("http://127.0.0.1:{port}/"))
            .env(
                "FERRY_LOG",
                std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // The binary runs on the host with the service account's own
            // token: these tests start, stop, restart and fault many
            // controllers a minute, which pods would slow tenfold;
            // in_cluster.rs runs the install itself.
            .env("KUBECONFIG", self.controller_kubeconfig())
            .stdout(Stdio::null())
            .stderr(log);
        command.envs(self.controller_env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// From now on the controller talks to the API server through
    /// lab/api-proxy, which `lab/fault api-errors` makes fail; a running
    /// controller is restarted.
    pub fn use_api_proxy(&mut self) {
        self.via_api_proxy = true;
        if self.controller.is_some() {
            self.start_controller();
            self.wait_controller_ready();
        }
    }

    /// A kubeconfig with a token of the controller's service account
    /// (`ferry-system/ferry-controller`), to the API server or to
    /// lab/api-proxy; made once per lab and route.
    fn controller_kubeconfig(&self) -> PathBuf {
        let (route, name) = if self.via_api_proxy {
            ("proxy.kubeconfig", "controller-via-proxy.kubeconfig")
        } else {
            ("kubeconfig", "controller.kubeconfig")
        };
        let out = self.work.join(name);
        if !out.exists() {
            let route = lab_dir().join(route);
            assert!(route.exists(), "{} is missing: run lab/up", route.display());
            ferry_lab_testkit::service_account_kubeconfig(
                &route,
                "ferry-system",
                "ferry-controller",
                &out,
            );
        }
        out
    }

    /// Waits until the controller's `/readyz` answers 200 (its first list
    /// of Environments is in).
    pub fn wait_controller_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        wait_until(
            "the controller to be ready",
            Duration::from_secs(60),
            || {
                Command::new("curl")
                    .args(["-sf", "--max-time", "2", "-o", "/dev/null", &url])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    /// Starts `ferry-controller run` as the controller's service account.
    pub fn start_controller(&mut self) {
        self.stop_controller();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("controller.log"))
            .unwrap();
        let secret = self.work.join("webhook-secret");
        std::fs::write(&secret, format!("{WEBHOOK_SECRET}\n")).unwrap();
        let child = self
            .controller_command(self.metrics_port, "cache", log)
            .arg("--webhook-secret-file")
            .arg(&secret)
            .spawn()
            .unwrap();
        self.controller = Some(child);
    }

    /// Starts a replica with leader election (Lease in the Environments'
    /// namespace), named `identity`; its HTTP port.
    pub fn start_replica(&mut self, identity: &str) -> u16 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log =
            std::fs::File::create(self.work.join(format!("controller-{identity}.log"))).unwrap();
        let child = self
            .controller_command(port, &format!("cache-{identity}"), log)
            .args(["--leader-election", "--identity", identity])
            .spawn()
            .unwrap();
        self.replicas.push((identity.to_owned(), port, child));
        port
    }

    /// Kills replica `identity` at once (SIGKILL, as a node failure).
    pub fn kill_replica(&mut self, identity: &str) {
        if let Some(i) = self.replicas.iter().position(|(id, _, _)| id == identity) {
            let (_, _, mut child) = self.replicas.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of replica `identity`, while it is there.
    pub fn replica_pid(&self, identity: &str) -> Option<u32> {
        self.replicas
            .iter()
            .find(|(id, _, _)| id == identity)
            .map(|(_, _, child)| child.id())
    }

    /// Whether replica `identity`'s process has ended.
    pub fn replica_exited(&mut self, identity: &str) -> bool {
        self.replicas
            .iter_mut()
            .find(|(id, _, _)| id == identity)
            .is_none_or(|(_, _, child)| child.try_wait().ok().flatten().is_some())
    }

    /// The process id of the controller started by [`Lab::start_controller`].
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    pub fn stop_controller(&mut self) {
        for (_, _, mut child) in self.replicas.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The controller's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("controller.log")).unwrap_or_default()
    }

    /// Commits everything under the repository; the new commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.repo.join("env").join(file);
        std::fs::write(path, text.replace("NAMESPACE", &self.target)).unwrap();
    }

    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.repo.join("env").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    /// Creates or changes Environment `name` with `spec` lines added to
    /// source, interval and (unless `spec` names one) the target namespace
    /// and the deployer.
    pub fn environment(&self, name: &str, spec: &str) {
        let mut extra = spec.to_owned();
        if !spec.contains("targetNamespace") {
            extra.push_str(&format!("\n  targetNamespace: {}", self.target));
        }
        if !spec.contains("serviceAccountName") {
            extra.push_str("\n  serviceAccountName: ferry-deployer");
        }
        self.environment_exactly(name, &extra);
    }

    /// Environment `name` with only `extra` added to source and interval.
    pub fn environment_exactly(&self, name: &str, extra: &str) {
        let interval = if extra.contains("interval:") {
            ""
        } else {
            "\n  interval: 10s"
        };
        let manifest = format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n  source: {{url: \"{}\", ref: main, path: env}}{interval}{extra}\n",
            self.system,
            self.url()
        );
        let out = kubectl(&["apply", "-f", "-"], Some(&manifest));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Asks for a reconcile now instead of at the interval.
    pub fn reconcile_now(&self, name: &str) {
        let stamp = format!(
            "{:?}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        );
        let _ = kubectl(
            &[
                "annotate",
                "environment",
                "-n",
                &self.system,
                name,
                &format!("ferry.dev/requested-at={stamp}"),
                "--overwrite",
            ],
            None,
        );
    }

    pub fn status(&self, name: &str) -> Value {
        get(&["environment", "-n", &self.system, name])
            .map(|e| e["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// Waits for `commit` to be applied and Ready.
    pub fn wait_applied(&self, name: &str, commit: &str) {
        self.reconcile_now(name);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.status(name);
            if last["lastAppliedRevision"] == format!("main@sha1:{commit}")
                && condition(&last, "Ready").0 == "True"
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "commit {commit} not applied: {last:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until condition `kind` of `name` is `status` with `reason`
    /// for `commit` (when given); the status then.
    pub fn wait_condition(
        &self,
        name: &str,
        kind: &str,
        status: &str,
        reason: &str,
        commit: Option<&str>,
    ) -> Value {
        self.wait_condition_within(name, kind, status, reason, commit, Duration::from_secs(60))
    }

    /// [`Lab::wait_condition`] with a deadline of its own (a rollout on a
    /// loaded 2-core machine can take longer than a minute).
    pub fn wait_condition_within(
        &self,
        name: &str,
        kind: &str,
        status: &str,
        reason: &str,
        commit: Option<&str>,
        within: Duration,
    ) -> Value {
        self.reconcile_now(name);
        let deadline = std::time::Instant::now() + within;
        loop {
            let s = self.status(name);
            let (st, re, _) = condition(&s, kind);
            let revision_ok =
                commit.is_none_or(|c| s["lastAttemptedRevision"] == format!("main@sha1:{c}"));
            if st == status && re == reason && revision_ok {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: {kind} never became {status}/{reason}: {s:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Environment `name`'s history as `history export` gives it, oldest
    /// first.
    pub fn history(&self, name: &str) -> Vec<Value> {
        let export = ferry(&["history", "export", &format!("{}/{name}", self.system)]);
        assert!(
            export.status.success(),
            "{}",
            String::from_utf8_lossy(&export.stderr)
        );
        serde_json::from_slice(&export.stdout).unwrap()
    }

    /// `history verify` of Environment `name` passes; what it printed.
    pub fn verified_history(&self, name: &str) -> String {
        let out = ferry(&["history", "verify", &format!("{}/{name}", self.system)]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    /// `kubectl get events` about Environment `name`.
    pub fn events(&self, name: &str) -> String {
        k(&[
            "get",
            "events",
            "-n",
            &self.system,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "custom-columns=REASON:.reason,MESSAGE:.message",
        ])
    }

    /// The controller's /metrics.
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET `path` from the controller's HTTP port, as JSON.
    /// The sum of the samples of `metric` (all its labels) the controller
    /// exposes now.
    pub fn metric(&self, metric: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn http(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{}{path}", self.metrics_port),
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `kubectl get -o json` of an object in the target namespace.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        get(&[kind, "-n", &self.target, name])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_controller();
        // Environments first, so their finalizers do not hold the namespace.
        let _ = kubectl(
            &[
                "delete",
                "environments",
                "--all",
                "-n",
                &self.system,
                "--wait=false",
            ],
            None,
        );
        strip_finalizers(&self.system);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
        for ns in [&self.target, &self.system] {
            delete_namespace(ns, false);
        }
    }
}

/// POSTs a push delivery `body` to the controller's webhook, signed
/// with `signature` if any; the HTTP status (0 when nothing answered).
pub fn webhook_post(lab: &Lab, delivery: &str, signature: Option<&str>, body: &str) -> u16 {
    let mut args = vec![
        "-sS".to_owned(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-H".into(),
        "X-GitHub-Event: push".into(),
        "-H".into(),
        format!("X-GitHub-Delivery: {delivery}"),
        "--data-binary".into(),
        body.to_owned(),
    ];
    if let Some(s) = signature {
        args.extend(["-H".into(), format!("X-Hub-Signature-256: {s}")]);
    }
    args.push(format!(
        "http://127.0.0.1:{}/hooks/github",
        lab.metrics_port
    ));
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// The `X-Hub-Signature-256` GitHub would send for `body`.
pub fn webhook_sign(body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The lab's state folder: where its kubeconfig, logs and
/// proxy.kubeconfig are.
pub fn lab_dir() -> PathBuf {
    std::env::var("KUBECONFIG")
        .map(PathBuf::from)
        .ok()
        .and_then(|k| k.parent().map(PathBuf::from))
        .expect("KUBECONFIG names the lab's kubeconfig (scripts/test sets it)")
}

/// `(status, reason, message)` of a condition.
pub fn condition(status: &Value, kind: &str) -> (String, String, String) {
    let c = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    let field = |k: &str| c.and_then(|c| c[k].as_str()).unwrap_or("").to_owned();
    (field("status"), field("reason"), field("message"))
}

/// `ferry-controller ARGS` with the lab's KUBECONFIG (as an admin).
pub fn ferry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-controller"))
        .args(args)
        .output()
        .unwrap()
}

/// Scenarios that act on the whole lab (faults) run one at a time within
/// a test binary.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The lab to this scenario alone until the guard drops; `None` (skip)
/// when the lab tests are off.
pub fn alone(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    ferry_lab_testkit::lab_enabled(test).then(|| {
        ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    })
}

/// `lab/fault ARGS` in the background; it undoes itself.
pub fn fault(args: &[&str]) -> Child {
    Command::new(repo_root().join("lab/fault"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lab/fault runs")
}

/// The history's results and revisions, oldest first, its chain verified.
pub fn history_results(lab: &Lab, name: &str) -> Vec<(String, String)> {
    lab.verified_history(name);
    lab.history(name)
        .iter()
        .map(|e| {
            (
                e["result"].as_str().unwrap_or("").to_owned(),
                e["revision"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Rewrites the entries of history chunk `chunk` in `namespace` as `edit`
/// says, as someone with write access to its ConfigMaps could; the
/// entries written.
pub fn edit_chunk(namespace: &str, chunk: &str, edit: impl FnOnce(&mut Vec<Value>)) -> Vec<Value> {
    let mut configmap: Value = serde_json::from_str(&k(&[
        "get",
        "configmap",
        "-n",
        namespace,
        chunk,
        "-o",
        "json",
    ]))
    .unwrap();
    let mut entries: Vec<Value> =
        serde_json::from_str(configmap["data"]["entries.json"].as_str().unwrap()).unwrap();
    edit(&mut entries);
    configmap["data"]["entries.json"] = serde_json::to_string(&entries).unwrap().into();
    let out = ferry_lab_testkit::kubectl(&["replace", "-f", "-"], Some(&configmap.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    entries
}

/// The Secret `github` with the token the fake GitHub expects, in the
/// Environments' namespace (for `spec.github.secretRef`).
pub fn github_secret(lab: &Lab) {
    k(&[
        "create",
        "secret",
        "generic",
        "github",
        "-n",
        &lab.system,
        "--from-literal=token=ghp_lab",
    ]);
}
