//! The release gate: a new model must meet the thresholds committed in
//! `inference/model/gate.json`, and must not be worse than the released
//! model by more than the stated tolerance, metric by metric.

use std::collections::BTreeMap;

use ferry_inference::artifact::Model;
use serde::Deserialize;

/// `inference/model/gate.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Metric name to its lowest acceptable value.
    pub minimum: BTreeMap<String, f64>,
    /// How much lower than the released model a metric may be.
    pub max_regression: f64,
}

/// The metrics the gate knows, by name.
pub fn metrics(model: &Model) -> BTreeMap<String, f64> {
    let m = &model.metrics;
    [
        ("cv_unshuffled_accuracy", m.cv_unshuffled.mean_accuracy),
        ("cv_stratified_accuracy", m.cv_stratified.mean_accuracy),
        ("cv_stratified_roc_auc", m.cv_stratified.pooled.roc_auc),
        ("cv_stratified_f1", m.cv_stratified.pooled.f1),
        ("cv_stratified_precision", m.cv_stratified.pooled.precision),
        ("cv_stratified_recall", m.cv_stratified.pooled.recall),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// One reason the gate is closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure(pub String);

/// Every failed check; empty when the model may be released.
pub fn check(new: &Model, released: Option<&Model>, thresholds: &Thresholds) -> Vec<Failure> {
    let current = metrics(new);
    let mut failures = Vec::new();
    for (name, minimum) in &thresholds.minimum {
        match current.get(name) {
            None => failures.push(Failure(format!(
                "{name}: the gate names a metric the model does not have"
            ))),
            // NaN compares false with everything: without this it would pass.
            Some(v) if v.is_nan() => failures.push(Failure(format!(
                "{name} is not a number (NaN): the model's evaluation is broken"
            ))),
            Some(v) if v < minimum => failures.push(Failure(format!(
                "{name} is {v:.4}, below the minimum {minimum:.4} by {:.4}",
                minimum - v
            ))),
            Some(_) => {}
        }
    }
    if let Some(released) = released {
        for (name, before) in metrics(released) {
            let after = current.get(&name).copied().unwrap_or(f64::NAN);
            // NaN (a metric the new model lacks) fails too.
            if after.is_nan() || after < before - thresholds.max_regression {
                failures.push(Failure(format!(
                    "{name} is {after:.4}, {:.4} below the released model's {before:.4} (tolerance {:.4})",
                    before - after,
                    thresholds.max_regression
                )));
            }
        }
    }
    failures
}

/// A short model card in Markdown.
pub fn model_card(model: &Model, sha256: &str) -> String {
    let m = &model.metrics;
    let mut card = format!(
        "# Model card: {} {}\n\n- artifact sha256: `{sha256}`\n- training data sha256: `{}` ({} rows, {} placed)\n- trained by {}\n- parameters: {} trees, max depth {}, {} columns per split, seed {}\n\n",
        model.name,
        model.version,
        model.training_data.sha256,
        model.training_data.rows,
        model.training_data.positives,
        model.trainer,
        model.parameters.trees,
        model
            .parameters
            .max_depth
            .map_or("unlimited".to_owned(), |d| d.to_string()),
        model
            .parameters
            .features_per_split
            .map_or("√columns".to_owned(), |d| d.to_string()),
        model.parameters.seed,
    );
    card.push_str(&ferry_inference::evaluation::markdown_table([
        &m.cv_unshuffled,
        &m.cv_stratified,
    ]));
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../inference/model/placement.json"
        );
        ferry_inference::artifact::load(path.as_ref())
            .unwrap()
            .model
    }

    fn thresholds(minimum: f64) -> Thresholds {
        Thresholds {
            minimum: BTreeMap::from([("cv_stratified_accuracy".to_owned(), minimum)]),
            max_regression: 0.01,
        }
    }

    #[test]
    fn the_committed_model_passes_the_committed_gate() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../inference/model/gate.json"
        ))
        .unwrap();
        let gate: Thresholds = serde_json::from_str(&text).unwrap();
        let m = model();
        assert_eq!(check(&m, Some(&m), &gate), []);
    }

    #[test]
    fn says_which_metric_failed_by_how_much() {
        let m = model();
        let failures = check(&m, None, &thresholds(0.99));
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].0.starts_with(
                "cv_stratified_accuracy is 0.9537, below the minimum 0.9900 by 0.0363"
            ),
            "{:?}",
            failures
        );
        let mut worse = m.clone();
        worse.metrics.cv_unshuffled.mean_accuracy -= 0.05;
        let failures = check(&worse, Some(&m), &thresholds(0.5));
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].0.contains(
                "cv_unshuffled_accuracy is 0.9097, 0.0500 below the released model's 0.9597"
            ),
            "{:?}",
            failures
        );
    }

    #[test]
    fn a_nan_metric_closes_the_gate() {
        let m = model();
        let mut broken = m.clone();
        broken.metrics.cv_stratified.mean_accuracy = f64::NAN;
        let failures = check(&broken, None, &thresholds(0.5));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].0.contains("not a number"), "{failures:?}");
        // Against a released model as well (its own check).
        let failures = check(&broken, Some(&m), &thresholds(0.5));
        assert_eq!(failures.len(), 2, "{failures:?}");
    }

    #[test]
    fn the_card_holds_the_metrics() {
        let card = model_card(&model(), "abc");
        assert!(
            card.contains("| unshuffled | 0.9597 |") && card.contains("`abc`"),
            "{card}"
        );
    }
}
