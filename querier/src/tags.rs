//! Tag names and values for Grafana's query builder and autocomplete:
//! `GET /api/search/tags`, `/api/v2/search/tags`,
//! `/api/search/tag/<name>/values`, `/api/v2/search/tag/<identifier>/values`.
//!
//! Names come from the attribute maps' keys, values from the attribute
//! structs (typed: string, int, float, bool) or the intrinsic columns, both
//! within the requested time range; v2 values can be narrowed by a TraceQL
//! filter `q`, read leniently: a query that does not parse filters nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use datafusion::common::ScalarValue;
use datafusion::functions_nested::expr_fn::map_keys;
use datafusion::logical_expr::{Expr, col, lit};
use serde::Deserialize;
use serde_json::{Value, json};
use spanlake_schemas::TenantId;
use spanlake_schemas::schema as s;

use crate::Querier;
use crate::error::{QueryError, Result};
use crate::http::{error_response, unix_seconds_range};
use crate::search::{attribute_struct, compile_filter};
use crate::traceql::ast::{Attribute, AttributeScope, FieldExpr, Intrinsic, SpansetExpr};
use crate::traceql::{self};

/// Intrinsics Grafana's query builder offers (Tempo's list).
const INTRINSICS: [&str; 17] = [
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

#[derive(Debug, Deserialize)]
pub(crate) struct TagsQuery {
    scope: Option<String>,
    q: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

impl TagsQuery {
    fn range(&self) -> Result<(i64, i64)> {
        unix_seconds_range(&self.start, &self.end)
    }

    fn limit(&self) -> Result<usize> {
        match self.limit.as_deref().filter(|l| !l.is_empty()) {
            None => Ok(5000),
            Some(l) => l.parse::<usize>().ok().filter(|l| *l > 0).ok_or_else(|| QueryError::InvalidParameter {
                name: "limit",
                reason: format!("{l:?} is not a positive integer"),
            }),
        }
    }

    /// The lenient TraceQL filter of `q`: a single spanset filter, or nothing.
    fn filter(&self) -> Option<FieldExpr> {
        let q = self.q.as_deref()?.trim();
        match traceql::parse(q).ok()?.spansets {
            SpansetExpr::Filter(filter) => filter,
            _ => None,
        }
    }
}

fn time_filter((start, end): (i64, i64)) -> Expr {
    let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
    col(s::START_TIME).gt_eq(ts(start)).and(col(s::START_TIME).lt_eq(ts(end)))
}

impl Querier {
    /// [`Querier::keys_here`] on the query executor.
    async fn attribute_keys(
        self: &Arc<Self>,
        tenant: &TenantId,
        column: &'static str,
        range: (i64, i64),
        limit: usize,
    ) -> Result<Vec<String>> {
        let (this, tenant) = (Arc::clone(self), tenant.clone());
        self.executor.run(async move { this.keys_here(&tenant, column, range, limit).await }).await
    }

    /// [`Querier::values_here`] on the query executor.
    async fn values(
        self: &Arc<Self>,
        tenant: &TenantId,
        field: &FieldExpr,
        filter: Option<&FieldExpr>,
        range: (i64, i64),
        limit: usize,
    ) -> Result<Vec<Value>> {
        let (this, tenant, field, filter) = (Arc::clone(self), tenant.clone(), field.clone(), filter.cloned());
        self.executor.run(async move { this.values_here(&tenant, &field, filter.as_ref(), range, limit).await }).await
    }

    /// Distinct attribute keys of one map column within the range.
    async fn keys_here(&self, tenant: &TenantId, column: &str, range: (i64, i64), limit: usize) -> Result<Vec<String>> {
        let ctx = self.session(tenant).await?;
        let batches = ctx
            .table("spans")
            .await?
            .filter(time_filter(range))?
            .select(vec![map_keys(col(column)).alias("k")])?
            .unnest_columns(&["k"])?
            .distinct()?
            .sort(vec![col("k").sort(true, false)])?
            .limit(0, Some(limit))?
            .collect()
            .await?;
        Ok(strings(&batches))
    }

    /// Distinct typed values of `field` within the range, narrowed by `filter`.
    async fn values_here(
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
        let mut frame = ctx.table("spans").await?.filter(time_filter(range))?;
        if let Some(filter) = filter {
            // An unsupported filter (e.g. one needing trace-level fields) filters nothing.
            if let Ok(compiled) = compile_filter(filter) {
                frame = frame.filter(compiled)?;
            }
        }
        let batches = frame
            .select(vec![expr.alias("v")])?
            .filter(col("v").is_not_null())?
            .distinct()?
            .limit(0, Some(limit))?
            .collect()
            .await?;
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
fn identifier(name: &str, bare_is_unscoped: bool) -> Result<FieldExpr> {
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

async fn respond(querier: &Querier, result: impl std::future::Future<Output = Result<Value>>) -> Response {
    let _permit = match querier.admit() {
        Ok(permit) => permit,
        Err(error) => return error_response(&error),
    };
    match result.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error_response(&error),
    }
}

pub(crate) async fn tags_v1(State(q): State<Arc<Querier>>, Query(p): Query<TagsQuery>, headers: HeaderMap) -> Response {
    respond(&q, async {
        let tenant = q.tenant(&headers)?;
        let (range, limit) = (p.range()?, p.limit()?);
        let mut names = BTreeSet::new();
        let scope = p.scope.as_deref().unwrap_or("");
        if matches!(scope, "" | "span") {
            names.extend(q.attribute_keys(&tenant, s::SPAN_ATTRIBUTES, range, limit).await?);
        }
        if matches!(scope, "" | "resource") {
            names.extend(q.attribute_keys(&tenant, s::RESOURCE_ATTRIBUTES, range, limit).await?);
        }
        let names: Vec<String> = names.into_iter().take(limit).collect();
        Ok(json!({ "tagNames": names, "metrics": {} }))
    })
    .await
}

pub(crate) async fn tags_v2(State(q): State<Arc<Querier>>, Query(p): Query<TagsQuery>, headers: HeaderMap) -> Response {
    respond(&q, async {
        let tenant = q.tenant(&headers)?;
        let (range, limit) = (p.range()?, p.limit()?);
        let scope = p.scope.as_deref().unwrap_or("");
        if !matches!(scope, "" | "span" | "resource" | "intrinsic" | "event" | "link" | "instrumentation") {
            return Err(QueryError::InvalidParameter {
                name: "scope",
                reason: format!("{scope:?}: use resource, span, intrinsic, event, link or instrumentation"),
            });
        }
        let mut scopes = Vec::new();
        for (name, column) in [
            ("resource", s::RESOURCE_ATTRIBUTES),
            ("span", s::SPAN_ATTRIBUTES),
            ("instrumentation", s::SCOPE_ATTRIBUTES),
        ] {
            if scope.is_empty() || scope == name {
                let tags = q.attribute_keys(&tenant, column, range, limit).await?;
                scopes.push(json!({ "name": name, "tags": tags }));
            }
        }
        if scope.is_empty() || scope == "intrinsic" {
            scopes.push(json!({ "name": "intrinsic", "tags": INTRINSICS }));
        }
        Ok(json!({ "scopes": scopes, "metrics": {} }))
    })
    .await
}

pub(crate) async fn values_v1(
    State(q): State<Arc<Querier>>,
    Path(name): Path<String>,
    Query(p): Query<TagsQuery>,
    headers: HeaderMap,
) -> Response {
    tag_values(q, name, p, headers, false).await
}

pub(crate) async fn values_v2(
    State(q): State<Arc<Querier>>,
    Path(name): Path<String>,
    Query(p): Query<TagsQuery>,
    headers: HeaderMap,
) -> Response {
    tag_values(q, name, p, headers, true).await
}

/// v1: bare names allowed, plain string values, no `q`; v2: TraceQL
/// identifiers, typed values, narrowed by `q`.
async fn tag_values(q: Arc<Querier>, name: String, p: TagsQuery, headers: HeaderMap, v2: bool) -> Response {
    respond(&q, async {
        let tenant = q.tenant(&headers)?;
        let field = identifier(&name, !v2)?;
        let filter = if v2 { p.filter() } else { None };
        let values = q.values(&tenant, &field, filter.as_ref(), p.range()?, p.limit()?).await?;
        let values: Vec<Value> = if v2 { values } else { values.into_iter().map(|v| v["value"].clone()).collect() };
        Ok(json!({ "tagValues": values, "metrics": {} }))
    })
    .await
}
