//! TraceQL metrics benchmark (issue #12). Run: `cargo bench --bench metrics`
//! (release build; DuckDB from PyPI: `pip install duckdb`).
//!
//! Writes loadgen's default workload (seeded) over the hour before now in
//! blocks of 100k spans, as ingested, then times `/api/metrics/query_range`
//! (step 15 s, the hour) for the queries of the issue and those Traces
//! Drilldown sends, and DuckDB running the equivalent SQL over the same
//! block files in the same run: the same time buckets and groups, and for
//! quantiles and histograms the same power-of-two buckets. Medians of 5
//! runs; DuckDB's time excludes its start-up. Then the same after compacting
//! the hour (what a running compactor leaves).
//! Knobs: SPANLAKE_BENCH_METRICS_SPANS (default 10,000,000);
//! SPANLAKE_BENCH_METRICS_ONLY (run only the queries whose name contains it);
//! SPANLAKE_BENCH_METRICS_REPEAT (seconds: repeat each query that long before
//! timing it, for a profiler to attach to the process).

use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use prometheus_client::registry::Registry;
use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_compactor::clock::{Clock, ManualClock};
use spanlake_compactor::{Compactor, Config};
use spanlake_schemas::{Storage, TenantId};
use spanlake_test_support::http::{get_ok, post_ok};
use spanlake_test_support::measure::{peak_rss_mib, time};

mod common;
#[path = "common/duckdb.rs"]
mod duckdb;

const STEP_S: u64 = 15;

const RATE_BY_SERVICE: &str = "SELECT service_name, (epoch_ns(start_time) - {S} - 1) // {STEP} AS b, count(*) / 15.0 AS rate \
     FROM spans WHERE epoch_ns(start_time) > {S} AND epoch_ns(start_time) <= {E} GROUP BY ALL";
const RUNS: usize = 5;

/// (name, TraceQL, DuckDB SQL with `{S}` the aligned start in ns (exclusive), `{E}` the end, `{STEP}` the step in ns).
const QUERIES: [(&str, &str, &str); 6] = [
    ("rate by service", "{ } | rate() by(resource.service.name)", RATE_BY_SERVICE),
    ("rate by service, no exemplars", "{ } | rate() by(resource.service.name) with(exemplars=false)", RATE_BY_SERVICE),
    (
        "quantiles of server spans by service",
        "{ kind = server } | quantile_over_time(duration, 0.5, 0.9, 0.99) by(resource.service.name)",
        "SELECT service_name, (epoch_ns(start_time) - {S} - 1) // {STEP} AS b, ceil(log2(duration_ns))::BIGINT AS e, count(*) \
         FROM spans WHERE epoch_ns(start_time) > {S} AND epoch_ns(start_time) <= {E} AND kind = 'server' AND duration_ns >= 2 \
         GROUP BY ALL",
    ),
    (
        "Drilldown RED rate (roots)",
        "{nestedSetParent<0 && true} | rate()  with(sample=true)",
        "SELECT (epoch_ns(start_time) - {S} - 1) // {STEP} AS b, count(*) / 15.0 FROM spans \
         WHERE epoch_ns(start_time) > {S} AND epoch_ns(start_time) <= {E} AND parent_span_id IS NULL GROUP BY ALL",
    ),
    (
        "Drilldown duration heatmap (roots)",
        "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)",
        "SELECT (epoch_ns(start_time) - {S} - 1) // {STEP} AS b, ceil(log2(duration_ns))::BIGINT AS e, count(*) FROM spans \
         WHERE epoch_ns(start_time) > {S} AND epoch_ns(start_time) <= {E} AND parent_span_id IS NULL AND duration_ns >= 2 GROUP BY ALL",
    ),
    (
        "Drilldown errors by route (roots)",
        "{nestedSetParent<0 && true && status=error && span.http.route != nil} | rate() by(span.http.route)",
        "SELECT span_attributes['http.route'].str AS route, (epoch_ns(start_time) - {S} - 1) // {STEP} AS b, count(*) / 15.0 \
         FROM spans WHERE epoch_ns(start_time) > {S} AND epoch_ns(start_time) <= {E} AND parent_span_id IS NULL \
         AND status_code = 'error' AND span_attributes['http.route'] IS NOT NULL GROUP BY ALL",
    ),
];

