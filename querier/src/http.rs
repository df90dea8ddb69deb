//! The query HTTP API on :3200 (Tempo's port and paths, so Grafana's Tempo
//! datasource works unmodified).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use spanlake_schemas::TenantId;

use crate::Querier;
use crate::error::{QueryError, Result};
use crate::tempo_json;
use crate::trace_by_id::{find_trace, parse_trace_id};

/// Tempo's `TraceByIDResponse` (v2), wire-compatible.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TempoTrace>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<TraceByIdMetrics>,
    /// 0 = COMPLETE, 1 = PARTIAL.
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

/// Tempo's `Trace`, wire-identical to OTLP `TracesData`.
#[derive(Clone, PartialEq, prost::Message)]
struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdMetrics {
    #[prost(uint64, tag = "1")]
    inspected_bytes: u64,
}

pub(crate) fn router(querier: Arc<Querier>) -> Router {
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/ready", get(|| async { "ready" }))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/sql", axum::routing::post(crate::sql_http::sql))
        .route("/api/fanout", get(crate::fanout_http::fanout))
        .route("/api/search", get(crate::search_http::search))
        .route("/api/search/tags", get(crate::tags::tags_v1))
        .route("/api/v2/search/tags", get(crate::tags::tags_v2))
        .route("/api/search/tag/{name}/values", get(crate::tags::values_v1))
        .route("/api/v2/search/tag/{name}/values", get(crate::tags::values_v2))
        .with_state(querier)
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct TimeRange {
    start: Option<String>,
    end: Option<String>,
}

impl TimeRange {
    /// `[start, end]` in Unix nanoseconds from Unix-seconds parameters.
    fn to_nanos(&self) -> Result<(i64, i64)> {
        unix_seconds_range(&self.start, &self.end)
    }
}

/// `[start, end]` in Unix nanoseconds from `start`/`end` parameters in Unix
/// seconds (the end second included); open ends are unbounded.
pub(crate) fn unix_seconds_range(start: &Option<String>, end: &Option<String>) -> Result<(i64, i64)> {
    let parse = |name: &'static str, value: &Option<String>| -> Result<Option<i64>> {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<u32>().map(|s| s as i64 * 1_000_000_000).map_err(|_| QueryError::InvalidParameter {
                    name,
                    reason: format!("{v:?} is not a Unix time in seconds"),
                })
            })
            .transpose()
    };
    let (from, to) = (parse("start", start)?, parse("end", end)?);
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(QueryError::InvalidParameter { name: "end", reason: "end must be after start".into() });
    }
    Ok((from.unwrap_or(0), to.map(|t| t + 999_999_999).unwrap_or(i64::MAX)))
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

pub(crate) fn error_response(error: &QueryError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %error, source = ?std::error::Error::source(error), "query failed");
    }
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], error.to_string()).into_response()
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/protobuf"))], bytes).into_response()
}

async fn lookup(
    querier: &Querier,
    headers: &HeaderMap,
    id: &str,
    range: &TimeRange,
) -> Result<(Vec<ResourceSpans>, u64)> {
    let tenant = querier.tenant(headers)?;
    let trace_id = parse_trace_id(id)?;
    let _permit = querier.admit()?;
    let pruning = querier.config.pruning;
    let (spans, stats) =
        find_trace(&querier.catalog, &querier.footers, &querier.storage, &tenant, trace_id, range.to_nanos()?, pruning)
            .await?;
    tracing::debug!(
        %tenant,
        trace_id = id,
        blocks = stats.blocks_considered,
        row_groups = stats.row_groups_read,
        "trace lookup"
    );
    Ok((spans, stats.inspected_bytes))
}

async fn trace_v1(
    State(querier): State<Arc<Querier>>,
    Path(id): Path<String>,
    Query(range): Query<TimeRange>,
    headers: HeaderMap,
) -> Response {
    let (trace, _) = match lookup(&querier, &headers, &id, &range).await {
        Ok(found) => found,
        Err(error) => return error_response(&error),
    };
    if trace.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let data = TracesData { resource_spans: trace };
    let limit = querier.config.max_trace_bytes;
    if data.encoded_len() > limit {
        return error_response(&QueryError::TraceTooLarge { limit });
    }
    if wants_protobuf(&headers) {
        return protobuf(data.encode_to_vec());
    }
    let batches: Vec<_> = data.resource_spans.iter().map(tempo_json::resource_spans).collect();
    axum::Json(json!({ "batches": batches })).into_response()
}

async fn trace_v2(
    State(querier): State<Arc<Querier>>,
    Path(id): Path<String>,
    Query(range): Query<TimeRange>,
    headers: HeaderMap,
) -> Response {
    let (mut trace, inspected_bytes) = match lookup(&querier, &headers, &id, &range).await {
        Ok(found) => found,
        Err(error) => return error_response(&error),
    };
    let limit = querier.config.max_trace_bytes;
    let partial = truncate_to(&mut trace, limit);
    let message = if partial {
        format!("Trace exceeds maximum size of {limit} bytes, a partial trace is returned")
    } else {
        String::new()
    };
    if wants_protobuf(&headers) {
        let response = TraceByIdResponse {
            trace: Some(TempoTrace { resource_spans: trace }),
            metrics: Some(TraceByIdMetrics { inspected_bytes }),
            status: partial as i32,
            message,
        };
        return protobuf(response.encode_to_vec());
    }
    let resource_spans: Vec<_> = trace.iter().map(tempo_json::resource_spans).collect();
    let mut body = json!({ "trace": {}, "metrics": {} });
    if !resource_spans.is_empty() {
        body["trace"]["resourceSpans"] = json!(resource_spans);
    }
    if inspected_bytes > 0 {
        body["metrics"]["inspectedBytes"] = json!(inspected_bytes.to_string());
    }
    if partial {
        body["status"] = json!("PARTIAL");
        body["message"] = json!(message);
    }
    axum::Json(body).into_response()
}

/// Drops spans from the end until the trace encodes within `limit` bytes;
/// returns whether anything was dropped.
fn truncate_to(trace: &mut Vec<ResourceSpans>, limit: usize) -> bool {
    let size = |t: &Vec<ResourceSpans>| t.iter().map(|rs| rs.encoded_len() + 5).sum::<usize>();
    if size(trace) <= limit {
        return false;
    }
    while size(trace) > limit {
        let Some(rs) = trace.last_mut() else { break };
        match rs.scope_spans.last_mut() {
            Some(ss) if ss.spans.len() > 1 => {
                ss.spans.pop();
            }
            Some(_) => {
                rs.scope_spans.pop();
            }
            None => {
                trace.pop();
            }
        }
    }
    true
}

impl Querier {
    pub(crate) fn tenant(&self, headers: &HeaderMap) -> Result<TenantId> {
        let header = headers.get("x-scope-orgid").map(HeaderValue::as_bytes);
        Ok(TenantId::from_header(self.config.multi_tenant, header)?)
    }
}
