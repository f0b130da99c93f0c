//! The forest laid out for serving: the artifact's trees compiled, at
//! load, into one contiguous array of 8-byte nodes that are walked eight
//! trees at a time without branches.
//!
//! - Each column's split thresholds are collected, sorted and numbered
//!   once. A candidate's row is then encoded once into *ranks* (for each
//!   column, how many of its thresholds are at most the value), and every
//!   split compares two small integers: `value < threshold[k]` holds
//!   exactly when `rank(value) <= k`, so no comparison changes.
//! - Nodes are in pre-order (a left child follows its parent), so a node
//!   needs only its right child: `{right: u32, rank: u16, column: u16}`.
//!   The 512 trees of the placement model fit in about 400 KB instead of
//!   1.4 MB, inside the L2 cache.
//! - A leaf points to itself and never goes left, so eight trees are
//!   stepped together for as many levels as the deepest of them has; the
//!   next node is picked with a conditional move, not a branch the CPU
//!   would mispredict half the time.
//! - Leaf values are added in tree order, starting from -0.0 as
//!   `Iterator::sum` does: the probability is the reference walk's
//!   ([`Forest::probability`]) bit for bit, for every row (a test checks
//!   every row of the training and test data, and random rows).
//!
//! The artifact format does not change: the layout is derived from it at
//! load (about a millisecond), so the committed artifact stays
//! reproducible and older builds read it.

use std::sync::Arc;

use crate::artifact::Model;
use crate::features::Candidate;
use crate::forest::Forest;

/// The most columns the layout takes (ranks live in a fixed array).
pub const MAX_COLUMNS: usize = 64;

/// Trees stepped together.
pub const GROUP: usize = 16;

/// A split (`rank`, `column`, right child `right`; the left child is the
/// next node) or a leaf (`rank` 0, `right` itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Node {
    right: u32,
    rank: u16,
    column: u16,
}

/// Why a forest cannot take this layout (it is then served by the
/// reference walk, which has no limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("column {column} has {count} distinct thresholds; the layout numbers at most 65534")]
    Thresholds { column: usize, count: usize },
    #[error("the forest has {0} columns; the layout takes at most {MAX_COLUMNS}")]
    Columns(usize),
    #[error("the forest has {0} nodes; the layout indexes at most 4294967295")]
    Nodes(usize),
    #[error("tree {0} is deeper than 255 levels")]
    Depth(usize),
}

