//! Tag names and values for Grafana's query builder and autocomplete (the
//! engine behind `api::tags`).
//!
//! Names and values come from the tag summaries in the footers of the blocks
//! whose time range overlaps the request (parsed once per block, then kept):
//! the attribute maps' keys, and their values typed (string, int, float,
//! bool), or the intrinsic columns' values. Spans are read only in blocks a
//! summary cannot answer for: written without one, or a key with more values
//! (or a scope with more keys) than a summary keeps; and for v2 values
//! narrowed by a TraceQL filter `q` (read leniently: a query that does not
//! parse filters nothing). Such a read takes the newest blocks up to
//! `--max-tag-scan-bytes`; past it the answer says it is partial.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::functions_nested::expr_fn::map_keys;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use spanlake_schemas::schema as s;
use spanlake_schemas::tag_summary::{INTRINSIC, TagSummary, Values};
use spanlake_schemas::{BlockMeta, TenantId};

use crate::Querier;
use crate::blocks::{NotOpened, OnlyBlocks, Partial};
use crate::error::{QueryError, Result};
use crate::memory::collect_counted;
use crate::search::{attribute_struct, compile_filter};
use crate::strings::Strings;
use crate::traceql::ast::{Attribute, AttributeScope, FieldExpr, Intrinsic, SpansetExpr};
use crate::traceql::{self};