fn main() {
    spanlake::tune_allocator();
    let target: usize =
        std::env::var("SPANLAKE_BENCH_METRICS_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    let storage = spanlake::storage::open(&StorageArgs::local(&root)).unwrap();
    let tenant = TenantId::single();

    let hour = common::HOUR_NS;
    let (data_end, _) = runtime.block_on(common::write_last_hour(&storage, &tenant, target));

    // The window Spanlake answers for start = end - 1h, end = the data's end.
    let (start_s, end_s) = ((data_end - hour) / 1_000_000_000, data_end / 1_000_000_000);
    let step = STEP_S * 1_000_000_000;
    let aligned_start = start_s * 1_000_000_000 / step * step - step;
    let aligned_end = (end_s * 1_000_000_000).div_ceil(step) * step;
    let fill = |sql: &str| {
        sql.replace("{S}", &aligned_start.to_string())
            .replace("{E}", &aligned_end.to_string())
            .replace("{STEP}", &step.to_string())
    };

    let mut rows = Vec::new();
    for compacted in [false, true] {
        let phase = if compacted { "compacted" } else { "as ingested" };
        let files = runtime.block_on(async {
            if compacted {
                // As the compactor leaves the hour: the same spans in a few large blocks.
                let clock = Arc::new(ManualClock::new(SystemTime::now() + Duration::from_secs(3 * 3600)));
                let config = Config { clock: clock as Arc<dyn Clock>, ..Config::default() };
                let compactor = Compactor::new(config, storage.clone(), None, &mut Registry::default()).await.unwrap();
                while compactor.run_once().await.unwrap().merges > 0 {}
            }
            let catalog = spanlake_schemas::Catalog::new(storage.clone(), Duration::from_secs(120));
            catalog.refresh().await.unwrap();
            let blocks = catalog.blocks(&tenant, |_| true);
            blocks.iter().map(|b| format!("{root}/{}", Storage::block_path(&tenant, &b.id))).collect::<Vec<_>>()
        });
        println!("{phase}: {} blocks", files.len());
        runtime.block_on(async {
            let mut args = ServerArgs::for_tests(StorageArgs::local(&root));
            args.querier.query_timeout = Duration::from_secs(600);
            let querier = Spanlake::start(&args, Role::Querier).await.unwrap();
            let http = reqwest::Client::new();
            let base = format!("http://{}", querier.http_addr());
            let only = std::env::var("SPANLAKE_BENCH_METRICS_ONLY").unwrap_or_default();
            let repeat: u64 =
                std::env::var("SPANLAKE_BENCH_METRICS_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            for (name, traceql, sql) in QUERIES.into_iter().filter(|(name, ..)| name.contains(only.as_str())) {
                let url = reqwest::Url::parse_with_params(
                    &format!("{base}/api/metrics/query_range"),
                    &[("q", traceql), ("start", &start_s.to_string()), ("end", &end_s.to_string()), ("step", "15s")],
                )
                .unwrap();
                let answer = http.get(url.clone()).send().await.unwrap();
                assert!(answer.status().is_success(), "{traceql}: {}", answer.status());
                let answer: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
                let series = answer["series"].as_array().map_or(0, Vec::len);
                if repeat > 0 {
                    println!("{phase}, {name}: repeating for {repeat} s in process {}", std::process::id());
                    let until = Instant::now() + Duration::from_secs(repeat);
                    while Instant::now() < until {
                        get_ok(&http, url.to_string()).await;
                    }
                }
                let timing = time(RUNS, |_| get_ok(&http, url.to_string())).await;
                let (duck, _) = duckdb::median_ms(&files, &fill(sql), RUNS);
                println!("{phase}, {name}: {series} series, spanlake {:.1} ms, duckdb {duck:.1} ms", timing.median_ms);
                rows.push((phase, name, timing.median_ms, duck));
            }
            // What reading each span once costs: the rate-by-service
            // aggregate as SQL over both tables.
            for table in ["spans", "spans_as_stored"] {
                let sql = fill(QUERIES[0].2)
                    .replace("epoch_ns(start_time)", "arrow_cast(start_time, 'Int64')")
                    .replace("//", "/")
                    .replace("FROM spans", &format!("FROM {table}"))
                    .replace("GROUP BY ALL", "GROUP BY 1, 2");
                let timing = time(RUNS, |_| post_ok(&http, format!("{base}/api/sql"), &sql)).await;
                println!("{phase}, rate by service as SQL over `{table}`: {:.1} ms", timing.median_ms);
            }
            println!("peak RSS so far: {:.0} MiB", peak_rss_mib());
            querier.shutdown().await;
        });
    }
    println!();
    println!("| data | query (1 h, step 15 s) | Spanlake median ms | DuckDB median ms | ratio |");
    println!("|---|---|---|---|---|");
    for (phase, name, ours, duck) in rows {
        println!("| {phase} | {name} | {ours:.1} | {duck:.1} | {:.2}× |", ours / duck);
    }
}
