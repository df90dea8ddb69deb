//! Fan-out latency analysis across many traces: for a parent operation, how
//! wide it fans out, which downstream edge sets its tail, and whether its
//! tail is what its calls predict (definitions: README "Fan-out analysis").
//!
//! ```text
//!  catalog: blocks overlapping the range (widened for late children)
//!    → each block read with only the columns needed, already sorted by trace id
//!    → k-way merge by trace id, duplicates dropped (spanlake_schemas::merge)
//!    → one trace at a time: parents and their calls (trace.rs)
//!    → per parent operation: exact values kept, percentiles, prediction (stats.rs)
//! ```
//!
//! Memory: one batch per block in the merge plus one trace, and per parent
//! operation the durations it reports (8 bytes per parent and per call).

mod compact;
mod stats;
mod trace;
mod weighted;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, AsArray, MapArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimestampNanosecondType};
use arrow::error::ArrowError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::prelude::{col, lit};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use spanlake_schemas::block::BlockId;
use spanlake_schemas::merge::{BatchSink, MergeStats, SortedInput, merge_sorted};
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::schema::{
    END_TIME, KIND, NAME, PARENT_SPAN_ID, SERVICE_NAME, SPAN_ATTRIBUTES, SPAN_ID, START_TIME, STATUS_CODE, TRACE_ID,
    TRACE_STATE,
};
use spanlake_schemas::{BlockMeta, TenantId, span_schema};

pub use stats::{DegreeBucket, Exemplar, Exemplars, OperationReport, Percentiles, label};
pub(crate) use trace::{ChildKinds, EdgeBy};

use crate::Querier;
use crate::blocks::NotOpened;
use crate::error::{QueryError, Result};
use crate::memory::CountedPool;
use crate::trace_index::{Rows, TraceIndex, band, intersect, rows_to_merge, selected_ranges, selection, split};
use crate::traceql::{self, ast::SpansetExpr};
use trace::{Kind, SpanRow};

/// Children are looked for this far beyond the requested range.
const WIDEN_NS: i64 = 10 * 60 * 1_000_000_000;
const BATCH_ROWS: usize = 8192;
/// Rows the merge of split traces holds decoded, over all its inputs: each
/// block it merges has a batch in the merge and up to two read ahead.
const MERGE_BUFFERED_ROWS: usize = 256 * 1024;
/// Rows of the blocks it merges that one band of the merge spans: each
/// open block holds the pages of its band's rows.
const MERGE_BAND_ROWS: u64 = 1 << 20;

/// What to analyze.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct FanoutParams {
    /// Parents starting in `[start, end]`, Unix nanoseconds.
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) service: Option<String>,
    pub(crate) operation: Option<String>,
    /// A spanset filter `{ … }` picking parent spans.
    pub(crate) traceql: Option<String>,
    pub(crate) percentiles: Vec<f64>,
    pub(crate) child_kinds: ChildKinds,
    pub(crate) edge_by: EdgeBy,
    /// Most parent operations reported (the ones with the most parents).
    pub(crate) limit: usize,
}

/// The answer: one report per parent operation.
#[derive(Debug, serde::Serialize)]
pub struct FanoutResponse {
    pub operations: Vec<OperationReport>,
    /// Spans read, and duplicates (client retries) dropped on the way.
    pub spans_read: u64,
    pub duplicates_dropped: u64,
    /// Of `spans_read`, those of traces split over blocks (or with a span
    /// twice), which were read through the trace-ordered merge.
    pub spans_merged: u64,
    pub blocks_read: usize,
}

/// Interned strings (services and operation names).
#[derive(Clone, Debug)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    /// A small direct-mapped cache in front of `ids`: a query sees few
    /// distinct names, so most rows skip hashing the name.
    recent: Vec<Option<(Box<str>, u32)>>,
}

impl Default for Names {
    fn default() -> Self {
        Self { ids: HashMap::new(), names: Vec::new(), recent: vec![None; 256] }
    }
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        let bytes = name.as_bytes();
        let slot = (bytes.len().wrapping_mul(31)
            ^ usize::from(bytes.first().copied().unwrap_or(0)).wrapping_mul(7)
            ^ usize::from(bytes.last().copied().unwrap_or(0)).wrapping_mul(131)
            ^ usize::from(bytes.get(bytes.len() / 2).copied().unwrap_or(0)))
            & 255;
        if let Some((cached, id)) = &self.recent[slot]
            && **cached == *name
        {
            return *id;
        }
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.names.push(name.to_owned());
                self.ids.insert(name.to_owned(), id);
                id
            }
        };
        self.recent[slot] = Some((name.into(), id));
        id
    }
}

/// Which spans are parents.
#[derive(Clone)]
enum ParentFilter {
    Any,
    Op { service: Option<u32>, operation: Option<u32> },
    Matched(Arc<HashSet<(u128, u64)>>),
}

/// Receives the merged, trace-ordered batches and analyzes trace by trace.
struct Analyzer {
    params: FanoutParams,
    filter: ParentFilter,
    names: Names,
    trace: Option<u128>,
    rows: Vec<SpanRow>,
    scratch: trace::Scratch,
    ops: foldhash::HashMap<(u32, u32), stats::OpStats>,
    /// The id of each trace with a parent, in the order analyzed: parents
    /// hold their trace's place here.
    traces: Vec<u128>,
    /// What the analysis holds, against the query's pool (`--sql-memory-limit`).
    memory: MemoryReservation,
    /// Bytes the per-operation statistics hold (an estimate: per parent its
    /// duration, degree, parallelism, slowest call, trace id and call mix;
    /// per call its duration and edge entries).
    held: usize,
    over_limit: bool,
    /// Spans this analyzer read from blocks directly.
    spans: u64,
}

