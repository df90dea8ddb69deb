//! `GET /api/search/tags`, `/api/v2/search/tags`,
//! `/api/search/tag/<name>/values`, `/api/v2/search/tag/<identifier>/values`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use spanlake_schemas::schema as s;
use tokio::sync::OwnedSemaphorePermit;

use super::extract::{Admitted, Tenant};
use super::params::unix_seconds_range;
use crate::Querier;
use crate::blocks::Partial;
use crate::error::{QueryError, Result};
use crate::tags::{INTRINSICS, identifier};
use crate::traceql::ast::{FieldExpr, SpansetExpr};
use crate::traceql::{self};

#[derive(Debug, Deserialize)]
pub(super) struct TagsQuery {
    scope: Option<String>,
    q: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

impl TagsQuery {
    fn range(&self) -> Result<(i64, i64)> {
        unix_seconds_range(&self.start, &self.end)
    }

    fn limit(&self) -> Result<usize> {
        match self.limit.as_deref().filter(|l| !l.is_empty()) {
            None => Ok(5000),
            Some(l) => l.parse::<usize>().ok().filter(|l| *l > 0).ok_or_else(|| QueryError::InvalidParameter {
                name: "limit",
                reason: format!("{l:?} is not a positive integer"),
            }),
        }
    }

    /// The lenient TraceQL filter of `q`: a single spanset filter, or nothing.
    fn filter(&self) -> Option<FieldExpr> {
        let q = self.q.as_deref()?.trim();
        match traceql::parse(q).ok()?.spansets {
            SpansetExpr::Filter(filter) => filter,
            _ => None,
        }
    }
}

type Answer = Result<Response>;

/// The JSON answer, marked partial (a header) when blocks were skipped or a
/// read was cut at its limit.
fn answer(querier: &Querier, endpoint: &'static str, body: Value, partial: &Partial) -> Response {
    let mut response = Json(body).into_response();
    querier.mark_partial(endpoint, partial, &mut response);
    response
}

pub(super) async fn tags_v1(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Query(p): Query<TagsQuery>,
) -> Answer {
    let (range, limit) = (p.range()?, p.limit()?);
    let scope = p.scope.unwrap_or_default();
    let (names, partial) = querier
        .execute("tags", permit, move |q| async move {
            let mut names = BTreeSet::new();
            let mut partial = Partial::default();
            for (name, column) in [("span", s::SPAN_ATTRIBUTES), ("resource", s::RESOURCE_ATTRIBUTES)] {
                if scope.is_empty() || scope == name {
                    let (keys, cut) = q.attribute_keys(&tenant, column, range, limit).await?;
                    names.extend(keys);
                    partial.extend(cut);
                }
            }
            Ok((names.into_iter().take(limit).collect::<Vec<String>>(), partial))
        })
        .await?;
    Ok(answer(&querier, "tags", json!({ "tagNames": names, "metrics": {} }), &partial))
}

pub(super) async fn tags_v2(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Query(p): Query<TagsQuery>,
) -> Answer {
    let (range, limit) = (p.range()?, p.limit()?);
    let scope = p.scope.unwrap_or_default();
    if !matches!(scope.as_str(), "" | "span" | "resource" | "intrinsic" | "event" | "link" | "instrumentation") {
        return Err(QueryError::invalid(
            "scope",
            format!("{scope:?}: use resource, span, intrinsic, event, link or instrumentation"),
        ));
    }
    let (scopes, partial) = querier
        .execute("tags", permit, move |q| async move {
            let mut scopes = Vec::new();
            let mut partial = Partial::default();
            for (name, column) in [
                ("resource", s::RESOURCE_ATTRIBUTES),
                ("span", s::SPAN_ATTRIBUTES),
                ("instrumentation", s::SCOPE_ATTRIBUTES),
            ] {
                if scope.is_empty() || scope == name {
                    let (tags, cut) = q.attribute_keys(&tenant, column, range, limit).await?;
                    scopes.push(json!({ "name": name, "tags": tags }));
                    partial.extend(cut);
                }
            }
            if scope.is_empty() || scope == "intrinsic" {
                scopes.push(json!({ "name": "intrinsic", "tags": INTRINSICS }));
            }
            Ok((scopes, partial))
        })
        .await?;
    Ok(answer(&querier, "tags", json!({ "scopes": scopes, "metrics": {} }), &partial))
}

pub(super) async fn values_v1(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Path(name): Path<String>,
    Query(p): Query<TagsQuery>,
) -> Answer {
    tag_values(querier, tenant, permit, name, p, false).await
}

pub(super) async fn values_v2(
    State(querier): State<Arc<Querier>>,
    Tenant(tenant): Tenant,
    Admitted(permit): Admitted,
    Path(name): Path<String>,
    Query(p): Query<TagsQuery>,
) -> Answer {
    tag_values(querier, tenant, permit, name, p, true).await
}

/// v1: bare names allowed, plain string values, no `q`; v2: TraceQL
/// identifiers, typed values, narrowed by `q`.
async fn tag_values(
    querier: Arc<Querier>,
    tenant: spanlake_schemas::TenantId,
    permit: OwnedSemaphorePermit,
    name: String,
    p: TagsQuery,
    v2: bool,
) -> Answer {
    let field = identifier(&name, !v2)?;
    let filter = if v2 { p.filter() } else { None };
    let (range, limit) = (p.range()?, p.limit()?);
    let endpoint = if v2 { "tag_values_v2" } else { "tag_values" };
    let (values, partial) =
        querier
            .execute(endpoint, permit, move |q| async move {
                q.values(&tenant, &field, filter.as_ref(), range, limit).await
            })
            .await?;
    let values: Vec<Value> = if v2 { values } else { values.into_iter().map(|v| v["value"].clone()).collect() };
    Ok(answer(&querier, endpoint, json!({ "tagValues": values, "metrics": {} }), &partial))
}
