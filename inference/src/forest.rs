//! A random forest in linfa's model interface, stored in a flat form we own.
//!
//! linfa-ensemble's random forest cannot be serialized, and it draws
//! columns once per tree; linfa-trees' trees consider every column at every
//! split. On this data both stop near 0.93 accuracy, where the original
//! scikit-learn forest (a fresh draw of √columns at every split) reaches
//! 0.96 (`docs/model.md` has the measurements). So [`fit`] grows its trees
//! itself, CART with Gini impurity and per-split column draws, and
//! implements linfa's `Fit` and `PredictInplace` so it composes with the
//! rest of linfa. [`fit_bagged_linfa_trees`] keeps the linfa-trees variant
//! for the comparison.
//!
//! Each tree is five parallel arrays, nodes in pre-order: small on disk,
//! fast to walk, and easy to check when loading. Leaves hold the fraction of
//! their bootstrap samples that were positive, and the forest's probability
//! is the mean over trees, as in scikit-learn's `predict_proba`.
//!
//! Guarantees: fitting is a pure function of its inputs and the seed (one
//! ChaCha8 stream, no global randomness, no clock, ties broken by position),
//! so the same data and parameters give the same forest bit for bit;
//! [`Forest::validate`] accepts only forests whose every walk ends at a leaf.

use linfa::prelude::*;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2, ArrayBase, Axis, Data, Ix2};
use rand::{Rng, SeedableRng, seq::SliceRandom, seq::index::sample};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How the forest is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    /// Number of trees.
    pub trees: usize,
    /// Maximum depth of each tree (`None`: grow until leaves are pure).
    pub max_depth: Option<usize>,
    /// Columns drawn at random for each split (`None`: the square root of
    /// the number of columns, scikit-learn's `max_features="sqrt"`).
    pub features_per_split: Option<usize>,
    /// Seed of the one random stream used for bootstrap samples and column draws.
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            trees: 512,
            max_depth: Some(16),
            features_per_split: None,
            seed: 42,
        }
    }
}

/// One binary decision tree: node `i` is a leaf when `feature[i] < 0`;
/// otherwise a row goes to `left[i]` when `row[feature[i]] < threshold[i]`
/// and to `right[i]` else (the same rule as linfa-trees).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub feature: Vec<i32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// For leaves, the probability of the positive class; 0 for inner nodes.
    pub value: Vec<f64>,
}

/// The ensemble: the mean of its trees' leaf probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    /// Length of the encoded rows the trees read.
    pub columns: usize,
    pub trees: Vec<Tree>,
}

