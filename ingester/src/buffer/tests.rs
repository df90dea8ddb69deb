//! The group commit against the in-memory store, wrapped by the
//! fault-injecting one: when flushes start, what shares a block, the bounds,
//! and that nothing is acknowledged before its commit is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use object_store::memory::InMemory;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus_client::registry::Registry;
use spanlake_schemas::encode::{expand_groups, expanded_memory_size};
use spanlake_schemas::fault::{Fault, FaultyStore};
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{AppendReport, SpanBatchBuilder, Storage, TenantId};
use tokio::sync::oneshot;

use super::{BufferConfig, FlushResult, Pipeline};
use crate::error::IngestError;
use crate::metrics::Metrics;

/// A batch of `spans` spans of trace `t`, grouped as the ingester buffers it.
fn batch(t: u8, spans: u8) -> RecordBatch {
    batch_with_resource(t, spans, Vec::new())
}

fn batch_with_resource(t: u8, spans: u8, attributes: Vec<KeyValue>) -> RecordBatch {
    let spans = (1..=spans)
        .map(|s| Span {
            trace_id: vec![t; 16],
            span_id: vec![t, 0, 0, 0, 0, 0, 0, s],
            name: "op".into(),
            start_time_unix_nano: 1_764_000_000_000_000_000,
            end_time_unix_nano: 1_764_000_000_001_000_000,
            ..Default::default()
        })
        .collect();
    let mut builder = SpanBatchBuilder::default();
    let resource_spans = ResourceSpans {
        resource: Some(Resource { attributes, ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    };
    builder.append_resource_spans(&[resource_spans], &mut AppendReport::default());
    builder.finish_grouped()
}

struct Fixture {
    pipeline: Arc<Pipeline>,
    faulty: Arc<FaultyStore>,
    storage: Storage,
    commits: Arc<AtomicUsize>,
}

impl Fixture {
    fn new(config: BufferConfig) -> Self {
        let faulty = FaultyStore::new(Arc::new(InMemory::new()));
        let storage = Storage::new(faulty.clone());
        let commits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&commits);
        let hook = Arc::new(move |_: &TenantId, _: &CommitRecord| {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        let metrics = Arc::new(Metrics::new(&mut Registry::default()));
        let pipeline = Pipeline::new(config, storage.clone(), Some(hook), metrics);
        tokio::spawn(Arc::clone(&pipeline).run());
        Self { pipeline, faulty, storage, commits }
    }

    async fn submit(&self, tenant: &str, batch: RecordBatch) -> Result<oneshot::Receiver<FlushResult>, IngestError> {
        self.pipeline.submit(&TenantId::new(tenant).unwrap(), batch).await
    }

    /// Commit records in the store for `tenant`.
    async fn stored_commits(&self, tenant: &str) -> usize {
        self.storage.list_commits(&TenantId::new(tenant).unwrap(), None).await.unwrap().len()
    }
}

/// Awaits an acknowledgement (at most 10 s).
async fn acked(rx: oneshot::Receiver<FlushResult>) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(10), rx).await, Ok(Ok(Ok(()))))
}

