//! TraceQL metrics (`/api/metrics/query_range`, `/api/metrics/query`): time
//! series over the spans a filter matches, as Grafana's Tempo data source
//! and Traces Drilldown read them.
//!
//! ```text
//!  { filter } | fn(…) by(…)  ──compile──▶  one DataFusion aggregate over `spans`
//!     (span counted once; blocks and row groups pruned by the window and filter)
//!     counts only (rate, count, quantiles, histograms; exemplars from a sample):
//!       GROUP BY by() values → each group's cells (time bucket[, power-of-two
//!       bucket of the value]) counted by one aggregate function (cells.rs)
//!     otherwise: GROUP BY time bucket, by() values[, power of two]
//!     → count, min, max, sum, and the newest span: its start, trace id and
//!       value (an exemplar candidate, carried by the aggregate: no second read)
//!  rows ──▶ series (series.rs): rate, count, min/max/sum/avg, quantiles
//!     interpolated over power-of-two buckets as Tempo does, histograms
//!     ──▶ exemplars: candidates chosen, spread over the window
//!     ──▶ topk/bottomk/comparison stages ──▶ Tempo's JSON
//!  compare({sel}) ──▶ compare.rs: attribute values counted per bucket for
//!     the selection and the baseline, the top N of each attribute
//! ```
//!
//! The answer is bounded: rows are held against the query's memory pool,
//! buckets by [`window::MAX_INTERVALS`], and the query runs under the same
//! admission and deadline as every query.

mod buckets;
mod cells;
mod cells_by;
mod compare;
mod newest;
mod one_group;
pub(crate) use cells::cells_udaf;
pub(crate) use cells_by::cells_by_udaf;
pub(crate) use newest::newest_span_udaf;

/// The scalar functions metrics plans call (workers that run shares of
/// them register these too).
pub(crate) fn bucket_functions() -> [datafusion::logical_expr::ScalarUDF; 2] {
    [buckets::time_bucket_udf(), buckets::pow2_bucket_udf()]
}
mod response;
mod sample;
mod series;
mod window;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{Expr, cast, col, lit};
use datafusion::prelude::SessionContext;
use spanlake_schemas::TenantId;
use spanlake_schemas::schema as s;

pub(crate) use response::MetricsAnswer;
pub(crate) use sample::{ExemplarSample, exemplar_sample};
use series::{Cell, Collected, Newest};
pub(crate) use window::Window;

use crate::Querier;
use crate::error::{QueryError, Result};
use crate::search::{OutputField, Render};
use crate::traceql::ast::*;

/// Most exemplars a query returns (Tempo's `max_exemplars`).
pub(crate) const MAX_EXEMPLARS: usize = 100;

/// What a metrics endpoint was asked.
#[derive(Debug, Clone)]
pub(crate) struct MetricsRequest {
    pub(crate) query: MetricsQuery,
    pub(crate) window: Window,
    /// Exemplars wanted (0: none).
    pub(crate) exemplars: usize,
    /// Most series answered (0: no limit); beyond it the answer is partial.
    pub(crate) max_series: usize,
}

impl MetricsRequest {
    /// The exemplars wanted: the `exemplars` parameter (0 meaning the
    /// default), overridden by the hint `with(exemplars=N|false)`, at most
    /// [`MAX_EXEMPLARS`]; none for instant queries.
    pub(crate) fn exemplars_wanted(query: &MetricsQuery, parameter: Option<u64>, instant: bool) -> Result<usize> {
        if instant {
            return Ok(0);
        }
        let wanted = match query.hint("exemplars") {
            Some(Static::Bool(false)) => 0,
            Some(Static::Bool(true)) | None => match parameter {
                None | Some(0) => MAX_EXEMPLARS,
                Some(n) => n as usize,
            },
            Some(Static::Int(n)) if *n >= 0 => *n as usize,
            Some(other) => {
                return Err(QueryError::invalid(
                    "q",
                    format!("with(exemplars=…) takes a count or false, not {}", other.describe()),
                ));
            }
        };
        Ok(wanted.min(MAX_EXEMPLARS))
    }
}

/// A `by()` field: its label key, the grouped expression and how it reads back.
pub(crate) struct ByField {
    pub(crate) key: String,
    expr: Expr,
    pub(crate) render: Render,
}

