//! Where each trace lies in a block, and which traces need merging to be
//! read once.
//!
//! Every block is sorted by trace id, so a trace's spans in a block are one
//! run of rows. A span can be stored twice only within one trace (a retried
//! export), so a trace that lies in one block, with no span twice there, is
//! read whole and once from that block alone. Only the rows of the other
//! traces (in two or more overlapping blocks, or with a span twice in one)
//! need the trace-ordered merge that drops second copies; every other row is
//! read in parallel. The index of a block is its trace ids and where their
//! runs start, read once from its key columns and kept (blocks are
//! immutable).

use std::ops::Range;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use spanlake_schemas::merge::{TraceDedup, span_identity};
use spanlake_schemas::schema::{KIND, SPAN_ID, TRACE_ID};

/// Traces past which a block is not indexed (it is read through the merge
/// instead): its index would hold 40 MiB, outside the query's pool while it
/// is built.
pub(crate) const MAX_INDEXED_TRACES: usize = 2 << 20;

/// One block's traces: distinct trace ids, where their rows start, and
/// which hold a span twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TraceIndex {
    /// Distinct trace ids, ascending.
    ids: Vec<u128>,
    /// Trace `i` is rows `starts[i]..starts[i + 1]`; the last entry is the
    /// block's row count. Empty when the block is not sorted by trace id.
    starts: Vec<u32>,
    /// Traces (indices into `ids`) with a span stored twice in this block, ascending.
    repeated: Vec<u32>,
    rows: u32,
}

impl TraceIndex {
    /// The block's rows.
    pub(crate) fn rows(&self) -> u32 {
        self.rows
    }

    /// What the index holds in memory, for the cache's bound.
    pub(crate) fn bytes(&self) -> usize {
        self.ids.capacity() * 16 + self.starts.capacity() * 4 + self.repeated.capacity() * 4 + 64
    }

    /// Whether the block's rows are sorted by trace id (every block is
    /// written so; one that is not is read through the merge whole).
    fn sorted(&self) -> bool {
        self.starts.len() == self.ids.len() + 1
    }

    /// Where to cut the block into pieces of whole traces, one piece per
    /// row group: the first trace start at or after each of `row_group_starts`
    /// (ascending), as row offsets from 0 to the block's rows. An unsorted
    /// block is one piece.
    pub(crate) fn cuts(&self, row_group_starts: &[u32]) -> Vec<u32> {
        let mut cuts = vec![0];
        if self.sorted() {
            for &start in row_group_starts {
                let at = self.starts.partition_point(|&s| s < start);
                if let Some(&cut) = self.starts.get(at)
                    && cut > *cuts.last().expect("starts with 0")
                    && cut < self.rows
                {
                    cuts.push(cut);
                }
            }
        }
        cuts.push(self.rows);
        cuts
    }

    /// The first row of the traces at or above `trace` (the block's rows
    /// when there is none), or None when the block is not sorted.
    pub(crate) fn first_row_from(&self, trace: u128) -> Option<u32> {
        self.sorted().then(|| self.starts[self.ids.partition_point(|&id| id < trace)])
    }

    /// Trace ids that cut this block's traces into up to `bands` runs of
    /// about equal count: ascending and distinct, each the first trace of a
    /// run but the first (empty for one band, or a block of one trace).
    pub(crate) fn band_edges(&self, bands: usize) -> Vec<u128> {
        if self.ids.is_empty() {
            return Vec::new();
        }
        let mut edges: Vec<u128> = (1..bands.max(1)).map(|i| self.ids[i * self.ids.len() / bands]).collect();
        edges.dedup();
        edges.retain(|&id| Some(&id) != self.ids.first());
        edges
    }

    /// The rows of those of `traces` (ascending) this block holds, as
    /// ascending ranges; None when the block is not sorted.
    pub(crate) fn rows_of_traces(&self, traces: &[u128]) -> Option<Vec<Range<u32>>> {
        let mut ranges = Vec::new();
        if self.sorted() {
            let (low, high) = (self.ids.first().copied().unwrap_or(0), self.ids.last().copied().unwrap_or(0));
            let from = traces.partition_point(|&t| t < low);
            for &trace in traces[from..].iter().take_while(|&&t| t <= high) {
                if let Ok(i) = self.ids.binary_search(&trace) {
                    push_range(&mut ranges, self.run(i));
                }
            }
        }
        self.sorted().then_some(ranges)
    }

