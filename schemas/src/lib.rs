//! # spanlake-schemas
//!
//! The data contracts shared by every Spanlake role; no network servers here.
//!
//! ```text
//!  ExportTraceServiceRequest ──encode──▶ RecordBatch (span_schema) ──block──▶ Parquet bytes
//!            ▲                                                                   │
//!            └────────decode (ResourceSpans grouped by resource, scope)◀─────────┘
//!
//!  storage: <root>/v1/<tenant>/blocks/<block id>.parquet   the data, written first
//!           <root>/v1/<tenant>/commits/<commit id>.json    makes blocks visible / retires them
//! ```
//!
//! - [`schema`]: the flat span schema, one row per span (a public contract).
//! - [`encode`] / [`decode`]: OTLP ⇄ Arrow; every OTLP field survives the round trip.
//! - [`span_ref`]: a span as borrowed slices, what the builder appends (filled from
//!   the wire by the ingester, or from decoded structs).
//! - [`block`]: block ids, metadata, sorting and Parquet encoding.
//! - [`storage`]: the object-store layout, durable puts and the commit log.
//! - [`catalog`]: the in-memory, incrementally refreshed set of live blocks.
//! - [`merge`]: the streaming k-way merge of trace-sorted batches, with de-duplication.
//! - [`tag_summary`]: the attribute keys and values of a block, in its footer.
//! - [`tenant`]: validated tenant ids, so a tenant can never escape its prefix.
//!
//! Invariants: a block becomes visible only through a commit record written
//! after its Parquet file is durable; ids of blocks and commits sort by
//! creation time; a commit record both adds and retires blocks atomically.

pub mod attributes;
pub mod block;
pub mod catalog;
pub mod decode;
pub mod encode;
pub mod fault;
mod flat_column;
pub mod gather;
mod map_column;
pub mod merge;
mod plain_column;
pub mod reader;
pub mod schema;
pub mod span_ref;
pub mod storage;
pub mod tag_summary;
pub mod tenant;

pub use block::{BlockId, BlockMeta};
pub use catalog::Catalog;
pub use encode::{AppendReport, InvalidSpan, ResourceContext, ScopeContext, SpanBatchBuilder};
pub use schema::span_schema;
pub use storage::Storage;
pub use tenant::TenantId;

/// A stored batch that does not match the span schema.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("span batch has no column {0}")]
    MissingColumn(&'static str),
    #[error("span batch column {0} has an unexpected type or shape")]
    Malformed(&'static str),
    #[error("invalid json in {what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod roundtrip_tests;
