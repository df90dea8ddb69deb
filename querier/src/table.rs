//! The `spans` table of one tenant, as a DataFusion `TableProvider`.
//!
//! Pruning happens at three levels:
//! 1. blocks: the catalog's time range and trace-id range per block, from
//!    filters on `start_time`, `end_time` and `trace_id` (no I/O);
//! 2. row groups and pages: DataFusion's Parquet source with the pushed-down
//!    predicate (statistics, page index, bloom filter on `trace_id`);
//! 3. rows: the predicate evaluated inside the Parquet decoder.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    PagePruningAccessPlanFilter, ParquetAccessPlan, ParquetFileMetrics, ParquetRowSelection, RowGroupAccess,
    RowGroupAccessPlanFilter,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::arrow::arrow_reader::RowSelection;
use parquet::file::metadata::RowGroupMetaData;
use spanlake_schemas::schema::{END_TIME, KIND, SPAN_ID, START_TIME, TRACE_ID, span_schema};
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId};

use spanlake_schemas::Catalog;

use crate::blocks::{OnlyBlocks, SharedBlocks, SkippedBlocks};
use crate::dedup::DedupExec;
use crate::prune_hint::pruning_filter;
use crate::start_window::{StartWindow, window_of};
use crate::trace_index::{TraceIndex, band, rows_to_merge, selection, split};

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
        if let Some(ids) = trace_ids(expr) {
            self.trace_ids = Some(ids);
            return;
        }
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

/// The trace ids `expr` admits when it admits only those: `trace_id = x`,
/// `trace_id IN (x, y, …)`, or these joined by OR (DataFusion rewrites a
/// short IN list so).
fn trace_ids(expr: &Expr) -> Option<Vec<[u8; 16]>> {
    let is_trace_id = |e: &Expr| matches!(e, Expr::Column(c) if c.name == TRACE_ID);
    let literal = |e: &Expr| match e {
        Expr::Literal(v, _) => trace_id(v),
        _ => None,
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            let mut ids = trace_ids(left)?;
            ids.extend(trace_ids(right)?);
            Some(ids)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => match (left.as_ref(), right.as_ref()) {
            (column, value) | (value, column) if is_trace_id(column) => Some(vec![literal(value)?]),
            _ => None,
        },
        Expr::InList(list) if !list.negated && is_trace_id(&list.expr) => list.list.iter().map(literal).collect(),
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

    /// Splits each group of blocks that can share spans into the rows of
    /// traces that lie in one block alone, with no span twice (read in
    /// parallel, appended to `parallel`), and the rest: merged in trace
    /// order, in `bands` groups of disjoint trace-id ranges (fewer when the
    /// group holds fewer traces), each read once by its own merge. A group
    /// whose trace indexes cannot be read, or with a block not sorted by
    /// trace id, is merged whole, as one group.
    async fn split_by_trace(
        &self,
        group: Vec<BlockMeta>,
        parallelism: usize,
        bands: usize,
        parallel: &mut Vec<Piece>,
    ) -> Vec<Vec<Piece>> {
        let whole = |group: Vec<BlockMeta>| vec![group.into_iter().map(Piece::whole).collect()];
        let Some(indexes) = self.blocks.trace_indexes(&self.tenant, &group, parallelism).await else {
            return whole(group);
        };
        let refs: Vec<&TraceIndex> = indexes.iter().map(Arc::as_ref).collect();
        let to_merge = rows_to_merge(&refs, 0, None);
        // Band edges: trace ids evenly spaced among the largest block's
        // traces; one band when a block is not sorted by trace id (its rows
        // cannot be cut by trace, and all of them are merged).
        let sorted = refs.iter().all(|i| i.first_row_from(0).is_some());
        let edges = match refs.iter().max_by_key(|i| i.rows()) {
            Some(largest) if sorted => largest.band_edges(bands),
            _ => Vec::new(),
        };
        let mut merged: Vec<Vec<Piece>> = vec![Vec::new(); edges.len() + 1];
        for ((block, index), ranges) in group.iter().zip(&refs).zip(&to_merge) {
            let rows = index.rows();
            let bytes = |count: u32| block.size_bytes * u64::from(count) / u64::from(rows.max(1));
            let parts = split(index, ranges);
            if let Some(alone) = parts.alone {
                parallel.push(Piece {
                    rows: alone.selection(),
                    bytes: bytes(parts.alone_rows),
                    ..Piece::whole(block.clone())
                });
            }
            if parts.merged.is_none() {
                continue;
            }
            for (at, band_rows) in merged.iter_mut().enumerate() {
                let from = if at == 0 { 0 } else { edges[at - 1] };
                let cut = match edges.is_empty() {
                    true => ranges.clone(),
                    // Every block is sorted here, so the band is known.
                    false => band(index, ranges, from, edges.get(at).copied()).unwrap_or_default(),
                };
                let count: u32 = cut.iter().map(|r| r.end - r.start).sum();
                if count == 0 {
                    continue;
                }
                let rows = (count < rows).then(|| selection(&cut, rows, false));
                band_rows.push(Piece { rows, bytes: bytes(count), ..Piece::whole(block.clone()) });
            }
        }
        merged.retain(|pieces| !pieces.is_empty());
        merged
    }
}

/// The file of `piece`, with its rows and byte range.
fn file(tenant: &TenantId, piece: &Piece) -> PartitionedFile {
    let file = PartitionedFile::new(Storage::block_path(tenant, &piece.block.id).to_string(), piece.block.size_bytes);
    let file = match &piece.range {
        Some(range) => file.with_range(range.start as i64, range.end as i64),
        None => file,
    };
    match &piece.rows {
        Some(rows) => file.with_extension(ParquetRowSelection::new(rows.clone())),
        None => file,
    }
}

/// What one scan reads: pieces read in parallel, and groups of pieces each
/// merged in trace order so that a span stored twice is read once.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Work {
    pub(crate) parallel: Vec<Piece>,
    pub(crate) merges: Vec<Vec<Piece>>,
}

