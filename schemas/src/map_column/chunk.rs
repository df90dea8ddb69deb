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

    fn page(
        &mut self,
        page: impl FnOnce(Bytes) -> Page,
        body: Vec<u8>,
    ) -> Result<parquet::column::page::PageWriteSpec> {
        let size = body.len();
        let buf = match self.level {
            None => Bytes::from(body),
            Some(level) => Bytes::from(zstd_compress(level, &body)?),
        };
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
        let num_values = u32::try_from(levels).map_err(|_| general("page too large"))?;
        let page = |buf| Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = self.page(page, body)?;
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
