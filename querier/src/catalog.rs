//! The block catalog: which blocks of each tenant are live, kept in memory and
//! refreshed incrementally from the commit log.
//!
//! A refresh lists only commits created since the newest one seen, minus a
//! lookback that covers writers' clock skew and slow puts, so its cost does not
//! grow with history. Applying a commit is idempotent and order-independent:
//! live = blocks added − blocks removed, whichever commit is seen first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use spanlake_schemas::storage::{CommitRecord, StorageError, relist_from};
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId};
use tracing::{debug, warn};

#[derive(Debug, Default)]
struct TenantBlocks {
    live: BTreeMap<BlockId, BlockMeta>,
    removed: HashSet<BlockId>,
    /// Commits applied within the relisting window (older ones are forgotten).
    applied: BTreeSet<BlockId>,
}

impl TenantBlocks {
    fn apply(&mut self, record: &CommitRecord) {
        if !self.applied.insert(record.id.clone()) {
            return;
        }
        for id in &record.removed {
            self.live.remove(id);
            self.removed.insert(id.clone());
        }
        for meta in &record.added {
            if !self.removed.contains(&meta.id) {
                self.live.insert(meta.id.clone(), meta.clone());
            }
        }
    }

    fn newest_commit(&self) -> Option<&BlockId> {
        self.applied.last()
    }
}

/// The in-memory view of every tenant's live blocks.
#[derive(Debug)]
pub struct Catalog {
    storage: Storage,
    lookback: Duration,
    tenants: RwLock<HashMap<TenantId, TenantBlocks>>,
}

impl Catalog {
    /// `lookback`: how far before the newest seen commit a refresh relists.
    pub fn new(storage: Storage, lookback: Duration) -> Arc<Self> {
        Arc::new(Self { storage, lookback, tenants: RwLock::new(HashMap::new()) })
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

    /// Reads the commits that are new since the last refresh, for every tenant.
    pub async fn refresh(&self) -> Result<(), StorageError> {
        for tenant in self.storage.list_tenants().await? {
            self.refresh_tenant(&tenant).await?;
        }
        Ok(())
    }

    async fn refresh_tenant(&self, tenant: &TenantId) -> Result<(), StorageError> {
        let from = {
            let tenants = self.tenants.read().expect("catalog lock");
            tenants.get(tenant).and_then(|t| t.newest_commit()).map(|id| relist_from(id, self.lookback))
        };
        let paths = self.storage.list_commits(tenant, from.as_deref()).await?;
        let mut fresh = Vec::new();
        {
            let tenants = self.tenants.read().expect("catalog lock");
            let applied = tenants.get(tenant).map(|t| &t.applied);
            for path in paths {
                let Some(id) =
                    path.filename().and_then(|f| f.strip_suffix(".json")).and_then(|s| s.parse::<BlockId>().ok())
                else {
                    continue;
                };
                if !applied.is_some_and(|a| a.contains(&id)) {
                    fresh.push(path);
                }
            }
        }
        for path in fresh {
            match self.storage.read_commit(&path).await {
                Ok(record) => self.apply(tenant, &record),
                // A commit that vanished was compacted away; its successor says what is live.
                Err(StorageError::ObjectStore { source: object_store::Error::NotFound { .. }, .. }) => {}
                Err(error) => return Err(error),
            }
        }
        self.forget_old_commits(tenant);
        debug!(%tenant, "catalog refreshed");
        Ok(())
    }

    /// Drops applied-commit ids older than twice the lookback, so memory stays
    /// bounded; they can no longer be relisted.
    fn forget_old_commits(&self, tenant: &TenantId) {
        let mut tenants = self.tenants.write().expect("catalog lock");
        if let Some(t) = tenants.get_mut(tenant)
            && let Some(newest) = t.newest_commit().cloned()
        {
            let keep_from = relist_from(&newest, self.lookback * 2);
            t.applied = t.applied.split_off(&BlockId::from_lower_bound(&keep_from));
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
