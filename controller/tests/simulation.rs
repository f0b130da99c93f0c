//! A deterministic simulation of the controller's release decisions.
//!
//! Each scenario is a seeded run of [`machine::step`] and the pure record
//! and status functions the reconcile uses (`entries_for`, the journal's
//! `already_sealed`, `status_after`, `after_outcome`) against a model of
//! git (commits that are good, crash, never become ready or do not
//! render, a folder that moves) and of the cluster (what runs, since
//! when, whether hand edits drifted it), with a fault possible at every
//! effect: transient errors, API outages, a crash of the controller
//! (only the status and the journal survive), failed journal appends and
//! status writes; and at any time a new commit (with or without a
//! webhook), a retry annotation or a hand edit. After every step it checks
//! the invariants (`check`); at the end of a quiet period, that the
//! release settled where it should.
//!
//! `FERRY_SIM_SCENARIOS` sets how many scenarios (default 10,000);
//! `FERRY_SIM_SEED` replays one and prints its trace. Prints
//! `simulation: N scenarios, M steps, V violations`.

// The world's errors are `Outcome`s, as the live world's are.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ferry_controller::audit::{chain, journal};
use ferry_controller::cluster::apply::Applied;
use ferry_controller::crd::history::Entry;
use ferry_controller::crd::{
    Applying, EnvironmentStatus, HttpCheck, Placement, Rollout, condition, reason,
};
use ferry_controller::failure::FailureClass;
use ferry_controller::gate::checks::Attempt;
use ferry_controller::gate::health::{self, Evidence, Verdict};
use ferry_controller::reconcile::decide::{self, Note};
use ferry_controller::reconcile::machine::{
    self, Event, Facts, Look, Released, State, TRANSITIONS, World,
};
use ferry_controller::reconcile::outcome::Outcome;
use ferry_controller::reconcile::{record, status};
use ferry_controller::source::cache::Revision;

const T0: i64 = 1_900_000_000;
const ACTIVE: i64 = 1_800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    Crash,
    NeverReady,
    Broken,
}

#[derive(Debug, Clone)]
struct Commit {
    id: String,
    kind: Kind,
    /// The folder it keeps the environment in.
    path: &'static str,
    /// Seconds from its apply to ready (good) or crash-looping (crash).
    after: i64,
}

#[derive(Debug, Default)]
struct Cluster {
    running: Option<usize>,
    applied_at: i64,
    /// The time lost to faults when `running` was applied: faults after
    /// it (a crash right after the apply) are not the release's time.
    applied_faulty: i64,
    drifted_since: Option<i64>,
}

/// The scenario's fixed choices.
#[derive(Clone)]
struct Setup {
    interval: Duration,
    timeout: Duration,
    rollback: bool,
    cancel: bool,
    http: Vec<HttpCheck>,
    transient: f64,
    crash: f64,
    journal_fails: f64,
    status_fails: f64,
}

struct Model {
    now: i64,
    commits: Vec<Commit>,
    head: usize,
    path: &'static str,
    generation: i64,
    cluster: Cluster,
    outage_until: i64,
    /// Revisions that failed and were not retried since.
    forbidden: HashSet<String>,
    violations: Vec<String>,
    /// When git's head was pushed, and the faulty time then.
    head_pushed: (i64, i64),
    /// When a status write last failed or the controller last crashed.
    last_fault_at: i64,
    /// Whether a drift correction, not a release, put what runs there
    /// (and its pods are not ready yet).
    corrected_back: bool,
}

impl Model {
    fn id(&self, commit: usize) -> String {
        format!("main@sha1:{}", self.commits[commit].id)
    }
    fn find(&self, id: &str) -> Option<usize> {
        (0..self.commits.len()).find(|&c| self.id(c) == id)
    }
    fn running_ready(&self) -> bool {
        self.cluster.running.is_some_and(|c| {
            let commit = &self.commits[c];
            commit.kind == Kind::Good && self.now >= self.cluster.applied_at + commit.after
        })
    }
}

