//! A leaf's values as the coder reads them, and the dictionary it builds.

use arrow::array::{Array, BooleanArray, GenericByteArray, PrimitiveArray};
use arrow::datatypes::{ByteArrayType, Float64Type, Int64Type, UInt32Type};
use foldhash::HashMap;

/// A leaf's values in one batch, as the writer reads them.
pub(crate) trait LeafValues<'a>: Copy {
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

impl<'a> LeafValues<'a> for &'a PrimitiveArray<UInt32Type> {
    fn valid(self, e: usize) -> bool {
        self.is_valid(e)
    }
    fn same(self, x: usize, y: usize) -> bool {
        self.value(x) == self.value(y)
    }
    fn value(self, e: usize, dictionary: &mut Dictionary<'a>) -> u32 {
        dictionary.intern_int32(PrimitiveArray::value(self, e))
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

/// A dictionary of one leaf's values: each distinct value once, PLAIN
/// encoded, and where each starts in that page.
#[derive(Default)]
pub(crate) struct Dictionary<'a> {
    pub(crate) page: Vec<u8>,
    pub(crate) starts: Vec<u32>,
    pub(crate) len: u32,
    bytes: HashMap<&'a [u8], u32>,
    words: HashMap<u64, u32>,
}

impl<'a> Dictionary<'a> {
    /// `value`'s index, added (to the map and the page) when new.
    fn intern_bytes(&mut self, value: &'a [u8]) -> u32 {
        let next = self.len;
        let index = *self.bytes.entry(value).or_insert(next);
        if index == next {
            self.starts.push(self.page.len() as u32);
            self.page.extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.page.extend_from_slice(value);
            self.len += 1;
        }
        index
    }

    /// The same for an 8-byte value (an integer, or a float by its bits).
    fn intern_word(&mut self, value: u64) -> u32 {
        self.intern_fixed(value, &value.to_le_bytes())
    }

    /// The same for a 32-bit count, PLAIN as Parquet's INT32. (A dictionary
    /// holds values of one width only.)
    fn intern_int32(&mut self, value: u32) -> u32 {
        self.intern_fixed(u64::from(value), &value.to_le_bytes())
    }

    fn intern_fixed(&mut self, value: u64, plain: &[u8]) -> u32 {
        let next = self.len;
        let index = *self.words.entry(value).or_insert(next);
        if index == next {
            self.starts.push(self.page.len() as u32);
            self.page.extend_from_slice(plain);
            self.len += 1;
        }
        index
    }
}
