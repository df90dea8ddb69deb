//! TraceQL search: spanset filters compiled to DataFusion, combined per trace.
//!
//! ```text
//!  { filter } ─compile─▶ DataFusion query over `spans` (time window, pruning) ─▶ matched spans per trace
//!  A && B, A || B, A > B, A >> B, A < B, A << B, A ~ B  ─▶ combined per trace in Rust
//!      (descendant/ancestor walk parent links fetched for the traces involved only)
//!  | count() > n | avg(f) … | by(f) | select(f) | coalesce() | { nested }  ─▶ per-trace spansets
//!  trace summaries (root, start, duration, services) over the whole trace ─▶ newest first
//! ```
//!
//! A query that is one filter runs in two phases, so `{}` over millions of
//! spans never collects them: the newest matching traces are found with an
//! aggregate, then only those traces' matching spans are read.

mod compile;
mod fields;
mod response;
mod tags;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimestampNanosecondType};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::logical_expr::{Expr, cast, col, lit, when};
use datafusion::prelude::SessionContext;
use spanlake_schemas::TenantId;
use spanlake_schemas::schema as s;

pub(crate) use compile::attribute_struct;
pub(crate) use compile::compile as compile_filter;
use compile::{ROOT_NAME, ROOT_SERVICE, TRACE_DURATION};
use fields::OutputField;
pub(crate) use response::SearchResponse;
pub(crate) use tags::tags_query;

use crate::Querier;
use crate::error::{QueryError, Result};
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
    pub(crate) parent: Option<SpanId>,
    pub(crate) start: i64,
    pub(crate) duration: i64,
    pub(crate) name: String,
    /// Per output field: its JSON value, numeric reading and grouping key.
    pub(crate) values: Vec<(Option<serde_json::Value>, Option<f64>, String)>,
}

type Hits = HashMap<TraceId, Vec<SpanHit>>;

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
}

fn trace_id_literal(id: &TraceId) -> Expr {
    lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec())))
}

fn in_traces(ids: &[TraceId]) -> Expr {
    col(s::TRACE_ID).in_list(ids.iter().map(trace_id_literal).collect(), false)
}

