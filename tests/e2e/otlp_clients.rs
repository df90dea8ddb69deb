//! The official `opentelemetry-otlp` exporter over gRPC (gzip), HTTP/protobuf
//! and HTTP/JSON: every field of an exported span is read back.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Pv;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as PKind;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

use spanlake_test_support::http::spans;

use crate::common::TestServer;

fn attrs() -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.route", "/checkout/{id}"),
        KeyValue::new("http.response.status_code", 503i64),
        KeyValue::new("ratio", 0.25f64),
        KeyValue::new("retry", true),
        KeyValue::new("tags", Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("b")]))),
        KeyValue::new("codes", Value::Array(Array::I64(vec![1, 2, 3]))),
    ]
}

fn span_data(trace_id: u128, name: &'static str) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
    let linked = SpanContext::new(
        TraceId::from(0xabcdefu128),
        SpanId::from(0x1234u64),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "x")]).unwrap(),
    );
    let mut events = SpanEvents::default();
    events.events = vec![Event::new(
        "exception",
        start + Duration::from_micros(10),
        vec![KeyValue::new("exception.type", "Timeout")],
        1,
    )];
    events.dropped_count = 4;
    let mut links = SpanLinks::default();
    links.links = vec![Link::new(linked, vec![KeyValue::new("link.kind", "follows")], 0)];
    links.dropped_count = 3;
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace_id),
            SpanId::from(0x0102030405060708u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("congo", "t61rcWkgMzE")]).unwrap(),
        ),
        parent_span_id: SpanId::from(0x1111u64),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed(name),
        start_time: start,
        end_time: start + Duration::from_micros(1500),
        attributes: attrs(),
        dropped_attributes_count: 2,
        events,
        links,
        status: Status::error("upstream timed out"),
        instrumentation_scope: InstrumentationScope::builder("checkout-lib")
            .with_version("2.1.0")
            .with_attributes([KeyValue::new("scope.attr", 7i64)])
            .build(),
    }
}

/// A span with only ids, name and times set.
pub(crate) fn minimal_span(trace_id: u128, name: &'static str) -> SpanData {
    let mut span = span_data(trace_id, name);
    span.attributes.clear();
    span.events = SpanEvents::default();
    span.links = SpanLinks::default();
    span.parent_span_id = SpanId::INVALID;
    span
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("checkout")
        .with_attributes([KeyValue::new("k8s.pod.name", "checkout-abc"), KeyValue::new("host.cpus", 8i64)])
        .build()
}

async fn export_and_check(server: &TestServer, mut exporter: opentelemetry_otlp::SpanExporter, trace_id: u128) {
    exporter.set_resource(&resource());
    exporter.export(vec![span_data(trace_id, "POST /checkout")]).await.expect("export acknowledged");

    // Acknowledged means visible: no waiting.
    let data = server.trace(&trace_id.to_be_bytes()).await.expect("trace is stored");
    assert_eq!(data.resource_spans.len(), 1);
    let rs = &data.resource_spans[0];
    let resource_attrs: HashMap<_, _> = rs
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
        .collect();
    assert_eq!(resource_attrs["service.name"], Pv::StringValue("checkout".into()));
    assert_eq!(resource_attrs["k8s.pod.name"], Pv::StringValue("checkout-abc".into()));
    assert_eq!(resource_attrs["host.cpus"], Pv::IntValue(8));
    let scope = rs.scope_spans[0].scope.as_ref().unwrap();
    assert_eq!((scope.name.as_str(), scope.version.as_str()), ("checkout-lib", "2.1.0"));
    assert_eq!(scope.attributes[0].key, "scope.attr");

    let all = spans(&data);
    assert_eq!(all.len(), 1);
    let span = all[0];
    assert_eq!(span.trace_id, trace_id.to_be_bytes());
    assert_eq!(span.span_id, 0x0102030405060708u64.to_be_bytes());
    assert_eq!(span.parent_span_id, 0x1111u64.to_be_bytes());
    assert_eq!(span.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(span.flags & 0xff, 1, "sampled flag");
    assert_eq!(span.flags & 0x300, 0x300, "remote parent flags");
    assert_eq!(span.name, "POST /checkout");
    assert_eq!(span.kind, PKind::Server as i32);
    assert_eq!(span.start_time_unix_nano, 1_764_000_000_123_456_789);
    assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 1_500_000);
    let got: HashMap<_, _> =
        span.attributes.iter().map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap())).collect();
    assert_eq!(got["http.route"], Pv::StringValue("/checkout/{id}".into()));
    assert_eq!(got["http.response.status_code"], Pv::IntValue(503));
    assert_eq!(got["ratio"], Pv::DoubleValue(0.25));
    assert_eq!(got["retry"], Pv::BoolValue(true));
    match &got["codes"] {
        Pv::ArrayValue(a) => assert_eq!(
            a.values.iter().map(|v| v.value.clone().unwrap()).collect::<Vec<_>>(),
            vec![Pv::IntValue(1), Pv::IntValue(2), Pv::IntValue(3)]
        ),
        other => panic!("codes is {other:?}"),
    }
    assert!(matches!(&got["tags"], Pv::ArrayValue(a) if a.values.len() == 2));
    assert_eq!(span.dropped_attributes_count, 2);
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "exception");
    assert_eq!(span.events[0].time_unix_nano, 1_764_000_000_123_466_789);
    assert_eq!(span.events[0].attributes[0].key, "exception.type");
    assert_eq!(span.events[0].dropped_attributes_count, 1);
    assert_eq!(span.dropped_events_count, 4);
    assert_eq!(span.links.len(), 1);
    assert_eq!(span.links[0].trace_id, 0xabcdefu128.to_be_bytes());
    assert_eq!(span.links[0].span_id, 0x1234u64.to_be_bytes());
    assert_eq!(span.links[0].trace_state, "vendor=x");
    assert_eq!(span.links[0].attributes[0].key, "link.kind");
    assert_eq!(span.dropped_links_count, 3);
    let status = span.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "upstream timed out"));

    // The same trace as Tempo's v1 JSON: base64 ids, enum names, int64 as strings.
    let text = server.get_text(&format!("/api/traces/{trace_id:x}")).await;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let span = &json["batches"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["spanId"], "AQIDBAUGBwg=");
    assert_eq!(span["kind"], "SPAN_KIND_SERVER");
    assert_eq!(span["startTimeUnixNano"], "1764000000123456789");
    assert_eq!(span["status"]["code"], "STATUS_CODE_ERROR");
}

