//! Query benchmark (issue #3). Run: `cargo bench --bench query` (release build).
//!
//! Writes loadgen's default workload (seeded) as blocks spread over the last
//! two hours, as a running ingester would, then asks two queriers on the same
//! data — one with pruning (the default), one without — the same HTTP
//! requests: trace by id, a TraceQL search over the last hour, a tag-values
//! call and an SQL aggregate over the last ten minutes. Reports median and
//! p99 latency per query and the process's peak RSS after each phase.
//! Then the structural TraceQL forms (issue #9) over the whole two hours, each
//! against the plain filter of its more selective side, with the peak RSS
//! each query adds.
//! Knobs: SPANLAKE_BENCH_QUERY_SPANS (default 10,000,000),
//! SPANLAKE_BENCH_QUERY_TIMEOUT_S (per query, default 600),
//! SPANLAKE_BENCH_QUERY_ONLY=structural (skip the first table) or `pruned`
//! (only the default querier's table),
//! SPANLAKE_BENCH_QUERY_COMPACT=1 (compact the blocks before querying).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_schemas::TenantId;

use spanlake_test_support::http::{get_ok, post_ok};
use spanlake_test_support::measure::{Timing, peak_rss_mib, reset_peak_rss, rss_mib, time};

mod common;

fn main() {
    spanlake::tune_allocator();
    let target: usize =
        std::env::var("SPANLAKE_BENCH_QUERY_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let storage = spanlake::storage::open(&StorageArgs::local(dir.path().to_str().unwrap())).unwrap();
    let tenant = TenantId::single();

    // Data: traces evenly over the last two hours, cut into blocks of 100k spans.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let window = 2 * 3600 * 1_000_000_000u64;
    let started = Instant::now();
    let common::Written { spans, blocks, bytes, sample_ids } =
        runtime.block_on(common::write_workload(&storage, &tenant, target, now, window));
    println!(
        "data: {spans} spans in {blocks} blocks ({:.0} MB, {:.1} bytes/span), written in {:.0}s",
        bytes as f64 / 1e6,
        bytes as f64 / spans as f64,
        started.elapsed().as_secs_f64()
    );
    if std::env::var("SPANLAKE_BENCH_QUERY_COMPACT").is_ok_and(|v| v == "1") {
        // As the compactor leaves it: the same spans in few large blocks.
        use spanlake_compactor::clock::{Clock, ManualClock};
        let clock = std::sync::Arc::new(ManualClock::new(SystemTime::now() + Duration::from_secs(3 * 3600)));
        let config = spanlake_compactor::Config { clock: clock as std::sync::Arc<dyn Clock>, ..Default::default() };
        let started = Instant::now();
        let blocks = runtime.block_on(async {
            let mut registry = prometheus_client::registry::Registry::default();
            let compactor =
                spanlake_compactor::Compactor::new(config, storage.clone(), None, &mut registry).await.unwrap();
            while compactor.run_once().await.unwrap().merges > 0 {}
            let catalog = spanlake_schemas::Catalog::new(storage.clone(), Duration::from_secs(120));
            catalog.refresh().await.unwrap();
            catalog.blocks(&tenant, |_| true).len()
        });
        println!("compacted into {blocks} blocks in {:.0}s", started.elapsed().as_secs_f64());
    }
    let rss_after_write = peak_rss_mib();

    runtime.block_on(async {
        let start_querier = |pruning: bool| {
            let mut args = ServerArgs::for_tests(StorageArgs::local(dir.path().to_str().unwrap()));
            args.querier.query_pruning = pruning;
            args.querier.query_timeout = Duration::from_secs(
                std::env::var("SPANLAKE_BENCH_QUERY_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(600),
            );
            async move { Spanlake::start(&args, Role::Querier).await.unwrap() }
        };
        let pruned = start_querier(true).await;
        let unpruned = start_querier(false).await;
        let http = reqwest::Client::new();
        let now_s = now / 1_000_000_000;
        let search = format!(
            "/api/search?q=%7B%20resource.service.name%20%3D%20%22payment%22%20%26%26%20status%20%3D%20error%20%7D&limit=20&start={}&end={now_s}",
            now_s - 3600
        );
        let tag_values = format!("/api/v2/search/tag/resource.service.name/values?start={}&end={now_s}", now_s - 3600);
        let ten_minutes_ago = now - 600 * 1_000_000_000;
        let sql = format!(
            "SELECT service_name, count(*) AS spans, avg(duration_ns) AS avg_ns FROM spans \
             WHERE start_time >= to_timestamp_nanos({ten_minutes_ago}) GROUP BY service_name"
        );
        let ids: Vec<String> = sample_ids.iter().step_by((sample_ids.len() / 200).max(1)).map(hex::encode).collect();

        let mut rows = Vec::new();
        let only = std::env::var("SPANLAKE_BENCH_QUERY_ONLY").unwrap_or_default();
        let phases = [("pruning (default)", &pruned, 1usize), ("no pruning (baseline)", &unpruned, 0)];
        let phases = phases.into_iter().filter(|(_, _, runs)| match only.as_str() {
            "structural" => false,
            "pruned" => *runs == 1,
            _ => true,
        });
        for (label, server, runs) in phases {
            let base = format!("http://{}", server.http_addr());
            let (trace_runs, other_runs) = if runs == 1 { (100, 10) } else { (10, 3) };
            let t = time(trace_runs, |i| get_ok(&http, format!("{base}/api/traces/{}", ids[(i * 7919) % ids.len()]))).await;
            rows.push(("trace by id", label, t));
            let t = time(other_runs, |_| get_ok(&http, format!("{base}{search}"))).await;
            rows.push(("TraceQL search, last hour", label, t));
            let t = time(other_runs, |_| get_ok(&http, format!("{base}{tag_values}"))).await;
            rows.push(("tag values, last hour", label, t));
            // What Grafana's editor asks first (issue #16): tag names, the values of a
            // key, the newest traces, and a common filter, all over the last hour.
            let hour = format!("start={}&end={now_s}", now_s - 3600);
            for (query, path) in [
                ("tag names v1, last hour", format!("/api/search/tags?{hour}")),
                ("tag names v2, last hour", format!("/api/v2/search/tags?{hour}")),
                ("values of span.http.route, last hour", format!("/api/v2/search/tag/span.http.route/values?{hour}")),
                ("empty search (newest traces), last hour", format!("/api/search?limit=20&{hour}")),
                ("`{ status = error }`, last hour", format!("/api/search?q=%7B%20status%20%3D%20error%20%7D&limit=20&{hour}")),
            ] {
                let before = rss_mib();
                reset_peak_rss();
                let t = time(other_runs, |_| get_ok(&http, format!("{base}{path}"))).await;
                if runs == 1 {
                    println!("peak RSS added by {query}: {:.0} MiB", peak_rss_mib() - before);
                }
                rows.push((query, label, t));
            }
            let t = time(other_runs, |_| post_ok(&http, format!("{base}/api/sql"), &sql)).await;
            rows.push(("SQL aggregate, last 10 min", label, t));
            // What counting each span once costs: the same aggregate over all data, both tables.
            for (query, table) in [("SQL aggregate, all data, `spans`", "spans"), ("SQL aggregate, all data, `spans_as_stored`", "spans_as_stored")] {
                let sql = format!("SELECT service_name, count(*) AS spans, avg(duration_ns) AS avg_ns FROM {table} GROUP BY service_name");
                let t = time(other_runs, |_| post_ok(&http, format!("{base}/api/sql"), &sql)).await;
                rows.push((query, label, t));
            }
            println!("peak RSS after the {label} phase: {:.0} MiB (after writing: {rss_after_write:.0} MiB)", peak_rss_mib());
        }
        println!();
        println!("| query | querier | median ms | p99 ms | runs |");
        println!("|---|---|---|---|---|");
        for (query, label, t) in &rows {
            println!("| {query} | {label} | {:.1} | {:.1} | {} |", t.median_ms, t.p99_ms, t.runs);
        }
        unpruned.shutdown().await;
        if only != "pruned" {
            structural(&http, &format!("http://{}", pruned.http_addr()), now_s).await;
        }
        pruned.shutdown().await;
    });
}

/// One search `q` over the whole data, timed; `None` if it failed (a timeout).
async fn search_timed(http: &reqwest::Client, base: &str, q: &str, now_s: u64, runs: usize) -> Option<(Timing, f64)> {
    let url = reqwest::Url::parse_with_params(
        &format!("{base}/api/search"),
        &[("q", q), ("limit", "20"), ("start", &(now_s - 3 * 3600).to_string()), ("end", &now_s.to_string())],
    )
    .unwrap();
    let before = rss_mib();
    reset_peak_rss();
    let failed = std::cell::Cell::new(None);
    let timing = time(runs, |_| {
        let (http, url, failed) = (http.clone(), url.clone(), &failed);
        async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status();
            let body = response.bytes().await.unwrap();
            if !status.is_success() {
                println!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(400)]));
                failed.set(Some(status));
            }
            body.len()
        }
    })
    .await;
    let added = peak_rss_mib() - before;
    match failed.get() {
        Some(status) => {
            println!("{q}: {status} after {:.0} ms", timing.median_ms);
            None
        }
        None => Some((timing, added)),
    }
}

