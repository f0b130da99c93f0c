//! The live world of a release step ([`machine::World`]): git through the
//! repository cache, the cluster as the Environment's deployer, one look
//! at a release (its objects and the HTTP checks due), GitHub reports,
//! and the evidence of a failed gate.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};

use crate::cluster::discovery::Resolver;
use crate::crd::{Applying, Environment, Placement, RETRY, Rollout, parse_interval, reason};
use crate::failure::{self, FailureClass};
use crate::gate::checks;
use crate::gate::health::{self, Evidence, Verdict};
use crate::gate::{observe, verify};
use crate::github::Step;
use crate::source::cache::Revision;

use super::before_traffic;
use super::context::{Context, client_for};
use super::decide::Note;
use super::fetch::{Fetched, fetch_and_render};
use super::machine::{self, Facts, Look, Released, Stepped, World};
use super::outcome::{Outcome, failed};
use super::release::{apply_desired, pin, superseded_by};
use super::status::short_id;
use super::trigger;

/// In debug builds only (the lab tests'), the reconcile of the Environment
/// `namespace/name` this variable of the controller's own process names
/// panics: how the tests show that a panic costs one reconcile of one
/// Environment, not the controller. Nothing git, a request or the API
/// server sends can set it, and release builds do not read it.
pub const TEST_PANIC_ENV: &str = "FERRY_TEST_PANIC";

/// One step of the release of `env` ([`machine::step`]) against the live
/// world; `interval`: the Environment's, already checked. The notes are
/// for Events. With it, the Environment as the step's own status patch
/// (the release about to be applied) left it, so the status write that
/// follows starts from there instead of meeting a conflict.
pub async fn step(
    env: &Environment,
    ctx: &Context,
    interval: Duration,
) -> (Stepped, Option<Environment>) {
    #[cfg(debug_assertions)]
    if let Ok(target) = std::env::var(TEST_PANIC_ENV) {
        let this = format!(
            "{}/{}",
            kube::ResourceExt::namespace(env).unwrap_or_default(),
            kube::ResourceExt::name_any(env)
        );
        if target == this {
            panic!("injected by {TEST_PANIC_ENV}={target}");
        }
    }
    let status = env.status.clone().unwrap_or_default();
    let key = format!(
        "{}/{}",
        kube::ResourceExt::namespace(env).unwrap_or_default(),
        kube::ResourceExt::name_any(env)
    );
    let requested = trigger::requested(env, &status);
    let head_due = machine::head_due(ctx.head_looked_secs_ago(&key), interval, requested);
    let retry = env.annotations().get(RETRY).cloned();
    let health_timeout =
        parse_interval(&env.spec.health_check.timeout).unwrap_or(Duration::from_secs(300));
    let facts = Facts {
        status: &status,
        retry: retry.as_deref(),
        now: Timestamp::now().as_second(),
        health_timeout,
        http: &env.spec.health_check.http,
        rollback_enabled: env.spec.rollback.enabled,
        cancel_on_new_revision: env.spec.health_check.cancel_on_new_revision,
        head_due,
        placement: Placement {
            path: env.spec.source.path.clone(),
            target_namespace: env.spec.target_namespace.clone(),
        },
    };
    let mut world = Live {
        env,
        ctx,
        health_timeout,
        client: None,
        stored: None,
        notes: Vec::new(),
    };
    let mut stepped = machine::step(&facts, &mut world).await;
    if stepped.head_seen {
        ctx.head_looked(&key);
    }
    stepped.notes.append(&mut world.notes);
    // Not when this step started a release: its pods are the release's,
    // verified by its looks against its own commit.
    let started = matches!(
        stepped.outcome,
        Outcome::Applied { judge: true, .. } | Outcome::RollbackStarted { .. }
    );
    if env.spec.health_check.before_traffic && status.rollout.is_none() && !started {
        stepped
            .notes
            .extend(before_traffic::verify_running(env, ctx, &status).await);
    }
    (stepped, world.stored)
}

/// The world a step acts on: git through the repository cache, the
/// cluster as the Environment's deployer, the HTTP checks, GitHub.
struct Live<'a> {
    env: &'a Environment,
    ctx: &'a Context,
    health_timeout: Duration,
    /// The deployer's client of the last look, which reads the evidence.
    client: Option<Client>,
    /// The Environment as [`World::intend`]'s status patch left it.
    stored: Option<Environment>,
    /// Notes of the looks (pods verified before traffic), for Events.
    notes: Vec<Note>,
}

