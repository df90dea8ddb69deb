//! Flat columns of fixed-width values written to Parquet by hand: the ids
//! (`trace_id`, `span_id`, `parent_span_id`) and the times and durations.
//!
//! Arrow's Parquet writer needs each column in block order first (a copy),
//! then makes a separately allocated value of every fixed-size binary (an
//! id), and encodes a page from those. Here each row group's values are
//! copied once, straight from the batches in block order into the bytes
//! the pages are cut from. The pages are what Parquet's writer makes for
//! these columns with the block's properties: data page v1, definition
//! levels in the RLE/bit-packed hybrid, values PLAIN or byte stream split
//! (as the column's encoding says; none of them has a dictionary: ids are
//! fixed-size binaries, which Parquet 1.0 writes without one, and the times
//! have theirs turned off), zstd or none as the column says. So are the
//! statistics (the column index page by page, the chunk's), and the bloom
//! filter where the column has one (`trace_id`).

use arrow::array::{Array, AsArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampNanosecondType};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use crate::map_column::chunk::{ChunkWriter, PageIndex, Truncate, truncate_max, truncate_min};
use crate::map_column::pages::levels_v1;

fn general(message: &str) -> ParquetError {
    ParquetError::General(format!("fixed-width column: {message}"))
}

/// Whether a top-level column of this type is written here.
pub(crate) fn handles(data_type: &DataType) -> bool {
    matches!(data_type, DataType::FixedSizeBinary(_) | DataType::Int64 | DataType::Timestamp(TimeUnit::Nanosecond, _))
}

/// [`PlainColumn::gather`] for values of `width` bytes. `W` is the same
/// width known when compiled (0: not), so a value is copied as a word or
/// two rather than through a call.
fn gather_values<const W: usize>(
    width: usize,
    sources: &[(&[u8], Option<&NullBuffer>)],
    rows: &[(usize, usize)],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let width = if W == 0 { width } else { W };
    let mut values = Vec::with_capacity(rows.len() * width);
    let mut defined = Vec::with_capacity(rows.len());
    for &(batch, row) in rows {
        let (bytes, nulls) = sources.get(batch).ok_or_else(|| general("no such batch"))?;
        let value = bytes.get(row * width..(row + 1) * width).ok_or_else(|| general("no such row"))?;
        if nulls.is_some_and(|n| n.is_null(row)) {
            defined.push(0);
        } else {
            defined.push(1);
            values.extend_from_slice(value);
        }
    }
    Ok((values, defined))
}

/// How a column's values are stored and compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Fixed-size binary of this many bytes, compared as bytes.
    Fixed(usize),
    /// 64-bit signed integers (and timestamps), little endian.
    Int64,
}

impl Kind {
    fn width(self) -> usize {
        match self {
            Kind::Fixed(width) => width,
            Kind::Int64 => 8,
        }
    }

    /// Value `value` (`width` bytes, as stored) as it compares.
    fn bound(self, value: &[u8]) -> Bound<'_> {
        match self {
            Kind::Fixed(_) => Bound::Bytes(value),
            Kind::Int64 => Bound::Int(i64::from_le_bytes(value.try_into().expect("eight bytes"))),
        }
    }
}

/// One column of the batches, to be written a row group at a time.
pub(crate) struct PlainColumn<'a> {
    arrays: Vec<&'a dyn Array>,
    kind: Kind,
}

impl<'a> PlainColumn<'a> {
    /// The column of every batch (one array each).
    pub(crate) fn new(arrays: Vec<&'a dyn Array>) -> Result<Self> {
        let kind = |a: &dyn Array| match a.data_type() {
            DataType::FixedSizeBinary(width) if *width > 0 => Ok(Kind::Fixed(*width as usize)),
            DataType::Int64 | DataType::Timestamp(TimeUnit::Nanosecond, _) => Ok(Kind::Int64),
            other => Err(general(&format!("a column of {other} is not written here"))),
        };
        let first = arrays.first().map_or(Ok(Kind::Int64), |a| kind(*a))?;
        for array in &arrays {
            if kind(*array)? != first {
                return Err(general("batches disagree on the column's type"));
            }
        }
        Ok(Self { arrays, kind: first })
    }

