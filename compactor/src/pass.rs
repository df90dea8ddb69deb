//! One compaction pass over every tenant: plan, merge or expire per window
//! under its lease, then sweep and checkpoint.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use spanlake_schemas::catalog::Listing;
use spanlake_schemas::storage::CommitRecord;
use spanlake_schemas::{BlockId, BlockMeta, TenantId};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::metrics::LevelLabel;
use crate::plan::{Job, by_window, plan_window, window_of};
use crate::{Compactor, error_chain};

/// Most planning rounds per window and pass (each round's merges feed the next level).
const MAX_ROUNDS: usize = 16;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub merges: u64,
    pub blocks_merged: u64,
    pub spans_read: u64,
    pub spans_written: u64,
    pub duplicates_dropped: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub blocks_expired: u64,
    pub blocks_deleted: u64,
    pub commits_deleted: u64,
    pub checkpoints: u64,
    /// Windows with work that another compactor held.
    pub windows_skipped: u64,
    /// Jobs or steps that failed; they are retried by a later pass.
    pub failures: u64,
}

impl PassReport {
    /// Nothing was done (and nothing failed).
    pub fn is_idle(&self) -> bool {
        *self == Self::default()
    }
}

impl Compactor {
    /// One pass over every tenant. Storage failures of a job are counted in
    /// the report and the pass goes on; only a failing catalog refresh (the
    /// pass cannot know what is live) fails the pass.
    pub async fn run_once(&self) -> Result<PassReport> {
        let mut report = PassReport::default();
        self.catalog.refresh().await?;
        let mut tenants = self.catalog.tenants();
        tenants.sort();
        for tenant in &tenants {
            self.compact_tenant(tenant, &mut report).await;
            if let Err(error) = self.sweep(tenant, &mut report).await {
                report.failures += 1;
                warn!(%tenant, error = %error_chain(&error), "sweeping retired blocks failed, will retry");
            }
            if let Err(error) = self.checkpoint(tenant, &mut report).await {
                report.failures += 1;
                warn!(%tenant, error = %error_chain(&error), "checkpointing the catalog failed, will retry");
            }
        }
        self.metrics.failures.inc_by(report.failures);
        self.update_gauges(&tenants);
        Ok(report)
    }

    fn retention_horizon(&self, tenant: &TenantId) -> i64 {
        let retention = self.config.tenant_retention.get(tenant).copied().unwrap_or(self.config.retention);
        self.config.clock.now_unix_nanos().saturating_sub(retention.as_nanos().min(i64::MAX as u128) as i64)
    }

    /// The window's jobs; blocks found unusable stay out of merges (they
    /// still expire with retention).
    fn plan(&self, tenant: &TenantId, window: i64, blocks: &[BlockMeta]) -> Vec<Job> {
        let jobs = plan_window(
            &self.config.plan,
            window,
            blocks,
            self.config.clock.now_unix_nanos(),
            self.retention_horizon(tenant),
        );
        let unusable = self.unusable.lock().expect("unusable-blocks lock");
        if unusable.is_empty() {
            return jobs;
        }
        jobs.into_iter()
            .filter_map(|job| match job {
                Job::Merge { inputs, .. } => {
                    let inputs: Vec<BlockMeta> = inputs.into_iter().filter(|b| !unusable.contains_key(&b.id)).collect();
                    let level = inputs.iter().map(|b| b.compaction_level).max().unwrap_or(0) + 1;
                    (inputs.len() >= 2).then_some(Job::Merge { inputs, level })
                }
                expire => Some(expire),
            })
            .collect()
    }

    /// Whether this compactor takes `window` of `tenant` (always, unless split by shard).
    fn owns(&self, tenant: &TenantId, window: i64) -> bool {
        match (self.leases.is_some(), self.config.shard) {
            (false, Some((index, count))) if count > 1 => {
                let mut hasher = DefaultHasher::new();
                (tenant.as_str(), window).hash(&mut hasher);
                hasher.finish() % u64::from(count) == u64::from(index)
            }
            _ => true,
        }
    }

