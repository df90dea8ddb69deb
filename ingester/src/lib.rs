//! # spanlake-ingester
//!
//! Receives OTLP traces and acknowledges them only once they are durable in
//! object storage.
//!
//! ```text
//!  OTLP/gRPC :4317 ─┐
//!                   ├─▶ IngestService: tenant → limits → validate + convert to Arrow
//!  OTLP/HTTP :4318 ─┘          │ (invalid spans → partial success, the rest kept)
//!                              ▼
//!                  Pipeline (group commit, bounded per tenant and in total)
//!                              │ at once when the tenant is idle; else when its
//!                              │ flush in flight completes (≥ min_flush_interval apart)
//!                              ▼
//!          sort by trace id → Parquet (blocking pool) → put block and commit at once
//!                              │
//!                   ack every request of that flush
//! ```
//!
//! Invariants: nothing is acknowledged before its commit record is durable;
//! memory is bounded by the buffer limits (overload is a retryable error, never
//! a queue); the ingester keeps no local state, so any number of them can run
//! behind a load balancer.

mod buffer;
pub mod decode;
mod error;
mod grpc;
mod http;
mod metrics;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use spanlake_schemas::Storage;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

pub use buffer::{BufferConfig, CommitHook};
pub use error::IngestError;

/// Request limits. Defaults are documented in the README.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, enforced before and after decompression.
    pub max_request_bytes: usize,
    /// Most spans in one request.
    pub max_spans_per_request: usize,
    /// Longer string and bytes attribute values are truncated (and reported).
    pub max_attribute_value_bytes: usize,
    /// Spans that start or end this far past now are refused (partial success).
    pub max_span_future: std::time::Duration,
    /// Most bytes of request bodies being read, decompressed or converted at
    /// once; a request beyond it is refused (retryable) before it is read.
    pub max_decoding_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_spans_per_request: 100_000,
            max_attribute_value_bytes: 64 << 10,
            max_span_future: std::time::Duration::from_secs(3600),
            max_decoding_bytes: 64 << 20,
        }
    }
}

/// Ingester configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Take the tenant from `X-Scope-OrgID` (else everything is `single-tenant`).
    pub multi_tenant: bool,
    /// OTLP/gRPC connections are closed gracefully after this long, so that
    /// long-lived clients reconnect and spread over new ingesters.
    pub max_connection_age: std::time::Duration,
    pub limits: Limits,
    pub buffer: BufferConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: ([0, 0, 0, 0], 4317).into(),
            http_addr: ([0, 0, 0, 0], 4318).into(),
            multi_tenant: false,
            max_connection_age: std::time::Duration::from_secs(300),
            limits: Limits::default(),
            buffer: BufferConfig::default(),
        }
    }
}

/// Could not start the ingester.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running ingester.
#[derive(Debug)]
pub struct Ingester {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    pipeline: Arc<buffer::Pipeline>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Ingester {
    /// Binds both listeners and starts serving. `on_commit` sees every commit
    /// before its requests are acknowledged.
    pub async fn start(
        config: Config,
        storage: Storage,
        on_commit: Option<CommitHook>,
        registry: &mut Registry,
    ) -> Result<Self, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
        };
        let grpc_listener = bind(config.grpc_addr).await?;
        let http_listener = bind(config.http_addr).await?;
        let grpc_addr = grpc_listener.local_addr().expect("bound socket has an address");
        let http_addr = http_listener.local_addr().expect("bound socket has an address");

        let metrics = Arc::new(metrics::Metrics::new(registry));
        let pipeline = buffer::Pipeline::new(config.buffer.clone(), storage, on_commit, metrics.clone());
        let service = Arc::new(service::IngestService::new(
            config.limits.clone(),
            config.multi_tenant,
            pipeline.clone(),
            metrics,
        ));
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let grpc = tonic::transport::Server::builder()
            .max_connection_age(config.max_connection_age)
            .add_service(grpc::server(service.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                until_stopped(stopped.clone()),
            );
        let http = axum::serve(http_listener, http::router(service)).with_graceful_shutdown(until_stopped(stopped));
        let tasks = vec![
            tokio::spawn(pipeline.clone().run()),
            tokio::spawn(async move {
                if let Err(error) = grpc.await {
                    tracing::error!(%error, "otlp grpc server failed");
                }
            }),
            tokio::spawn(async move {
                if let Err(error) = http.await {
                    tracing::error!(%error, "otlp http server failed");
                }
            }),
        ];
        info!(%grpc_addr, %http_addr, "ingester listening for otlp");
        Ok(Self { grpc_addr, http_addr, pipeline, stop, tasks })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Bytes currently buffered or being flushed.
    pub fn buffered_bytes(&self) -> usize {
        self.pipeline.buffered_bytes()
    }

    /// Stops accepting connections, flushes and acknowledges everything
    /// buffered, and returns when done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.pipeline.close().await;
        for task in self.tasks {
            let _ = task.await;
        }
        info!("ingester stopped");
    }
}
