//! Scale-out: an ingester process and a querier process sharing one object
//! store (a real S3 server on loopback) — acknowledged spans become visible to
//! the querier within its refresh interval.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::common::{fetch_trace, spans, spawn_spanlake};
use crate::sql::trace;
use crate::storage::{s3_args, start_s3};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn querier_process_sees_ingester_process_writes() {
    let root = tempfile::TempDir::new().unwrap();
    let s3 = start_s3(root.path()).await;
    let storage = s3_args(s3, "shared");
    let endpoint = storage.s3_endpoint.clone().unwrap();
    let common = [
        "--storage",
        storage.url.as_str(),
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        "spanlake-test",
        "--s3-secret-access-key",
        "spanlake-test-secret",
        "--s3-allow-http",
    ];
    let mut ingester_args = vec!["run", "ingester"];
    ingester_args.extend(common);
    let mut querier_args = vec!["run", "querier", "--refresh-interval", "500ms"];
    querier_args.extend(common);
    let ingester = spawn_spanlake(&ingester_args);
    let querier = spawn_spanlake(&querier_args);
    assert!(querier.grpc.is_none(), "a querier does not ingest");

    let mut client = TraceServiceClient::connect(format!("http://{}", ingester.grpc.unwrap())).await.unwrap();
    let request = ExportTraceServiceRequest { resource_spans: vec![trace(0x42, "shop", 2, 1_764_000_000_000_000_000)] };
    client.export(request).await.expect("acknowledged");
    let acknowledged = Instant::now();

    let http = reqwest::Client::new();
    let found = loop {
        if let Some(trace) = fetch_trace(&http, querier.http, &[0x42; 16], None).await {
            break trace;
        }
        assert!(acknowledged.elapsed() < Duration::from_secs(10), "not visible 10 s after the acknowledgement");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = acknowledged.elapsed();
    assert_eq!(spans(&found).len(), 3);
    // Refresh interval 500 ms; allow for one refresh plus its listing and reads.
    assert!(waited < Duration::from_secs(3), "visible after {waited:?}");
    // The ingester alone answers no queries but does serve /metrics and /ready.
    let ready = http.get(format!("http://{}/ready", ingester.http)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
