//! Deleting what no reader needs any more, always a grace period late:
//! - block files retired by a commit at least `grace` ago;
//! - block files no commit ever added (an upload whose commit never came)
//!   once the upload is older than `grace`;
//! - commit records folded into a checkpoint that is itself `grace` old.
//!
//! Both judge against a full listing of the commit log, not the incremental
//! one: a commit that landed with an old id (a writer's clock behind, a slow
//! put) is applied before its block could look orphaned, and a checkpoint
//! folds in every commit stored before its listing began, so trimming by the
//! store's own dates never deletes a commit no checkpoint holds.

use spanlake_schemas::catalog::Listing;
use spanlake_schemas::storage::{id_in, relist_from};
use spanlake_schemas::{BlockId, Storage, TenantId};
use tracing::{debug, info};

use crate::error::Result;
use crate::{Compactor, PassReport};

impl Compactor {
    /// Deletes retired and orphaned block files of `tenant` past the grace period.
    pub(crate) async fn sweep(&self, tenant: &TenantId, report: &mut PassReport) -> Result<()> {
        // Judge against a fresh, full listing: a block committed since the
        // pass began is live, and so is one whose commit landed late.
        // An orphan is judged by when that listing began, not by when its
        // file is reached: a commit lands within the grace period of its
        // block's upload (the ingester's flush timeout, the compactor's
        // commit deadline), so a block uploaded a grace period before the
        // listing began has its commit in the listing, if it has one. A
        // commit that lands while a slow listing and sweep run is not
        // missed. (Judged by the time of deletion instead, a sweep longer
        // than the grace period deleted blocks committed meanwhile: found
        // by the chaos test.)
        let listing_began = self.config.clock.now_unix_nanos();
        self.catalog.refresh_tenant(tenant, Listing::Full).await?;
        let now = self.config.clock.now_unix_nanos();
        let grace = self.config.grace.as_nanos() as i64;
        let retired: std::collections::HashMap<BlockId, BlockId> = self.catalog.removed(tenant).into_iter().collect();
        for object in self.storage.list_all(&Storage::blocks_prefix(tenant)).await? {
            let Some(id) = id_in(&object.location, "parquet") else { continue };
            if self.catalog.is_live(tenant, &id) {
                continue;
            }
            let (since, judged_at) = match retired.get(&id) {
                Some(by) => (by.created_unix_nanos() as i64, now),
                None => (object.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX), listing_began),
            };
            if since.saturating_add(grace) <= judged_at {
                debug!(%tenant, block_id = %id, retired = retired.contains_key(&id), "deleting block file");
                self.storage.delete(&object.location).await?;
                report.blocks_deleted += 1;
                self.metrics.blocks_deleted.inc();
            }
        }
        Ok(())
    }

    /// Every `checkpoint_interval`, writes a checkpoint of `tenant`'s catalog;
    /// then deletes commits covered by a checkpoint that is `grace` old (a
    /// reader that listed an older checkpoint has long finished reading).
    pub(crate) async fn checkpoint(&self, tenant: &TenantId, report: &mut PassReport) -> Result<()> {
        let now = self.config.clock.now_unix_nanos();
        let checkpoints = self.storage.list_all(&Storage::checkpoints_prefix(tenant)).await?;
        let ids: Vec<BlockId> = checkpoints.iter().filter_map(|o| id_in(&o.location, "json")).collect();
        let due = ids.last().is_none_or(|newest| {
            newest.created_unix_nanos() as i64 + self.config.checkpoint_interval.as_nanos() as i64 <= now
        });
        if !due {
            return Ok(());
        }
        let lease = match &self.leases {
            Some(leases) => match leases.acquire(tenant, "checkpoint").await? {
                Some(lease) => Some(lease),
                None => return Ok(()),
            },
            None => None,
        };
        let result = self.write_checkpoint_and_trim(tenant, &ids, report).await;
        if let (Some(leases), Some(lease)) = (&self.leases, lease) {
            leases.release(lease).await?;
        }
        result
    }

    async fn write_checkpoint_and_trim(
        &self,
        tenant: &TenantId,
        ids: &[BlockId],
        report: &mut PassReport,
    ) -> Result<()> {
        // The sweep just refreshed the catalog; a commit made since is after
        // `through` and readers list it anyway.
        let Some(checkpoint) = self.catalog.checkpoint(tenant, BlockId::new()) else { return Ok(()) };
        self.storage.put_checkpoint(tenant, &checkpoint).await?;
        report.checkpoints += 1;
        info!(%tenant, checkpoint = %checkpoint.id, blocks = checkpoint.live.len(), "catalog checkpointed");

        // The newest checkpoint that is a grace period old decides what may go.
        let now = self.config.clock.now_unix_nanos();
        let grace = self.config.grace.as_nanos() as i64;
        let Some(settled) = ids.iter().rev().find(|id| id.created_unix_nanos() as i64 + grace <= now) else {
            return Ok(());
        };
        let Some(settled_checkpoint) = self.storage.read_checkpoint(&Storage::checkpoint_path(tenant, settled)).await?
        else {
            return Ok(());
        };
        // A commit goes once its id is well before the checkpoint's, and the
        // store dates it before the full listing the checkpoint reflects
        // (minus the lookback, for clock differences): a late commit with an
        // old id waits for a checkpoint that holds it. A checkpoint without a
        // listing time (written by an older version) trims nothing.
        let keep_from =
            BlockId::from_lower_bound(&relist_from(&settled_checkpoint.through, self.config.commit_lookback * 2));
        let Some(listed) = settled_checkpoint.listed_unix_nanos else { return Ok(()) };
        let folded_before = listed.saturating_sub(self.config.commit_lookback.as_nanos() as i64);
        for object in self.storage.list_all(&Storage::commits_prefix(tenant)).await? {
            let Some(id) = id_in(&object.location, "json") else { continue };
            if id >= keep_from {
                break;
            }
            if object.last_modified.timestamp_nanos_opt().is_some_and(|stored| stored < folded_before) {
                self.storage.delete(&object.location).await?;
                report.commits_deleted += 1;
            }
        }
        for old in ids.iter().filter(|id| *id < settled) {
            self.storage.delete(&Storage::checkpoint_path(tenant, old)).await?;
        }
        Ok(())
    }
}
