//! Ingest benchmark (issues #2, #11). Run: `cargo bench --bench ingest` (release build).
//!
//! On loadgen's default workload (seeded), in one run:
//! 1. (a) decode only: OTLP protobuf bytes → `ExportTraceServiceRequest` (the floor);
//! 2. (b) the ingester's path: convert → sorted Parquet block → put + commit on
//!    file:// (fsynced), with blocks as group commit cuts them under full load
//!    (`BUSY_BLOCK_SPANS`) and as a 1 s flush timer cut them (`BLOCK_SPANS`).
//!    (a) and (b) alternate block by block over the same request bodies, each
//!    with the bodies in cache (a server converts a request it just received);
//! 3. storage: bytes per span on disk, and relative to the OTLP protobuf bytes;
//! 4. end to end: `spanlake loadgen` (in this process) → the `spanlake` binary
//!    on loopback: spans/s, server CPU seconds per million spans, server peak RSS.
//!
//! CPU time: this thread's run time (ns, /proc/thread-self/schedstat) for the
//! stages this thread runs alone; the process's user+system time (10 ms ticks)
//! for the put and commit, which run on the blocking pool. Environment knobs:
//! SPANLAKE_BENCH_SPANS (default 1,000,000), SPANLAKE_BENCH_E2E_TRACES (default 40,000).

use spanlake_test_support::measure::{cpu_seconds, process_cpu_seconds, process_peak_rss_mib, thread_cpu_seconds};

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::{LoadgenArgs, Workload};
use spanlake_ingester::decode::{Format, convert};
use spanlake_schemas::block::{BlockId, encode_block};
use spanlake_schemas::encode::SpanBatchBuilder;
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{Storage, TenantId};
use spanlake_test_support::process::Spawned;

const TRACES_PER_REQUEST: usize = 10;
const BLOCK_SPANS: usize = 100_000;
const BUSY_BLOCK_SPANS: usize = 4_096;
const ROUNDS: usize = 2;

/// CPU seconds of each part of (b), and of (a).
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    decode: f64,
    convert: f64,
    encode: f64,
    store: f64,
}

