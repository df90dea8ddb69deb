//! Group commit: per-tenant buffers flushed into durable blocks.
//!
//! ```text
//! submit(batch) ─▶ tenant buffer ─▶ flush leader (one per tenant while busy)
//!    ▲ waits          │ fills while        take ≤ flush_bytes → encode (blocking pool)
//!    │                │ a flush runs       → put block and commit at once
//!    └──── every request of that flush gets the same result ◀──┘
//! ```
//!
//! The first request that finds its tenant idle becomes the leader: its data
//! starts flushing at once. Requests that arrive while a flush runs are its
//! followers: they fill the next batch, which the leader takes as soon as the
//! flush completes (and at least `min_flush_interval` after the previous one
//! started). So an idle tenant's acknowledgement costs one encode and two
//! puts made at the same time (one round trip), and batches grow by
//! themselves under load.
//!
//! Invariants:
//! - a waiter is answered `Ok` only after the commit record naming its spans is durable;
//! - buffered plus in-flight bytes never exceed the per-tenant and total limits
//!   (a request that would is refused with a retryable error, never queued);
//! - one flush per tenant at a time, and flush starts at least
//!   `min_flush_interval` apart, which bounds object-store requests;
//! - a flush attempt never outlives `flush_timeout`: a hung store answers 503
//!   within it, not after the object store client's own retries;
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
    /// Shortest time between the starts of two flushes of one tenant. Bounds
    /// object-store requests (two puts per flush) under load; an idle tenant
    /// flushes at once.
    pub min_flush_interval: Duration,
    /// Most bytes one flush takes (one block); the rest waits for the next.
    pub flush_bytes: usize,
    /// Most bytes buffered or in flight for one tenant.
    pub max_tenant_bytes: usize,
    /// Most bytes buffered or in flight in total.
    pub max_total_bytes: usize,
    /// Longest a flush is tried, every attempt included, before its requests get 503.
    pub flush_timeout: Duration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            min_flush_interval: Duration::from_millis(20),
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

/// One request's spans and the sender that acknowledges it.
struct Request {
    batch: RecordBatch,
    bytes: usize,
    waiter: oneshot::Sender<FlushResult>,
}

#[derive(Default)]
struct TenantBuffer {
    pending: Vec<Request>,
    pending_bytes: usize,
    in_flight_bytes: usize,
    /// A leader task is flushing this tenant (or about to).
    flushing: bool,
    last_flush_start: Option<Instant>,
}

impl TenantBuffer {
    /// Takes the requests of the next flush: the oldest ones, up to
    /// `flush_bytes` (at least one).
    fn take_flush(&mut self, flush_bytes: usize) -> (Vec<Request>, usize) {
        let mut bytes = 0;
        let mut count = 0;
        for request in &self.pending {
            if count > 0 && bytes + request.bytes > flush_bytes {
                break;
            }
            bytes += request.bytes;
            count += 1;
        }
        let taken = self.pending.drain(..count).collect();
        self.pending_bytes -= bytes;
        (taken, bytes)
    }