impl Analyzer {
    fn flush_trace(&mut self) {
        let Some(trace_id) = self.trace else { return };
        let (start, end) = (self.params.start, self.params.end);
        let filter = &self.filter;
        let is_parent = |s: &SpanRow| {
            s.start >= start
                && s.start <= end
                && match filter {
                    ParentFilter::Any => true,
                    ParentFilter::Op { service, operation } => {
                        service.is_none_or(|x| x == s.service) && operation.is_none_or(|x| x == s.name)
                    }
                    ParentFilter::Matched(set) => set.contains(&(trace_id, s.id)),
                }
        };
        let (ops, held, traces) = (&mut self.ops, &mut self.held, &mut self.traces);
        let (kinds, edge_by) = (self.params.child_kinds, self.params.edge_by);
        // The trace takes a place in the table with its first parent.
        let mut place = None;
        trace::analyze_with(&self.rows, kinds, edge_by, is_parent, &mut self.scratch, |parent| {
            let trace = *place.get_or_insert_with(|| {
                traces.push(trace_id);
                *held += stats::OpStats::BYTES_PER_TRACE;
                (traces.len() - 1) as u32
            });
            *held += stats::OpStats::BYTES_PER_PARENT + stats::OpStats::BYTES_PER_CALL * parent.calls.len();
            ops.entry(parent.op).or_default().add(parent, trace);
        });
        self.rows.clear();
    }

    /// Charges what the analysis holds now (statistics and the current
    /// trace's rows) to the pool, a MiB at a time; false once it is full.
    fn account(&mut self) -> bool {
        let now = self.held + self.rows.capacity() * std::mem::size_of::<SpanRow>();
        if now > self.memory.size() + (1 << 20) || self.memory.size() > now + (4 << 20) {
            self.over_limit = self.memory.try_resize(now).is_err();
        }
        !self.over_limit
    }
}

/// Whether a block may hold a non-empty `trace_state`: false only when every
/// row group's statistics show the column empty or null.
fn may_hold_trace_state(footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata) -> bool {
    let metadata = footer.metadata();
    let Some(index) =
        metadata.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == TRACE_STATE)
    else {
        return true;
    };
    metadata.row_groups().iter().any(|group| match group.column(index).statistics() {
        None => true,
        Some(stats) => match stats.max_bytes_opt() {
            Some(max) => !max.is_empty(),
            None => stats.null_count_opt() != Some(group.num_rows() as u64),
        },
    })
}

fn u64_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8-byte span id"))
}

/// The `str` value of `key` in one row of a span attribute map.
fn map_str(map: &MapArray, row: usize, key: &str) -> Option<String> {
    if map.is_null(row) {
        return None;
    }
    let entries = map.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values: &StructArray = entries.column(1).as_struct();
    let strs = values.column_by_name("str")?.as_string::<i32>();
    (0..keys.len()).find(|&i| keys.value(i) == key).filter(|&i| strs.is_valid(i)).map(|i| strs.value(i).to_owned())
}

/// Column `name` of `batch`, mapped row by row through `f` (a null reads as
/// ""): a dictionary column's values once per batch, plain strings one by one.
fn map_strings<T: Copy>(batch: &RecordBatch, name: &str, mut f: impl FnMut(&str) -> T) -> Vec<T> {
    let column = batch.column_by_name(name).expect("projected column");
    match column.as_dictionary_opt::<Int32Type>() {
        Some(dictionary) => {
            let values = dictionary.values().as_string::<i32>();
            let mapped: Vec<T> = values.iter().map(|v| f(v.unwrap_or_default())).collect();
            let null = f("");
            // A key outside the dictionary (a damaged block) reads as null
            // rather than panicking.
            let value = |key: i32| usize::try_from(key).ok().and_then(|key| mapped.get(key).copied());
            dictionary.keys().iter().map(|key| key.and_then(value).unwrap_or(null)).collect()
        }
        None => column.as_string::<i32>().iter().map(|v| f(v.unwrap_or_default())).collect(),
    }
}

/// The string columns the analysis reads as dictionaries when they are
/// stored so: few distinct values, each mapped once per batch instead of once
/// per row, and no string copied out of the page.
const DICTIONARY_COLUMNS: [&str; 4] = [NAME, KIND, STATUS_CODE, SERVICE_NAME];

/// `footer` with [`DICTIONARY_COLUMNS`] read as dictionaries.
fn with_dictionaries(footer: &ArrowReaderMetadata) -> std::result::Result<ArrowReaderMetadata, ParquetError> {
    let fields: Vec<Field> = footer
        .schema()
        .fields()
        .iter()
        .map(|field| {
            match DICTIONARY_COLUMNS.contains(&field.name().as_str()) && field.data_type() == &DataType::Utf8 {
                true => Field::new(
                    field.name(),
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    field.is_nullable(),
                )
                .with_metadata(field.metadata().clone()),
                false => field.as_ref().clone(),
            }
        })
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, footer.schema().metadata().clone()));
    ArrowReaderMetadata::try_new(Arc::clone(footer.metadata()), ArrowReaderOptions::new().with_schema(schema))
}

