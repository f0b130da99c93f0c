//! The controller at run time: the status API on every replica, leader
//! election, and the reconcile loop over every Environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PartialObjectMeta;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::journal;
use crate::cluster::leadership::Leadership;
use crate::crd::{Environment, REQUESTED_AT, RETRY};
use crate::reconcile::{self, Context};
use crate::runtime::shard::Shard;
use crate::serve::api::{ApiState, Webhook, router};
use crate::serve::verified::Verifications;
use crate::telemetry::metrics::Metrics;

/// What `run` is told besides where to listen and whom to watch.
pub struct Tuning {
    pub public_url: Option<String>,
    pub concurrency: u16,
    /// Which Environments (of the namespace or all) this controller takes.
    pub shard: Shard,
}

/// Where and as whom to take part in leader election.
pub struct Election {
    pub namespace: String,
    pub identity: String,
}

/// Runs until a signal or the loss of the leader Lease: serves the status
/// API and /healthz, watches Environments, and (as the leader)
/// reconciles them.
///
/// Errors: the cache directory, the cluster's configuration, a missing
/// CRD or RBAC rule, the listening address, and the loss of the Lease
/// (so that the pod restarts as a follower) end it with what to fix.
pub async fn run(
    cache_dir: PathBuf,
    http_addr: SocketAddr,
    namespace: Option<String>,
    webhook: Option<Webhook>,
    token: Option<String>,
    election: Option<Election>,
    tuning: Tuning,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cache_dir).map_err(|e| {
        anyhow::anyhow!(
            "failed to create the cache directory {}: {e}",
            cache_dir.display()
        )
    })?;
    // A remote that accepts connections and never answers is cut off
    // here; each Environment's overall timeout bounds the rest.
    crate::source::cache::set_network_timeouts(Duration::from_secs(15), Duration::from_secs(30))?;
    let config = kube::Config::infer().await?;
    let metrics = Arc::new(Metrics::default());
    let client = crate::cluster::client::client(config.clone(), metrics.clone())?;
    // With leader election, the reconcile's writes go out only while this
    // replica leads; the status API and the election use `client`.
    let leadership = match &election {
        Some(_) => Leadership::elected(),
        None => Leadership::unelected(),
    };
    let (context, woken) = Context::new(
        config,
        leadership.clone(),
        cache_dir,
        metrics.clone(),
        tuning.public_url,
    )?;
    let context = Arc::new(context);
    let environments: Api<Environment> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    check_installed(&environments).await?;
    // Healthy while the watch of Environments works: it turns false when
    // the watch fails (and true again when it recovers), and for good
    // when the reconcile loop ends.
    let watching = Arc::new(AtomicBool::new(true));
    let api = StatusApi {
        client: client.clone(),
        metrics,
        watching: watching.clone(),
        webhook,
        token,
    };
    // Metadata only: the API server sends no ConfigMap data on this watch.
    let chunks: Api<PartialObjectMeta<ConfigMap>> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // This shard's Environments only, selected by the API server; the
    // status API shows the same ones.
    let selected = watcher::Config::default().labels(&tuning.shard.selector());
    let serving = serve(
        api,
        environments.clone(),
        selected.clone(),
        chunks,
        http_addr,
    )
    .await?;
    tracing::info!(%http_addr, namespace = namespace.as_deref().unwrap_or("<all>"), shard = tuning.shard.name(), "ferry-controller running");

    // With leader election, only the holder of the Lease reconciles.
    let (leading_tx, mut leading) = watch::channel(election.is_none());
    if let Some(election) = election {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &election.namespace);
        let lease = tuning.shard.lease();
        tracing::info!(identity = %election.identity, lease = %format!("{}/{lease}", election.namespace), "waiting to lead");
        tokio::spawn(crate::runtime::leader::run(
            leases,
            lease,
            election.identity,
            leadership,
            leading_tx,
        ));
        tokio::select! {
            led = leading.wait_for(|l| *l) => { led?; }
            _ = tokio::signal::ctrl_c() => {
                serving.stop();
                return Ok(());
            }
        }
    }
    let lost = leading.wait_for(|l| !*l);
    tokio::select! {
        _ = reconcile_all(environments, selected, context, woken, tuning.concurrency) => {}
        _ = lost => {
            // Another replica may lead now: stop at once rather than
            // reconcile beside it; the pod restarts as a follower.
            serving.stop();
            anyhow::bail!("lost the leader Lease; stopping so that only the new leader reconciles");
        }
    }
    watching.store(false, Ordering::Relaxed);
    serving.stop();
    tracing::info!("stopped");
    Ok(())
}

