//! Prometheus metrics of the querier: latency by endpoint, outcomes (ok,
//! refused, timed out, cancelled, failed), and queries running.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::QueryError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabel {
    pub(crate) endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub(crate) endpoint: &'static str,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpreadLabel {
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BlockLabel {
    pub(crate) tenant: String,
    pub(crate) block: String,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    blocks_skipped: Family<BlockLabel, Counter>,
    duration: Family<EndpointLabel, Histogram>,
    outcomes: Family<OutcomeLabel, Counter>,
    partial: Family<EndpointLabel, Counter>,
    spread: Family<SpreadLabel, Counter>,
    pub(crate) refused: Counter,
    pub(crate) running: Gauge,
    /// Bytes reserved in the memory pools of the queries running.
    pub(crate) memory: Gauge,
    /// Bytes query plans read from the object store.
    pub(crate) bytes_read: Counter,
    /// Tasks of spread queries run here, for whichever querier coordinated.
    pub(crate) worker_tasks: Counter,
    /// Fan-out analyses a task here handed to the query coordinated here,
    /// in memory (rather than through Arrow Flight to this process).
    pub(crate) handed_over: Counter,
    /// Peers (this querier included) that answered the last probe.
    pub(crate) peers_live: Gauge,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17))),
            outcomes: Family::default(),
            partial: Family::default(),
            spread: Family::default(),
            refused: Counter::default(),
            running: Gauge::default(),
            memory: Gauge::default(),
            bytes_read: Counter::default(),
            worker_tasks: Counter::default(),
            handed_over: Counter::default(),
            peers_live: Gauge::default(),
            blocks_skipped: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("spanlake_querier");
        r.register("query_duration_seconds", "Time queries ran, by endpoint", m.duration.clone());
        r.register(
            "queries",
            "Queries by endpoint and outcome: ok, invalid, timeout, memory, cancelled, failed",
            m.outcomes.clone(),
        );
        r.register(
            "queries_partial",
            "Queries answered without some blocks (skipped as unreadable, missing or foreign), by endpoint",
            m.partial.clone(),
        );
        r.register(
            "queries_spread",
            "Queries spread over several queriers, by outcome: ok; spread_again after a spread run failed once a querier had left the live list (over those left); ran_locally after a spread run failed otherwise, or failed again",
            m.spread.clone(),
        );
        r.register("queries_refused", "Queries refused by admission (429)", m.refused.clone());
        r.register("queries_running", "Queries admitted and running", m.running.clone());
        r.register(
            "query_memory_bytes",
            "Bytes held in the memory pools of running queries (each at most --sql-memory-limit)",
            m.memory.clone(),
        );
        r.register(
            "block_bytes_read",
            "Bytes query plans read from the object store, here (as the querier asked or for another querier)",
            m.bytes_read.clone(),
        );
        r.register(
            "worker_tasks",
            "Tasks of queries spread over queriers that ran here, for whichever querier coordinated",
            m.worker_tasks.clone(),
        );
        r.register(
            "fanout_analyses_handed_over",
            "Fan-out analyses of a spread query's task that ran on the querier coordinating it, handed over in memory",
            m.handed_over.clone(),
        );
        r.register(
            "peers_live",
            "Queriers (this one included) that answered the last probe, that queries may spread over",
            m.peers_live.clone(),
        );
        r.register(
            "blocks_skipped",
            "Times a query skipped a block that is unreadable, missing or not of the span schema",
            m.blocks_skipped.clone(),
        );
        m
    }

    pub(crate) fn spread(&self, outcome: &'static str) {
        self.spread.get_or_create(&SpreadLabel { outcome }).inc();
    }

    pub(crate) fn answered_partial(&self, endpoint: &'static str) {
        self.partial.get_or_create(&EndpointLabel { endpoint }).inc();
    }

    pub(crate) fn block_skipped(&self, tenant: &spanlake_schemas::TenantId, block: &str) {
        let label = BlockLabel { tenant: tenant.to_string(), block: block.to_owned() };
        self.blocks_skipped.get_or_create(&label).inc();
    }

    /// Starts timing one admitted query; its outcome is `cancelled` unless
    /// [`QueryTimer::finish`] is called (the caller went away).
    pub(crate) fn start(this: &Arc<Self>, endpoint: &'static str) -> QueryTimer {
        this.running.inc();
        QueryTimer { metrics: Arc::clone(this), endpoint, started: Instant::now(), outcome: "cancelled" }
    }
}

/// One running query, as the metrics see it.
pub(crate) struct QueryTimer {
    metrics: Arc<Metrics>,
    endpoint: &'static str,
    started: Instant,
    outcome: &'static str,
}

impl QueryTimer {
    pub(crate) fn finish<T>(&mut self, result: &Result<T, QueryError>) {
        self.outcome = match result {
            Ok(_) => "ok",
            Err(QueryError::Timeout { .. }) => "timeout",
            Err(QueryError::MemoryLimit(_)) => "memory",
            Err(error) if error.http_status() < 500 => "invalid",
            Err(_) => "failed",
        };
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        let endpoint = self.endpoint;
        self.metrics.duration.get_or_create(&EndpointLabel { endpoint }).observe(self.started.elapsed().as_secs_f64());
        self.metrics.outcomes.get_or_create(&OutcomeLabel { endpoint, outcome: self.outcome }).inc();
        // Last: a scrape that sees the query no longer running sees its outcome.
        self.metrics.running.dec();
    }
}

/// The catalog's counts of unreadable commit records and checkpoints, and of
/// late commits, read at each scrape.
#[derive(Debug)]
pub(crate) struct CatalogCollector(pub(crate) std::sync::Arc<spanlake_schemas::Catalog>);

impl prometheus_client::collector::Collector for CatalogCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let counters = [
            (
                "spanlake_catalog_invalid_records",
                "Commit records and checkpoints that could not be read and were skipped",
                self.0.invalid_records(),
            ),
            (
                "spanlake_catalog_late_commits",
                "Commits found only by a full listing: they landed with an id older than the lookback",
                self.0.late_commits(),
            ),
        ];
        for (name, help, value) in counters {
            let counter = prometheus_client::metrics::counter::ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
