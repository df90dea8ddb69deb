//! Trace by id: every block that may hold the trace (by the catalog's trace-id
//! range), then inside each block only the row groups whose statistics and
//! bloom filter admit the id, then only the rows that match. Spans found in
//! several blocks (client retries, not yet compacted) are returned once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{AsArray, BooleanArray, FixedSizeBinaryArray, RecordBatch, Scalar};
use futures::TryStreamExt;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use spanlake_schemas::decode::ResourceSpansCollector;
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::schema::{KIND, SPAN_ID, TRACE_ID};
use spanlake_schemas::{BlockMeta, TenantId};

use crate::Querier;
use crate::blocks::{NotOpened, Partial, Skipped};
use crate::error::{QueryError, Result};

/// A trace id from a URL: hex, case-insensitive, up to 32 digits, left-padded
/// to 16 bytes (so `abc` is `00…0abc`, as in Tempo).
pub fn parse_trace_id(hex_id: &str) -> Result<[u8; 16]> {
    let invalid = |reason: &str| QueryError::InvalidTraceId { id: hex_id.to_owned(), reason: reason.to_owned() };
    if hex_id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if hex_id.len() > 32 {
        return Err(invalid("it is longer than 32 hex digits"));
    }
    if !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("it is not hexadecimal"));
    }
    let padded = format!("{hex_id:0>32}");
    let mut id = [0u8; 16];
    hex::decode_to_slice(padded, &mut id).map_err(|_| invalid("it is not hexadecimal"))?;
    Ok(id)
}

/// What a lookup read, for the response metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LookupStats {
    pub(crate) blocks_considered: u64,
    pub(crate) row_groups_read: u64,
    pub(crate) inspected_bytes: u64,
    /// Reading stopped once the rows held passed the read budget: the trace
    /// is larger than the size limit and what was read is a part of it.
    pub(crate) stopped_early: bool,
}

/// Rows of a trace held while reading it, at most: this many times
/// `--max-trace-size`. Decoded rows took 2.3–3.1× their protobuf size in the
/// e2e tests' traces (checked once by hand, not a benchmark); 8 leaves room,
/// and `trace_api` checks that a small trace under a small limit reads whole.
pub(crate) const READ_BUDGET_FACTOR: usize = 8;

/// Finds a trace's spans in `tenant`'s blocks overlapping `[start, end]`
/// (Unix ns). A block that cannot be read is skipped and named in the
/// returned [`Partial`]. Reading stops once the rows held pass
/// [`READ_BUDGET_FACTOR`] × `--max-trace-size` (see
/// [`LookupStats::stopped_early`]).
pub(crate) async fn find_trace(
    querier: &Querier,
    tenant: &TenantId,
    trace_id: [u8; 16],
    range: (i64, i64),
) -> Result<(Vec<ResourceSpans>, LookupStats, Partial)> {
    let budget = ReadBudget {
        left: AtomicUsize::new(querier.config.max_trace_bytes.saturating_mul(READ_BUDGET_FACTOR)),
        exhausted: AtomicBool::new(false),
    };
    let pruning = querier.config.pruning;
    let blocks = querier
        .catalog
        .blocks(tenant, |m| !pruning || (m.may_contain_trace(&trace_id) && m.overlaps(range.0, range.1)));
    let mut stats = LookupStats { blocks_considered: blocks.len() as u64, ..Default::default() };
    let reads = blocks.iter().map(|meta| read_trace_rows(querier, tenant, meta, trace_id, pruning, &budget));
    let results = crate::blocks::each_bounded(reads).await;
    let mut collector = ResourceSpansCollector::default();
    let mut seen = HashSet::new();
    let mut partial = Partial::default();
    for result in results {
        let (batches, row_groups, bytes) = match result {
            Ok(read) => read,
            Err(NotOpened::InFlight) => continue,
            Err(NotOpened::Skipped(skipped)) => {
                partial.skipped.push(skipped);
                continue;
            }
        };
        stats.row_groups_read += row_groups;
        stats.inspected_bytes += bytes;
        for batch in batches {
            // The block's schema was checked when it was opened.
            let column = |name| batch.column_by_name(name).ok_or(QueryError::Internal("a checked column is missing"));
            let span_ids = column(SPAN_ID)?.as_fixed_size_binary();
            let kinds = column(KIND)?.as_string::<i32>();
            collector
                .add_batch(&batch, |row| seen.insert((span_ids.value(row).to_vec(), kinds.value(row).to_owned())))?;
        }
    }
    stats.stopped_early = budget.exhausted.load(Ordering::Relaxed);
    Ok((collector.finish(), stats, partial))
}

