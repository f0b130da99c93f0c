//! The reconcile loop: for each `Environment`, fetch, render, plan, apply,
//! and record what happened in its status, in Events and in metrics.
//!
//! Failures fall in two classes ([`crate::failure`]), each with its
//! conditions and requeue:
//! - terminal (render, validation, namespace guard, conflicts, missing
//!   permissions): git, the cluster or the Environment must change.
//!   `Stalled=True`, `Ready=False`; looked at again at the interval, and at
//!   once when the Environment changes.
//! - transient (fetch, credentials, API errors such as 429, 5xx and
//!   timeouts): may pass by themselves. `Reconciling=True`, `Ready=False`;
//!   retried with back-off ([`retry_after`]: 10 s, growing with the time
//!   spent failing).
//!
//! Guarantees: a failure before applying changes nothing in the cluster;
//! the last applied revision, digest and inventory stay as they were until
//! a revision is applied in full. Each reconcile reads the Environment
//! fresh from the API server (not the watch cache), so it prunes from the
//! latest inventory; the status is computed by [`next_status`], a pure
//! function, and written with optimistic concurrency (a newer status is
//! never overwritten: on a conflict it is read again and recomputed).
//! A finalizer deletes what the Environment applied when it is deleted
//! with `prune: true` (owned objects only; adopted ones are released), or
//! orphans it with `prune: false`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::discovery::Scope as ApiScope;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, Event as Finalizing};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use crate::apply::{self, Applied};
use crate::environment::{
    Environment, EnvironmentStatus, FINALIZER, MIN_INTERVAL, condition, parse_interval, reason,
};
pub use crate::failure::FailureClass;
use crate::inventory::ObjectRef;
use crate::metrics::Metrics;
use crate::ownership;
use crate::plan::{Action as PlanAction, Change, Plan, Resolver};
use crate::render;
use crate::source::{Cache, Credentials, Revision, SourceSpec, redact};
use crate::sync::{self, SyncOptions};
use crate::target::{self, Scope};

/// Wait before retrying a transient failure.
pub const RETRY: Duration = Duration::from_secs(10);
/// Status writes that lose a race are recomputed and retried this often.
const STATUS_ATTEMPTS: usize = 3;

