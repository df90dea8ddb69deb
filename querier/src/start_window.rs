//! Filters on `start_time` answered exactly by the scan.
//!
//! A query over a time window (every TraceQL metrics query, Grafana's
//! searches, most SQL) filters each span by its start. DataFusion applies
//! such a filter to every row read unless the table says it is exact.
//! Most blocks of a window lie inside it whole, and their footers say so
//! (the `start_time` statistics of each row group), so the `spans` table
//! takes these filters as exact: a block inside the window is read
//! unfiltered, and only the blocks across its edges are filtered.
//!
//! Measured with `cargo bench --bench metrics` (BENCHMARKS.md): the filter
//! cost about a tenth of the CPU of `{ } | rate() by(resource.service.name)`
//! over an hour of blocks that all lay inside the window.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr as PhysicalBinary, Column, Literal};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};
use spanlake_schemas::schema::START_TIME;

/// Span starts a scan answers exactly: inclusive bounds in Unix
/// nanoseconds (None: unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct StartWindow {
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
}

impl StartWindow {
    /// The window `expr` states, when it is nothing but bounds on
    /// `start_time` against nanosecond timestamps, joined by AND (what the
    /// scan can then answer exactly).
    pub(crate) fn of(expr: &Expr) -> Option<Self> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                Some(Self::of(left)?.and(Self::of(right)?))
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) if c.name == START_TIME => (*op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) if c.name == START_TIME => (op.swap()?, v),
                    _ => return None,
                };
                // Only nanoseconds: a literal of a coarser unit may be
                // compared after the column is cast to it.
                let ScalarValue::TimestampNanosecond(Some(at), _) = value else { return None };
                let at = *at;
                match op {
                    Operator::GtEq => Some(Self { from: Some(at), to: None }),
                    Operator::Gt => Some(Self { from: Some(at.checked_add(1)?), to: None }),
                    Operator::LtEq => Some(Self { from: None, to: Some(at) }),
                    Operator::Lt => Some(Self { from: None, to: Some(at.checked_sub(1)?) }),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Both windows at once.
    pub(crate) fn and(self, other: Self) -> Self {
        let pick = |a: Option<i64>, b: Option<i64>, f: fn(i64, i64) -> i64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        Self { from: pick(self.from, other.from, i64::max), to: pick(self.to, other.to, i64::min) }
    }

    /// Whether every start from `min` to `max` lies in the window.
    pub(crate) fn holds(&self, min: i64, max: i64) -> bool {
        self.from.is_none_or(|from| min >= from) && self.to.is_none_or(|to| max <= to)
    }

    /// Whether every span of a block starts in the window, by its footer's
    /// `start_time` statistics (false when a row group has none).
    pub(crate) fn holds_block(&self, footer: &ArrowReaderMetadata) -> bool {
        let metadata = footer.metadata();
        let schema = metadata.file_metadata().schema_descr();
        let Some(leaf) = (0..schema.num_columns()).find(|&i| schema.column(i).path().string() == START_TIME) else {
            return false;
        };
        metadata.row_groups().iter().all(|group| match group.column(leaf).statistics() {
            Some(Statistics::Int64(stats)) => match (stats.min_opt(), stats.max_opt()) {
                (Some(&min), Some(&max)) => self.holds(min, max),
                _ => group.num_rows() == 0,
            },
            _ => group.num_rows() == 0,
        })
    }

    /// The window as a predicate over the `start_time` column at `index`
    /// of a batch, its timestamps in `time_zone`.
    pub(crate) fn predicate(&self, index: usize, time_zone: Option<Arc<str>>) -> Arc<dyn PhysicalExpr> {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(START_TIME, index));
        let bound = |op: Operator, at: i64| -> Arc<dyn PhysicalExpr> {
            let at = Arc::new(Literal::new(ScalarValue::TimestampNanosecond(Some(at), time_zone.clone())));
            Arc::new(PhysicalBinary::new(Arc::clone(&column), op, at))
        };
        let bounds: Vec<Arc<dyn PhysicalExpr>> =
            [self.from.map(|from| bound(Operator::GtEq, from)), self.to.map(|to| bound(Operator::LtEq, to))]
                .into_iter()
                .flatten()
                .collect();
        bounds
            .into_iter()
            .reduce(|a, b| Arc::new(PhysicalBinary::new(a, Operator::And, b)))
            .unwrap_or_else(|| Arc::new(Literal::new(ScalarValue::Boolean(Some(true)))))
    }
}

/// The window of all of `filters` that state one (None: none does).
pub(crate) fn window_of(filters: &[Expr]) -> Option<StartWindow> {
    filters.iter().filter_map(StartWindow::of).reduce(StartWindow::and)
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn ns(at: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(at), Some("UTC".into())))
    }

    #[test]
    fn bounds_on_start_time_become_an_inclusive_window() {
        let window = StartWindow::of(&col(START_TIME).gt(ns(10)).and(col(START_TIME).lt_eq(ns(20)))).unwrap();
        assert_eq!(window, StartWindow { from: Some(11), to: Some(20) });
        let window = StartWindow::of(&ns(20).gt(col(START_TIME))).unwrap();
        assert_eq!(window, StartWindow { from: None, to: Some(19) });
        assert!(window.holds(-5, 19));
        assert!(!window.holds(-5, 20));
        let both = window_of(&[col(START_TIME).gt_eq(ns(3)), col(START_TIME).gt_eq(ns(7)), col("name").eq(lit("x"))]);
        assert_eq!(both, Some(StartWindow { from: Some(7), to: None }));
    }

    #[test]
    fn anything_else_is_not_a_window() {
        let millis = lit(ScalarValue::TimestampMillisecond(Some(10), None));
        for expr in [
            col(START_TIME).gt(millis),
            col(START_TIME).not_eq(ns(3)),
            col("end_time").gt(ns(3)),
            col(START_TIME).gt(ns(3)).or(col(START_TIME).lt(ns(1))),
            col(START_TIME).gt(ns(3)).and(col("name").eq(lit("x"))),
            col(START_TIME).gt(ns(i64::MAX)),
        ] {
            assert_eq!(StartWindow::of(&expr), None, "{expr}");
        }
    }
}
