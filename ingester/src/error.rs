//! Ingest errors: what failed, and what the client should do about it. One
//! mapping turns each into an HTTP status and a gRPC code.

use std::time::Duration;

use spanlake_schemas::tenant::TenantError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("request body could not be decoded as {format}: {reason}")]
    Undecodable { format: &'static str, reason: String },
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?}: use gzip or none")]
    UnsupportedEncoding(String),
    #[error("request body is larger than the limit of {limit} bytes{after}", after = if *.decompressed { " after decompression" } else { "" })]
    TooLarge { limit: usize, decompressed: bool },
    #[error(
        "request body would take about {cost} bytes decoded, more than {factor}x its {size} bytes (many tiny values): send them in smaller requests"
    )]
    Expands { cost: usize, size: usize, factor: usize },
    #[error("request holds {spans} spans, the limit is {limit} per request")]
    TooManySpans { spans: usize, limit: usize },
    #[error("{0}")]
    InvalidTenant(#[from] TenantError),
    #[error("ingest buffers are full ({scope}), retry after {retry_after:?}")]
    Overloaded { scope: &'static str, retry_after: Duration },
    #[error("object storage is failing, spans were not stored; retry after {retry_after:?}")]
    Unavailable { retry_after: Duration },
    #[error("ingester is shutting down")]
    ShuttingDown,
}

pub(crate) type Result<T, E = IngestError> = std::result::Result<T, E>;

impl IngestError {
    /// HTTP status per the OTLP/HTTP specification.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Undecodable { .. } | Self::UnsupportedEncoding(_) | Self::Expands { .. } => 400,
            Self::TooManySpans { .. } | Self::TooLarge { .. } => 413,
            Self::UnsupportedContentType(_) => 415,
            Self::InvalidTenant(_) => 401,
            Self::Overloaded { .. } => 429,
            Self::Unavailable { .. } | Self::ShuttingDown => 503,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::Undecodable { .. }
            | Self::Expands { .. }
            | Self::UnsupportedContentType(_)
            | Self::UnsupportedEncoding(_)
            | Self::TooManySpans { .. } => tonic::Code::InvalidArgument,
            Self::TooLarge { .. } => tonic::Code::ResourceExhausted,
            Self::InvalidTenant(_) => tonic::Code::Unauthenticated,
            Self::Overloaded { .. } => tonic::Code::ResourceExhausted,
            Self::Unavailable { .. } | Self::ShuttingDown => tonic::Code::Unavailable,
        }
    }

    /// For retryable errors, how long the client should wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { retry_after, .. } | Self::Unavailable { retry_after } => Some(*retry_after),
            Self::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The gRPC status, with `RetryInfo` details on retryable errors (OTLP
    /// clients retry RESOURCE_EXHAUSTED only when it carries RetryInfo).
    pub fn to_grpc_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        match self.retry_after() {
            Some(delay) => tonic::Status::with_error_details(
                self.grpc_code(),
                self.to_string(),
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::new(self.grpc_code(), self.to_string()),
        }
    }
}
