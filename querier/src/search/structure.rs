//! Spanset operators over one trace, in time linear in its spans.
//!
//! A trace is its spans with parents as indexes, and an order in which every
//! parent comes before its children. Each operator is one or two passes over
//! bitmaps of matching spans:
//!
//! ```text
//!  A && B   both non-empty → A ∪ B          A || B   A ∪ B
//!  A > B    B whose parent ∈ A              A < B    B with a child ∈ A
//!  A >> B   B below an A (top-down pass)    A << B   B above an A (bottom-up pass)
//!  A ~ B    B with another child of its parent in A
//! ```
//!
//! No walk repeats per span, so `{ } >> { }` over a trace of n spans is O(n),
//! and a cycle or a missing parent in stored data only cuts the tree.

use std::collections::HashMap;

use super::SpanId;
use crate::traceql::ast::{FieldExpr, SpansetExpr, SpansetOp};

/// A spanset expression with its filters numbered.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// Filter number n.
    Leaf(usize),
    Binary {
        op: SpansetOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
}

impl Node {
    /// The tree of `expr`; its filters are appended to `leaves` and numbered
    /// by their position there.
    pub(crate) fn build(expr: &SpansetExpr, leaves: &mut Vec<Option<FieldExpr>>) -> Self {
        match expr {
            SpansetExpr::Filter(filter) => {
                leaves.push(filter.clone());
                Self::Leaf(leaves.len() - 1)
            }
            SpansetExpr::Binary { op, lhs, rhs } => Self::Binary {
                op: *op,
                lhs: Box::new(Self::build(lhs, leaves)),
                rhs: Box::new(Self::build(rhs, leaves)),
            },
        }
    }

    /// Whether a trace in which filter n matches some span iff `present(n)`
    /// can match at all.
    pub(crate) fn possible(&self, present: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Self::Leaf(n) => present(*n),
            Self::Binary { op: SpansetOp::Or, lhs, rhs } => lhs.possible(present) || rhs.possible(present),
            Self::Binary { lhs, rhs, .. } => lhs.possible(present) && rhs.possible(present),
        }
    }
}

/// The tree of one trace.
#[derive(Debug)]
pub(crate) struct Shape {
    parent: Vec<Option<u32>>,
    /// Spans reachable from a root, every parent before its children.
    top_down: Vec<u32>,
}