impl Work {
    /// About how many bytes of blocks it reads.
    pub(crate) fn bytes(&self) -> u64 {
        self.parallel.iter().chain(self.merges.iter().flatten()).map(|p| p.bytes).sum()
    }

    /// The plan that reads it, over `partitions` for the parallel pieces,
    /// only the spans that start in `window`: the pieces of blocks across
    /// its edges are filtered by start, the others read as they are.
    pub(crate) fn plan(
        &self,
        tenant: &TenantId,
        source: &Arc<ParquetSource>,
        partitions: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
        window: Option<&StartWindow>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(window) = window else { return self.plan_all(tenant, source, partitions, projection, limit) };
        // A merge reads its pieces together, so it is filtered when one of them must be.
        let (merges_in, merges_across): (Vec<Vec<Piece>>, Vec<Vec<Piece>>) =
            self.merges.iter().cloned().partition(|pieces| pieces.iter().all(|p| p.in_window));
        let (parallel_in, parallel_across) = self.parallel.iter().cloned().partition(|p| p.in_window);
        let inside = Work { parallel: parallel_in, merges: merges_in };
        let across = Work { parallel: parallel_across, merges: merges_across };
        let mut plans = Vec::with_capacity(2);
        if !inside.parallel.is_empty() || !inside.merges.is_empty() {
            plans.push(inside.plan_all(tenant, source, partitions, projection, limit)?);
        }
        if !across.parallel.is_empty() || !across.merges.is_empty() {
            let read = |columns: &Vec<usize>| across.plan_all(tenant, source, partitions, Some(columns), None);
            plans.push(starting_in(window, projection, limit, read)?);
        }
        union_of(plans, projection)
    }

    /// The plan that reads every row of it.
    fn plan_all(
        &self,
        tenant: &TenantId,
        source: &Arc<ParquetSource>,
        partitions: usize,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut plans = Vec::with_capacity(self.merges.len() + 1);
        if !self.parallel.is_empty() {
            plans.push(parallel_scan(tenant, source, &self.parallel, partitions, projection, limit)?);
        }
        for pieces in &self.merges {
            plans.push(deduplicated_scan(tenant, source, pieces, projection)?);
        }
        union_of(plans, projection)
    }
}

