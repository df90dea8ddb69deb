//! TraceQL search: spanset filters compiled to DataFusion, combined per trace.
//!
//! ```text
//!  every filter { … } ─compile─▶ DataFusion boolean column
//!  1. candidates: one aggregate over the window → per trace: newest match, which filters match
//!     → traces where the spanset expression can match (A && B needs both), newest first
//!  2. pages of candidates: every span of their traces (any time), one DataFusion read,
//!     with the filters' columns, the output fields and the summary columns
//!     → per trace, spans de-duplicated by span id (a retried export is counted once)
//!     → A > B, A >> B, A < B, A << B, A ~ B, A && B, A || B: linear passes (structure.rs)
//!     → | count() > n | avg(f) … | by(f) | select(f) | coalesce() | { nested }
//!  newest first: the candidates of the newest minute, then ≥ 8× wider, … of the window,
//!  each width's newest unread page (4 × limit) evaluated, until `limit` traces match;
//!  no candidate, or a page matching nothing, jumps to the whole window, where, if its
//!  newest page falls short too, the rest is read in trace-id ranges of about 500k spans
//! ```
//!
//! Memory is one page of spans and one row per candidate trace; time is
//! linear in the spans of the candidate traces.

mod compile;
mod element_values;
pub(crate) use element_values::{ValueKind, element_values};
mod fields;
mod response;
mod short_eq;
pub(crate) use short_eq::short_eq_udf;
mod structure;
mod tags;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{DataFusionError, JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::functions_aggregate::expr_fn::{bool_or, count, max, min};
use datafusion::logical_expr::utils::disjunction;
use datafusion::logical_expr::{Expr, cast, col, lit, when};
use datafusion::prelude::SessionContext;
use spanlake_schemas::TenantId;
use spanlake_schemas::schema as s;

pub(crate) use compile::attribute_struct;
pub(crate) use compile::compile as compile_filter;
use compile::{ROOT_NAME, ROOT_SERVICE, TRACE_DURATION};
pub(crate) use compile::{needs_trace_fields as filter_needs_trace_fields, numeric_value};
pub(crate) use fields::{OutputField, Render, go_duration, render as render_value};
pub(crate) use response::{SearchResponse, trace_id_hex};
use spanlake_schemas::merge::span_identity;
use structure::{Node, Shape};
pub(crate) use tags::tags_query;

use crate::Querier;
use crate::error::{QueryError, Result};
use crate::strings::Strings;
use crate::traceql::ast::*;

pub(crate) type TraceId = [u8; 16];
pub(crate) type SpanId = [u8; 8];

/// What `/api/search` was asked.
#[derive(Debug, Clone)]
pub(crate) struct SearchParams {
    pub(crate) query: Query,
    /// Span start window, Unix ns.
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) limit: usize,
    /// Spans per spanset returned.
    pub(crate) spss: usize,
    /// Trace duration bounds, ns.
    pub(crate) min_duration: Option<i64>,
    pub(crate) max_duration: Option<i64>,
}

/// One matched span with the values the query selected.
#[derive(Debug, Clone)]
pub(crate) struct SpanHit {
    pub(crate) span_id: SpanId,
    pub(crate) start: i64,
    pub(crate) duration: i64,
    pub(crate) name: String,
    /// Per output field: its JSON value, numeric reading and grouping key.
    pub(crate) values: Vec<(Option<serde_json::Value>, Option<f64>, String)>,
}

/// A group of matched spans of one trace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spanset {
    pub(crate) spans: Vec<SpanHit>,
    /// The `by()` values that formed this spanset.
    pub(crate) by: Vec<(String, serde_json::Value)>,
}

/// Trace-level facts over every span of a trace.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceSummary {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) root_service: Option<String>,
    pub(crate) root_name: Option<String>,
    /// service → (spans, errors)
    pub(crate) services: BTreeMap<String, (u64, u64)>,
}

struct Engine<'a> {
    ctx: SessionContext,
    params: &'a SearchParams,
    fields: Vec<OutputField>,
    needs_trace: bool,
    /// Every filter of the query, numbered as the leaves of the trees below.
    leaves: Vec<Option<FieldExpr>>,
    /// The spanset expression; its filters are `leaves[..main_leaves]`.
    main: Node,
    main_leaves: usize,
    /// For each pipeline stage that is a spanset expression, its tree.
    stage_nodes: Vec<Option<Node>>,
    /// (min start, max end, spans) of the blocks in the window, from the
    /// catalog: a narrower window is tried only if its blocks can hold a page.
    block_ranges: Vec<(i64, i64, u64)>,
}

/// A trace with a span in the window that can match the query.
struct Candidate {
    trace: TraceId,
    /// Start of its newest span matching a filter.
    newest: i64,
    /// Its spans matching a filter: what reading it costs, roughly.
    spans: u64,
}

