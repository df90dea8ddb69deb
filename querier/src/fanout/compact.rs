//! The statistics' long vectors in a compact form, for the trip from one
//! querier to another (a spread fan-out ships every call's duration).
//!
//! Integers travel as each value's difference from the one before, packed
//! in as few bits as a block of them needs: a sorted run of durations costs
//! one or two bytes a value instead of eight, per-parent counts and indexes
//! a bit or none. Trace ids travel as their bytes, each run of one id once
//! (a parent's calls that are parents themselves share its trace). Floats
//! travel as their change from the one before, in as few bytes as it
//! takes. Each vector is one byte string to the serializer, so bincode
//! copies it at once rather than value by value, and the transport need
//! not compress it again. Decoding checks every value it reads: a
//! truncated or altered string is an error, never a panic.

use serde::de::Visitor;
use serde::{Deserializer, Serializer};

/// An integer that travels as a delta from the one before.
pub(super) trait Int: Copy {
    fn to_i64(self) -> i64;
    fn from_i64(value: i64) -> Option<Self>;
}

impl Int for i64 {
    fn to_i64(self) -> i64 {
        self
    }
    fn from_i64(value: i64) -> Option<Self> {
        Some(value)
    }
}

impl Int for u32 {
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn from_i64(value: i64) -> Option<Self> {
        u32::try_from(value).ok()
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The varint at the start of `bytes`, and the bytes after it.
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte < 0x80 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Values per block of [`encode_ints`].
const BLOCK: usize = 64;

/// `values` as their count, then each one's zigzag difference from the one
/// before (wrapping, so every i64 round-trips), in blocks of [`BLOCK`]: the
/// block's least difference (a varint), the bits the others need above it
/// (a byte), and each one's excess in that many bits. A sorted run of
/// durations costs a byte or two a value, and a value that repeats the
/// step before it (the count of calls of parents that make one, each
/// parent's index) nothing; values are read back a shift and a mask each.
pub(super) fn encode_ints<T: Int>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4 + 10);
    put_varint(&mut out, values.len() as u64);
    let mut previous = 0i64;
    let mut zigzags = [0u64; BLOCK];
    for block in values.chunks(BLOCK) {
        for (zigzag, value) in zigzags.iter_mut().zip(block) {
            let value = value.to_i64();
            let delta = value.wrapping_sub(previous);
            *zigzag = ((delta << 1) ^ (delta >> 63)) as u64;
            previous = value;
        }
        let zigzags = &zigzags[..block.len()];
        let (least, most) = zigzags.iter().fold((u64::MAX, 0), |(l, m), &z| (l.min(z), m.max(z)));
        let width = 64 - (most - least).leading_zeros();
        put_varint(&mut out, least);
        out.push(width as u8);
        if width > 0 {
            // A word fills from its low bits; a value that does not fit
            // goes on in the next word.
            let (mut word, mut filled) = (0u64, 0u32);
            for &zigzag in zigzags {
                let value = zigzag - least;
                word |= value << filled;
                let end = filled + width;
                if end >= 64 {
                    out.extend_from_slice(&word.to_le_bytes());
                    word = value.checked_shr(64 - filled).unwrap_or(0);
                    filled = end - 64;
                } else {
                    filled = end;
                }
            }
            out.extend_from_slice(&word.to_le_bytes()[..filled.div_ceil(8) as usize]);
        }
    }
    out
}

/// Reads `width`-bit values from bytes packed as [`encode_ints`] packs them.
struct Unpack<'a> {
    bytes: &'a [u8],
    /// The bits read and not yet taken, `filled` of them, from the low end.
    bits: u64,
    filled: u32,
    width: u32,
    mask: u64,
}

impl<'a> Unpack<'a> {
    fn new(bytes: &'a [u8], width: u32) -> Self {
        let mask = if width == 64 { u64::MAX } else { (1 << width) - 1 };
        Self { bytes, bits: 0, filled: 0, width, mask }
    }

