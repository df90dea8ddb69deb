//! Bad input: each gets its status and a message naming what was wrong, and
//! the server keeps serving afterwards.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use spanlake_test_support::otlp::{request_of_spans as request, span};
use tonic::codec::CompressionEncoding;

use crate::common::TestServer;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn assert_healthy(server: &TestServer, trace: u8) {
    let (status, _) =
        server.export_raw("application/x-protobuf", None, request(vec![span(trace, 1)]).encode_to_vec()).await;
    assert_eq!(status, 200);
    assert!(server.trace(&[trace; 16]).await.is_some());
}

#[tokio::test]
async fn malformed_bodies_and_wrong_types_are_refused() {
    let server = TestServer::start_with(|a| a.ingester.max_request_size = 64 << 10).await;
    let (status, body) =
        server.export_raw("application/x-protobuf", None, b"\xff\xff\xff\xff not protobuf".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("could not be decoded as OTLP protobuf"), "{body}");

    let (status, body) = server.export_raw("application/json", None, b"{\"resourceSpans\": [".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("OTLP JSON"), "{body}");

    let (status, body) = server.export_raw("text/plain", None, b"hello".to_vec()).await;
    assert_eq!(status, 415);
    assert!(body.contains("unsupported content type"), "{body}");

    let (status, body) = server.export_raw("application/x-protobuf", Some("br"), b"x".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("unsupported content encoding"), "{body}");

    let (status, body) = server.export_raw("application/x-protobuf", Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("gzip"), "{body}");

    let (status, body) = server.export_raw("application/x-protobuf", None, vec![0u8; 100 << 10]).await;
    assert_eq!(status, 413);
    assert!(body.contains("larger than the limit of 65536 bytes"), "{body}");

    assert_healthy(&server, 9).await;
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn gzip_bomb_is_refused_without_expanding_it() {
    let server = TestServer::start_with(|a| a.ingester.max_request_size = 1 << 20).await;
    // 128 MiB of zeros compress to about 128 KB; the limit is 1 MiB after decompression.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the compressed bomb fits under the limit ({} bytes)", bomb.len());
    let (status, body) = server.export_raw("application/x-protobuf", Some("gzip"), bomb.clone()).await;
    assert_eq!(status, 413);
    assert!(body.contains("after decompression"), "{body}");

    // The same bomb over gRPC.
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let payload = {
        // A protobuf whose one field is a huge zero-filled string, gzip-compressed by tonic.
        let big = Span { name: "x".repeat(4 << 20), ..span(1, 1) };
        request(vec![big])
    };
    client = client.send_compressed(CompressionEncoding::Gzip);
    let error = client.export(payload).await.unwrap_err();
    assert!(
        matches!(error.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange),
        "gRPC oversize answer: {error:?}"
    );
    assert_healthy(&server, 8).await;
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn invalid_ids_get_partial_success_and_valid_spans_are_stored() {
    let server = TestServer::start().await;
    let zero_trace = Span { trace_id: vec![0; 16], ..span(1, 2) };
    let short_span = Span { span_id: vec![7; 4], ..span(1, 3) };
    let long_trace = Span { trace_id: vec![5; 20], ..span(1, 4) };
    let body = request(vec![span(1, 1), zero_trace, short_span, long_trace, span(1, 5)]);

    // HTTP/protobuf
    let (status, response) = {
        let response = server
            .http
            .post(server.otlp_http_url())
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap())
    };
    assert_eq!(status, 200);
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 3);
    assert!(partial.error_message.contains("3 of 5 spans rejected"), "{}", partial.error_message);
    assert!(partial.error_message.contains("trace id is all zeros"), "{}", partial.error_message);
    let trace = server.trace(&[1; 16]).await.unwrap();
    let mut ids: Vec<_> = spanlake_test_support::http::spans(&trace).iter().map(|s| s.span_id[7]).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 5]);

    // gRPC answers the same way.
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let bad = Span { span_id: vec![0; 8], ..span(2, 1) };
    let response = client.export(request(vec![bad, span(2, 2)])).await.unwrap().into_inner();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 1);

    // HTTP/JSON with hex ids, as the OTLP/JSON mapping has them.
    let json = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0303030303030303030303030303030f", "spanId": "0404040404040404", "name": "ok",
         "kind": 2, "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": 1700000000000000500u64},
        {"traceId": "0303030303030303030303030303030f", "spanId": "04", "name": "short id"}
    ]}]}]});
    let (status, answer) = server.export_raw("application/json", None, json.to_string().into_bytes()).await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], serde_json::json!("1"));
    let mut id = [3u8; 16];
    id[15] = 0x0f;
    let trace = server.trace(&id).await.unwrap();
    assert_eq!(spanlake_test_support::http::spans(&trace)[0].end_time_unix_nano, 1_700_000_000_000_000_500);
    server.spanlake.shutdown().await;
}

