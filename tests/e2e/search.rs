//! TraceQL search over a fixed set of traces whose matches are known,
//! written through the real ingest path, with one trace split across blocks.

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde_json::Value as Json;
use spanlake_test_support::otlp::{self, CLIENT, SERVER, kv};

use crate::common::TestServer;

const BASE: u64 = 1_764_000_000_000_000_000;
const MS: u64 = 1_000_000;

#[allow(clippy::too_many_arguments)]
fn span(
    t: u8,
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    start_ms: u64,
    dur_ms: u64,
    attrs: Vec<KeyValue>,
    error: bool,
) -> Span {
    Span {
        parent_span_id: parent.map(|p| otlp::span_id(t, p)).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: BASE + start_ms * MS,
        end_time_unix_nano: BASE + (start_ms + dur_ms) * MS,
        attributes: attrs,
        status: error.then(|| Status { code: 2, message: "declined".into() }),
        ..otlp::span(t, id)
    }
}

/// A (0x0a…): frontend GET /checkout → client charge (502, error) → payment server charge (error, another block);
///           → client lookup (200). B (0x0b…), 1 s later: GET /home → client lookup (200).
/// C (0x0c…), 2 s later: cart GET /cart, staging.
async fn fixture() -> TestServer {
    let server = TestServer::start().await;
    let code = |c: i64| kv("http.status_code", Value::IntValue(c));
    server
        .ingest(
            None,
            vec![
                otlp::resource_spans(
                    Some("frontend"),
                    vec![],
                    vec![
                        span(0x0a, 1, None, "GET /checkout", SERVER, 0, 100, vec![code(200)], false),
                        span(0x0a, 2, Some(1), "charge", CLIENT, 10, 30, vec![code(502)], true),
                        span(0x0a, 3, Some(1), "lookup", CLIENT, 50, 20, vec![code(200)], false),
                        span(0x0b, 1, None, "GET /home", SERVER, 1000, 50, vec![], false),
                        span(0x0b, 2, Some(1), "lookup", CLIENT, 1010, 10, vec![code(200)], false),
                    ],
                ),
                otlp::resource_spans(
                    Some("cart"),
                    vec![kv("deployment.environment.name", Value::StringValue("staging".into()))],
                    vec![span(0x0c, 1, None, "GET /cart", SERVER, 2000, 10, vec![], false)],
                ),
            ],
        )
        .await;
    // The payment server span arrives later, in its own block.
    server
        .ingest(
            None,
            vec![otlp::resource_spans(
                Some("payment"),
                vec![],
                vec![span(0x0a, 4, Some(2), "charge", SERVER, 12, 25, vec![], true)],
            )],
        )
        .await;
    server
}

