//! Fan-out analysis against closed-form ground truth: traces from loadgen's
//! generator with known latency distributions, sent through the real OTLP
//! path, analyzed by `/api/fanout`, and checked in rank space within four
//! standard errors (../shared/reference/fanout.md §5).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use spanlake::loadgen::{FanoutMode, Latency, Scenario, Workload};

use crate::common::{TestServer, run_spanlake};

const MEAN_MS: f64 = 10.0;

fn workload(n: usize, random: bool, mode: FanoutMode) -> Workload {
    Workload {
        scenario: Scenario::Fanout,
        fanout: n,
        random_fanout: random,
        mode,
        leaf_latency: Latency::Exponential { mean: Duration::from_millis(10) },
        pre_latency: None,
        post: Duration::ZERO,
        error_rate: 0.0,
    }
}

/// Sends `parents` traces of `workload` as `tenant` over OTLP/gRPC, seeded.
async fn send(server: &TestServer, tenant: &str, workload: &Workload, parents: usize, seed: u64) {
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 60_000_000_000;
    // About 20k spans per request (a parent has 2 spans per call plus itself).
    let per_request = (20_000 / (2 * workload.fanout + 1)).clamp(1, 500);
    for sent in (0..parents).step_by(per_request) {
        let traces = per_request.min(parents - sent);
        let mut request = tonic::Request::new(workload.request(&mut rng, traces, now));
        request.metadata_mut().insert("x-scope-orgid", tenant.parse().unwrap());
        client.export(request).await.unwrap();
    }
}

async fn fanout(server: &TestServer, tenant: &str, query: &str) -> (u16, Value) {
    let url = server.query_url(&format!("/api/fanout?{query}"));
    let response = server.http.get(url).header("x-scope-orgid", tenant).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn search_report(server: &TestServer, tenant: &str, extra: &str) -> Value {
    let (status, body) =
        fanout(server, tenant, &format!("service=frontend&operation=GET%20/search&percentiles=0.5,0.9,0.99{extra}"))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operations"].as_array().unwrap().len(), 1, "{body}");
    body["operations"][0].clone()
}

/// |F(x̂_q) − q| ≤ 4·√(q(1−q)/n): the estimate sits where it should in rank space.
fn assert_rank(what: &str, cdf: impl Fn(f64) -> f64, estimate_ms: f64, q: f64, n: f64) {
    let band = 4.0 * (q * (1.0 - q) / n).sqrt();
    let rank = cdf(estimate_ms);
    assert!((rank - q).abs() <= band, "{what}: q={q}: {estimate_ms:.3} ms sits at rank {rank:.5}, band ±{band:.5}");
}

fn exp_cdf(x: f64) -> f64 {
    1.0 - (-x / MEAN_MS).exp()
}

fn value(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// What the analysis holds counts against the per-query pool: over it, 422
/// naming the limit; under it, the same data answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_over_its_memory_limit_is_refused() {
    let server = TestServer::start_with(|a| a.querier.sql_memory_limit = 1 << 20).await;
    send(&server, "single-tenant", &workload(10, false, FanoutMode::Parallel), 10_000, 3).await;
    let (status, body) = fanout(&server, "single-tenant", "service=frontend").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("memory limit of 1048576 bytes"), "{body}");
    let (status, body) = fanout(&server, "single-tenant", "service=frontend&start=0&end=1").await;
    assert_eq!(status, 200, "a narrower range fits: {body}");
}