impl Engine<'_> {
    fn time_filter(&self) -> Expr {
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        col(s::START_TIME).gt_eq(ts(self.params.start)).and(col(s::START_TIME).lt_eq(ts(self.params.end)))
    }

    /// Spans in the window, joined with trace-level fields when needed.
    async fn base(&self) -> Result<DataFrame> {
        let spans = self.ctx.table("spans").await?.filter(self.time_filter())?;
        if !self.needs_trace {
            return Ok(spans);
        }
        let root = |column: &str| when(col(s::PARENT_SPAN_ID).is_null(), col(column)).end();
        let summary = self
            .ctx
            .table("spans")
            .await?
            .filter(self.time_filter())?
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

    /// Spans matching `filter` (all spans for `None`), optionally only in `traces`.
    async fn filter(&self, filter: Option<&FieldExpr>, traces: Option<&[TraceId]>) -> Result<Hits> {
        let mut frame = self.base().await?;
        if let Some(filter) = filter {
            frame = frame.filter(compile::compile(filter)?)?;
        }
        if let Some(traces) = traces {
            if traces.is_empty() {
                return Ok(Hits::new());
            }
            frame = frame.filter(in_traces(traces))?;
        }
        let mut columns = vec![
            col(s::TRACE_ID),
            col(s::SPAN_ID),
            col(s::PARENT_SPAN_ID),
            col(s::START_TIME),
            col(s::DURATION_NS),
            col(s::NAME),
        ];
        columns.extend(self.fields.iter().enumerate().map(|(i, f)| f.expr.clone().alias(format!("__f{i}"))));
        let batches = frame.select(columns)?.collect().await?;
        let mut hits = Hits::new();
        for batch in &batches {
            self.collect_hits(batch, &mut hits);
        }
        Ok(hits)
    }

    fn collect_hits(&self, batch: &RecordBatch, hits: &mut Hits) {
        let traces = batch.column(0).as_fixed_size_binary();
        let spans = batch.column(1).as_fixed_size_binary();
        let parents = batch.column(2).as_fixed_size_binary();
        let starts = batch.column(3).as_primitive::<TimestampNanosecondType>();
        let durations = batch.column(4).as_primitive::<Int64Type>();
        let names = batch.column(5).as_string::<i32>();
        for row in 0..batch.num_rows() {
            let values = self
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let array = batch.column(6 + i);
                    let render_as = f.render;
                    (
                        fields::render(array, render_as, row),
                        fields::numeric(array, row),
                        fields::key(array, render_as, row),
                    )
                })
                .collect();
            let trace: TraceId = traces.value(row).try_into().expect("16-byte trace id");
            hits.entry(trace).or_default().push(SpanHit {
                span_id: spans.value(row).try_into().expect("8-byte span id"),
                parent: parents.is_valid(row).then(|| parents.value(row).try_into().expect("8-byte span id")),
                start: starts.value(row),
                duration: durations.value(row),
                name: names.value(row).to_owned(),
                values,
            });
        }
    }

    /// Evaluates a spanset expression: matched spans per trace (right-hand
    /// side spans for structural operators, both sides for && and ||).
    fn eval<'a>(
        &'a self,
        expr: &'a SpansetExpr,
        traces: Option<&'a [TraceId]>,
    ) -> Pin<Box<dyn Future<Output = Result<Hits>> + Send + 'a>> {
        Box::pin(async move {
            match expr {
                SpansetExpr::Filter(filter) => self.filter(filter.as_ref(), traces).await,
                SpansetExpr::Binary { op, lhs, rhs } => {
                    let left = self.eval(lhs, traces).await?;
                    if left.is_empty() && *op != SpansetOp::Or {
                        return Ok(Hits::new());
                    }
                    let narrowed: Option<Vec<TraceId>> = (*op != SpansetOp::Or).then(|| left.keys().copied().collect());
                    let right = self.eval(rhs, narrowed.as_deref().or(traces)).await?;
                    self.combine(*op, left, right).await
                }
            }
        })
    }

    async fn combine(&self, op: SpansetOp, mut left: Hits, mut right: Hits) -> Result<Hits> {
        let mut out = Hits::new();
        match op {
            SpansetOp::Or => {
                for (trace, spans) in left.drain().chain(right.drain()) {
                    merge_spans(out.entry(trace).or_default(), spans);
                }
            }
            SpansetOp::And => {
                for (trace, spans) in left {
                    if let Some(other) = right.remove(&trace) {
                        let entry = out.entry(trace).or_default();
                        merge_spans(entry, spans);
                        merge_spans(entry, other);
                    }
                }
            }
            SpansetOp::Child | SpansetOp::Parent | SpansetOp::Sibling => {
                for (trace, rhs) in right {
                    let Some(lhs) = left.get(&trace) else { continue };
                    let lhs_ids: HashSet<SpanId> = lhs.iter().map(|s| s.span_id).collect();
                    let lhs_parents: HashSet<SpanId> = lhs.iter().filter_map(|s| s.parent).collect();
                    let kept: Vec<SpanHit> = rhs
                        .into_iter()
                        .filter(|b| match op {
                            SpansetOp::Child => b.parent.is_some_and(|p| lhs_ids.contains(&p)),
                            SpansetOp::Parent => lhs_parents.contains(&b.span_id),
                            _ => b
                                .parent
                                .is_some_and(|p| lhs.iter().any(|a| a.parent == Some(p) && a.span_id != b.span_id)),
                        })
                        .collect();
                    if !kept.is_empty() {
                        out.insert(trace, kept);
                    }
                }
            }
            SpansetOp::Descendant | SpansetOp::Ancestor => {
                let traces: Vec<TraceId> = right.keys().filter(|t| left.contains_key(*t)).copied().collect();
                let parents = self.parent_links(&traces).await?;
                for trace in traces {
                    let links = &parents[&trace];
                    let ancestors = |span: SpanId| {
                        let mut chain = Vec::new();
                        let mut current = links.get(&span).copied().flatten();
                        while let Some(p) = current {
                            if chain.contains(&p) || chain.len() > 10_000 {
                                break; // a cycle in bad data
                            }
                            chain.push(p);
                            current = links.get(&p).copied().flatten();
                        }
                        chain
                    };
                    let lhs = &left[&trace];
                    let rhs = right.remove(&trace).unwrap_or_default();
                    let kept: Vec<SpanHit> = if op == SpansetOp::Descendant {
                        let lhs_ids: HashSet<SpanId> = lhs.iter().map(|s| s.span_id).collect();
                        rhs.into_iter().filter(|b| ancestors(b.span_id).iter().any(|a| lhs_ids.contains(a))).collect()
                    } else {
                        let above: HashSet<SpanId> = lhs.iter().flat_map(|a| ancestors(a.span_id)).collect();
                        rhs.into_iter().filter(|b| above.contains(&b.span_id)).collect()
                    };
                    if !kept.is_empty() {
                        out.insert(trace, kept);
                    }
                }
            }
        }
        Ok(out)
    }

    /// `columns` of every span of `traces` (any time), read 1000 traces at a time.
    async fn rows_of(&self, traces: &[TraceId], columns: Vec<Expr>) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for chunk in traces.chunks(1000) {
            let frame = self.ctx.table("spans").await?.filter(in_traces(chunk))?;
            out.extend(frame.select(columns.clone())?.collect().await?);
        }
        Ok(out)
    }

    /// span → parent for every span of `traces` (any time).
    async fn parent_links(&self, traces: &[TraceId]) -> Result<HashMap<TraceId, HashMap<SpanId, Option<SpanId>>>> {
        let mut links: HashMap<TraceId, HashMap<SpanId, Option<SpanId>>> =
            traces.iter().map(|t| (*t, HashMap::new())).collect();
        let batches = self.rows_of(traces, vec![col(s::TRACE_ID), col(s::SPAN_ID), col(s::PARENT_SPAN_ID)]).await?;
        {
            for batch in &batches {
                let (t, sp, p) = (
                    batch.column(0).as_fixed_size_binary(),
                    batch.column(1).as_fixed_size_binary(),
                    batch.column(2).as_fixed_size_binary(),
                );
                for row in 0..batch.num_rows() {
                    let trace: TraceId = t.value(row).try_into().expect("16 bytes");
                    let parent = p.is_valid(row).then(|| p.value(row).try_into().expect("8 bytes"));
                    links.entry(trace).or_default().insert(sp.value(row).try_into().expect("8 bytes"), parent);
                }
            }
        }
        Ok(links)
    }

    /// The newest traces with a span matching `filter`, `page` of them after `offset`.
    async fn candidates(&self, filter: Option<&FieldExpr>, offset: usize, page: usize) -> Result<Vec<TraceId>> {
        let mut frame = self.base().await?;
        if let Some(filter) = filter {
            frame = frame.filter(compile::compile(filter)?)?;
        }
        let batches = frame
            .aggregate(
                vec![col(s::TRACE_ID)],
                vec![max(col(s::START_TIME)).alias("__newest"), count(lit(1)).alias("__n")],
            )?
            .sort(vec![col("__newest").sort(false, false), col(s::TRACE_ID).sort(true, false)])?
            .limit(offset, Some(page))?
            .select(vec![col(s::TRACE_ID)])?
            .collect()
            .await?;
        Ok(batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_fixed_size_binary();
                (0..b.num_rows()).map(move |i| ids.value(i).try_into().expect("16 bytes")).collect::<Vec<TraceId>>()
            })
            .collect())
    }

    /// Summaries over every span of `traces`.
    async fn summaries(&self, traces: &[TraceId]) -> Result<HashMap<TraceId, TraceSummary>> {
        let mut out: HashMap<TraceId, TraceSummary> = HashMap::new();
        {
            let batches = self
                .rows_of(
                    traces,
                    vec![
                        col(s::TRACE_ID),
                        col(s::PARENT_SPAN_ID).is_null().alias("root"),
                        col(s::SERVICE_NAME),
                        col(s::NAME),
                        col(s::START_TIME),
                        col(s::END_TIME),
                        col(s::STATUS_CODE).eq(lit("error")).alias("error"),
                    ],
                )
                .await?;
            for batch in &batches {
                let trace = batch.column(0).as_fixed_size_binary();
                let root = batch.column(1).as_boolean();
                let service = batch.column(2).as_string::<i32>();
                let name = batch.column(3).as_string::<i32>();
                let start = batch.column(4).as_primitive::<TimestampNanosecondType>();
                let end = batch.column(5).as_primitive::<TimestampNanosecondType>();
                let error = batch.column(6).as_boolean();
                for row in 0..batch.num_rows() {
                    let id: TraceId = trace.value(row).try_into().expect("16 bytes");
                    let summary = out.entry(id).or_insert_with(|| TraceSummary {
                        start: i64::MAX,
                        end: i64::MIN,
                        ..TraceSummary::default()
                    });
                    summary.start = summary.start.min(start.value(row));
                    summary.end = summary.end.max(end.value(row));
                    let service_name = service.is_valid(row).then(|| service.value(row).to_owned());
                    if root.value(row) && summary.root_name.is_none() {
                        summary.root_name = Some(name.value(row).to_owned());
                        summary.root_service = service_name.clone();
                    }
                    let stats = summary.services.entry(service_name.unwrap_or_default()).or_default();
                    stats.0 += 1;
                    stats.1 += error.value(row) as u64;
                }
            }
        }
        Ok(out)
    }
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
    /// Applies the pipeline stages to one trace's matched spans.
    async fn pipeline(&self, trace: TraceId, hits: Vec<SpanHit>) -> Result<Vec<Spanset>> {
        let mut sets = vec![Spanset { spans: hits, by: Vec::new() }];
        for stage in &self.params.query.stages {
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
                        result.is_some_and(|r| compare(r, *op, threshold))
                    });
                }
                Stage::Spanset(expr) => {
                    let matched = self.eval(expr, Some(&[trace])).await?;
                    let keep: HashSet<SpanId> =
                        matched.get(&trace).map(|v| v.iter().map(|s| s.span_id).collect()).unwrap_or_default();
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

fn compare(value: f64, op: CmpOp, threshold: f64) -> bool {
    match op {
        CmpOp::Eq => value == threshold,
        CmpOp::Neq => value != threshold,
        CmpOp::Gt => value > threshold,
        CmpOp::Gte => value >= threshold,
        CmpOp::Lt => value < threshold,
        CmpOp::Lte => value <= threshold,
        CmpOp::Regex | CmpOp::NotRegex => false,
    }
}

/// A page of results: matched traces with their summaries.
pub(crate) struct Found {
    pub(crate) traces: Vec<(TraceId, TraceSummary, Vec<Spanset>)>,
    pub(crate) inspected_traces: u64,
}

impl Querier {
    pub(crate) async fn search(&self, tenant: &TenantId, params: &SearchParams) -> Result<SearchResponse> {
        let ctx = self.session(tenant).await?;
        let engine = Engine {
            ctx,
            params,
            fields: output_fields(&params.query)?,
            needs_trace: needs_trace_fields(&params.query),
        };
        let found = engine.run().await?;
        let blocks = self.catalog.blocks(tenant, |b| b.overlaps(params.start, params.end));
        Ok(SearchResponse::new(
            found,
            &engine.fields,
            params,
            blocks.len() as u64,
            blocks.iter().map(|b| b.size_bytes).sum(),
        ))
    }
}

impl Engine<'_> {
    async fn run(&self) -> Result<Found> {
        let limit = self.params.limit.max(1);
        let mut results: Vec<(TraceId, TraceSummary, Vec<Spanset>)> = Vec::new();
        let mut inspected = 0u64;
        // One filter: page through the newest matching traces. Otherwise evaluate all at once.
        let single = match &self.params.query.spansets {
            SpansetExpr::Filter(f) => Some(f.as_ref()),
            _ => None,
        };
        let page = (limit * 4).max(50);
        let mut offset = 0;
        loop {
            let (hits, exhausted) = match single {
                Some(filter) => {
                    let candidates = self.candidates(filter, offset, page).await?;
                    offset += candidates.len();
                    let exhausted = candidates.len() < page;
                    (self.filter(filter, Some(&candidates)).await?, exhausted)
                }
                None => (self.eval(&self.params.query.spansets, None).await?, true),
            };
            inspected += hits.len() as u64;
            let traces: Vec<TraceId> = hits.keys().copied().collect();
            let summaries = self.summaries(&traces).await?;
            for (trace, spans) in hits {
                let summary = summaries.get(&trace).cloned().unwrap_or_default();
                let duration = summary.end - summary.start;
                if self.params.min_duration.is_some_and(|d| duration < d)
                    || self.params.max_duration.is_some_and(|d| duration > d)
                {
                    continue;
                }
                let sets = self.pipeline(trace, spans).await?;
                if !sets.is_empty() {
                    results.push((trace, summary, sets));
                }
            }
            if exhausted || results.len() >= limit {
                break;
            }
        }
        results.sort_by(|a, b| b.1.start.cmp(&a.1.start).then(a.0.cmp(&b.0)));
        results.truncate(limit);
        Ok(Found { traces: results, inspected_traces: inspected })
    }
}