fn revision(model: &Model, commit: usize) -> Revision {
    Revision {
        reference: "main".into(),
        commit: model.commits[commit].id.clone(),
        author: "sim".into(),
        email: "sim@example.com".into(),
        committer: "sim".into(),
        time: model.now,
        message: format!("commit {commit}"),
    }
}

fn failed(class: FailureClass, why: &'static str, message: &str) -> Outcome {
    Outcome::Failed {
        revision: None,
        class,
        reason: why,
        message: message.into(),
    }
}

struct Sim<'a> {
    m: &'a mut Model,
    /// The status as stored (what survives a crash or a failed write).
    stored: &'a mut EnvironmentStatus,
    rng: &'a mut ChaCha8Rng,
    setup: &'a Setup,
    crashed: bool,
    faulted: bool,
    retried: bool,
    log: Vec<String>,
}

/// What the model renders: the commit and whether it came from git's head.
struct Rendered {
    revision: Revision,
    commit: usize,
    from_head: bool,
}

impl Sim<'_> {
    fn effect(&mut self, what: &str) -> Result<(), Outcome> {
        if self.m.now < self.m.outage_until {
            self.faulted = true;
            self.log.push(format!("{what}: API outage"));
            return Err(failed(FailureClass::Transient, reason::APPLY_FAILED, "503"));
        }
        if self.rng.random_bool(self.setup.crash) {
            self.crashed = true;
            self.log.push(format!("{what}: controller crashed"));
            return Err(failed(
                FailureClass::Transient,
                reason::APPLY_FAILED,
                "crash",
            ));
        }
        if self.rng.random_bool(self.setup.transient) {
            self.faulted = true;
            self.log.push(format!("{what}: transient error"));
            return Err(failed(
                FailureClass::Transient,
                reason::FETCH_FAILED,
                "timeout",
            ));
        }
        Ok(())
    }

    fn render(&self, commit: usize, path: &str, from_head: bool) -> Result<Rendered, Outcome> {
        let c = &self.m.commits[commit];
        if c.kind == Kind::Broken || c.path != path {
            return Err(Outcome::Failed {
                revision: Some(revision(self.m, commit)),
                class: FailureClass::Terminal,
                reason: reason::RENDER_FAILED,
                message: format!("{path} does not render at {}", c.id),
            });
        }
        Ok(Rendered {
            revision: revision(self.m, commit),
            commit,
            from_head,
        })
    }
}

