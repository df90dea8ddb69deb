//! Acknowledgement benchmark (issue #11). Run: `cargo bench --bench ack`.
//!
//! In one run, against the all-in-one server in this process:
//! 1. one sequential exporter, the way an SDK's `BatchSpanProcessor` exports
//!    (requests of 512 spans over OTLP/gRPC, one at a time): acknowledgement
//!    latency p50/p99 and spans/s, refusals counted,
//!    a. on local disk (`file://`, every block and commit fsynced),
//!    b. on an S3 server on loopback (s3s-fs) behind 50 ms of latency per
//!    request (`object_store`'s `ThrottledStore`), with the defaults a
//!    remote store gets (`--min-flush-interval` 100 ms);
//! 2. offered loads of 1k, 10k and 100k spans/s (loadgen, gRPC) on local
//!    disk: blocks written per second and bytes per block, from the
//!    ingester's own metrics.
//!
//! Environment knobs: SPANLAKE_BENCH_ACK_SECONDS (default 10) per scenario.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::{LoadgenArgs, Workload};
use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_schemas::Storage;
use spanlake_test_support::measure::percentile;
use spanlake_test_support::s3::{ACCESS_KEY, BUCKET, SECRET_KEY, start_s3};

const BATCH_SPANS: usize = 512;

/// Requests of exactly `BATCH_SPANS` spans of loadgen's default workload.
fn batches(count: usize) -> Vec<ExportTraceServiceRequest> {
    let workload = Workload::default();
    let mut rng = StdRng::seed_from_u64(11);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    (0..count)
        .map(|i| {
            let mut request = workload.request(&mut rng, 60, now + i as u64 * 1_000_000);
            let mut left = BATCH_SPANS;
            for rs in &mut request.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.truncate(left);
                    left -= ss.spans.len();
                }
            }
            assert_eq!(left, 0, "60 traces hold at least {BATCH_SPANS} spans");
            request.resource_spans.retain(|rs| rs.scope_spans.iter().any(|ss| !ss.spans.is_empty()));
            request
        })
        .collect()
}

struct Sequential {
    latencies_ms: Vec<f64>,
    spans_per_second: f64,
    refused: usize,
}

/// One exporter, one request at a time, for `seconds`.
async fn sequential(server: &Spanlake, requests: &[ExportTraceServiceRequest], seconds: Duration) -> Sequential {
    let endpoint = format!("http://{}", server.otlp_grpc_addr().unwrap());
    let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
    let started = Instant::now();
    let (mut latencies_ms, mut refused, mut spans) = (Vec::new(), 0, 0);
    for request in requests.iter().cycle() {
        if started.elapsed() >= seconds {
            break;
        }
        let sent = Instant::now();
        match client.export(request.clone()).await {
            Ok(_) => {
                latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
                spans += BATCH_SPANS;
            }
            Err(_) => refused += 1,
        }
    }
    let spans_per_second = spans as f64 / started.elapsed().as_secs_f64();
    latencies_ms.sort_by(f64::total_cmp);
    Sequential { latencies_ms, spans_per_second, refused }
}

/// `name`'s value in the Prometheus text of `server`.
async fn metric(server: &Spanlake, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.http_addr())).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn print_sequential(what: &str, run: &Sequential) {
    println!(
        "| {what} | {:.1} | {:.1} | {:.0} | {} | {} |",
        percentile(&run.latencies_ms, 0.5),
        percentile(&run.latencies_ms, 0.99),
        run.spans_per_second,
        run.latencies_ms.len(),
        run.refused
    );
}

fn main() {
    spanlake::tune_allocator();
    let seconds = Duration::from_secs(
        std::env::var("SPANLAKE_BENCH_ACK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let requests = batches(200);
    runtime.block_on(async {
        println!("one sequential exporter, {BATCH_SPANS}-span requests over OTLP/gRPC, {seconds:?} each");
        println!();
        println!("| store | ack p50 ms | ack p99 ms | spans/s | requests | refused |");
        println!("|---|---|---|---|---|---|");

        // 1a. local disk, fsynced
        let dir = tempfile::TempDir::new().unwrap();
        let mut args = ServerArgs::for_tests(StorageArgs::local(dir.path().to_str().unwrap()));
        args.all_in_one.compaction = false;
        let server = Spanlake::start(&args, Role::All).await.unwrap();
        let local = sequential(&server, &requests, seconds).await;
        print_sequential("local disk (fsync), --min-flush-interval 20ms", &local);
        server.shutdown().await;

        // 1b. S3 on loopback, 50 ms per request
        let root = tempfile::TempDir::new().unwrap();
        let s3 = start_s3(root.path()).await;
        let storage_args = StorageArgs::s3_compatible(&format!("http://{s3}"), BUCKET, "bench", ACCESS_KEY, SECRET_KEY);
        let s3_store = Arc::clone(spanlake::storage::open(&storage_args).unwrap().object_store());
        let latency = Duration::from_millis(50);
        let throttle = ThrottleConfig {
            wait_put_per_call: latency,
            wait_get_per_call: latency,
            wait_list_per_call: latency,
            wait_list_with_delimiter_per_call: latency,
            wait_delete_per_call: latency,
            ..ThrottleConfig::default()
        };
        let distant: Arc<dyn ObjectStore> = Arc::new(ThrottledStore::new(s3_store, throttle));
        let mut args = ServerArgs::for_tests(storage_args);
        args.all_in_one.compaction = false;
        let server = Spanlake::start_with_storage(&args, Role::All, Storage::new(distant)).await.unwrap();
        let remote = sequential(&server, &requests, seconds).await;
        print_sequential("S3 on loopback + 50 ms per request, --min-flush-interval 100ms", &remote);
        server.shutdown().await;

        // 2. offered loads on local disk: blocks per second and bytes per block
        println!();
        println!("offered load (loadgen, gRPC) on local disk, {seconds:?} each");
        println!();
        println!(
            "| offered spans/s | acknowledged spans/s | blocks/s | bytes/block | spans/block | refused requests |"
        );
        println!("|---|---|---|---|---|---|");
        let spans_per_trace = {
            let sample = Workload::default().request(&mut StdRng::seed_from_u64(3), 1000, 0);
            sample.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum::<usize>() as f64
                / 1000.0
        };
        for offered in [1_000.0, 10_000.0, 100_000.0] {
            let dir = tempfile::TempDir::new().unwrap();
            let mut args = ServerArgs::for_tests(StorageArgs::local(dir.path().to_str().unwrap()));
            args.all_in_one.compaction = false;
            let server = Spanlake::start(&args, Role::All).await.unwrap();
            let load = LoadgenArgs {
                endpoint: Some(format!("http://{}", server.otlp_grpc_addr().unwrap())),
                rate: offered / spans_per_trace,
                duration: Some(seconds),
                concurrency: if offered > 20_000.0 { 64 } else { 8 },
                batch: 10,
                quiet: true,
                ..LoadgenArgs::defaults()
            };
            let report = spanlake::loadgen::generate(&load).await.unwrap();
            let blocks = metric(&server, "spanlake_ingester_block_size_bytes_count").await;
            let bytes = metric(&server, "spanlake_ingester_block_size_bytes_sum").await;
            let spans = metric(&server, "spanlake_ingester_block_spans_sum").await;
            let elapsed = report.elapsed.as_secs_f64();
            println!(
                "| {offered:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {} |",
                report.spans_per_second(),
                blocks / elapsed,
                bytes / blocks.max(1.0),
                spans / blocks.max(1.0),
                report.requests_failed + report.requests_retried
            );
            server.shutdown().await;
        }
    });
}
