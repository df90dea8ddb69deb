//! `spanlake loadgen`: sends generated traces to an OTLP endpoint over gRPC,
//! HTTP/protobuf or HTTP/JSON, honouring retryable errors, and reports what
//! was sent, acknowledged, retried and failed.

mod client;
mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;

pub use client::{Protocol, SendOutcome};
pub use workload::{FanoutMode, Latency, Scenario, Workload};

use crate::units::parse_duration;

/// Flags of `spanlake loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// OTLP endpoint (default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http)
    #[arg(long, env = "SPANLAKE_LOADGEN_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Transport
    #[arg(long, env = "SPANLAKE_LOADGEN_PROTOCOL", value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Compress requests with gzip
    #[arg(long, env = "SPANLAKE_LOADGEN_GZIP")]
    pub gzip: bool,
    /// Tenant sent as X-Scope-OrgID
    #[arg(long, env = "SPANLAKE_LOADGEN_TENANT")]
    pub tenant: Option<String>,
    /// Traces per second in total (0 = as fast as acknowledgements allow)
    #[arg(long, env = "SPANLAKE_LOADGEN_RATE", default_value = "100")]
    pub rate: f64,
    /// Stop after this long
    #[arg(long, env = "SPANLAKE_LOADGEN_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many traces (default 1000 when no duration is given)
    #[arg(long, env = "SPANLAKE_LOADGEN_TRACES")]
    pub traces: Option<u64>,
    /// Concurrent senders
    #[arg(long, env = "SPANLAKE_LOADGEN_CONCURRENCY", default_value = "4")]
    pub concurrency: usize,
    /// Traces per export request
    #[arg(long, env = "SPANLAKE_LOADGEN_BATCH", default_value = "10")]
    pub batch: usize,
    /// Random seed (same seed, same traces)
    #[arg(long, env = "SPANLAKE_LOADGEN_SEED", default_value = "1")]
    pub seed: u64,
    /// Which traces to generate
    #[arg(long, env = "SPANLAKE_LOADGEN_SCENARIO", value_enum, default_value = "shop")]
    pub scenario: Scenario,
    /// Fan-out degree N (the maximum with --random-fanout)
    #[arg(long, env = "SPANLAKE_LOADGEN_FANOUT", default_value = "4")]
    pub fanout: usize,
    /// Draw N uniformly from 1..=fanout for each trace
    #[arg(long, env = "SPANLAKE_LOADGEN_RANDOM_FANOUT", default_value = "true", action = clap::ArgAction::Set)]
    pub random_fanout: bool,
    /// Parallel or sequential fan-out calls
    #[arg(long, env = "SPANLAKE_LOADGEN_FANOUT_MODE", value_enum, default_value = "parallel")]
    pub fanout_mode: FanoutMode,
    /// Latency of each fan-out call: fixed:5ms, exp:10ms (mean) or lognormal:10ms:1.0 (median:sigma)
    #[arg(long, env = "SPANLAKE_LOADGEN_LEAF_LATENCY", default_value = "lognormal:8ms:0.6", value_parser = Latency::parse)]
    pub leaf_latency: Latency,
    /// The parent's own work before its fan-out (same syntax; none by default)
    #[arg(long, env = "SPANLAKE_LOADGEN_PRE_LATENCY", value_parser = Latency::parse)]
    pub pre_latency: Option<Latency>,
    /// The parent's own work after its fan-out
    #[arg(long, env = "SPANLAKE_LOADGEN_POST", default_value = "0s", value_parser = parse_duration)]
    pub post: Duration,
    /// Probability that a call fails
    #[arg(long, env = "SPANLAKE_LOADGEN_ERROR_RATE", default_value = "0.01")]
    pub error_rate: f64,
    /// Retries of one request on retryable errors before it counts as failed
    #[arg(long, env = "SPANLAKE_LOADGEN_MAX_RETRIES", default_value = "10")]
    pub max_retries: u32,
    /// Print no progress lines
    #[arg(long, env = "SPANLAKE_LOADGEN_QUIET")]
    pub quiet: bool,
}

impl LoadgenArgs {
    /// The defaults of `spanlake loadgen`, never read from the environment.
    pub fn defaults() -> Self {
        match crate::config::Cli::parse_without_env(["spanlake", "loadgen"]).map(|cli| cli.command) {
            Ok(Some(crate::config::Command::Loadgen(args))) => args,
            other => unreachable!("`spanlake loadgen` parses as loadgen: {other:?}"),
        }
    }

