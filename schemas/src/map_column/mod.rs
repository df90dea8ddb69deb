//! Attribute maps written to Parquet by hand: each batch's entries coded
//! once, and the pages written from the codes.
//!
//! Arrow's Parquet writer needs a map column in block order first (a copy of
//! every entry), works out its levels by walking the nested arrays, and
//! hashes every key and value into its dictionary, row after row. A
//! resource's attributes are the same on every span of it, so a block of
//! 100,000 spans hashed the same few dozen strings millions of times. Here
//! each entry of a batch is coded once per block, for each leaf: its
//! definition level and its dictionary index (a grouped column holds each
//! resource once, so that is once per resource). Each row group's pages
//! are then laid out from the codes in block order. They are what Parquet's
//! writer makes for these leaves (data page v1, levels and dictionary
//! indices in the RLE/bit-packed hybrid, a PLAIN dictionary page, or PLAIN
//! pages for a leaf whose dictionary outgrows the writer's limit as
//! Parquet's writer falls back; no statistics: [`crate::block`] asks for
//! none on nested leaves), and each
//! column chunk is spliced into its row group with its offset index. The
//! block's tag summary takes its attribute entries from the same codes.
//!
//! The map type is the schema's attribute map: `key` (required) and a
//! nullable `value` struct of six nullable leaves, seven Parquet leaves
//! with at most one repetition level.

use arrow::array::{Array, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array, MapArray, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use bytes::Bytes;
use foldhash::HashSet;
use parquet::basic::Encoding;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnDescPtr;

use crate::gather::Rows;
use crate::tag_summary::TagValue;

pub(crate) mod chunk;
pub(crate) mod pages;
pub(crate) mod values;

use chunk::ChunkWriter;
use pages::{bit_width, levels_v1, pack_booleans, rle_hybrid};
use values::{Dictionary, LeafValues};

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
}

struct PageLayout {
    levels: std::ops::Range<usize>,
    first_row: usize,
    repetition: Vec<u8>,
}

impl Layout {
    fn new(maps: &[&MapArray], first_entry: &[usize], rows: &[Rows], page_rows: usize) -> Result<Self> {
        let mut levels = Vec::new();
        let mut repetition = Vec::new();
        let mut pages = Vec::new();
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
        Ok(Self { levels, pages, rows: row })
    }
}

fn general(message: &str) -> ParquetError {
    ParquetError::General(format!("attribute map column: {message}"))
}

/// A map column's entries coded for its seven leaves, once per block: each
/// leaf's dictionary, and each entry's code, its definition level (1: no
/// value struct, 2: this leaf null, the leaf's most: a value) and its
/// value (its dictionary index, or a boolean). Entries are numbered across
/// the batches, batch by batch. A column chunk of any rows of the batches
/// is then written from the codes; every chunk carries the whole
/// dictionary (a block of more than one row group carries values some of
/// its chunks do not use, which Parquet allows).
pub(crate) struct CodedMap<'a> {
    maps: Vec<&'a MapArray>,
    first_entry: Vec<usize>,
    /// Each entry's code for each leaf, an entry's seven together: the
    /// pages are written from all seven in one pass over the levels.
    codes: Vec<[u32; LEAVES]>,
    leaves: Vec<CodedLeaf>,
}

struct CodedLeaf {
    /// The dictionary page (PLAIN), where each value starts in it, and its
    /// length; none for booleans.
    dictionary: Option<(Vec<u8>, Vec<u32>, u32)>,
    max_definition: u8,
    /// Whether any entry has a value in this leaf.
    any_value: bool,
}