impl BatchSink for Analyzer {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ArrowError> {
        let column = |name: &str| batch.column_by_name(name).expect("projected column");
        let traces = column(TRACE_ID).as_fixed_size_binary();
        let ids = column(SPAN_ID).as_fixed_size_binary();
        let parents = column(PARENT_SPAN_ID).as_fixed_size_binary();
        let starts = column(START_TIME).as_primitive::<TimestampNanosecondType>();
        let ends = column(END_TIME).as_primitive::<TimestampNanosecondType>();
        let names = map_strings(&batch, NAME, |name| self.names.id(name));
        let services = map_strings(&batch, SERVICE_NAME, |service| self.names.id(service));
        let kinds = map_strings(&batch, KIND, Kind::from_stored);
        let errors = map_strings(&batch, STATUS_CODE, |status| status == "error");
        let attributes = batch.column_by_name(SPAN_ATTRIBUTES).map(|a| a.as_map());
        let trace_states = batch.column_by_name(TRACE_STATE).map(|c| c.as_string::<i32>());
        for row in 0..batch.num_rows() {
            let trace_id = u128::from_be_bytes(traces.value(row).try_into().expect("16-byte trace id"));
            if self.trace != Some(trace_id) {
                self.flush_trace();
                self.trace = Some(trace_id);
            }
            let peer_service = attributes.and_then(|a| map_str(a, row, "peer.service")).map(|p| self.names.id(&p));
            self.rows.push(SpanRow {
                id: u64_of(ids.value(row)),
                parent: parents.is_valid(row).then(|| u64_of(parents.value(row))),
                service: services[row],
                name: names[row],
                kind: kinds[row],
                start: starts.value(row),
                end: ends.value(row),
                error: errors[row],
                peer_service,
                weight: match trace_states {
                    Some(states) if states.is_valid(row) && !states.value(row).is_empty() => {
                        trace::adjusted_count(states.value(row))
                    }
                    _ => 1.0,
                },
            });
        }
        if !self.account() {
            return Err(ArrowError::ExternalError("the fan-out analysis passed its memory limit".into()));
        }
        Ok(())
    }
}

/// A block, its footer, and which of its rows to read (None: all).
type Piece = (BlockMeta, ArrowReaderMetadata, Option<RowSelection>);

/// A block's rows that go through the merge: the row ranges of its traces
/// split over blocks (None: every row), and its trace index.
struct ToMerge {
    block: BlockMeta,
    footer: ArrowReaderMetadata,
    ranges: Option<(Vec<std::ops::Range<u32>>, Arc<TraceIndex>)>,
}

/// The merge of split traces, in `count` bands of trace ids merged one
/// after the other. Every block the merge reads is open at once, and an
/// open block holds the pages of the rows it is to read (the footers'
/// offset index says where they are): bands of about [`MERGE_BAND_ROWS`]
/// of the blocks' rows (as many as `count` None gives) bound that. Trace
/// ids are cut evenly; ids are random. One band when a block is not indexed
/// or not sorted. Bands are in trace-id order, empty ones included (their
/// numbers share them out).
fn merge_bands(to_merge: Vec<ToMerge>, count: Option<u128>) -> Vec<Vec<Piece>> {
    let rows: u64 = to_merge.iter().map(|m| m.block.span_count).sum();
    let sorted = |m: &ToMerge| m.ranges.as_ref().is_some_and(|(_, index)| index.first_row_from(0).is_some());
    let count = match to_merge.iter().all(sorted) {
        true => count.unwrap_or_else(|| band_count(rows)).clamp(1, MAX_BANDS),
        false => 1,
    };
    let width = u128::MAX / count;
    (0..count)
        .map(|b| {
            let (from, to) = (width * b, (b + 1 < count).then(|| width * (b + 1)));
            to_merge
                .iter()
                .filter_map(|m| {
                    let rows = match &m.ranges {
                        None => None,
                        Some((ranges, index)) => {
                            let ranges = if count == 1 { ranges.clone() } else { band(index, ranges, from, to)? };
                            if ranges.is_empty() {
                                return None;
                            }
                            Some(selection(&ranges, index.rows(), false))
                        }
                    };
                    Some((m.block.clone(), m.footer.clone(), rows))
                })
                .collect::<Vec<Piece>>()
        })
        .collect()
}

/// Most bands of a merge.
const MAX_BANDS: u128 = 256;

/// Bands for a merge of blocks of `rows` rows in all: about
/// [`MERGE_BAND_ROWS`] each.
fn band_count(rows: u64) -> u128 {
    u128::from(rows.div_ceil(MERGE_BAND_ROWS.max(1))).clamp(1, MAX_BANDS)
}

/// The bands of the merge of `blocks`, from their metadata alone: for the
/// rows of the blocks whose trace-id range overlaps another's (only those
/// can share a trace). At least what an analysis counts from the rows it
/// finds to merge; finding those looks at every trace id, which each task
/// does anyway, and which the coordinating querier need not do once more.
pub(crate) fn merge_band_count(blocks: &[BlockMeta]) -> u32 {
    let mut by_start: Vec<&BlockMeta> = blocks.iter().collect();
    by_start.sort_by(|a, b| a.min_trace_id.cmp(&b.min_trace_id));
    let mut rows = 0;
    let mut reach: Option<&str> = None;
    for (at, block) in by_start.iter().enumerate() {
        // Ids are fixed-width lowercase hex: they compare as strings.
        let before = reach.is_some_and(|max| block.min_trace_id.as_str() <= max);
        let after = by_start.get(at + 1).is_some_and(|next| next.min_trace_id <= block.max_trace_id);
        if before || after {
            rows += block.span_count;
        }
        reach = reach.max(Some(block.max_trace_id.as_str()));
    }
    band_count(rows) as u32
}

/// Which of a fan-out's pieces of work one analysis does: of the blocks'
/// pieces read alone and the bands of the merge (each holding whole
/// traces), every `count`-th from `index` on. A piece is numbered by its
/// block's place among the blocks asked for and its own place in the
/// block (each block is cut into at least enough pieces for every part to
/// get one), and the bands are cut by trace id into `bands`, at least one
/// per part (None: as many as the rows to merge ask for), so analyses that
/// plan alone, on other queriers, share the same work out, each piece once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Part {
    pub(crate) index: usize,
    pub(crate) count: usize,
    pub(crate) bands: Option<u32>,
}

impl Part {
    /// All of the work.
    pub(crate) const WHOLE: Self = Self { index: 0, count: 1, bands: None };

    fn takes(&self, piece: usize) -> bool {
        piece % self.count.max(1) == self.index
    }

