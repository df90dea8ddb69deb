//! Wiring the roles into one process: storage, querier catalog, ingester
//! (whose commits go straight into the local catalog), compactor (on its own
//! thread) and the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use spanlake_compactor::Compactor;
use spanlake_ingester::{CommitHook, Ingester};
use spanlake_querier::Querier;
use spanlake_schemas::Storage;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{Role, ServerArgs};

/// A running Spanlake process (one role or all).
#[derive(Debug)]
pub struct Spanlake {
    ingester: Option<Ingester>,
    querier: Option<Arc<Querier>>,
    /// The compactor's thread (it stops when `stop` turns true).
    compactor: Option<std::thread::JoinHandle<()>>,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Spanlake {
    /// Opens storage and starts `role`; listeners are bound when this returns.
    pub async fn start(args: &ServerArgs, role: Role) -> anyhow::Result<Self> {
        Self::start_with_storage(args, role, crate::storage::open(&args.storage)?).await
    }

    /// Like [`Spanlake::start`], on an already opened store (tests wrap stores).
    pub async fn start_with_storage(args: &ServerArgs, role: Role, storage: Storage) -> anyhow::Result<Self> {
        let mut registry = Registry::default();
        let mut tasks = Vec::new();

        let querier = if matches!(role, Role::All | Role::Querier) {
            let querier = Querier::new(args.querier_config(), storage.clone(), &mut registry);
            tasks.push(querier.start_refresh().await.context("loading the block catalog")?);
            Some(querier)
        } else {
            None
        };
        let ingester = if matches!(role, Role::All | Role::Ingester) {
            let hook = querier.as_ref().map(|q| {
                let catalog = Arc::clone(q.catalog());
                Arc::new(move |tenant: &_, record: &_| catalog.apply(tenant, record)) as CommitHook
            });
            Some(Ingester::start(args.ingester_config(), storage.clone(), hook, &mut registry).await?)
        } else {
            None
        };

        let (stop, mut stopped) = watch::channel(false);
        let compactor = if role == Role::Compactor || (role == Role::All && args.compaction) {
            let hook = querier.as_ref().map(|q| {
                let catalog = Arc::clone(q.catalog());
                Arc::new(move |tenant: &_, record: &_| catalog.apply(tenant, record)) as CommitHook
            });
            let compactor = Compactor::new(args.compactor_config(), storage.clone(), hook, &mut registry)
                .await
                .context("starting the compactor")?;
            Some(Arc::new(compactor).spawn(stop.subscribe()))
        } else {
            None
        };

        let registry = Arc::new(registry);
        let mut router = Router::new().route("/metrics", get(move || metrics(Arc::clone(&registry))));
        router = match &querier {
            Some(querier) => router.merge(querier.router()),
            None => router.route("/ready", get(|| async { "ready" })),
        };
        let listener = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.http_addr))?;
        let http_addr = listener.local_addr()?;
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "http server failed");
            }
        }));
        info!(%http_addr, ?role, "spanlake started");
        let spanlake = Self { ingester, querier, compactor, http_addr, stop, tasks };
        if let Some(path) = &args.listen_addr_file {
            spanlake.write_listen_addrs(path).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(spanlake)
    }

    /// Writes the bound addresses as JSON, atomically (a reader never sees
    /// a partial file).
    fn write_listen_addrs(&self, path: &std::path::Path) -> std::io::Result<()> {
        let addrs = serde_json::json!({
            "http": self.http_addr.to_string(),
            "otlp_grpc": self.otlp_grpc_addr().map(|a| a.to_string()),
            "otlp_http": self.otlp_http_addr().map(|a| a.to_string()),
        });
        let staged = path.with_extension("partial");
        std::fs::write(&staged, addrs.to_string())?;
        std::fs::rename(&staged, path)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn otlp_grpc_addr(&self) -> Option<SocketAddr> {
        self.ingester.as_ref().map(Ingester::grpc_addr)
    }

    pub fn otlp_http_addr(&self) -> Option<SocketAddr> {
        self.ingester.as_ref().map(Ingester::http_addr)
    }

    /// Bytes the ingester holds in buffers or in flushes (0 without an ingester).
    pub fn buffered_bytes(&self) -> usize {
        self.ingester.as_ref().map_or(0, Ingester::buffered_bytes)
    }

    pub fn querier(&self) -> Option<&Arc<Querier>> {
        self.querier.as_ref()
    }

    /// Graceful stop: the ingester stops accepting, flushes and acknowledges
    /// what it holds; then the HTTP API stops.
    pub async fn shutdown(self) {
        if let Some(ingester) = self.ingester {
            ingester.shutdown().await;
        }
        let _ = self.stop.send(true);
        if let Some(compactor) = self.compactor {
            let _ = tokio::task::spawn_blocking(move || compactor.join()).await;
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn metrics(registry: Arc<Registry>) -> impl IntoResponse {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode to a string");
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}
