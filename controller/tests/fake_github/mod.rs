//! A local stand-in for GitHub's Deployments, Statuses and App token
//! endpoints that records every request, and can be told to fail the
//! next ones (503 or a rate limit) to exercise retries.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: String,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// (id, sha, environment)
    deployments: Vec<(u64, String, String)>,
    /// Answer this many of the next requests with `fail_with`.
    failures: usize,
    fail_with: u16,
}

type Shared = Arc<Mutex<Inner>>;

pub struct FakeGitHub {
    pub address: SocketAddr,
    inner: Shared,
}

impl FakeGitHub {
    /// Serves on a free loopback port, on its own thread.
    pub fn start() -> FakeGitHub {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route(
                "/repos/{owner}/{repo}/deployments",
                get(list_deployments).post(create_deployment),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                get(list_statuses).post(created),
            )
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(created))
            .route(
                "/app/installations/{id}/access_tokens",
                post(installation_token),
            )
            .layer(axum::middleware::from_fn_with_state(inner.clone(), record))
            .with_state(inner.clone());
        let address = ferry_lab_testkit::serve(app);
        FakeGitHub { address, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The next `n` requests get `status` (503, or 403 "API rate limit
    /// exceeded", or a refusal such as 401).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut inner = self.inner.lock().unwrap();
        inner.failures = n;
        inner.fail_with = status;
    }

    /// (deployment id, sha, environment) of each deployment created.
    pub fn deployments(&self) -> Vec<(u64, String, String)> {
        self.inner.lock().unwrap().deployments.clone()
    }

    /// (deployment id, state, description) of each status accepted.
    pub fn statuses(&self) -> Vec<(u64, String, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/statuses"))
            .filter_map(|r| {
                let id = r.path.split('/').nth_back(1)?.parse().ok()?;
                Some((
                    id,
                    r.body["state"].as_str()?.to_owned(),
                    r.body["description"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
}

async fn record(
    State(inner): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    {
        let mut inner = inner.lock().unwrap();
        if inner.failures > 0 {
            inner.failures -= 1;
            let status = StatusCode::from_u16(inner.fail_with).unwrap();
            let message = match status {
                StatusCode::FORBIDDEN => "API rate limit exceeded for installation",
                StatusCode::UNAUTHORIZED => "Bad credentials",
                _ => "Service unavailable",
            };
            return (status, Json(json!({"message": message}))).into_response();
        }
        // Only requests that were answered are recorded.
        inner.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            authorization: parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

async fn list_deployments(
    State(inner): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let inner = inner.lock().unwrap();
    let number = |key: &str, default: usize| {
        query
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (page, per_page) = (number("page", 1).max(1), number("per_page", 30));
    let found: Vec<Value> = inner
        .deployments
        .iter()
        .rev()
        .filter(|(_, sha, env)| {
            query.get("sha").is_none_or(|s| s == sha)
                && query.get("environment").is_none_or(|e| e == env)
        })
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|(id, sha, env)| json!({"id": id, "sha": sha, "environment": env}))
        .collect();
    Json(Value::Array(found))
}

/// A deployment's statuses as GitHub lists them: newest first.
async fn list_statuses(
    State(inner): State<Shared>,
    Path((_, _, id)): Path<(String, String, u64)>,
) -> Json<Value> {
    let inner = inner.lock().unwrap();
    let found: Vec<Value> = inner
        .requests
        .iter()
        .rev()
        .filter(|r| r.method == "POST" && r.path.ends_with(&format!("/deployments/{id}/statuses")))
        .map(|r| json!({"state": r.body["state"], "description": r.body["description"]}))
        .collect();
    Json(Value::Array(found))
}

async fn create_deployment(
    State(inner): State<Shared>,
    Path((_, _)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut inner = inner.lock().unwrap();
    let id = 1000 + inner.deployments.len() as u64;
    let sha = body["ref"].as_str().unwrap_or("").to_owned();
    let env = body["environment"].as_str().unwrap_or("").to_owned();
    inner.deployments.push((id, sha.clone(), env.clone()));
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "sha": sha, "ref": sha, "environment": env})),
    )
}

async fn created() -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({"id": 1, "state": "ok"})))
}

async fn installation_token() -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({
            "token": "ghs_installation",
            "expires_at": "2099-01-01T00:00:00Z",
            "permissions": {"deployments": "write", "statuses": "write"},
            "repository_selection": "selected"
        })),
    )
}
