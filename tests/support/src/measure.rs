//! Measurements for benchmarks: CPU seconds and peak RSS of a process (from
//! /proc), and latency percentiles of repeated calls.

use std::time::Instant;

/// User + system CPU seconds of this process.
pub fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

/// CPU seconds the calling thread has run, to the nanosecond (from
/// /proc/thread-self/schedstat): for timing short single-threaded stages,
/// where the 10 ms ticks of [`cpu_seconds`] are too coarse.
pub fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("procfs");
    stat.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()).expect("schedstat run time") / 1e9
}

/// User + system CPU seconds of process `pid` ("self" for this one), from /proc.
pub fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("procfs");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

/// Peak resident set size of this process, MiB.
pub fn peak_rss_mib() -> f64 {
    process_peak_rss_mib("self")
}

/// Restarts this process's peak-RSS count at its current RSS (Linux
/// `clear_refs` 5), so that the next [`peak_rss_mib`] covers what ran since.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Current resident set size of this process, MiB.
pub fn rss_mib() -> f64 {
    status_mib("self", "VmRSS:")
}

/// Peak resident set size of process `pid` ("self" for this one), MiB.
pub fn process_peak_rss_mib(pid: &str) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A kB field of `/proc/<pid>/status` (e.g. `VmRSS:`), in MiB; NaN if absent.
fn status_mib(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub struct Timing {
    pub median_ms: f64,
    pub p99_ms: f64,
    pub runs: usize,
}

/// Runs `call` `runs` times in sequence and reports latency percentiles.
pub async fn time<F, Fut>(runs: usize, mut call: F) -> Timing
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        call(i).await;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Timing { median_ms: percentile(&samples, 0.5), p99_ms: percentile(&samples, 0.99), runs }
}
