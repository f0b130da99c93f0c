//! Binary classification metrics: the numbers the gate and the model card use.

use serde::{Deserialize, Serialize};

/// Counts of a binary confusion matrix, positive = placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub true_positive: u64,
    pub false_positive: u64,
    pub true_negative: u64,
    pub false_negative: u64,
}

/// Metrics at the 0.5 threshold, plus the threshold-free ROC AUC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub roc_auc: f64,
    pub confusion: Confusion,
}

/// The decision threshold: a candidate is predicted placed at or above it.
pub const THRESHOLD: f64 = 0.5;

/// Computes the metrics of predicted probabilities against true labels.
///
/// Ratios with a zero denominator (no predicted positives, say) are 0, as
/// scikit-learn reports them with `zero_division=0`. ROC AUC is 0.5 when
/// only one class is present, where it is undefined.
pub fn binary_metrics(truth: &[bool], probability: &[f64]) -> BinaryMetrics {
    debug_assert_eq!(truth.len(), probability.len());
    let mut c = Confusion::default();
    for (&t, &p) in truth.iter().zip(probability) {
        match (t, p >= THRESHOLD) {
            (true, true) => c.true_positive += 1,
            (false, true) => c.false_positive += 1,
            (false, false) => c.true_negative += 1,
            (true, false) => c.false_negative += 1,
        }
    }
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let precision = ratio(c.true_positive, c.true_positive + c.false_positive);
    let recall = ratio(c.true_positive, c.true_positive + c.false_negative);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    BinaryMetrics {
        accuracy: ratio(c.true_positive + c.true_negative, truth.len() as u64),
        precision,
        recall,
        f1,
        roc_auc: roc_auc(truth, probability),
        confusion: c,
    }
}

/// Area under the ROC curve by the Mann-Whitney U statistic, with tied
/// scores given their average rank (equal to the trapezoidal ROC area).
pub fn roc_auc(truth: &[bool], score: &[f64]) -> f64 {
    let positives = truth.iter().filter(|&&t| t).count();
    let negatives = truth.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum_positive = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && score[order[end]] == score[order[start]] {
            end += 1;
        }
        // Ranks start..end (0-based) share the average 1-based rank.
        let average_rank = (start + end + 1) as f64 / 2.0;
        let tied_positives = order[start..end].iter().filter(|&&i| truth[i]).count();
        rank_sum_positive += average_rank * tied_positives as f64;
        start = end;
    }
    let p = positives as f64;
    (rank_sum_positive - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_ratios() {
        let truth = [true, true, true, false, false];
        let proba = [0.9, 0.6, 0.2, 0.7, 0.1];
        let m = binary_metrics(&truth, &proba);
        assert_eq!(
            m.confusion,
            Confusion {
                true_positive: 2,
                false_positive: 1,
                true_negative: 1,
                false_negative: 1
            }
        );
        assert_eq!(m.accuracy, 0.6);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn auc_matches_scikit_learn() {
        // sklearn.metrics.roc_auc_score([1,1,1,0,0], [0.9,0.6,0.2,0.7,0.1]) == 0.6666...
        let auc = roc_auc(
            &[true, true, true, false, false],
            &[0.9, 0.6, 0.2, 0.7, 0.1],
        );
        assert!((auc - 4.0 / 6.0).abs() < 1e-12);
        // Ties count one half: roc_auc_score([1,0], [0.5,0.5]) == 0.5
        assert_eq!(roc_auc(&[true, false], &[0.5, 0.5]), 0.5);
        assert_eq!(roc_auc(&[true, false], &[0.9, 0.1]), 1.0);
        assert_eq!(roc_auc(&[true, true], &[0.9, 0.1]), 0.5);
    }

    #[test]
    fn no_predicted_positives_gives_zero_not_nan() {
        let m = binary_metrics(&[true, false], &[0.1, 0.1]);
        assert_eq!((m.precision, m.recall, m.f1), (0.0, 0.0, 0.0));
    }
}