/// Trace ids listed in the query itself, up to this many; a page of more is
/// read as a trace-id range joined with the page's ids.
const IN_LIST_MAX: usize = 1000;
/// Spans (as the candidates counted them) read at once after the first page.
const PAGE_SPANS: u64 = 500_000;
/// Traces the related-trace join found, read at once.
const RELATED_PAGE: usize = 20_000;

/// Columns of a page read: the span's place in its trace, the filters'
/// matches from `LEAVES` on, then (a detailed read) from the end of the
/// matches: the summary columns at these offsets and the output fields.
mod page {
    pub(super) const TRACE: usize = 0;
    pub(super) const SPAN: usize = 1;
    pub(super) const PARENT: usize = 2;
    pub(super) const KIND: usize = 3;
    pub(super) const LEAVES: usize = 4;
    pub(super) const START: usize = 0;
    pub(super) const END: usize = 1;
    pub(super) const DURATION: usize = 2;
    pub(super) const NAME: usize = 3;
    pub(super) const SERVICE: usize = 4;
    pub(super) const ERROR: usize = 5;
    pub(super) const FIELDS: usize = 6;
}

fn trace_id_literal(id: &TraceId) -> Expr {
    lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec())))
}

fn in_traces(ids: &[TraceId]) -> Expr {
    col(s::TRACE_ID).in_list(ids.iter().map(trace_id_literal).collect(), false)
}

/// `spans` with the trace-level fields of their traces as columns
/// (duration, root span's name and service), computed over `summarized`.
pub(crate) fn join_trace_fields(spans: DataFrame, summarized: DataFrame) -> Result<DataFrame> {
    let root = |column: &str| when(col(s::PARENT_SPAN_ID).is_null(), col(column)).end();
    let summary = summarized
        .aggregate(
            vec![col(s::TRACE_ID).alias("__tid")],
            vec![
                min(cast(col(s::START_TIME), DataType::Int64)).alias("__tstart"),
                max(cast(col(s::END_TIME), DataType::Int64)).alias("__tend"),
                max(root(s::NAME)?).alias(ROOT_NAME),
                max(root(s::SERVICE_NAME)?).alias(ROOT_SERVICE),
            ],
        )?
        .select(vec![
            col("__tid"),
            (col("__tend") - col("__tstart")).alias(TRACE_DURATION),
            col(ROOT_NAME),
            col(ROOT_SERVICE),
        ])?;
    Ok(spans.join(summary, JoinType::Inner, &[s::TRACE_ID], &["__tid"], None)?)
}

impl<'a> Engine<'a> {
    fn new(ctx: SessionContext, params: &'a SearchParams) -> Result<Self> {
        let mut leaves = Vec::new();
        let main = Node::build(&params.query.spansets, &mut leaves);
        let main_leaves = leaves.len();
        let stage_nodes = params
            .query
            .stages
            .iter()
            .map(|stage| match stage {
                Stage::Spanset(expr) => Some(Node::build(expr, &mut leaves)),
                _ => None,
            })
            .collect();
        Ok(Self {
            ctx,
            params,
            fields: output_fields(&params.query)?,
            needs_trace: needs_trace_fields(&params.query),
            leaves,
            main,
            main_leaves,
            stage_nodes,
            block_ranges: Vec::new(),
        })
    }

    fn time_filter(&self) -> Expr {
        self.time_filter_from(self.params.start)
    }

    /// Spans starting from `start` to the window's end.
    fn time_filter_from(&self, start: i64) -> Expr {
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        col(s::START_TIME).gt_eq(ts(start)).and(col(s::START_TIME).lt_eq(ts(self.params.end)))
    }

    /// Every span of `traces` (of all traces for `None`), at any time.
    async fn spans_of(&self, traces: Option<&[TraceId]>) -> Result<DataFrame> {
        let spans = self.ctx.table(crate::sql::SPANS_AS_STORED).await?;
        let Some(traces) = traces else { return Ok(spans) };
        if traces.len() <= IN_LIST_MAX {
            return Ok(spans.filter(in_traces(traces))?);
        }
        let (Some(lo), Some(hi)) = (traces.iter().min(), traces.iter().max()) else { return Ok(spans) };
        let ids = FixedSizeBinaryArray::try_from_iter(traces.iter()).map_err(DataFusionError::from)?;
        let ids =
            RecordBatch::try_from_iter([("__page_trace", Arc::new(ids) as ArrayRef)]).map_err(DataFusionError::from)?;
        let page = self.ctx.read_batch(ids)?;
        let range = col(s::TRACE_ID).gt_eq(trace_id_literal(lo)).and(col(s::TRACE_ID).lt_eq(trace_id_literal(hi)));
        Ok(spans.filter(range)?.join(page, JoinType::LeftSemi, &[s::TRACE_ID], &["__page_trace"], None)?)
    }

