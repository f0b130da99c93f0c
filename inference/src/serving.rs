//! The forest laid out for serving: the artifact's trees compiled at load
//! into bit vectors that are combined column by column (QuickScorer,
//! Lucchese et al., SIGIR 2015), instead of walked node by node.
//!
//! - Each column's split thresholds are collected, sorted and numbered
//!   once; a candidate's row is encoded once into *ranks* (for each
//!   column, how many of its thresholds are at most the value). A split
//!   `value < threshold[k]` is false exactly when `rank >= k + 1`, so no
//!   comparison changes.
//! - Every tree's leaves are numbered left to right (at most 128: a
//!   `u128`). A split that is false (the walk goes right) rules out the
//!   leaves of its left subtree; the leaf a walk reaches is the leftmost
//!   one that no false split rules out. So a tree's leaf is the lowest bit
//!   of the AND of the masks of its false splits, whatever order they are
//!   found in.
//! - For a column, the false splits of a tree are those whose rank is at
//!   most the candidate's: a prefix of the tree's splits on that column in
//!   rank order. A table gives that prefix's length for every rank and
//!   tree, and the AND of each prefix is stored, so a column costs one
//!   byte and one mask per tree, with no branch that depends on the data.
//! - Columns with a single threshold (the one-hot categories) are taken
//!   four at a time: the AND for each of the 16 combinations is stored, so
//!   the 16 one-hot columns of the placement model cost four masks per
//!   tree. A column whose rank is 0 has no false split and is skipped.
//! - Leaf values are added in tree order starting from -0.0, as
//!   `Iterator::sum` does: the probability is the reference walk's
//!   ([`Forest::probability`]) bit for bit, for every row (a test checks
//!   every row of the training and test data, and random forests and rows).
//!
//! The artifact format does not change: the layout is derived from it at
//! load (a few milliseconds), so the committed artifact stays
//! reproducible and older builds read it. A forest that does not fit (a
//! tree with more than 128 leaves, more than 64 columns) is served by the
//! reference walk.

use std::sync::Arc;

use crate::artifact::Model;
use crate::features::Candidate;
use crate::forest::{Forest, Tree};

/// The most columns the layout takes (ranks live in a fixed array).
pub const MAX_COLUMNS: usize = 64;
/// Single-threshold columns combined into one table.
const CHUNK: usize = 4;
/// The most trees whose masks are kept on the stack while predicting.
const ON_STACK_TREES: usize = 1024;

/// One bit per leaf of a tree, leftmost leaf lowest.
type Mask = u128;

/// Why a forest cannot take this layout (it is then served by the
/// reference walk, which has no limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("tree {tree} has {leaves} leaves; the layout takes at most 128")]
    Leaves { tree: usize, leaves: usize },
    #[error("the forest has {0} columns; the layout takes at most {MAX_COLUMNS}")]
    Columns(usize),
    #[error("column {column} has {count} distinct thresholds; the layout numbers at most 65534")]
    Thresholds { column: usize, count: usize },
    #[error("tree {tree} splits {count} times on column {column}; the layout takes at most 255")]
    Splits {
        tree: usize,
        column: usize,
        count: usize,
    },
}

/// Up to [`CHUNK`] single-threshold columns: for each combination of them
/// being past their threshold, each tree's AND of the masks of its splits
/// on those columns.
#[derive(Debug, Clone)]
struct BinaryChunk {
    columns: Vec<usize>,
    /// `[combination * trees + tree]`.
    masks: Vec<Mask>,
}

/// A column with several thresholds.
#[derive(Debug, Clone)]
struct RankedColumn {
    column: usize,
    /// The trees that split on it.
    trees: Vec<u32>,
    /// Per listed tree: where its prefix ANDs start in `masks`.
    first: Vec<u32>,
    /// `[rank * trees.len() + i]`: how many of listed tree `i`'s splits on
    /// this column are false at `rank`.
    false_splits: Vec<u8>,
    /// Per listed tree, the AND of its first 0, 1, 2, ... false splits.
    masks: Vec<Mask>,
}