impl<'a> CodedMap<'a> {
    /// Codes the entries of `maps` (one per batch: a grouped column's
    /// dictionary values, or the plain column).
    pub(crate) fn new(maps: Vec<&'a MapArray>) -> Result<Self> {
        let mut first_entry = Vec::with_capacity(maps.len());
        let mut entries = 0;
        for map in &maps {
            first_entry.push(entries);
            entries += map.entries().len();
        }
        if entries >= EMPTY as usize {
            return Err(general("too many map entries"));
        }
        let mut codes = vec![[0; LEAVES]; entries];
        let mut key = LeafCoder::<&StringArray>::new(1);
        let mut str = LeafCoder::<&StringArray>::new(3);
        let mut int = LeafCoder::<&Int64Array>::new(3);
        let mut double = LeafCoder::<&Float64Array>::new(3);
        let mut bool = LeafCoder::<&BooleanArray>::new(3);
        let mut bytes = LeafCoder::<&BinaryArray>::new(3);
        let mut json = LeafCoder::<&StringArray>::new(3);
        // One pass over the entries codes all seven leaves of each. Rows of
        // a batch tend to list the same keys in the same order (spans of one
        // kind, or a resource's attributes), so an entry's value equal to
        // the one at its position in the row before takes that one's code,
        // and only the others are looked up.
        for (&map, &first) in maps.iter().zip(&first_entry) {
            let entries = map.entries();
            let values = entries.column(1).as_struct();
            let leaf = |i: usize| values.column(i).as_ref();
            let keys = Some(entries.column(0).as_string::<i32>());
            // A leaf all null in this batch (most of an entry's six) is not read per entry.
            let some = |leaf: &'a dyn Array| (leaf.null_count() < leaf.len()).then_some(leaf);
            let (s, i, d) = (some(leaf(0)), some(leaf(1)), some(leaf(2)));
            let (s, i, d) = (s.map(|a| a.as_string::<i32>()), i.map(|a| a.as_primitive()), d.map(|a| a.as_primitive()));
            let (b, x, j) = (some(leaf(3)), some(leaf(4)), some(leaf(5)));
            let (b, x, j) =
                (b.map(|a| a.as_boolean()), x.map(|a| a.as_binary::<i32>()), j.map(|a| a.as_string::<i32>()));
            let codes = &mut codes[first..];
            let offsets = map.value_offsets();
            let mut previous = 0..0;
            for row in 0..map.len() {
                let row_entries = offsets[row] as usize..offsets[row + 1] as usize;
                for (n, e) in row_entries.clone().enumerate() {
                    let before = Some(previous.start + n).filter(|&before| before < previous.end);
                    let was = before.map(|before| (before, codes[before]));
                    let at = |leaf: usize| was.map(|(before, codes)| (before, codes[leaf]));
                    let null = values.is_null(e);
                    codes[e] = [
                        key.code(keys, e, false, at(0)),
                        str.code(s, e, null, at(1)),
                        int.code(i, e, null, at(2)),
                        double.code(d, e, null, at(3)),
                        bool.code(b, e, null, at(4)),
                        bytes.code(x, e, null, at(5)),
                        json.code(j, e, null, at(6)),
                    ];
                }
                previous = row_entries;
            }
        }
        let leaves = vec![
            key.finish()?,
            str.finish()?,
            int.finish()?,
            double.finish()?,
            bool.finish()?,
            bytes.finish()?,
            json.finish()?,
        ];
        Ok(Self { maps, first_entry, codes, leaves })
    }

