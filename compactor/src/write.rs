//! Writing a merged block: read the sources as sorted streams, merge them,
//! and encode the result with the same Parquet layout as an ingester block,
//! streamed to the object store (never the whole block in memory).

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use spanlake_schemas::block::writer_properties;
use spanlake_schemas::reader::{ObjectReader, is_not_found};
use spanlake_schemas::schema::{END_TIME, START_TIME, TRACE_ID, check_block_schema};
use spanlake_schemas::tag_summary::TagSummaryBuilder;
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId, span_schema};

use crate::error::{Error, Result};
use spanlake_schemas::merge::{BatchSink, MergeStats, SortedInput, merge_sorted};

/// Parquet key-value metadata naming a merged block's sources.
pub const SOURCES_KEY: &str = "spanlake.sources";

/// Rows per row group (as ingester blocks).
const ROW_GROUP_ROWS: u64 = 128 * 1024;

/// A merged block, uploaded and durable but not yet committed.
#[derive(Debug)]
pub struct Merged {
    pub meta: BlockMeta,
    pub stats: MergeStats,
    pub bytes_read: u64,
}

/// Merges `inputs` (oldest first: of duplicate spans, the oldest block's copy
/// is kept) into a new block of `level`, uploaded under `id`.
pub async fn merge_blocks(
    storage: &Storage,
    tenant: &TenantId,
    inputs: &[BlockMeta],
    level: u32,
    id: BlockId,
    batch_rows: usize,
) -> Result<Merged> {
    let mut streams: Vec<SortedInput> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let reader = ObjectReader::block(storage, tenant, input);
        let unusable =
            |reason: String| Error::UnusableBlock { tenant: tenant.clone(), block_id: input.id.clone(), reason };
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(|source| match source {
            source if is_not_found(&source) => {
                Error::MissingBlock { tenant: tenant.clone(), block_id: input.id.clone() }
            }
            // The store failed: worth retrying. Anything else: the object is not a Parquet block.
            ParquetError::External(_) => {
                Error::ReadBlock { tenant: tenant.clone(), block_id: input.id.clone(), source }
            }
            other => unusable(format!("not a readable Parquet file: {other}")),
        })?;
        check_block_schema(builder.schema()).map_err(unusable)?;
        let stream = builder.with_batch_size(batch_rows).build().map_err(|source| Error::ReadBlock {
            tenant: tenant.clone(),
            block_id: input.id.clone(),
            source,
        })?;
        streams.push(stream.map_err(|e| ArrowError::ExternalError(Box::new(e))).boxed());
    }
    let path = Storage::block_path(tenant, &id);
    let mut sink = BlockSink::new(storage, &path, inputs, bloom_ndv(inputs)).map_err(|source| Error::WriteBlock {
        tenant: tenant.clone(),
        block_id: id.clone(),
        source,
    })?;
    let merged = merge_sorted(streams, batch_rows, &mut sink).await;
    let stats = match merged {
        Ok(stats) => stats,
        Err(source) => {
            sink.abort().await;
            return Err(Error::Merge { tenant: tenant.clone(), block_id: id, source });
        }
    };
    let (mut meta, size) = sink.finish(id.clone()).await.map_err(|source| Error::WriteBlock {
        tenant: tenant.clone(),
        block_id: id,
        source,
    })?;
    storage.sync(&path).await?;
    meta.size_bytes = size;
    meta.compaction_level = level;
    meta.sources = inputs.iter().map(|b| b.id.clone()).collect();
    meta.ingested_unix_nano = inputs.iter().map(BlockMeta::ingested_unix_nanos).max().unwrap_or(0);
    let bytes_read = inputs.iter().map(|b| b.size_bytes).sum();
    Ok(Merged { meta, stats, bytes_read })
}

/// Distinct trace ids to size a row group's bloom filter for: a full row
/// group's spans divided by the sources' spans per trace.
fn bloom_ndv(inputs: &[BlockMeta]) -> usize {
    let spans: u64 = inputs.iter().map(|b| b.span_count).sum();
    let traces: u64 = inputs.iter().map(|b| b.trace_count).sum();
    let per_row_group = spans.min(ROW_GROUP_ROWS);
    if traces == 0 || spans == 0 {
        return per_row_group as usize;
    }
    (per_row_group * traces).div_ceil(spans).min(per_row_group) as usize
}

