//! One regression tree: nodes in an array, the root at index 0, every child
//! after its parent.

use crate::error::LearningError;

use super::tree_error;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeKind {
    /// An internal node: rows with `x[feature] <= threshold` (equivalently,
    /// bin `<= bin`) go to `left`, the others to `right`.
    Split {
        /// Encoded feature index.
        feature: usize,
        /// The bin of the split: `threshold` is edge `bin` of the feature.
        bin: usize,
        /// The split threshold.
        threshold: f64,
        /// Index of the left child.
        left: usize,
        /// Index of the right child.
        right: usize,
    },
    /// A leaf; its value is added to the margin.
    Leaf,
    /// A node of the growing tree awaiting its split decision.
    Pending,
}

/// A node: its kind, its value and its cover.
///
/// `value` is the leaf value `-learning_rate * G / (H + λ)` of the node's
/// rows (already scaled by the learning rate; for internal and pending nodes,
/// the value it would have as a leaf), `cover` the hessian sum `H` of its rows
/// (the weights of [`super::tree_shap`]). A pending root has value and cover 0
/// until it is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    kind: NodeKind,
    value: f64,
    cover: f64,
}

impl Node {
    /// An internal node.
    pub fn split(
        feature: usize,
        bin: usize,
        threshold: f64,
        left: usize,
        right: usize,
        value: f64,
        cover: f64,
    ) -> Node {
        Node {
            kind: NodeKind::Split {
                feature,
                bin,
                threshold,
                left,
                right,
            },
            value,
            cover,
        }
    }

    /// A leaf.
    pub fn leaf(value: f64, cover: f64) -> Node {
        Node {
            kind: NodeKind::Leaf,
            value,
            cover,
        }
    }

    /// A pending node.
    pub fn pending(value: f64, cover: f64) -> Node {
        Node {
            kind: NodeKind::Pending,
            value,
            cover,
        }
    }

    /// The node's kind.
    pub fn kind(&self) -> &NodeKind {
        &self.kind
    }

    /// The split feature of an internal node.
    pub fn feature(&self) -> Option<usize> {
        match self.kind {
            NodeKind::Split { feature, .. } => Some(feature),
            _ => None,
        }
    }

    /// The split bin of an internal node.
    pub fn bin(&self) -> Option<usize> {
        match self.kind {
            NodeKind::Split { bin, .. } => Some(bin),
            _ => None,
        }
    }

    /// The threshold of an internal node.
    pub fn threshold(&self) -> Option<f64> {
        match self.kind {
            NodeKind::Split { threshold, .. } => Some(threshold),
            _ => None,
        }
    }

    /// All of an internal node's split: `(feature, bin, threshold, left,
    /// right)`.
    pub fn split_parts(&self) -> Option<(usize, usize, f64, usize, usize)> {
        match self.kind {
            NodeKind::Split {
                feature,
                bin,
                threshold,
                left,
                right,
            } => Some((feature, bin, threshold, left, right)),
            _ => None,
        }
    }

    /// The left and right children of an internal node.
    pub fn children(&self) -> Option<(usize, usize)> {
        match self.kind {
            NodeKind::Split { left, right, .. } => Some((left, right)),
            _ => None,
        }
    }

    /// The leaf value (see the type's doc).
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The hessian sum of the node's rows.
    pub fn cover(&self) -> f64 {
        self.cover
    }

    /// Whether the node is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.kind == NodeKind::Leaf
    }

    /// Whether the node awaits its split decision.
    pub fn is_pending(&self) -> bool {
        self.kind == NodeKind::Pending
    }
}

/// A tree: a non-empty array of [`Node`]s, the root first, each child after
/// its parent, every node but the root the child of exactly one node.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    depths: Vec<u32>,
    compact: Vec<CompactNode>,
}

impl PartialEq for Tree {
    fn eq(&self, other: &Tree) -> bool {
        self.nodes == other.nodes
    }
}

/// A node laid out for traversal (32 bytes): `feature == END` for leaves and
/// pending nodes.
#[derive(Debug, Clone, Copy)]
struct CompactNode {
    feature: u32,
    bin: u32,
    left: u32,
    right: u32,
    threshold: f64,
    value: f64,
}

const END: u32 = u32::MAX;

