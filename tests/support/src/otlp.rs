//! OTLP builders: attributes, spans, resources, whole traces and requests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// 2025-11-24T16:00:00Z in Unix nanoseconds: the default time of test spans.
pub const BASE_NS: u64 = 1_764_000_000_000_000_000;
/// Span kinds as OTLP numbers.
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;

pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

pub fn string(key: &str, value: &str) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

pub fn int(key: &str, value: i64) -> KeyValue {
    kv(key, Value::IntValue(value))
}

/// Span `id` of trace `t`: trace id `[t; 16]`, span id `[t, 0, …, id]`, named
/// `op`, 1 ms long at [`BASE_NS`]. Set other fields with `Span { …, ..span(t, id) }`.
pub fn span(t: u8, id: u8) -> Span {
    Span {
        trace_id: vec![t; 16],
        span_id: vec![t, 0, 0, 0, 0, 0, 0, id],
        name: "op".into(),
        start_time_unix_nano: BASE_NS,
        end_time_unix_nano: BASE_NS + 1_000_000,
        ..Default::default()
    }
}

/// The span id of span `id` of trace `t` (as [`span`] makes it).
pub fn span_id(t: u8, id: u8) -> Vec<u8> {
    vec![t, 0, 0, 0, 0, 0, 0, id]
}

/// `spans` under one resource (with `service.name` when given, then `extra`) and one scope.
pub fn resource_spans(service: Option<&str>, extra: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    let mut attributes: Vec<KeyValue> = service.map(|s| string("service.name", s)).into_iter().collect();
    attributes.extend(extra);
    ResourceSpans {
        resource: Some(Resource { attributes, ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        schema_url: String::new(),
    }
}

/// Trace `t` with a server root `GET /<service>` in `service` and `children`
/// client calls `SELECT` (PostgreSQL), starting at `base_ns`. Even traces fail:
/// the root has status error and `http.response.status_code` 500.
pub fn trace(t: u8, service: &str, children: u8, base_ns: u64) -> ResourceSpans {
    let failed = t.is_multiple_of(2);
    let root = Span {
        name: format!("GET /{service}"),
        kind: SERVER,
        start_time_unix_nano: base_ns,
        end_time_unix_nano: base_ns + 100_000_000,
        attributes: vec![int("http.response.status_code", if failed { 500 } else { 200 })],
        status: failed.then(|| Status { code: 2, message: "boom".into() }),
        ..span(t, 1)
    };
    let mut spans = vec![root];
    for c in 0..children {
        spans.push(Span {
            span_id: vec![t, 0, 0, 0, 0, 0, 1, c + 1],
            parent_span_id: span_id(t, 1),
            name: "SELECT".into(),
            kind: CLIENT,
            start_time_unix_nano: base_ns + 1_000_000 * c as u64,
            end_time_unix_nano: base_ns + 1_000_000 * c as u64 + 10_000_000 * (c as u64 + 1),
            attributes: vec![string("db.system.name", "postgresql")],
            ..span(t, 1)
        });
    }
    resource_spans(Some(service), Vec::new(), spans)
}

pub fn request(resource_spans: Vec<ResourceSpans>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans }
}

/// One request holding `spans` under an empty resource.
pub fn request_of_spans(spans: Vec<Span>) -> ExportTraceServiceRequest {
    request(vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }])
}
