//! Wiring the roles into one process: storage, querier catalog, ingester
//! (whose commits go straight into the local catalog), compactor (on its own
//! thread) and the HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
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
    /// The PostgreSQL listener's address (a querier with `--pg-addr`).
    pg_addr: Option<SocketAddr>,
    /// Where other queriers send their tasks (a querier with `--worker-addr`).
    worker_addr: Option<SocketAddr>,
    /// The HTTP server (query API, `/metrics`, `/ready`).
    http: JoinHandle<()>,
    health: Arc<Health>,
    /// Longest wait for queries in flight when stopping.
    drain_timeout: std::time::Duration,
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
            tasks.extend(querier.start_peer_refresh().await);
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
        let compactor = if role == Role::Compactor || (role == Role::All && args.all_in_one.compaction) {
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
        let health = Arc::new(Health::new(storage.clone()));
        let config = Arc::<str>::from(args.server.effective_config.as_str());
        let mut router = Router::new()
            .route("/metrics", get(move || metrics(Arc::clone(&registry))))
            .route("/ready", get(ready).with_state(Arc::clone(&health)))
            .route("/live", get(|| async { "live" }))
            .route("/status/config", get(move || async move { config.to_string() }));
        if let Some(querier) = &querier {
            router = router.merge(querier.router());
        }
        let listener = tokio::net::TcpListener::bind(args.server.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.server.http_addr))?;
        let http_addr = listener.local_addr()?;
        let http = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(error) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "http server failed");
            }
        });
        let pg_config = args.pg_config()?;
        let pg_addr = match (&querier, args.querier.pg_addr.0) {
            (Some(_), Some(_)) if args.server.multi_tenant && pg_config.credentials.is_none() => {
                // Trusting every connection would let anyone read any tenant.
                tracing::warn!(
                    "the PostgreSQL listener is off: with multi-tenancy on it needs --pg-credentials-file \
                     (each tenant connects as its own user, with a password)"
                );
                None
            }
            (Some(querier), Some(addr)) => {
                let server =
                    spanlake_querier::pg::PgServer::new(Arc::clone(querier), pg_config).map_err(anyhow::Error::msg)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--pg-addr; \"off\" turns it off)"))?;
                let pg_addr = listener.local_addr()?;
                tasks.push(tokio::spawn(server.serve(listener, stop.subscribe())));
                Some(pg_addr)
            }
            _ => None,
        };
        let worker_addr = match (&querier, args.querier.worker_addr.0) {
            (Some(querier), Some(addr)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--worker-addr; \"off\" turns it off)"))?;
                let worker_addr = listener.local_addr()?;
                let querier = Arc::clone(querier);
                let mut stopped = stop.subscribe();
                tasks.push(tokio::spawn(async move {
                    let stop = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    if let Err(error) = querier.serve_workers(listener, stop).await {
                        tracing::error!(%error, "the worker server failed");
                    }
                }));
                Some(worker_addr)
            }
            _ => None,
        };
        info!(%http_addr, ?pg_addr, ?worker_addr, ?role, "spanlake started");
        let drain_timeout = args.server.drain_timeout;
        let spanlake = Self {
            ingester,
            querier,
            compactor,
            http_addr,
            pg_addr,
            worker_addr,
            http,
            health,
            drain_timeout,
            stop,
            tasks,
        };
        if let Some(path) = &args.server.listen_addr_file {
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
            "pg": self.pg_addr.map(|a| a.to_string()),
            "worker": self.worker_addr.map(|a| a.to_string()),
        });
        let staged = path.with_extension("partial");
        std::fs::write(&staged, addrs.to_string())?;
        std::fs::rename(&staged, path)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The PostgreSQL listener's address, when this process serves it.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg_addr
    }

    /// The worker listener's address, when this process serves one.
    pub fn worker_addr(&self) -> Option<SocketAddr> {
        self.worker_addr
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

    /// Graceful stop (SIGTERM): `/ready` answers 503 at once; the ingester
    /// stops accepting, flushes and acknowledges what it holds; the HTTP API
    /// stops taking connections and finishes the queries in flight (at most
    /// `--drain-timeout`); the compactor ends its current step.
    pub async fn shutdown(self) {
        self.health.draining.store(true, Ordering::Relaxed);
        if let Some(ingester) = self.ingester {
            ingester.shutdown().await;
        }
        let _ = self.stop.send(true);
        let mut http = self.http;
        if tokio::time::timeout(self.drain_timeout, &mut http).await.is_err() {
            tracing::warn!(timeout = ?self.drain_timeout, "queries still running at the drain timeout: stopped");
            http.abort();
        }
        if let Some(compactor) = self.compactor {
            let _ = tokio::task::spawn_blocking(move || compactor.join()).await;
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// What `/ready` checks: the process is not stopping and its object store
/// answers. (A querier listens only once its catalog is loaded, so a
/// listening querier has one.) Probes are cached for a second, so frequent
/// probes cost at most one store request per second.
#[derive(Debug)]
struct Health {
    storage: Storage,
    draining: AtomicBool,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

/// How long one readiness probe may wait for the store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a probe's answer is reused.
const PROBE_CACHE: Duration = Duration::from_secs(1);

impl Health {
    fn new(storage: Storage) -> Self {
        Self { storage, draining: AtomicBool::new(false), last: tokio::sync::Mutex::new(None) }
    }

    async fn store_reachable(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = &*last
            && at.elapsed() < PROBE_CACHE
        {
            return answer.clone();
        }
        // A read of a key that never exists: one cheap request, answered
        // "not found" by a healthy store.
        let key = object_store::path::Path::from("spanlake-readiness-probe");
        let probe = self.storage.get_if_exists(&key);
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("object store unreachable: {error}")),
            Err(_) => Err(format!("object store did not answer within {PROBE_TIMEOUT:?}")),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}

/// `GET /ready`: 200 when this process should get traffic, else 503 with why.
async fn ready(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    if health.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match health.store_reachable().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics(registry: Arc<Registry>) -> impl IntoResponse {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics encode to a string");
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}
