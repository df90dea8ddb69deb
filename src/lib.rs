//! # spanlake (the binary)
//!
//! The only crate that knows about flags and environment variables: it turns
//! them into the role crates' config structs, opens the object store, and runs
//! the roles, all in one process by default.
//!
//! ```text
//!  spanlake                      all roles, ./data
//!  spanlake run <role>           one role per process (scale-out)
//!  spanlake compact --once       one compaction pass, then exit
//!  spanlake loadgen …            an OTLP load generator with known latency distributions
//!  spanlake vulture …            a consistency checker: writes, reads back, reports losses
//! ```

/// mimalloc: the ingest path allocates and frees many small buffers; glibc
/// malloc spent about a quarter of its CPU time there (see BENCHMARKS.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod client;
pub mod config;
pub mod loadgen;
pub mod server;
pub mod storage;
pub mod units;
pub mod vulture;

pub use config::{Cli, Command, Role, RunCommand, ServerArgs};
pub use server::Spanlake;

/// One compaction pass over the store `args` names (`spanlake compact --once`).
pub async fn compact_once(args: &ServerArgs) -> anyhow::Result<spanlake_compactor::PassReport> {
    let storage = storage::open(&args.storage)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let compactor = spanlake_compactor::Compactor::new(args.compactor_config(), storage, None, &mut registry).await?;
    Ok(compactor.run_once().await?)
}