/// Encodes merged batches into the block's Parquet file and gathers its metadata.
struct BlockSink {
    writer: Option<AsyncArrowWriter<BufWriter>>,
    min_time: i64,
    max_time: i64,
    first_trace: Option<[u8; 16]>,
    last_trace: Option<[u8; 16]>,
    rows: u64,
    traces: u64,
    /// The block's tag summary, from the spans it is written with.
    tags: TagSummaryBuilder,
}

impl BlockSink {
    fn new(
        storage: &Storage,
        path: &object_store::path::Path,
        inputs: &[BlockMeta],
        ndv: usize,
    ) -> parquet::errors::Result<Self> {
        let upload = BufWriter::with_capacity(Arc::clone(storage.object_store()), path.clone(), 8 << 20);
        let mut writer = AsyncArrowWriter::try_new(upload, span_schema(), Some(writer_properties(ndv)))?;
        let sources: Vec<&str> = inputs.iter().map(|b| b.id.as_str()).collect();
        writer.append_key_value_metadata(KeyValue::new(SOURCES_KEY.to_owned(), sources.join(",")));
        Ok(Self {
            writer: Some(writer),
            min_time: i64::MAX,
            max_time: i64::MIN,
            first_trace: None,
            last_trace: None,
            rows: 0,
            traces: 0,
            tags: TagSummaryBuilder::default(),
        })
    }

    /// Completes the upload; returns the metadata (size separately).
    async fn finish(mut self, id: BlockId) -> parquet::errors::Result<(BlockMeta, u64)> {
        let mut writer = self.writer.take().expect("finished once");
        writer.append_key_value_metadata(std::mem::take(&mut self.tags).finish().to_footer());
        writer.finish().await?;
        let size = writer.bytes_written() as u64;
        let hex16 = |t: Option<[u8; 16]>| t.map(hex::encode).unwrap_or_default();
        let meta = BlockMeta {
            id,
            min_time_unix_nano: if self.rows == 0 { 0 } else { self.min_time },
            max_time_unix_nano: if self.rows == 0 { 0 } else { self.max_time },
            min_trace_id: hex16(self.first_trace),
            max_trace_id: hex16(self.last_trace),
            span_count: self.rows,
            size_bytes: size,
            compaction_level: 0,
            sources: Vec::new(),
            trace_count: self.traces,
            ingested_unix_nano: 0,
        };
        Ok((meta, size))
    }

    /// Abandons the upload (a multipart upload is aborted, nothing is left visible).
    async fn abort(mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.into_inner().abort().await;
        }
    }
}

impl BatchSink for BlockSink {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ArrowError> {
        let traces = batch.column_by_name(TRACE_ID).expect("span schema").as_fixed_size_binary();
        for row in 0..batch.num_rows() {
            let id: [u8; 16] = traces.value(row).try_into().expect("16-byte trace id");
            if self.last_trace != Some(id) {
                self.traces += 1;
                self.last_trace = Some(id);
            }
            self.first_trace.get_or_insert(id);
        }
        let starts = batch.column_by_name(START_TIME).expect("span schema").as_primitive::<TimestampNanosecondType>();
        let ends = batch.column_by_name(END_TIME).expect("span schema").as_primitive::<TimestampNanosecondType>();
        self.min_time = self.min_time.min(arrow::compute::min(starts).unwrap_or(i64::MAX));
        // A span may end before it starts: the later of the two bounds the block.
        let latest = arrow::compute::max(ends).max(arrow::compute::max(starts));
        self.max_time = self.max_time.max(latest.unwrap_or(i64::MIN));
        self.rows += batch.num_rows() as u64;
        self.tags.add(&batch);
        let writer = self.writer.as_mut().expect("not finished");
        writer.write(&batch).await.map_err(|e| ArrowError::ExternalError(Box::new(e)))
    }
}