/// Why a forest could not be trained or was refused at load.
#[derive(Debug, thiserror::Error)]
pub enum ForestError {
    #[error("failed to fit a decision tree")]
    Fit(#[source] linfa::Error),
    #[error("failed to fit a forest: {0}")]
    Params(String),
    #[error("invalid forest: {0}")]
    Invalid(String),
    #[error("failed to fit a forest")]
    Linfa(#[from] linfa::Error),
}

impl Tree {
    /// The leaf probability for one encoded row. `validate` guarantees the
    /// walk ends: children always have larger indices than their parent.
    pub fn probability(&self, row: &[f64]) -> f64 {
        self.value[self.leaf(row)]
    }

    /// The leaf a row reaches.
    fn leaf(&self, row: &[f64]) -> usize {
        let mut node = 0usize;
        while self.feature[node] >= 0 {
            node = if row[self.feature[node] as usize] < self.threshold[node] {
                self.left[node] as usize
            } else {
                self.right[node] as usize
            };
        }
        node
    }

    fn validate(&self, columns: usize) -> Result<(), String> {
        let n = self.feature.len();
        if n == 0 {
            return Err("a tree has no nodes".into());
        }
        if [
            self.threshold.len(),
            self.left.len(),
            self.right.len(),
            self.value.len(),
        ]
        .iter()
        .any(|&len| len != n)
        {
            return Err("a tree's node arrays differ in length".into());
        }
        for i in 0..n {
            let feature = self.feature[i];
            if feature < 0 {
                if !(0.0..=1.0).contains(&self.value[i]) {
                    return Err(format!(
                        "leaf {i} has probability {} outside 0..=1",
                        self.value[i]
                    ));
                }
                continue;
            }
            if feature as usize >= columns {
                return Err(format!("node {i} splits on column {feature} of {columns}"));
            }
            if !self.threshold[i].is_finite() {
                return Err(format!("node {i} has a non-finite threshold"));
            }
            for child in [self.left[i], self.right[i]] {
                let child = child as usize;
                if child <= i || child >= n {
                    return Err(format!(
                        "node {i} points to node {child}, outside {}..{n}",
                        i + 1
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Forest {
    /// Probability of the positive class for one encoded row.
    pub fn probability(&self, row: &[f64]) -> f64 {
        let sum: f64 = self.trees.iter().map(|t| t.probability(row)).sum();
        sum / self.trees.len() as f64
    }

    /// Checks the structure so that [`Forest::probability`] cannot index out of
    /// bounds or loop, whatever the file said.
    pub fn validate(&self) -> Result<(), ForestError> {
        if self.trees.is_empty() {
            return Err(ForestError::Invalid("the forest has no trees".into()));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            tree.validate(self.columns)
                .map_err(|reason| ForestError::Invalid(format!("tree {t}: {reason}")))?;
        }
        Ok(())
    }
}

/// Fits a random forest on encoded rows `x` and labels `y`: each tree is
/// grown on a bootstrap sample by [`grow`], drawing a random subset of
/// columns at every split (what linfa-trees cannot do, and what the
/// original random forest's accuracy depends on: see `docs/model.md`).
pub fn fit(x: &Array2<f64>, y: &[bool], params: &ForestParams) -> Result<Forest, ForestError> {
    let (rows, columns) = check_input(x, y, params)?;
    let per_split = params
        .features_per_split
        .unwrap_or_else(|| (columns as f64).sqrt().floor() as usize)
        .clamp(1, columns);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut trees = Vec::with_capacity(params.trees);
    for _ in 0..params.trees {
        let mut bootstrap: Vec<usize> = (0..rows).map(|_| rng.gen_range(0..rows)).collect();
        let mut tree = Tree::default();
        let mut grower = Grower {
            x,
            y,
            per_split,
            max_depth: params.max_depth,
            rng: &mut rng,
            tree: &mut tree,
        };
        grower.grow(&mut bootstrap, 0);
        trees.push(tree);
    }
    Ok(Forest { columns, trees })
}

/// Fits bagged linfa-trees decision trees, each on a bootstrap sample and a
/// random subset of `features_per_split` columns drawn once per tree (the
/// scheme linfa-ensemble uses). Kept to compare against [`fit`].
pub fn fit_bagged_linfa_trees(
    x: &Array2<f64>,
    y: &[bool],
    params: &ForestParams,
) -> Result<Forest, ForestError> {
    let (rows, columns) = check_input(x, y, params)?;
    let drawn = params
        .features_per_split
        .unwrap_or(columns)
        .clamp(1, columns);
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut trees = Vec::with_capacity(params.trees);
    for _ in 0..params.trees {
        let bootstrap: Vec<usize> = (0..rows).map(|_| rng.gen_range(0..rows)).collect();
        let mut picked = sample(&mut rng, columns, drawn).into_vec();
        picked.sort_unstable();
        trees.push(fit_tree(x, y, &bootstrap, &picked, params.max_depth)?);
    }
    Ok(Forest { columns, trees })
}

fn check_input(
    x: &Array2<f64>,
    y: &[bool],
    params: &ForestParams,
) -> Result<(usize, usize), ForestError> {
    let (rows, columns) = x.dim();
    if rows == 0 || columns == 0 || rows != y.len() {
        return Err(ForestError::Params(format!(
            "{rows} rows of {columns} columns and {} labels; rows and labels must match and be non-zero",
            y.len()
        )));
    }
    if params.trees == 0 || params.features_per_split == Some(0) {
        return Err(ForestError::Params(
            "trees and features_per_split must be at least 1".into(),
        ));
    }
    Ok((rows, columns))
}

/// Grows one CART tree (Gini impurity, best threshold per drawn column) in
/// pre-order into `tree`.
struct Grower<'a> {
    x: &'a Array2<f64>,
    y: &'a [bool],
    per_split: usize,
    max_depth: Option<usize>,
    rng: &'a mut ChaCha8Rng,
    tree: &'a mut Tree,
}

/// A candidate split: rows with `column < threshold` go left.
struct Split {
    column: usize,
    threshold: f64,
    impurity: f64,
}

/// Gini impurity of a node with `positives` of `total`, times `total`
/// (so children's values add up to the weighted impurity of a split).
fn weighted_gini(positives: usize, total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let p = positives as f64 / total as f64;
    total as f64 * 2.0 * p * (1.0 - p)
}

impl Grower<'_> {
    fn grow(&mut self, samples: &mut [usize], depth: usize) -> u32 {
        let index = self.tree.feature.len();
        let positives = samples.iter().filter(|&&i| self.y[i]).count();
        let pure = positives == 0 || positives == samples.len();
        let split = if pure || samples.len() < 2 || self.max_depth.is_some_and(|d| depth >= d) {
            None
        } else {
            self.best_split(samples, positives)
        };
        let Some(split) = split else {
            self.tree.push_leaf(positives as f64 / samples.len() as f64);
            return index as u32;
        };
        self.tree.push_split(split.column, split.threshold);
        let column = split.column;
        // Partition in place: rows below the threshold first.
        let mut boundary = 0;
        for i in 0..samples.len() {
            if self.x[[samples[i], column]] < split.threshold {
                samples.swap(i, boundary);
                boundary += 1;
            }
        }
        let (left, right) = samples.split_at_mut(boundary);
        let l = self.grow(left, depth + 1);
        let r = self.grow(right, depth + 1);
        self.tree.left[index] = l;
        self.tree.right[index] = r;
        index as u32
    }

    /// The best split over randomly drawn columns: at least `per_split`
    /// columns are tried, and more while none of them can split the node
    /// (scikit-learn's rule). `None` when every column is constant here.
    fn best_split(&mut self, samples: &[usize], positives: usize) -> Option<Split> {
        let columns = self.x.ncols();
        let mut order: Vec<usize> = (0..columns).collect();
        order.shuffle(self.rng);
        let mut best: Option<Split> = None;
        let mut sorted: Vec<(f64, bool)> = Vec::with_capacity(samples.len());
        for (tried, &column) in order.iter().enumerate() {
            if tried >= self.per_split && best.is_some() {
                break;
            }
            sorted.clear();
            sorted.extend(samples.iter().map(|&i| (self.x[[i, column]], self.y[i])));
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total = sorted.len();
            let mut left_positives = 0;
            for k in 1..total {
                left_positives += usize::from(sorted[k - 1].1);
                let (below, above) = (sorted[k - 1].0, sorted[k].0);
                if below >= above {
                    continue;
                }
                let impurity = weighted_gini(left_positives, k)
                    + weighted_gini(positives - left_positives, total - k);
                if best.as_ref().is_none_or(|b| impurity < b.impurity) {
                    // The midpoint, unless rounding put it on `below`.
                    let middle = below + (above - below) / 2.0;
                    let threshold = if middle > below { middle } else { above };
                    best = Some(Split {
                        column,
                        threshold,
                        impurity,
                    });
                }
            }
        }
        best
    }
}

impl Tree {
    fn push_leaf(&mut self, value: f64) {
        self.feature.push(-1);
        self.threshold.push(0.0);
        self.left.push(0);
        self.right.push(0);
        self.value.push(value);
    }

    fn push_split(&mut self, column: usize, threshold: f64) {
        self.feature.push(column as i32);
        self.threshold.push(threshold);
        self.left.push(0);
        self.right.push(0);
        self.value.push(0.0);
    }
}

fn fit_tree(
    x: &Array2<f64>,
    y: &[bool],
    bootstrap: &[usize],
    picked: &[usize],
    max_depth: Option<usize>,
) -> Result<Tree, ForestError> {
    let records = x.select(Axis(0), bootstrap).select(Axis(1), picked);
    let targets: Array1<usize> = bootstrap.iter().map(|&i| usize::from(y[i])).collect();
    let dataset = Dataset::new(records, targets);
    let fitted = DecisionTree::params()
        .max_depth(max_depth)
        .fit(&dataset)
        .map_err(ForestError::Fit)?;

    let mut tree = Tree::default();
    flatten(fitted.root_node(), picked, &mut tree);

    // Leaf probabilities from the bootstrap rows that reach each leaf, which
    // also replaces linfa's majority label (its ties are broken in hash order).
    let mut positives = vec![0u32; tree.feature.len()];
    let mut totals = vec![0u32; tree.feature.len()];
    for &i in bootstrap {
        let leaf = tree.leaf(&x.row(i).to_vec());
        totals[leaf] += 1;
        positives[leaf] += u32::from(y[i]);
    }
    for (node, value) in tree.value.iter_mut().enumerate() {
        if tree.feature[node] < 0 && totals[node] > 0 {
            *value = f64::from(positives[node]) / f64::from(totals[node]);
        }
    }
    Ok(tree)
}

/// Appends `node` and its subtree in pre-order, mapping the tree's column
/// indices (into `picked`) back to encoded-row columns. Returns its index.
fn flatten(node: &TreeNode<f64, usize>, picked: &[usize], tree: &mut Tree) -> u32 {
    let index = tree.feature.len();
    let children = node.children();
    let (left, right) = match (children[0], children[1]) {
        (Some(l), Some(r)) if !node.is_leaf() => (l, r),
        _ => {
            // Replaced by the bootstrap fraction; linfa's label is the fallback.
            tree.push_leaf(node.prediction().map_or(0.0, |l| l as f64));
            return index as u32;
        }
    };
    let (column, threshold, _) = node.split();
    tree.push_split(picked[column], threshold);
    let l = flatten(left, picked, tree);
    let r = flatten(right, picked, tree);
    tree.left[index] = l;
    tree.right[index] = r;
    index as u32
}

impl<D: Data<Elem = f64>> Fit<ArrayBase<D, Ix2>, Array1<bool>, ForestError> for ForestParams {
    type Object = Forest;

    fn fit(
        &self,
        dataset: &DatasetBase<ArrayBase<D, Ix2>, Array1<bool>>,
    ) -> Result<Forest, ForestError> {
        let labels: Vec<bool> = dataset.targets().to_vec();
        fit(&dataset.records().to_owned(), &labels, self)
    }
}

impl<D: Data<Elem = f64>> PredictInplace<ArrayBase<D, Ix2>, Array1<f64>> for Forest {
    /// Writes the probability of the positive class for each row.
    fn predict_inplace(&self, x: &ArrayBase<D, Ix2>, y: &mut Array1<f64>) {
        for (row, target) in x.rows().into_iter().zip(y.iter_mut()) {
            *target = self.probability(&row.to_vec());
        }
    }

    fn default_target(&self, x: &ArrayBase<D, Ix2>) -> Array1<f64> {
        Array1::zeros(x.nrows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn separable() -> (Array2<f64>, Vec<bool>) {
        let x = array![
            [1.0, 0.0],
            [2.0, 1.0],
            [3.0, 0.0],
            [7.0, 1.0],
            [8.0, 0.0],
            [9.0, 1.0]
        ];
        (x, vec![false, false, false, true, true, true])
    }

    #[test]
    fn works_through_linfas_traits() {
        let (x, y) = separable();
        let dataset = Dataset::new(x.clone(), Array1::from(y));
        let params = ForestParams {
            trees: 8,
            ..ForestParams::default()
        };
        let forest = params.fit(&dataset).unwrap();
        let p: Array1<f64> = forest.predict(&x);
        assert!(p[0] < 0.5 && p[5] > 0.5);
    }

    #[test]
    fn bagged_linfa_trees_learn_too() {
        let (x, y) = separable();
        let params = ForestParams {
            trees: 8,
            ..ForestParams::default()
        };
        let forest = fit_bagged_linfa_trees(&x, &y, &params).unwrap();
        forest.validate().unwrap();
        assert!(forest.probability(&[1.5, 0.0]) < 0.5 && forest.probability(&[8.5, 0.0]) > 0.5);
    }

    #[test]
    fn learns_a_separable_split() {
        let (x, y) = separable();
        let params = ForestParams {
            trees: 16,
            ..ForestParams::default()
        };
        let forest = fit(&x, &y, &params).unwrap();
        forest.validate().unwrap();
        assert!(forest.probability(&[1.5, 0.0]) < 0.5);
        assert!(forest.probability(&[8.5, 0.0]) > 0.5);
    }

    #[test]
    fn same_seed_same_forest_other_seed_other_forest() {
        let (x, y) = separable();
        let params = ForestParams {
            trees: 8,
            features_per_split: Some(1),
            ..ForestParams::default()
        };
        assert_eq!(fit(&x, &y, &params).unwrap(), fit(&x, &y, &params).unwrap());
        let other = ForestParams {
            seed: 7,
            ..params.clone()
        };
        assert_ne!(fit(&x, &y, &params).unwrap(), fit(&x, &y, &other).unwrap());
    }

    #[test]
    fn validate_refuses_cycles_and_bad_columns() {
        let tree = |feature: Vec<i32>, left: Vec<u32>, right: Vec<u32>| Forest {
            columns: 2,
            trees: vec![Tree {
                threshold: vec![0.5; feature.len()],
                value: vec![0.5; feature.len()],
                feature,
                left,
                right,
            }],
        };
        assert!(
            tree(vec![0, -1, -1], vec![1, 0, 0], vec![2, 0, 0])
                .validate()
                .is_ok()
        );
        // A child pointing back to its parent would loop forever.
        assert!(
            tree(vec![0, 0, -1], vec![1, 0, 0], vec![2, 2, 0])
                .validate()
                .is_err()
        );
        // Column 5 does not exist in 2-column rows.
        assert!(
            tree(vec![5, -1, -1], vec![1, 0, 0], vec![2, 0, 0])
                .validate()
                .is_err()
        );
        assert!(
            Forest {
                columns: 2,
                trees: vec![]
            }
            .validate()
            .is_err()
        );
    }
}
