//! Query errors, each with its HTTP status.

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid trace id {id:?}: {reason}")]
    InvalidTraceId { id: String, reason: String },
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    #[error("{0}")]
    InvalidTenant(#[from] spanlake_schemas::tenant::TenantError),
    #[error("trace exceeds the maximum size of {limit} bytes")]
    TraceTooLarge { limit: usize },
    #[error("reading block {block_id} failed")]
    ReadBlock {
        block_id: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("stored data does not match the span schema")]
    Decode(#[from] spanlake_schemas::DecodeError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

pub(crate) type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidTraceId { .. } | Self::InvalidParameter { .. } => 400,
            Self::InvalidTenant(_) => 401,
            Self::TraceTooLarge { .. } => 422,
            Self::ReadBlock { .. } | Self::Decode(_) | Self::Internal(_) => 500,
        }
    }
}
