//! The kubelet's log endpoint, so `kubectl logs` works: the API server
//! proxies `GET /containerLogs/{namespace}/{pod}/{container}` to
//! `https://<node InternalIP>:10250`. Each node's address serves the logs of
//! the pods on it (all pods' files live under one directory; the API server
//! only asks a pod's own node).
//!
//! Supports `tailLines`, `limitBytes` and `follow` (polling the file).
//! Client certificates are not checked: the endpoint listens on loopback
//! addresses of a single-machine lab.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("failed to load the serving certificate {path}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("failed to configure TLS")]
    Tls(#[from] rustls::Error),
    #[error("failed to listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    follow: Option<bool>,
}

/// The last `lines` lines of `text`.
pub fn tail(text: &[u8], lines: usize) -> &[u8] {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|&(_, &b)| b == b'\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    if lines == 0 {
        &text[text.len()..]
    } else {
        &text[start..]
    }
}

async fn container_logs(
    State(pods_dir): State<Arc<PathBuf>>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "..";
    if !(safe(&namespace) && safe(&pod) && safe(&container)) {
        return (StatusCode::BAD_REQUEST, "invalid name").into_response();
    }
    let path = pods_dir
        .join(&namespace)
        .join(&pod)
        .join(format!("{container}.log"));
    let Ok(mut text) = tokio::fs::read(&path).await else {
        return (
            StatusCode::NOT_FOUND,
            format!("no logs for container {container} of pod {namespace}/{pod}"),
        )
            .into_response();
    };
    let offset = text.len() as u64;
    if let Some(lines) = query.tail_lines {
        text = tail(&text, lines).to_vec();
    }
    if let Some(limit) = query.limit_bytes {
        text.truncate(limit);
    }
    if query.follow != Some(true) {
        return text.into_response();
    }
    let stream = futures::stream::unfold(
        (Some(text), path, offset),
        |(first, path, offset)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, std::io::Error>(first), (None, path, offset)));
            }
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let chunk = read_from(&path, offset).await.ok()?;
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((Ok(chunk), (None, path, next)));
                }
            }
        },
    );
    Body::from_stream(stream).into_response()
}

async fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// Serves the log endpoint on each address until the task is aborted.
pub async fn serve(
    addrs: Vec<SocketAddr>,
    pods_dir: PathBuf,
    cert: &Path,
    key: &Path,
) -> Result<(), KubeletError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|source| KubeletError::Certificate {
            path: cert.to_owned(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| KubeletError::Certificate {
        path: key.to_owned(),
        source,
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let app = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(Arc::new(pods_dir));
    let mut listeners = Vec::new();
    for addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| KubeletError::Listen { addr, source })?;
        listeners.push(listener);
    }
    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, app) = (acceptor.clone(), app.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |request| app.clone().oneshot(request));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tails_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
    }
}
