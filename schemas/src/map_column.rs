//! Attribute maps written to Parquet by hand: levels and dictionary indices
//! straight from the batches' entries, in block order.
//!
//! Arrow's Parquet writer needs a map column in block order first (a copy of
//! every entry), works out its levels by walking the nested arrays, and
//! hashes every key and value into its dictionary, row after row. A
//! resource's attributes are the same on every span of it, so a block of
//! 100,000 spans hashed the same few dozen strings millions of times. Here
//! each entry of a batch is looked up in the dictionary once (a grouped
//! column holds each resource once, so that is once per resource), and each
//! row's levels and indices are appended from those lookups. The pages are
//! what Parquet's writer makes for these leaves (data page v1, levels and
//! dictionary indices RLE/bit-packed hybrid, a PLAIN dictionary page, no
//! statistics: [`crate::block`] asks for none on nested leaves), and the
//! column chunk is spliced into the row group with its offset index.
//!
//! The map type is the schema's attribute map: `key` (required) and a
//! nullable `value` struct of six nullable leaves, seven Parquet leaves
//! with at most one repetition level.

use arrow::array::{Array, AsArray, BooleanArray, GenericByteArray, MapArray, PrimitiveArray, StructArray};
use arrow::datatypes::{BinaryType, ByteArrayType, Float64Type, Int64Type, Utf8Type};
use bytes::Bytes;
use foldhash::HashMap;
use parquet::basic::{Compression, Encoding, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::gather::Rows;

/// Parquet leaves of an attribute map: the key and the value's six.
pub(crate) const LEAVES: usize = 7;

/// Most levels in one data page, besides the row limit: a page is cut at
/// the first row boundary past it, so rows with many entries still make
/// pages of bounded size.
const PAGE_LEVELS: usize = 1 << 20;

/// A level of an empty map (every other level is an entry: its place in
/// the batches' entries one after another).
const EMPTY: u32 = u32::MAX;

/// The column's levels in block order, and its pages: the levels and first
/// row of each, and its repetition levels encoded (the same for every leaf).
struct Layout {
    /// Each level's entry (numbered across the batches, batch by batch), or [`EMPTY`].
    levels: Vec<u32>,
    pages: Vec<PageLayout>,
    rows: usize,
    /// Per batch, where its entries start in that numbering; and how many there are.
    first_entry: Vec<usize>,
    entries: usize,
    /// Per batch, whether each of its rows is in the column chunk.
    used: Vec<Vec<bool>>,
}

struct PageLayout {
    levels: std::ops::Range<usize>,
    first_row: usize,
    repetition: Vec<u8>,
}

impl Layout {
    fn new(maps: &[&MapArray], rows: &[Rows], page_rows: usize) -> Result<Self> {
        let mut first_entry = Vec::with_capacity(maps.len());
        let mut entries = 0;
        for map in maps {
            first_entry.push(entries);
            entries += map.entries().len();
        }
        if entries >= EMPTY as usize {
            return Err(general("too many map entries"));
        }
        let mut levels = Vec::new();
        let mut repetition = Vec::new();
        let mut pages = Vec::new();
        let mut used: Vec<Vec<bool>> = maps.iter().map(|m| vec![false; m.len()]).collect();
        let (mut row, mut page_start) = (0, (0, 0));
        let cut = |levels: &[u32], repetition: &mut Vec<u8>, (start, first_row): (usize, usize)| {
            let mut encoded = Vec::new();
            levels_v1(&mut encoded, repetition, 1);
            repetition.clear();
            PageLayout { levels: start..levels.len(), first_row, repetition: encoded }
        };
        for r in rows {
            let map = maps[r.array];
            let offsets = map.value_offsets();
            let base = first_entry[r.array];
            used[r.array][r.start..r.end].fill(true);
            for i in r.start..r.end {
                if row - page_start.1 >= page_rows || levels.len() - page_start.0 >= PAGE_LEVELS {
                    pages.push(cut(&levels, &mut repetition, page_start));
                    page_start = (levels.len(), row);
                }
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                if start == end || map.is_null(i) {
                    levels.push(EMPTY);
                    repetition.push(0);
                } else {
                    levels.extend((base + start..base + end).map(|entry| entry as u32));
                    repetition.push(0);
                    repetition.extend(std::iter::repeat_n(1, end - start - 1));
                }
                row += 1;
            }
        }
        pages.push(cut(&levels, &mut repetition, page_start));
        Ok(Self { levels, pages, rows: row, first_entry, entries, used })
    }
}

fn general(message: &str) -> ParquetError {
    ParquetError::General(format!("attribute map column: {message}"))
}

/// The seven column chunks of the attribute map `maps` (one per batch),
/// taking their rows as `rows` say, in order: each chunk's bytes (starting
/// at offset 0) and what closing its writer would have returned. `leaves`
/// are the map's seven leaf columns in the file's schema.
pub(crate) fn write(
    leaves: &[ColumnDescPtr],
    properties: &WriterProperties,
    maps: &[&MapArray],
    rows: &[Rows],
) -> Result<Vec<(Bytes, ColumnCloseResult)>> {
    if leaves.len() != LEAVES {
        return Err(general("expected seven leaves"));
    }
    let layout = Layout::new(maps, rows, properties.data_page_row_count_limit().max(1))?;
    let entries: Vec<&StructArray> = maps.iter().map(|m| m.entries()).collect();
    let values: Vec<&StructArray> = entries.iter().map(|e| e.column(1).as_struct()).collect();
    let leaf = |i: usize| -> Vec<&dyn Array> { values.iter().map(|v| v.column(i).as_ref()).collect() };
    let keys: Vec<&dyn Array> = entries.iter().map(|e| e.column(0).as_ref()).collect();
    let column = Column { layout: &layout, maps, values: &values, properties };
    Ok(vec![
        column.chunk(&leaves[0], 1, &byte_arrays::<Utf8Type>(&keys))?,
        column.chunk(&leaves[1], 3, &byte_arrays::<Utf8Type>(&leaf(0)))?,
        column.chunk(&leaves[2], 3, &leaf(1).iter().map(|a| a.as_primitive::<Int64Type>()).collect::<Vec<_>>())?,
        column.chunk(&leaves[3], 3, &leaf(2).iter().map(|a| a.as_primitive::<Float64Type>()).collect::<Vec<_>>())?,
        column.chunk(&leaves[4], 3, &leaf(3).iter().map(|a| a.as_boolean()).collect::<Vec<_>>())?,
        column.chunk(&leaves[5], 3, &byte_arrays::<BinaryType>(&leaf(4)))?,
        column.chunk(&leaves[6], 3, &byte_arrays::<Utf8Type>(&leaf(5)))?,
    ])
}

fn byte_arrays<'a, T: ByteArrayType>(arrays: &[&'a dyn Array]) -> Vec<&'a GenericByteArray<T>> {
    arrays.iter().map(|a| a.as_bytes::<T>()).collect()
}

