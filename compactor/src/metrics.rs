//! Prometheus metrics of the compactor.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LevelLabel {
    pub(crate) level: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) blocks: Family<LevelLabel, Gauge>,
    pub(crate) pending_merges: Gauge,
    pub(crate) lag_seconds: Gauge,
    pub(crate) merges: Counter,
    pub(crate) failures: Counter,
    pub(crate) bytes_read: Counter,
    pub(crate) bytes_written: Counter,
    pub(crate) spans_written: Counter,
    pub(crate) duplicates_dropped: Counter,
    pub(crate) blocks_expired: Counter,
    pub(crate) blocks_deleted: Counter,
    pub(crate) windows_skipped: Counter,
    pub(crate) windows_failing: Gauge,
    pub(crate) blocks_unusable: Gauge,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("spanlake_compactor");
        r.register("blocks", "Live blocks by compaction level (all tenants)", m.blocks.clone());
        r.register("pending_merges", "Merges planned and not yet done", m.pending_merges.clone());
        r.register(
            "lag_seconds",
            "Age of the oldest level-0 block waiting in a window with pending merges",
            m.lag_seconds.clone(),
        );
        r.register("merges", "Merged blocks committed", m.merges.clone());
        r.register("failures", "Jobs that failed (retried on a later pass)", m.failures.clone());
        r.register("read_bytes", "Bytes of source blocks merged", m.bytes_read.clone());
        r.register("written_bytes", "Bytes of merged blocks written", m.bytes_written.clone());
        r.register("spans_written", "Spans written to merged blocks", m.spans_written.clone());
        r.register("duplicates_dropped", "Duplicate spans dropped by merges", m.duplicates_dropped.clone());
        r.register("blocks_expired", "Blocks retired by retention", m.blocks_expired.clone());
        r.register("blocks_deleted", "Retired or orphaned block files deleted", m.blocks_deleted.clone());
        r.register(
            "windows_skipped",
            "Windows left to another compactor holding their lease",
            m.windows_skipped.clone(),
        );
        r.register(
            "windows_failing",
            "Windows whose last compaction failed, retried with backoff",
            m.windows_failing.clone(),
        );
        r.register(
            "blocks_unusable",
            "Live blocks left out of merges: not Parquet, or not of the span schema (retention still retires them)",
            m.blocks_unusable.clone(),
        );
        m
    }
}
