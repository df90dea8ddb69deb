//! OTLP/HTTP `POST /v1/traces`: protobuf or JSON bodies, optionally gzip.
//!
//! Sizes are enforced twice: on the body as received and on its decompressed
//! form, where decompression stops one byte past the limit, so a gzip bomb
//! costs at most the limit in memory. A body's bytes are admitted (against
//! `--max-decoding-bytes`) before it is read.

use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;

use crate::decode::Format;
use crate::error::IngestError;
use crate::service::{INLINE_DECODE_BYTES, IngestService};

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

pub(crate) fn router(service: Arc<IngestService>) -> Router {
    Router::new().route("/v1/traces", post(export)).with_state(service)
}

async fn export(State(service): State<Arc<IngestService>>, headers: HeaderMap, body: Body) -> Response {
    let format = match request_format(&headers) {
        Ok(format) => format,
        Err(error) => return error_response(Format::Json, &error),
    };
    match handle(&service, &headers, format, body).await {
        Ok(response) => {
            let body = match format {
                Format::Protobuf => response.encode_to_vec(),
                Format::Json => response_json(&response),
            };
            ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
        }
        Err(error) => error_response(format, &error),
    }
}

async fn handle(
    service: &IngestService,
    headers: &HeaderMap,
    format: Format,
    body: Body,
) -> Result<ExportTraceServiceResponse, IngestError> {
    let tenant = service.tenant(headers.get("x-scope-orgid").map(HeaderValue::as_bytes))?;
    let limit = service.limits.max_request_bytes;
    let gzip = match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("") | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(other) => return Err(IngestError::UnsupportedEncoding(other.to_owned())),
    };
    // The body's bytes are admitted before it is read: its declared length,
    // or the limit when it declares none.
    let declared = body_len_hint(headers);
    if declared.is_some_and(|len| len > limit) {
        return Err(IngestError::TooLarge { limit, decompressed: false });
    }
    let admission = service.admit(None, declared.unwrap_or(limit))?;
    let body = read_body(body, declared, limit).await?;
    let (raw, admission) = if gzip {
        // Decompressed bytes are admitted before they are produced: at most the limit.
        let admission = service.admit(Some(admission), limit)?;
        let raw = if body.len() > INLINE_DECODE_BYTES / 4 {
            tokio::task::spawn_blocking(move || gunzip(&body, limit)).await.expect("gunzip panicked")?
        } else {
            gunzip(&body, limit)?
        };
        (raw, admission)
    } else {
        (body, admission)
    };
    service.export(&tenant, raw, format, admission).await
}

/// Reads the whole body into one buffer sized by its declared length, so
/// that it is held once (collecting chunks, then joining them, held it twice).
async fn read_body(body: Body, declared: Option<usize>, limit: usize) -> Result<Bytes, IngestError> {
    use futures::StreamExt as _;
    let mut out = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| IngestError::Undecodable { format: "an HTTP body", reason: e.to_string() })?;
        if out.len() + chunk.len() > limit {
            return Err(IngestError::TooLarge { limit, decompressed: false });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn body_len_hint(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
}

fn request_format(headers: &HeaderMap) -> Result<Format, IngestError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedContentType(value.to_owned())),
    }
}

/// Decompresses at most `limit` bytes; more is an error, not an allocation.
fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, IngestError> {
    let mut out = Vec::with_capacity((body.len() * 4).min(limit));
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::Undecodable { format: "gzip", reason: e.to_string() })?;
    if out.len() > limit {
        return Err(IngestError::TooLarge { limit, decompressed: true });
    }
    Ok(out.into())
}

/// OTLP/JSON of the response: 64-bit integers as strings, defaults omitted.
fn response_json(response: &ExportTraceServiceResponse) -> Vec<u8> {
    let body = match &response.partial_success {
        Some(p) => serde_json::json!({
            "partialSuccess": { "rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message }
        }),
        None => serde_json::json!({}),
    };
    body.to_string().into_bytes()
}

fn error_response(format: Format, error: &IngestError) -> Response {
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let rpc = RpcStatus { code: error.grpc_code() as i32, message: error.to_string() };
    let body = match format {
        Format::Protobuf => rpc.encode_to_vec(),
        Format::Json => serde_json::json!({ "code": rpc.code, "message": rpc.message }).to_string().into_bytes(),
    };
    let mut response = (status, [(header::CONTENT_TYPE, format.content_type())], body).into_response();
    if let Some(delay) = error.retry_after() {
        let secs = delay.as_secs_f64().ceil().max(1.0) as u64;
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
