//! `GET /` and `POST /`: a page for people. The original service's users
//! opened it in a browser; this one answers with a form of the model's
//! features (categories as lists, numbers with their valid range and the
//! range seen in training), the answer with its probability, and the
//! model's card (version, sha256, cross-validated metrics). Server-rendered,
//! no script: posting the form works without JavaScript.
//!
//! Guarantees: every text that comes from the request or the artifact is
//! HTML-escaped; a form that does not validate is answered 400 with the
//! same message the API gives, the form keeping what was typed; the same
//! body limit as the API.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Map, Value};

use super::state::AppState;
use crate::features::{FeatureKind, FeatureSchema};
use crate::metrics::THRESHOLD;

/// `GET /`: the empty form.
pub async fn form(State(state): State<AppState>) -> Html<String> {
    Html(render(&state, &[], None))
}

/// What a posted form led to.
enum Answer {
    Prediction { probability: f64 },
    Refused(String),
}

/// `POST /` (`application/x-www-form-urlencoded`): the answer on the page.
pub async fn submit(
    State(state): State<AppState>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let fields = match form {
        Ok(Form(fields)) => fields,
        Err(rejection) => {
            let page = render(&state, &[], Some(&Answer::Refused(rejection.body_text())));
            return (rejection.status(), Html(page)).into_response();
        }
    };
    let answer = match candidate_json(&state.model.schema, &fields) {
        Err(message) => Answer::Refused(message),
        Ok(object) => match state.model.schema.parse_object(&Value::Object(object)) {
            Err(e) => Answer::Refused(e.to_string()),
            Ok(candidate) => {
                let probability = state.predictor.predict(&candidate);
                state.metrics.record_prediction(probability >= THRESHOLD);
                Answer::Prediction { probability }
            }
        },
    };
    let status = match answer {
        Answer::Prediction { .. } => StatusCode::OK,
        Answer::Refused(_) => StatusCode::BAD_REQUEST,
    };
    (status, Html(render(&state, &fields, Some(&answer)))).into_response()
}

/// The form's fields as the JSON object the API takes: numbers for
/// numeric features (when they read as one), text for the rest. A field
/// given twice is refused rather than guessed.
fn candidate_json(
    schema: &FeatureSchema,
    fields: &[(String, String)],
) -> Result<Map<String, Value>, String> {
    let mut object = Map::new();
    for (name, text) in fields {
        let numeric = schema
            .features
            .iter()
            .find(|f| f.name == *name)
            .is_some_and(|f| matches!(f.kind, FeatureKind::Numeric { .. }));
        let value = match text.trim().parse::<f64>() {
            Ok(n) if numeric => serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(text.clone())),
            _ if numeric && text.trim().is_empty() => {
                return Err(format!("field `{name}` is empty: enter a number"));
            }
            _ => Value::String(text.clone()),
        };
        if object.insert(name.clone(), value).is_some() {
            return Err(format!("field `{name}` was sent twice"));
        }
    }
    Ok(object)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn render(state: &AppState, fields: &[(String, String)], answer: Option<&Answer>) -> String {
    let model = &state.model;
    let typed = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let mut inputs = String::new();
    for feature in &model.schema.features {
        let name = escape(&feature.name);
        match &feature.kind {
            FeatureKind::Categorical { categories } => {
                let options: String = categories
                    .iter()
                    .map(|c| {
                        let selected = if typed(&feature.name) == Some(c.as_str()) {
                            " selected"
                        } else {
                            ""
                        };
                        format!("<option value=\"{0}\"{selected}>{0}</option>", escape(c))
                    })
                    .collect();
                inputs.push_str(&format!(
                    "<label for=\"{name}\">{name}</label><select id=\"{name}\" name=\"{name}\">{options}</select><span></span>\n"
                ));
            }
            FeatureKind::Numeric {
                valid_range,
                range_seen,
            } => {
                let value = typed(&feature.name)
                    .map(|v| format!(" value=\"{}\"", escape(v)))
                    .unwrap_or_default();
                inputs.push_str(&format!(
                    "<label for=\"{name}\">{name}</label><input id=\"{name}\" name=\"{name}\" type=\"number\" step=\"any\" min=\"{}\" max=\"{}\" required{value}><span>{} to {} in training</span>\n",
                    valid_range[0], valid_range[1], range_seen[0], range_seen[1]
                ));
            }
        }
    }
    let answer = match answer {
        None => String::new(),
        Some(Answer::Prediction { probability }) => {
            let placed = *probability >= THRESHOLD;
            format!(
                "<section class=\"answer {}\" role=\"status\"><h2>{}</h2><p>probability of placement <strong>{:.1}%</strong> ({probability}); placed at {:.0}% and above</p></section>",
                if placed { "placed" } else { "not-placed" },
                if placed { "Placed" } else { "Not placed" },
                probability * 100.0,
                THRESHOLD * 100.0
            )
        }
        Some(Answer::Refused(message)) => format!(
            "<section class=\"answer refused\" role=\"alert\"><h2>Not a valid candidate</h2><p>{}</p></section>",
            escape(message)
        ),
    };
    let metrics = &model.metrics;
    let cv_rows: String = [&metrics.cv_unshuffled, &metrics.cv_stratified]
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                escape(&r.protocol),
                r.mean_accuracy,
                r.pooled.roc_auc,
                r.pooled.f1
            )
        })
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} — campus placement</title>
<style>
body{{font:16px/1.4 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}}
form{{display:grid;grid-template-columns:max-content 12rem auto;gap:.4rem .8rem;align-items:center}}
label{{font-family:monospace}} span{{color:#666;font-size:.85em}} button{{grid-column:2;padding:.4rem}}
.answer{{margin:1rem 0;padding:.6rem 1rem;border-radius:.3rem}} .placed{{background:#e3f6e6}} .not-placed{{background:#fdeaea}} .refused{{background:#fff4d6}}
table{{border-collapse:collapse}} td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}} code{{word-break:break-all}}
</style></head>
<body>
<h1>Will this candidate be placed?</h1>
{answer}
<form method="post" action="/">
{inputs}<button type="submit">Predict</button>
</form>
<h2>The model</h2>
<p><strong>{name}</strong> version <code>{version}</code>, artifact sha256 <code>{sha256}</code>, trained on {rows} rows by {trainer}.</p>
<table><tr><th>cross-validation</th><th>accuracy</th><th>ROC AUC</th><th>F1</th></tr>{cv_rows}</table>
<p>The same answers as a JSON API: <code>POST /predict</code> (the original service's) and <code>POST /v2/models/{name}/infer</code> (Open Inference Protocol v2).</p>
</body></html>
"#,
        name = escape(&model.name),
        version = escape(&model.version),
        sha256 = escape(&state.sha256),
        rows = model.training_data.rows,
        trainer = escape(&model.trainer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
