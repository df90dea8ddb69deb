//! TraceQL metrics (`/api/metrics/query_range`, `/api/metrics/query`) over
//! traces with known counts, exported by the official OTLP exporter: the
//! queries Grafana's Traces Drilldown sends (reference §5.3), checked value
//! by value, and the JSON shapes snapshot-tested.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use serde_json::Value;

use crate::common::TestServer;

/// The first minute of the data, Unix seconds (a multiple of 600).
const T0: i64 = 1_764_000_000;
const MINUTES: usize = 5;

fn trace_id(minute: usize, j: usize) -> u128 {
    0x7e00_0000_0000_0000_0000_0000_0000_0000 | ((minute as u128) << 8) | j as u128
}

#[allow(clippy::too_many_arguments)]
fn span(
    trace: u128,
    id: u64,
    parent: Option<u64>,
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    start: SystemTime,
    duration: Duration,
    error: bool,
    attributes: Vec<KeyValue>,
) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(trace),
            SpanId::from(id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent.map(SpanId::from).unwrap_or(SpanId::INVALID),
        parent_span_is_remote: false,
        span_kind: kind,
        name: name.into(),
        start_time: start,
        end_time: start + duration,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if error { Status::error("declined") } else { Status::Unset },
        instrumentation_scope: InstrumentationScope::builder("shop").build(),
    }
}

/// In minute m (0..5), m+1 traces, 10 s into the minute, 1 ms apart: a
/// frontend root server span (3 ms; every odd one an error) → a checkout
/// server span (100 ms) → a checkout postgres client span (1 ms).
fn fixture() -> (Vec<SpanData>, Vec<SpanData>) {
    let (mut frontend, mut checkout) = (Vec::new(), Vec::new());
    for minute in 0..MINUTES {
        for j in 0..=minute {
            let trace = trace_id(minute, j);
            let start = SystemTime::UNIX_EPOCH
                + Duration::from_secs((T0 + 60 * minute as i64 + 10) as u64)
                + Duration::from_millis(j as u64);
            let route = KeyValue::new("http.route", if j == 0 { "/checkout" } else { "/cart" });
            frontend.push(span(
                trace,
                1,
                None,
                "GET /checkout",
                SpanKind::Server,
                start,
                Duration::from_millis(3),
                j % 2 == 1,
                vec![route],
            ));
            checkout.push(span(
                trace,
                2,
                Some(1),
                "charge",
                SpanKind::Server,
                start,
                Duration::from_millis(100),
                false,
                vec![],
            ));
            checkout.push(span(
                trace,
                3,
                Some(2),
                "SELECT",
                SpanKind::Client,
                start,
                Duration::from_millis(1),
                false,
                vec![KeyValue::new("db.system.name", "postgresql")],
            ));
        }
    }
    (frontend, checkout)
}

async fn export(server: &TestServer, service: &'static str, spans: Vec<SpanData>) {
    let mut exporter = server.http_exporter();
    exporter.set_resource(&Resource::builder_empty().with_service_name(service).build());
    exporter.export(spans).await.expect("export acknowledged");
}

async fn start() -> TestServer {
    let server = TestServer::start().await;
    let (frontend, checkout) = fixture();
    export(&server, "frontend", frontend.clone()).await;
    export(&server, "checkout", checkout).await;
    // A retried export: its spans count once.
    export(&server, "frontend", frontend).await;
    server
}

