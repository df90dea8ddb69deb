//! Flat columns of a block written to Parquet by hand: the strings and
//! counts that hold one value (or null) per span, through a dictionary,
//! with the statistics and column index queries prune by.
//!
//! Arrow's Parquet writer needs each column in block order first (a copy of
//! every string), then hashes every value into the column's dictionary, and
//! compares every value for the page's minimum and maximum. Most of these
//! columns hold a few distinct values (a span's kind, its status, a count
//! that is nearly always 0), and the grouped ones (a resource's service
//! name, a scope's name) hold each value once per resource. Here each
//! batch's values are coded once per block, in the batch's own order:
//! every row's dictionary index (a grouped column's values once per group;
//! a row equal to the row before takes its code without a lookup). A row
//! group's pages are then written from the codes in block order, and a
//! page's minimum and maximum are those of its codes' ranks in the
//! dictionary's sort order.
//!
//! The pages are what Parquet's writer makes for these columns: data page v1,
//! definition levels and dictionary indices in the RLE/bit-packed hybrid, a
//! PLAIN dictionary page (or PLAIN pages past the dictionary page limit, as
//! its writer falls back), zstd. So are the statistics: the column index's
//! minimum and maximum per page (truncated as its writer truncates them),
//! null counts, null pages and boundary order, and the chunk's statistics.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, UInt32Type, Utf8Type};
use bytes::Bytes;
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use crate::map_column::chunk::{ChunkWriter, PageIndex, Truncate, truncate_max, truncate_min};
use crate::map_column::pages::{bit_width, levels_v1, rle_hybrid};
use crate::map_column::values::{Dictionary, LeafValues};

/// The code of a null row.
const NULL: u32 = u32::MAX;

/// How a column's values compare: as bytes (strings), or as unsigned
/// integers (counts, stored as Parquet's INT32).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Bytes,
    Unsigned,
}

fn general(message: &str) -> ParquetError {
    ParquetError::General(format!("flat column: {message}"))
}

/// Whether a top-level column of this type is written here: strings and
/// 32-bit counts, plain or grouped.
pub(crate) fn handles(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(_, values) => handles(values),
        DataType::Utf8 | DataType::UInt32 => true,
        _ => false,
    }
}

/// The block's flat columns coded once: each column's dictionary, and
/// every row's codes (its index in each column's dictionary, or [`NULL`])
/// side by side, so that putting a row group in block order reads each
/// row's codes from one place.
pub(crate) struct CodedFlats<'a> {
    columns: Vec<CodedFlat<'a>>,
    /// Where each batch's rows start, and the rows in all.
    first_row: Vec<usize>,
    /// Row `r`'s code in column `c`: `codes[r * columns + c]`.
    codes: Vec<u32>,
}

