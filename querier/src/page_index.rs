//! Parquet readers for DataFusion's scans that always hand out a block's
//! metadata with its page index, from the querier's metadata cache.
//!
//! DataFusion 55's opener asks for a file's metadata without the page index,
//! then, where page pruning needs the index, loads it straight from the
//! file, and that copy does not go back into the cache. Every byte range
//! of a block (a compacted block is read in several, by several partitions
//! or queriers) then re-read the whole block's page index. With this
//! reader, `cargo bench --bench spread` (10M spans, BENCHMARKS.md) read 2 MB
//! instead of 14 MB for errors by service over compacted blocks. Asking for
//! the index up front loads it once per block and caches it with the
//! footer; the opener then finds it there.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{CachedParquetFileReaderFactory, ParquetFileReaderFactory};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use crate::table::STORE_URL;

/// Creates [`WithPageIndexReader`]s over the runtime's store and cache.
#[derive(Debug)]
pub(crate) struct WithPageIndex(CachedParquetFileReaderFactory);

impl WithPageIndex {
    /// Readers of the blocks registered in `runtime` (its store at
    /// [`STORE_URL`], its file metadata cache).
    pub(crate) fn new(runtime: &RuntimeEnv) -> Result<Arc<Self>> {
        let store = runtime.object_store(ObjectStoreUrl::parse(STORE_URL)?)?;
        let cache = runtime.cache_manager.get_file_metadata_cache();
        Ok(Arc::new(Self(CachedParquetFileReaderFactory::new(store, cache))))
    }
}

impl ParquetFileReaderFactory for WithPageIndex {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let inner = self.0.create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(WithPageIndexReader(inner)))
    }
}

/// A reader whose metadata always holds the page index.
struct WithPageIndexReader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for WithPageIndexReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let options = options.cloned().unwrap_or_default().with_page_index_policy(PageIndexPolicy::Optional);
        async move { self.0.get_metadata(Some(&options)).await }.boxed()
    }
}