/// The rows `read` reads that start in `window`, as `projection`, at most
/// `limit`: read with `start_time` (added when `projection` lacks it),
/// filtered, then projected.
fn starting_in(
    window: &StartWindow,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    read: impl FnOnce(&Vec<usize>) -> Result<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = table_schema();
    let start = schema.index_of(START_TIME)?;
    let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
    let mut columns = wanted.clone();
    let at = read_also(&mut columns, start);
    let time_zone = match schema.field(start).data_type() {
        DataType::Timestamp(_, zone) => zone.clone(),
        other => return Err(DataFusionError::Internal(format!("start_time is {other}, not a timestamp"))),
    };
    let all = read(&columns)?;
    // Projected back to the columns wanted, without `start_time` if it was only read to filter.
    let filter = FilterExecBuilder::new(window.predicate(at, time_zone), all)
        .apply_projection((columns.len() > wanted.len()).then(|| (0..wanted.len()).collect()))?
        .with_fetch(limit)
        .build()?;
    Ok(Arc::new(filter))
}

/// `plans` as one (nothing to read: an empty plan of `projection`).
fn union_of(mut plans: Vec<Arc<dyn ExecutionPlan>>, projection: Option<&Vec<usize>>) -> Result<Arc<dyn ExecutionPlan>> {
    match plans.len() {
        0 => Ok(Arc::new(EmptyExec::new(projected_schema(projection)?))),
        1 => Ok(plans.remove(0)),
        _ => UnionExec::try_new(plans),
    }
}

/// Where column `index` is in `read`, appended when it is not there.
fn read_also(read: &mut Vec<usize>, index: usize) -> usize {
    read.iter().position(|&i| i == index).unwrap_or_else(|| {
        read.push(index);
        read.len() - 1
    })
}

/// The table's schema, projected.
pub(crate) fn projected_schema(projection: Option<&Vec<usize>>) -> Result<SchemaRef> {
    let schema = table_schema();
    Ok(match projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => schema,
    })
}

/// The Parquet source of a scan: pruning by `predicate` (statistics, page
/// index, bloom filters), and the row filter where it pays.
pub(crate) fn parquet_source(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    pruning: bool,
    row_filter: bool,
    predicate: Option<Arc<dyn PhysicalExpr>>,
) -> Result<Arc<ParquetSource>> {
    let mut source = ParquetSource::new(table_schema())
        .with_parquet_file_reader_factory(crate::page_index::WithPageIndex::new(runtime)?);
    if pruning {
        source = source.with_enable_page_index(true).with_bloom_filter_on_read(true).with_pushdown_filters(row_filter);
        if let Some(predicate) = predicate {
            source = source.with_predicate(predicate);
        }
    } else {
        source = source.with_enable_page_index(false).with_bloom_filter_on_read(false);
    }
    Ok(Arc::new(source))
}

/// `pieces` read in parallel, spread over `partitions`.
fn parallel_scan(
    tenant: &TenantId,
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
        let ranges = piece.bytes.div_ceil(share).max(1);
        if ranges == 1 {
            files.push((file(tenant, piece), piece.bytes));
            continue;
        }
        for part in piece.cut(ranges) {
            files.push((file(tenant, &part), part.bytes));
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
    tenant: &TenantId,
    source: &Arc<ParquetSource>,
    pieces: &[Piece],
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = table_schema();
    let wanted: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
    let mut read = wanted.clone();
    let mut key = [0usize; 3];
    for (slot, name) in key.iter_mut().zip([TRACE_ID, SPAN_ID, KIND]) {
        *slot = read_also(&mut read, schema.index_of(name)?);
    }
    let by_trace = |column: usize, name: &str| {
        LexOrdering::new([PhysicalSortExpr::new_default(Arc::new(Column::new(name, column)))])
            .ok_or_else(|| DataFusionError::Internal("empty ordering".into()))
    };
    // Every block its own partition, each sorted by trace id; merged into one.
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::clone(source) as _)
        .with_file_groups(pieces.iter().map(|p| FileGroup::new(vec![file(tenant, p)])).collect())
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

/// Rows of one block a scan reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    pub(crate) block: BlockMeta,
    /// Which rows (None: all).
    pub(crate) rows: Option<RowSelection>,
    /// Only the row groups that start in this byte range (None: all).
    pub(crate) range: Option<std::ops::Range<u64>>,
    /// About how many bytes of the block those rows take.
    pub(crate) bytes: u64,
    /// Whether every span of the block starts in the scan's [`StartWindow`]
    /// (its rows need no filter by start).
    pub(crate) in_window: bool,
}

