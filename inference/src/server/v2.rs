//! Open Inference Protocol (KServe v2) REST endpoints.
//!
//! The model takes one input tensor per feature, shape `[N]` (or `[N, 1]`):
//! numeric features as FP32/FP64 (integer types are accepted too),
//! categorical features as BYTES holding the category string. It answers
//! `probability` (FP32, shape `[N]`) and `placed` (BOOL, shape `[N]`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, parse_json};
use super::state::AppState;
use crate::artifact::MODEL_NAME;
use crate::features::{Candidate, FeatureKind, FeatureValue};
use crate::metrics::THRESHOLD;

const NUMERIC_TYPES: [&str; 10] = [
    "FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
];

/// `GET /v2`: server metadata.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "ferry-inference",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

/// `GET /v2/health/live`: the process answers.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: 200 while serving; 503 before the model passed
/// its self-check and while draining for shutdown, so Kubernetes takes the
/// pod out of its Service.
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready }))).into_response()
}

#[derive(Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

fn check_model(state: &AppState, path: &ModelPath) -> Result<(), ApiError> {
    if path.name != MODEL_NAME {
        return Err(ApiError::not_found(format!(
            "unknown model {:?}: this server serves {MODEL_NAME:?}",
            path.name
        )));
    }
    if let Some(version) = &path.version
        && *version != state.model.version
    {
        return Err(ApiError::not_found(format!(
            "unknown version {version:?} of model {MODEL_NAME:?}: this server has version {:?}",
            state.model.version
        )));
    }
    Ok(())
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`.
pub async fn model_ready(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<Response, ApiError> {
    check_model(&state, &path)?;
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(json!({ "name": MODEL_NAME, "ready": ready }))).into_response())
}

/// `GET /v2/models/{name}[/versions/{version}]`: inputs, outputs, version,
/// and (as parameters) the artifact digest and cross-validation metrics.
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, ApiError> {
    check_model(&state, &path)?;
    let model = &state.model;
    let inputs: Vec<Value> = model
        .schema
        .features
        .iter()
        .map(|f| {
            let datatype = match f.kind {
                FeatureKind::Numeric { .. } => "FP32",
                FeatureKind::Categorical { .. } => "BYTES",
            };
            json!({ "name": f.name, "datatype": datatype, "shape": [-1] })
        })
        .collect();
    Ok(Json(json!({
        "name": MODEL_NAME,
        "versions": [model.version],
        "platform": "ferry-linfa-forest",
        "inputs": inputs,
        "outputs": [
            { "name": "probability", "datatype": "FP32", "shape": [-1] },
            { "name": "placed", "datatype": "BOOL", "shape": [-1] },
        ],
        "parameters": {
            "sha256": &*state.sha256,
            "schema": model.schema,
            "training_data_sha256": model.training_data.sha256,
            "metrics": {
                "cv_unshuffled_accuracy": model.metrics.cv_unshuffled.mean_accuracy,
                "cv_stratified_accuracy": model.metrics.cv_stratified.mean_accuracy,
                "cv_stratified_roc_auc": model.metrics.cv_stratified.pooled.roc_auc,
            },
        },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    id: Option<String>,
    /// Accepted as the protocol allows; no parameter changes this model's output.
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<serde_json::Map<String, Value>>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Accepted as the protocol allows; no parameter changes this model's output.
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<serde_json::Map<String, Value>>,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    /// Accepted as the protocol allows; no parameter changes this model's output.
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Serialize)]
struct OutputTensor {
    name: &'static str,
    datatype: &'static str,
    shape: [usize; 1],
    data: Value,
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
pub async fn infer(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    check_model(&state, &path)?;
    let body = body?;
    let request: InferRequest = serde_json::from_value(parse_json(&body)?)
        .map_err(|e| ApiError::bad_request(format!("invalid inference request: {e}")))?;
    let candidates = candidates_from_tensors(&state, &request.inputs)?;

    let probability: Vec<f64> = candidates
        .iter()
        .map(|c| state.predictor.predict(c))
        .collect();
    let placed: Vec<bool> = probability.iter().map(|&p| p >= THRESHOLD).collect();
    for &p in &placed {
        state.metrics.record_prediction(p);
    }
    let n = candidates.len();
    let all = [
        OutputTensor {
            name: "probability",
            datatype: "FP32",
            shape: [n],
            data: json!(probability.iter().map(|&p| p as f32).collect::<Vec<f32>>()),
        },
        OutputTensor {
            name: "placed",
            datatype: "BOOL",
            shape: [n],
            data: json!(placed),
        },
    ];
    let outputs: Vec<&OutputTensor> = match &request.outputs {
        None => all.iter().collect(),
        Some(requested) => {
            let mut chosen = Vec::with_capacity(requested.len());
            for r in requested {
                let output = all.iter().find(|o| o.name == r.name).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown output {:?}: expected \"probability\" or \"placed\"",
                        r.name
                    ))
                })?;
                chosen.push(output);
            }
            chosen
        }
    };
    let mut response = json!({
        "model_name": MODEL_NAME,
        "model_version": state.model.version,
        "outputs": outputs,
    });
    if let Some(id) = request.id {
        response["id"] = Value::String(id);
    }
    Ok(Json(response))
}

/// Turns one tensor per feature into candidates, checking names, shapes,
/// datatypes and every value.
fn candidates_from_tensors(
    state: &AppState,
    inputs: &[InputTensor],
) -> Result<Vec<Candidate>, ApiError> {
    let schema = &state.model.schema;
    let mut columns: Vec<Option<Vec<FeatureValue>>> = vec![None; schema.features.len()];
    let mut batch: Option<usize> = None;
    for input in inputs {
        let index = schema.index_of(&input.name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown input {:?}: expected only the inputs {}",
                input.name,
                schema.names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if columns[index].is_some() {
            return Err(ApiError::bad_request(format!(
                "input {:?} is given twice",
                input.name
            )));
        }
        let n = match input.shape.as_slice() {
            [n] | [n, 1] if *n >= 0 => *n as usize,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "input {:?} has shape {:?}: expected [N] or [N, 1]",
                    input.name, input.shape
                )));
            }
        };
        if n == 0 {
            return Err(ApiError::bad_request(format!(
                "input {:?} is empty: expected at least one value",
                input.name
            )));
        }
        if n > state.max_batch {
            return Err(ApiError::bad_request(format!(
                "input {:?} has {n} values: expected at most {} per request",
                input.name, state.max_batch
            )));
        }
        let feature = &schema.features[index];
        let numeric = matches!(feature.kind, FeatureKind::Numeric { .. });
        let datatype_ok = if numeric {
            NUMERIC_TYPES.contains(&input.datatype.as_str())
        } else {
            input.datatype == "BYTES"
        };
        if !datatype_ok {
            return Err(ApiError::bad_request(format!(
                "input {:?} has datatype {:?}: expected {}",
                input.name,
                input.datatype,
                if numeric { "FP32 or FP64" } else { "BYTES" }
            )));
        }
        let mut values = Vec::with_capacity(n);
        flatten(&input.data, &mut values);
        if values.len() != n {
            return Err(ApiError::bad_request(format!(
                "input {:?} has {} values but shape {:?}",
                input.name,
                values.len(),
                input.shape
            )));
        }
        if let Some(b) = batch
            && b != n
        {
            return Err(ApiError::bad_request(format!(
                "input {:?} has {n} values, an earlier input has {b}: all inputs must have the same length",
                input.name
            )));
        }
        batch = Some(n);
        let parsed = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                schema.parse_value(index, v).map_err(|e| {
                    ApiError::bad_request(format!("input {:?} element {row}: {e}", input.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        columns[index] = Some(parsed);
    }
    let mut present = Vec::with_capacity(columns.len());
    for (feature, column) in schema.features.iter().zip(columns) {
        present.push(column.ok_or_else(|| {
            ApiError::bad_request(format!(
                "missing input {:?}: expected a tensor of {}",
                feature.name,
                feature.kind.expected()
            ))
        })?);
    }
    let n = batch.unwrap_or(0);
    Ok((0..n)
        .map(|row| Candidate(present.iter().map(|column| column[row]).collect()))
        .collect())
}

/// Row-major flattening of nested JSON arrays.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}
