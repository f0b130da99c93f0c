//! Cross-validation: the two protocols the model is judged by, and the
//! candidate model kinds compared under them.
//!
//! - `unshuffled`: 5 folds of consecutive rows in file order (scikit-learn's
//!   `KFold(5)` without shuffling), the protocol of the original service's
//!   0.960.
//! - `stratified`: 5 folds, each class shuffled with a fixed seed and dealt
//!   round-robin, so every fold has the class balance of the whole file.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, Axis};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::forest::{self, ForestError, ForestParams};
use crate::metrics::{BinaryMetrics, binary_metrics};

/// The result of one cross-validation protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    /// `unshuffled` or `stratified`.
    pub protocol: String,
    /// The shuffle seed, for `stratified`.
    pub seed: Option<u64>,
    pub fold_accuracy: Vec<f64>,
    pub mean_accuracy: f64,
    /// Metrics over all out-of-fold predictions together.
    pub pooled: BinaryMetrics,
}

/// The model kinds compared in `docs/model.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// [`forest::fit`]: the served model.
    Forest,
    /// [`forest::fit_bagged_linfa_trees`]: linfa-trees on bootstrap samples.
    BaggedLinfaTrees,
    /// linfa-logistic on standardised columns.
    Logistic,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    #[error("failed to fit the forest")]
    Forest(#[from] ForestError),
    #[error("failed to fit the logistic regression")]
    Logistic(#[source] linfa_logistic::error::Error),
}

/// `k` folds of `0..n` in order; the first `n % k` folds are one longer
/// (scikit-learn's `KFold` without shuffling).
pub fn folds_in_order(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut folds = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        folds.push((start..start + size).collect());
        start += size;
    }
    folds
}

/// `k` folds with each class shuffled by `seed` and dealt round-robin, the
/// negatives continuing where the positives stopped so fold sizes differ by
/// at most one.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut folds = vec![Vec::new(); k];
    let mut next = 0;
    for class in [true, false] {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        for i in members {
            folds[next % k].push(i);
            next += 1;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    folds
}

/// Fits `kind` on the training rows and returns probabilities for `test`.
pub fn fit_predict(
    kind: ModelKind,
    params: &ForestParams,
    x: &Array2<f64>,
    y: &[bool],
    test: &Array2<f64>,
) -> Result<Vec<f64>, EvaluationError> {
    match kind {
        ModelKind::Forest | ModelKind::BaggedLinfaTrees => {
            let forest = if kind == ModelKind::Forest {
                forest::fit(x, y, params)?
            } else {
                forest::fit_bagged_linfa_trees(x, y, params)?
            };
            Ok(test
                .rows()
                .into_iter()
                .map(|row| forest.probability(&row.to_vec()))
                .collect())
        }
        ModelKind::Logistic => {
            // Standardise with the training rows' statistics; lbfgs converges
            // badly on raw percentages next to 0/1 columns.
            let mean = x
                .mean_axis(Axis(0))
                .unwrap_or_else(|| Array1::zeros(x.ncols()));
            let std = x
                .std_axis(Axis(0), 0.0)
                .mapv(|s| if s > 0.0 { s } else { 1.0 });
            let scale = |m: &Array2<f64>| (m - &mean) / &std;
            let targets: Array1<bool> = y.iter().copied().collect();
            let fitted = LogisticRegression::default()
                .max_iterations(500)
                .fit(&Dataset::new(scale(x), targets))
                .map_err(EvaluationError::Logistic)?;
            let p = fitted.predict_probabilities(&scale(test));
            // linfa calls the larger class positive; flip when that is `false`.
            let placed_is_positive = fitted.labels().pos.class;
            Ok(p.iter()
                .map(|&p| if placed_is_positive { p } else { 1.0 - p })
                .collect())
        }
    }
}

/// A named way of splitting the rows into test folds.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub name: &'static str,
    pub seed: Option<u64>,
    pub folds: Vec<Vec<usize>>,
}

/// The two protocols a model is judged by (see the module docs), `k` folds each.
pub fn protocols(labels: &[bool], k: usize, seed: u64) -> [Protocol; 2] {
    [
        Protocol {
            name: "unshuffled",
            seed: None,
            folds: folds_in_order(labels.len(), k),
        },
        Protocol {
            name: "stratified",
            seed: Some(seed),
            folds: stratified_folds(labels, k, seed),
        },
    ]
}

/// Cross-validates `kind` under `protocol`, calling `progress` with the
/// number of folds done.
pub fn cross_validate(
    kind: ModelKind,
    params: &ForestParams,
    x: &Array2<f64>,
    y: &[bool],
    protocol: &Protocol,
    progress: &mut dyn FnMut(usize),
) -> Result<CvReport, EvaluationError> {
    let folds = &protocol.folds;
    let mut probability = vec![0.0; y.len()];
    let mut fold_accuracy = Vec::with_capacity(folds.len());
    for (f, test) in folds.iter().enumerate() {
        let mut in_test = vec![false; y.len()];
        for &i in test {
            in_test[i] = true;
        }
        let train: Vec<usize> = (0..y.len()).filter(|&i| !in_test[i]).collect();
        let train_y: Vec<bool> = train.iter().map(|&i| y[i]).collect();
        let p = fit_predict(
            kind,
            params,
            &x.select(Axis(0), &train),
            &train_y,
            &x.select(Axis(0), test),
        )?;
        let test_y: Vec<bool> = test.iter().map(|&i| y[i]).collect();
        fold_accuracy.push(binary_metrics(&test_y, &p).accuracy);
        for (&i, p) in test.iter().zip(p) {
            probability[i] = p;
        }
        progress(f + 1);
    }
    Ok(CvReport {
        protocol: protocol.name.to_owned(),
        seed: protocol.seed,
        mean_accuracy: fold_accuracy.iter().sum::<f64>() / fold_accuracy.len() as f64,
        fold_accuracy,
        pooled: binary_metrics(y, &probability),
    })
}

/// The reports as a Markdown table: mean accuracy, per-fold accuracy, the
/// pooled precision, recall, F1 and ROC AUC, and the confusion matrix.
pub fn markdown_table<'a>(reports: impl IntoIterator<Item = &'a CvReport>) -> String {
    let mut table = String::from(
        "| protocol | mean accuracy | per fold | precision | recall | F1 | ROC AUC | TP | FP | TN | FN |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let p = &r.pooled;
        let c = &p.confusion;
        let folds: Vec<String> = r.fold_accuracy.iter().map(|a| format!("{a:.3}")).collect();
        table.push_str(&format!(
            "| {} | {:.4} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {} | {} |\n",
            r.protocol,
            r.mean_accuracy,
            folds.join(" "),
            p.precision,
            p.recall,
            p.f1,
            p.roc_auc,
            c.true_positive,
            c.false_positive,
            c.true_negative,
            c.false_negative
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_in_order_match_kfold() {
        let folds = folds_in_order(11, 5);
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 2, 2, 2, 2]);
        assert_eq!(folds[0], [0, 1, 2]);
        assert_eq!(folds[4], [9, 10]);
    }

    #[test]
    fn stratified_folds_partition_and_balance() {
        let labels: Vec<bool> = (0..30).map(|i| i % 3 == 0).collect();
        let folds = stratified_folds(&labels, 5, 1);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        for fold in &folds {
            assert_eq!(fold.len(), 6);
            assert_eq!(fold.iter().filter(|&&i| labels[i]).count(), 2);
        }
        assert_eq!(folds, stratified_folds(&labels, 5, 1));
        assert_ne!(folds, stratified_folds(&labels, 5, 2));
    }
}