/// A leaf's values in one batch, as the writer reads them.
trait LeafValues<'a>: Copy {
    /// Booleans are written PLAIN, everything else through a dictionary.
    const DICTIONARY: bool = true;
    fn valid(self, e: usize) -> bool;
    /// Whether two valid entries hold the same value.
    fn same(self, x: usize, y: usize) -> bool;
    /// The value of valid entry `e`: its dictionary index, or a boolean.
    fn value(self, e: usize, dictionary: &mut Dictionary<'a>) -> u32;
}

impl<'a, T: ByteArrayType<Native = N>, N: AsRef<[u8]> + ?Sized + 'a> LeafValues<'a> for &'a GenericByteArray<T> {
    fn valid(self, e: usize) -> bool {
        self.is_valid(e)
    }
    fn same(self, x: usize, y: usize) -> bool {
        self.value(x).as_ref() == self.value(y).as_ref()
    }
    fn value(self, e: usize, dictionary: &mut Dictionary<'a>) -> u32 {
        let value: &'a [u8] = GenericByteArray::value(self, e).as_ref();
        dictionary.intern_bytes(value)
    }
}

impl<'a> LeafValues<'a> for &'a PrimitiveArray<Int64Type> {
    fn valid(self, e: usize) -> bool {
        self.is_valid(e)
    }
    fn same(self, x: usize, y: usize) -> bool {
        self.value(x) == self.value(y)
    }
    fn value(self, e: usize, dictionary: &mut Dictionary<'a>) -> u32 {
        dictionary.intern_word(PrimitiveArray::value(self, e) as u64)
    }
}