    /// The bands of the merge: as many as asked, and at least one per
    /// part, so that each part merges some.
    fn merge_bands(&self) -> Option<u128> {
        self.bands.map(|bands| u128::from(bands).max(self.count as u128))
    }
}

/// Which rows of each block hold traces split over blocks (that the merge
/// reads), found once for the analyses of one query in this process (a
/// task's partitions), which read the same blocks: finding them looks at
/// every trace id.
#[derive(Debug, Default)]
pub(crate) struct MergeRows(tokio::sync::OnceCell<(Vec<BlockId>, Arc<RowsByBlock>)>);

/// Row ranges of each block.
type RowsByBlock = Vec<Vec<std::ops::Range<u32>>>;

impl MergeRows {
    /// The rows to merge of the blocks `ids`, with their trace `indexes`:
    /// found by the first analysis; another that opened other blocks (one
    /// was not readable a moment ago) finds its own.
    async fn of(&self, ids: Vec<BlockId>, indexes: &[Arc<TraceIndex>]) -> Arc<RowsByBlock> {
        let find = || {
            let refs: Vec<&TraceIndex> = indexes.iter().map(Arc::as_ref).collect();
            Arc::new(rows_to_merge(&refs, 0, None))
        };
        let (found_for, rows) = self.0.get_or_init(|| async { (ids.clone(), find()) }).await;
        match *found_for == ids {
            true => Arc::clone(rows),
            false => find(),
        }
    }
}

/// A piece after looking for the traces of its parents.
enum Narrowed {
    /// Over a quarter of its rows are such traces: the piece as it was.
    Whole(Piece),
    /// The piece cut to those traces.
    Cut(Piece),
    /// No such trace.
    Empty,
}

/// Opens blocks of one tenant with the analysis' columns.
struct BlockReader {
    storage: spanlake_schemas::Storage,
    tenant: TenantId,
    indices: Vec<usize>,
}

impl BlockReader {
    /// The rows of `piece`, in block order, `batch_rows` at a time; with
    /// `dictionaries`, [`DICTIONARY_COLUMNS`] come as dictionaries (the
    /// merge compares plain strings, so only what is read alone).
    fn open(&self, piece: Piece, batch_rows: usize, dictionaries: bool) -> Result<SortedInput> {
        self.open_columns(piece, batch_rows, dictionaries, &self.indices)
    }

    /// The piece cut to the traces that hold a span of the parents'
    /// (service, operation), read from those two columns alone (None: no
    /// such trace); the piece as it is once over a quarter of its rows are
    /// such traces (then it stops reading the names: reading part of a
    /// block's rows saves little more than that, its pages being read whole).
    async fn narrow(
        &self,
        (block, footer, rows): Piece,
        index: &TraceIndex,
        (service, operation): &(Option<String>, Option<String>),
    ) -> Result<Narrowed> {
        let piece_rows = match &rows {
            None => std::slice::from_ref(&(0..index.rows())).to_vec(),
            Some(rows) => selected_ranges(rows, index.rows()),
        };
        let all: u64 = piece_rows.iter().map(|r| u64::from(r.end - r.start)).sum();
        let schema = span_schema();
        let names = [SERVICE_NAME, NAME].map(|c| schema.index_of(c).expect("span schema column"));
        let piece = (block.clone(), footer.clone(), rows.clone());
        let mut input = self.open_columns(piece, BATCH_ROWS, true, &names)?;
        let mut at = piece_rows.iter().flat_map(|r| r.clone());
        let (mut traces, mut kept): (Vec<std::ops::Range<u32>>, u64) = (Vec::new(), 0);
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(reading)?;
            let services = map_strings(&batch, SERVICE_NAME, |s| service.as_deref().is_none_or(|x| x == s));
            let operations = map_strings(&batch, NAME, |n| operation.as_deref().is_none_or(|x| x == n));
            for (service, operation) in services.into_iter().zip(operations) {
                let row = at.next().ok_or(QueryError::Internal("a block gave more rows than selected"))?;
                if !(service && operation) || traces.last().is_some_and(|t| t.contains(&row)) {
                    continue;
                }
                let Some(trace) = index.trace_of_row(row) else { return Ok(Narrowed::Whole((block, footer, rows))) };
                kept += u64::from(trace.end - trace.start);
                if 4 * kept > all {
                    return Ok(Narrowed::Whole((block, footer, rows)));
                }
                traces.push(trace);
            }
        }
        let traces = intersect(&traces, &piece_rows);
        Ok(match traces.is_empty() {
            true => Narrowed::Empty,
            false => Narrowed::Cut((block, footer, Some(selection(&traces, index.rows(), false)))),
        })
    }

    /// The rows of `piece`, columns `indices` of the span schema.
    fn open_columns(
        &self,
        (block, footer, rows): Piece,
        batch_rows: usize,
        dictionaries: bool,
        indices: &[usize],
    ) -> Result<SortedInput> {
        let read_error = |source| QueryError::ReadBlock { block_id: block.id.to_string(), source };
        let footer = match dictionaries {
            true => with_dictionaries(&footer).map_err(read_error)?,
            false => footer,
        };
        let reader = ObjectReader::block(&self.storage, &self.tenant, &block);
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer);
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices.iter().copied());
        let mut builder = builder.with_projection(mask).with_batch_size(batch_rows);
        if let Some(rows) = rows {
            builder = builder.with_row_selection(rows);
        }
        let stream = builder.build().map_err(read_error)?;
        Ok(stream.map_err(|e| ArrowError::ExternalError(Box::new(e))).boxed())
    }
}

fn reading(error: ArrowError) -> QueryError {
    QueryError::Execution(format!("reading spans for fan-out analysis: {error}"))
}

