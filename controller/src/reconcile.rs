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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::discovery::Scope as ApiScope;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, Event as Finalizing};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;

use crate::apply::{self, Applied};
use crate::environment::{
    Environment, EnvironmentStatus, FINALIZER, MIN_INTERVAL, REQUESTED_AT,
    RETRY as RETRY_ANNOTATION, STATUS_HISTORY, parse_interval, reason,
};
pub use crate::failure::FailureClass;
use crate::gate;
use crate::health::{self, Verdict};
use crate::inventory::ObjectRef;
use crate::metrics::Metrics;
use crate::ownership;
use crate::plan::{Action as PlanAction, Change, Plan, Resolver};
use crate::render;
use crate::rollout::{self, Checks, Decision};
use crate::source::{Cache, Credentials, Revision, SourceSpec, redact};
pub use crate::status::{Outcome, RETRY, next_status, retry_after, short_id};
use crate::sync::{self, SyncOptions};
use crate::target::{self, Scope};

/// How often a release being judged is looked at again.
pub const JUDGE_EVERY: Duration = Duration::from_secs(2);
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
    /// For the health gate's HTTP checks.
    pub http: reqwest::Client,
    /// Environments reconciled since the controller started.
    pub seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Clients impersonating deployer accounts, by user name.
    pub impersonating: std::sync::Mutex<std::collections::HashMap<String, Client>>,
    /// Releases reported to GitHub (`spec.github`).
    pub github: crate::github::Reporter,
    /// Discovery answers shared by reconciles.
    pub discovery: crate::plan::DiscoveryCache,
}