impl<'a> CodedFlats<'a> {
    /// Codes `columns`, each one array per batch (plain, or grouped: a
    /// dictionary of the groups' values, keyed per row).
    pub(crate) fn new(columns: &[Vec<&'a dyn Array>]) -> Result<Self> {
        let width = columns.len();
        let mut first_row = vec![0];
        for array in columns.first().map_or(&[][..], |c| c.as_slice()) {
            first_row.push(first_row[first_row.len() - 1] + array.len());
        }
        let rows = first_row[first_row.len() - 1];
        let mut codes = vec![NULL; rows.checked_mul(width).ok_or_else(|| general("too many rows"))?];
        let columns = columns
            .iter()
            .enumerate()
            .map(|(c, arrays)| {
                let same_rows = arrays.iter().zip(first_row.windows(2)).all(|(a, rows)| a.len() == rows[1] - rows[0]);
                if arrays.len() + 1 != first_row.len() || !same_rows {
                    return Err(general("columns of different lengths"));
                }
                CodedFlat::new(arrays, &first_row, &mut codes, width, c)
            })
            .collect::<Result<_>>()?;
        Ok(Self { columns, first_row, codes })
    }

    /// Each column's chunk of `rows` ((batch, row) in block order), in
    /// order: its bytes (starting at offset 0) and what closing Parquet's
    /// column writer would have returned, statistics and column index
    /// included. `leaves` are the columns' leaves in the file's schema.
    pub(crate) fn write(
        &self,
        leaves: &[ColumnDescPtr],
        properties: &WriterProperties,
        rows: &[(usize, usize)],
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>> {
        let width = self.columns.len();
        if leaves.len() != width {
            return Err(general("a leaf per column"));
        }
        // Each column's codes in block order, one after another.
        let mut block = vec![NULL; width * rows.len()];
        let mut columns: Vec<&mut [u32]> = block.chunks_mut(rows.len().max(1)).collect();
        for (i, &(batch, row)) in rows.iter().enumerate() {
            let at = match (self.first_row.get(batch), self.first_row.get(batch + 1)) {
                (Some(first), Some(&end)) if first + row < end => (first + row) * width,
                _ => return Err(general("no such row")),
            };
            for (column, &code) in columns.iter_mut().zip(&self.codes[at..at + width]) {
                column[i] = code;
            }
        }
        let n = rows.len();
        leaves
            .iter()
            .zip(&self.columns)
            .enumerate()
            .map(|(c, (leaf, column))| column.write(leaf, properties, &block[c * n..(c + 1) * n]))
            .collect()
    }
}

impl CodedFlats<'_> {
    /// Calls `new` with each value of string column `column` (its place
    /// among the coded columns) in batch `batch` that `seen` has not met,
    /// marking it, in the order the batch holds them: a grouped column's
    /// values (each group once), a plain column's rows. These are the
    /// values a tag summary would change on, found by their codes.
    pub(crate) fn each_new_value(&self, column: usize, batch: usize, seen: &mut Vec<bool>, mut new: impl FnMut(&str)) {
        let Some(coded) = self.columns.get(column).filter(|c| c.order == Order::Bytes) else { return };
        seen.resize(coded.dictionary.len as usize, false);
        let mut visit = |code: u32| {
            if code != NULL
                && !std::mem::replace(&mut seen[code as usize], true)
                && let Ok(value) = std::str::from_utf8(coded.bytes(code))
            {
                new(value);
            }
        };
        match coded.grouped.get(batch) {
            Some(Some(values)) => values.iter().for_each(|&code| visit(code)),
            Some(None) => {
                let width = self.columns.len();
                for row in self.first_row[batch]..self.first_row[batch + 1] {
                    visit(self.codes[row * width + column]);
                }
            }
            None => {}
        }
    }
}

/// One flat column's dictionary, and its values' sort order.
struct CodedFlat<'a> {
    dictionary: Dictionary<'a>,
    /// Per batch, a grouped column's codes of its values (each group once).
    grouped: Vec<Option<Vec<u32>>>,
    order: Order,
    /// Each dictionary index's place in the values' sort order.
    ranks: Vec<u32>,
    /// The dictionary indices in sort order.
    by_rank: Vec<u32>,
}