impl World for Live<'_> {
    type Rendered = Fetched;

    fn revision(rendered: &Fetched) -> &Revision {
        &rendered.revision
    }

    async fn fetch_head(&mut self) -> Result<Fetched, Outcome> {
        fetch_and_render(self.env, self.ctx, None, &self.env.spec.source.path).await
    }

    async fn fetch_at(
        &mut self,
        revision: &str,
        placement: &Placement,
    ) -> Result<Fetched, Outcome> {
        let Some((_, commit)) = revision.split_once("@sha1:") else {
            let message = format!("{revision} is not a revision id");
            return Err(failed(
                None,
                FailureClass::Terminal,
                reason::INVALID_SPEC,
                message,
            ));
        };
        fetch_and_render(self.env, self.ctx, Some(commit.to_owned()), &placement.path).await
    }

    async fn superseded(&mut self, rendered: &Fetched) -> Vec<Revision> {
        let status = self.env.status.clone().unwrap_or_default();
        superseded_by(
            self.ctx,
            rendered.source.clone(),
            &status,
            &rendered.revision,
        )
        .await
    }

    async fn intend(&mut self, applying: &Applying) -> Result<(), Outcome> {
        // A merge patch of this one field; the Environment it returns is
        // what the status write that ends the step starts from.
        let api: Api<Environment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.env.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({ "status": { "applying": applying } });
        api.patch_status(
            &self.env.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|stored| self.stored = Some(stored))
        .map_err(|e| {
            let message = format!(
                "failed to record in the status the release about to be applied (nothing was applied): {}",
                failure::describe(&e)
            );
            failed(None, failure::of_error(&e), reason::APPLY_FAILED, message)
        })
    }

    async fn apply(
        &mut self,
        rendered: Fetched,
        placement: &Placement,
    ) -> Result<Released, Outcome> {
        let Fetched {
            revision,
            desired,
            mut durations,
            ..
        } = rendered;
        let mut released = apply_desired(self.env, self.ctx, &revision, desired, placement).await?;
        durations.append(&mut released.durations);
        released.durations = durations;
        Ok(released)
    }

    async fn look(&mut self, rollout: &Rollout, due: &[bool]) -> Result<Look, Outcome> {
        let (look, client, mut notes) =
            look(self.env, self.ctx, rollout, due, self.health_timeout).await?;
        self.client = Some(client);
        self.notes.append(&mut notes);
        Ok(look)
    }

    fn started(&mut self, revision: &str, rollback_from: Option<&str>) {
        self.ctx.github.report(
            self.env,
            Step::Started {
                revision: revision.to_owned(),
                rollback_from: rollback_from.map(str::to_owned),
            },
        );
    }

    async fn passed(&mut self, revision: &str) {
        pin(self.env, self.ctx, revision).await;
    }

    async fn gate_failed(&mut self, rollout: &Rollout, evidence: Option<&Evidence>) -> Note {
        let client = self
            .client
            .clone()
            .unwrap_or_else(|| self.ctx.client.clone());
        failure_event(self.env, self.ctx, &client, rollout, evidence).await
    }
}