impl ByField {
    fn new(field: &FieldExpr) -> Result<Self> {
        // `resource.service.name` is its own column (the attribute's string
        // value): grouping by it needs no attribute-map lookup.
        if let FieldExpr::Attribute(Attribute { scope: AttributeScope::Resource, name }) = field
            && name == "service.name"
        {
            return Ok(Self { key: "resource.service.name".into(), expr: col(s::SERVICE_NAME), render: Render::Str });
        }
        let field = OutputField::for_expr(field, false)?;
        if let Render::NestedSet(_) = field.render {
            return Err(unsupported(format!("by({}) is not supported in metrics queries", field.key)));
        }
        Ok(Self { key: field.key, expr: field.expr, render: field.render })
    }
}

fn unsupported(reason: impl Into<String>) -> QueryError {
    QueryError::invalid("q", reason)
}

/// The spans a metrics query measures: its one spanset filter.
fn measured_filter(query: &MetricsQuery) -> Result<Option<&FieldExpr>> {
    match &query.spansets {
        SpansetExpr::Filter(filter) => Ok(filter.as_ref()),
        SpansetExpr::Binary { .. } => Err(unsupported(
            "metrics over structural or combined spansets ({a} > {b}, {a} && {b}) are not supported yet: use one { } filter",
        )),
    }
}

/// The field a function reads, and whether it is the `duration` intrinsic
/// (reported in seconds).
fn measured_field(function: &MetricsFunction) -> Option<(&FieldExpr, bool)> {
    let field = match function {
        MetricsFunction::MinOverTime(f)
        | MetricsFunction::MaxOverTime(f)
        | MetricsFunction::SumOverTime(f)
        | MetricsFunction::AvgOverTime(f)
        | MetricsFunction::QuantileOverTime(f, _)
        | MetricsFunction::HistogramOverTime(f) => f,
        _ => return None,
    };
    Some((field, matches!(field, FieldExpr::Intrinsic(Intrinsic::Duration))))
}

fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())))
}

/// Output columns of the aggregate, after the `by()` columns.
mod cols {
    pub(super) const BUCKET: &str = "__t";
    pub(super) const POWER: &str = "__e";
    pub(super) const COUNT: &str = "__n";
    pub(super) const MIN: &str = "__min";
    pub(super) const MAX: &str = "__max";
    pub(super) const SUM: &str = "__sum";
    pub(super) const NEWEST: &str = "__x";
    /// Per `by()` group, its cells' counts (`cells.rs`).
    pub(super) const CELLS: &str = "__c";
}

/// Whether the query reads trace-level fields (in its filter or `by()`).
fn needs_trace_fields(query: &MetricsQuery) -> bool {
    let in_filter = match &query.spansets {
        SpansetExpr::Filter(Some(filter)) => crate::search::filter_needs_trace_fields(filter),
        _ => false,
    };
    let in_selection = matches!(&query.function, MetricsFunction::Compare { selection: Some(selection), .. }
        if crate::search::filter_needs_trace_fields(selection));
    in_filter || in_selection || query.by.iter().any(OutputField::needs_trace_fields)
}

/// The spans of the window (and the filter), one copy of each.
pub(crate) async fn window_spans(
    ctx: &SessionContext,
    request: &MetricsRequest,
    filter: Option<&FieldExpr>,
) -> Result<DataFrame> {
    window_spans_of(ctx, "spans", request, filter).await
}

/// [`window_spans`] of `table`: `spans`, or every stored copy.
async fn window_spans_of(
    ctx: &SessionContext,
    table: &str,
    request: &MetricsRequest,
    filter: Option<&FieldExpr>,
) -> Result<DataFrame> {
    let window = &request.window;
    let needs_trace_fields = needs_trace_fields(&request.query);
    let start = col(s::START_TIME);
    let from = if window.instant {
        start.clone().gt_eq(timestamp(window.start))
    } else {
        start.clone().gt(timestamp(window.start))
    };
    let in_window = from.and(start.lt_eq(timestamp(window.end)));
    let mut frame = ctx.table(table).await?.filter(in_window.clone())?;
    if needs_trace_fields {
        // traceDuration, rootName, rootServiceName: over the trace's spans in the window.
        frame = crate::search::join_trace_fields(frame, ctx.table("spans").await?.filter(in_window)?)?;
    }
    if let Some(filter) = filter {
        frame = frame.filter(crate::search::compile_filter(filter)?)?;
    }
    Ok(frame)
}