impl<'a> LeafValues<'a> for &'a PrimitiveArray<Float64Type> {
    fn valid(self, e: usize) -> bool {
        self.is_valid(e)
    }
    fn same(self, x: usize, y: usize) -> bool {
        self.value(x).to_bits() == self.value(y).to_bits()
    }
    fn value(self, e: usize, dictionary: &mut Dictionary<'a>) -> u32 {
        dictionary.intern_word(PrimitiveArray::value(self, e).to_bits())
    }
}

impl<'a> LeafValues<'a> for &'a BooleanArray {
    const DICTIONARY: bool = false;
    fn valid(self, e: usize) -> bool {
        self.is_valid(e)
    }
    fn same(self, x: usize, y: usize) -> bool {
        self.value(x) == self.value(y)
    }
    fn value(self, e: usize, _: &mut Dictionary<'a>) -> u32 {
        u32::from(BooleanArray::value(self, e))
    }
}

/// An entry's definition level (top two bits) and value (its dictionary
/// index, or a boolean), as [`Column::codes`] works it out for a leaf.
const DEFINITION_SHIFT: u32 = 30;
const VALUE_MASK: u32 = (1 << DEFINITION_SHIFT) - 1;

/// A dictionary of one leaf's values: each distinct value once, PLAIN
/// encoded.
#[derive(Default)]
struct Dictionary<'a> {
    page: Vec<u8>,
    len: u32,
    bytes: HashMap<&'a [u8], u32>,
    words: HashMap<u64, u32>,
}

impl<'a> Dictionary<'a> {
    /// `value`'s index, added (to the map and the page) when new.
    fn intern_bytes(&mut self, value: &'a [u8]) -> u32 {
        let next = self.len;
        let index = *self.bytes.entry(value).or_insert(next);
        if index == next {
            self.page.extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.page.extend_from_slice(value);
            self.len += 1;
        }
        index
    }

    /// The same for an 8-byte value (an integer, or a float by its bits).
    fn intern_word(&mut self, value: u64) -> u32 {
        let next = self.len;
        let index = *self.words.entry(value).or_insert(next);
        if index == next {
            self.page.extend_from_slice(&value.to_le_bytes());
            self.len += 1;
        }
        index
    }
}

/// What every leaf of one map column shares.
struct Column<'c> {
    layout: &'c Layout,
    maps: &'c [&'c MapArray],
    values: &'c [&'c StructArray],
    properties: &'c WriterProperties,
}

