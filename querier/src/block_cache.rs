//! Per-block values kept in memory: parsed Parquet footers, and the tag
//! summaries in them. Blocks are immutable, so a value read once serves
//! every later lookup. Bounded by entry count; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::PageIndexPolicy;
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId};

/// Values by block (or by a key naming a part of a block), weighing at
/// most `capacity` in all (each counts 1 unless inserted with a weight), the
/// oldest inserted out first.
#[derive(Debug)]
pub(crate) struct BlockValues<V, K = BlockId> {
    capacity: usize,
    entries: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    map: HashMap<K, (V, usize)>,
    order: VecDeque<K>,
    weight: usize,
}

impl<V: Clone, K: Clone + Eq + std::hash::Hash> BlockValues<V, K> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(Entries { map: HashMap::new(), order: VecDeque::new(), weight: 0 }) }
    }

    pub(crate) fn get(&self, block: &K) -> Option<V> {
        self.entries.lock().expect("cache lock").map.get(block).map(|(value, _)| value.clone())
    }

    pub(crate) fn insert(&self, block: &K, value: V) {
        self.insert_weighing(block, value, 1);
    }

    /// Inserts a value that weighs `weight` (e.g. its bytes).
    pub(crate) fn insert_weighing(&self, block: &K, value: V, weight: usize) {
        let mut entries = self.entries.lock().expect("cache lock");
        let entries = &mut *entries;
        match entries.map.insert(block.clone(), (value, weight)) {
            Some((_, old)) => entries.weight -= old,
            None => entries.order.push_back(block.clone()),
        }
        entries.weight += weight;
        while entries.weight > self.capacity {
            let Some(oldest) = entries.order.pop_front() else { break };
            if let Some((_, weight)) = entries.map.remove(&oldest) {
                entries.weight -= weight;
            }
        }
    }
}

/// Parsed Parquet footers of blocks.
#[derive(Debug)]
pub(crate) struct FooterCache(BlockValues<ArrowReaderMetadata>);

impl FooterCache {
    /// A cache of at most `capacity` bytes of footers.
    pub(crate) fn new(capacity: usize) -> Self {
        Self(BlockValues::new(capacity))
    }

    /// The block's footer, read on first use.
    pub(crate) async fn get(
        &self,
        storage: &Storage,
        tenant: &TenantId,
        meta: &BlockMeta,
    ) -> parquet::errors::Result<ArrowReaderMetadata> {
        if let Some(found) = self.0.get(&meta.id) {
            return Ok(found);
        }
        let mut reader = ObjectReader::block(storage, tenant, meta);
        // The offset index (where each page starts) lets a read of a few
        // rows fetch only their pages: the fan-out's merge of split traces
        // opens every block for a few rows each. The column index (each
        // page's min and max) tells how much of a block a filter reads,
        // which decides whether a query spreads over queriers.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let loaded = ArrowReaderMetadata::load_async(&mut reader, options).await?;
        self.0.insert_weighing(&meta.id, loaded.clone(), loaded.metadata().memory_size());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_values_go_first_once_the_weight_passes_the_capacity() {
        let cache: BlockValues<&str> = BlockValues::new(10);
        let ids: Vec<BlockId> = (0..4).map(|i| BlockId::from_lower_bound(&format!("{i:020}"))).collect();
        cache.insert_weighing(&ids[0], "a", 4);
        cache.insert_weighing(&ids[1], "b", 4);
        assert_eq!((cache.get(&ids[0]), cache.get(&ids[1])), (Some("a"), Some("b")));
        cache.insert_weighing(&ids[2], "c", 4);
        assert_eq!(cache.get(&ids[0]), None, "12 > 10: the oldest left");
        assert_eq!((cache.get(&ids[1]), cache.get(&ids[2])), (Some("b"), Some("c")));
        // Replacing a value counts its new weight only.
        cache.insert_weighing(&ids[2], "c", 6);
        assert_eq!((cache.get(&ids[1]), cache.get(&ids[2])), (Some("b"), Some("c")));
        cache.insert(&ids[3], "d");
        assert_eq!(cache.get(&ids[1]), None);
        assert_eq!((cache.get(&ids[2]), cache.get(&ids[3])), (Some("c"), Some("d")));
    }
}