/// Bytes of rows the reads of one lookup may still hold, shared by its blocks.
struct ReadBudget {
    left: AtomicUsize,
    exhausted: AtomicBool,
}

impl ReadBudget {
    /// Takes `bytes` for a batch: true if any budget was left (the batch that
    /// crosses the budget is still kept, so a partial trace has spans), and
    /// exhausted from the crossing on.
    fn take(&self, bytes: usize) -> bool {
        let before =
            self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| Some(left.saturating_sub(bytes)));
        let before = before.unwrap_or_default();
        if before < bytes.max(1) {
            // Spans are left unread (or this batch crosses the budget).
            self.exhausted.store(true, Ordering::Relaxed);
        }
        before > 0
    }
}

/// The rows of one block with `trace_id`, and how many row groups and bytes
/// were read; a block that fails is skipped.
async fn read_trace_rows(
    querier: &Querier,
    tenant: &TenantId,
    meta: &BlockMeta,
    trace_id: [u8; 16],
    pruning: bool,
    budget: &ReadBudget,
) -> Result<(Vec<RecordBatch>, u64, u64), NotOpened> {
    let footer = querier.blocks.open(tenant, meta).await?;
    let skip = |error: parquet::errors::ParquetError| querier.blocks.skip(tenant, meta, format!("unreadable: {error}"));
    let reader = ObjectReader::block(querier.blocks.storage(), tenant, meta);
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer);
    let trace_column = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == TRACE_ID)
        .ok_or_else(|| Skipped { block: meta.id.to_string(), reason: "no trace_id column".into() })?;
    let mut row_groups = Vec::new();
    let mut bytes = 0;
    let metadata = Arc::clone(builder.metadata());
    for (index, rg) in metadata.row_groups().iter().enumerate() {
        let stats = rg.column(trace_column).statistics();
        let in_range = match stats.and_then(|s| Some((s.min_bytes_opt()?, s.max_bytes_opt()?))) {
            Some((min, max)) => min <= &trace_id[..] && &trace_id[..] <= max,
            None => true,
        };
        if pruning && !in_range {
            continue;
        }
        if !pruning {
            bytes += rg.compressed_size() as u64;
            row_groups.push(index);
            continue;
        }
        let bloom = querier.blocks.bloom_filter(meta, &mut builder, index, trace_column).await.map_err(skip)?;
        if bloom.is_some_and(|b| !b.check(&trace_id[..])) {
            continue;
        }
        bytes += rg.compressed_size() as u64;
        row_groups.push(index);
    }
    if row_groups.is_empty() {
        return Ok((Vec::new(), 0, 0));
    }
    let wanted = Scalar::new(FixedSizeBinaryArray::try_from_iter(std::iter::once(trace_id)).expect("16 bytes"));
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [trace_column]);
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| -> arrow::error::Result<BooleanArray> {
        arrow::compute::kernels::cmp::eq(batch.column(0), &wanted)
    });
    let read = row_groups.len() as u64;
    let stream = builder
        .with_row_groups(row_groups)
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .build()
        .map_err(skip)?;
    let mut stream = std::pin::pin!(stream);
    let mut batches = Vec::new();
    while let Some(batch) = stream.try_next().await.map_err(skip)? {
        if batch.num_rows() == 0 {
            continue;
        }
        if !budget.take(crate::memory::batch_bytes(&batch)) {
            break;
        }
        batches.push(batch);
    }
    Ok((batches, read, bytes))
}
