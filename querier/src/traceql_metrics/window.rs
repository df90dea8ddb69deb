//! The time buckets of a metrics query, as Tempo (≥ 2.9) lays them out.
//!
//! Range queries: the step defaults to about 1/240 of the range; the range
//! is aligned to the step (start down, end up, plus one leading bucket) and
//! its end clamped to `now - 30s`, rounded down. Bucket `i` holds the spans
//! starting in `(S + i·step, S + (i+1)·step]` and is stamped with its end.
//! Instant queries: one bucket `[start, end]`, the end pulled back by whole
//! seconds to `now - 30s`.

use crate::error::{QueryError, Result};
use crate::search::go_duration;

const SECOND: i64 = 1_000_000_000;
/// Data newer than this is not answered: it may still be arriving.
pub(crate) const END_CUTOFF: i64 = 30 * SECOND;
/// Longest range a metrics query may cover.
pub(crate) const MAX_DURATION: i64 = 24 * 3600 * SECOND;
/// Most buckets a range query may ask for.
pub(crate) const MAX_INTERVALS: i64 = 10_000;

/// The buckets of one metrics query, Unix ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Exclusive for a range query, inclusive for an instant one.
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) step: i64,
    pub(crate) instant: bool,
}

impl Window {
    /// A range query's buckets; `step` absent: Tempo's default for the range.
    pub(crate) fn range(start: i64, end: i64, step: Option<i64>, now: i64) -> Result<Self> {
        let step = step.unwrap_or_else(|| default_step(start, end));
        let (start, end) = clamp_for_validation(start, end, now)?;
        validate(start, end, step)?;
        let mut start = start - start.rem_euclid(step);
        let mut end = end;
        if end.rem_euclid(step) != 0 {
            end += step - end.rem_euclid(step);
        }
        if start > step {
            start -= step;
        }
        let latest = now - END_CUTOFF;
        if end > latest {
            end = latest - latest.rem_euclid(step);
        }
        Ok(Self { start, end: end.max(start), step, instant: false })
    }

    /// An instant query's one bucket.
    pub(crate) fn instant(start: i64, end: i64, now: i64) -> Result<Self> {
        let (start, mut end) = clamp_for_validation(start, end, now)?;
        validate(start, end, end - start)?;
        let latest = now - END_CUTOFF;
        if end > latest {
            // Whole seconds back, so that repeated queries see the same window.
            end -= ceil_seconds(end - latest);
        }
        if end <= start {
            return Err(QueryError::invalid("end", "query window falls entirely within the query end cutoff of 30s"));
        }
        Ok(Self { start, end, step: end - start, instant: true })
    }

    /// How many buckets there are.
    pub(crate) fn buckets(&self) -> usize {
        if self.instant { 1 } else { ((self.end - self.start) / self.step).max(0) as usize }
    }

    /// Bucket `i`'s timestamp: its end, in Unix ms.
    pub(crate) fn stamp_ms(&self, i: usize) -> i64 {
        if self.instant { self.end / 1_000_000 } else { (self.start + (i as i64 + 1) * self.step) / 1_000_000 }
    }

    /// The bucket of a span starting at `t`, if it is in the window.
    #[cfg(test)]
    pub(crate) fn bucket_of(&self, t: i64) -> Option<usize> {
        if self.instant {
            return (self.start..=self.end).contains(&t).then_some(0);
        }
        (t > self.start && t <= self.end).then(|| ((t - self.start - 1) / self.step) as usize)
    }

    /// The step in seconds (what `rate()` divides by).
    pub(crate) fn step_seconds(&self) -> f64 {
        self.step as f64 / 1e9
    }
}

/// Tempo 3.0's default step: about 1/240 of the range, rounded down to a
/// whole 1h, 5m, 1m, 15s, 5s or 1s (to 50 ms under a minute).
pub(crate) fn default_step(start: i64, end: i64) -> i64 {
    let range = (end - start).max(0);
    let baseline = range / 240;
    const MS: i64 = 1_000_000;
    if range < 60 * SECOND {
        return (baseline - baseline % (50 * MS)).max(50 * MS);
    }
    for granularity in [3600 * SECOND, 300 * SECOND, 60 * SECOND, 15 * SECOND, 5 * SECOND, SECOND] {
        if baseline > granularity {
            return baseline - baseline % granularity;
        }
    }
    SECOND
}

/// `ns` rounded up to whole seconds (non-negative `ns`).
fn ceil_seconds(ns: i64) -> i64 {
    (ns as u64).div_ceil(SECOND as u64) as i64 * SECOND
}

fn clamp_for_validation(start: i64, end: i64, now: i64) -> Result<(i64, i64)> {
    if start >= end {
        return Err(QueryError::invalid("end", "end must be greater than start"));
    }
    let end = end.min(now - END_CUTOFF);
    if start >= end {
        return Err(QueryError::invalid("end", "query window falls entirely within the query end cutoff of 30s"));
    }
    Ok((start, end))
}