    /// The seven column chunks of the rows `rows` names, in order: each
    /// chunk's bytes (starting at offset 0) and what closing its writer
    /// would have returned. `leaves` are the map's seven leaf columns in the
    /// file's schema.
    pub(crate) fn write(
        &self,
        leaves: &[ColumnDescPtr],
        properties: &WriterProperties,
        rows: &[Rows],
    ) -> Result<Vec<(Bytes, ColumnCloseResult)>> {
        if leaves.len() != LEAVES {
            return Err(general("expected seven leaves"));
        }
        let page_rows = properties.data_page_row_count_limit().max(1);
        let layout = Layout::new(&self.maps, &self.first_entry, rows, page_rows)?;
        // Each leaf's definition levels and values (dictionary indices, or
        // booleans) in block order, and how many values the pages up to
        // each hold. A value leaf without any value in the block (most of
        // an attribute map's six: a resource's attributes are strings) has
        // no values, and the levels of every such leaf are the same (0: no
        // entry, 1: no value struct, 2: this leaf null): they are taken
        // once, for the first, and the others are written from them.
        let first_empty = (1..LEAVES).find(|&leaf| !self.leaves[leaf].any_value);
        let taken = |leaf: usize| leaf == 0 || self.leaves[leaf].any_value || Some(leaf) == first_empty;
        let mut levels: Vec<LeafLevels> = (0..LEAVES)
            .map(|leaf| {
                let (levels, pages) = if taken(leaf) { (layout.levels.len(), layout.pages.len()) } else { (0, 0) };
                LeafLevels {
                    definition: Vec::with_capacity(levels),
                    values: Vec::new(),
                    page_values: Vec::with_capacity(pages),
                }
            })
            .collect();
        // The levels' codes are copied out in block order a thousand at a
        // time, then each leaf takes its own from the copy. Rows in block
        // order jump across the batches' entries: this short loop keeps
        // many of those reads in flight at once, and the leaves then read
        // the copy while it is in cache.
        const AT_ONCE: usize = 1024;
        let mut copied: Vec<[u32; LEAVES]> = Vec::with_capacity(AT_ONCE);
        for page in &layout.pages {
            for at_once in layout.levels[page.levels.clone()].chunks(AT_ONCE) {
                copied.clear();
                copied.extend(at_once.iter().map(|&level| match level {
                    EMPTY => [EMPTY; LEAVES],
                    entry => self.codes[entry as usize],
                }));
                for (leaf, (levels, coded)) in levels.iter_mut().zip(&self.leaves).enumerate() {
                    if taken(leaf) {
                        levels.take(&copied, leaf, coded.max_definition);
                    }
                }
            }
            for (_, levels) in levels.iter_mut().enumerate().filter(|(leaf, _)| taken(*leaf)) {
                levels.page_values.push(levels.values.len());
            }
        }
        // Their pages are the same bytes too: compressed once.
        let mut empty_pages = EmptyPages::default();
        leaves
            .iter()
            .zip(&self.leaves)
            .enumerate()
            .map(|(at, (descr, leaf))| {
                let from = if taken(at) { at } else { first_empty.unwrap_or(at) };
                let empty = (Some(from) == first_empty).then_some(&mut empty_pages);
                chunk(descr, properties, &layout, leaf, &levels[from], empty)
            })
            .collect()
    }

    /// Calls `new` with each entry of batch `batch` whose key, or key and
    /// summarized value (its string, integer, float or boolean, the first
    /// set), `seen` has not met yet, in the batch's order: the entries a
    /// tag summary would change on, found by their codes.
    pub(crate) fn each_new_entry(
        &self,
        batch: usize,
        seen: &mut Seen,
        mut new: impl FnMut(&str, Option<TagValue<'_>>),
    ) {
        let map = self.maps[batch];
        let entries = map.entries();
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_struct();
        let base = self.first_entry[batch];
        let offsets = map.value_offsets();
        let (start, end) = (offsets[0] as usize, offsets[map.len()] as usize);
        for e in start..end {
            let codes = &self.codes[base + e];
            let key = codes[0] & VALUE_MASK;
            let key_new = seen.key(key);
            // The first of the string, integer, float and boolean set.
            let value = (1..=4).find_map(|leaf| {
                let code = codes[leaf];
                ((code >> DEFINITION_SHIFT) == 3).then_some((leaf, code & VALUE_MASK))
            });
            let value_new = value
                .is_some_and(|(leaf, v)| seen.value((u64::from(key) << 35) | ((leaf as u64) << 32) | u64::from(v)));
            if !key_new && !value_new {
                continue;
            }
            let value = value.map(|(leaf, _)| match leaf {
                1 => TagValue::Str(values.column(0).as_string::<i32>().value(e)),
                2 => TagValue::Int(values.column(1).as_primitive::<Int64Type>().value(e)),
                3 => TagValue::Float(values.column(2).as_primitive::<Float64Type>().value(e)),
                _ => TagValue::Bool(values.column(3).as_boolean().value(e)),
            });
            new(keys.value(e), value);
        }
    }
}

/// What [`CodedMap::each_new_entry`] has met: keys by their dictionary
/// index, and (key, leaf, value) by theirs. Most entries repeat one met
/// just before, so a small table of the last met in each slot answers
/// them before the set is asked.
#[derive(Debug)]
pub(crate) struct Seen {
    keys: Vec<bool>,
    values: HashSet<u64>,
    recent: Box<[u64; Self::RECENT]>,
}

impl Default for Seen {
    fn default() -> Self {
        Self { keys: Vec::new(), values: HashSet::default(), recent: Box::new([u64::MAX; Self::RECENT]) }
    }
}

impl Seen {
    const RECENT: usize = 1024;

