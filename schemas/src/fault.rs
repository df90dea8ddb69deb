//! A fault-injecting [`ObjectStore`] wrapper: writes (or all requests) fail or
//! stall on demand. Used by tests to prove backpressure and crash safety
//! against a real store underneath.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result, UploadPart,
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

/// A simulated crash: once `after` writes of kind `op` to paths containing
/// `pattern` have succeeded, every later request fails (as if the process
/// died right there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    pub pattern: String,
    pub op: WriteOp,
    pub after: u64,
}

/// The kind of write a [`Trip`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp {
    /// A put (or a completed multipart upload).
    Put,
    Delete,
}

#[derive(Debug, Default)]
struct State {
    /// Treat conditional puts as plain overwrites (as Garage 2.5 does).
    ignore_conditions: std::sync::atomic::AtomicBool,
    fault: AtomicU8,
    trip: Mutex<Option<(Trip, u64)>>,
    /// Writes to paths containing this fail, whatever the fault.
    fail_matching: Mutex<Option<String>>,
    /// Run once, right after the first listing of a prefix containing the
    /// pattern has been read to its end.
    after_listing: Mutex<Option<ListingHook>>,
}

struct ListingHook(String, AfterListing);

impl fmt::Debug for ListingHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListingHook({:?})", self.0)
    }
}

/// What [`FaultyStore::after_listing`] runs.
pub type AfterListing = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

impl State {
    fn fault(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            1 => Fault::FailWrites,
            2 => Fault::StallWrites,
            3 => Fault::FailAll,
            _ => Fault::None,
        }
    }

    /// Counts a successful write; trips the crash when its count is reached.
    fn wrote(&self, path: &str, op: WriteOp) {
        let mut trip = self.trip.lock().expect("trip lock");
        if let Some((t, count)) = trip.as_mut()
            && t.op == op
            && path.contains(&t.pattern)
        {
            *count += 1;
            if *count >= t.after {
                self.fault.store(Fault::FailAll as u8, Ordering::SeqCst);
                *trip = None;
            }
        }
    }

    async fn before_write(&self, path: &str) -> Result<()> {
        if self.fail_matching.lock().expect("pattern lock").as_deref().is_some_and(|p| path.contains(p)) {
            return Err(injected(path));
        }
        loop {
            match self.fault() {
                Fault::None => return Ok(()),
                Fault::FailWrites | Fault::FailAll => return Err(injected(path)),
                Fault::StallWrites => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn before_read(&self, path: &str) -> Result<()> {
        match self.fault() {
            Fault::FailAll => Err(injected(path)),
            _ => Ok(()),
        }
    }
}

fn injected(path: &str) -> object_store::Error {
    object_store::Error::Generic { store: "FaultyStore", source: format!("injected failure for {path}").into() }
}

/// Wraps a store and injects the current [`Fault`] (or a [`Trip`]).
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<State>,
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
        Arc::new(Self { inner, state: Arc::default() })
    }

    pub fn set(&self, fault: Fault) {
        self.state.fault.store(fault as u8, Ordering::SeqCst);
    }

    /// Makes conditional puts (`PutMode::Create`/`Update`) plain overwrites,
    /// like a store that ignores `If-None-Match` / `If-Match`.
    pub fn ignore_conditional_puts(&self, ignore: bool) {
        self.state.ignore_conditions.store(ignore, Ordering::SeqCst);
    }

    /// Makes writes to paths containing `pattern` fail (`None`: none).
    pub fn fail_writes_matching(&self, pattern: Option<&str>) {
        *self.state.fail_matching.lock().expect("pattern lock") = pattern.map(str::to_owned);
    }

    /// Runs `action` once, when the first listing of a prefix containing
    /// `pattern` has been read to its end (before its reader sees the end):
    /// something that happens while a reader is between two requests.
    pub fn after_listing(&self, pattern: &str, action: AfterListing) {
        *self.state.after_listing.lock().expect("hook lock") = Some(ListingHook(pattern.to_owned(), action));
    }

    /// Arms a simulated crash (see [`Trip`]).
    pub fn trip(&self, trip: Trip) {
        *self.state.trip.lock().expect("trip lock") = Some((trip, 0));
    }

    /// Whether a fault (or a tripped crash) is active.
    pub fn failing(&self) -> bool {
        self.state.fault() != Fault::None
    }
}

/// A multipart upload whose parts and completion see the store's faults.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    state: Arc<State>,
    path: String,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.state.fault() {
            Fault::None => self.inner.put_part(data),
            _ => {
                let error = injected(&self.path);
                Box::pin(async move { Err(error) })
            }
        }
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.state.before_write(&self.path).await?;
        let result = self.inner.complete().await?;
        self.state.wrote(&self.path, WriteOp::Put);
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, mut opts: PutOptions) -> Result<PutResult> {
        self.state.before_write(location.as_ref()).await?;
        if self.state.ignore_conditions.load(Ordering::SeqCst) {
            opts.mode = object_store::PutMode::Overwrite;
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        self.state.wrote(location.as_ref(), WriteOp::Put);
        Ok(result)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.state.before_write(location.as_ref()).await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload { inner, state: Arc::clone(&self.state), path: location.to_string() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.state.before_read(location.as_ref())?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let state = Arc::clone(&self.state);
        let inner = Arc::clone(&self.inner);
        // One at a time, so that a trip after n deletes stops the (n+1)th.
        locations
            .then(move |location| {
                let state = Arc::clone(&state);
                let inner = Arc::clone(&inner);
                async move {
                    let location = location?;
                    if state.fault() != Fault::None {
                        return Err(injected(location.as_ref()));
                    }
                    let single = futures::stream::once(async move { Ok(location) }).boxed();
                    let deleted = inner.delete_stream(single).next().await.expect("one result per location")?;
                    state.wrote(deleted.as_ref(), WriteOp::Delete);
                    Ok(deleted)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.map(|p| p.as_ref()).unwrap_or("");
        match self.state.before_read(path) {
            Ok(()) => {
                let listing = self.inner.list(prefix);
                let hook = {
                    let mut armed = self.state.after_listing.lock().expect("hook lock");
                    match &*armed {
                        Some(ListingHook(pattern, _)) if path.contains(pattern.as_str()) => {
                            armed.take().map(|ListingHook(_, action)| action)
                        }
                        _ => None,
                    }
                };
                match hook {
                    None => listing,
                    Some(action) => listing
                        .chain(futures::stream::once(async move { action().await }).filter_map(|()| async { None }))
                        .boxed(),
                }
            }
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.state.before_read(prefix.map(|p| p.as_ref()).unwrap_or("")) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.state.before_read(prefix.map(|p| p.as_ref()).unwrap_or(""))?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.state.before_write(to.as_ref()).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