    /// The values of `rows` ((batch, row) in block order), one after
    /// another, and each row's definition level (1: a value, 0: null).
    fn gather(&self, rows: &[(usize, usize)]) -> Result<(Vec<u8>, Vec<u8>)> {
        // Each batch's values as bytes, `width` a row, and its nulls.
        let sources: Vec<(&[u8], Option<&NullBuffer>)> = self
            .arrays
            .iter()
            .map(|a| {
                let values: &[u8] = match a.data_type() {
                    DataType::FixedSizeBinary(_) => a.as_fixed_size_binary().value_data(),
                    DataType::Int64 => a.as_primitive::<Int64Type>().values().inner().as_slice(),
                    _ => a.as_primitive::<TimestampNanosecondType>().values().inner().as_slice(),
                };
                (values, a.nulls())
            })
            .collect();
        match self.kind.width() {
            8 => gather_values::<8>(8, &sources, rows),
            16 => gather_values::<16>(16, &sources, rows),
            width => gather_values::<0>(width, &sources, rows),
        }
    }

    /// The column chunk of `rows` ((batch, row) in block order): its bytes
    /// (starting at offset 0) and what closing Parquet's column writer would
    /// have returned, statistics, column index and bloom filter included.
    pub(crate) fn write(
        &self,
        descr: &ColumnDescPtr,
        properties: &WriterProperties,
        rows: &[(usize, usize)],
    ) -> Result<(bytes::Bytes, ColumnCloseResult)> {
        let kind = self.kind;
        let width = kind.width();
        let expected = match kind {
            Kind::Fixed(_) => PhysicalType::FIXED_LEN_BYTE_ARRAY,
            Kind::Int64 => PhysicalType::INT64,
        };
        if descr.physical_type() != expected || descr.max_rep_level() != 0 || descr.max_def_level() > 1 {
            return Err(general("the leaf is not a flat column of this type"));
        }
        if matches!(kind, Kind::Fixed(w) if descr.type_length() != w as i32) {
            return Err(general("the leaf's width differs"));
        }
        let nullable = descr.max_def_level() == 1;
        let (values, defined) = self.gather(rows)?;
        if !nullable && values.len() != rows.len() * width {
            return Err(general("a null in a required column"));
        }
        let path = descr.path();
        let fixed_in_v1 = matches!(kind, Kind::Fixed(_))
            && properties.writer_version() == parquet::file::properties::WriterVersion::PARQUET_1_0;
        if properties.dictionary_enabled(path) && !fixed_in_v1 {
            return Err(general("a column with a dictionary is not written here"));
        }
        let encoding = match properties.encoding(path) {
            Some(Encoding::BYTE_STREAM_SPLIT) => Encoding::BYTE_STREAM_SPLIT,
            None | Some(Encoding::PLAIN) => Encoding::PLAIN,
            Some(other) => return Err(general(&format!("{other} is not written here"))),
        };
        let statistics = properties.statistics_enabled(path);
        let mut index = (statistics == EnabledStatistics::Page).then(|| PageIndex::new(descr.physical_type()));
        let index_cut = properties.column_index_truncate_length();
        let mut chunk = ChunkWriter::new(descr, properties)?;
        let page_rows = properties.data_page_row_count_limit().max(1);
        let (mut chunk_nulls, mut chunk_range) = (0u64, None::<(Bound<'_>, Bound<'_>)>);
        let mut value_start = 0;
        for (page, levels) in defined.chunks(page_rows).enumerate() {
            let count = levels.iter().filter(|&&d| d == 1).count();
            let page_values = &values[value_start * width..(value_start + count) * width];
            let range = match statistics {
                EnabledStatistics::None => None,
                _ => bounds(page_values.chunks_exact(width).map(|v| kind.bound(v))),
            };
            let mut body = Vec::with_capacity(page_values.len() + levels.len() / 4 + 8);
            if nullable {
                levels_v1(&mut body, levels, 1);
            }
            if encoding == Encoding::BYTE_STREAM_SPLIT {
                for byte in 0..width {
                    body.extend(page_values.chunks_exact(width).map(|v| v[byte]));
                }
            } else {
                body.extend_from_slice(page_values);
            }
            chunk.data(body, levels.len(), encoding, page * page_rows)?;
            let nulls = (levels.len() - count) as u64;
            if let Some(index) = &mut index {
                match range {
                    Some((lo, hi)) => {
                        index.page((lo, hi), lo.cut(truncate_min, index_cut), hi.cut(truncate_max, index_cut), nulls)
                    }
                    None => index.null_page(nulls),
                }
            }
            chunk_nulls += nulls;
            chunk_range = bounds(chunk_range.into_iter().chain(range).flat_map(|(lo, hi)| [lo, hi]));
            value_start += count;
        }
        let chunk_statistics = (statistics != EnabledStatistics::None)
            .then(|| chunk_statistics(kind, descr.sort_order().is_signed(), chunk_range, chunk_nulls, properties));
        let bloom_filter = match properties.bloom_filter_properties(path) {
            Some(bloom) => {
                let mut filter = Sbbf::new_with_ndv_fpp(bloom.ndv(), bloom.fpp())?;
                // Each value once in a run of equal values (sorted trace ids).
                let mut before: Option<&[u8]> = None;
                for value in values.chunks_exact(width) {
                    if before != Some(value) {
                        filter.insert(value);
                    }
                    before = Some(value);
                }
                filter.fold_to_target_fpp(bloom.fpp());
                Some(filter)
            }
            None => None,
        };
        let encodings: &[Encoding] = if encoding == Encoding::PLAIN { &[] } else { &[encoding] };
        let column_index = index.map(PageIndex::build).transpose()?;
        chunk.finish(rows.len(), rows.len(), encodings, chunk_statistics, column_index, bloom_filter)
    }
}

