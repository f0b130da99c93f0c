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
//!   most the candidate's. Every 16 ranks a checkpoint row stores, for
//!   every tree, the AND of its splits up to that rank; a candidate reads
//!   the row below its rank in sequence (ANDed a vector at a time) and
//!   applies the few splits between that row and its rank one by one. The
//!   earlier layout read one entry per tree scattered over the column's
//!   tables: 2,520 cache lines a prediction, which the network stack
//!   evicts between requests (`cargo bench -p ferry-inference --bench
//!   predict` times both a warm and a cold cache).
//! - Columns with a single threshold (the one-hot categories) are taken
//!   eight at a time: the AND for each of the 256 combinations is stored,
//!   so the 16 one-hot columns of the placement model cost two masks per
//!   tree. A column whose rank is 0 has no false split and is skipped.
//! - Leaf values are added in tree order starting from -0.0, as
//!   `Iterator::sum` does, each just after its leaf is found (the chain of
//!   additions then runs alongside the lookups): the probability is the reference walk's
//!   ([`Forest::probability`]) bit for bit, for every row (a test checks
//!   every row of the training and test data, and random forests and rows).
//!
//! The layout is in [`compiled`]; [`Predictor`] serves a model with it.
//!
//! The artifact format does not change: the layout is derived from it at
//! load (about 5 ms, `cargo bench -p ferry-inference --bench predict`), so the committed artifact stays
//! reproducible and older builds read it. A forest that does not fit (a
//! tree with more than 128 leaves, more than 64 columns) is served by the
//! reference walk.

pub mod compiled;

use std::sync::Arc;

use crate::artifact::Model;
use crate::features::Candidate;
pub use compiled::{CompiledForest, LayoutError, MAX_COLUMNS};

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
    use crate::forest::{Forest, Tree};
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
            // Small strides put checkpoints between the few thresholds a
            // random forest has; the default one rarely would.
            for stride in [1, 2, 3, 16] {
                let compiled = CompiledForest::compile_with_stride(&forest, stride).unwrap();
                for row in &rows {
                    let row = &row[..forest.columns];
                    prop_assert_eq!(
                        compiled.probability(row).to_bits(),
                        forest.probability(row).to_bits(),
                        "stride {}, row {:?}", stride, row
                    );
                }
            }
        }
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
