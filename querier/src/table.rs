//! The `spans` table of one tenant, as a DataFusion `TableProvider`.
//!
//! Pruning happens at three levels:
//! 1. blocks: the catalog's time range and trace-id range per block, from
//!    filters on `start_time`, `end_time` and `trace_id` (no I/O);
//! 2. row groups and pages: DataFusion's Parquet source with the pushed-down
//!    predicate (statistics, page index, bloom filter on `trace_id`);
//! 3. rows: the predicate evaluated inside the Parquet decoder.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use parquet::arrow::arrow_reader::RowSelection;
use spanlake_schemas::schema::{END_TIME, KIND, SPAN_ID, START_TIME, TRACE_ID, span_schema};
use spanlake_schemas::{BlockMeta, Storage, TenantId};

use spanlake_schemas::Catalog;

use crate::blocks::{OnlyBlocks, SharedBlocks, SkippedBlocks};
use crate::dedup::DedupExec;
use crate::trace_index::{TraceIndex, rows_to_merge, split};

/// Blocks are split into byte ranges no smaller than this for parallel reads.
const MIN_RANGE_BYTES: u64 = 8 << 20;

/// The URL under which the querier's object store is registered with DataFusion.
pub(crate) const STORE_URL: &str = "spanlake://blocks/";

/// The `spans` table's schema: the block schema, with its top-level string
/// columns read as views (`Utf8View`) rather than copied into one buffer.
///
/// A view of a short value (service names, kinds, status codes: 12 bytes
/// or fewer) holds the value itself, and a longer one points into the
/// Parquet dictionary page it came from, so decoding copies no string bytes,
/// and filters and groups compare 16-byte views. DataFusion's own default
/// for Parquet, for the same reason. `cargo bench --bench metrics` (10M
/// spans, BENCHMARKS.md): rate by service over compacted blocks 281.5 ms as
/// plain strings, 204.8 ms as views. Nested values (attribute maps, events,
/// links) stay plain strings.
pub(crate) fn table_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let fields: Vec<Field> = span_schema()
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => f.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new_with_metadata(fields, span_schema().metadata().clone()))
    });
    Arc::clone(&SCHEMA)
}

/// Block-level bounds derived from a query's filters.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct BlockBounds {
    /// Spans must start at or after / at or before (Unix ns).
    pub(crate) start_min: Option<i64>,
    pub(crate) start_max: Option<i64>,
    pub(crate) end_min: Option<i64>,
    /// One of these trace ids (None: any).
    pub(crate) trace_ids: Option<Vec<[u8; 16]>>,
    /// Spans start at one of these times (None: any).
    pub(crate) starts: Option<Vec<i64>>,
}

impl BlockBounds {
    pub(crate) fn from_filters(filters: &[Expr]) -> Self {
        let mut bounds = Self::default();
        for filter in filters {
            bounds.add(filter);
        }
        bounds
    }

