//! SQL over spans written through the real ingest path: answers in JSON, CSV
//! and Arrow; refused statements; tenant isolation.

use spanlake_test_support::otlp::trace;
use spanlake_test_support::wait_until;

use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_in_json_csv_and_arrow() {
    let server = TestServer::start().await;
    let base = 1_764_000_000_000_000_000;
    server.ingest(None, vec![trace(1, "shop", 3, base), trace(2, "shop", 1, base + 1_000_000_000)]).await;
    server.ingest(None, vec![trace(3, "cart", 0, base + 2_000_000_000)]).await;

    let rows = server
        .sql_json(None, "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name")
        .await;
    assert_eq!(rows, serde_json::json!([{"service_name": "cart", "spans": 1}, {"service_name": "shop", "spans": 6}]));

    // Numeric attributes compare numerically.
    let rows = server
        .sql_json(
            None,
            "SELECT name FROM spans WHERE span_attributes['http.response.status_code']['int'] >= 500 ORDER BY name",
        )
        .await;
    assert_eq!(rows, serde_json::json!([{"name": "GET /shop"}]));

    // The traces view: one row per trace with its root and duration.
    let rows = server
        .sql_json(
            None,
            "SELECT encode(trace_id, 'hex') AS id, root_service_name, root_name, span_count, duration_ns, error_count \
         FROM traces ORDER BY start_time",
        )
        .await;
    assert_eq!(rows[0]["id"], "01".repeat(16));
    assert_eq!(rows[0]["root_name"], "GET /shop");
    assert_eq!(rows[0]["span_count"], 4);
    assert_eq!(rows[0]["duration_ns"], 100_000_000);
    assert_eq!(rows[1]["error_count"], 1);
    assert_eq!(rows[2]["root_service_name"], "cart");

    let (status, content_type, body) =
        server.sql(None, "text/csv", "SELECT name, kind FROM spans WHERE kind = 'server' ORDER BY name").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    assert_eq!(String::from_utf8(body).unwrap(), "name,kind\nGET /cart,server\nGET /shop,server\nGET /shop,server\n");

    let (status, content_type, body) =
        server.sql(None, "application/vnd.apache.arrow.stream", "SELECT trace_id, duration_ns FROM spans").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/vnd.apache.arrow.stream");
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 7);

    // Nested columns cannot be CSV: a clear 400.
    let (status, _, body) = server.sql(None, "text/csv", "SELECT span_attributes FROM spans").await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn sql_that_writes_or_reads_files_is_refused() {
    let server = TestServer::start().await;
    server.ingest(None, vec![trace(1, "shop", 1, 1_764_000_000_000_000_000)]).await;
    for (query, expected) in [
        ("CREATE TABLE t AS SELECT * FROM spans", "refused: CREATE TABLE"),
        ("DROP TABLE spans", "refused: DROP TABLE"),
        ("INSERT INTO spans SELECT * FROM spans", "refused: INSERT INTO"),
        ("DELETE FROM spans", "refused: DELETE FROM"),
        ("COPY (SELECT * FROM spans) TO '/tmp/stolen.parquet'", "COPY is refused"),
        ("CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE is refused"),
        ("SET datafusion.execution.target_partitions = 1", "refused: SET"),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * FROM '/etc/passwd'", "/etc/passwd' not found"),
        ("SELECT * FROM read_parquet('/etc/x.parquet')", "read_parquet"),
        ("SELECT * FROM information_schema.tables", "information_schema"),
        ("SELEC 1", "invalid SQL"),
    ] {
        let (status, _, body) = server.sql(None, "application/json", query).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_lowercase().contains(&expected.to_lowercase()), "{query}: {body}");
    }
    assert!(!std::path::Path::new("/tmp/stolen.parquet").exists());
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn tenants_cannot_read_each_other() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let base = 1_764_000_000_000_000_000;
    server.ingest(Some("team-a"), vec![trace(1, "a-service", 1, base)]).await;
    server.ingest(Some("team-b"), vec![trace(2, "b-service", 1, base)]).await;
    let (status, _, body) =
        server.sql(Some("team-a"), "application/json", "SELECT DISTINCT service_name FROM spans").await;
    assert_eq!(status, 200);
    let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows, serde_json::json!([{"service_name": "a-service"}]));
    // Asking for the other tenant's trace id by SQL finds nothing.
    let (_, _, body) = server
        .sql(
            Some("team-a"),
            "application/json",
            "SELECT count(*) AS n FROM spans WHERE trace_id = X'02020202020202020202020202020202'",
        )
        .await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), serde_json::json!([{"n": 0}]));
    // No tenant header: refused.
    let (status, _, _) = server.sql(None, "application/json", "SELECT 1").await;
    assert_eq!(status, 401);
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prints_tables_and_waterfalls() {
    let server = TestServer::start().await;
    server.ingest(None, vec![trace(7, "shop", 2, 1_764_000_000_000_000_000)]).await;
    let client = spanlake::client::ClientArgs { url: format!("http://{}", server.spanlake.http_addr()), tenant: None };
    let table = spanlake::client::sql(&client, "SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name")
        .await
        .unwrap();
    assert!(table.contains("| GET /shop | 1 |"), "{table}");
    assert!(table.contains("| SELECT    | 2 |"), "{table}");
    assert!(table.ends_with("(2 rows)"), "{table}");
    let refused = spanlake::client::sql(&client, "DROP TABLE spans").await.unwrap_err().to_string();
    assert!(refused.contains("400") && refused.contains("DROP TABLE"), "{refused}");
    let waterfall = spanlake::client::trace(&client, &hex::encode([7u8; 16])).await.unwrap();
    let lines: Vec<&str> = waterfall.lines().collect();
    assert!(lines[0].contains("3 spans"), "{waterfall}");
    assert!(lines[1].starts_with("shop GET /shop"), "{waterfall}");
    assert!(lines[2].starts_with("  shop SELECT"), "{waterfall}");
    let missing = spanlake::client::trace(&client, "abc").await.unwrap_err().to_string();
    assert!(missing.contains("not found"), "{missing}");
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_sql_examples_run() {
    let server = TestServer::start().await;
    // Recent data, so that the README's "last hour" filters keep it.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    server
        .ingest(None, vec![trace(2, "shop", 2, now - 60_000_000_000), trace(3, "shop", 1, now - 30_000_000_000)])
        .await;
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("### SQL").unwrap()..];
    let block = &section[section.find("```sql").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let statements: Vec<&str> = block.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
    assert_eq!(statements.len(), 3);
    for statement in statements {
        let (status, _, body) = server.sql(None, "application/json", statement).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{statement}: {body}");
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(!rows.as_array().unwrap().is_empty(), "{statement} returned no rows");
    }
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_bounded_in_time_and_memory() {
    let server = TestServer::start_with(|a| {
        a.querier.query_timeout = std::time::Duration::from_millis(200);
        a.querier.sql_memory_limit = 4 << 20;
    })
    .await;
    // Far more work than 200 ms allows.
    let (status, _, body) = server
        .sql(None, "application/json", "SELECT count(*) FROM generate_series(1, 10000000000) a WHERE a.value % 7 = 3")
        .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("time limit of 200ms"), "{body}");
    // One aggregate state of ~300 MB (it cannot spill): refused at 4 MiB.
    let (status, _, body) = server
        .sql(
            None,
            "application/json",
            "SELECT cardinality(array_agg(repeat('x', 100))) FROM generate_series(1, 3000000)",
        )
        .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("memory limit"), "{body}");
    // A result of ~100 MB from an operator that holds almost nothing: the
    // answer itself counts against the limit, in every format.
    let big = "SELECT repeat('x', 1000) AS s FROM generate_series(1, 100000)";
    for accept in ["application/json", "text/csv", "application/vnd.apache.arrow.stream"] {
        let (status, _, body) = server.sql(None, accept, big).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 422, "{accept}: {}", &body[..body.len().min(200)]);
        assert!(body.contains("limit of 4194304 bytes (--sql-memory-limit)"), "{accept}: {body}");
    }
    // ~1 MB fits.
    let rows = server.sql_json(None, "SELECT repeat('x', 1000) AS s FROM generate_series(1, 1000)").await;
    assert_eq!(rows.as_array().unwrap().len(), 1000);
    // The querier still answers.
    let (status, _, _) = server.sql(None, "application/json", "SELECT 1").await;
    assert_eq!(status, 200);
    server.spanlake.shutdown().await;
}