    /// Each window on its own: one that fails (or panics) is retried with
    /// backoff on later passes, and the others, the sweep and the
    /// checkpoint go on.
    async fn compact_tenant(&self, tenant: &TenantId, report: &mut PassReport) {
        let windows = by_window(self.catalog.blocks(tenant, |_| true), self.config.plan.window);
        let now = self.config.clock.now_unix_nanos();
        for (window, blocks) in windows {
            if self.plan(tenant, window, &blocks).is_empty() || !self.owns(tenant, window) {
                continue;
            }
            let key = (tenant.clone(), window);
            if self.failing.lock().expect("failing-windows lock").get(&key).is_some_and(|(_, retry_at)| now < *retry_at)
            {
                continue;
            }
            let attempt = AssertUnwindSafe(self.compact_window(tenant, window, report)).catch_unwind().await;
            let outcome = attempt.unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Error::Panicked { tenant: tenant.clone(), window, message })
            });
            let mut failing = self.failing.lock().expect("failing-windows lock");
            match outcome {
                Ok(()) => {
                    failing.remove(&key);
                }
                Err(error) => {
                    report.failures += 1;
                    let failures = failing.get(&key).map_or(1, |(n, _)| n + 1);
                    let backoff = self.retry_backoff(failures);
                    warn!(
                        %tenant, window, failures, retry_in = ?backoff, error = %error_chain(&error),
                        "compaction of a window failed, will retry"
                    );
                    let retry_at = now.saturating_add(backoff.as_nanos().min(i64::MAX as u128) as i64);
                    failing.insert(key, (failures, retry_at));
                }
            }
        }
        self.metrics.windows_failing.set(self.failing.lock().expect("failing-windows lock").len() as i64);
    }

    /// Wait before retrying a window after `failures` failures in a row:
    /// none after the first (the next pass), then doubling from the pass
    /// interval, at most an hour.
    fn retry_backoff(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let doubled = self.config.interval.saturating_mul(1 << (failures - 1).min(16));
        doubled.min(Duration::from_secs(3600))
    }

    /// Runs every job of one window (round after round, as merges feed the
    /// next level) while holding the window's lease.
    async fn compact_window(&self, tenant: &TenantId, window: i64, report: &mut PassReport) -> Result<()> {
        let key = format!("window-{:020}", window.max(0) / 1_000_000_000);
        let mut lease = match &self.leases {
            Some(leases) => match leases.acquire(tenant, &key).await? {
                Some(lease) => Some(lease),
                None => {
                    debug!(%tenant, key, "window held by another compactor");
                    report.windows_skipped += 1;
                    self.metrics.windows_skipped.inc();
                    return Ok(());
                }
            },
            None => None,
        };
        let result = self.run_window(tenant, window, &key, &mut lease, report).await;
        if let (Some(leases), Some(lease)) = (&self.leases, lease)
            && let Err(error) = leases.release(lease).await
        {
            warn!(%tenant, key, error = %error_chain(&error), "releasing a lease failed; it will expire");
        }
        result
    }

    async fn run_window(
        &self,
        tenant: &TenantId,
        window: i64,
        key: &str,
        lease: &mut Option<Lease>,
        report: &mut PassReport,
    ) -> Result<()> {
        // What the previous holder committed is visible only after a refresh.
        self.catalog.refresh_tenant(tenant, Listing::Incremental).await?;
        for _ in 0..MAX_ROUNDS {
            let blocks = self.catalog.blocks(tenant, |b| window_of(b, self.config.plan.window) == window);
            let jobs = self.plan(tenant, window, &blocks);
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                match self.run_job(tenant, key, job, lease, report).await {
                    Err(Error::MissingBlock { tenant, block_id }) => {
                        // A commit whose block never landed (its writer died
                        // between the two puts it makes at once). While the
                        // block may still be on its way, the window waits.
                        if block_id.may_be_in_flight(self.config.commit_lookback) {
                            return Err(Error::MissingBlock { tenant, block_id });
                        }
                        warn!(%tenant, %block_id, "retiring a committed block whose file never landed");
                        self.fence(&tenant, key, lease).await?;
                        let record = CommitRecord { id: BlockId::new(), added: vec![], removed: vec![block_id] };
                        self.storage.commit(&tenant, &record).await?;
                        self.catalog.apply(&tenant, &record);
                        if let Some(hook) = &self.on_commit {
                            hook(&tenant, &record);
                        }
                        break;
                    }
                    Err(Error::UnusableBlock { tenant, block_id, reason }) => {
                        // Left out from now on; the next round plans without it.
                        warn!(%tenant, %block_id, %reason, "leaving an unusable block out of merges");
                        let mut unusable = self.unusable.lock().expect("unusable-blocks lock");
                        unusable.insert(block_id, reason);
                        self.metrics.blocks_unusable.set(unusable.len() as i64);
                        break;
                    }
                    other => other?,
                }
            }
        }
        Ok(())
    }

    async fn run_job(
        &self,
        tenant: &TenantId,
        key: &str,
        job: Job,
        lease: &mut Option<Lease>,
        report: &mut PassReport,
    ) -> Result<()> {
        let record = match job {
            Job::Merge { inputs, level } => {
                let id = BlockId::new();
                let merged = crate::write::merge_blocks(
                    &self.storage,
                    tenant,
                    &inputs,
                    level,
                    id.clone(),
                    self.config.batch_rows,
                )
                .await?;
                let uploaded = std::time::Instant::now();
                self.fence(tenant, key, lease).await?;
                // A sweep deletes an upload that no commit names once it is a
                // grace period old: commit well inside that, or not at all
                // (the upload then is an orphan that a sweep deletes).
                let deadline = self.config.grace / 2;
                if uploaded.elapsed() >= deadline {
                    return Err(Error::CommitTooLate {
                        tenant: tenant.clone(),
                        block_id: id,
                        elapsed: uploaded.elapsed(),
                    });
                }
                report.merges += 1;
                report.blocks_merged += inputs.len() as u64;
                report.spans_read += merged.stats.rows_in;
                report.spans_written += merged.stats.rows_out;
                report.duplicates_dropped += merged.stats.duplicates;
                report.bytes_read += merged.bytes_read;
                report.bytes_written += merged.meta.size_bytes;
                info!(
                    %tenant, block_id = %id, level, sources = inputs.len(), spans = merged.stats.rows_out,
                    duplicates = merged.stats.duplicates, bytes = merged.meta.size_bytes, "merged blocks"
                );
                self.metrics.merges.inc();
                self.metrics.bytes_read.inc_by(merged.bytes_read);
                self.metrics.bytes_written.inc_by(merged.meta.size_bytes);
                self.metrics.spans_written.inc_by(merged.stats.rows_out);
                self.metrics.duplicates_dropped.inc_by(merged.stats.duplicates);
                let removed = inputs.into_iter().map(|b| b.id).collect();
                CommitRecord { id: BlockId::new(), added: vec![merged.meta], removed }
            }
            Job::Expire { blocks } => {
                self.fence(tenant, key, lease).await?;
                report.blocks_expired += blocks.len() as u64;
                self.metrics.blocks_expired.inc_by(blocks.len() as u64);
                info!(%tenant, blocks = blocks.len(), "retiring blocks past retention");
                CommitRecord { id: BlockId::new(), added: vec![], removed: blocks.into_iter().map(|b| b.id).collect() }
            }
        };
        self.storage.commit(tenant, &record).await?;
        self.catalog.apply(tenant, &record);
        if let Some(hook) = &self.on_commit {
            hook(tenant, &record);
        }
        Ok(())
    }

    /// Right before a commit: renew the lease, which fails if another
    /// compactor took the window over (then nothing is committed; the upload
    /// becomes an orphan that a later sweep deletes).
    async fn fence(&self, tenant: &TenantId, key: &str, lease: &mut Option<Lease>) -> Result<()> {
        if let (Some(leases), Some(lease)) = (&self.leases, lease.as_mut())
            && !leases.renew(lease).await?
        {
            return Err(Error::LeaseLost { tenant: tenant.clone(), key: key.to_owned() });
        }
        Ok(())
    }

    fn update_gauges(&self, tenants: &[TenantId]) {
        let mut per_level: BTreeMap<u32, i64> = BTreeMap::new();
        let mut pending = 0i64;
        let mut oldest_waiting: Option<u128> = None;
        for tenant in tenants {
            let blocks = self.catalog.blocks(tenant, |_| true);
            for block in &blocks {
                *per_level.entry(block.compaction_level).or_default() += 1;
            }
            for (window, blocks) in by_window(blocks, self.config.plan.window) {
                let jobs = self.plan(tenant, window, &blocks);
                pending += jobs.iter().filter(|j| matches!(j, Job::Merge { .. })).count() as i64;
                if !jobs.is_empty() {
                    let oldest =
                        blocks.iter().filter(|b| b.compaction_level == 0).map(|b| b.id.created_unix_nanos()).min();
                    oldest_waiting = oldest_waiting.into_iter().chain(oldest).min();
                }
            }
        }
        self.metrics.blocks.clear();
        for (level, count) in per_level {
            self.metrics.blocks.get_or_create(&LevelLabel { level }).set(count);
        }
        self.metrics.pending_merges.set(pending);
        let now = self.config.clock.now_unix_nanos() as i128;
        let lag = oldest_waiting.map_or(0, |t| ((now - t as i128).max(0) / 1_000_000_000) as i64);
        self.metrics.lag_seconds.set(lag);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spanlake_schemas::fault::FaultyStore;
    use spanlake_schemas::{Storage, TenantId};

    use crate::{Compactor, Config};

    #[tokio::test]
    async fn without_leases_shards_split_windows_between_compactors() {
        let store = FaultyStore::new(Arc::new(object_store::memory::InMemory::new()));
        store.ignore_conditional_puts(true);
        let storage = Storage::new(store);
        let mut shards = Vec::new();
        for index in 0..3 {
            let config = Config { shard: Some((index, 3)), ..Config::default() };
            let mut registry = prometheus_client::registry::Registry::default();
            shards.push(Compactor::new(config, storage.clone(), None, &mut registry).await.unwrap());
        }
        let tenant = TenantId::new("t").unwrap();
        let mut per_shard = [0; 3];
        for window in 0..300i64 {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&tenant, window * 3_600_000_000_000)).collect();
            assert_eq!(owners.len(), 1, "window {window} owned by {owners:?}");
            per_shard[owners[0]] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 50), "{per_shard:?}");
    }
}