#[tokio::test]
async fn grpc_with_gzip_round_trips_every_field() {
    let server = TestServer::start().await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    export_and_check(&server, exporter, 0x11aa22bb33cc44dd55ee66ff77008899).await;
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn http_protobuf_round_trips_every_field() {
    let server = TestServer::start().await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(server.otlp_http_url())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    export_and_check(&server, exporter, 0x0022aa22bb33cc44dd55ee66ff770088).await;
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn http_json_round_trips_every_field() {
    let server = TestServer::start().await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(server.otlp_http_url())
        .build()
        .unwrap();
    export_and_check(&server, exporter, 0x33aa22bb33cc44dd55ee66ff77008877).await;
    server.spanlake.shutdown().await;
}

/// An app on the SDK's defaults: `BatchSpanProcessor` (queue 2048, batches of
/// 512, one export at a time) exporting straight to Spanlake at several
/// thousand spans per second. Every span must be stored: each export is
/// acknowledged once durable, fast enough that the queue never overflows.
/// (With a one-second group-commit timer the queue drained at 512 spans/s and
/// most spans were dropped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_batch_processor_defaults_lose_no_spans_at_thousands_per_second() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    const SPANS_PER_SECOND: u64 = 4_000;
    const SECONDS: u64 = 3;
    let server = TestServer::start().await;
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(server.grpc_url()).build().unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build();
    let tracer = provider.tracer("sdk-defaults");
    // Spans are made on a plain thread, as an app's request handlers would, in
    // 10 ms ticks of SPANS_PER_SECOND / 100 spans.
    let made = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut made = 0u64;
        for tick in 0..SECONDS * 100 {
            for _ in 0..SPANS_PER_SECOND / 100 {
                tracer.in_span("GET /checkout", |_| {});
                made += 1;
            }
            let next = started + Duration::from_millis(10 * (tick + 1));
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        }
        made
    });
    let made = tokio::task::spawn_blocking(move || made.join().unwrap()).await.unwrap();
    let provider = tokio::task::spawn_blocking(move || {
        provider.force_flush().expect("flush");
        provider
    })
    .await
    .unwrap();
    let rows = server.sql_json(None, "SELECT count(*) AS spans FROM spans").await;
    assert_eq!(rows[0]["spans"], made, "every span the app made is stored");
    tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().expect("shutdown");
    server.spanlake.shutdown().await;
}

/// TraceQL over events and links, as the exporter sent them: a span matches
/// when one of its events (links) does.
#[tokio::test]
async fn traceql_filters_on_events_and_links() {
    let server = TestServer::start().await;
    let mut exporter = server.http_exporter();
    exporter.set_resource(&resource());
    exporter.export(vec![span_data(0x44aa22bb33cc44dd55ee66ff77008866, "POST /checkout")]).await.unwrap();
    for (q, found) in [
        ("{ event:name = \"exception\" }", true),
        ("{ event:name = \"retry\" }", false),
        ("{ event:name != \"exception\" }", false),
        ("{ event.exception.type = \"Timeout\" }", true),
        ("{ event.exception.type != nil }", true),
        ("{ event.missing != nil }", false),
        ("{ link:traceID = \"ABCDEF\" }", true),
        ("{ link:spanID = \"1234\" }", true),
        ("{ link:spanID = \"4321\" }", false),
        ("{ link.link.kind = \"follows\" && event:name = \"exception\" }", true),
    ] {
        let response = server.http.get(server.query_url("/api/search")).query(&[("q", q)]).send().await.unwrap();
        assert_eq!(response.status(), 200, "{q}");
        let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["traces"].as_array().unwrap().len(), usize::from(found), "{q}: {body}");
    }
    server.spanlake.shutdown().await;
}
