//! The controller's Prometheus metrics, all named `ferry_*`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub class: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

pub struct Metrics {
    registry: Registry,
    duration: Histogram,
    errors: Family<ErrorLabels, Counter>,
    objects: Family<ActionLabels, Counter>,
    drift: Counter,
    rollbacks: Counter,
    history: Family<EnvironmentLabels, Gauge>,
    healthy: Family<EnvironmentLabels, Gauge>,
    github: Family<ResultLabels, Counter>,
    api_requests: Family<MethodLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    pub namespace: String,
    pub name: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "ferry_reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "ferry_reconcile_errors",
            "Failed reconciles by class (terminal, transient) and reason",
            errors.clone(),
        );
        let objects = Family::<ActionLabels, Counter>::default();
        registry.register(
            "ferry_objects",
            "Objects applied, by action (created, updated, pruned, released)",
            objects.clone(),
        );
        let drift = Counter::default();
        registry.register(
            "ferry_drift_corrected",
            "Objects whose fields changed in the cluster by hand were set back to git's values",
            drift.clone(),
        );
        let rollbacks = Counter::default();
        registry.register(
            "ferry_rollbacks",
            "Rollbacks to the last healthy revision started after a failed health gate",
            rollbacks.clone(),
        );
        let history = Family::<EnvironmentLabels, Gauge>::default();
        registry.register(
            "ferry_history_entries",
            "Entries in an Environment's audit history",
            history.clone(),
        );
        let healthy = Family::<EnvironmentLabels, Gauge>::default();
        registry.register(
            "ferry_environment_healthy",
            "1 when the revision an Environment runs passed its health gate, 0 when it failed",
            healthy.clone(),
        );
        let github = Family::<ResultLabels, Counter>::default();
        registry.register(
            "ferry_github_reports",
            "GitHub deployment statuses: posted, retried (rate limit, 5xx, network), dropped (refused, or retried too long; posted later by a catch-up) or caught_up (posted by a catch-up, counted in posted too)",
            github.clone(),
        );
        let api_requests = Family::<MethodLabels, Counter>::default();
        registry.register(
            "ferry_api_requests",
            "Requests the controller sent to the Kubernetes API server, by HTTP method (watches included)",
            api_requests.clone(),
        );
        Metrics {
            registry,
            duration,
            errors,
            objects,
            drift,
            rollbacks,
            history,
            healthy,
            github,
            api_requests,
        }
    }
}

impl Metrics {
    pub fn observe_duration(&self, d: Duration) {
        self.duration.observe(d.as_secs_f64());
    }

    pub fn record_error(&self, class: &'static str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                class,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts objects applied per action (`created`, `updated`, `pruned`,
    /// `released`), and objects set back after drift.
    pub fn record_applied(&self, actions: [(&'static str, usize); 4], drifted: usize) {
        for (action, n) in actions {
            self.objects
                .get_or_create(&ActionLabels { action })
                .inc_by(n as u64);
        }
        self.drift.inc_by(drifted as u64);
    }

    pub fn record_history(&self, namespace: &str, name: &str, entries: u64) {
        self.history
            .get_or_create(&EnvironmentLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    pub fn record_healthy(&self, namespace: &str, name: &str, healthy: bool) {
        self.healthy
            .get_or_create(&EnvironmentLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .set(i64::from(healthy));
    }

    pub fn record_github(&self, result: &'static str) {
        self.github.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts one request to the API server (see [`crate::cluster::client`]).
    pub fn record_api_request(&self, method: &str) {
        self.api_requests
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .inc();
    }

    pub fn record_rollback(&self) {
        self.rollbacks.inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
