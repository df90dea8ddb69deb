//! SQL over the PostgreSQL protocol against the same SQL over `/api/sql`
//! (issue #17). Run: `cargo bench --bench pgwire` (release build).
//!
//! Writes loadgen's default workload (seeded) over the hour before now in
//! blocks of 100k spans, starts a querier, and times each query over
//! `POST /api/sql` (JSON rows, reqwest) and over the PostgreSQL protocol
//! (tokio-postgres: the extended protocol with binary rows, as drivers
//! use it, and the simple protocol with text rows, as psql uses it), in the
//! same run, alternating. Medians of 7 runs after one warm-up each. Over
//! HTTP, twice: until the body is read, and until it is parsed as JSON (a
//! client holds the rows, as tokio-postgres' rows are decoded messages).
//! Knobs: SPANLAKE_BENCH_PG_SPANS (default 1,000,000).

use std::time::{Duration, UNIX_EPOCH};

use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_schemas::TenantId;
use spanlake_test_support::http::post_ok;
use spanlake_test_support::measure::{peak_rss_mib, time};

mod common;

const RUNS: usize = 7;

fn main() {
    spanlake::tune_allocator();
    let target: usize = std::env::var("SPANLAKE_BENCH_PG_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    let storage = spanlake::storage::open(&StorageArgs::local(&root)).unwrap();
    let (data_end, _) = runtime.block_on(common::write_last_hour(&storage, &TenantId::single(), target));
    let (now, hour) = (data_end + 60_000_000_000, common::HOUR_NS);
    let from = humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(now - hour));
    let to = humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(now));
    let queries = [
        (
            "aggregate: spans and p99 by service",
            "SELECT service_name, count(*) AS spans, \
             approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99_ns FROM spans GROUP BY 1"
                .to_owned(),
        ),
        (
            "Grafana RED panel (the README's, macros expanded)",
            format!(
                "SELECT floor(extract(epoch from start_time)/60)*60 AS \"time\", service_name AS metric, count(*) AS requests \
                 FROM spans WHERE start_time BETWEEN '{from}' AND '{to}' AND kind = 'server' GROUP BY 1, 2 ORDER BY 1"
            ),
        ),
        (
            "100k rows, scalar columns (ids as hex)",
            "SELECT trace_id, span_id, name, kind, start_time, duration_ns FROM spans LIMIT 100000".to_owned(),
        ),
        ("10k rows, every column (maps as JSON)", "SELECT * FROM spans LIMIT 10000".to_owned()),
    ];

    let rows = runtime.block_on(async {
        let mut args = ServerArgs::for_tests(StorageArgs::local(&root));
        args.querier.query_timeout = Duration::from_secs(600);
        let querier = Spanlake::start(&args, Role::Querier).await.unwrap();
        let url = format!("http://{}/api/sql", querier.http_addr());
        let http = reqwest::Client::new();
        let pg = querier.pg_addr().unwrap();
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(pg.port())
            .user("bench")
            .dbname("spanlake")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut rows = Vec::new();
        for (name, sql) in &queries {
            let answered = client.query(sql.as_str(), &[]).await.unwrap().len();
            let bytes = post_ok(&http, url.clone(), sql).await;
            client.simple_query(sql).await.unwrap();
            let (mut over_http, mut parsed, mut extended, mut simple) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // Alternate the four, so that machine noise falls on all alike.
            for _ in 0..RUNS {
                over_http.push(time(1, |_| post_ok(&http, url.clone(), sql)).await.median_ms);
                parsed.push(time(1, |_| json_rows(&http, &url, sql)).await.median_ms);
                extended
                    .push(time(1, |_| async { client.query(sql.as_str(), &[]).await.unwrap().len() }).await.median_ms);
                simple.push(time(1, |_| async { client.simple_query(sql).await.unwrap().len() }).await.median_ms);
            }
            let (h, p, e, s) = (median(over_http), median(parsed), median(extended), median(simple));
            println!(
                "{name}: {answered} rows ({bytes} JSON bytes): /api/sql {h:.1} ms (parsed {p:.1}), extended {e:.1} ms, simple {s:.1} ms"
            );
            rows.push((*name, answered, h, p, e, s));
        }
        println!("peak RSS (writer and querier): {:.0} MiB", peak_rss_mib());
        querier.shutdown().await;
        rows
    });
    println!();
    println!(
        "| query | rows | `/api/sql` JSON bytes ms | `/api/sql` JSON parsed ms | PostgreSQL extended (binary rows) ms \
         | PostgreSQL simple (text rows) ms | extended / parsed | simple / parsed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, answered, h, p, e, s) in rows {
        println!("| {name} | {answered} | {h:.1} | {p:.1} | {e:.1} | {s:.1} | {:.2}× | {:.2}× |", e / p, s / p);
    }
}

/// `/api/sql` until the client holds the rows: the body parsed as JSON
/// (what a client of the HTTP API does; tokio-postgres decodes each row too).
async fn json_rows(http: &reqwest::Client, url: &str, sql: &str) -> usize {
    let body = http.post(url).body(sql.to_owned()).send().await.unwrap().bytes().await.unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
    rows.as_array().map_or(0, Vec::len)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