fn validate(start: i64, end: i64, step: i64) -> Result<()> {
    let range = end - start;
    if range > MAX_DURATION {
        return Err(QueryError::invalid(
            "end",
            format!("metrics query time range exceeds the maximum allowed duration of {}", go_duration(MAX_DURATION)),
        ));
    }
    if step <= 0 || range / step > MAX_INTERVALS {
        let minimum = ceil_seconds(range / MAX_INTERVALS).max(SECOND);
        return Err(QueryError::invalid(
            "step",
            format!(
                "step of {} is too small, minimum step for given range is {}",
                go_duration(step.max(0)),
                go_duration(minimum)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = SECOND;

    #[test]
    fn range_is_aligned_widened_and_clamped_as_tempo_does() {
        // The reference's worked example: start 1000 s, end 4600 s, step 60 s.
        let far = 1_000_000 * S;
        let w = Window::range(1000 * S, 4600 * S, Some(60 * S), far).unwrap();
        assert_eq!((w.start, w.end), (900 * S, 4620 * S));
        assert_eq!(w.buckets(), 62);
        assert_eq!(w.stamp_ms(0), 960_000);
        assert_eq!(w.stamp_ms(61), 4_620_000);
        // now = 4630 s: the end is clamped to 4600 and rounded down to 4560.
        let w = Window::range(1000 * S, 4600 * S, Some(60 * S), 4630 * S).unwrap();
        assert_eq!(w.end, 4560 * S);
    }

    #[test]
    fn buckets_are_right_closed() {
        let w = Window::range(1000 * S, 4600 * S, Some(60 * S), 1_000_000 * S).unwrap();
        assert_eq!(w.bucket_of(900 * S), None, "the start is exclusive");
        assert_eq!(w.bucket_of(900 * S + 1), Some(0));
        assert_eq!(w.bucket_of(960 * S), Some(0), "a boundary belongs to the earlier bucket");
        assert_eq!(w.bucket_of(960 * S + 1), Some(1));
        assert_eq!(w.bucket_of(4620 * S), Some(61));
        assert_eq!(w.bucket_of(4620 * S + 1), None);
    }

    #[test]
    fn default_steps_match_tempo() {
        let minute = 60 * S;
        for (range, step) in [
            (15 * minute, 3 * S),
            (30 * minute, 5 * S),
            (60 * minute, 15 * S),
            (180 * minute, 45 * S),
            (360 * minute, minute),
            (720 * minute, 3 * minute),
            (1440 * minute, 5 * minute),
        ] {
            assert_eq!(default_step(0, range), step, "range {range}");
        }
        assert_eq!(default_step(0, 30 * S), 100_000_000);
        assert_eq!(default_step(0, S), 50_000_000);
    }

    #[test]
    fn bad_windows_are_refused_with_tempo_s_messages() {
        let now = 1_000_000 * S;
        let err = |r: Result<Window>| r.unwrap_err().to_string();
        assert!(err(Window::range(10 * S, 10 * S, None, now)).contains("end must be greater than start"));
        assert!(err(Window::range(now - 10 * S, now, None, now)).contains("query end cutoff"));
        assert!(err(Window::range(0, 25 * 3600 * S, None, now)).contains("maximum allowed duration of 24h0m0s"));
        let message = err(Window::range(0, 86_400 * S, Some(S), now));
        assert!(message.contains("step of 1s is too small, minimum step for given range is 9s"), "{message}");
        assert!(err(Window::range(0, 100 * S, Some(0), now)).contains("step of 0s is too small"));
    }

    #[test]
    fn extreme_steps_and_times_do_not_overflow() {
        let now = 1_800_000_000 * S;
        for step in [1, S, 86_400 * S, i64::MAX / 2, i64::MAX] {
            if let Ok(w) = Window::range(now - 3600 * S, now, Some(step), now) {
                assert!(w.start <= w.end && w.buckets() <= MAX_INTERVALS as usize, "step {step}: {w:?}");
            }
        }
        assert!(Window::range(0, i64::MAX, None, now).is_err());
        assert!(Window::instant(0, i64::MAX, now).is_err());
    }

    #[test]
    fn instant_is_one_inclusive_bucket_ending_before_the_cutoff() {
        let now = 10_000 * S + 500_000_000;
        let w = Window::instant(1000 * S, 20_000 * S, now).unwrap();
        assert_eq!(w.buckets(), 1);
        assert_eq!(w.start, 1000 * S);
        assert!(w.end <= now - END_CUTOFF && now - END_CUTOFF - w.end < S);
        assert_eq!(w.bucket_of(1000 * S), Some(0));
        assert_eq!(w.bucket_of(w.end), Some(0));
    }
}
