//! What a pod needs to talk to the API server from inside, as a kubelet
//! provides it: the API server at `KUBERNETES_SERVICE_HOST`/`PORT` (here a
//! forwarder on the pod bridge's gateway, since the API server listens on
//! the host's loopback, which pods cannot reach; its certificate names the
//! gateway's address), and the projected service account volume the API
//! server's admission adds to every pod (`kube-api-access-*`): a token
//! from the TokenRequest API bound to the pod, the cluster's CA from the
//! `kube-root-ca.crt` ConfigMap, and the namespace, mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::network::GATEWAY;

/// Where pods find the API server: the gateway of the pod bridge.
pub const API_PORT: u16 = 443;
/// Where Kubernetes mounts the service account volume in a container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("failed to request a token for service account {namespace}/{name}")]
    Token {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the TokenRequest for {0} came back without a token")]
    NoToken(String),
    #[error("failed to read ConfigMap {0}/kube-root-ca.crt (the cluster's CA)")]
    RootCa(String, #[source] kube::Error),
    #[error("failed to write the service account volume under {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The environment a kubelet gives every container for the API server.
pub fn api_env() -> Vec<(String, String)> {
    let host = GATEWAY.to_string();
    let port = API_PORT.to_string();
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
    ]
}

/// The service account volume's name and its expiration, when the
/// container mounts the API server's projected volume at [`MOUNT_PATH`].
pub fn projected_volume(pod: &Pod, container: &Container) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == MOUNT_PATH)?;
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?;
    let sources = volume.projected.as_ref()?.sources.as_ref()?;
    sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref())
        .map(|t| t.expiration_seconds.unwrap_or(3607))
}

/// Writes `token`, `ca.crt` and `namespace` for `pod` under `dir` (host
/// side; bind-mounted into the container) and returns `dir`.
pub async fn write_volume(
    client: &Client,
    pod: &Pod,
    expiration_seconds: i64,
    dir: &Path,
) -> Result<PathBuf, ServiceAccountError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let answer: TokenRequest = accounts
        .create_subresource("token", &name, &PostParams::default(), &request)
        .await
        .map_err(|source| ServiceAccountError::Token {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    let token = answer
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ServiceAccountError::NoToken(format!("{namespace}/{name}")))?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let ca = maps
        .get("kube-root-ca.crt")
        .await
        .map_err(|e| ServiceAccountError::RootCa(namespace.clone(), e))?
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .unwrap_or_default();
    let write = |file: &str, text: &str| {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|source| ServiceAccountError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| ServiceAccountError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write("token", &token)?;
    write("ca.crt", &ca)?;
    write("namespace", &namespace)?;
    Ok(dir.to_owned())
}

/// Forwards connections on the gateway's [`API_PORT`] to the API server
/// (TLS passes through untouched) until the task is dropped.
pub async fn forward_api_server(upstream: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((GATEWAY, API_PORT)).await?;
    tracing::info!(listen = %format!("{GATEWAY}:{API_PORT}"), %upstream, "API server reachable from pods");
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(upstream).await {
                Ok(mut server) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(e) => tracing::warn!(error = %e, "the API server refused a pod's connection"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_projected_volume_the_api_server_adds() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {
                "containers": [{"name": "c", "volumeMounts": [{"name": "kube-api-access-x", "mountPath": MOUNT_PATH}]}],
                "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "kube-root-ca.crt"}}
                ]}}]
            }
        }))
        .unwrap();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(projected_volume(&pod, container), Some(3607));
        let bare = Container::default();
        assert_eq!(projected_volume(&pod, &bare), None);
    }
}
