//! Blocks: ids that sort by creation time, metadata, and Parquet encoding.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, AsArray, DictionaryArray, RecordBatch, UInt32Array};
use arrow::datatypes::{TimestampNanosecondType, UInt32Type};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::schema::{
    DURATION_NS, END_TIME, EVENTS, LINKS, PARENT_SPAN_ID, RESOURCE_ATTRIBUTES, SCOPE_ATTRIBUTES, SPAN_ATTRIBUTES,
    SPAN_ID, START_TIME, TRACE_ID, span_schema,
};
use crate::{gather, map_column};

/// A block or commit id: `<unix nanos, 20 digits>-<16 random hex>`, so that
/// ids sort by creation time and never collide across processes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlockId(String);

impl BlockId {
    /// A new id stamped with the current time.
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    pub fn at(time: SystemTime) -> Self {
        let nanos = time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Self(format!("{nanos:020}-{:016x}", rand::random::<u64>()))
    }

    /// The smallest id that could be created at `time` (for listing from there on).
    pub fn lower_bound(time: SystemTime) -> String {
        let nanos = time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        format!("{nanos:020}-")
    }

    /// The smallest id at or after a [`BlockId::lower_bound`] string.
    pub fn from_lower_bound(bound: &str) -> Self {
        Self(format!("{bound}{}", "0".repeat(16)))
    }

    /// Creation time in Unix nanoseconds.
    pub fn created_unix_nanos(&self) -> u128 {
        self.0[..20].parse().expect("validated on construction")
    }

    /// Whether this block's file may still be on its way: its id, minted when
    /// its flush began, is younger than `in_flight`. An ingester puts a block
    /// and its commit record at the same time, so a reader can list the
    /// commit a moment before the block's file exists.
    pub fn may_be_in_flight(&self, in_flight: std::time::Duration) -> bool {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        now.saturating_sub(self.created_unix_nanos()) < in_flight.as_nanos()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for BlockId {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid block id {0:?}: expected <20 digits>-<16 hex digits>")]
pub struct InvalidBlockId(String);

impl FromStr for BlockId {
    type Err = InvalidBlockId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == 37
            && s.as_bytes()[20] == b'-'
            && s[..20].bytes().all(|b| b.is_ascii_digit())
            && s[21..].bytes().all(|b| b.is_ascii_hexdigit());
        if valid { Ok(Self(s.to_owned())) } else { Err(InvalidBlockId(s.to_owned())) }
    }
}

impl TryFrom<String> for BlockId {
    type Error = InvalidBlockId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BlockId> for String {
    fn from(id: BlockId) -> Self {
        id.0
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a reader needs to know about a block without opening it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub id: BlockId,
    /// Earliest span start, Unix nanoseconds.
    pub min_time_unix_nano: i64,
    /// Latest span end (or start, of a span that ends before it starts),
    /// Unix nanoseconds.
    pub max_time_unix_nano: i64,
    /// Smallest and largest trace id, lowercase hex.
    pub min_trace_id: String,
    pub max_trace_id: String,
    pub span_count: u64,
    /// Size of the Parquet file in bytes.
    pub size_bytes: u64,
    /// 0 for blocks written by an ingester, +1 per compaction.
    pub compaction_level: u32,
    /// Blocks this one was merged from (empty for ingester blocks).
    #[serde(default)]
    pub sources: Vec<BlockId>,
    /// Distinct trace ids (0 when unknown: blocks written before it was recorded).
    #[serde(default)]
    pub trace_count: u64,
    /// When its newest span was received, Unix nanoseconds (0: the id's time).
    /// Retention counts from here too, so late or replayed spans are kept for
    /// the whole retention period after they arrive.
    #[serde(default)]
    pub ingested_unix_nano: i64,
}

impl BlockMeta {
    /// Whether the block may hold spans of `trace_id` (by its id range).
    pub fn may_contain_trace(&self, trace_id: &[u8; 16]) -> bool {
        let id = hex::encode(trace_id);
        self.min_trace_id <= id && id <= self.max_trace_id
    }

    /// When the block's newest span was received.
    pub fn ingested_unix_nanos(&self) -> i64 {
        if self.ingested_unix_nano > 0 {
            self.ingested_unix_nano
        } else {
            i64::try_from(self.id.created_unix_nanos()).unwrap_or(i64::MAX)
        }
    }

    /// Whether the block's time range overlaps `[start, end]` (Unix nanos).
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.min_time_unix_nano <= end && start <= self.max_time_unix_nano
    }
}

/// Merges span batches into one, sorted by `trace_id`, then `start_time` (the
/// block sort order), copying each row once.
pub fn sort_spans(batches: &[RecordBatch]) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(span_schema()));
    }
    let indices = rows_of(sort_keys(batches));
    let batches: Vec<&RecordBatch> = batches.iter().collect();
    arrow::compute::interleave_record_batch(&batches, &indices)
}

