//! The statistics' long vectors in a compact form, for the trip from one
//! querier to another (a spread fan-out ships every call's duration).
//!
//! Integers travel as the zigzag varint of each value's difference from the
//! one before: a sorted run of durations costs one or two bytes a value
//! instead of eight, per-parent counts and indexes one. Trace ids travel as
//! their bytes, copied whole. Both are one byte string to the serializer,
//! so bincode copies them at once rather than value by value, and the
//! transport need not compress them again. Decoding checks every value it
//! reads: a truncated or altered string is an error, never a panic.

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

/// `values` as their count, then each one's zigzag difference from the one
/// before (wrapping, so every i64 round-trips).
pub(super) fn encode_ints<T: Int>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 2 + 10);
    put_varint(&mut out, values.len() as u64);
    let mut previous = 0i64;
    for value in values {
        let value = value.to_i64();
        let delta = value.wrapping_sub(previous);
        put_varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
        previous = value;
    }
    out
}

/// The values [`encode_ints`] wrote, or what is wrong with `bytes`.
pub(super) fn decode_ints<T: Int>(bytes: &[u8]) -> Result<Vec<T>, &'static str> {
    let (count, mut rest) = take_varint(bytes).ok_or("a count that is not a varint")?;
    // Each value takes a byte at least: a count beyond the bytes is false.
    if count > rest.len() as u64 {
        return Err("more values than bytes");
    }
    let mut values = Vec::with_capacity(count as usize);
    let mut previous = 0i64;
    for _ in 0..count {
        let (zigzag, after) = take_varint(rest).ok_or("a value cut short")?;
        let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        previous = previous.wrapping_add(delta);
        values.push(T::from_i64(previous).ok_or("a value out of range")?);
        rest = after;
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

/// `#[serde(with = "compact::ids")]`: trace ids as their 16 bytes each.
pub(super) mod ids {
    use super::*;

    pub(in super::super) fn serialize<S: Serializer>(ids: &[u128], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }

    pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u128>, D::Error> {
        d.deserialize_bytes(Bytes(|bytes: &[u8]| {
            if !bytes.len().is_multiple_of(16) {
                return Err("trace ids whose bytes are not a multiple of 16");
            }
            Ok(bytes.chunks_exact(16).map(|id| u128::from_le_bytes(id.try_into().expect("16 bytes"))).collect())
        }))
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
    }

    #[test]
    fn vectors_travel_through_bincode() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Both {
            #[serde(with = "ints")]
            durations: Vec<i64>,
            #[serde(with = "ids")]
            ids: Vec<u128>,
        }
        let both = Both { durations: vec![3, 1, 2], ids: vec![u128::MAX, 0, 0x0102_0304] };
        let bytes = bincode::serialize(&both).unwrap();
        assert_eq!(bincode::deserialize::<Both>(&bytes).unwrap(), both);
        assert!(bincode::deserialize::<Both>(&bytes[..bytes.len() - 1]).is_err());
    }
}