    /// [`Self::spans_of`] with the trace-level fields as columns when the
    /// query reads them (computed over the spans in the window).
    async fn with_trace_fields(&self, traces: Option<&[TraceId]>) -> Result<DataFrame> {
        let spans = self.spans_of(traces).await?;
        if !self.needs_trace {
            return Ok(spans);
        }
        join_trace_fields(spans, self.spans_of(traces).await?.filter(self.time_filter())?)
    }

    /// Traces with a span starting from `start` (in the window) matching one
    /// of the filters and the filters the spanset expression needs, newest
    /// first. One aggregate.
    async fn candidates_from(&self, start: i64) -> Result<Vec<Candidate>> {
        let main = &self.leaves[..self.main_leaves];
        let mut frame = self.with_trace_fields(None).await?.filter(self.time_filter_from(start))?;
        if main.iter().all(Option::is_some) {
            let any = main.iter().flatten().map(compile::compile).collect::<Result<Vec<_>>>()?;
            if let Some(any) = disjunction(any) {
                frame = frame.filter(any)?;
            }
        }
        let mut aggregates =
            vec![max(cast(col(s::START_TIME), DataType::Int64)).alias("__newest"), count(lit(1)).alias("__n")];
        // Column of each filter's "some span matches" (None: `{}`, always;
        // and a lone filter: the WHERE above already made it true).
        let mut flag_columns = Vec::with_capacity(main.len());
        for (i, filter) in main.iter().enumerate() {
            flag_columns.push(match filter {
                Some(filter) if main.len() > 1 => {
                    aggregates.push(bool_or(compile::compile(filter)?).alias(format!("__c{i}")));
                    Some(aggregates.len())
                }
                _ => None,
            });
        }
        let (batches, _held) = self.collect(frame.aggregate(vec![col(s::TRACE_ID)], aggregates)?).await?;
        let mut out = Vec::new();
        for batch in &batches {
            let ids = batch.column(0).as_fixed_size_binary();
            let newest = batch.column(1).as_primitive::<Int64Type>();
            let spans = batch.column(2).as_primitive::<Int64Type>();
            let flags: Vec<Option<&BooleanArray>> =
                flag_columns.iter().map(|c| c.map(|c| batch.column(c).as_boolean())).collect();
            for row in 0..batch.num_rows() {
                let present = |n: usize| flags[n].is_none_or(|f| f.is_valid(row) && f.value(row));
                let Ok(trace) = TraceId::try_from(ids.value(row)) else { continue };
                if self.main.possible(&present) {
                    out.push(Candidate { trace, newest: newest.value(row), spans: spans.value(row).max(0) as u64 });
                }
            }
        }
        out.sort_unstable_by(|a, b| b.newest.cmp(&a.newest).then(a.trace.cmp(&b.trace)));
        Ok(out)
    }

    /// For `{A} > {B}`, `{A} < {B}` and `{A} ~ {B}` (one side may be `{ }`,
    /// every span): the traces where some span matching `B` is the child,
    /// the parent or a sibling of a span matching `A`, by one join on
    /// (trace, span or parent id), built on the side with a filter. Used when
    /// the newest candidates gave too few matches (matches are rare): traces
    /// whose spans match both sides but are not so related are then never
    /// read, and a query that matches nothing answers after the join. (The
    /// join may also keep a trace whose matching spans are related only
    /// through a parent that is not in it; reading the trace settles that.)
    async fn related_traces(&self) -> Result<Option<HashSet<TraceId>>> {
        let Node::Binary { op, lhs, rhs } = &self.main else { return Ok(None) };
        let (Node::Leaf(a), Node::Leaf(b)) = (lhs.as_ref(), rhs.as_ref()) else { return Ok(None) };
        let (a, b) = (&self.leaves[*a], &self.leaves[*b]);
        if a.is_none() && b.is_none() {
            // Every span on both sides: the join would hold the whole window.
            return Ok(None);
        }
        let (b_key, a_key, other_span) = match op {
            SpansetOp::Child => (s::PARENT_SPAN_ID, "__a_span", false),
            SpansetOp::Parent => (s::SPAN_ID, "__a_parent", false),
            SpansetOp::Sibling => (s::PARENT_SPAN_ID, "__a_parent", true),
            _ => return Ok(None),
        };
        let base = self.with_trace_fields(None).await?.filter(self.time_filter())?;
        let mut a_side = base.clone();
        if let Some(a) = a {
            a_side = a_side.filter(compile::compile(a)?)?;
        }
        let a_side = a_side.select(vec![
            col(s::TRACE_ID).alias("__a_trace"),
            col(s::SPAN_ID).alias("__a_span"),
            col(s::PARENT_SPAN_ID).alias("__a_parent"),
        ])?;
        let b_side = match b {
            Some(b) => base.filter(compile::compile(b)?)?,
            None => base,
        };
        let not_itself = other_span.then(|| col(s::SPAN_ID).not_eq(col("__a_span")));
        // The hash table is built on the left input: the side with a filter.
        let related = if a.is_some() {
            a_side.join(b_side, JoinType::RightSemi, &["__a_trace", a_key], &[s::TRACE_ID, b_key], not_itself)?
        } else {
            b_side.join(a_side, JoinType::LeftSemi, &[s::TRACE_ID, b_key], &["__a_trace", a_key], not_itself)?
        };
        let (batches, _held) = self.collect(related.aggregate(vec![col(s::TRACE_ID)], vec![])?).await?;
        let mut out = HashSet::new();
        for batch in &batches {
            let ids = batch.column(0).as_fixed_size_binary();
            out.extend((0..batch.num_rows()).filter_map(|row| TraceId::try_from(ids.value(row)).ok()));
        }
        Ok(Some(out))
    }