impl Piece {
    pub(crate) fn whole(block: BlockMeta) -> Self {
        Self { bytes: block.size_bytes, rows: None, range: None, block, in_window: false }
    }

    /// This piece cut into `count` byte ranges of about equal size (fewer
    /// when its range is too short), each holding the row groups that start
    /// in it.
    pub(crate) fn cut(&self, count: u64) -> Vec<Piece> {
        let range = self.range.clone().unwrap_or(0..self.block.size_bytes);
        let step = (range.end - range.start).div_ceil(count.max(1)).max(1);
        let parts = (range.end - range.start).div_ceil(step).max(1);
        (range.start..range.end)
            .step_by(step as usize)
            .map(|start| Piece {
                range: Some(start..(start + step).min(range.end)),
                bytes: self.bytes / parts,
                ..self.clone()
            })
            .collect()
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

    /// Bounds on `start_time` are answered exactly ([`StartWindow`]), and so
    /// is [`prunes_by`](crate::prune_hint::prunes_by), which keeps every
    /// row; every other filter prunes, and DataFusion applies it again.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| match StartWindow::of(filter).is_some() || pruning_filter(filter).is_some() {
                true if self.pruning => TableProviderFilterPushDown::Exact,
                _ => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // A filter that only prunes prunes as the filter it names.
        let filters: Vec<Expr> = filters.iter().map(|f| pruning_filter(f).unwrap_or(f).clone()).collect();
        let filters = filters.as_slice();
        let bounds = if self.pruning { BlockBounds::from_filters(filters) } else { BlockBounds::default() };
        let only = state.config().get_extension::<OnlyBlocks>();
        let blocks = self
            .catalog
            .blocks(&self.tenant, |b| bounds.admits(b) && only.as_ref().is_none_or(|o| o.0.contains(&b.id)));
        // Blocks that cannot be read, or are not of the span schema, are skipped (and reported).
        let (opened, skipped) = self.blocks.opened(&self.tenant, blocks).await;
        if let Some(sink) = state.config().get_extension::<SkippedBlocks>() {
            sink.add(skipped);
        }
        let (blocks, footers): (Vec<BlockMeta>, Vec<ArrowReaderMetadata>) = opened.into_iter().unzip();
        // The blocks every span of which starts in the window (filters on
        // `start_time` are exact, see `supports_filters_pushdown`).
        let window = if self.pruning { window_of(filters) } else { None };
        let in_window: HashSet<BlockId> = match &window {
            Some(window) => blocks
                .iter()
                .zip(&footers)
                .filter(|(_, footer)| window.holds_block(footer))
                .map(|(block, _)| block.id.clone())
                .collect(),
            None => HashSet::new(),
        };
        if blocks.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected_schema(projection)?)));
        }
        let schema = table_schema();
        let row_filter = late_materialization_pays(&schema, projection, &bounds);
        let predicate = match conjunction(filters.to_vec()) {
            Some(predicate) if self.pruning => {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                Some(state.create_physical_expr(predicate, &df_schema)?)
            }
            _ => None,
        };
        let partitions = state.config().target_partitions().max(1);
        // Spread over several queriers only when what the scan may read is
        // large enough: the chunks of the columns it reads in the blocks in
        // range, less the row groups and pages whose statistics rule the
        // filter out.
        let total: u64 = blocks.iter().map(|b| b.size_bytes).sum();
        let reads = state.config().get_extension::<Spread>().filter(|s| total >= s.min_bytes).and_then(|s| {
            let columns = read_columns(&schema, projection, predicate.as_ref());
            let reads = read_bytes(&footers, predicate.as_ref(), &schema, columns.as_ref());
            let spreads = reads >= s.min_bytes;
            tracing::debug!(blocks = blocks.len(), reads, spreads, "a scan's estimated bytes, of the columns it reads");
            spreads.then_some((s, reads))
        });
        let bands = reads.as_ref().map_or(1, |(s, _)| s.bands);
        let mut work = self.work(blocks, &bounds, limit, partitions, bands).await;
        for piece in work.parallel.iter_mut().chain(work.merges.iter_mut().flatten()) {
            piece.in_window = in_window.contains(&piece.block.id);
        }
        if let Some((_, reads)) = reads {
            let scan = ScanSpec {
                tenant: self.tenant.clone(),
                projection: projection.cloned(),
                predicate: predicate.clone(),
                row_filter,
                limit,
                pruning: self.pruning,
                partitions,
                window,
            };
            let scan = crate::distributed::SpansScanExec::try_new(Arc::new(scan), work)?.reading(reads);
            return Ok(Arc::new(scan));
        }
        let source = parquet_source(state.runtime_env(), self.pruning, row_filter, predicate)?;
        work.plan(&self.tenant, &source, partitions, projection, limit, window.as_ref())
    }
}

