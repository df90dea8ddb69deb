//! Hostile and oversized queries against the real binary: every query entry
//! point answers 400 naming the limit (or answers normally within it), and
//! the process, ingest included, stays up. Deep input used to overflow a
//! thread stack, which aborts the whole process.

use spanlake_test_support::http::query_url;
use spanlake_test_support::otlp;

use crate::common::spawn_spanlake;

/// Inputs that nest or chain far beyond every limit (a few KB each), and
/// some right at the limits.
fn traceql_inputs() -> Vec<String> {
    vec![
        format!("{{{}true}}", "!".repeat(2000)),
        vec!["{}"; 2000].join("||"),
        format!("{{ {} }}", vec![".a = 1"; 1000].join(" && ")),
        format!("{}{{}}{}", "(".repeat(2000), ")".repeat(2000)),
        format!("{{ {}.a{} = 1 }}", "(".repeat(2000), ")".repeat(2000)),
        format!("{{ .a = {} }}", vec!["2"; 2000].join(" ^ ")),
        format!("{{ .a = {}1 }}", "-".repeat(2000)),
        vec!["{}"; 2000].join(">>"),
        // At the limits: these must run (and not crash).
        format!("{{ {} }}", vec![".a = 1"; 128].join(" || ")),
        format!("{}{{ .a = 1 }}{}", "(".repeat(62), ")".repeat(62)),
        format!("{{ {}true }}", "!".repeat(61)),
    ]
}

fn sql_inputs() -> Vec<String> {
    vec![
        format!("SELECT {}", vec!["1"; 3000].join("+")),
        format!("SELECT 1 WHERE {}", vec!["true"; 3000].join(" OR ")),
        format!("SELECT {}true", "NOT ".repeat(3000)),
        format!("SELECT {}1{}", "(".repeat(3000), ")".repeat(3000)),
        format!("SELECT 1{}", "::int".repeat(3000)),
        format!("SELECT {}", "- ".repeat(3000) + "1"),
        format!("SELECT {}1{}", "CASE WHEN true THEN ".repeat(2000), " END".repeat(2000)),
        // At the limits: these must run.
        format!("SELECT {} AS n", vec!["1"; 1000].join("+")),
        format!("SELECT count(*) AS n FROM spans WHERE {}", vec!["name = 'x'"; 333].join(" OR ")),
        // DataFusion's parser allows 50 levels of recursion (unary NOT, parentheses).
        format!("SELECT {}1{} AS n", "(".repeat(40), ")".repeat(40)),
        format!("SELECT {}true AS n", "NOT ".repeat(40)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_long_queries_never_take_the_process_down() {
    let dir = tempfile::TempDir::new().unwrap();
    let process = spawn_spanlake(&["--storage", dir.path().to_str().unwrap()]);
    let http = reqwest::Client::new();
    let url = |path: &str| query_url(process.http, path);
    let mut answers = Vec::new();
    for q in traceql_inputs() {
        for request in [
            http.get(url("/api/search")).query(&[("q", q.as_str())]),
            http.get(url("/api/fanout")).query(&[("q", q.as_str())]),
            http.get(url("/api/v2/search/tag/span.a/values")).query(&[("q", q.as_str())]),
            http.get(url("/api/metrics/query_range")).query(&[("q", format!("{q} | rate()").as_str())]),
        ] {
            let response = request.send().await.expect("the querier answers");
            answers.push((response.status().as_u16(), response.text().await.unwrap(), q.len()));
        }
        // As a tag identifier it is simply not an identifier.
        let response = http.get(url(&format!("/api/v2/search/tag/{}/values", urlencode(&q)))).send().await.unwrap();
        assert_eq!(response.status(), 400);
    }
    let tags = (0..3000).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(" ");
    let response = http.get(url("/api/search")).query(&[("tags", tags.as_str())]).send().await.unwrap();
    let (status, body) = (response.status().as_u16(), response.text().await.unwrap());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit of 64"), "{body}");
    for q in sql_inputs() {
        let started = std::time::Instant::now();
        let response = http.post(url("/api/sql")).body(q.clone()).send().await.expect("the querier answers");
        eprintln!("{} bytes of SQL answered {} in {:?}", q.len(), response.status(), started.elapsed());
        answers.push((response.status().as_u16(), response.text().await.unwrap(), q.len()));
    }
    for (status, body, len) in &answers {
        assert!(*status == 200 || *status == 400, "{status} for a {len}-byte query: {body}");
        if *status == 400 && *len > 2000 {
            assert!(body.contains("limit"), "a refusal names the limit: {body}");
        }
    }
    assert!(answers.iter().filter(|(status, ..)| *status == 200).count() >= 7, "queries within the limits run");
    // Still up, ingest included.
    assert_eq!(http.get(url("/api/echo")).send().await.unwrap().text().await.unwrap(), "echo");
    let grpc = format!("http://{}", process.grpc.unwrap());
    let mut client =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(grpc)
            .await
            .unwrap();
    let request = otlp::request(vec![otlp::trace(7, "shop", 1, otlp::BASE_NS)]);
    client.export(request).await.expect("ingest still works");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'.' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