    /// Every span of `traces`: id, parent and whether it matches each filter,
    /// then, with `details`, its summary columns and output fields.
    async fn read_page(&self, traces: &[TraceId], details: bool) -> Result<(Vec<RecordBatch>, MemoryReservation)> {
        let mut columns = vec![col(s::TRACE_ID), col(s::SPAN_ID), col(s::PARENT_SPAN_ID), col(s::KIND)];
        for (i, filter) in self.leaves.iter().enumerate() {
            let matches = match filter {
                Some(filter) => self.time_filter().and(compile::compile(filter)?),
                None => self.time_filter(),
            };
            columns.push(matches.is_true().alias(format!("__m{i}")));
        }
        if details {
            columns.extend([
                cast(col(s::START_TIME), DataType::Int64),
                cast(col(s::END_TIME), DataType::Int64),
                col(s::DURATION_NS),
                col(s::NAME),
                col(s::SERVICE_NAME),
                col(s::STATUS_CODE).eq(lit("error")).is_true().alias("__error"),
            ]);
            columns.extend(self.fields.iter().enumerate().map(|(i, f)| f.expr.clone().alias(format!("__f{i}"))));
        }
        self.collect(self.with_trace_fields(Some(traces)).await?.select(columns)?).await
    }

    /// The rows of `frame`, held against the query's memory pool (with the
    /// operators' state): the reservation lives as long as the rows.
    async fn collect(&self, frame: DataFrame) -> Result<(Vec<RecordBatch>, MemoryReservation)> {
        crate::memory::collect_counted(
            &self.ctx,
            frame,
            "the traces this search reads",
            "narrow the time range or the filters",
        )
        .await
    }

    /// Of `traces`, those the spanset expression matches, from a narrow read
    /// (structure and filter matches only).
    async fn matching(&self, traces: &[TraceId], found: &mut Found) -> Result<Vec<TraceId>> {
        if let Node::Leaf(_) = self.main {
            // One filter: every candidate has a matching span.
            found.inspected_traces += traces.len() as u64;
            return Ok(traces.to_vec());
        }
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let (batches, _held) = self.read_page(traces, false).await?;
        let rows = spans_by_trace(&batches);
        let mut out = Vec::new();
        for trace_rows in rows.chunk_by(|a, b| a.0 == b.0) {
            found.inspected_traces += 1;
            let at: Vec<(&RecordBatch, usize)> =
                trace_rows.iter().map(|r| (&batches[r.2 as usize], r.3 as usize)).collect();
            let (_, shape) = shape_of(&at);
            if shape.eval(&self.main, &|n, i| leaf(&at, n, i)).contains(&true) {
                out.push(trace_rows[0].0);
            }
        }
        Ok(out)
    }

    /// Evaluates the whole query (stages, summaries, output fields) over
    /// every span of `traces`, adding what matches to `found`.
    async fn evaluate(&self, traces: &[TraceId], found: &mut Found) -> Result<()> {
        if traces.is_empty() {
            return Ok(());
        }
        let (batches, _held) = self.read_page(traces, true).await?;
        for trace_rows in spans_by_trace(&batches).chunk_by(|a, b| a.0 == b.0) {
            let at: Vec<(&RecordBatch, usize)> =
                trace_rows.iter().map(|r| (&batches[r.2 as usize], r.3 as usize)).collect();
            if let Some((summary, sets)) = self.evaluate_trace(&at)? {
                found.traces.push((trace_rows[0].0, summary, sets));
            }
        }
        Ok(())
    }