/// A query whose client has gone stops, and frees its admission slot, at
/// once; while queries run, admission never lets more than the limit run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_stops_when_its_client_leaves_and_admission_holds() {
    use std::time::{Duration, Instant};
    let server = TestServer::start_with(|a| {
        a.querier.max_concurrent_queries = 2;
        a.querier.query_timeout = Duration::from_secs(600);
    })
    .await;
    let metric = |name: &'static str| {
        let server = &server;
        async move {
            let text = server.get_text("/metrics").await;
            let line = text.lines().find(|l| l.starts_with(name)).map(str::to_owned);
            line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0)
        }
    };
    const ENDLESS: &str = "SELECT count(*) FROM generate_series(1, 100000000000) a WHERE a.value % 7 = 3";
    let send = |timeout: Duration| server.http.post(server.query_url("/api/sql")).body(ENDLESS).timeout(timeout).send();
    // Two endless queries fill both slots; a third query is refused.
    let running: Vec<_> = (0..2).map(|_| tokio::spawn(send(Duration::from_secs(5)))).collect();
    wait_until("both endless queries run", Duration::from_secs(4), || async {
        metric("spanlake_querier_queries_running").await == 2.0
    })
    .await;
    let (status, _, body) = server.sql(None, "application/json", "SELECT 1").await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("saturated"));
    // Their clients give up (after 5 s); within a second the queries stop.
    for client in running {
        assert!(client.await.unwrap().unwrap_err().is_timeout());
    }
    let left = Instant::now();
    wait_until("the abandoned queries stop", Duration::from_secs(1), || async {
        metric("spanlake_querier_queries_running").await == 0.0
    })
    .await;
    assert!(left.elapsed() < Duration::from_secs(1));
    assert_eq!(metric("spanlake_querier_queries_total{endpoint=\"sql\",outcome=\"cancelled\"}").await, 2.0);
    assert_eq!(metric("spanlake_querier_queries_refused_total").await, 1.0);
    let (status, _, _) = server.sql(None, "application/json", "SELECT 1").await;
    assert_eq!(status, 200, "the slots are free");
    server.spanlake.shutdown().await;
}

/// Every endpoint has the deadline, not just SQL: a search past it answers 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_endpoint_has_a_deadline() {
    let server = TestServer::start_with(|a| a.querier.query_timeout = std::time::Duration::from_nanos(1)).await;
    let base = 1_764_000_000_000_000_000;
    server.ingest(None, vec![trace(1, "shop", 3, base)]).await;
    for path in [
        "/api/search?q=%7B%7D",
        "/api/search/tags",
        "/api/v2/search/tags",
        "/api/v2/search/tag/resource.service.name/values",
        "/api/traces/01010101010101010101010101010101",
        "/api/fanout?service=shop",
    ] {
        let response = server.http.get(server.query_url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 408, "{path}: {body}");
        assert!(body.contains("time limit"), "{path}: {body}");
    }
    server.spanlake.shutdown().await;
}