/// The same traces sent whole (one block each) and sent cut in two, each half
/// in its own block, with one half sent twice: the reports agree, as
/// traces split over blocks are merged whole and a second copy is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_split_over_blocks_and_sent_twice_give_the_same_report() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let workload = workload(4, true, FanoutMode::Parallel);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 60_000_000_000;
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let mut export = async |tenant: &str, request| {
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert("x-scope-orgid", tenant.parse().unwrap());
        client.export(request).await.unwrap();
    };
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..4 {
        let whole = workload.request(&mut rng, 100, now);
        export("whole", whole.clone()).await;
        // Every other round: each trace's first spans in one block, the rest in another.
        if round % 2 == 0 {
            export("split", whole).await;
            continue;
        }
        let (mut first, mut rest) = (whole.clone(), whole);
        for (a, b) in first.resource_spans.iter_mut().zip(rest.resource_spans.iter_mut()) {
            for (a, b) in a.scope_spans.iter_mut().zip(b.scope_spans.iter_mut()) {
                let half = a.spans.len() / 2;
                a.spans.truncate(half);
                b.spans.drain(..half);
            }
        }
        export("split", first.clone()).await;
        export("split", rest).await;
        export("split", first).await;
    }
    let query = "service=frontend&operation=GET%20/search&percentiles=0.5,0.9,0.99";
    let (status, whole) = fanout(&server, "whole", query).await;
    assert_eq!(status, 200, "{whole}");
    let (status, split) = fanout(&server, "split", query).await;
    assert_eq!(status, 200, "{split}");
    assert_eq!(whole["operations"][0]["parents"], 400, "{whole}");
    assert_eq!(whole["operations"], split["operations"]);
    assert_eq!(whole["duplicates_dropped"], 0);
    assert_eq!(whole["spans_merged"], 0, "each trace lies in one block: {whole}");
    assert!(split["spans_merged"].as_u64().unwrap() > 0, "{split}");
    assert!(split["duplicates_dropped"].as_u64().unwrap() > 0, "{split}");
    assert_eq!(
        split["spans_read"].as_u64().unwrap() - split["duplicates_dropped"].as_u64().unwrap(),
        whole["spans_read"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rare_parent_is_analyzed_from_its_own_traces_alone() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 60_000_000_000;
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    // 4 requests of 100 traces; in each, the roots of 3 traces are renamed
    // `GET /rare`: 12 rare parents among 400.
    let (mut total, mut rare_spans) = (0u64, 0u64);
    for _ in 0..4 {
        let mut whole = workload(4, false, FanoutMode::Parallel).request(&mut rng, 100, now);
        let mut rare_traces = Vec::new();
        for span in whole.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            if span.name == "GET /search" && rare_traces.len() < 3 {
                span.name = "GET /rare".into();
                rare_traces.push(span.trace_id.clone());
            }
        }
        for span in whole.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            total += 1;
            rare_spans += u64::from(rare_traces.contains(&span.trace_id));
        }
        let mut request = tonic::Request::new(whole);
        request.metadata_mut().insert("x-scope-orgid", "a".parse().unwrap());
        client.export(request).await.unwrap();
    }
    let report = async |query: &str| {
        let (status, body) = fanout(&server, "a", &format!("{query}&percentiles=0.5,0.9")).await;
        assert_eq!(status, 200, "{body}");
        body
    };
    // Every parent, read in full: the rare operation's entry.
    let every = report("").await;
    assert_eq!(every["spans_read"], total, "{every}");
    let rare_of = |body: &Value| {
        let operations = body["operations"].as_array().unwrap();
        operations.iter().find(|op| op["parent"]["operation"] == "GET /rare").cloned().unwrap_or_default()
    };
    let expected = rare_of(&every);
    assert_eq!(expected["parents"], 12, "{every}");
    // By name, and picked by TraceQL: the same answer, from the rare traces' spans alone.
    for query in ["service=frontend&operation=GET%20/rare", "q=%7B%20name%20%3D%20%22GET%20%2Frare%22%20%7D"] {
        let narrowed = report(query).await;
        assert_eq!(rare_of(&narrowed), expected, "{query}: {narrowed}");
        assert_eq!(narrowed["operations"].as_array().unwrap().len(), 1, "{query}: {narrowed}");
        assert_eq!(narrowed["spans_read"], rare_spans, "{query}: only the rare traces are read: {narrowed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fixed_fanout_matches_the_max_of_n_law() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let parents = 5000;
    send(&server, "a", &workload(10, false, FanoutMode::Parallel), parents, 1).await;
    let op = search_report(&server, "a", "").await;
    let n = parents as f64;
    assert_eq!(op["parents"], parents);
    assert_eq!(op["degree"]["histogram"]["10"], parents, "{}", op["degree"]);
    assert_eq!(op["parents_without_calls"], 0);
    let parent_cdf = |x: f64| exp_cdf(x).powi(10);
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        let observed = value(&op["parent_latency_ms"][label]);
        assert_rank("parent", parent_cdf, observed, q, n);
        // Parent = slowest call exactly (no own work before or after).
        assert!((observed - value(&op["max_child_latency_ms"][label])).abs() < 1e-6);
        // The calls' own distribution predicts the parent's tail.
        assert_rank("predicted", parent_cdf, value(&op["predicted_latency_ms"][label]), q, n);
    }
    assert_eq!(op["parent_latency_ms"]["exact"], true);
    // Exemplars: traces at each percentile's rank, whose parent span has that duration.
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        let picked = op["parent_exemplars"][label].as_array().unwrap();
        assert_eq!(picked.len(), 3, "{label}: {picked:?}");
        for exemplar in picked {
            let at = value(&exemplar["value_ms"]);
            let rank = parent_cdf(at);
            assert!((rank - q).abs() <= 4.0 * (q * (1.0 - q) / n).sqrt() + 3.0 / n, "{label}: {exemplar}");
            let id = hex::decode(exemplar["trace_id"].as_str().unwrap()).unwrap();
            let trace = server.trace_as("a", &id).await.expect("the exemplar's trace is there");
            let root = spanlake_test_support::http::spans(&trace)
                .into_iter()
                .find(|s| s.name == "GET /search")
                .expect("its parent span")
                .clone();
            let duration_ms = (root.end_time_unix_nano - root.start_time_unix_nano) as f64 / 1e6;
            assert!((duration_ms - at).abs() < 1e-6, "{label}: {duration_ms} vs {at}");
        }
    }
    // One degree, one bucket: the whole population.
    let buckets = op["degree_buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert_eq!((buckets[0]["min_calls"].as_u64(), buckets[0]["max_calls"].as_u64()), (Some(10), Some(10)));
    assert_eq!(buckets[0]["observed_ms"], op["parent_latency_ms"]);
    assert_eq!(buckets[0]["predicted_ms"], op["predicted_latency_ms"]);
    for point in op["exceedance"].as_array().unwrap() {
        let (observed, predicted) = (value(&point["observed"]), value(&point["predicted"]));
        let band = 4.0 * (predicted * (1.0 - predicted) / n).sqrt() + 2.0 / n;
        assert!((observed - predicted).abs() <= band, "{point}");
    }
    let edge = &op["edges"][0];
    assert_eq!(
        (edge["child"]["service"].as_str(), edge["child"]["operation"].as_str()),
        (Some("frontend"), Some("leaf.Search"))
    );
    assert_eq!(edge["calls"], parents * 10);
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        assert_rank("call", exp_cdf, value(&edge["child_latency_ms"][label]), q, n * 10.0);
        assert_rank("slowest call", parent_cdf, value(&edge["edge_max_latency_ms"][label]), q, n);
        for exemplar in edge["edge_max_exemplars"][label].as_array().unwrap() {
            let rank = parent_cdf(value(&exemplar["value_ms"]));
            assert!((rank - q).abs() <= 4.0 * (q * (1.0 - q) / n).sqrt() + 3.0 / n, "{exemplar}");
        }
    }
    // Parent p99 sits at the call's p99.9 (0.99^(1/10) = 0.998995).
    let p99 = edge["amplification"].as_array().unwrap().iter().find(|a| a["q"] == 0.99).unwrap();
    assert!((value(&p99["model_child_percentile"]) - 0.998995).abs() < 1e-5);
    assert!((value(&p99["equivalent_child_percentile"]) - 0.998995).abs() < 0.0015, "{p99}");
    assert!((value(&p99["ratio"]) - 69.03 / 46.05).abs() < 0.25, "{p99}");
    // All parent time is in flight, and the slowest call is the whole critical path.
    assert!(value(&edge["critical_path_share"]) > 0.999);
    assert_eq!(edge["last_finisher_share"], 1.0);
    assert!(value(&op["parent_self_share"]) < 0.001);
    assert!(value(&op["time_split"]["calls_in_flight"]) > 0.999);
    // Busy / in flight ≈ N·E[d]/E[max] = 100 / 29.29 = 3.41 (mean of ratios).
    let ratio = value(&op["parallelism_ratio"]["p50"]);
    assert!((2.8..4.2).contains(&ratio), "{ratio}");

    // Edges by callee: the client calls resolve to the leaf service's server spans.
    let by_server = search_report(&server, "a", "&edge=server").await;
    assert_eq!(by_server["edges"][0]["child"]["service"], "leaf");
    // A TraceQL filter picks the same parents.
    let (status, body) =
        fanout(&server, "a", "percentiles=0.5,0.9,0.99&q=%7B%20resource.service.name%20%3D%20%22frontend%22%20%26%26%20kind%20%3D%20server%20%7D")
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operations"][0]["parents"], parents);
    assert_eq!(body["operations"][0]["parent_latency_ms"], op["parent_latency_ms"]);

    // The same question in plain SQL: t-digest percentiles land within the
    // sketch's rank error (w(q) + 2/n, 100 centroids) plus the sampling band.
    let rows = server
        .sql_json(
            Some("a"),
            "SELECT count(*) AS parents, avg(degree) AS degree, \
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY parent_duration_ns) / 1e6 AS p99_ms, \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY max_child_duration_ns) / 1e6 AS max_child_p99_ms \
         FROM fanout_parents WHERE parent_service = 'frontend' AND parent_operation = 'GET /search'",
        )
        .await;
    assert_eq!(rows[0]["parents"], parents);
    assert_eq!(rows[0]["degree"], 10.0);
    let sketch = 2.0 * 2f64.sqrt() / 100.0 * 0.01f64.sqrt() + 2.0 / n;
    let rank = parent_cdf(value(&rows[0]["p99_ms"]));
    assert!((rank - 0.99).abs() <= 4.0 * (0.99 * 0.01 / n).sqrt() + sketch, "approx p99 at rank {rank}");
    assert!((value(&rows[0]["max_child_p99_ms"]) - value(&op["max_child_latency_ms"]["p99"])).abs() < 1e-6);
    let edges = server
        .sql_json(
            Some("a"),
            "SELECT child_service, child_operation, count(*) AS calls FROM span_edges \
         WHERE parent_operation = 'GET /search' GROUP BY 1, 2",
        )
        .await;
    assert_eq!(edges[0]["calls"], parents * 10);

    // The CLI prints the same report.
    let url = format!("http://{}", server.spanlake.http_addr());
    let args = ["fanout", "--url", &url, "--tenant", "a", "--service", "frontend", "--operation", "GET /search"];
    let output = run_spanlake(args.map(String::from).to_vec(), Duration::from_secs(60)).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("frontend / GET /search: 5000 parents, 10.0 calls per parent"), "{text}");
    let p99 = format!("{:.2} ms", value(&op["parent_latency_ms"]["p99"]));
    let exemplar = op["parent_exemplars"]["p99"][0]["trace_id"].as_str().unwrap();
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("p99 ") && l.contains(&p99) && l.contains(exemplar)),
        "{p99} and {exemplar} in {text}"
    );
    assert!(text.contains("frontend / leaf.Search"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_calls_add_up_and_random_degrees_follow_their_mixture() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let parents = 4000;
    let n = parents as f64;
    send(&server, "seq", &workload(10, false, FanoutMode::Sequential), parents, 2).await;
    send(&server, "mix", &workload(20, true, FanoutMode::Parallel), parents, 3).await;

    // Sequential: the parent is the sum of 10 calls, Erlang(10, 10 ms).
    let op = search_report(&server, "seq", "").await;
    let erlang = |x: f64| {
        let y = x / MEAN_MS;
        let mut term = 1.0;
        let mut sum = 0.0;
        for k in 0..10 {
            if k > 0 {
                term *= y / k as f64;
            }
            sum += term;
        }
        1.0 - (-y).exp() * sum
    };
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        assert_rank("sequential parent", erlang, value(&op["parent_latency_ms"][label]), q, n);
    }
    // One call at a time, every call on the critical path.
    assert!((value(&op["parallelism_ratio"]["p50"]) - 1.0).abs() < 1e-6);
    assert!(value(&op["edges"][0]["critical_path_share"]) > 0.999);
    // The max-of-N prediction is only a lower bound here: the parent is slower.
    assert!(value(&op["predicted_latency_ms"]["p50"]) < value(&op["parent_latency_ms"]["p50"]));

    // N uniform on 1..=20: F(x) = mean over n of F_call(x)^n.
    let op = search_report(&server, "mix", "").await;
    let mixture = |x: f64| (1..=20).map(|k| exp_cdf(x).powi(k)).sum::<f64>() / 20.0;
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        assert_rank("random-degree parent", mixture, value(&op["parent_latency_ms"][label]), q, n);
        assert_rank("random-degree prediction", mixture, value(&op["predicted_latency_ms"][label]), q, n);
    }
    let histogram = op["degree"]["histogram"].as_object().unwrap();
    assert_eq!(histogram.len(), 20, "every degree from 1 to 20 seen");
    assert_eq!(histogram.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), parents as u64);

    // Degree buckets: 20 distinct degrees, so power-of-two ranges; in each,
    // the parent follows the mixture of F_call^k over the k in the range.
    let buckets = op["degree_buckets"].as_array().unwrap();
    let ranges: Vec<(u64, u64)> =
        buckets.iter().map(|b| (b["min_calls"].as_u64().unwrap(), b["max_calls"].as_u64().unwrap())).collect();
    assert_eq!(ranges, [(1, 1), (2, 3), (4, 7), (8, 15), (16, 31)]);
    for bucket in buckets {
        let (low, high) = (bucket["min_calls"].as_u64().unwrap() as i32, bucket["max_calls"].as_u64().unwrap() as i32);
        let ks: Vec<i32> = (low..=high.min(20)).collect();
        let expected: u64 = ks.iter().map(|k| histogram[&k.to_string()].as_u64().unwrap()).sum();
        assert_eq!(bucket["parents"], expected, "{bucket}");
        let weights: Vec<f64> = ks.iter().map(|k| histogram[&k.to_string()].as_f64().unwrap()).collect();
        let total: f64 = weights.iter().sum();
        let cdf = |x: f64| ks.iter().zip(&weights).map(|(k, w)| w * exp_cdf(x).powi(*k)).sum::<f64>() / total;
        let m = bucket["parents"].as_f64().unwrap();
        for (q, label) in [(0.5, "p50"), (0.9, "p90")] {
            assert_rank(&format!("bucket {low}-{high}"), cdf, value(&bucket["observed_ms"][label]), q, m);
            assert_rank(&format!("bucket {low}-{high} predicted"), cdf, value(&bucket["predicted_ms"][label]), q, m);
        }
    }
    // The tail grows with the fan-out (Dean and Barroso's curve).
    let p50s: Vec<f64> = buckets.iter().map(|b| value(&b["observed_ms"]["p50"])).collect();
    assert!(p50s.windows(2).all(|w| w[0] < w[1]), "{p50s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fanout_parameters_are_refused_with_a_reason() {
    let server = TestServer::start().await;
    for (query, name) in [
        ("percentiles=1.5", "percentiles"),
        ("percentiles=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "percentiles"),
        ("child_kinds=some", "child_kinds"),
        ("edge=peer", "edge"),
        ("limit=0", "limit"),
        ("start=yesterday", "start"),
        ("q=%7B%20.a%20%3D%20", "q"),
        ("q=%7B%7D%20%3E%20%7B%7D", "q"),
    ] {
        let (status, body) = fanout(&server, "single-tenant", query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(name), "{query}: {body}");
    }
    // Nothing stored yet: an empty report, not an error.
    let (status, body) = fanout(&server, "single-tenant", "").await;
    assert_eq!((status, body["operations"].as_array().unwrap().len()), (200, 0));
}

/// Φ, the standard normal CDF (Abramowitz & Stegun 7.1.26, error below 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lognormal_calls_at_fanout_100_amplify_the_tail() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let parents = 1000;
    let mut lognormal = workload(100, false, FanoutMode::Parallel);
    lognormal.leaf_latency = Latency::LogNormal { median: Duration::from_millis(10), sigma: 1.0 };
    send(&server, "b", &lognormal, parents, 4).await;
    let op = search_report(&server, "b", "").await;
    let n = parents as f64;
    let call_cdf = |x: f64| normal_cdf((x / 10.0).ln());
    let parent_cdf = |x: f64| call_cdf(x).powi(100);
    // Closed form: parent p50 117.3 ms, p90 216.5 ms (the call's p99.31 and p99.89).
    for (q, label) in [(0.5, "p50"), (0.9, "p90")] {
        assert_rank("parent", parent_cdf, value(&op["parent_latency_ms"][label]), q, n);
        assert_rank("predicted", parent_cdf, value(&op["predicted_latency_ms"][label]), q, n);
    }
    let edge = &op["edges"][0];
    assert_rank("call", call_cdf, value(&edge["child_latency_ms"]["p50"]), 0.5, n * 100.0);
    assert_rank("call", call_cdf, value(&edge["child_latency_ms"]["p99"]), 0.99, n * 100.0);
    // P(parent > call p99) = 1 − 0.99^100 = 63.4 %.
    let call_p99 = value(&edge["child_latency_ms"]["p99"]);
    let slower = 1.0 - parent_cdf(call_p99);
    assert!((slower - 0.634).abs() < 0.05, "{slower}");
    // The parent's p50 sits near the call's p99.3: 0.5^(1/100).
    let p50 = edge["amplification"].as_array().unwrap().iter().find(|a| a["q"] == 0.5).unwrap();
    assert!((value(&p50["model_child_percentile"]) - 0.99309).abs() < 1e-4, "{p50}");
    assert!((value(&p50["equivalent_child_percentile"]) - 0.99309).abs() < 0.002, "{p50}");
}

