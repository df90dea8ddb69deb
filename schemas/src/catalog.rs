//! The block catalog: which blocks of each tenant are live, kept in memory and
//! refreshed incrementally from the commit log. Queriers read through it;
//! compactors plan from it and write its checkpoints.
//!
//! A refresh lists only commits created since the newest one seen, minus a
//! lookback that covers writers' clock skew and slow puts, so its cost does not
//! grow with history. A catalog that starts from nothing begins at the newest
//! checkpoint rather than the first commit. Applying a commit is idempotent
//! and order-independent: live = blocks added − blocks removed, whichever
//! commit is seen first.
//!
//! Visibility does not rest on id order alone. A commit can land with an id
//! older than the lookback: its writer's clock runs behind, or its put was
//! slow. So every half lookback, and whenever a compactor is about to sweep or
//! checkpoint, a refresh lists the whole commit log (which checkpoints keep
//! short) and also reads every commit it has not applied that the store
//! dates after the previous full listing began, whatever its id says. Such a
//! commit is counted as late.
//!
//! Memory stays bounded: applied-commit ids and retired-block ids are
//! forgotten once no commit that could still be listed can mention them
//! (twice the lookback; longer for retired blocks when asked, because a
//! compactor deletes their files a grace period after retirement).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tracing::{debug, warn};

use crate::storage::{Checkpoint, CommitRecord, StorageError, id_in, relist_from};
use crate::{BlockId, BlockMeta, Storage, TenantId};

#[derive(Debug, Default)]
struct TenantBlocks {
    live: BTreeMap<BlockId, BlockMeta>,
    /// Retired block → the commit that retired it.
    removed: HashMap<BlockId, BlockId>,
    /// Commits applied within the relisting window (older ones are forgotten).
    applied: BTreeSet<BlockId>,
    /// Newest commit applied or covered by the checkpoint loaded.
    newest: Option<BlockId>,
    /// When the last full listing of the commit log began (unix nanos, this
    /// process's clock); every commit stored before then has been applied.
    listed_full: Option<i64>,
    /// When this tenant last refreshed successfully (unix nanos).
    refreshed_at: Option<i64>,
    /// Late commits applied (their id is forgotten from `applied` at once),
    /// with the time the store dates them, until a full listing no longer
    /// reaches back to them.
    late: HashMap<BlockId, i64>,
}

impl TenantBlocks {
    fn from_checkpoint(checkpoint: Checkpoint) -> Self {
        Self {
            live: checkpoint.live.into_iter().map(|m| (m.id.clone(), m)).collect(),
            removed: checkpoint.removed.into_iter().collect(),
            applied: checkpoint.applied.into_iter().collect(),
            newest: Some(checkpoint.through),
            listed_full: checkpoint.listed_unix_nanos,
            refreshed_at: None,
            late: HashMap::new(),
        }
    }

    fn apply(&mut self, record: &CommitRecord) {
        if !self.applied.insert(record.id.clone()) {
            return;
        }
        if self.newest.as_ref().is_none_or(|n| *n < record.id) {
            self.newest = Some(record.id.clone());
        }
        for id in &record.removed {
            self.live.remove(id);
            let by = self.removed.entry(id.clone()).or_insert_with(|| record.id.clone());
            if record.id < *by {
                *by = record.id.clone();
            }
        }
        for meta in &record.added {
            if !self.removed.contains_key(&meta.id) {
                self.live.insert(meta.id.clone(), meta.clone());
            }
        }
    }
}

/// The in-memory view of every tenant's live blocks.
#[derive(Debug)]
pub struct Catalog {
    storage: Storage,
    lookback: Duration,
    remember_removed: Duration,
    tenants: RwLock<HashMap<TenantId, TenantBlocks>>,
    /// Commit records and checkpoints that could not be read, skipped.
    invalid_records: AtomicU64,
    /// Commits found only by a full listing (dated before the lookback).
    late_commits: AtomicU64,
}

/// Which commits a refresh lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// From the newest commit seen minus the lookback, and the whole log
    /// when the last full listing is half a lookback old.
    Incremental,
    /// The whole commit log, now (before a sweep or a checkpoint).
    Full,
}

