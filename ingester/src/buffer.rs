//! Group commit: per-tenant buffers flushed into durable blocks.
//!
//! ```text
//! submit(batch) ─▶ tenant buffer ──(age ≥ flush_interval or size ≥ flush_bytes)──▶ flush task
//!    ▲ waits                                 encode (blocking pool) → put block → commit
//!    └──────────── every waiter of the flush gets the same result ◀──────────────┘
//! ```
//!
//! Invariants:
//! - a waiter is answered `Ok` only after the commit record naming its spans is durable;
//! - buffered plus in-flight bytes never exceed the per-tenant and total limits
//!   (a request that would is refused with a retryable error, never queued);
//! - one flush per tenant at a time; the next batch fills while it runs;
//! - while the store is failing, new requests are refused at once (503) until a
//!   probe or a flush succeeds again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use spanlake_schemas::block::{BlockId, encode_block};
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{Storage, TenantId};
use tokio::sync::{Mutex, Notify, oneshot};
use tracing::{info, warn};

use crate::error::{IngestError, Result};
use crate::metrics::Metrics;

pub use spanlake_schemas::storage::CommitHook;

/// Buffering and flushing limits.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    /// Longest time a span waits in the buffer before its flush starts.
    pub flush_interval: Duration,
    /// A tenant buffer holding this many bytes is flushed at once.
    pub flush_bytes: usize,
    /// Most bytes buffered or in flight for one tenant.
    pub max_tenant_bytes: usize,
    /// Most bytes buffered or in flight in total.
    pub max_total_bytes: usize,
    /// How long a failing flush is retried before its requests get 503.
    pub flush_timeout: Duration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
            flush_bytes: 16 << 20,
            max_tenant_bytes: 256 << 20,
            max_total_bytes: 1 << 30,
            flush_timeout: Duration::from_secs(5),
        }
    }
}

type FlushResult = std::result::Result<(), FlushFailed>;

#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushFailed;

#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    bytes: usize,
    waiters: Vec<oneshot::Sender<FlushResult>>,
    since: Option<Instant>,
}

#[derive(Default)]
struct TenantBuffer {
    pending: Pending,
    in_flight_bytes: usize,
    flushing: bool,
}