/// What reconcilers share.
pub struct Context {
    pub client: Client,
    /// The controller's own configuration, from which impersonating
    /// clients are made for Environments with `serviceAccountName`.
    pub config: kube::Config,
    pub cache: Cache,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(
        client: Client,
        config: kube::Config,
        cache_dir: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), "ferry-controller".into());
        Context {
            client,
            config,
            cache: Cache::new(&cache_dir),
            recorder,
            metrics,
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

/// Never fails for what git or the cluster hold: every such failure is an
/// [`Outcome`] written to the status. These errors are the controller's
/// own I/O (reading the Environment, writing its status, the finalizer).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("failed to read Environment {name}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the status of Environment {name}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to clean up after Environment {name}: {message}")]
    Cleanup { name: String, message: String },
    #[error("failed to handle the finalizer of Environment {name}")]
    Finalizer {
        name: String,
        #[source]
        source: Box<finalizer::Error<ReconcileError>>,
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
        (Some(token), _, _) => Ok(Credentials::Token(token.trim().to_owned())),
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

/// The client plan, apply and prune use: the controller's own, or one
/// impersonating `spec.serviceAccountName`.
fn client_for(ctx: &Context, env: &Environment) -> Result<Client, String> {
    let Some(account) = &env.spec.service_account_name else {
        return Ok(ctx.client.clone());
    };
    let namespace = env
        .spec
        .target_namespace
        .clone()
        .or_else(|| env.namespace())
        .unwrap_or_default();
    let mut config = ctx.config.clone();
    // The API server adds the account's groups (system:serviceaccounts,
    // system:serviceaccounts:NS, system:authenticated) itself.
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
    config.auth_info.impersonate_groups = None;
    Client::try_from(config)
        .map_err(|e| format!("failed to make a client impersonating {namespace}/{account}: {e}"))
}

/// The owner label value of an Environment.
pub fn owner_of(env: &Environment) -> String {
    ownership::owner_id(&env.namespace().unwrap_or_default(), &env.name_any())
}

/// Each desired object's scope, from discovery or, for kinds the revision
/// itself defines, from its CRD.
async fn scopes(
    resolver: &mut Resolver,
    desired: &[(Value, String)],
) -> Result<Vec<(ObjectRef, Scope)>, kube::Error> {
    let crds: Vec<(String, String, Scope)> = desired
        .iter()
        .filter(|(o, _)| ObjectRef::of(o).kind == "CustomResourceDefinition")
        .filter_map(|(o, _)| {
            let group = o.pointer("/spec/group")?.as_str()?.to_owned();
            let kind = o.pointer("/spec/names/kind")?.as_str()?.to_owned();
            let scope = match o.pointer("/spec/scope")?.as_str()? {
                "Cluster" => Scope::Cluster,
                _ => Scope::Namespaced,
            };
            Some((group, kind, scope))
        })
        .collect();
    let mut out = Vec::new();
    for (object, _) in desired {
        let id = ObjectRef::of(object);
        match resolver.resolve(&id).await {
            Ok((_, capabilities)) => {
                let scope = match capabilities.scope {
                    ApiScope::Cluster => Scope::Cluster,
                    ApiScope::Namespaced => Scope::Namespaced,
                };
                out.push((id, scope));
            }
            Err(e) if crate::failure::is_unknown_kind(&e) => {
                if let Some((_, _, scope)) = crds
                    .iter()
                    .find(|(g, k, _)| *g == id.group && *k == id.kind)
                {
                    out.push((id, *scope));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Fetch, render, plan and apply one Environment.
async fn sync(env: &Environment, ctx: &Context) -> Outcome {
    use FailureClass::{Terminal, Transient};
    let spec = &env.spec;
    let Some(timeout) = parse_interval(&spec.source.timeout) else {
        let message = format!(
            "spec.source.timeout {:?} is not a duration such as 60s or 2m",
            spec.source.timeout
        );
        return failed(None, Terminal, reason::INVALID_SPEC, message);
    };
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
    let fetch = tokio::task::spawn_blocking(move || {
        let revision = cache.fetch(&source, timeout)?;
        let files = cache.files(&source, &revision.commit)?;
        Ok::<_, crate::source::SourceError>((
            revision.clone(),
            render::render_with_origins(&files, &path),
        ))
    });
    // The fetch stops itself at the timeout; this bounds the wait even
    // when libgit2 blocks somewhere its callbacks do not reach.
    let fetched = tokio::time::timeout(timeout + Duration::from_secs(5), fetch).await;
    let (revision, rendered) = match fetched {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => {
            return failed(
                None,
                Transient,
                reason::FETCH_FAILED,
                crate::failure::describe(&e),
            );
        }
        Ok(Err(e)) => return failed(None, Transient, reason::FETCH_FAILED, e),
        Err(_) => {
            let message = format!(
                "failed to fetch {}: no answer within {} s",
                redact(&spec.source.url),
                timeout.as_secs()
            );
            return failed(None, Transient, reason::FETCH_FAILED, message);
        }
    };
    let mut desired = match rendered {
        Ok(d) => d,
        Err(e) => {
            return failed(
                Some(&revision),
                Terminal,
                reason::RENDER_FAILED,
                crate::failure::describe(&e),
            );
        }
    };
    let client = match client_for(ctx, env) {
        Ok(c) => c,
        Err(message) => return failed(Some(&revision), Terminal, reason::INVALID_SPEC, message),
    };
    let mut resolver = Resolver::new(client);
    let known = match scopes(&mut resolver, &desired).await {
        Ok(k) => k,
        Err(e) => {
            let class = crate::failure::of_error(&e);
            return failed(
                Some(&revision),
                class,
                reason::APPLY_FAILED,
                format!("failed to discover the API: {e}"),
            );
        }
    };
    let scope_of = |id: &ObjectRef| {
        known
            .iter()
            .find(|(k, _)| k.same_object(id) || (k.group == id.group && k.kind == id.kind))
            .map(|(_, s)| *s)
    };
    if let Err(e) = target::place(&mut desired, spec.target_namespace.as_deref(), scope_of) {
        return failed(Some(&revision), Terminal, reason::NAMESPACE_NOT_ALLOWED, e);
    }
    let digest = render::digest(&desired.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>());
    let inventory = env
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let owner = owner_of(env);
    let options = SyncOptions {
        force: spec.force,
        prune: spec.prune,
        owner: Some(&owner),
    };
    match sync::plan_and_apply(&mut resolver, &desired, &inventory, options).await {
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
            let mut message = crate::failure::describe(&e);
            if e.reason() == reason::FORBIDDEN && !message.contains(crate::failure::FORBIDDEN_HINT)
            {
                message = format!("{message}; {}", crate::failure::FORBIDDEN_HINT);
            }
            failed(Some(&revision), e.class(), e.reason(), message)
        }
    }
}

/// Deletes (or releases) what the Environment applied, in reverse
/// dependency order; with `prune: false` leaves it all in place.
async fn cleanup(env: &Environment, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any());
    let inventory = env
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    if !env.spec.prune {
        tracing::info!(
            objects = inventory.len(),
            "Environment deleted with prune: false; orphaning what it applied"
        );
        return Ok(Action::await_change());
    }
    let client = client_for(ctx, env).map_err(|message| ReconcileError::Cleanup {
        name: name.clone(),
        message,
    })?;
    let mut resolver = Resolver::new(client);
    let plan = Plan {
        changes: inventory
            .iter()
            .map(|object| Change {
                object: object.clone(),
                action: PlanAction::Prune,
                diff: String::new(),
                desired: None,
                validated: true,
                force: false,
                drift: Vec::new(),
            })
            .collect(),
    };
    let owner = owner_of(env);
    let applied = apply::apply(&mut resolver, &plan, true, Some(&owner))
        .await
        .map_err(|e| ReconcileError::Cleanup {
            name: name.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(
        pruned = applied.pruned,
        released = applied.released,
        "Environment deleted; removed what it applied"
    );
    Ok(Action::await_change())
}

/// Reconciles one Environment; see the module docs.
#[tracing::instrument(skip_all, fields(environment = %format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any())))]
pub async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let ns = env.namespace().unwrap_or_default();
    let name = env.name_any();
    let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh, not from the watch cache: the inventory pruning trusts.
    let Some(fresh) = api
        .get_opt(&name)
        .await
        .map_err(|source| ReconcileError::Read {
            name: format!("{ns}/{name}"),
            source,
        })?
    else {
        return Ok(Action::await_change());
    };
    finalizer::finalizer(&api, FINALIZER, Arc::new(fresh), |event| async {
        match event {
            Finalizing::Apply(env) => apply_environment(&env, &ctx, &api).await,
            Finalizing::Cleanup(env) => cleanup(&env, &ctx).await,
        }
    })
    .await
    .map_err(|source| ReconcileError::Finalizer {
        name: format!("{ns}/{name}"),
        source: Box::new(source),
    })
}

async fn apply_environment(
    env: &Environment,
    ctx: &Context,
    api: &Api<Environment>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let name = env.name_any();
    let ns = env.namespace().unwrap_or_default();
    let interval = parse_interval(&env.spec.interval).map(|i| i.max(MIN_INTERVAL));
    let outcome = match interval {
        _ if env.spec.suspend => Outcome::Suspended,
        None => failed(
            None,
            FailureClass::Terminal,
            reason::INVALID_SPEC,
            format!(
                "spec.interval {:?} is not a duration such as 30s, 5m or 1h30m",
                env.spec.interval
            ),
        ),
        Some(_) => sync(env, ctx).await,
    };
    let interval = interval.unwrap_or(Duration::from_secs(300));

    let reference = env.object_ref(&());
    let mut events = Vec::new();
    let requeue = match &outcome {
        Outcome::Applied {
            revision, applied, ..
        } => {
            tracing::info!(revision = %revision.id(), created = applied.created, updated = applied.updated, pruned = applied.pruned, released = applied.released, drifted = applied.drift.len(), "applied");
            ctx.metrics.record_applied(applied);
            let changed = applied.created + applied.updated + applied.pruned + applied.released > 0;
            if changed {
                let note = format!(
                    "applied {} ({}): {} created, {} updated, {} pruned, {} released",
                    short(revision),
                    revision.subject(),
                    applied.created,
                    applied.updated,
                    applied.pruned,
                    applied.released
                );
                events.push((EventType::Normal, "Applied", note));
            }
            if !applied.drift.is_empty() {
                events.push((EventType::Warning, "DriftCorrected", drift_note(applied)));
            }
            Action::requeue(interval)
        }
        Outcome::Failed {
            class,
            reason,
            message,
            ..
        } => {
            tracing::warn!(class = class.label(), reason, %message, "reconcile failed");
            ctx.metrics.record_error(class.label(), reason);
            events.push((EventType::Warning, *reason, message.clone()));
            if *class == FailureClass::Terminal {
                Action::requeue(interval)
            } else {
                let previous = env.status.clone().unwrap_or_default();
                Action::requeue(retry_after(&previous, &Time(Timestamp::now()), interval))
            }
        }
        Outcome::Suspended => Action::await_change(),
    };
    for (type_, reason, note) in events {
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
    write_status(api, env, &outcome)
        .await
        .map_err(|source| ReconcileError::Status {
            name: format!("{ns}/{name}"),
            source,
        })?;
    ctx.metrics.observe_duration(started.elapsed());
    Ok(requeue)
}

/// `Deployment.apps dev/web: spec.replicas (by kubectl); ...`
fn drift_note(applied: &Applied) -> String {
    let objects: Vec<String> = applied
        .drift
        .iter()
        .map(|(object, fields)| {
            let fields: Vec<String> = fields
                .iter()
                .map(|d| format!("{} (changed by {})", d.field, d.managers.join(", ")))
                .collect();
            format!("{object}: {}", fields.join(", "))
        })
        .collect();
    format!("set back to git's values: {}", objects.join("; "))
}

/// Writes the status `outcome` leads to, with the resourceVersion it was
/// computed from; when someone wrote in between, reads again and
/// recomputes, so a newer status is never overwritten.
async fn write_status(
    api: &Api<Environment>,
    env: &Environment,
    outcome: &Outcome,
) -> Result<(), kube::Error> {
    let name = env.name_any();
    let mut current = env.clone();
    for attempt in 1..=STATUS_ATTEMPTS {
        let previous = current.status.clone().unwrap_or_default();
        let status = next_status(
            &previous,
            env.metadata.generation.unwrap_or(0),
            outcome,
            &Time(Timestamp::now()),
        );
        if status == previous {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": status,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < STATUS_ATTEMPTS => {
                tracing::debug!(attempt, "status changed meanwhile; recomputing");
                current = api.get_status(&name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

/// Retries after a failed read, status write or cleanup.
pub fn error_policy(_env: Arc<Environment>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile error");
    ctx.metrics.record_error("transient", "ControllerIOFailed");
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