    /// The next value (zero bits past the end of the bytes).
    fn next(&mut self) -> u64 {
        if self.filled >= self.width {
            let value = self.bits & self.mask;
            self.bits >>= self.width;
            self.filled -= self.width;
            return value;
        }
        let take = self.bytes.len().min(8);
        let mut word = [0u8; 8];
        word[..take].copy_from_slice(&self.bytes[..take]);
        self.bytes = &self.bytes[take..];
        let word = u64::from_le_bytes(word);
        // `filled` < `width` <= 64: the value's low bits are those held,
        // the rest come from the word.
        let value = (self.bits | word << self.filled) & self.mask;
        let used = self.width - self.filled;
        self.bits = word.checked_shr(used).unwrap_or(0);
        self.filled = 64 - used;
        value
    }
}

/// The values [`encode_ints`] wrote, or what is wrong with `bytes`.
pub(super) fn decode_ints<T: Int>(bytes: &[u8]) -> Result<Vec<T>, &'static str> {
    let (count, mut rest) = take_varint(bytes).ok_or("a count that is not a varint")?;
    // Each block takes two bytes at least: a count beyond the bytes is
    // false (so what a string decodes to is at most 256 times its size).
    if count.div_ceil(BLOCK as u64) > rest.len() as u64 / 2 {
        return Err("more values than bytes");
    }
    let mut values = Vec::with_capacity(count as usize);
    let mut previous = 0i64;
    let mut left = count as usize;
    while left > 0 {
        let n = left.min(BLOCK);
        let (least, after) = take_varint(rest).ok_or("a block cut short")?;
        let (&width, after) = after.split_first().ok_or("a block cut short")?;
        if width > 64 {
            return Err("a block of values wider than 64 bits");
        }
        let len = (n * usize::from(width)).div_ceil(8);
        if after.len() < len {
            return Err("a block cut short");
        }
        let (packed, after) = after.split_at(len);
        let mut unpack = Unpack::new(packed, u32::from(width));
        for _ in 0..n {
            let zigzag = least.checked_add(unpack.next()).ok_or("a value out of range")?;
            let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
            previous = previous.wrapping_add(delta);
            values.push(T::from_i64(previous).ok_or("a value out of range")?);
        }
        rest = after;
        left -= n;
    }
    if !rest.is_empty() {
        return Err("bytes after the last value");
    }
    Ok(values)
}

/// A byte string, decoded by `decode` when it arrives.
struct Bytes<F>(F);

impl<T, F: FnOnce(&[u8]) -> Result<T, &'static str>> Visitor<'_> for Bytes<F> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a compact vector's bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
        self.0(bytes).map_err(E::custom)
    }
}

/// `#[serde(with = "compact::ints")]`: a vector of integers, delta-encoded.
pub(super) mod ints {
    use super::*;

    pub(in super::super) fn serialize<S: Serializer, T: Int>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_ints(values))
    }

    pub(in super::super) fn deserialize<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_bytes(Bytes(decode_ints::<T>))
    }
}

/// Trace ids as their 16 bytes, each distinct one once: the parents of one
/// operation in one trace (the calls a parent fans out to, when they are
/// parents themselves) come one after another with the same id.
pub(super) fn encode_ids(ids: &[u128]) -> Vec<u8> {
    // The count, a bit per id (set: the same id as the one before), then
    // the bytes of each id whose bit is clear.
    let mut out = Vec::with_capacity(10 + ids.len().div_ceil(8) + 16 * ids.len());
    put_varint(&mut out, ids.len() as u64);
    let flags_at = out.len();
    out.resize(flags_at + ids.len().div_ceil(8), 0);
    let mut previous = None;
    for (i, &id) in ids.iter().enumerate() {
        if previous == Some(id) {
            out[flags_at + i / 8] |= 1 << (i % 8);
        } else {
            out.extend_from_slice(&id.to_le_bytes());
        }
        previous = Some(id);
    }
    out
}

pub(super) fn decode_ids(bytes: &[u8]) -> Result<Vec<u128>, &'static str> {
    let (count, rest) = take_varint(bytes).ok_or("a count that is not a varint")?;
    // A bit per id at least: a count beyond the bytes is false (so what a
    // string decodes to is at most 128 times its size).
    if count.div_ceil(8) > rest.len() as u64 {
        return Err("more trace ids than bytes");
    }
    let count = count as usize;
    let (flags, mut rest) = rest.split_at(count.div_ceil(8));
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        if flags[i / 8] & (1 << (i % 8)) != 0 {
            let &previous = ids.last().ok_or("a first trace id said to repeat")?;
            ids.push(previous);
        } else {
            let (id, after) = rest.split_first_chunk::<16>().ok_or("a trace id cut short")?;
            ids.push(u128::from_le_bytes(*id));
            rest = after;
        }
    }
    if !rest.is_empty() {
        return Err("bytes after the last trace id");
    }
    Ok(ids)
}

