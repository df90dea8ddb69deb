//! A fault-injecting [`ObjectStore`] wrapper: writes (or all requests) fail or
//! stall on demand. Used by tests to prove backpressure and crash safety
//! against a real store underneath.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// What the wrapper does to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Pass everything through.
    None = 0,
    /// Writes (put, copy, delete) fail at once.
    FailWrites = 1,
    /// Writes hang until the fault is cleared.
    StallWrites = 2,
    /// Every request fails.
    FailAll = 3,
}

/// Wraps a store and injects the current [`Fault`].
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fault: AtomicU8,
    writes: AtomicU64,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self { inner, fault: AtomicU8::new(0), writes: AtomicU64::new(0) })
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    fn fault(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::FailWrites,
            2 => Fault::StallWrites,
            3 => Fault::FailAll,
            _ => Fault::None,
        }
    }

    /// Successful writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    fn injected(path: &str) -> object_store::Error {
        object_store::Error::Generic { store: "FaultyStore", source: format!("injected failure for {path}").into() }
    }

    async fn before_write(&self, path: &Path) -> Result<()> {
        loop {
            match self.fault() {
                Fault::None => return Ok(()),
                Fault::FailWrites | Fault::FailAll => return Err(Self::injected(path.as_ref())),
                Fault::StallWrites => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn before_read(&self, path: &str) -> Result<()> {
        match self.fault() {
            Fault::FailAll => Err(Self::injected(path)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.before_write(location).await?;
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.before_write(location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before_read(location.as_ref())?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        match self.fault() {
            Fault::None => self.inner.delete_stream(locations),
            _ => locations.map(|p| Err(Self::injected(p?.as_ref()))).boxed(),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.before_read(prefix.map(|p| p.as_ref()).unwrap_or("")) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.before_read(prefix.map(|p| p.as_ref()).unwrap_or("")) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before_read(prefix.map(|p| p.as_ref()).unwrap_or(""))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before_write(to).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