impl Context {
    pub fn new(
        client: Client,
        config: kube::Config,
        cache_dir: PathBuf,
        metrics: Arc<Metrics>,
        public_url: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), "ferry-controller".into());
        let github = crate::github::Reporter::start(client.clone(), public_url, metrics.clone());
        Context {
            client,
            config,
            cache: Cache::new(&cache_dir),
            recorder,
            metrics,
            http: reqwest::Client::new(),
            seen: Default::default(),
            impersonating: Default::default(),
            github,
            discovery: Default::default(),
        }
    }
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
    let user = format!("system:serviceaccount:{namespace}:{account}");
    // One client (and its connections) per account, not one per reconcile:
    // a release being judged is looked at every 2 s.
    if let Some(client) = ctx
        .impersonating
        .lock()
        .ok()
        .and_then(|c| c.get(&user).cloned())
    {
        return Ok(client);
    }
    let mut config = ctx.config.clone();
    // The API server adds the account's groups (system:serviceaccounts,
    // system:serviceaccounts:NS, system:authenticated) itself.
    config.auth_info.impersonate = Some(user.clone());
    config.auth_info.impersonate_groups = None;
    let client = crate::counting::client(config, ctx.metrics.clone()).map_err(|e| {
        format!("failed to make a client impersonating {namespace}/{account}: {e}; check the controller's kubeconfig or in-cluster configuration")
    })?;
    if let Ok(mut clients) = ctx.impersonating.lock() {
        clients.insert(user, client.clone());
    }
    Ok(client)
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
    let crds = crate::plan::defined_kinds(desired);
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
                if let Some(defined) = crds.iter().find(|k| k.defines(&id)) {
                    let scope = if defined.namespaced {
                        Scope::Namespaced
                    } else {
                        Scope::Cluster
                    };
                    out.push((id, scope));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The repository of an Environment, with its credentials.
async fn source_of(env: &Environment, ctx: &Context) -> Result<SourceSpec, Outcome> {
    let credentials = credentials(ctx, env).await.map_err(|message| {
        failed(
            None,
            FailureClass::Transient,
            reason::CREDENTIALS_MISSING,
            message,
        )
    })?;
    Ok(SourceSpec {
        url: env.spec.source.url.clone(),
        reference: env.spec.source.reference.clone(),
        credentials,
    })
}

/// What a fetch and render gave: the revision, its rendered objects with
/// their origins, the time each phase took, and the source it came from.
type Fetched = (Revision, Vec<(Value, String)>, Durations, SourceSpec);

/// Fetches and renders the branch head (`commit: None`) or a given commit
/// of the Environment's reference (for a rollback).
async fn fetch_and_render(
    env: &Environment,
    ctx: &Context,
    commit: Option<String>,
) -> Result<Fetched, Outcome> {
    use FailureClass::{Terminal, Transient};
    let spec = &env.spec;
    let Some(timeout) = parse_interval(&spec.source.timeout) else {
        let message = format!(
            "spec.source.timeout {:?} is not a duration such as 60s or 2m",
            spec.source.timeout
        );
        return Err(failed(None, Terminal, reason::INVALID_SPEC, message));
    };
    let source = source_of(env, ctx).await?;
    let fetched_from = source.clone();
    let cache = ctx.cache.clone();
    let path = spec.source.path.clone();
    let fetch = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (revision, files) = match commit {
            None => {
                let revision = cache.fetch(&source, timeout)?;
                let files = cache.files(&source, &revision.commit)?;
                (revision, files)
            }
            Some(commit) => {
                let files = cache.files_at(&source, &commit, timeout)?;
                (files.revision(&source.reference)?, files)
            }
        };
        let fetched = Instant::now();
        let rendered = render::render_with_origins(&files, &path);
        let durations = Durations::from([
            ("fetch".to_owned(), millis(fetched - started)),
            ("render".to_owned(), millis(fetched.elapsed())),
        ]);
        Ok::<_, crate::source::SourceError>((revision, rendered, durations))
    });
    // The fetch stops itself at the timeout; this bounds the wait even
    // when libgit2 blocks somewhere its callbacks do not reach.
    let fetched = tokio::time::timeout(timeout + Duration::from_secs(5), fetch).await;
    let (revision, rendered, durations) = match fetched {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(e))) => {
            return Err(failed(
                None,
                Transient,
                reason::FETCH_FAILED,
                crate::failure::describe(&e),
            ));
        }
        Ok(Err(e)) => return Err(failed(None, Transient, reason::FETCH_FAILED, e)),
        Err(_) => {
            let message = format!(
                "failed to fetch {}: no answer within {} s",
                redact(&spec.source.url),
                timeout.as_secs()
            );
            return Err(failed(None, Transient, reason::FETCH_FAILED, message));
        }
    };
    match rendered {
        Ok(desired) => Ok((revision, desired, durations, fetched_from)),
        Err(e) => Err(failed(
            Some(&revision),
            Terminal,
            reason::RENDER_FAILED,
            crate::failure::describe(&e),
        )),
    }
}

/// Places, plans and applies rendered objects as the Environment's
/// deployer; what was applied and the digest.
async fn apply_desired(
    env: &Environment,
    ctx: &Context,
    revision: &Revision,
    mut desired: Vec<(Value, String)>,
) -> Result<(Applied, String, Vec<String>, Durations), Outcome> {
    use FailureClass::Terminal;
    let spec = &env.spec;
    let client = client_for(ctx, env)
        .map_err(|message| failed(Some(revision), Terminal, reason::INVALID_SPEC, message))?;
    let mut resolver = Resolver::shared(client, ctx.discovery.clone());
    let known = match scopes(&mut resolver, &desired).await {
        Ok(k) => k,
        Err(e) => {
            let class = crate::failure::of_error(&e);
            return Err(failed(
                Some(revision),
                class,
                reason::APPLY_FAILED,
                format!("failed to discover the API: {e}"),
            ));
        }
    };
    let scope_of = |id: &ObjectRef| {
        known
            .iter()
            .find(|(k, _)| k.same_object(id) || (k.group == id.group && k.kind == id.kind))
            .map(|(_, s)| *s)
    };
    if let Err(e) = target::place(&mut desired, spec.target_namespace.as_deref(), scope_of) {
        return Err(failed(
            Some(revision),
            Terminal,
            reason::NAMESPACE_NOT_ALLOWED,
            e,
        ));
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
            let objects: Vec<Value> = desired.into_iter().map(|(o, _)| o).collect();
            let durations = Durations::from([
                ("plan".to_owned(), millis(timings.plan)),
                ("apply".to_owned(), millis(timings.apply)),
            ]);
            Ok((applied, digest, crate::history::images(&objects), durations))
        }
        Err(e) => {
            let mut message = crate::failure::describe(&e);
            if e.reason() == reason::FORBIDDEN && !message.contains(crate::failure::FORBIDDEN_HINT)
            {
                message = format!("{message}; {}", crate::failure::FORBIDDEN_HINT);
            }
            Err(failed(Some(revision), e.class(), e.reason(), message))
        }
    }
}