/// A span stamped hours ahead (a wrong clock, the year 2262) would keep its
/// block, and every block merged with it, past retention: it is refused
/// through partial success, and its request's other spans are stored.
#[tokio::test]
async fn far_future_spans_are_refused_and_the_rest_stored() {
    let server = TestServer::start().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let at = |ns: u64| Span { start_time_unix_nano: ns, end_time_unix_nano: ns + 1_000_000, ..span(6, 1) };
    let future = Span { span_id: vec![6, 0, 0, 0, 0, 0, 0, 2], ..at(now + 3 * 3600 * 1_000_000_000) };
    let year_2262 = Span { span_id: vec![6, 0, 0, 0, 0, 0, 0, 3], ..at(9_200_000_000_000_000_000) };
    let soon = Span { span_id: vec![6, 0, 0, 0, 0, 0, 0, 4], ..at(now + 60 * 1_000_000_000) };
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let response = client.export(request(vec![at(now), future, year_2262, soon])).await.unwrap().into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2, "{}", partial.error_message);
    assert!(partial.error_message.contains("in the future, more than the 3600 s allowed"), "{}", partial.error_message);
    let trace = server.trace(&[6; 16]).await.unwrap();
    let mut ids: Vec<_> = spanlake_test_support::http::spans(&trace).iter().map(|s| s.span_id[7]).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 4], "now, and a minute ahead (clock skew), are kept");
    server.spanlake.shutdown().await;
}

/// An array nested `depth` levels deep around one integer.
fn nested(depth: usize) -> AnyValue {
    let mut value = AnyValue { value: Some(Value::IntValue(7)) };
    for _ in 0..depth {
        value = AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![value] })) };
    }
    value
}