async fn search(server: &TestServer, params: &[(&str, &str)]) -> Json {
    let response = server.http.get(server.query_url("/api/search")).query(params).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{params:?}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn trace_ids(response: &Json) -> Vec<String> {
    response["traces"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect()
}

/// A trace id as search results print it: hex without leading zeros.
fn id(t: u8) -> String {
    hex::encode([t; 16]).trim_start_matches('0').to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_matches_the_expected_traces() {
    let server = fixture().await;
    let (a, b, c) = (id(0x0a), id(0x0b), id(0x0c));
    let cases: Vec<(&str, Vec<&String>)> = vec![
        ("{ status = error }", vec![&a]),
        ("{ resource.service.name = \"payment\" }", vec![&a]),
        ("{ span.http.status_code >= 500 }", vec![&a]),
        ("{ .http.status_code = 200 }", vec![&b, &a]),
        ("{ span.http.status_code != 200 }", vec![&a]),
        ("{ kind = server && duration > 60ms }", vec![&a]),
        ("{ name = \"lookup\" } && { name = \"charge\" }", vec![&a]),
        ("{ name = \"GET /home\" } || { rootServiceName = \"cart\" }", vec![&c, &b]),
        ("{ name = \"GET /checkout\" } > { kind = client }", vec![&a]),
        ("{ name = \"GET /home\" } > { kind = server }", vec![]),
        ("{ name = \"GET /checkout\" } >> { resource.service.name = \"payment\" }", vec![&a]),
        ("{ resource.service.name = \"payment\" } << { kind = server }", vec![&a]),
        ("{ kind = client } < { kind = server }", vec![&b, &a]),
        ("{ name = \"lookup\" } ~ { name = \"charge\" }", vec![&a]),
        ("{ } > { kind = server }", vec![&a]),
        ("{ } ~ { name = \"charge\" }", vec![&a]),
        ("{ kind = client } ~ { }", vec![&a]),
        ("{ name = \"lookup\" } < { }", vec![&b, &a]),
        ("{ rootServiceName = \"cart\" }", vec![&c]),
        ("{ traceDuration > 90ms }", vec![&a]),
        ("{ rootName = \"GET /home\" && kind = client }", vec![&b]),
        ("{ kind = client } | count() > 1", vec![&a]),
        ("{ kind = client } | avg(duration) >= 25ms", vec![&a]),
        ("{ .deployment.environment.name = \"staging\" }", vec![&c]),
        ("{ name =~ \"GET /c.*\" }", vec![&c, &a]),
        ("{ name !~ \"GET.*\" && kind = server }", vec![&a]),
        ("{ .missing != \"x\" }", vec![]),
        // B's root and A's payment server span have no status code attribute.
        ("{ .http.status_code = nil && kind = server }", vec![&c, &b, &a]),
        ("{ .http.status_code = nil && kind = client }", vec![]),
        ("{ nestedSetParent < 0 && resource.service.name = \"frontend\" }", vec![&b, &a]),
        ("{ kind = client } | { name = \"charge\" }", vec![&a]),
    ];
    for (q, expected) in cases {
        let response = search(&server, &[("q", q)]).await;
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(trace_ids(&response), expected, "{q}");
    }
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_response_has_tempos_shape() {
    let server = fixture().await;
    let response = search(&server, &[("q", "{ status = error }"), ("spss", "1")]).await;
    let trace = &response["traces"][0];
    assert_eq!(trace["traceID"], id(0x0a));
    assert_eq!(trace["rootServiceName"], "frontend");
    assert_eq!(trace["rootTraceName"], "GET /checkout");
    assert_eq!(trace["startTimeUnixNano"], BASE.to_string());
    assert_eq!(trace["durationMs"], 100);
    // Both error spans matched (one from each block), spss=1 shows one.
    assert_eq!(trace["spanSet"]["matched"], 2);
    assert_eq!(trace["spanSet"]["spans"].as_array().unwrap().len(), 1);
    assert_eq!(trace["spanSets"][0], trace["spanSet"]);
    let span = &trace["spanSet"]["spans"][0];
    assert_eq!(span["spanID"], "0a00000000000002");
    assert_eq!(span["startTimeUnixNano"], (BASE + 10 * MS).to_string());
    assert_eq!(span["durationNanos"], (30 * MS).to_string());
    assert_eq!(span["attributes"], serde_json::json!([{"key": "status", "value": {"stringValue": "error"}}]));
    assert_eq!(trace["serviceStats"]["payment"], serde_json::json!({"spanCount": 1, "errorCount": 1}));
    assert_eq!(trace["serviceStats"]["frontend"], serde_json::json!({"spanCount": 3, "errorCount": 1}));
    assert!(response["metrics"]["inspectedTraces"].as_u64().unwrap() >= 1);

    // Newest first, limited.
    let response = search(&server, &[("q", "{}"), ("limit", "2")]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0c), id(0x0b)]);
    // Trace-level duration bounds.
    let response = search(&server, &[("q", "{}"), ("minDuration", "60ms")]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0a)]);
    let response = search(&server, &[("q", "{}"), ("maxDuration", "20ms")]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0c)]);
    // Time range in Unix seconds: only C's second.
    let second = (BASE / 1_000_000_000 + 2).to_string();
    let response = search(&server, &[("q", "{}"), ("start", &second), ("end", &second)]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0c)]);
    // select() and by()
    let response = search(&server, &[("q", "{ kind = client } | select(span.http.status_code)")]).await;
    let attributes = &response["traces"][1]["spanSet"]["spans"][0]["attributes"];
    // The filter's intrinsics are shown too, as Tempo does.
    assert_eq!(
        attributes,
        &serde_json::json!([
            {"key": "kind", "value": {"stringValue": "client"}},
            {"key": "span.http.status_code", "value": {"intValue": "502"}}
        ])
    );
    let response = search(&server, &[("q", "{ kind = client } | by(name)")]).await;
    assert_eq!(response["traces"][1]["spanSets"].as_array().unwrap().len(), 2);
    // tags= (logfmt)
    let response = search(&server, &[("tags", "service.name=frontend")]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0b), id(0x0a)]);
    let response = search(&server, &[("tags", "http.status_code=502")]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0a)]);
    server.spanlake.shutdown().await;
}

