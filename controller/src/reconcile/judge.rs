//! Judging the release in `status.rollout`: one look at the cluster and
//! one attempt per HTTP check, a verdict, and what it leads to
//! ([`decide::after_verdict`]): wait, finish, roll back or stop.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::EventType;

use crate::cluster::discovery::Resolver;
use crate::crd::{Environment, EnvironmentStatus, Rollout, parse_interval, reason};
use crate::failure::{self, FailureClass};
use crate::gate::checks;
use crate::gate::health::{self, Evidence, Verdict};
use crate::gate::observe;

use super::context::{Context, client_for};
use super::decide::{self, AfterVerdict, Note};
use super::outcome::{Outcome, failed};
use super::release::{apply_head, pin, roll_back};
use super::status::short_id;

/// In debug builds only (the lab tests'), the reconcile of the Environment
/// `namespace/name` this variable of the controller's own process names
/// panics: how the tests show that a panic costs one reconcile of one
/// Environment, not the controller. Nothing git, a request or the API
/// server sends can set it, and release builds do not read it.
pub const TEST_PANIC_ENV: &str = "FERRY_TEST_PANIC";

/// One step of a release: judges the release being judged, or, when there
/// is none, applies what git asks for. The notes are for Events.
pub async fn step(env: &Environment, ctx: &Context) -> (Outcome, Vec<Note>) {
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
    let Some(rollout) = status.rollout.clone() else {
        return (apply_head(env, ctx).await, Vec::new());
    };
    let (verdict, streaks, client) = match look(env, ctx, &rollout, &status).await {
        Ok(v) => v,
        Err(outcome) => return (outcome, Vec::new()),
    };
    let evidence = match &verdict {
        Verdict::Failed(evidence) => Some(evidence),
        _ => None,
    };
    let next = decide::after_verdict(
        &verdict,
        streaks,
        &rollout,
        &status,
        env.spec.rollback.enabled,
    );
    match next {
        AfterVerdict::Wait(outcome) => (outcome, Vec::new()),
        AfterVerdict::Passed(outcome, note) => {
            pin(env, ctx, &rollout.revision).await;
            (outcome, vec![note])
        }
        AfterVerdict::RollBack { to, why } => {
            let event = failure_event(env, &client, &rollout, evidence).await;
            ctx.metrics.record_rollback();
            let outcome = roll_back(env, ctx, &to, &rollout.revision, &why).await;
            (outcome, vec![event])
        }
        AfterVerdict::Failed(outcome) => {
            let event = failure_event(env, &client, &rollout, evidence).await;
            (outcome, vec![event])
        }
    }
}

/// The verdict on `rollout` from one look at its objects and one attempt
/// per HTTP check, with the checks' streaks after it and the client that
/// looked (the deployer's, which reads the evidence of a failure too).
async fn look(
    env: &Environment,
    ctx: &Context,
    rollout: &Rollout,
    status: &EnvironmentStatus,
) -> Result<(Verdict, Vec<i32>, Client), Outcome> {
    let timeout =
        parse_interval(&env.spec.health_check.timeout).unwrap_or(Duration::from_secs(300));
    let client = client_for(ctx, env)
        .map_err(|message| failed(None, FailureClass::Terminal, reason::INVALID_SPEC, message))?;
    let mut resolver = Resolver::shared(client.clone(), ctx.discovery.clone());
    let observation = observe::observe(&mut resolver, &client, &status.inventory)
        .await
        .map_err(|e| {
            let message = format!(
                "failed to read the release's objects: {}",
                failure::describe(&e)
            );
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
    tracing::debug!(revision = %rollout.revision, ?verdict, "judged");
    let mut streaks = rollout.http_streaks.clone();
    let http = &env.spec.health_check.http;
    if verdict == Verdict::Healthy && !http.is_empty() {
        let ips = observe::new_pod_ips(&observation);
        let mut attempts = Vec::new();
        streaks.resize(http.len(), 0);
        for (i, check) in http.iter().enumerate() {
            let attempt = checks::attempt(&ctx.http, check, &ips).await;
            streaks[i] = checks::next_streak(streaks[i], attempt.ok);
            attempts.push(attempt);
        }
        let counted = checks::judge_checks(http, &streaks, &attempts);
        verdict = checks::with_checks(counted, now - since, timeout);
    }
    Ok((verdict, streaks, client))
}

/// The Warning Event of a failed gate: the evidence with the failing pods'
/// events and last log lines.
async fn failure_event(
    env: &Environment,
    client: &Client,
    rollout: &Rollout,
    evidence: Option<&Evidence>,
) -> Note {
    let mut note = String::new();
    if let Some(evidence) = evidence {
        let namespace = evidence_namespace(evidence, env);
        note = observe::describe(client, namespace.as_deref(), evidence, observe::NOTE_LIMIT).await;
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

/// The namespace of the failing object, for its pods' events and logs.
fn evidence_namespace(evidence: &Evidence, env: &Environment) -> Option<String> {
    evidence
        .object
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(ns, _)| ns.to_owned())
        .or_else(|| env.spec.target_namespace.clone())
}
