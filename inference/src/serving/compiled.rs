//! The compiled forest: thresholds numbered per column, and per tree the
//! tables of leaf masks that [`CompiledForest::probability`] ANDs (see
//! the module above for why this gives the reference walk's leaf).
//!
//! Trees with at most 64 leaves (all but a few) keep `u64` masks, the rest
//! `u128`: the masks are most of the memory read per prediction, so the
//! narrow ones halve it.

use std::fmt::Debug;
use std::ops::{BitAndAssign, Not, Shl, Sub};

use crate::forest::{Forest, ForestError, Tree};

/// The most columns the layout takes (ranks live in a fixed array).
pub const MAX_COLUMNS: usize = 64;
/// Single-threshold columns combined into one table (256 combinations:
/// the 16 one-hot columns of the placement model take two tables).
const CHUNK: usize = 8;
/// The most trees of a part whose masks live on the stack while
/// predicting (more take a heap allocation per prediction).
const ON_STACK_TREES: usize = 512;
/// A smaller stack array for a part of few trees.
const FEW_TREES: usize = 32;
/// Ranks between checkpoint rows of a [`RankedColumn`]: more is less
/// memory (the placement model's five numeric columns take 1.6 MB at 16)
/// and more splits applied one by one per prediction (8: 1.46 us, 16:
/// 1.48 us, 32: 1.62 us, 64: 1.60 us a prediction in one run of the
/// predict bench each, measured while a soak shared the machine).
const STRIDE: usize = 16;

/// Why a forest cannot take this layout (it is then served by the
/// reference walk, which has no limits).
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the forest is not valid")]
    Invalid(#[source] ForestError),
    #[error("tree {tree} has {leaves} leaves; the layout takes at most 128")]
    Leaves { tree: usize, leaves: usize },
    #[error("the forest has {0} columns; the layout takes at most {MAX_COLUMNS}")]
    Columns(usize),
    #[error("column {column} has {count} distinct thresholds; the layout numbers at most 65534")]
    Thresholds { column: usize, count: usize },
}

/// A leaf mask: one bit per leaf, the leftmost leaf lowest.
pub trait Bits:
    Copy
    + Debug
    + Eq
    + BitAndAssign
    + Not<Output = Self>
    + Shl<usize, Output = Self>
    + Sub<Output = Self>
{
    const ONES: Self;
    const ONE: Self;
    const WIDTH: usize;
    fn lowest_set(self) -> usize;
    /// The low bits of a `u128` mask (its leaves all fit).
    fn narrow(mask: u128) -> Self;
}

impl Bits for u64 {
    const ONES: Self = u64::MAX;
    const ONE: Self = 1;
    const WIDTH: usize = 64;
    fn lowest_set(self) -> usize {
        self.trailing_zeros() as usize
    }
    fn narrow(mask: u128) -> Self {
        mask as u64
    }
}

impl Bits for u128 {
    const ONES: Self = u128::MAX;
    const ONE: Self = 1;
    const WIDTH: usize = 128;
    fn lowest_set(self) -> usize {
        self.trailing_zeros() as usize
    }
    fn narrow(mask: u128) -> Self {
        mask
    }
}

/// One split of a tree: its column, its rank (false at ranks at or above
/// it), and the mask that rules out its left subtree's leaves.
pub(super) struct Split {
    pub column: usize,
    pub rank: usize,
    pub mask: u128,
}

/// The splits of `tree` and its leaf values left to right.
pub(super) fn splits_of(
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
                        mask: u128::ONES,
                    });
                    entered.push(leaves.len());
                    stack.push(Visit::Right {
                        split: splits.len() - 1,
                        right: tree.right[node] as usize,
                    });
                    stack.push(Visit::Node(tree.left[node] as usize));
                }
                Err(_) => {
                    if leaves.len() == u128::WIDTH {
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
                let span = leaves.len() - from;
                let ones = if span >= u128::WIDTH {
                    u128::ONES
                } else {
                    (1u128 << span) - 1
                };
                splits[split].mask = !(ones << from);
                stack.push(Visit::Node(right));
            }
        }
    }
    Ok((splits, leaves))
}

