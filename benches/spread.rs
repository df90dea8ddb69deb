//! Queries spread over several queriers (issue #18). Run: `cargo bench --bench spread`.
//!
//! Writes loadgen's default workload over the hour before now in blocks of
//! 100k spans, as ingested, and starts four querier processes on it: one
//! alone (no peers) and three that spread their large queries over each
//! other. Each query runs on the lone querier and on the first of the
//! three, a run of each in turn (5 of each, after one of each to warm up);
//! for each it reports the median time, the CPU seconds of the
//! processes involved (the lone one; the sum of the three) and the bytes
//! each querier's plans read from the store
//! (`spanlake_querier_block_bytes_read`). Then the same after compacting the
//! hour. On one machine, the three share its cores: the point is that the
//! work divides (bytes per querier) without costing more in total (CPU),
//! not the time. Each phase ends with a row of its queries together: the
//! sums, and the largest share of all the bytes they read.
//! Knobs: SPANLAKE_BENCH_SPREAD_SPANS (default 10,000,000, 290 MB of blocks);
//! SPANLAKE_BENCH_SPREAD_MIN_BYTES (`--spread-min-bytes`, default 8MiB: the
//! queries read 2–230 MB of it, and at 8 MiB each scan reading over 16 MiB
//! asks for all three queriers, as at the product's default of 64 MiB it would
//! over 8× the data; a scan reading less than 8 MiB stays on the querier asked).
//! SPANLAKE_BENCH_SPREAD_DIR (write the blocks there and keep them, compacted
//! at the end, to profile queriers over them afterwards; an empty directory).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::registry::Registry;
use spanlake::storage::StorageArgs;
use spanlake_compactor::clock::{Clock, ManualClock};
use spanlake_compactor::{Compactor, Config};
use spanlake_schemas::TenantId;
use spanlake_test_support::measure::process_cpu_seconds;
use spanlake_test_support::process::Spawned;

mod common;

const RUNS: usize = 5;

/// (name, endpoint, query): SQL goes to `/api/sql`, TraceQL metrics to
/// `/api/metrics/query_range` over the hour at a 15 s step, searches to
/// `/api/search` over the hour (limit 20), fan-out to `/api/fanout` over the
/// hour (the query is its parameters).
const QUERIES: [(&str, &str, &str); 8] = [
    (
        "SQL: spans by service",
        "sql",
        "SELECT service_name, count(*), avg(duration_ns) FROM spans GROUP BY 1 ORDER BY 1",
    ),
    (
        "SQL: error spans by service and name",
        "sql",
        "SELECT service_name, name, count(*) FROM spans WHERE status_code = 'error' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20",
    ),
    ("SQL: traces (one row per trace)", "sql", "SELECT count(*), max(span_count), avg(duration_ns) FROM traces"),
    ("TraceQL: rate by service", "metrics", "{ } | rate() by(resource.service.name)"),
    (
        "TraceQL: quantiles of server spans by service",
        "metrics",
        "{ kind = server } | quantile_over_time(duration, 0.5, 0.9, 0.99) by(resource.service.name)",
    ),
    ("TraceQL search: slow server spans (rare)", "search", "{ kind = server && duration > 1s }"),
    ("TraceQL search: a client call under an error", "search", "{ status = error } > { kind = client }"),
    ("Fan-out: every parent operation", "fanout", ""),
];