/// Floats as each one's bits XOR the one before's, less its high zero
/// bytes: a byte for a value equal to the one before (a parent's
/// parallelism is often exactly 1), nine at most.
pub(super) fn encode_floats(values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + 2 * values.len());
    put_varint(&mut out, values.len() as u64);
    let mut previous = 0u64;
    for &value in values {
        let bits = value.to_bits();
        let changed = bits ^ previous;
        let len = 8 - changed.leading_zeros() as usize / 8;
        out.push(len as u8);
        out.extend_from_slice(&changed.to_le_bytes()[..len]);
        previous = bits;
    }
    out
}

pub(super) fn decode_floats(bytes: &[u8]) -> Result<Vec<f64>, &'static str> {
    let (count, mut rest) = take_varint(bytes).ok_or("a count that is not a varint")?;
    if count > rest.len() as u64 {
        return Err("more values than bytes");
    }
    let mut values = Vec::with_capacity(count as usize);
    let mut previous = 0u64;
    for _ in 0..count {
        let (&len, after) = rest.split_first().ok_or("a value cut short")?;
        let len = usize::from(len);
        if len > 8 {
            return Err("a float change of more than 8 bytes");
        }
        if after.len() < len {
            return Err("a value cut short");
        }
        let mut changed = [0u8; 8];
        changed[..len].copy_from_slice(&after[..len]);
        previous ^= u64::from_le_bytes(changed);
        values.push(f64::from_bits(previous));
        rest = &after[len..];
    }
    if !rest.is_empty() {
        return Err("bytes after the last value");
    }
    Ok(values)
}

/// `#[serde(with = "compact::ids")]`: trace ids, each run of one id once
/// (see [`encode_ids`]).
pub(super) mod ids {
    use super::*;

    pub(in super::super) fn serialize<S: Serializer>(ids: &[u128], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_ids(ids))
    }

    pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u128>, D::Error> {
        d.deserialize_bytes(Bytes(decode_ids))
    }
}

/// `#[serde(with = "compact::floats")]`: floats, each as its change from the
/// one before (see [`encode_floats`]).
pub(super) mod floats {
    use super::*;

