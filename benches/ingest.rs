//! Ingest benchmark (issue #2). Run: `cargo bench --bench ingest` (release build).
//!
//! On loadgen's default workload (seeded), in one run:
//! 1. decode only: OTLP protobuf bytes → `ExportTraceServiceRequest` (the floor);
//! 2. full path: decode → Arrow → sorted Parquet block → put + commit on file://
//!    (fsynced), blocks of `BLOCK_SPANS` spans as a busy ingester would cut them;
//! 3. storage: bytes per span on disk, and relative to the OTLP protobuf bytes;
//! 4. end to end: `spanlake loadgen` (in this process) → the `spanlake` binary
//!    on loopback: spans/s, server CPU seconds per million spans, server peak RSS.
//!
//! CPU time is the process's user+system time from /proc (10 ms ticks), so work on the
//! blocking pool counts too. Environment knobs: SPANLAKE_BENCH_SPANS (default
//! 1,000,000), SPANLAKE_BENCH_E2E_TRACES (default 40,000).

use spanlake_test_support::measure::{cpu_seconds, process_cpu_seconds, process_peak_rss_mib};

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::{LoadgenArgs, Workload};
use spanlake_ingester::decode::{Format, convert};
use spanlake_schemas::block::{BlockId, encode_block};
use spanlake_schemas::encode::{AppendReport, SpanBatchBuilder};
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{Storage, TenantId};
use spanlake_test_support::process::Spawned;

const TRACES_PER_REQUEST: usize = 10;
const BLOCK_SPANS: usize = 100_000;

