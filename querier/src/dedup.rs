//! `DedupExec`: drops the second copy of a span from a stream sorted by
//! trace id, as compaction does (equal span id and kind within a trace).
//!
//! A span that a client sent twice lives in two blocks until compaction
//! merges them. The `spans` table reads such blocks through one
//! sort-preserving merge (their rows of a trace then arrive together) and
//! this operator, so SQL counts the span once. Memory: the span keys of the
//! current trace.

use std::fmt;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{LexOrdering, OrderingRequirements, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, InputDistributionRequirements,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use spanlake_schemas::merge::{TraceDedup, span_identity};

use crate::strings::Strings;

/// Keeps the first copy of each span of its single, trace-ordered input.
#[derive(Debug)]
pub(crate) struct DedupExec {
    input: Arc<dyn ExecutionPlan>,
    /// The input's order: `trace_id` ascending.
    ordering: LexOrdering,
    /// Columns of the input: trace id, span id, kind.
    columns: [usize; 3],
}

impl DedupExec {
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>, ordering: LexOrdering, columns: [usize; 3]) -> Self {
        Self { input, ordering, columns }
    }
}

impl DisplayAs for DedupExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupExec: first copy per (trace_id, span_id, kind)")
    }
}

impl ExecutionPlan for DedupExec {
    fn name(&self) -> &'static str {
        "DedupExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::SinglePartition])
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![Some(OrderingRequirements::from(self.ordering.clone()))]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(children.swap_remove(0), self.ordering.clone(), self.columns)))
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let [trace, span, kind] = self.columns;
        let mut dedup = TraceDedup::default();
        let stream = input.map(move |batch| {
            let batch = batch?;
            let keep = first_copies(&batch, [trace, span, kind], &mut dedup);
            if keep.true_count() == batch.num_rows() {
                return Ok(batch);
            }
            Ok(filter_record_batch(&batch, &keep)?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Which rows of `batch` are the first copy of their span.
fn first_copies(batch: &RecordBatch, [trace, span, kind]: [usize; 3], dedup: &mut TraceDedup) -> BooleanArray {
    let (traces, spans) = (batch.column(trace).as_fixed_size_binary(), batch.column(span).as_fixed_size_binary());
    let kinds = Strings::expect(batch.column(kind));
    (0..batch.num_rows())
        .map(|row| {
            let trace = traces.value(row).try_into().map(u128::from_be_bytes).unwrap_or_default();
            let kind = kinds.get(row).unwrap_or_default();
            Some(dedup.first(trace, span_identity(spans.value(row), kind)))
        })
        .collect()
}
