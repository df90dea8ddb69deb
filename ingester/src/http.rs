//! OTLP/HTTP `POST /v1/traces`: protobuf or JSON bodies, optionally gzip.
//!
//! Sizes are enforced twice: on the body as received and on its decompressed
//! form, where decompression stops one byte past the limit, so a gzip bomb
//! costs at most the limit in memory.

use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;

use crate::error::IngestError;
use crate::service::IngestService;

/// Bodies larger than this are decompressed and decoded on the blocking pool.
const INLINE_DECODE_BYTES: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

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
    let body =
        axum::body::to_bytes(body, limit).await.map_err(|_| IngestError::TooLarge { limit, decompressed: false })?;
    let decode = move || -> Result<(ExportTraceServiceRequest, usize), IngestError> {
        let raw = if gzip { gunzip(&body, limit)? } else { body };
        let size = raw.len();
        Ok((decode_request(&raw, format)?, size))
    };
    let (request, size) = if body_len_hint(headers) > INLINE_DECODE_BYTES || gzip {
        tokio::task::spawn_blocking(decode).await.expect("decoding panicked")?
    } else {
        decode()?
    };
    service.export(&tenant, request, size).await
}

fn body_len_hint(headers: &HeaderMap) -> usize {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(usize::MAX)
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

fn decode_request(body: &[u8], format: Format) -> Result<ExportTraceServiceRequest, IngestError> {
    match format {
        Format::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| IngestError::Undecodable { format: "OTLP protobuf", reason: e.to_string() }),
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| IngestError::Undecodable { format: "OTLP JSON", reason: e.to_string() }),
    }
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
