//! Planning: which blocks to merge or expire, per tenant and time window.
//!
//! Blocks are grouped by the window holding their latest span end. Within a
//! window, blocks smaller than half the target size are merged level by
//! level: as soon as a level has `fan_in` of them, the oldest `fan_in`
//! (fewer if their sizes would pass the target) become one block of the next
//! level. So a window under steady ingest holds at most `fan_in − 1` blocks
//! per level plus its full-size blocks, and each span is rewritten about
//! log_fan_in(target / ingest block size) times. Once a window is cold (no
//! new blocks expected), all its small blocks merge regardless of level. A
//! window that ended before the retention horizon is expired whole.

use std::collections::BTreeMap;
use std::time::Duration;

use spanlake_schemas::BlockMeta;

/// What planning needs to know.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Length of a compaction window.
    pub window: Duration,
    /// Size merged blocks grow to; blocks of at least half of it are left alone.
    pub target_block_bytes: u64,
    /// How many blocks of one level are merged at once.
    pub fan_in: usize,
    /// A window this long past its end takes no new blocks: merge what is left.
    pub cold_after: Duration,
}

/// One unit of work inside a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Merge these blocks (oldest first) into one of level `level`.
    Merge { inputs: Vec<BlockMeta>, level: u32 },
    /// Retire these blocks: their spans are past retention.
    Expire { blocks: Vec<BlockMeta> },
}

/// A window's start in Unix nanoseconds.
pub fn window_of(meta: &BlockMeta, window: Duration) -> i64 {
    let len = window.as_nanos().max(1) as i64;
    meta.max_time_unix_nano.max(0).div_euclid(len) * len
}

/// Groups blocks by window start.
pub fn by_window(blocks: Vec<BlockMeta>, window: Duration) -> BTreeMap<i64, Vec<BlockMeta>> {
    let mut windows: BTreeMap<i64, Vec<BlockMeta>> = BTreeMap::new();
    for block in blocks {
        windows.entry(window_of(&block, window)).or_default().push(block);
    }
    windows
}

/// The jobs for one window's live blocks at time `now` (Unix nanos); blocks
/// whose spans ended and arrived before `retention_horizon` expire. The jobs
/// touch disjoint blocks.
pub fn plan_window(
    config: &PlanConfig,
    window_start: i64,
    blocks: &[BlockMeta],
    now: i64,
    retention_horizon: i64,
) -> Vec<Job> {
    let (expired, kept): (Vec<BlockMeta>, Vec<BlockMeta>) = sorted(blocks.to_vec())
        .into_iter()
        .partition(|b| b.max_time_unix_nano < retention_horizon && b.ingested_unix_nanos() < retention_horizon);
    let mut jobs = Vec::new();
    if !expired.is_empty() {
        jobs.push(Job::Expire { blocks: expired });
    }
    let small: Vec<BlockMeta> = kept.into_iter().filter(|b| b.size_bytes < config.target_block_bytes / 2).collect();
    let window_end = window_start.saturating_add(config.window.as_nanos() as i64);
    let cold = window_end.saturating_add(config.cold_after.as_nanos() as i64) <= now;
    if cold {
        jobs.extend(groups(config, small, 2).into_iter().map(merge_job));
        return jobs;
    }
    let mut levels: BTreeMap<u32, Vec<BlockMeta>> = BTreeMap::new();
    for block in small {
        levels.entry(block.compaction_level).or_default().push(block);
    }
    for (_, blocks) in levels {
        if blocks.len() >= config.fan_in {
            let full_groups = blocks.len() / config.fan_in * config.fan_in;
            jobs.extend(groups(config, blocks.into_iter().take(full_groups).collect(), 2).into_iter().map(merge_job));
        }
    }
    jobs
}

fn merge_job(inputs: Vec<BlockMeta>) -> Job {
    let level = inputs.iter().map(|b| b.compaction_level).max().unwrap_or(0) + 1;
    Job::Merge { inputs, level }
}

fn sorted(mut blocks: Vec<BlockMeta>) -> Vec<BlockMeta> {
    blocks.sort_by(|a, b| a.id.cmp(&b.id));
    blocks
}

/// Cuts `blocks` (oldest first) into runs of at most `fan_in` blocks and at
/// most the target size in total; runs shorter than `min` are left out.
fn groups(config: &PlanConfig, blocks: Vec<BlockMeta>, min: usize) -> Vec<Vec<BlockMeta>> {
    let mut out = Vec::new();
    let mut run: Vec<BlockMeta> = Vec::new();
    let mut bytes = 0u64;
    for block in blocks {
        let full = run.len() >= config.fan_in.max(2)
            || (!run.is_empty() && bytes + block.size_bytes > config.target_block_bytes);
        if full {
            out.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes += block.size_bytes;
        run.push(block);
    }
    out.push(run);
    out.retain(|run| run.len() >= min);
    out
}

#[cfg(test)]
mod tests;