/// (trace id, start, batch, row) of every span, sorted: 32 bytes a key,
/// which the sort moves around.
fn sort_keys(batches: &[RecordBatch]) -> Vec<SortKey> {
    let mut keys: Vec<SortKey> = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for (b, batch) in batches.iter().enumerate() {
        // Columns by position (the span schema's), ids read 16 bytes at a time.
        let trace_ids = batch.column(TRACE_ID_COLUMN).as_fixed_size_binary();
        let starts = batch.column(START_TIME_COLUMN).as_primitive::<TimestampNanosecondType>();
        let ids = trace_ids.value_data().chunks_exact(16);
        // A block's batches and a batch's rows are far fewer than 2^32 (the
        // ingest buffer and Arrow's 32-bit offsets bound them).
        let b = u32::try_from(b).expect("fewer than 2^32 batches");
        for (row, (id, start)) in ids.zip(starts.values()).take(batch.num_rows()).enumerate() {
            let row = u32::try_from(row).expect("fewer than 2^32 rows in a batch");
            keys.push((u128::from_be_bytes(id.try_into().expect("16-byte trace id")), *start, b, row));
        }
    }
    sorted(keys)
}

/// `keys` in order. Trace ids are random, so their top bits spread the keys
/// evenly: one counting pass puts them in buckets of about 16 by those
/// bits, in order, and each bucket is then sorted alone (in cache). Ids
/// that are not random (a time in their top bytes) make fewer, larger
/// buckets, sorted alike.
fn sorted(keys: Vec<SortKey>) -> Vec<SortKey> {
    const PER_BUCKET: usize = 16;
    if keys.len() < 64 * PER_BUCKET {
        let mut keys = keys;
        keys.sort_unstable();
        return keys;
    }
    let bits = (keys.len() / PER_BUCKET).ilog2().min(16);
    let bucket = |key: &SortKey| (key.0 >> (128 - bits)) as usize;
    let mut starts = vec![0; (1 << bits) + 1];
    for key in &keys {
        starts[bucket(key) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut next = starts.clone();
    let mut sorted = vec![(0, 0, 0, 0); keys.len()];
    for key in keys {
        let at = &mut next[bucket(&key)];
        sorted[*at] = key;
        *at += 1;
    }
    for bounds in starts.windows(2) {
        sorted[bounds[0]..bounds[1]].sort_unstable();
    }
    sorted
}

/// A span's place in block order, and where it is: (trace id, start, batch, row).
type SortKey = (u128, i64, u32, u32);

/// The (batch, row) of each key.
fn rows_of(keys: Vec<SortKey>) -> Vec<(usize, usize)> {
    keys.into_iter().map(|(_, _, b, row)| (b as usize, row as usize)).collect()
}

/// Positions of the sort columns in the span schema (checked by a test).
const TRACE_ID_COLUMN: usize = 0;
const START_TIME_COLUMN: usize = 7;

/// Columns whose values are (nearly) all distinct: span ids and nanosecond
/// times. A dictionary would only be built to be thrown away when it
/// outgrows its page, so they are written plain (zstd still compresses them).
const DISTINCT_COLUMNS: [&str; 5] = [SPAN_ID, PARENT_SPAN_ID, START_TIME, END_TIME, DURATION_NS];

/// Durations and end times, written byte stream split: a page's first
/// bytes, then its second bytes, and so on. Their high bytes are alike
/// across a block and their low bytes are noise, so zstd finds long runs in
/// the first streams and keeps the last nearly as they are: on the bench's
/// blocks `duration_ns` takes 3.2 bytes a span against 3.9, and zstd
/// undoes it about four times faster (a quantile of durations reads it for
/// every span). `start_time` stays plain: a trace's spans start close
/// together, which zstd finds in plain values (2.7 bytes a span against
/// 3.3 split), and its decompression gains no more than Parquet's reader
/// spends joining the streams again. BENCHMARKS.md has the measurements.
const SPLIT_COLUMNS: [&str; 2] = [END_TIME, DURATION_NS];

/// The leaf columns inside attribute maps, events and links. Query engines
/// prune on top-level columns only (DataFusion cannot map a predicate on
/// `span_attributes['k']` to a leaf's statistics), and tag lookups use the
/// block's tag summary, so these leaves carry no statistics: computing
/// min and max of every attribute value cost CPU at ingest and bytes in
/// every footer, for nothing.
fn nested_leaves() -> &'static [ColumnPath] {
    static LEAVES: std::sync::OnceLock<Vec<ColumnPath>> = std::sync::OnceLock::new();
    LEAVES.get_or_init(|| {
        let nested = [RESOURCE_ATTRIBUTES, SCOPE_ATTRIBUTES, SPAN_ATTRIBUTES, EVENTS, LINKS];
        leaf_paths().iter().filter(|path| nested.contains(&path.parts()[0].as_str())).cloned().collect()
    })
}

/// How block Parquet files are written: zstd, page statistics and index,
/// a bloom filter on `trace_id` sized for `distinct_traces`, sorting columns declared.
pub fn writer_properties(distinct_traces: usize) -> WriterProperties {
    writer_properties_builder(distinct_traces).build()
}

fn writer_properties_builder(distinct_traces: usize) -> WriterPropertiesBuilder {
    let trace_id = ColumnPath::from(TRACE_ID);
    let fast_zstd = Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level"));
    let builder = DISTINCT_COLUMNS.into_iter().fold(WriterProperties::builder(), |builder, column| {
        builder.set_column_dictionary_enabled(ColumnPath::from(column), false)
    });
    let builder = SPLIT_COLUMNS.into_iter().fold(builder, |builder, column| {
        builder.set_column_encoding(ColumnPath::from(column), Encoding::BYTE_STREAM_SPLIT)
    });
    // Span ids are random: zstd finds nothing in them (8.00 bytes a span
    // compressed or not, on the spread bench's blocks), and every page's
    // min and max span the whole range, so they would prune nothing. They
    // are written as they are, without statistics.
    let builder = builder
        .set_column_compression(ColumnPath::from(SPAN_ID), Compression::UNCOMPRESSED)
        .set_column_statistics_enabled(ColumnPath::from(SPAN_ID), EnabledStatistics::None);
    nested_leaves()
        .iter()
        .fold(builder, |builder, leaf| builder.set_column_statistics_enabled(leaf.clone(), EnabledStatistics::None))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        // zstd's level 1 finds as much in trace ids (a trace's spans repeat
        // one) and parent ids (siblings repeat one) as level 3, faster: on
        // the spread bench's blocks 1.20 and 5.62 bytes a span against 1.20
        // and 5.63, in 4.2 and 9.4 ns against 5.0 and 16.7
        // (`benches/scripts/zstd_levels.py`, BENCHMARKS.md).
        .set_column_compression(trace_id.clone(), fast_zstd)
        .set_column_compression(ColumnPath::from(PARENT_SPAN_ID), fast_zstd)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_data_page_row_count_limit(8 * 1024)
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(trace_id, distinct_traces.clamp(64, 1 << 20) as u64)
        .set_sorting_columns(Some(vec![
            SortingColumn { column_idx: TRACE_ID_COLUMN as i32, descending: false, nulls_first: false },
            SortingColumn { column_idx: START_TIME_COLUMN as i32, descending: false, nulls_first: false },
        ]))
        .set_created_by(concat!("spanlake ", env!("CARGO_PKG_VERSION")).to_owned())
}

/// The leaf columns of the span schema (Parquet's), in order.
fn leaf_paths() -> &'static [ColumnPath] {
    static LEAVES: std::sync::OnceLock<Vec<ColumnPath>> = std::sync::OnceLock::new();
    LEAVES.get_or_init(|| {
        let schema = parquet::arrow::ArrowSchemaConverter::new().convert(&span_schema()).expect("span schema converts");
        schema.columns().iter().map(|column| column.path().clone()).collect()
    })
}