/// A validated [`Forest`], compiled for serving.
#[derive(Debug, Clone)]
pub struct CompiledForest {
    /// Per column, its split thresholds, sorted and unique.
    thresholds: Vec<Vec<f64>>,
    nodes: Vec<Node>,
    /// Per node: the leaf's probability (0 for splits).
    values: Vec<f64>,
    /// The roots, shallowest trees first, so that trees stepped together
    /// need about as many steps.
    roots: Vec<u32>,
    /// For each root in `roots`, the tree's place in the forest (leaf
    /// values are added in forest order).
    order: Vec<u32>,
    /// Per group of [`GROUP`] roots: the depth of its deepest leaf.
    depths: Vec<u8>,
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
        let total: usize = forest.trees.iter().map(|t| t.feature.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(LayoutError::Nodes(total));
        }
        let mut nodes = Vec::with_capacity(total);
        let mut values = Vec::with_capacity(total);
        let mut roots = Vec::with_capacity(forest.trees.len());
        let mut tree_depths = Vec::with_capacity(forest.trees.len());
        for (t, tree) in forest.trees.iter().enumerate() {
            roots.push(nodes.len() as u32);
            let mut deepest = 0usize;
            // (node in the tree, depth, the new split whose right child it is)
            let mut stack = vec![(0usize, 0usize, None::<usize>)];
            while let Some((old, depth, parent)) = stack.pop() {
                let new = nodes.len();
                if let Some(parent) = parent {
                    nodes[parent] = Node {
                        right: new as u32,
                        ..nodes[parent]
                    };
                }
                match usize::try_from(tree.feature[old]) {
                    Ok(column) => {
                        let rank = thresholds[column]
                            .partition_point(|t| t.total_cmp(&tree.threshold[old]).is_lt())
                            + 1;
                        nodes.push(Node {
                            right: 0,
                            rank: rank as u16,
                            column: column as u16,
                        });
                        values.push(0.0);
                        // Left is popped next, so it lands right after.
                        stack.push((tree.right[old] as usize, depth + 1, Some(new)));
                        stack.push((tree.left[old] as usize, depth + 1, None));
                    }
                    Err(_) => {
                        deepest = deepest.max(depth);
                        nodes.push(Node {
                            right: new as u32,
                            rank: 0,
                            column: 0,
                        });
                        values.push(tree.value[old]);
                    }
                }
            }
            if deepest > usize::from(u8::MAX) {
                return Err(LayoutError::Depth(t));
            }
            tree_depths.push(deepest as u8);
        }
        let mut order: Vec<u32> = (0..roots.len() as u32).collect();
        order.sort_by_key(|&t| tree_depths[t as usize]);
        let depths = order
            .chunks(GROUP)
            .map(|group| {
                group
                    .iter()
                    .map(|&t| tree_depths[t as usize])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let roots = order.iter().map(|&t| roots[t as usize]).collect();
        Ok(CompiledForest {
            thresholds,
            nodes,
            values,
            roots,
            order,
            depths,
        })
    }

    /// The columns an encoded row has.
    pub fn columns(&self) -> usize {
        self.thresholds.len()
    }

    /// For each column, how many of its thresholds are at most the value
    /// (NaN above all, as `NaN < t` is false for every `t`).
    pub fn ranks_into(&self, row: &[f64], ranks: &mut [u16]) {
        for ((rank, value), thresholds) in ranks.iter_mut().zip(row).zip(&self.thresholds) {
            *rank = if value.is_nan() {
                u16::MAX
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
        self.probability_of_ranks(&ranks)
    }

    fn probability_of_ranks(&self, ranks: &[u16; MAX_COLUMNS]) -> f64 {
        const ON_STACK: usize = 1024;
        let trees = self.roots.len();
        if trees <= ON_STACK {
            let mut leaves = [0.0; ON_STACK];
            self.leaf_values(ranks, &mut leaves[..trees]);
            mean(&leaves[..trees])
        } else {
            let mut leaves = vec![0.0; trees];
            self.leaf_values(ranks, &mut leaves);
            mean(&leaves)
        }
    }

    /// Each tree's leaf value, in forest order.
    fn leaf_values(&self, ranks: &[u16; MAX_COLUMNS], leaves: &mut [f64]) {
        for ((group, order), &depth) in self
            .roots
            .chunks(GROUP)
            .zip(self.order.chunks(GROUP))
            .zip(&self.depths)
        {
            // Lanes past a short last group walk its first tree again and
            // are not kept.
            let mut at = [group[0]; GROUP];
            at[..group.len()].copy_from_slice(group);
            for _ in 0..depth {
                for lane in &mut at {
                    let node = self.nodes[*lane as usize];
                    // Columns are below MAX_COLUMNS (compile checks), so
                    // the mask only spares a bounds check.
                    let rank = ranks[usize::from(node.column) % MAX_COLUMNS];
                    *lane = if rank < node.rank {
                        *lane + 1
                    } else {
                        node.right
                    };
                }
            }
            for (lane, &tree) in at.iter().zip(order) {
                leaves[tree as usize] = self.values[*lane as usize];
            }
        }
    }
}

/// The mean as [`Forest::probability`] computes it: a sum in order from
/// -0.0 (as `Iterator::sum`), then one division.
fn mean(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    sum / values.len() as f64
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
    use crate::forest::Tree;
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
    fn nodes_are_eight_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 8);
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
