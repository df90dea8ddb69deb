//! # spanlake-compactor
//!
//! Ingesters write a small block about every second per tenant. The compactor
//! keeps the number of live blocks bounded, removes duplicate spans, expires
//! data past retention and keeps the commit log short:
//!
//! ```text
//!  commit log ─▶ Catalog (refreshed) ─▶ plan: per tenant, blocks by time window, then level
//!    per window with work, under its lease (leases/<window>/<generation>, conditional creates):
//!      merge: stream sources ─▶ k-way merge by (trace_id, start_time), dedupe
//!             (trace id, span id, kind) ─▶ Parquet as an ingester writes it ─▶ upload (durable)
//!      renew lease (proves no one took over) ─▶ one commit {added: [merged], removed: sources}
//!      expire: one commit {removed: blocks past retention}
//!    sweep: delete retired block files a grace period after their retirement, and
//!           uncommitted (orphaned) uploads once they are older than the grace period
//!    checkpoint: snapshot the catalog; delete commits it covers once it is a grace period old
//! ```
//!
//! Invariants, each relied on by readers and tested by injected crashes:
//! - A merged block is durable before the commit that adds it, and that one
//!   commit also retires its sources, so a reader sees the sources or the
//!   merged block, never both and never neither, at every step of a crash.
//! - Two compactors never merge the same blocks: a window is merged only under
//!   its lease, the lease is renewed right before each commit, and a taker
//!   refreshes its catalog after taking the lease. On stores that fail the
//!   conditional-create probe, no lease is trusted: work is split by
//!   [`Config::shard`] instead, or one compactor must run alone.
//! - Nothing a query may still read is deleted before the grace period.
//!
//! Policy times (retention, grace, lease expiry) come from an injectable
//! [`clock::Clock`]; block and commit ids keep the real time.

pub mod clock;
mod error;
pub mod lease;
mod metrics;
mod pass;
pub mod plan;
mod sweep;
pub mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use spanlake_schemas::storage::CommitHook;
use spanlake_schemas::{BlockId, Catalog, Storage, TenantId};
use tracing::{info, warn};

pub use error::{Error, Result};
pub use pass::PassReport;

use crate::clock::{Clock, SystemClock};
use crate::lease::Leases;
use crate::plan::PlanConfig;

/// Compactor configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time between passes when running in the background.
    pub interval: Duration,
    /// Windows, target size, fan-in.
    pub plan: PlanConfig,
    /// How long spans are kept, unless a tenant has its own.
    pub retention: Duration,
    /// Per-tenant retention overrides.
    pub tenant_retention: HashMap<TenantId, Duration>,
    /// Retired blocks (and old commits) are deleted this long after retirement,
    /// so queries in flight finish first; also the age after which an
    /// uncommitted upload counts as orphaned.
    pub grace: Duration,
    /// A lease not renewed for this long may be taken over.
    pub lease_ttl: Duration,
    /// How often the catalog is checkpointed and the commit log trimmed.
    pub checkpoint_interval: Duration,
    /// How far back catalog refreshes relist (writers' clock skew); must match the queriers'.
    pub commit_lookback: Duration,
    /// Rows per batch while merging.
    pub batch_rows: usize,
    /// On stores without conditional writes: this compactor takes the
    /// (tenant, window) pairs that hash to `index` of `count`.
    pub shard: Option<(u32, u32)>,
    pub clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            plan: PlanConfig {
                window: Duration::from_secs(3600),
                target_block_bytes: 256 << 20,
                fan_in: 8,
                cold_after: Duration::from_secs(600),
            },
            retention: Duration::from_secs(14 * 24 * 3600),
            tenant_retention: HashMap::new(),
            grace: Duration::from_secs(300),
            lease_ttl: Duration::from_secs(120),
            checkpoint_interval: Duration::from_secs(600),
            commit_lookback: Duration::from_secs(120),
            batch_rows: 8192,
            shard: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A compactor: plans and runs passes over every tenant in the store.
pub struct Compactor {
    config: Config,
    storage: Storage,
    catalog: Arc<Catalog>,
    /// `None` when the store fails the conditional-write probe.
    leases: Option<Leases>,
    metrics: metrics::Metrics,
    on_commit: Option<CommitHook>,
    /// Blocks found unmergeable (not Parquet, foreign schema), with why:
    /// left out of merges from then on; blocks are immutable.
    unusable: Mutex<HashMap<BlockId, String>>,
    /// Windows whose last attempt failed: consecutive failures, and when to try again.
    failing: Mutex<HashMap<(TenantId, i64), (u32, i64)>>,
}

impl std::fmt::Debug for Compactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor").field("config", &self.config).field("leases", &self.leases.is_some()).finish()
    }
}

impl Compactor {
    /// Probes the store for conditional writes and prepares the compactor.
    /// `on_commit` sees every commit this compactor makes (the all-in-one
    /// querier applies them at once).
    pub async fn new(
        config: Config,
        storage: Storage,
        on_commit: Option<CommitHook>,
        registry: &mut Registry,
    ) -> Result<Self> {
        let owner = format!("compactor-{}", spanlake_schemas::BlockId::new());
        let leases = if lease::probe(&storage).await? {
            Some(Leases::new(storage.clone(), owner, config.lease_ttl, Arc::clone(&config.clock)))
        } else {
            match config.shard {
                Some((index, count)) => {
                    warn!(index, count, "object store ignores conditional writes: no leases, splitting work by shard")
                }
                None => warn!(
                    "object store ignores conditional writes (If-None-Match): no leases; run a single compactor \
                     or give each one --compactor-shard"
                ),
            }
            None
        };
        let remember = config.grace * 2 + config.commit_lookback * 2;
        let catalog = Catalog::remembering_removed(storage.clone(), config.commit_lookback, remember);
        info!(leases = leases.is_some(), "compactor ready");
        Ok(Self {
            metrics: metrics::Metrics::new(registry),
            config,
            storage,
            catalog,
            leases,
            on_commit,
            unusable: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
        })
    }

    pub fn uses_leases(&self) -> bool {
        self.leases.is_some()
    }

    /// Runs passes every `interval` on a thread of its own (merging is CPU
    /// work that must not slow ingest or queries) until `stop` turns true.
    pub fn spawn(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("spanlake-compactor".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the compactor runtime");
                runtime.block_on(async move {
                    loop {
                        // Stopping mid-pass is safe: every step is crash-safe.
                        let pass = tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            pass = self.run_once() => pass,
                        };
                        match pass {
                            Ok(report) if report.is_idle() => {}
                            Ok(report) => info!(?report, "compaction pass done"),
                            Err(error) => warn!(error = %error_chain(&error), "compaction pass failed, will retry"),
                        }
                        tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            _ = tokio::time::sleep(self.config.interval) => {}
                        }
                    }
                });
            })
            .expect("spawning the compactor thread")
    }
}

/// An error with its sources, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