/// One analyzer holding what `analyzers` found, with the first one's
/// numbering of names; and the others' memory reservations, which still
/// account for what they handed over.
fn combine(mut analyzers: Vec<Analyzer>) -> (Analyzer, Vec<MemoryReservation>) {
    let mut into = analyzers.remove(0);
    let mut held = Vec::with_capacity(analyzers.len());
    for other in analyzers {
        let renamed: Vec<u32> = other.names.names.iter().map(|name| into.names.id(name)).collect();
        let rename = |id: u32| renamed[id as usize];
        let traces_before = into.traces.len() as u32;
        stats::extend_exact(&mut into.traces, other.traces);
        for ((service, name), stats) in other.ops {
            into.ops.entry((rename(service), rename(name))).or_default().absorb(stats, &rename, traces_before);
        }
        into.spans += other.spans;
        held.push(other.memory);
    }
    (into, held)
}

/// Decodes `input` on a task of its own, a couple of batches ahead, so that
/// blocks decode in parallel while the merge and the analysis run.
fn prefetched(mut input: SortedInput) -> SortedInput {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        while let Some(batch) = input.next().await {
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|batch| (batch, rx)) }).boxed()
}

/// Which spans are parents, by name: whoever analyzes a share of the
/// traces numbers the names itself.
#[derive(Clone, Debug)]
pub(crate) enum Parents {
    Any,
    Op {
        service: Option<String>,
        operation: Option<String>,
    },
    /// (trace id, span id) of the spans a TraceQL spanset filter selected.
    Matched(Arc<HashSet<(u128, u64)>>),
}

/// What the analysis of one part of the work found: the statistics per
/// parent operation (names numbered as in `names`) and what was read.
/// Analyses of disjoint parts combine into one report ([`report`]).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Analysis {
    names: Vec<String>,
    ops: Vec<((u32, u32), stats::OpStats)>,
    /// The trace ids the parents' places point into.
    #[serde(with = "compact::ids")]
    traces: Vec<u128>,
    /// Spans read from blocks directly, and through the merge of split traces.
    direct_rows: u64,
    merged_rows: u64,
    duplicates: u64,
    /// What holds the statistics against the query's memory pool (while
    /// they live on the querier that made them, or received them).
    #[serde(skip)]
    pub(crate) held: Vec<MemoryReservation>,
}

impl Analysis {
    /// Whether an analysis received from another querier can be reported
    /// without reading past a vector (see [`stats::OpStats::check`]).
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let (names, traces) = (self.names.len(), self.traces.len());
        for ((service, name), stats) in &self.ops {
            if *service as usize >= names || *name as usize >= names {
                return Err("an operation's name that does not exist".into());
            }
            stats.check(names, traces)?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl Analysis {
    /// An analysis of no operation that names `names` and read `rows` spans.
    pub(crate) fn named(names: &[&str], rows: u64) -> Self {
        Self {
            names: names.iter().map(|n| n.to_string()).collect(),
            direct_rows: rows,
            merged_rows: rows / 2,
            ..Self::default()
        }
    }
}

/// What the analysis reads blocks with: the store, the blocks' footers and
/// trace indexes, and the per-query memory limit (and its gauge).
#[derive(Clone)]
pub(crate) struct FanoutSource {
    pub(crate) storage: spanlake_schemas::Storage,
    pub(crate) blocks: crate::blocks::SharedBlocks,
    pub(crate) memory_limit: usize,
    pub(crate) memory_gauge: prometheus_client::metrics::gauge::Gauge,
    /// Counts the analyses handed over in memory (see `distributed::HandOff`).
    pub(crate) handed_over: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for FanoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSource").field("memory_limit", &self.memory_limit).finish_non_exhaustive()
    }
}

fn over_limit(limit: usize) -> QueryError {
    QueryError::MemoryLimit(format!(
        "the fan-out analysis holds more than the per-query memory limit of {limit} bytes \
         (--sql-memory-limit); narrow the time range or the parents"
    ))
}

impl FanoutSource {
    /// A memory pool of the per-query limit, for one analysis or for the
    /// analyses of one querier's share.
    pub(crate) fn pool(&self) -> Arc<dyn MemoryPool> {
        Arc::new(CountedPool::new(self.memory_limit, self.memory_gauge.clone()))
    }

