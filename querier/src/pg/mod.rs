//! SQL over spans through the PostgreSQL wire protocol (`--pg-addr`,
//! default port 5433): `psql`, Grafana's PostgreSQL data source, DBeaver,
//! drivers. Simple and extended query protocols.
//!
//! The same rules as `POST /api/sql`: read-only statements only (the same
//! refusals), the same per-query deadline, memory limit and admission slot,
//! each span counted once, and only the caller's tables. A connection's
//! tenant is its user name with multi-tenancy on (see [`Credentials`]).
//!
//! Statements are planned in their tenant's planning session (one per
//! tenant, shared by its connections): the tenant's tables, plus the
//! `pg_catalog` and `information_schema` that clients read on connect and
//! for autocomplete (both list only that session's tables). Each statement
//! runs in a fresh execution context with its own memory pool, as an HTTP
//! query does. `SET` of client settings (`application_name`, `DateStyle`,
//! `statement_timeout`, …), `SHOW`, `BEGIN`/`COMMIT`/`ROLLBACK` are answered
//! as PostgreSQL does; `SET` of engine settings is refused.
//!
//! The protocol pieces come from `datafusion-postgres` (pgwire, the
//! `pg_catalog` tables and the Arrow-to-PostgreSQL encoding), pinned in the
//! workspace and used only from this module.

mod auth;
mod display;
mod relay;
mod session;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use spanlake_schemas::TenantId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub use auth::Credentials;

use crate::Querier;
use crate::error::QueryError;
use session::Session;

/// The PostgreSQL listener's settings.
#[derive(Debug, Clone, Default)]
pub struct PgConfig {
    /// Who may connect; `None` trusts every connection (single-tenant only).
    pub credentials: Option<Arc<Credentials>>,
    /// Most connections open at once; more are refused (SQLSTATE 53300).
    pub max_connections: usize,
    /// TLS: a PEM certificate chain and its PEM private key.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Serves the PostgreSQL protocol for one querier.
pub struct PgServer {
    querier: Arc<Querier>,
    credentials: Option<Arc<Credentials>>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    parser: PostgresCompatibilityParser,
    /// Each tenant's planning session, made on its first connection. One per
    /// tenant, not per connection: a session's `pg_catalog` is never freed
    /// (it refers to its own catalog list), so per-connection sessions would
    /// leak several MiB per connection. Tenants are bounded by the
    /// credentials file (one without it).
    planners: tokio::sync::Mutex<std::collections::HashMap<TenantId, Arc<SessionContext>>>,
    /// Open connections by their cancel key: a cancel request stops the
    /// query running on one (dropping it frees its slot and memory).
    cancels: Arc<ConnectionManager>,
}

impl Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("credentials", &self.credentials)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// Checks the settings (multi-tenancy needs credentials; TLS files must
    /// load) and builds the server.
    pub fn new(querier: Arc<Querier>, config: PgConfig) -> Result<Arc<Self>, String> {
        if querier.config.multi_tenant && config.credentials.is_none() {
            return Err("with multi-tenancy on, the PostgreSQL listener needs --pg-credentials-file \
                        (each tenant connects as its own user, with a password)"
                .into());
        }
        let tls = config.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
        let max_connections = config.max_connections.max(1);
        Ok(Arc::new(Self {
            querier,
            credentials: config.credentials,
            tls,
            connections: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            parser: PostgresCompatibilityParser::new(),
            planners: Default::default(),
            cancels: Arc::new(ConnectionManager::new()),
        }))
    }

    async fn planning_session(&self, tenant: &TenantId) -> PgWireResult<Arc<SessionContext>> {
        let mut planners = self.planners.lock().await;
        if let Some(ctx) = planners.get(tenant) {
            return Ok(Arc::clone(ctx));
        }
        let ctx = Arc::new(self.querier.pg_session(tenant).await.map_err(pg_error)?);
        planners.insert(tenant.clone(), Arc::clone(&ctx));
        Ok(ctx)
    }

