//! Per-block values kept in memory: parsed Parquet footers, and the tag
//! summaries in them. Blocks are immutable, so a value read once serves
//! every later lookup. Bounded by entry count; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId};

/// Values by block, at most `capacity`, the oldest inserted out first.
#[derive(Debug)]
pub(crate) struct BlockValues<V> {
    capacity: usize,
    entries: Mutex<(HashMap<BlockId, V>, VecDeque<BlockId>)>,
}

impl<V: Clone> BlockValues<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    pub(crate) fn get(&self, block: &BlockId) -> Option<V> {
        self.entries.lock().expect("cache lock").0.get(block).cloned()
    }

    pub(crate) fn insert(&self, block: &BlockId, value: V) {
        let mut entries = self.entries.lock().expect("cache lock");
        let (map, order) = &mut *entries;
        if map.insert(block.clone(), value).is_none() {
            order.push_back(block.clone());
        }
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }
}

/// Parsed Parquet footers of blocks.
#[derive(Debug)]
pub(crate) struct FooterCache(BlockValues<ArrowReaderMetadata>);

impl FooterCache {
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
        let loaded = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?;
        self.0.insert(&meta.id, loaded.clone());
        Ok(loaded)
    }
}