/// A metric's value in `/metrics` text (0 when absent).
async fn metric(http: &reqwest::Client, querier: &Spawned, line_start: &str) -> f64 {
    let text = http.get(format!("http://{}/metrics", querier.http)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(line_start)).map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn bytes_read(http: &reqwest::Client, querier: &Spawned) -> f64 {
    metric(http, querier, "spanlake_querier_block_bytes_read_total ").await
}

/// One run of `query` on `querier`; panics unless it answers 200.
async fn ask(http: &reqwest::Client, querier: &Spawned, endpoint: &str, query: &str, window: (u64, u64)) -> bool {
    let (start, end) = (window.0.to_string(), window.1.to_string());
    let request = match endpoint {
        "sql" => http.post(format!("http://{}/api/sql", querier.http)).body(query.to_owned()),
        "search" => http.get(format!("http://{}/api/search", querier.http)).query(&[
            ("q", query),
            ("start", &start),
            ("end", &end),
            ("limit", "20"),
        ]),
        "fanout" => {
            http.get(format!("http://{}/api/fanout?{query}", querier.http)).query(&[("start", &start), ("end", &end)])
        }
        _ => http.get(format!("http://{}/api/metrics/query_range", querier.http)).query(&[
            ("q", query),
            ("start", &start),
            ("end", &end),
            ("step", "15s"),
        ]),
    };
    let response = request.send().await.unwrap();
    let spread = response.headers().contains_key("x-spanlake-spread");
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    spread
}

/// Median ms, CPU seconds per run of each process, bytes per run read by each.
#[derive(Default)]
struct Measured {
    times: Vec<f64>,
    cpu: Vec<f64>,
    bytes: Vec<f64>,
}

impl Measured {
    fn median_ms(&self) -> f64 {
        let mut times = self.times.clone();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    }
}

/// One run of `query` asked of `asked`, added to `into`: its time, and the
/// CPU seconds and bytes read of each of `involved` (divided by the runs).
async fn run_once(
    http: &reqwest::Client,
    (asked, involved): (&Spawned, &[&Spawned]),
    (endpoint, query): (&str, &str),
    window: (u64, u64),
    into: &mut Measured,
) {
    // The CPU read inside the scrapes of bytes read, which it leaves out.
    let cpu = |p: &Spawned| process_cpu_seconds(&p.pid().to_string());
    let mut bytes_before = Vec::new();
    for p in involved {
        bytes_before.push(bytes_read(http, p).await);
    }
    let cpu_before: Vec<f64> = involved.iter().map(|p| cpu(p)).collect();
    let started = Instant::now();
    ask(http, asked, endpoint, query, window).await;
    into.times.push(started.elapsed().as_secs_f64() * 1000.0);
    let cpu_after: Vec<f64> = involved.iter().map(|p| cpu(p)).collect();
    into.cpu.resize(involved.len(), 0.0);
    into.bytes.resize(involved.len(), 0.0);
    for (i, p) in involved.iter().enumerate() {
        into.cpu[i] += (cpu_after[i] - cpu_before[i]) / RUNS as f64;
        into.bytes[i] += (bytes_read(http, p).await - bytes_before[i]) / RUNS as f64;
    }
}

/// `query` on the lone querier and on the first of the three, a run of
/// each in turn (so that a slower spell of the machine falls on both),
/// after a first run of each that warms footers and the page cache.
async fn measure(
    http: &reqwest::Client,
    alone: &Spawned,
    three: &[&Spawned],
    query: (&str, &str),
    window: (u64, u64),
) -> (Measured, Measured) {
    ask(http, alone, query.0, query.1, window).await;
    ask(http, three[0], query.0, query.1, window).await;
    let (mut local, mut spread) = (Measured::default(), Measured::default());
    for _ in 0..RUNS {
        run_once(http, (alone, &[alone]), query, window, &mut local).await;
        run_once(http, (three[0], three), query, window, &mut spread).await;
    }
    (local, spread)
}

fn main() {
    spanlake::tune_allocator();
    let target: usize =
        std::env::var("SPANLAKE_BENCH_SPREAD_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let root = match std::env::var("SPANLAKE_BENCH_SPREAD_DIR") {
        Ok(kept) => kept,
        Err(_) => dir.path().to_str().unwrap().to_owned(),
    };
    let storage = spanlake::storage::open(&StorageArgs::local(&root)).unwrap();
    let (data_end, _) = runtime.block_on(common::write_last_hour(&storage, &TenantId::single(), target));
    let window = ((data_end - common::HOUR_NS) / 1_000_000_000, data_end / 1_000_000_000);
    let min_bytes = std::env::var("SPANLAKE_BENCH_SPREAD_MIN_BYTES").unwrap_or_else(|_| "8MiB".into());
    let peers = tempfile::NamedTempFile::new().unwrap();
    let peers_arg = format!("file://{}", peers.path().display());
    let mut rows = Vec::new();
    for compacted in [false, true] {
        let phase = if compacted { "compacted" } else { "as ingested" };
        runtime.block_on(async {
            if compacted {
                let clock = Arc::new(ManualClock::new(SystemTime::now() + Duration::from_secs(3 * 3600)));
                let config = Config { clock: clock as Arc<dyn Clock>, ..Config::default() };
                let compactor = Compactor::new(config, storage.clone(), None, &mut Registry::default()).await.unwrap();
                while compactor.run_once().await.unwrap().merges > 0 {}
            }
        });
        let start = |spread: bool| {
            let mut args = vec!["run", "querier", "--storage", root.as_str(), "--query-timeout", "10m"];
            args.extend(["--sql-memory-limit", "4GiB"]);
            if spread {
                args.extend(["--worker-addr", "127.0.0.1:0", "--query-peers", peers_arg.as_str()]);
                args.extend(["--refresh-interval", "1s", "--spread-min-bytes", min_bytes.as_str()]);
            }
            Spawned::start(env!("CARGO_BIN_EXE_spanlake"), &args)
        };
        let alone = start(false);
        let three: Vec<Spawned> = (0..3).map(|_| start(true)).collect();
        let listed: Vec<String> = three.iter().map(|q| format!("http://{}\n", q.worker.unwrap())).collect();
        std::fs::write(peers.path(), listed.concat()).unwrap();
        runtime.block_on(async {
            let http = reqwest::Client::new();
            // The three read the peers file at their next refresh.
            let (_, endpoint, query) = QUERIES[0];
            let found = Instant::now();
            while !ask(&http, &three[0], endpoint, query, window).await {
                assert!(found.elapsed() < Duration::from_secs(30), "the queriers did not find each other");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // The phase's queries together: does the work divide as a whole?
            let (mut all, mut each) = ([0.0; 6], [0.0; 3]);
            for (name, endpoint, query) in QUERIES {
                let involved: Vec<&Spawned> = three.iter().collect();
                let (local, spread) = measure(&http, &alone, &involved, (endpoint, query), window).await;
                let total: f64 = spread.bytes.iter().sum();
                let shares: Vec<f64> = spread.bytes.iter().map(|b| 100.0 * b / total.max(1.0)).collect();
                let (local_cpu, spread_cpu): (f64, f64) = (local.cpu.iter().sum(), spread.cpu.iter().sum());
                println!(
                    "{phase}, {name}: alone {:.0} ms, {local_cpu:.2} CPU-s, {:.0} MB read; three {:.0} ms, \
                     {spread_cpu:.2} CPU-s ({:?}), {:.0} MB read, shares {:?} %",
                    local.median_ms(),
                    local.bytes[0] / 1e6,
                    spread.median_ms(),
                    spread.cpu.iter().map(|c| (c * 100.0).round() / 100.0).collect::<Vec<_>>(),
                    total / 1e6,
                    shares.iter().map(|s| s.round()).collect::<Vec<_>>(),
                );
                let largest = shares.iter().copied().fold(0.0, f64::max);
                let sums = [local.median_ms(), spread.median_ms(), local_cpu, spread_cpu, local.bytes[0], total];
                all.iter_mut().zip(sums).for_each(|(all, one)| *all += one);
                each.iter_mut().zip(&spread.bytes).for_each(|(each, one)| *each += one);
                rows.push((
                    phase,
                    name,
                    local.median_ms(),
                    spread.median_ms(),
                    local_cpu,
                    spread_cpu,
                    local.bytes[0],
                    total,
                    largest,
                ));
            }
            let largest = each.iter().map(|b| 100.0 * b / all[5].max(1.0)).fold(0.0, f64::max);
            rows.push((phase, "all the queries above", all[0], all[1], all[2], all[3], all[4], all[5], largest));
        });
    }
    println!();
    println!(
        "| data | query | alone ms | three ms | alone CPU-s | three CPU-s (sum) | CPU ratio | alone MB read | three MB read | largest share |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (phase, name, local_ms, spread_ms, local_cpu, spread_cpu, local_bytes, spread_bytes, largest) in rows {
        println!(
            "| {phase} | {name} | {local_ms:.0} | {spread_ms:.0} | {local_cpu:.2} | {spread_cpu:.2} | {:.2}× | {:.0} | {:.0} | {largest:.0} % |",
            spread_cpu / local_cpu,
            local_bytes / 1e6,
            spread_bytes / 1e6
        );
    }
}