/// One look at `rollout` (under the health `timeout`): the workload
/// rules' verdict (with `beforeTraffic`, the new pods verified first), and
/// one attempt per HTTP check marked `due` once the workloads are healthy;
/// with the client that looked (the deployer's, which reads the evidence
/// of a failure too), and the notes of pods verified.
async fn look(
    env: &Environment,
    ctx: &Context,
    rollout: &Rollout,
    due: &[bool],
    timeout: Duration,
) -> Result<(Look, Client, Vec<Note>), Outcome> {
    let status = env.status.clone().unwrap_or_default();
    let client = client_for(ctx, env)
        .map_err(|message| failed(None, FailureClass::Terminal, reason::INVALID_SPEC, message))?;
    let mut resolver = Resolver::shared(client.clone(), ctx.discovery.clone());
    let observation = observe::observe(&mut resolver, &client, &status.inventory)
        .await
        .map_err(|e| {
            let mut message = format!(
                "failed to read the release's objects: {}",
                failure::describe(&e)
            );
            if failure::is_forbidden(&e) {
                message = format!("{message}; {}", failure::FORBIDDEN_HINT);
            }
            failed(None, failure::of_error(&e), reason::APPLY_FAILED, message)
        })?;
    let now = Timestamp::now().as_second();
    let since = health::seconds(&rollout.started_at).unwrap_or(now);
    let mut verdict = health::assess(
        &observation.objects,
        &observation.replica_sets,
        &observation.pods,
        since,
        now,
        timeout,
    );
    let mut notes = Vec::new();
    if env.spec.health_check.before_traffic && !matches!(verdict, Verdict::Failed(_)) {
        let (refused, verified) = before_traffic::judge_pods(
            env,
            ctx,
            &client,
            &observation,
            &rollout.revision,
            rollout.rolling_back_from.is_some(),
        )
        .await?;
        notes = verified;
        if let Some(evidence) = refused {
            verdict = Verdict::Failed(evidence);
        }
    }
    tracing::debug!(revision = %rollout.revision, ?verdict, "judged");
    let http = &env.spec.health_check.http;
    let mut attempts = vec![None; http.len()];
    if verdict == Verdict::Healthy && !http.is_empty() {
        let ips = observe::new_pod_ips(&observation);
        for (i, check) in http.iter().enumerate() {
            if due.get(i).copied().unwrap_or(true) {
                attempts[i] = Some(checks::attempt(&ctx.http, check, &ips).await);
            }
        }
    }
    let verified = (env.spec.health_check.before_traffic && verdict == Verdict::Healthy)
        .then(|| verify::summary(&observation))
        .flatten();
    Ok((
        Look {
            verdict,
            attempts,
            verified,
        },
        client,
        notes,
    ))
}

/// The Warning Event of a failed gate, on the Environment: the evidence
/// with the failing pods' states and events. Their last log lines go into
/// an Event on the failing workload, in its own namespace, where readers
/// of that namespace look (and not readers of the Environment alone).
async fn failure_event(
    env: &Environment,
    ctx: &Context,
    client: &Client,
    rollout: &Rollout,
    evidence: Option<&Evidence>,
) -> Note {
    let mut note = String::new();
    if let Some(evidence) = evidence {
        let namespace = evidence_namespace(evidence, env);
        let described =
            observe::describe(client, namespace.as_deref(), evidence, observe::NOTE_LIMIT).await;
        note = described.text;
        if !described.logs.is_empty()
            && let Some(workload) = workload_of(env, evidence)
        {
            let event = kube::runtime::events::Event {
                type_: EventType::Warning,
                reason: reason::HEALTH_CHECK_FAILED.into(),
                note: Some(observe::cap(
                    &format!(
                        "{} failed its health gate; the failing containers' last lines:\n{}",
                        short_id(&rollout.revision),
                        described.logs
                    ),
                    observe::NOTE_LIMIT,
                )),
                action: "Judge".into(),
                secondary: None,
            };
            match ctx.recorder.publish(&event, &workload).await {
                Ok(()) => note.push_str(&format!(
                    "\n(the failing containers' last log lines: in the Events of {} in namespace {})",
                    evidence.object,
                    workload.namespace.as_deref().unwrap_or("")
                )),
                Err(e) => tracing::debug!(error = %e, "failed to publish the log lines' event"),
            }
        }
    }
    tracing::warn!(revision = %rollout.revision, evidence = %note, "health check failed");
    (
        EventType::Warning,
        reason::HEALTH_CHECK_FAILED,
        observe::cap(
            &format!(
                "{} failed its health gate: {note}",
                short_id(&rollout.revision)
            ),
            observe::NOTE_LIMIT,
        ),
    )
}

/// The failing object of `evidence` as an Event can name it: found in
/// the Environment's inventory (which holds the version it was applied
/// with).
fn workload_of(env: &Environment, evidence: &Evidence) -> Option<ObjectReference> {
    let status = env.status.as_ref()?;
    let applied = status
        .inventory
        .iter()
        .find(|r| r.to_string() == evidence.object)?;
    Some(ObjectReference {
        api_version: Some(applied.api_version()),
        kind: Some(applied.kind.clone()),
        namespace: applied.namespace.clone(),
        name: Some(applied.name.clone()),
        ..ObjectReference::default()
    })
}

/// The namespace of the failing object, for its pods' events and logs.
fn evidence_namespace(evidence: &Evidence, env: &Environment) -> Option<String> {
    evidence
        .object
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(ns, _)| ns.to_owned())
        .or_else(|| env.spec.target_namespace.clone())
}