/// Fetch, render, plan and apply the revision git asks for, unless it is
/// the one that failed its gate ([`rollout::decide`]).
async fn sync(env: &Environment, ctx: &Context) -> Outcome {
    let (revision, desired, mut durations, source) = match fetch_and_render(env, ctx, None).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    let status = env.status.clone().unwrap_or_default();
    let retry = env.annotations().get(RETRY_ANNOTATION).cloned();
    let decision = rollout::decide(&status, &revision.id(), retry.as_deref());
    tracing::debug!(revision = %revision.id(), ?decision, "git asks for");
    if decision == Decision::Hold {
        return Outcome::Held { revision };
    }
    if status.last_applied_revision.as_deref() != Some(revision.id().as_str())
        || status.failed_revision.is_some()
    {
        ctx.github.report(
            env,
            crate::github::Step::Started {
                revision: revision.id(),
                rollback_from: None,
            },
        );
    }
    let (applied, digest, images, applying) =
        match apply_desired(env, ctx, &revision, desired).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
    durations.extend(applying);
    let superseded = superseded_by(ctx, source, &status, &revision).await;
    let id = Some(revision.id());
    let settled = status.last_healthy_revision == id
        && status.last_applied_revision == id
        && status.failed_revision.is_none()
        && applied.created + applied.updated + applied.pruned + applied.released == 0;
    Outcome::Applied {
        revision,
        digest,
        applied,
        judge: !settled,
        rollback_from: None,
        retry,
        images,
        durations,
        superseded,
    }
}

/// The most skipped commits one sync records (the newest of them).
const SUPERSEDED_LIMIT: usize = 20;

