//! The one error type every handler returns: a status and a message the
//! client can act on, rendered as `{"error": "..."}` (the Open Inference
//! Protocol's error shape, used for the original API too).

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A client-facing error. Messages never carry internal details: every
/// failure a handler can meet is a property of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}

impl From<BytesRejection> for ApiError {
    /// A body that could not be read: over the size limit (413) or cut off.
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body is larger than the limit of {} bytes; send fewer candidates per request",
                super::state::BODY_LIMIT
            )
        } else {
            format!("failed to read the request body: {}", rejection.body_text())
        };
        ApiError {
            status: if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_REQUEST
            },
            message,
        }
    }
}

/// Parses a JSON body, turning serde's error into a message with the
/// position of the problem.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "malformed JSON at line {} column {}: {e}; expected a JSON document",
            e.line(),
            e.column()
        ))
    })
}
