//! Query errors, each with its HTTP status; they answer HTTP requests as a
//! plain-text body with that status.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

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
    #[error("invalid SQL: {0}")]
    Sql(String),
    #[error("{0}")]
    SqlRefused(String),
    #[error("query exceeded the time limit of {limit:?}")]
    Timeout { limit: std::time::Duration },
    #[error("query exceeded its memory limit: {0}")]
    MemoryLimit(String),
    #[error("query failed: {0}")]
    Execution(String),
    #[error("the querier is saturated ({limit} queries running), retry shortly")]
    Saturated { limit: usize },
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match error.find_root() {
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => Self::Sql(error.strip_backtrace()),
            E::ResourcesExhausted(_) => Self::MemoryLimit(error.strip_backtrace()),
            _ => Self::Execution(error.strip_backtrace()),
        }
    }
}

impl QueryError {
    /// A bad request parameter, named, with what is wrong with it.
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidParameter { name, reason: reason.into() }
    }
}

pub(crate) type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidTraceId { .. } | Self::InvalidParameter { .. } => 400,
            Self::InvalidTenant(_) => 401,
            Self::TraceTooLarge { .. } | Self::MemoryLimit(_) => 422,
            Self::Sql(_) | Self::SqlRefused(_) => 400,
            Self::Timeout { .. } => 408,
            Self::Saturated { .. } => 429,
            Self::Execution(_) => 500,
            Self::ReadBlock { .. } | Self::Decode(_) | Self::Internal(_) => 500,
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "query failed");
        }
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}