/// The leaf columns whose pages in `batches` hold nothing but levels that
/// are all alike: a list or map with no entry in the block (events, links,
/// scope attributes), a top-level column that is all null. Compressing them
/// would save nothing, and Parquet makes a zstd compressor and decompressor
/// for every column chunk it writes, which costs more than such a page.
/// (A null leaf inside a map that has entries is still compressed: its
/// levels follow the entries, and compress well.)
fn empty_leaves(batches: &[RecordBatch]) -> Vec<ColumnPath> {
    let mut has_values = Vec::with_capacity(leaf_paths().len());
    for column in 0..span_schema().fields().len() {
        let arrays: Vec<&dyn arrow::array::Array> = batches.iter().map(|b| b.column(column).as_ref()).collect();
        leaves_with_values(&arrays, &mut has_values);
    }
    debug_assert_eq!(has_values.len(), leaf_paths().len());
    leaf_paths().iter().zip(has_values).filter(|(_, has)| !has).map(|(path, _)| path.clone()).collect()
}

/// Whether each leaf under `arrays` (one top-level column of several
/// batches) is to be compressed, in Parquet's leaf order: `false` for the
/// leaves of a list or map without entries, and for a flat column that is
/// all null.
fn leaves_with_values(arrays: &[&dyn arrow::array::Array], out: &mut Vec<bool>) {
    use arrow::array::Array;
    use arrow::datatypes::{DataType, UInt32Type};
    // A grouped column holds its groups' values (batches may mix the two).
    let arrays: Vec<&dyn Array> = arrays
        .iter()
        .map(|a| match a.as_dictionary_opt::<UInt32Type>() {
            Some(grouped) => grouped.values().as_ref(),
            None => *a,
        })
        .collect();
    let Some(data_type) = arrays.first().map(|a| a.data_type()) else { return };
    let leaves = leaf_count(data_type);
    let entries = |a: &&dyn Array| match a.data_type() {
        DataType::Map(..) => a.as_map().entries().len(),
        DataType::List(_) => a.as_list::<i32>().values().len(),
        _ => 0,
    };
    let has = match data_type {
        DataType::Map(..) | DataType::List(_) => arrays.iter().any(|a| entries(a) > 0),
        _ => arrays.iter().any(|a| a.len() > a.null_count()),
    };
    out.extend(std::iter::repeat_n(has, leaves));
}

