//! The object-store layout and the commit log.
//!
//! ```text
//! <root>/v1/<tenant>/blocks/<block id>.parquet    block data; invisible until committed
//! <root>/v1/<tenant>/commits/<commit id>.json     a CommitRecord: blocks added / removed
//! <root>/v1/<tenant>/checkpoints/<id>.json        the live set as of a commit (written by compactors)
//! <root>/v1/<tenant>/leases/<window>/<gen>.json   compaction leases (conditional creates)
//! ```
//!
//! A block is visible once a commit adds it and no commit removes it. The
//! Parquet file is durable before its commit record is written, and a commit
//! record is one atomic put, so a reader never sees a partial block, and a
//! compaction (add merged, remove sources) is atomic from a reader's view.
//! Commit ids sort by creation time, so a reader lists only what is new.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::block::{BlockId, BlockMeta};
use crate::tenant::TenantId;

/// Storage failures, named by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store request failed for {path}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("fsync of {path} failed")]
    Sync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("commit record {path} is not valid")]
    InvalidCommit {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// One entry of the commit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub id: BlockId,
    #[serde(default)]
    pub added: Vec<BlockMeta>,
    #[serde(default)]
    pub removed: Vec<BlockId>,
}

/// Called after a commit is durable (before an ingester acknowledges its
/// requests), so that a querier in the same process sees the change at once.
pub type CommitHook = Arc<dyn Fn(&TenantId, &CommitRecord) + Send + Sync>;

/// A snapshot of a tenant's catalog, so that a reader starting up need not
/// read the whole commit log (and old commits can be deleted).
///
/// It reflects every commit with an id up to `through` that its writer had
/// listed, plus `applied`: the commits in the relisting window that it has
/// already applied. `removed` names recently retired blocks with the commit
/// that retired them, so that a late-listed commit cannot bring them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: BlockId,
    pub through: BlockId,
    pub live: Vec<BlockMeta>,
    #[serde(default)]
    pub removed: Vec<(BlockId, BlockId)>,
    #[serde(default)]
    pub applied: Vec<BlockId>,
    /// When the full listing of the commit log this checkpoint reflects
    /// began (unix nanos): every commit stored before then is folded in.
    #[serde(default)]
    pub listed_unix_nanos: Option<i64>,
}

/// The object store plus what Spanlake needs on top of it: the layout,
/// durable puts (fsync on local disk) and the commit log.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Set when `store` is a local file system rooted here: puts are then
    /// followed by fsync of the file and its directories.
    local_root: Option<PathBuf>,
}

