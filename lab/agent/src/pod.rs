//! One worker per pod bound to a lab node: it creates the pod's network,
//! runs its containers as processes, probes them, restarts them with
//! back-off, reports status, and on deletion stops them gracefully and
//! removes the pod, as a kubelet does.
//!
//! The worker is a loop over three inputs (the latest Pod object, probe
//! results, a 200 ms tick) driving a small state machine per container.
//! Everything it tells the API server is computed by [`crate::status`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource};
use tokio::sync::{mpsc, watch};

use crate::image::pull_secrets::credentials_for;
use crate::image::run;
use crate::image::store::{Image, ImageStore, PullError};
use crate::network::{IpPool, Sandbox};
use crate::probe::{self, ProbeKind, ProbeSpec, ProbeState};
use crate::process::{self, Confinement, Process};
use crate::service_account;
use crate::status::{self, ContainerView, Phase, Terminated};

/// How long the worker waits between looks at its containers.
const TICK: Duration = Duration::from_millis(200);

/// Restart back-off: the kubelet's 10 s doubling to 5 min, shortened for
/// the lab so tests see CrashLoopBackOff without waiting minutes.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran this long starts over at `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(20),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// What all workers share.
pub struct Shared {
    pub client: Client,
    pub images: ImageStore,
    pub lab_dir: PathBuf,
    pub backoff: Backoff,
    pub recorder: Recorder,
}

/// The node a worker's pod runs on.
pub struct NodeContext {
    pub name: String,
    pub host_ip: String,
    pub pool: IpPool,
}

fn now() -> Time {
    Time(Timestamp::now())
}

enum State {
    /// Not running; start it at `retry_at` (now when `None`).
    Waiting {
        reason: String,
        message: String,
        retry_at: Option<Instant>,
    },
    Running {
        process: Process,
        started_at: Time,
        since: Instant,
        /// Set once SIGTERM was sent: SIGKILL after this.
        kill_at: Option<Instant>,
    },
    /// Finished and not to be restarted (restart policy, or the pod is going).
    Terminated(Terminated),
}

struct ContainerRun {
    spec: Container,
    state: State,
    last: Option<Terminated>,
    restart_count: i32,
    backoff: Duration,
    pull_failures: u32,
    /// Where its current run runs, for exec probes.
    confinement: Option<Arc<Confinement>>,
    started: bool,
    ready: bool,
    probes: BTreeMap<ProbeKind, (ProbeState, Instant, bool)>,
}

/// A probe's outcome, tagged with the container run it was for.
struct ProbeResult {
    container: usize,
    kind: ProbeKind,
    run: i32,
    outcome: Result<(), String>,
}

/// Handle to a running worker.
pub struct Worker {
    pub updates: watch::Sender<Option<Pod>>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts a worker for `pod`. Send `None` on `updates` when the pod left
/// the API server; the worker then kills what runs and cleans up.
pub fn spawn(
    shared: Arc<Shared>,
    node: Arc<NodeContext>,
    pod: Pod,
    shutdown: watch::Receiver<bool>,
) -> Worker {
    forget_logs_of_an_earlier_pod(&shared.lab_dir, &pod);
    let (updates, rx) = watch::channel(Some(pod.clone()));
    let task = tokio::spawn(PodWorker::new(shared, node, pod).run(rx, shutdown));
    Worker { updates, task }
}

/// Logs live under `pods/NAMESPACE/NAME/`; a new pod of the same name (another
/// uid) starts with none of its predecessor's output, as on a kubelet,
/// which keys logs by pod uid.
fn forget_logs_of_an_earlier_pod(lab_dir: &std::path::Path, pod: &Pod) {
    let (Some(ns), Some(name), Some(uid)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
        pod.metadata.uid.as_deref(),
    ) else {
        return;
    };
    let dir = lab_dir.join("pods").join(ns).join(name);
    let marker = dir.join(".uid");
    if std::fs::read_to_string(&marker).is_ok_and(|u| u == uid) {
        return;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&marker, uid));
}