/// An export retried after a lost acknowledgement stores its spans twice,
/// in two blocks, until compaction merges them: search counts them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_stored_twice_is_counted_once() {
    let server = fixture().await;
    let payment = otlp::resource_spans(
        Some("payment"),
        vec![],
        vec![span(0x0a, 4, Some(2), "charge", SERVER, 12, 25, vec![], true)],
    );
    server.ingest(None, vec![payment]).await;
    // A trace in the upper half of the trace-id space (another range of the SQL scan), sent twice.
    for _ in 0..2 {
        server.ingest(None, vec![otlp::trace(0xf1, "late", 2, BASE + 5_000 * MS)]).await;
    }
    // A trace sent twice within one request: one block holds both copies.
    let twice = otlp::trace(0xf3, "twice", 2, BASE + 6_000 * MS);
    server.ingest(None, vec![twice.clone(), twice]).await;
    let response = search(&server, &[("q", "{ status = error }")]).await;
    let trace = &response["traces"][0];
    assert_eq!(trace["spanSet"]["matched"], 2, "{response}");
    assert_eq!(trace["serviceStats"]["payment"], serde_json::json!({"spanCount": 1, "errorCount": 1}));
    let response = search(&server, &[("q", "{ name = \"GET /checkout\" } >> { name = \"charge\" }")]).await;
    assert_eq!(response["traces"][0]["spanSet"]["matched"], 2, "{response}");
    let response = search(&server, &[("q", "{ resource.service.name = \"payment\" } | count() = 1")]).await;
    assert_eq!(trace_ids(&response), vec![id(0x0a)]);
    // SQL: the `spans` table and its views count it once; every stored copy stays visible.
    let count = |rows: serde_json::Value| rows[0]["n"].as_i64().unwrap();
    assert_eq!(count(server.sql_json(None, "SELECT count(*) AS n FROM spans").await), 13);
    assert_eq!(count(server.sql_json(None, "SELECT count(DISTINCT span_id) AS n FROM spans").await), 13);
    assert_eq!(count(server.sql_json(None, "SELECT count(*) AS n FROM spans_as_stored").await), 20);
    let twice = "SELECT count(*) AS n FROM spans WHERE service_name = 'twice'";
    assert_eq!(count(server.sql_json(None, twice).await), 3);
    let response = search(&server, &[("q", "{ resource.service.name = \"twice\" }")]).await;
    assert_eq!(response["traces"][0]["spanSet"]["matched"], 3, "{response}");
    let late = "SELECT count(*) AS n FROM spans WHERE service_name = 'late'";
    assert_eq!(count(server.sql_json(None, late).await), 3);
    let response = search(&server, &[("q", "{ resource.service.name = \"late\" }")]).await;
    assert_eq!(response["traces"][0]["spanSet"]["matched"], 3, "{response}");
    let payment = "SELECT count(*) AS n FROM spans WHERE service_name = 'payment'";
    assert_eq!(count(server.sql_json(None, payment).await), 1);
    let rows = server.sql_json(None, "SELECT span_count AS n FROM traces ORDER BY start_time LIMIT 1").await;
    assert_eq!(count(rows), 4);
    let rows = server.sql_json(None, "SELECT count(*) AS n FROM span_edges").await;
    assert_eq!(count(rows), 8);
    server.spanlake.shutdown().await;
}