/// The first Parquet leaf column of top-level column `column`.
fn first_leaf(schema: &arrow::datatypes::Schema, column: usize) -> usize {
    schema.fields()[..column].iter().map(|f| leaf_count(f.data_type())).sum()
}

/// How many Parquet leaf columns a column of `data_type` makes.
fn leaf_count(data_type: &arrow::datatypes::DataType) -> usize {
    use arrow::datatypes::DataType;
    match data_type {
        DataType::Struct(fields) => fields.iter().map(|f| leaf_count(f.data_type())).sum(),
        DataType::Map(entries, _) => leaf_count(entries.data_type()),
        DataType::List(item) => leaf_count(item.data_type()),
        _ => 1,
    }
}

/// An encoded block, ready to upload.
#[derive(Debug)]
pub struct EncodedBlock {
    pub meta: BlockMeta,
    pub parquet: bytes::Bytes,
}

/// Most rows in one row group of a block (as `writer_properties` says).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Sorts `batches` into one block and encodes it as Parquet. Runs on the
/// caller's thread: call it from a blocking pool. `batches` are of the
/// [`span_schema`] or of the [`crate::schema::grouped_span_schema`] (the
/// ingester's, whose resource and scope columns are expanded here).
///
/// The block is sorted by keys, and its columns are written to Parquet
/// from the batches as they are; no sorted copy of the block is made:
/// - the attribute maps (`map_column`) and the strings and counts
///   (`flat_column`) from each batch's values coded once per block, their
///   pages laid out from the codes in block order; the tag summary takes
///   its entries and intrinsic values from the same codes;
/// - the ids, times and durations (`plain_column`) copied from the batches
///   in block order into their pages, a column at a time;
/// - events and links through Arrow's writer, each put in block order
///   first (a gather over every batch, a run of rows at a time).
///
/// Each column chunk carries what Arrow's writer would give it with the
/// block's properties: encodings, statistics, column index, bloom filter.
pub fn encode_block(batches: &[RecordBatch], id: BlockId) -> Result<EncodedBlock, parquet::errors::ParquetError> {
    let keys = sort_keys(batches);
    let traces = keys.iter().enumerate().filter(|(i, k)| *i == 0 || keys[i - 1].0 != k.0).count();
    let mut meta = describe(batches, &keys, id);
    meta.trace_count = traces as u64;
    // Blocks take about 30 bytes a span; the buffer grows past that.
    let mut out = Vec::with_capacity(keys.len() * 32);
    let schema = span_schema();
    let properties = empty_leaves(batches)
        .into_iter()
        .fold(writer_properties_builder(traces), |builder, leaf| {
            builder.set_column_compression(leaf, Compression::UNCOMPRESSED)
        })
        .build();
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(properties))?;
    // The attribute maps, coded once for the block (their pages are
    // written from the codes, and the tag summary takes from them only
    // the entries new to it).
    let map_columns: Vec<(usize, Vec<ArrayRef>)> = MAP_COLUMNS
        .iter()
        .map(|name| {
            let column = schema.index_of(name).expect("a map column of the span schema");
            Ok((column, column_of(batches, column)?))
        })
        .collect::<Result<_, arrow::error::ArrowError>>()?;
    let coded: Vec<(usize, map_column::CodedMap<'_>)> = map_columns
        .iter()
        .map(|(column, arrays)| {
            let maps = arrays
                .iter()
                .map(|a| match a.as_dictionary_opt::<UInt32Type>() {
                    Some(grouped) => grouped.values().as_map(),
                    None => a.as_map(),
                })
                .collect();
            Ok((*column, map_column::CodedMap::new(maps)?))
        })
        .collect::<Result<_, parquet::errors::ParquetError>>()?;
    // The flat strings and counts, coded once for the block (their pages
    // are written from the codes, with their statistics).
    let flat_columns: Vec<(usize, Vec<ArrayRef>)> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| crate::flat_column::handles(field.data_type()))
        .map(|(column, _)| Ok((column, column_of(batches, column)?)))
        .collect::<Result<_, arrow::error::ArrowError>>()?;
    let flat = crate::flat_column::CodedFlats::new(
        &flat_columns.iter().map(|(_, arrays)| arrays.iter().map(|a| a.as_ref()).collect()).collect::<Vec<_>>(),
    )?;
    let mut tags = crate::tag_summary::TagSummaryBuilder::default();
    let mut seen: Vec<map_column::Seen> = coded.iter().map(|_| map_column::Seen::default()).collect();
    let mut seen_values: Vec<Vec<bool>> = flat_columns.iter().map(|_| Vec::new()).collect();
    // Each intrinsic string column and its place among the coded columns.
    let intrinsics: Vec<(&str, usize)> = crate::tag_summary::INTRINSIC_COLUMNS
        .into_iter()
        .filter_map(|name| Some((name, flat_columns.iter().position(|(c, _)| schema.field(*c).name() == name)?)))
        .collect();
    for b in 0..batches.len() {
        // In the order TagSummaryBuilder::add takes a batch: its maps, then its intrinsic columns.
        for scope in crate::tag_summary::ATTRIBUTE_SCOPES {
            let at = MAP_COLUMNS.iter().position(|c| *c == scope).expect("a summarized map is coded");
            tags.add_scope(scope);
            coded[at].1.each_new_entry(b, &mut seen[at], |key, value| tags.add_entry(scope, key, value));
        }
        // Its intrinsic string columns, their values new to the block
        // found by their codes.
        for &(name, at) in &intrinsics {
            let Some(mut values) = tags.intrinsic(name) else { continue };
            flat.each_new_value(at, b, &mut seen_values[at], |value| values.add(value));
        }
    }
    writer.append_key_value_metadata(tags.finish().to_footer());
    let (mut file, _) = writer.into_serialized_writer()?;
    // Arrow's writers for the columns written through them (events and
    // links), and only those: making a writer for every leaf of every row
    // group cost more than some of the hand-written columns.
    let through_arrow: Vec<arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(column, field)| {
            !coded.iter().any(|(c, _)| c == column)
                && !crate::flat_column::handles(field.data_type())
                && !crate::plain_column::handles(field.data_type())
        })
        .map(|(_, field)| field.clone())
        .collect();
    let arrow_schema = std::sync::Arc::new(arrow::datatypes::Schema::new(through_arrow));
    let arrow_leaves = parquet::arrow::ArrowSchemaConverter::new().convert(&arrow_schema)?;
    let indices = rows_of(keys);
    for rows in indices.chunks(ROW_GROUP_ROWS) {
        // The deprecated call takes a schema of its own; its replacement
        // (`ArrowRowGroupWriterFactory`) makes writers for every leaf of the file.
        #[allow(deprecated)]
        let mut writers =
            parquet::arrow::arrow_writer::get_column_writers(&arrow_leaves, file.properties(), &arrow_schema)?
                .into_iter();
        let mut chunks = Vec::new();
        // Runs of rows that follow each other in one batch.
        let mut ranges = Vec::with_capacity(rows.len());
        rows.iter()
            .for_each(|&(array, row)| gather::push(&mut ranges, gather::Rows { array, start: row, end: row + 1 }));
        // The rows of the groups' values, by the keys that name them: a
        // resource's (or scope's) columns share one set of keys.
        let mut groups = GroupRows::default();
        // The flat columns' chunks, in one pass over the rows.
        let flat_leaves: Vec<_> =
            flat_columns.iter().map(|(column, _)| file.schema_descr().column(first_leaf(&schema, *column))).collect();
        let mut flat_chunks = flat.write(&flat_leaves, file.properties(), rows)?.into_iter();
        let mut leaf = 0;
        for (column, field) in schema.fields().iter().enumerate() {
            if let Some(at) = coded.iter().position(|(c, _)| *c == column) {
                // Written from the codes of each batch's entries.
                let arrays: Vec<&dyn arrow::array::Array> = map_columns[at].1.iter().map(|a| a.as_ref()).collect();
                let map_rows = match &grouped(&arrays) {
                    Some(dictionaries) => groups.of(dictionaries, &ranges, rows.len())?,
                    None => ranges.as_slice(),
                };
                let leaves: Vec<_> = (leaf..leaf + map_column::LEAVES).map(|i| file.schema_descr().column(i)).collect();
                for (bytes, close) in coded[at].1.write(&leaves, file.properties(), map_rows)? {
                    chunks.push(Chunk::Written(bytes, close));
                }
                leaf += map_column::LEAVES;
                continue;
            }
            if flat_columns.iter().any(|(c, _)| *c == column) {
                let (bytes, close) = flat_chunks.next().expect("a chunk per flat column");
                chunks.push(Chunk::Written(bytes, close));
                leaf += 1;
                continue;
            }
            let columns = column_of(batches, column)?;
            let arrays: Vec<&dyn arrow::array::Array> = columns.iter().map(|a| a.as_ref()).collect();
            if crate::plain_column::handles(field.data_type()) {
                let descr = file.schema_descr().column(leaf);
                let (bytes, close) =
                    crate::plain_column::PlainColumn::new(arrays)?.write(&descr, file.properties(), rows)?;
                chunks.push(Chunk::Written(bytes, close));
                leaf += 1;
                continue;
            }
            let sorted = match grouped(&arrays) {
                Some(dictionaries) => {
                    let values: Vec<&dyn arrow::array::Array> =
                        dictionaries.iter().map(|d| d.values().as_ref()).collect();
                    gather::gather(&values, groups.of(&dictionaries, &ranges, rows.len())?)?
                }
                // Every other column is gathered a run of rows at a time
                // (a row's entries, for nested columns).
                None => gather::gather(&arrays, &ranges)?,
            };
            for leaf_column in parquet::arrow::arrow_writer::compute_leaves(field, &sorted)? {
                let mut writer = writers.next().expect("a writer per leaf column");
                writer.write(&leaf_column)?;
                chunks.push(Chunk::Arrow(writer.close()?));
                leaf += 1;
            }
        }
        let mut row_group = file.next_row_group()?;
        for chunk in chunks {
            match chunk {
                Chunk::Arrow(chunk) => chunk.append_to_row_group(&mut row_group)?,
                Chunk::Written(bytes, close) => row_group.append_column(&bytes, close)?,
            }
        }
        row_group.close()?;
    }
    file.close()?;
    meta.size_bytes = out.len() as u64;
    Ok(EncodedBlock { meta, parquet: out.into() })
}

