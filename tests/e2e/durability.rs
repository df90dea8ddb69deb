//! Durability: acknowledged spans survive SIGKILL of the real binary, including
//! a kill that lands while flushes are in progress.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::Workload;

use spanlake_test_support::http::{fetch_trace, spans};

use crate::common::spawn_spanlake;

fn start(dir: &std::path::Path) -> spanlake_test_support::process::Spawned {
    spawn_spanlake(&["--storage", dir.to_str().unwrap(), "--min-flush-interval", "50ms"])
}

/// Trace id → span count of every request the server acknowledged.
type Acked = Arc<Mutex<HashMap<Vec<u8>, usize>>>;

/// Sends requests from `senders` tasks until the server goes away; records what was acknowledged.
async fn send_until_killed(grpc: SocketAddr, senders: u64, acked: Acked) -> Vec<tokio::task::JoinHandle<()>> {
    let workload = Workload::default();
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let (workload, acked) = (workload.clone(), acked.clone());
        let mut client = TraceServiceClient::connect(format!("http://{grpc}")).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(sender);
            for _ in 0..10_000 {
                let request = workload.request(&mut rng, 5, 1_764_000_000_000_000_000);
                let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
                for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
                    *counts.entry(span.trace_id.clone()).or_default() += 1;
                }
                match client.export(request).await {
                    Ok(_) => acked.lock().unwrap().extend(counts),
                    Err(_) => return,
                }
            }
        }));
    }
    tasks
}

