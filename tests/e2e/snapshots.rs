//! Snapshots of every JSON shape the query API answers with (the contract
//! with Grafana), on a fixed data set written through the real ingest path.
//! Review changes with `cargo insta review` (or INSTA_UPDATE=always).

use crate::common::TestServer;
use spanlake_test_support::otlp::trace;

async fn json(server: &TestServer, path: &str) -> serde_json::Value {
    let response = server.http.get(server.query_url(path)).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_json_shapes() {
    let server = TestServer::start().await;
    let base = 1_764_000_000_000_000_000;
    server.ingest(None, vec![trace(2, "shop", 1, base), trace(3, "cart", 0, base + 1_000_000_000)]).await;
    let id = hex::encode([2u8; 16]);

    insta::assert_json_snapshot!("trace_v1", json(&server, &format!("/api/traces/{id}")).await);
    insta::assert_json_snapshot!("trace_v2", json(&server, &format!("/api/v2/traces/{id}")).await, {
        ".metrics.inspectedBytes" => "[bytes]"
    });
    insta::assert_json_snapshot!(
        "search",
        json(&server, "/api/search?q=%7B%20status%20%3D%20error%20%7D%20%7C%20select(span.http.response.status_code)").await,
        { ".metrics.totalBlockBytes" => "[bytes]" }
    );
    insta::assert_json_snapshot!("tags_v1", json(&server, "/api/search/tags").await);
    insta::assert_json_snapshot!("tags_v2", json(&server, "/api/v2/search/tags").await);
    insta::assert_json_snapshot!(
        "tag_values_v2",
        json(&server, "/api/v2/search/tag/resource.service.name/values").await
    );
    insta::assert_json_snapshot!("tag_values_v1", json(&server, "/api/search/tag/service.name/values").await);
    let rows = server
        .sql_json(None, "SELECT encode(trace_id, 'hex') AS trace_id, root_service_name, root_name, span_count, duration_ns, error_count FROM traces ORDER BY start_time")
        .await;
    insta::assert_json_snapshot!("sql_traces", rows);
    let error = server.http.get(server.query_url("/api/search?q=%7B%20.a%20%3D%20%7D")).send().await.unwrap();
    insta::assert_snapshot!("search_error", format!("{} {}", error.status().as_u16(), error.text().await.unwrap()));
    server.spanlake.shutdown().await;
}
