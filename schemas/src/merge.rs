//! Streaming k-way merge of sorted span batches, dropping duplicate spans
//! (compaction writes its output; fan-out analysis reads traces whole from it).
//!
//! Inputs are sorted by (`trace_id`, `start_time`), as every block is. The
//! output has the same order and holds each span once: spans with equal
//! (`trace_id`, `span_id`, `kind`) — a client retry, a re-sent batch — are
//! kept from the first input that has them. Memory: one batch per input plus
//! one output batch; the duplicate check only remembers the current trace.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::schema::{KIND, SPAN_ID, START_TIME, TRACE_ID};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::error::ArrowError;
use futures::stream::{BoxStream, StreamExt};

/// A sorted input: one block's batches in order.
pub type SortedInput = BoxStream<'static, Result<RecordBatch, ArrowError>>;

/// What a merge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeStats {
    pub rows_in: u64,
    pub rows_out: u64,
    pub duplicates: u64,
}

/// One input's current batch and position.
struct Cursor {
    input: SortedInput,
    /// Index of the current batch in the merger's arena.
    batch: usize,
    row: usize,
    keys: Vec<(u128, i64)>,
}

/// Where merged batches go, in order (a Parquet writer, or a `Vec` in tests).
pub trait BatchSink {
    fn write(&mut self, batch: RecordBatch) -> impl Future<Output = Result<(), ArrowError>> + Send;
}

impl BatchSink for Vec<RecordBatch> {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), ArrowError> {
        self.push(batch);
        Ok(())
    }
}

/// Per-row identity for de-duplication within one trace: (span id, kind).
fn span_key(batch: &RecordBatch, row: usize) -> (u64, u64) {
    let span = batch.column_by_name(SPAN_ID).expect("span schema").as_fixed_size_binary().value(row);
    let kind = batch.column_by_name(KIND).expect("span schema").as_string::<i32>().value(row);
    span_identity(span, kind)
}

/// Remembers the spans of the current trace of a stream sorted by trace id,
/// to drop a second copy of a span: equal (`span_id`, `kind`) within a trace.
/// Most traces are small: their spans are kept in a list searched from the
/// end (a retried copy usually follows its original closely); a trace past
/// 64 spans moves to a hash set.
#[derive(Debug, Default)]
pub struct TraceDedup {
    trace: Option<u128>,
    list: Vec<(u64, u64)>,
    set: HashSet<(u64, u64)>,
}

/// Spans of a trace searched as a list before a set is built.
const LIST_LIMIT: usize = 64;

impl TraceDedup {
    /// Whether this row is the first copy of its span; rows must come
    /// grouped by trace.
    pub fn first(&mut self, trace: u128, key: (u64, u64)) -> bool {
        if self.trace != Some(trace) {
            self.trace = Some(trace);
            self.list.clear();
            self.set.clear();
        }
        if !self.set.is_empty() {
            return self.set.insert(key);
        }
        if self.list.iter().rev().any(|k| *k == key) {
            return false;
        }
        self.list.push(key);
        if self.list.len() > LIST_LIMIT {
            self.set.extend(self.list.drain(..));
        }
        true
    }
}

/// A span's identity within its trace: (span id, kind).
pub fn span_identity(span_id: &[u8], kind: &str) -> (u64, u64) {
    (span_id.try_into().map(u64::from_be_bytes).unwrap_or_default(), kind_code(kind))
}

/// A number per span kind without allocating (the schema's kinds are a closed set).
fn kind_code(kind: &str) -> u64 {
    match kind {
        "unspecified" => 0,
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        other => {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            other.hash(&mut hasher);
            hasher.finish() | (1 << 63)
        }
    }
}

fn sort_keys(batch: &RecordBatch) -> Vec<(u128, i64)> {
    let traces = batch.column_by_name(TRACE_ID).expect("span schema").as_fixed_size_binary();
    let starts = batch.column_by_name(START_TIME).expect("span schema").as_primitive::<TimestampNanosecondType>();
    (0..batch.num_rows())
        .map(|row| (u128::from_be_bytes(traces.value(row).try_into().expect("16-byte trace id")), starts.value(row)))
        .collect()
}

/// Merges `inputs` into batches of at most `batch_rows` rows, written to `sink` in order.
pub async fn merge_sorted(
    inputs: Vec<SortedInput>,
    batch_rows: usize,
    sink: &mut impl BatchSink,
) -> Result<MergeStats, ArrowError> {
    let mut stats = MergeStats::default();
    let mut arena: Vec<RecordBatch> = Vec::new();
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut heap = BinaryHeap::new();
    for mut input in inputs {
        if let Some(batch) = next_non_empty(&mut input).await? {
            stats.rows_in += batch.num_rows() as u64;
            let keys = sort_keys(&batch);
            arena.push(batch);
            heap.push(Reverse((keys[0], cursors.len())));
            cursors.push(Cursor { input, batch: arena.len() - 1, row: 0, keys });
        }
    }
    let mut picked: Vec<(usize, usize)> = Vec::with_capacity(batch_rows);
    let mut dedup = TraceDedup::default();
    while let Some(Reverse(((trace, _), i))) = heap.pop() {
        let cursor = &mut cursors[i];
        if dedup.first(trace, span_key(&arena[cursor.batch], cursor.row)) {
            picked.push((cursor.batch, cursor.row));
        } else {
            stats.duplicates += 1;
        }
        cursor.row += 1;
        if cursor.row == cursor.keys.len() {
            if let Some(batch) = next_non_empty(&mut cursor.input).await? {
                stats.rows_in += batch.num_rows() as u64;
                cursor.keys = sort_keys(&batch);
                cursor.row = 0;
                arena.push(batch);
                cursor.batch = arena.len() - 1;
            } else {
                cursor.keys.clear();
            }
        }
        if cursor.row < cursor.keys.len() {
            heap.push(Reverse((cursor.keys[cursor.row], i)));
        }
        if picked.len() >= batch_rows {
            stats.rows_out += flush(&mut arena, &mut picked, &mut cursors, sink).await?;
        }
    }
    stats.rows_out += flush(&mut arena, &mut picked, &mut cursors, sink).await?;
    Ok(stats)
}

async fn next_non_empty(input: &mut SortedInput) -> Result<Option<RecordBatch>, ArrowError> {
    while let Some(batch) = input.next().await {
        let batch = batch?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

/// Emits the picked rows as one batch and drops arena batches no cursor needs.
async fn flush(
    arena: &mut Vec<RecordBatch>,
    picked: &mut Vec<(usize, usize)>,
    cursors: &mut [Cursor],
    sink: &mut impl BatchSink,
) -> Result<u64, ArrowError> {
    if picked.is_empty() {
        return Ok(0);
    }
    let batches: Vec<&RecordBatch> = arena.iter().collect();
    let out = arrow::compute::interleave_record_batch(&batches, picked)?;
    let rows = out.num_rows() as u64;
    sink.write(out).await?;
    picked.clear();
    // Keep only the batches cursors are still reading; renumber them.
    let mut kept = Vec::new();
    for cursor in cursors.iter_mut().filter(|c| c.row < c.keys.len()) {
        kept.push(arena[cursor.batch].clone());
        cursor.batch = kept.len() - 1;
    }
    *arena = kept;
    Ok(rows)
}

#[cfg(test)]
mod tests;