/// Structural TraceQL against plain filters (issue #9). A form that matches
/// nothing must read every candidate, so it is also set against a plain
/// filter that matches nothing (and so reads the whole window too).
async fn structural(http: &reqwest::Client, base: &str, now_s: u64) {
    const FRONTEND: &str = r#"{ resource.service.name = "frontend" }"#;
    const POSTGRES: &str = r#"{ span.db.system.name = "postgresql" }"#;
    // No frontend span is a database call.
    const NOTHING: &str = r#"{ resource.service.name = "frontend" && span.db.system.name = "postgresql" }"#;
    let mut plain = Vec::new();
    for q in [FRONTEND, POSTGRES, NOTHING] {
        plain.push(search_timed(http, base, q, now_s, 5).await.map(|t| t.0.median_ms));
    }
    println!();
    println!(
        "| query | median ms | p99 ms | runs | × plain filter of its more selective side | × plain filter matching nothing | peak RSS added MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let forms = [
        (FRONTEND.to_owned(), None),
        (POSTGRES.to_owned(), None),
        (NOTHING.to_owned(), None),
        (format!("{FRONTEND} >> {POSTGRES}"), plain[1]),
        (format!("{FRONTEND} > {{ }}"), plain[0]),
        (format!("{FRONTEND} > {POSTGRES}"), plain[1]),
        (format!("{POSTGRES} << {FRONTEND}"), plain[1]),
        (format!("{POSTGRES} < {{ }}"), plain[1]),
        (format!("{POSTGRES} ~ {{ }}"), plain[1]),
        (format!("{FRONTEND} && {POSTGRES}"), plain[1]),
        (format!("{FRONTEND} || {POSTGRES}"), plain[1]),
        (format!("{FRONTEND} | count() > 3"), plain[0]),
    ];
    for (q, baseline) in forms {
        let Some((t, added)) = search_timed(http, base, &q, now_s, 3).await else { continue };
        let ratio = |b: Option<f64>| b.map(|b| format!("{:.1}×", t.median_ms / b));
        let (selective, nothing) = match baseline {
            Some(_) => (ratio(baseline).unwrap_or_default(), ratio(plain[2]).unwrap_or_default()),
            None => ("1.0× (baseline)".into(), "".into()),
        };
        println!(
            "| `{q}` | {:.1} | {:.1} | {} | {selective} | {nothing} | {added:.0} |",
            t.median_ms, t.p99_ms, t.runs
        );
    }
}
