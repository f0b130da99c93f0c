//! The reconcile loop: for each `Environment`, fetch, render, plan, apply,
//! and record what happened in its status, in Events and in metrics.
//!
//! Failures fall in two classes, each with its conditions and requeue:
//! - terminal (render, validation, namespace guard, field conflicts): git
//!   or the Environment must change. `Stalled=True`, `Ready=False`; looked
//!   at again at the interval, and at once when the Environment changes.
//! - transient (fetch, credentials, API errors): may pass by themselves.
//!   `Reconciling=True`, `Ready=False`; retried with back-off
//!   ([`retry_after`]: 10 s, growing with the time spent failing).
//!
//! Guarantees: a failure before applying changes nothing in the cluster;
//! the last applied revision, digest and inventory stay as they were until
//! a revision is applied in full. The status is computed by
//! [`next_status`], a pure function, and written in one patch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use crate::apply::Applied;
use crate::environment::{Environment, EnvironmentStatus, condition, parse_interval, reason};
use crate::inventory::ObjectRef;
use crate::metrics::Metrics;
use crate::plan::Resolver;
use crate::render;
use crate::source::{Cache, Credentials, Revision, SourceSpec};
use crate::sync;

/// Wait before retrying a transient failure.
pub const RETRY: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// What reconcilers share.
pub struct Context {
    pub client: Client,
    pub cache: Cache,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(client: Client, cache_dir: PathBuf, metrics: Arc<Metrics>) -> Self {
        let recorder = Recorder::new(client.clone(), "ferry-controller".into());
        Context {
            client,
            cache: Cache::new(&cache_dir),
            recorder,
            metrics,
        }
    }
}

/// Whether a failure needs a change (terminal) or time (transient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Terminal,
    Transient,
}

impl FailureClass {
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::Terminal => "terminal",
            FailureClass::Transient => "transient",
        }
    }
}

/// How a reconcile ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Applied {
        revision: Revision,
        digest: String,
        applied: Applied,
    },
    Failed {
        revision: Option<Revision>,
        class: FailureClass,
        reason: &'static str,
        message: String,
    },
    Suspended,
}

