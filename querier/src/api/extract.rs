//! Extractors shared by every query endpoint: the caller's tenant, then an
//! admission permit. A leaf module: it imports nothing above it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;
use spanlake_schemas::TenantId;
use tokio::sync::OwnedSemaphorePermit;

use crate::Querier;
use crate::error::QueryError;

/// The tenant of the request (`X-Scope-OrgID` with multi-tenancy on).
#[derive(Debug)]
pub(super) struct Tenant(pub(super) TenantId);

impl FromRequestParts<Arc<Querier>> for Tenant {
    type Rejection = QueryError;

    async fn from_request_parts(parts: &mut Parts, querier: &Arc<Querier>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get("x-scope-orgid").map(HeaderValue::as_bytes);
        Ok(Self(TenantId::from_header(querier.config.multi_tenant, header)?))
    }
}

/// One admitted query: the permit of one of `max_concurrent_queries` slots.
/// Hand it to [`Querier::execute`], which keeps it inside the running task.
#[derive(Debug)]
pub(super) struct Admitted(pub(super) OwnedSemaphorePermit);

impl FromRequestParts<Arc<Querier>> for Admitted {
    type Rejection = QueryError;

    async fn from_request_parts(_: &mut Parts, querier: &Arc<Querier>) -> Result<Self, Self::Rejection> {
        Ok(Self(querier.admit()?))
    }
}
