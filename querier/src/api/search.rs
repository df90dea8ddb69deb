//! `GET /api/search`, as Grafana's Tempo datasource calls it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{Admitted, Tenant};
use super::params::{duration, number, unix_seconds_range};
use crate::Querier;
use crate::error::QueryError;
use crate::search::{SearchParams, tags_query};
use crate::traceql;

#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    q: Option<String>,
    tags: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
    limit: Option<String>,
    spss: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

impl SearchQuery {
    fn params(&self) -> Result<SearchParams, QueryError> {
        let query = match (&self.q, &self.tags) {
            (Some(q), Some(t)) if !q.trim().is_empty() && !t.trim().is_empty() => {
                return Err(QueryError::invalid("q", "use either q (TraceQL) or tags, not both"));
            }
            (Some(q), _) if !q.trim().is_empty() => {
                traceql::parse(q).map_err(|e| QueryError::InvalidParameter { name: "q", reason: e.to_string() })?
            }
            (_, Some(tags)) => tags_query(tags)?,
            _ => traceql::parse("{}").expect("valid"),
        };
        let limit = number("limit", &self.limit)?.unwrap_or(20);
        if limit == 0 {
            return Err(QueryError::invalid("limit", "must be greater than 0"));
        }
        let spss = number("spss", &self.spss)?.unwrap_or(3);
        if spss == 0 || spss > 100 {
            return Err(QueryError::invalid("spss", "must be between 1 and 100"));
        }
        let (start, end) = unix_seconds_range(&self.start, &self.end)?;
        let min_duration = duration("minDuration", &self.min_duration)?;
        let max_duration = duration("maxDuration", &self.max_duration)?;
        if let (Some(min), Some(max)) = (min_duration, max_duration)
            && max < min
        {
            return Err(QueryError::invalid("maxDuration", "must not be less than minDuration"));
        }
        Ok(SearchParams {
            query,
            start,
            end,
            limit: limit.min(10_000) as usize,
            spss: spss as usize,
            min_duration,
            max_duration,
        })
    }
}

pub(super) async fn search(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Query(query): Query<SearchQuery>,
) -> Result<Response, QueryError> {
    let params = query.params()?;
    let answer = querier.execute("search", permit, |q| async move { q.search(&tenant, &params).await }).await?;
    let mut response = Json(answer.0).into_response();
    querier.mark_partial("search", &answer.1, &mut response);
    Ok(response)
}