/// About the bytes of `footers`' blocks that a scan reads: the column
/// chunks of `columns` (of every column when None), in the row groups whose
/// statistics admit `predicate`, in proportion to the rows their pages'
/// statistics (the page index) admit. Every row group when there is no
/// predicate, or it cannot be checked against statistics.
fn read_bytes(
    footers: &[ArrowReaderMetadata],
    predicate: Option<&Arc<dyn PhysicalExpr>>,
    schema: &SchemaRef,
    columns: Option<&HashSet<String>>,
) -> u64 {
    let pruning = predicate.and_then(|predicate| {
        let pruning =
            PruningPredicateBuilder::new().with_file_schema(Arc::clone(schema)).build(Arc::clone(predicate))?;
        Some((pruning, PagePruningAccessPlanFilter::new(predicate, Arc::clone(schema))))
    });
    let metrics = ExecutionPlanMetricsSet::new();
    let file_metrics = ParquetFileMetrics::new(0, "the estimate of a scan's size", &metrics);
    footers
        .iter()
        .map(|footer| {
            let metadata = footer.metadata();
            let groups = metadata.row_groups();
            let parquet_schema = metadata.file_metadata().schema_descr();
            // Whether the scan reads each leaf column, found once per footer.
            let read: Vec<bool> = (0..parquet_schema.num_columns())
                .map(|leaf| columns.is_none_or(|c| c.contains(parquet_schema.get_column_root(leaf).name())))
                .collect();
            let plan = match &pruning {
                None => ParquetAccessPlan::new_all(groups.len()),
                Some((pruning, pages)) => {
                    let mut admitted = RowGroupAccessPlanFilter::new(ParquetAccessPlan::new_all(groups.len()));
                    admitted.prune_by_statistics(schema, parquet_schema, groups, pruning, &file_metrics);
                    pages.prune_plan_with_page_index(admitted.build(), schema, parquet_schema, metadata, &file_metrics)
                }
            };
            let bytes = |(group, access): (&RowGroupMetaData, &RowGroupAccess)| {
                let size: u64 = (group.columns().iter().enumerate())
                    .filter(|(leaf, _)| read.get(*leaf).copied().unwrap_or(true))
                    .map(|(_, chunk)| chunk.compressed_size().max(0) as u64)
                    .sum();
                match access {
                    RowGroupAccess::Skip => 0,
                    RowGroupAccess::Scan => size,
                    RowGroupAccess::Selection(rows) => {
                        let all = group.num_rows().max(1) as u64;
                        (u128::from(size) * rows.row_count() as u128 / u128::from(all)) as u64
                    }
                }
            };
            groups.iter().zip(plan.inner()).map(bytes).sum::<u64>()
        })
        .sum()
}

/// The columns a scan reads: those of `projection` (every one when None)
/// and those `predicate` names.
fn read_columns(
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
    predicate: Option<&Arc<dyn PhysicalExpr>>,
) -> Option<HashSet<String>> {
    let projection = projection?;
    let mut columns: HashSet<String> = projection.iter().map(|&i| schema.field(i).name().clone()).collect();
    if let Some(predicate) = predicate {
        columns.extend(
            datafusion::physical_expr::utils::collect_columns(predicate).into_iter().map(|c| c.name().to_owned()),
        );
    }
    Some(columns)
}