async fn assert_all_acknowledged_spans_present(dir: &std::path::Path, acked: &Acked) {
    let restarted = start(dir);
    let http = reqwest::Client::new();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "some requests were acknowledged before the kill");
    for (trace_id, count) in &acked {
        let trace = fetch_trace(&http, restarted.http, trace_id, None)
            .await
            .unwrap_or_else(|| panic!("acknowledged trace {} lost", hex::encode(trace_id)));
        assert_eq!(spans(&trace).len(), *count, "trace {}", hex::encode(trace_id));
    }
    drop(restarted); // kills it
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut process = start(dir.path());
    let acked: Acked = Arc::default();
    // Send a fixed number of requests, all acknowledged, then kill.
    let workload = Workload::default();
    let mut client = TraceServiceClient::connect(format!("http://{}", process.grpc.unwrap())).await.unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..20 {
        let request = workload.request(&mut rng, 3, 1_764_000_000_000_000_000);
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            *counts.entry(span.trace_id.clone()).or_default() += 1;
        }
        client.export(request).await.expect("acknowledged");
        acked.lock().unwrap().extend(counts);
    }
    process.child.kill().unwrap(); // SIGKILL: no flush, no goodbye
    process.child.wait().unwrap();
    assert_eq!(acked.lock().unwrap().len(), 60);
    assert_all_acknowledged_spans_present(dir.path(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_flushes_loses_nothing_acknowledged() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut process = start(dir.path());
    let acked: Acked = Arc::default();
    let senders = send_until_killed(process.grpc.unwrap(), 8, acked.clone()).await;
    // With 8 senders and 50 ms flushes, flushes are continuously in progress.
    // Kill at a moment that is not aligned with any flush boundary.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(7)).await;
        if acked.lock().unwrap().len() >= 200 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(13)).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    assert_all_acknowledged_spans_present(dir.path(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_acknowledges_and_exits() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut process = start(dir.path());
    let acked: Acked = Arc::default();
    let senders = send_until_killed(process.grpc.unwrap(), 4, acked.clone()).await;
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = Command::new("kill").args(["-TERM", &process.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || process.child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "graceful exit, got {exit:?}");
    for sender in senders {
        sender.await.unwrap();
    }
    assert_all_acknowledged_spans_present(dir.path(), &acked).await;
}

/// A power cut can leave torn objects: zero-length and truncated files under
/// every prefix. Start-up still works and everything acknowledged before is
/// still answered; the unreadable records are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_objects_after_a_power_cut_block_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let process = start(dir.path());
    let acked: Acked = Arc::default();
    for task in send_until_killed(process.grpc.unwrap(), 2, acked.clone()).await {
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
    }
    drop(process);
    let tenant = dir.path().join("v1/single-tenant");
    let newest_block = {
        let mut blocks: Vec<_> = std::fs::read_dir(tenant.join("blocks")).unwrap().map(|e| e.unwrap().path()).collect();
        blocks.sort();
        blocks.pop().unwrap()
    };
    let torn = spanlake_schemas::BlockId::new();
    std::fs::write(tenant.join(format!("commits/{torn}.json")), b"").unwrap();
    std::fs::write(tenant.join(format!("commits/{}.json", spanlake_schemas::BlockId::new())), b"{\"id\": \"01")
        .unwrap();
    std::fs::create_dir_all(tenant.join("checkpoints")).unwrap();
    std::fs::write(tenant.join(format!("checkpoints/{}.json", spanlake_schemas::BlockId::new())), b"").unwrap();
    std::fs::create_dir_all(tenant.join("leases/some-window")).unwrap();
    std::fs::write(tenant.join("leases/some-window/1.json"), b"").unwrap();
    let bytes = std::fs::read(&newest_block).unwrap();
    std::fs::write(tenant.join(format!("blocks/{torn}.parquet")), &bytes[..bytes.len() / 2]).unwrap();

    assert_all_acknowledged_spans_present(dir.path(), &acked).await;
    let restarted = start(dir.path());
    let metrics = reqwest::get(format!("http://{}/metrics", restarted.http)).await.unwrap().text().await.unwrap();
    let invalid = metrics
        .lines()
        .find(|l| l.starts_with("spanlake_catalog_invalid_records_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(invalid, Some(3), "two torn commits and a torn checkpoint: {metrics}");
}

/// Writers whose clocks run behind or ahead, and a put slower than the
/// lookback, make commits land with ids far from "now". The querier still
/// answers every span they hold, and the compactor's sweep (running every
/// half second with a short grace) deletes none of their blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_skewed_commits_stay_visible_and_are_never_swept() {
    use spanlake_schemas::block::encode_block;
    use spanlake_schemas::storage::CommitRecord;
    use spanlake_schemas::{AppendReport, BlockId, SpanBatchBuilder, TenantId};
    use std::time::SystemTime;

    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path().to_str().unwrap();
    let process = spawn_spanlake(&[
        "--storage",
        root,
        "--commit-lookback",
        "2s",
        "--refresh-interval",
        "200ms",
        "--compaction-interval",
        "500ms",
        "--deletion-grace",
        "4s",
    ]);
    // A second writer on the same store, as another ingester would be.
    let storage = spanlake::storage::open(&spanlake::storage::StorageArgs::local(root)).unwrap();
    let tenant = TenantId::single();
    let now = SystemTime::now();
    let base_ns = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let block_of = |t: u8, id: &BlockId| {
        let mut builder = SpanBatchBuilder::default();
        let spans = spanlake_test_support::otlp::trace(t, "skewed", 3, base_ns);
        builder.append_resource_spans(&[spans], &mut AppendReport::default());
        encode_block(&[builder.finish()], id.clone()).unwrap()
    };
    let ten_minutes = Duration::from_secs(600);
    // Clock 10 minutes behind, and 10 minutes ahead.
    for (t, at) in [(1u8, now - ten_minutes), (2, now + ten_minutes)] {
        let id = BlockId::at(at);
        let block = block_of(t, &id);
        storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
        storage.commit(&tenant, &CommitRecord { id, added: vec![block.meta], removed: vec![] }).await.unwrap();
    }
    // A put slower than the lookback (but inside the grace): the commit id
    // is minted before the block goes up, the commit lands 3 s later.
    let id = BlockId::new();
    let block = block_of(3, &id);
    storage.put_block(&tenant, &block.meta, block.parquet).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    storage.commit(&tenant, &CommitRecord { id, added: vec![block.meta], removed: vec![] }).await.unwrap();

    // Several sweeps and a grace period later, every span is still answered.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let http = reqwest::Client::new();
    for t in 1..=3u8 {
        let trace = fetch_trace(&http, process.http, &[t; 16], None)
            .await
            .unwrap_or_else(|| panic!("trace {t} is not answered"));
        assert_eq!(spans(&trace).len(), 4, "trace {t}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", process.http)).await.unwrap().text().await.unwrap();
    let late = metrics
        .lines()
        .find(|l| l.starts_with("spanlake_catalog_late_commits_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(late.is_some_and(|n| n >= 1), "the commit from behind was found late: {metrics}");
}
