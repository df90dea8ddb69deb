//! Running as a cluster: the configuration file and its precedence as a
//! process sees it, readiness and liveness, and the vulture against real
//! processes (it passes on a healthy cluster and fails when spans are lost).

use std::time::Duration;

use spanlake_schemas::fault::Fault;
use spanlake_test_support::process::Spawned;

use crate::common::{TestServer, run_spanlake, spawn_spanlake};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_takes_flag_over_env_over_file_over_default() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("spanlake.yaml");
    let config = "querier:\n  query_timeout: 9s\n  sql_memory_limit: 5MiB\n  refresh_interval: 1s\n\
                  compactor:\n  retention: 1day\n";
    std::fs::write(&file, config).unwrap();
    let storage = dir.path().join("data");
    let args = [
        "run",
        "querier",
        "--storage",
        storage.to_str().unwrap(),
        "--config",
        file.to_str().unwrap(),
        "--query-timeout",
        "7s",
    ];
    let env = [("SPANLAKE_SQL_MEMORY_LIMIT", "3MiB"), ("SPANLAKE_QUERY_TIMEOUT", "8s")];
    let querier = Spawned::start_with_env(env!("CARGO_BIN_EXE_spanlake"), &args, &env);
    let shown = reqwest::get(format!("http://{}/status/config", querier.http)).await.unwrap().text().await.unwrap();
    for line in [
        "  query_timeout: \"7s\"  # flag",
        "  sql_memory_limit: \"3MiB\"  # env",
        "  refresh_interval: \"1s\"  # file",
        "  max_trace_size: \"50MiB\"  # default",
    ] {
        assert!(shown.contains(line), "{line:?} not in:\n{shown}");
    }
    assert!(!shown.contains("retention"), "a querier shows no compactor flags:\n{shown}");

    // A mistake in the file stops the process with a message naming the key.
    std::fs::write(&file, "querier:\n  query_timeout: 9s\n  max_bufer: 1GiB\n").unwrap();
    let args = ["run", "querier", "--config", file.to_str().unwrap()].map(String::from).to_vec();
    let output = run_spanlake(args, Duration::from_secs(30)).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key `querier.max_bufer`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_the_store_answers_and_live_does_not_ask_it() {
    let (faulty, storage, dir) = crate::backpressure::faulty_local();
    let server = TestServer::start_on(storage, dir, |_| {}).await;
    let get = |path: &'static str| {
        let url = server.query_url(path);
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/ready").await, (200, "ready\n".into()));
    faulty.set(Fault::FailAll);
    // The answer is cached for a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("object store unreachable"), "{body}");
    assert_eq!(get("/live").await.0, 200, "liveness does not depend on the store");
    faulty.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get("/ready").await.0, 200);
}

/// Two all-in-one processes, each on its own directory.
fn two_stores() -> (tempfile::TempDir, Spawned, Spawned) {
    let dir = tempfile::TempDir::new().unwrap();
    let spawn = |name: &str| {
        let path = dir.path().join(name);
        spawn_spanlake(&["--storage", path.to_str().unwrap(), "--compaction", "false", "--refresh-interval", "200ms"])
    };
    let (a, b) = (spawn("a"), spawn("b"));
    (dir, a, b)
}

fn vulture_args(endpoint: &Spawned, query: &Spawned) -> Vec<String> {
    let endpoint = format!("http://{}", endpoint.grpc.unwrap());
    let query = format!("http://{}", query.http);
    [
        "vulture",
        "--endpoint",
        &endpoint,
        "--query-url",
        &query,
        "--write-interval",
        "100ms",
        "--read-delay",
        "300ms",
        "--give-up-after",
        "3s",
        "--duration",
        "2s",
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vulture_passes_on_a_healthy_cluster_and_fails_on_lost_spans() {
    let (_dir, a, b) = two_stores();
    let output = run_spanlake(vulture_args(&a, &a), Duration::from_secs(60)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let written: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("traces_written: ")?.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("a summary: {stdout}"));
    assert!(written >= 5, "{stdout}");
    assert!(stdout.contains("missing: 0,") && stdout.contains("duplicated: 0,"), "{stdout}");

    // Read from a querier on another store: every acknowledged span is missing.
    let output = run_spanlake(vulture_args(&a, &b), Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("acknowledged spans missing") && stderr.contains("missing, 0 duplicated"), "{stderr}");

    // A querier that never answers: the traces are settled as unchecked at
    // the give-up time (not retried forever), and the run fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut args = vulture_args(&a, &a);
    let at = args.iter().position(|a| a == "--query-url").unwrap() + 1;
    args[at] = dead;
    let output = run_spanlake(args, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("could not be read until giving up") && !stderr.contains(" 0 trace(s) unchecked"),
        "{stderr}"
    );
}

/// SIGTERM lets a query in flight finish (within `--drain-timeout`) before
/// the process exits, cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_queries_in_flight_finish() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut process = spawn_spanlake(&["--storage", dir.path().to_str().unwrap(), "--compaction", "false"]);
    let url = format!("http://{}/api/sql", process.http);
    // Seconds of work in a debug build.
    let query = reqwest::Client::new().post(url).body("SELECT sum(value) AS s FROM range(1, 40000001)").send();
    let query = tokio::spawn(query);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = process.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let response = query.await.unwrap().expect("the query is answered, not cut off");
    assert_eq!(response.status(), 200);
    let rows: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(rows[0]["s"], serde_json::json!(800_000_020_000_000u64));
    let status = tokio::task::block_in_place(|| process.child.wait()).unwrap();
    assert!(status.success(), "a clean exit after draining: {status:?}");
}
