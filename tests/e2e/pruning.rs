//! Pruning is observable in execution metrics, not only in correct answers.

use crate::common::TestServer;
use spanlake_test_support::otlp::trace;

/// `EXPLAIN ANALYZE` of `query`, as text.
async fn explain_analyze(server: &TestServer, query: &str) -> String {
    let response =
        server.http.post(server.query_url("/api/sql")).body(format!("EXPLAIN ANALYZE {query}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let rows: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    rows.as_array().unwrap().iter().map(|r| r["plan"].as_str().unwrap().to_owned()).collect::<Vec<_>>().join("\n")
}

/// Distinct files read by the scans of the plan (blocks that can share a
/// span are read by scans of their own, one per trace-id range).
fn files_scanned(plan: &str) -> usize {
    let mut files = std::collections::BTreeSet::new();
    for scan in plan.lines().filter(|l| l.contains("DataSourceExec")) {
        for piece in scan.split(['[', ']', ',', ' ']).filter(|p| p.ends_with(".parquet")) {
            files.insert(piece.to_owned());
        }
    }
    files.len()
}

fn metric<'a>(plan: &'a str, name: &str) -> &'a str {
    let start = plan.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {plan}")) + name.len() + 1;
    let rest = &plan[start..];
    rest[..rest.find(", ").unwrap_or(rest.len())].trim()
}

#[tokio::test]
async fn trace_id_and_time_filters_prune_blocks_and_row_groups() {
    let server = TestServer::start().await;
    let base = 1_764_000_000_000_000_000;
    // Block 1 holds traces 1 and 3 (its trace-id range covers 2); block 2 holds trace 5, ten seconds later.
    server.ingest(None, vec![trace(1, "a", 1, base), trace(3, "a", 1, base)]).await;
    server.ingest(None, vec![trace(5, "b", 1, base + 10_000_000_000)]).await;

    // Trace 5: the catalog's trace-id ranges leave one block of two.
    let plan =
        explain_analyze(&server, "SELECT name FROM spans WHERE trace_id = X'05050505050505050505050505050505'").await;
    assert_eq!(files_scanned(&plan), 1, "{plan}");
    assert!(metric(&plan, "output_rows").starts_with('2'), "{plan}");

    // Trace 2 lies inside block 1's range, and its statistics admit it, but the
    // bloom filter proves it absent: the row group is never read.
    let plan =
        explain_analyze(&server, "SELECT name FROM spans WHERE trace_id = X'02020202020202020202020202020202'").await;
    assert_eq!(files_scanned(&plan), 1, "{plan}");
    assert_eq!(metric(&plan, "row_groups_pruned_statistics"), "1 total → 1 matched", "{plan}");
    assert_eq!(metric(&plan, "row_groups_pruned_bloom_filter"), "1 total → 0 matched", "{plan}");

    // A time range after block 1 leaves only block 2.
    let plan = explain_analyze(
        &server,
        "SELECT count(*) FROM spans WHERE start_time >= to_timestamp_nanos(1764000005000000000)",
    )
    .await;
    assert_eq!(files_scanned(&plan), 1, "{plan}");

    // No filter: both blocks.
    let plan = explain_analyze(&server, "SELECT count(*) FROM spans").await;
    assert_eq!(files_scanned(&plan), 2, "{plan}");
    server.spanlake.shutdown().await;
}