/// Whether `rx` is still unanswered after a moment.
async fn still_waiting(rx: &mut oneshot::Receiver<FlushResult>) -> bool {
    tokio::time::sleep(Duration::from_millis(100)).await;
    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

fn config() -> BufferConfig {
    BufferConfig { min_flush_interval: Duration::ZERO, ..BufferConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tenant_is_flushed_at_once_whatever_the_interval() {
    let fixture = Fixture::new(BufferConfig { min_flush_interval: Duration::from_secs(3600), ..config() });
    let rx = fixture.submit("a", batch(1, 3)).await.unwrap();
    assert!(acked(rx).await, "acknowledged without waiting for a timer");
    assert_eq!(fixture.stored_commits("a").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_during_a_flush_share_the_next_block() {
    let fixture = Fixture::new(config());
    fixture.faulty.set(Fault::StallWrites);
    let mut first = fixture.submit("a", batch(1, 2)).await.unwrap();
    assert!(still_waiting(&mut first).await, "the leader's flush is stalled in the store");
    let mut followers = Vec::new();
    for t in 2..=4 {
        followers.push(fixture.submit("a", batch(t, 2)).await.unwrap());
    }
    for follower in &mut followers {
        assert!(still_waiting(follower).await, "nothing is acknowledged before its commit");
    }
    fixture.faulty.set(Fault::None);
    assert!(acked(first).await);
    for follower in followers {
        assert!(acked(follower).await);
    }
    assert_eq!(fixture.stored_commits("a").await, 2, "the leader's block, then one block for all followers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_bytes_caps_what_one_block_takes() {
    let fixture = Fixture::new(BufferConfig { flush_bytes: 1, ..config() });
    fixture.faulty.set(Fault::StallWrites);
    let mut pending = Vec::new();
    for t in 1..=4 {
        pending.push(fixture.submit("a", batch(t, 1)).await.unwrap());
    }
    fixture.faulty.set(Fault::None);
    for rx in pending {
        assert!(acked(rx).await);
    }
    assert_eq!(fixture.stored_commits("a").await, 4, "each request over flush_bytes is a block of its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_of_one_tenant_start_at_least_the_minimum_interval_apart() {
    const INTERVAL: Duration = Duration::from_millis(300);
    let fixture = Fixture::new(BufferConfig { min_flush_interval: INTERVAL, ..config() });
    let started = Instant::now();
    assert!(acked(fixture.submit("a", batch(1, 1)).await.unwrap()).await);
    assert!(acked(fixture.submit("a", batch(2, 1)).await.unwrap()).await);
    assert!(started.elapsed() >= INTERVAL, "the second flush waited for the interval");
    assert_eq!(fixture.stored_commits("a").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_interval_does_not_hold_back_another() {
    let fixture = Fixture::new(BufferConfig { min_flush_interval: Duration::from_secs(3600), ..config() });
    assert!(acked(fixture.submit("a", batch(1, 1)).await.unwrap()).await);
    let mut second = fixture.submit("a", batch(2, 1)).await.unwrap();
    assert!(acked(fixture.submit("b", batch(3, 1)).await.unwrap()).await, "tenant b flushes at once");
    assert!(still_waiting(&mut second).await, "tenant a's next flush waits for its interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_total_bounds_refuse_with_a_retryable_error() {
    let one = expanded_memory_size(&batch(1, 4));
    let fixture = Fixture::new(BufferConfig { max_tenant_bytes: 2 * one, max_total_bytes: 3 * one, ..config() });
    fixture.faulty.set(Fault::StallWrites);
    let mut accepted =
        vec![fixture.submit("a", batch(1, 4)).await.unwrap(), fixture.submit("a", batch(2, 4)).await.unwrap()];
    let refused = fixture.submit("a", batch(3, 4)).await.unwrap_err();
    assert!(matches!(refused, IngestError::Overloaded { scope: "tenant buffer", .. }), "{refused}");
    assert_eq!(refused.http_status(), 429);
    assert!(refused.retry_after().is_some());
    // Tenant b has room of its own, until the total bound.
    accepted.push(fixture.submit("b", batch(4, 4)).await.unwrap());
    let refused = fixture.submit("b", batch(5, 4)).await.unwrap_err();
    assert!(matches!(refused, IngestError::Overloaded { scope: "total buffer", .. }), "{refused}");
    assert_eq!(fixture.pipeline.buffered_bytes(), 3 * one);
    fixture.faulty.set(Fault::None);
    for rx in accepted {
        assert!(acked(rx).await);
    }
    assert_eq!(fixture.pipeline.buffered_bytes(), 0, "acknowledged bytes leave the buffer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_counts_once_per_row_as_its_block_will_hold_it() {
    let attributes = (0..1000).map(|i| KeyValue { key: format!("k{i}"), ..Default::default() }).collect();
    let large = batch_with_resource(1, 200, attributes);
    let plain = expand_groups(&large).unwrap().get_array_memory_size();
    assert!(large.get_array_memory_size() < plain / 20, "the grouped batch holds the resource once");
    let fixture = Fixture::new(config());
    fixture.faulty.set(Fault::StallWrites);
    let rx = fixture.submit("a", large).await.unwrap();
    let counted = fixture.pipeline.buffered_bytes();
    assert!(counted >= plain / 2 && counted <= plain * 2, "{counted} bytes counted, {plain} once expanded");
    fixture.faulty.set(Fault::None);
    assert!(acked(rx).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_only_after_the_commit_and_refused_while_the_store_fails() {
    let fixture = Fixture::new(BufferConfig { flush_timeout: Duration::from_millis(300), ..config() });
    fixture.faulty.set(Fault::FailWrites);
    let rx = fixture.submit("a", batch(1, 1)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), rx).await;
    assert!(matches!(answer, Ok(Ok(Err(_)))), "a failed flush is not acknowledged");
    assert_eq!(fixture.commits.load(Ordering::SeqCst), 0);
    let refused = fixture.submit("a", batch(2, 1)).await.unwrap_err();
    assert!(matches!(refused, IngestError::Unavailable { .. }), "refused at once while the store fails: {refused}");
    fixture.faulty.set(Fault::None);
    // The probe notices the store is back; then a request is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rx = loop {
        match fixture.submit("a", batch(3, 1)).await {
            Ok(rx) => break rx,
            Err(_) => assert!(Instant::now() < deadline, "the store never counted as healthy again"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(acked(rx).await);
    assert_eq!(fixture.commits.load(Ordering::SeqCst), 1, "the commit was seen before the acknowledgement");
    assert_eq!(fixture.stored_commits("a").await, 1);
}
