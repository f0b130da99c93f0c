//! The agent's main loop: nodes, the pod watch that starts and feeds pod
//! workers, the load balancer, and an orderly stop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::watch_backoff::LabBackoff;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::image::store::ImageStore;
use crate::network::{self, IpPool};
use crate::node::{self, NodeIdentity};
use crate::pod::{self, Backoff, NodeContext, Shared, Worker};

/// What the agent runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lab_dir: PathBuf,
    /// (name, zone) per node.
    pub nodes: Vec<(String, String)>,
    pub region: String,
    /// The kubelet endpoint's serving certificate and key (PEM); without
    /// them `kubectl logs` is not served (lab/logs still works).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The registry (HOST:PORT, plain HTTP) images are pulled from unless
    /// their reference names a loopback registry: the lab reaches no other.
    pub registry_mirror: Option<String>,
    /// The API server's address, forwarded to pods at the bridge's gateway.
    pub api_server: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
}

/// Runs until `stop` resolves, then stops every pod and removes the network.
pub async fn run(
    client: Client,
    settings: Settings,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    network::ensure_bridge().await?;
    let mut contexts = HashMap::new();
    let mut identities = Vec::new();
    for (index, (name, zone)) in settings.nodes.iter().enumerate() {
        let pool = IpPool::new(index);
        let identity = NodeIdentity {
            name: name.clone(),
            zone: zone.clone(),
            region: settings.region.clone(),
            internal_ip: format!("127.0.1.{}", index + 1),
            pod_cidr: pool.cidr(),
        };
        node::register(&client, &identity).await?;
        tracing::info!(node = %name, zone = %zone, ip = %identity.internal_ip, "node registered");
        contexts.insert(
            name.clone(),
            Arc::new(NodeContext {
                name: name.clone(),
                host_ip: identity.internal_ip.clone(),
                pool,
            }),
        );
        identities.push(identity);
    }

    let heartbeat_client = client.clone();
    let heartbeats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(node::HEARTBEAT);
        loop {
            tick.tick().await;
            for identity in &identities {
                if let Err(e) = node::heartbeat(&heartbeat_client, identity).await {
                    tracing::warn!(node = %identity.name, error = %e, "failed to renew the node");
                }
            }
        }
    });
    let balancers = tokio::spawn(crate::loadbalancer::run(client.clone()));
    let api_forward = settings.api_server.map(|upstream| {
        tokio::spawn(async move {
            if let Err(e) = crate::service_account::forward_api_server(upstream).await {
                tracing::warn!(error = %e, "pods cannot reach the API server");
            }
        })
    });
    let kubelet = settings.tls.clone().map(|(cert, key)| {
        let addrs = contexts
            .values()
            .filter_map(|c| format!("{}:{}", c.host_ip, node::KUBELET_PORT).parse().ok())
            .collect();
        let pods_dir = settings.lab_dir.join("pods");
        tokio::spawn(async move {
            if let Err(e) = crate::kubelet::serve(addrs, pods_dir, &cert, &key).await {
                tracing::warn!(error = %e, "the log endpoint is not available; use lab/logs");
            }
        })
    });

    let shared = Arc::new(Shared {
        client: client.clone(),
        images: ImageStore::new(
            &settings.lab_dir.join("images"),
            settings.registry_mirror.clone(),
        ),
        lab_dir: settings.lab_dir.clone(),
        backoff: Backoff::default(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubelet".into(),
                instance: Some("ferry-lab-agent".into()),
            },
        ),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher(pods, config).backoff(LabBackoff::default()).boxed();

    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.next() => {
                let Some(event) = event else { break };
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        let Some(context) = contexts.get(&node_name) else { continue };
                        let uid = pod.uid().unwrap_or_default();
                        workers.retain(|_, w| !w.task.is_finished());
                        match workers.get(&uid) {
                            Some(worker) => { let _ = worker.updates.send(Some(pod)); }
                            None => {
                                if pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed") {
                                    continue;
                                }
                                let worker = pod::spawn(shared.clone(), context.clone(), pod, shutdown_rx.clone());
                                workers.insert(uid, worker);
                            }
                        }
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(worker) = workers.remove(&pod.uid().unwrap_or_default()) {
                            let _ = worker.updates.send(None);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
            }
        }
    }

    tracing::info!(pods = workers.len(), "stopping: terminating pods");
    let _ = shutdown_tx.send(true);
    for (_, worker) in workers {
        let _ = worker.task.await;
    }
    heartbeats.abort();
    balancers.abort();
    if let Some(f) = api_forward {
        f.abort();
    }
    if let Some(k) = kubelet {
        k.abort();
    }
    network::remove_bridge().await;
    tracing::info!("stopped");
    Ok(())
}