/// The time bucket of each span, as an expression over `start_time`.
pub(crate) fn bucket_expr(window: &Window) -> Expr {
    if window.instant { lit(0i64) } else { buckets::time_bucket(col(s::START_TIME), window.start + 1, window.step) }
}

impl Querier {
    /// Answers a metrics query over `tenant`'s spans.
    pub(crate) async fn metrics_query(&self, tenant: &TenantId, request: &MetricsRequest) -> Result<MetricsAnswer> {
        let window = &request.window;
        let blocks = self.catalog.blocks(tenant, |b| b.overlaps(window.start, window.end));
        // Trace-level fields computed over a sample's blocks alone could be
        // those of part of a trace: such a query takes every span.
        let sample = match needs_trace_fields(&request.query) {
            false => exemplar_sample(&blocks, self.config.exemplar_sample_spans),
            true => None,
        };
        let (mut answer, _) =
            self.spread_or_here(Some(tenant), |ctx| metrics_in(ctx, request, sample.as_ref())).await?;
        answer.inspected_spans = blocks.iter().map(|b| b.span_count).sum();
        answer.total_blocks = blocks.len() as u64;
        answer.total_block_bytes = blocks.iter().map(|b| b.size_bytes).sum();
        Ok(answer)
    }
}

/// Answers a metrics query in `ctx`, with exemplars from `sample` when given.
async fn metrics_in(
    ctx: SessionContext,
    request: &MetricsRequest,
    sample: Option<&ExemplarSample>,
) -> Result<MetricsAnswer> {
    let filter = measured_filter(&request.query)?;
    let mut answer = if let MetricsFunction::Compare { selection, top, window: selected } = &request.query.function {
        compare::compare(&ctx, request, filter, selection.as_ref(), *top, *selected).await?
    } else {
        let by: Vec<ByField> = request.query.by.iter().map(ByField::new).collect::<Result<_>>()?;
        let collected = aggregate(&ctx, request, filter, &by, sample).await?;
        let _series = hold_series(&ctx, collected.series_count(&request.query.function), request.window.buckets())?;
        series::build(request, &by, collected).finish(request)
    };
    answer.partial = crate::sql::skipped_blocks(&ctx);
    Ok(answer)
}

/// Counts `series` series of `buckets` samples against the query's memory
/// pool (422 beyond it): a `by()` over a value unique per span, at a short
/// step, would otherwise build gigabytes outside it.
pub(super) fn hold_series(
    ctx: &SessionContext,
    series: usize,
    buckets: usize,
) -> Result<datafusion::execution::memory_pool::MemoryReservation> {
    use datafusion::execution::memory_pool::MemoryConsumer;
    let held = MemoryConsumer::new("the series of a metrics query").register(&ctx.runtime_env().memory_pool);
    // A sample and its share of labels and exemplars.
    let bytes = series.saturating_mul(buckets.max(1)).saturating_mul(16);
    held.try_grow(bytes).map_err(|_| {
        QueryError::MemoryLimit(format!(
            "{series} series of {buckets} samples need more than the per-query memory limit; \
             group by fewer values, raise the step or narrow the time range"
        ))
    })?;
    Ok(held)
}