    /// The rows of the trace that holds row `row`; None when the block is
    /// not sorted or has no such row.
    pub(crate) fn trace_of_row(&self, row: u32) -> Option<Range<u32>> {
        (self.sorted() && row < self.rows).then(|| self.run(self.starts.partition_point(|&start| start <= row) - 1))
    }

    /// Rows of trace `i` (of a sorted block).
    fn run(&self, i: usize) -> Range<u32> {
        self.starts[i]..self.starts[i + 1]
    }
}

/// Builds a block's [`TraceIndex`] from its (`trace_id`, `span_id`, `kind`)
/// columns, batch by batch in row order.
#[derive(Debug)]
pub(crate) struct TraceIndexBuilder {
    /// Traces past which the block is not indexed.
    limit: usize,
    index: TraceIndex,
    sorted: bool,
    started: bool,
    dedup: TraceDedup,
}

impl Default for TraceIndexBuilder {
    fn default() -> Self {
        Self {
            limit: MAX_INDEXED_TRACES,
            index: TraceIndex::default(),
            sorted: false,
            started: false,
            dedup: TraceDedup::default(),
        }
    }
}

impl TraceIndexBuilder {
    /// Whether the block holds more than [`MAX_INDEXED_TRACES`] traces (it
    /// is not indexed; later batches are ignored).
    pub(crate) fn too_large(&self) -> bool {
        self.index.ids.len() > self.limit
    }

    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        if self.too_large() {
            return Ok(());
        }
        let column =
            |name: &str| batch.column_by_name(name).ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")));
        let traces = column(TRACE_ID)?.as_fixed_size_binary_opt().ok_or_else(|| wrong_type(TRACE_ID))?;
        let spans = column(SPAN_ID)?.as_fixed_size_binary_opt().ok_or_else(|| wrong_type(SPAN_ID))?;
        let kinds = column(KIND)?.as_string_opt::<i32>().ok_or_else(|| wrong_type(KIND))?;
        if !self.started {
            self.started = true;
            self.sorted = true;
        }
        for row in 0..batch.num_rows() {
            let trace = traces.value(row).try_into().map(u128::from_be_bytes).unwrap_or_default();
            let at = self.index.rows;
            self.index.rows = self.index.rows.checked_add(1).ok_or_else(|| {
                ArrowError::ComputeError("a block of more than 4 billion rows cannot be indexed".into())
            })?;
            match self.index.ids.last() {
                Some(&last) if last == trace => {}
                Some(&last) => {
                    if trace < last {
                        self.sorted = false;
                    }
                    self.index.ids.push(trace);
                    self.index.starts.push(at);
                }
                None => {
                    self.index.ids.push(trace);
                    self.index.starts.push(at);
                }
            }
            let kind = if kinds.is_valid(row) { kinds.value(row) } else { "" };
            if !self.dedup.first(trace, span_identity(spans.value(row), kind)) {
                let trace_at = (self.index.ids.len() - 1) as u32;
                if self.index.repeated.last() != Some(&trace_at) {
                    self.index.repeated.push(trace_at);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> TraceIndex {
        let mut index = std::mem::take(&mut self.index);
        if self.sorted {
            index.starts.push(index.rows);
        } else {
            // Positions mean nothing in an unsorted block; its ids still
            // tell which traces other blocks share with it.
            index.ids.sort_unstable();
            index.ids.dedup();
            index.starts = Vec::new();
            index.repeated = Vec::new();
        }
        index.ids.shrink_to_fit();
        index.starts.shrink_to_fit();
        index
    }
}

fn wrong_type(column: &str) -> ArrowError {
    ArrowError::SchemaError(format!("column {column} is not of the span schema's type"))
}

/// Trace ids looked at in one pass of [`rows_to_merge`]: its candidate list
/// stays within 24 MiB whatever the ids are.
const IDS_PER_PASS: usize = 1 << 20;

/// Most slots of the table of hashed ids one pass uses (two 1 MiB bit
/// tables); a pass over fewer ids takes about 8 slots per id, so few share
/// a slot by chance, and a small query zeroes little.
const SLOT_BITS: u32 = 23;

/// For each block of a group that can share spans, the rows that must go
/// through the trace-ordered merge: the runs of traces that lie in more
/// than one of the blocks, or hold a span twice in one, and every row of a
/// block that is not sorted. Ranges ascend and do not touch. Only traces
/// with ids from `from` up to `to` (excluded; None: no bound) are looked at
/// in sorted blocks.
///
/// Traces in two blocks are found by hashing every id into a table of bits
/// (seen once, seen twice), then sorting only the ids whose slot was seen
/// twice, so the pass costs about two bit lookups per trace. (A k-way merge
/// of the blocks' ids took 3.6 % of a metrics query's CPU over 741k traces
/// in 100 blocks, on one core, before its scan could start.) The id
/// space is cut into parts of at most [`IDS_PER_PASS`] ids, so that ids
/// chosen to collide cost time, never unbounded memory.
pub(crate) fn rows_to_merge(indexes: &[&TraceIndex], from: u128, to: Option<u128>) -> Vec<Vec<Range<u32>>> {
    rows_to_merge_in_parts(indexes, from, to, IDS_PER_PASS)
}

/// [`rows_to_merge`], looking at most `ids_per_pass` ids at once (unless
/// more share one id).
fn rows_to_merge_in_parts(
    indexes: &[&TraceIndex],
    from: u128,
    to: Option<u128>,
    ids_per_pass: usize,
) -> Vec<Vec<Range<u32>>> {
    let first = |index: &TraceIndex, id: u128| index.ids.partition_point(|&i| i < id);
    let end = |index: &TraceIndex| to.map_or(index.ids.len(), |to| first(index, to));
    // Per block, the traces (indices into its ids) to merge.
    let mut traces: Vec<Vec<u32>> = vec![Vec::new(); indexes.len()];
    if indexes.len() > 1 {
        let mut candidates: Vec<(u128, u32, u32)> = Vec::new();
        // Parts of the id space holding at most IDS_PER_PASS ids, found by halving.
        let mut parts = vec![(from, to)];
        while let Some((low, high)) = parts.pop() {
            let ranges: Vec<Range<usize>> = indexes
                .iter()
                .map(|index| {
                    let start = first(index, low);
                    start..high.map_or(index.ids.len(), |high| first(index, high)).max(start)
                })
                .collect();
            let count: usize = ranges.iter().map(Range::len).sum();
            let width = high.map_or(u128::MAX - low, |high| high.saturating_sub(low));
            if count > ids_per_pass && width > 1 {
                let middle = low + width / 2;
                parts.push((middle, high));
                parts.push((low, Some(middle)));
                continue;
            }
            let mut table = SlotTable::for_ids(count);
            for (index, range) in indexes.iter().zip(&ranges) {
                for &id in &index.ids[range.clone()] {
                    table.insert(id);
                }
            }
            candidates.clear();
            for (block, (index, range)) in indexes.iter().zip(&ranges).enumerate() {
                for at in range.clone() {
                    if table.seen_twice(index.ids[at]) {
                        candidates.push((index.ids[at], block as u32, at as u32));
                    }
                }
            }
            candidates.sort_unstable();
            for run in candidates.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
                for &(_, block, at) in run {
                    traces[block as usize].push(at);
                }
            }
        }
    }
    let mut merge: Vec<Vec<Range<u32>>> = vec![Vec::new(); indexes.len()];
    for ((index, traces), ranges) in indexes.iter().zip(&mut traces).zip(&mut merge) {
        if !index.sorted() {
            if index.rows > 0 {
                ranges.push(0..index.rows);
            }
            continue;
        }
        let span = first(index, from) as u32..end(index) as u32;
        traces.extend(index.repeated.iter().filter(|&&at| span.contains(&at)));
        traces.sort_unstable();
        traces.dedup();
        for &at in traces.iter() {
            push_range(ranges, index.run(at as usize));
        }
    }
    merge
}

/// Hashed trace ids: a bit per slot for "seen", and one for "seen twice".
struct SlotTable {
    /// log2 of the slots.
    bits: u32,
    seen: Vec<u64>,
    twice: Vec<u64>,
}

impl SlotTable {
    /// A table of about 8 slots for each of `ids` ids (64 at least, 2^[`SLOT_BITS`] at most).
    fn for_ids(ids: usize) -> Self {
        let bits = ids.saturating_mul(8).next_power_of_two().trailing_zeros().clamp(6, SLOT_BITS);
        let words = (1usize << bits) / 64;
        Self { bits, seen: vec![0; words], twice: vec![0; words] }
    }

    fn slot(&self, id: u128) -> (usize, u64) {
        let hash = ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (hash >> (64 - self.bits)) as usize;
        (slot / 64, 1 << (slot % 64))
    }

    fn insert(&mut self, id: u128) {
        let (word, bit) = self.slot(id);
        if self.seen[word] & bit != 0 {
            self.twice[word] |= bit;
        }
        self.seen[word] |= bit;
    }

    fn seen_twice(&self, id: u128) -> bool {
        let (word, bit) = self.slot(id);
        self.twice[word] & bit != 0
    }
}

fn push_range(ranges: &mut Vec<Range<u32>>, range: Range<u32>) {
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// `ranges` (ascending, apart) cut to the rows of `index`'s traces in
/// `[from, to)` (`to` None: no upper bound); None when the block is not sorted.
pub(crate) fn band(index: &TraceIndex, ranges: &[Range<u32>], from: u128, to: Option<u128>) -> Option<Vec<Range<u32>>> {
    let low = index.first_row_from(from)?;
    let high = match to {
        Some(to) => index.first_row_from(to)?,
        None => index.rows,
    };
    Some(ranges.iter().map(|r| r.start.max(low)..r.end.min(high)).filter(|r| !r.is_empty()).collect())
}

/// The rows both `a` and `b` hold (each ascending and apart).
pub(crate) fn intersect(a: &[Range<u32>], b: &[Range<u32>]) -> Vec<Range<u32>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].start.max(b[j].start), a[i].end.min(b[j].end));
        if start < end {
            out.push(start..end);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The rows a selection of a block of `rows` rows reads, as ascending ranges.
pub(crate) fn selected_ranges(selection: &RowSelection, rows: u32) -> Vec<Range<u32>> {
    let mut ranges = Vec::new();
    let mut at = 0u32;
    for selector in selection.iter() {
        let end = at.saturating_add(u32::try_from(selector.row_count).unwrap_or(u32::MAX)).min(rows);
        if !selector.skip && end > at {
            push_range(&mut ranges, at..end);
        }
        at = end;
    }
    ranges
}

/// Rows of a block: all of them, or a selection.
#[derive(Debug, Clone)]
pub(crate) enum Rows {
    All,
    Only(RowSelection),
}

impl Rows {
    /// As a file's row selection (None: every row).
    pub(crate) fn selection(self) -> Option<RowSelection> {
        match self {
            Rows::All => None,
            Rows::Only(selection) => Some(selection),
        }
    }
}

/// How one block of a group is read, from its ranges in [`rows_to_merge`].
#[derive(Debug, Clone)]
pub(crate) struct Split {
    /// The rows of traces this block alone holds whole (None: no such row).
    pub(crate) alone: Option<Rows>,
    /// How many rows that is.
    pub(crate) alone_rows: u32,
    /// The rows that go through the merge (None: no such row).
    pub(crate) merged: Option<Rows>,
}

pub(crate) fn split(index: &TraceIndex, to_merge: &[Range<u32>]) -> Split {
    let rows = index.rows();
    let merged: u32 = to_merge.iter().map(|r| r.end - r.start).sum();
    let part = |count: u32, invert: bool| match count {
        0 => None,
        n if n == rows => Some(Rows::All),
        _ => Some(Rows::Only(selection(to_merge, rows, invert))),
    };
    Split { alone: part(rows - merged, true), alone_rows: rows - merged, merged: part(merged, false) }
}

/// The selection of `rows` rows that reads `ranges` (ascending, apart), or
/// with `invert`, every other row.
pub(crate) fn selection(ranges: &[Range<u32>], rows: u32, invert: bool) -> RowSelection {
    type Selector = fn(usize) -> RowSelector;
    let (inside, outside): (Selector, Selector) =
        if invert { (RowSelector::skip, RowSelector::select) } else { (RowSelector::select, RowSelector::skip) };
    let mut selectors = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut at = 0u32;
    for range in ranges {
        if range.start > at {
            selectors.push(outside((range.start - at) as usize));
        }
        selectors.push(inside(range.len()));
        at = range.end;
    }
    if rows > at {
        selectors.push(outside((rows - at) as usize));
    }
    RowSelection::from(selectors)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::sync::Arc;

    use arrow::array::{FixedSizeBinaryArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// A batch of (trace, span, kind) rows.
    fn batch(rows: &[(u8, u8, &str)]) -> RecordBatch {
        let traces = FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| [r.0; 16])).unwrap();
        let spans = FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| [r.1; 8])).unwrap();
        let kinds = StringArray::from_iter_values(rows.iter().map(|r| r.2));
        let schema = Schema::new(vec![
            Field::new(TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new(SPAN_ID, DataType::FixedSizeBinary(8), false),
            Field::new(KIND, DataType::Utf8, false),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(traces), Arc::new(spans), Arc::new(kinds)]).unwrap()
    }

