//! Kubernetes clients that count their requests, so the cost of a
//! reconcile in API calls is measured (`ferry_api_requests_total`, divided
//! by `ferry_reconcile_duration_seconds_count` in `bench/scale`) rather
//! than guessed.

use std::sync::Arc;

use axum::http::Request;
use kube::client::{Body, ClientBuilder};
use tower::util::MapRequestLayer;

use crate::telemetry::metrics::Metrics;

/// A client for `config` whose every request (watches included) is
/// counted by HTTP method.
pub fn client(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let count = MapRequestLayer::new(move |request: Request<Body>| {
        metrics.record_api_request(request.method().as_str());
        tracing::trace!(method = %request.method(), uri = %request.uri(), "API request");
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}
