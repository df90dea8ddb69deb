//! `GET /api/fanout`: fan-out analysis over HTTP.
//!
//! Parameters: `start`, `end` (Unix seconds; default the last hour),
//! `service` and/or `operation` of the parent, or `q` (a TraceQL spanset
//! filter picking parent spans), `percentiles` (comma-separated, default
//! `0.5,0.9,0.99,0.999`), `child_kinds` (`outbound`: client and producer
//! calls, the default; `all`), `edge` (`child`: the child span's service and
//! operation, the default; `server`: the callee's server span, else
//! `peer.service`), `limit` (parent operations, default 20).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::Querier;
use crate::error::QueryError;
use crate::fanout::{ChildKinds, EdgeBy, FanoutParams};
use crate::http::{error_response, unix_seconds_range};

#[derive(Debug, Deserialize)]
pub(crate) struct FanoutQuery {
    start: Option<String>,
    end: Option<String>,
    service: Option<String>,
    operation: Option<String>,
    q: Option<String>,
    percentiles: Option<String>,
    child_kinds: Option<String>,
    edge: Option<String>,
    limit: Option<String>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

impl FanoutQuery {
    fn params(&self) -> Result<FanoutParams, QueryError> {
        let (mut start, end) = unix_seconds_range(&self.start, &self.end)?;
        let end = if self.end.as_deref().is_none_or(str::is_empty) {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(i64::MAX)
        } else {
            end
        };
        if self.start.as_deref().is_none_or(str::is_empty) {
            start = end.saturating_sub(3600 * 1_000_000_000);
        }
        let percentiles = match non_empty(&self.percentiles) {
            None => vec![0.5, 0.9, 0.99, 0.999],
            Some(text) => text
                .split(',')
                .map(|q| match q.trim().parse::<f64>() {
                    Ok(q) if q > 0.0 && q < 1.0 => Ok(q),
                    _ => Err(QueryError::invalid(
                        "percentiles",
                        format!("{q:?} is not a number between 0 and 1 (exclusive)"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if percentiles.len() > 8 {
            return Err(QueryError::invalid(
                "percentiles",
                format!("at most 8 percentiles, got {}", percentiles.len()),
            ));
        }
        let child_kinds = match non_empty(&self.child_kinds).as_deref() {
            None | Some("outbound") => ChildKinds::Outbound,
            Some("all") => ChildKinds::All,
            Some(other) => return Err(QueryError::invalid("child_kinds", format!("{other:?} is not outbound or all"))),
        };
        let edge_by = match non_empty(&self.edge).as_deref() {
            None | Some("child") => EdgeBy::Child,
            Some("server") => EdgeBy::Server,
            Some(other) => return Err(QueryError::invalid("edge", format!("{other:?} is not child or server"))),
        };
        let limit = match non_empty(&self.limit) {
            None => 20,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return Err(QueryError::invalid("limit", format!("{text:?} is not a number from 1 to 1000"))),
            },
        };
        Ok(FanoutParams {
            start,
            end,
            service: non_empty(&self.service),
            operation: non_empty(&self.operation),
            traceql: non_empty(&self.q),
            percentiles,
            child_kinds,
            edge_by,
            limit,
        })
    }
}

pub(crate) async fn fanout(
    State(querier): State<Arc<Querier>>,
    headers: HeaderMap,
    Query(query): Query<FanoutQuery>,
) -> Response {
    let run = async {
        let tenant = querier.tenant(&headers)?;
        let params = query.params()?;
        let _permit = querier.admit()?;
        let q = Arc::clone(&querier);
        querier.executor.run(async move { q.fanout(&tenant, params).await }).await
    };
    match run.await {
        Ok(response) => Json(response).into_response(),
        Err(error) => error_response(&error),
    }
}
