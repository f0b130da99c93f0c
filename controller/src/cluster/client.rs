//! Kubernetes clients that count their requests, so the cost of a
//! reconcile in API calls is measured (`ferry_api_requests_total`, divided
//! by `ferry_reconcile_duration_seconds_count` in `bench/scale`) rather
//! than guessed; the reconcile's clients also send a write only while
//! this replica leads ([`guarded`]).

use std::sync::Arc;

use axum::http::Request;
use kube::client::{Body, ClientBuilder};
use tower::BoxError;
use tower::filter::FilterLayer;
use tower::util::MapRequestLayer;

use crate::cluster::leadership::{Leadership, reads_only};
use crate::telemetry::metrics::Metrics;

/// A client for `config` whose every request (watches included) is
/// counted by HTTP method.
pub fn client(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&counted(metrics))
        .build())
}

/// As [`client`], and a request that changes something is refused (not
/// sent) when `leadership` does not hold at the moment it would be sent:
/// the reconcile's clients, never the status API's or the election's.
pub fn guarded(
    config: kube::Config,
    metrics: Arc<Metrics>,
    leadership: Leadership,
) -> Result<kube::Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&counted(metrics))
        .with_layer(&guard(leadership))
        .build())
}

/// The layer of [`guarded`]: refuses a write unless `leadership` holds.
pub fn guard(
    leadership: Leadership,
) -> FilterLayer<impl Fn(Request<Body>) -> Result<Request<Body>, BoxError> + Clone> {
    FilterLayer::new(move |request: Request<Body>| {
        if reads_only(request.method()) || leadership.holds() {
            return Ok(request);
        }
        tracing::warn!(method = %request.method(), uri = %request.uri(), "refused a write: this replica does not hold the leader Lease");
        Err(BoxError::from(format!(
            "refused to send {} {}: this replica no longer holds the leader Lease (it could not renew it in time); the replica that holds it does this work",
            request.method(),
            request.uri().path()
        )))
    })
}

fn counted(
    metrics: Arc<Metrics>,
) -> MapRequestLayer<impl Fn(Request<Body>) -> Request<Body> + Clone> {
    MapRequestLayer::new(move |request: Request<Body>| {
        metrics.record_api_request(request.method().as_str());
        if !reads_only(request.method()) {
            tracing::debug!(method = %request.method(), uri = %request.uri(), "API write");
        } else {
            tracing::trace!(method = %request.method(), uri = %request.uri(), "API read");
        }
        request
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Response;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use std::time::{Duration, Instant};

    /// A client whose requests reach `sent` (counted) instead of a server.
    fn client(leadership: Leadership, sent: Arc<std::sync::atomic::AtomicUsize>) -> kube::Client {
        let service = tower::service_fn(move |_: Request<Body>| {
            sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#;
            async move { Ok::<_, BoxError>(Response::new(Body::from(body.as_bytes().to_vec()))) }
        });
        ClientBuilder::new(service, "default")
            .with_layer(&guard(leadership))
            .build()
    }

    #[tokio::test]
    async fn writes_are_not_sent_once_the_renew_deadline_passed() {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let leadership = Leadership::elected();
        let api: Api<ConfigMap> =
            Api::namespaced(client(leadership.clone(), sent.clone()), "default");
        let map = ConfigMap::default();
        let error = api.create(&PostParams::default(), &map).await.unwrap_err();
        assert!(
            format!("{error:?}").contains("no longer holds the leader Lease"),
            "{error:?}"
        );
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 0);
        api.get("a").await.unwrap();
        assert_eq!(
            sent.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "reads pass"
        );
        leadership.renewed(Instant::now(), Duration::from_secs(10));
        api.create(&PostParams::default(), &map).await.unwrap();
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 2);
        leadership.renewed(
            Instant::now() - Duration::from_secs(11),
            Duration::from_secs(10),
        );
        assert!(api.create(&PostParams::default(), &map).await.is_err());
        assert_eq!(
            sent.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "nothing sent past the deadline"
        );
    }
}