/// Up to [`CHUNK`] single-threshold columns: for each combination of them
/// being past their threshold, each tree's AND of its splits on them.
#[derive(Debug, Clone)]
struct BinaryChunk<M> {
    columns: Vec<usize>,
    /// `[combination * trees + tree]`.
    masks: Vec<M>,
}

/// A column with several thresholds, over every tree of the part.
///
/// A tree's contribution at rank `r` is the AND of its splits on the
/// column whose rank is at most `r`. Every [`STRIDE`] ranks a checkpoint
/// row stores that AND for every tree; from the checkpoint below `r` only
/// the few splits in between are applied. A row is read in sequence (and
/// ANDed a vector at a time), where one entry per tree scattered over the
/// column's tables missed the cache for every tree.
#[derive(Debug, Clone)]
struct RankedColumn<M> {
    column: usize,
    /// Ranks between checkpoints ([`STRIDE`]; smaller in tests; never 0).
    stride: usize,
    /// `[(k - 1) * trees + tree]`: each tree's AND at rank `k * stride`,
    /// for `k` from 1 (rank 0 has no false split).
    checkpoints: Vec<M>,
    /// The column's splits in rank order: rank, tree (its place in the
    /// part) and mask.
    splits: Vec<(u16, u32, M)>,
    /// `[k]`: where the splits of rank above `k * stride` start.
    starts: Vec<u32>,
}

/// The trees whose masks are `M` wide.
#[derive(Debug, Clone)]
struct Part<M> {
    /// Each tree's place in the forest.
    trees: Vec<u32>,
    /// Per tree: where its leaves start in the forest's `leaf_values`.
    first_leaf: Vec<u32>,
    binary: Vec<BinaryChunk<M>>,
    ranked: Vec<RankedColumn<M>>,
}

/// A validated [`Forest`], compiled for serving.
#[derive(Debug, Clone)]
pub struct CompiledForest {
    /// Per column, its split thresholds, sorted and unique.
    thresholds: Vec<Vec<f64>>,
    narrow: Part<u64>,
    wide: Part<u128>,
    /// Each tree's leaf values, left to right, tree after tree.
    leaf_values: Vec<f64>,
    trees: usize,
}

/// A tree's splits by column: `(rank, mask)`.
type SplitsByColumn = Vec<Vec<(usize, u128)>>;

