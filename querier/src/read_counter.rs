//! The object store as query plans see it: every byte they read is counted
//! (`spanlake_querier_block_bytes_read`), so an operator sees what queries
//! cost the store, and what each querier of a spread query read.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use prometheus_client::metrics::counter::Counter;

/// Counts the bytes read through it; everything else passes through.
pub(crate) struct ReadCounter {
    inner: Arc<dyn ObjectStore>,
    bytes: Counter,
}

impl ReadCounter {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, bytes: Counter) -> Self {
        Self { inner, bytes }
    }
}

impl fmt::Debug for ReadCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCounter({})", self.inner)
    }
}

impl fmt::Display for ReadCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReadCounter({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for ReadCounter {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        if !head {
            self.bytes.inc_by(result.range.end - result.range.start);
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let parts = self.inner.get_ranges(location, ranges).await?;
        self.bytes.inc_by(parts.iter().map(|b| b.len() as u64).sum());
        Ok(parts)
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn counts_what_is_read_and_only_that() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let path = Path::from("a");
        store.put(&path, PutPayload::from_static(b"0123456789")).await.unwrap();
        let bytes = Counter::default();
        let counted = ReadCounter::new(store, bytes.clone());
        counted.get_range(&path, 2..5).await.unwrap();
        counted.get_ranges(&path, &[0..1, 8..10]).await.unwrap();
        counted.head(&path).await.unwrap();
        assert_eq!(bytes.get(), 3 + 1 + 2);
        counted.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes.get(), 6 + 10);
    }
}
