//! Verified before traffic, in the live world: which pods to verify, with
//! what ([`verify::Plan`]: the per-pod HTTP checks, the prediction cases of
//! the revision's commit, the running revision's answers), and their
//! verdicts written to the pods. The rules are in [`crate::gate::verify`]
//! and [`crate::gate::predictions`]; this is their I/O.
//!
//! Guarantees: a pod gets its verdict once; a condition that cannot be
//! written fails the look (a pod left without one would never take
//! traffic); a cases file that is missing or unreadable in the commit of a
//! new release is every pending pod's failure, named, since such a release
//! cannot be verified (a revision that passed its gate before, rolled back
//! to or running, is verified without the prediction check then: it may
//! predate the cases); git that cannot be read now is a transient failure
//! of the look, tried again at the next.

use kube::Client;
use kube::runtime::events::EventType;

use crate::cluster::discovery::Resolver;
use crate::crd::{Environment, EnvironmentStatus, reason};
use crate::failure::{self, FailureClass};
use crate::gate::health::Evidence;
use crate::gate::observe::{self, Observation};
use crate::gate::predictions;
use crate::gate::verify::{self, GatedPod, Plan};

use super::context::{Context, client_for};
use super::decide::Note;
use super::fetch;
use super::outcome::{Outcome, failed};

/// While a release (at `revision`; `restoring`: a rollback to it) is
/// judged: the evidence of a pod that failed its verification (before, or
/// now), and the notes of the pods verified now.
pub async fn judge_pods(
    env: &Environment,
    ctx: &Context,
    client: &Client,
    observation: &Observation,
    revision: &str,
    restoring: bool,
) -> Result<(Option<Evidence>, Vec<Note>), Outcome> {
    if let Some(evidence) = verify::refused(observation) {
        return Ok((Some(evidence), Vec::new()));
    }
    let known_good = if restoring {
        Passed::Before
    } else {
        Passed::Not
    };
    verify_pending(env, ctx, client, observation, revision, known_good).await
}

/// Whether the revision whose pods are verified passed its gate before.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Passed {
    Before,
    Not,
}

/// With `beforeTraffic`, the gated pods of what runs that were created
/// outside a release (rescheduled, scaled up, replaced) are verified at
/// each step while no release is judged; one that fails stays out of
/// traffic, and a Warning says so. Nothing here fails the step: the
/// release that runs passed its gate.
pub async fn verify_running(
    env: &Environment,
    ctx: &Context,
    status: &EnvironmentStatus,
) -> Vec<Note> {
    let Some(revision) = status.last_applied_revision.as_deref() else {
        return Vec::new();
    };
    let Ok(client) = client_for(ctx, env) else {
        return Vec::new();
    };
    let mut resolver = Resolver::shared(client.clone(), ctx.discovery.clone());
    let observation = match observe::observe(&mut resolver, &client, &status.inventory).await {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(error = %failure::describe(&e), "could not look for pods to verify");
            return Vec::new();
        }
    };
    match verify_pending(env, ctx, &client, &observation, revision, Passed::Before).await {
        Ok((Some(evidence), mut notes)) => {
            notes.push((
                EventType::Warning,
                verify::REFUSED,
                format!(
                    "{}: {}; it takes no traffic (delete it to try again)",
                    evidence.object, evidence.summary
                ),
            ));
            notes
        }
        Ok((None, notes)) => notes,
        Err(outcome) => {
            tracing::warn!(
                ?outcome,
                "could not verify the pods of the running revision"
            );
            Vec::new()
        }
    }
}

/// Verifies the new pods whose containers became ready and sets their
/// condition: the evidence of the first that failed, and a note per pod
/// verified.
async fn verify_pending(
    env: &Environment,
    ctx: &Context,
    client: &Client,
    observation: &Observation,
    revision: &str,
    passed: Passed,
) -> Result<(Option<Evidence>, Vec<Note>), Outcome> {
    let pending = verify::pending(observation);
    if pending.is_empty() {
        return Ok((None, Vec::new()));
    }
    let verdicts = match plan(env, ctx, observation, revision, passed).await? {
        Ok(plan) => {
            futures::future::join_all(
                pending
                    .iter()
                    .map(|pod| verify::verify(&ctx.http, &plan, &pod.ip)),
            )
            .await
        }
        Err(unverifiable) => vec![Err(unverifiable); pending.len()],
    };
    let mut refused = None;
    let mut notes = Vec::new();
    for (pod, verdict) in pending.iter().zip(verdicts) {
        set(client, pod, &verdict).await?;
        tracing::info!(pod = %pod.name, verified = verdict.is_ok(), "verified a pod before traffic");
        match verdict {
            Ok(said) => notes.push((
                EventType::Normal,
                "Verified",
                format!(
                    "pod {}/{} verified before traffic: {said}",
                    pod.namespace, pod.name
                ),
            )),
            Err(why) => {
                refused.get_or_insert(verify::refusal(pod, &why));
            }
        }
    }
    Ok((refused, notes))
}

/// What the pods of `revision` are verified with. `Ok(Err(why))`: they
/// cannot be (the cases file is missing or broken in the commit).
async fn plan<'a>(
    env: &'a Environment,
    ctx: &Context,
    observation: &Observation,
    revision: &str,
    passed: Passed,
) -> Result<Result<Plan<'a>, String>, Outcome> {
    let health = &env.spec.health_check;
    let mut plan = Plan {
        checks: verify::per_pod(&health.http),
        predictions: None,
        running: None,
    };
    let Some(spec) = &health.predictions else {
        return Ok(Ok(plan));
    };
    let text = fetch::read_at(env, ctx, revision, &spec.cases)
        .await
        .map_err(|why| {
            let message = format!("failed to read the prediction cases {}: {why}", spec.cases);
            failed(None, FailureClass::Transient, reason::FETCH_FAILED, message)
        })?;
    let Some(text) = text else {
        if passed == Passed::Before {
            tracing::info!(%revision, cases = %spec.cases, "a revision that passed its gate before has no prediction cases; verifying its pods without them");
            return Ok(Ok(plan));
        }
        return Ok(Err(format!(
            "predictions: {} does not exist in the commit; write it with `ferry-pipelines golden` (or remove healthCheck.predictions)",
            spec.cases
        )));
    };
    let cases = match predictions::parse_cases(&text, &spec.cases) {
        Ok(cases) => cases,
        Err(why) => return Ok(Err(format!("predictions: {why}"))),
    };
    if spec.compare_with_running.is_some()
        && let Some(ip) = verify::running_pod(observation)
    {
        match verify::ask(&ctx.http, &spec.url, &ip, &cases).await {
            Ok(answers) => plan.running = Some(answers),
            Err(why) => {
                tracing::info!(%why, "the running revision did not answer the cases; not comparing with it");
            }
        }
    }
    plan.predictions = Some((spec, cases));
    Ok(Ok(plan))
}

async fn set(
    client: &Client,
    pod: &GatedPod,
    verdict: &Result<String, String>,
) -> Result<(), Outcome> {
    verify::set_verdict(client, pod, verdict)
        .await
        .map_err(|e| {
            let mut message = format!(
                "failed to set condition ferry.dev/verified of pod {}/{}: {}",
                pod.namespace,
                pod.name,
                failure::describe(&e)
            );
            if failure::is_forbidden(&e) {
                message = format!(
                    "{message}; healthCheck.beforeTraffic needs `patch` on `pods/status`: {}",
                    failure::FORBIDDEN_HINT
                );
            }
            failed(None, failure::of_error(&e), reason::APPLY_FAILED, message)
        })
}
