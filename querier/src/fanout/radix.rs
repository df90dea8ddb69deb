//! The report's large sorts (every parent's and every call's duration, and
//! the exemplars' (duration, trace) pairs) as least-significant-digit radix
//! sorts: a byte per pass, passes where every key has the same byte
//! skipped (durations in nanoseconds leave the top bytes alike), so a sort
//! costs a few linear passes instead of n log n comparisons.

/// Below this many items a comparison sort is as fast.
const SMALL: usize = 1 << 12;

/// Sorts `items` by `key`, ascending and stable.
pub(super) fn sort_by_key<T: Copy>(items: &mut Vec<T>, key: impl Fn(&T) -> u64) {
    if items.len() < SMALL {
        items.sort_by_key(|item| key(item));
        return;
    }
    let mut counts = vec![[0usize; 256]; 8];
    for item in items.iter() {
        let k = key(item);
        for (digit, count) in counts.iter_mut().enumerate() {
            count[((k >> (8 * digit)) & 0xff) as usize] += 1;
        }
    }
    let mut buffer = items.clone();
    for (digit, count) in counts.iter_mut().enumerate() {
        if count.contains(&items.len()) {
            continue;
        }
        let mut next = 0;
        for slot in count.iter_mut() {
            let n = *slot;
            *slot = next;
            next += n;
        }
        for item in items.iter() {
            let bucket = ((key(item) >> (8 * digit)) & 0xff) as usize;
            buffer[count[bucket]] = *item;
            count[bucket] += 1;
        }
        std::mem::swap(items, &mut buffer);
    }
}

/// A key whose unsigned order is the order of `value`.
pub(super) fn i64_key(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

/// A key whose unsigned order is `f64::total_cmp`'s.
pub(super) fn f64_key(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
}

/// Sorts values ascending.
pub(super) fn sort_i64(values: &mut Vec<i64>) {
    sort_by_key(values, |v| i64_key(*v));
}

/// Sorts (value, trace) pairs by value, then trace id: the order does not
/// depend on the order they came in.
pub(super) fn sort_pairs(pairs: &mut Vec<(i64, u128)>) {
    sort_by_key(pairs, |p| i64_key(p.0));
    for run in pairs.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by_key(|p| p.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values: large, small, negative, repeated.
    fn values(n: usize) -> Vec<i64> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 5 {
                    0 => (x >> 24) as i64,
                    1 => -((x >> 40) as i64),
                    2 => (i % 7) as i64,
                    3 => x as i64,
                    _ => (x >> 50) as i64,
                }
            })
            .collect()
    }

    #[test]
    fn sorts_as_the_standard_sort_does() {
        for n in [0, 1, 100, SMALL - 1, SMALL, 50_000] {
            let mut ours = values(n);
            let mut theirs = ours.clone();
            sort_i64(&mut ours);
            theirs.sort_unstable();
            assert_eq!(ours, theirs, "{n} values");

            let mut floats: Vec<f64> = values(n).into_iter().map(|v| v as f64 / 7.0).collect();
            floats.push(-0.0);
            floats.push(f64::INFINITY);
            let mut expected = floats.clone();
            sort_by_key(&mut floats, |f| f64_key(*f));
            expected.sort_by(f64::total_cmp);
            assert_eq!(
                floats.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                expected.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn pairs_sort_by_value_then_trace_whatever_their_order() {
        let base: Vec<(i64, u128)> =
            values(20_000).into_iter().enumerate().map(|(i, v)| (v % 1000, (i as u128 * 7919) % 20_011)).collect();
        let mut expected = base.clone();
        expected.sort_unstable();
        let mut forward = base.clone();
        sort_pairs(&mut forward);
        let mut backward: Vec<_> = base.into_iter().rev().collect();
        sort_pairs(&mut backward);
        assert_eq!(forward, expected);
        assert_eq!(backward, expected);
    }
}
