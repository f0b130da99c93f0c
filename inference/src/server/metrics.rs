//! Prometheus metrics of the service, all named `ferry_inference_*`.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use super::atomic_histogram::AtomicHistogram;

/// The routes' templates, as metric labels.
pub const ROUTES: &[&str] = &[
    "/",
    "/predict",
    "/health",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/versions/{version}/infer",
    "/metrics",
];

/// A matched route's template as a static label (`other` for one not
/// listed in [`ROUTES`], which a test prevents).
pub fn route_label(template: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == template)
        .copied()
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

fn latency_histogram() -> AtomicHistogram {
    // 50 µs .. ~1.6 s, doubling.
    AtomicHistogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The service's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    pub predictions: Family<ClassLabels, Counter>,
    pub ready: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Handles of series every request touches, made once: a family's
    /// lookup takes a lock that all threads share.
    placed: Counter,
    not_placed: Counter,
    route_latency: Vec<(&'static str, AtomicHistogram)>,
    /// The 200 series of every route with GET and POST, each made on its
    /// first use (so /metrics lists only what happened), then lock-free.
    route_ok: Vec<(&'static str, &'static str, OnceLock<Counter>)>,
}

impl Metrics {
    /// `routes`: the route labels whose latency series are made up front.
    pub fn new(name: &str, version: &str, sha256: &str, routes: &[&'static str]) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ferry_inference_requests",
            "HTTP requests by route template, method and status code",
            requests.clone(),
        );
        let latency =
            Family::<RouteLabels, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "ferry_inference_request_duration_seconds",
            "Time from request to response, by route template",
            latency.clone(),
        );
        let predictions = Family::<ClassLabels, Counter>::default();
        registry.register(
            "ferry_inference_predictions",
            "Candidates scored, by predicted class (placed, not_placed)",
            predictions.clone(),
        );
        let model_info = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
        model_info
            .get_or_create(&ModelLabels {
                name: name.to_owned(),
                version: version.to_owned(),
                sha256: sha256.to_owned(),
            })
            .set(1.0);
        registry.register(
            "ferry_inference_model_info",
            "The model being served (always 1), labelled with its name, version and artifact sha256",
            model_info,
        );
        let ready = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "ferry_inference_ready",
            "1 while the server accepts traffic, 0 while it drains",
            ready.clone(),
        );
        let placed = predictions
            .get_or_create(&ClassLabels { class: "placed" })
            .clone();
        let not_placed = predictions
            .get_or_create(&ClassLabels {
                class: "not_placed",
            })
            .clone();
        let route_latency = routes
            .iter()
            .map(|&route| (route, latency.get_or_create(&RouteLabels { route }).clone()))
            .collect();
        let route_ok = routes
            .iter()
            .flat_map(|&route| ["GET", "POST"].map(|method| (route, method, OnceLock::new())))
            .collect();
        Metrics {
            registry,
            requests,
            latency,
            predictions,
            ready,
            placed,
            not_placed,
            route_latency,
            route_ok,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Encoding into a String only fails if a label's Display fails,
        // which ours (strings and integers) cannot.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn record_prediction(&self, placed: bool) {
        if placed {
            self.placed.inc();
        } else {
            self.not_placed.inc();
        }
    }

    /// Counts a request by route, method and status.
    pub fn record_request(&self, route: &'static str, method: &'static str, status: u16) {
        let labels = || RequestLabels {
            route,
            method,
            status,
        };
        if status == 200
            && let Some((_, _, counter)) = self
                .route_ok
                .iter()
                .find(|(r, m, _)| *r == route && *m == method)
        {
            counter
                .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                .inc();
            return;
        }
        self.requests.get_or_create(&labels()).inc();
    }

    /// Records a request's duration under its route.
    pub fn record_latency(&self, route: &'static str, seconds: f64) {
        match self.route_latency.iter().find(|(r, _)| *r == route) {
            Some((_, histogram)) => histogram.observe(seconds),
            None => self
                .latency
                .get_or_create(&RouteLabels { route })
                .observe(seconds),
        }
    }
}
