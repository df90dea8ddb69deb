//! Queries spread over several querier processes on one store: the same
//! answers as one querier alone, also when a querier dies.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use spanlake_test_support::otlp::{resource_spans, span, trace};
use spanlake_test_support::process::Spawned;
use spanlake_test_support::wait_until;

use crate::common::TestServer;

/// Statements whose answers must not depend on where they ran: counts that
/// need each span once (as-ingested blocks hold retried copies and traces
/// split over blocks), groups, joins, an exact median, a limit.
const QUERIES: &[&str] = &[
    "SELECT count(*) AS n FROM spans",
    "SELECT count(*) AS n FROM spans_as_stored",
    "SELECT service_name, count(*) AS n, sum(duration_ns) AS d FROM spans GROUP BY service_name ORDER BY service_name",
    "SELECT encode(trace_id, 'hex') AS t, span_count, duration_ns, error_count FROM traces ORDER BY t",
    "SELECT count(*) AS n, sum(child_duration_ns) AS d FROM span_edges",
    "SELECT name, count(DISTINCT span_id) AS n FROM spans WHERE status_code = 'error' GROUP BY name ORDER BY name",
    "SELECT median(duration_ns) AS m, max(duration_ns) AS x FROM spans WHERE kind = 'client'",
    "SELECT encode(span_id, 'hex') AS s FROM spans ORDER BY start_time, s LIMIT 7",
];

/// TraceQL metrics over the data's five minutes, without exemplars (of
/// spans that start together, which one is the newest depends on the order
/// they were read in).
const METRICS: &[&str] = &[
    "{ } | rate() by(resource.service.name) with(exemplars=false)",
    "{ kind = server } | quantile_over_time(duration, 0.5, 0.9, 0.99) by(resource.service.name) with(exemplars=false)",
    "{ } | count_over_time() by(name) with(exemplars=false)",
    "{ status = error } | histogram_over_time(duration) with(exemplars=false)",
    "{ } | compare({ status = error }) with(exemplars=false)",
];

/// TraceQL searches over the data's five minutes, with their limits: one
/// filter, combined filters, structure (read through the join of related
/// traces when matches are rare), a pipeline, and a page of more than 1,000
/// traces (read by a join with the page's ids, not a list).
const SEARCHES: &[(&str, &str)] = &[
    ("{ }", "20"),
    ("{ resource.service.name = \"cart\" && status = error }", "20"),
    ("{ kind = server } >> { name = \"SELECT\" && duration > 30ms }", "20"),
    ("{ kind = server } > { kind = client } | count() > 3", "20"),
    ("{ resource.service.name = \"bulk\" }", "1500"),
];

/// Fan-out analyses over the data's five minutes: every parent, one
/// service's, parents picked by TraceQL (sent to each querier with its
/// share), and every child counted with edges named by the callee.
const FANOUTS: &[&[(&str, &str)]] = &[
    &[],
    &[("service", "cart")],
    &[("q", "{ kind = server && status = error }")],
    &[("child_kinds", "all"), ("edge", "server"), ("percentiles", "0.5,0.75")],
];

