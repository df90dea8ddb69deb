//! Scale-out: an ingester process and a querier process sharing one object
//! store (a real S3 server on loopback) — acknowledged spans become visible to
//! the querier within its refresh interval.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use spanlake_test_support::http::{fetch_trace, spans};
use spanlake_test_support::otlp::{request, trace};
use spanlake_test_support::wait_until;

use crate::common::spawn_spanlake;
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
    let mut querier_args = vec!["run", "querier", "--refresh-interval", "200ms"];
    querier_args.extend(common);
    let ingester = spawn_spanlake(&ingester_args);
    let querier = spawn_spanlake(&querier_args);
    assert!(querier.grpc.is_none(), "a querier does not ingest");

    let mut client = TraceServiceClient::connect(format!("http://{}", ingester.grpc.unwrap())).await.unwrap();
    client.export(request(vec![trace(0x42, "shop", 2, 1_764_000_000_000_000_000)])).await.expect("acknowledged");

    // Refresh interval 200 ms: visible well before the default interval (5 s)
    // would show it, with room for a busy machine.
    let http = reqwest::Client::new();
    let visible = || async { fetch_trace(&http, querier.http, &[0x42; 16], None).await.is_some() };
    wait_until("the querier process sees the acknowledged trace", Duration::from_secs(4), visible).await;
    let found = fetch_trace(&http, querier.http, &[0x42; 16], None).await.unwrap();
    assert_eq!(spans(&found).len(), 3);
    // The ingester alone answers no queries but does serve /metrics and /ready.
    let ready = http.get(format!("http://{}/ready", ingester.http)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