/// Never fails: every failure is an [`Outcome`] written to the status; this
/// error is only for the status write itself.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to write the status of Environment {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Time,
    generation: i64,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != kind);
    conditions.push(Condition {
        type_: kind.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: transition,
        observed_generation: Some(generation),
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

fn short(revision: &Revision) -> String {
    format!(
        "{}@{}",
        revision.reference,
        &revision.commit[..revision.commit.len().min(12)]
    )
}

/// The status after `outcome`, from the previous one. Pure.
pub fn next_status(
    previous: &EnvironmentStatus,
    generation: i64,
    outcome: &Outcome,
    now: &Time,
) -> EnvironmentStatus {
    let mut status = previous.clone();
    status.observed_generation = Some(generation);
    let c = &mut status.conditions;
    match outcome {
        Outcome::Applied {
            revision,
            digest,
            applied,
        } => {
            // Counts per reconcile go to Events; the condition stays stable.
            let message = format!(
                "applied {} ({} objects)",
                short(revision),
                applied.inventory.len()
            );
            set_condition(
                c,
                condition::READY,
                true,
                reason::APPLIED,
                &message,
                now,
                generation,
            );
            set_condition(
                c,
                condition::RECONCILING,
                false,
                reason::APPLIED,
                "",
                now,
                generation,
            );
            set_condition(
                c,
                condition::STALLED,
                false,
                reason::APPLIED,
                "",
                now,
                generation,
            );
            status.last_attempted_revision = Some(revision.id());
            status.last_applied_revision = Some(revision.id());
            status.manifests_digest = Some(digest.clone());
            status.inventory = applied.inventory.clone();
        }
        Outcome::Failed {
            revision,
            class,
            reason,
            message,
        } => {
            set_condition(c, condition::READY, false, reason, message, now, generation);
            let terminal = *class == FailureClass::Terminal;
            set_condition(
                c,
                condition::STALLED,
                terminal,
                reason,
                if terminal { message } else { "" },
                now,
                generation,
            );
            let retrying = format!("retrying with back-off: {message}");
            set_condition(
                c,
                condition::RECONCILING,
                !terminal,
                reason,
                if terminal { "" } else { &retrying },
                now,
                generation,
            );
            if let Some(revision) = revision {
                status.last_attempted_revision = Some(revision.id());
            }
        }
        Outcome::Suspended => {
            set_condition(
                c,
                condition::RECONCILING,
                false,
                reason::SUSPENDED,
                "spec.suspend is true",
                now,
                generation,
            );
        }
    }
    status
}

fn failed(
    revision: Option<&Revision>,
    class: FailureClass,
    reason: &'static str,
    message: impl std::fmt::Display,
) -> Outcome {
    Outcome::Failed {
        revision: revision.cloned(),
        class,
        reason,
        message: message.to_string(),
    }
}

async fn credentials(ctx: &Context, env: &Environment) -> Result<Credentials, String> {
    let Some(secret_ref) = &env.spec.source.secret_ref else {
        return Ok(Credentials::None);
    };
    let ns = env.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = secrets
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| format!("failed to read Secret {ns}/{}: {e}", secret_ref.name))?
        .ok_or_else(|| {
            format!(
                "Secret {ns}/{} does not exist; create it with token, or identity and known_hosts",
                secret_ref.name
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    match (text("token"), text("identity"), text("known_hosts")) {
        (Some(token), _, _) => Ok(Credentials::Token(token)),
        (None, Some(private_key), Some(known_hosts)) => Ok(Credentials::Ssh {
            private_key,
            passphrase: text("passphrase"),
            known_hosts,
        }),
        _ => Err(format!(
            "Secret {ns}/{} has neither token nor identity and known_hosts",
            secret_ref.name
        )),
    }
}

/// Fetch, render, plan and apply one Environment.
async fn sync(env: &Environment, ctx: &Context) -> Outcome {
    use FailureClass::{Terminal, Transient};
    let spec = &env.spec;
    let credentials = match credentials(ctx, env).await {
        Ok(c) => c,
        Err(message) => return failed(None, Transient, reason::CREDENTIALS_MISSING, message),
    };
    let source = SourceSpec {
        url: spec.source.url.clone(),
        reference: spec.source.reference.clone(),
        credentials,
    };
    let cache = ctx.cache.clone();
    let path = spec.source.path.clone();
    let fetched = tokio::task::spawn_blocking(move || {
        let revision = cache.fetch(&source)?;
        let files = cache.files(&source.url, &revision.commit)?;
        Ok::<_, crate::source::SourceError>((
            revision.clone(),
            render::render_with_origins(&files, &path),
        ))
    })
    .await;
    let (revision, rendered) = match fetched {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failed(None, Transient, reason::FETCH_FAILED, e),
        Err(e) => return failed(None, Transient, reason::FETCH_FAILED, e),
    };
    let desired = match rendered {
        Ok(d) => d,
        Err(e) => return failed(Some(&revision), Terminal, reason::RENDER_FAILED, e),
    };
    if let Some(target) = &spec.target_namespace
        && let Some((object, origin)) = desired.iter().find(|(o, _)| {
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .is_some_and(|ns| ns != target)
        })
    {
        let message = format!(
            "{} (from {origin}) is outside the target namespace {target}",
            ObjectRef::of(object)
        );
        return failed(
            Some(&revision),
            Terminal,
            reason::NAMESPACE_NOT_ALLOWED,
            message,
        );
    }
    let digest = render::digest(&desired.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>());
    let inventory = env
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let mut resolver = Resolver::new(ctx.client.clone());
    match sync::plan_and_apply(&mut resolver, &desired, &inventory, spec.force, spec.prune).await {
        Ok((applied, timings)) => {
            tracing::debug!(
                plan_ms = timings.plan.as_millis() as u64,
                apply_ms = timings.apply.as_millis() as u64,
                "synced"
            );
            Outcome::Applied {
                revision,
                digest,
                applied,
            }
        }
        Err(e) => {
            let class = if e.is_terminal() { Terminal } else { Transient };
            failed(Some(&revision), class, e.reason(), e)
        }
    }
}

/// Reconciles one Environment; see the module docs.
#[tracing::instrument(skip_all, fields(environment = %format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any())))]
pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let name = env.name_any();
    let ns = env.namespace().unwrap_or_default();
    let interval = parse_interval(&env.spec.interval).unwrap_or(DEFAULT_INTERVAL);
    let outcome = if env.spec.suspend {
        Outcome::Suspended
    } else {
        sync(&env, &ctx).await
    };

    let reference = env.object_ref(&());
    let (requeue, event) = match &outcome {
        Outcome::Applied {
            revision, applied, ..
        } => {
            tracing::info!(revision = %revision.id(), created = applied.created, updated = applied.updated, pruned = applied.pruned, "applied");
            ctx.metrics.record_applied(applied);
            let changed = applied.created + applied.updated + applied.pruned > 0;
            let note = format!(
                "applied {} ({}): {} created, {} updated, {} pruned",
                short(revision),
                revision.subject(),
                applied.created,
                applied.updated,
                applied.pruned
            );
            (
                Action::requeue(interval),
                changed.then_some((EventType::Normal, "Applied", note)),
            )
        }
        Outcome::Failed {
            class,
            reason,
            message,
            ..
        } => {
            tracing::warn!(class = class.label(), reason, %message, "reconcile failed");
            ctx.metrics.record_error(class.label(), reason);
            let wait = if *class == FailureClass::Terminal {
                interval
            } else {
                let previous = env.status.clone().unwrap_or_default();
                retry_after(&previous, &Time(Timestamp::now()), interval)
            };
            (
                Action::requeue(wait),
                Some((EventType::Warning, *reason, message.clone())),
            )
        }
        Outcome::Suspended => (Action::await_change(), None),
    };
    if let Some((type_, reason, note)) = event {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "failed to publish an event");
        }
    }

    let previous = env.status.clone().unwrap_or_default();
    let status = next_status(
        &previous,
        env.metadata.generation.unwrap_or(0),
        &outcome,
        &Time(Timestamp::now()),
    );
    if status != previous {
        let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ReconcileError::Status {
                name: format!("{ns}/{name}"),
                source,
            })?;
    }
    ctx.metrics.observe_duration(started.elapsed());
    Ok(requeue)
}