    fn add(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.add(left);
                self.add(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => (c.name.as_str(), *op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) => match op.swap() {
                        Some(op) => (c.name.as_str(), op, v),
                        None => return,
                    },
                    _ => return,
                };
                match (column, op) {
                    (START_TIME, Operator::GtEq | Operator::Gt) => self.start_min = max(self.start_min, nanos(value)),
                    (START_TIME, Operator::LtEq | Operator::Lt) => self.start_max = min(self.start_max, nanos(value)),
                    (END_TIME, Operator::GtEq | Operator::Gt) => self.end_min = max(self.end_min, nanos(value)),
                    (TRACE_ID, Operator::Eq) => {
                        if let Some(id) = trace_id(value) {
                            self.trace_ids = Some(vec![id]);
                        }
                    }
                    _ => {}
                }
            }
            Expr::InList(list) if !list.negated => {
                if let Expr::Column(c) = list.expr.as_ref()
                    && c.name == START_TIME
                {
                    let starts: Option<Vec<i64>> = list
                        .list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => nanos(v),
                            _ => None,
                        })
                        .collect();
                    if let Some(starts) = starts {
                        self.starts = Some(starts);
                    }
                }
                if let Expr::Column(c) = list.expr.as_ref()
                    && c.name == TRACE_ID
                {
                    let ids: Option<Vec<_>> = list
                        .list
                        .iter()
                        .map(|e| match e {
                            Expr::Literal(v, _) => trace_id(v),
                            _ => None,
                        })
                        .collect();
                    if let Some(ids) = ids {
                        self.trace_ids = Some(ids);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether `block` may hold a span within these bounds.
    pub(crate) fn admits(&self, block: &BlockMeta) -> bool {
        // A block's spans start in [min_time, …] and end by max_time.
        self.start_min.is_none_or(|t| block.max_time_unix_nano >= t)
            && self.start_max.is_none_or(|t| block.min_time_unix_nano <= t)
            && self.end_min.is_none_or(|t| block.max_time_unix_nano >= t)
            && self.trace_ids.as_ref().is_none_or(|ids| ids.iter().any(|id| block.may_contain_trace(id)))
            && self.starts.as_ref().is_none_or(|starts| {
                starts.iter().any(|t| (block.min_time_unix_nano..=block.max_time_unix_nano).contains(t))
            })
    }
}

fn max(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn trace_id(value: &ScalarValue) -> Option<[u8; 16]> {
    match value {
        ScalarValue::FixedSizeBinary(16, Some(bytes))
        | ScalarValue::Binary(Some(bytes))
        | ScalarValue::LargeBinary(Some(bytes))
        | ScalarValue::BinaryView(Some(bytes)) => bytes.as_slice().try_into().ok(),
        _ => None,
    }
}

/// One tenant's spans.
#[derive(Debug)]
pub(crate) struct SpansTable {
    catalog: Arc<Catalog>,
    blocks: SharedBlocks,
    tenant: TenantId,
    /// Off only to measure what pruning buys.
    pruning: bool,
    /// Whether a span stored twice is read once ([`Copies::Once`]) or as stored.
    copies: Copies,
}

/// How a table reads a span stored in more than one block (a retried
/// export, before compaction merges them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copies {
    /// Once: blocks that can share a span are merged in trace order and the
    /// second copy dropped (the `spans` table SQL users see).
    Once,
    /// As stored, for readers that de-duplicate themselves (search) or need
    /// no counts (tag values); every block read in parallel.
    AsStored,
}

impl SpansTable {
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        blocks: SharedBlocks,
        tenant: TenantId,
        pruning: bool,
        copies: Copies,
    ) -> Self {
        Self { catalog, blocks, tenant, pruning, copies }
    }

    fn file(&self, piece: &Piece) -> PartitionedFile {
        let file = PartitionedFile::new(
            Storage::block_path(&self.tenant, &piece.block.id).to_string(),
            piece.block.size_bytes,
        );
        match &piece.rows {
            Some(rows) => file.with_extension(ParquetRowSelection::new(rows.clone())),
            None => file,
        }
    }

    /// Splits each group of blocks that can share spans into the rows of
    /// traces that lie in one block alone, with no span twice (read in
    /// parallel, appended to `parallel`), and the rest (merged, returned).
    /// A group whose trace indexes cannot be read is merged whole.
    async fn split_by_trace(&self, group: Vec<BlockMeta>, parallelism: usize, parallel: &mut Vec<Piece>) -> Vec<Piece> {
        let whole = |group: Vec<BlockMeta>| group.into_iter().map(Piece::whole).collect();
        let Some(indexes) = self.blocks.trace_indexes(&self.tenant, &group, parallelism).await else {
            return whole(group);
        };
        let refs: Vec<&TraceIndex> = indexes.iter().map(Arc::as_ref).collect();
        let mut merged = Vec::new();
        for ((block, index), ranges) in group.into_iter().zip(&indexes).zip(rows_to_merge(&refs)) {
            let parts = split(index, &ranges);
            let bytes = |rows: u32| block.size_bytes * u64::from(rows) / u64::from(index.rows().max(1));
            if let Some(rows) = parts.alone {
                let bytes = bytes(parts.alone_rows);
                parallel.push(Piece { rows: rows.selection(), bytes, block: block.clone() });
            }
            if let Some(rows) = parts.merged {
                let bytes = bytes(index.rows() - parts.alone_rows);
                merged.push(Piece { rows: rows.selection(), bytes, block });
            }
        }
        merged
    }

    /// `pieces` read in parallel, spread over `partitions`.
    fn parallel_scan(
        &self,
        source: &Arc<ParquetSource>,
        pieces: &[Piece],
        partitions: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Every partition gets about the same bytes: a large block (a
        // compacted one) is read in byte ranges, each holding the row groups
        // that start in it, by several partitions.
        let total: u64 = pieces.iter().map(|p| p.bytes).sum();
        // Pieces of at most a quarter of a partition's share: few large
        // blocks still spread evenly.
        let share = (total / (partitions.max(1) as u64 * 4)).max(MIN_RANGE_BYTES);
        let mut files: Vec<(PartitionedFile, u64)> = Vec::new();
        for piece in pieces {
            let size = piece.block.size_bytes;
            let ranges = piece.bytes.div_ceil(share).max(1);
            if ranges == 1 {
                files.push((self.file(piece), piece.bytes));
                continue;
            }
            let step = size.div_ceil(ranges);
            for start in (0..size).step_by(step as usize) {
                let end = (start + step).min(size);
                files.push((self.file(piece).with_range(start as i64, end as i64), piece.bytes / ranges));
            }
        }
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions.min(files.len()).max(1)];
        files.sort_by_key(|(_, bytes)| std::cmp::Reverse(*bytes));
        for (file, bytes) in files {
            let lightest = groups.iter_mut().min_by_key(|(load, _)| *load).expect("at least one group");
            lightest.0 += bytes;
            lightest.1.push(file);
        }
        let groups: Vec<Vec<PartitionedFile>> = groups.into_iter().map(|(_, files)| files).collect();
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::clone(source) as _)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }

    /// `pieces` merged in trace-id order, each span once, then `projection`.
    fn deduplicated_scan(
        &self,
        source: &Arc<ParquetSource>,
        pieces: &[Piece],
        projection: Option<&Vec<usize>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = table_schema();
        let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut read = wanted.clone();
        let mut key = [0usize; 3];
        for (slot, name) in key.iter_mut().zip([TRACE_ID, SPAN_ID, KIND]) {
            let index = schema.index_of(name)?;
            *slot = match read.iter().position(|i| *i == index) {
                Some(at) => at,
                None => {
                    read.push(index);
                    read.len() - 1
                }
            };
        }
        let by_trace = |column: usize, name: &str| {
            LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(Column::new(name, column)))])
                .ok_or_else(|| DataFusionError::Internal("empty ordering".into()))
        };
        // Every block its own partition, each sorted by trace id; merged into one.
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::clone(source) as _)
            .with_file_groups(pieces.iter().map(|p| FileGroup::new(vec![self.file(p)])).collect())
            .with_output_ordering(vec![by_trace(schema.index_of(TRACE_ID)?, TRACE_ID)?])
            .with_projection_indices(Some(read.clone()))?
            .build();
        let ordering = by_trace(key[0], TRACE_ID)?;
        let merged = Arc::new(SortPreservingMergeExec::new(ordering.clone(), DataSourceExec::from_data_source(config)));
        let once: Arc<dyn ExecutionPlan> = Arc::new(DedupExec::new(merged, ordering, key));
        if read.len() == wanted.len() {
            return Ok(once);
        }
        let columns: Vec<(Arc<dyn PhysicalExpr>, String)> = wanted
            .iter()
            .enumerate()
            .map(|(at, index)| {
                let name = schema.field(*index).name().clone();
                (Arc::new(Column::new(&name, at)) as Arc<dyn PhysicalExpr>, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(columns, once)?))
    }
}