/// A validated [`Forest`], compiled for serving.
#[derive(Debug, Clone)]
pub struct CompiledForest {
    /// Per column, its split thresholds, sorted and unique.
    thresholds: Vec<Vec<f64>>,
    binary: Vec<BinaryChunk>,
    ranked: Vec<RankedColumn>,
    /// Per tree: where its leaves' values start in `leaf_values`.
    first_leaf: Vec<u32>,
    /// Each tree's leaf values, left to right.
    leaf_values: Vec<f64>,
}

/// One split of a tree: its column, its rank (false at ranks at or above
/// it), and the mask that rules out its left subtree's leaves.
struct Split {
    column: usize,
    rank: usize,
    mask: Mask,
}

/// The splits of `tree` and its leaf values left to right.
fn splits_of(
    tree: &Tree,
    thresholds: &[Vec<f64>],
    index: usize,
) -> Result<(Vec<Split>, Vec<f64>), LayoutError> {
    // Depth-first, left before right; a split's left subtree covers the
    // leaves numbered from when it is entered to when its right one is.
    enum Visit {
        Node(usize),
        Right { split: usize, right: usize },
    }
    let mut splits: Vec<Split> = Vec::new();
    let mut leaves: Vec<f64> = Vec::new();
    let mut entered: Vec<usize> = Vec::new();
    let mut stack = vec![Visit::Node(0)];
    while let Some(visit) = stack.pop() {
        match visit {
            Visit::Node(node) => match usize::try_from(tree.feature[node]) {
                Ok(column) => {
                    let threshold = tree.threshold[node];
                    let rank =
                        thresholds[column].partition_point(|t| t.total_cmp(&threshold).is_lt()) + 1;
                    splits.push(Split {
                        column,
                        rank,
                        mask: Mask::MAX,
                    });
                    entered.push(leaves.len());
                    stack.push(Visit::Right {
                        split: splits.len() - 1,
                        right: tree.right[node] as usize,
                    });
                    stack.push(Visit::Node(tree.left[node] as usize));
                }
                Err(_) => {
                    if leaves.len() == Mask::BITS as usize {
                        return Err(LayoutError::Leaves {
                            tree: index,
                            leaves: tree.feature.iter().filter(|f| **f < 0).count(),
                        });
                    }
                    leaves.push(tree.value[node]);
                }
            },
            Visit::Right { split, right } => {
                let from = entered[split];
                let to = leaves.len();
                // Leaves from..to are the left subtree's.
                let span = to - from;
                let ones = if span >= Mask::BITS as usize {
                    Mask::MAX
                } else {
                    ((1 as Mask) << span) - 1
                };
                splits[split].mask = !(ones << from);
                stack.push(Visit::Node(right));
            }
        }
    }
    Ok((splits, leaves))
}