    /// Analyzes the traces of `blocks` (readable blocks of `tenant`),
    /// holding what it keeps in `pool`: the traces a block holds alone are
    /// analyzed in parallel by `analyzers`, and the traces split over
    /// blocks through the merge. Of that work (the blocks' pieces read
    /// alone, and the bands of the merge, each holding whole traces), it
    /// does `part`: the parts together analyze every trace once, each
    /// reading its own pages.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn analyze(
        &self,
        tenant: &TenantId,
        params: &FanoutParams,
        parents: &Parents,
        blocks: &[BlockMeta],
        analyzers: usize,
        part: Part,
        merge_rows: &MergeRows,
        pool: Arc<dyn MemoryPool>,
    ) -> Result<Analysis> {
        let mut names = Names::default();
        let filter = match parents {
            Parents::Any => ParentFilter::Any,
            Parents::Op { service, operation } => ParentFilter::Op {
                service: service.as_deref().map(|s| names.id(s)),
                operation: operation.as_deref().map(|o| names.id(o)),
            },
            Parents::Matched(set) => ParentFilter::Matched(Arc::clone(set)),
        };
        let schema = span_schema();
        // Each block with its place among the blocks asked for.
        let mut opened = Vec::with_capacity(blocks.len());
        let mut places = Vec::with_capacity(blocks.len());
        for (place, block) in blocks.iter().enumerate() {
            match self.blocks.open(tenant, block).await {
                Ok(footer) => {
                    opened.push((block, footer));
                    places.push(place);
                }
                // Usable a moment ago: opened from the cache, or just written.
                Err(NotOpened::InFlight) => continue,
                Err(NotOpened::Skipped(skipped)) => return Err(QueryError::Execution(skipped.reason)),
            }
        }
        let mut columns =
            vec![TRACE_ID, SPAN_ID, PARENT_SPAN_ID, NAME, KIND, START_TIME, END_TIME, STATUS_CODE, SERVICE_NAME];
        if params.edge_by == EdgeBy::Server {
            columns.push(SPAN_ATTRIBUTES);
        }
        // Sampling thresholds live in tracestate; most data has none, and the
        // footers' statistics say so without reading the column.
        if opened.iter().any(|(_, footer)| may_hold_trace_state(footer)) {
            columns.push(TRACE_STATE);
        }
        let indices: Vec<usize> = columns.iter().map(|c| schema.index_of(c).expect("span schema column")).collect();
        // A trace that lies whole in one block, with no span twice, is read
        // from that block alone; only the others pass through the merge.
        let metas: Vec<BlockMeta> = opened.iter().map(|(block, _)| (*block).clone()).collect();
        let parallelism = analyzers.max(1);
        // Narrow first: only the traces that can hold a parent are read. The
        // traces of parents TraceQL picked are known by id; parents named by
        // service and operation are found in a piece's two name columns
        // before its other columns are read.
        let matched_traces: Option<Vec<u128>> = match &filter {
            ParentFilter::Matched(set) => {
                let mut traces: Vec<u128> = set.iter().map(|&(trace, _)| trace).collect();
                traces.sort_unstable();
                traces.dedup();
                Some(traces)
            }
            _ => None,
        };
        let narrow_op = match parents {
            Parents::Op { service, operation } if service.is_some() || operation.is_some() => {
                Some(Arc::new((service.clone(), operation.clone())))
            }
            _ => None,
        };
        // The pieces read alone, each with its number (see `Part`).
        let mut direct: Vec<(usize, Piece, Option<Arc<TraceIndex>>)> = Vec::new();
        let mut to_merge: Vec<ToMerge> = Vec::new();
        match self.blocks.trace_indexes(tenant, &metas, parallelism).await {
            Some(indexes) => {
                let ids: Vec<BlockId> = metas.iter().map(|m| m.id.clone()).collect();
                let to_merge_rows = merge_rows.of(ids, &indexes).await;
                // Pieces per block, at least, for each part to get one.
                let least = part.count.div_ceil(blocks.len().max(1)).max(1) as u64;
                let opened = opened.into_iter().zip(&places).zip(&indexes).zip(to_merge_rows.iter().cloned());
                for ((((block, footer), &place), index), ranges) in opened {
                    let block = block.clone();
                    // The rows of the traces of the parents TraceQL picked (None: every row).
                    let wanted = matched_traces.as_deref().and_then(|traces| index.rows_of_traces(traces));
                    let ranges = match &wanted {
                        None => ranges,
                        Some(wanted) => intersect(&ranges, wanted),
                    };
                    let in_range = wanted.map(|wanted| selection(&wanted, index.rows(), false));
                    let parts = split(index, &ranges);
                    if parts.merged.is_some() {
                        let ranges = Some((ranges, Arc::clone(index)));
                        to_merge.push(ToMerge { block: block.clone(), footer: footer.clone(), ranges });
                    }
                    let alone = match (parts.alone, &in_range) {
                        (None, _) => continue,
                        (Some(alone), None) => alone,
                        (Some(Rows::All), Some(in_range)) => Rows::Only(in_range.clone()),
                        (Some(Rows::Only(alone)), Some(in_range)) => Rows::Only(alone.intersection(in_range)),
                    };
                    if let Rows::Only(rows) = &alone
                        && !rows.selects_any()
                    {
                        continue;
                    }
                    // A large block (compacted) is shared out between the
                    // analyzers a row group at a time, cut where traces
                    // start; and every block in at least as many pieces as
                    // the parts need to each get one.
                    let mut starts = Vec::new();
                    let mut at = 0u32;
                    for group in footer.metadata().row_groups() {
                        starts.push(at);
                        at = at.saturating_add(u32::try_from(group.num_rows()).unwrap_or(u32::MAX));
                    }
                    starts.extend((1..least).map(|k| (u64::from(index.rows()) * k / least) as u32));
                    starts.sort_unstable();
                    starts.dedup();
                    let cuts = index.cuts(&starts);
                    if cuts.len() <= 2 {
                        direct.push((place, (block, footer, alone.selection()), Some(Arc::clone(index))));
                        continue;
                    }
                    for (number, piece) in cuts.windows(2).enumerate() {
                        let chunk = selection(std::slice::from_ref(&(piece[0]..piece[1])), index.rows(), false);
                        let chunk = match &alone {
                            Rows::Only(alone) => alone.intersection(&chunk),
                            Rows::All => chunk,
                        };
                        if chunk.selects_any() {
                            let piece = (block.clone(), footer.clone(), Some(chunk));
                            direct.push((place + number, piece, Some(Arc::clone(index))));
                        }
                    }
                }
            }
            None if part.count <= 1 => to_merge.extend(opened.into_iter().map(|(block, footer)| ToMerge {
                block: block.clone(),
                footer,
                ranges: None,
            })),
            // Unsorted, the traces are one band, which one part would
            // analyze whole while the others analyze their pieces.
            None => {
                let reason = "a block is not indexed by trace id: its traces cannot be shared out";
                return Err(QueryError::Execution(reason.into()));
            }
        }
        let reader = Arc::new(BlockReader { storage: self.storage.clone(), tenant: tenant.clone(), indices });
        let limit = self.memory_limit;
        let filter_memory = MemoryConsumer::new("fan-out parent filter").register(&pool);
        if let ParentFilter::Matched(set) = &filter {
            filter_memory.try_grow(set.capacity() * 32).map_err(|_| over_limit(limit))?;
        }
        let analyzer = || Analyzer {
            params: params.clone(),
            filter: filter.clone(),
            names: names.clone(),
            trace: None,
            rows: Vec::new(),
            scratch: trace::Scratch::default(),
            ops: foldhash::HashMap::default(),
            traces: Vec::new(),
            held: 0,
            memory: MemoryConsumer::new("fan-out analysis").register(&pool),
            over_limit: false,
            spans: 0,
        };
        // One analyzer per core, each taking the next block read whole (its
        // traces are complete in it), decoding and analyzing it on its task.
        let direct: std::collections::VecDeque<(Piece, Option<Arc<TraceIndex>>)> = direct
            .into_iter()
            .filter(|(number, ..)| part.takes(*number))
            .map(|(_, piece, index)| (piece, index))
            .collect();
        let queue = Arc::new(std::sync::Mutex::new(direct));
        // Parents are spread alike over a query's blocks: once a piece shows
        // they are not rare, the other pieces are read without looking.
        let narrowing = Arc::new(AtomicBool::new(true));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..parallelism.max(1) {
            let (queue, reader, mut analyzer) = (Arc::clone(&queue), Arc::clone(&reader), analyzer());
            let (narrow_op, narrowing) = (narrow_op.clone(), Arc::clone(&narrowing));
            tasks.spawn(async move {
                loop {
                    let Some((piece, index)) = queue.lock().expect("fan-out queue").pop_front() else { break };
                    let piece = match (&narrow_op, index) {
                        (Some(op), Some(index)) if narrowing.load(Ordering::Relaxed) => {
                            match reader.narrow(piece, &index, op).await? {
                                Narrowed::Cut(piece) => piece,
                                Narrowed::Empty => continue,
                                Narrowed::Whole(piece) => {
                                    narrowing.store(false, Ordering::Relaxed);
                                    piece
                                }
                            }
                        }
                        _ => piece,
                    };
                    let mut input = reader.open(piece, BATCH_ROWS, true)?;
                    while let Some(batch) = input.next().await {
                        let batch = batch.map_err(reading)?;
                        analyzer.spans += batch.num_rows() as u64;
                        if analyzer.write(batch).await.is_err() {
                            return Ok(analyzer);
                        }
                    }
                }
                analyzer.flush_trace();
                analyzer.account();
                analyzer.ops.values_mut().for_each(stats::OpStats::sort_calls);
                Ok::<Analyzer, QueryError>(analyzer)
            });
        }
        let mut analyzers = Vec::with_capacity(parallelism.max(1) + 1);
        while let Some(done) = tasks.join_next().await {
            let analyzer = done.map_err(|_| QueryError::Internal("fan-out analysis task failed"))??;
            if analyzer.over_limit {
                return Err(over_limit(limit));
            }
            analyzers.push(analyzer);
        }
        // Then the traces split over blocks: merged in trace order and
        // analyzed on this task.
        let mut merging = analyzer();
        let mut merged = MergeStats::default();
        let bands = merge_bands(to_merge, part.merge_bands()).into_iter().enumerate().filter(|(at, _)| part.takes(*at));
        for (_, band) in bands.filter(|(_, band)| !band.is_empty()) {
            // Every block with such a trace is open at once: smaller batches
            // keep what they hold decoded bounded, however many blocks there are.
            let batch_rows = (MERGE_BUFFERED_ROWS / (3 * band.len())).clamp(256, BATCH_ROWS);
            let inputs = band
                .into_iter()
                .map(|piece| reader.open(piece, batch_rows, false).map(prefetched))
                .collect::<Result<Vec<_>>>()?;
            let stats = merge_sorted(inputs, BATCH_ROWS, &mut merging).await;
            if merging.over_limit {
                return Err(over_limit(limit));
            }
            let stats = stats.map_err(reading)?;
            merged.rows_in += stats.rows_in;
            merged.duplicates += stats.duplicates;
        }
        merging.flush_trace();
        if !merging.account() {
            return Err(over_limit(limit));
        }
        merging.ops.values_mut().for_each(stats::OpStats::sort_calls);
        let direct_rows: u64 = analyzers.iter().map(|a| a.spans).sum();
        analyzers.push(merging);
        let (Analyzer { names, ops, traces, memory, .. }, mut held) = combine(analyzers);
        held.extend([memory, filter_memory]);
        Ok(Analysis {
            names: names.names,
            ops: ops.into_iter().collect(),
            traces,
            direct_rows,
            merged_rows: merged.rows_in,
            duplicates: merged.duplicates,
            held,
        })
    }
}