/// Rows of one block a scan reads.
#[derive(Debug, Clone)]
struct Piece {
    block: BlockMeta,
    /// Which rows (None: all).
    rows: Option<RowSelection>,
    /// About how many bytes of the block those rows take.
    bytes: u64,
}

impl Piece {
    fn whole(block: BlockMeta) -> Self {
        Self { bytes: block.size_bytes, rows: None, block }
    }
}

/// Splits blocks into those that can share no span with another (a
/// compacted block, already de-duplicated, whose time range overlaps no
/// other's) and groups of blocks that can (overlapping time ranges, or one
/// block as ingested).
fn copy_groups(mut blocks: Vec<BlockMeta>) -> (Vec<BlockMeta>, Vec<Vec<BlockMeta>>) {
    blocks.sort_by_key(|b| (b.min_time_unix_nano, b.max_time_unix_nano));
    let mut groups: Vec<(i64, Vec<BlockMeta>)> = Vec::new();
    for block in blocks {
        match groups.last_mut() {
            Some((end, group)) if block.min_time_unix_nano <= *end => {
                *end = (*end).max(block.max_time_unix_nano);
                group.push(block);
            }
            _ => groups.push((block.max_time_unix_nano, vec![block])),
        }
    }
    let mut alone = Vec::new();
    let mut shared = Vec::new();
    for (_, group) in groups {
        match group.as_slice() {
            [block] if block.compaction_level > 0 => alone.extend(group),
            _ => shared.push(group),
        }
    }
    (alone, shared)
}