impl Storage {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, local_root: None }
    }

    /// A store on the local file system rooted at `root`, whose puts are fsynced.
    pub fn local(store: Arc<dyn ObjectStore>, root: PathBuf) -> Self {
        Self { store, local_root: Some(root) }
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn block_path(tenant: &TenantId, block: &BlockId) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "blocks", &format!("{block}.parquet")])
    }

    pub fn commits_prefix(tenant: &TenantId) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "commits"])
    }

    pub fn commit_path(tenant: &TenantId, commit: &BlockId) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "commits", &format!("{commit}.json")])
    }

    pub fn blocks_prefix(tenant: &TenantId) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "blocks"])
    }

    pub fn checkpoints_prefix(tenant: &TenantId) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "checkpoints"])
    }

    pub fn checkpoint_path(tenant: &TenantId, id: &BlockId) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "checkpoints", &format!("{id}.json")])
    }

    /// Where the leases of one unit of compaction work live.
    pub fn leases_prefix(tenant: &TenantId, key: &str) -> Path {
        Path::from_iter(["v1", tenant.as_str(), "leases", key])
    }

    /// Puts `bytes` at `path` and returns once they are durable: on local disk
    /// the file and every directory up to the root are fsynced.
    pub async fn put_durable(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.store
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|source| StorageError::ObjectStore { path: path.to_string(), source })?;
        self.sync(path).await
    }

    /// Makes an object written by other means (a multipart upload) durable.
    pub async fn sync(&self, path: &Path) -> Result<()> {
        if let Some(root) = &self.local_root {
            let root = root.clone();
            let relative = path.to_string();
            tokio::task::spawn_blocking(move || fsync_path(&root, &relative)).await.expect("fsync task panicked")?;
        }
        Ok(())
    }

    /// Creates `path` only if nothing is there: `Ok(false)` when it already
    /// exists. Needs a store that honours conditional creates (see
    /// `spanlake_compactor`'s start-up probe).
    pub async fn create_durable(&self, path: &Path, bytes: Bytes) -> Result<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(path, PutPayload::from_bytes(bytes), opts).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                return Ok(false);
            }
            Err(source) => return Err(StorageError::ObjectStore { path: path.to_string(), source }),
        }
        self.sync(path).await?;
        Ok(true)
    }

    /// Reads a whole object; `Ok(None)` when it does not exist.
    pub async fn get_if_exists(&self, path: &Path) -> Result<Option<Bytes>> {
        let fail = |source| StorageError::ObjectStore { path: path.to_string(), source };
        match self.store.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(fail)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(fail(source)),
        }
    }

    /// Deletes `path`; deleting what is already gone succeeds.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::ObjectStore { path: path.to_string(), source }),
        }
    }

    /// Every object under `prefix`, in path order.
    pub async fn list_all(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        let mut objects: Vec<ObjectMeta> = self
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|source| StorageError::ObjectStore { path: prefix.to_string(), source })?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// Writes a checkpoint durably.
    pub async fn put_checkpoint(&self, tenant: &TenantId, checkpoint: &Checkpoint) -> Result<()> {
        let bytes = serde_json::to_vec(checkpoint).expect("checkpoints serialize");
        self.put_durable(&Self::checkpoint_path(tenant, &checkpoint.id), bytes.into()).await
    }

    /// A checkpoint, or `None` if it is gone.
    pub async fn read_checkpoint(&self, path: &Path) -> Result<Option<Checkpoint>> {
        let Some(bytes) = self.get_if_exists(path).await? else { return Ok(None) };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StorageError::InvalidCommit { path: path.to_string(), source })
    }

    /// The newest checkpoint of `tenant`, if any (one that vanishes while
    /// being read was superseded: the next newest is tried).
    pub async fn newest_checkpoint(&self, tenant: &TenantId) -> Result<Option<Checkpoint>> {
        Ok(self.newest_readable_checkpoint(tenant).await?.0)
    }

    /// Like [`Storage::newest_checkpoint`], skipping checkpoints that do not
    /// parse (logged); also returns how many were skipped.
    pub async fn newest_readable_checkpoint(&self, tenant: &TenantId) -> Result<(Option<Checkpoint>, u64)> {
        let objects = self.list_all(&Self::checkpoints_prefix(tenant)).await?;
        let mut skipped = 0;
        for object in objects.iter().rev().filter(|o| o.location.extension() == Some("json")) {
            match self.read_checkpoint(&object.location).await {
                Ok(Some(checkpoint)) => return Ok((Some(checkpoint), skipped)),
                Ok(None) => {}
                Err(StorageError::InvalidCommit { path, source }) => {
                    tracing::warn!(%tenant, path, error = %source, "skipping an unreadable checkpoint");
                    skipped += 1;
                }
                Err(error) => return Err(error),
            }
        }
        Ok((None, skipped))
    }

    /// Uploads a block's Parquet file durably (not yet visible).
    pub async fn put_block(&self, tenant: &TenantId, meta: &BlockMeta, parquet: Bytes) -> Result<()> {
        self.put_durable(&Self::block_path(tenant, &meta.id), parquet).await
    }

    /// Writes a commit record durably: from now on its blocks are visible
    /// and its removals retired.
    pub async fn commit(&self, tenant: &TenantId, record: &CommitRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).expect("commit records serialize");
        self.put_durable(&Self::commit_path(tenant, &record.id), bytes.into()).await
    }

    /// Commit ids of `tenant` at or after `from` (a [`BlockId::lower_bound`]
    /// or an id), in id order. With `from = None`, the whole log.
    pub async fn list_commits(&self, tenant: &TenantId, from: Option<&str>) -> Result<Vec<Path>> {
        let prefix = Self::commits_prefix(tenant);
        let stream = match from {
            Some(from) => {
                let offset = Path::from_iter(["v1", tenant.as_str(), "commits", from]);
                self.store.list_with_offset(Some(&prefix), &offset)
            }
            None => self.store.list(Some(&prefix)),
        };
        let mut paths: Vec<Path> = stream
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|source| StorageError::ObjectStore { path: prefix.to_string(), source })?;
        paths.retain(|p| p.extension() == Some("json"));
        paths.sort();
        Ok(paths)
    }

    pub async fn read_commit(&self, path: &Path) -> Result<CommitRecord> {
        let bytes = self
            .store
            .get(path)
            .await
            .map_err(|source| StorageError::ObjectStore { path: path.to_string(), source })?
            .bytes()
            .await
            .map_err(|source| StorageError::ObjectStore { path: path.to_string(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| StorageError::InvalidCommit { path: path.to_string(), source })
    }

    /// Tenants that have stored anything.
    pub async fn list_tenants(&self) -> Result<Vec<TenantId>> {
        let prefix = Path::from("v1");
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|source| StorageError::ObjectStore { path: prefix.to_string(), source })?;
        Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().and_then(|t| TenantId::new(t).ok())).collect())
    }
}

/// The block, commit or checkpoint id a stored object's name carries
/// (`<id>.<extension>`), if it is one.
pub fn id_in(path: &Path, extension: &str) -> Option<BlockId> {
    path.filename()?.strip_suffix(extension)?.strip_suffix('.')?.parse().ok()
}

/// The id from which an incremental listing must restart so that commits
/// created up to `lookback` before the newest one seen are not missed (their
/// writers' clocks or uploads may lag).
pub fn relist_from(newest_seen: &BlockId, lookback: Duration) -> String {
    let nanos = newest_seen.created_unix_nanos();
    let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.saturating_sub(lookback.as_nanos()) as u64);
    BlockId::lower_bound(time)
}

/// fsyncs `root/relative` and each directory from its parent up to `root`,
/// so that the file's data and its directory entries survive a power cut.
fn fsync_path(root: &std::path::Path, relative: &str) -> Result<()> {
    let sync = |p: &std::path::Path| {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|source| StorageError::Sync { path: p.display().to_string(), source })
    };
    let file = root.join(relative);
    sync(&file)?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        sync(d)?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}
