//! Prometheus metrics of the ingester.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabel {
    pub(crate) tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) spans_received: Family<TenantLabel, Counter>,
    pub(crate) spans_rejected: Family<TenantLabel, Counter>,
    pub(crate) bytes_received: Counter,
    pub(crate) requests_refused: Family<ReasonLabel, Counter>,
    pub(crate) attribute_values_truncated: Counter,
    pub(crate) flush_duration: Histogram,
    pub(crate) flush_failures: Counter,
    pub(crate) block_bytes: Histogram,
    pub(crate) block_spans: Histogram,
    pub(crate) buffer_bytes: Gauge,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            spans_received: Family::default(),
            spans_rejected: Family::default(),
            bytes_received: Counter::default(),
            requests_refused: Family::default(),
            attribute_values_truncated: Counter::default(),
            flush_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            flush_failures: Counter::default(),
            block_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 12)),
            block_spans: Histogram::new(exponential_buckets(16.0, 4.0, 10)),
            buffer_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("spanlake_ingester");
        r.register("spans_received", "Spans accepted into the buffer", m.spans_received.clone());
        r.register("spans_rejected", "Spans rejected by validation", m.spans_rejected.clone());
        r.register("received_bytes", "OTLP request bytes received (decompressed)", m.bytes_received.clone());
        r.register("requests_refused", "Requests refused, by reason", m.requests_refused.clone());
        r.register(
            "attribute_values_truncated",
            "Attribute values cut to the length limit",
            m.attribute_values_truncated.clone(),
        );
        r.register("flush_duration_seconds", "Time to encode, upload and commit a block", m.flush_duration.clone());
        r.register("flush_failures", "Failed block uploads or commits (retried)", m.flush_failures.clone());
        r.register("block_size_bytes", "Size of committed blocks", m.block_bytes.clone());
        r.register("block_spans", "Spans per committed block", m.block_spans.clone());
        r.register("buffer_bytes", "Bytes buffered or being flushed", m.buffer_bytes.clone());
        m
    }

    pub(crate) fn refused(&self, reason: &'static str) {
        self.requests_refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}