impl World for Sim<'_> {
    type Rendered = Rendered;

    fn revision(rendered: &Rendered) -> &Revision {
        &rendered.revision
    }

    async fn fetch_head(&mut self) -> Result<Rendered, Outcome> {
        self.effect("fetch head")?;
        self.render(self.m.head, self.m.path, true)
    }

    async fn fetch_at(
        &mut self,
        revision: &str,
        placement: &Placement,
    ) -> Result<Rendered, Outcome> {
        self.effect("fetch commit")?;
        let Some(commit) = self.m.find(revision) else {
            return Err(failed(
                FailureClass::Terminal,
                reason::FETCH_FAILED,
                "no such commit",
            ));
        };
        self.render(commit, &placement.path, false)
    }

    async fn superseded(&mut self, _: &Rendered) -> Vec<Revision> {
        Vec::new()
    }

    async fn intend(&mut self, applying: &Applying) -> Result<(), Outcome> {
        self.effect("record the release applied")?;
        self.stored.applying = Some(applying.clone());
        Ok(())
    }

    async fn apply(
        &mut self,
        rendered: Rendered,
        placement: &Placement,
    ) -> Result<Released, Outcome> {
        self.effect("apply")?;
        let id = rendered.revision.id();
        if rendered.from_head && self.m.forbidden.contains(&id) && !self.retried {
            self.m.violations.push(format!(
                "{id} failed and was applied again without a new commit or a retry"
            ));
        }
        let m = &mut *self.m;
        let drifted = m.cluster.drifted_since.take().is_some();
        if m.cluster.running != Some(rendered.commit) {
            m.cluster.running = Some(rendered.commit);
            m.cluster.applied_at = m.now;
            m.corrected_back = !rendered.from_head;
        }
        self.log.push(format!("applied {}", short(&id)));
        if self.rng.random_bool(self.setup.crash) {
            self.crashed = true;
            self.log
                .push("apply: controller crashed after applying".into());
            return Err(failed(
                FailureClass::Transient,
                reason::APPLY_FAILED,
                "crash",
            ));
        }
        Ok(Released {
            applied: Applied {
                updated: usize::from(drifted),
                ..Applied::default()
            },
            digest: format!("{}:{}", rendered.revision.commit, placement.path),
            images: Vec::new(),
            durations: Default::default(),
        })
    }

    async fn look(&mut self, rollout: &Rollout, due: &[bool]) -> Result<Look, Outcome> {
        self.effect("observe")?;
        let m = &*self.m;
        let since = health::seconds(&rollout.started_at).unwrap_or(m.now);
        let deadline = i64::try_from(self.setup.timeout.as_secs()).unwrap_or(i64::MAX);
        let Some(running) = m.cluster.running else {
            return Ok(Look {
                verified: None,
                verdict: Verdict::Progressing(vec!["nothing runs".into()]),
                attempts: vec![None; due.len()],
            });
        };
        let commit = &m.commits[running];
        let elapsed = m.now - m.cluster.applied_at;
        // The objects judged are those of the revision applied last; a
        // revision the status does not know of (applied before a crash)
        // is never healthy on its behalf.
        let other = m.id(running) != rollout.revision;
        let mut verdict = match commit.kind {
            _ if other => Verdict::Progressing(vec!["web: another revision runs".into()]),
            Kind::Good if elapsed >= commit.after => Verdict::Healthy,
            Kind::Crash if elapsed >= commit.after => Verdict::Failed(Evidence {
                object: "Deployment.apps dev/web".into(),
                summary: "pods of the new revision are failing: CrashLoopBackOff".into(),
                pods: Vec::new(),
            }),
            _ => Verdict::Progressing(vec!["web: 0 of 2 updated replicas available".into()]),
        };
        if matches!(verdict, Verdict::Progressing(_)) && m.now - since >= deadline {
            verdict = Verdict::Failed(Evidence {
                object: "Deployment.apps dev/web".into(),
                summary: format!("not healthy within {deadline} s"),
                pods: Vec::new(),
            });
        }
        let healthy = verdict == Verdict::Healthy;
        let attempts = due
            .iter()
            .map(|due| {
                (*due && healthy).then(|| Attempt {
                    ok: true,
                    detail: "200".into(),
                })
            })
            .collect();
        Ok(Look {
            verdict,
            attempts,
            verified: None,
        })
    }

    fn started(&mut self, _: &str, _: Option<&str>) {}

    async fn passed(&mut self, _: &str) {}

    async fn gate_failed(&mut self, _: &Rollout, _: Option<&Evidence>) -> Note {
        (
            EventType::Warning,
            reason::HEALTH_CHECK_FAILED,
            String::new(),
        )
    }
}

fn short(id: &str) -> String {
    id.rsplit_once(':').map_or(id, |(_, c)| c).to_owned()
}

