//! Fan-out benchmark (issue #5). Run: `cargo bench --bench fanout` (release build).
//!
//! Writes loadgen's fan-out scenario (a `frontend` parent calling `leaf` 10
//! times in parallel, leaf latency exponential with mean 10 ms) as blocks of
//! 100k spans over the last hour, then asks the same question two ways at 1M
//! and at 10M spans: `GET /api/fanout` for the parent operation, and one
//! naive SQL self-join (parents joined to their calls, grouped per parent,
//! exact percentiles over the groups) — first on the blocks as written, then
//! after compacting them — each once cold, then five times, in a fresh
//! `spanlake run querier` process. Reports the cold time, the median of the
//! five and that process's peak RSS.
//! In the same run, DuckDB (from PyPI: `pip install duckdb`) computes the core
//! of the report over the same block files, in one query: exact parent and
//! slowest-call percentiles, mean degree and per-edge percentiles
//! ([`DUCKDB_SQL`]; median of 5 after a warm-up, its start-up not timed).
//! Knobs: SPANLAKE_BENCH_FANOUT_SPANS (comma-separated sizes, default 1000000,10000000);
//! SPANLAKE_BENCH_FANOUT_DIR (write the blocks there and keep them, to profile
//! a querier over them afterwards; the directory must be empty).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use prometheus_client::registry::Registry;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::{FanoutMode, Latency, Scenario, Workload};
use spanlake::storage::StorageArgs;
use spanlake_compactor::clock::{Clock, ManualClock};
use spanlake_compactor::{Compactor, Config};
use spanlake_schemas::block::{BlockId, encode_block};
use spanlake_schemas::encode::{AppendReport, SpanBatchBuilder};
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{Storage, TenantId};
use spanlake_test_support::process::Spawned;

#[path = "common/duckdb.rs"]
mod duckdb;

const BLOCK_SPANS: usize = 100_000;

const NAIVE_SQL: &str = "\
SELECT count(*) AS parents,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY p_dur) / 1e6 AS parent_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY p_dur) / 1e6 AS parent_p99_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY max_child) / 1e6 AS max_child_p99_ms,
       avg(degree) AS mean_degree
FROM (SELECT p.trace_id, p.span_id, p.duration_ns AS p_dur, count(*) AS degree, max(c.duration_ns) AS max_child
      FROM spans p JOIN spans c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
      WHERE p.service_name = 'frontend' AND p.name = 'GET /search' AND c.kind IN ('client', 'producer')
      GROUP BY p.trace_id, p.span_id, p.duration_ns)";

/// The core of the fan-out report in DuckDB's SQL, over a view `spans` of
/// the block files: parents and their calls joined, per parent its degree
/// and slowest call; exact percentiles of parent, slowest call and each edge.
const DUCKDB_SQL: &str = "\
WITH p AS (SELECT trace_id, span_id, duration_ns FROM spans
           WHERE service_name = 'frontend' AND name = 'GET /search'
             AND epoch_ns(start_time) BETWEEN {S} AND {E}),
     c AS (SELECT trace_id, parent_span_id, service_name, name, duration_ns FROM spans
           WHERE kind IN ('client', 'producer')),
     j AS (SELECT p.trace_id, p.span_id, p.duration_ns AS p_dur, c.service_name AS svc, c.name AS op,
                  c.duration_ns AS c_dur
           FROM p JOIN c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id),
     per_parent AS (SELECT trace_id, span_id, any_value(p_dur) AS p_dur, count(*) AS degree,
                           max(c_dur) AS max_child FROM j GROUP BY trace_id, span_id),
     edges AS (SELECT svc, op, count(*) AS calls,
                      quantile_cont(c_dur, [0.5, 0.9, 0.99, 0.999]) AS q FROM j GROUP BY svc, op)
SELECT count(*) AS parents,
       quantile_cont(p_dur, [0.5, 0.9, 0.99, 0.999]) AS parent_q,
       quantile_cont(max_child, [0.5, 0.9, 0.99, 0.999]) AS max_child_q,
       avg(degree) AS mean_degree,
       (SELECT list((svc, op, calls, q)) FROM edges) AS edges
FROM per_parent";