    pub fn workload(&self) -> Workload {
        Workload {
            scenario: self.scenario,
            fanout: self.fanout,
            random_fanout: self.random_fanout,
            mode: self.fanout_mode,
            leaf_latency: self.leaf_latency,
            pre_latency: self.pre_latency,
            post: self.post,
            error_rate: self.error_rate,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub requests_sent: u64,
    pub requests_acknowledged: u64,
    pub requests_retried: u64,
    pub requests_failed: u64,
    pub traces_acknowledged: u64,
    pub spans_sent: u64,
    pub spans_acknowledged: u64,
    pub spans_rejected: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn spans_per_second(&self) -> f64 {
        self.spans_acknowledged as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests: {} sent, {} acknowledged, {} retried, {} failed; spans: {} sent, {} acknowledged, {} rejected; \
             {:.1}s, {:.0} spans/s",
            self.requests_sent,
            self.requests_acknowledged,
            self.requests_retried,
            self.requests_failed,
            self.spans_sent,
            self.spans_acknowledged,
            self.spans_rejected,
            self.elapsed.as_secs_f64(),
            self.spans_per_second()
        )
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    traces_acked: AtomicU64,
    spans_sent: AtomicU64,
    spans_acked: AtomicU64,
    spans_rejected: AtomicU64,
}

/// The CLI entry point: runs and prints the report.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let report = generate(&args).await?;
    println!("{report}");
    if report.requests_failed > 0 {
        anyhow::bail!("{} requests failed", report.requests_failed);
    }
    Ok(())
}

/// Runs the load described by `args` and returns what happened.
pub async fn generate(args: &LoadgenArgs) -> anyhow::Result<LoadReport> {
    let client = client::Client::connect(args).await?;
    let workload = Arc::new(args.workload());
    let counters = Arc::new(Counters::default());
    let total_traces = args.traces.or(if args.duration.is_none() { Some(1000) } else { None });
    let batches_left = Arc::new(AtomicU64::new(match total_traces {
        Some(t) => t.div_ceil(args.batch.max(1) as u64),
        None => u64::MAX,
    }));
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let concurrency = args.concurrency.max(1);
    // Each sender paces itself to its share of the rate.
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.batch as f64 * concurrency as f64 / args.rate));

    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (client, workload, counters, batches_left) =
            (client.clone(), workload.clone(), counters.clone(), batches_left.clone());
        let (batch, max_retries, seed) = (args.batch.max(1), args.max_retries, args.seed);
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(worker as u64));
            let mut next = Instant::now();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if batches_left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_err() {
                    break;
                }
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
                let request = workload.request(&mut rng, batch, now_ns);
                let spans: u64 =
                    request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum();
                counters.sent.fetch_add(1, Ordering::Relaxed);
                counters.spans_sent.fetch_add(spans, Ordering::Relaxed);
                let outcome = client.send_with_retries(&request, max_retries).await;
                counters.retried.fetch_add(outcome.retries as u64, Ordering::Relaxed);
                match outcome.result {
                    Ok(rejected) => {
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                        counters.traces_acked.fetch_add(batch as u64, Ordering::Relaxed);
                        counters.spans_acked.fetch_add(spans - rejected, Ordering::Relaxed);
                        counters.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
                    }
                    Err(error) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "export failed");
                    }
                }
            }
        }));
    }
    let progress = (!args.quiet).then(|| {
        let counters = counters.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let spans = counters.spans_acked.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.0}s] {} spans acknowledged ({:.0}/s), {} retried, {} failed",
                    started.elapsed().as_secs_f64(),
                    spans,
                    spans as f64 / started.elapsed().as_secs_f64(),
                    counters.retried.load(Ordering::Relaxed),
                    counters.failed.load(Ordering::Relaxed)
                );
            }
        })
    });
    for worker in workers {
        worker.await?;
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let c = &counters;
    Ok(LoadReport {
        requests_sent: c.sent.load(Ordering::Relaxed),
        requests_acknowledged: c.acked.load(Ordering::Relaxed),
        requests_retried: c.retried.load(Ordering::Relaxed),
        requests_failed: c.failed.load(Ordering::Relaxed),
        traces_acknowledged: c.traces_acked.load(Ordering::Relaxed),
        spans_sent: c.spans_sent.load(Ordering::Relaxed),
        spans_acknowledged: c.spans_acked.load(Ordering::Relaxed),
        spans_rejected: c.spans_rejected.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}