/// One aggregate over the window: per time bucket, `by()` values and (for
/// histograms and quantiles) power-of-two bucket of the value: the count,
/// min, max and sum of the value, and the newest span as an exemplar
/// candidate, from every span or, with `sample`, from a second aggregate
/// over the sample alone.
async fn aggregate(
    ctx: &SessionContext,
    request: &MetricsRequest,
    filter: Option<&FieldExpr>,
    by: &[ByField],
    sample: Option<&ExemplarSample>,
) -> Result<Collected> {
    let powers =
        matches!(request.query.function, MetricsFunction::QuantileOverTime(..) | MetricsFunction::HistogramOverTime(_));
    let mut collected = Collected::default();
    let exemplars = request.exemplars > 0 && sample.is_none();
    let counted = cells(ctx, request, filter, by, Pass::Count { exemplars });
    let Some(sample) = sample.filter(|_| request.exemplars > 0) else {
        let (batches, _held) = counted.await?;
        for batch in &batches {
            read_cells(batch, by, powers, &mut collected);
        }
        return Ok(collected);
    };
    // The sample's aggregate runs beside the count, in a session of its
    // own that reads the sample's blocks alone.
    let sampled = SessionContext::new_with_state(ctx.state());
    let only = crate::blocks::OnlyBlocks(sample.blocks.clone());
    sampled.state_ref().write().config_mut().set_extension(std::sync::Arc::new(only));
    let found = cells(&sampled, request, filter, by, Pass::Sample { below: sample.below });
    let ((batches, _held), (found_batches, _found_held)) = futures::try_join!(counted, found)?;
    for batch in &batches {
        read_cells(batch, by, powers, &mut collected);
    }
    let mut found = Collected::default();
    for batch in &found_batches {
        read_cells(batch, by, powers, &mut found);
    }
    collected.take_newest(found);
    Ok(collected)
}

/// What an aggregate of the window's cells finds.
#[derive(Clone, Copy)]
enum Pass {
    /// Every span counted once: the count and value statistics, and each
    /// cell's newest span when `exemplars`.
    Count { exemplars: bool },
    /// Each cell's newest span among the session's blocks' traces with ids
    /// below `below` (None: all of them), every stored copy read (a span
    /// stored twice is the same exemplar either way).
    Sample { below: Option<u128> },
}

/// The aggregate of the window's cells, as `pass` asks.
async fn cells(
    ctx: &SessionContext,
    request: &MetricsRequest,
    filter: Option<&FieldExpr>,
    by: &[ByField],
    pass: Pass,
) -> Result<(Vec<RecordBatch>, datafusion::execution::memory_pool::MemoryReservation)> {
    let function = &request.query.function;
    let (table, below) = match pass {
        Pass::Count { .. } => ("spans", None),
        Pass::Sample { below } => (crate::sql::SPANS_AS_STORED, below),
    };
    let measured = measured_field(function);
    let powers = matches!(function, MetricsFunction::QuantileOverTime(..) | MetricsFunction::HistogramOverTime(_));
    let counts_only = matches!(function, MetricsFunction::Rate | MetricsFunction::CountOverTime) || powers;
    if let (Pass::Count { exemplars: false }, true) = (pass, counts_only)
        && let Some(key) = one_string_column(by)
        && !needs_trace_fields(&request.query)
        && matches!(measured, None | Some((_, true)))
    {
        return count_cells_by(ctx, request, filter, key, powers.then(|| col(s::DURATION_NS))).await;
    }
    let mut frame = window_spans_of(ctx, table, request, filter).await?;
    if let Some(below) = below {
        let bound = ScalarValue::FixedSizeBinary(16, Some(below.to_be_bytes().to_vec()));
        frame = frame.filter(col(s::TRACE_ID).lt(lit(bound)))?;
    }
    let value = match measured {
        Some((field, _)) => {
            let value = crate::search::numeric_value(field)?;
            // Spans without the value (or not a number) are not measured.
            frame = frame.filter(value.clone().is_not_null())?;
            Some(value)
        }
        None => None,
    };
    let by_groups = by.iter().enumerate().map(|(i, b)| b.expr.clone().alias(format!("__g{i}")));
    if let (Pass::Count { exemplars: false }, true) = (pass, counts_only) {
        // Only counts per cell: grouped by the `by()` values, each group
        // counting its cells itself (`cells.rs`).
        let counted = match measured {
            Some((_, true)) => Some(col(s::DURATION_NS)),
            _ => value.filter(|_| powers),
        };
        let (origin, step) = cell_buckets(&request.window);
        let cells = cells::cells(col(s::START_TIME), origin, step, counted).alias(cols::CELLS);
        return collect_series(ctx, frame.aggregate(by_groups.collect(), vec![cells])?).await;
    }
    let mut groups = vec![bucket_expr(&request.window).alias(cols::BUCKET)];
    groups.extend(by_groups);
    if let (true, Some(value)) = (powers, &value) {
        // The smallest power of two at or above the value; values below 2
        // are not bucketed (as Tempo). A duration is bucketed as the
        // integer it is stored as.
        let value = match measured {
            Some((_, true)) => col(s::DURATION_NS),
            _ => value.clone(),
        };
        let two = match measured {
            Some((_, true)) => lit(2i64),
            _ => lit(2.0),
        };
        // A duration's bucket (an integer's exponent) is below 1 exactly
        // when it is below 2: its cells are dropped as they are read
        // (`read_cells`), not every span compared. A float in [1, 2) has
        // the bucket 1, so floats are filtered.
        if !matches!(measured, Some((_, true))) {
            frame = frame.filter(value.clone().gt_eq(two))?;
        }
        groups.push(buckets::pow2_bucket(value).alias(cols::POWER));
    }
    let start = cast(col(s::START_TIME), DataType::Int64);
    let mut aggregates = vec![count(lit(1)).alias(cols::COUNT)];
    if let (Some(value), false, Pass::Count { .. }) = (&value, powers, pass) {
        aggregates.extend([
            min(value.clone()).alias(cols::MIN),
            max(value.clone()).alias(cols::MAX),
            sum(value.clone()).alias(cols::SUM),
        ]);
    }
    if matches!(pass, Pass::Count { exemplars: true } | Pass::Sample { .. }) {
        // Each cell's newest span is an exemplar candidate: its start, trace and value.
        let measured = value.clone().unwrap_or(lit(ScalarValue::Float64(None)));
        aggregates.push(newest::newest_span(start, col(s::TRACE_ID), measured).alias(cols::NEWEST));
    }
    collect_series(ctx, frame.aggregate(groups, aggregates)?).await
}

