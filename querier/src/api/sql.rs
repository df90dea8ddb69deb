//! `POST /api/sql`: the body is the query (text, or JSON `{"query": "…"}`);
//! the answer is JSON rows by default, CSV with `Accept: text/csv`, Arrow IPC
//! stream with `Accept: application/vnd.apache.arrow.stream`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::extract::{Admitted, Tenant};
use crate::Querier;
use crate::error::QueryError;
use crate::sql::SqlFormat;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub(super) async fn sql(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, QueryError> {
    let query = query_text(&headers, &body)?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (format, content_type) = if accept.contains(ARROW_STREAM) {
        (SqlFormat::Arrow, ARROW_STREAM)
    } else if accept.contains("text/csv") {
        (SqlFormat::Csv, "text/csv; charset=utf-8")
    } else {
        (SqlFormat::Json, "application/json")
    };
    // Encoding runs in the query's task: under its deadline and memory limit.
    let answer = querier.execute("sql", permit, |q| async move { q.sql(&tenant, &query, format).await }).await?;
    let mut response = ([(header::CONTENT_TYPE, content_type)], answer.body).into_response();
    querier.mark_partial("sql", &answer.partial, &mut response);
    if answer.spread {
        response.headers_mut().insert(SPREAD_HEADER, axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Set on an answer computed by several queriers.
pub(crate) const SPREAD_HEADER: &str = "x-spanlake-spread";

fn query_text(headers: &HeaderMap, body: &[u8]) -> Result<String, QueryError> {
    let invalid = |reason: &str| QueryError::InvalidParameter { name: "body", reason: reason.into() };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = if is_json {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| invalid("expected JSON {\"query\": \"…\"}"))?;
        value["query"].as_str().ok_or_else(|| invalid("expected JSON {\"query\": \"…\"}"))?.to_owned()
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| invalid("the query is not UTF-8"))?
    };
    if text.trim().is_empty() {
        return Err(invalid("send the SQL query as the request body"));
    }
    Ok(text)
}