/// The attribute maps, written from their entries' codes (`map_column`).
const MAP_COLUMNS: [&str; 3] = [RESOURCE_ATTRIBUTES, SCOPE_ATTRIBUTES, SPAN_ATTRIBUTES];

/// A column chunk of a row group: from Arrow's writer, or written here.
enum Chunk {
    Arrow(parquet::arrow::arrow_writer::ArrowColumnChunk),
    Written(bytes::Bytes, parquet::column::writer::ColumnCloseResult),
}

/// The rows of grouped columns' values, per set of keys: a resource's (or
/// scope's) columns share their keys, and so these rows.
#[derive(Default)]
struct GroupRows {
    known: Vec<(Vec<*const u32>, Vec<gather::Rows>)>,
}

impl GroupRows {
    fn of(
        &mut self,
        dictionaries: &[&DictionaryArray<UInt32Type>],
        ranges: &[gather::Rows],
        len: usize,
    ) -> Result<&[gather::Rows], arrow::error::ArrowError> {
        let keys: Vec<&UInt32Array> = dictionaries.iter().map(|d| d.keys()).collect();
        let id: Vec<*const u32> = keys.iter().map(|k| k.values().as_ptr()).collect();
        let at = match self.known.iter().position(|(known, _)| *known == id) {
            Some(at) => at,
            None => {
                self.known.push((id, gather::value_rows(&keys, ranges, len)?));
                self.known.len() - 1
            }
        };
        Ok(&self.known[at].1)
    }
}

