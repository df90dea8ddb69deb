//! A column chunk written page by page, for the columns Spanlake writes by
//! hand (`map_column`, `flat_column`, `plain_column`): pages compressed as
//! the column says, their offset index, and what closing Parquet's column
//! writer would have returned; and a column index built page by page as
//! Parquet's writer builds it.

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Compression, Encoding, PageType, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use super::pages::zstd_compress;

fn general(message: &str) -> ParquetError {
    ParquetError::General(format!("column chunk: {message}"))
}

/// One column chunk's pages, written one after another from offset 0.
pub(crate) struct ChunkWriter {
    descr: ColumnDescPtr,
    compression: Compression,
    /// The zstd level, or none for pages written uncompressed.
    level: Option<i32>,
    sink: TrackedWrite<Vec<u8>>,
    compressed: i64,
    uncompressed: i64,
    dictionary_offset: Option<i64>,
    locations: Vec<PageLocation>,
}

impl ChunkWriter {
    /// A chunk of leaf `descr`, compressed as `properties` say (zstd or none).
    pub(crate) fn new(descr: &ColumnDescPtr, properties: &WriterProperties) -> Result<Self> {
        let compression = properties.compression(descr.path());
        let level = match compression {
            Compression::UNCOMPRESSED => None,
            Compression::ZSTD(level) => Some(level.compression_level()),
            other => return Err(general(&format!("{other} is not written here"))),
        };
        Ok(Self {
            descr: descr.clone(),
            compression,
            level,
            sink: TrackedWrite::new(Vec::new()),
            compressed: 0,
            uncompressed: 0,
            dictionary_offset: None,
            locations: Vec::new(),
        })
    }

    /// `body` as this chunk compresses a page, and its size before.
    pub(crate) fn compress(&self, body: Vec<u8>) -> Result<(Bytes, usize)> {
        let size = body.len();
        let buf = match self.level {
            None => Bytes::from(body),
            Some(level) => Bytes::from(zstd_compress(level, &body)?),
        };
        Ok((buf, size))
    }

    fn page(
        &mut self,
        page: impl FnOnce(Bytes) -> Page,
        body: Vec<u8>,
    ) -> Result<parquet::column::page::PageWriteSpec> {
        let (buf, size) = self.compress(body)?;
        self.compressed_page(page, buf, size)
    }

    fn compressed_page(
        &mut self,
        page: impl FnOnce(Bytes) -> Page,
        buf: Bytes,
        size: usize,
    ) -> Result<parquet::column::page::PageWriteSpec> {
        let mut writer = SerializedPageWriter::new(&mut self.sink);
        let spec = writer.write_page(CompressedPage::new(page(buf), size))?;
        writer.close()?;
        self.compressed += spec.compressed_size as i64;
        self.uncompressed += spec.uncompressed_size as i64;
        Ok(spec)
    }

    /// The dictionary page: `values` PLAIN, `len` of them. It comes first.
    pub(crate) fn dictionary(&mut self, values: &[u8], len: u32) -> Result<()> {
        let spec = self.page(
            |buf| Page::DictionaryPage { buf, num_values: len, encoding: Encoding::PLAIN, is_sorted: false },
            values.to_vec(),
        )?;
        self.dictionary_offset = Some(spec.offset as i64);
        Ok(())
    }

    /// A data page (v1) of `levels` levels, whose first row is `first_row`
    /// of the chunk: `body` holds its levels and values.
    pub(crate) fn data(&mut self, body: Vec<u8>, levels: usize, encoding: Encoding, first_row: usize) -> Result<()> {
        let (buf, size) = self.compress(body)?;
        self.compressed_data((buf, size), levels, encoding, first_row)
    }

    /// [`Self::data`] of a body compressed already ([`Self::compress`]).
    pub(crate) fn compressed_data(
        &mut self,
        (buf, size): (Bytes, usize),
        levels: usize,
        encoding: Encoding,
        first_row: usize,
    ) -> Result<()> {
        let num_values = u32::try_from(levels).map_err(|_| general("page too large"))?;
        let page = |buf| Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = self.compressed_page(page, buf, size)?;
        debug_assert_eq!(spec.page_type, PageType::DATA_PAGE);
        self.locations.push(PageLocation {
            offset: spec.offset as i64,
            compressed_page_size: i32::try_from(spec.compressed_size).map_err(|_| general("page too large"))?,
            first_row_index: first_row as i64,
        });
        Ok(())
    }

    /// The chunk's bytes and what closing Parquet's column writer would have
    /// returned: `levels` levels in `rows` rows, the encodings its pages
    /// used besides PLAIN and RLE, and its statistics, column index and
    /// bloom filter, if any.
    pub(crate) fn finish(
        self,
        levels: usize,
        rows: usize,
        encodings: &[Encoding],
        statistics: Option<Statistics>,
        column_index: Option<ColumnIndexMetaData>,
        bloom_filter: Option<Sbbf>,
    ) -> Result<(Bytes, ColumnCloseResult)> {
        let bytes = Bytes::from(self.sink.into_inner()?);
        let mut all = vec![Encoding::PLAIN, Encoding::RLE];
        all.extend(encodings.iter().filter(|e| !all.contains(e)).copied().collect::<Vec<_>>());
        let mut metadata = ColumnChunkMetaData::builder(self.descr)
            .set_compression(self.compression)
            .set_encodings(all)
            .set_num_values(levels as i64)
            .set_total_compressed_size(self.compressed)
            .set_total_uncompressed_size(self.uncompressed)
            .set_data_page_offset(self.locations.first().map_or(0, |l| l.offset))
            .set_dictionary_page_offset(self.dictionary_offset);
        if let Some(statistics) = statistics {
            metadata = metadata.set_statistics(statistics);
        }
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: rows as u64,
            metadata: metadata.build()?,
            bloom_filter,
            column_index,
            offset_index: Some(OffsetIndexMetaData {
                page_locations: self.locations,
                unencoded_byte_array_data_bytes: None,
            }),
        };
        Ok((bytes, close))
    }
}