impl<'a> CodedFlat<'a> {
    /// Codes `arrays` (one per batch, batch `b`'s rows from `first_row[b]`)
    /// into column `column` of `codes`, `width` codes a row.
    fn new(
        arrays: &[&'a dyn Array],
        first_row: &[usize],
        codes: &mut [u32],
        width: usize,
        column: usize,
    ) -> Result<Self> {
        let mut dictionary = Dictionary::default();
        let mut order = None;
        let mut grouped = Vec::with_capacity(arrays.len());
        for (&array, &first) in arrays.iter().zip(first_row) {
            let (values, keys) = match array.as_dictionary_opt::<UInt32Type>() {
                Some(grouped) => (grouped.values().as_ref(), Some(grouped.keys())),
                None => (array, None),
            };
            // A plain column is coded in place; a grouped one's values first.
            let mut value_codes = Vec::new();
            let (out, stride) = match keys {
                None => (&mut codes[first * width + column..], width),
                Some(_) => {
                    value_codes = vec![NULL; values.len()];
                    (&mut value_codes[..], 1)
                }
            };
            let this = match values.data_type() {
                DataType::Utf8 => {
                    code(values.as_bytes::<Utf8Type>(), values.len(), &mut dictionary, out, stride);
                    Order::Bytes
                }
                DataType::UInt32 => {
                    code(values.as_primitive::<UInt32Type>(), values.len(), &mut dictionary, out, stride);
                    Order::Unsigned
                }
                other => return Err(general(&format!("a column of {other} is not written here"))),
            };
            if *order.get_or_insert(this) != this {
                return Err(general("batches disagree on the column's type"));
            }
            if let Some(keys) = keys {
                for row in 0..keys.len() {
                    codes[(first + row) * width + column] = match keys.is_valid(row) {
                        true => value_codes.get(keys.value(row) as usize).copied().unwrap_or(NULL),
                        false => NULL,
                    };
                }
            }
            grouped.push(keys.map(|_| value_codes));
        }
        if dictionary.len == NULL || dictionary.page.len() > u32::MAX as usize {
            return Err(general("too many distinct values"));
        }
        let mut coded =
            Self { dictionary, grouped, order: order.unwrap_or(Order::Bytes), ranks: Vec::new(), by_rank: Vec::new() };
        let mut by_rank: Vec<u32> = (0..coded.dictionary.len).collect();
        match coded.order {
            Order::Bytes => by_rank.sort_unstable_by(|&a, &b| coded.bytes(a).cmp(coded.bytes(b))),
            Order::Unsigned => by_rank.sort_unstable_by_key(|&i| coded.unsigned(i)),
        }
        coded.ranks = vec![0; by_rank.len()];
        for (rank, &index) in by_rank.iter().enumerate() {
            coded.ranks[index as usize] = rank as u32;
        }
        coded.by_rank = by_rank;
        Ok(coded)
    }

    /// Dictionary value `index` PLAIN encoded (a string with its length first).
    fn plain(&self, index: u32) -> &[u8] {
        let starts = &self.dictionary.starts;
        let start = starts[index as usize] as usize;
        let end = starts.get(index as usize + 1).map_or(self.dictionary.page.len(), |&e| e as usize);
        &self.dictionary.page[start..end]
    }

    /// A string value's bytes.
    fn bytes(&self, index: u32) -> &[u8] {
        &self.plain(index)[4..]
    }

    fn unsigned(&self, index: u32) -> u32 {
        let plain = self.plain(index);
        u32::from_le_bytes([plain[0], plain[1], plain[2], plain[3]])
    }

    /// The column chunk of `codes` (in block order).
    fn write(
        &self,
        descr: &ColumnDescPtr,
        properties: &WriterProperties,
        codes: &[u32],
    ) -> Result<(Bytes, ColumnCloseResult)> {
        let physical = descr.physical_type();
        let expected = match self.order {
            Order::Bytes => PhysicalType::BYTE_ARRAY,
            Order::Unsigned => PhysicalType::INT32,
        };
        if physical != expected || descr.max_rep_level() != 0 || descr.max_def_level() > 1 {
            return Err(general("the leaf is not a flat column of this type"));
        }
        let nullable = descr.max_def_level() == 1;
        if !nullable && codes.contains(&NULL) {
            return Err(general("a null in a required column"));
        }

        let over_limit = self.dictionary.page.len() > properties.dictionary_page_size_limit();
        let has_dictionary = properties.dictionary_enabled(descr.path()) && self.dictionary.len > 0 && !over_limit;
        let index_bits = bit_width(self.dictionary.len.saturating_sub(1)).max(1);
        let statistics = properties.statistics_enabled(descr.path());
        let truncate = properties.column_index_truncate_length();
        let mut index = (statistics == EnabledStatistics::Page).then(|| PageIndex::new(physical));
        let mut chunk = ChunkWriter::new(descr, properties)?;
        if has_dictionary {
            chunk.dictionary(&self.dictionary.page, self.dictionary.len)?;
        }
        let page_rows = properties.data_page_row_count_limit().max(1);
        let page_bytes = properties.data_page_size_limit().max(1);
        let (mut chunk_nulls, mut chunk_range) = (0u64, None::<(u32, u32)>);
        let (mut definition, mut values) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < codes.len() {
            // A page of `page_rows` rows, or fewer when PLAIN values outgrow
            // the page size limit first.
            let mut end = (start + page_rows).min(codes.len());
            if !has_dictionary {
                let mut bytes = 0;
                for (i, &code) in codes[start..end].iter().enumerate() {
                    bytes += if code == NULL { 0 } else { self.plain(code).len() };
                    if bytes > page_bytes && i > 0 {
                        end = start + i;
                        break;
                    }
                }
            }
            let page = &codes[start..end];
            definition.clear();
            values.clear();
            let mut range = None::<(u32, u32)>;
            for &code in page {
                definition.push(u8::from(code != NULL));
                if code != NULL {
                    values.push(code);
                    let rank = self.ranks[code as usize];
                    range = Some(range.map_or((rank, rank), |(lo, hi)| (lo.min(rank), hi.max(rank))));
                }
            }
            let nulls = (page.len() - values.len()) as u64;
            let mut body = Vec::new();
            if nullable {
                levels_v1(&mut body, &definition, 1);
            }
            let encoding = if has_dictionary {
                body.push(index_bits as u8);
                rle_hybrid(&mut body, &values, index_bits);
                Encoding::RLE_DICTIONARY
            } else {
                for &code in &values {
                    body.extend_from_slice(self.plain(code));
                }
                Encoding::PLAIN
            };
            chunk.data(body, page.len(), encoding, start)?;
            if let Some(index) = &mut index {
                match range {
                    Some((lo, hi)) => index.page(
                        (lo, hi),
                        self.page_bound(lo, truncate, truncate_min),
                        self.page_bound(hi, truncate, truncate_max),
                        nulls,
                    ),
                    None => index.null_page(nulls),
                }
            }
            chunk_nulls += nulls;
            if let Some((lo, hi)) = range {
                chunk_range = Some(chunk_range.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))));
            }
            start = end;
        }
        let encodings: &[Encoding] = if has_dictionary { &[Encoding::RLE_DICTIONARY] } else { &[] };
        let chunk_statistics = (statistics != EnabledStatistics::None)
            .then(|| self.chunk_statistics(properties, chunk_range, chunk_nulls));
        let column_index = index.map(PageIndex::build).transpose()?;
        chunk.finish(codes.len(), codes.len(), encodings, chunk_statistics, column_index, None)
    }

    /// Rank `rank`'s value as the column index holds it: a string truncated
    /// by `cut` to `truncate` bytes, a count as it is.
    fn page_bound(&self, rank: u32, truncate: Option<usize>, cut: Truncate) -> Vec<u8> {
        match self.order {
            Order::Bytes => cut(self.stat_bytes(rank), truncate, true).0,
            Order::Unsigned => self.stat_bytes(rank).to_vec(),
        }
    }

    /// The value of `rank` as statistics hold it: a string's bytes, or a
    /// count's four bytes (little endian).
    fn stat_bytes(&self, rank: u32) -> &[u8] {
        let index = self.by_rank[rank as usize];
        match self.order {
            Order::Bytes => self.bytes(index),
            Order::Unsigned => &self.plain(index)[..4],
        }
    }

    /// The chunk's statistics, truncated as Parquet's writer truncates them.
    fn chunk_statistics(&self, properties: &WriterProperties, range: Option<(u32, u32)>, nulls: u64) -> Statistics {
        let Some((lo, hi)) = range else {
            return match self.order {
                Order::Bytes => ValueStatistics::<ByteArray>::new(None, None, None, Some(nulls), false).into(),
                Order::Unsigned => ValueStatistics::<i32>::new(None, None, None, Some(nulls), false).into(),
            };
        };
        match self.order {
            Order::Bytes => {
                let length = properties.statistics_truncate_length();
                let (min, min_truncated) = truncate_min(self.stat_bytes(lo), length, true);
                let (max, max_truncated) = truncate_max(self.stat_bytes(hi), length, true);
                ValueStatistics::new(Some(ByteArray::from(min)), Some(ByteArray::from(max)), None, Some(nulls), false)
                    .with_min_is_exact(!min_truncated)
                    .with_max_is_exact(!max_truncated)
                    .into()
            }
            Order::Unsigned => {
                let value = |rank| self.unsigned(self.by_rank[rank as usize]) as i32;
                ValueStatistics::new(Some(value(lo)), Some(value(hi)), None, Some(nulls), false).into()
            }
        }
    }
}

/// The codes of one batch's `values`, interned into `dictionary`: row
/// `r`'s at `out[r * stride]`. A row equal to the row before takes its code
/// without a lookup.
fn code<'a, V: LeafValues<'a>>(values: V, len: usize, dictionary: &mut Dictionary<'a>, out: &mut [u32], stride: usize) {
    let mut before = NULL;
    for row in 0..len {
        let code = if !values.valid(row) {
            NULL
        } else if before != NULL && values.same(row - 1, row) {
            before
        } else {
            values.value(row, dictionary)
        };
        out[row * stride] = code;
        before = code;
    }
}
