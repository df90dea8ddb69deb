//! Tag names and values for Grafana's query builder and autocomplete (the
//! engine behind `api::tags`).
//!
//! Names come from the attribute maps' keys, values from the attribute
//! structs (typed: string, int, float, bool) or the intrinsic columns, both
//! within the requested time range; v2 values can be narrowed by a TraceQL
//! filter `q`, read leniently: a query that does not parse filters nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::functions_nested::expr_fn::map_keys;
use datafusion::logical_expr::{Expr, col, lit};
use serde_json::{Value, json};
use spanlake_schemas::TenantId;
use spanlake_schemas::schema as s;

use crate::Querier;
use crate::error::{QueryError, Result};
use crate::memory::collect_counted;
use crate::search::{attribute_struct, compile_filter};
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

impl Querier {
    /// Distinct attribute keys of one map column within the range.
    pub(crate) async fn attribute_keys(
        &self,
        tenant: &TenantId,
        column: &str,
        range: (i64, i64),
        limit: usize,
    ) -> Result<Vec<String>> {
        let ctx = self.session(tenant).await?;
        let frame = ctx
            .table(crate::sql::SPANS_AS_STORED)
            .await?
            .filter(time_filter(range))?
            .select(vec![map_keys(col(column)).alias("k")])?
            .unnest_columns(&["k"])?
            .distinct()?
            .sort(vec![col("k").sort(true, false)])?
            .limit(0, Some(limit))?;
        let (batches, _held) = collect_counted(&ctx, frame, "the tag names", HINT).await?;
        Ok(strings(&batches))
    }

    /// Distinct typed values of `field` within the range, narrowed by `filter`.
    pub(crate) async fn values(
        &self,
        tenant: &TenantId,
        field: &FieldExpr,
        filter: Option<&FieldExpr>,
        range: (i64, i64),
        limit: usize,
    ) -> Result<Vec<Value>> {
        let ctx = self.session(tenant).await?;
        let (expr, typed) = match field {
            FieldExpr::Attribute(a) => (attribute_struct(a)?, None),
            FieldExpr::Intrinsic(i) => intrinsic_column(*i)?,
            _ => unreachable!("identifiers parse to attributes or intrinsics"),
        };
        let mut frame = ctx.table(crate::sql::SPANS_AS_STORED).await?.filter(time_filter(range))?;
        if let Some(filter) = filter {
            // An unsupported filter (e.g. one needing trace-level fields) filters nothing.
            if let Ok(compiled) = compile_filter(filter) {
                frame = frame.filter(compiled)?;
            }
        }
        let frame =
            frame.select(vec![expr.alias("v")])?.filter(col("v").is_not_null())?.distinct()?.limit(0, Some(limit))?;
        let (batches, _held) = collect_counted(&ctx, frame, "the tag values", HINT).await?;
        let mut out = BTreeSet::new();
        for batch in &batches {
            let column = batch.column(0);
            for row in 0..batch.num_rows() {
                if let Some(value) = typed_value(column, row, typed) {
                    out.insert(value.to_string());
                }
            }
        }
        Ok(out.into_iter().map(|v| serde_json::from_str(&v).expect("round trip")).collect())
    }
}

/// An intrinsic's column and the value type Tempo reports for it.
fn intrinsic_column(intrinsic: Intrinsic) -> Result<(Expr, Option<&'static str>)> {
    Ok(match intrinsic {
        Intrinsic::Name => (col(s::NAME), Some("string")),
        Intrinsic::Status => (col(s::STATUS_CODE), Some("keyword")),
        Intrinsic::Kind => (col(s::KIND), Some("keyword")),
        Intrinsic::StatusMessage => (col(s::STATUS_MESSAGE), Some("string")),
        Intrinsic::RootServiceName => (col(s::SERVICE_NAME), Some("string")),
        Intrinsic::RootName => (col(s::NAME), Some("string")),
        Intrinsic::InstrumentationName => (col(s::SCOPE_NAME), Some("string")),
        Intrinsic::InstrumentationVersion => (col(s::SCOPE_VERSION), Some("string")),
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
        return Some(json!({ "type": kind, "value": column.as_string::<i32>().value(row) }));
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
