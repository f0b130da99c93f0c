//! The original service's API, kept byte-compatible for its clients.
//!
//! The original was Flask: `jsonify` writes compact JSON with sorted keys
//! and a final newline, and Python's `repr` of a float. These handlers write
//! the same bytes.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::{ApiError, parse_json};
use super::state::AppState;
use crate::features::Candidate;
use crate::metrics::THRESHOLD;

/// `GET /health`: the process is up.
pub async fn health() -> Response {
    flask_json("{\"status\":\"healthy\"}".to_owned())
}

/// `POST /predict`: a JSON list of candidate objects (a single object is
/// also accepted). One candidate answers one object, several a list.
pub async fn predict(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let candidates = parse_candidates(&state, &parse_json(&body)?)?;
    // One string, written in place: one object for one candidate, a list
    // for several.
    let mut text = String::with_capacity(64 * candidates.len() + 2);
    let many = candidates.len() > 1;
    if many {
        text.push('[');
    }
    for (i, candidate) in candidates.iter().enumerate() {
        let probability = state.predictor.predict(candidate);
        let placed = probability >= THRESHOLD;
        state.metrics.record_prediction(placed);
        if i > 0 {
            text.push(',');
        }
        text.push_str(if placed {
            "{\"Placement\":true,\"Placement_Probability\":"
        } else {
            "{\"Placement\":false,\"Placement_Probability\":"
        });
        push_python_repr(&mut text, probability);
        text.push('}');
    }
    if many {
        text.push(']');
    }
    Ok(flask_json(text))
}

fn parse_candidates(state: &AppState, body: &Value) -> Result<Vec<Candidate>, ApiError> {
    let items: Vec<&Value> = match body {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![body],
        other => {
            return Err(ApiError::bad_request(format!(
                "expected a JSON list of candidate objects, got {}",
                crate::features::json_type(other)
            )));
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "empty list: expected at least one candidate object",
        ));
    }
    if items.len() > state.max_batch {
        return Err(ApiError::bad_request(format!(
            "{} candidates in one request: expected at most {}",
            items.len(),
            state.max_batch
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            state
                .model
                .schema
                .parse_object(item)
                .map_err(|e| ApiError::bad_request(format!("candidate {i}: {e}")))
        })
        .collect()
}

fn flask_json(mut text: String) -> Response {
    text.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Formats a float as Python's `repr` does: the shortest digits that read
/// back to the same value, positional from 1e-4 up to 1e16, scientific with
/// a signed two-digit exponent outside that, and `.0` on whole numbers.
pub fn python_repr(x: f64) -> String {
    let mut text = String::new();
    push_python_repr(&mut text, x);
    text
}

/// [`python_repr`] written onto `text`. In the positional range (every
/// probability but the tiniest) Rust's `Display` writes the same shortest
/// digits, positionally, so only a missing `.0` is added: no allocation.
pub fn push_python_repr(text: &mut String, x: f64) {
    use std::fmt::Write;
    if x == 0.0 || (1e-4..1e16).contains(&x.abs()) {
        let from = text.len();
        // Writing to a String cannot fail.
        let _ = write!(text, "{x}");
        if !text[from..].contains('.') {
            text.push_str(".0");
        }
    } else {
        text.push_str(&python_repr_general(x));
    }
}

/// [`python_repr`] for any float, from its scientific digits.
fn python_repr_general(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let point = exponent + 1; // digits before the decimal point
    let body = if (-3..=16).contains(&point) {
        if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{fraction}e{exp_sign}{:02}", exponent.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::{python_repr, python_repr_general};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_short_path_writes_what_the_general_one_does(bits in any::<u64>(), scale in -20i32..20) {
            // Raw bits cover every exponent; a power of ten times a
            // fraction covers the positional range densely.
            let raw = f64::from_bits(bits);
            let scaled = (bits as f64 / u64::MAX as f64) * 10f64.powi(scale);
            for x in [raw, scaled, -scaled] {
                prop_assert_eq!(python_repr(x), python_repr_general(x), "{:e}", x);
            }
        }
    }

    #[test]
    fn matches_python_repr() {
        // Each pair is (value, Python 3 repr(value)).
        let cases = [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (0.5, "0.5"),
            (0.873046875, "0.873046875"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123.0, "123.0"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-0.25, "-0.25"),
            (2.5e-100, "2.5e-100"),
            (-0.0, "-0.0"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.00009999999999999999, "9.999999999999999e-05"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_repr(value), expected, "{value:e}");
        }
    }
}
