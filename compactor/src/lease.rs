//! Leases: how several compactors split the work without a coordination
//! service, using only the object store's conditional create.
//!
//! A lease on a unit of work (a tenant's time window, or its checkpoint) is a
//! sequence of generations, `leases/<key>/<generation>.json`, each created with
//! `PutMode::Create` so that exactly one writer can create a given generation.
//! The newest generation says who holds the lease and until when. A compactor
//! takes a free, released or expired lease by creating the next generation;
//! it renews (and, right before committing, proves it still holds) the lease
//! the same way. A compactor that dies mid-job stops renewing; once the lease
//! expires the next compactor takes the work over.
//!
//! Safety: after a holder's last renewal, nobody can take the lease for a full
//! TTL, and the holder commits right after renewing; the taker refreshes its
//! catalog after taking the lease, so it sees that commit and never merges
//! the same blocks again.
//!
//! Stores that ignore conditional creates (Garage 2.5) fail [`probe`]; on
//! them no lease is ever trusted (see [`crate::Config::shard`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use spanlake_schemas::storage::StorageError;
use spanlake_schemas::{BlockId, Storage, TenantId};

use crate::clock::Clock;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Generation {
    owner: String,
    /// Unix nanoseconds after which another compactor may take over.
    expires_unix_nano: i64,
    /// Set when the holder finished: the next taker need not wait.
    #[serde(default)]
    released: bool,
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    prefix: Path,
    generation: u64,
}

/// Takes, renews and releases leases for one compactor process.
#[derive(Debug, Clone)]
pub struct Leases {
    storage: Storage,
    owner: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

fn generation_path(prefix: &Path, generation: u64) -> Path {
    Path::from(format!("{prefix}/{generation:020}.json"))
}

impl Leases {
    /// `owner` names this process in lease records (unique per process).
    pub fn new(storage: Storage, owner: String, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self { storage, owner, ttl, clock }
    }

    fn record(&self, released: bool) -> Bytes {
        let record = Generation {
            owner: self.owner.clone(),
            expires_unix_nano: self.clock.now_unix_nanos().saturating_add(self.ttl.as_nanos() as i64),
            released,
        };
        serde_json::to_vec(&record).expect("lease records serialize").into()
    }

    /// Takes the lease on `key` of `tenant` if it is free, released or
    /// expired; `None` when another compactor holds it (or won the race).
    pub async fn acquire(&self, tenant: &TenantId, key: &str) -> Result<Option<Lease>, StorageError> {
        let prefix = Storage::leases_prefix(tenant, key);
        let generations = self.storage.list_all(&prefix).await?;
        let newest = generations.iter().filter_map(|o| generation_of(&o.location)).max();
        let next = match newest {
            None => 1,
            Some(generation) => {
                let Some(bytes) = self.storage.get_if_exists(&generation_path(&prefix, generation)).await? else {
                    return Ok(None); // being cleaned up by its holder: busy
                };
                let record: Generation = match serde_json::from_slice(&bytes) {
                    Ok(record) => record,
                    Err(_) => Generation { owner: String::new(), expires_unix_nano: 0, released: true },
                };
                let free = record.released
                    || record.owner == self.owner
                    || record.expires_unix_nano < self.clock.now_unix_nanos();
                if !free {
                    return Ok(None);
                }
                generation + 1
            }
        };
        if self.storage.create_durable(&generation_path(&prefix, next), self.record(false)).await? {
            Ok(Some(Lease { prefix, generation: next }))
        } else {
            Ok(None)
        }
    }

    /// Extends the lease by a TTL from now; `false` means it was lost (another
    /// compactor took it over) and the holder must stop without committing.
    pub async fn renew(&self, lease: &mut Lease) -> Result<bool, StorageError> {
        let next = lease.generation + 1;
        if self.storage.create_durable(&generation_path(&lease.prefix, next), self.record(false)).await? {
            self.storage.delete(&generation_path(&lease.prefix, lease.generation)).await?;
            lease.generation = next;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Marks the work done so another compactor can take it at once.
    pub async fn release(&self, lease: Lease) -> Result<(), StorageError> {
        let next = lease.generation + 1;
        if self.storage.create_durable(&generation_path(&lease.prefix, next), self.record(true)).await? {
            self.storage.delete(&generation_path(&lease.prefix, lease.generation)).await?;
        }
        Ok(())
    }
}

fn generation_of(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// Whether the store honours conditional creates: a second create of the
/// same object must fail. Leases are built only on stores that pass.
pub async fn probe(storage: &Storage) -> Result<bool, StorageError> {
    let path = Path::from_iter(["_spanlake", "probe", &format!("{}.json", BlockId::new())]);
    let first = storage.create_durable(&path, Bytes::from_static(b"1")).await?;
    let second = storage.create_durable(&path, Bytes::from_static(b"2")).await?;
    let kept_first = storage.get_if_exists(&path).await?.as_deref() == Some(b"1".as_slice());
    storage.delete(&path).await?;
    Ok(first && !second && kept_first)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn one_holder_at_a_time_and_takeover_after_expiry() {
        let storage = Storage::new(Arc::new(object_store::memory::InMemory::new()));
        assert!(probe(&storage).await.unwrap());
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let a = Leases::new(storage.clone(), "a".into(), Duration::from_secs(60), clock.clone());
        let b = Leases::new(storage.clone(), "b".into(), Duration::from_secs(60), clock.clone());
        let tenant = TenantId::new("t").unwrap();

        let mut held = a.acquire(&tenant, "w1").await.unwrap().expect("free lease");
        assert!(b.acquire(&tenant, "w1").await.unwrap().is_none(), "held by a");
        assert!(b.acquire(&tenant, "w2").await.unwrap().is_some(), "other keys are free");
        clock.advance(Duration::from_secs(50));
        assert!(a.renew(&mut held).await.unwrap());
        clock.advance(Duration::from_secs(50));
        assert!(b.acquire(&tenant, "w1").await.unwrap().is_none(), "renewed, not expired");
        clock.advance(Duration::from_secs(11));
        let taken = b.acquire(&tenant, "w1").await.unwrap().expect("expired lease is taken over");
        assert!(!a.renew(&mut held).await.unwrap(), "the old holder learns it lost the lease");
        b.release(taken).await.unwrap();
        assert!(a.acquire(&tenant, "w1").await.unwrap().is_some(), "released lease is free at once");
    }

    #[tokio::test]
    async fn a_store_ignoring_conditional_writes_fails_the_probe() {
        let store = spanlake_schemas::fault::FaultyStore::new(Arc::new(object_store::memory::InMemory::new()));
        store.ignore_conditional_puts(true);
        let storage = Storage::new(store.clone());
        assert!(!probe(&storage).await.unwrap(), "Garage-like store must not be trusted with leases");
        let mut registry = prometheus_client::registry::Registry::default();
        let compactor = crate::Compactor::new(crate::Config::default(), storage, None, &mut registry).await.unwrap();
        assert!(!compactor.uses_leases());
        store.ignore_conditional_puts(false);
    }
}
