//! # spanlake-querier
//!
//! Answers queries over the blocks in object storage.
//!
//! ```text
//!  commit log ──(incremental refresh, or commits from the local ingester)──▶ Catalog
//!                                                                            │ live blocks per tenant
//!  HTTP :3200  GET /api/traces/<id>, /api/v2/traces/<id>  ─▶ trace_by_id ────┘
//!                   prune: catalog trace-id range → row-group stats → bloom filter → row filter
//!  GET /api/search (TraceQL), tags, POST /api/sql ─▶ DataFusion over SpansTable (+ views)
//!  GET /api/metrics/query_range, /query (TraceQL metrics) ─▶ traceql_metrics: one aggregate → series
//!  GET /api/fanout ─▶ fanout: blocks merged in trace order → per-trace parents → exact percentiles
//! ```
//!
//! Invariants: a tenant only ever reads blocks under its own prefix; a span
//! present in several blocks is answered once.

mod api;
mod block_cache;
mod blocks;
mod dedup;
mod distributed;
mod error;
mod executor;
pub mod fanout;
mod memory;
mod metrics;
mod page_index;
pub mod pg;
mod prune_hint;
mod read_counter;
mod search;
mod sql;
mod start_window;
mod strings;
mod table;
mod tags;
pub mod tempo_json;
mod trace_by_id;
mod trace_index;
pub mod traceql;
mod traceql_metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use spanlake_schemas::Storage;
use tokio::sync::OwnedSemaphorePermit;

pub use distributed::{ClusterConfig, check_peer};
pub use error::QueryError;
pub use spanlake_schemas::Catalog;
pub use sql::{SqlAnswer, SqlFormat};
pub use trace_by_id::parse_trace_id;

/// Querier configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Take the tenant from `X-Scope-OrgID` (else everything is `single-tenant`).
    pub multi_tenant: bool,
    /// How often the catalog lists new commits (other processes' blocks).
    pub refresh_interval: Duration,
    /// How far back a refresh relists, to tolerate writers' clock skew.
    pub commit_lookback: Duration,
    /// Largest trace answered in full (v1: 422 beyond it; v2: partial).
    pub max_trace_bytes: usize,
    /// Longest any query may run (408 beyond it).
    pub query_timeout: Duration,
    /// Most memory an SQL query may use (sorts, joins, aggregations).
    pub sql_memory_limit: usize,
    /// Most queries running at once; more get 429.
    pub max_concurrent_queries: usize,
    /// Most block bytes a tag request reads when summaries cannot answer it.
    pub max_tag_scan_bytes: usize,
    /// Prune blocks, row groups and pages (off only to measure what it buys).
    pub pruning: bool,
    /// Metrics windows of more spans take their exemplars from a sample of
    /// the traces (see `traceql_metrics::sample`), not from every span.
    pub exemplar_sample_spans: u64,
    /// Other queriers that large queries spread over.
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            multi_tenant: false,
            refresh_interval: Duration::from_secs(5),
            commit_lookback: Duration::from_secs(120),
            max_trace_bytes: 50 << 20,
            query_timeout: Duration::from_secs(30),
            sql_memory_limit: 1 << 30,
            max_concurrent_queries: 16,
            max_tag_scan_bytes: 256 << 20,
            pruning: true,
            exemplar_sample_spans: 1_000_000,
            cluster: ClusterConfig { peers: Vec::new(), min_bytes: 64 << 20, secret: None, lz4: false },
        }
    }
}

/// A querier: catalog plus HTTP API.
#[derive(Debug)]
pub struct Querier {
    config: Config,
    storage: Storage,
    catalog: Arc<Catalog>,
    /// Admission: one permit per running query.
    running: Arc<tokio::sync::Semaphore>,
    /// Where DataFusion plans run.
    executor: executor::QueryExecutor,
    /// Opens blocks for the read paths (footers cached, schemas checked).
    blocks: blocks::SharedBlocks,
    /// Parsed footers of blocks, for DataFusion scans (shared by all queries).
    file_metadata: Arc<datafusion::execution::cache::cache_manager::FileMetadataCache>,
    metrics: Arc<metrics::Metrics>,
    /// Queriers that large queries spread over (None: all run here).
    peers: Option<distributed::Peers>,
}