/// 1,500 traces root → mid → leaf, the oldest also root → leaf directly:
/// `>` reads only the trace where it holds, a larger expression looks past
/// the newest candidates through the pages read as trace-id ranges, and
/// `>>` finds every trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structural_queries_look_past_the_newest_candidates() {
    let server = TestServer::start().await;
    let traces = 1500u32;
    let mut spans = Vec::new();
    for t in 0..traces {
        let trace_id = {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&t.wrapping_mul(2_654_435_761).to_be_bytes());
            id[15] = 1;
            id
        };
        let at = BASE + u64::from(t) * MS;
        let make = |id: u8, parent: Option<u8>, name: &str| Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: at,
            end_time_unix_nano: at + MS,
            ..Span::default()
        };
        spans.push(make(1, None, "root"));
        spans.push(make(2, Some(1), "mid"));
        spans.push(make(3, Some(if t == 0 { 1 } else { 2 }), "leaf"));
    }
    for chunk in spans.chunks(1500) {
        server.ingest(None, vec![otlp::resource_spans(Some("svc"), vec![], chunk.to_vec())]).await;
    }
    let start = (BASE / 1_000_000_000).to_string();
    let end = (BASE / 1_000_000_000 + 10).to_string();
    let window = |q: &'static str, limit: &'static str| [("q", q), ("start", &start), ("end", &end), ("limit", limit)];
    // `>`: the newest 80 candidates (4 × the limit) hold no match, so a join
    // tells which of the rest do: only the one trace where a leaf's parent
    // is a root is read after them.
    let response = search(&server, &window("{ name = \"root\" } > { name = \"leaf\" }", "20")).await;
    assert_eq!(response["traces"].as_array().unwrap().len(), 1, "{response}");
    assert_eq!(response["traces"][0]["startTimeUnixNano"], BASE.to_string());
    assert_eq!(response["metrics"]["inspectedTraces"], 80 + 1, "{response}");
    // A query that matches nothing reads no trace past the newest page.
    let response = search(&server, &window("{ name = \"leaf\" } > { name = \"root\" }", "20")).await;
    assert_eq!(response["traces"].as_array().unwrap().len(), 0, "{response}");
    assert_eq!(response["metrics"]["inspectedTraces"], 80, "{response}");
    // Inside a larger expression, every trace with both names is a
    // candidate: the newest page gives nothing, the rest are read in pages.
    let q = "({ name = \"root\" } > { name = \"leaf\" }) || { name = \"none\" }";
    let response = search(&server, &window(q, "20")).await;
    assert_eq!(response["traces"].as_array().unwrap().len(), 1, "{response}");
    assert_eq!(response["traces"][0]["startTimeUnixNano"], BASE.to_string());
    assert_eq!(response["metrics"]["inspectedTraces"], traces, "{response}");
    let response = search(&server, &window("{ name = \"root\" } >> { name = \"leaf\" }", "5000")).await;
    assert_eq!(response["traces"].as_array().unwrap().len(), traces as usize);
    let response = search(&server, &window("{ name = \"leaf\" } << { name = \"root\" } | count() = 1", "5000")).await;
    assert_eq!(response["traces"].as_array().unwrap().len(), traces as usize);
    let response = search(&server, &window("{ name = \"mid\" } ~ { name = \"leaf\" }", "5000")).await;
    assert_eq!(response["traces"].as_array().unwrap().len(), 1);
    server.spanlake.shutdown().await;
}

/// What a search holds counts against the per-query pool: over it, 422.
/// Few traces (a small candidate aggregate) of many spans each (large pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_over_its_memory_limit_is_refused() {
    let server = TestServer::start_with(|a| a.querier.sql_memory_limit = 256 << 10).await;
    let spans: Vec<Span> = (0..20_000u32)
        .map(|i| Span {
            trace_id: [&(i % 20).to_be_bytes()[..], &[7u8; 12]].concat(),
            span_id: (u64::from(i) + 1).to_be_bytes().to_vec(),
            parent_span_id: if i < 20 { vec![] } else { (u64::from(i % 20) + 1).to_be_bytes().to_vec() },
            name: format!("operation number {i}"),
            start_time_unix_nano: BASE + u64::from(i) * MS,
            end_time_unix_nano: BASE + u64::from(i) * MS + MS,
            ..Span::default()
        })
        .collect();
    server.ingest(None, vec![otlp::resource_spans(Some("svc"), vec![], spans)]).await;
    let start = (BASE / 1_000_000_000).to_string();
    let end = (BASE / 1_000_000_000 + 60).to_string();
    let params = [("q", "{ } >> { }"), ("start", start.as_str()), ("end", end.as_str()), ("limit", "20")];
    let response = server.http.get(server.query_url("/api/search")).query(&params).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body = response.text().await.unwrap();
    assert!(body.contains("the traces this search reads hold more than the per-query memory limit"), "{body}");
    // Tag values count against the same pool: 20,000 distinct names (here
    // the distinct aggregate is refused first; the collected values count too).
    let params = [("start", start.as_str()), ("end", end.as_str()), ("limit", "100000")];
    let response =
        server.http.get(server.query_url("/api/v2/search/tag/name/values")).query(&params).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("memory limit"), "{body}");
    server.spanlake.shutdown().await;
}