impl<M: Bits> Part<M> {
    /// The part of `trees` (place, first leaf, splits by column).
    fn build(
        trees: Vec<(u32, u32, SplitsByColumn)>,
        thresholds: &[Vec<f64>],
        stride: usize,
    ) -> Self {
        let count = trees.len();
        let single: Vec<usize> = (0..thresholds.len())
            .filter(|&c| thresholds[c].len() == 1)
            .collect();
        let binary = single
            .chunks(CHUNK)
            .map(|chunk| {
                let combinations = 1usize << chunk.len();
                let mut masks = vec![M::ONES; combinations * count];
                for combination in 0..combinations {
                    for (bit, &column) in chunk.iter().enumerate() {
                        if combination & (1 << bit) == 0 {
                            continue;
                        }
                        for (t, (_, _, by_column)) in trees.iter().enumerate() {
                            for (_, mask) in &by_column[column] {
                                masks[combination * count + t] &= M::narrow(*mask);
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
        for (column, column_thresholds) in thresholds.iter().enumerate() {
            if column_thresholds.len() < 2 {
                continue;
            }
            // Ranks run from 0 to the number of thresholds (< u16::MAX,
            // checked when they were numbered).
            let mut splits: Vec<(u16, u32, M)> = trees
                .iter()
                .enumerate()
                .flat_map(|(t, (_, _, by_column))| {
                    by_column[column]
                        .iter()
                        .map(move |(rank, mask)| (*rank as u16, t as u32, M::narrow(*mask)))
                })
                .collect();
            splits.sort_by_key(|(rank, t, _)| (*rank, *t));
            let rows = column_thresholds.len() / stride;
            let mut running = vec![M::ONES; count];
            let mut checkpoints = Vec::with_capacity(rows * count);
            let mut starts = Vec::with_capacity(rows + 1);
            let mut next = 0;
            starts.push(0);
            for k in 1..=rows {
                while let Some((_, t, mask)) = splits
                    .get(next)
                    .filter(|(rank, _, _)| usize::from(*rank) <= k * stride)
                {
                    running[*t as usize] &= *mask;
                    next += 1;
                }
                checkpoints.extend_from_slice(&running);
                starts.push(next as u32);
            }
            ranked.push(RankedColumn {
                column,
                stride,
                checkpoints,
                splits,
                starts,
            });
        }
        Part {
            trees: trees.iter().map(|(place, _, _)| *place).collect(),
            first_leaf: trees.iter().map(|(_, first, _)| *first).collect(),
            binary,
            ranked,
        }
    }

    /// Calls `with` with each of the part's trees' leaf mask for `ranks`,
    /// in the part's order. The masks live on the stack, sized to the part
    /// (the wide part has a few trees: a 512-entry `u128` array to fill
    /// cost more than they did).
    fn with_masks<R>(&self, ranks: &[u16; MAX_COLUMNS], with: impl FnOnce(&[M]) -> R) -> R {
        let count = self.trees.len();
        if count <= FEW_TREES {
            let mut masks = [M::ONES; FEW_TREES];
            self.fill_masks(ranks, &mut masks[..count]);
            with(&masks[..count])
        } else if count <= ON_STACK_TREES {
            let mut masks = [M::ONES; ON_STACK_TREES];
            self.fill_masks(ranks, &mut masks[..count]);
            with(&masks[..count])
        } else {
            let mut masks = vec![M::ONES; count];
            self.fill_masks(ranks, &mut masks);
            with(&masks)
        }
    }

    /// ANDs into `masks` (all ones on entry, one per tree of the part)
    /// the masks of the splits that are false for `ranks`.
    fn fill_masks(&self, ranks: &[u16; MAX_COLUMNS], masks: &mut [M]) {
        let count = masks.len();
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
            let table = chunk
                .masks
                .get(combination * count..(combination + 1) * count)
                .unwrap_or_default();
            for (mask, and) in masks.iter_mut().zip(table) {
                *mask &= *and;
            }
        }
        for column in &self.ranked {
            let rank = usize::from(ranks[column.column % MAX_COLUMNS]);
            let row = rank / column.stride;
            if row > 0 {
                let checkpoint = column
                    .checkpoints
                    .get((row - 1) * count..row * count)
                    .unwrap_or_default();
                for (mask, and) in masks.iter_mut().zip(checkpoint) {
                    *mask &= *and;
                }
            }
            let start = column.starts.get(row).map_or(usize::MAX, |s| *s as usize);
            let splits = column.splits.get(start..).unwrap_or_default();
            for (split_rank, t, and) in splits {
                if usize::from(*split_rank) > rank {
                    break;
                }
                if let Some(mask) = masks.get_mut(*t as usize) {
                    *mask &= *and;
                }
            }
        }
    }
}

impl CompiledForest {
    /// Compiles `forest` after checking it ([`Forest::validate`]: children
    /// after their parent, columns in range), so no walk below can index
    /// out of bounds whatever the artifact held.
    pub fn compile(forest: &Forest) -> Result<Self, LayoutError> {
        Self::compile_with_stride(forest, STRIDE)
    }

    /// [`CompiledForest::compile`] with checkpoints every `stride` ranks
    /// (at least 1).
    pub(super) fn compile_with_stride(forest: &Forest, stride: usize) -> Result<Self, LayoutError> {
        let stride = stride.max(1);
        forest.validate().map_err(LayoutError::Invalid)?;
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
        let mut leaf_values = Vec::new();
        let mut narrow = Vec::new();
        let mut wide = Vec::new();
        for (t, tree) in forest.trees.iter().enumerate() {
            let (splits, leaves) = splits_of(tree, &thresholds, t)?;
            let first = leaf_values.len() as u32;
            let fits = leaves.len() <= u64::WIDTH;
            leaf_values.extend(leaves);
            let mut by_column: SplitsByColumn = vec![Vec::new(); columns];
            for split in splits {
                by_column[split.column].push((split.rank, split.mask));
            }
            // In rank order: the order prefixes of false splits come in.
            for column_splits in &mut by_column {
                column_splits.sort_by_key(|(rank, _)| *rank);
            }
            let entry = (t as u32, first, by_column);
            if fits {
                narrow.push(entry);
            } else {
                wide.push(entry);
            }
        }
        Ok(CompiledForest {
            narrow: Part::build(narrow, &thresholds, stride),
            wide: Part::build(wide, &thresholds, stride),
            thresholds,
            leaf_values,
            trees: forest.trees.len(),
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
        let sum = self.wide.with_masks(&ranks, |wide| {
            self.narrow
                .with_masks(&ranks, |narrow| self.sum_in_tree_order(narrow, wide))
        });
        sum / self.trees as f64
    }

    /// The trees' leaf values summed as [`Forest::probability`] does: in
    /// tree order from -0.0 (as `Iterator::sum`), the few wide trees merged
    /// in at their places. The additions are one dependent chain; taken
    /// here, with each leaf found just before it is added, the chain runs
    /// alongside the lookups instead of after them.
    fn sum_in_tree_order(&self, narrow: &[u64], wide: &[u128]) -> f64 {
        let value = |first: u32, lowest: usize| {
            self.leaf_values
                .get(first as usize + lowest)
                .copied()
                .unwrap_or(0.0)
        };
        let mut wide_trees = self
            .wide
            .trees
            .iter()
            .zip(&self.wide.first_leaf)
            .zip(wide)
            .peekable();
        let mut sum = -0.0;
        for ((&place, &first), mask) in self
            .narrow
            .trees
            .iter()
            .zip(&self.narrow.first_leaf)
            .zip(narrow)
        {
            while let Some(((_, &first), mask)) =
                wide_trees.next_if(|&((&wide_place, _), _)| wide_place < place)
            {
                sum += value(first, mask.lowest_set());
            }
            sum += value(first, mask.lowest_set());
        }
        for ((_, &first), mask) in wide_trees {
            sum += value(first, mask.lowest_set());
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A right-leaning chain with `leaves` leaves.
    pub(crate) fn chain(leaves: u32) -> Tree {
        let mut tree = Tree::default();
        for i in 0..leaves - 1 {
            tree.feature.push(0);
            tree.threshold.push(f64::from(i));
            tree.left.push(2 * i + 1);
            tree.right.push(2 * i + 2);
            tree.value.push(0.0);
            tree.feature.push(-1);
            tree.threshold.push(0.0);
            tree.left.push(0);
            tree.right.push(0);
            tree.value.push(f64::from(i) / f64::from(leaves));
        }
        tree.feature.push(-1);
        tree.threshold.push(0.0);
        tree.left.push(0);
        tree.right.push(0);
        tree.value.push(1.0);
        tree
    }

    #[test]
    fn wide_trees_are_exact_and_too_wide_ones_refused() {
        let forest = Forest {
            columns: 1,
            trees: vec![chain(3), chain(100), chain(64), chain(65), chain(128)],
        };
        assert!(forest.validate().is_ok());
        let compiled = CompiledForest::compile(&forest).unwrap();
        assert_eq!(compiled.wide.trees, [1, 3, 4]);
        for x in [-1.0, 0.0, 2.5, 63.0, 64.0, 99.5, 126.5, 127.0, f64::NAN] {
            assert_eq!(
                compiled.probability(&[x]).to_bits(),
                forest.probability(&[x]).to_bits(),
                "{x}"
            );
        }
        let too_wide = Forest {
            columns: 1,
            trees: vec![chain(129)],
        };
        assert!(matches!(
            CompiledForest::compile(&too_wide),
            Err(LayoutError::Leaves { leaves: 129, .. })
        ));
    }
}
