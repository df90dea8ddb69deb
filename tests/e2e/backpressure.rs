//! Backpressure: with a failing or stalled store the ingester answers
//! retryable errors with bounded memory; after recovery a retrying client's
//! spans are all stored, none twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::Workload;
use spanlake_schemas::fault::{Fault, FaultyStore};
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::{Storage, TenantId};

use spanlake_test_support::wait_until;

use crate::common::TestServer;

pub(crate) fn faulty_local() -> (Arc<FaultyStore>, Storage, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let faulty = FaultyStore::new(local);
    let storage = Storage::local(faulty.clone(), dir.path().to_path_buf());
    (faulty, storage, dir)
}

/// Every (trace id, span id) in live committed blocks (added and not
/// retired), with duplicates counted. A live block whose file is missing
/// fails the test: it would be a commit whose block never landed, left
/// behind.
async fn committed_spans(storage: &Storage) -> Vec<(Vec<u8>, Vec<u8>)> {
    use arrow::array::AsArray;
    use futures::TryStreamExt;
    let tenant = TenantId::single();
    let mut out = Vec::new();
    let (mut blocks, mut retired) = (Vec::new(), HashSet::new());
    for path in storage.list_commits(&tenant, None).await.unwrap() {
        let record = storage.read_commit(&path).await.unwrap();
        blocks.extend(record.added);
        retired.extend(record.removed);
    }
    blocks.retain(|meta| !retired.contains(&meta.id));
    for meta in blocks {
        let reader = ObjectReader::block(storage, &tenant, &meta);
        let stream = parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader).await.unwrap().build().unwrap();
        let batches: Vec<_> = stream.try_collect().await.unwrap();
        for batch in batches {
            let traces = batch.column_by_name("trace_id").unwrap().as_fixed_size_binary();
            let spans = batch.column_by_name("span_id").unwrap().as_fixed_size_binary();
            for row in 0..batch.num_rows() {
                out.push((traces.value(row).to_vec(), spans.value(row).to_vec()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_store_gives_retryable_errors_and_retries_lose_nothing() {
    let (faulty, storage, dir) = faulty_local();
    const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
    let server = TestServer::start_on(storage.clone(), dir, |a| a.ingester.flush_timeout = FLUSH_TIMEOUT).await;
    let workload = Workload::default();
    let mut rng = StdRng::seed_from_u64(3);
    let requests: Vec<_> = (0..6).map(|_| workload.request(&mut rng, 4, 1_764_000_000_000_000_000)).collect();
    let sent: HashSet<(Vec<u8>, Vec<u8>)> = requests
        .iter()
        .flat_map(|r| r.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans))
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();

    faulty.set(Fault::FailWrites);
    // HTTP: the first request waits out the flush retries, then gets 503 + Retry-After.
    let response = server
        .http
        .post(server.otlp_http_url())
        .header("content-type", "application/x-protobuf")
        .body(requests[0].encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert!(response.text().await.unwrap().contains("object storage is failing"));
    // While the store is down, requests are refused at once: they do not
    // wait out a flush's retries (FLUSH_TIMEOUT).
    let mut grpc = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let started = Instant::now();
    let status = grpc.export(requests[1].clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(started.elapsed() < FLUSH_TIMEOUT / 2, "fail fast, took {:?}", started.elapsed());

    // A retrying client: keeps retrying every request until acknowledged;
    // the store recovers part-way through.
    let recover = {
        let faulty = faulty.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            faulty.set(Fault::None);
        })
    };
    let mut retries = 0;
    for request in &requests {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match grpc.export(request.clone()).await {
                Ok(_) => break,
                Err(status) => {
                    assert!(
                        matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted),
                        "{status:?}"
                    );
                    assert!(Instant::now() < deadline, "store never recovered");
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    recover.await.unwrap();
    assert!(retries > 0, "the client had to retry");
    let stored = committed_spans(&storage).await;
    let distinct: HashSet<_> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), distinct.len(), "no span stored twice");
    assert_eq!(distinct, sent, "every span stored");
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffers_answer_429_with_bounded_memory() {
    let (faulty, storage, dir) = faulty_local();
    const LIMIT: usize = 256 << 10;
    let server = TestServer::start_on(storage.clone(), dir, |a| {
        a.ingester.max_tenant_buffer = LIMIT;
        a.ingester.max_buffer = 4 * LIMIT;
        a.ingester.flush_timeout = Duration::from_secs(60);
    })
    .await;
    faulty.set(Fault::StallWrites);
    let workload = Workload::default();
    let mut rng = StdRng::seed_from_u64(4);
    let mut in_flight = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let body = workload.request(&mut rng, 10, 1_764_000_000_000_000_000).encode_to_vec();
        let response = server
            .http
            .post(server.otlp_http_url())
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 429 => {
                assert!(r.headers().get("retry-after").is_some());
                assert!(r.text().await.unwrap().contains("buffers are full"));
                refused += 1;
            }
            Ok(r) => panic!("unexpected {}", r.status()),
            // Accepted into the buffer: waits for the stalled store.
            Err(e) if e.is_timeout() => in_flight.push(body),
            Err(e) => panic!("{e}"),
        }
        let buffered = server.spanlake_buffered_bytes();
        assert!(buffered <= LIMIT + (512 << 10), "buffer grew to {buffered}");
    }
    assert!(refused > 100, "most requests were refused once the buffer filled ({refused})");
    assert!(!in_flight.is_empty());
    faulty.set(Fault::None);
    // The accepted ones (whose clients timed out) are flushed once the store recovers.
    wait_until("the buffer drains", Duration::from_secs(20), || async { server.spanlake_buffered_bytes() == 0 }).await;
    assert!(!committed_spans(&storage).await.is_empty());
    server.spanlake.shutdown().await;
}

/// A store that hangs rather than errors: an export answers 503 once the
/// flush timeout has passed (not after the object store client's own
/// timeouts), and the ingester recovers by itself when the store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_answers_503_within_the_flush_timeout_and_recovers() {
    let (faulty, storage, dir) = faulty_local();
    const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
    let server = TestServer::start_on(storage.clone(), dir, |a| a.ingester.flush_timeout = FLUSH_TIMEOUT).await;
    let workload = Workload::default();
    let body = || workload.request(&mut StdRng::seed_from_u64(5), 3, 1_764_000_000_000_000_000).encode_to_vec();
    faulty.set(Fault::StallWrites);
    let export = || {
        server
            .http
            .post(server.otlp_http_url())
            .header("content-type", "application/x-protobuf")
            .body(body())
            .timeout(Duration::from_secs(30))
            .send()
    };
    let started = Instant::now();
    let response = export().await.expect("an answer, not a hung request");
    let took = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert!(took >= FLUSH_TIMEOUT && took < 10 * FLUSH_TIMEOUT, "answered after {took:?}");

    faulty.set(Fault::None);
    wait_until("exports succeed again", Duration::from_secs(20), || async {
        export().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(!committed_spans(&storage).await.is_empty());
    server.spanlake.shutdown().await;
}

/// The block and its commit record are put at the same time. When the
/// block's put fails and the commit's succeeds, the commit is retired at
/// once and the flush retried under a new block id: the request is
/// acknowledged after the store recovers, its spans are stored once, and no
/// live commit names a missing block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_fails_while_its_commit_lands_is_retired_and_retried() {
    let (faulty, storage, dir) = faulty_local();
    let server =
        TestServer::start_on(storage.clone(), dir, |a| a.ingester.flush_timeout = Duration::from_secs(10)).await;
    let mut rng = StdRng::seed_from_u64(9);
    let request = Workload::default().request(&mut rng, 3, 1_764_000_000_000_000_000);
    let sent: HashSet<(Vec<u8>, Vec<u8>)> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    faulty.fail_writes_matching(Some("/blocks/"));
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let export = tokio::spawn(async move { client.export(request).await });
    // Let a few attempts fail (the commits land, the blocks do not).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let retirements = {
        let tenant = TenantId::single();
        let mut n = 0;
        for path in storage.list_commits(&tenant, None).await.unwrap() {
            n += usize::from(!storage.read_commit(&path).await.unwrap().removed.is_empty());
        }
        n
    };
    assert!(retirements >= 1, "each failed attempt's commit is retired");
    faulty.fail_writes_matching(None);
    export.await.unwrap().expect("acknowledged once the store takes blocks again");
    let stored = committed_spans(&storage).await;
    assert_eq!(stored.len(), sent.len(), "every span once");
    assert_eq!(stored.into_iter().collect::<HashSet<_>>(), sent);
    server.spanlake.shutdown().await;
}