/// The commits after the last one tried and before `revision`: git moved
/// past them before they were looked at, so they were never applied.
/// Empty when that cannot be told (first sync, history rewritten).
async fn superseded_by(
    ctx: &Context,
    source: SourceSpec,
    status: &EnvironmentStatus,
    revision: &Revision,
) -> Vec<Revision> {
    let Some(from) = status
        .last_attempted_revision
        .as_deref()
        .and_then(|r| r.rsplit_once("@sha1:"))
        .map(|(_, commit)| commit.to_owned())
    else {
        return Vec::new();
    };
    if from == revision.commit {
        return Vec::new();
    }
    let cache = ctx.cache.clone();
    let to = revision.commit.clone();
    let skipped = tokio::task::spawn_blocking(move || {
        cache.commits_between(&source, &from, &to, SUPERSEDED_LIMIT)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    crate::history::unrecorded(skipped, &status.history)
}

/// A note for an Event, and its type and reason.
type Note = (EventType, &'static str, String);

/// Milliseconds per phase, for the history.
type Durations = std::collections::BTreeMap<String, u64>;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Judges the release in `status.rollout`; on failure rolls back (when
/// enabled and there is a healthy revision to go back to).
async fn judge(env: &Environment, ctx: &Context) -> (Outcome, Vec<Note>) {
    let status = env.status.clone().unwrap_or_default();
    let Some(rollout) = status.rollout.clone() else {
        return (sync(env, ctx).await, Vec::new());
    };
    let timeout =
        parse_interval(&env.spec.health_check.timeout).unwrap_or(Duration::from_secs(300));
    let client = match client_for(ctx, env) {
        Ok(c) => c,
        Err(message) => {
            return (
                failed(None, FailureClass::Terminal, reason::INVALID_SPEC, message),
                Vec::new(),
            );
        }
    };
    let mut resolver = Resolver::shared(client.clone(), ctx.discovery.clone());
    let observation = match gate::observe(&mut resolver, &client, &status.inventory).await {
        Ok(o) => o,
        Err(e) => {
            let class = crate::failure::of_error(&e);
            let message = format!(
                "failed to read the release's objects: {}",
                crate::failure::describe(&e)
            );
            return (
                failed(None, class, reason::APPLY_FAILED, message),
                Vec::new(),
            );
        }
    };
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
    if verdict == Verdict::Healthy && !env.spec.health_check.http.is_empty() {
        let checks = &env.spec.health_check.http;
        let ips = gate::new_pod_ips(&observation);
        let mut attempts = Vec::new();
        streaks.resize(checks.len(), 0);
        for (i, check) in checks.iter().enumerate() {
            let attempt = rollout::attempt(&ctx.http, check, &ips).await;
            streaks[i] = rollout::next_streak(streaks[i], attempt.ok);
            attempts.push(attempt);
        }
        verdict = match rollout::judge_checks(checks, &streaks, &attempts) {
            Checks::Passed => Verdict::Healthy,
            Checks::Waiting(what) if now - since >= timeout.as_secs() as i64 => {
                Verdict::Failed(health::Evidence {
                    object: "HTTP checks".into(),
                    summary: format!("not passed within {} s: {what}", timeout.as_secs()),
                    pods: Vec::new(),
                })
            }
            Checks::Waiting(what) => Verdict::Progressing(vec![what]),
            Checks::Failed(why) => Verdict::Failed(health::Evidence {
                object: "HTTP checks".into(),
                summary: why,
                pods: Vec::new(),
            }),
        };
    }
    match verdict {
        Verdict::Progressing(waiting) => (
            Outcome::Progressing {
                message: waiting.join("; "),
                http_streaks: streaks,
            },
            Vec::new(),
        ),
        Verdict::Healthy => {
            pin(env, ctx, &rollout.revision).await;
            match &rollout.rolling_back_from {
                Some(failed_revision) => {
                    let why = rollout.failure.clone().unwrap_or_default();
                    let note = format!(
                        "rolled back to {}: {} failed: {why}",
                        short_id(&rollout.revision),
                        short_id(failed_revision)
                    );
                    (
                        Outcome::RolledBack {
                            healthy: rollout.revision.clone(),
                            failed: failed_revision.clone(),
                            reason: why,
                        },
                        vec![(EventType::Warning, "RolledBack", note)],
                    )
                }
                None => {
                    let note = format!("{} is healthy", short_id(&rollout.revision));
                    (
                        Outcome::Healthy {
                            revision: rollout.revision.clone(),
                        },
                        vec![(EventType::Normal, "Healthy", note)],
                    )
                }
            }
        }
        Verdict::Failed(evidence) => {
            let namespace = evidence_namespace(&evidence, env);
            let note =
                gate::describe(&client, namespace.as_deref(), &evidence, gate::NOTE_LIMIT).await;
            tracing::warn!(revision = %rollout.revision, evidence = %note, "health check failed");
            let why = cap_line(&format!("{}: {}", evidence.object, evidence.summary));
            let event = (
                EventType::Warning,
                reason::HEALTH_CHECK_FAILED,
                gate::cap(
                    &format!(
                        "{} failed its health gate: {note}",
                        short_id(&rollout.revision)
                    ),
                    gate::NOTE_LIMIT,
                ),
            );
            if let Some(from) = &rollout.rolling_back_from {
                let outcome = Outcome::RollbackFailed {
                    failed: from.clone(),
                    reason: rollout.failure.clone().unwrap_or_default(),
                    rollback: why,
                };
                return (outcome, vec![event]);
            }
            let healthy = status
                .last_healthy_revision
                .clone()
                .filter(|h| *h != rollout.revision);
            match healthy {
                Some(healthy) if env.spec.rollback.enabled => {
                    ctx.metrics.record_rollback();
                    let outcome = roll_back(env, ctx, &healthy, &rollout.revision, &why).await;
                    (outcome, vec![event])
                }
                _ => (
                    Outcome::HealthFailed {
                        revision: rollout.revision.clone(),
                        reason: why,
                        rollback_disabled: !env.spec.rollback.enabled,
                    },
                    vec![event],
                ),
            }
        }
    }
}

/// Applies the last healthy revision again (rendered from git at its
/// commit, with the same safe plan, apply and prune); its gate is judged
/// next, as any release's.
async fn roll_back(
    env: &Environment,
    ctx: &Context,
    healthy: &str,
    failed_revision: &str,
    why: &str,
) -> Outcome {
    let rollback_failed = |rollback: String| Outcome::RollbackFailed {
        failed: failed_revision.to_owned(),
        reason: why.to_owned(),
        rollback,
    };
    let Some((_, commit)) = healthy.split_once("@sha1:") else {
        return rollback_failed(format!("{healthy} is not a revision id"));
    };
    let (revision, desired, mut durations, _) =
        match fetch_and_render(env, ctx, Some(commit.to_owned())).await {
            Ok(r) => r,
            Err(Outcome::Failed { message, .. }) => return rollback_failed(message),
            Err(other) => return other,
        };
    ctx.github.report(
        env,
        crate::github::Step::Started {
            revision: revision.id(),
            rollback_from: Some(failed_revision.to_owned()),
        },
    );
    match apply_desired(env, ctx, &revision, desired).await {
        Ok((applied, digest, images, applying)) => Outcome::Applied {
            revision,
            digest,
            applied,
            judge: true,
            rollback_from: Some((failed_revision.to_owned(), why.to_owned())),
            retry: None,
            images,
            durations: {
                durations.extend(applying);
                durations
            },
            superseded: Vec::new(),
        },
        Err(Outcome::Failed { message, .. }) => rollback_failed(message),
        Err(other) => other,
    }
}

/// Keeps a healthy commit reachable in the cache for later rollbacks.
async fn pin(env: &Environment, ctx: &Context, revision: &str) {
    let Some((_, commit)) = revision.split_once("@sha1:") else {
        return;
    };
    let Ok(source) = source_of(env, ctx).await else {
        return;
    };
    let cache = ctx.cache.clone();
    let commit = commit.to_owned();
    let pinned = tokio::task::spawn_blocking(move || cache.pin(&source, &commit)).await;
    if !matches!(pinned, Ok(Ok(()))) {
        tracing::warn!(%revision, "failed to pin the healthy commit in the cache; a rollback would fetch it by id");
    }
}

/// The namespace of the failing object, for its pods' events and logs.
fn evidence_namespace(evidence: &health::Evidence, env: &Environment) -> Option<String> {
    evidence
        .object
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(ns, _)| ns.to_owned())
        .or_else(|| env.spec.target_namespace.clone())
}

/// One line of at most 300 characters, for condition messages.
fn cap_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= 300 {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(299).collect::<String>())
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
    let mut resolver = Resolver::shared(client, ctx.discovery.clone());
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
///
/// Each reconcile is one step: apply the revision git asks for (or hold
/// it, when it failed its gate), or, while a release is being judged,
/// look at it once more (every [`JUDGE_EVERY`]) and, when it failed, roll
/// back. A restarted controller resumes from the status.
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
    // Adding the finalizer is a step of its own, and the change it makes
    // (metadata only) passes no event filter: go on at once.
    let adding = fresh.metadata.deletion_timestamp.is_none()
        && !fresh.finalizers().iter().any(|f| f == FINALIZER);
    let action = finalizer::finalizer(&api, FINALIZER, Arc::new(fresh), |event| async {
        match event {
            Finalizing::Apply(env) => apply_environment(&env, &ctx, &api).await,
            Finalizing::Cleanup(env) => cleanup(&env, &ctx).await,
        }
    })
    .await
    .map_err(|source| ReconcileError::Finalizer {
        name: format!("{ns}/{name}"),
        source: Box::new(source),
    })?;
    Ok(if adding {
        Action::requeue(Duration::from_millis(50))
    } else {
        action
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
    let trigger = trigger_of(env, ctx);
    let status_before = env.status.clone().unwrap_or_default();
    let health_ms = status_before
        .rollout
        .as_ref()
        .and_then(|r| health::seconds(&r.started_at))
        .map(|since| u64::try_from(Timestamp::now().as_second() - since).unwrap_or(0) * 1000);
    let interval = parse_interval(&env.spec.interval).map(|i| i.max(MIN_INTERVAL));
    let mut events_from_judge = Vec::new();
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
        Some(_) => {
            let (outcome, notes) = judge(env, ctx).await;
            events_from_judge = notes;
            outcome
        }
    };
    let interval = interval.unwrap_or(Duration::from_secs(300));

    // The audit history: appended before the status is written, so the
    // status never shows an entry the log lacks.
    let now = Timestamp::now().to_string();
    let entries = crate::history::entries_for(
        &outcome,
        &format!("{ns}/{name}"),
        &trigger,
        &now,
        health_ms,
        status_before.history.last(),
    );
    let mut sealed = Vec::new();
    for entry in entries {
        match crate::journal::append(&ctx.client, &ns, &name, entry).await {
            Ok(entry) => {
                ctx.metrics.record_history(&ns, &name, entry.sequence);
                ctx.github
                    .report(env, crate::github::Step::Recorded(Box::new(entry.clone())));
                sealed.push(entry);
            }
            Err(e) => {
                tracing::warn!(error = %crate::failure::describe(&e), "failed to append to the history");
                ctx.metrics.record_error("transient", "HistoryWriteFailed");
                break;
            }
        }
    }

    let reference = env.object_ref(&());
    let mut events = events_from_judge;
    let requeue = match &outcome {
        Outcome::Applied {
            revision,
            applied,
            judge,
            ..
        } => {
            tracing::info!(revision = %revision.id(), created = applied.created, updated = applied.updated, pruned = applied.pruned, released = applied.released, drifted = applied.drift.len(), "applied");
            ctx.metrics.record_applied(applied);
            let changed = applied.created + applied.updated + applied.pruned + applied.released > 0;
            if changed {
                let note = format!(
                    "applied {} ({}): {} created, {} updated, {} pruned, {} released",
                    short_id(&revision.id()),
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
            if *judge {
                Action::requeue(JUDGE_EVERY)
            } else {
                Action::requeue(interval)
            }
        }
        Outcome::Progressing { .. } => Action::requeue(JUDGE_EVERY),
        Outcome::Healthy { .. } | Outcome::RolledBack { .. } | Outcome::Held { .. } => {
            Action::requeue(interval)
        }
        Outcome::HealthFailed { .. } | Outcome::RollbackFailed { .. } => {
            ctx.metrics
                .record_error("terminal", reason::HEALTH_CHECK_FAILED);
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
    if let (Some(sealed), Some(first)) = (sealed.last(), events.first_mut()) {
        first.2 = format!(
            "{} [history #{}, chain head {}]",
            first.2, sealed.sequence, sealed.sha256
        );
    }
    for (type_, reason, note) in events {
        let event = Event {
            type_,
            reason: reason.into(),
            // The API refuses notes over 1 KiB.
            note: Some(gate::cap(&note, gate::NOTE_LIMIT)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "failed to publish an event");
        }
    }
    let written = write_status(api, env, &outcome, &sealed)
        .await
        .map_err(|source| ReconcileError::Status {
            name: format!("{ns}/{name}"),
            source,
        })?;
    let healthy = written
        .condition(crate::environment::condition::HEALTHY)
        .map(|c| c.status == "True");
    if let Some(healthy) = healthy {
        ctx.metrics.record_healthy(&ns, &name, healthy);
    }
    ctx.metrics.observe_duration(started.elapsed());
    Ok(requeue)
}

/// What started this reconcile, for the history: the health gate of a
/// release being judged, a retry or reconcile asked for by annotation, a
/// change of the spec, the controller's start, or the interval.
fn trigger_of(env: &Environment, ctx: &Context) -> String {
    let status = env.status.clone().unwrap_or_default();
    let annotation = |key: &str| env.annotations().get(key).cloned();
    let first_since_start = ctx
        .seen
        .lock()
        .map(|mut seen| {
            seen.insert(format!(
                "{}/{}",
                env.namespace().unwrap_or_default(),
                env.name_any()
            ))
        })
        .unwrap_or(false);
    let requested = annotation(REQUESTED_AT).is_some()
        && annotation(REQUESTED_AT) != status.last_handled_request;
    let trigger = if status.rollout.is_some() {
        "gate"
    } else if annotation(RETRY_ANNOTATION).is_some()
        && annotation(RETRY_ANNOTATION) != status.last_handled_retry
    {
        "retry"
    } else if env.metadata.generation != status.observed_generation {
        "spec"
    } else if requested {
        // A push through the webhook names itself, tied to this stamp.
        let stamp = annotation(REQUESTED_AT).unwrap_or_default();
        let by = annotation(crate::webhook::REQUESTED_BY)
            .and_then(|by| by.strip_prefix(&format!("{stamp} ")).map(str::to_owned));
        match by {
            Some(by) => return format!("webhook: {by}"),
            None => "requested",
        }
    } else if first_since_start {
        "start"
    } else {
        "interval"
    };
    trigger.to_owned()
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
/// computed from; when someone wrote in between (a status write or a
/// change of the spec or annotations), reads again and recomputes, so a
/// newer status is never overwritten.
async fn write_status(
    api: &Api<Environment>,
    env: &Environment,
    outcome: &Outcome,
    entries: &[crate::history::Entry],
) -> Result<EnvironmentStatus, kube::Error> {
    let name = env.name_any();
    let mut current = env.clone();
    for attempt in 1..=STATUS_ATTEMPTS {
        let previous = current.status.clone().unwrap_or_default();
        let mut status = next_status(
            &previous,
            env.metadata.generation.unwrap_or(0),
            outcome,
            &Time(Timestamp::now()),
        );
        status.last_handled_request = env.annotations().get(REQUESTED_AT).cloned();
        for entry in entries {
            if !status.history.iter().any(|e| e.sequence == entry.sequence) {
                status.history.push(entry.clone());
            }
        }
        let excess = status.history.len().saturating_sub(STATUS_HISTORY);
        status.history.drain(..excess);
        if status == previous {
            return Ok(status);
        }
        // A replace (not a merge patch): fields that became empty go,
        // and the resourceVersion makes a concurrent write a conflict.
        let mut object = current.clone();
        object.status = Some(status.clone());
        match api
            .replace_status(&name, &kube::api::PostParams::default(), &object)
            .await
        {
            Ok(_) => return Ok(status),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < STATUS_ATTEMPTS => {
                tracing::debug!(attempt, "status changed meanwhile; recomputing");
                current = api.get_status(&name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current.status.unwrap_or_default())
}

/// Retries after a failed read, status write or cleanup.
pub fn error_policy(_env: Arc<Environment>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %crate::failure::describe(error), "reconcile error");
    ctx.metrics.record_error("transient", "ControllerIOFailed");
    Action::requeue(RETRY)
}