impl CompiledForest {
    /// Compiles `forest`, which must have passed [`Forest::validate`]
    /// (children after their parent, columns in range).
    pub fn compile(forest: &Forest) -> Result<Self, LayoutError> {
        let columns = forest.columns;
        if columns > MAX_COLUMNS {
            return Err(LayoutError::Columns(columns));
        }
        let mut thresholds: Vec<Vec<f64>> = vec![Vec::new(); columns];
        for tree in &forest.trees {
            for (feature, threshold) in tree.feature.iter().zip(&tree.threshold) {
                if let Some(list) = usize::try_from(*feature)
                    .ok()
                    .and_then(|f| thresholds.get_mut(f))
                {
                    list.push(*threshold);
                }
            }
        }
        for (column, list) in thresholds.iter_mut().enumerate() {
            list.sort_by(f64::total_cmp);
            list.dedup_by(|a, b| a.total_cmp(b).is_eq());
            if list.len() >= usize::from(u16::MAX) {
                return Err(LayoutError::Thresholds {
                    column,
                    count: list.len(),
                });
            }
        }
        let trees = forest.trees.len();
        let mut first_leaf = Vec::with_capacity(trees);
        let mut leaf_values = Vec::new();
        // Per column, per tree: its splits' (rank, mask).
        let mut by_column: Vec<Vec<Vec<(usize, Mask)>>> = vec![vec![Vec::new(); trees]; columns];
        for (t, tree) in forest.trees.iter().enumerate() {
            let (splits, leaves) = splits_of(tree, &thresholds, t)?;
            first_leaf.push(leaf_values.len() as u32);
            leaf_values.extend(leaves);
            for split in splits {
                by_column[split.column][t].push((split.rank, split.mask));
            }
        }
        let single: Vec<usize> = (0..columns).filter(|&c| thresholds[c].len() == 1).collect();
        let binary = single
            .chunks(CHUNK)
            .map(|chunk| {
                let combinations = 1usize << chunk.len();
                let mut masks = vec![Mask::MAX; combinations * trees];
                for combination in 0..combinations {
                    for (bit, &column) in chunk.iter().enumerate() {
                        if combination & (1 << bit) == 0 {
                            continue;
                        }
                        for (t, splits) in by_column[column].iter().enumerate() {
                            for (_, mask) in splits {
                                masks[combination * trees + t] &= mask;
                            }
                        }
                    }
                }
                BinaryChunk {
                    columns: chunk.to_vec(),
                    masks,
                }
            })
            .collect();
        let mut ranked = Vec::new();
        for (column, per_tree) in by_column.iter_mut().enumerate() {
            if thresholds[column].len() < 2 {
                continue;
            }
            let mut listed = Vec::new();
            let mut first = Vec::new();
            let mut masks = Vec::new();
            let mut sorted_ranks: Vec<Vec<usize>> = Vec::new();
            for (t, splits) in per_tree.iter_mut().enumerate() {
                if splits.is_empty() {
                    continue;
                }
                if splits.len() > usize::from(u8::MAX) {
                    return Err(LayoutError::Splits {
                        tree: t,
                        column,
                        count: splits.len(),
                    });
                }
                splits.sort_by_key(|(rank, _)| *rank);
                listed.push(t as u32);
                first.push(masks.len() as u32);
                let mut and = Mask::MAX;
                masks.push(and);
                for (_, mask) in splits.iter() {
                    and &= mask;
                    masks.push(and);
                }
                sorted_ranks.push(splits.iter().map(|(rank, _)| *rank).collect());
            }
            let ranks = thresholds[column].len() + 1;
            let mut false_splits = vec![0u8; ranks * listed.len()];
            for (i, tree_ranks) in sorted_ranks.iter().enumerate() {
                let mut count = 0usize;
                for rank in 0..ranks {
                    while count < tree_ranks.len() && tree_ranks[count] <= rank {
                        count += 1;
                    }
                    false_splits[rank * listed.len() + i] = count as u8;
                }
            }
            ranked.push(RankedColumn {
                column,
                trees: listed,
                first,
                false_splits,
                masks,
            });
        }
        Ok(CompiledForest {
            thresholds,
            binary,
            ranked,
            first_leaf,
            leaf_values,
        })
    }

    /// The columns an encoded row has.
    pub fn columns(&self) -> usize {
        self.thresholds.len()
    }

    /// For each column, how many of its thresholds are at most the value
    /// (all of them for NaN, as `NaN < t` is false for every `t`).
    pub fn ranks_into(&self, row: &[f64], ranks: &mut [u16]) {
        for ((rank, value), thresholds) in ranks.iter_mut().zip(row).zip(&self.thresholds) {
            *rank = if value.is_nan() {
                thresholds.len() as u16
            } else {
                thresholds.partition_point(|t| t <= value) as u16
            };
        }
    }

    /// The forest's probability for an encoded row (`columns()` long):
    /// the same value as [`Forest::probability`], bit for bit.
    pub fn probability(&self, row: &[f64]) -> f64 {
        let mut ranks = [0u16; MAX_COLUMNS];
        self.ranks_into(row, &mut ranks);
        let trees = self.first_leaf.len();
        if trees <= ON_STACK_TREES {
            let mut masks = [Mask::MAX; ON_STACK_TREES];
            self.exit_leaves(&ranks, &mut masks[..trees]);
            self.mean_of_leaves(&masks[..trees])
        } else {
            let mut masks = vec![Mask::MAX; trees];
            self.exit_leaves(&ranks, &mut masks);
            self.mean_of_leaves(&masks)
        }
    }

