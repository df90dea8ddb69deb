//! Opening blocks, for every read path: stored data is input. A block's
//! footer is read once (then cached) and its schema checked against the span
//! schema before any column is read. A block that cannot be read, is missing
//! or does not match is skipped: logged, counted in a metric naming it, and
//! reported to the caller, whose answer then says it is partial. The other
//! blocks still answer. A block found unusable is remembered (blocks are
//! immutable), so later queries skip it without reading or logging it again.
//! A block whose file is missing while its commit is young is left out
//! silently instead: its file may still be on its way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::bloom_filter::Sbbf;
use spanlake_schemas::reader::{ObjectReader, is_not_found};
use spanlake_schemas::schema::{KIND, SPAN_ID, TRACE_ID, check_block_schema, span_schema};
use spanlake_schemas::tag_summary::TagSummary;
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId};
use tracing::warn;

use crate::block_cache::{BlockValues, FooterCache};
use crate::metrics::Metrics;
use crate::trace_index::{TraceIndex, TraceIndexBuilder};

/// A block a query could not use, and why.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    pub(crate) block: String,
    pub(crate) reason: String,
}

/// Why a block was not opened.
#[derive(Debug, Clone)]
pub(crate) enum NotOpened {
    /// Its file is not there yet, and its commit is young enough that the
    /// file may still be on its way (put at the same time as the commit).
    /// Nothing acknowledged is in it yet: it is left out without a word.
    InFlight,
    /// It cannot be used: reported, and the answer is partial.
    Skipped(Skipped),
}

impl From<Skipped> for NotOpened {
    fn from(skipped: Skipped) -> Self {
        Self::Skipped(skipped)
    }
}

/// What a query skipped, for its answer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Partial {
    pub(crate) skipped: Vec<Skipped>,
    /// Other reasons the answer is incomplete (a limit on what it read).
    pub(crate) notes: Vec<String>,
}

impl Partial {
    pub(crate) fn is_partial(&self) -> bool {
        !self.skipped.is_empty() || !self.notes.is_empty()
    }

    /// A message for the answer (Tempo's partial status message).
    pub(crate) fn message(&self) -> Option<String> {
        let skipped = self.skipped.first().map(|first| {
            format!(
                "{} block(s) could not be read and were skipped; the answer may be incomplete (first: {}: {})",
                self.skipped.len(),
                first.block,
                first.reason
            )
        });
        let parts: Vec<String> = skipped.into_iter().chain(self.notes.iter().cloned()).collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    pub(crate) fn extend(&mut self, other: Partial) {
        for skipped in other.skipped {
            if !self.skipped.iter().any(|s| s.block == skipped.block) {
                self.skipped.push(skipped);
            }
        }
        self.notes.extend(other.notes);
    }
}

/// A session config extension: the spans tables of the session read only
/// these blocks (of those their filters admit).
#[derive(Debug, Default)]
pub(crate) struct OnlyBlocks(pub(crate) std::collections::HashSet<BlockId>);

/// Where the scans of one query's DataFusion session report skipped blocks
/// (a session config extension: [`crate::table::SpansTable`] adds to it).
#[derive(Debug, Default)]
pub(crate) struct SkippedBlocks(Mutex<Partial>);

impl SkippedBlocks {
    pub(crate) fn add(&self, partial: Partial) {
        self.0.lock().expect("skipped-blocks lock").extend(partial);
    }

