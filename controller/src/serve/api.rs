//! The status API (axum, on the controller's HTTP port): read-only answers
//! for auditors and tools, from the controller's own watch cache of
//! Environments and, for the history, the chained log in the cluster.
//!
//! - `GET /api/v1/environments`: every Environment, summarized;
//! - `GET /api/v1/environments/{namespace}/{name}`: its revisions (desired,
//!   attempted, applied, healthy, failed), conditions, inventory summary
//!   and the chain head;
//! - `GET .../history?limit=&before=`: entries, newest first, `before` a
//!   sequence number to page back from;
//! - `GET .../history/verify`: the chain recomputed, the first break named;
//! - `GET /`: the status page for people ([`crate::serve::page`]);
//! - `GET /api/v1/openapi.json`; `/healthz`, `/readyz`, `/metrics`;
//! - `POST /hooks/github`: the push webhook ([`crate::serve::webhook`]).
//!
//! Guarantees: read-only; errors are JSON `{"error": "..."}` with the
//! status that fits (404 unknown Environment, 400 bad query, 503 the
//! cluster could not be read), never internals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::chain::Entry;
use crate::audit::journal;
use crate::crd::Environment;
use crate::serve::verified::Verifications;
use crate::serve::webhook;
use crate::telemetry::metrics::Metrics;

/// What the handlers read.
pub struct ApiState {
    pub environments: Store<Environment>,
    /// For the history's ConfigMaps; `None` in tests without a cluster.
    pub client: Option<kube::Client>,
    pub metrics: Arc<Metrics>,
    /// The watch of Environments works (see `/healthz`).
    pub watching: Arc<AtomicBool>,
    /// The first list of Environments is in the cache (see `/readyz`).
    pub listed: Arc<AtomicBool>,
    /// `POST /hooks/github`, when a secret is configured.
    pub webhook: Option<Webhook>,
    /// When set, `/` and `/api/` answer only requests with
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The histories' verifications, kept until they change.
    pub verifications: Verifications,
}

/// Requests to the page and the API served at once; more get 503 at
/// once (rather than queueing without bound), each with what it holds.
pub const API_CONCURRENCY: usize = 8;

/// The GitHub webhook's shared secret.
pub struct Webhook {
    pub secret: Vec<u8>,
}

/// An error answer: a status and a message for the client.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The router of every endpoint above.
pub fn router(state: Arc<ApiState>) -> Router {
    let guarded = Router::new()
        .route("/", get(status_page))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/environments", get(list))
        .route("/api/v1/environments/{namespace}/{name}", get(detail))
        .route(
            "/api/v1/environments/{namespace}/{name}/history",
            get(history_page),
        )
        .route(
            "/api/v1/environments/{namespace}/{name}/history/verify",
            get(verify),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), bearer))
        .layer(shed(API_CONCURRENCY));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/hooks/github",
            axum::routing::post(github)
                .layer::<_, std::convert::Infallible>(axum::extract::DefaultBodyLimit::max(
                    webhook::BODY_LIMIT,
                ))
                .layer(tower::limit::ConcurrencyLimitLayer::new(
                    webhook::CONCURRENT_DELIVERIES,
                )),
        )
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json".into(),
            )
        })
        .with_state(state)
}

/// At most `limit` requests at once; more are answered 503 with a
/// Retry-After at once.
pub fn shed<S>(
    limit: usize,
) -> impl tower::Layer<
    S,
    Service = impl tower::Service<
        axum::extract::Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone
              + Send
              + Sync
              + 'static,
> + Clone
where
    S: tower::Service<
            axum::extract::Request,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            |_: tower::BoxError| async {
                let mut answer = ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests at once; retry in a second".into(),
                )
                .into_response();
                answer.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                answer
            },
        ))
        .load_shed()
        // One limit shared by every route the layer is applied to.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limit))
}