    /// Accepts connections on `listener` until `stop` turns true.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let stopping = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        tokio::spawn(Arc::clone(&self).connection(socket, peer));
                    }
                    Err(error) => {
                        // Out of file descriptors, most likely: wait, not spin.
                        tracing::warn!(%error, "accepting a PostgreSQL connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut stopping => return,
            }
        }
    }

    async fn connection(self: Arc<Self>, mut socket: TcpStream, peer: SocketAddr) {
        let _ = socket.set_nodelay(true);
        let Ok(_slot) = Arc::clone(&self.connections).try_acquire_owned() else {
            let message = format!(
                "sorry, too many clients already: this querier takes {} PostgreSQL connections (--pg-max-connections)",
                self.max_connections
            );
            let _ = socket.write_all(&fatal_error("53300", &message)).await;
            let _ = socket.shutdown().await;
            return;
        };
        let session = Arc::new(Session::new(&self));
        let startup = Arc::new(auth::Startup::new(self.credentials.as_ref(), &self.cancels));
        let cancel = Arc::new(DefaultCancelHandler::new(Arc::clone(&self.cancels)));
        let handlers = Connection { startup, cancel, session };
        // The engine speaks to the relay, which owns the client's connection
        // and caps the size of what it sends.
        let (engine, relayed) = match tokio::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, %peer, "no socket pair for a PostgreSQL connection");
                return;
            }
        };
        let (served, relayed) = tokio::join!(
            pgwire::tokio::process_socket_unix(engine, handlers),
            relay::serve(socket, self.tls.clone(), relayed)
        );
        if let Err(error) = served.and(relayed) {
            tracing::debug!(%error, %peer, "PostgreSQL connection ended with an error");
        }
    }
}

/// A protocol `ErrorResponse` (severity FATAL), written before start-up.
fn fatal_error(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<pgwire::tokio::TlsAcceptor, String> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the TLS certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("reading the TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("the TLS certificate and key do not make a server configuration: {e}"))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// One connection's handlers.
struct Connection {
    startup: Arc<auth::Startup>,
    cancel: Arc<DefaultCancelHandler>,
    session: Arc<Session>,
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        tracing::debug!(%error, peer = %client.socket_addr(), "PostgreSQL error answered");
    }
}

pub(super) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// The SQLSTATE and message of a query error.
pub(super) fn pg_error(error: QueryError) -> PgWireError {
    let code = match &error {
        QueryError::SqlRefused(_) => "25006",
        QueryError::Sql(_) => "42601",
        QueryError::InvalidParameter { .. } | QueryError::InvalidTraceId { .. } => "22023",
        QueryError::InvalidTenant(_) => "28000",
        QueryError::Timeout { .. } => "57014",
        QueryError::MemoryLimit(_) | QueryError::TraceTooLarge { .. } => "53200",
        QueryError::Saturated { .. } => "53300",
        QueryError::Execution(_) | QueryError::ReadBlock { .. } | QueryError::Decode(_) | QueryError::Internal(_) => {
            "XX000"
        }
    };
    user_error(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_of_one_tenant_share_one_planning_session() {
        let storage = spanlake_schemas::Storage::new(Arc::new(object_store::memory::InMemory::new()));
        let config = crate::Config { multi_tenant: true, ..crate::Config::default() };
        let querier = Querier::new(config, storage, &mut prometheus_client::registry::Registry::default());
        let credentials = Arc::new(Credentials::parse("team-a:a\nteam-b:b").unwrap());
        let server =
            PgServer::new(querier, PgConfig { credentials: Some(credentials), ..PgConfig::default() }).unwrap();
        let tenant = |id: &str| TenantId::new(id).unwrap();
        let first = server.planning_session(&tenant("team-a")).await.unwrap();
        let again = server.planning_session(&tenant("team-a")).await.unwrap();
        let other = server.planning_session(&tenant("team-b")).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "a second connection reuses the tenant's session");
        assert!(!Arc::ptr_eq(&first, &other), "tenants never share one");
        assert_eq!(server.planners.lock().await.len(), 2);
    }

    #[test]
    fn multi_tenancy_without_credentials_is_refused() {
        let storage = spanlake_schemas::Storage::new(Arc::new(object_store::memory::InMemory::new()));
        let config = crate::Config { multi_tenant: true, ..crate::Config::default() };
        let querier = Querier::new(config, storage, &mut prometheus_client::registry::Registry::default());
        let error = PgServer::new(querier, PgConfig::default()).unwrap_err();
        assert!(error.contains("--pg-credentials-file"), "{error}");
    }

    #[test]
    fn the_refusal_before_start_up_is_a_protocol_error_response() {
        let bytes = fatal_error("53300", "too many");
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, bytes.len());
        assert!(bytes.ends_with(b"Mtoo many\0\0"));
    }
}