    /// The spansets of one trace (its spans as rows of a page), if it matches.
    fn evaluate_trace(&self, at: &[(&RecordBatch, usize)]) -> Result<Option<(TraceSummary, Vec<Spanset>)>> {
        let (spans, shape) = shape_of(at);
        let leaf = |n: usize, i: usize| leaf(at, n, i);
        let matched = shape.eval(&self.main, &leaf);
        if !matched.contains(&true) {
            return Ok(None);
        }
        let summary = summarize(at, page::LEAVES + self.leaves.len());
        let duration = summary.end - summary.start;
        if self.params.min_duration.is_some_and(|d| duration < d)
            || self.params.max_duration.is_some_and(|d| duration > d)
        {
            return Ok(None);
        }
        let nested =
            self.fields.iter().any(|f| matches!(f.render, fields::Render::NestedSet(_))).then(|| shape.nested_set());
        let hits = (0..at.len())
            .filter(|i| matched[*i])
            .map(|i| {
                let mut hit = self.hit(at[i].0, at[i].1);
                if let Some(numbers) = &nested {
                    self.fill_nested_set(&mut hit, numbers[i]);
                }
                hit
            })
            .collect();
        let sets = self.pipeline(hits, |node| {
            let keep = shape.eval(node, &leaf);
            (0..spans.len()).filter(|i| keep[*i]).map(|i| spans[i].0).collect()
        })?;
        Ok((!sets.is_empty()).then_some((summary, sets)))
    }

    /// Sets the `nestedSet*` fields of `hit` from its (left, right, parent).
    fn fill_nested_set(&self, hit: &mut SpanHit, (left, right, parent): (i64, i64, i64)) {
        for (field, value) in self.fields.iter().zip(&mut hit.values) {
            let number = match field.render {
                fields::Render::NestedSet(Intrinsic::NestedSetLeft) => left,
                fields::Render::NestedSet(Intrinsic::NestedSetRight) => right,
                fields::Render::NestedSet(_) => parent,
                _ => continue,
            };
            *value =
                (Some(serde_json::json!({ "intValue": number.to_string() })), Some(number as f64), number.to_string());
        }
    }

    /// One span of a page as a hit, with its output fields.
    fn hit(&self, batch: &RecordBatch, row: usize) -> SpanHit {
        let details = page::LEAVES + self.leaves.len();
        let fields_at = details + page::FIELDS;
        let values = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let array = batch.column(fields_at + i);
                (fields::render(array, f.render, row), fields::numeric(array, row), fields::key(array, f.render, row))
            })
            .collect();
        SpanHit {
            span_id: batch.column(page::SPAN).as_fixed_size_binary().value(row).try_into().unwrap_or_default(),
            start: batch.column(details + page::START).as_primitive::<Int64Type>().value(row),
            duration: batch.column(details + page::DURATION).as_primitive::<Int64Type>().value(row),
            name: Strings::expect(batch.column(details + page::NAME)).value(row).to_owned(),
            values,
        }
    }
}

/// Rows of a page by trace, one per span of a trace: a span stored twice
/// (a retried export) is read once, as compaction keeps it (equal span id
/// and kind).
fn spans_by_trace(batches: &[RecordBatch]) -> Vec<(TraceId, (u64, u64), u32, u32)> {
    let mut rows = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let (ids, spans) =
            (batch.column(page::TRACE).as_fixed_size_binary(), batch.column(page::SPAN).as_fixed_size_binary());
        let kinds = Strings::expect(batch.column(page::KIND));
        for row in 0..batch.num_rows() {
            if let Ok(trace) = TraceId::try_from(ids.value(row)) {
                let kind = kinds.get(row).unwrap_or_default();
                rows.push((trace, span_identity(spans.value(row), kind), b as u32, row as u32));
            }
        }
    }
    rows.sort_unstable_by_key(|r| (r.0, r.1));
    rows.dedup_by_key(|r| (r.0, r.1));
    rows
}

/// (span id, parent id) of the rows of one trace, and its tree.
fn shape_of(at: &[(&RecordBatch, usize)]) -> (Vec<(SpanId, Option<SpanId>)>, Shape) {
    let spans: Vec<(SpanId, Option<SpanId>)> = at
        .iter()
        .map(|(batch, row)| {
            let (spans, parents) =
                (batch.column(page::SPAN).as_fixed_size_binary(), batch.column(page::PARENT).as_fixed_size_binary());
            let span = spans.value(*row).try_into().unwrap_or_default();
            (span, parents.is_valid(*row).then(|| parents.value(*row).try_into().ok()).flatten())
        })
        .collect();
    let shape = Shape::new(&spans);
    (spans, shape)
}

/// Whether span `i` of a trace's rows matches filter `n`.
fn leaf(at: &[(&RecordBatch, usize)], n: usize, i: usize) -> bool {
    let (batch, row) = at[i];
    batch.column(page::LEAVES + n).as_boolean().value(row)
}

