//! The lab's nodes: registered like a kubelet registers its node (labels,
//! capacity of a t2.medium, addresses), with the Ready condition and the
//! node Lease renewed every few seconds.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// How often node status and lease are renewed (the kubelet's defaults are
/// 10 s for the lease and 5 min or on change for status).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
const FIELD_MANAGER: &str = "ferry-lab-agent";
pub const KUBELET_PORT: i32 = 10250;

/// One node's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeIdentity {
    pub name: String,
    pub zone: String,
    pub region: String,
    pub internal_ip: String,
    pub pod_cidr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("failed to register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// The Node object, spec and metadata; status comes from [`status`].
pub fn node(identity: &NodeIdentity) -> Node {
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", identity.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("topology.kubernetes.io/zone", identity.zone.as_str()),
        ("topology.kubernetes.io/region", identity.region.as_str()),
        ("node.kubernetes.io/instance-type", "t2.medium"),
        ("ferry.dev/lab", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(identity.name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(identity.pod_cidr.clone()),
            pod_cidrs: Some(vec![identity.pod_cidr.clone()]),
            provider_id: Some(format!("ferry-lab:///{}/{}", identity.zone, identity.name)),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// The node's status at `now`: Ready, no pressure, a t2.medium's capacity.
pub fn status(identity: &NodeIdentity, now: &Time) -> NodeStatus {
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", "2"),
        ("memory", "4Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "20Gi"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v.to_owned())))
    .collect();
    let condition = |kind: &str, ok: bool, reason: &str, message: &str| NodeCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        conditions: Some(vec![
            condition(
                "Ready",
                true,
                "KubeletReady",
                "ferry lab agent is posting ready status",
            ),
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            condition(
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "no PID pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: identity.internal_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: identity.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: KUBELET_PORT }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: "amd64".into(),
            boot_id: identity.name.clone(),
            container_runtime_version: "ferry-lab://0.1.0".into(),
            kernel_version: "lab".into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.34.4-ferry-lab".into(),
            machine_id: identity.name.clone(),
            operating_system: "linux".into(),
            os_image: "ferry lab".into(),
            system_uuid: identity.name.clone(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates or updates the node and its status.
pub async fn register(client: &Client, identity: &NodeIdentity) -> Result<(), NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let err = |source| NodeError::Register {
        node: identity.name.clone(),
        source,
    };
    let registered = api
        .patch(&identity.name, &params, &Patch::Apply(&node(identity)))
        .await
        .map_err(err)?;
    heartbeat(client, identity).await.map_err(err)?;
    // The API server taints new nodes not-ready; the node-lifecycle
    // controller, which the lab leaves out, would lift it once Ready.
    let taints: Vec<_> = registered
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.key.starts_with("node.kubernetes.io/"))
        .collect();
    let patch = serde_json::json!({ "spec": { "taints": taints } });
    api.patch(
        &identity.name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Renews the Ready condition and the node lease.
pub async fn heartbeat(client: &Client, identity: &NodeIdentity) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "status": status(identity, &now),
    });
    nodes
        .patch_status(
            &identity.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(identity.name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.name.clone()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(now.0)),
            ..LeaseSpec::default()
        }),
    };
    let mut lease_patch = serde_json::to_value(&lease).unwrap_or_default();
    lease_patch["apiVersion"] = "coordination.k8s.io/v1".into();
    lease_patch["kind"] = "Lease".into();
    leases
        .patch(
            &identity.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease_patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_like_a_t2_medium_in_its_zone() {
        let id = NodeIdentity {
            name: "lab-node-a".into(),
            zone: "us-east-1a".into(),
            region: "us-east-1".into(),
            internal_ip: "127.0.1.1".into(),
            pod_cidr: "10.244.1.0/24".into(),
        };
        let n = node(&id);
        assert_eq!(
            n.metadata.labels.unwrap()["topology.kubernetes.io/zone"],
            "us-east-1a"
        );
        let s = status(&id, &Time(Timestamp::UNIX_EPOCH));
        let cap = s.capacity.unwrap();
        assert_eq!(
            (
                cap["cpu"].0.as_str(),
                cap["memory"].0.as_str(),
                cap["pods"].0.as_str()
            ),
            ("2", "4Gi", "110")
        );
        assert_eq!(s.conditions.unwrap()[0].status, "True");
    }
}
