//! Helpers shared by the benchmark binaries: CPU time, peak RSS, latency percentiles.

#![allow(dead_code)]

use std::time::Instant;

/// User + system CPU seconds of this process.
pub(crate) fn cpu_seconds() -> f64 {
    process_cpu_seconds("self")
}

/// User + system CPU seconds of process `pid` ("self" for this one), from /proc.
pub(crate) fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("procfs");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / ticks
}

/// Peak resident set size of this process, MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    process_peak_rss_mib("self")
}

/// Peak resident set size of process `pid` ("self" for this one), MiB.
pub(crate) fn process_peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub(crate) struct Timing {
    pub(crate) median_ms: f64,
    pub p99_ms: f64,
    pub(crate) runs: usize,
}

/// Runs `call` `runs` times in sequence and reports latency percentiles.
pub(crate) async fn time<F, Fut>(runs: usize, mut call: F) -> Timing
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

pub(crate) async fn get_ok(http: &reqwest::Client, url: String) -> usize {
    let response = http.get(&url).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await.unwrap().len()
}

pub(crate) async fn post_ok(http: &reqwest::Client, url: String, body: &str) -> usize {
    let response = http.post(&url).body(body.to_owned()).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await.unwrap().len()
}

/// `spanlake run querier` on `storage` in a process of its own (so its peak
/// RSS is its own); returns the child and its HTTP address.
pub(crate) fn spawn_querier(storage: &str, extra: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_spanlake"))
        .args(["run", "querier", "--storage", storage, "--log-format", "json", "--http-addr", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn spanlake");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line)
                && log["fields"]["message"] == "spanlake started"
                && let Some(addr) = log["fields"]["http_addr"].as_str()
            {
                let _ = tx.send(addr.parse().unwrap());
            }
        }
    });
    let addr = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("querier started");
    (child, addr)
}