/// Lets a request through when no token is configured or it carries it.
/// Both sides are hashed before comparing, so the time taken says nothing
/// about the token.
async fn bearer(
    State(state): State<Arc<ApiState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use sha2::{Digest, Sha256};
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if Sha256::digest(given.as_bytes()) == Sha256::digest(token.as_bytes()) {
        next.run(request).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <token>".into(),
        )
        .into_response()
    }
}

/// The status page ([`crate::serve::page`]), with each history verified.
async fn status_page(State(state): State<Arc<ApiState>>) -> axum::response::Html<String> {
    let mut environments: Vec<Arc<Environment>> = state.environments.state();
    environments.sort_by_key(|e| (e.namespace(), e.name_any()));
    state.verifications.keep_only(&environments);
    let mut rows = Vec::new();
    for env in environments {
        let verification = match &state.client {
            Some(client) => Some(match state.verifications.of(client, &env).await {
                Ok(v) => v.result.map(|v| v.head).map_err(|b| b.to_string()),
                Err(e) => Err(e.to_string()),
            }),
            None => None,
        };
        rows.push((env.as_ref().clone(), verification));
    }
    axum::response::Html(crate::serve::page::render(
        &rows,
        k8s_openapi::jiff::Timestamp::now().as_second(),
    ))
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    if state.watching.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the watch of Environments has stopped\n",
        )
            .into_response()
    }
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if state.listed.load(Ordering::Relaxed) && state.watching.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the watch cache of Environments is not filled yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> String {
    state.metrics.render()
}

fn condition(env: &Environment, kind: &str) -> Value {
    env.status
        .as_ref()
        .and_then(|s| s.condition(kind))
        .map(|c| json!({"status": c.status, "reason": c.reason, "message": c.message, "since": c.last_transition_time.0.to_string()}))
        .unwrap_or(Value::Null)
}

/// One Environment as the API shows it.
pub fn summary(env: &Environment) -> Value {
    let status = env.status.clone().unwrap_or_default();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for object in &status.inventory {
        *kinds.entry(object.kind.clone()).or_default() += 1;
    }
    let last = status.history.last();
    json!({
        "namespace": env.namespace().unwrap_or_default(),
        "name": env.name_any(),
        "desired": {
            "url": crate::source::cache::redact(&env.spec.source.url),
            "ref": env.spec.source.reference,
            "path": env.spec.source.path,
        },
        "revisions": {
            "attempted": status.last_attempted_revision,
            "applied": status.last_applied_revision,
            "healthy": status.last_healthy_revision,
            "failed": status.failed_revision,
            "failedReason": status.failed_reason,
        },
        "manifestsDigest": status.manifests_digest,
        "conditions": {
            "Ready": condition(env, "Ready"),
            "Healthy": condition(env, "Healthy"),
            "Reconciling": condition(env, "Reconciling"),
            "Stalled": condition(env, "Stalled"),
        },
        "inventory": {"objects": status.inventory.len(), "kinds": kinds},
        "history": {
            "entries": last.map_or(0, |e| e.sequence),
            "chainHead": last.map(|e| e.sha256.clone()),
        },
    })
}

fn find(state: &ApiState, namespace: &str, name: &str) -> Result<Arc<Environment>, ApiError> {
    state
        .environments
        .get(&ObjectRef::new(name).within(namespace))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no Environment {namespace}/{name}"),
            )
        })
}

async fn list(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let mut environments: Vec<Arc<Environment>> = state.environments.state();
    environments.sort_by_key(|e| (e.namespace(), e.name_any()));
    Json(json!({ "environments": environments.iter().map(|e| summary(e)).collect::<Vec<_>>() }))
}

async fn detail(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let environment = find(&state, &namespace, &name)?;
    Ok(Json(summary(&environment)))
}

async fn read_history(
    state: &ApiState,
    namespace: &str,
    name: &str,
) -> Result<Vec<Entry>, ApiError> {
    find(state, namespace, name)?;
    journal::read(history_client(state)?, namespace, name)
        .await
        .map_err(unreadable)
}