impl Querier {
    /// Marks an answer partial (skipped blocks): its message in a header,
    /// and the partial-queries metric.
    pub(crate) fn mark_partial(
        &self,
        endpoint: &'static str,
        partial: &blocks::Partial,
        response: &mut axum::response::Response,
    ) {
        let Some(message) = partial.message() else { return };
        self.metrics.answered_partial(endpoint);
        let printable: String =
            message.chars().map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { ' ' }).collect();
        if let Ok(value) = axum::http::HeaderValue::from_str(&printable) {
            response.headers_mut().insert(blocks::PARTIAL_HEADER, value);
        }
    }

    /// A querier over `storage`; its metrics go into `registry`.
    pub fn new(config: Config, storage: Storage, registry: &mut Registry) -> Arc<Self> {
        let catalog = Catalog::new(storage.clone(), config.commit_lookback);
        let running = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_queries.max(1)));
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let executor = executor::QueryExecutor::new(threads);
        let metrics = Arc::new(metrics::Metrics::new(registry));
        registry.register_collector(Box::new(metrics::CatalogCollector(Arc::clone(&catalog))));
        // Footers weigh their bytes (row-group metadata and offset index grow
        // with a block's size): 256 MiB of them, as DataFusion's own metadata cache.
        let footers = block_cache::FooterCache::new(256 << 20);
        let blocks =
            Arc::new(blocks::Blocks::new(storage.clone(), footers, Arc::clone(&metrics), config.commit_lookback));
        let file_metadata = Arc::new(datafusion::execution::cache::default_cache::DefaultCache::<
            object_store::path::Path,
            datafusion::execution::cache::cache_manager::CachedFileMetadataEntry,
        >::new(256 << 20));
        let peers = (!config.cluster.peers.is_empty())
            .then(|| distributed::Peers::new(config.cluster.peers.clone(), metrics.peers_live.clone()));
        Arc::new(Self { config, storage, catalog, running, executor, blocks, file_metadata, metrics, peers })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Loads the catalog once, then keeps refreshing it in the background.
    pub async fn start_refresh(&self) -> Result<tokio::task::JoinHandle<()>, spanlake_schemas::storage::StorageError> {
        self.catalog.refresh().await?;
        Ok(self.catalog.spawn_refresh(self.config.refresh_interval))
    }

    /// Probes the peers once, then keeps probing them in the background,
    /// as often as the catalog refreshes (None without peers).
    pub async fn start_peer_refresh(&self) -> Option<tokio::task::JoinHandle<()>> {
        let peers = self.peers.as_ref()?;
        peers.refresh().await;
        Some(peers.spawn_refresh(self.config.refresh_interval))
    }

    /// Admits one more query, or refuses with 429 when the querier is saturated.
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, QueryError> {
        Arc::clone(&self.running).try_acquire_owned().map_err(|_| {
            self.metrics.refused.inc();
            QueryError::Saturated { limit: self.config.max_concurrent_queries }
        })
    }

    /// The one way every query runs: on the query runtime, with `permit`
    /// (its admission slot) held by the running task, under `query_timeout`
    /// (408). Dropping the returned future (the client went away) aborts the
    /// work and frees its slot.
    pub(crate) async fn execute<T, F, Fut>(
        self: &Arc<Self>,
        endpoint: &'static str,
        permit: OwnedSemaphorePermit,
        work: F,
    ) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T, QueryError>> + Send + 'static,
    {
        // The permit and the timer live in the task: a slot is free, and the
        // query counts as stopped, only once the work really has stopped.
        let mut timer = metrics::Metrics::start(&self.metrics, endpoint);
        let work = work(Arc::clone(self));
        let limit = self.config.query_timeout;
        self.executor
            .run(async move {
                let _permit = permit;
                let deadline = std::time::Instant::now() + limit;
                // Strict: an answer that comes after the deadline is a timeout too.
                let result = match tokio::time::timeout(limit, work).await {
                    Ok(result) if std::time::Instant::now() < deadline => result,
                    _ => Err(QueryError::Timeout { limit }),
                };
                timer.finish(&result);
                result
            })
            .await
    }

    /// The HTTP API routes.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(Arc::clone(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_saturated_querier_answers_429() {
        let storage = Storage::new(Arc::new(object_store::memory::InMemory::new()));
        let config = Config { max_concurrent_queries: 2, ..Config::default() };
        let querier = Querier::new(config, storage, &mut Registry::default());
        let first = querier.admit().unwrap();
        let _second = querier.admit().unwrap();
        let refused = querier.admit().unwrap_err();
        assert_eq!(refused.http_status(), 429);
        assert!(refused.to_string().contains("saturated"));
        drop(first);
        assert!(querier.admit().is_ok(), "a finished query frees its slot");
    }
}
