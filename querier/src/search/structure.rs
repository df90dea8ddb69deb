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
//!  A &> B   A > B and the A spans it relates to (&<, &>>, &<<, &~ alike)
//!  A !> B   B whose parent ∉ A (!<, !>>, !<<, !~ alike)
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
            // `!>` …: rhs spans not related to an lhs span, lhs or none.
            Self::Binary {
                op:
                    SpansetOp::NotChild
                    | SpansetOp::NotParent
                    | SpansetOp::NotDescendant
                    | SpansetOp::NotAncestor
                    | SpansetOp::NotSibling,
                rhs,
                ..
            } => rhs.possible(present),
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

    /// Each span's (`nestedSetLeft`, `nestedSetRight`, `nestedSetParent`) as
    /// Tempo numbers them: a depth-first walk from 1, one number on entering
    /// a span and one on leaving it; the parent's left number, -1 for a
    /// root. Spans not reachable from a root (a cycle) get 0s.
    pub(crate) fn nested_set(&self) -> Vec<(i64, i64, i64)> {
        let n = self.len();
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); n];
        for &i in &self.top_down {
            if let Some(p) = self.parent[i as usize] {
                children[p as usize].push(i);
            }
        }
        let mut numbers = vec![(0i64, 0i64, 0i64); n];
        let mut next = 1i64;
        // (span, entered): an explicit stack, however deep the trace.
        let mut stack: Vec<(u32, bool)> =
            self.top_down.iter().rev().filter(|i| self.parent[**i as usize].is_none()).map(|i| (*i, false)).collect();
        while let Some((span, entered)) = stack.pop() {
            let i = span as usize;
            if entered {
                numbers[i].1 = next;
                next += 1;
                continue;
            }
            numbers[i].0 = next;
            numbers[i].2 = self.parent[i].map_or(-1, |p| numbers[p as usize].0);
            next += 1;
            stack.push((span, true));
            stack.extend(children[i].iter().rev().map(|c| (*c, false)));
        }
        numbers
    }

    /// Which spans `node` selects, given whether span i matches filter n
    /// (`leaf(n, i)`).
    pub(crate) fn eval(&self, node: &Node, leaf: &dyn Fn(usize, usize) -> bool) -> Vec<bool> {
        let n = self.len();
        let (op, lhs, rhs) = match node {
            Node::Leaf(filter) => return (0..n).map(|i| leaf(*filter, i)).collect(),
            Node::Binary { op, lhs, rhs } => (*op, self.eval(lhs, leaf), self.eval(rhs, leaf)),
        };
        let (relation, mode) = match op {
            SpansetOp::Or => return lhs.iter().zip(&rhs).map(|(a, b)| *a || *b).collect(),
            SpansetOp::And => {
                return if lhs.contains(&true) && rhs.contains(&true) {
                    lhs.iter().zip(&rhs).map(|(a, b)| *a || *b).collect()
                } else {
                    vec![false; n]
                };
            }
            structural => structural_parts(structural),
        };
        // rhs spans so related to an lhs span; for a union, also the lhs
        // spans related the other way to an rhs span.
        let related = self.related(relation, &lhs);
        match mode {
            Mode::Plain => (0..n).map(|i| rhs[i] && related[i]).collect(),
            Mode::Not => (0..n).map(|i| rhs[i] && !related[i]).collect(),
            Mode::Union => {
                let back = self.related(relation.inverse(), &rhs);
                (0..n).map(|i| (rhs[i] && related[i]) || (lhs[i] && back[i])).collect()
            }
        }
    }

    /// Which spans stand in `relation` to some span of `set`: their parent,
    /// a child, an ancestor, a descendant, or another child of their parent
    /// is in it.
    fn related(&self, relation: Relation, set: &[bool]) -> Vec<bool> {
        let n = self.len();
        match relation {
            Relation::Child => (0..n).map(|i| self.parent[i].is_some_and(|p| set[p as usize])).collect(),
            Relation::Parent => {
                let mut has_child = vec![false; n];
                for i in (0..n).filter(|i| set[*i]) {
                    if let Some(p) = self.parent[i] {
                        has_child[p as usize] = true;
                    }
                }
                has_child
            }
            Relation::Descendant => {
                let mut below = vec![false; n];
                for &i in &self.top_down {
                    let i = i as usize;
                    if let Some(p) = self.parent[i] {
                        below[i] = set[p as usize] || below[p as usize];
                    }
                }
                below
            }
            Relation::Ancestor => {
                let mut above = vec![false; n];
                for &i in self.top_down.iter().rev() {
                    let i = i as usize;
                    if let (Some(p), true) = (self.parent[i], set[i] || above[i]) {
                        above[p as usize] = true;
                    }
                }
                above
            }
            Relation::Sibling => {
                let mut in_set = vec![0u32; n];
                for i in (0..n).filter(|i| set[*i]) {
                    if let Some(p) = self.parent[i] {
                        in_set[p as usize] += 1;
                    }
                }
                // Another child of the parent: not the span itself.
                (0..n).map(|i| self.parent[i].is_some_and(|p| in_set[p as usize] > u32::from(set[i]))).collect()
            }
        }
    }
}

/// How a span relates to a span of the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
}