fn spans_in(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

fn main() {
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
    let mut spans = 0;
    while spans < target_spans {
        let request = workload.request(&mut rng, TRACES_PER_REQUEST, now + bodies.len() as u64 * 1_000_000);
        spans += spans_in(&request);
        bodies.push(request.encode_to_vec());
    }
    let otlp_bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "workload: {spans} spans in {} requests of {TRACES_PER_REQUEST} traces, {otlp_bytes} OTLP protobuf bytes \
         (generated and encoded in {:.1}s)",
        bodies.len(),
        generation.elapsed().as_secs_f64()
    );

    // 1. decode only
    let cpu = cpu_seconds();
    let wall = Instant::now();
    let mut decoded = 0;
    for body in &bodies {
        decoded += spans_in(&ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
    }
    let decode_cpu = cpu_seconds() - cpu;
    let decode_wall = wall.elapsed().as_secs_f64();
    assert_eq!(decoded, spans);

    // Stages of (b), each alone: conversion to Arrow (the ingester's path,
    // and decoding the whole request with prost first, as before), then
    // sorting and encoding blocks of BLOCK_SPANS spans.
    let convert_streaming = || {
        bodies
            .iter()
            .map(|body| convert(body, Format::Protobuf, SpanBatchBuilder::new(64 << 10), usize::MAX).unwrap().batch)
            .collect::<Vec<_>>()
    };
    let convert_whole = || {
        bodies
            .iter()
            .map(|body| {
                let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                let mut builder = SpanBatchBuilder::new(64 << 10);
                builder.append_resource_spans(&request.resource_spans, &mut AppendReport::default());
                builder.finish()
            })
            .collect::<Vec<_>>()
    };
    let stage = |work: &dyn Fn() -> Vec<arrow::array::RecordBatch>| {
        let cpu = cpu_seconds();
        let batches = work();
        (cpu_seconds() - cpu, batches)
    };
    // Alternated, twice each, keeping the cheaper run: the first pass over a
    // cold heap pays for page faults the later ones do not.
    let (mut whole_cpu, mut streaming_cpu, mut batches) = (f64::MAX, f64::MAX, Vec::new());
    for _ in 0..2 {
        whole_cpu = whole_cpu.min(stage(&convert_whole).0);
        let (cpu, converted) = stage(&convert_streaming);
        streaming_cpu = streaming_cpu.min(cpu);
        batches = converted;
    }
    let blocks_of = |batches: &[arrow::array::RecordBatch]| {
        let mut blocks = vec![Vec::new()];
        for batch in batches {
            if blocks.last().unwrap().iter().map(|b: &arrow::array::RecordBatch| b.num_rows()).sum::<usize>()
                >= BLOCK_SPANS
            {
                blocks.push(Vec::new());
            }
            blocks.last_mut().unwrap().push(batch.clone());
        }
        blocks
    };
    let (mut encode_cpu, mut whole_encode_cpu, mut summary_cpu) = (f64::MAX, f64::MAX, f64::MAX);
    let mut summary_bytes = Vec::new();
    for _ in 0..2 {
        // The tag summary alone (part of the encoding below).
        let cpu = cpu_seconds();
        summary_bytes.clear();
        for block in blocks_of(&batches) {
            let mut summary = spanlake_schemas::tag_summary::TagSummaryBuilder::default();
            block.iter().for_each(|batch| summary.add(batch));
            let footer = std::hint::black_box(summary.finish().to_footer());
            summary_bytes.push(footer.value.map_or(0, |v| v.len()));
        }
        summary_cpu = summary_cpu.min(cpu_seconds() - cpu);
        let cpu = cpu_seconds();
        let encoded: u64 =
            blocks_of(&batches).iter().map(|b| encode_block(b, BlockId::new()).unwrap().meta.span_count).sum();
        encode_cpu = encode_cpu.min(cpu_seconds() - cpu);
        assert_eq!(encoded as usize, spans);
        // The previous encoding, for comparison: the whole block sorted into
        // one batch, then written by `ArrowWriter`.
        let cpu = cpu_seconds();
        for block in blocks_of(&batches) {
            let sorted = spanlake_schemas::block::sort_spans(&block).unwrap();
            let traces = spanlake_schemas::block::distinct_sorted_trace_ids(&sorted);
            let properties = spanlake_schemas::block::writer_properties(traces);
            let schema = spanlake_schemas::span_schema();
            let mut writer = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, Some(properties)).unwrap();
            writer.write(&sorted).unwrap();
            writer.close().unwrap();
        }
        whole_encode_cpu = whole_encode_cpu.min(cpu_seconds() - cpu);
    }
    drop(batches);

    // 2. decode → Arrow → Parquet → durable block and commit on file://
    let dir = tempfile::TempDir::new().unwrap();
    let store = std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let storage = Storage::local(store, dir.path().to_path_buf());
    let tenant = TenantId::single();
    let cpu = cpu_seconds();
    let wall = Instant::now();
    let (parquet_bytes, blocks) = runtime.block_on(async {
        let mut pending = Vec::new();
        let mut pending_spans = 0;
        let mut parquet_bytes = 0;
        let mut blocks = 0;
        for (i, body) in bodies.iter().enumerate() {
            // The ingester's own path: priced and decoded one span at a time.
            let builder = SpanBatchBuilder::new(64 << 10);
            let converted = convert(body, Format::Protobuf, builder, usize::MAX).unwrap();
            pending_spans += converted.batch.num_rows();
            pending.push(converted.batch);
            if pending_spans >= BLOCK_SPANS || i + 1 == bodies.len() {
                let batches = std::mem::take(&mut pending);
                pending_spans = 0;
                let block = encode_block(&batches, BlockId::new()).unwrap();
                parquet_bytes += block.meta.size_bytes;
                storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
                let record = CommitRecord { id: BlockId::new(), added: vec![block.meta], removed: vec![] };
                storage.commit(&tenant, &record).await.unwrap();
                blocks += 1;
            }
        }
        (parquet_bytes, blocks)
    });
    let ingest_cpu = cpu_seconds() - cpu;
    let ingest_wall = wall.elapsed().as_secs_f64();
    let per_million = |cpu: f64| cpu / spans as f64 * 1e6;

    println!();
    println!("| measure | CPU s / 1M spans | spans/s per core | wall s |");
    println!("|---|---|---|---|");
    println!(
        "| (a) OTLP decode only | {:.3} | {:.0} | {:.2} |",
        per_million(decode_cpu),
        spans as f64 / decode_cpu,
        decode_wall
    );
    println!(
        "| (b) decode → Arrow → Parquet → committed block (file://, fsync; {blocks} blocks) | {:.3} | {:.0} | {:.2} |",
        per_million(ingest_cpu),
        spans as f64 / ingest_cpu,
        ingest_wall
    );
    println!("| ratio (b)/(a) | {:.2}× | | |", ingest_cpu / decode_cpu);
    println!();
    println!("| stage of (b), alone | CPU s / 1M spans | ×(a) |");
    println!("|---|---|---|");
    for (stage, cpu) in [
        ("OTLP → Arrow, one span at a time, priced (the ingester's path)", streaming_cpu),
        ("OTLP → Arrow, whole request decoded first (the previous path)", whole_cpu),
        ("sort + Parquet encode of blocks, one column at a time (the ingester's)", encode_cpu),
        ("sort + Parquet encode of blocks, whole batch sorted first (the previous)", whole_encode_cpu),
        ("tag summary of blocks (keys and values, part of the encoding)", summary_cpu),
    ] {
        println!("| {stage} | {:.3} | {:.2}× |", per_million(cpu), cpu / decode_cpu);
    }
    println!();
    println!("| storage | bytes/span |");
    println!("|---|---|");
    println!("| OTLP protobuf (uncompressed request bodies) | {:.1} |", otlp_bytes as f64 / spans as f64);
    println!("| Parquet blocks on disk | {:.1} |", parquet_bytes as f64 / spans as f64);
    println!("| ratio Parquet / OTLP | {:.3} |", parquet_bytes as f64 / otlp_bytes as f64);
    println!(
        "| tag summary in each block's footer (JSON, {} blocks of about {BLOCK_SPANS} spans) | {}–{} bytes per block |",
        summary_bytes.len(),
        summary_bytes.iter().min().unwrap_or(&0),
        summary_bytes.iter().max().unwrap_or(&0)
    );

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
