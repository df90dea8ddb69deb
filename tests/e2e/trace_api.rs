//! Trace by id as Grafana calls it: v1 and v2, JSON and protobuf (decoded with
//! the OTLP types), not-found behaviour, partial traces, id forms, tenants.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;

use spanlake_test_support::otlp::trace;

use crate::common::TestServer;

/// Tempo's `TraceByIDResponse`, decoded independently of the server's own type.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<Metrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Metrics {
    #[prost(uint64, tag = "1")]
    inspected_bytes: u64,
}

async fn get(server: &TestServer, path: &str, accept: Option<&str>, tenant: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut request = server.http.get(server.query_url(path));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    spanlake_test_support::http::parts(request).await
}

fn span_count(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_in_json_and_protobuf() {
    let server = TestServer::start().await;
    let mut short = [0u8; 16];
    short[14] = 0x0a;
    short[15] = 0xbc;
    let mut resource = trace(1, "shop", 2, 1_764_000_000_000_000_000);
    for span in &mut resource.scope_spans[0].spans {
        span.trace_id = short.to_vec();
    }
    server.ingest(None, vec![resource]).await;

    // Grafana: v2 protobuf, id without leading zeros, upper case.
    let (status, content_type, body) = get(&server, "/api/v2/traces/ABC", Some("application/protobuf"), None).await;
    assert_eq!((status, content_type.as_str()), (200, "application/protobuf"));
    let response = TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_eq!(span_count(&response.trace.unwrap().resource_spans), 3);
    assert_eq!(response.status, 0, "COMPLETE");
    assert!(response.metrics.unwrap().inspected_bytes > 0);

    // v1 protobuf is OTLP TracesData.
    let (status, _, body) =
        get(&server, "/api/traces/00000000000000000000000000000abc", Some("application/protobuf"), None).await;
    assert_eq!(status, 200);
    assert_eq!(span_count(&TracesData::decode(body.as_slice()).unwrap().resource_spans), 3);

    // v2 JSON
    let (status, _, body) = get(&server, "/api/v2/traces/abc", None, None).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let spans = &json["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans.as_array().unwrap().len(), 3);
    assert_eq!(spans[0]["traceId"], "AAAAAAAAAAAAAAAAAAAKvA==");
    assert!(json["metrics"]["inspectedBytes"].is_string(), "uint64 as string");
    assert!(json.get("status").is_none(), "COMPLETE is omitted");

    // Not found: v1 404 with an empty body, v2 200 with an empty trace.
    let (status, _, body) = get(&server, "/api/traces/dead", None, None).await;
    assert_eq!((status, body.len()), (404, 0));
    let (status, _, body) = get(&server, "/api/v2/traces/dead", Some("application/protobuf"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        span_count(&TraceByIdResponse::decode(body.as_slice()).unwrap().trace.unwrap_or_default().resource_spans),
        0
    );
    // Invalid ids: 400 naming why.
    for bad in ["xyz", &"a".repeat(33)] {
        let (status, _, body) = get(&server, &format!("/api/traces/{bad}"), None, None).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("invalid trace id"));
    }
    // A time range that excludes the trace.
    let (status, _, _) = get(&server, "/api/traces/abc?start=1000&end=2000", None, None).await;
    assert_eq!(status, 404);
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn traces_over_the_size_limit_are_partial_in_v2_and_422_in_v1() {
    let server = TestServer::start_with(|a| a.querier.max_trace_size = 600).await;
    server.ingest(None, vec![trace(5, "shop", 10, 1_764_000_000_000_000_000)]).await;
    let id = hex::encode([5u8; 16]);
    let (status, _, body) = get(&server, &format!("/api/traces/{id}"), None, None).await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&body).contains("maximum size of 600 bytes"));
    let (status, _, body) = get(&server, &format!("/api/v2/traces/{id}"), Some("application/protobuf"), None).await;
    assert_eq!(status, 200);
    let response = TraceByIdResponse::decode(body.as_slice()).unwrap();
    assert_eq!(response.status, 1, "PARTIAL");
    assert!(response.message.contains("partial trace"));
    let spans = span_count(&response.trace.unwrap().resource_spans);
    assert!(spans > 0 && spans < 11, "{spans} spans");
    // A trace under the limit is read whole, although its decoded rows take
    // more bytes than its protobuf (the read budget is 8× the limit).
    server.ingest(None, vec![trace(6, "shop", 1, 1_764_000_000_000_000_000)]).await;
    let (status, _, body) = get(&server, &format!("/api/traces/{}", hex::encode([6u8; 16])), None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn tenants_see_only_their_traces_by_id_and_search() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    server.ingest(Some("team-a"), vec![trace(9, "a-shop", 1, 1_764_000_000_000_000_000)]).await;
    let id = hex::encode([9u8; 16]);
    assert_eq!(get(&server, &format!("/api/traces/{id}"), None, Some("team-a")).await.0, 200);
    assert_eq!(get(&server, &format!("/api/traces/{id}"), None, Some("team-b")).await.0, 404);
    assert_eq!(get(&server, &format!("/api/traces/{id}"), None, None).await.0, 401);
    let (_, _, body) = get(&server, "/api/search?q=%7B%7D", None, Some("team-b")).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["traces"], serde_json::json!([]));
    let (_, _, body) = get(&server, "/api/search?q=%7B%7D", None, Some("team-a")).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["traces"].as_array().unwrap().len(), 1);
    let (_, _, body) = get(&server, "/api/search/tags", None, Some("team-b")).await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tagNames"], serde_json::json!([]));
    server.spanlake.shutdown().await;
}