    /// ANDs into `masks` (all ones, one per tree) the masks of every false
    /// split.
    fn exit_leaves(&self, ranks: &[u16; MAX_COLUMNS], masks: &mut [Mask]) {
        let trees = masks.len();
        for chunk in &self.binary {
            let combination = chunk
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| ranks[**c % MAX_COLUMNS] > 0)
                .fold(0usize, |acc, (bit, _)| acc | (1 << bit));
            if combination == 0 {
                continue;
            }
            let table = &chunk.masks[combination * trees..(combination + 1) * trees];
            for (mask, and) in masks.iter_mut().zip(table) {
                *mask &= and;
            }
        }
        for column in &self.ranked {
            let rank = usize::from(ranks[column.column % MAX_COLUMNS]);
            if rank == 0 {
                continue;
            }
            let listed = column.trees.len();
            let row = column
                .false_splits
                .get(rank * listed..(rank + 1) * listed)
                .unwrap_or_default();
            for ((&tree, &first), &count) in column.trees.iter().zip(&column.first).zip(row) {
                let and = column
                    .masks
                    .get(first as usize + usize::from(count))
                    .copied()
                    .unwrap_or(Mask::MAX);
                if let Some(mask) = masks.get_mut(tree as usize) {
                    *mask &= and;
                }
            }
        }
    }

    /// The mean of each tree's leaf (the lowest bit left), in tree order,
    /// summed from -0.0 as [`Forest::probability`] does.
    fn mean_of_leaves(&self, masks: &[Mask]) -> f64 {
        let mut sum = -0.0;
        for (mask, &first) in masks.iter().zip(&self.first_leaf) {
            let leaf = first as usize + mask.trailing_zeros() as usize;
            sum += self.leaf_values.get(leaf).copied().unwrap_or(0.0);
        }
        sum / masks.len() as f64
    }
}

/// Predicts with a model's compiled forest, or with the reference walk
/// when the forest does not fit the layout.
#[derive(Debug, Clone)]
pub struct Predictor {
    model: Arc<Model>,
    compiled: Option<CompiledForest>,
}