/// Whether to evaluate the filters while decoding (Parquet's row filter),
/// decoding the other columns only for the rows that pass.
///
/// That pays off when it skips decoding what is costly: attribute maps,
/// events, links (nested columns), or every column but the few rows of a
/// lookup by trace id or by a list of start times. Over flat columns alone
/// it costs more than it saves:
/// each filter's result becomes a row selection that every other column is
/// then decoded through, a fine-grained one when the filter matches every
/// few rows (`kind = server`). Measured with the metrics bench: 1.19 s
/// against 0.91 s for quantiles of server spans by service over 10M spans,
/// and 6.1 s against 1.2 s the other way for errors by route (an attribute
/// map read only for root spans).
fn late_materialization_pays(schema: &SchemaRef, projection: Option<&Vec<usize>>, bounds: &BlockBounds) -> bool {
    let nested = |i: &usize| schema.field(*i).data_type().is_nested();
    bounds.trace_ids.is_some() || bounds.starts.is_some() || projection.is_none_or(|columns| columns.iter().any(nested))
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        table_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bounds = if self.pruning { BlockBounds::from_filters(filters) } else { BlockBounds::default() };
        let only = state.config().get_extension::<OnlyBlocks>();
        let blocks = self
            .catalog
            .blocks(&self.tenant, |b| bounds.admits(b) && only.as_ref().is_none_or(|o| o.0.contains(&b.id)));
        // Blocks that cannot be read, or are not of the span schema, are skipped (and reported).
        let (blocks, skipped) = self.blocks.usable(&self.tenant, blocks).await;
        if let Some(sink) = state.config().get_extension::<SkippedBlocks>() {
            sink.add(skipped);
        }
        let schema = table_schema();
        if blocks.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let mut source = ParquetSource::new(schema.clone());
        if self.pruning {
            source = source
                .with_enable_page_index(true)
                .with_bloom_filter_on_read(true)
                .with_pushdown_filters(late_materialization_pays(&schema, projection, &bounds));
            if let Some(predicate) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
        } else {
            source = source.with_enable_page_index(false).with_bloom_filter_on_read(false);
        }
        let source = Arc::new(source);
        let partitions = state.config().target_partitions().max(1);
        if self.copies == Copies::AsStored {
            let pieces: Vec<Piece> = blocks.into_iter().map(Piece::whole).collect();
            return self.parallel_scan(&source, &pieces, partitions, projection, limit);
        }
        let (alone, shared) = copy_groups(blocks);
        let mut parallel: Vec<Piece> = alone.into_iter().map(Piece::whole).collect();
        let mut merges: Vec<Vec<Piece>> = Vec::with_capacity(shared.len());
        for group in shared {
            // A lookup by trace id, or a limit, reads few rows: merging them
            // as they come costs less than indexing every block in range.
            if bounds.trace_ids.is_some() || limit.is_some() {
                merges.push(group.into_iter().map(Piece::whole).collect());
                continue;
            }
            let merged = self.split_by_trace(group, partitions, &mut parallel).await;
            if !merged.is_empty() {
                merges.push(merged);
            }
        }
        let mut plans = Vec::with_capacity(merges.len() + 1);
        if !parallel.is_empty() {
            plans.push(self.parallel_scan(&source, &parallel, partitions, projection, limit)?);
        }
        for pieces in &merges {
            plans.push(self.deduplicated_scan(&source, pieces, projection)?);
        }
        if plans.len() == 1 {
            return Ok(plans.remove(0));
        }
        UnionExec::try_new(plans)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn block(min_time: i64, max_time: i64) -> BlockMeta {
        BlockMeta {
            id: spanlake_schemas::block::BlockId::new(),
            min_time_unix_nano: min_time,
            max_time_unix_nano: max_time,
            min_trace_id: "00".repeat(16),
            max_trace_id: "ff".repeat(16),
            span_count: 1,
            size_bytes: 1,
            compaction_level: 0,
            sources: Vec::new(),
            trace_count: 1,
            ingested_unix_nano: 0,
        }
    }

    #[test]
    fn a_list_of_start_times_admits_only_blocks_that_span_one() {
        let ts = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        let bounds = BlockBounds::from_filters(&[col(START_TIME).in_list(vec![ts(15), ts(42)], false)]);
        assert!(bounds.admits(&block(10, 20)));
        assert!(bounds.admits(&block(40, 50)));
        assert!(!bounds.admits(&block(21, 39)));
        assert!(!bounds.admits(&block(43, 90)));
    }
}
