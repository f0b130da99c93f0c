//! Services of type LoadBalancer, as a cloud would serve them: each gets an
//! ingress IP (127.0.100.N, on this machine's loopback), and connections to
//! that IP on a service port are forwarded to the service's ready endpoints,
//! round-robin, trying the next endpoint when one refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::watch_backoff::LabBackoff;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long a connection to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The first ingress address; services get .1, .2, ... in order of arrival.
pub fn ingress_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 100, n)
}

/// One forwarded service port: listen on `ingress:port`, send to the ready
/// endpoints' `target` port (named or numbered, resolved per slice).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Forward {
    pub port: u16,
    pub port_name: String,
}

/// Ready endpoint addresses for a service port, from its EndpointSlices.
pub fn ready_endpoints(slices: &[Arc<EndpointSlice>], port_name: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            let terminating = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false);
            if ready && !terminating {
                out.extend(endpoint.addresses.iter().map(|a| (a.clone(), port)));
            }
        }
    }
    out.sort();
    out
}

struct Listening {
    ip: Ipv4Addr,
    forwards: BTreeSet<Forward>,
    tasks: Vec<JoinHandle<()>>,
}

/// Watches Services and EndpointSlices and keeps the proxies in step.
pub async fn run(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let slices_api: Api<EndpointSlice> = Api::all(client.clone());
    let (slices, writer) = reflector::store();
    let slice_stream =
        reflector::reflector(writer, watcher(slices_api, watcher::Config::default()))
            .backoff(LabBackoff::default())
            .applied_objects();
    tokio::spawn(slice_stream.for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "endpoint slice watch failed; retrying");
        }
    }));

    let mut active: BTreeMap<String, Listening> = BTreeMap::new();
    let mut stream = watcher(services, watcher::Config::default())
        .backoff(LabBackoff::default())
        .boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "service watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Apply(svc) | watcher::Event::InitApply(svc) => {
                reconcile(&client, &slices, &mut active, &svc).await;
            }
            watcher::Event::Delete(svc) => {
                if let Some(l) = active.remove(&key(&svc)) {
                    l.tasks.iter().for_each(JoinHandle::abort);
                    tracing::info!(service = %key(&svc), ip = %l.ip, "load balancer removed");
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

async fn reconcile(
    client: &Client,
    slices: &Store<EndpointSlice>,
    active: &mut BTreeMap<String, Listening>,
    svc: &Service,
) {
    let id = key(svc);
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() != Some("LoadBalancer") {
        if let Some(l) = active.remove(&id) {
            l.tasks.iter().for_each(JoinHandle::abort);
        }
        return;
    }
    let forwards: BTreeSet<Forward> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            Some(Forward {
                port: u16::try_from(p.port).ok()?,
                port_name: p.name.clone().unwrap_or_default(),
            })
        })
        .collect();
    let ip = match active.get(&id) {
        Some(l) if l.forwards == forwards => {
            ensure_status(client, svc, l.ip).await;
            return;
        }
        Some(l) => l.ip,
        None => {
            let used: BTreeSet<Ipv4Addr> = active.values().map(|l| l.ip).collect();
            let Some(ip) = (1..=254).map(ingress_ip).find(|ip| !used.contains(ip)) else {
                tracing::warn!(service = %id, "no free load balancer address");
                return;
            };
            ip
        }
    };
    if let Some(old) = active.remove(&id) {
        old.tasks.iter().for_each(JoinHandle::abort);
    }
    let mut tasks = Vec::new();
    for forward in &forwards {
        match TcpListener::bind((ip, forward.port)).await {
            Ok(listener) => {
                let namespace = svc.namespace().unwrap_or_default();
                let name = svc.name_any();
                tasks.push(tokio::spawn(serve(
                    listener,
                    slices.clone(),
                    namespace,
                    name,
                    forward.port_name.clone(),
                )));
            }
            Err(e) => {
                tracing::warn!(service = %id, %ip, port = forward.port, error = %e, "failed to listen for the load balancer")
            }
        }
    }
    tracing::info!(service = %id, %ip, ports = ?forwards.iter().map(|f| f.port).collect::<Vec<_>>(), "load balancer ready");
    active.insert(
        id,
        Listening {
            ip,
            forwards,
            tasks,
        },
    );
    ensure_status(client, svc, ip).await;
}

async fn ensure_status(client: &Client, svc: &Service, ip: Ipv4Addr) {
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone());
    if current.as_deref() == Some(&ip.to_string()) {
        return;
    }
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
    if let Err(e) = api
        .patch_status(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(service = %key(svc), error = %e, "failed to set the load balancer ingress");
    }
}

async fn serve(
    listener: TcpListener,
    slices: Store<EndpointSlice>,
    namespace: String,
    service: String,
    port_name: String,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let mine: Vec<Arc<EndpointSlice>> = slices
            .state()
            .into_iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(namespace.as_str())
                    && s.labels().get("kubernetes.io/service-name") == Some(&service)
            })
            .collect();
        let endpoints = ready_endpoints(&mine, &port_name);
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            for i in 0..endpoints.len() {
                let (addr, port) = &endpoints[(start + i) % endpoints.len()];
                // An endpoint whose pod is gone but still listed (its slice
                // not yet updated, say while the controller-manager
                // restarts) drops the connection attempt instead of
                // refusing it: give up on it quickly, as a cloud load
                // balancer's health check would, and try the next.
                let connect = TcpStream::connect((addr.as_str(), *port));
                if let Ok(Ok(mut upstream)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
            // No ready endpoint answered: close, as a load balancer with no healthy target does.
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn endpoint(ip: &str, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }
    }

    #[test]
    fn only_ready_endpoints_on_the_named_port() {
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![
                endpoint("10.244.1.3", true),
                endpoint("10.244.2.2", true),
                endpoint("10.244.1.4", false),
            ],
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(9696),
                ..EndpointPort::default()
            }]),
            ..EndpointSlice::default()
        };
        let slices = vec![Arc::new(slice)];
        assert_eq!(
            ready_endpoints(&slices, "http"),
            [
                ("10.244.1.3".to_owned(), 9696),
                ("10.244.2.2".to_owned(), 9696)
            ]
        );
        assert!(ready_endpoints(&slices, "metrics").is_empty());
    }
}