/// How long to wait before retrying a transient failure: [`RETRY`] at
/// first, then as long as the environment has already been failing
/// (`Reconciling=True` since its last transition), so the wait roughly
/// doubles with each retry; never more than the interval or 5 minutes,
/// never less than the interval when that is shorter than [`RETRY`].
pub fn retry_after(previous: &EnvironmentStatus, now: &Time, interval: Duration) -> Duration {
    let failing_for = previous
        .conditions
        .iter()
        .find(|c| c.type_ == condition::RECONCILING && c.status == "True")
        .and_then(|c| {
            now.0
                .duration_since(c.last_transition_time.0)
                .try_into()
                .ok()
        })
        .unwrap_or(Duration::ZERO);
    failing_for.clamp(RETRY.min(interval), interval.min(Duration::from_secs(300)))
}

/// Retries after a failed status write.
pub fn error_policy(_env: Arc<Environment>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile error");
    ctx.metrics.record_error("transient", "StatusWriteFailed");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(commit: &str) -> Revision {
        Revision {
            reference: "main".into(),
            commit: commit.into(),
            author: "a".into(),
            email: "e".into(),
            time: 0,
            message: "m".into(),
        }
    }

    fn time(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn condition<'a>(s: &'a EnvironmentStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap()
    }

    #[test]
    fn transient_retries_back_off_with_the_time_spent_failing() {
        let transient = failed(
            None,
            FailureClass::Transient,
            reason::FETCH_FAILED,
            "unreachable",
        );
        let failing = next_status(&EnvironmentStatus::default(), 1, &transient, &time(1000));
        let hour = Duration::from_secs(3600);
        assert_eq!(
            retry_after(&EnvironmentStatus::default(), &time(1000), hour),
            RETRY
        );
        assert_eq!(retry_after(&failing, &time(1005), hour), RETRY);
        assert_eq!(
            retry_after(&failing, &time(1040), hour),
            Duration::from_secs(40)
        );
        assert_eq!(
            retry_after(&failing, &time(9000), hour),
            Duration::from_secs(300)
        );
        assert_eq!(
            retry_after(&failing, &time(9000), Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn applied_sets_ready_revision_digest_and_inventory() {
        let applied = Applied {
            created: 2,
            inventory: vec![],
            ..Applied::default()
        };
        let outcome = Outcome::Applied {
            revision: revision("1f3c2ab0aaaaaaaaaaaa"),
            digest: "sha256:x".into(),
            applied,
        };
        let s = next_status(&EnvironmentStatus::default(), 3, &outcome, &time(10));
        assert_eq!(condition(&s, "Ready").status, "True");
        assert_eq!(
            condition(&s, "Ready").message,
            "applied main@1f3c2ab0aaaa (0 objects)"
        );
        assert_eq!(condition(&s, "Stalled").status, "False");
        assert_eq!(
            s.last_applied_revision.as_deref(),
            Some("main@sha1:1f3c2ab0aaaaaaaaaaaa")
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn failures_keep_what_was_applied_and_say_how_they_are_retried() {
        let applied = Outcome::Applied {
            revision: revision("aaa"),
            digest: "sha256:x".into(),
            applied: Applied::default(),
        };
        let good = next_status(&EnvironmentStatus::default(), 1, &applied, &time(10));
        let terminal = failed(
            Some(&revision("bbb")),
            FailureClass::Terminal,
            reason::VALIDATION_FAILED,
            "bad object",
        );
        let s = next_status(&good, 1, &terminal, &time(20));
        assert_eq!(
            (
                condition(&s, "Ready").status.as_str(),
                condition(&s, "Stalled").status.as_str()
            ),
            ("False", "True")
        );
        assert_eq!(condition(&s, "Stalled").reason, "ValidationFailed");
        assert_eq!(s.last_applied_revision.as_deref(), Some("main@sha1:aaa"));
        assert_eq!(s.last_attempted_revision.as_deref(), Some("main@sha1:bbb"));
        assert_eq!(s.manifests_digest.as_deref(), Some("sha256:x"));

        let transient = failed(
            None,
            FailureClass::Transient,
            reason::FETCH_FAILED,
            "unreachable",
        );
        let s = next_status(&good, 1, &transient, &time(30));
        assert_eq!(condition(&s, "Reconciling").status, "True");
        assert!(
            condition(&s, "Reconciling")
                .message
                .starts_with("retrying with back-off: unreachable")
        );
        assert_eq!(condition(&s, "Stalled").status, "False");
        // Stalled stayed False since the first write: its transition time too.
        assert_eq!(condition(&s, "Stalled").last_transition_time, time(10));
    }
}