/// The client the histories are read with.
fn history_client(state: &ApiState) -> Result<&kube::Client, ApiError> {
    state.client.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the history is not readable here".into(),
        )
    })
}

/// A history that could not be read: 422 when a chunk is not a history,
/// 503 when the cluster did not answer.
fn unreadable(e: journal::JournalError) -> ApiError {
    match e {
        journal::JournalError::Corrupt { .. } => {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        _ => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Query of the history page.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<usize>,
    pub before: Option<u64>,
}

/// Entries newest first: at most `limit` (1 to 500, default 50), with a
/// sequence below `before` when given.
pub fn page(entries: &[Entry], page: &Page) -> Result<Vec<Entry>, String> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(format!("limit must be 1 to 500, not {limit}"));
    }
    Ok(entries
        .iter()
        .rev()
        .filter(|e| page.before.is_none_or(|b| e.sequence < b))
        .take(limit)
        .cloned()
        .collect())
}

async fn history_page(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let entries = read_history(&state, &namespace, &name).await?;
    let shown = page(&entries, &query).map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    let next = shown.last().filter(|e| e.sequence > 1).map(|e| e.sequence);
    Ok(Json(
        json!({ "entries": shown, "total": entries.len(), "nextBefore": next }),
    ))
}

async fn verify(
    State(state): State<Arc<ApiState>>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let env = find(&state, &namespace, &name)?;
    let verification = state
        .verifications
        .of(history_client(&state)?, &env)
        .await
        .map_err(unreadable)?;
    Ok(Json(match verification.result {
        Ok(v) => json!({"verified": true, "entries": v.entries, "chainHead": v.head}),
        Err(b) => {
            json!({"verified": false, "entries": verification.entries, "break": b.to_string()})
        }
    }))
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A GitHub delivery: see [`crate::serve::webhook`].
async fn github(
    State(state): State<Arc<ApiState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(hook) = &state.webhook else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the GitHub webhook is not configured (--webhook-secret-file)".into(),
        ));
    };
    webhook::verify_signature(&hook.secret, &body, header(&headers, "x-hub-signature-256"))
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    // Not covered by the signature: logged and answered, never stored.
    let delivery: String = header(&headers, "x-github-delivery")
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    match header(&headers, "x-github-event") {
        Some("push") => {}
        _ => return Ok(StatusCode::NO_CONTENT.into_response()),
    }
    let push = webhook::parse_push(&body).map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    let digest = webhook::body_digest(&body);
    let Some(client) = &state.client else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no cluster to trigger".into(),
        ));
    };
    let (mut triggered, mut replayed) = (Vec::new(), Vec::new());
    for env in state
        .environments
        .state()
        .iter()
        .filter(|e| webhook::follows(e, &push))
    {
        let namespace = env.namespace().unwrap_or_default();
        let name = format!("{namespace}/{}", env.name_any());
        let api: kube::Api<Environment> = kube::Api::namespaced(client.clone(), &namespace);
        let unavailable = |e: kube::Error| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failed to trigger {name}: {e}; GitHub may redeliver it"),
            )
        };
        if trigger_once(&api, &env.name_any(), &push, &digest)
            .await
            .map_err(unavailable)?
        {
            triggered.push(name);
        } else {
            replayed.push(name);
        }
    }
    tracing::info!(%delivery, %digest, pusher = %push.pusher, reference = %push.reference, ?triggered, ?replayed, "push received");
    let answer =
        json!({"delivery": delivery, "body": digest, "triggered": triggered, "replayed": replayed});
    let status = if triggered.is_empty() && !replayed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)).into_response())
}