impl<'c> Column<'c> {
    /// Every entry's code for the leaf `arrays` (one per batch), in the
    /// rows the layout uses, batch by batch in their own order: its
    /// definition level (1: no value struct, 2: this leaf null,
    /// `max_definition`: a value) and its value. Rows of a batch tend to
    /// list the same keys in the same order (spans of one kind, or a
    /// resource's attributes), so an entry equal to the one at its position
    /// in the row before takes that one's code, and only the others are
    /// looked up.
    fn codes<'a, V: LeafValues<'a>>(
        &self,
        arrays: &[V],
        max_definition: u8,
        dictionary: &mut Dictionary<'a>,
    ) -> Vec<u32> {
        let mut codes = vec![0; self.layout.entries];
        let value_level = u32::from(max_definition) << DEFINITION_SHIFT;
        for (a, (&leaf, map)) in arrays.iter().zip(self.maps).enumerate() {
            let structs = self.values[a];
            let struct_null = |e: usize| max_definition == 3 && structs.is_null(e);
            let codes = &mut codes[self.layout.first_entry[a]..];
            let offsets = map.value_offsets();
            let mut previous = 0..0;
            for row in (0..map.len()).filter(|&row| self.layout.used[a][row]) {
                let entries = offsets[row] as usize..offsets[row + 1] as usize;
                for (j, e) in entries.clone().enumerate() {
                    let before = previous.start + j;
                    codes[e] = if struct_null(e) {
                        1 << DEFINITION_SHIFT
                    } else if !leaf.valid(e) {
                        2 << DEFINITION_SHIFT
                    } else if before < previous.end
                        && !struct_null(before)
                        && leaf.valid(before)
                        && leaf.same(before, e)
                    {
                        codes[before]
                    } else {
                        value_level | leaf.value(e, dictionary)
                    };
                }
                previous = entries;
            }
        }
        codes
    }

    /// The column chunk of one leaf (`max_definition`: 1 for the key, 3
    /// for a leaf of the value struct).
    fn chunk<'a, V: LeafValues<'a>>(
        &self,
        descr: &ColumnDescPtr,
        max_definition: u8,
        arrays: &[V],
    ) -> Result<(Bytes, ColumnCloseResult)> {
        let (layout, properties) = (self.layout, self.properties);
        if descr.max_def_level() != i16::from(max_definition) || descr.max_rep_level() != 1 {
            return Err(general("leaf levels differ from the attribute map's"));
        }
        let plain_bits = !V::DICTIONARY;
        let mut dictionary = Dictionary::default();
        let codes = self.codes(arrays, max_definition, &mut dictionary);
        if dictionary.len > VALUE_MASK {
            return Err(general("too many distinct values"));
        }
        // Definition levels and values (dictionary indices, or booleans), and
        // how many values the pages up to each hold.
        let mut definition: Vec<u8> = Vec::with_capacity(layout.levels.len());
        let mut page_values = Vec::with_capacity(layout.pages.len());
        let mut found: Vec<u32> = Vec::new();
        for page in &layout.pages {
            for &level in &layout.levels[page.levels.clone()] {
                if level == EMPTY {
                    definition.push(0);
                    continue;
                }
                let code = codes[level as usize];
                let d = (code >> DEFINITION_SHIFT) as u8;
                definition.push(d);
                if d == max_definition {
                    found.push(code & VALUE_MASK);
                }
            }
            page_values.push(found.len());
        }

        let compression = properties.compression(descr.path());
        let level = match compression {
            Compression::UNCOMPRESSED => None,
            Compression::ZSTD(level) => Some(level.compression_level()),
            other => return Err(general(&format!("{other} is not written here"))),
        };
        let compress = |body: Vec<u8>| -> Result<(Bytes, usize)> {
            let size = body.len();
            Ok(match level {
                None => (Bytes::from(body), size),
                Some(level) => (Bytes::from(zstd_compress(level, &body)?), size),
            })
        };

        let has_dictionary = !plain_bits && dictionary.len > 0;
        let index_bits = bit_width(dictionary.len.saturating_sub(1)).max(1);
        let mut sink = TrackedWrite::new(Vec::new());
        let mut writer = SerializedPageWriter::new(&mut sink);
        let (mut compressed, mut uncompressed) = (0i64, 0i64);
        let mut dictionary_offset = None;
        if has_dictionary {
            let (buf, size) = compress(std::mem::take(&mut dictionary.page))?;
            let page =
                Page::DictionaryPage { buf, num_values: dictionary.len, encoding: Encoding::PLAIN, is_sorted: false };
            let spec = writer.write_page(CompressedPage::new(page, size))?;
            dictionary_offset = Some(spec.offset as i64);
            compressed += spec.compressed_size as i64;
            uncompressed += spec.uncompressed_size as i64;
        }
        let mut locations = Vec::with_capacity(layout.pages.len());
        let mut value_start = 0;
        for (page, &value_end) in layout.pages.iter().zip(&page_values) {
            let mut body = page.repetition.clone();
            levels_v1(&mut body, &definition[page.levels.clone()], bit_width(u32::from(max_definition)));
            let encoding = if plain_bits {
                pack_booleans(&mut body, &found[value_start..value_end]);
                Encoding::PLAIN
            } else if has_dictionary {
                body.push(index_bits as u8);
                rle_hybrid(&mut body, &found[value_start..value_end], index_bits);
                Encoding::RLE_DICTIONARY
            } else {
                Encoding::PLAIN
            };
            let (buf, size) = compress(body)?;
            let num_values = u32::try_from(page.levels.len()).map_err(|_| general("page too large"))?;
            let data = Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let spec = writer.write_page(CompressedPage::new(data, size))?;
            debug_assert_eq!(spec.page_type, PageType::DATA_PAGE);
            locations.push(PageLocation {
                offset: spec.offset as i64,
                compressed_page_size: i32::try_from(spec.compressed_size).map_err(|_| general("page too large"))?,
                first_row_index: page.first_row as i64,
            });
            compressed += spec.compressed_size as i64;
            uncompressed += spec.uncompressed_size as i64;
            value_start = value_end;
        }
        writer.close()?;
        let bytes = Bytes::from(sink.into_inner()?);
        let mut encodings = vec![Encoding::PLAIN, Encoding::RLE];
        if has_dictionary {
            encodings.push(Encoding::RLE_DICTIONARY);
        }
        let metadata = ColumnChunkMetaData::builder(descr.clone())
            .set_compression(compression)
            .set_encodings(encodings)
            .set_num_values(layout.levels.len() as i64)
            .set_total_compressed_size(compressed)
            .set_total_uncompressed_size(uncompressed)
            .set_data_page_offset(locations.first().map_or(0, |l| l.offset))
            .set_dictionary_page_offset(dictionary_offset)
            .build()?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: layout.rows as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: Some(OffsetIndexMetaData {
                page_locations: locations,
                unencoded_byte_array_data_bytes: None,
            }),
        };
        Ok((bytes, close))
    }
}

