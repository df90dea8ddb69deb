//! What several benchmarks share: loadgen's default workload written as
//! blocks of 100k spans, as a running ingester would have left them.

use rand::SeedableRng;
use rand::rngs::StdRng;
use spanlake::loadgen::Workload;
use spanlake_schemas::block::{BlockId, encode_block};
use spanlake_schemas::encode::{AppendReport, SpanBatchBuilder};
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{Storage, TenantId};

pub(crate) const BLOCK_SPANS: usize = 100_000;
const TRACES_PER_REQUEST: usize = 100;

/// What [`write_workload`] wrote.
pub(crate) struct Written {
    pub(crate) spans: usize,
    pub(crate) blocks: usize,
    pub(crate) bytes: u64,
    /// The first trace id of every request.
    pub(crate) sample_ids: Vec<Vec<u8>>,
}

/// One hour in nanoseconds.
#[allow(dead_code, reason = "each bench links this module; not all of them write the last hour")]
pub(crate) const HOUR_NS: u64 = 3_600_000_000_000;

/// Writes about `target` spans of the workload over the hour that ended a
/// minute ago (past the query APIs' end cutoff), and says so; returns that
/// end (Unix ns) and what was written.
#[allow(dead_code, reason = "each bench links this module; not all of them write the last hour")]
pub(crate) async fn write_last_hour(storage: &Storage, tenant: &TenantId, target: usize) -> (u64, Written) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let end = now - 60_000_000_000;
    let started = std::time::Instant::now();
    let written = write_workload(storage, tenant, target, end, HOUR_NS).await;
    println!(
        "data: {} spans ({} traces) in {} blocks ({:.0} MB), written in {:.0}s",
        written.spans,
        written.sample_ids.len() * TRACES_PER_REQUEST,
        written.blocks,
        written.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    (end, written)
}

/// Writes about `target` spans of loadgen's default workload (seed 7),
/// traces spread evenly over the `window` ns before `end`, committed in
/// blocks of [`BLOCK_SPANS`].
pub(crate) async fn write_workload(
    storage: &Storage,
    tenant: &TenantId,
    target: usize,
    end: u64,
    window: u64,
) -> Written {
    let workload = Workload::default();
    let mut rng = StdRng::seed_from_u64(7);
    let approx_traces = target / 13;
    let (mut spans, mut blocks, mut bytes, mut traces) = (0usize, 0usize, 0u64, 0usize);
    let mut sample_ids = Vec::new();
    let mut pending = Vec::new();
    let mut pending_spans = 0;
    while spans < target {
        // In u128: at 100M spans the product passes u64.
        let offset = u128::from(traces as u64) * u128::from(window) / approx_traces.max(1) as u128;
        let at = end - window + (offset as u64).min(window);
        let request = workload.request(&mut rng, TRACES_PER_REQUEST, at);
        traces += TRACES_PER_REQUEST;
        if let Some(span) =
            request.resource_spans.first().and_then(|r| r.scope_spans.first()).and_then(|s| s.spans.first())
        {
            sample_ids.push(span.trace_id.clone());
        }
        let mut builder = SpanBatchBuilder::new(64 << 10);
        builder.append_resource_spans(&request.resource_spans, &mut AppendReport::default());
        spans += builder.len();
        pending_spans += builder.len();
        pending.push(builder.finish());
        if pending_spans >= BLOCK_SPANS || spans >= target {
            let batches = std::mem::take(&mut pending);
            pending_spans = 0;
            let block =
                tokio::task::spawn_blocking(move || encode_block(&batches, BlockId::new()).unwrap()).await.unwrap();
            bytes += block.meta.size_bytes;
            storage.put_block(tenant, &block.meta, block.parquet).await.unwrap();
            storage
                .commit(tenant, &CommitRecord { id: BlockId::new(), added: vec![block.meta], removed: vec![] })
                .await
                .unwrap();
            blocks += 1;
        }
    }
    Written { spans, blocks, bytes, sample_ids }
}