struct PodWorker {
    shared: Arc<Shared>,
    node: Arc<NodeContext>,
    pod: Pod,
    sandbox: Option<Sandbox>,
    containers: Vec<ContainerRun>,
    start_time: Time,
    published: Option<PodStatus>,
    /// The last status update error, logged once until it changes.
    publish_error: Option<String>,
    probe_tx: mpsc::Sender<ProbeResult>,
    probe_rx: mpsc::Receiver<ProbeResult>,
    terminating: bool,
}

impl PodWorker {
    fn new(shared: Arc<Shared>, node: Arc<NodeContext>, pod: Pod) -> Self {
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| ContainerRun {
                spec: c.clone(),
                state: State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                    retry_at: None,
                },
                last: None,
                restart_count: 0,
                backoff: Duration::ZERO,
                pull_failures: 0,
                confinement: None,
                started: false,
                ready: false,
                probes: BTreeMap::new(),
            })
            .collect();
        let (probe_tx, probe_rx) = mpsc::channel(64);
        PodWorker {
            shared,
            node,
            pod,
            sandbox: None,
            containers,
            start_time: now(),
            published: None,
            publish_error: None,
            probe_tx,
            probe_rx,
            terminating: false,
        }
    }

    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    fn namespace(&self) -> String {
        self.pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.shared.client.clone(), &self.namespace())
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let reference = self.pod.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.shared.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "failed to publish an event");
        }
    }

    #[tracing::instrument(name = "pod", skip_all, fields(pod = %self.namespace().clone() + "/" + &self.name(), node = %self.node.name))]
    async fn run(
        mut self,
        mut updates: watch::Receiver<Option<Pod>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tracing::info!("pod bound to this node");
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                changed = updates.changed() => {
                    let latest = updates.borrow_and_update().clone();
                    match (changed, latest) {
                        (Ok(()), Some(pod)) => self.pod = pod,
                        _ => {
                            tracing::info!("pod left the API server: stopping its processes");
                            self.halt(Duration::ZERO).await;
                            return;
                        }
                    }
                }
                _ = shutdown.changed() => {
                    self.halt(Duration::from_secs(3)).await;
                    return;
                }
                Some(result) = self.probe_rx.recv() => self.on_probe(result).await,
                _ = tick.tick() => {}
            }
            if self.pod.metadata.deletion_timestamp.is_some() {
                if self.terminate_step().await {
                    return;
                }
            } else {
                self.step().await;
            }
            self.publish().await;
        }
    }

    /// One look at every container: start, notice exits, restart, probe.
    async fn step(&mut self) {
        if self.sandbox.is_none() && !self.create_sandbox().await {
            return;
        }
        for index in 0..self.containers.len() {
            self.step_container(index).await;
        }
    }

    async fn create_sandbox(&mut self) -> bool {
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        let result = match self.node.pool.allocate() {
            Ok(ip) => Sandbox::create(&uid, ip)
                .await
                .inspect_err(|_| self.node.pool.release(ip)),
            Err(e) => Err(e),
        };
        match result {
            Ok(sandbox) => {
                tracing::info!(ip = %sandbox.ip, netns = %sandbox.netns, "network ready");
                self.sandbox = Some(sandbox);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to create the pod network");
                self.event(EventType::Warning, "FailedCreatePodSandBox", e.to_string())
                    .await;
                false
            }
        }
    }

    async fn step_container(&mut self, index: usize) {
        let now_instant = Instant::now();
        let policy = self.restart_policy().to_owned();
        let c = &mut self.containers[index];
        match &mut c.state {
            State::Waiting { retry_at, .. } => {
                if retry_at.is_none_or(|t| now_instant >= t) {
                    self.start_container(index).await;
                }
            }
            State::Running {
                process,
                started_at,
                since,
                kill_at,
            } => {
                if let Some(exit) = process.try_exit() {
                    let ran = since.elapsed();
                    let finished = Terminated {
                        exit_code: exit.code,
                        signal: exit.signal,
                        reason: if exit.code == 0 { "Completed" } else { "Error" }.into(),
                        started_at: started_at.clone(),
                        finished_at: now(),
                    };
                    let name = c.spec.name.clone();
                    tracing::info!(container = %name, exit_code = exit.code, "container exited");
                    c.started = false;
                    c.ready = false;
                    c.probes.clear();
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => exit.code != 0,
                        _ => true,
                    };
                    if restart {
                        c.backoff = if ran >= self.shared.backoff.reset_after || c.backoff.is_zero()
                        {
                            self.shared.backoff.initial
                        } else {
                            (c.backoff * 2).min(self.shared.backoff.max)
                        };
                        let wait = c.backoff;
                        c.last = Some(finished);
                        c.state = State::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: format!(
                                "back-off {}s restarting failed container={name} pod={}",
                                wait.as_secs(),
                                self.pod.metadata.name.as_deref().unwrap_or("")
                            ),
                            retry_at: Some(now_instant + wait),
                        };
                        self.event(
                            EventType::Warning,
                            "BackOff",
                            format!("Back-off restarting failed container {name}"),
                        )
                        .await;
                    } else {
                        c.state = State::Terminated(finished);
                    }
                    return;
                }
                if let Some(deadline) = kill_at
                    && now_instant >= *deadline
                {
                    process.signal(process::SIGKILL);
                    return;
                }
                if kill_at.is_none() {
                    self.dispatch_probes(index);
                }
            }
            State::Terminated(_) => {}
        }
    }

    async fn start_container(&mut self, index: usize) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let spec = self.containers[index].spec.clone();
        let image_ref = spec.image.clone().unwrap_or_default();
        let image = match self.pull(&spec, &image_ref).await {
            Ok(image) => image,
            Err(e) => {
                let reason = e.reason();
                let message = e.message();
                let c = &mut self.containers[index];
                c.pull_failures += 1;
                let wait = (self.shared.backoff.initial * c.pull_failures.min(5))
                    .min(self.shared.backoff.max);
                let shown = if reason == "ErrImagePull" && c.pull_failures > 1 {
                    "ImagePullBackOff"
                } else {
                    reason
                };
                c.state = State::Waiting {
                    reason: shown.into(),
                    message: message.clone(),
                    retry_at: Some(Instant::now() + wait),
                };
                if c.pull_failures == 1 {
                    tracing::warn!(container = %spec.name, image = %image_ref, %message, "image pull failed");
                    self.event(EventType::Warning, "Failed", message).await;
                }
                return;
            }
        };
        self.containers[index].pull_failures = 0;
        let pod_security = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone());
        let prepared = run::command_line(&image.config, &spec).and_then(|argv| {
            let (uid, gid) = run::user(&image.config, &spec, pod_security.as_ref(), &image.rootfs)?;
            Ok((argv, uid, gid))
        });
        let (argv, uid, gid) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let retry = self.shared.backoff.max;
                return self.config_error(index, e.to_string(), retry).await;
            }
        };
        let env = self
            .container_env(&spec, &sandbox, run::image_env(&image.config))
            .await;
        let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
        let log = self.log_dir().join(format!("{}.log", spec.name));
        let working_dir = run::working_dir(&image.config, &spec);
        let mounts = match self.volume_mounts(&spec).await {
            Ok(mounts) => mounts,
            Err(message) => {
                let retry = self.shared.backoff.initial;
                return self.config_error(index, message, retry).await;
            }
        };
        let started = Confinement::new(&sandbox.netns, &image.rootfs, &working_dir, uid, gid)
            .map(|confinement| {
                mounts
                    .into_iter()
                    .fold(confinement, |c, (source, target)| c.mount(source, &target))
            })
            .and_then(|confinement| {
                process::spawn(&confinement, &argv, &env, &log).map(|p| (p, confinement))
            });
        match started {
            Ok((process, confinement)) => {
                let pid = process.pid;
                tracing::info!(container = %spec.name, pid, command = ?argv, image = %image.digest, uid, "container started");
                let started_at = now();
                let since = Instant::now();
                let c = &mut self.containers[index];
                if c.last.is_some() {
                    c.restart_count += 1;
                }
                c.started = spec.startup_probe.is_none();
                c.ready = false;
                c.probes.clear();
                c.confinement = Some(Arc::new(confinement));
                for (kind, probe) in [
                    (ProbeKind::Startup, &spec.startup_probe),
                    (ProbeKind::Liveness, &spec.liveness_probe),
                    (ProbeKind::Readiness, &spec.readiness_probe),
                ] {
                    if let Some(probe) = probe {
                        let probe_spec = ProbeSpec::from_probe(probe, &spec);
                        let due = since + probe_spec.initial_delay;
                        c.probes
                            .insert(kind, (ProbeState::new(probe_spec), due, false));
                    }
                }
                c.ready = c.started && !c.probes.contains_key(&ProbeKind::Readiness);
                c.state = State::Running {
                    process,
                    started_at,
                    since,
                    kill_at: None,
                };
                self.event(
                    EventType::Normal,
                    "Started",
                    format!("Started container {}", spec.name),
                )
                .await;
            }
            Err(e) => {
                let message = format!("failed to start {:?}: {e}", argv.first());
                tracing::warn!(container = %spec.name, %message);
                let c = &mut self.containers[index];
                c.last = Some(Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    started_at: now(),
                    finished_at: now(),
                });
                c.backoff =
                    (c.backoff * 2).clamp(self.shared.backoff.initial, self.shared.backoff.max);
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: message.clone(),
                    retry_at: Some(Instant::now() + c.backoff),
                };
                self.event(EventType::Warning, "Failed", message).await;
            }
        }
    }

    /// Starts each probe that is due and not already running.
    fn dispatch_probes(&mut self, index: usize) {
        let Some(sandbox) = &self.sandbox else { return };
        let c = &mut self.containers[index];
        let now_instant = Instant::now();
        let started = c.started;
        for (&kind, (state, due, in_flight)) in c.probes.iter_mut() {
            // Liveness and readiness wait for the startup probe to pass.
            if *in_flight
                || now_instant < *due
                || (kind != ProbeKind::Startup && !started)
                || (kind == ProbeKind::Startup && started)
            {
                continue;
            }
            *in_flight = true;
            *due = now_instant + state.spec.period;
            let action = state.spec.action.clone();
            let timeout = state.spec.timeout;
            let pod_ip = sandbox.ip.to_string();
            let Some(confinement) = c.confinement.clone() else {
                continue;
            };
            let tx = self.probe_tx.clone();
            let run = c.restart_count;
            tokio::spawn(async move {
                let outcome = probe::check(&action, &pod_ip, &confinement, timeout).await;
                let _ = tx
                    .send(ProbeResult {
                        container: index,
                        kind,
                        run,
                        outcome,
                    })
                    .await;
            });
        }
    }

    async fn on_probe(&mut self, result: ProbeResult) {
        let pod_name = self.name();
        let c = &mut self.containers[result.container];
        let Some((state, _, in_flight)) = c.probes.get_mut(&result.kind) else {
            return;
        };
        *in_flight = false;
        if result.run != c.restart_count || !matches!(c.state, State::Running { kill_at: None, .. })
        {
            return;
        }
        let ok = result.outcome.is_ok();
        let verdict = state.record(ok);
        let name = c.spec.name.clone();
        let failure = result.outcome.err();
        let mut restart = None;
        match (result.kind, verdict) {
            (ProbeKind::Startup, Some(true)) => {
                c.started = true;
                c.ready = !c.probes.contains_key(&ProbeKind::Readiness);
            }
            (ProbeKind::Startup, Some(false)) => restart = Some("Startup"),
            (ProbeKind::Liveness, Some(false)) => restart = Some("Liveness"),
            (ProbeKind::Readiness, Some(v)) => c.ready = v && c.started,
            _ => {}
        }
        if let Some(kind) = restart {
            let grace = self.grace_period();
            if let State::Running {
                process, kill_at, ..
            } = &mut self.containers[result.container].state
            {
                process.signal(process::SIGTERM);
                *kill_at = Some(Instant::now() + grace);
            }
            tracing::info!(container = %name, probe = kind, "probe failed: restarting the container");
            self.event(
                EventType::Normal,
                "Killing",
                format!(
                    "Container {name} failed {} probe, will be restarted",
                    kind.to_lowercase()
                ),
            )
            .await;
        }
        if let Some(reason) = failure {
            tracing::debug!(pod = %pod_name, container = %name, probe = ?result.kind, %reason, "probe failed");
            if verdict == Some(false) {
                self.event(
                    EventType::Warning,
                    "Unhealthy",
                    format!("{:?} probe failed: {reason}", result.kind),
                )
                .await;
            }
        }
    }

    fn grace_period(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    /// Graceful termination after the pod was deleted: SIGTERM, wait up to
    /// the grace period, SIGKILL, then remove the pod. Returns true when done.
    async fn terminate_step(&mut self) -> bool {
        if !self.terminating {
            self.terminating = true;
            let grace = self.grace_period();
            tracing::info!(
                grace_seconds = grace.as_secs(),
                "pod deleted: stopping containers"
            );
            for c in &mut self.containers {
                c.ready = false;
                match &mut c.state {
                    State::Running {
                        process, kill_at, ..
                    } => {
                        process.signal(process::SIGTERM);
                        *kill_at = Some(Instant::now() + grace);
                    }
                    State::Waiting { .. } => {
                        c.state = State::Terminated(Terminated {
                            exit_code: 0,
                            signal: None,
                            reason: "ContainerCannotRun".into(),
                            started_at: now(),
                            finished_at: now(),
                        });
                    }
                    State::Terminated(_) => {}
                }
            }
        }
        let mut running = false;
        for c in &mut self.containers {
            if let State::Running {
                process,
                started_at,
                kill_at,
                ..
            } = &mut c.state
            {
                if let Some(exit) = process.try_exit() {
                    c.state = State::Terminated(Terminated {
                        exit_code: exit.code,
                        signal: exit.signal,
                        reason: if exit.code == 0 { "Completed" } else { "Error" }.into(),
                        started_at: started_at.clone(),
                        finished_at: now(),
                    });
                } else {
                    if kill_at.is_some_and(|t| Instant::now() >= t) {
                        process.signal(process::SIGKILL);
                    }
                    running = true;
                }
            }
        }
        if running {
            return false;
        }
        self.publish().await;
        self.remove_sandbox().await;
        let uid = self.pod.metadata.uid.clone();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api().delete(&self.name(), &params).await {
            Ok(_) => tracing::info!("pod stopped and removed"),
            Err(e) => tracing::warn!(error = %e, "failed to remove the stopped pod"),
        }
        true
    }

    /// Stops everything at once (the pod is gone, or the agent is stopping).
    async fn halt(&mut self, grace: Duration) {
        for c in &mut self.containers {
            if let State::Running { process, .. } = &mut c.state {
                process.stop(grace).await;
            }
        }
        self.remove_sandbox().await;
    }

    async fn remove_sandbox(&mut self) {
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.remove().await;
            self.node.pool.release(sandbox.ip);
        }
    }

    async fn publish(&mut self) {
        let views: Vec<ContainerView> = self.containers.iter().map(view).collect();
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip.to_string());
        let mut status = status::pod_status(
            &views,
            &self.node.host_ip,
            pod_ip.as_deref(),
            &self.start_time,
            &now(),
        );
        status::apply_readiness_gates(&mut status, &self.pod);
        let policy = self.restart_policy();
        if policy != "Always"
            && views
                .iter()
                .all(|v| matches!(v.phase, Phase::Terminated(_)))
        {
            let failed = views
                .iter()
                .any(|v| matches!(&v.phase, Phase::Terminated(t) if t.exit_code != 0));
            status.phase = Some(if failed { "Failed" } else { "Succeeded" }.into());
        }
        if let Some(old) = &self.published {
            status::keep_transition_times(&mut status, old);
            if *old == status {
                return;
            }
        }
        // A strategic merge, as the kubelet sends: conditions merge by
        // type, so a readiness gate's condition set by someone else stays.
        let patch = serde_json::json!({ "status": status::as_patch(&status) });
        match self
            .api()
            .patch_status(
                &self.name(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {
                self.published = Some(status);
                self.publish_error = None;
            }
            Err(e) => {
                let message = e.to_string();
                if self.publish_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "failed to update the pod status; retrying");
                }
                self.publish_error = Some(message);
            }
        }
    }

    /// The container waits in `CreateContainerConfigError` with `message`
    /// (an Event says it too) and is tried again after `retry`.
    async fn config_error(&mut self, index: usize, message: String, retry: Duration) {
        let c = &mut self.containers[index];
        c.state = State::Waiting {
            reason: "CreateContainerConfigError".into(),
            message: message.clone(),
            retry_at: Some(Instant::now() + retry),
        };
        self.event(EventType::Warning, "Failed", format!("Error: {message}"))
            .await;
    }

    /// The host directories the container's volume mounts bind: the
    /// service account's projected volume (a fresh token) and `emptyDir`
    /// volumes (a directory per pod, world-writable as the kubelet makes
    /// it). Other kinds of volume are not mounted (docs/lab.md, limits).
    async fn volume_mounts(&self, spec: &Container) -> Result<Vec<(PathBuf, String)>, String> {
        let mut mounts = Vec::new();
        if let Some(expiration) = service_account::projected_volume(&self.pod, spec) {
            let dir = self.log_dir().join("serviceaccount");
            service_account::write_volume(&self.shared.client, &self.pod, expiration, &dir)
                .await
                .map_err(|e| crate::error_chain(&e))?;
            mounts.push((dir, service_account::MOUNT_PATH.to_owned()));
        }
        let volumes = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten());
        for mount in spec.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.clone().find(|v| v.name == mount.name) else {
                continue;
            };
            if volume.empty_dir.is_some() {
                let dir = self.log_dir().join("volumes").join(&volume.name);
                std::fs::create_dir_all(&dir)
                    .and_then(|()| {
                        std::fs::set_permissions(
                            &dir,
                            std::os::unix::fs::PermissionsExt::from_mode(0o777),
                        )
                    })
                    .map_err(|e| format!("failed to make emptyDir {}: {e}", dir.display()))?;
                mounts.push((dir, mount.mount_path.clone()));
            }
        }
        Ok(mounts)
    }

    /// This pod's folder: container logs, its volumes.
    fn log_dir(&self) -> PathBuf {
        self.shared
            .lab_dir
            .join("pods")
            .join(self.namespace())
            .join(self.name())
    }

    /// The container's image, pulled as its `imagePullPolicy` says with
    /// the pod's `imagePullSecrets`; a Pulled Event says whether it was
    /// pulled or already on the node.
    async fn pull(&self, spec: &Container, image_ref: &str) -> Result<Image, PullError> {
        let mut secrets = Vec::new();
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &self.namespace());
        let names = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten());
        for name in names {
            match api.get(&name.name).await {
                Ok(secret) => secrets.push(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect::<BTreeMap<_, _>>(),
                ),
                // As the kubelet: a missing pull secret is pulled without.
                Err(e) => {
                    tracing::warn!(secret = %name.name, error = %e, "image pull secret not readable")
                }
            }
        }
        let credentials = move |host: &str| secrets.iter().find_map(|d| credentials_for(d, host));
        let began = Instant::now();
        let image = self.shared.images.pull(spec, &credentials).await?;
        let message = if image.pulled {
            format!(
                "Successfully pulled image {image_ref:?} in {:.3}s ({})",
                began.elapsed().as_secs_f64(),
                image.digest
            )
        } else {
            format!("Container image {image_ref:?} already present on machine")
        };
        self.event(EventType::Normal, "Pulled", message).await;
        Ok(image)
    }

    /// The container's environment: the base variables, the image's `Env`, `envFrom`, then
    /// `env` in order (later `$(VAR)` references see earlier values).
    async fn container_env(
        &self,
        spec: &Container,
        sandbox: &Sandbox,
        image_env: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOSTNAME".into(), self.name()),
            ("HOME".into(), "/root".into()),
        ];
        env.extend(service_account::api_env());
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        };
        for (name, value) in image_env {
            set(&mut env, name, value);
        }
        let ns = self.namespace();
        for source in spec.env_from.iter().flatten() {
            let prefix = source.prefix.clone().unwrap_or_default();
            if let Some(r) = &source.config_map_ref {
                let api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &ns);
                if let Ok(cm) = api.get(&r.name).await {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
            }
            if let Some(r) = &source.secret_ref {
                let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &ns);
                if let Ok(secret) = api.get(&r.name).await {
                    for (k, v) in secret.data.unwrap_or_default() {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
            }
        }
        for var in spec.env.iter().flatten() {
            let value = match &var.value_from {
                None => expand(var.value.as_deref().unwrap_or(""), &env),
                Some(from) => {
                    if let Some(field) = &from.field_ref {
                        self.field_value(&field.field_path, sandbox)
                    } else if let Some(r) = &from.config_map_key_ref {
                        let api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &ns);
                        api.get(&r.name)
                            .await
                            .ok()
                            .and_then(|cm| cm.data?.get(&r.key).cloned())
                            .unwrap_or_default()
                    } else if let Some(r) = &from.secret_key_ref {
                        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &ns);
                        api.get(&r.name)
                            .await
                            .ok()
                            .and_then(|s| {
                                s.data?
                                    .get(&r.key)
                                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                            })
                            .unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
            };
            set(&mut env, var.name.clone(), value);
        }
        env
    }

    /// The downward API's `fieldRef` values.
    fn field_value(&self, path: &str, sandbox: &Sandbox) -> String {
        let meta = &self.pod.metadata;
        let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default()
        };
        let quoted = |p: &str, prefix: &str| {
            p.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix("['"))
                .and_then(|r| r.strip_suffix("']"))
                .map(str::to_owned)
        };
        match path {
            "metadata.name" => self.name(),
            "metadata.namespace" => self.namespace(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => self.node.name.clone(),
            "spec.serviceAccountName" => self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" | "status.podIPs" => sandbox.ip.to_string(),
            "status.hostIP" | "status.hostIPs" => self.node.host_ip.clone(),
            p => {
                if let Some(k) = quoted(p, "metadata.labels") {
                    label(&meta.labels, &k)
                } else if let Some(k) = quoted(p, "metadata.annotations") {
                    label(&meta.annotations, &k)
                } else {
                    String::new()
                }
            }
        }
    }
}