impl Relation {
    fn inverse(self) -> Self {
        match self {
            Self::Child => Self::Parent,
            Self::Parent => Self::Child,
            Self::Descendant => Self::Ancestor,
            Self::Ancestor => Self::Descendant,
            Self::Sibling => Self::Sibling,
        }
    }
}

/// What a structural operator returns: the related rhs spans, those and
/// the lhs spans they relate to (`&>` …), or the unrelated rhs spans (`!>` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Union,
    Not,
}

fn structural_parts(op: SpansetOp) -> (Relation, Mode) {
    use SpansetOp as Op;
    match op {
        Op::Child => (Relation::Child, Mode::Plain),
        Op::Parent => (Relation::Parent, Mode::Plain),
        Op::Descendant => (Relation::Descendant, Mode::Plain),
        Op::Ancestor => (Relation::Ancestor, Mode::Plain),
        Op::Sibling => (Relation::Sibling, Mode::Plain),
        Op::UnionChild => (Relation::Child, Mode::Union),
        Op::UnionParent => (Relation::Parent, Mode::Union),
        Op::UnionDescendant => (Relation::Descendant, Mode::Union),
        Op::UnionAncestor => (Relation::Ancestor, Mode::Union),
        Op::UnionSibling => (Relation::Sibling, Mode::Union),
        Op::NotChild => (Relation::Child, Mode::Not),
        Op::NotParent => (Relation::Parent, Mode::Not),
        Op::NotDescendant => (Relation::Descendant, Mode::Not),
        Op::NotAncestor => (Relation::Ancestor, Mode::Not),
        Op::NotSibling => (Relation::Sibling, Mode::Not),
        Op::And | Op::Or => unreachable!("not structural"),
    }
}

#[cfg(test)]
mod tests_support {
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

    pub(super) const NAMES: [u8; 8] = [1, 2, 3, 4, 5, 9, 7, 8];

    /// Spans selected by `op` with filter 0 matching `lhs` and filter 1 `rhs` (span names).
    pub(super) fn apply(op: SpansetOp, lhs: &[u8], rhs: &[u8]) -> Vec<u8> {
        let shape = trace();
        let node = Node::Binary { op, lhs: Box::new(Node::Leaf(0)), rhs: Box::new(Node::Leaf(1)) };
        let leaf = |n: usize, i: usize| if n == 0 { lhs.contains(&NAMES[i]) } else { rhs.contains(&NAMES[i]) };
        let out = shape.eval(&node, &leaf);
        (0..out.len()).filter(|i| out[*i]).map(|i| NAMES[i]).collect()
    }

    pub(super) const ALL: [u8; 8] = NAMES;
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

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

#[cfg(test)]
mod union_and_negation {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn union_operators_return_both_sides_of_the_relation() {
        assert_eq!(apply(SpansetOp::UnionChild, &[1], &ALL), vec![1, 2, 3]);
        assert_eq!(apply(SpansetOp::UnionChild, &[2], &[3, 4, 5]), vec![2, 4]);
        assert_eq!(apply(SpansetOp::UnionParent, &[4], &ALL), vec![2, 4]);
        assert_eq!(apply(SpansetOp::UnionDescendant, &[2], &[5]), vec![2, 5]);
        assert_eq!(apply(SpansetOp::UnionAncestor, &[5], &[1]), vec![1, 5]);
        assert_eq!(apply(SpansetOp::UnionSibling, &[2], &[3]), vec![2, 3]);
        assert_eq!(apply(SpansetOp::UnionChild, &[3], &ALL), Vec::<u8>::new());
    }

    #[test]
    fn negated_operators_return_the_unrelated_right_side() {
        assert_eq!(apply(SpansetOp::NotChild, &[1], &ALL), vec![1, 4, 5, 9, 7, 8]);
        assert_eq!(apply(SpansetOp::NotParent, &[4, 3], &[1, 2, 3]), vec![3]);
        assert_eq!(apply(SpansetOp::NotDescendant, &[2], &ALL), vec![1, 2, 3, 9, 7, 8]);
        assert_eq!(apply(SpansetOp::NotAncestor, &[5], &[1, 3]), vec![3]);
        assert_eq!(apply(SpansetOp::NotSibling, &[2], &[2, 3, 4]), vec![2, 4]);
        // With no lhs span at all, every rhs span is unrelated.
        assert_eq!(apply(SpansetOp::NotChild, &[], &[2, 3]), vec![2, 3]);
        let node = Node::Binary { op: SpansetOp::NotChild, lhs: Box::new(Node::Leaf(0)), rhs: Box::new(Node::Leaf(1)) };
        assert!(node.possible(&|n| n == 1));
    }
}

#[cfg(test)]
mod nested_set {
    use super::*;

    #[test]
    fn nested_set_numbers_follow_a_depth_first_walk() {
        let id = |n: u8| [n; 8];
        // 1 → {2 → {4}, 3}
        let shape = Shape::new(&[(id(1), None), (id(2), Some(id(1))), (id(3), Some(id(1))), (id(4), Some(id(2)))]);
        assert_eq!(shape.nested_set(), vec![(1, 8, -1), (2, 5, 1), (6, 7, 1), (3, 4, 2)]);
    }
}