fn time(at: i64) -> Time {
    Time(Timestamp::from_second(at).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The outcome of one scenario.
struct Run {
    steps: u64,
    violations: Vec<String>,
    trace: Vec<String>,
    seen: BTreeSet<(State, Event, State)>,
}

fn new_commit(rng: &mut ChaCha8Rng, n: usize, path: &'static str, timeout: i64) -> Commit {
    let kind = match rng.random_range(0..10) {
        0..6 => Kind::Good,
        6 | 7 => Kind::Crash,
        8 => Kind::NeverReady,
        _ => Kind::Broken,
    };
    Commit {
        id: format!("{:040x}", n + 1),
        kind,
        path,
        after: rng.random_range(1..=(timeout / 2).max(1)),
    }
}

fn scenario(seed: u64, keep_trace: bool) -> Run {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let intervals = [30, 60, 120];
    let timeouts = [20, 60, 120];
    let noisy = [0.0, 0.02, 0.1];
    let interval = Duration::from_secs(intervals[rng.random_range(0..3)]);
    let timeout = Duration::from_secs(timeouts[rng.random_range(0..3)]);
    let http = if rng.random_bool(0.3) {
        let period = ["1s", "2s", "5s"][rng.random_range(0..3)];
        vec![HttpCheck {
            period: period.into(),
            success_threshold: rng.random_range(1..4),
            ..serde_json::from_value(
                serde_json::json!({"url": "http://{{.podIP}}:9696/v2/health/ready"}),
            )
            .expect("a check")
        }]
    } else {
        Vec::new()
    };
    let noise = noisy[rng.random_range(0..3)];
    let setup = Setup {
        interval,
        timeout,
        rollback: rng.random_bool(0.9),
        cancel: rng.random_bool(0.8),
        http,
        transient: noise,
        crash: noise / 5.0,
        journal_fails: noise / 2.0,
        status_fails: noise,
    };
    let timeout_s = i64::try_from(timeout.as_secs()).unwrap_or(60);
    let interval_s = i64::try_from(interval.as_secs()).unwrap_or(60);
    let mut first = new_commit(&mut rng, 0, "environments/dev", timeout_s);
    first.kind = Kind::Good;
    let mut m = Model {
        now: T0,
        commits: vec![first],
        head: 0,
        path: "environments/dev",
        generation: 1,
        cluster: Cluster::default(),
        outage_until: 0,
        forbidden: HashSet::new(),
        violations: Vec::new(),
        last_fault_at: 0,
        corrected_back: false,
        head_pushed: (T0, 0),
    };
    let mut status = EnvironmentStatus::default();
    let mut journal: Vec<Entry> = Vec::new();
    let mut retry: Option<String> = None;
    let mut requested_at: Option<String> = None;
    let mut head_looked: Option<i64> = None;
    let mut next = T0;
    let mut faulty = 0_i64;
    let mut run = Run {
        steps: 0,
        violations: Vec::new(),
        trace: Vec::new(),
        seen: BTreeSet::new(),
    };
    // When the running revision turned bad, and the faulty time then.
    let mut bad_since: Option<(i64, i64)> = None;
    // When the status began to name another revision than what runs.
    let mut stale_since: Option<(i64, i64)> = None;
    let end = T0 + ACTIVE;
    let settle = end + 4 * (timeout_s + interval_s) + 120;
    while next <= settle && run.steps < 20_000 {
        let quiet = next > end;
        // What happens in the world until the next reconcile.
        let mut t = m.now;
        while t < next && !quiet {
            t += 1;
            if rng.random_bool(0.004) {
                let moved = rng.random_bool(0.05);
                if moved {
                    m.path = if m.path == "environments/dev" {
                        "deploy/dev"
                    } else {
                        "environments/dev"
                    };
                    m.generation += 1;
                }
                let c = new_commit(&mut rng, m.commits.len(), m.path, timeout_s);
                m.commits.push(c);
                m.head = m.commits.len() - 1;
                m.head_pushed = (t, faulty);
                if rng.random_bool(0.5) || moved {
                    requested_at = Some(format!("push-{t}"));
                    next = t;
                }
                if keep_trace {
                    let c = &m.commits[m.head];
                    run.trace.push(format!(
                        "t={} commit {} {:?} at {}",
                        t - T0,
                        short(&c.id),
                        c.kind,
                        c.path
                    ));
                }
            }
            if rng.random_bool(0.0015) {
                retry = Some(format!("retry-{t}"));
                m.forbidden.clear();
                next = t;
                if keep_trace {
                    run.trace.push(format!("t={} retry annotated", t - T0));
                }
            }
            if rng.random_bool(0.003)
                && m.cluster.drifted_since.is_none()
                && m.cluster.running.is_some()
            {
                m.cluster.drifted_since = Some(t);
                if keep_trace {
                    run.trace.push(format!("t={} hand edit", t - T0));
                }
            }
            if setup.transient > 0.0 && rng.random_bool(0.001) {
                m.outage_until = t + rng.random_range(5..60);
                if keep_trace {
                    run.trace.push(format!(
                        "t={} API outage until {}",
                        t - T0,
                        m.outage_until - T0
                    ));
                }
            }
        }
        m.now = next;
        if m.running_ready() {
            m.corrected_back = false;
        }
        if quiet {
            m.outage_until = 0;
        }
        run.steps += 1;
        let before = status.clone();
        let requested = requested_at.is_some() && requested_at != before.last_handled_request;
        let facts = Facts {
            status: &before,
            retry: retry.as_deref(),
            now: m.now,
            health_timeout: timeout,
            http: &setup.http,
            rollback_enabled: setup.rollback,
            cancel_on_new_revision: setup.cancel,
            head_due: machine::head_due(
                head_looked.map(|at| u64::try_from(m.now - at).unwrap_or(0)),
                interval,
                requested,
            ),
            placement: Placement {
                path: m.path.to_owned(),
                target_namespace: None,
            },
        };
        let retried = retry.is_some() && retry != before.last_handled_retry;
        let quiet_setup = Setup {
            transient: 0.0,
            crash: 0.0,
            ..setup.clone()
        };
        let active = if quiet { &quiet_setup } else { &setup };
        let mut sim = Sim {
            m: &mut m,
            stored: &mut status,
            rng: &mut rng,
            setup: active,
            crashed: false,
            faulted: false,
            retried,
            log: Vec::new(),
        };
        let stepped = futures::executor::block_on(machine::step(&facts, &mut sim));
        let (crashed, mut faulted, log) = (sim.crashed, sim.faulted, std::mem::take(&mut sim.log));
        if m.cluster.applied_at == m.now {
            m.cluster.applied_faulty = faulty;
        }
        if stepped.head_seen {
            head_looked = Some(m.now);
        }
        let from = State::of(&before);
        if crashed {
            m.last_fault_at = m.now;
            head_looked = None;
            let wait = rng.random_range(1..10);
            // What a crash forgets (an apply it did not record) is learnt
            // again within an interval: that time is the fault's.
            faulty += wait + interval_s;
            next = m.now + wait;
            if keep_trace {
                run.trace.push(format!(
                    "t={} {} crashed: {}",
                    m.now - T0,
                    from.name(),
                    log.join("; ")
                ));
            }
            continue;
        }
        let now = time(m.now);
        let logical = status::next_status(&before, m.generation, &stepped.outcome, &now);
        let to = State::of(&logical);
        run.seen.insert((from, stepped.event, to));
        if !machine::allowed(from, stepped.event, to) {
            m.violations.push(format!(
                "transition {} --{}--> {} is not in TRANSITIONS",
                from.name(),
                stepped.event.name(),
                to.name()
            ));
        }
        // The record: sealed in the journal, then the status.
        let entries = record::entries_for(
            &stepped.outcome,
            "ferry-system/dev",
            "sim",
            &now.0.to_string(),
            None,
            before.history.last(),
        );
        let mut sealed = Vec::new();
        let mut faulted_journal = false;
        if !entries.is_empty() {
            let acknowledged = before.history.last().map_or(0, |e| e.sequence);
            let unacknowledged: Vec<Entry> = journal
                .iter()
                .filter(|e| e.sequence > acknowledged)
                .cloned()
                .collect();
            let done = journal::already_sealed(&unacknowledged, &entries);
            sealed.extend_from_slice(&unacknowledged[unacknowledged.len() - done..]);
            for entry in entries.into_iter().skip(done) {
                if !quiet && rng.random_bool(setup.journal_fails) {
                    faulted = true;
                    faulted_journal = true;
                    break;
                }
                let entry = chain::seal(entry, journal.last());
                journal.push(entry.clone());
                sealed.push(entry);
            }
        }
        // A history that cannot be sealed leaves the status unwritten.
        let written = !faulted_journal && (quiet || !rng.random_bool(setup.status_fails));
        if written {
            // Computed from the status as stored now (a release recorded
            // during the step changed it), as the live write does.
            status = status::status_after(
                &status,
                m.generation,
                &stepped.outcome,
                &now,
                requested_at.clone(),
                retry.clone(),
                &sealed,
            );
        } else {
            faulted = true;
            m.last_fault_at = m.now;
        }
        if let Some(failed) = status.failed_revision.clone().filter(|_| written) {
            let judged = matches!(
                stepped.outcome,
                Outcome::RollbackStarted { .. }
                    | Outcome::HealthFailed { .. }
                    | Outcome::RollbackFailed { .. }
            );
            if judged {
                m.forbidden.insert(failed);
            }
        }
        let follow = decide::after_outcome(&stepped.outcome, &before, interval, &now);
        let wait = follow.requeue.unwrap_or(interval).as_secs();
        let wait = i64::try_from(wait).unwrap_or(i64::MAX);
        next = m.now + wait;
        if !written {
            // As a crash: the status may name the previous release for
            // up to an interval.
            faulty += interval_s;
        }
        if faulted || matches!(stepped.event, Event::TransientError) {
            faulty += wait.max(1);
        }
        if keep_trace {
            run.trace.push(format!(
                "t={} {} --{}--> {}{} {}{}",
                m.now - T0,
                from.name(),
                stepped.event.name(),
                State::of(&status).name(),
                if written {
                    ""
                } else {
                    " (status write failed)"
                },
                outcome_line(&stepped.outcome),
                if log.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", log.join("; "))
                }
            ));
        }
        let found = check(
            &m,
            &status,
            &journal,
            written,
            &setup,
            faulty,
            &mut bad_since,
            &mut stale_since,
        );
        m.violations.extend(found);
        if !m.violations.is_empty() {
            if keep_trace {
                for e in journal.iter().rev().take(6).rev() {
                    run.trace.push(format!(
                        "journal {} {} {:?} {}",
                        e.sequence,
                        e.result,
                        e.revision.as_deref().map(short),
                        e.time
                    ));
                }
            }
            break;
        }
    }
    if m.violations.is_empty() {
        let found = settled(&m, &status, &setup);
        m.violations.extend(found);
    }
    run.violations = m.violations;
    run
}

fn outcome_line(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Applied {
            revision,
            judge,
            rollback_from,
            preempted,
            ..
        } => format!(
            "Applied {} judge={judge}{}{}",
            short(&revision.id()),
            rollback_from
                .as_ref()
                .map(|(f, _)| format!(" rollback from {}", short(f)))
                .unwrap_or_default(),
            preempted
                .as_ref()
                .map(|p| format!(" replacing {}", short(p)))
                .unwrap_or_default()
        ),
        Outcome::Failed {
            class,
            reason,
            message,
            ..
        } => format!("Failed {class:?} {reason}: {message}"),
        Outcome::Held {
            revision,
            corrected,
        } => format!(
            "Held {} corrected={}",
            short(&revision.id()),
            corrected.is_some()
        ),
        other => format!("{other:?}").chars().take(120).collect(),
    }
}