thread_local! {
    /// A zstd context per thread, kept from page to page and block to
    /// block: making one asks the CPU for its features, which in a VM traps
    /// to the hypervisor (Parquet's writer makes one per column chunk).
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `body` compressed at zstd `level`, a frame of its own.
fn zstd_compress(level: i32, body: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| general(&format!("zstd: {e}"));
    ZSTD.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some((at, compressor)) if *at == level => compressor,
            _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level).map_err(failed)?)).1,
        };
        compressor.compress(body).map_err(failed)
    })
}

/// Bits needed for `max`.
fn bit_width(max: u32) -> u32 {
    32 - max.leading_zeros()
}

/// Levels as a data page v1 holds them: their byte length, then the
/// RLE/bit-packed hybrid of `levels` in `bits` bits.
fn levels_v1(out: &mut Vec<u8>, levels: &[u8], bits: u32) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    rle_hybrid(out, levels, bits);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// How many values from `at` equal the one there.
fn run_at<T: PartialEq>(values: &[T], at: usize) -> usize {
    values[at..].iter().take_while(|&v| *v == values[at]).count()
}

/// Parquet's RLE/bit-packed hybrid encoding of `values` in `bits` bits
/// (1 to 32): runs of eight or more alike as (count, value), the rest
/// bit-packed in groups of eight, least significant bits first. Only the
/// last group may be padded (the page's level count says where data ends).
fn rle_hybrid<T: Copy + PartialEq + Into<u32>>(out: &mut Vec<u8>, values: &[T], bits: u32) {
    let value_bytes = bits.div_ceil(8) as usize;
    let mut i = 0;
    while i < values.len() {
        let run = run_at(values, i);
        if run >= 8 {
            put_varint(out, (run as u64) << 1);
            out.extend_from_slice(&values[i].into().to_le_bytes()[..value_bytes]);
            i += run;
            continue;
        }
        let start = i;
        let mut groups = 0u64;
        loop {
            i = (i + 8).min(values.len());
            groups += 1;
            if i == values.len() || groups == 63 || run_at(values, i) >= 8 {
                break;
            }
        }
        put_varint(out, (groups << 1) | 1);
        for group in values[start..i].chunks(8) {
            pack_eight(out, group, bits);
        }
    }
}

