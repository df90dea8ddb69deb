//! Query errors, each with its HTTP status; they answer HTTP requests as a
//! plain-text body with that status.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::sql::SPILL_FACTOR;

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
            _ if spill_space_exhausted(&error) => Self::MemoryLimit(format!(
                "the query needs more than its memory limit and its spill space on disk \
                 ({SPILL_FACTOR}x the memory limit): {}",
                error.strip_backtrace()
            )),
            _ => Self::Execution(error.strip_backtrace()),
        }
    }
}

/// Whether a query stopped because its spill files would pass their cap.
/// DataFusion reports it as a plain I/O error inside an Arrow error, so the
/// only mark it carries is the setting its message names.
fn spill_space_exhausted(error: &datafusion::error::DataFusionError) -> bool {
    error.to_string().contains("datafusion.runtime.max_temp_directory_size")
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::error::ArrowError;
    use datafusion::error::DataFusionError;

    use super::*;

    #[test]
    fn spill_space_running_out_is_the_memory_limit() {
        // As DataFusion 55's disk manager reports it, wrapped by the spill writer.
        let io = std::io::Error::other(
            "The used disk space during the spilling process has exceeded the allowable limit of 1024.0 KB. \
             Please try increasing the config: `datafusion.runtime.max_temp_directory_size`.",
        );
        let error = DataFusionError::ArrowError(Box::new(ArrowError::IoError(io.to_string(), io)), None);
        let error = QueryError::from(error);
        assert_eq!(error.http_status(), 422, "{error}");
        assert!(error.to_string().contains("memory limit and its spill space"), "{error}");
        let other = QueryError::from(DataFusionError::Execution("a division by zero".into()));
        assert_eq!(other.http_status(), 500);
    }
}