/// Trace-level facts over the rows of one trace; `details`: where the
/// summary columns start.
fn summarize(at: &[(&RecordBatch, usize)], details: usize) -> TraceSummary {
    let mut summary = TraceSummary { start: i64::MAX, end: i64::MIN, ..TraceSummary::default() };
    for (batch, row) in at {
        let row = *row;
        let parents = batch.column(page::PARENT);
        let service = Strings::expect(batch.column(details + page::SERVICE));
        summary.start = summary.start.min(batch.column(details + page::START).as_primitive::<Int64Type>().value(row));
        summary.end = summary.end.max(batch.column(details + page::END).as_primitive::<Int64Type>().value(row));
        let service_name = service.get(row).map(str::to_owned);
        if parents.is_null(row) && summary.root_name.is_none() {
            summary.root_name = Some(Strings::expect(batch.column(details + page::NAME)).value(row).to_owned());
            summary.root_service = service_name.clone();
        }
        let stats = summary.services.entry(service_name.unwrap_or_default()).or_default();
        stats.0 += 1;
        stats.1 += u64::from(batch.column(details + page::ERROR).as_boolean().value(row));
    }
    summary
}

/// How many of the newest candidates are read first, when not every
/// candidate is sure to match.
fn first_page(limit: usize) -> usize {
    (limit.max(1) * 4).max(50)
}

/// Sorts `found` newest first and keeps `limit`.
fn keep_newest(found: &mut Vec<(TraceId, TraceSummary, Vec<Spanset>)>, limit: usize) {
    found.sort_by(|a, b| b.1.start.cmp(&a.1.start).then(a.0.cmp(&b.0)));
    found.truncate(limit);
}

/// Splits candidates sorted by trace id into pages of about [`PAGE_SPANS`].
fn pages(candidates: &[Candidate]) -> Vec<Vec<TraceId>> {
    let mut out = Vec::new();
    let (mut page, mut spans) = (Vec::new(), 0);
    for candidate in candidates {
        page.push(candidate.trace);
        spans += candidate.spans;
        if spans >= PAGE_SPANS {
            out.push(std::mem::take(&mut page));
            spans = 0;
        }
    }
    if !page.is_empty() {
        out.push(page);
    }
    out
}

/// Adds `spans` to `into`, skipping span ids already there.
fn merge_spans(into: &mut Vec<SpanHit>, spans: Vec<SpanHit>) {
    let seen: HashSet<SpanId> = into.iter().map(|s| s.span_id).collect();
    into.extend(spans.into_iter().filter(|s| !seen.contains(&s.span_id)));
}

/// Fields the query reads or returns, in a fixed order.
fn output_fields(query: &Query) -> Result<Vec<OutputField>> {
    let mut wanted: Vec<(FieldExpr, bool)> = Vec::new();
    fn from_spanset(expr: &SpansetExpr, wanted: &mut Vec<(FieldExpr, bool)>) {
        match expr {
            SpansetExpr::Filter(Some(f)) => referenced(f, wanted),
            SpansetExpr::Filter(None) => {}
            SpansetExpr::Binary { lhs, rhs, .. } => {
                from_spanset(lhs, wanted);
                from_spanset(rhs, wanted);
            }
        }
    }
    fn referenced(expr: &FieldExpr, wanted: &mut Vec<(FieldExpr, bool)>) {
        match expr {
            FieldExpr::Binary { lhs, rhs, .. } => {
                referenced(lhs, wanted);
                referenced(rhs, wanted);
            }
            FieldExpr::Not(e) | FieldExpr::Negate(e) => referenced(e, wanted),
            field if fields::shown_in_results(field) => wanted.push((field.clone(), true)),
            _ => {}
        }
    }
    from_spanset(&query.spansets, &mut wanted);
    for stage in &query.stages {
        match stage {
            Stage::Select(list) => wanted.extend(list.iter().map(|f| (f.clone(), true))),
            Stage::By(list) => wanted.extend(list.iter().map(|f| (f.clone(), false))),
            Stage::Scalar { aggregate, .. } => match aggregate {
                Aggregate::Count => {}
                Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f) => {
                    wanted.push((f.clone(), false))
                }
            },
            Stage::Spanset(expr) => from_spanset(expr, &mut wanted),
            Stage::Coalesce => {}
        }
    }
    let mut out: Vec<OutputField> = Vec::new();
    for (field, shown) in wanted {
        let field = OutputField::for_expr(&field, shown)?;
        match out.iter_mut().find(|f| f.key == field.key) {
            Some(existing) => existing.shown |= field.shown,
            None => out.push(field),
        }
    }
    Ok(out)
}

