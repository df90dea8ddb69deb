//! # spanlake (the binary)
//!
//! The only crate that knows about flags and environment variables: it turns
//! them into the role crates' config structs, opens the object store, and runs
//! the roles, all in one process by default.
//!
//! ```text
//!  spanlake                      all roles, ./data
//!  spanlake run <role>           one role per process (scale-out)
//!  spanlake loadgen …            an OTLP load generator with known latency distributions
//! ```

/// mimalloc: the ingest path allocates and frees many small buffers; glibc
/// malloc spent about a quarter of its CPU time there (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod client;
pub mod config;
pub mod loadgen;
pub mod server;
pub mod storage;
pub mod units;

pub use config::{Cli, Command, Role, ServerArgs};
pub use server::Spanlake;