/// Whatever is accepted reads back: a value nested too deeply to read back is
/// refused (its span, through partial success); a big array is cut to the
/// value size limit as whole elements, still valid, and reported; an array so
/// large that decoding it would cost far more than its bytes refuses its span.
#[tokio::test]
async fn deep_and_huge_attribute_values_are_refused_or_capped() {
    let server = TestServer::start().await;
    let attribute =
        |key: &str, value: AnyValue| KeyValue { key: key.into(), value: Some(value), ..KeyValue::default() };
    let ints = |n: i64| {
        let values = (0..n).map(|i| AnyValue { value: Some(Value::IntValue(i)) }).collect();
        AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) }
    };
    let deep = Span { attributes: vec![attribute("deep", nested(40))], ..span(8, 1) };
    let fine = Span { attributes: vec![attribute("nested", nested(30))], ..span(8, 2) };
    let big = Span { attributes: vec![attribute("big", ints(10_000))], ..span(8, 3) };
    let huge = Span { attributes: vec![attribute("huge", ints(300_000))], ..span(8, 4) };
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let response = client.export(request(vec![huge, deep, fine, big])).await.unwrap().into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2, "{}", partial.error_message);
    assert!(
        partial.error_message.contains("span 0800000000000004: its span would take more than"),
        "{}",
        partial.error_message
    );
    assert!(partial.error_message.contains("1 attribute values truncated"), "{}", partial.error_message);
    // The depth rule, alone.
    let deep = Span { attributes: vec![attribute("deep", nested(40))], ..span(8, 1) };
    let response = client.export(request(vec![deep])).await.unwrap().into_inner();
    let partial = response.partial_success.unwrap();
    assert!(
        partial.error_message.contains("\"deep\" nests arrays and maps more than 32 levels"),
        "{}",
        partial.error_message
    );

    let trace = server.trace(&[8; 16]).await.expect("the trace reads back");
    let spans = spanlake_test_support::http::spans(&trace);
    assert_eq!(spans.len(), 2);
    let value = |id: u8, key: &str| {
        let span = spans.iter().find(|s| s.span_id[7] == id).unwrap();
        span.attributes.iter().find(|kv| kv.key == key).unwrap().value.clone().unwrap()
    };
    assert_eq!(value(2, "nested"), nested(30));
    let Some(Value::ArrayValue(kept)) = value(3, "big").value else { panic!("an array") };
    assert!(kept.values.len() > 1000 && kept.values.len() < 10_000, "{} elements", kept.values.len());
    assert_eq!(kept.values[999], AnyValue { value: Some(Value::IntValue(999)) });
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn hostile_tenant_ids_are_refused() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let body = request(vec![span(3, 1)]).encode_to_vec();
    let long = "a".repeat(200);
    for (tenant, expected) in [
        ("..", "may not be '.' or '..'"),
        (".", "may not be '.' or '..'"),
        ("a/b", "contains '/'"),
        ("", "it is empty"),
        (long.as_str(), "200 characters long"),
        ("tenant\u{e9}", "contains 'é'"),
        ("../../etc", "contains '/'"),
    ] {
        let response = server
            .http
            .post(server.otlp_http_url())
            .header("content-type", "application/x-protobuf")
            .header("x-scope-orgid", tenant.as_bytes())
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "tenant {tenant:?}");
        let text = response.text().await.unwrap();
        assert!(text.contains(expected), "tenant {tenant:?}: {text}");
    }
    let missing = server
        .http
        .post(server.otlp_http_url())
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    assert!(missing.text().await.unwrap().contains("missing X-Scope-OrgID"));

    // gRPC refuses the same way.
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let mut req = tonic::Request::new(request(vec![span(3, 1)]));
    req.metadata_mut().insert("x-scope-orgid", "..".parse().unwrap());
    assert_eq!(client.export(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);

    // Nothing escaped the tenant prefixes, and a valid tenant still works.
    let mut dirs: Vec<_> = std::fs::read_dir(server.dir.path().join("v1"))
        .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    dirs.sort();
    assert!(dirs.is_empty(), "{dirs:?}");
    let ok = server
        .http
        .post(server.otlp_http_url())
        .header("content-type", "application/x-protobuf")
        .header("x-scope-orgid", "team-a")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        spanlake_test_support::http::fetch_trace(&server.http, server.spanlake.http_addr(), &[3; 16], Some("team-a"))
            .await
            .is_some()
    );
    assert!(
        spanlake_test_support::http::fetch_trace(&server.http, server.spanlake.http_addr(), &[3; 16], Some("team-b"))
            .await
            .is_none()
    );
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn too_many_spans_in_one_request_is_refused() {
    let server = TestServer::start_with(|a| a.ingester.max_spans_per_request = 3).await;
    let body = request((1..=4).map(|i| span(4, i)).collect());
    let (status, text) = server.export_raw("application/x-protobuf", None, body.encode_to_vec()).await;
    assert_eq!(status, 413);
    assert!(text.contains("holds 4 spans, the limit is 3"), "{text}");
    // Within the limit, and gzip-compressed, it is accepted.
    let body = request((1..=3).map(|i| span(6, i)).collect());
    let (status, _) = server.export_raw("application/x-protobuf", Some("gzip"), gzip(&body.encode_to_vec())).await;
    assert_eq!(status, 200);
    assert_eq!(spanlake_test_support::http::spans(&server.trace(&[6; 16]).await.unwrap()).len(), 3);
    server.spanlake.shutdown().await;
}