    /// Whether the (key, leaf, value) `packed` is new, marking it met.
    fn value(&mut self, packed: u64) -> bool {
        // A slot by the key's and the value's low bits (the leaf's are in between).
        let slot = ((packed >> 35) as usize).wrapping_mul(31).wrapping_add(packed as usize) % Self::RECENT;
        if self.recent[slot] == packed {
            return false;
        }
        self.recent[slot] = packed;
        self.values.insert(packed)
    }

    /// Whether `key` is new, marking it met.
    fn key(&mut self, key: u32) -> bool {
        let key = key as usize;
        if key >= self.keys.len() {
            self.keys.resize(key + 1, false);
        }
        !std::mem::replace(&mut self.keys[key], true)
    }
}

/// One leaf's coding: its dictionary, and its most definition level (1
/// for the key, 3 for a value's leaves).
struct LeafCoder<'a, V> {
    dictionary: Dictionary<'a>,
    max_definition: u8,
    any_value: bool,
    values: std::marker::PhantomData<V>,
}

impl<'a, V: LeafValues<'a>> LeafCoder<'a, V> {
    fn new(max_definition: u8) -> Self {
        Self { dictionary: Dictionary::default(), max_definition, any_value: false, values: std::marker::PhantomData }
    }

    /// The code of entry `e` of `leaf` (none: all null in its batch),
    /// whose value struct is null if `struct_null`; `before` is the entry
    /// at its position in the row before, and its code, if there is one.
    #[inline]
    fn code(&mut self, leaf: Option<V>, e: usize, struct_null: bool, before: Option<(usize, u32)>) -> u32 {
        let value_level = u32::from(self.max_definition);
        let leaf = leaf.filter(|leaf| !struct_null && leaf.valid(e));
        match (leaf, before) {
            _ if struct_null => 1 << DEFINITION_SHIFT,
            (None, _) => 2 << DEFINITION_SHIFT,
            (Some(leaf), Some((before, code))) if code >> DEFINITION_SHIFT == value_level && leaf.same(before, e) => {
                code
            }
            (Some(leaf), _) => {
                self.any_value = true;
                (value_level << DEFINITION_SHIFT) | leaf.value(e, &mut self.dictionary)
            }
        }
    }

    fn finish(self) -> Result<CodedLeaf> {
        let dictionary = self.dictionary;
        if dictionary.len > VALUE_MASK || dictionary.page.len() > u32::MAX as usize {
            return Err(general("too many distinct values"));
        }
        let dictionary = V::DICTIONARY.then_some((dictionary.page, dictionary.starts, dictionary.len));
        Ok(CodedLeaf { dictionary, max_definition: self.max_definition, any_value: self.any_value })
    }
}

/// One leaf's definition levels and values in block order, and how many
/// values the pages up to each hold.
struct LeafLevels {
    definition: Vec<u8>,
    values: Vec<u32>,
    page_values: Vec<usize>,
}

impl LeafLevels {
    /// Appends leaf `leaf`'s definition levels and values of `codes`
    /// (levels in block order; an empty map's are all EMPTY: a key's code
    /// never is, its definition level being 1).
    fn take(&mut self, codes: &[[u32; LEAVES]], leaf: usize, max_definition: u8) {
        // Every level's value is written, and kept only if it is one.
        let (mut defined, mut kept) = (self.definition.len(), self.values.len());
        self.definition.resize(defined + codes.len(), 0);
        self.values.resize(kept + codes.len(), 0);
        for c in codes {
            let (empty, code) = (c[0] == EMPTY, c[leaf]);
            let definition = if empty { 0 } else { (code >> DEFINITION_SHIFT) as u8 };
            self.definition[defined] = definition;
            defined += 1;
            self.values[kept] = code & VALUE_MASK;
            kept += usize::from(definition == max_definition);
        }
        self.values.truncate(kept);
    }
}

