//! Trace by id, Tempo v1 (`/api/traces/<id>`) and v2 (`/api/v2/traces/<id>`),
//! in JSON or protobuf; and the build info Grafana reads.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;
use serde_json::json;
use spanlake_schemas::TenantId;

use super::extract::{Admitted, Tenant};
use super::params::TimeRange;
use crate::Querier;
use crate::blocks::Partial;
use crate::error::{QueryError, Result};
use crate::tempo_json;
use crate::trace_by_id::{LookupStats, find_trace, parse_trace_id};

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

/// The Tempo version whose HTTP API Spanlake answers like.
const TEMPO_VERSION: &str = "3.0.0";

pub(super) async fn buildinfo() -> Response {
    axum::Json(json!({
        // Tempo's behaviour (metrics buckets, limits) this querier follows,
        // so Grafana's version checks see a Tempo that has it.
        "version": TEMPO_VERSION,
        "revision": concat!("spanlake-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/protobuf"))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/protobuf"))], bytes).into_response()
}

/// Finds the trace on the query runtime: its spans, the bytes inspected, and
/// the blocks skipped.
async fn lookup(
    querier: &Arc<Querier>,
    tenant: TenantId,
    permit: tokio::sync::OwnedSemaphorePermit,
    id: &str,
    range: &TimeRange,
) -> Result<(Vec<ResourceSpans>, LookupStats, Partial)> {
    let trace_id = parse_trace_id(id)?;
    let range = range.to_nanos()?;
    let (spans, stats, partial) = querier
        .execute("trace_by_id", permit, move |q| async move { find_trace(&q, &tenant, trace_id, range).await })
        .await?;
    tracing::debug!(
        trace_id = id,
        blocks = stats.blocks_considered,
        row_groups = stats.row_groups_read,
        "trace lookup"
    );
    Ok((spans, stats, partial))
}

pub(super) async fn trace_v1(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Path(id): Path<String>,
    Query(range): Query<TimeRange>,
    headers: HeaderMap,
) -> Result<Response> {
    let (trace, stats, _) = lookup(&querier, tenant, permit, &id, &range).await?;
    let limit = querier.config.max_trace_bytes;
    if stats.stopped_early {
        return Err(QueryError::TraceTooLarge { limit });
    }
    if trace.is_empty() {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    let data = TracesData { resource_spans: trace };
    if data.encoded_len() > limit {
        return Err(QueryError::TraceTooLarge { limit });
    }
    if wants_protobuf(&headers) {
        return Ok(protobuf(data.encode_to_vec()));
    }
    let batches: Vec<_> = data.resource_spans.iter().map(tempo_json::resource_spans).collect();
    Ok(axum::Json(json!({ "batches": batches })).into_response())
}

pub(super) async fn trace_v2(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Path(id): Path<String>,
    Query(range): Query<TimeRange>,
    headers: HeaderMap,
) -> Result<Response> {
    let (mut trace, stats, skipped) = lookup(&querier, tenant, permit, &id, &range).await?;
    let inspected_bytes = stats.inspected_bytes;
    let limit = querier.config.max_trace_bytes;
    let truncated = truncate_to(&mut trace, limit) || stats.stopped_early;
    let partial = truncated || skipped.is_partial();
    let message = if truncated {
        format!("Trace exceeds maximum size of {limit} bytes, a partial trace is returned")
    } else {
        skipped.message().unwrap_or_default()
    };
    if wants_protobuf(&headers) {
        let response = TraceByIdResponse {
            trace: Some(TempoTrace { resource_spans: trace }),
            metrics: Some(TraceByIdMetrics { inspected_bytes }),
            status: partial as i32,
            message,
        };
        return Ok(protobuf(response.encode_to_vec()));
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
    Ok(axum::Json(body).into_response())
}

/// Drops spans from the end until the trace encodes within `limit` bytes;
/// returns whether anything was dropped. Linear: each span's size is computed
/// once, and removing a field only ever shrinks its parents' length prefixes,
/// so the running total is an upper bound of the encoded size.
fn truncate_to(trace: &mut Vec<ResourceSpans>, limit: usize) -> bool {
    let field = |len: usize| 1 + prost::encoding::encoded_len_varint(len as u64) + len;
    let mut size: usize = trace.iter().map(|rs| field(rs.encoded_len())).sum();
    if size <= limit {
        return false;
    }
    while size > limit {
        let Some(rs) = trace.last_mut() else { break };
        let removed = match rs.scope_spans.last_mut() {
            Some(ss) => match ss.spans.pop() {
                Some(span) => field(span.encoded_len()),
                None => rs.scope_spans.pop().map_or(0, |ss| field(ss.encoded_len())),
            },
            None => trace.pop().map_or(0, |rs| field(rs.encoded_len())),
        };
        size = size.saturating_sub(removed);
    }
    true
}