    /// What the session's scans skipped so far.
    pub(crate) fn get(&self) -> Partial {
        self.0.lock().expect("skipped-blocks lock").clone()
    }
}

/// The response header that carries a partial answer's message (SQL,
/// search): Tempo's search format has no partial status of its own.
pub(crate) const PARTIAL_HEADER: &str = "x-spanlake-partial";

/// Parsed tag summaries kept, by block (each at most `MAX_SUMMARY_BYTES`
/// of text, usually a few KiB).
const SUMMARIES_KEPT: usize = 16_384;
/// Bytes of bloom filters kept (a few KiB to 1 MiB per row group, by its
/// distinct trace ids): about 10k blocks as ingested.
const BLOOM_BYTES_KEPT: usize = 128 << 20;
/// Bytes of trace indexes kept (20 bytes per trace: 10M spans of traces of
/// about 13 spans take 15 MiB).
const TRACE_INDEX_BYTES_KEPT: usize = 128 << 20;
/// Rows per batch when a block's key columns are read for its trace index.
const INDEX_BATCH_ROWS: usize = 65_536;
/// Footers (or other per-block reads) a query opens at once. Opening every
/// block in range at once put one read per block in flight: a query over
/// 100 small blocks started a blocking thread per local read, and each
/// thread's allocator heap kept its own pages (peak RSS 365–880 MiB from
/// run to run for the same fan-out).
pub(crate) const OPEN_AT_ONCE: usize = 16;

/// The answers of `reads`, [`OPEN_AT_ONCE`] running at a time, in order.
pub(crate) async fn each_bounded<R>(reads: impl IntoIterator<Item = impl std::future::Future<Output = R>>) -> Vec<R> {
    use futures::StreamExt;
    // Collected first: a stream holding the caller's closure is not `Send`
    // for the compiler (rust-lang/rust#102211). A future does no work before
    // it is polled, so building them all reads nothing.
    let reads: Vec<_> = reads.into_iter().collect();
    futures::stream::iter(reads).buffered(OPEN_AT_ONCE).collect().await
}

/// The block opener of one querier.
#[derive(Debug)]
pub(crate) struct Blocks {
    storage: Storage,
    footers: FooterCache,
    metrics: Arc<Metrics>,
    /// Blocks found unusable, with why: blocks are immutable, so they are
    /// not read (or logged) again.
    bad: Mutex<HashMap<BlockId, String>>,
    /// Parsed tag summaries of blocks (None: the block has none), oldest
    /// first out, bounded like the footers they come from.
    summaries: BlockValues<Option<Arc<TagSummary>>>,
    /// Bloom filters of blocks' trace ids, by row group, read once: a trace
    /// lookup checks every block in range, so reading them each time costs
    /// a request per block.
    blooms: BlockValues<Option<Arc<Sbbf>>, (BlockId, usize)>,
    /// Where each trace lies in blocks, read once (see [`crate::trace_index`]).
    /// (None: too many traces to index.)
    trace_indexes: BlockValues<Option<Arc<TraceIndex>>>,
    /// How young a missing block must be to count as still being written
    /// (the commit lookback: no put outlives it).
    in_flight: std::time::Duration,
}

impl Blocks {
    pub(crate) fn new(
        storage: Storage,
        footers: FooterCache,
        metrics: Arc<Metrics>,
        in_flight: std::time::Duration,
    ) -> Self {
        Self {
            storage,
            footers,
            metrics,
            bad: Mutex::new(HashMap::new()),
            summaries: BlockValues::new(SUMMARIES_KEPT),
            blooms: BlockValues::new(BLOOM_BYTES_KEPT),
            trace_indexes: BlockValues::new(TRACE_INDEX_BYTES_KEPT),
            in_flight,
        }
    }

    /// The bloom filter of `column` in one row group of the block (`None`:
    /// it has none), read once.
    pub(crate) async fn bloom_filter(
        &self,
        meta: &BlockMeta,
        builder: &mut ParquetRecordBatchStreamBuilder<ObjectReader>,
        row_group: usize,
        column: usize,
    ) -> parquet::errors::Result<Option<Arc<Sbbf>>> {
        let key = (meta.id.clone(), row_group);
        if let Some(found) = self.blooms.get(&key) {
            return Ok(found);
        }
        let filter = builder.get_row_group_column_bloom_filter(row_group, column).await?.map(Arc::new);
        let bytes = filter.as_ref().map_or(1, |f| f.num_blocks() * 32);
        self.blooms.insert_weighing(&key, filter.clone(), bytes);
        Ok(filter)
    }

    /// The block's trace index, read once from its key columns (None: the
    /// block holds too many traces to index).
    pub(crate) async fn trace_index(
        &self,
        tenant: &TenantId,
        meta: &BlockMeta,
    ) -> Result<Option<Arc<TraceIndex>>, NotOpened> {
        if let Some(found) = self.trace_indexes.get(&meta.id) {
            return Ok(found);
        }
        let footer = self.open(tenant, meta).await?;
        let read = async {
            let schema = span_schema();
            let columns = [TRACE_ID, SPAN_ID, KIND].map(|name| schema.index_of(name).expect("span schema column"));
            let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(
                ObjectReader::block(&self.storage, tenant, meta),
                footer,
            );
            let mask = ProjectionMask::roots(builder.parquet_schema(), columns);
            let mut stream = builder.with_projection(mask).with_batch_size(INDEX_BATCH_ROWS).build()?;
            let mut index = TraceIndexBuilder::default();
            while let Some(batch) = stream.try_next().await? {
                index.push(&batch)?;
                if index.too_large() {
                    return Ok(None);
                }
            }
            Ok::<_, parquet::errors::ParquetError>(Some(index.finish()))
        };
        match read.await {
            Ok(index) => {
                let index = index.map(Arc::new);
                let bytes = index.as_ref().map_or(1, |i| i.bytes());
                self.trace_indexes.insert_weighing(&meta.id, index.clone(), bytes);
                Ok(index)
            }
            Err(error) if is_not_found(&error) && meta.id.may_be_in_flight(self.in_flight) => Err(NotOpened::InFlight),
            Err(error) => Err(self.skip(tenant, meta, format!("unreadable: {error}")).into()),
        }
    }

