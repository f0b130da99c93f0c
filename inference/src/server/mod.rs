//! The HTTP service: the original `/predict` API, the Open Inference
//! Protocol v2 endpoints, `/metrics`, and graceful shutdown.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it
//! without sockets; [`serve`] runs it on a listener until a shutdown signal.

pub mod atomic_histogram;
pub mod error;
pub mod legacy;
pub mod metrics;
pub mod page;
pub mod state;
pub mod track;
pub mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use error::ApiError;
pub use state::{AppState, BODY_LIMIT, DEFAULT_MAX_BATCH, Shared};

/// The service's router.
pub fn app(state: AppState) -> Router {
    let v2_model = Router::new()
        .route("/", get(v2::model_metadata))
        .route("/ready", get(v2::model_ready))
        .route("/infer", post(v2::infer));
    Router::new()
        .route("/", get(page::form).post(page::submit))
        .route("/predict", post(legacy::predict))
        .route("/health", get(legacy::health))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .nest("/v2/models/{name}", v2_model.clone())
        .nest("/v2/models/{name}/versions/{version}", v2_model)
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(track::TrackLayer::new(state.clone()))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}: see GET / (a form), GET /v2 and POST /predict",
        request.method(),
        request.uri().path()
    ))
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// How the server stops.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownPolicy {
    /// After the signal, keep accepting (while reporting not ready) this
    /// long, so Kubernetes removes the pod from its endpoints first.
    pub delay: Duration,
    /// Then stop accepting and give in-flight requests this long to finish.
    pub drain: Duration,
}

/// Serves `state` on `listener` until `signal` resolves, then drains as
/// `policy` says. Readiness turns false as soon as the signal arrives.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
    policy: ShutdownPolicy,
) -> std::io::Result<()> {
    let router = app(state.clone());
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopping_tx = stopping.clone();
    let graceful = async move {
        signal.await;
        state.set_ready(false);
        tracing::info!(
            delay_ms = policy.delay.as_millis() as u64,
            "shutdown signal: readiness is false"
        );
        tokio::time::sleep(policy.delay).await;
        tracing::info!(
            drain_ms = policy.drain.as_millis() as u64,
            "no longer accepting; draining in-flight requests"
        );
        stopping_tx.notify_one();
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(graceful);
    tokio::select! {
        result = server => result,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(policy.drain).await;
        } => {
            tracing::warn!("drain deadline passed with requests still in flight; exiting");
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to install the SIGTERM handler; only Ctrl-C stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