impl Shape {
    /// `spans`: (id, parent id) of each span, ids unique. A parent id not in
    /// the trace makes its span a root.
    pub(crate) fn new(spans: &[(SpanId, Option<SpanId>)]) -> Self {
        let index: HashMap<SpanId, u32> = spans.iter().enumerate().map(|(i, (id, _))| (*id, i as u32)).collect();
        let parent: Vec<Option<u32>> = spans.iter().map(|(_, p)| p.and_then(|p| index.get(&p).copied())).collect();
        // Children as ranges of one array (counting sort by parent).
        let n = spans.len();
        let mut first = vec![0u32; n + 1];
        for p in parent.iter().flatten() {
            first[*p as usize + 1] += 1;
        }
        for i in 0..n {
            first[i + 1] += first[i];
        }
        let mut next = first.clone();
        let mut children = vec![0u32; first[n] as usize];
        for (child, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[next[*p as usize] as usize] = child as u32;
                next[*p as usize] += 1;
            }
        }
        let mut top_down: Vec<u32> = (0..n as u32).filter(|i| parent[*i as usize].is_none()).collect();
        let mut at = 0;
        while at < top_down.len() {
            let span = top_down[at] as usize;
            top_down.extend_from_slice(&children[first[span] as usize..first[span + 1] as usize]);
            at += 1;
        }
        Self { parent, top_down }
    }

    pub(crate) fn len(&self) -> usize {
        self.parent.len()
    }

    /// Which spans `node` selects, given whether span i matches filter n
    /// (`leaf(n, i)`).
    pub(crate) fn eval(&self, node: &Node, leaf: &dyn Fn(usize, usize) -> bool) -> Vec<bool> {
        let n = self.len();
        let (op, lhs, rhs) = match node {
            Node::Leaf(filter) => return (0..n).map(|i| leaf(*filter, i)).collect(),
            Node::Binary { op, lhs, rhs } => (*op, self.eval(lhs, leaf), self.eval(rhs, leaf)),
        };
        let parent_in = |set: &[bool], i: usize| self.parent[i].is_some_and(|p| set[p as usize]);
        match op {
            SpansetOp::Or => lhs.iter().zip(&rhs).map(|(a, b)| *a || *b).collect(),
            SpansetOp::And => {
                if lhs.contains(&true) && rhs.contains(&true) {
                    lhs.iter().zip(&rhs).map(|(a, b)| *a || *b).collect()
                } else {
                    vec![false; n]
                }
            }
            SpansetOp::Child => (0..n).map(|i| rhs[i] && parent_in(&lhs, i)).collect(),
            SpansetOp::Parent => {
                let mut has_child = vec![false; n];
                for i in (0..n).filter(|i| lhs[*i]) {
                    if let Some(p) = self.parent[i] {
                        has_child[p as usize] = true;
                    }
                }
                (0..n).map(|i| rhs[i] && has_child[i]).collect()
            }
            SpansetOp::Descendant => {
                let mut below = vec![false; n];
                for &i in &self.top_down {
                    let i = i as usize;
                    if let Some(p) = self.parent[i] {
                        below[i] = lhs[p as usize] || below[p as usize];
                    }
                }
                (0..n).map(|i| rhs[i] && below[i]).collect()
            }
            SpansetOp::Ancestor => {
                let mut above = vec![false; n];
                for &i in self.top_down.iter().rev() {
                    let i = i as usize;
                    if let (Some(p), true) = (self.parent[i], lhs[i] || above[i]) {
                        above[p as usize] = true;
                    }
                }
                (0..n).map(|i| rhs[i] && above[i]).collect()
            }
            SpansetOp::Sibling => {
                let mut matching_children = vec![0u32; n];
                for i in (0..n).filter(|i| lhs[*i]) {
                    if let Some(p) = self.parent[i] {
                        matching_children[p as usize] += 1;
                    }
                }
                (0..n)
                    .map(|i| {
                        rhs[i] && self.parent[i].is_some_and(|p| matching_children[p as usize] > u32::from(lhs[i]))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> SpanId {
        [n; 8]
    }

    /// 1 → {2, 3}, 2 → {4}, 4 → {5}; 9's parent is not in the trace; 7 ↔ 8 form a cycle.
    fn trace() -> Shape {
        Shape::new(&[
            (id(1), None),
            (id(2), Some(id(1))),
            (id(3), Some(id(1))),
            (id(4), Some(id(2))),
            (id(5), Some(id(4))),
            (id(9), Some(id(42))),
            (id(7), Some(id(8))),
            (id(8), Some(id(7))),
        ])
    }

    const NAMES: [u8; 8] = [1, 2, 3, 4, 5, 9, 7, 8];

    /// Spans selected by `op` with filter 0 matching `lhs` and filter 1 `rhs` (span names).
    fn apply(op: SpansetOp, lhs: &[u8], rhs: &[u8]) -> Vec<u8> {
        let shape = trace();
        let node = Node::Binary { op, lhs: Box::new(Node::Leaf(0)), rhs: Box::new(Node::Leaf(1)) };
        let leaf = |n: usize, i: usize| if n == 0 { lhs.contains(&NAMES[i]) } else { rhs.contains(&NAMES[i]) };
        let out = shape.eval(&node, &leaf);
        (0..out.len()).filter(|i| out[*i]).map(|i| NAMES[i]).collect()
    }

    const ALL: [u8; 8] = NAMES;

    #[test]
    fn child_and_parent() {
        assert_eq!(apply(SpansetOp::Child, &[1], &ALL), vec![2, 3]);
        assert_eq!(apply(SpansetOp::Child, &[2], &[3, 4, 5]), vec![4]);
        assert_eq!(apply(SpansetOp::Parent, &[4, 3], &ALL), vec![1, 2]);
        assert_eq!(apply(SpansetOp::Parent, &[1, 9], &ALL), Vec::<u8>::new());
    }

    #[test]
    fn descendant_and_ancestor() {
        assert_eq!(apply(SpansetOp::Descendant, &[2], &ALL), vec![4, 5]);
        assert_eq!(apply(SpansetOp::Descendant, &[1], &[5, 9, 7]), vec![5]);
        assert_eq!(apply(SpansetOp::Ancestor, &[5], &ALL), vec![1, 2, 4]);
        assert_eq!(apply(SpansetOp::Ancestor, &[5, 3], &[2, 3]), vec![2]);
        // The cycle is never entered: neither is below nor above the other.
        assert_eq!(apply(SpansetOp::Descendant, &[7, 8], &ALL), Vec::<u8>::new());
        assert_eq!(apply(SpansetOp::Ancestor, &[7, 8], &ALL), Vec::<u8>::new());
    }

    #[test]
    fn sibling_needs_another_span() {
        assert_eq!(apply(SpansetOp::Sibling, &[2], &ALL), vec![3]);
        assert_eq!(apply(SpansetOp::Sibling, &[2, 3], &ALL), vec![2, 3]);
        assert_eq!(apply(SpansetOp::Sibling, &[1], &ALL), Vec::<u8>::new());
    }

    #[test]
    fn and_needs_both_sides_or_either() {
        assert_eq!(apply(SpansetOp::And, &[1], &[5]), vec![1, 5]);
        assert_eq!(apply(SpansetOp::And, &[1], &[]), Vec::<u8>::new());
        assert_eq!(apply(SpansetOp::Or, &[1], &[]), vec![1]);
        let node = |op| Node::Binary { op, lhs: Box::new(Node::Leaf(0)), rhs: Box::new(Node::Leaf(1)) };
        assert!(!node(SpansetOp::And).possible(&|n| n == 0));
        assert!(node(SpansetOp::Or).possible(&|n| n == 0));
    }

    /// A chain of 100,000 spans is walked without recursion.
    #[test]
    fn deep_traces_are_linear() {
        let spans: Vec<(SpanId, Option<SpanId>)> =
            (0..100_000u64).map(|i| (i.to_be_bytes(), i.checked_sub(1).map(|p| p.to_be_bytes()))).collect();
        let shape = Shape::new(&spans);
        let node =
            Node::Binary { op: SpansetOp::Descendant, lhs: Box::new(Node::Leaf(0)), rhs: Box::new(Node::Leaf(1)) };
        let out = shape.eval(&node, &|n, i| if n == 0 { i == 0 } else { true });
        assert_eq!(out.iter().filter(|b| **b).count(), 99_999);
    }
}