/// A value as it compares: an integer, or bytes. (Derived order: values of
/// one column are all of one variant.)
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Bound<'v> {
    Int(i64),
    Bytes(&'v [u8]),
}

impl Bound<'_> {
    /// The value as Parquet's statistics hold it: eight bytes little endian,
    /// or the bytes cut by `cut` to `length` (and whether they were).
    fn cut_exact(self, cut: Truncate, length: Option<usize>) -> (Vec<u8>, bool) {
        match self {
            Bound::Int(v) => (v.to_le_bytes().to_vec(), false),
            Bound::Bytes(v) => cut(v, length, false),
        }
    }

    fn cut(self, cut: Truncate, length: Option<usize>) -> Vec<u8> {
        self.cut_exact(cut, length).0
    }
}

/// The least and greatest of `values`, if any.
fn bounds<'v>(values: impl Iterator<Item = Bound<'v>>) -> Option<(Bound<'v>, Bound<'v>)> {
    values.fold(None, |range, v| {
        Some(match range {
            None => (v, v),
            Some((lo, hi)) => (if v < lo { v } else { lo }, if hi < v { v } else { hi }),
        })
    })
}

/// The chunk's statistics as Parquet's writer makes them.
fn chunk_statistics(
    kind: Kind,
    signed: bool,
    range: Option<(Bound<'_>, Bound<'_>)>,
    nulls: u64,
    properties: &WriterProperties,
) -> Statistics {
    match kind {
        Kind::Int64 => {
            let int = |b: Bound<'_>| match b {
                Bound::Int(v) => Some(v),
                Bound::Bytes(_) => None,
            };
            let (min, max) = range.map_or((None, None), |(lo, hi)| (int(lo), int(hi)));
            ValueStatistics::new(min, max, None, Some(nulls), false).with_backwards_compatible_min_max(signed).into()
        }
        Kind::Fixed(_) => {
            let Some((lo, hi)) = range else {
                return ValueStatistics::<FixedLenByteArray>::new(None, None, None, Some(nulls), signed).into();
            };
            let length = properties.statistics_truncate_length();
            let ((min, min_cut), (max, max_cut)) =
                (lo.cut_exact(truncate_min, length), hi.cut_exact(truncate_max, length));
            let fixed = |v: Vec<u8>| FixedLenByteArray::from(ByteArray::from(v));
            ValueStatistics::new(Some(fixed(min)), Some(fixed(max)), None, Some(nulls), signed)
                .with_min_is_exact(!min_cut)
                .with_max_is_exact(!max_cut)
                .into()
        }
    }
}