fn needs_trace_fields(query: &Query) -> bool {
    fn spanset(expr: &SpansetExpr) -> bool {
        match expr {
            SpansetExpr::Filter(Some(f)) => compile::needs_trace_fields(f),
            SpansetExpr::Filter(None) => false,
            SpansetExpr::Binary { lhs, rhs, .. } => spanset(lhs) || spanset(rhs),
        }
    }
    spanset(&query.spansets)
        || query.stages.iter().any(|stage| match stage {
            Stage::Select(list) | Stage::By(list) => list.iter().any(OutputField::needs_trace_fields),
            Stage::Spanset(expr) => spanset(expr),
            Stage::Scalar { aggregate: Aggregate::Count, .. } | Stage::Coalesce => false,
            Stage::Scalar {
                aggregate: Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f),
                ..
            } => OutputField::needs_trace_fields(f),
        })
}

impl Engine<'_> {
    /// Applies the pipeline stages to one trace's matched spans;
    /// `spanset(node)` is the span ids a spanset expression selects in it.
    fn pipeline(&self, hits: Vec<SpanHit>, spanset: impl Fn(&Node) -> HashSet<SpanId>) -> Result<Vec<Spanset>> {
        let mut sets = vec![Spanset { spans: hits, by: Vec::new() }];
        for (stage, node) in self.params.query.stages.iter().zip(&self.stage_nodes) {
            match stage {
                Stage::Select(_) => {}
                Stage::Coalesce => {
                    let mut all = Spanset::default();
                    for set in sets.drain(..) {
                        merge_spans(&mut all.spans, set.spans);
                    }
                    sets = vec![all];
                }
                Stage::By(list) => {
                    let indexes: Vec<usize> = list.iter().map(|f| self.field_index(f)).collect::<Result<_>>()?;
                    let mut split: Vec<Spanset> = Vec::new();
                    for set in sets.drain(..) {
                        let mut groups: BTreeMap<Vec<String>, Spanset> = BTreeMap::new();
                        for span in set.spans {
                            let key: Vec<String> = indexes.iter().map(|i| span.values[*i].2.clone()).collect();
                            let group = groups.entry(key).or_insert_with(|| Spanset {
                                spans: Vec::new(),
                                by: indexes
                                    .iter()
                                    .filter_map(|i| Some((self.fields[*i].key.clone(), span.values[*i].0.clone()?)))
                                    .collect(),
                            });
                            group.spans.push(span);
                        }
                        split.extend(groups.into_values());
                    }
                    sets = split;
                }
                Stage::Scalar { aggregate, op, value } => {
                    let threshold = match value {
                        Static::Int(i) => *i as f64,
                        Static::Float(f) => *f,
                        Static::Duration(d) => *d as f64,
                        _ => {
                            return Err(QueryError::InvalidParameter {
                                name: "q",
                                reason: "aggregates compare with numbers".into(),
                            });
                        }
                    };
                    let index = match aggregate {
                        Aggregate::Count => None,
                        Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f) => {
                            Some(self.field_index(f)?)
                        }
                    };
                    sets.retain(|set| {
                        let numbers = || set.spans.iter().filter_map(|s| s.values[index.unwrap()].1);
                        let result = match aggregate {
                            Aggregate::Count => Some(set.spans.len() as f64),
                            Aggregate::Sum(_) => Some(numbers().sum()),
                            Aggregate::Min(_) => numbers().reduce(f64::min),
                            Aggregate::Max(_) => numbers().reduce(f64::max),
                            Aggregate::Avg(_) => {
                                let (sum, n) = numbers().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
                                (n > 0).then(|| sum / n as f64)
                            }
                        };
                        result.is_some_and(|r| op.holds(r, threshold))
                    });
                }
                Stage::Spanset(_) => {
                    let Some(node) = node else { continue };
                    let keep = spanset(node);
                    for set in &mut sets {
                        set.spans.retain(|s| keep.contains(&s.span_id));
                    }
                    sets.retain(|set| !set.spans.is_empty());
                }
            }
            if sets.is_empty() {
                break;
            }
        }
        Ok(sets)
    }

    fn field_index(&self, field: &FieldExpr) -> Result<usize> {
        let key = OutputField::for_expr(field, false)?.key;
        Ok(self.fields.iter().position(|f| f.key == key).expect("every stage field is selected"))
    }
}

/// A page of results: matched traces with their summaries.
pub(crate) struct Found {
    pub(crate) traces: Vec<(TraceId, TraceSummary, Vec<Spanset>)>,
    pub(crate) inspected_traces: u64,
}

impl Querier {
    pub(crate) async fn search(&self, tenant: &TenantId, params: &SearchParams) -> Result<SearchResponse> {
        let blocks = self.catalog.blocks(tenant, |b| b.overlaps(params.start, params.end));
        let block_ranges: Vec<(i64, i64, u64)> =
            blocks.iter().map(|b| (b.min_time_unix_nano, b.max_time_unix_nano, b.span_count)).collect();
        // Each of the search's reads is one plan: a large one spreads over
        // the queriers; the newest-first widening stops it as early as here.
        let ((found, fields, skipped), _) = self
            .spread_or_here(Some(tenant), |ctx| {
                let block_ranges = block_ranges.clone();
                async move {
                    let mut engine = Engine::new(ctx, params)?;
                    engine.block_ranges = block_ranges;
                    let found = engine.run().await?;
                    Ok((found, engine.fields, crate::sql::skipped_blocks(&engine.ctx)))
                }
            })
            .await?;
        let mut response =
            SearchResponse::new(found, &fields, params, blocks.len() as u64, blocks.iter().map(|b| b.size_bytes).sum());
        response.1 = skipped;
        Ok(response)
    }
}