/// The report over the analyses of disjoint trace ranges: each parent
/// operation's statistics merged, then reported. Operations are ranked by
/// parents, then by name, so the answer does not depend on how the traces
/// were shared out.
fn report(analyses: Vec<Analysis>, params: &FanoutParams, parents: &Parents, blocks_read: usize) -> FanoutResponse {
    let mut names = Names::default();
    // Each operation's statistics from every analysis (with the analysis'
    // place), merged once all are known: the largest moves in, and the
    // others are copied into room made for all of them.
    let mut found: HashMap<(u32, u32), Vec<(stats::OpStats, usize)>> = HashMap::new();
    let mut renames: Vec<Vec<u32>> = Vec::with_capacity(analyses.len());
    // The analyses' tables of traces, one after the other: where each one's begins.
    let mut traces = Vec::with_capacity(analyses.iter().map(|a| a.traces.len()).sum());
    let mut traces_before: Vec<u32> = Vec::with_capacity(analyses.len());
    let (mut direct_rows, mut merged_rows, mut duplicates) = (0, 0, 0);
    let mut _held = Vec::new();
    for analysis in analyses {
        _held.extend(analysis.held);
        let renamed: Vec<u32> = analysis.names.iter().map(|name| names.id(name)).collect();
        for ((service, name), stats) in analysis.ops {
            let op = (renamed[service as usize], renamed[name as usize]);
            found.entry(op).or_default().push((stats, renames.len()));
        }
        renames.push(renamed);
        traces_before.push(traces.len() as u32);
        traces.extend(analysis.traces);
        direct_rows += analysis.direct_rows;
        merged_rows += analysis.merged_rows;
        duplicates += analysis.duplicates;
    }
    let mut ops: Vec<((u32, u32), stats::OpStats)> = found
        .into_iter()
        .map(|(op, mut parts)| {
            parts.sort_by_key(|(stats, _)| std::cmp::Reverse(stats.parents()));
            let mut merged = stats::OpStats::default();
            let mut parts = parts.into_iter();
            if let Some((largest, at)) = parts.next() {
                merged.absorb(largest, &|id| renames[at][id as usize], traces_before[at]);
            }
            let rest: Vec<(stats::OpStats, usize)> = parts.collect();
            let room: Vec<(&stats::OpStats, &[u32])> =
                rest.iter().map(|(stats, at)| (stats, renames[*at].as_slice())).collect();
            merged.reserve_for(&room);
            for (stats, at) in rest {
                merged.absorb(stats, &|id| renames[at][id as usize], traces_before[at]);
            }
            (op, merged)
        })
        .collect();
    if matches!(parents, Parents::Any) {
        ops.retain(|(_, s)| s.has_calls());
    }
    let name = |id: u32| names.names[id as usize].clone();
    let key = |op: &(u32, u32)| (names.names[op.0 as usize].as_str(), names.names[op.1 as usize].as_str());
    ops.sort_by(|a, b| b.1.parents().cmp(&a.1.parents()).then_with(|| key(&a.0).cmp(&key(&b.0))));
    ops.truncate(params.limit);
    let operations = ops.into_iter().map(|(op, s)| s.report(op, &params.percentiles, &name, &traces)).collect();
    FanoutResponse {
        operations,
        spans_read: merged_rows + direct_rows,
        spans_merged: merged_rows,
        duplicates_dropped: duplicates,
        blocks_read,
    }
}

