//! Parsed Parquet footers of blocks, kept in memory: blocks are immutable, so
//! a footer read once serves every later lookup. Bounded by entry count;
//! the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use spanlake_schemas::reader::ObjectReader;
use spanlake_schemas::{BlockId, BlockMeta, Storage, TenantId};

#[derive(Debug)]
pub(crate) struct FooterCache {
    capacity: usize,
    entries: Mutex<(HashMap<BlockId, ArrowReaderMetadata>, VecDeque<BlockId>)>,
}

impl FooterCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// The block's footer, read on first use.
    pub(crate) async fn get(
        &self,
        storage: &Storage,
        tenant: &TenantId,
        meta: &BlockMeta,
    ) -> parquet::errors::Result<ArrowReaderMetadata> {
        if let Some(found) = self.entries.lock().expect("cache lock").0.get(&meta.id) {
            return Ok(found.clone());
        }
        let mut reader = ObjectReader::block(storage, tenant, meta);
        let loaded = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?;
        let mut entries = self.entries.lock().expect("cache lock");
        let (map, order) = &mut *entries;
        if map.insert(meta.id.clone(), loaded.clone()).is_none() {
            order.push_back(meta.id.clone());
        }
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
        Ok(loaded)
    }
}