/// A fan-out answer from `/api/fanout`.
async fn fanout(http: &reqwest::Client, querier: &Spawned, query: &[(&str, &str)]) -> serde_json::Value {
    let url = format!("http://{}/api/fanout?start=1763999990&end=1764000290", querier.http);
    let response = http.get(url).query(query).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{query:?}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A search answer from `/api/search`.
async fn search(http: &reqwest::Client, querier: &Spawned, (query, limit): (&str, &str)) -> serde_json::Value {
    let params = [("q", query), ("start", "1763999990"), ("end", "1764000290"), ("limit", limit), ("spss", "5")];
    let url = format!("http://{}/api/search", querier.http);
    let response = http.get(url).query(&params).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A metrics answer from `/api/metrics/query_range` (step 15 s).
async fn metrics(http: &reqwest::Client, querier: &Spawned, query: &str) -> String {
    let params = [("q", query), ("start", "1763999990"), ("end", "1764000290"), ("step", "15s")];
    let url = format!("http://{}/api/metrics/query_range", querier.http);
    let response = http.get(url).query(&params).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// An answer and whether it was spread.
async fn sql(http: &reqwest::Client, querier: &Spawned, query: &str) -> (String, bool) {
    let response = http.post(format!("http://{}/api/sql", querier.http)).body(query.to_owned()).send().await.unwrap();
    let status = response.status();
    let spread = response.headers().get("x-spanlake-spread").is_some();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    (body, spread)
}

/// The value of the metric `line` (name and labels) on `querier` (0 when absent).
async fn metric(http: &reqwest::Client, querier: &Spawned, line: &str) -> u64 {
    let text = http.get(format!("http://{}/metrics", querier.http)).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{line} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

/// Block bytes each of `queriers` read so far (`spanlake_querier_block_bytes_read`).
async fn bytes_read<Q: std::borrow::Borrow<Spawned>>(http: &reqwest::Client, queriers: &[Q]) -> Vec<u64> {
    let mut read = Vec::new();
    for querier in queriers {
        read.push(metric(http, querier.borrow(), "spanlake_querier_block_bytes_read_total").await);
    }
    read
}

/// Tasks of spread queries `queriers` ran so far, together.
async fn worker_tasks(http: &reqwest::Client, queriers: &[Spawned]) -> u64 {
    let mut tasks = 0;
    for querier in queriers {
        tasks += metric(http, querier, "spanlake_querier_worker_tasks_total").await;
    }
    tasks
}

/// How many of `queriers` read blocks while `ask` ran.
async fn readers<Q: std::borrow::Borrow<Spawned>, F: std::future::Future>(
    http: &reqwest::Client,
    queriers: &[Q],
    ask: F,
) -> usize {
    let before = bytes_read(http, queriers).await;
    ask.await;
    let after = bytes_read(http, queriers).await;
    before.iter().zip(&after).filter(|(b, a)| a > b).count()
}

/// The `spanlake_querier_queries_spread` counter of `outcome`.
async fn spread_count(http: &reqwest::Client, querier: &Spawned, outcome: &str) -> u64 {
    metric(http, querier, &format!("spanlake_querier_queries_spread_total{{outcome=\"{outcome}\"}}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_queriers_answer_as_one_also_when_one_dies() {
    // Blocks as ingested: 24 requests of 10 traces, each trace's root and
    // calls in two requests (so in two blocks), and four requests sent twice
    // (a retried export: spans stored twice until compaction).
    let writer = TestServer::start().await;
    let base = 1_764_000_000_000_000_000u64;
    for batch in 0..24u8 {
        let services = ["checkout", "cart", "payment"];
        let mut roots = Vec::new();
        let mut calls = Vec::new();
        // Trace ids 1 to 240 (an all-zero id is invalid).
        for t in batch * 10 + 1..=batch * 10 + 10 {
            let mut whole = trace(t, services[t as usize % 3], 1 + t % 5, base + u64::from(t) * 1_000_000);
            let mut spans = std::mem::take(&mut whole.scope_spans[0].spans);
            calls.push(resource_spans(Some(services[t as usize % 3]), Vec::new(), spans.split_off(1)));
            roots.push(resource_spans(Some(services[t as usize % 3]), Vec::new(), spans));
        }
        writer.ingest(None, roots.clone()).await;
        writer.ingest(None, calls).await;
        if batch % 6 == 0 {
            writer.ingest(None, roots).await;
        }
    }
    // 1,100 one-span traces of service "bulk", ids from 0x0101… up.
    let bulk: Vec<_> = (0..1100u16)
        .map(|i| {
            let mut id = vec![0xb0; 16];
            id[..2].copy_from_slice(&(i + 0x0101).to_be_bytes());
            Span {
                trace_id: id.clone(),
                span_id: id[..8].to_vec(),
                start_time_unix_nano: base + 200_000_000_000 + u64::from(i) * 1_000_000,
                end_time_unix_nano: base + 200_000_000_000 + u64::from(i) * 1_000_000 + 5_000_000,
                ..span(0, 1)
            }
        })
        .collect();
    writer.ingest(None, vec![resource_spans(Some("bulk"), Vec::new(), bulk)]).await;
    let dir = writer.dir.path().to_owned();
    let _keep = writer;

    let peers_file = tempfile::NamedTempFile::new().unwrap();
    let peers_path = format!("file://{}", peers_file.path().display());
    // A querier whose worker port is `worker` (port 0: any).
    let start_at = |worker: &str, peers: Option<&str>, secret: &str, compression: &str| {
        let mut args = vec!["run", "querier", "--storage", dir.to_str().unwrap(), "--refresh-interval", "4s"];
        if let Some(peers) = peers {
            args.extend(["--worker-addr", worker, "--query-peers", peers, "--spread-min-bytes", "1"]);
            args.extend(["--spread-compression", compression]);
        }
        Spawned::start_with_env(env!("CARGO_BIN_EXE_spanlake"), &args, &[("SPANLAKE_WORKER_SECRET", secret)])
    };
    let start_with =
        |peers: Option<&str>, secret: &str, compression: &str| start_at("127.0.0.1:0", peers, secret, compression);
    let start = |peers: Option<&str>, secret: &str| start_with(peers, secret, "none");
    let alone = start(None, "");
    // The last one's spread queries send batches LZ4-compressed, the others' as they are.
    let queriers: Vec<Spawned> =
        (0..3).map(|i| start_with(Some(&peers_path), "s3cr3t", if i == 2 { "lz4" } else { "none" })).collect();
    let workers: Vec<String> = queriers.iter().map(|q| format!("http://{}\n", q.worker.unwrap())).collect();
    std::fs::write(peers_file.path(), workers.concat()).unwrap();

    let http = reqwest::Client::new();
    let mut expected = Vec::new();
    for query in QUERIES {
        let (answer, spread) = sql(&http, &alone, query).await;
        assert!(!spread, "a querier without peers runs every query itself");
        expected.push(answer);
    }
    let mut expected_metrics = Vec::new();
    for query in METRICS {
        expected_metrics.push(metrics(&http, &alone, query).await);
    }
    let mut expected_searches = Vec::new();
    for query in SEARCHES {
        expected_searches.push(search(&http, &alone, *query).await);
    }
    let mut expected_fanouts = Vec::new();
    for query in FANOUTS {
        expected_fanouts.push(fanout(&http, &alone, query).await);
    }
    let n: serde_json::Value = serde_json::from_str(&expected[0]).unwrap();
    assert_eq!(n[0]["n"], 2060, "each span once: 240 roots, 720 calls and 1,100 bulk spans");
    let found = |answer: &serde_json::Value| answer["traces"].as_array().map_or(0, Vec::len);
    let found_alone: Vec<usize> = expected_searches.iter().map(found).collect();
    assert_eq!(found_alone, [20, 20, 20, 20, 1100], "the searches find what the data holds");

    // The peers file is read at the next refresh.
    for querier in &queriers {
        wait_until("the queriers find each other", Duration::from_secs(15), || async {
            sql(&http, querier, QUERIES[2]).await.1
        })
        .await;
    }
    let (first, others) = (&queriers[0], &queriers[1..]);
    // A filter the blocks' statistics rule out leaves nothing to read: the
    // query stays on the querier asked, and no other querier runs a part of
    // it (the engine would split the scan's files by size if let). (Before
    // the queries with LIMIT below: one may leave a task that starts after
    // its answer.)
    let tasks = worker_tasks(&http, others).await;
    let none = "SELECT count(*) AS n FROM spans WHERE duration_ns > 1000000000000";
    let (answer, spread) = sql(&http, first, none).await;
    assert!(!spread, "spread with nothing to read: {none}");
    assert_eq!(answer, sql(&http, &alone, none).await.0, "{none}");
    let rare = ("{ kind = server && duration > 1000s }", "20");
    assert_eq!(search(&http, first, rare).await, search(&http, &alone, rare).await, "{rare:?}");
    assert_eq!(worker_tasks(&http, others).await, tasks, "other queriers ran a part of a query with nothing to read");
    // A lookup of a few trace ids (which DataFusion writes as ORs of
    // equalities) finds their spans, spread or not.
    let traces: serde_json::Value = serde_json::from_str(&expected[3]).unwrap();
    let ids: Vec<String> = (0..2).map(|i| format!("X'{}'", traces[i * 7]["t"].as_str().unwrap())).collect();
    let lookup = format!("SELECT name, duration_ns FROM spans WHERE trace_id IN ({}) ORDER BY 1, 2", ids.join(", "));
    let (answer, _) = sql(&http, first, &lookup).await;
    assert_eq!(answer, sql(&http, &alone, &lookup).await.0, "{lookup}");
    let spans: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let counts = |i: usize| traces[i * 7]["span_count"].as_u64().unwrap();
    assert_eq!(spans.as_array().map(Vec::len), Some((counts(0) + counts(1)) as usize), "the traces' spans: {answer}");
    for querier in &queriers {
        for (query, expected) in QUERIES.iter().zip(&expected) {
            let (answer, spread) = sql(&http, querier, query).await;
            assert_eq!(&answer, expected, "spread over three queriers: {query}");
            // A count of rows reads no column, so there is nothing to share out.
            let reads_nothing = query.starts_with("SELECT count(*) AS n FROM");
            if reads_nothing {
                assert!(!spread, "spread with no column to read: {query}");
            } else {
                assert!(spread || query.contains("LIMIT"), "ran on one querier: {query}");
            }
        }
    }
    assert!(worker_tasks(&http, others).await > tasks, "the other queriers ran no task of a spread query");
    // EXPLAIN ANALYZE shows what the other queriers' parts did (their
    // metrics travel back for it, and only for it).
    let explain = "EXPLAIN ANALYZE SELECT service_name, count(*) FROM spans GROUP BY 1";
    let (answer, spread) = sql(&http, first, explain).await;
    let plan: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let plan = plan[0]["plan"].as_str().unwrap_or_default();
    let partial = plan.lines().find(|l| l.contains("mode=Partial")).unwrap_or_default();
    assert!(spread && partial.contains("metrics=[output_rows="), "no metrics from the queriers' parts: {plan}");
    for (query, expected) in METRICS.iter().zip(&expected_metrics) {
        let before = spread_count(&http, first, "ok").await;
        assert_eq!(&metrics(&http, first, query).await, expected, "spread over three queriers: {query}");
        // compare() reads the spans through a union of one scan per
        // attribute source; the planner may keep it on one querier.
        if !query.contains("compare") {
            assert_eq!(spread_count(&http, first, "ok").await, before + 1, "ran on one querier: {query}");
        }
    }
    for (query, expected) in SEARCHES.iter().zip(&expected_searches) {
        let before = spread_count(&http, first, "ok").await;
        let asked = async { assert_eq!(&search(&http, first, *query).await, expected, "spread: {query:?}") };
        assert!(readers(&http, &queriers, asked).await >= 2, "read by one querier: {query:?}");
        assert_eq!(spread_count(&http, first, "ok").await, before + 1, "ran on one querier: {query:?}");
    }
    for (query, expected) in FANOUTS.iter().zip(&expected_fanouts) {
        let before = spread_count(&http, first, "ok").await;
        let asked = async { assert_eq!(&fanout(&http, first, query).await, expected, "spread: {query:?}") };
        assert_eq!(readers(&http, &queriers, asked).await, 3, "the three queriers read blocks: {query:?}");
        assert_eq!(spread_count(&http, first, "ok").await, before + 1, "ran on one querier: {query:?}");
    }
    // The coordinating querier's own task handed its analyses over in
    // memory; the other queriers, coordinating nothing, handed over none.
    let handed = "spanlake_querier_fanout_analyses_handed_over_total";
    assert!(metric(&http, first, handed).await > 0, "the coordinator sent its own analyses to itself");
    for other in others {
        assert_eq!(metric(&http, other, handed).await, 0);
    }
    let operations = expected_fanouts[0]["operations"].as_array().unwrap();
    let parents: u64 = operations.iter().map(|op| op["parents"].as_u64().unwrap_or(0)).sum();
    assert_eq!(parents, 240, "every root once, a parent of each service: {}", expected_fanouts[0]);
    // With exemplars: trace ids of the data.
    let answer = metrics(&http, first, "{ } | rate() by(resource.service.name)").await;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    // The data lies in two steps, whose budget of exemplars goes to some series.
    let series = answer["series"].as_array().unwrap();
    let exemplars: Vec<&serde_json::Value> =
        series.iter().filter_map(|s| s["exemplars"].as_array()).flatten().collect();
    assert!(!exemplars.is_empty(), "{answer}");
    for exemplar in exemplars {
        // Hex with leading zeros trimmed: `[t; 16]`, or a bulk trace's id.
        let id = exemplar["labels"][0]["value"]["stringValue"].as_str().unwrap_or_default();
        let id = format!("{id:0>32}");
        let of_data = id[..2] == id[2..4] || (id.ends_with(&"b0".repeat(14)) && id < format!("{:0<32}", "0551"));
        assert!(of_data, "a trace id of the data: {exemplar}");
    }
    assert_eq!(spread_count(&http, first, "ran_locally").await, 0);

    // Over the PostgreSQL protocol (tokio-postgres): the same rows, spread.
    let pg_rows = |querier: &Spawned| {
        let addr = querier.pg.expect("the querier serves PostgreSQL");
        async move {
            let client = crate::pg::connect(addr, "spanlake", None).await.unwrap();
            let query = "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name ORDER BY service_name";
            let rows = client.query(query, &[]).await.unwrap();
            rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect::<Vec<_>>()
        }
    };
    let before = spread_count(&http, first, "ok").await;
    assert_eq!(pg_rows(first).await, pg_rows(&alone).await);
    assert_eq!(spread_count(&http, first, "ok").await, before + 1, "a PostgreSQL query is spread");

    // A querier without the cluster's secret: the others refuse its shares,
    // so it answers alone.
    let intruder_peers = tempfile::NamedTempFile::new().unwrap();
    let intruder = start(Some(&format!("file://{}", intruder_peers.path().display())), "guess");
    let listed = format!("{}http://{}\n", workers.concat(), intruder.worker.unwrap());
    std::fs::write(intruder_peers.path(), listed).unwrap();
    wait_until("the intruder's spread run is refused", Duration::from_secs(15), || async {
        assert_eq!(sql(&http, &intruder, QUERIES[2]).await.0, expected[2]);
        spread_count(&http, &intruder, "ran_locally").await > 0
    })
    .await;
    drop(intruder);

    // One querier dies. Until the next refresh (at most 4 s later) it is
    // still listed, so a spread run fails and the query runs again on the
    // querier that got it.
    let mut queriers = queriers;
    let mut dead = queriers.pop().unwrap();
    let asked = tokio::spawn({
        let http = http.clone();
        let url = format!("http://{}/api/sql", queriers[0].http);
        let query = QUERIES[4];
        async move { http.post(url).body(query).send().await.unwrap().text().await.unwrap() }
    });
    // Killed as the query starts (a query over this data can take less
    // than 20 ms): it runs while the dead querier is still listed, so its
    // spread run fails and it falls back, however the refresh falls.
    tokio::time::sleep(Duration::from_millis(2)).await;
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    assert_eq!(asked.await.unwrap(), expected[4], "killed while (or before) it answered");
    for (query, expected) in QUERIES.iter().zip(&expected) {
        assert_eq!(&sql(&http, &queriers[0], query).await.0, expected, "with a querier dead: {query}");
    }
    for (query, expected) in FANOUTS.iter().zip(&expected_fanouts) {
        assert_eq!(&fanout(&http, &queriers[0], query).await, expected, "with a querier dead: {query:?}");
    }

    // Whether those runs still found the dead querier listed depends on
    // where its refresh fell. Its worker address now serves a querier that
    // answers probes but refuses every share (its secret differs): a process
    // that is up but broken. It is listed, every spread run that gives it a
    // share fails, and the query runs again on the querier that got it,
    // with the same answer.
    let dead_worker = dead.worker.unwrap().to_string();
    let refusing = start_at(&dead_worker, Some(&peers_path), "other", "none");
    let fell_back = spread_count(&http, &queriers[0], "ran_locally").await;
    wait_until("a spread run fails and runs again locally", Duration::from_secs(15), || async {
        for (query, expected) in FANOUTS.iter().zip(&expected_fanouts) {
            assert_eq!(&fanout(&http, &queriers[0], query).await, expected, "with a broken querier: {query:?}");
        }
        spread_count(&http, &queriers[0], "ran_locally").await > fell_back
    })
    .await;
    for (query, expected) in QUERIES.iter().zip(&expected) {
        assert_eq!(&sql(&http, &queriers[0], query).await.0, expected, "with a broken querier: {query}");
    }
    drop(refusing);

    // In its place, a process that accepts connections and hangs up at
    // once: it answers no probe, so it is not listed.
    let stand_in = tokio::net::TcpListener::bind(dead.worker.unwrap()).await.unwrap();
    let hang_up = tokio::spawn(async move {
        while let Ok((connection, _)) = stand_in.accept().await {
            drop(connection);
        }
    });
    // Once the refresh drops the dead querier, queries spread over the two left.
    wait_until("the dead querier is dropped", Duration::from_secs(15), || async {
        sql(&http, &queriers[1], QUERIES[2]).await.1
    })
    .await;
    // Each querier lists the two left, and still does after more than one
    // refresh with the stand-in answering connections (a TCP probe would
    // list it again).
    const LISTED: &str = "spanlake_querier_peers_live";
    for querier in &queriers {
        wait_until("the dead querier is not listed", Duration::from_secs(15), || async {
            metric(&http, querier, LISTED).await == 2
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for querier in &queriers {
        assert_eq!(metric(&http, querier, LISTED).await, 2, "a process that hangs up is never listed");
    }
    let failed = || async {
        let first = &queriers[0];
        (spread_count(&http, first, "ran_locally").await, spread_count(&http, first, "spread_again").await)
    };
    let before = failed().await;
    assert!(sql(&http, &queriers[0], QUERIES[2]).await.1, "spread over the two left, not the one that hangs up");
    assert_eq!(failed().await, before, "no spread run failed");
    hang_up.abort();
    let _ = hang_up.await;
    let before = spread_count(&http, &queriers[1], "ran_locally").await;
    for (query, expected) in QUERIES.iter().zip(&expected) {
        assert_eq!(&sql(&http, &queriers[1], query).await.0, expected, "spread over two queriers: {query}");
    }
    for (query, expected) in METRICS.iter().zip(&expected_metrics) {
        assert_eq!(&metrics(&http, &queriers[1], query).await, expected, "spread over two queriers: {query}");
    }
    for (query, expected) in SEARCHES.iter().zip(&expected_searches) {
        assert_eq!(&search(&http, &queriers[1], *query).await, expected, "spread over two queriers: {query:?}");
    }
    for (query, expected) in FANOUTS.iter().zip(&expected_fanouts) {
        assert_eq!(&fanout(&http, &queriers[1], query).await, expected, "spread over two queriers: {query:?}");
    }
    assert_eq!(spread_count(&http, &queriers[1], "ran_locally").await, before);

    // A querier takes the dead one's place (its worker address, listed in
    // the peers file): three again.
    let third = start_at(&dead_worker, Some(&peers_path), "s3cr3t", "none");
    let queriers = [&queriers[0], &queriers[1], &third];
    wait_until("the third querier is listed", Duration::from_secs(15), || async {
        readers(&http, &queriers, fanout(&http, queriers[0], FANOUTS[0])).await == 3
    })
    .await;

    // One stops (SIGSTOP: a process frozen, or cut off without a reset).
    // Its kernel still accepts connections, so a share sent to it waits
    // for ever. A fan-out asked right away gives it a share (the probe
    // takes 2 s to give up on it); once the next refresh finds it silent,
    // the fan-out stops waiting and spreads again over the two left, long
    // before its 30 s deadline, with the same answer.
    let signal = |name: &str, querier: &Spawned| {
        let sent = std::process::Command::new("kill").args([name, &querier.pid().to_string()]).status().unwrap();
        assert!(sent.success(), "kill {name}");
    };
    let count = |outcome: &'static str| spread_count(&http, queriers[0], outcome);
    let (again, here) = (count("spread_again").await, count("ran_locally").await);
    signal("-STOP", queriers[1]);
    assert_eq!(fanout(&http, queriers[0], FANOUTS[0]).await, expected_fanouts[0], "with a querier stopped");
    assert_eq!((count("spread_again").await, count("ran_locally").await), (again + 1, here), "spread again");
    let live = || metric(&http, queriers[0], "spanlake_querier_peers_live");
    assert_eq!(live().await, 2, "the stopped querier is not listed");
    // Then the second of three stops too: one is left, so a run it stalls
    // runs again here.
    signal("-STOP", queriers[2]);
    assert_eq!(fanout(&http, queriers[0], FANOUTS[1]).await, expected_fanouts[1], "with two queriers stopped");
    assert_eq!((count("spread_again").await, count("ran_locally").await), (again + 1, here + 1), "run here");
    assert_eq!(live().await, 1);
    for (query, expected) in QUERIES.iter().zip(&expected) {
        assert_eq!(&sql(&http, queriers[0], query).await.0, expected, "with two queriers stopped: {query}");
    }
    // They go on: the next refresh lists them again, and queries spread to them.
    signal("-CONT", queriers[1]);
    signal("-CONT", queriers[2]);
    wait_until("the stopped queriers are listed again", Duration::from_secs(15), || async {
        readers(&http, &queriers, fanout(&http, queriers[0], FANOUTS[0])).await == 3
    })
    .await;
    assert_eq!(live().await, 3);
    for (query, expected) in FANOUTS.iter().zip(&expected_fanouts) {
        assert_eq!(&fanout(&http, queriers[0], query).await, expected, "after the queriers went on: {query:?}");
    }
}