/// The rows of a metrics aggregate, held against the query's memory pool.
async fn collect_series(
    ctx: &SessionContext,
    frame: DataFrame,
) -> Result<(Vec<RecordBatch>, datafusion::execution::memory_pool::MemoryReservation)> {
    let advice = "narrow the time range, raise the step or group by fewer values";
    crate::memory::collect_counted(ctx, frame, "the series this metrics query builds", advice).await
}

/// The origin and width of the cells' time buckets (one bucket for an
/// instant query).
fn cell_buckets(window: &Window) -> (i64, i64) {
    if window.instant { (window.start, i64::MAX) } else { (window.start + 1, window.step) }
}

/// The key of a `by()` that [`count_cells_by`] groups itself: none, or one
/// string column.
fn one_string_column(by: &[ByField]) -> Option<Option<Expr>> {
    match by {
        [] => Some(None),
        [ByField { expr: Expr::Column(column), render: Render::Str, .. }] => {
            let field = crate::table::table_schema().field_with_name(&column.name).ok()?.clone();
            let string = matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
            string.then(|| Some(Expr::Column(column.clone())))
        }
        _ => None,
    }
}

/// The cells of the window's spans that the filter keeps, per value of
/// `key`, counted by one aggregate without `GROUP BY` (`cells_by.rs`): the
/// filter prunes the scan and is the aggregate's argument, so no column is
/// copied. The spans' `durations` are bucketed when given.
async fn count_cells_by(
    ctx: &SessionContext,
    request: &MetricsRequest,
    filter: Option<&FieldExpr>,
    key: Option<Expr>,
    durations: Option<Expr>,
) -> Result<(Vec<RecordBatch>, datafusion::execution::memory_pool::MemoryReservation)> {
    let mut frame = window_spans_of(ctx, "spans", request, None).await?;
    let keep = filter.map(crate::search::compile_filter).transpose()?;
    if let Some(keep) = &keep {
        frame = frame.filter(crate::prune_hint::prunes_by(keep.clone()))?;
    }
    let (origin, step) = cell_buckets(&request.window);
    let cells = cells_by::cells_by(col(s::START_TIME), origin, step, durations, keep, key).alias(cols::CELLS);
    collect_series(ctx, frame.aggregate(vec![], vec![cells])?).await
}

/// A list of `(cell, count)` pairs as cells.
fn counted_cells(pairs: &dyn Array, powers: bool) -> impl Iterator<Item = Cell> + '_ {
    let pairs = pairs.as_primitive::<Int64Type>().values();
    pairs.chunks_exact(2).map(move |pair| {
        let (bucket, power) = cells::cell_of(pair[0], powers);
        Cell { bucket: bucket.max(0) as usize, power, count: pair[1].max(0) as u64, ..Cell::default() }
    })
}