/// The invariants after a step.
#[allow(clippy::too_many_arguments)] // the model, the record and two clocks
fn check(
    m: &Model,
    status: &EnvironmentStatus,
    journal: &[Entry],
    written: bool,
    setup: &Setup,
    faulty: i64,
    bad_since: &mut Option<(i64, i64)>,
    stale_since: &mut Option<(i64, i64)>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let timeout = i64::try_from(setup.timeout.as_secs()).unwrap_or(0);
    let interval = i64::try_from(setup.interval.as_secs()).unwrap_or(0);
    // 1. A failed release does not stay running past its deadline plus
    //    an interval, when a healthy revision exists and the cluster
    //    answers (time lost to faults does not count).
    let running_bad = m
        .cluster
        .running
        .is_some_and(|c| m.commits[c].kind != Kind::Good);
    let recoverable = setup.rollback && status.last_healthy_revision.is_some();
    match (running_bad && recoverable, *bad_since) {
        (true, Some((since, faulty_then))) if since == m.cluster.applied_at => {
            let bad_for = m.now - since - (faulty - faulty_then);
            if bad_for > timeout + interval + 5 {
                violations.push(format!(
                    "a failed release runs {bad_for} s (deadline {timeout} s, interval {interval} s) with a healthy revision to return to"
                ));
            }
        }
        (true, _) => *bad_since = Some((m.cluster.applied_at, m.cluster.applied_faulty)),
        (false, _) => *bad_since = None,
    }
    // 2. The history: one chain, no entry lost from the status, none
    //    twice in a row.
    for pair in journal.windows(2) {
        if pair[1].sequence != pair[0].sequence + 1 || pair[1].previous != pair[0].sha256 {
            violations.push(format!("the chain breaks at {}", pair[1].sequence));
        }
        if pair[0].result == pair[1].result && pair[0].revision == pair[1].revision {
            violations.push(format!(
                "history entry {} {:?} recorded twice ({} and {})",
                pair[1].result, pair[1].revision, pair[0].sequence, pair[1].sequence
            ));
        }
    }
    for e in &status.history {
        if !journal
            .iter()
            .any(|j| j.sequence == e.sequence && j.sha256 == e.sha256)
        {
            violations.push(format!(
                "status shows history entry {} the journal lacks",
                e.sequence
            ));
        }
    }
    // 3. Healthy is never said of what is not healthy.
    let healthy = status
        .condition(condition::HEALTHY)
        .is_some_and(|c| c.status == "True");
    // (A status whose write failed after an apply speaks of what ran
    // before; the next reconcile applies again and says so, below.)
    let running = m.cluster.running.map(|c| m.id(c));
    let current = running == status.last_applied_revision;
    // After a failed status write or a crash the status may name what
    // ran before for up to an interval and a deadline (it learns of an
    // apply it did not record by applying again).
    // When that stale status made a drift correction put the healthy
    // revision back, its pods take until they are ready (at most half
    // the deadline in the model) while the status says Healthy.
    let recovered = m.now - m.last_fault_at > interval + timeout && !m.corrected_back;
    if written && healthy && status.rollout.is_none() && current && recovered && !m.running_ready()
    {
        violations.push(format!(
            "status says Healthy for {:?}, the cluster runs {:?} (not ready)",
            status.last_applied_revision, running,
        ));
    }
    match (current, *stale_since) {
        (false, Some((since, faulty_then))) => {
            let stale_for = m.now - since - (faulty - faulty_then);
            if stale_for > interval + timeout + 5 {
                violations.push(format!(
                    "the status says {:?} runs, the cluster has run {running:?} for {stale_for} s",
                    status.last_applied_revision
                ));
            }
        }
        (false, None) => *stale_since = Some((m.now, faulty)),
        (true, _) => *stale_since = None,
    }
    // 4. A good commit at git's head is applied within an interval of
    //    its push, whatever is being judged (unless the Environment asks
    //    to wait for verdicts).
    let head = &m.commits[m.head];
    let head_runs = m.cluster.running == Some(m.head);
    let head_failed = status.failed_revision.as_deref() == Some(m.id(m.head).as_str())
        || m.forbidden.contains(&m.id(m.head));
    if setup.cancel && head.kind == Kind::Good && head.path == m.path && !head_runs && !head_failed
    {
        let (pushed, faulty_then) = m.head_pushed;
        let waited = m.now - pushed - (faulty - faulty_then);
        if waited > interval + 10 {
            violations.push(format!(
                "git's head {} waits {waited} s to be applied (interval {interval} s)",
                short(&head.id)
            ));
        }
    }
    // 5. HTTP checks honour their period: the successes counted since
    //    the release started are at most one per period (an attempt whose
    //    status write failed is made again, and counted once).
    if let (Some(check), Some(rollout)) = (setup.http.first(), &status.rollout) {
        let period =
            ferry_controller::crd::parse_interval(&check.period).map_or(1, |p| p.as_secs());
        let since = health::seconds(&rollout.started_at).unwrap_or(m.now);
        let allowed = (m.now - since).max(0) / i64::try_from(period.max(1)).unwrap_or(1) + 1;
        let streak = rollout.http_streaks.first().copied().unwrap_or(0);
        if i64::from(streak) > allowed {
            violations.push(format!(
                "{streak} successes counted in {} s with period {period} s",
                m.now - since
            ));
        }
    }
    // 6. Hand edits are set back while nothing is in progress.
    if let Some(since) = m.cluster.drifted_since {
        let settled = matches!(State::of(status), State::InSync | State::Holding);
        let runs_applied = m.cluster.running.map(|c| m.id(c)) == status.last_applied_revision;
        if settled && runs_applied && m.now - since > 3 * interval + timeout + faulty.min(3600) {
            violations.push(format!("a hand edit stays {} s", m.now - since));
        }
    }
    violations
}

