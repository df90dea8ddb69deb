//! Parquet's page encodings, written by hand for [`super`]: the
//! RLE/bit-packed hybrid of levels and dictionary indices, PLAIN booleans,
//! and zstd with a context kept per thread.

use parquet::errors::Result;

use super::general;

thread_local! {
    /// A zstd context per thread, kept from page to page and block to
    /// block: making one asks the CPU for its features, which in a VM traps
    /// to the hypervisor (Parquet's writer makes one per column chunk).
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `body` compressed at zstd `level`, a frame of its own.
pub(crate) fn zstd_compress(level: i32, body: &[u8]) -> Result<Vec<u8>> {
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
pub(crate) fn bit_width(max: u32) -> u32 {
    32 - max.leading_zeros()
}

/// Levels as a data page v1 holds them: their byte length, then the
/// RLE/bit-packed hybrid of `levels` in `bits` bits.
pub(crate) fn levels_v1(out: &mut Vec<u8>, levels: &[u8], bits: u32) {
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
pub(crate) fn rle_hybrid<T: Copy + PartialEq + Into<u32>>(out: &mut Vec<u8>, values: &[T], bits: u32) {
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
pub(crate) fn pack_booleans(out: &mut Vec<u8>, bits: &[u32]) {
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