impl Engine<'_> {
    /// Newest first, widening: the candidates of the newest minute, then of
    /// a wider part of the window, each width's newest unread page
    /// evaluated, until `limit` traces match. A trace is read whole, with
    /// its matches over the whole window, so its answer is final when first
    /// read; a wider window's candidates include the narrower's, and only
    /// those not read yet are. Each step widens 8×, or more when the
    /// candidates so far are sparse (to about two pages). A width with no
    /// candidate, or whose page matches nothing, says matches are rare: the
    /// whole window is next. There, where a join can tell which traces may
    /// hold a match (`{A} > {B}`, `<`, `~`), only those are read; otherwise
    /// the newest unread candidates, then (if too few matched) every other
    /// candidate in pages of trace-id ranges, keeping the newest matches
    /// (the join may still narrow those). A query that reads trace-level fields
    /// (computed over the whole window) starts with the whole window.
    async fn run(&self) -> Result<Found> {
        let params = self.params;
        let limit = params.limit.max(1);
        // One filter and nothing after it: every candidate matches, so the
        // newest `limit` of them are the answer, and no more are read.
        let plain = matches!(self.main, Node::Leaf(_))
            && params.query.stages.is_empty()
            && params.min_duration.is_none()
            && params.max_duration.is_none();
        let page = if plain { limit } else { first_page(limit) };
        let mut found = Found { traces: Vec::new(), inspected_traces: 0 };
        let mut read: HashSet<TraceId> = HashSet::new();
        // Whether a narrower window said matches are rare.
        let mut rare = false;
        let window = params.end.saturating_sub(params.start);
        let mut width: i64 = if self.needs_trace { window } else { 60_000_000_000 };
        while width < window {
            let from = params.end - width;
            // Blocks that reach into the narrower window; too few spans
            // there for a page, and it is not worth a query.
            let spans: u64 = self.block_ranges.iter().filter(|b| b.1 >= from).map(|b| b.2).sum();
            if spans < page as u64 {
                width = width.saturating_mul(8);
                continue;
            }
            let candidates = self.candidates_from(from).await?;
            let before = found.traces.len();
            let fresh: Vec<TraceId> =
                candidates.iter().map(|c| c.trace).filter(|t| !read.contains(t)).take(page).collect();
            read.extend(&fresh);
            let matching = self.matching(&fresh, &mut found).await?;
            self.evaluate(&matching, &mut found).await?;
            if found.traces.len() >= limit {
                keep_newest(&mut found.traces, limit);
                return Ok(found);
            }
            if fresh.is_empty() || found.traces.len() == before {
                rare = true;
                break;
            }
            let factor = (2 * page).div_ceil(candidates.len()).max(8);
            width = width.saturating_mul(i64::try_from(factor).unwrap_or(i64::MAX));
        }
        if rare && let Some(related) = self.related_traces().await? {
            // Matches are rare, and a join can tell which traces may hold
            // one: only those are read, without listing every candidate.
            let mut related: Vec<TraceId> = related.into_iter().filter(|t| !read.contains(t)).collect();
            related.sort_unstable();
            for traces in related.chunks(RELATED_PAGE) {
                let matching = self.matching(traces, &mut found).await?;
                self.evaluate(&matching, &mut found).await?;
                keep_newest(&mut found.traces, limit);
            }
            return Ok(found);
        }
        let mut newest = self.candidates_from(params.start).await?;
        newest.retain(|c| !read.contains(&c.trace));
        drop(read);
        let mut rest = newest.split_off(page.min(newest.len()));
        let matching = self.matching(&newest.iter().map(|c| c.trace).collect::<Vec<_>>(), &mut found).await?;
        self.evaluate(&matching, &mut found).await?;
        drop(newest);
        if found.traces.len() < limit && !rest.is_empty() {
            // Matches are rare: where a join can tell which traces hold one,
            // only those are read.
            if let Some(related) = self.related_traces().await? {
                rest.retain(|c| related.contains(&c.trace));
            }
            rest.sort_unstable_by_key(|c| c.trace);
            for page in pages(&rest) {
                let matching = self.matching(&page, &mut found).await?;
                self.evaluate(&matching, &mut found).await?;
                keep_newest(&mut found.traces, limit);
            }
        }
        keep_newest(&mut found.traces, limit);
        Ok(found)
    }
}