/// The data pages of the value leaves without any value in a block, as
/// the first of them compressed them (and how).
#[derive(Default)]
struct EmptyPages {
    compression: Option<parquet::basic::Compression>,
    pages: Vec<((Bytes, usize), Encoding)>,
}

/// The column chunk of one leaf, its rows laid out by `layout`. A leaf
/// without values (`empty`) takes the pages the first such leaf
/// compressed, when compressed alike, or leaves its own there.
fn chunk(
    descr: &ColumnDescPtr,
    properties: &WriterProperties,
    layout: &Layout,
    leaf: &CodedLeaf,
    levels: &LeafLevels,
    mut empty: Option<&mut EmptyPages>,
) -> Result<(Bytes, ColumnCloseResult)> {
    let compression = properties.compression(descr.path());
    let reuse = empty.as_ref().is_some_and(|e| e.compression == Some(compression) && !e.pages.is_empty());
    if let Some(empty) = empty.as_mut().filter(|_| !reuse) {
        empty.compression = Some(compression);
        empty.pages.clear();
    }
    let max_definition = leaf.max_definition;
    if descr.max_def_level() != i16::from(max_definition) || descr.max_rep_level() != 1 {
        return Err(general("leaf levels differ from the attribute map's"));
    }
    let (definition, found, page_values) = (&levels.definition, &levels.values, &levels.page_values);
    let plain_bits = leaf.dictionary.is_none();
    let (dictionary_page, starts, dictionary_len) = match &leaf.dictionary {
        Some((page, starts, len)) => (page.as_slice(), starts.as_slice(), *len),
        None => (&[][..], &[][..], 0),
    };
    // Past the writer's dictionary page limit, Parquet's writer falls back
    // to PLAIN pages; so does this one: a reader of a few rows then decodes
    // their pages only, not a dictionary of the whole block.
    let over_limit = dictionary_page.len() > properties.dictionary_page_size_limit();

    let has_dictionary = dictionary_len > 0 && !over_limit;
    let index_bits = bit_width(dictionary_len.saturating_sub(1)).max(1);
    let mut chunk = ChunkWriter::new(descr, properties)?;
    if has_dictionary {
        chunk.dictionary(dictionary_page, dictionary_len)?;
    }
    let mut value_start = 0;
    for (at, (page, &value_end)) in layout.pages.iter().zip(page_values).enumerate() {
        if let Some(empty) = empty.as_mut().filter(|_| reuse) {
            let (compressed, encoding) =
                empty.pages.get(at).cloned().ok_or_else(|| general("a page of the empty leaves"))?;
            chunk.compressed_data(compressed, page.levels.len(), encoding, page.first_row)?;
            continue;
        }
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
            // A PLAIN page is its values' PLAIN encodings one after another:
            // each value's slice of the dictionary page.
            for &index in &found[value_start..value_end] {
                let start = starts[index as usize] as usize;
                let end = starts.get(index as usize + 1).map_or(dictionary_page.len(), |&e| e as usize);
                body.extend_from_slice(&dictionary_page[start..end]);
            }
            Encoding::PLAIN
        };
        let compressed = chunk.compress(body)?;
        if let Some(empty) = empty.as_mut() {
            empty.pages.push((compressed.clone(), encoding));
        }
        chunk.compressed_data(compressed, page.levels.len(), encoding, page.first_row)?;
        value_start = value_end;
    }
    let encodings: &[Encoding] = if has_dictionary { &[Encoding::RLE_DICTIONARY] } else { &[] };
    chunk.finish(layout.levels.len(), layout.rows, encodings, None, None, None)
}

/// An entry's definition level (top two bits) and value (its dictionary
/// index, or a boolean), as [`LeafCoder::code`] works it out.
const DEFINITION_SHIFT: u32 = 30;
const VALUE_MASK: u32 = (1 << DEFINITION_SHIFT) - 1;
