//! Shared helpers: a server on port 0 over a temp dir, and HTTP helpers.

use std::net::SocketAddr;

use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_schemas::Storage;
use tempfile::TempDir;

pub(crate) struct TestServer {
    pub(crate) spanlake: Spanlake,
    pub(crate) dir: TempDir,
    pub(crate) http: reqwest::Client,
}

/// Test defaults: ports 0 on loopback, data in a fresh temp dir.
pub(crate) fn test_args(dir: &TempDir) -> ServerArgs {
    let mut args = ServerArgs::for_tests(StorageArgs::local(dir.path().to_str().unwrap()));
    // Tests that count blocks expect the blocks they wrote; compaction tests turn it on.
    args.compaction = false;
    args
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(configure: impl FnOnce(&mut ServerArgs)) -> Self {
        let dir = TempDir::new().unwrap();
        let mut args = test_args(&dir);
        configure(&mut args);
        let spanlake = Spanlake::start(&args, Role::All).await.unwrap();
        Self { spanlake, dir, http: reqwest::Client::new() }
    }

    /// Starts on an already opened store (e.g. a fault-injecting wrapper).
    pub(crate) async fn start_on(storage: Storage, dir: TempDir, configure: impl FnOnce(&mut ServerArgs)) -> Self {
        let mut args = test_args(&dir);
        configure(&mut args);
        let spanlake = Spanlake::start_with_storage(&args, Role::All, storage).await.unwrap();
        Self { spanlake, dir, http: reqwest::Client::new() }
    }

    pub(crate) fn spanlake_buffered_bytes(&self) -> usize {
        self.spanlake.buffered_bytes()
    }

    pub(crate) fn grpc_url(&self) -> String {
        format!("http://{}", self.spanlake.otlp_grpc_addr().unwrap())
    }

    pub(crate) fn otlp_http_url(&self) -> String {
        format!("http://{}/v1/traces", self.spanlake.otlp_http_addr().unwrap())
    }

    pub(crate) fn query_url(&self, path: &str) -> String {
        query_url(self.spanlake.http_addr(), path)
    }

    /// The trace as OTLP protobuf from `/api/traces/<id>`, or None on 404.
    pub(crate) async fn trace(&self, trace_id: &[u8]) -> Option<TracesData> {
        fetch_trace(&self.http, self.spanlake.http_addr(), trace_id, None).await
    }
}

pub(crate) fn query_url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

pub(crate) async fn fetch_trace(
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
pub(crate) fn spans(data: &TracesData) -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
    data.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect()
}

/// A `spanlake` process started by a test.
pub(crate) struct Process {
    pub(crate) child: std::process::Child,
    pub(crate) grpc: Option<SocketAddr>,
    pub(crate) http: SocketAddr,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `spanlake` binary with `args` (plus ports 0 on loopback and JSON
/// logs) and reads the bound addresses from its logs.
pub(crate) fn spawn_spanlake(args: &[&str]) -> Process {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_spanlake"))
        .args(args)
        .args(["--log-format", "json"])
        .args(["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn spanlake");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut grpc = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let field = |name: &str| log["fields"][name].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(addr) = field("grpc_addr") {
                grpc = Some(addr);
            }
            if log["fields"]["message"] == "spanlake started" {
                let _ = tx.send((grpc, field("http_addr").unwrap()));
            }
        }
    });
    let (grpc, http) = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("spanlake started");
    Process { child, grpc, http }
}
