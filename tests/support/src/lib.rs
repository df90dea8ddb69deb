//! # spanlake-test-support
//!
//! What the end-to-end tests (`tests/e2e`) and the benchmarks (`benches/`)
//! share, so that none of it is written twice:
//!
//! - [`process`]: the `spanlake` binary in a child process, its bound
//!   addresses read from `--listen-addr-file` (never from its logs), with no
//!   `SPANLAKE_*` variable of the developer's environment;
//! - [`otlp`]: builders of OTLP spans, resources and requests;
//! - [`http`]: requests to the query API (trace by id, SQL, JSON);
//! - [`measure`]: CPU time and peak RSS of a process, latency percentiles;
//! - [`s3`]: an S3 server (s3s-fs) on loopback;
//! - [`wait_until`]: polling for a condition, with a deadline and a message.

pub mod http;
pub mod measure;
pub mod otlp;
pub mod process;
pub mod s3;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds; panics naming `what` after
/// `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
