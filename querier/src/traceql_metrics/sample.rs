//! Exemplars from a sample of the traces, when the window holds many spans.
//!
//! A trace id is 16 random bytes per span: reading them for every span of a
//! large window, to keep a hundred exemplars, cost a quarter of a rate query
//! (BENCHMARKS.md). Above [`crate::Config::exemplar_sample_spans`] spans,
//! the main aggregate reads no trace id. A second aggregate finds each
//! cell's newest span among the traces of a slice of trace ids, in a few
//! blocks spread over the window. Trace ids are random, so the slice is a
//! uniform sample of the traces; blocks are sorted by trace id, so it is a
//! page or two of each column of each block, and the second aggregate reads
//! little. Counts, rates and quantiles still come from every span.

use std::collections::HashSet;

use spanlake_schemas::BlockMeta;
use spanlake_schemas::block::BlockId;

/// Most blocks the sample is read from, spread over the window.
const BLOCKS: usize = 16;

/// Where a window's exemplars come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExemplarSample {
    /// The blocks read.
    pub(super) blocks: HashSet<BlockId>,
    /// Only traces whose id is below this (None: every trace of the blocks).
    pub(super) below: Option<u128>,
}

/// The sample for a window over `blocks`, or None when the window holds at
/// most `above_spans` spans (then every span is an exemplar candidate). The
/// slice of trace ids holds about a sixteenth of `above_spans` spans of the
/// blocks read (from 1M spans on: 62,500, enough for a hundred exemplars
/// spread over the series and the window).
pub(crate) fn exemplar_sample(blocks: &[BlockMeta], above_spans: u64) -> Option<ExemplarSample> {
    let spans: u64 = blocks.iter().map(|b| b.span_count).sum();
    if spans <= above_spans || blocks.is_empty() {
        return None;
    }
    // Newest first, so the newest block (the minutes people look at) is read.
    let mut by_time: Vec<&BlockMeta> = blocks.iter().collect();
    by_time.sort_by_key(|b| std::cmp::Reverse(b.max_time_unix_nano));
    let every = by_time.len().div_ceil(BLOCKS);
    let chosen: Vec<&BlockMeta> = by_time.into_iter().step_by(every).collect();
    let chosen_spans: u64 = chosen.iter().map(|b| b.span_count).sum();
    // A power of two of the id space: the ids below 2^(128 - halvings).
    let wanted = (above_spans / 16).max(1);
    let halvings = (chosen_spans / wanted).max(1).ilog2().min(127);
    Some(ExemplarSample {
        blocks: chosen.iter().map(|b| b.id.clone()).collect(),
        below: (halvings > 0).then(|| 1u128 << (128 - halvings)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(minute: i64, spans: u64) -> BlockMeta {
        BlockMeta {
            id: BlockId::new(),
            min_time_unix_nano: minute * 60_000_000_000,
            max_time_unix_nano: (minute + 1) * 60_000_000_000,
            min_trace_id: "00".repeat(16),
            max_trace_id: "ff".repeat(16),
            span_count: spans,
            size_bytes: spans * 30,
            compaction_level: 0,
            sources: Vec::new(),
            trace_count: spans / 10,
            ingested_unix_nano: 0,
        }
    }

    #[test]
    fn a_small_window_takes_every_span() {
        let blocks: Vec<BlockMeta> = (0..5).map(|m| block(m, 1000)).collect();
        assert_eq!(exemplar_sample(&blocks, 5000), None);
        assert_eq!(exemplar_sample(&[], 0), None);
    }

    #[test]
    fn a_large_window_samples_blocks_spread_over_it_and_a_slice_of_traces() {
        // 100 blocks of 100k spans, one a minute, listed oldest first.
        let blocks: Vec<BlockMeta> = (0..100).map(|m| block(m, 100_000)).collect();
        let sample = exemplar_sample(&blocks, 1_000_000).unwrap();
        // Every 7th block by time from the newest: minutes 99, 92, …, 1.
        let minutes: std::collections::BTreeSet<i64> = blocks
            .iter()
            .filter(|b| sample.blocks.contains(&b.id))
            .map(|b| b.min_time_unix_nano / 60_000_000_000)
            .collect();
        assert_eq!(minutes, (0..100).rev().step_by(7).collect());
        // 15 blocks hold 1.5M spans; 1/16 of the traces holds about 94k of them.
        assert_eq!(sample.below, Some(1u128 << 124));
        // 14 blocks of 2,000 spans, about 625 wanted: 1/32 of the traces.
        let few: Vec<BlockMeta> = (0..40).map(|m| block(m, 2_000)).collect();
        let sample = exemplar_sample(&few, 10_000).unwrap();
        assert_eq!((sample.blocks.len(), sample.below), (14, Some(1u128 << 123)));
        // Fewer than twice the spans wanted in the blocks read (16 of 200
        // blocks of 1,000 spans, 12,437 wanted): every trace of the blocks.
        let many: Vec<BlockMeta> = (0..200).map(|m| block(m, 1_000)).collect();
        let sample = exemplar_sample(&many, 199_000).unwrap();
        assert_eq!((sample.blocks.len(), sample.below), (16, None));
    }
}
