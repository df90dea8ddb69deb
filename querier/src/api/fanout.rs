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
use serde::Deserialize;

use super::extract::{Admitted, Tenant};
use super::params::{non_empty, unix_seconds_range};
use crate::Querier;
use crate::error::QueryError;
use crate::fanout::{ChildKinds, EdgeBy, FanoutParams};

#[derive(Debug, Deserialize)]
pub(super) struct FanoutQuery {
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

pub(super) async fn fanout(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Query(query): Query<FanoutQuery>,
) -> Result<Json<crate::fanout::FanoutResponse>, QueryError> {
    let params = query.params()?;
    Ok(Json(querier.execute("fanout", permit, |q| async move { q.fanout(&tenant, params).await }).await?))
}