impl Catalog {
    /// `lookback`: how far before the newest seen commit a refresh relists.
    pub fn new(storage: Storage, lookback: Duration) -> Arc<Self> {
        Self::remembering_removed(storage, lookback, Duration::ZERO)
    }

    /// A catalog that remembers retired blocks for at least `remember_removed`
    /// after their retirement (a compactor's: it deletes their files later).
    pub fn remembering_removed(storage: Storage, lookback: Duration, remember_removed: Duration) -> Arc<Self> {
        Arc::new(Self {
            storage,
            lookback,
            remember_removed,
            tenants: RwLock::new(HashMap::new()),
            invalid_records: AtomicU64::new(0),
            late_commits: AtomicU64::new(0),
        })
    }

    /// How many commits were found only by a full listing: they landed with
    /// an id older than the lookback (a writer's clock behind, a slow put).
    pub fn late_commits(&self) -> u64 {
        self.late_commits.load(Ordering::Relaxed)
    }

    /// How many commit records and checkpoints were skipped as unreadable.
    pub fn invalid_records(&self) -> u64 {
        self.invalid_records.load(Ordering::Relaxed)
    }

    /// Applies a commit this process made (no listing needed).
    pub fn apply(&self, tenant: &TenantId, record: &CommitRecord) {
        self.tenants.write().expect("catalog lock").entry(tenant.clone()).or_default().apply(record);
    }

    /// Live blocks of `tenant` for which `keep` holds.
    pub fn blocks(&self, tenant: &TenantId, keep: impl Fn(&BlockMeta) -> bool) -> Vec<BlockMeta> {
        let tenants = self.tenants.read().expect("catalog lock");
        tenants.get(tenant).map(|t| t.live.values().filter(|m| keep(m)).cloned().collect()).unwrap_or_default()
    }

    /// Whether `block` is live for `tenant`.
    pub fn is_live(&self, tenant: &TenantId, block: &BlockId) -> bool {
        self.tenants.read().expect("catalog lock").get(tenant).is_some_and(|t| t.live.contains_key(block))
    }

    /// Retired blocks still remembered, with the commit that retired each.
    pub fn removed(&self, tenant: &TenantId) -> Vec<(BlockId, BlockId)> {
        let tenants = self.tenants.read().expect("catalog lock");
        tenants.get(tenant).map(|t| t.removed.iter().map(|(b, c)| (b.clone(), c.clone())).collect()).unwrap_or_default()
    }