    /// The k-way merge [`rows_to_merge`] replaced, as its oracle: for each block of a group that can share spans, the rows that must go
    /// through the trace-ordered merge: the runs of traces that lie in more
    /// than one of the blocks, or hold a span twice in one, and every row of a
    /// block that is not sorted. Ranges ascend and do not touch. Only traces
    /// with ids from `from` up to `to` (excluded; None: no bound) are looked at
    /// in sorted blocks.
    fn rows_to_merge_by_heap(indexes: &[&TraceIndex], from: u128, to: Option<u128>) -> Vec<Vec<Range<u32>>> {
        let mut merge: Vec<Vec<Range<u32>>> = vec![Vec::new(); indexes.len()];
        let below = |id: u128| to.is_none_or(|to| id < to);
        // A k-way merge of the blocks' sorted trace ids.
        let mut heap: BinaryHeap<Reverse<(u128, usize, usize)>> = indexes
            .iter()
            .enumerate()
            .filter_map(|(block, index)| {
                let at = index.ids.partition_point(|&id| id < from);
                index.ids.get(at).filter(|&&id| below(id)).map(|&id| Reverse((id, block, at)))
            })
            .collect();
        let mut holders: Vec<(usize, usize)> = Vec::new();
        let mut repeated_at: Vec<usize> = vec![0; indexes.len()];
        while let Some(Reverse((id, block, at))) = heap.pop() {
            holders.clear();
            holders.push((block, at));
            while let Some(Reverse((next, _, _))) = heap.peek()
                && *next == id
            {
                let Some(Reverse((_, block, at))) = heap.pop() else { break };
                holders.push((block, at));
            }
            let repeated = holders.iter().any(|&(block, at)| {
                let list = &indexes[block].repeated;
                let cursor = &mut repeated_at[block];
                while list.get(*cursor).is_some_and(|&r| (r as usize) < at) {
                    *cursor += 1;
                }
                list.get(*cursor) == Some(&(at as u32))
            });
            for &(block, at) in &holders {
                let index = indexes[block];
                if (holders.len() > 1 || repeated) && index.sorted() {
                    push_range(&mut merge[block], index.run(at));
                }
                if let Some(&next) = index.ids.get(at + 1)
                    && below(next)
                {
                    heap.push(Reverse((next, block, at + 1)));
                }
            }
        }
        for (block, index) in indexes.iter().enumerate() {
            if !index.sorted() && index.rows > 0 {
                merge[block] = std::iter::once(0..index.rows).collect();
            }
        }
        merge
    }

