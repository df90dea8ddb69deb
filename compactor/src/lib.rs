//! # spanlake-compactor (in progress: the merge exists; planning, commits, leases and retention do not)
//!
//! Ingesters write a small block about every second per tenant. The compactor
//! will keep the number of live blocks bounded and remove duplicate spans:
//!
//! ```text
//!  commit log ─▶ plan: per tenant, group blocks by time window and level
//!            ─▶ merge: streaming k-way merge by (trace_id, start_time), dedupe
//!                      (trace id, span id, kind), same Parquet layout as ingest
//!            ─▶ put merged block ─▶ one commit {added: [merged], removed: sources}
//!            ─▶ delete sources after a grace period
//! ```
//!
//! The storage contract it relies on already holds (see
//! `spanlake_schemas::storage`): a commit record adds and retires blocks in one
//! atomic put, and readers apply commits idempotently and in any order, so a
//! crash at any step leaves either the sources or the merged block visible,
//! never both and never neither.
//!
//! Built so far: [`merge::merge_sorted`], the streaming k-way merge with
//! de-duplication (property-tested). Until planning, commit and leases exist,
//! `spanlake run compactor` refuses to start with a message saying so, rather
//! than pretending to run.

pub mod merge;