    /// The trace indexes of `metas`, read `parallelism` at a time on the
    /// current runtime (None: one could not be read or indexed).
    pub(crate) async fn trace_indexes(
        self: &Arc<Self>,
        tenant: &TenantId,
        metas: &[BlockMeta],
        parallelism: usize,
    ) -> Option<Vec<Arc<TraceIndex>>> {
        let mut found: Vec<Option<Arc<TraceIndex>>> = vec![None; metas.len()];
        // Aborted with the query: dropping the set aborts its tasks.
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0;
        loop {
            while tasks.len() < parallelism.max(1) && next < metas.len() {
                let (blocks, tenant, meta) = (Arc::clone(self), tenant.clone(), metas[next].clone());
                let at = next;
                tasks.spawn(async move { (at, blocks.trace_index(&tenant, &meta).await) });
                next += 1;
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok((at, Ok(Some(index))))) => found[at] = Some(index),
                Some(Ok((_, Ok(None) | Err(_))) | Err(_)) => return None,
            }
        }
        found.into_iter().collect()
    }

    /// The block's tag summary (`None`: written without one), parsed once.
    pub(crate) async fn summary(
        &self,
        tenant: &TenantId,
        meta: &BlockMeta,
    ) -> Result<Option<Arc<TagSummary>>, NotOpened> {
        let footer = self.open(tenant, meta).await?;
        if let Some(found) = self.summaries.get(&meta.id) {
            return Ok(found);
        }
        let parsed = TagSummary::from_footer(footer.metadata().file_metadata()).map(Arc::new);
        self.summaries.insert(&meta.id, parsed.clone());
        Ok(parsed)
    }

    /// The block's footer, checked: it reads and it holds the span schema.
    pub(crate) async fn open(&self, tenant: &TenantId, meta: &BlockMeta) -> Result<ArrowReaderMetadata, NotOpened> {
        if let Some(reason) = self.bad.lock().expect("bad-block lock").get(&meta.id) {
            self.metrics.block_skipped(tenant, &meta.id.to_string());
            return Err(Skipped { block: meta.id.to_string(), reason: reason.clone() }.into());
        }
        let opened = match self.footers.get(&self.storage, tenant, meta).await {
            Ok(footer) => check_block_schema(footer.schema()).map(|()| footer),
            Err(error) if is_not_found(&error) && meta.id.may_be_in_flight(self.in_flight) => {
                return Err(NotOpened::InFlight);
            }
            Err(error) => Err(format!("unreadable: {error}")),
        };
        opened.map_err(|reason| self.skip(tenant, meta, reason).into())
    }

    /// Reports a block a query could not use.
    pub(crate) fn skip(&self, tenant: &TenantId, meta: &BlockMeta, reason: String) -> Skipped {
        warn!(%tenant, block_id = %meta.id, %reason, "skipping a block that cannot be used");
        self.bad.lock().expect("bad-block lock").insert(meta.id.clone(), reason.clone());
        self.metrics.block_skipped(tenant, &meta.id.to_string());
        Skipped { block: meta.id.to_string(), reason }
    }

    /// The blocks of `metas` that open, in order, and what was skipped.
    pub(crate) async fn usable(&self, tenant: &TenantId, metas: Vec<BlockMeta>) -> (Vec<BlockMeta>, Partial) {
        let (usable, partial) = self.opened(tenant, metas).await;
        (usable.into_iter().map(|(meta, _)| meta).collect(), partial)
    }

    /// The same, each with its footer.
    pub(crate) async fn opened(
        &self,
        tenant: &TenantId,
        metas: Vec<BlockMeta>,
    ) -> (Vec<(BlockMeta, ArrowReaderMetadata)>, Partial) {
        let opened = each_bounded(metas.iter().map(|meta| self.open(tenant, meta))).await;
        let mut partial = Partial::default();
        let mut usable = Vec::with_capacity(metas.len());
        for (meta, opened) in metas.into_iter().zip(opened) {
            match opened {
                Ok(footer) => usable.push((meta, footer)),
                Err(NotOpened::InFlight) => {}
                Err(NotOpened::Skipped(skipped)) => partial.skipped.push(skipped),
            }
        }
        (usable, partial)
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }
}

/// Shared by the querier and its table providers.
pub(crate) type SharedBlocks = Arc<Blocks>;
