//! The in-process server of the tests (every role on port 0 over a temp dir)
//! and the binary in a child process; everything else the tests share is in
//! `spanlake-test-support`.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message as _;
use spanlake::storage::StorageArgs;
use spanlake::{Role, ServerArgs, Spanlake};
use spanlake_schemas::Storage;
use spanlake_test_support::http::{self, fetch_trace, query_url};
use spanlake_test_support::otlp;
use spanlake_test_support::process::Spawned;
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
    args.all_in_one.compaction = false;
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

    /// The official OTLP exporter over HTTP/protobuf, pointed at this server.
    pub(crate) fn http_exporter(&self) -> opentelemetry_otlp::SpanExporter {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(self.otlp_http_url())
            .build()
            .unwrap()
    }

    pub(crate) fn query_url(&self, path: &str) -> String {
        query_url(self.spanlake.http_addr(), path)
    }

    /// Exports `resource_spans` over OTLP/HTTP as `tenant`; panics unless acknowledged.
    pub(crate) async fn ingest(&self, tenant: Option<&str>, resource_spans: Vec<ResourceSpans>) {
        let mut request = self
            .http
            .post(self.otlp_http_url())
            .header("content-type", "application/x-protobuf")
            .body(otlp::request(resource_spans).encode_to_vec());
        if let Some(tenant) = tenant {
            request = request.header("x-scope-orgid", tenant);
        }
        assert_eq!(request.send().await.unwrap().status(), 200);
    }

    /// POSTs a raw OTLP/HTTP body: status and response text.
    pub(crate) async fn export_raw(&self, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String) {
        let mut request = self.http.post(self.otlp_http_url()).header("content-type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// GETs `path` of the query API: its body as text, whatever the status.
    pub(crate) async fn get_text(&self, path: &str) -> String {
        self.http.get(self.query_url(path)).send().await.unwrap().text().await.unwrap()
    }

    /// `POST /api/sql`: status, content type, body.
    pub(crate) async fn sql(&self, tenant: Option<&str>, accept: &str, query: &str) -> (u16, String, Vec<u8>) {
        http::sql(&self.http, self.spanlake.http_addr(), tenant, accept, query).await
    }

    /// The rows of `query` as `tenant` sees them; panics unless it answers 200.
    pub(crate) async fn sql_json(&self, tenant: Option<&str>, query: &str) -> serde_json::Value {
        http::sql_json(&self.http, self.spanlake.http_addr(), tenant, query).await
    }

    /// The trace as OTLP protobuf from `/api/traces/<id>`, or None on 404.
    pub(crate) async fn trace(&self, trace_id: &[u8]) -> Option<TracesData> {
        fetch_trace(&self.http, self.spanlake.http_addr(), trace_id, None).await
    }

    /// The trace as `tenant` sees it, or None on 404.
    pub(crate) async fn trace_as(&self, tenant: &str, trace_id: &[u8]) -> Option<TracesData> {
        fetch_trace(&self.http, self.spanlake.http_addr(), trace_id, Some(tenant)).await
    }
}

/// Runs the `spanlake` binary of this build with `args` to completion (a
/// client command, `compact --once`, `loadgen`), at most `timeout`.
pub(crate) async fn run_spanlake(args: Vec<String>, timeout: std::time::Duration) -> std::process::Output {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_spanlake")).args(args).output().expect("run spanlake")
    });
    tokio::time::timeout(timeout, run).await.expect("spanlake finishes").unwrap()
}

/// The `spanlake` binary of this build in a child process (see
/// [`Spawned::start`]).
pub(crate) fn spawn_spanlake(args: &[&str]) -> Spawned {
    Spawned::start(env!("CARGO_BIN_EXE_spanlake"), args)
}

/// The flags that point a `spanlake` process at the S3 store `storage` names.
pub(crate) fn s3_flags(storage: &spanlake::storage::StorageArgs) -> Vec<String> {
    [
        "--storage",
        storage.url.as_str(),
        "--s3-endpoint",
        storage.s3_endpoint.as_deref().unwrap(),
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        storage.s3_access_key_id.as_deref().unwrap(),
        "--s3-secret-access-key",
        storage.s3_secret_access_key.as_deref().unwrap(),
        "--s3-allow-http",
    ]
    .map(str::to_owned)
    .to_vec()
}
