//! Requests to the query API.

use std::net::SocketAddr;

use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use prost::Message as _;

pub fn query_url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// The trace as OTLP protobuf from `/api/traces/<id>`, or `None` on 404.
pub async fn fetch_trace(
    http: &reqwest::Client,
    addr: SocketAddr,
    trace_id: &[u8],
    tenant: Option<&str>,
) -> Option<TracesData> {
    let mut request = http
        .get(query_url(addr, &format!("/api/traces/{}", hex::encode(trace_id))))
        .header("accept", "application/protobuf");
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    let response = request.send().await.unwrap();
    match response.status().as_u16() {
        404 => None,
        200 => Some(TracesData::decode(response.bytes().await.unwrap()).unwrap()),
        other => panic!("unexpected status {other}: {}", response.text().await.unwrap()),
    }
}

/// All spans of a trace, flattened.
pub fn spans(data: &TracesData) -> Vec<&Span> {
    data.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect()
}

/// A response's status, content type and body.
pub async fn parts(request: reqwest::RequestBuilder) -> (u16, String, Vec<u8>) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

/// `POST /api/sql` as `tenant` asking for `accept`: status, content type, body.
pub async fn sql(
    http: &reqwest::Client,
    addr: SocketAddr,
    tenant: Option<&str>,
    accept: &str,
    query: &str,
) -> (u16, String, Vec<u8>) {
    let mut request = http.post(query_url(addr, "/api/sql")).header("accept", accept).body(query.to_owned());
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    parts(request).await
}

/// The rows of `query` as JSON; panics unless it answers 200.
pub async fn sql_json(
    http: &reqwest::Client,
    addr: SocketAddr,
    tenant: Option<&str>,
    query: &str,
) -> serde_json::Value {
    let (status, _, body) = sql(http, addr, tenant, "application/json", query).await;
    assert_eq!(status, 200, "{query}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// GETs `url` and returns the body's length; panics unless it succeeds.
pub async fn get_ok(http: &reqwest::Client, url: String) -> usize {
    let response = http.get(&url).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await.unwrap().len()
}

/// POSTs `body` to `url` and returns the answer's length; panics unless it succeeds.
pub async fn post_ok(http: &reqwest::Client, url: String, body: &str) -> usize {
    let response = http.post(&url).body(body.to_owned()).send().await.unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await.unwrap().len()
}