/// The shared group-commit pipeline of one ingester.
pub(crate) struct Pipeline {
    config: BufferConfig,
    storage: Storage,
    tenants: Mutex<HashMap<TenantId, TenantBuffer>>,
    total_bytes: AtomicUsize,
    healthy: AtomicBool,
    closing: AtomicBool,
    wake: Notify,
    idle: Notify,
    on_commit: Option<CommitHook>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Pipeline {
    pub(crate) fn new(
        config: BufferConfig,
        storage: Storage,
        on_commit: Option<CommitHook>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            storage,
            tenants: Mutex::new(HashMap::new()),
            total_bytes: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            wake: Notify::new(),
            idle: Notify::new(),
            on_commit,
            metrics,
        })
    }

    /// Buffers `batch` for `tenant`; the receiver answers when it is durable.
    pub(crate) async fn submit(&self, tenant: &TenantId, batch: RecordBatch) -> Result<oneshot::Receiver<FlushResult>> {
        if self.closing.load(Ordering::Acquire) {
            return Err(IngestError::ShuttingDown);
        }
        if !self.healthy.load(Ordering::Acquire) {
            self.metrics.refused("storage_unavailable");
            return Err(IngestError::Unavailable { retry_after: Duration::from_secs(1) });
        }
        let bytes = batch.get_array_memory_size();
        let mut tenants = self.tenants.lock().await;
        let buffer = tenants.entry(tenant.clone()).or_default();
        let tenant_bytes = buffer.pending.bytes + buffer.in_flight_bytes;
        // An empty tenant buffer always takes one request (bounded by the request
        // size limit), so that no single request can be refused forever.
        if tenant_bytes > 0 && tenant_bytes + bytes > self.config.max_tenant_bytes {
            self.metrics.refused("tenant_buffer_full");
            return Err(self.overloaded("tenant buffer"));
        }
        let total = self.total_bytes.load(Ordering::Acquire);
        if total > 0 && total + bytes > self.config.max_total_bytes {
            self.metrics.refused("total_buffer_full");
            return Err(self.overloaded("total buffer"));
        }
        self.total_bytes.fetch_add(bytes, Ordering::AcqRel);
        self.metrics.buffer_bytes.inc_by(bytes as i64);
        let (tx, rx) = oneshot::channel();
        let pending = &mut buffer.pending;
        pending.batches.push(batch);
        pending.bytes += bytes;
        pending.waiters.push(tx);
        pending.since.get_or_insert_with(Instant::now);
        if pending.bytes >= self.config.flush_bytes {
            self.wake.notify_one();
        }
        Ok(rx)
    }

    fn overloaded(&self, scope: &'static str) -> IngestError {
        IngestError::Overloaded { scope, retry_after: self.config.flush_interval.max(Duration::from_secs(1)) }
    }

    /// The flusher: starts flushes as buffers come due. Returns after
    /// [`Pipeline::close`] once every buffer has been flushed.
    pub(crate) async fn run(self: Arc<Self>) {
        let tick = (self.config.flush_interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
            }
            let closing = self.closing.load(Ordering::Acquire);
            let busy = self.start_due_flushes(closing).await;
            if !self.healthy.load(Ordering::Acquire) && !busy {
                self.probe().await;
            }
            if closing && !busy {
                self.idle.notify_waiters();
                return;
            }
        }
    }

    /// Starts a flush for every tenant whose buffer is due; returns whether
    /// anything is buffered or in flight.
    async fn start_due_flushes(self: &Arc<Self>, flush_all: bool) -> bool {
        let mut tenants = self.tenants.lock().await;
        let mut busy = false;
        for (tenant, buffer) in tenants.iter_mut() {
            let pending = &buffer.pending;
            busy |= buffer.flushing || !pending.batches.is_empty();
            let due = pending.since.is_some_and(|since| since.elapsed() >= self.config.flush_interval)
                || pending.bytes >= self.config.flush_bytes
                || (flush_all && !pending.batches.is_empty());
            if buffer.flushing || !due {
                continue;
            }
            let pending = std::mem::take(&mut buffer.pending);
            buffer.flushing = true;
            buffer.in_flight_bytes = pending.bytes;
            let this = Arc::clone(self);
            let tenant = tenant.clone();
            tokio::spawn(async move { this.flush(tenant, pending).await });
        }
        tenants.retain(|_, b| b.flushing || !b.pending.batches.is_empty());
        busy
    }

    async fn flush(self: Arc<Self>, tenant: TenantId, pending: Pending) {
        let started = Instant::now();
        let result = self.write_block(&tenant, pending.batches).await;
        if result.is_ok() {
            self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
        }
        for waiter in pending.waiters {
            // A waiter whose request was cancelled is gone; its spans are stored anyway.
            let _ = waiter.send(result);
        }
        let mut tenants = self.tenants.lock().await;
        if let Some(buffer) = tenants.get_mut(&tenant) {
            buffer.flushing = false;
            buffer.in_flight_bytes = 0;
        }
        self.total_bytes.fetch_sub(pending.bytes, Ordering::AcqRel);
        self.metrics.buffer_bytes.dec_by(pending.bytes as i64);
        self.wake.notify_one();
    }

    /// Encodes, uploads and commits one block, retrying with backoff until
    /// `flush_timeout`.
    async fn write_block(&self, tenant: &TenantId, batches: Vec<RecordBatch>) -> FlushResult {
        let encoded = tokio::task::spawn_blocking(move || encode_block(&batches, BlockId::new()))
            .await
            .expect("block encoding panicked");
        let block = match encoded {
            Ok(block) => block,
            Err(error) => {
                warn!(%tenant, %error, "block encoding failed");
                return Err(FlushFailed);
            }
        };
        let deadline = Instant::now() + self.config.flush_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.upload_and_commit(tenant, &block.meta, block.parquet.clone()).await {
                Ok(()) => {
                    self.healthy.store(true, Ordering::Release);
                    self.metrics.block_bytes.observe(block.meta.size_bytes as f64);
                    self.metrics.block_spans.observe(block.meta.span_count as f64);
                    return Ok(());
                }
                Err(error) => {
                    self.metrics.flush_failures.inc();
                    self.healthy.store(false, Ordering::Release);
                    if Instant::now() + backoff > deadline {
                        warn!(%tenant, block_id = %block.meta.id, %error, "block upload failed, giving up; clients will retry");
                        return Err(FlushFailed);
                    }
                    warn!(%tenant, block_id = %block.meta.id, %error, "block upload failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn upload_and_commit(
        &self,
        tenant: &TenantId,
        meta: &spanlake_schemas::BlockMeta,
        parquet: Bytes,
    ) -> Result<(), spanlake_schemas::storage::StorageError> {
        self.storage.put_block(tenant, meta, parquet).await?;
        let record = CommitRecord { id: BlockId::new(), added: vec![meta.clone()], removed: Vec::new() };
        self.storage.commit(tenant, &record).await?;
        if let Some(hook) = &self.on_commit {
            hook(tenant, &record);
        }
        Ok(())
    }

    /// Checks whether the store accepts writes again.
    async fn probe(&self) {
        let path = Path::from_iter(["_spanlake", "health"]);
        if self.storage.put_durable(&path, Bytes::from_static(b"ok")).await.is_ok() {
            info!("object storage is writable again");
            self.healthy.store(true, Ordering::Release);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Refuses new requests and lets the flusher flush everything buffered;
    /// returns when it has.
    pub(crate) async fn close(&self) {
        let idle = self.idle.notified();
        self.closing.store(true, Ordering::Release);
        self.wake.notify_one();
        idle.await;
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.total_bytes.load(Ordering::Acquire)
    }
}