impl Predictor {
    /// `model` comes from a verified artifact (its forest validated).
    pub fn new(model: Arc<Model>) -> Self {
        let compiled = match CompiledForest::compile(&model.forest) {
            Ok(c) if c.columns() == model.schema.encoded_len() => Some(c),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "serving with the reference tree walk");
                None
            }
        };
        Predictor { model, compiled }
    }

    /// Whether the compiled layout is in use.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Probability that `candidate` is placed: [`Model::predict`]'s value.
    pub fn predict(&self, candidate: &Candidate) -> f64 {
        const ON_STACK: usize = 64;
        let Some(compiled) = &self.compiled else {
            return self.model.predict(candidate);
        };
        let columns = compiled.columns();
        if columns <= ON_STACK {
            let mut row = [0.0; ON_STACK];
            self.model
                .schema
                .encode_into(candidate, &mut row[..columns]);
            compiled.probability(&row[..columns])
        } else {
            compiled.probability(&self.model.schema.encode(candidate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A forest of `trees` random valid trees over `columns` columns.
    fn arbitrary_forest() -> impl Strategy<Value = Forest> {
        (1usize..6, 1usize..20).prop_flat_map(|(columns, trees)| {
            proptest::collection::vec(arbitrary_tree(columns), trees)
                .prop_map(move |trees| Forest { columns, trees })
        })
    }

    /// A random tree in pre-order, built from a list of split choices.
    fn arbitrary_tree(columns: usize) -> impl Strategy<Value = Tree> {
        proptest::collection::vec(
            (
                0..columns,
                prop_oneof![Just(0.5), -3.0f64..3.0, Just(0.0), Just(-0.0)],
                0.0f64..=1.0,
                any::<bool>(),
            ),
            1..40,
        )
        .prop_map(|choices| {
            let mut tree = Tree::default();
            let mut next = choices.into_iter();
            build(&mut tree, &mut next, 0);
            tree
        })
    }

    fn build(
        tree: &mut Tree,
        choices: &mut impl Iterator<Item = (usize, f64, f64, bool)>,
        depth: usize,
    ) -> u32 {
        let index = tree.feature.len();
        let (column, threshold, value, split) = choices.next().unwrap_or((0, 0.0, 0.5, false));
        if !split || depth > 10 {
            tree.feature.push(-1);
            tree.threshold.push(0.0);
            tree.left.push(0);
            tree.right.push(0);
            tree.value.push(value);
            return index as u32;
        }
        tree.feature.push(column as i32);
        tree.threshold.push(threshold);
        tree.left.push(0);
        tree.right.push(0);
        tree.value.push(0.0);
        let left = build(tree, choices, depth + 1);
        let right = build(tree, choices, depth + 1);
        tree.left[index] = left;
        tree.right[index] = right;
        index as u32
    }

    proptest! {
        #[test]
        fn the_compiled_forest_answers_as_the_reference_walk(
            forest in arbitrary_forest(),
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![-4.0f64..4.0, Just(0.5), Just(0.0), Just(-0.0), Just(f64::NAN), Just(f64::INFINITY)],
                    6,
                ),
                1..8,
            ),
        ) {
            prop_assume!(forest.validate().is_ok());
            let compiled = CompiledForest::compile(&forest).unwrap();
            for row in rows {
                let row = &row[..forest.columns];
                prop_assert_eq!(
                    compiled.probability(row).to_bits(),
                    forest.probability(row).to_bits(),
                    "row {:?}", row
                );
            }
        }
    }

    #[test]
    fn a_split_rules_out_its_left_subtree() {
        // x0 < 1 ? (x1 < 2 ? L0 : L1) : L2
        let tree = Tree {
            feature: vec![0, 1, -1, -1, -1],
            threshold: vec![1.0, 2.0, 0.0, 0.0, 0.0],
            left: vec![1, 2, 0, 0, 0],
            right: vec![4, 3, 0, 0, 0],
            value: vec![0.0, 0.0, 0.1, 0.2, 0.3],
        };
        let thresholds = vec![vec![1.0], vec![2.0]];
        let (splits, leaves) = splits_of(&tree, &thresholds, 0).unwrap();
        assert_eq!(leaves, [0.1, 0.2, 0.3]);
        assert_eq!(splits[0].mask, !0b011);
        assert_eq!(splits[1].mask, !0b001);
        assert_eq!((splits[0].rank, splits[1].rank), (1, 1));
    }

    #[test]
    fn a_tree_with_too_many_leaves_is_refused() {
        let mut tree = Tree::default();
        // A right-leaning chain with 129 leaves.
        for i in 0..128u32 {
            tree.feature.push(0);
            tree.threshold.push(f64::from(i));
            tree.left.push(2 * i + 1);
            tree.right.push(2 * i + 2);
            tree.value.push(0.0);
            tree.feature.push(-1);
            tree.threshold.push(0.0);
            tree.left.push(0);
            tree.right.push(0);
            tree.value.push(0.5);
        }
        tree.feature.push(-1);
        tree.threshold.push(0.0);
        tree.left.push(0);
        tree.right.push(0);
        tree.value.push(0.5);
        let forest = Forest {
            columns: 1,
            trees: vec![tree],
        };
        assert!(forest.validate().is_ok());
        assert!(matches!(
            CompiledForest::compile(&forest),
            Err(LayoutError::Leaves { leaves: 129, .. })
        ));
    }

    #[test]
    fn a_leaf_only_forest_and_negative_zero_leaves_are_exact() {
        let leaf = |v: f64| Tree {
            feature: vec![-1],
            threshold: vec![0.0],
            left: vec![0],
            right: vec![0],
            value: vec![v],
        };
        let forest = Forest {
            columns: 1,
            trees: vec![leaf(-0.0); 9],
        };
        let compiled = CompiledForest::compile(&forest).unwrap();
        assert_eq!(
            compiled.probability(&[1.0]).to_bits(),
            forest.probability(&[1.0]).to_bits()
        );
    }
}
