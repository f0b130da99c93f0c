//! Request metrics as a tower layer: every request counted by route
//! template, method and status, and timed.
//!
//! Written as a service rather than with `axum::middleware::from_fn`,
//! which boxes the rest of the stack for every request: this costs one
//! reference count and two clock reads a request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};

use super::metrics::route_label;
use super::state::AppState;

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Adds [`Track`] to a router.
#[derive(Clone)]
pub struct TrackLayer {
    state: AppState,
}

impl TrackLayer {
    pub fn new(state: AppState) -> Self {
        TrackLayer { state }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Counts and times the requests `inner` answers.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Static labels: no allocation per request.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| route_label(p.as_str()));
        let method = method_label(request.method());
        TrackFuture {
            start: Instant::now(),
            inner: self.inner.call(request),
            state: self.state.clone(),
            route,
            method,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Track`]'s future: records the response when it is ready.
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        state: AppState,
        route: &'static str,
        method: &'static str,
        start: Instant,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let metrics = &this.state.metrics;
            metrics.record_latency(this.route, this.start.elapsed().as_secs_f64());
            metrics.record_request(this.route, this.method, response.status().as_u16());
        }
        Poll::Ready(result)
    }
}