/// After a quiet period: nothing left in progress, and the cluster runs
/// git's head when it is good, or a good revision when it is not and one
/// was healthy.
fn settled(m: &Model, status: &EnvironmentStatus, setup: &Setup) -> Vec<String> {
    let mut violations = Vec::new();
    let state = State::of(status);
    if matches!(
        state,
        State::Releasing | State::RollbackPending | State::RollingBack
    ) {
        violations.push(format!("still {} after a quiet period", state.name()));
    }
    let head = &m.commits[m.head];
    let head_ok = head.kind == Kind::Good && head.path == m.path;
    let running = m.cluster.running.map(|c| m.id(c));
    if head_ok && running != Some(m.id(m.head)) && !m.forbidden.contains(&m.id(m.head)) {
        violations.push(format!(
            "git's good head {} does not run (runs {running:?})",
            short(&head.id)
        ));
    }
    if !head_ok
        && setup.rollback
        && status.last_healthy_revision.is_some()
        && m.cluster
            .running
            .is_some_and(|c| m.commits[c].kind != Kind::Good)
    {
        violations.push(
            "a failed release runs after a quiet period with a healthy revision to return to"
                .into(),
        );
    }
    violations
}

#[test]
fn the_release_machine_keeps_its_invariants_under_faults() {
    let scenarios: u64 = std::env::var("FERRY_SIM_SCENARIOS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let replay: Option<u64> = std::env::var("FERRY_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match replay {
        Some(seed) => vec![seed],
        None => (0..scenarios).collect(),
    };
    let started = Instant::now();
    let (mut steps, mut violations, mut first_failing) = (0_u64, 0_u64, None);
    let mut seen = BTreeSet::new();
    for &seed in &seeds {
        let run = scenario(seed, replay.is_some());
        let found = run.violations;
        steps += run.steps;
        seen.extend(run.seen);
        if replay.is_some() {
            for line in &run.trace {
                println!("{line}");
            }
        }
        if !found.is_empty() {
            violations += 1;
            if violations <= 10 {
                println!("seed {seed}: {}", found[0]);
            }
            if first_failing.is_none() {
                first_failing = Some((seed, found));
            }
        }
    }
    println!(
        "simulation: {} scenarios, {steps} steps, {violations} violations ({:.1} s)",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    let unseen: Vec<String> = TRANSITIONS
        .iter()
        .filter(|(f, e, t, _)| !seen.contains(&(*f, *e, *t)))
        .map(|(f, e, t, _)| format!("{} --{}--> {}", f.name(), e.name(), t.name()))
        .collect();
    if !unseen.is_empty() {
        println!("transitions no scenario took: {}", unseen.join(", "));
    }
    if let Some((seed, found)) = first_failing {
        panic!(
            "seed {seed} breaks an invariant: {}\nreplay it: FERRY_SIM_SEED={seed} cargo test -p ferry-controller --test simulation -- --nocapture",
            found.join("; ")
        );
    }
}