impl SpansTable {
    /// Which pieces of `blocks` the scan reads, and how: see [`Copies`].
    async fn work(
        &self,
        blocks: Vec<BlockMeta>,
        bounds: &BlockBounds,
        limit: Option<usize>,
        partitions: usize,
        bands: usize,
    ) -> Work {
        if self.copies == Copies::AsStored {
            return Work { parallel: blocks.into_iter().map(Piece::whole).collect(), merges: Vec::new() };
        }
        let (alone, shared) = copy_groups(blocks);
        let mut work = Work { parallel: alone.into_iter().map(Piece::whole).collect(), merges: Vec::new() };
        for group in shared {
            // A lookup by trace id, or a limit, reads few rows: merging them
            // as they come costs less than indexing every block in range.
            if bounds.trace_ids.is_some() || limit.is_some() {
                work.merges.push(group.into_iter().map(Piece::whole).collect());
                continue;
            }
            let merged = self.split_by_trace(group, partitions, bands, &mut work.parallel).await;
            work.merges.extend(merged);
        }
        work
    }
}

/// A session that spreads its scans over several queriers: scans of at
/// least `min_bytes` become [`crate::distributed::SpansScanExec`], their
/// merged rows cut into `bands` trace-id ranges.
#[derive(Debug, Clone)]
pub(crate) struct Spread {
    pub(crate) min_bytes: u64,
    pub(crate) bands: usize,
    /// Set when a plan of the session was spread over two queriers or more.
    pub(crate) used: Arc<std::sync::atomic::AtomicBool>,
}

/// Everything a querier needs to build a scan's plan from its [`Work`]:
/// what the coordinating querier decided, sent with the work to the others.
#[derive(Debug, Clone)]
pub(crate) struct ScanSpec {
    pub(crate) tenant: TenantId,
    pub(crate) projection: Option<Vec<usize>>,
    /// The pushed-down filters, as the coordinating querier planned them
    /// (None: none, or no pruning).
    pub(crate) predicate: Option<Arc<dyn PhysicalExpr>>,
    /// Whether the filters run inside the Parquet decoder ([`late_materialization_pays`]).
    pub(crate) row_filter: bool,
    pub(crate) limit: Option<usize>,
    pub(crate) pruning: bool,
    /// Partitions of the parallel pieces on each querier.
    pub(crate) partitions: usize,
    /// The span starts the scan answers exactly (its filters on `start_time`).
    pub(crate) window: Option<StartWindow>,
}

