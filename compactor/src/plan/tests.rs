use std::time::{Duration, UNIX_EPOCH};

use spanlake_schemas::{BlockId, BlockMeta};

use super::*;

const SEC: i64 = 1_000_000_000;

fn config() -> PlanConfig {
    PlanConfig {
        window: Duration::from_secs(3600),
        target_block_bytes: 64 << 20,
        fan_in: 8,
        cold_after: Duration::from_secs(300),
    }
}

fn block(n: u64, end_secs: i64, size: u64, level: u32) -> BlockMeta {
    BlockMeta {
        id: BlockId::at(UNIX_EPOCH + Duration::from_secs(n)),
        min_time_unix_nano: (end_secs - 1) * SEC,
        max_time_unix_nano: end_secs * SEC,
        min_trace_id: "00".repeat(16),
        max_trace_id: "ff".repeat(16),
        span_count: 100,
        size_bytes: size,
        compaction_level: level,
        sources: vec![],
        trace_count: 10,
        ingested_unix_nano: 0,
    }
}

/// Applies a plan as the compactor would: inputs replaced by one block.
fn apply(blocks: &mut Vec<BlockMeta>, jobs: Vec<Job>, next_id: &mut u64, end_secs: i64) {
    for job in jobs {
        match job {
            Job::Merge { inputs, level } => {
                let size = inputs.iter().map(|b| b.size_bytes).sum();
                blocks.retain(|b| !inputs.contains(b));
                *next_id += 1;
                blocks.push(block(*next_id, end_secs, size, level));
            }
            Job::Expire { blocks: gone } => blocks.retain(|b| !gone.contains(b)),
        }
    }
}

#[test]
fn live_blocks_stay_bounded_under_steady_ingest() {
    let config = config();
    let mut live = Vec::new();
    let mut next_id = 0;
    let mut most = 0;
    let start = 10 * 3600;
    // Two hours of one 100 KiB block per second, a compaction pass every 15 s.
    for second in 0..7200 {
        next_id += 1;
        live.push(block(next_id, start + second, 100 << 10, 0));
        if second % 15 == 14 {
            let now = (start + second) * SEC;
            for (window, blocks) in by_window(live.clone(), config.window) {
                let jobs = plan_window(&config, window, &blocks, now, 0);
                apply(&mut live, jobs, &mut next_id, window / SEC + 1);
            }
            most = most.max(live.len());
        }
    }
    // Per window: at most fan_in − 1 per level (5 levels reach 64 MiB from 100 KiB) plus full blocks.
    assert!(most <= 2 * (7 * 5 + 15) + 15, "live blocks peaked at {most}");
    let total: u64 = live.iter().map(|b| b.size_bytes).sum();
    assert_eq!(total, 7200 * (100 << 10), "no bytes lost or doubled");
}

#[test]
fn a_window_merges_by_level_and_respects_the_target_size() {
    let config = config();
    let blocks: Vec<_> = (0..20).map(|n| block(n, 3600 + 10, 20 << 20, 0)).collect();
    let jobs = plan_window(&config, 3600 * SEC, &blocks, 3600 * SEC + 20 * SEC, 0);
    assert!(!jobs.is_empty());
    for job in &jobs {
        let Job::Merge { inputs, level } = job else { panic!("expected merges") };
        assert_eq!(*level, 1);
        assert!(inputs.len() >= 2);
        assert!(inputs.iter().map(|b| b.size_bytes).sum::<u64>() <= config.target_block_bytes);
    }
    // Blocks of half the target or more are done.
    let big = vec![block(1, 3610, 40 << 20, 1), block(2, 3611, 40 << 20, 1)];
    assert!(plan_window(&config, 3600 * SEC, &big, 10_000 * SEC, 0).is_empty());
}

#[test]
fn a_hot_window_waits_for_fan_in_and_a_cold_one_merges_what_is_left() {
    let config = config();
    let blocks: Vec<_> = (0..5).map(|n| block(n, 3610, 1 << 20, n as u32 % 2)).collect();
    assert!(plan_window(&config, 3600 * SEC, &blocks, 3700 * SEC, 0).is_empty());
    let cold = plan_window(&config, 3600 * SEC, &blocks, (7200 + 301) * SEC, 0);
    assert_eq!(cold.len(), 1);
    let Job::Merge { inputs, level } = &cold[0] else { panic!("expected a merge") };
    assert_eq!((inputs.len(), *level), (5, 2));
}

#[test]
fn blocks_expire_when_their_spans_and_their_arrival_are_past_retention() {
    let config = config();
    let blocks = vec![block(1, 3610, 1 << 20, 0), block(2, 3620, 1 << 20, 3)];
    let jobs = plan_window(&config, 3600 * SEC, &blocks, 100_000 * SEC, 7200 * SEC);
    assert_eq!(jobs, vec![Job::Expire { blocks: blocks.clone() }]);
    // Spans newer than the horizon are kept.
    let jobs = plan_window(&config, 3600 * SEC, &blocks, 100_000 * SEC, 3615 * SEC);
    assert_eq!(jobs, vec![Job::Expire { blocks: vec![blocks[0].clone()] }]);
    // Old spans that arrived recently (a replay) are kept.
    let mut replayed = block(3, 3610, 1 << 20, 0);
    replayed.ingested_unix_nano = 50_000 * SEC;
    assert!(plan_window(&config, 3600 * SEC, &[replayed], 100_000 * SEC, 7200 * SEC).is_empty());
}
