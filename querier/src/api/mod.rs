//! The query HTTP API on :3200 (Tempo's port and paths, so Grafana's Tempo
//! datasource works unmodified). This module only routes.
//!
//! Every query endpoint takes the same path: the [`Tenant`] extractor, then
//! the [`Admitted`] extractor (429 when saturated), then parameters, then
//! [`Querier::execute`](crate::Querier::execute), which runs the work on the
//! query runtime under `query_timeout` (408) and aborts it when the client
//! goes away; the admission permit lives inside the running task. Errors
//! answer through `impl IntoResponse for QueryError`.
//!
//! Leaf modules (`extract`, `params`) import nothing above them; no module
//! imports the router.
//!
//! [`Tenant`]: extract::Tenant
//! [`Admitted`]: extract::Admitted

mod extract;
mod fanout;
mod pages;
mod params;
mod query_range;
mod search;
mod sql;
mod tags;
mod traces;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::Querier;

pub(crate) fn router(querier: Arc<Querier>) -> Router {
    Router::new()
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/status/buildinfo", get(traces::buildinfo))
        .route("/api/traces/{id}", get(traces::trace_v1))
        .route("/api/v2/traces/{id}", get(traces::trace_v2))
        .route("/api/sql", post(sql::sql))
        .route("/api/fanout", get(fanout::fanout))
        .route("/fanout", get(|| async { pages::html(pages::FANOUT) }))
        .route("/trace/{id}", get(|| async { pages::html(pages::TRACE) }))
        .route("/api/search", get(search::search))
        .route("/api/metrics/query_range", get(query_range::query_range))
        .route("/api/metrics/query", get(query_range::query_instant))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{name}/values", get(tags::values_v1))
        .route("/api/v2/search/tag/{name}/values", get(tags::values_v2))
        .with_state(querier)
}
