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

/// How long memory freed to mimalloc stays with the process before it goes
/// back to the OS, in milliseconds: 10 s, jemalloc's default for the same
/// choice (`dirty_decay_ms`). mimalloc's own default, 1 s, is shorter than
/// one large query: a fan-out of every parent frees and allocates its
/// buffers over about a second, so memory went back to the OS mid-query and
/// was faulted in again, page by page. That cost the lone querier 9–12 % of
/// its CPU and three queriers sharing the query 13–19 % (BENCHMARKS.md). An
/// idle process still gives its freed memory back, 10 s later.
/// `MIMALLOC_PURGE_DELAY` in the environment overrides it.
pub const ALLOCATOR_PURGE_DELAY_MS: i64 = 10_000;

/// Sets mimalloc's options that differ from its defaults (see
/// [`ALLOCATOR_PURGE_DELAY_MS`]), unless the environment sets them. Called
/// first thing in `main`.
pub fn tune_allocator() {
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_allocator_option(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS);
    }
}

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (the same number in
/// its v2 and v3); `libmimalloc-sys` 0.1.49, pinned, names no constant for it.
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[cfg(not(feature = "system-allocator"))]
#[allow(unsafe_code)]
fn set_allocator_option(option: libmimalloc_sys::mi_option_t, value: i64) {
    // SAFETY: `mi_option_set` stores a number in mimalloc's table of options
    // (each entry read and written whole); it takes no pointer, and an
    // option's number beyond the table is ignored.
    unsafe { libmimalloc_sys::mi_option_set(option, value as std::ffi::c_long) }
}

/// mimalloc's current value of `option` (for tests).
#[cfg(all(test, not(feature = "system-allocator")))]
#[allow(unsafe_code)]
fn allocator_option(option: libmimalloc_sys::mi_option_t) -> std::ffi::c_long {
    // SAFETY: as in `set_allocator_option`, a read of one number.
    unsafe { libmimalloc_sys::mi_option_get(option) }
}

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

#[cfg(all(test, not(feature = "system-allocator")))]
mod tests {
    use super::*;

    #[test]
    fn the_allocator_keeps_freed_memory_for_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // The environment's choice stands.
        }
        // The option of this number is the purge delay: mimalloc v3's default
        // for it, 1 s, until it is tuned (the test process never runs `main`).
        assert_eq!(allocator_option(MI_OPTION_PURGE_DELAY), 1_000, "not mimalloc's purge delay");
        tune_allocator();
        assert_eq!(allocator_option(MI_OPTION_PURGE_DELAY), ALLOCATOR_PURGE_DELAY_MS as std::ffi::c_long);
    }
}