#[tokio::test]
async fn bad_search_parameters_are_400_with_a_position() {
    let server = TestServer::start().await;
    for (params, expected) in [
        (vec![("q", "{ .a = }")], "parse error at column 8"),
        (vec![("q", "{ .a = 1"), ("limit", "5")], "expected '}'"),
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "ten")], "not a non-negative integer"),
        (vec![("spss", "1000")], "spss"),
        (vec![("minDuration", "fast")], "not a duration"),
        (vec![("start", "100"), ("end", "50")], "must be after start"),
        (vec![("q", "{}"), ("tags", "a=b")], "not both"),
        (vec![("q", "{ status = 5 }")], "column 10: status compares with a status"),
        (vec![("q", "{ kind = 5 }")], "column 8: kind compares with a span kind"),
        (vec![("q", "{ duration = \"x\" }")], "column 12: duration compares with a duration"),
    ] {
        let response = server.http.get(server.query_url("/api/search")).query(&params).send().await.unwrap();
        assert_eq!(response.status(), 400, "{params:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains(expected), "{params:?}: {body}");
    }
    server.spanlake.shutdown().await;
}

async fn get_json(server: &TestServer, path: &str, params: &[(&str, &str)]) -> Json {
    let response = server.http.get(server.query_url(path)).query(params).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{path} {params:?}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_names_and_values_for_grafana() {
    let server = fixture().await;
    let v1 = get_json(&server, "/api/search/tags", &[]).await;
    assert_eq!(v1["tagNames"], serde_json::json!(["deployment.environment.name", "http.status_code", "service.name"]));

    let v2 = get_json(&server, "/api/v2/search/tags", &[("limit", "5000")]).await;
    let scope =
        |name: &str| v2["scopes"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["tags"].clone();
    assert_eq!(scope("resource"), serde_json::json!(["deployment.environment.name", "service.name"]));
    assert_eq!(scope("span"), serde_json::json!(["http.status_code"]));
    assert!(scope("intrinsic").as_array().unwrap().contains(&serde_json::json!("rootServiceName")));
    let only_span = get_json(&server, "/api/v2/search/tags", &[("scope", "span")]).await;
    assert_eq!(only_span["scopes"].as_array().unwrap().len(), 1);

    let values = get_json(&server, "/api/search/tag/service.name/values", &[]).await;
    assert_eq!(values["tagValues"], serde_json::json!(["cart", "frontend", "payment"]));

    let typed = get_json(&server, "/api/v2/search/tag/resource.service.name/values", &[]).await;
    assert_eq!(
        typed["tagValues"],
        serde_json::json!([
            {"type": "string", "value": "cart"},
            {"type": "string", "value": "frontend"},
            {"type": "string", "value": "payment"}
        ])
    );
    let ints = get_json(&server, "/api/v2/search/tag/span.http.status_code/values", &[]).await;
    assert_eq!(
        ints["tagValues"],
        serde_json::json!([{"type": "int", "value": "200"}, {"type": "int", "value": "502"}])
    );
    let status = get_json(&server, "/api/v2/search/tag/status/values", &[]).await;
    assert_eq!(
        status["tagValues"],
        serde_json::json!([{"type": "keyword", "value": "error"}, {"type": "keyword", "value": "unset"}])
    );
    // Narrowed by q; an incomplete q filters nothing.
    let narrowed =
        get_json(&server, "/api/v2/search/tag/name/values", &[("q", "{ resource.service.name = \"cart\" }")]).await;
    assert_eq!(narrowed["tagValues"], serde_json::json!([{"type": "string", "value": "GET /cart"}]));
    let lenient =
        get_json(&server, "/api/v2/search/tag/resource.service.name/values", &[("q", "{ resource.service.name = }")])
            .await;
    assert_eq!(lenient["tagValues"].as_array().unwrap().len(), 3);
    // Not an identifier: 400.
    let response = server.http.get(server.query_url("/api/v2/search/tag/%7B%7D/values")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    server.spanlake.shutdown().await;
}

/// A plain search (one filter, or none) reads the newest part of the window
/// first and widens it until a first page of traces is there: the answer is
/// the newest traces of the whole window, as if it had read all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_searches_answer_the_newest_traces_of_the_whole_window() {
    let server = TestServer::start().await;
    const MINUTE: u64 = 60_000 * MS;
    // 240 traces, one every 30 s over two hours; the 10 oldest are errors.
    let spans: Vec<Span> = (0..240u32)
        .map(|t| {
            let at = BASE + u64::from(t) * MINUTE / 2;
            Span {
                trace_id: [&t.to_be_bytes()[..], &[9u8; 12]].concat(),
                span_id: (u64::from(t) + 1).to_be_bytes().to_vec(),
                name: if t < 10 { "failed".into() } else { "fine".into() },
                start_time_unix_nano: at,
                end_time_unix_nano: at + MS,
                ..Span::default()
            }
        })
        .collect();
    server.ingest(None, vec![otlp::resource_spans(Some("svc"), vec![], spans)]).await;
    let start = (BASE / 1_000_000_000).to_string();
    let end = ((BASE + 240 * MINUTE / 2) / 1_000_000_000).to_string();
    let starts = |response: &Json| -> Vec<u64> {
        response["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["startTimeUnixNano"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    for q in ["{ }", "{ name = \"fine\" }"] {
        let response = search(&server, &[("q", q), ("start", &start), ("end", &end), ("limit", "20")]).await;
        let expected: Vec<u64> = (220..240u64).rev().map(|t| BASE + t * MINUTE / 2).collect();
        assert_eq!(starts(&response), expected, "{q}");
    }
    // Matches only at the far end of the window: found by widening to all of it.
    let response =
        search(&server, &[("q", "{ name = \"failed\" }"), ("start", &start), ("end", &end), ("limit", "20")]).await;
    let expected: Vec<u64> = (0..10u64).rev().map(|t| BASE + t * MINUTE / 2).collect();
    assert_eq!(starts(&response), expected);
    server.spanlake.shutdown().await;
}

/// A structural search reads the newest part of the window first too, and
/// widens it until `limit` traces match: it answers the newest matches of the
/// whole window without reading every candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structural_searches_read_the_newest_part_of_the_window_first() {
    let server = TestServer::start().await;
    const MINUTE: u64 = 60_000 * MS;
    // 240 traces root → child, one every 30 s over two hours; the children
    // of the 10 oldest are errors.
    let mut spans = Vec::new();
    for t in 0..240u32 {
        let at = BASE + u64::from(t) * MINUTE / 2;
        let make = |id: u8, parent: Option<u8>, name: &str| Span {
            trace_id: [&t.to_be_bytes()[..], &[7u8; 12]].concat(),
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: name.into(),
            start_time_unix_nano: at,
            end_time_unix_nano: at + MS,
            ..Span::default()
        };
        spans.push(make(1, None, "root"));
        spans.push(make(2, Some(1), if t < 10 { "failed" } else { "fine" }));
    }
    server.ingest(None, vec![otlp::resource_spans(Some("svc"), vec![], spans)]).await;
    let start = (BASE / 1_000_000_000).to_string();
    let end = ((BASE + 240 * MINUTE / 2) / 1_000_000_000).to_string();
    let ask = |q: &'static str| {
        let (start, end) = (start.clone(), end.clone());
        let server = &server;
        async move { search(server, &[("q", q), ("start", &start), ("end", &end), ("limit", "20")]).await }
    };
    let starts = |response: &Json| -> Vec<u64> {
        response["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["startTimeUnixNano"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let newest: Vec<u64> = (220..240u64).rev().map(|t| BASE + t * MINUTE / 2).collect();
    for q in ["{ name = \"root\" } > { }", "{ } >> { name = \"fine\" }", "{ name = \"fine\" } && { name = \"root\" }"] {
        let response = ask(q).await;
        assert_eq!(starts(&response), newest, "{q}: {response}");
        // The newest minute, 8 minutes, then a page of 80 of the newest 64
        // minutes: not the 240 traces of the whole window.
        let inspected = response["metrics"]["inspectedTraces"].as_u64().unwrap();
        assert!(inspected < 240, "{q} read {inspected} traces: {response}");
    }
    // Matches only at the far end of the window: no candidate in the newest
    // minute, so matches are rare; the join over the whole window finds them.
    let response = ask("{ name = \"root\" } > { name = \"failed\" }").await;
    let oldest: Vec<u64> = (0..10u64).rev().map(|t| BASE + t * MINUTE / 2).collect();
    assert_eq!(starts(&response), oldest, "{response}");
    // Every trace is a candidate, none matches: the newest minute's page
    // (1 trace: the window ends a second after the newest starts) matches
    // nothing, so matches are rare, and a join over the whole window finds
    // no other trace worth reading.
    let response = ask("{ name = \"root\" } > { name = \"root\" }").await;
    assert_eq!(starts(&response), Vec::<u64>::new(), "{response}");
    assert_eq!(response["metrics"]["inspectedTraces"], 1, "{response}");
    // An expression the join cannot narrow reads the candidates instead, and
    // finds the matches two hours back.
    let response =
        ask("{ name = \"root\" } > { name = \"failed\" } || { name = \"fine\" } > { name = \"root\" }").await;
    assert_eq!(starts(&response), oldest, "{response}");
    server.spanlake.shutdown().await;
}

/// Drilldown's structure tab: union structural operators, negated ones,
/// hints, and the nested-set numbers it draws the tree from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_and_negated_structural_operators_and_nested_sets() {
    let server = fixture().await;
    let (a, b) = (id(0x0a), id(0x0b));
    let names = |response: &Json| -> Vec<String> {
        let mut names: Vec<String> = response["traces"][0]["spanSet"]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    // `&>`: the children and their parents.
    let response = search(&server, &[("q", "{ name = \"GET /checkout\" } &> { name = \"charge\" }")]).await;
    assert_eq!(trace_ids(&response), vec![a.clone()]);
    assert_eq!(response["traces"][0]["spanSet"]["matched"], 2, "{response}");
    assert_eq!(names(&response), ["GET /checkout", "charge"]);
    // `&>>`, as Drilldown writes it: the servers below the root, and the root.
    let q =
        "({ name = \"GET /checkout\" } &>> { kind = server }) || ({ name = \"GET /checkout\" }) with(most_recent=true)";
    let response = search(&server, &[("q", q), ("spss", "10")]).await;
    assert_eq!(names(&response), ["GET /checkout", "charge"]);
    // `!>`: client spans whose parent is not `GET /home`: trace A's two, not B's.
    let response = search(&server, &[("q", "{ name = \"GET /home\" } !> { kind = client }")]).await;
    assert_eq!(trace_ids(&response), vec![a.clone()]);
    assert_eq!(response["traces"][0]["spanSet"]["matched"], 2, "{response}");
    // `!~` between spansets is "not sibling": B's lookup has no sibling named charge.
    let response = search(&server, &[("q", "{ name = \"charge\" } !~ { name = \"lookup\" }")]).await;
    assert_eq!(trace_ids(&response), vec![b]);
    // Nested sets: trace A's root spans the walk of its four spans, 1 to 8.
    let q = "{ name = \"GET /checkout\" } | select(nestedSetLeft, nestedSetRight, nestedSetParent)";
    let response = search(&server, &[("q", q)]).await;
    let attributes = &response["traces"][0]["spanSet"]["spans"][0]["attributes"];
    let value = |key: &str| {
        attributes.as_array().unwrap().iter().find(|a| a["key"] == key).map(|a| a["value"]["intValue"].clone())
    };
    assert_eq!(value("nestedSetLeft"), Some(serde_json::json!("1")), "{response}");
    assert_eq!(value("nestedSetRight"), Some(serde_json::json!("8")));
    assert_eq!(value("nestedSetParent"), Some(serde_json::json!("-1")));
    server.spanlake.shutdown().await;
}