/// Fails early, with a message, when the CRD is not installed or the
/// controller may not list Environments.
async fn check_installed(environments: &Api<Environment>) -> anyhow::Result<()> {
    environments
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            let hint = match &e {
                kube::Error::Api(s) if s.code == 404 => {
                    "install the CRD: kubectl apply -f environments/controller/crd.yaml"
                }
                kube::Error::Api(s) if s.code == 403 => {
                    "grant the RBAC rules of environments/controller/rbac.yaml"
                }
                _ => "check KUBECONFIG and that the API server is reachable",
            };
            anyhow::anyhow!("failed to list Environments ({e}); {hint}")
        })?;
    Ok(())
}

/// The status API and the watch that feeds its cache, both running.
struct Serving {
    server: JoinHandle<std::io::Result<()>>,
    cache: JoinHandle<()>,
}

impl Serving {
    fn stop(&self) {
        self.cache.abort();
        self.server.abort();
    }
}

/// What the status API is served with.
struct StatusApi {
    client: Client,
    metrics: Arc<Metrics>,
    watching: Arc<AtomicBool>,
    webhook: Option<Webhook>,
    token: Option<String>,
}

/// Starts the status API on `addr`, on every replica, with a cache of
/// Environments fed by its own watch (ready once the first list is in),
/// and one of the history chunks' metadata (`chunks`: ConfigMaps in the
/// same scope) that tells when a kept verification is out of date.
async fn serve(
    api: StatusApi,
    environments: Api<Environment>,
    selected: watcher::Config,
    chunks: Api<PartialObjectMeta<ConfigMap>>,
    addr: SocketAddr,
) -> anyhow::Result<Serving> {
    let (chunk_cache, chunk_writer) = reflector::store();
    let chunks_current = Arc::new(AtomicBool::new(false));
    let current = chunks_current.clone();
    let chunk_feed = watcher(
        chunks,
        watcher::Config::default().labels(&journal::all_chunks()),
    )
    .default_backoff()
    .inspect(move |event| match event {
        Ok(watcher::Event::InitDone) => current.store(true, Ordering::Relaxed),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %e, "the watch of history chunks failed; the API lists them until it recovers");
            current.store(false, Ordering::Relaxed);
        }
    })
    .reflect(chunk_writer)
    .for_each(|_| async {});
    tokio::spawn(chunk_feed);
    let (cache, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let watching = api.watching.clone();
    let app = router(Arc::new(ApiState {
        environments: cache,
        client: Some(api.client),
        metrics: api.metrics,
        watching: api.watching,
        listed: listed.clone(),
        webhook: api.webhook,
        token: api.token,
        verifications: Verifications::watching(chunk_cache, chunks_current),
    }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("failed to listen on {addr}: {e}"))?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let feed = watcher(environments, selected)
        .default_backoff()
        .inspect(move |event| {
            watching.store(event.is_ok(), Ordering::Relaxed);
            if matches!(event, Ok(watcher::Event::InitDone)) {
                listed.store(true, Ordering::Relaxed);
            }
        })
        .reflect(writer)
        .for_each(|_| async {});
    Ok(Serving {
        server,
        cache: tokio::spawn(feed),
    })
}

/// The reconcile loop: on spec changes (generation), on a request
/// through the annotation, and when someone else changes an object an
/// Environment applied (`woken`, from the cache of owned objects); not on
/// our own status writes; the interval requeue covers new commits. Ends
/// on SIGINT/SIGTERM.
async fn reconcile_all(
    environments: Api<Environment>,
    selected: watcher::Config,
    context: Arc<Context>,
    woken: futures::channel::mpsc::UnboundedReceiver<crate::cluster::owned::Woken>,
    concurrency: u16,
) {
    let (reader, writer) = reflector::store();
    let changes = watcher(environments, selected)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_request, Default::default());
    Controller::for_stream(changes, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .reconcile_on(woken.map(|(namespace, name)| {
            kube::runtime::reflector::ObjectRef::new(&name).within(&namespace)
        }))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile queue");
            }
        })
        .await;
}

/// Changes when the spec does, when someone asks for a reconcile with
/// `kubectl annotate environment NAME ferry.dev/requested-at="$(date)" --overwrite`,
/// or for a retry of a failed revision with `ferry.dev/retry`.
fn spec_or_request(env: &Environment) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env.metadata.generation.hash(&mut hasher);
    env.annotations().get(REQUESTED_AT).hash(&mut hasher);
    env.annotations().get(RETRY).hash(&mut hasher);
    Some(hasher.finish())
}