fn spans_in(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

fn main() {
    spanlake::tune_allocator();
    let target_spans: usize =
        std::env::var("SPANLAKE_BENCH_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let e2e_traces: u64 =
        std::env::var("SPANLAKE_BENCH_E2E_TRACES").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    // Workload: loadgen's default, encoded once (not measured).
    let workload = Workload::default();
    let generation = Instant::now();
    let mut rng = StdRng::seed_from_u64(1);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut bodies = Vec::new();
    let mut spans_per_body = Vec::new();
    let mut spans = 0;
    while spans < target_spans {
        let request = workload.request(&mut rng, TRACES_PER_REQUEST, now + bodies.len() as u64 * 1_000_000);
        spans += spans_in(&request);
        spans_per_body.push(spans_in(&request));
        bodies.push(request.encode_to_vec());
    }
    let otlp_bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "workload: {spans} spans in {} requests of {TRACES_PER_REQUEST} traces, {otlp_bytes} OTLP protobuf bytes \
         (generated and encoded in {:.1}s)",
        bodies.len(),
        generation.elapsed().as_secs_f64()
    );

    // 1–3. Per block, alternately: (a) decode only, then (b) the ingester's
    // path over the same request bodies: convert (one span at a time,
    // priced), sort + encode the block, put it and its commit record (fsync).
    // Alternating block by block puts (a) and (b) in the same moments of a
    // noisy machine. Bodies are read once before each measure, so both see
    // them in cache, as a server sees a request it has just received.
    // Blocks of BUSY_BLOCK_SPANS are what group commit cuts at full load
    // (the ack bench: 3,857 spans a block at 100k spans/s); BLOCK_SPANS what
    // a 1 s flush timer cut before it.
    let dir = tempfile::TempDir::new().unwrap();
    let store = std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let storage = Storage::local(store, dir.path().to_path_buf());
    let tenant = TenantId::single();
    let warm = |bodies: &[Vec<u8>]| {
        std::hint::black_box(bodies.iter().map(|b| b.iter().map(|&x| u64::from(x)).sum::<u64>()).sum::<u64>())
    };
    let mut results = Vec::new();
    for block_spans in [BUSY_BLOCK_SPANS, BLOCK_SPANS] {
        let mut cpu = Stages::default();
        let (mut parquet_bytes, mut blocks, mut measured) = (0, 0, 0);
        for _round in 0..ROUNDS {
            let mut start = 0;
            while start < bodies.len() {
                // The requests of one block.
                let mut end = start;
                let mut block_spans_now = 0;
                while end < bodies.len() && block_spans_now < block_spans {
                    block_spans_now += spans_per_body[end];
                    end += 1;
                }
                let block_bodies = &bodies[start..end];
                start = end;
                warm(block_bodies);
                let t = thread_cpu_seconds();
                for body in block_bodies {
                    std::hint::black_box(ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
                }
                cpu.decode += thread_cpu_seconds() - t;
                warm(block_bodies);
                let t = thread_cpu_seconds();
                let batches: Vec<_> = block_bodies
                    .iter()
                    .map(|body| {
                        convert(body, Format::Protobuf, SpanBatchBuilder::new(64 << 10), usize::MAX).unwrap().batch
                    })
                    .collect();
                cpu.convert += thread_cpu_seconds() - t;
                let t = thread_cpu_seconds();
                let block = encode_block(&batches, BlockId::new()).unwrap();
                drop(batches);
                cpu.encode += thread_cpu_seconds() - t;
                measured += block.meta.span_count as usize;
                parquet_bytes += block.meta.size_bytes;
                blocks += 1;
                let t = cpu_seconds();
                runtime.block_on(async {
                    storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
                    let record = CommitRecord { id: BlockId::new(), added: vec![block.meta], removed: vec![] };
                    storage.commit(&tenant, &record).await.unwrap();
                });
                cpu.store += cpu_seconds() - t;
            }
        }
        assert_eq!(measured, spans * ROUNDS);
        results.push((block_spans, cpu, blocks, parquet_bytes as f64 / measured as f64, measured));
    }

    println!();
    println!(
        "(a) OTLP decode only; (b) decode → Arrow → sorted Parquet block → put + commit on file:// (fsync). \
         CPU s per 1M spans, {ROUNDS} passes over the workload, block by block, alternating (a) and (b)."
    );
    println!();
    println!(
        "| spans per block | blocks | (a) decode | (b) full path | **(b)/(a)** | convert ×(a) | sort + encode ×(a) | put + commit ×(a) | Parquet bytes/span |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (block_spans, cpu, blocks, bytes_per_span, measured) in &results {
        let per_million = |cpu: f64| cpu / *measured as f64 * 1e6;
        let full = cpu.convert + cpu.encode + cpu.store;
        println!(
            "| {block_spans} | {blocks} | {:.3} | {:.3} | **{:.2}×** | {:.2}× | {:.2}× | {:.2}× | {bytes_per_span:.1} |",
            per_million(cpu.decode),
            per_million(full),
            full / cpu.decode,
            cpu.convert / cpu.decode,
            cpu.encode / cpu.decode,
            cpu.store / cpu.decode,
        );
    }
    println!();
    println!("| storage | bytes/span |");
    println!("|---|---|");
    println!("| OTLP protobuf (uncompressed request bodies) | {:.1} |", otlp_bytes as f64 / spans as f64);

    // 4. end to end against the binary
    let data = tempfile::TempDir::new().unwrap();
    let server = Spawned::start(env!("CARGO_BIN_EXE_spanlake"), &["--storage", data.path().to_str().unwrap()]);
    let grpc = server.grpc.expect("the all-in-one process ingests");
    let pid = server.pid().to_string();
    let server_cpu_before = process_cpu_seconds(&pid);
    let args = LoadgenArgs {
        endpoint: Some(format!("http://{grpc}")),
        traces: Some(e2e_traces),
        rate: 0.0,
        concurrency: 64,
        batch: 100,
        quiet: true,
        ..LoadgenArgs::defaults()
    };
    let report = runtime.block_on(spanlake::loadgen::generate(&args)).unwrap();
    let server_cpu_after = process_cpu_seconds(&pid);
    let server_cpu = server_cpu_after - server_cpu_before;
    let rss = process_peak_rss_mib(&pid);
    drop(server);
    assert_eq!(report.requests_failed, 0);
    println!();
    println!(
        "| end to end (loadgen gRPC, 64 concurrent clients × 100 traces → spanlake on loopback, 2 cores shared) | value |"
    );
    println!("|---|---|");
    println!("| spans acknowledged | {} |", report.spans_acknowledged);
    println!("| throughput | {:.0} spans/s |", report.spans_per_second());
    println!("| server CPU | {:.3} s per 1M spans |", server_cpu / report.spans_acknowledged as f64 * 1e6);
    println!("| server peak RSS | {rss:.0} MiB |");
}