impl Querier {
    /// What the fan-out analysis reads blocks with.
    pub(crate) fn fanout_source(&self) -> FanoutSource {
        // Its reads of block data are counted with the query plans'.
        let counted = crate::read_counter::ReadCounter::new(
            Arc::clone(self.storage.object_store()),
            self.metrics.bytes_read.clone(),
        );
        FanoutSource {
            storage: spanlake_schemas::Storage::new(Arc::new(counted)),
            blocks: Arc::clone(&self.blocks),
            memory_limit: self.config.sql_memory_limit,
            memory_gauge: self.metrics.memory.clone(),
            handed_over: self.metrics.handed_over.clone(),
        }
    }

    /// Fan-out analysis of `tenant`'s spans: its work (see [`Part`]) shared
    /// out over the queriers when it is large and they are there, else here.
    pub(crate) async fn fanout(&self, tenant: &TenantId, params: FanoutParams) -> Result<FanoutResponse> {
        let parents = match (&params.traceql, &params.service, &params.operation) {
            (Some(query), _, _) => Parents::Matched(Arc::new(self.matching_spans(tenant, query, &params).await?)),
            (None, None, None) => Parents::Any,
            (None, service, operation) => Parents::Op { service: service.clone(), operation: operation.clone() },
        };
        let (from, to) = (params.start.saturating_sub(WIDEN_NS), params.end.saturating_add(WIDEN_NS));
        let blocks = self.catalog.blocks(tenant, |b| b.overlaps(from, to));
        // Blocks that cannot be read, or are not of the span schema, are skipped (and reported).
        let (blocks, _skipped) = self.blocks.usable(tenant, blocks).await;
        let analyses = match self.spread_fanout(tenant, &params, &parents, &blocks).await? {
            Some(analyses) => analyses,
            None => {
                let source = self.fanout_source();
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
                let merge_rows = MergeRows::default();
                let whole = Part::WHOLE;
                vec![
                    source
                        .analyze(tenant, &params, &parents, &blocks, cores, whole, &merge_rows, source.pool())
                        .await?,
                ]
            }
        };
        Ok(report(analyses, &params, &parents, blocks.len()))
    }

    /// (trace id, span id) of the spans a TraceQL spanset filter selects.
    async fn matching_spans(
        &self,
        tenant: &TenantId,
        query: &str,
        params: &FanoutParams,
    ) -> Result<HashSet<(u128, u64)>> {
        let parsed =
            traceql::parse(query).map_err(|e| QueryError::InvalidParameter { name: "q", reason: e.to_string() })?;
        let filter = match (&parsed.spansets, parsed.stages.is_empty()) {
            (SpansetExpr::Filter(filter), true) => filter.clone(),
            _ => {
                return Err(QueryError::InvalidParameter {
                    name: "q",
                    reason: "a parent filter is one spanset filter, like { resource.service.name = \"frontend\" }"
                        .into(),
                });
            }
        };
        let ctx = self.session(tenant).await?;
        let mut frame = ctx.table(crate::sql::SPANS_AS_STORED).await?.filter(
            col(START_TIME)
                .gt_eq(lit(datafusion::scalar::ScalarValue::TimestampNanosecond(
                    Some(params.start),
                    Some("UTC".into()),
                )))
                .and(col(START_TIME).lt_eq(lit(datafusion::scalar::ScalarValue::TimestampNanosecond(
                    Some(params.end),
                    Some("UTC".into()),
                )))),
        )?;
        if let Some(filter) = &filter {
            frame = frame.filter(crate::search::compile_filter(filter)?)?;
        }
        let mut matched = HashSet::new();
        let mut stream = frame.select_columns(&[TRACE_ID, SPAN_ID])?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let traces = batch.column(0).as_fixed_size_binary();
            let spans = batch.column(1).as_fixed_size_binary();
            for row in 0..batch.num_rows() {
                let trace = u128::from_be_bytes(traces.value(row).try_into().expect("16-byte trace id"));
                matched.insert((trace, u64_of(spans.value(row))));
            }
        }
        Ok(matched)
    }
}

#[cfg(test)]
mod tests;
