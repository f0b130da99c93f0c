//! The controller at run time: the status API on every replica, leader
//! election, and the reconcile loop over every Environment.

use std::path::PathBuf;

/// Runs until a signal or the loss of the leader Lease: serves the status
/// API and /healthz, watches Environments, and (as the leader)
/// reconciles them.
pub async fn run(
    cache_dir: PathBuf,
    http_addr: std::net::SocketAddr,
    namespace: Option<String>,
    webhook: Option<crate::serve::api::Webhook>,
    token: Option<String>,
    election: Option<Election>,
    tuning: Tuning,
) -> anyhow::Result<()> {
    use crate::crd::Environment;
    use crate::reconcile::{self, Context};
    use crate::telemetry::metrics::Metrics;
    use futures::StreamExt;
    use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    std::fs::create_dir_all(&cache_dir).map_err(|e| {
        anyhow::anyhow!(
            "failed to create the cache directory {}: {e}",
            cache_dir.display()
        )
    })?;
    // A remote that accepts connections and never answers is cut off
    // here; each Environment's overall timeout bounds the rest.
    crate::source::cache::set_network_timeouts(
        std::time::Duration::from_secs(15),
        std::time::Duration::from_secs(30),
    )?;
    let config = kube::Config::infer().await?;
    let metrics = std::sync::Arc::new(Metrics::default());
    let client = crate::cluster::client::client(config.clone(), metrics.clone())?;
    let context = std::sync::Arc::new(Context::new(
        client.clone(),
        config,
        cache_dir,
        metrics.clone(),
        tuning.public_url,
    ));
    let environments: kube::Api<Environment> = match &namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    // Fails early, with a message, when the CRD is not installed.
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

    // Healthy while the watch of Environments works: it turns false when
    // the watch fails (and true again when it recovers), and for good
    // when the reconcile loop ends. Ready once the first list is in.
    let watching = Arc::new(AtomicBool::new(true));
    let listed = Arc::new(AtomicBool::new(false));
    let (cache, writer) = reflector::store();
    let state = Arc::new(crate::serve::api::ApiState {
        environments: cache,
        client: Some(client.clone()),
        metrics: metrics.clone(),
        watching: watching.clone(),
        listed: listed.clone(),
        webhook,
        token,
    });
    let app = crate::serve::api::router(state);
    let listener = tokio::net::TcpListener::bind(http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("failed to listen on {http_addr}: {e}"))?;
    tracing::info!(%http_addr, namespace = namespace.as_deref().unwrap_or("<all>"), "ferry-controller running");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The status API's cache, on every replica.
    let watch_state = watching.clone();
    let api_cache = watcher(environments.clone(), watcher::Config::default())
        .default_backoff()
        .inspect(move |event| {
            watch_state.store(event.is_ok(), Ordering::Relaxed);
            if matches!(event, Ok(watcher::Event::InitDone)) {
                listed.store(true, Ordering::Relaxed);
            }
        })
        .reflect(writer)
        .for_each(|_| async {});
    let api_cache = tokio::spawn(api_cache);

    // With leader election, only the holder of the Lease reconciles.
    let (leading_tx, mut leading) = tokio::sync::watch::channel(election.is_none());
    if let Some(election) = election {
        let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
            kube::Api::namespaced(client.clone(), &election.namespace);
        tracing::info!(identity = %election.identity, lease = %format!("{}/ferry-controller", election.namespace), "waiting to lead");
        tokio::spawn(crate::runtime::leader::run(
            leases,
            "ferry-controller".into(),
            election.identity,
            leading_tx,
        ));
        let signal = tokio::signal::ctrl_c();
        tokio::select! {
            led = leading.wait_for(|l| *l) => { led?; }
            _ = signal => {
                server.abort();
                return Ok(());
            }
        }
    }

    // Reconcile on spec changes (generation) and on a request through the
    // annotation, not on our own status writes; the interval requeue
    // covers new commits.
    let (reader, writer) = reflector::store();
    let changes = watcher(environments, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_request, Default::default());
    let controller = Controller::for_stream(changes, reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(tuning.concurrency))
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile queue");
            }
        });
    let lost = leading.wait_for(|l| !*l);
    tokio::select! {
        _ = controller => {}
        _ = lost => {
            // Another replica may lead now: stop at once rather than
            // reconcile beside it; the pod restarts as a follower.
            api_cache.abort();
            server.abort();
            anyhow::bail!("lost the leader Lease; stopping so that only the new leader reconciles");
        }
    }
    api_cache.abort();
    watching.store(false, Ordering::Relaxed);
    server.abort();
    tracing::info!("stopped");
    Ok(())
}

/// What `run` is told besides where to listen and whom to watch.
pub struct Tuning {
    pub public_url: Option<String>,
    pub concurrency: u16,
}

/// Where and as whom to take part in leader election.
pub struct Election {
    pub namespace: String,
    pub identity: String,
}

/// Changes when the spec does, when someone asks for a reconcile with
/// `kubectl annotate environment NAME ferry.dev/requested-at="$(date)" --overwrite`,
/// or for a retry of a failed revision with `ferry.dev/retry`.
fn spec_or_request(env: &crate::crd::Environment) -> Option<u64> {
    use kube::ResourceExt;
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env.metadata.generation.hash(&mut hasher);
    env.annotations()
        .get(crate::crd::REQUESTED_AT)
        .hash(&mut hasher);
    env.annotations().get(crate::crd::RETRY).hash(&mut hasher);
    Some(hasher.finish())
}