/// Up to eight values (the rest zeros) in `bits` bits each: `bits` bytes.
fn pack_eight<T: Copy + Into<u32>>(out: &mut Vec<u8>, group: &[T], bits: u32) {
    if bits <= 8 {
        let packed =
            group.iter().enumerate().fold(0u64, |acc, (i, &v)| acc | (u64::from(v.into()) << (i as u32 * bits)));
        out.extend_from_slice(&packed.to_le_bytes()[..bits as usize]);
        return;
    }
    if bits <= 16 {
        let packed =
            group.iter().enumerate().fold(0u128, |acc, (i, &v)| acc | (u128::from(v.into()) << (i as u32 * bits)));
        out.extend_from_slice(&packed.to_le_bytes()[..bits as usize]);
        return;
    }
    let (mut acc, mut filled) = (0u64, 0u32);
    for n in 0..8 {
        acc |= u64::from(group.get(n).map_or(0, |&v| v.into())) << filled;
        filled += bits;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
}

/// Booleans (as 0 or 1) PLAIN: one bit each, least significant first.
fn pack_booleans(out: &mut Vec<u8>, bits: &[u32]) {
    for chunk in bits.chunks(8) {
        out.push(chunk.iter().enumerate().fold(0u8, |byte, (i, &b)| byte | ((b as u8) << i)));
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader of the hybrid encoding, for the tests: Parquet's spec, read
    /// as plainly as it is written.
    fn read_hybrid(mut bytes: &[u8], bits: u32, count: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while out.len() < count {
            let (mut header, mut shift) = (0u64, 0);
            loop {
                let b = bytes[0];
                bytes = &bytes[1..];
                header |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b < 0x80 {
                    break;
                }
            }
            if header & 1 == 0 {
                let n = (header >> 1) as usize;
                let width = bits.div_ceil(8) as usize;
                let mut v = [0u8; 4];
                v[..width].copy_from_slice(&bytes[..width]);
                bytes = &bytes[width..];
                out.extend(std::iter::repeat_n(u32::from_le_bytes(v), n));
            } else {
                let n = (header >> 1) as usize * 8;
                let total = n * bits as usize / 8;
                let packed = &bytes[..total];
                bytes = &bytes[total..];
                for i in 0..n {
                    let mut v = 0u32;
                    for b in 0..bits as usize {
                        let bit = i * bits as usize + b;
                        v |= u32::from((packed[bit / 8] >> (bit % 8)) & 1) << b;
                    }
                    out.push(v);
                }
            }
        }
        out.truncate(count);
        out
    }

    #[test]
    fn the_hybrid_encoding_reads_back() {
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for bits in [1, 2, 3, 7, 8, 9, 16, 17, 31, 32] {
            for len in [0, 1, 7, 8, 9, 63, 64, 65, 600, 5000] {
                let max = if bits == 32 { u32::MAX } else { (1u32 << bits) - 1 };
                // Runs of random lengths, some long, some single.
                let mut values = Vec::with_capacity(len);
                while values.len() < len {
                    let v = (next() as u32) & max;
                    let run = [1, 1, 2, 7, 8, 9, 40][(next() % 7) as usize];
                    values.extend(std::iter::repeat_n(v, run.min(len - values.len())));
                }
                let mut out = Vec::new();
                rle_hybrid(&mut out, &values, bits);
                assert_eq!(read_hybrid(&out, bits, len), values, "bits {bits}, len {len}");
            }
        }
    }
}
