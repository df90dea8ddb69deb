//! End-to-end tests: real roles on port 0, real clients.

mod backpressure;
mod bad_blocks;
mod bad_input;
mod chaos;
mod cluster;
mod common;
mod compaction;
mod durability;
mod fanout;
mod hostile_queries;
mod ingest_memory;
mod multiprocess;
mod open_data;
mod otlp_clients;
mod pg;
mod pruning;
mod search;
mod snapshots;
mod spread;
mod sql;
mod storage;
mod tag_summaries;
mod trace_api;
mod traceql_metrics;