/// A column index built page by page, as Parquet's writer builds it: each
/// page's minimum and maximum (as the column stores them) or a null page,
/// its null count, and whether the pages' bounds ascend or descend, by the
/// column's order (`K`: a bound as it compares).
pub(crate) struct PageIndex<K> {
    builder: ColumnIndexBuilder,
    last: Option<(K, K)>,
    ascending: bool,
    descending: bool,
}

impl<K: PartialOrd + Copy> PageIndex<K> {
    pub(crate) fn new(physical: PhysicalType) -> Self {
        Self { builder: ColumnIndexBuilder::new(physical), last: None, ascending: true, descending: true }
    }

    /// A page with values between `lo` and `hi`, stored as `min` and `max`.
    pub(crate) fn page(&mut self, (lo, hi): (K, K), min: Vec<u8>, max: Vec<u8>, nulls: u64) {
        if let Some((last_lo, last_hi)) = self.last {
            self.ascending &= last_lo <= lo && last_hi <= hi;
            self.descending &= lo <= last_lo && hi <= last_hi;
        }
        self.last = Some((lo, hi));
        self.builder.append(false, min, max, nulls as i64);
    }

    /// A page of nulls only.
    pub(crate) fn null_page(&mut self, nulls: u64) {
        self.builder.append(true, Vec::new(), Vec::new(), nulls as i64);
    }

    pub(crate) fn build(mut self) -> Result<ColumnIndexMetaData> {
        self.builder.set_boundary_order(match (self.ascending, self.descending) {
            (true, _) => BoundaryOrder::ASCENDING,
            (false, true) => BoundaryOrder::DESCENDING,
            (false, false) => BoundaryOrder::UNORDERED,
        });
        self.builder.build()
    }
}

/// A bound cut to `length` bytes, as a lower or upper bound, and whether it
/// was cut; `text`: the column holds UTF-8 strings.
pub(crate) type Truncate = fn(&[u8], Option<usize>, bool) -> (Vec<u8>, bool);

/// A lower bound of a value within `length` bytes, as Parquet's writer cuts
/// one: its longest prefix, ending on a character boundary for a string
/// (any byte for other bytes, or a string that is not UTF-8), and whether it
/// was cut.
pub(crate) fn truncate_min(value: &[u8], length: Option<usize>, text: bool) -> (Vec<u8>, bool) {
    let cut = length.filter(|&l| value.len() > l).and_then(|l| match std::str::from_utf8(value) {
        Ok(text_value) if text => (1..=l).rfind(|&at| text_value.is_char_boundary(at)).map(|at| value[..at].to_vec()),
        _ => Some(value[..l].to_vec()),
    });
    match cut {
        Some(cut) => (cut, true),
        None => (value.to_vec(), false),
    }
}

/// An upper bound of a value within `length` bytes, as Parquet's writer cuts
/// one: for a string, a prefix with its last character that can be
/// incremented (within its own width) incremented; for other bytes, a
/// prefix with its last byte that does not overflow incremented. And whether
/// it was cut: a value no prefix of which can be incremented is kept whole.
pub(crate) fn truncate_max(value: &[u8], length: Option<usize>, text: bool) -> (Vec<u8>, bool) {
    let cut = length.filter(|&l| value.len() > l).and_then(|l| match std::str::from_utf8(value) {
        Ok(text_value) if text => {
            let at = (l.saturating_sub(3)..=l).rfind(|&at| text_value.is_char_boundary(at))?;
            let prefix = text_value.get(..at)?;
            prefix.char_indices().rev().find_map(|(i, c)| {
                let next = char::from_u32(c as u32 + 1).filter(|n| n.len_utf8() == c.len_utf8())?;
                let mut out = prefix.as_bytes()[..i + c.len_utf8()].to_vec();
                next.encode_utf8(&mut out[i..]);
                Some(out)
            })
        }
        _ => {
            let mut out = value[..l].to_vec();
            for byte in out.iter_mut().rev() {
                let (next, overflow) = byte.overflowing_add(1);
                *byte = next;
                if !overflow {
                    return Some(out);
                }
            }
            None
        }
    });
    match cut {
        Some(cut) => (cut, true),
        None => (value.to_vec(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds are cut as Parquet's writer cuts them: strings on character
    /// boundaries, other bytes (ids) on any byte, even when they happen to
    /// be valid UTF-8.
    #[test]
    fn bounds_are_cut_as_parquets_writer_cuts_them() {
        let text = "abé".as_bytes();
        assert_eq!(truncate_min(text, Some(3), true), (b"ab".to_vec(), true));
        assert_eq!(truncate_min(text, Some(3), false), (text[..3].to_vec(), true));
        assert_eq!(truncate_max(text, Some(3), true), (b"ac".to_vec(), true));
        assert_eq!(truncate_max(text, Some(3), false), (vec![b'a', b'b', 0xc4], true));
        assert_eq!(truncate_max(&[1, 0xff, 0xff], Some(2), false), (vec![2, 0], true));
        assert_eq!(truncate_max(&[0xff, 0xff, 1], Some(2), false), (vec![0xff, 0xff, 1], false), "kept whole");
        assert_eq!(truncate_min(b"short", Some(64), true), (b"short".to_vec(), false));
    }
}