fn view(c: &ContainerRun) -> ContainerView {
    let (phase, container_id) = match &c.state {
        State::Waiting {
            reason, message, ..
        } => (
            Phase::Waiting {
                reason: reason.clone(),
                message: message.clone(),
            },
            None,
        ),
        State::Running {
            process,
            started_at,
            ..
        } => (
            Phase::Running {
                started_at: started_at.clone(),
            },
            Some(format!("ferry-lab://{}", process.pid)),
        ),
        State::Terminated(t) => (Phase::Terminated(t.clone()), None),
    };
    let running = matches!(c.state, State::Running { kill_at: None, .. });
    ContainerView {
        name: c.spec.name.clone(),
        image: c.spec.image.clone().unwrap_or_default(),
        phase,
        last: c.last.clone(),
        restart_count: c.restart_count,
        started: running && c.started,
        ready: running && c.ready,
        container_id,
    }
}

/// Kubernetes' `$(VAR)` expansion: known variables are replaced, unknown
/// references stay as written, and `$$` escapes a `$`.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&rest[at..at + 2 + close + 1]),
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_like_kubernetes() {
        let env = vec![
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), "two".to_owned()),
        ];
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$(C) stays", &env), "$(C) stays");
        assert_eq!(expand("$$(A) is escaped", &env), "$(A) is escaped");
        assert_eq!(expand("cost $5 and $(", &env), "cost $5 and $(");
    }
}