    pub(in super::super) fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_floats(values))
    }

    pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        d.deserialize_bytes(Bytes(decode_floats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_at_every_extreme() {
        let values = vec![0, 1, -1, i64::MAX, i64::MIN, 5, 5, 1_000_000_007, -3, i64::MIN + 1];
        assert_eq!(decode_ints::<i64>(&encode_ints(&values)).unwrap(), values);
        let small = vec![0u32, u32::MAX, 7, 7, 3];
        assert_eq!(decode_ints::<u32>(&encode_ints(&small)).unwrap(), small);
        assert_eq!(decode_ints::<i64>(&encode_ints::<i64>(&[])).unwrap(), Vec::<i64>::new());
    }

    proptest::proptest! {
        #[test]
        fn integers_of_any_size_round_trip(
            values in proptest::collection::vec(
                proptest::prop_oneof![0i64..4, -1000i64..1000, proptest::num::i64::ANY], 0..300),
        ) {
            proptest::prop_assert_eq!(decode_ints::<i64>(&encode_ints(&values)).unwrap(), values);
        }
    }

    #[test]
    fn steady_steps_take_no_bits() {
        // Each parent's index on an edge, and one call each: two bytes a
        // block (the first block's first step, from 0, is 0: 2 bits each).
        let indexes: Vec<u32> = (0..6400).collect();
        assert_eq!(encode_ints(&indexes).len(), 2 + 100 * 2 + 64 * 2 / 8);
        assert_eq!(decode_ints::<u32>(&encode_ints(&indexes)).unwrap(), indexes);
        let ones = vec![1u32; 6400];
        assert_eq!(decode_ints::<u32>(&encode_ints(&ones)).unwrap(), ones);
        // Random 25-bit durations: steps of 26 bits or 27 (as varints, 4 bytes).
        let mut x = 1u64;
        let random: Vec<i64> = (0..6400)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 39) as i64
            })
            .collect();
        assert!(encode_ints(&random).len() <= 6400 * 27 / 8 + 100 * 4, "{}", encode_ints(&random).len());
        assert_eq!(decode_ints::<i64>(&encode_ints(&random)).unwrap(), random);
    }

    #[test]
    fn a_sorted_run_takes_a_byte_or_two_a_value() {
        let sorted: Vec<i64> = (0..10_000).map(|i| 20_000_000 + i * 97).collect();
        assert!(encode_ints(&sorted).len() < 2 * sorted.len() + 16);
    }

    #[test]
    fn damaged_bytes_are_errors() {
        let bytes = encode_ints(&[1i64, 300, -70_000]);
        for cut in 0..bytes.len() {
            assert!(decode_ints::<i64>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_ints::<i64>(&longer), Err("bytes after the last value"));
        // A count far beyond the bytes does not allocate for it.
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert_eq!(decode_ints::<i64>(&huge), Err("more values than bytes"));
        // A u32 vector whose values leave u32.
        assert_eq!(decode_ints::<u32>(&encode_ints(&[-1i64])), Err("a value out of range"));
        // A varint of eleven bytes.
        assert!(decode_ints::<i64>(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        // A block wider than a value.
        assert_eq!(
            decode_ints::<i64>(&[1, 0, 65, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err("a block of values wider than 64 bits")
        );
    }

    #[test]
    fn trace_ids_round_trip_and_runs_take_a_bit() {
        let ids = vec![7u128, 7, 7, u128::MAX, 0, 0, 7, 1 << 100];
        assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        assert_eq!(decode_ids(&encode_ids(&[])).unwrap(), Vec::<u128>::new());
        // Ten parents of each trace (the calls of a fan-out that are
        // parents themselves): 16 bytes a trace and a bit a parent.
        let runs: Vec<u128> = (0..1000u128).flat_map(|t| [t * 0x9e37_79b9_7f4a_7c15; 10]).collect();
        let bytes = encode_ids(&runs);
        assert!(bytes.len() <= 1000 * 16 + 10_000 / 8 + 10, "{} bytes", bytes.len());
        assert_eq!(decode_ids(&bytes).unwrap(), runs);
    }

    #[test]
    fn damaged_trace_ids_are_errors() {
        let bytes = encode_ids(&[1, 1, 2]);
        for cut in 0..bytes.len() {
            assert!(decode_ids(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_ids(&longer), Err("bytes after the last trace id"));
        // The first id cannot repeat one before it.
        assert_eq!(decode_ids(&[1, 1]), Err("a first trace id said to repeat"));
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert_eq!(decode_ids(&huge), Err("more trace ids than bytes"));
    }

    #[test]
    fn floats_round_trip_and_repeats_take_a_byte() {
        let values = vec![1.0, 1.0, 0.5, f64::MAX, -0.0, 0.0, f64::INFINITY, 1e-300, 3.25, 3.25];
        let decoded = decode_floats(&encode_floats(&values)).unwrap();
        assert_eq!(
            decoded.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        let nan = decode_floats(&encode_floats(&[f64::NAN])).unwrap();
        assert!(nan[0].is_nan());
        assert_eq!(encode_floats(&[1.0; 1000]).len(), 2 + 9 + 999);
        let bytes = encode_floats(&[1.5, 2.75, 2.75]);
        for cut in 0..bytes.len() {
            assert!(decode_floats(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_floats(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err("a float change of more than 8 bytes"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_floats(&longer), Err("bytes after the last value"));
    }

    #[test]
    fn vectors_travel_through_bincode() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Both {
            #[serde(with = "ints")]
            durations: Vec<i64>,
            #[serde(with = "ids")]
            ids: Vec<u128>,
            #[serde(with = "floats")]
            ratios: Vec<f64>,
        }
        let both = Both { durations: vec![3, 1, 2], ids: vec![u128::MAX, 0, 0, 0x0102_0304], ratios: vec![1.0, 0.25] };
        let bytes = bincode::serialize(&both).unwrap();
        assert_eq!(bincode::deserialize::<Both>(&bytes).unwrap(), both);
        assert!(bincode::deserialize::<Both>(&bytes[..bytes.len() - 1]).is_err());
    }
}