/// The answers of [`count_cells_by`] (one row each) as cells of series.
fn read_keyed_cells(answers: &arrow::array::StructArray, by: &[ByField], powers: bool, into: &mut Collected) {
    let list = |name: &str| answers.column_by_name(name).and_then(|c| c.as_list_opt::<i32>()).cloned();
    let (Some(keys), Some(cells)) = (list(cells_by::KEYS), list(cells_by::CELLS)) else { return };
    for row in (0..answers.len()).filter(|&row| answers.is_valid(row)) {
        let (keys, cells) = (keys.value(row), cells.value(row));
        let cells = cells.as_list::<i32>();
        for group in 0..keys.len().min(cells.len()) {
            let labels = by.iter().map(|b| crate::search::render_value(&keys, b.render, group)).collect();
            into.add_all(labels, counted_cells(&cells.value(group), powers));
        }
    }
}

/// The aggregate's rows as cells of series.
fn read_cells(batch: &RecordBatch, by: &[ByField], powers: bool, into: &mut Collected) {
    let column = |name: &str| batch.column_by_name(name);
    let group_columns: Vec<_> = (0..by.len()).filter_map(|i| column(&format!("__g{i}")).cloned()).collect();
    let labels = |row: usize| -> Vec<Option<serde_json::Value>> {
        group_columns.iter().zip(by).map(|(c, b)| crate::search::render_value(c, b.render, row)).collect()
    };
    if let Some(answer) = column(cols::CELLS).and_then(|c| c.as_struct_opt()) {
        read_keyed_cells(answer, by, powers, into);
        return;
    }
    if let Some(lists) = column(cols::CELLS).and_then(|c| c.as_list_opt::<i32>()) {
        for row in (0..batch.num_rows()).filter(|&row| lists.is_valid(row) && !lists.value(row).is_empty()) {
            into.add_all(labels(row), counted_cells(&lists.value(row), powers));
        }
        return;
    }
    let buckets = column(cols::BUCKET).map(|c| c.as_primitive::<Int64Type>().clone());
    let counts = column(cols::COUNT).map(|c| c.as_primitive::<Int64Type>().clone());
    let float = |name: &str| column(name).map(|c| c.as_primitive::<Float64Type>().clone());
    let (mins, maxes, sums) = (float(cols::MIN), float(cols::MAX), float(cols::SUM));
    let newest = column(cols::NEWEST).map(|c| c.as_struct().clone());
    let newest_field = |name: &str| newest.as_ref().and_then(|n| n.column_by_name(name)).cloned();
    let newest_starts = newest_field(newest::START).map(|c| c.as_primitive::<Int64Type>().clone());
    let newest_traces = newest_field(newest::TRACE).map(|c| c.as_fixed_size_binary().clone());
    let newest_values = newest_field(newest::VALUE).map(|c| c.as_primitive::<Float64Type>().clone());
    let power = column(cols::POWER).filter(|_| powers).map(|c| c.as_primitive::<Int64Type>().clone());
    let (Some(buckets), Some(counts)) = (buckets, counts) else { return };
    let read = |array: &Option<arrow::array::Float64Array>, row: usize| {
        array.as_ref().filter(|a| a.is_valid(row)).map(|a| a.value(row))
    };
    for row in 0..batch.num_rows() {
        // Values below 2, and values not finite, are in no power-of-two bucket.
        if powers && power.as_ref().is_none_or(|p| !p.is_valid(row) || p.value(row) < 1) {
            continue;
        }
        into.add(
            labels(row),
            Cell {
                bucket: buckets.value(row).max(0) as usize,
                power: power.as_ref().filter(|p| p.is_valid(row)).map(|p| p.value(row) as i32),
                count: counts.value(row).max(0) as u64,
                min: read(&mins, row),
                max: read(&maxes, row),
                sum: read(&sums, row),
                newest: match (&newest, &newest_starts, &newest_traces) {
                    (Some(newest), Some(starts), Some(traces)) if newest.is_valid(row) => Some(Newest {
                        start: starts.value(row),
                        trace_id: traces.value(row).try_into().expect("16-byte trace id"),
                        value: read(&newest_values, row),
                    }),
                    _ => None,
                },
            },
        );
    }
}