/// Asks Environment `name` to reconcile for `push` (body `digest`),
/// unless it was already asked for that body; false then. The check and
/// the write are one: the annotations are patched with the
/// resourceVersion read, and read again when someone wrote in between.
async fn trigger_once(
    api: &kube::Api<Environment>,
    name: &str,
    push: &webhook::Push,
    digest: &str,
) -> Result<bool, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let env = api.get(name).await?;
        if webhook::seen(&env, digest) {
            return Ok(false);
        }
        let stamp = k8s_openapi::jiff::Timestamp::now().to_string();
        // Tied to this request's stamp, so a later request by hand is not
        // taken for this push; all from the signed body.
        let commit = push
            .after
            .as_deref()
            .map(|a| format!(" of {}", &a[..12.min(a.len())]))
            .unwrap_or_default();
        let by = format!(
            "{stamp} github push by {}{commit} (body sha256:{digest})",
            push.pusher
        );
        let seen = webhook::remember(
            env.annotations()
                .get(webhook::PUSHES_SEEN)
                .map(String::as_str),
            digest,
        );
        let patch = json!({"metadata": {
            "resourceVersion": env.resource_version(),
            "annotations": {
                crate::crd::REQUESTED_AT: stamp,
                crate::crd::REQUESTED_BY: by,
                webhook::PUSHES_SEEN: seen,
            }
        }});
        match api
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 3 => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The API's OpenAPI 3 document.
pub fn openapi_document() -> Value {
    let error = json!({"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let path_params = json!([
        {"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}
    ]);
    let ok = |schema: &str| json!({"description": "ok", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "ferry-controller status API", "version": "v1",
                 "description": "Read-only: what runs in each environment, its health, and its tamper-evident history."},
        "paths": {
            "/api/v1/environments": {"get": {"operationId": "listEnvironments", "responses": {"200": ok("EnvironmentList")}}},
            "/api/v1/environments/{namespace}/{name}": {"get": {"operationId": "getEnvironment", "parameters": path_params,
                "responses": {"200": ok("Environment"), "404": error}}},
            "/api/v1/environments/{namespace}/{name}/history": {"get": {"operationId": "getHistory",
                "parameters": [path_params[0], path_params[1],
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": ok("HistoryPage"), "400": error, "404": error, "503": error}}},
            "/api/v1/environments/{namespace}/{name}/history/verify": {"get": {"operationId": "verifyHistory", "parameters": path_params,
                "responses": {"200": ok("Verification"), "404": error, "503": error}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Environment": {"type": "object", "required": ["namespace", "name", "revisions", "conditions", "inventory", "history"]},
            "EnvironmentList": {"type": "object", "required": ["environments"],
                "properties": {"environments": {"type": "array", "items": {"$ref": "#/components/schemas/Environment"}}}},
            "HistoryPage": {"type": "object", "required": ["entries", "total"],
                "properties": {"entries": {"type": "array", "items": {"type": "object"}}, "total": {"type": "integer"},
                               "nextBefore": {"type": "integer", "nullable": true}}},
            "Verification": {"type": "object", "required": ["verified", "entries"],
                "properties": {"verified": {"type": "boolean"}, "entries": {"type": "integer"},
                               "chainHead": {"type": "string"}, "break": {"type": "string"}}}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use kube::runtime::{reflector, watcher};
    use tower::ServiceExt;

    fn state(envs: &[Value]) -> Arc<ApiState> {
        let (reader, mut writer) = reflector::store::<Environment>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for e in envs {
            writer.apply_watcher_event(&watcher::Event::InitApply(
                serde_json::from_value(e.clone()).unwrap(),
            ));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Arc::new(ApiState {
            environments: reader,
            client: None,
            metrics: Arc::new(Metrics::default()),
            watching: Arc::new(AtomicBool::new(true)),
            listed: Arc::new(AtomicBool::new(true)),
            webhook: Some(Webhook {
                secret: b"s3cr3t".to_vec(),
            }),
            token: None,
            verifications: Default::default(),
        })
    }

    fn dev() -> Value {
        json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Environment",
               "metadata": {"name": "dev", "namespace": "ferry-system"},
               "spec": {"source": {"url": "https://bot:t0ken@github.com/a/b.git", "path": "environments/dev"}},
               "status": {"lastAppliedRevision": "main@sha1:abc", "lastHealthyRevision": "main@sha1:abc",
                          "inventory": [{"version": "v1", "kind": "Service", "name": "s"}, {"group": "apps", "version": "v1", "kind": "Deployment", "name": "d"}],
                          "history": [{"sequence": 7, "time": "t", "environment": "ferry-system/dev", "trigger": "interval", "result": "Healthy", "previous": "p", "sha256": "sha256:head"}]}})
    }

    async fn get(router: Router, uri: &str) -> (StatusCode, Value) {
        let response = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn environments_are_listed_and_summarized() {
        let app = router(state(&[dev()]));
        let (status, body) = get(app.clone(), "/api/v1/environments").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["environments"][0]["name"], "dev");
        let (status, body) = get(app, "/api/v1/environments/ferry-system/dev").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["revisions"]["healthy"], "main@sha1:abc");
        assert_eq!(body["inventory"]["kinds"]["Deployment"], 1);
        assert_eq!(body["history"]["chainHead"], "sha256:head");
        assert_eq!(body["history"]["entries"], 7);
        assert_eq!(
            body["desired"]["url"], "https://***@github.com/a/b.git",
            "credentials never leave"
        );
    }

    #[tokio::test]
    async fn errors_are_json_with_the_status_that_fits() {
        let app = router(state(&[dev()]));
        let (status, body) = get(app.clone(), "/api/v1/environments/ferry-system/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no Environment ferry-system/nope");
        let (status, body) = get(
            app.clone(),
            "/api/v1/environments/ferry-system/dev/history?limit=x",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
        let (status, _) = get(
            app.clone(),
            "/api/v1/environments/ferry-system/nope/history",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = get(app, "/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("openapi.json"));
    }

    /// Every documented path answers, on known and unknown Environments,
    /// with a status its operation documents and a body holding the
    /// required properties of the documented schema: the server checked
    /// against its own OpenAPI document.
    #[tokio::test]
    async fn answers_match_the_openapi_document() {
        let app = router(state(&[dev()]));
        let (status, document) = get(app.clone(), "/api/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let schema = |reference: &str| {
            let name = reference.rsplit('/').next().unwrap();
            document["components"]["schemas"][name].clone()
        };
        let mut checked = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            let responses = &item["get"]["responses"];
            for name in ["dev", "nope"] {
                let uri = path
                    .replace("{namespace}", "ferry-system")
                    .replace("{name}", name);
                let (status, body) = get(app.clone(), &uri).await;
                let documented = &responses[status.as_str()];
                assert!(documented.is_object(), "{uri}: {status} is not documented");
                let reference = documented["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap();
                for required in schema(reference)["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let key = required.as_str().unwrap();
                    assert!(
                        body.get(key).is_some(),
                        "{uri}: {status} lacks {key}: {body}"
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 8);
    }
    async fn post(
        router: Router,
        signature: Option<String>,
        delivery: &str,
        event: &str,
        body: &'static [u8],
    ) -> StatusCode {
        let mut request = Request::post("/hooks/github")
            .header("x-github-delivery", delivery)
            .header("x-github-event", event);
        if let Some(s) = signature {
            request = request.header("x-hub-signature-256", s);
        }
        router
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap()
            .status()
    }

    fn sign(body: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cr3t").unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Bodies are read before their signature can be checked: one over
    /// the limit is refused whole, signed or not.
    #[tokio::test]
    async fn a_delivery_over_the_limit_is_refused() {
        let app = router(state(&[dev()]));
        let big: &'static [u8] = Box::leak(vec![b' '; webhook::BODY_LIMIT + 1].into_boxed_slice());
        assert_eq!(
            post(app.clone(), Some(sign(big)), "big", "push", big).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let fits: &'static [u8] = Box::leak(vec![b' '; webhook::BODY_LIMIT].into_boxed_slice());
        assert_ne!(
            post(app, None, "fits", "push", fits).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn the_webhook_acts_only_on_signed_new_deliveries() {
        let app = router(state(&[dev()]));
        let ping: &'static [u8] = br#"{"zen": "Design for failure."}"#;
        assert_eq!(
            post(app.clone(), None, "1", "ping", ping).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(app.clone(), Some("sha1=0123".into()), "2", "ping", ping).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(app.clone(), Some(sign(b"other")), "3", "ping", ping).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(app.clone(), Some(sign(ping)), "4", "ping", ping).await,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            post(app.clone(), Some(sign(ping)), "4", "ping", ping).await,
            StatusCode::NO_CONTENT,
            "a ping again does nothing either"
        );
        assert_eq!(
            post(app.clone(), Some(sign(ping)), "5", "issues", ping).await,
            StatusCode::NO_CONTENT
        );
        let bad: &'static [u8] = b"not json";
        assert_eq!(
            post(app, Some(sign(bad)), "6", "push", bad).await,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn requests_past_the_limit_are_turned_away_at_once() {
        let (entered, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let (e, r) = (entered.clone(), release.clone());
        let app: Router = Router::new()
            .route(
                "/slow",
                axum::routing::get(move || {
                    let (e, r) = (e.clone(), r.clone());
                    async move {
                        e.notify_one();
                        r.notified().await;
                        "done"
                    }
                }),
            )
            .layer(shed(1));
        let first = tokio::spawn(
            app.clone()
                .oneshot(Request::get("/slow").body(Body::empty()).unwrap()),
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), entered.notified())
            .await
            .expect("the first request reached its handler");
        let second = app
            .clone()
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "1");
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_token_guards_the_api_and_the_page_but_not_the_probes() {
        let mut s = Arc::try_unwrap(state(&[dev()])).ok().unwrap();
        s.token = Some("t0ken".into());
        let app = router(Arc::new(s));
        let status = |uri: &'static str, auth: Option<&'static str>| {
            let app = app.clone();
            async move {
                let mut request = Request::get(uri);
                if let Some(a) = auth {
                    request = request.header("authorization", a);
                }
                app.oneshot(request.body(Body::empty()).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(
            status("/api/v1/environments", None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status("/api/v1/environments", Some("Bearer nope")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status("/api/v1/environments", Some("Bearer t0ken")).await,
            StatusCode::OK
        );
        assert_eq!(status("/", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status("/", Some("Bearer t0ken")).await, StatusCode::OK);
        assert_eq!(status("/healthz", None).await, StatusCode::OK);
        assert_eq!(status("/metrics", None).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_page_lists_the_environments() {
        let app = router(state(&[dev()]));
        let response = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8_lossy(&bytes);
        assert!(
            html.contains("ferry-system/dev") && html.contains("<!doctype html>"),
            "{html}"
        );
    }

    #[test]
    fn history_pages_go_back_from_before() {
        let entries: Vec<Entry> = (1..=5)
            .map(|sequence| Entry {
                sequence,
                ..Entry::default()
            })
            .collect();
        let seq = |p: Vec<Entry>| p.iter().map(|e| e.sequence).collect::<Vec<_>>();
        assert_eq!(
            seq(page(
                &entries,
                &Page {
                    limit: Some(2),
                    before: None
                }
            )
            .unwrap()),
            [5, 4]
        );
        assert_eq!(
            seq(page(
                &entries,
                &Page {
                    limit: Some(2),
                    before: Some(4)
                }
            )
            .unwrap()),
            [3, 2]
        );
        assert!(
            page(
                &entries,
                &Page {
                    limit: Some(0),
                    before: None
                }
            )
            .is_err()
        );
        assert!(
            page(
                &entries,
                &Page {
                    limit: Some(501),
                    before: None
                }
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn health_and_readiness_follow_the_watch() {
        let s = state(&[]);
        let app = router(s.clone());
        let status = |uri: &'static str| {
            let app = app.clone();
            async move {
                app.oneshot(Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(status("/healthz").await, StatusCode::OK);
        assert_eq!(status("/readyz").await, StatusCode::OK);
        s.watching.store(false, Ordering::Relaxed);
        assert_eq!(status("/healthz").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    }
}