/// The arrays as dictionaries, when they are (the grouped resource and
/// scope columns).
fn grouped<'a>(arrays: &[&'a dyn arrow::array::Array]) -> Option<Vec<&'a DictionaryArray<UInt32Type>>> {
    arrays.iter().map(|a| a.as_dictionary_opt::<UInt32Type>()).collect()
}

/// Column `column` of every batch, all of one type: batches of the span
/// schema and of the grouped span schema together come out plain.
fn column_of(batches: &[RecordBatch], column: usize) -> Result<Vec<ArrayRef>, arrow::error::ArrowError> {
    let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(column).clone()).collect();
    if arrays.iter().all(|a| a.data_type() == arrays[0].data_type()) {
        return Ok(arrays);
    }
    arrays.iter().map(|a| gather::plain(a.as_ref())).collect()
}

/// Distinct trace ids of a batch sorted by trace id (runs of equal ids).
pub fn distinct_sorted_trace_ids(batch: &RecordBatch) -> usize {
    let ids = batch.column_by_name(TRACE_ID).expect("span schema").as_fixed_size_binary();
    (0..batch.num_rows()).filter(|&i| i == 0 || ids.value(i) != ids.value(i - 1)).count()
}

/// Metadata of the block `batches` make in the order of `keys` (size and
/// trace count left at 0).
fn describe(batches: &[RecordBatch], keys: &[SortKey], id: BlockId) -> BlockMeta {
    let column = |batch: &RecordBatch, name: &str| {
        batch.column_by_name(name).expect("span schema").as_primitive::<TimestampNanosecondType>().clone()
    };
    let min_time = batches.iter().filter_map(|b| arrow::compute::min(&column(b, START_TIME))).min();
    // The latest end, or start: a span may end before it starts (clients
    // send such), and pruning by start must still find it.
    let max_time = batches
        .iter()
        .flat_map(|b| [arrow::compute::max(&column(b, END_TIME)), arrow::compute::max(&column(b, START_TIME))])
        .flatten()
        .max();
    let trace_hex = |key: Option<&SortKey>| key.map(|k| hex::encode(k.0.to_be_bytes())).unwrap_or_default();
    BlockMeta {
        id,
        min_time_unix_nano: min_time.unwrap_or(0),
        max_time_unix_nano: max_time.unwrap_or(0),
        min_trace_id: trace_hex(keys.first()),
        max_trace_id: trace_hex(keys.last()),
        span_count: keys.len() as u64,
        size_bytes: 0,
        compaction_level: 0,
        sources: Vec::new(),
        trace_count: 0,
        ingested_unix_nano: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucketed sort orders keys as a plain sort does: random ids, ids
    /// that share their top bytes (one bucket), repeated ids and starts.
    #[test]
    fn keys_sort_as_a_plain_sort_sorts_them() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (n, shared_top) in [(10, false), (5_000, false), (100_000, false), (20_000, true)] {
            let keys: Vec<SortKey> = (0..n)
                .map(|i| {
                    let id: u128 = rng.random_range(0..u128::MAX / 2) * 2;
                    let id = if shared_top { id >> 40 | 0x5f00_0000 << 96 } else { id };
                    (id, rng.random_range(-3..3), (i % 7) as u32, i as u32)
                })
                .flat_map(|key| [key, (key.0, key.1 + 1, key.2, key.3)])
                .collect();
            let mut expected = keys.clone();
            expected.sort_unstable();
            assert_eq!(sorted(keys), expected, "{n} keys");
        }
    }

    #[test]
    fn leaves_of_empty_lists_and_null_columns_are_written_uncompressed() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::trace::v1::Span;
        let span = |i: u8| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: "GET /".into(),
            attributes: vec![KeyValue {
                key: "http.route".into(),
                value: Some(AnyValue { value: Some(Value::StringValue("/".into())) }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let batch = crate::encode::batch_of((1..=50).map(span).collect());
        let block = encode_block(&[batch], BlockId::new()).unwrap();
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(block.parquet).unwrap();
        let row_group = parquet::file::reader::FileReader::metadata(&reader).row_group(0).clone();
        let codec = |path: &str| {
            let column = row_group.columns().iter().find(|c| c.column_path().string() == path);
            column.unwrap_or_else(|| panic!("no leaf {path}")).compression()
        };
        assert_eq!(row_group.columns().len(), leaf_paths().len());
        for compressed in ["trace_id", "name", "span_attributes.key_value.key", "span_attributes.key_value.value.str"] {
            assert!(matches!(codec(compressed), Compression::ZSTD(_)), "{compressed}");
        }
        // A null leaf inside a map with entries keeps its compression: its levels follow the entries.
        assert!(matches!(codec("span_attributes.key_value.value.int"), Compression::ZSTD(_)));
        // Random span ids are not worth a compressor.
        assert_eq!(codec("span_id"), Compression::UNCOMPRESSED);
        for empty in
            ["trace_state", "scope_attributes.key_value.key", "events.list.item.name", "links.list.item.trace_id"]
        {
            assert_eq!(codec(empty), Compression::UNCOMPRESSED, "{empty}");
        }
    }

    #[test]
    fn a_span_that_ends_before_it_starts_is_within_its_blocks_time_range() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        let span = |i: u8, start: u64, end: u64| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        };
        let batch = crate::encode::batch_of(vec![span(1, 100, 150), span(2, 900, 300)]);
        let block = encode_block(&[batch], BlockId::new()).unwrap();
        assert_eq!((block.meta.min_time_unix_nano, block.meta.max_time_unix_nano), (100, 900));
    }

    #[test]
    fn sort_columns_are_where_the_schema_has_them() {
        let schema = span_schema();
        assert_eq!(schema.field(TRACE_ID_COLUMN).name(), TRACE_ID);
        assert_eq!(schema.field(START_TIME_COLUMN).name(), START_TIME);
    }

    #[test]
    fn sorting_merges_batches_by_trace_then_start() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        let batch = |spans: &[(u8, u64)]| {
            let spans = spans
                .iter()
                .map(|(t, start)| Span {
                    trace_id: vec![*t; 16],
                    span_id: vec![*t; 8],
                    start_time_unix_nano: *start,
                    ..Default::default()
                })
                .collect();
            crate::encode::batch_of(spans)
        };
        let sorted = sort_spans(&[batch(&[(3, 5), (1, 9)]), batch(&[(1, 2), (2, 7)])]).unwrap();
        let traces = sorted.column(0).as_fixed_size_binary();
        let starts = sorted.column_by_name(START_TIME).unwrap().as_primitive::<TimestampNanosecondType>();
        let got: Vec<(u8, i64)> = (0..4).map(|i| (traces.value(i)[0], starts.value(i))).collect();
        assert_eq!(got, vec![(1, 2), (1, 9), (2, 7), (3, 5)]);
        assert_eq!(sort_spans(&[]).unwrap().num_rows(), 0);
        // A sliced batch sorts its own rows only.
        let sliced = batch(&[(9, 1), (4, 3), (2, 8), (7, 0)]).slice(1, 2);
        let sorted = sort_spans(&[sliced]).unwrap();
        let traces = sorted.column(0).as_fixed_size_binary();
        assert_eq!((0..2).map(|i| traces.value(i)[0]).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn block_ids_sort_by_time_and_parse() {
        let a = BlockId::at(UNIX_EPOCH + std::time::Duration::from_secs(5));
        let b = BlockId::at(UNIX_EPOCH + std::time::Duration::from_secs(60));
        assert!(a < b);
        assert_eq!(a.as_str().parse::<BlockId>().unwrap(), a);
        assert_eq!(a.created_unix_nanos(), 5_000_000_000);
        assert!("../x".parse::<BlockId>().is_err());
        assert!(BlockId::lower_bound(UNIX_EPOCH + std::time::Duration::from_secs(60)).as_str() <= b.as_str());
    }
}
