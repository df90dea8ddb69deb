//! Compaction benchmark (issue #4). Run: `cargo bench --bench compaction` (release build).
//!
//! Simulates a steady ingester at loadgen's default rate (100 traces/s, about
//! 1,300 spans/s): one block per second, as group commit writes them, with
//! span times on a simulated clock that the compactor also runs on.
//!
//! 1. Writes the first simulated hour with no compaction, then answers trace
//!    by id and a TraceQL search over it; compacts it (catch-up) and asks the
//!    same requests again on the same data: the query effect, and compaction
//!    throughput in spans per CPU-second.
//! 2. Runs the following hours with a compaction pass every 30 simulated
//!    seconds, as `spanlake` does: live blocks over time, and write
//!    amplification (bytes compaction wrote per byte ingested) in steady state.
//!
//! Knobs: SPANLAKE_BENCH_COMPACTION_HOURS (steady hours after the first, default 2),
//! SPANLAKE_BENCH_COMPACTION_RATE (traces per second, default 100 as loadgen).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::Workload;
use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_compactor::clock::{Clock, ManualClock};
use spanlake_compactor::{Compactor, Config, PassReport};
use spanlake_schemas::block::{BlockId, encode_block};
use spanlake_schemas::encode::{AppendReport, SpanBatchBuilder};
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{Storage, TenantId};
use spanlake_test_support::http::get_ok;
use spanlake_test_support::measure::{cpu_seconds, peak_rss_mib, time};

const PASS_EVERY_SECONDS: u64 = 30;

struct Writer {
    storage: Storage,
    tenant: TenantId,
    workload: Workload,
    traces_per_second: usize,
    rng: StdRng,
    sample_ids: Vec<Vec<u8>>,
    spans: u64,
    bytes: u64,
}

impl Writer {
    /// One second of traffic at `at_ns`, as one committed block.
    async fn second(&mut self, at_ns: u64) {
        let request = self.workload.request(&mut self.rng, self.traces_per_second, at_ns);
        if let Some(span) =
            request.resource_spans.first().and_then(|r| r.scope_spans.first()).and_then(|s| s.spans.first())
        {
            self.sample_ids.push(span.trace_id.clone());
        }
        let mut builder = SpanBatchBuilder::new(64 << 10);
        builder.append_resource_spans(&request.resource_spans, &mut AppendReport::default());
        self.spans += builder.len() as u64;
        let block = encode_block(&[builder.finish()], BlockId::new()).unwrap();
        self.bytes += block.meta.size_bytes;
        self.storage.put_block(&self.tenant, &block.meta, block.parquet).await.unwrap();
        let record = CommitRecord { id: BlockId::new(), added: vec![block.meta], removed: vec![] };
        self.storage.commit(&self.tenant, &record).await.unwrap();
    }
}

fn add(total: &mut PassReport, pass: &PassReport) {
    total.merges += pass.merges;
    total.spans_read += pass.spans_read;
    total.spans_written += pass.spans_written;
    total.duplicates_dropped += pass.duplicates_dropped;
    total.bytes_read += pass.bytes_read;
    total.bytes_written += pass.bytes_written;
    total.blocks_deleted += pass.blocks_deleted;
    total.failures += pass.failures;
}

