//! The pages people look at without Grafana: `GET /fanout`, the fan-out
//! report as charts and tables, and `GET /trace/<id>`, a waterfall, where the
//! report's exemplar links lead. Each is one self-contained HTML file (no
//! external assets: it works offline) that reads the JSON APIs; a tenant
//! comes from `?tenant=` and is sent as `X-Scope-OrgID`.

use axum::http::header;
use axum::response::IntoResponse;

pub(super) const FANOUT: &str = include_str!("fanout.html");
pub(super) const TRACE: &str = include_str!("trace.html");

pub(super) fn html(page: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        page,
    )
}
