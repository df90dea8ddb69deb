//! A dedicated runtime for query execution, so that DataFusion's CPU work
//! never runs on (and never starves) the runtime serving OTLP ingest and HTTP.
//!
//! The runtime lives on its own thread and is shut down there when the
//! executor is dropped (a tokio runtime may not be dropped from async code).

use std::future::Future;
use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{QueryError, Result};

/// Stack size of query worker threads (virtual memory: only touched pages cost).
const QUERY_STACK_BYTES: usize = 32 << 20;
/// How long the runtime's thread waits for its blocking threads at shutdown.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct QueryExecutor {
    handle: Handle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl QueryExecutor {
    pub(crate) fn new(threads: usize) -> Self {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("spanlake-query".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("spanlake-query-worker")
                    // Deep plans (and DataFusion's own recursion) get room; user
                    // input is depth-limited before it gets here.
                    .thread_stack_size(QUERY_STACK_BYTES)
                    .enable_all()
                    .build()
                    .expect("query runtime starts");
                let _ = handle_tx.send(runtime.handle().clone());
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // Wait (here, off any async code) for the blocking pool's
                // threads (object_store reads files on them) rather than
                // detaching them: in the background shutdown this thread
                // once crashed in pthread_detach (kernel log, during a test).
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
            })
            .expect("query thread starts");
        let handle = handle_rx.recv().expect("query runtime handle");
        Self { handle, stop: Mutex::new(Some(stop_tx)), thread: Mutex::new(Some(thread)) }
    }

    /// Runs `work` on the query runtime and waits for its result. `work`
    /// enforces its own deadline (see `Querier::execute`); dropping the
    /// returned future aborts it, so a query stops when its client leaves.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let mut task = AbortOnDrop(self.handle.spawn(work));
        match (&mut task.0).await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "query task failed");
                Err(QueryError::Internal("query task failed"))
            }
        }
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().expect("executor lock").take() {
            let _ = stop.send(());
        }
        // The thread exits promptly; do not join from async code (it would block).
        let _ = self.thread.lock().expect("executor lock").take();
    }
}
