//! Compactor errors, named by the step that failed.

use spanlake_schemas::storage::StorageError;
use spanlake_schemas::{BlockId, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object storage request failed")]
    Storage(#[from] StorageError),
    #[error("reading block {block_id} of tenant {tenant} failed")]
    ReadBlock {
        tenant: TenantId,
        block_id: BlockId,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("merging into block {block_id} of tenant {tenant} failed")]
    Merge {
        tenant: TenantId,
        block_id: BlockId,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("writing merged block {block_id} of tenant {tenant} failed")]
    WriteBlock {
        tenant: TenantId,
        block_id: BlockId,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("block {block_id} of tenant {tenant} is committed but its file is missing")]
    MissingBlock { tenant: TenantId, block_id: BlockId },
    #[error("block {block_id} of tenant {tenant} cannot be merged: {reason}")]
    UnusableBlock { tenant: TenantId, block_id: BlockId, reason: String },
    #[error("compacting window {window} of tenant {tenant} panicked: {message}")]
    Panicked { tenant: TenantId, window: i64, message: String },
    #[error("another compactor took over the lease on {key} of tenant {tenant}; the job is abandoned uncommitted")]
    LeaseLost { tenant: TenantId, key: String },
    #[error(
        "merged block {block_id} of tenant {tenant} was uploaded {elapsed:?} ago, past the commit deadline of half the deletion grace; the job is abandoned uncommitted"
    )]
    CommitTooLate { tenant: TenantId, block_id: BlockId, elapsed: std::time::Duration },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