impl Tree {
    /// A tree from its nodes, checked: non-empty; children indices in range,
    /// after their parent and distinct; every node but the root the child of
    /// exactly one node; values, thresholds and covers finite, covers `>= 0`,
    /// and the children of a split with positive covers. (Feature, bin and
    /// threshold are checked against the binning by [`super::TreeModel`].)
    pub fn new(nodes: Vec<Node>) -> Result<Tree, LearningError> {
        if nodes.is_empty() {
            return Err(tree_error("a tree has no nodes".to_string()));
        }
        let mut depths: Vec<Option<u32>> = vec![None; nodes.len()];
        depths[0] = Some(0);
        for (i, node) in nodes.iter().enumerate() {
            if !node.value.is_finite() {
                return Err(tree_error(format!(
                    "node {i}: value is not finite: {}",
                    node.value
                )));
            }
            if !(node.cover >= 0.0 && node.cover.is_finite()) {
                return Err(tree_error(format!(
                    "node {i}: cover must be non-negative and finite, got {}",
                    node.cover
                )));
            }
            let Some(depth) = depths[i] else {
                return Err(tree_error(format!(
                    "node {i} is not the child of an earlier node"
                )));
            };
            if let NodeKind::Split {
                threshold,
                left,
                right,
                ..
            } = node.kind
            {
                if !threshold.is_finite() {
                    return Err(tree_error(format!(
                        "node {i}: threshold is not finite: {threshold}"
                    )));
                }
                for child in [left, right] {
                    if child <= i || child >= nodes.len() {
                        return Err(tree_error(format!(
                            "node {i}: child {child} is not a later node of the {} nodes",
                            nodes.len()
                        )));
                    }
                    if depths[child].is_some() {
                        return Err(tree_error(format!(
                            "node {i}: child {child} already has a parent"
                        )));
                    }
                    if nodes[child].cover <= 0.0 {
                        return Err(tree_error(format!(
                            "node {i}: child {child} has cover {} (a child's cover must be positive)",
                            nodes[child].cover
                        )));
                    }
                    depths[child] = Some(depth + 1);
                }
            }
        }
        let compact = nodes
            .iter()
            .map(|n| match n.split_parts() {
                Some((feature, bin, threshold, left, right)) => CompactNode {
                    feature: u32::try_from(feature).unwrap_or(END - 1),
                    bin: u32::try_from(bin).unwrap_or(u32::MAX),
                    left: left as u32,
                    right: right as u32,
                    threshold,
                    value: n.value,
                },
                None => CompactNode {
                    feature: END,
                    bin: 0,
                    left: 0,
                    right: 0,
                    threshold: 0.0,
                    value: n.value,
                },
            })
            .collect();
        Ok(Tree {
            nodes,
            depths: depths.into_iter().map(|d| d.unwrap_or(0)).collect(),
            compact,
        })
    }

    /// The nodes, the root first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The depth of a node (the root at 0); `node` must be below `nodes().len()`.
    pub fn depth(&self, node: usize) -> u32 {
        self.depths[node]
    }

    /// The greatest depth of any node.
    pub fn max_depth(&self) -> u32 {
        self.depths.iter().copied().max().unwrap_or(0)
    }

    /// Indices of the pending nodes, ascending.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_pending())
            .collect()
    }

    /// Whether no node is pending.
    pub fn is_complete(&self) -> bool {
        !self.nodes.iter().any(Node::is_pending)
    }

    /// The node (leaf or pending) a row ends in, by thresholds (`row` has at
    /// least the model's `dim` values).
    pub(super) fn node_of(&self, row: &[f64]) -> usize {
        self.descend(|n| row[n.feature as usize] <= n.threshold)
    }

    /// The value of the node a row ends in.
    pub(super) fn predict_row(&self, row: &[f64]) -> f64 {
        self.compact[self.node_of(row)].value
    }

    /// The node a row ends in, by its bin indices under the model's binning
    /// (`bin(x) <= bin` exactly when `x <= threshold`).
    pub(super) fn node_of_bins(&self, bins: &[u8]) -> usize {
        self.descend(|n| u32::from(bins[n.feature as usize]) <= n.bin)
    }

    /// The node reached from the root by going left wherever `goes_left` says
    /// so at a split node.
    fn descend(&self, goes_left: impl Fn(&CompactNode) -> bool) -> usize {
        let mut i = 0;
        // Children come after parents, so this ends within `len` steps.
        loop {
            let n = &self.compact[i];
            if n.feature == END {
                return i;
            }
            i = if goes_left(n) { n.left } else { n.right } as usize;
        }
    }

    /// The value of the node a row ends in, by bins.
    pub(super) fn predict_bins(&self, bins: &[u8]) -> f64 {
        self.compact[self.node_of_bins(bins)].value
    }

    pub(super) fn into_nodes(self) -> Vec<Node> {
        self.nodes
    }
}
