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

/// Filters on `start_time` are answered by the scan itself: blocks inside
/// the window are read unfiltered, blocks across its edges are filtered,
/// and the answer is exact either way (spans of a block across the edge,
/// a span stored twice, a projection without `start_time`, a limit).
#[tokio::test]
async fn start_time_filters_are_exact_at_the_window_edges() {
    let server = TestServer::start().await;
    let base: u64 = 1_764_000_000_000_000_000;
    let ms = 1_000_000;
    // Trace 1 (a root at `base`, children 1 ms apart) twice, as a retried
    // export; trace 3 ten seconds later; trace 5 twenty seconds later.
    for resource_spans in [
        vec![trace(1, "a", 8, base)],
        vec![trace(1, "a", 8, base)],
        vec![trace(3, "b", 2, base + 10_000 * ms)],
        vec![trace(5, "c", 1, base + 20_000 * ms)],
    ] {
        server.ingest(None, resource_spans).await;
    }
    let count = |rows: serde_json::Value| rows[0]["n"].as_i64().unwrap();
    let at = |ns: u64| format!("to_timestamp_nanos({ns})");
    // From the 4th child of trace 1 to before trace 5: children 3..7 of trace 1 (once), all of trace 3.
    let window = format!("start_time >= {} AND start_time < {}", at(base + 3 * ms), at(base + 20_000 * ms));
    let counted = server.sql_json(None, &format!("SELECT count(*) AS n FROM spans WHERE {window}")).await;
    assert_eq!(count(counted), 5 + 3);
    let stored = server.sql_json(None, &format!("SELECT count(*) AS n FROM spans_as_stored WHERE {window}")).await;
    assert_eq!(count(stored), 2 * 5 + 3);
    let names = server
        .sql_json(None, &format!("SELECT name, count(*) AS n FROM spans WHERE {window} GROUP BY name ORDER BY name"))
        .await;
    assert_eq!(names, serde_json::json!([{"name": "GET /b", "n": 1}, {"name": "SELECT", "n": 7}]));
    let limited = server.sql_json(None, &format!("SELECT span_id FROM spans WHERE {window} LIMIT 100")).await;
    assert_eq!(limited.as_array().unwrap().len(), 8);
    // A limit below the rows in range, read from blocks inside and across the window: exactly that many.
    let wide = format!("start_time >= {} AND start_time < {}", at(base + 3 * ms), at(base + 25_000 * ms));
    let limited = server.sql_json(None, &format!("SELECT span_id FROM spans WHERE {wide} LIMIT 3")).await;
    assert_eq!(limited.as_array().unwrap().len(), 3);
    // Exclusive bounds, and a bound alone.
    let after = format!("start_time > {}", at(base + 7 * ms));
    assert_eq!(count(server.sql_json(None, &format!("SELECT count(*) AS n FROM spans WHERE {after}")).await), 3 + 2);

    // The edge blocks are filtered; a window around every block needs no filter.
    let plan = explain_analyze(&server, &format!("SELECT count(*) FROM spans WHERE {window}")).await;
    assert!(plan.contains("FilterExec"), "{plan}");
    let all = format!("start_time >= {} AND start_time <= {}", at(base), at(base + 30_000 * ms));
    let plan = explain_analyze(&server, &format!("SELECT count(*) FROM spans WHERE {all}")).await;
    assert!(!plan.contains("FilterExec"), "{plan}");
    assert_eq!(count(server.sql_json(None, &format!("SELECT count(*) AS n FROM spans WHERE {all}")).await), 9 + 3 + 2);
    server.spanlake.shutdown().await;
}

/// Block bytes the server's querier read so far (`spanlake_querier_block_bytes_read`).
async fn bytes_read(server: &TestServer) -> u64 {
    let text = server.http.get(server.query_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("spanlake_querier_block_bytes_read_total "));
    line.map_or(0, |v| v.trim().parse().unwrap())
}

/// A metrics query that counts per `by()` value takes its filter as an
/// argument of the counting aggregate, and no filter runs above the scan;
/// the filter still prunes it. Service b's spans are in one block of two,
/// and the other's statistics rule it out: counting them reads less than
/// the same count by a filter that cannot prune.
#[tokio::test]
async fn metrics_filters_prune_the_scan() {
    let server = TestServer::start().await;
    let base: u64 = 1_764_000_000_000_000_000;
    server.ingest(None, vec![trace(1, "a", 1, base), trace(3, "a", 1, base)]).await;
    server.ingest(None, vec![trace(5, "b", 1, base + 10_000_000_000)]).await;
    let count = |q: &'static str| {
        let server = &server;
        async move {
            let seconds = base / 1_000_000_000;
            let (start, end) = ((seconds - 60).to_string(), (seconds + 60).to_string());
            let params = [("q", q), ("start", start.as_str()), ("end", end.as_str()), ("step", "60s")];
            let url = server.query_url("/api/metrics/query_range");
            let before = bytes_read(server).await;
            let response = server.http.get(url).query(&params).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(status, 200, "{q}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            let samples = answer["series"].as_array().unwrap().iter().flat_map(|s| s["samples"].as_array().unwrap());
            let spans: f64 = samples.map(|s| s["value"].as_f64().unwrap_or(0.0)).sum();
            (spans, bytes_read(server).await - before)
        }
    };
    let all = count("{ } | count_over_time() by(resource.service.name) with(exemplars=false)").await.0;
    // A regular expression prunes nothing: the same columns of both blocks.
    let matched = count("{ resource.service.name =~ \"b\" } | count_over_time() by(name) with(exemplars=false)");
    let (matched, matched_bytes) = matched.await;
    let (b, b_bytes) =
        count("{ resource.service.name = \"b\" } | count_over_time() by(name) with(exemplars=false)").await;
    assert_eq!((all, matched, b), (6.0, 2.0, 2.0));
    assert!(b_bytes > 0 && b_bytes < matched_bytes, "{b_bytes} bytes read for service b, {matched_bytes} unpruned");
    server.spanlake.shutdown().await;
}
