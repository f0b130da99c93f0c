//! The HTTP floor for `bench/inference/run`: the least a `/predict`
//! service on this stack can do. Same framework (axum on a multi-threaded
//! tokio runtime), same release profile, the same request body read and
//! parsed as JSON, and a fixed JSON answer shaped like ferry's; no model,
//! no validation, no metrics. ferry-inference's throughput is reported as
//! a share of this one's, measured in the same run.
//!
//!     cargo run --release -p ferry-inference --example floor -- 127.0.0.1:19803

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

async fn predict(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"Placement\":true,\"Placement_Probability\":0.9}\n",
        ),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"error\":\"not JSON\"}\n",
        ),
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19803".to_owned());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            axum::serve(listener, Router::new().route("/predict", post(predict))).await
        })
}
