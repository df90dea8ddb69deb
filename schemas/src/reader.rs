//! Reading block Parquet files from the object store.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::{BlockMeta, Storage, TenantId};

/// An [`AsyncFileReader`] over one object; its size is known from the block
/// metadata, so the footer is fetched in a single ranged read. The page index
/// is loaded when the reader options ask for it.
#[derive(Debug, Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectReader {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        Self { store, path, size }
    }

    /// The reader of a block of `tenant`.
    pub fn block(storage: &Storage, tenant: &TenantId, meta: &BlockMeta) -> Self {
        Self::new(Arc::clone(storage.object_store()), Storage::block_path(tenant, &meta.id), meta.size_bytes)
    }
}

/// Whether reading a block failed because its object does not exist.
pub fn is_not_found(error: &ParquetError) -> bool {
    matches!(error, ParquetError::External(e) if matches!(e.downcast_ref::<object_store::Error>(), Some(object_store::Error::NotFound { .. })))
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(external) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(external) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let (column_index, offset_index) = options.map_or((PageIndexPolicy::Skip, PageIndexPolicy::Skip), |o| {
                (o.column_index_policy(), o.offset_index_policy())
            });
            let reader = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_column_index_policy(column_index)
                .with_offset_index_policy(offset_index)
                .with_prefetch_hint(Some(64 * 1024));
            let size = self.size;
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}