    /// Tenants this catalog knows.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.tenants.read().expect("catalog lock").keys().cloned().collect()
    }

    /// A checkpoint of `tenant`'s current state, stamped `id`.
    pub fn checkpoint(&self, tenant: &TenantId, id: BlockId) -> Option<Checkpoint> {
        let tenants = self.tenants.read().expect("catalog lock");
        let t = tenants.get(tenant)?;
        Some(Checkpoint {
            id,
            through: t.newest.clone()?,
            live: t.live.values().cloned().collect(),
            removed: t.removed.iter().map(|(b, c)| (b.clone(), c.clone())).collect(),
            applied: t.applied.iter().cloned().collect(),
            listed_unix_nanos: t.listed_full,
        })
    }

    /// Reads the commits that are new since the last refresh, for every
    /// tenant. Each tenant refreshes on its own: one that fails (its store
    /// prefix unreachable) is logged and retried next time, and the others
    /// go on. Only failing to list the tenants fails the refresh.
    pub async fn refresh(&self) -> Result<(), StorageError> {
        for tenant in self.storage.list_tenants().await? {
            if let Err(error) = self.refresh_tenant(&tenant, Listing::Incremental).await {
                warn!(%tenant, %error, "catalog refresh of a tenant failed, will retry");
            }
        }
        Ok(())
    }

    /// Reads `tenant`'s new commits (starting from its newest checkpoint the
    /// first time).
    pub async fn refresh_tenant(&self, tenant: &TenantId, listing: Listing) -> Result<(), StorageError> {
        // A catalog that is new, or whose newest commit is older than the
        // lookback (an idle tenant, or a reader that fell behind while old
        // commits were folded into a checkpoint and deleted), checks for a
        // newer checkpoint and starts over from it.
        // So does one that has not refreshed for longer than the lookback (its
        // refreshes failed, or it was paused): commits it never read may
        // since have been folded into a checkpoint and deleted.
        let (newest, refreshed_at) = {
            let tenants = self.tenants.read().expect("catalog lock");
            let t = tenants.get(tenant);
            (t.map(|t| t.newest.clone()), t.and_then(|t| t.refreshed_at))
        };
        let lookback_nanos = self.lookback.as_nanos() as i64;
        let stale = refreshed_at.is_some_and(|at| at.saturating_add(lookback_nanos) < now_unix_nanos());
        let behind = stale
            || match &newest {
                None | Some(None) => true,
                Some(Some(id)) => {
                    let horizon = BlockId::from_lower_bound(&relist_from(&BlockId::new(), self.lookback));
                    *id < horizon
                }
            };
        let mut from_checkpoint = false;
        if behind
            && let Some(checkpoint) = self.newest_readable_checkpoint(tenant).await?
            && (stale || newest.flatten().is_none_or(|n| n < checkpoint.through))
        {
            debug!(%tenant, checkpoint = %checkpoint.id, blocks = checkpoint.live.len(), "catalog starts from checkpoint");
            let mut tenants = self.tenants.write().expect("catalog lock");
            tenants.insert(tenant.clone(), TenantBlocks::from_checkpoint(checkpoint));
            from_checkpoint = true;
        }
        let now = now_unix_nanos();
        let (from, listed_full) = {
            let tenants = self.tenants.read().expect("catalog lock");
            let t = tenants.get(tenant);
            let from = t.and_then(|t| t.newest.as_ref()).map(|id| relist_from(&not_after_now(id), self.lookback));
            (from, t.and_then(|t| t.listed_full))
        };
        let half_lookback = (self.lookback / 2).as_nanos() as i64;
        // Starting from a checkpoint, the first listing is full: commits that
        // landed late since the checkpoint's own listing are found at once.
        let full = listing == Listing::Full
            || from_checkpoint
            || listed_full.is_none_or(|at| at.saturating_add(half_lookback) <= now);
        let fresh = if full {
            self.unapplied_in_full_listing(tenant, from.as_deref(), listed_full).await?
        } else {
            let paths = self.storage.list_commits(tenant, from.as_deref()).await?;
            let tenants = self.tenants.read().expect("catalog lock");
            let applied = tenants.get(tenant).map(|t| &t.applied);
            paths
                .into_iter()
                .filter(|path| id_in(path, "json").is_some_and(|id| !applied.is_some_and(|a| a.contains(&id))))
                .map(|path| (path, None))
                .collect()
        };
        for (path, late) in fresh {
            match self.storage.read_commit(&path).await {
                Ok(record) => {
                    if let Some(stored) = late {
                        warn!(%tenant, commit = %record.id, "a commit landed after the lookback (writer clock behind, or a slow put); applied now");
                        self.late_commits.fetch_add(1, Ordering::Relaxed);
                        let mut tenants = self.tenants.write().expect("catalog lock");
                        tenants.entry(tenant.clone()).or_default().late.insert(record.id.clone(), stored);
                    }
                    self.apply(tenant, &record)
                }
                // A commit that vanished was folded into a checkpoint and deleted.
                Err(StorageError::ObjectStore { source: object_store::Error::NotFound { .. }, .. }) => {}
                // A record that does not parse (a torn write after a power
                // cut, a foreign file) never will: it is skipped for good,
                // and the commits after it still apply.
                Err(error @ StorageError::InvalidCommit { .. }) => {
                    warn!(%tenant, %error, "skipping an unreadable commit record");
                    self.invalid_records.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = id_in(&path, "json") {
                        self.tenants
                            .write()
                            .expect("catalog lock")
                            .entry(tenant.clone())
                            .or_default()
                            .applied
                            .insert(id);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        {
            let mut tenants = self.tenants.write().expect("catalog lock");
            tenants.entry(tenant.clone()).or_default().refreshed_at = Some(now);
        }
        if full {
            let mut tenants = self.tenants.write().expect("catalog lock");
            let t = tenants.entry(tenant.clone()).or_default();
            t.listed_full = Some(now);
            let since = now.saturating_sub(self.lookback.as_nanos() as i64);
            t.late.retain(|_, stored| *stored >= since);
        }
        self.forget_old(tenant);
        debug!(%tenant, full, "catalog refreshed");
        Ok(())
    }

    /// The commits a full listing must read, each flagged when it is late:
    /// those not applied whose id is in the relisting window (from `from`),
    /// and those not applied that the store dates after the previous full
    /// listing began (minus the lookback, for clock differences between the
    /// store and this process) whatever their id. With no previous full
    /// listing, every commit not applied.
    async fn unapplied_in_full_listing(
        &self,
        tenant: &TenantId,
        from: Option<&str>,
        listed_full: Option<i64>,
    ) -> Result<Vec<(object_store::path::Path, Option<i64>)>, StorageError> {
        let objects = self.storage.list_all(&Storage::commits_prefix(tenant)).await?;
        let since = listed_full.map(|at| at.saturating_sub(self.lookback.as_nanos() as i64));
        let tenants = self.tenants.read().expect("catalog lock");
        let t = tenants.get(tenant);
        let mut fresh = Vec::new();
        for object in objects {
            let Some(id) = id_in(&object.location, "json") else { continue };
            if t.is_some_and(|t| t.applied.contains(&id) || t.late.contains_key(&id)) {
                continue;
            }
            let in_window = from.is_none_or(|from| id >= BlockId::from_lower_bound(from));
            let stored = object.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX);
            if in_window || since.is_none() {
                fresh.push((object.location, None));
            } else if since.is_some_and(|since| stored >= since) {
                fresh.push((object.location, Some(stored)));
            }
        }
        Ok(fresh)
    }

    /// The newest checkpoint that parses; unreadable ones are skipped (and counted).
    async fn newest_readable_checkpoint(&self, tenant: &TenantId) -> Result<Option<Checkpoint>, StorageError> {
        let (checkpoint, skipped) = self.storage.newest_readable_checkpoint(tenant).await?;
        self.invalid_records.fetch_add(skipped, Ordering::Relaxed);
        Ok(checkpoint)
    }

    /// Drops applied-commit ids older than twice the lookback (they can no
    /// longer be relisted) and retired-block ids retired before that (or
    /// before `remember_removed`, if longer), so memory stays bounded.
    fn forget_old(&self, tenant: &TenantId) {
        let mut tenants = self.tenants.write().expect("catalog lock");
        if let Some(t) = tenants.get_mut(tenant)
            && let Some(newest) = t.newest.as_ref().map(not_after_now)
        {
            let keep_from = BlockId::from_lower_bound(&relist_from(&newest, self.lookback * 2));
            t.applied = t.applied.split_off(&keep_from);
            let keep_removed_from =
                BlockId::from_lower_bound(&relist_from(&newest, (self.lookback * 2).max(self.remember_removed)));
            t.removed.retain(|_, by| *by >= keep_removed_from);
        }
    }

    /// Refreshes every `interval` until the returned task is aborted.
    pub fn spawn_refresh(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Err(error) = this.refresh().await {
                    warn!(%error, "catalog refresh failed, will retry");
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}

/// `id`, or now if `id` is dated in the future: a commit from a writer whose
/// clock runs ahead must not move the relisting window (or the forgetting of
/// applied commits) past commits that are dated now, or they would never be
/// listed.
fn not_after_now(id: &BlockId) -> BlockId {
    let now = BlockId::new();
    if *id > now { now } else { id.clone() }
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn id(secs: u64) -> BlockId {
        BlockId::at(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn meta(id: &BlockId) -> BlockMeta {
        BlockMeta {
            id: id.clone(),
            min_time_unix_nano: 0,
            max_time_unix_nano: 1,
            min_trace_id: "00".into(),
            max_trace_id: "ff".into(),
            span_count: 1,
            size_bytes: 1,
            compaction_level: 0,
            sources: vec![],
            trace_count: 1,
            ingested_unix_nano: 0,
        }
    }

    fn storage() -> Storage {
        Storage::new(Arc::new(object_store::memory::InMemory::new()))
    }

    #[tokio::test]
    async fn a_commit_dated_in_the_future_hides_no_later_commit() {
        let storage = storage();
        let tenant = TenantId::new("t").unwrap();
        let future = BlockId::at(std::time::SystemTime::now() + Duration::from_secs(365 * 24 * 3600));
        let ahead = CommitRecord { id: future.clone(), added: vec![meta(&future)], removed: vec![] };
        storage.commit(&tenant, &ahead).await.unwrap();
        let catalog = Catalog::new(storage.clone(), Duration::from_secs(120));
        catalog.refresh().await.unwrap();
        assert!(catalog.is_live(&tenant, &future));
        // A writer with a correct clock commits after it.
        let now = BlockId::new();
        storage
            .commit(&tenant, &CommitRecord { id: BlockId::new(), added: vec![meta(&now)], removed: vec![] })
            .await
            .unwrap();
        catalog.refresh().await.unwrap();
        assert!(catalog.is_live(&tenant, &now), "the commit dated now is listed despite the future one");
    }

    /// A commit stored now whose id is dated `ago` (its writer's clock runs
    /// behind, or its put took that long).
    async fn late_commit(storage: &Storage, tenant: &TenantId, ago: Duration) -> BlockId {
        let id = BlockId::at(std::time::SystemTime::now() - ago);
        storage
            .commit(tenant, &CommitRecord { id: id.clone(), added: vec![meta(&id)], removed: vec![] })
            .await
            .unwrap();
        id
    }

    #[tokio::test]
    async fn a_full_listing_finds_a_commit_that_landed_after_the_lookback() {
        let storage = storage();
        let tenant = TenantId::new("t").unwrap();
        let now = BlockId::new();
        storage
            .commit(&tenant, &CommitRecord { id: now.clone(), added: vec![meta(&now)], removed: vec![] })
            .await
            .unwrap();
        let catalog = Catalog::new(storage.clone(), Duration::from_secs(120));
        catalog.refresh().await.unwrap();
        assert!(catalog.is_live(&tenant, &now));

        let behind = late_commit(&storage, &tenant, Duration::from_secs(600)).await;
        catalog.refresh().await.unwrap();
        assert!(!catalog.is_live(&tenant, &behind), "an incremental listing starts at the lookback");
        catalog.refresh_tenant(&tenant, Listing::Full).await.unwrap();
        assert!(catalog.is_live(&tenant, &behind), "a full listing reads it");
        assert_eq!(catalog.late_commits(), 1);
        // Found once: it is not read, nor counted, again.
        catalog.refresh_tenant(&tenant, Listing::Full).await.unwrap();
        assert_eq!(catalog.late_commits(), 1);

        // A reader starting from a checkpoint written after that listing finds
        // later late commits too.
        let checkpoint = catalog.checkpoint(&tenant, BlockId::new()).unwrap();
        assert!(checkpoint.listed_unix_nanos.is_some());
        storage.put_checkpoint(&tenant, &checkpoint).await.unwrap();
        let later = late_commit(&storage, &tenant, Duration::from_secs(3600)).await;
        let reader = Catalog::new(storage.clone(), Duration::from_secs(120));
        reader.refresh().await.unwrap();
        for id in [&now, &behind, &later] {
            assert!(reader.is_live(&tenant, id), "{id}");
        }
    }

    #[tokio::test]
    async fn a_reader_that_stopped_refreshing_starts_over_from_the_newest_checkpoint() {
        let storage = storage();
        let tenant = TenantId::new("t").unwrap();
        let lookback = Duration::from_millis(300);
        let first = late_commit(&storage, &tenant, Duration::ZERO).await;
        let reader = Catalog::new(storage.clone(), lookback);
        reader.refresh().await.unwrap();
        // While the reader is away: a merge retires `first`, a checkpoint
        // folds it in, and the merge's commit is deleted.
        let writer = Catalog::new(storage.clone(), lookback);
        writer.refresh().await.unwrap();
        let merged = BlockId::new();
        let merge = CommitRecord { id: BlockId::new(), added: vec![meta(&merged)], removed: vec![first.clone()] };
        storage.commit(&tenant, &merge).await.unwrap();
        writer.refresh().await.unwrap();
        storage.put_checkpoint(&tenant, &writer.checkpoint(&tenant, BlockId::new()).unwrap()).await.unwrap();
        storage.delete(&Storage::commit_path(&tenant, &merge.id)).await.unwrap();
        tokio::time::sleep(lookback * 2).await;
        // Its own ingester's commits still reached it (the commit hook), so
        // its newest commit is recent: only the time since its last refresh
        // tells it that it is behind.
        let own = late_commit(&storage, &tenant, Duration::ZERO).await;
        reader.apply(&tenant, &CommitRecord { id: own.clone(), added: vec![meta(&own)], removed: vec![] });
        reader.refresh().await.unwrap();
        assert!(reader.is_live(&tenant, &own));
        assert!(reader.is_live(&tenant, &merged), "the merged block, from the checkpoint");
        assert!(!reader.is_live(&tenant, &first), "the retired block is gone");
    }

    #[tokio::test]
    async fn refreshes_list_in_full_every_half_lookback() {
        let storage = storage();
        let tenant = TenantId::new("t").unwrap();
        let lookback = Duration::from_millis(400);
        let catalog = Catalog::new(storage.clone(), lookback);
        let first = late_commit(&storage, &tenant, Duration::ZERO).await;
        catalog.refresh().await.unwrap();
        assert!(catalog.is_live(&tenant, &first));
        let behind = late_commit(&storage, &tenant, Duration::from_secs(60)).await;
        tokio::time::sleep(lookback / 2).await;
        catalog.refresh().await.unwrap();
        assert!(catalog.is_live(&tenant, &behind));
        assert_eq!(catalog.late_commits(), 1);
    }

    #[test]
    fn commits_apply_in_any_order() {
        let (a, b, m) = (id(10), id(11), id(12));
        let add_a = CommitRecord { id: id(10), added: vec![meta(&a)], removed: vec![] };
        let add_b = CommitRecord { id: id(11), added: vec![meta(&b)], removed: vec![] };
        let merge = CommitRecord { id: id(20), added: vec![meta(&m)], removed: vec![a.clone(), b.clone()] };
        for order in [[&add_a, &add_b, &merge], [&merge, &add_b, &add_a], [&add_b, &merge, &add_a]] {
            let mut t = TenantBlocks::default();
            for record in order {
                t.apply(record);
                t.apply(record);
            }
            assert_eq!(t.live.keys().cloned().collect::<Vec<_>>(), vec![m.clone()]);
        }
    }

    #[tokio::test]
    async fn a_new_catalog_starts_from_the_newest_checkpoint() {
        let storage = storage();
        let tenant = TenantId::new("t").unwrap();
        let (a, b) = (id(100), id(101));
        let old = CommitRecord { id: id(100), added: vec![meta(&a)], removed: vec![] };
        storage.commit(&tenant, &old).await.unwrap();
        let writer = Catalog::new(storage.clone(), Duration::from_secs(5));
        writer.refresh().await.unwrap();
        let checkpoint = writer.checkpoint(&tenant, id(102)).unwrap();
        storage.put_checkpoint(&tenant, &checkpoint).await.unwrap();
        // The old commit is folded into the checkpoint and deleted; a new one follows.
        storage.delete(&Storage::commit_path(&tenant, &old.id)).await.unwrap();
        storage.commit(&tenant, &CommitRecord { id: id(103), added: vec![meta(&b)], removed: vec![] }).await.unwrap();

        let reader = Catalog::new(storage.clone(), Duration::from_secs(5));
        reader.refresh().await.unwrap();
        let live: Vec<BlockId> = reader.blocks(&tenant, |_| true).into_iter().map(|m| m.id).collect();
        assert_eq!(live, vec![a, b]);
    }

    #[tokio::test]
    async fn retired_blocks_are_forgotten_after_the_window() {
        let storage = storage();
        let tenant = TenantId::new("t").unwrap();
        let catalog = Catalog::remembering_removed(storage.clone(), Duration::from_secs(5), Duration::from_secs(60));
        let a = id(1000);
        catalog.apply(&tenant, &CommitRecord { id: id(1000), added: vec![meta(&a)], removed: vec![] });
        catalog.apply(&tenant, &CommitRecord { id: id(1001), added: vec![], removed: vec![a.clone()] });
        catalog.forget_old(&tenant);
        assert_eq!(catalog.removed(&tenant).len(), 1, "kept for remember_removed");
        catalog.apply(&tenant, &CommitRecord { id: id(1100), added: vec![], removed: vec![] });
        catalog.forget_old(&tenant);
        assert!(catalog.removed(&tenant).is_empty());
    }
}