fn main() {
    spanlake::tune_allocator();
    let knob = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let hours = knob("SPANLAKE_BENCH_COMPACTION_HOURS", 2);
    let rate = knob("SPANLAKE_BENCH_COMPACTION_RATE", 100) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let storage = spanlake::storage::open(&StorageArgs::local(dir.path().to_str().unwrap())).unwrap();
    let tenant = TenantId::single();
    let start = SystemTime::now();
    let start_ns = start.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let clock = Arc::new(ManualClock::new(start));
    let config = Config { clock: Arc::clone(&clock) as Arc<dyn Clock>, ..Config::default() };
    let defaults = config.plan.clone();

    runtime.block_on(async {
        let mut writer = Writer {
            storage: storage.clone(),
            tenant: tenant.clone(),
            workload: Workload::default(),
            traces_per_second: rate,
            rng: StdRng::seed_from_u64(11),
            sample_ids: Vec::new(),
            spans: 0,
            bytes: 0,
        };
        let started = Instant::now();
        for second in 0..3600 {
            writer.second(start_ns + second * 1_000_000_000).await;
        }
        clock.advance(Duration::from_secs(3600));
        println!(
            "hour 1: {} spans in 3600 blocks ({:.1} MB), written in {:.0}s",
            writer.spans,
            writer.bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );

        // Queries before and after catching up, on the same data.
        let mut args = ServerArgs::for_tests(StorageArgs::local(dir.path().to_str().unwrap()));
        args.querier.query_timeout = Duration::from_secs(600);
        let querier = Spanlake::start(&args, Role::Querier).await.unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://{}", querier.http_addr());
        let end_s = start_ns / 1_000_000_000 + 3600;
        let search = format!(
            "{base}/api/search?q=%7B%20resource.service.name%20%3D%20%22payment%22%20%26%26%20status%20%3D%20error%20%7D&limit=20&start={}&end={end_s}",
            end_s - 3600
        );
        let ids: Vec<String> = writer.sample_ids.iter().step_by(37).map(hex::encode).collect();
        let measure = |label: &'static str| {
            let (http, ids, base, search) = (&http, &ids, &base, &search);
            async move {
                let by_id = time(40, |i| get_ok(http, format!("{base}/api/traces/{}", ids[(i * 7919) % ids.len()]))).await;
                let found = time(5, |_| get_ok(http, search.clone())).await;
                (label, by_id, found)
            }
        };
        let before = measure("before compaction (3600 blocks)").await;

        let compactor = Compactor::new(config.clone(), storage.clone(), None, &mut Registry::default()).await.unwrap();
        let (cpu, wall) = (cpu_seconds(), Instant::now());
        let mut catch_up = PassReport::default();
        loop {
            let pass = compactor.run_once().await.unwrap();
            add(&mut catch_up, &pass);
            if pass.merges == 0 {
                break;
            }
        }
        let (catch_up_cpu, catch_up_wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
        querier.querier().unwrap().catalog().refresh().await.unwrap();
        let live_after = querier.querier().unwrap().catalog().blocks(&tenant, |_| true).len();
        let after = measure("after compaction").await;

        println!();
        println!("## Catch-up compaction of hour 1");
        println!(
            "{} merges; {} spans read, {} written, {} duplicates; {:.1} MB read, {:.1} MB written; \
             3600 → {live_after} live blocks",
            catch_up.merges,
            catch_up.spans_read,
            catch_up.spans_written,
            catch_up.duplicates_dropped,
            catch_up.bytes_read as f64 / 1e6,
            catch_up.bytes_written as f64 / 1e6,
        );
        println!(
            "{catch_up_cpu:.1} CPU-s, {catch_up_wall:.1} s wall: {:.0} spans/s per core merged ({:.0} spans/s wall)",
            catch_up.spans_read as f64 / catch_up_cpu,
            catch_up.spans_read as f64 / catch_up_wall
        );
        println!();
        println!("| query | data | median ms | p99 ms | runs |");
        println!("|---|---|---|---|---|");
        for (label, by_id, found) in [before, after] {
            println!("| trace by id | {label} | {:.1} | {:.1} | {} |", by_id.median_ms, by_id.p99_ms, by_id.runs);
            println!("| TraceQL search, 1 hour | {label} | {:.1} | {:.1} | {} |", found.median_ms, found.p99_ms, found.runs);
        }
        querier.shutdown().await;

        // Steady state: one block a second, a pass every 30 s.
        println!();
        println!("## Steady run: {hours} more simulated hours, a pass every {PASS_EVERY_SECONDS} s");
        println!("| simulated minute | live blocks | of which level 0 |");
        println!("|---|---|---|");
        let (spans_before, bytes_before) = (writer.spans, writer.bytes);
        let mut steady = PassReport::default();
        let mut steady_cpu = 0.0;
        let mut most_live = 0;
        let catalog = spanlake_schemas::Catalog::new(storage.clone(), Duration::from_secs(120));
        for second in 3600..3600 * (1 + hours) {
            writer.second(start_ns + second * 1_000_000_000).await;
            clock.advance(Duration::from_secs(1));
            if second % PASS_EVERY_SECONDS == PASS_EVERY_SECONDS - 1 {
                let cpu = cpu_seconds();
                let pass = compactor.run_once().await.unwrap();
                steady_cpu += cpu_seconds() - cpu;
                add(&mut steady, &pass);
                catalog.refresh().await.unwrap();
                let live = catalog.blocks(&tenant, |_| true);
                most_live = most_live.max(live.len());
                if (second + 1) % 600 == 0 {
                    let level0 = live.iter().filter(|b| b.compaction_level == 0).count();
                    println!("| {} | {} | {level0} |", (second + 1) / 60, live.len());
                }
            }
        }
        let ingested = writer.bytes - bytes_before;
        println!();
        println!(
            "steady: {} spans ingested ({:.1} MB in blocks); compaction wrote {:.1} MB: write amplification \
             {:.2} (bytes compaction wrote per byte ingested; {:.2} counting the ingest write)",
            writer.spans - spans_before,
            ingested as f64 / 1e6,
            steady.bytes_written as f64 / 1e6,
            steady.bytes_written as f64 / ingested as f64,
            1.0 + steady.bytes_written as f64 / ingested as f64
        );
        println!(
            "steady: {:.1} CPU-s compacting ({:.0} spans/s per core merged; {:.1}% of one core at this rate); \
             at most {most_live} live blocks; {} failures",
            steady_cpu,
            steady.spans_read as f64 / steady_cpu,
            100.0 * steady_cpu / (hours * 3600) as f64,
            steady.failures
        );
        println!(
            "config: window {:?}, fan-in {}, target {} MiB; peak RSS {:.0} MiB",
            defaults.window,
            defaults.fan_in,
            defaults.target_block_bytes >> 20,
            peak_rss_mib()
        );
    });
}