fn main() {
    spanlake::tune_allocator();
    let sizes: Vec<usize> = std::env::var("SPANLAKE_BENCH_FANOUT_SPANS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let temp = tempfile::TempDir::new().unwrap();
    let dir = match std::env::var("SPANLAKE_BENCH_FANOUT_DIR") {
        Ok(kept) => std::path::PathBuf::from(kept),
        Err(_) => temp.path().to_owned(),
    };
    let storage = spanlake::storage::open(&StorageArgs::local(dir.to_str().unwrap())).unwrap();
    let tenant = TenantId::single();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let hour = 3_600_000_000_000u64;
    let workload = Workload {
        scenario: Scenario::Fanout,
        fanout: 10,
        random_fanout: false,
        mode: FanoutMode::Parallel,
        leaf_latency: Latency::Exponential { mean: Duration::from_millis(10) },
        pre_latency: None,
        post: Duration::ZERO,
        error_rate: 0.01,
    };
    let mut rng = StdRng::seed_from_u64(5);
    let (start_s, end_s) = ((now - hour) / 1_000_000_000, now / 1_000_000_000);
    let fanout_url = |addr: std::net::SocketAddr| {
        format!(
            "http://{addr}/api/fanout?service=frontend&operation=GET%20/search&start={start_s}&end={end_s}\
             &percentiles=0.5,0.9,0.99,0.999"
        )
    };
    let mut rows = Vec::new();
    runtime.block_on(async {
        let mut spans = 0usize;
        let traces_target = |spans: usize| spans / 21;
        let total_traces = traces_target(*sizes.iter().max().unwrap_or(&0)).max(1);
        let mut traces = 0usize;
        for &size in &sizes {
            let started = Instant::now();
            let mut pending = Vec::new();
            let mut pending_spans = 0;
            while spans < size {
                let at = now - hour + (traces as u64 * hour / total_traces as u64).min(hour - 1);
                let request = workload.request(&mut rng, 100, at);
                traces += 100;
                let mut builder = SpanBatchBuilder::new(64 << 10);
                builder.append_resource_spans(&request.resource_spans, &mut AppendReport::default());
                spans += builder.len();
                pending_spans += builder.len();
                pending.push(builder.finish());
                if pending_spans >= BLOCK_SPANS || spans >= size {
                    let batches = std::mem::take(&mut pending);
                    pending_spans = 0;
                    let block = tokio::task::spawn_blocking(move || encode_block(&batches, BlockId::new()).unwrap())
                        .await
                        .unwrap();
                    storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
                    let record = CommitRecord { id: BlockId::new(), added: vec![block.meta], removed: vec![] };
                    storage.commit(&tenant, &record).await.unwrap();
                }
            }
            println!("data: {spans} spans ({traces} parents), written in {:.0}s", started.elapsed().as_secs_f64());
            for compacted in [false, true] {
                if compacted {
                    // As the compactor leaves it: the same spans in few large blocks.
                    let clock = Arc::new(ManualClock::new(SystemTime::now() + Duration::from_secs(3 * 3600)));
                    let config = Config { clock: clock as Arc<dyn Clock>, ..Config::default() };
                    let compactor =
                        Compactor::new(config, storage.clone(), None, &mut Registry::default()).await.unwrap();
                    let started = Instant::now();
                    while compactor.run_once().await.unwrap().merges > 0 {}
                    let catalog = spanlake_schemas::Catalog::new(storage.clone(), Duration::from_secs(120));
                    catalog.refresh().await.unwrap();
                    println!(
                        "compacted into {} blocks in {:.0}s",
                        catalog.blocks(&tenant, |_| true).len(),
                        started.elapsed().as_secs_f64()
                    );
                }

                let storage_arg = dir.to_str().unwrap();
                let limits = ["--query-timeout", "30m", "--sql-memory-limit", "16GiB"];
                let http = reqwest::Client::new();

                // Each way in a querier process of its own, so each peak RSS is its own.
                let querier = spawn_querier(storage_arg, &limits);
                let addr = querier.http;
                let url = fanout_url(addr);
                let (first_ms, fanout_ms, answer) = timed_get(&http, &url).await;
                let fanout_rss = spanlake_test_support::measure::process_peak_rss_mib(&querier.pid().to_string());
                // Narrowed: the slowest parents, picked by TraceQL, whose
                // traces alone are read.
                let slow_url =
                    format!("{url}&q=%7B%20name%20%3D%20%22GET%20%2Fsearch%22%20%26%26%20duration%20%3E%2080ms%20%7D");
                let (_, slow_ms, slow) = timed_get(&http, &slow_url).await;
                let slow = (
                    slow_ms,
                    slow["operations"][0]["parents"].as_u64().unwrap_or(0),
                    slow["spans_read"].as_u64().unwrap_or(0),
                );
                println!("slow parents (q=): {} parents, {} spans read, {:.0} ms", slow.1, slow.2, slow.0);
                drop(querier);
                let op = &answer["operations"][0];
                println!(
                    "/api/fanout: {} parents, parent p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms (predicted p99 {:.2} ms)",
                    op["parents"],
                    op["parent_latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
                    op["parent_latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
                    op["parent_latency_ms"]["p99.9"].as_f64().unwrap_or(f64::NAN),
                    op["predicted_latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
                );

                let querier = spawn_querier(storage_arg, &limits);
                let addr = querier.http;
                let mut sql_ms = Vec::new();
                let mut status = 0;
                let mut body = String::new();
                for _ in 0..RUNS + 1 {
                    let started = Instant::now();
                    let response = http
                        .post(format!("http://{addr}/api/sql"))
                        .header("accept", "application/json")
                        .body(NAIVE_SQL)
                        .send()
                        .await
                        .unwrap();
                    status = response.status().as_u16();
                    body = response.text().await.unwrap();
                    sql_ms.push(started.elapsed().as_secs_f64() * 1e3);
                }
                let sql_rss = spanlake_test_support::measure::process_peak_rss_mib(&querier.pid().to_string());
                drop(querier);
                // The first (cold) run aside, as for the others.
                sql_ms.remove(0);
                sql_ms.sort_by(f64::total_cmp);
                println!("naive SQL self-join ({status}): {}", body.chars().take(300).collect::<String>());

                let catalog = spanlake_schemas::Catalog::new(storage.clone(), Duration::from_secs(120));
                catalog.refresh().await.unwrap();
                let files: Vec<String> = catalog
                    .blocks(&tenant, |_| true)
                    .iter()
                    .map(|b| format!("{storage_arg}/{}", Storage::block_path(&tenant, &b.id)))
                    .collect();
                let sql = DUCKDB_SQL
                    .replace("{S}", &(start_s * 1_000_000_000).to_string())
                    .replace("{E}", &(end_s * 1_000_000_000).to_string());
                let (duck_ms, duck_answer) = duckdb::median_ms(&files, &sql, RUNS);
                println!("duckdb: {} ms: {}", duck_ms, duck_answer.chars().take(300).collect::<String>());
                let sql_ms = sql_ms[RUNS / 2];
                rows.push((spans, compacted, first_ms, fanout_ms, fanout_rss, sql_ms, sql_rss, status, duck_ms, slow));
            }
        }
    });
    println!();
    println!(
        "| spans | blocks | /api/fanout first (cold) ms | /api/fanout median ms ({RUNS} runs) | querier peak RSS MiB | naive SQL self-join median ms ({RUNS} runs) | querier peak RSS MiB | SQL / fanout time | DuckDB median ms ({RUNS} runs) | fanout / DuckDB | slowest parents (q=) ms: parents, spans read |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (spans, compacted, first_ms, fanout_ms, fanout_rss, sql_ms, sql_rss, status, duck_ms, slow) in rows {
        let note = if status == 200 { String::new() } else { format!(" (HTTP {status})") };
        let blocks = if compacted { "compacted" } else { "as ingested (100k spans each)" };
        println!(
            "| {spans} | {blocks} | {first_ms:.0} | {fanout_ms:.0} | {fanout_rss:.0} | {sql_ms:.0}{note} | {sql_rss:.0} | {:.2}× | {duck_ms:.0} | {:.2}× | {:.0}: {}, {} |",
            sql_ms / fanout_ms,
            fanout_ms / duck_ms,
            slow.0,
            slow.1,
            slow.2
        );
    }
}

/// Timed runs after a first, cold one (footers and trace indexes read, as
/// DuckDB's untimed first run reads its files' metadata).
const RUNS: usize = 5;

/// GETs `url` 1 + [`RUNS`] times: the first run's ms, the median ms of the
/// others, and the answer.
async fn timed_get(http: &reqwest::Client, url: &str) -> (f64, f64, serde_json::Value) {
    let mut ms = Vec::new();
    let mut answer = serde_json::Value::Null;
    for _ in 0..RUNS + 1 {
        let started = Instant::now();
        let response = http.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        answer = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let first = ms.remove(0);
    ms.sort_by(f64::total_cmp);
    (first, ms[RUNS / 2], answer)
}

/// `spanlake run querier` on `storage` in a process of its own (so its peak
/// RSS is its own).
fn spawn_querier(storage: &str, extra: &[&str]) -> Spawned {
    let mut args = vec!["run", "querier", "--storage", storage];
    args.extend_from_slice(extra);
    Spawned::start(env!("CARGO_BIN_EXE_spanlake"), &args)
}