/// Intrinsics Grafana's query builder offers (Tempo's list).
pub(crate) const INTRINSICS: [&str; 17] = [
    "duration",
    "event:name",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:kind",
    "span:name",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

/// What to do when tag names or values pass the per-query memory limit.
const HINT: &str = "narrow the time range, or lower the limit";

fn time_filter((start, end): (i64, i64)) -> Expr {
    let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
    col(s::START_TIME).gt_eq(ts(start)).and(col(s::START_TIME).lt_eq(ts(end)))
}

/// The blocks overlapping a range, with their tag summaries (`None`: a
/// block written without one), and the blocks that could not be opened.
struct InRange {
    blocks: Vec<(BlockMeta, Option<Arc<TagSummary>>)>,
    partial: Partial,
}

/// Where a tag's values are listed in summaries: (scope, key) pairs.
fn summary_keys(field: &FieldExpr) -> Result<Vec<(&'static str, String)>> {
    Ok(match field {
        FieldExpr::Attribute(a) => {
            let scopes: &[&'static str] = match a.scope {
                AttributeScope::Span => &[s::SPAN_ATTRIBUTES],
                AttributeScope::Resource => &[s::RESOURCE_ATTRIBUTES],
                AttributeScope::Instrumentation => &[s::SCOPE_ATTRIBUTES],
                AttributeScope::Unscoped => &[s::SPAN_ATTRIBUTES, s::RESOURCE_ATTRIBUTES],
                // Not summarized; `values` refuses them before (attribute_struct).
                AttributeScope::Event | AttributeScope::Link => &[],
            };
            scopes.iter().map(|scope| (*scope, a.name.clone())).collect()
        }
        FieldExpr::Intrinsic(i) => vec![(INTRINSIC, intrinsic_source(*i)?.0.to_owned())],
        _ => unreachable!("identifiers parse to attributes or intrinsics"),
    })
}

impl Querier {
    async fn in_range(&self, tenant: &TenantId, range: (i64, i64)) -> InRange {
        let metas = self.catalog.blocks(tenant, |b| b.overlaps(range.0, range.1));
        let opened = crate::blocks::each_bounded(metas.iter().map(|meta| self.blocks.summary(tenant, meta))).await;
        let mut in_range = InRange { blocks: Vec::with_capacity(metas.len()), partial: Partial::default() };
        for (meta, opened) in metas.into_iter().zip(opened) {
            match opened {
                Ok(summary) => in_range.blocks.push((meta, summary)),
                Err(NotOpened::InFlight) => {}
                Err(NotOpened::Skipped(skipped)) => in_range.partial.skipped.push(skipped),
            }
        }
        in_range
    }

    /// A session whose spans tables read only the newest of `blocks` that
    /// fit in `--max-tag-scan-bytes` (at least one); a note in `partial`
    /// when some were left out.
    async fn scan_session(
        &self,
        tenant: &TenantId,
        mut blocks: Vec<BlockMeta>,
        what: &str,
        partial: &mut Partial,
    ) -> Result<SessionContext> {
        blocks.sort_by_key(|b| std::cmp::Reverse(b.max_time_unix_nano));
        let (total, of) = (blocks.iter().map(|b| b.size_bytes).sum::<u64>(), blocks.len());
        let budget = self.config.max_tag_scan_bytes as u64;
        let mut read = 0u64;
        let mut only = HashSet::new();
        for block in blocks {
            if !only.is_empty() && read + block.size_bytes > budget {
                break;
            }
            read += block.size_bytes;
            only.insert(block.id);
        }
        if only.len() < of {
            partial.notes.push(format!(
                "{what} read the newest {} of {of} blocks their summaries could not answer ({read} of {total} \
                 bytes, the limit of --max-tag-scan-bytes); older values may be missing",
                only.len()
            ));
        }
        let ctx = self.session(tenant).await?;
        ctx.state_ref().write().config_mut().set_extension(Arc::new(OnlyBlocks(only)));
        Ok(ctx)
    }

    /// Distinct attribute keys of one map column within the range: from the
    /// blocks' summaries, reading spans only in blocks without one or whose
    /// key list overflowed.
    pub(crate) async fn attribute_keys(
        &self,
        tenant: &TenantId,
        column: &str,
        range: (i64, i64),
        limit: usize,
    ) -> Result<(Vec<String>, Partial)> {
        let InRange { blocks, mut partial } = self.in_range(tenant, range).await;
        let mut keys: BTreeSet<String> = BTreeSet::new();
        let mut to_read = Vec::new();
        for (meta, summary) in &blocks {
            match summary.as_deref().map(|summary| summary.scopes.get(column)) {
                Some(Some(scope)) => {
                    keys.extend(scope.keys.keys().cloned());
                    keep_first(&mut keys, limit);
                    if scope.overflowed {
                        to_read.push(meta.clone());
                    }
                }
                Some(None) => {}
                None => to_read.push(meta.clone()),
            }
        }
        if !to_read.is_empty() {
            let ctx = self.scan_session(tenant, to_read, "tag names", &mut partial).await?;
            let frame = ctx
                .table(crate::sql::SPANS_AS_STORED)
                .await?
                .filter(time_filter(range))?
                .select(vec![map_keys(col(column)).alias("k")])?
                .unnest_columns(&["k"])?
                .distinct()?
                .limit(0, Some(limit))?;
            let (batches, _held) = collect_counted(&ctx, frame, "the tag names", HINT).await?;
            keys.extend(strings(&batches));
            partial.extend(crate::sql::skipped_blocks(&ctx));
        }
        Ok((keys.into_iter().take(limit).collect(), partial))
    }

    /// Distinct typed values of `field` within the range, narrowed by
    /// `filter`: from the blocks' summaries when there is no filter, reading
    /// spans only in blocks without one or where the key overflowed.
    pub(crate) async fn values(
        &self,
        tenant: &TenantId,
        field: &FieldExpr,
        filter: Option<&FieldExpr>,
        range: (i64, i64),
        limit: usize,
    ) -> Result<(Vec<Value>, Partial)> {
        let (expr, typed) = match field {
            FieldExpr::Attribute(a) => (attribute_struct(a)?, None),
            FieldExpr::Intrinsic(i) => {
                let (column, kind) = intrinsic_source(*i)?;
                (col(column), Some(kind))
            }
            _ => unreachable!("identifiers parse to attributes or intrinsics"),
        };
        // A filter the compiler cannot take (e.g. one needing trace-level
        // fields) filters nothing.
        let filter = filter.and_then(|f| compile_filter(f).ok());
        let InRange { blocks, mut partial } = self.in_range(tenant, range).await;
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut to_read = Vec::new();
        if filter.is_some() {
            // Summaries know no span's other attributes: read the spans.
            to_read = blocks.into_iter().map(|(meta, _)| meta).collect();
        } else {
            let wanted = summary_keys(field)?;
            for (meta, summary) in &blocks {
                let Some(summary) = summary else {
                    to_read.push(meta.clone());
                    continue;
                };
                let mut complete = true;
                for (scope, key) in &wanted {
                    let Some(scope) = summary.scopes.get(*scope) else { continue };
                    match scope.keys.get(key) {
                        Some(values) => {
                            complete &= !values.overflowed;
                            add_summarized(&mut out, values, typed);
                            keep_first(&mut out, limit);
                        }
                        None => complete &= !scope.overflowed,
                    }
                }
                if !complete {
                    to_read.push(meta.clone());
                }
            }
        }
        if !to_read.is_empty() {
            let ctx = self.scan_session(tenant, to_read, "tag values", &mut partial).await?;
            let mut frame = ctx.table(crate::sql::SPANS_AS_STORED).await?.filter(time_filter(range))?;
            if let Some(filter) = filter {
                frame = frame.filter(filter)?;
            }
            let frame = frame
                .select(vec![expr.alias("v")])?
                .filter(col("v").is_not_null())?
                .distinct()?
                .limit(0, Some(limit))?;
            let (batches, _held) = collect_counted(&ctx, frame, "the tag values", HINT).await?;
            for batch in &batches {
                let column = batch.column(0);
                for row in 0..batch.num_rows() {
                    if let Some(value) = typed_value(column, row, typed) {
                        out.insert(value.to_string());
                    }
                }
            }
            partial.extend(crate::sql::skipped_blocks(&ctx));
        }
        let values = out.into_iter().take(limit).map(|v| serde_json::from_str(&v).expect("round trip")).collect();
        Ok((values, partial))
    }
}

/// Keeps the first `limit` of `set`: what the answer shows, so the summaries
/// of many blocks never pile up more than that.
fn keep_first(set: &mut BTreeSet<String>, limit: usize) {
    while set.len() > limit {
        set.pop_last();
    }
}

/// Adds a summary's values of a key, typed as a span read would type them.
fn add_summarized(out: &mut BTreeSet<String>, values: &Values, typed: Option<&str>) {
    let mut add = |kind: &str, value: String| {
        out.insert(json!({ "type": kind, "value": value }).to_string());
    };
    for value in &values.strings {
        add(typed.unwrap_or("string"), value.clone());
    }
    for value in &values.ints {
        add("int", value.to_string());
    }
    for bits in &values.floats {
        add("float", f64::from_bits(*bits).to_string());
    }
    for value in &values.bools {
        add("bool", value.to_string());
    }
}

/// An intrinsic's column and the value type Tempo reports for it.
fn intrinsic_source(intrinsic: Intrinsic) -> Result<(&'static str, &'static str)> {
    Ok(match intrinsic {
        Intrinsic::Name => (s::NAME, "string"),
        Intrinsic::Status => (s::STATUS_CODE, "keyword"),
        Intrinsic::Kind => (s::KIND, "keyword"),
        Intrinsic::StatusMessage => (s::STATUS_MESSAGE, "string"),
        Intrinsic::RootServiceName => (s::SERVICE_NAME, "string"),
        Intrinsic::RootName => (s::NAME, "string"),
        Intrinsic::InstrumentationName => (s::SCOPE_NAME, "string"),
        Intrinsic::InstrumentationVersion => (s::SCOPE_VERSION, "string"),
        other => {
            return Err(QueryError::InvalidParameter {
                name: "tag",
                reason: format!("{} has no enumerable values", other.name()),
            });
        }
    })
}

/// `{"type": …, "value": …}` for row `row`.
fn typed_value(column: &Arc<dyn Array>, row: usize, typed: Option<&str>) -> Option<Value> {
    if column.is_null(row) {
        return None;
    }
    if let Some(kind) = typed {
        return Some(json!({ "type": kind, "value": Strings::expect(column).value(row) }));
    }
    let value = column.as_struct();
    let field = |name: &str| value.column_by_name(name).filter(|c| c.is_valid(row));
    if let Some(c) = field(s::VALUE_STR) {
        return Some(json!({ "type": "string", "value": c.as_string::<i32>().value(row) }));
    }
    if let Some(c) = field(s::VALUE_INT) {
        return Some(json!({ "type": "int", "value": c.as_primitive::<Int64Type>().value(row).to_string() }));
    }
    if let Some(c) = field(s::VALUE_DOUBLE) {
        return Some(json!({ "type": "float", "value": c.as_primitive::<Float64Type>().value(row).to_string() }));
    }
    if let Some(c) = field(s::VALUE_BOOL) {
        return Some(json!({ "type": "bool", "value": c.as_boolean().value(row).to_string() }));
    }
    None
}

fn strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let column = arrow::compute::cast(batch.column(0), &DataType::Utf8).expect("keys cast to strings");
        let column = column.as_string::<i32>();
        out.extend((0..column.len()).filter(|i| column.is_valid(*i)).map(|i| column.value(i).to_owned()));
    }
    out
}

/// Parses a tag identifier: `resource.x`, `span.x`, `.x`, an intrinsic, or (v1) a bare name.
pub(crate) fn identifier(name: &str, bare_is_unscoped: bool) -> Result<FieldExpr> {
    let query = format!("{{ {name} = nil }}");
    if let Ok(parsed) = traceql::parse(&query)
        && let SpansetExpr::Filter(Some(FieldExpr::Binary { lhs, .. })) = parsed.spansets
        && matches!(*lhs, FieldExpr::Attribute(_) | FieldExpr::Intrinsic(_))
    {
        return Ok(*lhs);
    }
    if bare_is_unscoped && !name.is_empty() {
        return Ok(FieldExpr::Attribute(Attribute { scope: AttributeScope::Unscoped, name: name.to_owned() }));
    }
    Err(QueryError::InvalidParameter { name: "tag", reason: format!("{name:?} is not a TraceQL identifier") })
}