async fn get(server: &TestServer, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let response = server.http.get(server.query_url(path)).query(params).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A range query over the 10 minutes from `T0` with a 60 s step.
async fn range(server: &TestServer, q: &str) -> Value {
    range_with(server, q, &[]).await
}

async fn range_with(server: &TestServer, q: &str, extra: &[(&str, &str)]) -> Value {
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    let mut params = vec![("q", q), ("start", start.as_str()), ("end", end.as_str()), ("step", "60s")];
    params.extend_from_slice(extra);
    let (status, body) = get(server, "/api/metrics/query_range", &params).await;
    assert_eq!(status, 200, "{q}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Samples as (timestamp in s, value).
type Samples = Vec<(i64, f64)>;

/// Each series as (labels as `key=value` text, samples).
fn series(answer: &Value) -> Vec<(Vec<String>, Samples)> {
    answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let value = l["value"].as_object().unwrap().values().next().unwrap();
                    format!(
                        "{}={}",
                        l["key"].as_str().unwrap(),
                        value.as_str().map_or(value.to_string(), str::to_owned)
                    )
                })
                .collect();
            let samples = s["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let ms: i64 = p["timestampMs"].as_str().unwrap().parse().unwrap();
                    (ms / 1000, p["value"].as_f64().unwrap_or(0.0))
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

/// Per 60 s bucket ending at T0, T0+60, …, T0+600: `per_minute(m)` for
/// the bucket holding minute m's spans, else 0.
fn dense(per_minute: impl Fn(usize) -> f64) -> Vec<(i64, f64)> {
    (0..=10).map(|i| (T0 + 60 * i as i64, if (1..=MINUTES).contains(&i) { per_minute(i - 1) } else { 0.0 })).collect()
}

fn close(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && (x.1 - y.1).abs() <= 1e-12 * y.1.abs().max(1.0))
}

/// Tempo's quantile of `count` spans all in the power-of-two bucket 2^power ns, in seconds.
fn one_bucket_quantile(count: usize, q: f64, power: i32) -> f64 {
    let rank = ((q * count as f64).ceil() as usize).max(1);
    2f64.powf(f64::from(power - 1) + rank as f64 / count as f64) * 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drilldown_queries_answer_the_known_counts() {
    let server = start().await;

    // RED rate: root spans per second, one series named by the function.
    let answer = range(&server, "{nestedSetParent<0 && true} | rate()  with(sample=true)").await;
    let got = series(&answer);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ["__name__=rate"]);
    assert!(close(&got[0].1, &dense(|m| (m + 1) as f64 / 60.0)), "{:?}", got[0].1);
    // Exemplars point at stored traces, inside their buckets.
    let exemplars = answer["series"][0]["exemplars"].as_array().expect("exemplars");
    assert!(!exemplars.is_empty() && exemplars.len() <= 100);
    for e in exemplars {
        let id = e["labels"][0]["value"]["stringValue"].as_str().unwrap();
        assert_eq!(e["labels"][0]["key"], "trace:id");
        assert!(id.starts_with("7e"), "{id}");
        let ms: i64 = e["timestampMs"].as_str().unwrap().parse().unwrap();
        assert!((T0 * 1000..(T0 + 300) * 1000).contains(&ms));
        assert!(e["value"].as_f64().unwrap() > 0.0);
        // The newest root of its minute: the trace that starts it names.
        let minute = (ms / 1000 - T0) as usize / 60;
        assert_eq!(ms, (T0 + 60 * minute as i64 + 10) * 1000 + minute as i64, "{e}");
        assert_eq!(id, format!("{:032x}", trace_id(minute, minute)), "{e}");
    }

    // RED errors.
    let got = series(&range(&server, "{nestedSetParent<0 && true && status=error} | rate()  with(sample=true)").await);
    assert!(close(&got[0].1, &dense(|m| (m + 1).div_euclid(2) as f64 / 60.0)), "{:?}", got[0].1);

    // Breakdown: rate by service, and counts (a retried export counts once).
    let got = series(&range(&server, "{ } | count_over_time() by(resource.service.name)").await);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, ["resource.service.name=checkout"]);
    assert!(close(&got[0].1, &dense(|m| 2.0 * (m + 1) as f64)));
    assert_eq!(got[1].0, ["resource.service.name=frontend"]);
    assert!(close(&got[1].1, &dense(|m| (m + 1) as f64)));

    // The duration heatmap: only `__bucket`, in seconds (3 ms → 2^22 ns).
    let got =
        series(&range(&server, "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)").await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ["__bucket=0.004194304"]);
    assert!(close(&got[0].1, &dense(|m| (m + 1) as f64)));
    let got = series(&range(&server, "{ } | histogram_over_time(duration)").await);
    let buckets: Vec<&str> = got.iter().map(|s| s.0[0].as_str()).collect();
    assert_eq!(buckets, ["__bucket=0.001048576", "__bucket=0.004194304", "__bucket=0.134217728"]);

    // Breakdown by duration: quantiles per service, with `p`.
    let got = series(
        &range(&server, "{ kind = server } | quantile_over_time(duration, 0.5, 0.9) by(resource.service.name)").await,
    );
    let labels: Vec<Vec<String>> = got.iter().map(|s| s.0.clone()).collect();
    assert_eq!(
        labels,
        [
            ["resource.service.name=checkout", "p=0.5"],
            ["resource.service.name=checkout", "p=0.9"],
            ["resource.service.name=frontend", "p=0.5"],
            ["resource.service.name=frontend", "p=0.9"],
        ]
    );
    for (s, (q, power)) in got.iter().zip([(0.5, 27), (0.9, 27), (0.5, 22), (0.9, 22)]) {
        assert!(close(&s.1, &dense(|m| one_bucket_quantile(m + 1, q, power))), "{:?} {:?}", s.0, s.1);
    }
    // Quantile exemplars carry their span's duration, in seconds.
    let answer =
        range(&server, "{ kind = server } | quantile_over_time(duration, 0.5) by(resource.service.name)").await;
    for (series, duration) in answer["series"].as_array().unwrap().iter().zip([0.1, 0.003]) {
        let exemplars = series["exemplars"].as_array().expect("exemplars");
        assert!(!exemplars.is_empty());
        assert!(exemplars.iter().all(|e| (e["value"].as_f64().unwrap() - duration).abs() < 1e-9), "{series}");
    }

    // Min, max, average and sum of durations, in seconds; empty buckets have no sample.
    let got = series(&range(&server, "{ resource.service.name = \"checkout\" } | avg_over_time(duration)").await);
    assert_eq!(got[0].0, ["__name__=avg_over_time"]);
    let expected: Vec<(i64, f64)> = (1..=5).map(|i| (T0 + 60 * i, 0.0505)).collect();
    assert!(close(&got[0].1, &expected), "{:?}", got[0].1);
    let got = series(&range(&server, "{ } | max_over_time(duration) by(kind)").await);
    assert_eq!(got.iter().map(|s| s.0[0].clone()).collect::<Vec<_>>(), ["kind=client", "kind=server"]);
    assert!(close(&got[1].1, &(1..=5).map(|i| (T0 + 60 * i, 0.1)).collect::<Vec<_>>()));
    let got = series(&range(&server, "{ kind = client } | sum_over_time(duration)").await);
    assert!(close(&got[0].1, &(1..=5).map(|i| (T0 + 60 * i, 0.001 * i as f64)).collect::<Vec<_>>()));

    // topk: at every timestamp the busiest service; comparison filters.
    let got = series(&range(&server, "{ } | count_over_time() by(resource.service.name) | topk(1)").await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ["resource.service.name=checkout"]);
    let got = series(&range(&server, "{ } | count_over_time() by(resource.service.name) > 6").await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, [(T0 + 240, 8.0), (T0 + 300, 10.0)]);

    // Breakdown as Drilldown sends it: only spans with the attribute, by it.
    let q = "{nestedSetParent<0 && true && span.http.route != nil} | rate() by(span.http.route)";
    let got = series(&range(&server, q).await);
    assert_eq!(
        got.iter().map(|s| s.0[0].clone()).collect::<Vec<_>>(),
        ["span.http.route=/cart", "span.http.route=/checkout"]
    );
    assert!(close(&got[0].1, &dense(|m| m as f64 / 60.0)));
    assert!(close(&got[1].1, &dense(|_| 1.0 / 60.0)));

    // maxSeries: the answer is cut, and says so as Tempo does.
    let answer = range_with(&server, "{ } | count_over_time() by(resource.service.name)", &[("maxSeries", "1")]).await;
    assert_eq!(answer["series"].as_array().unwrap().len(), 1);
    assert_eq!(answer["status"], "PARTIAL");
    assert!(answer["message"].as_str().unwrap().contains("maximum series limit of 1"));

    // Trace-level fields: the root's service and name, the trace's duration.
    let q = "{ rootServiceName = \"frontend\" && traceDuration >= 100ms } | count_over_time() by(rootName)";
    let got = series(&range(&server, q).await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ["rootName=GET /checkout"]);
    assert!(close(&got[0].1, &dense(|m| 3.0 * (m + 1) as f64)), "{:?}", got[0].1);

    // by() a value some spans lack: those form the "nil" series.
    let got = series(&range(&server, "{ kind = server } | count_over_time() by(span.http.route)").await);
    let labels: Vec<String> = got.iter().map(|s| s.0[0].clone()).collect();
    assert_eq!(labels, ["span.http.route=/cart", "span.http.route=/checkout", "span.http.route=nil"]);
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_splits_selection_and_baseline_by_attribute_value() {
    let server = start().await;
    // As Drilldown asks: the step is the whole range.
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    let params = [
        ("q", "{nestedSetParent<0 && true} | compare({status = error}, 10)"),
        ("start", &start),
        ("end", &end),
        ("step", "600s"),
    ];
    let (status, body) = get(&server, "/api/metrics/query_range", &params).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let total = |labels: &[&str]| -> Option<f64> {
        series(&answer).into_iter().find(|(l, _)| l == labels).map(|(_, samples)| samples.iter().map(|s| s.1).sum())
    };
    // 15 roots, 6 of them errors.
    assert_eq!(total(&["__meta_type=selection", "status=error"]), Some(6.0));
    assert_eq!(total(&["__meta_type=selection_total", "status=nil"]), Some(6.0));
    assert_eq!(total(&["__meta_type=baseline", "status=unset"]), Some(9.0));
    assert_eq!(total(&["__meta_type=baseline_total", "status=nil"]), Some(9.0));
    assert_eq!(total(&["__meta_type=selection", "resource.service.name=frontend"]), Some(6.0));
    assert_eq!(total(&["__meta_type=baseline", "span.http.route=/checkout"]), Some(5.0));
    assert_eq!(total(&["__meta_type=baseline", "span.http.route=/cart"]), Some(4.0));
    assert_eq!(total(&["__meta_type=selection", "span.http.route=/cart"]), Some(6.0));
    assert_eq!(total(&["__meta_type=selection", "name=GET /checkout"]), Some(6.0));
    // Only the filter's spans are compared: no checkout spans anywhere.
    assert_eq!(total(&["__meta_type=baseline", "resource.service.name=checkout"]), None);

    // A selection window (Drilldown's heatmap selection): only errors in minute 1.
    let (from, to) = ((T0 + 60) * 1_000_000_000, (T0 + 120) * 1_000_000_000);
    let q = format!("{{nestedSetParent<0 && true}} | compare({{status = error}}, 10, {from}, {to})");
    let answer = range_with(&server, &q, &[]).await;
    let selected: f64 = series(&answer)
        .into_iter()
        .find(|(l, _)| l == &["__meta_type=selection", "status=error"])
        .map(|(_, s)| s.iter().map(|x| x.1).sum())
        .unwrap();
    assert_eq!(selected, 1.0);
    server.spanlake.shutdown().await;
}

/// The Drilldown home page (v2.1): step = the whole range, and a histogram with no step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_page_queries_with_a_whole_range_step_or_none() {
    let server = start().await;
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    let q = "{nestedSetParent < 0 && status = error} | count_over_time() by (resource.service.name)";
    let params = [("q", q), ("start", start.as_str()), ("end", end.as_str()), ("step", "600s")];
    let (status, body) = get(&server, "/api/metrics/query_range", &params).await;
    assert_eq!(status, 200, "{body}");
    let got = series(&serde_json::from_str(&body).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, ["resource.service.name=frontend"]);
    assert_eq!(got[0].1.iter().map(|s| s.1).sum::<f64>(), 6.0);
    // No step: Tempo's default for 10 minutes, 2 s; every root in some bucket.
    let params = [("q", "{nestedSetParent<0} | histogram_over_time(duration)"), ("start", &start), ("end", &end)];
    let (status, body) = get(&server, "/api/metrics/query_range", &params).await;
    assert_eq!(status, 200, "{body}");
    let got = series(&serde_json::from_str(&body).unwrap());
    assert_eq!(got[0].1.len(), 301, "600 s in 2 s steps, plus the leading bucket");
    assert_eq!(got[0].1.iter().map(|s| s.1).sum::<f64>(), 15.0);
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_queries_answer_one_value_per_series() {
    let server = start().await;
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    let params = [("q", "{ } | count_over_time() by(resource.service.name)"), ("start", &start), ("end", &end)];
    let (status, body) = get(&server, "/api/metrics/query", &params).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let values: Vec<(String, f64)> = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["labels"][0]["value"]["stringValue"].as_str().unwrap().to_owned(), s["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(values, [("checkout".to_owned(), 30.0), ("frontend".to_owned(), 15.0)]);
    assert!(answer["series"][0].get("samples").is_none() && answer["series"][0].get("exemplars").is_none());
    // Rate over the whole instant window: 15 roots in 600 s.
    let params = [("q", "{ nestedSetParent < 0 } | rate()"), ("start", &start), ("end", &end)];
    let (_, body) = get(&server, "/api/metrics/query", &params).await;
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!((answer["series"][0]["value"].as_f64().unwrap() - 15.0 / 600.0).abs() < 1e-12, "{answer}");
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metrics_requests_are_refused_with_what_is_wrong() {
    let server = TestServer::start().await;
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    for (params, status, message) in [
        (
            vec![("q", "{ } | rate()"), ("start", &start), ("end", &end), ("step", "10ms")],
            400,
            "minimum step for given range is 1s",
        ),
        (vec![("q", "{ } | rate()"), ("start", &end), ("end", &start)], 400, "end must be greater than start"),
        (vec![("q", "{ } | rate()"), ("start", "yesterday")], 400, "invalid parameter start"),
        (vec![("q", "{ }"), ("start", &start), ("end", &end)], 400, "not a metrics query"),
        (vec![("q", "{ } | rate(")], 400, "parse error"),
        (vec![("start", &start), ("end", &end)], 400, "a TraceQL metrics query is required"),
        (vec![("q", "{ } > { } | rate()"), ("start", &start), ("end", &end)], 400, "not supported yet"),
        (vec![("q", "{ } | rate()"), ("start", "0"), ("end", "200000")], 400, "maximum allowed duration of 24h0m0s"),
    ] {
        let (got, body) = get(&server, "/api/metrics/query_range", &params).await;
        assert_eq!((got, body.contains(message)), (status, true), "{params:?}: {body}");
    }
    // Drilldown's configuration probe: `{} | rate()` over the last minute, no step.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (probe_start, probe_end) = ((now - 60).to_string(), now.to_string());
    let params = [("q", "{} | rate()"), ("start", probe_start.as_str()), ("end", probe_end.as_str())];
    let (status, body) = get(&server, "/api/metrics/query_range", &params).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("localblocks processor not found"));
    // An empty answer, not an error, where there is no data.
    let (status, body) = get(&server, "/api/metrics/query_range", &[("q", "{ } | rate()"), ("since", "15m")]).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["series"], serde_json::json!([]));
    server.spanlake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_json_shapes() {
    let server = start().await;
    let (start, end) = (T0.to_string(), (T0 + 600).to_string());
    let q = "{nestedSetParent<0 && true} | rate() by(resource.service.name)";
    let range = range_with(&server, q, &[("exemplars", "4")]).await;
    insta::assert_json_snapshot!("metrics_query_range", range, { ".metrics.totalBlockBytes" => "[bytes]" });
    let (_, body) = get(&server, "/api/metrics/query", &[("q", q), ("start", &start), ("end", &end)]).await;
    let instant: Value = serde_json::from_str(&body).unwrap();
    insta::assert_json_snapshot!("metrics_query", instant, { ".metrics.totalBlockBytes" => "[bytes]" });
    let buildinfo: Value = serde_json::from_str(&server.get_text("/api/status/buildinfo").await).unwrap();
    let version = buildinfo["version"].as_str().unwrap();
    let major_minor: Vec<u32> = version.split('.').take(2).map(|p| p.parse().unwrap()).collect();
    assert!(major_minor >= vec![2, 9], "Grafana needs a Tempo version of at least 2.9, got {version}");
    server.spanlake.shutdown().await;
}

/// A by() over a value unique per span, at a short step: the series count
/// against the per-query memory limit (422 naming it), not outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_beyond_the_memory_limit_are_refused() {
    let server = TestServer::start_with(|a| a.querier.sql_memory_limit = 4 << 20).await;
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(T0 as u64 + 10);
    let spans: Vec<SpanData> = (0..200u64)
        .map(|i| {
            let attributes = vec![KeyValue::new("uid", i as i64)];
            span(
                trace_id(0, 0),
                i + 1,
                None,
                format!("operation number {i}"),
                SpanKind::Server,
                start,
                Duration::from_millis(1),
                false,
                attributes,
            )
        })
        .collect();
    export(&server, "unique", spans).await;
    // By an attribute, grouped by DataFusion; by the name column (each
    // unique), grouped by the counting aggregate itself.
    for q in ["{ } | count_over_time() by(span.uid)", "{ } | count_over_time() by(name) with(exemplars=false)"] {
        // 200 series of 11 samples fit.
        assert_eq!(series(&range(&server, q).await).len(), 200, "{q}");
        // 200 series of 9,600 samples (a day in 9 s steps) do not.
        let (start, end) = ((T0 - 86_000).to_string(), (T0 + 400).to_string());
        let params = [("q", q), ("start", start.as_str()), ("end", end.as_str()), ("step", "9s")];
        let (status, body) = get(&server, "/api/metrics/query_range", &params).await;
        assert_eq!(status, 422, "{q}: {body}");
        assert!(body.contains("memory limit"), "{q}: {body}");
        // Whichever counted the groups, the answer says what to change.
        assert!(body.contains("group by fewer values"), "{q}: {body}");
    }
    server.spanlake.shutdown().await;
}

/// Over a window of more spans than `--exemplar-sample-spans`, exemplars
/// come from a slice of trace ids alone, and the counts from every span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_window_takes_exemplars_from_a_slice_of_trace_ids() {
    // 16 spans or more: sixteenth of it wanted, one span; the 160 spans
    // read give the ids below 2^(128 - 7).
    let server = TestServer::start_with(|a| a.querier.exemplar_sample_spans = 16).await;
    let mut spans = Vec::new();
    for minute in 0..MINUTES {
        for j in 0..16u64 {
            let start = SystemTime::UNIX_EPOCH
                + Duration::from_secs((T0 + 60 * minute as i64 + 10) as u64)
                + Duration::from_millis(j);
            // High ids start later: the newest span of every cell, had
            // every span been a candidate.
            let high = 0x7e00_0000_0000_0000_0000_0000_0000_0000 | ((minute as u128) << 8) | u128::from(j);
            let late = start + Duration::from_millis(100);
            spans.push(span(high, 1, None, "GET /", SpanKind::Server, late, Duration::from_millis(3), false, vec![]));
            let low = ((minute as u128) << 8) | u128::from(j) | 0x1_0000;
            spans.push(span(low, 1, None, "GET /", SpanKind::Server, start, Duration::from_millis(3), false, vec![]));
        }
    }
    export(&server, "shop", spans).await;
    let answer = range(&server, "{ } | rate() by(resource.service.name)").await;
    let got = series(&answer);
    assert_eq!(got.len(), 1);
    assert!(close(&got[0].1, &dense(|_| 32.0 / 60.0)), "every span counts: {:?}", got[0].1);
    let exemplars = answer["series"][0]["exemplars"].as_array().expect("exemplars");
    assert!(!exemplars.is_empty(), "{answer}");
    for e in exemplars {
        let id = e["labels"][0]["value"]["stringValue"].as_str().unwrap();
        let id = u128::from_str_radix(id, 16).unwrap();
        assert!(id < 1 << 121, "an exemplar from outside the slice: {id:032x}");
    }
    server.spanlake.shutdown().await;
}

/// Durations below 2 ns are in no power-of-two bucket (as Tempo): a
/// histogram leaves them out.
#[tokio::test]
async fn durations_below_two_nanoseconds_are_in_no_bucket() {
    let server = TestServer::start().await;
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs((T0 + 70) as u64);
    let spans = [0u64, 1, 2, 3, 4]
        .into_iter()
        .enumerate()
        .map(|(i, ns)| {
            let duration = Duration::from_nanos(ns);
            span(trace_id(0, i), 1, None, "tick", SpanKind::Server, start, duration, false, vec![])
        })
        .collect();
    export(&server, "clock", spans).await;
    // With exemplars and without (cells counted per group, `cells.rs`).
    for q in ["{ } | histogram_over_time(duration)", "{ } | histogram_over_time(duration) with(exemplars=false)"] {
        let mut got = series(&range(&server, q).await);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let totals: Vec<f64> = got.iter().map(|s| s.1.iter().map(|(_, count)| count).sum()).collect();
        // 2 ns in the bucket of 2¹; 3 and 4 ns in that of 2²; 0 and 1 ns in none.
        assert_eq!(totals, [1.0, 2.0], "{q}: {got:?}");
    }
    server.spanlake.shutdown().await;
}

/// Counts per cell come from one of three aggregates: without exemplars,
/// each `by()` group counts its cells itself (`cells.rs`), or, for at most
/// one string column and counts or durations, one aggregate takes the
/// filter and the `by()` column as arguments and groups itself
/// (`cells_by.rs`); with exemplars, the time and power-of-two buckets are
/// grouped by DataFusion beside the newest span. On spans of every duration
/// class (0 and 1 ns, powers of two and their neighbours) and float values
/// (negative, below 2, exactly 2, large), all give the same series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_counted_per_group_give_the_series_of_the_grouped_aggregate() {
    let server = TestServer::start().await;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names = ["GET /", "POST /pay", "SELECT"];
    let floats = [-3.0, 0.5, 1.0, 1.5, 2.0, 2.5, 1024.0, 1025.0, 7.5e9];
    for service in ["frontend", "checkout"] {
        let mut spans = Vec::new();
        for i in 0..600usize {
            let minute = i % 9;
            let start = SystemTime::UNIX_EPOCH
                + Duration::from_secs((T0 + 60 * minute as i64 + (next() % 60) as i64) as u64)
                + Duration::from_nanos(next() % 1_000_000_000);
            let nanos = match next() % 4 {
                0 => next() % 5,
                1 => 1 << (next() % 40),
                2 => (1 << (next() % 40)) + 1,
                _ => next() % 10_000_000_000,
            };
            let kind = if next() % 2 == 0 { SpanKind::Server } else { SpanKind::Client };
            let mut attributes = vec![KeyValue::new("n", (next() % 5000) as i64)];
            if next() % 4 != 0 {
                attributes.push(KeyValue::new("x", floats[(next() % floats.len() as u64) as usize]));
            }
            let name = names[(next() % 3) as usize];
            let trace = (u128::from(next()) << 64) | u128::from(next());
            spans.push(span(trace, 1, None, name, kind, start, Duration::from_nanos(nanos), false, attributes));
        }
        export(&server, service, spans).await;
    }
    let queries = [
        "{ } | rate()",
        "{ } | rate() by(resource.service.name)",
        "{ kind = server } | count_over_time() by(name, resource.service.name)",
        "{ } | quantile_over_time(duration, 0.5, 0.9, 0.99) by(resource.service.name)",
        "{ kind = client } | histogram_over_time(duration) by(name)",
        "{ } | histogram_over_time(span.x) by(resource.service.name)",
        "{ } | quantile_over_time(span.x, 0.1, 0.5, 0.95)",
        "{ span.n > 100 } | quantile_over_time(span.n, 0.5) by(name)",
        "{ span.n > 2500 && kind = server } | rate() by(resource.service.name)",
        "{ status != error } | count_over_time() by(kind)",
    ];
    let sorted = |answer: &Value| {
        let mut got = series(answer);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    };
    for q in queries {
        let grouped = sorted(&range(&server, q).await);
        let counted = sorted(&range(&server, &format!("{q} with(exemplars=false)")).await);
        assert!(!grouped.is_empty(), "{q}: no series");
        assert_eq!(grouped.len(), counted.len(), "{q}: {grouped:?} against {counted:?}");
        for (a, b) in grouped.iter().zip(&counted) {
            assert_eq!(a.0, b.0, "{q}");
            assert!(close(&a.1, &b.1), "{q} {:?}: {:?} against {:?}", a.0, a.1, b.1);
        }
    }
    server.spanlake.shutdown().await;
}
