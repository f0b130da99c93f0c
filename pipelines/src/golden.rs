//! The prediction cases an environment's pods are verified with
//! (`healthCheck.predictions` of the controller): rows the model was not
//! trained on, each with the answer the gated model gives, as JSON lines
//! of `{"request": <POST /predict body>, "answer": <its answer>}`.
//!
//! Guarantees: the answers are computed by the same code that serves them
//! (`ferry_inference`'s model), in the shape `POST /predict` returns, so a
//! pod serving exactly this model answers every case the same; the same
//! model and rows give the same file, byte for byte.

use ferry_inference::artifact::Model;
use ferry_inference::data;
use ferry_inference::features::{FeatureKind, FeatureValue};
use ferry_inference::metrics::THRESHOLD;
use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("failed to read the candidates")]
    Data(#[source] data::DataError),
    #[error("the candidates hold no rows: the cases need at least one")]
    Empty,
}

/// The first `count` candidates of `csv` (rows in any column order, as
/// `ferry-inference predict` reads them) as cases, one JSON line each.
pub fn cases(model: &Model, csv: &[u8], count: usize) -> Result<String, GoldenError> {
    let candidates = data::unlabelled(&model.schema, csv).map_err(GoldenError::Data)?;
    if candidates.is_empty() {
        return Err(GoldenError::Empty);
    }
    let mut text = String::new();
    for candidate in candidates.iter().take(count.max(1)) {
        let mut request = Map::new();
        for (feature, value) in model.schema.features.iter().zip(&candidate.0) {
            let value = match (value, &feature.kind) {
                (FeatureValue::Number(n), _) => json!(n),
                (FeatureValue::Category(i), FeatureKind::Categorical { categories }) => {
                    json!(categories.get(*i).cloned().unwrap_or_default())
                }
                (FeatureValue::Category(i), _) => json!(i),
            };
            request.insert(feature.name.clone(), value);
        }
        let probability = model.predict(candidate);
        let answer = json!({
            "Placement": probability >= THRESHOLD,
            "Placement_Probability": probability,
        });
        let line = json!({"request": Value::Object(request), "answer": answer});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn repo() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
    }

    #[test]
    fn each_case_is_a_request_and_the_models_answer() {
        let artifact =
            ferry_inference::artifact::load(&repo().join("inference/model/placement.json"))
                .unwrap();
        let csv = std::fs::read(repo().join("inference/data/Test_Data.csv")).unwrap();
        let text = cases(&artifact.model, &csv, 5).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        let first = &lines[0];
        assert_eq!(first["request"]["gender"], "M");
        assert!(first["request"]["ssc_p"].is_number());
        // The model's own answer, in the server's shape.
        let candidate = artifact
            .model
            .schema
            .parse_object(&first["request"])
            .unwrap();
        let p = artifact.model.predict(&candidate);
        assert_eq!(first["answer"]["Placement_Probability"], json!(p));
        assert_eq!(first["answer"]["Placement"], json!(p >= THRESHOLD));
        assert_eq!(
            cases(&artifact.model, &csv, 5).unwrap(),
            text,
            "deterministic"
        );
        assert!(matches!(
            cases(&artifact.model, b"gender,ssc_p\n", 5),
            Err(GoldenError::Empty | GoldenError::Data(_))
        ));
    }
}
