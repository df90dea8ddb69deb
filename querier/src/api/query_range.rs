//! `GET /api/metrics/query_range` and `GET /api/metrics/query`: TraceQL
//! metrics, as Grafana's Tempo data source and Traces Drilldown call them.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{Admitted, Tenant};
use super::params::{non_empty, number, prometheus_duration, step, timestamp};
use crate::Querier;
use crate::error::{QueryError, Result};
use crate::traceql;
use crate::traceql_metrics::{MetricsRequest, Window};

/// Longest query text accepted (Tempo's `max_query_expression_size_bytes`).
const MAX_QUERY_BYTES: usize = 128 << 10;

#[derive(Debug, Deserialize)]
pub(super) struct MetricsParams {
    q: Option<String>,
    /// Prometheus' name for `q`; `q` wins when both are given.
    query: Option<String>,
    start: Option<String>,
    end: Option<String>,
    since: Option<String>,
    step: Option<String>,
    exemplars: Option<String>,
    #[serde(rename = "maxSeries")]
    max_series: Option<String>,
}

impl MetricsParams {
    fn request(&self, instant: bool) -> Result<MetricsRequest> {
        let text = non_empty(&self.q)
            .or_else(|| non_empty(&self.query))
            .ok_or_else(|| QueryError::invalid("q", "a TraceQL metrics query is required, e.g. { } | rate()"))?;
        if text.len() > MAX_QUERY_BYTES {
            return Err(QueryError::invalid("q", format!("query is longer than the limit of {MAX_QUERY_BYTES} bytes")));
        }
        let query = traceql::parse_metrics(&text).map_err(|e| QueryError::invalid("q", e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let end = non_empty(&self.end).map(|e| timestamp("end", &e)).transpose()?.unwrap_or(now);
        let start = match non_empty(&self.start) {
            Some(start) => timestamp("start", &start)?,
            None => {
                let since = non_empty(&self.since).map(|s| prometheus_duration("since", &s)).transpose()?;
                end.min(now) - since.unwrap_or(3_600_000_000_000)
            }
        };
        let window = if instant {
            Window::instant(start, end, now)?
        } else {
            let step = non_empty(&self.step).map(|s| step(&s)).transpose()?;
            Window::range(start, end, step, now)?
        };
        let exemplars = MetricsRequest::exemplars_wanted(&query, number("exemplars", &self.exemplars)?, instant)?;
        let max_series = number("maxSeries", &self.max_series)?.unwrap_or(0) as usize;
        Ok(MetricsRequest { query, window, exemplars, max_series })
    }
}

async fn answer(
    querier: Arc<Querier>,
    tenant: spanlake_schemas::TenantId,
    permit: tokio::sync::OwnedSemaphorePermit,
    request: MetricsRequest,
    endpoint: &'static str,
) -> Result<Response> {
    let instant = request.window.instant;
    let answer = querier.execute(endpoint, permit, |q| async move { q.metrics_query(&tenant, &request).await }).await?;
    let body = if instant { answer.instant_json() } else { answer.range_json() };
    let mut response = Json(body).into_response();
    querier.mark_partial(endpoint, &answer.partial, &mut response);
    Ok(response)
}

pub(super) async fn query_range(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Query(params): Query<MetricsParams>,
) -> Result<Response> {
    let request = params.request(false)?;
    answer(querier, tenant, permit, request, "metrics_query_range").await
}

pub(super) async fn query_instant(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Query(params): Query<MetricsParams>,
) -> Result<Response> {
    let request = params.request(true)?;
    answer(querier, tenant, permit, request, "metrics_query").await
}