impl ScanSpec {
    /// The plan that reads `work` under this spec, from the blocks of `runtime`.
    pub(crate) fn plan(
        &self,
        work: &Work,
        runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let predicate = self.predicate.clone();
        let source = parquet_source(runtime, self.pruning, self.row_filter, predicate)?;
        work.plan(&self.tenant, &source, self.partitions, self.projection.as_ref(), self.limit, self.window.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    /// A block whose durations rise with trace id, so that its pages hold
    /// ranges of them: a filter on duration admits the pages of its range.
    #[test]
    fn the_size_a_scan_reads_counts_the_pages_its_filter_admits() {
        let spans = numbered_spans(20_000);
        let footer = footer_of(spans);
        let schema = table_schema();
        let whole: u64 = footer.metadata().row_groups().iter().map(|g| g.compressed_size() as u64).sum();
        let admitted = |filter: Expr| read_bytes(std::slice::from_ref(&footer), Some(&physical(filter)), &schema, None);
        assert_eq!(
            admitted(col(spanlake_schemas::schema::DURATION_NS).gt(lit(30_000i64))),
            0,
            "no page holds such a duration"
        );
        let last_pages = admitted(col(spanlake_schemas::schema::DURATION_NS).gt(lit(19_000i64)));
        assert!(last_pages > 0 && last_pages * 2 < whole, "{last_pages} of {whole} bytes");
        assert_eq!(admitted(col(spanlake_schemas::schema::DURATION_NS).gt(lit(0i64))), whole, "every page admits it");
        assert_eq!(read_bytes(std::slice::from_ref(&footer), None, &schema, None), whole, "no filter");
    }

    /// A scan of a few columns reads their chunks, not the whole block: the
    /// columns projected and those its filter names.
    #[test]
    fn the_size_a_scan_reads_counts_the_columns_it_reads() {
        let spans = numbered_spans(5_000);
        let footer = footer_of(spans);
        let schema = table_schema();
        let chunks = |name: &str| -> u64 {
            let metadata = footer.metadata();
            let parquet_schema = metadata.file_metadata().schema_descr();
            (metadata.row_groups().iter())
                .flat_map(|g| g.columns().iter().enumerate())
                .filter(|(leaf, _)| parquet_schema.get_column_root(*leaf).name() == name)
                .map(|(_, chunk)| chunk.compressed_size() as u64)
                .sum()
        };
        let index = |name: &str| schema.index_of(name).unwrap();
        let (name, trace_id, duration) =
            (spanlake_schemas::schema::NAME, TRACE_ID, spanlake_schemas::schema::DURATION_NS);
        let read = |projection: Vec<usize>, predicate: Option<Arc<dyn PhysicalExpr>>| {
            let columns = read_columns(&schema, Some(&projection), predicate.as_ref());
            read_bytes(std::slice::from_ref(&footer), predicate.as_ref(), &schema, columns.as_ref())
        };
        let whole = read_bytes(std::slice::from_ref(&footer), None, &schema, None);
        assert!(chunks(name) > 0 && chunks(trace_id) > 0);
        assert_eq!(read(vec![index(name)], None), chunks(name));
        assert!(read(vec![index(name)], None) * 4 < whole, "one column of a block");
        assert_eq!(read(vec![index(name), index(trace_id)], None), chunks(name) + chunks(trace_id));
        // A filter's columns are read too (every page admits this one).
        let predicate = physical(col(duration).gt(lit(0i64)));
        assert_eq!(read(vec![index(name)], Some(predicate)), chunks(name) + chunks(duration));
    }

    /// Spans 1 to `count`: span `i` in trace `i` (trace ids rising), `i` ns
    /// long, named after `i` modulo 97.
    fn numbered_spans(count: u64) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        (1..=count)
            .map(|i| opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: [0u64.to_be_bytes(), i.to_be_bytes()].concat(),
                span_id: i.to_be_bytes().to_vec(),
                name: format!("operation {}", i % 97),
                start_time_unix_nano: 1_000,
                end_time_unix_nano: 1_000 + i,
                ..Default::default()
            })
            .collect()
    }

    /// The footer (with its page index) of a block of `spans`.
    fn footer_of(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> ArrowReaderMetadata {
        let batch = spanlake_schemas::encode::batch_of(spans);
        let block = spanlake_schemas::block::encode_block(&[batch], spanlake_schemas::BlockId::new()).unwrap();
        let options = parquet::arrow::arrow_reader::ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
        ArrowReaderMetadata::load(&block.parquet, options).unwrap()
    }

    /// `filter` over the table's columns, as the scan gets it.
    fn physical(filter: Expr) -> Arc<dyn PhysicalExpr> {
        let df_schema = DFSchema::try_from(table_schema().as_ref().clone()).unwrap();
        datafusion::prelude::SessionContext::new().create_physical_expr(filter, &df_schema).unwrap()
    }

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

    /// A lookup by trace ids, however DataFusion wrote it, is one (and a
    /// filter that admits other rows too is not).
    #[test]
    fn lookups_by_trace_id_are_told_apart() {
        let id = |b: u8| lit(ScalarValue::FixedSizeBinary(16, Some(vec![b; 16])));
        let ids = |filter: Expr| BlockBounds::from_filters(&[filter]).trace_ids;
        let trace = || col(TRACE_ID);
        assert_eq!(ids(trace().eq(id(1))), Some(vec![[1; 16]]));
        assert_eq!(ids(id(1).eq(trace())), Some(vec![[1; 16]]));
        assert_eq!(ids(trace().eq(id(1)).or(trace().eq(id(2)))), Some(vec![[1; 16], [2; 16]]));
        assert_eq!(ids(trace().in_list(vec![id(3), id(4), id(5)], false)), Some(vec![[3; 16], [4; 16], [5; 16]]));
        assert_eq!(ids(trace().in_list(vec![id(3)], true)), None, "NOT IN");
        assert_eq!(ids(trace().eq(id(1)).or(col(START_TIME).gt(lit(5i64)))), None, "or any span from 5 ns");
        let both = trace().eq(id(1)).and(col(spanlake_schemas::schema::DURATION_NS).gt(lit(5i64)));
        assert_eq!(ids(both), Some(vec![[1; 16]]), "and a narrower filter");
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