/// Chromium (Debian's `chromium`, which the test command installs).
fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if std::process::Command::new("which").arg(name).output().is_ok_and(|o| o.status.success()) {
            return name.to_owned();
        }
    }
    panic!("no Chromium to test the page with: install Debian's `chromium` (./scripts/test.sh does)");
}

/// The page's DOM once its scripts ran, as a headless Chromium sees it.
async fn rendered(url: String) -> String {
    let browser = chromium();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom", &url])
            .output()
            .expect("chromium runs")
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `GET /fanout` in a real browser: the page loads, draws its charts from
/// the report's numbers, lists degree buckets and exemplars, and an exemplar
/// link opens the trace's waterfall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_page_renders_in_a_browser_and_its_links_open_traces() {
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    send(&server, "web", &workload(4, false, FanoutMode::Parallel), 500, 7).await;
    let op = search_report(&server, "web", "").await;
    let page = server.query_url("/fanout?service=frontend&operation=GET%20/search&tenant=web");
    let dom = rendered(page).await;
    assert!(dom.contains(r#"data-loaded="true""#), "the report loaded: {dom}");
    assert!(dom.contains("frontend / GET /search"), "{dom}");
    assert!(dom.contains("500 parents, 4.0 calls per parent"), "{dom}");
    // The chart's observed line goes through the report's percentiles.
    let p99 = value(&op["parent_latency_ms"]["p99"]);
    assert!(dom.contains(&format!(r#"data-series="observed" data-value="{p99}""#)), "p99 {p99} drawn: {dom}");
    assert!(dom.contains(r#"class="critical-path""#) && dom.contains("frontend / leaf.Search"), "{dom}");
    // Exemplar links, to the traces the report names.
    let exemplar = op["parent_exemplars"]["p99"][0]["trace_id"].as_str().unwrap();
    let link = format!(r#"href="trace/{exemplar}?tenant=web""#);
    assert!(dom.contains(&link), "{link} in {dom}");

    // Following it: the waterfall of that trace, every span a row.
    let trace = rendered(server.query_url(&format!("/trace/{exemplar}?tenant=web"))).await;
    assert!(trace.contains(r#"data-loaded="true""#), "{trace}");
    assert_eq!(trace.matches(r#"class="row span""#).count(), 1 + 2 * 4, "{trace}");
    assert!(trace.contains("GET /search") && trace.contains("leaf.Search"), "{trace}");
}

/// Probability-sampled traces stand for their adjusted counts. The fast half
/// of the parents is kept with probability 1/4 (tracestate `ot=th:c`: each
/// kept one stands for 4), the slow half in full: weighted, the percentiles
/// are the population's (max of 10 exponential calls); unweighted they would
/// sit near the population's p80.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probability_sampled_parents_are_weighted_by_their_adjusted_counts() {
    use std::collections::{HashMap, HashSet};
    let server = TestServer::start_with(|a| a.server.multi_tenant = true).await;
    let workload = workload(10, false, FanoutMode::Parallel);
    let mut client = TraceServiceClient::connect(server.grpc_url()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 - 60_000_000_000;
    let median_ms = -MEAN_MS * (1.0 - 0.5f64.powf(0.1)).ln();
    let (mut fast_kept, mut slow) = (0u64, 0u64);
    for _ in 0..16 {
        let mut request = workload.request(&mut rng, 500, now);
        let spans = || request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
        let durations: HashMap<Vec<u8>, f64> = spans()
            .filter(|s| s.name == "GET /search")
            .map(|s| (s.trace_id.clone(), (s.end_time_unix_nano - s.start_time_unix_nano) as f64 / 1e6))
            .collect();
        let mut sampled = HashSet::new();
        let mut dropped = HashSet::new();
        for (trace, &ms) in &durations {
            if ms >= median_ms {
                slow += 1;
            } else if rand::Rng::random_bool(&mut rng, 0.25) {
                fast_kept += 1;
                sampled.insert(trace.clone());
            } else {
                dropped.insert(trace.clone());
            }
        }
        for scope in request.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans) {
            scope.spans.retain(|s| !dropped.contains(&s.trace_id));
            for span in &mut scope.spans {
                if sampled.contains(&span.trace_id) {
                    span.trace_state = "ot=th:c".into();
                }
            }
        }
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert("x-scope-orgid", "sampled".parse().unwrap());
        client.export(request).await.unwrap();
    }
    let op = search_report(&server, "sampled", "").await;
    assert_eq!(op["sampled"], true);
    assert_eq!(op["parents"], fast_kept + slow);
    assert_eq!(value(&op["estimated_parents"]), (4 * fast_kept + slow) as f64);
    // Effective sample size of the weighted estimate: (Σw)² / Σw².
    let n_eff = ((4 * fast_kept + slow) as f64).powi(2) / (16 * fast_kept + slow) as f64;
    let parent_cdf = |x: f64| exp_cdf(x).powi(10);
    for (q, label) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        assert_rank("weighted parent", parent_cdf, value(&op["parent_latency_ms"][label]), q, n_eff);
        assert_rank("weighted prediction", parent_cdf, value(&op["predicted_latency_ms"][label]), q, n_eff);
    }
    // Unweighted, the median would have been far off: the sample is mostly slow.
    let unweighted_rank = 1.0 - fast_kept as f64 / (fast_kept + slow) as f64 / 2.0;
    assert!(unweighted_rank > 0.55, "the test's sample is biased enough to tell: {unweighted_rank}");
}