    /// The index of a block of `batches` of (trace, span, kind) rows,
    /// trace `n` having the id `[n; 16]`.
    pub(crate) fn index(batches: &[&[(u8, u8, &str)]]) -> TraceIndex {
        let mut builder = TraceIndexBuilder::default();
        for rows in batches {
            builder.push(&batch(rows)).unwrap();
        }
        builder.finish()
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of row ranges that hold one
    fn the_rows_of_chosen_traces_and_of_the_traces_holding_rows() {
        // Traces 1 (rows 0..2), 3 (2..5), 5 (5..6), 7 (6..8).
        let a = index(&[
            &[(1, 1, "server"), (1, 2, "client"), (3, 1, "server"), (3, 2, "client")],
            &[(3, 3, "client"), (5, 1, "server"), (7, 1, "server"), (7, 2, "client")],
        ]);
        let id = |n: u8| u128::from_be_bytes([n; 16]);
        assert_eq!(a.rows_of_traces(&[id(0), id(3), id(4), id(5), id(9)]), Some(vec![2..6]));
        assert_eq!(a.rows_of_traces(&[id(1), id(7)]), Some(vec![0..2, 6..8]));
        assert_eq!(a.rows_of_traces(&[]), Some(vec![]));
        let traces: Vec<_> = [1, 4, 5, 7, 8].into_iter().map(|row| a.trace_of_row(row)).collect();
        assert_eq!(traces, [Some(0..2), Some(2..5), Some(5..6), Some(6..8), None], "rows 1, 4, 5, 7 and 8 of 8");
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of row ranges that hold one
    fn ranges_intersect_and_selections_read_back_as_ranges() {
        assert_eq!(intersect(&[0..10, 20..30], &[5..25, 28..40]), vec![5..10, 20..25, 28..30]);
        assert_eq!(intersect(&[0..5], &[5..9]), Vec::<Range<u32>>::new());
        assert_eq!(intersect(&[], &[0..9]), Vec::<Range<u32>>::new());
        let ranges = vec![2..4, 7..10];
        assert_eq!(selected_ranges(&selection(&ranges, 12, false), 12), ranges);
        assert_eq!(selected_ranges(&selection(&ranges, 12, true), 12), vec![0..2, 4..7, 10..12]);
    }

    #[test]
    fn traces_in_one_block_each_need_no_merge() {
        let a = index(&[&[(1, 1, "server"), (1, 2, "client")], &[(1, 3, "client"), (4, 1, "server")]]);
        let b = index(&[&[(2, 1, "server"), (3, 1, "server"), (3, 2, "server")]]);
        assert_eq!(a.rows(), 4);
        assert_eq!(a.starts, vec![0, 3, 4], "a trace cut by a batch boundary is one run");
        assert_eq!(rows_to_merge(&[&a, &b], 0, None), vec![Vec::<Range<u32>>::new(), Vec::new()]);
    }

    /// An index of `ids` (ascending, distinct), trace `i` taking
    /// `1 + rows[i] % 3` rows; `repeated` traces hold a span twice.
    fn made(ids: Vec<u128>, rows: &[u8], repeated: Vec<u32>, sorted: bool) -> TraceIndex {
        let mut starts = vec![0u32];
        for i in 0..ids.len() {
            starts.push(starts[i] + 1 + u32::from(rows[i % rows.len()] % 3));
        }
        let total = *starts.last().unwrap();
        if sorted {
            TraceIndex { ids, starts, repeated, rows: total }
        } else {
            TraceIndex { ids, starts: Vec::new(), repeated: Vec::new(), rows: total }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Hashed slots find exactly the traces the k-way merge finds,
        /// also when ids collide in their slot, when the id space is cut
        /// into parts, and within a range of ids.
        #[test]
        fn hashed_slots_find_what_a_k_way_merge_finds(
            blocks in proptest::collection::vec(
                (proptest::collection::btree_set(0usize..40, 0..25), proptest::collection::vec(0u8..9, 1..8), proptest::bool::weighted(0.9)),
                1..6,
            ),
            from in 0usize..44,
            to in proptest::option::of(0usize..44),
            ids_per_pass in 1usize..20,
        ) {
            // Ids 0..20 are spread over the space; ids 20..40 all share one slot.
            let id = |n: usize| -> u128 {
                if n < 20 { ((n as u128) << 120) | (0x1234 * n as u128) } else { ((n as u128) << 64) | n as u128 }
            };
            let indexes: Vec<TraceIndex> = blocks
                .iter()
                .map(|(picked, rows, sorted)| {
                    let mut ids: Vec<u128> = picked.iter().map(|&n| id(n)).collect();
                    ids.sort_unstable();
                    let repeated = (0..ids.len() as u32).filter(|i| rows[*i as usize % rows.len()] == 7).collect();
                    made(ids, rows, repeated, *sorted)
                })
                .collect();
            let refs: Vec<&TraceIndex> = indexes.iter().collect();
            let (from, to) = (if from >= 40 { 0 } else { id(from) }, to.filter(|&t| t < 40).map(id));
            let expected = rows_to_merge_by_heap(&refs, from, to);
            proptest::prop_assert_eq!(rows_to_merge_in_parts(&refs, from, to, ids_per_pass), expected.clone());
            proptest::prop_assert_eq!(rows_to_merge(&refs, from, to), expected);
        }
    }

    #[test]
    fn a_trace_in_two_blocks_is_merged_from_both() {
        let a = index(&[&[(1, 1, "server"), (2, 1, "server"), (2, 2, "client"), (5, 1, "server")]]);
        let b = index(&[&[(2, 3, "server"), (3, 1, "server")]]);
        let c = index(&[&[(4, 1, "server"), (5, 1, "server")]]);
        // Traces 2 and 5 lie in two blocks each; a's two runs are neighbours and join.
        assert_eq!(rows_to_merge(&[&a, &b, &c], 0, None), vec![vec![1..4], vec![0..1], vec![1..2]]);
        // Only the traces of a range: trace 2 from [2; 16] up to (not with) trace 5.
        let (two, five) = (u128::from_be_bytes([2; 16]), u128::from_be_bytes([5; 16]));
        assert_eq!(rows_to_merge(&[&a, &b, &c], two, Some(five)), vec![vec![1..3], vec![0..1], vec![]]);
        assert_eq!(rows_to_merge(&[&a, &b, &c], two + 1, None), vec![vec![3..4], vec![], vec![1..2]]);
    }

    #[test]
    fn a_span_twice_in_one_block_merges_its_trace() {
        let a = index(&[&[(1, 1, "server"), (2, 1, "server"), (2, 1, "server"), (3, 1, "server")]]);
        assert_eq!(a.repeated, vec![1]);
        // The same span id with another kind is another span.
        let b = index(&[&[(7, 1, "server"), (7, 1, "client")]]);
        assert!(b.repeated.is_empty());
        assert_eq!(rows_to_merge(&[&a, &b], 0, None), vec![vec![1..3], vec![]]);
    }

    #[test]
    fn an_unsorted_block_is_merged_whole_with_the_traces_it_shares() {
        let unsorted = index(&[&[(3, 1, "server"), (1, 1, "server"), (3, 2, "server")]]);
        assert!(!unsorted.sorted());
        assert_eq!(unsorted.ids, vec![u128::from_be_bytes([1; 16]), u128::from_be_bytes([3; 16])]);
        let sorted = index(&[&[(2, 1, "server"), (3, 9, "client")]]);
        assert_eq!(rows_to_merge(&[&unsorted, &sorted], 0, None), vec![vec![0..3], vec![1..2]]);
    }

    #[test]
    fn cuts_fall_on_the_first_trace_start_of_each_row_group() {
        // Traces 1 (rows 0..3), 2 (3..4), 3 (4..7); row groups start at 0, 2, 4, 6.
        let a = index(&[&[(1, 1, "s"), (1, 2, "s"), (1, 3, "s"), (2, 1, "s"), (3, 1, "s"), (3, 2, "s"), (3, 3, "s")]]);
        assert_eq!(a.cuts(&[0, 2, 4, 6]), vec![0, 3, 4, 7], "trace 1 is not cut; 6 is inside trace 3");
        assert_eq!(a.cuts(&[]), vec![0, 7]);
        let unsorted = index(&[&[(3, 1, "s"), (1, 1, "s")]]);
        assert_eq!(unsorted.cuts(&[0, 1]), vec![0, 2]);
    }

    #[test]
    fn a_block_splits_into_the_rows_it_alone_holds_and_the_rest() {
        let a = index(&[&[(1, 1, "s"), (2, 1, "s"), (2, 2, "s"), (3, 1, "s")]]);
        let read = |rows: Option<Rows>| match rows {
            None => 0,
            Some(Rows::All) => 4,
            Some(Rows::Only(s)) => s.row_count(),
        };
        let parts = split(&a, std::slice::from_ref(&(1..3)));
        assert_eq!((read(parts.alone), parts.alone_rows, read(parts.merged)), (2, 2, 2));
        let parts = split(&a, &[]);
        assert!(matches!((parts.alone, parts.merged), (Some(Rows::All), None)));
        let parts = split(&a, std::slice::from_ref(&(0..4)));
        assert!(matches!((parts.alone, parts.merged), (None, Some(Rows::All))));
    }

    #[test]
    fn a_block_of_too_many_traces_is_not_indexed() {
        let mut builder = TraceIndexBuilder { limit: 2, ..TraceIndexBuilder::default() };
        builder.push(&batch(&[(1, 1, "s"), (2, 1, "s")])).unwrap();
        assert!(!builder.too_large());
        builder.push(&batch(&[(3, 1, "s"), (4, 1, "s")])).unwrap();
        assert!(builder.too_large());
        let held = builder.index.ids.len();
        builder.push(&batch(&[(5, 1, "s")])).unwrap();
        assert_eq!(builder.index.ids.len(), held, "nothing more is kept");
    }

    #[test]
    fn selections_read_the_ranges_or_everything_else() {
        let ranges = [2..4, 6..7];
        let read = |s: RowSelection| s.iter().filter(|s| !s.skip).map(|s| s.row_count).sum::<usize>();
        assert_eq!(read(selection(&ranges, 10, false)), 3);
        assert_eq!(read(selection(&ranges, 10, true)), 7);
        assert_eq!(selection(&ranges, 10, true).row_count(), 7);
        let everything = std::iter::once(0..10).collect::<Vec<_>>();
        assert_eq!(read(selection(&everything, 10, true)), 0);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of row ranges that hold one
    fn a_band_of_trace_ids_cuts_the_rows_to_merge() {
        let a = index(&[&[(1, 1, "server"), (1, 2, "client"), (2, 1, "server"), (3, 1, "server"), (4, 1, "server")]]);
        let id = |n: u8| u128::from_be_bytes([n; 16]);
        let to_merge = [0..3, 4..5];
        assert_eq!(band(&a, &to_merge, 0, Some(id(2))), Some(vec![0..2]));
        assert_eq!(band(&a, &to_merge, id(2), Some(id(4))), Some(vec![2..3]));
        assert_eq!(band(&a, &to_merge, id(4), None), Some(vec![4..5]));
        assert_eq!(band(&a, &to_merge, id(5), None), Some(vec![]));
        let unsorted = index(&[&[(3, 1, "server"), (1, 1, "server")]]);
        assert_eq!(band(&unsorted, &[0..2], 0, None), None);
    }

    #[test]
    fn band_edges_cut_the_traces_into_runs_of_about_equal_count() {
        let id = |n: u8| u128::from_be_bytes([n; 16]);
        let rows: Vec<(u8, u8, &str)> = (1..=8u8).map(|t| (t, 1, "server")).collect();
        let index = index(&[&rows]);
        assert_eq!(index.band_edges(1), Vec::<u128>::new());
        assert_eq!(index.band_edges(2), vec![id(5)]);
        assert_eq!(index.band_edges(4), vec![id(3), id(5), id(7)]);
        // More bands than traces: one trace per band, the first has no edge.
        assert_eq!(index.band_edges(20).len(), 7);
        assert_eq!(TraceIndex::default().band_edges(4), Vec::<u128>::new());
    }
}
