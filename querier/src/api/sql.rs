//! `POST /api/sql`: the body is the query (text, or JSON `{"query": "…"}`);
//! the answer is JSON rows by default, CSV with `Accept: text/csv`, Arrow IPC
//! stream with `Accept: application/vnd.apache.arrow.stream`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::extract::{Admitted, Tenant};
use crate::Querier;
use crate::error::QueryError;
use crate::sql::SqlResult;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub(super) async fn sql(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, QueryError> {
    let query = query_text(&headers, &body)?;
    let result = querier.execute("sql", permit, |q| async move { q.sql(&tenant, &query).await }).await?;
    encode(&headers, result)
}

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

fn encode(headers: &HeaderMap, result: SqlResult) -> Result<Response, QueryError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let batches: Vec<&RecordBatch> = result.batches.iter().collect();
    let failed = |what: &str, e: arrow::error::ArrowError| QueryError::Execution(format!("encoding {what}: {e}"));
    if accept.contains(ARROW_STREAM) {
        let mut out = Vec::new();
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut out, &result.schema).map_err(|e| failed("arrow", e))?;
        for batch in batches {
            writer.write(batch).map_err(|e| failed("arrow", e))?;
        }
        writer.finish().map_err(|e| failed("arrow", e))?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], out).into_response());
    }
    if accept.contains("text/csv") {
        let mut out = Vec::new();
        {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            for batch in batches {
                writer.write(batch).map_err(|e| QueryError::InvalidParameter {
                    name: "Accept",
                    reason: format!("CSV cannot hold this result ({e}); select scalar columns or ask for JSON"),
                })?;
            }
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response());
    }
    let mut out = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut out);
        writer.write_batches(&batches).map_err(|e| failed("json", e))?;
        writer.finish().map_err(|e| failed("json", e))?;
    }
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}