    fn idle_since(&self, horizon: Duration) -> bool {
        !self.flushing && self.pending.is_empty() && self.last_flush_start.is_none_or(|t| t.elapsed() >= horizon)
    }
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
    /// If no flush of the tenant is running, one starts at once.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        tenant: &TenantId,
        batch: RecordBatch,
    ) -> Result<oneshot::Receiver<FlushResult>> {
        if self.closing.load(Ordering::Acquire) {
            return Err(IngestError::ShuttingDown);
        }
        if !self.healthy.load(Ordering::Acquire) {
            self.metrics.refused("storage_unavailable");
            return Err(IngestError::Unavailable { retry_after: Duration::from_secs(1) });
        }
        // As written: a grouped batch's resource columns expand to every row.
        let bytes = spanlake_schemas::encode::expanded_memory_size(&batch);
        let mut tenants = self.tenants.lock().await;
        let buffer = tenants.entry(tenant.clone()).or_default();
        let tenant_bytes = buffer.pending_bytes + buffer.in_flight_bytes;
        // An empty tenant buffer always takes one request (bounded by the request
        // size limit), so that no single request can be refused forever.
        if tenant_bytes > 0 && tenant_bytes + bytes > self.config.max_tenant_bytes {
            self.metrics.refused("tenant_buffer_full");
            return Err(Self::overloaded("tenant buffer"));
        }
        let total = self.total_bytes.load(Ordering::Acquire);
        if total > 0 && total + bytes > self.config.max_total_bytes {
            self.metrics.refused("total_buffer_full");
            return Err(Self::overloaded("total buffer"));
        }
        self.total_bytes.fetch_add(bytes, Ordering::AcqRel);
        self.metrics.buffer_bytes.inc_by(bytes as i64);
        let (waiter, rx) = oneshot::channel();
        buffer.pending.push(Request { batch, bytes, waiter });
        buffer.pending_bytes += bytes;
        if !buffer.flushing {
            buffer.flushing = true;
            tokio::spawn(Arc::clone(self).lead_flushes(tenant.clone()));
        }
        Ok(rx)
    }

    fn overloaded(scope: &'static str) -> IngestError {
        IngestError::Overloaded { scope, retry_after: Duration::from_secs(1) }
    }

    /// The leader of one tenant: flushes its buffer until it is empty, one
    /// flush at a time and at least `min_flush_interval` between starts.
    async fn lead_flushes(self: Arc<Self>, tenant: TenantId) {
        loop {
            let (requests, bytes) = {
                let mut tenants = self.tenants.lock().await;
                let Some(buffer) = tenants.get_mut(&tenant) else { return };
                if buffer.pending.is_empty() {
                    buffer.flushing = false;
                    break;
                }
                let earliest = buffer.last_flush_start.map(|t| t + self.config.min_flush_interval);
                if let Some(earliest) = earliest.filter(|t| *t > Instant::now())
                    && !self.closing.load(Ordering::Acquire)
                {
                    drop(tenants);
                    tokio::time::sleep_until(earliest.into()).await;
                    continue;
                }
                let (requests, bytes) = buffer.take_flush(self.config.flush_bytes);
                buffer.in_flight_bytes = bytes;
                buffer.last_flush_start = Some(Instant::now());
                (requests, bytes)
            };
            let started = Instant::now();
            let (batches, waiters): (Vec<_>, Vec<_>) = requests.into_iter().map(|r| (r.batch, r.waiter)).unzip();
            let result = self.write_block(&tenant, batches).await;
            if result.is_ok() {
                self.metrics.flush_duration.observe(started.elapsed().as_secs_f64());
            }
            // The bytes leave the buffer before anyone hears of the result.
            if let Some(buffer) = self.tenants.lock().await.get_mut(&tenant) {
                buffer.in_flight_bytes = 0;
            }
            self.total_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.metrics.buffer_bytes.dec_by(bytes as i64);
            for waiter in waiters {
                // A waiter whose request was cancelled is gone; its spans are stored anyway.
                let _ = waiter.send(result);
            }
        }
        self.wake.notify_one();
    }

    /// Housekeeping: probes a failing store, forgets idle tenants, and on
    /// [`Pipeline::close`] returns once every buffer has been flushed.
    pub(crate) async fn run(self: Arc<Self>) {
        let tick = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
            }
            let busy = {
                let mut tenants = self.tenants.lock().await;
                tenants.retain(|_, b| !b.idle_since(self.config.min_flush_interval));
                !tenants.is_empty() && tenants.values().any(|b| b.flushing || !b.pending.is_empty())
            };
            if !self.healthy.load(Ordering::Acquire) && !busy {
                self.probe().await;
            }
            if self.closing.load(Ordering::Acquire) && !busy {
                self.idle.notify_waiters();
                return;
            }
        }
    }

    /// Encodes, uploads and commits one block, retrying with backoff; no
    /// attempt outlives `flush_timeout`.
    async fn write_block(&self, tenant: &TenantId, batches: Vec<RecordBatch>) -> FlushResult {
        let block = match tokio::task::spawn_blocking(move || encode_block(&batches, BlockId::new())).await {
            Ok(Ok(block)) => block,
            Ok(Err(error)) => {
                warn!(%tenant, %error, "block encoding failed");
                return Err(FlushFailed);
            }
            Err(error) => {
                warn!(%tenant, %error, "block encoding task failed");
                return Err(FlushFailed);
            }
        };
        let deadline = Instant::now() + self.config.flush_timeout;
        let mut backoff = Duration::from_millis(50);
        let mut meta = block.meta;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = self.upload_and_commit(tenant, &meta, block.parquet.clone());
            let error = match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(())) => {
                    self.healthy.store(true, Ordering::Release);
                    self.metrics.block_bytes.observe(meta.size_bytes as f64);
                    self.metrics.block_spans.observe(meta.span_count as f64);
                    return Ok(());
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer from the object store within the flush timeout ({remaining:?})"),
            };
            self.metrics.flush_failures.inc();
            self.healthy.store(false, Ordering::Release);
            if Instant::now() + backoff >= deadline {
                warn!(%tenant, block_id = %meta.id, %error, "block upload failed, giving up; clients will retry");
                return Err(FlushFailed);
            }
            warn!(%tenant, block_id = %meta.id, %error, "block upload failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            // Each attempt writes its block under a new id: the previous
            // attempt's commit may have landed without its block, and may be
            // retired by that id.
            meta.id = BlockId::new();
        }
    }

    async fn upload_and_commit(
        &self,
        tenant: &TenantId,
        meta: &spanlake_schemas::BlockMeta,
        parquet: Bytes,
    ) -> Result<(), spanlake_schemas::storage::StorageError> {
        // The block and its commit record go up at the same time: one round
        // trip to the store, not two. A reader that lists the commit before
        // the block's file exists leaves the block out while it is young;
        // nothing is acknowledged before both are durable.
        let record = CommitRecord { id: BlockId::new(), added: vec![meta.clone()], removed: Vec::new() };
        let (block, commit) =
            tokio::join!(self.storage.put_block(tenant, meta, parquet), self.storage.commit(tenant, &record));
        match (block, commit) {
            (Ok(()), Ok(())) => {}
            (Err(error), Ok(())) => {
                // The commit names a block that is not there: retire it at
                // once (this attempt's id is not reused). If this fails too,
                // readers leave the block out, and a compactor retires it
                // once it is older than the lookback.
                let retire = CommitRecord { id: BlockId::new(), added: Vec::new(), removed: vec![meta.id.clone()] };
                if let Err(retire_error) = self.storage.commit(tenant, &retire).await {
                    warn!(%tenant, block_id = %meta.id, error = %retire_error, "retiring a commit whose block failed, failed");
                }
                return Err(error);
            }
            // A block without its commit is an orphan, swept after the grace period.
            (_, Err(error)) => return Err(error),
        }
        if let Some(hook) = &self.on_commit {
            hook(tenant, &record);
        }
        Ok(())
    }

    /// Checks whether the store accepts writes again.
    async fn probe(&self) {
        let path = Path::from_iter(["_spanlake", "health"]);
        let put = self.storage.put_durable(&path, Bytes::from_static(b"ok"));
        if matches!(tokio::time::timeout(self.config.flush_timeout, put).await, Ok(Ok(()))) {
            info!("object storage is writable again");
            self.healthy.store(true, Ordering::Release);
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Refuses new requests and lets the leaders flush everything buffered;
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

#[cfg(test)]
mod tests;
