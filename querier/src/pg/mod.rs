//! SQL over spans through the PostgreSQL wire protocol (`--pg-addr`,
//! default port 5433): `psql`, Grafana's PostgreSQL data source, DBeaver,
//! drivers. Simple and extended query protocols.
//!
//! The same rules as `POST /api/sql`: read-only statements only (the same
//! refusals), the same per-query deadline, memory limit and admission slot,
//! each span counted once, and only the caller's tables. A connection's
//! tenant is its user name with multi-tenancy on (see [`Credentials`]).
//!
//! Each connection plans in its own session: the tenant's tables, plus the
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

use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, METADATA_USER, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::NoticeResponse;
use pgwire::types::format::FormatOptions;
use spanlake_schemas::TenantId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OnceCell, Semaphore, watch};

pub use auth::Credentials;

use crate::Querier;
use crate::error::QueryError;

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

/// The session a connection's statements are planned in, over its
/// tenant's tables: one per tenant, shared by its connections (planning
/// only reads it; no statement that reaches it changes its settings).
struct Planner {
    ctx: Arc<SessionContext>,
}

/// One connection's state, shared by its simple and extended handlers.
struct Inner {
    server: Arc<PgServer>,
    planner: OnceCell<Planner>,
}

struct Session {
    inner: Arc<Inner>,
    parser: Arc<Parser>,
}

impl Session {
    fn new(server: &Arc<PgServer>) -> Self {
        let inner = Arc::new(Inner { server: Arc::clone(server), planner: OnceCell::new() });
        Self { parser: Arc::new(Parser(Arc::clone(&inner))), inner }
    }
}

/// A parsed statement of the extended protocol.
#[derive(Debug, Clone)]
enum PgStatement {
    /// A read-only query, planned (parameters still open).
    Query(Box<LogicalPlan>),
    /// `SET`, `SHOW` or a transaction statement, answered by a hook; the plan
    /// describes its answer when it has one.
    Hook(Box<Statement>, Option<Box<LogicalPlan>>),
    /// A `SET` answered and ignored.
    IgnoredSet,
}

/// How a statement is answered.
enum Kind {
    Query,
    Hook,
    /// A client setting this server has no use for: `SET`, changing nothing.
    IgnoredSet,
}

fn kind(statement: &Statement) -> PgWireResult<Kind> {
    Ok(match statement {
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. } => Kind::Hook,
        Statement::Set(set) => check_set(set)?,
        _ => Kind::Query,
    })
}

/// `SHOW timezone` is PostgreSQL's other spelling of `SHOW TIME ZONE`, the
/// one the hook knows.
fn show_alias(statement: Statement) -> Statement {
    use datafusion::sql::sqlparser::ast::Ident;
    match statement {
        Statement::ShowVariable { variable }
            if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case("timezone") =>
        {
            Statement::ShowVariable { variable: vec![Ident::new("time"), Ident::new("zone")] }
        }
        other => other,
    }
}

/// The client settings the `SET` hook keeps per connection.
const CLIENT_SETTINGS: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// Client settings go to the hook, which keeps them per connection; other
/// PostgreSQL settings are answered and ignored; the query engine's own
/// settings (`datafusion.*`, any namespaced key) are refused. Nothing
/// reaches the shared planning session's configuration.
fn check_set(set: &Set) -> PgWireResult<Kind> {
    let (name, namespaced) = match set {
        Set::SingleAssignment { variable, .. } => {
            let name = variable.to_string().to_ascii_lowercase();
            let namespaced = name.contains('.');
            (name, namespaced)
        }
        other => {
            let text = other.to_string();
            let namespaced = text.to_ascii_lowercase().contains("datafusion.");
            (text, namespaced)
        }
    };
    if namespaced {
        return Err(user_error(
            "42501",
            format!("the query engine's settings are fixed (limits apply to every query); refused: SET {name}"),
        ));
    }
    Ok(match set {
        Set::SetTimeZone { local: false, .. } => Kind::Hook,
        Set::SingleAssignment { scope: None, hivevar: false, .. } if CLIENT_SETTINGS.contains(&name.as_str()) => {
            Kind::Hook
        }
        _ => Kind::IgnoredSet,
    })
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// The SQLSTATE and message of a query error.
fn pg_error(error: QueryError) -> PgWireError {
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

fn hooks() -> [&'static dyn QueryHook; 2] {
    [&SetShowHook, &TransactionStatementHook]
}

/// The client's `statement_timeout` (kept in its metadata by the SET hook).
fn statement_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    client.metadata().get("statement_timeout_ms")?.parse().ok().map(Duration::from_millis)
}

impl Inner {
    /// The connection's planner, made on its first statement.
    async fn planner<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<&Planner> {
        self.planner
            .get_or_try_init(|| async {
                let querier = &self.server.querier;
                let tenant = if querier.config.multi_tenant {
                    let user = client.metadata().get(METADATA_USER).map(String::as_str).unwrap_or_default();
                    TenantId::new(user).map_err(|e| pg_error(QueryError::InvalidTenant(e)))?
                } else {
                    TenantId::single()
                };
                Ok(Planner { ctx: self.server.planning_session(&tenant).await? })
            })
            .await
    }

    /// Parses `sql` within the statement size limits.
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        crate::sql::check_size(sql).map_err(pg_error)?;
        self.server.parser.parse(sql).map_err(|e| user_error("42601", format!("invalid SQL: {e}")))
    }

    /// Plans a read-only query; anything else is refused, as `/api/sql` does.
    async fn plan<C: ClientInfo + ?Sized>(&self, client: &C, statement: Statement) -> PgWireResult<LogicalPlan> {
        let planner = self.planner(client).await?;
        let is_show = matches!(
            statement,
            Statement::ShowTables { .. } | Statement::ShowColumns { .. } | Statement::ShowFunctions { .. }
        );
        let statement = DfStatement::Statement(Box::new(statement));
        if !is_show {
            crate::sql::check_statement(&statement).map_err(pg_error)?;
        }
        let plan = planner.ctx.state().statement_to_plan(statement).await.map_err(|e| pg_error(e.into()))?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        options.verify_plan(&plan).map_err(|e| pg_error(QueryError::SqlRefused(e.strip_backtrace())))?;
        display::for_clients(plan).map_err(|e| pg_error(e.into()))
    }

    /// Runs a planned query in its own admission slot, deadline and memory
    /// pool, and answers its rows.
    async fn run<C>(&self, client: &mut C, plan: LogicalPlan, format: &Format) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(plan.schema().as_arrow(), format, Some(options))?);
        let timeout = statement_timeout(client);
        let querier = &self.server.querier;
        let permit = querier.admit().map_err(pg_error)?;
        let (batches, partial) = querier
            .execute("pgwire", permit, move |q| async move { q.run_plan(plan, timeout).await })
            .await
            .map_err(pg_error)?;
        if let Some(message) = partial.message() {
            querier.metrics.answered_partial("pgwire");
            let notice = ErrorInfo::new("WARNING".into(), "01000".into(), format!("partial answer: {message}"));
            client.send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(notice))).await?;
        }
        let row_fields = Arc::clone(&fields);
        let rows = batches.into_iter().flat_map(move |batch| encode_recordbatch(Arc::clone(&row_fields), batch));
        Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter(rows))))
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.inner.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut answers = Vec::with_capacity(statements.len());
        for statement in statements {
            let statement = show_alias(statement);
            let answer = match kind(&statement)? {
                Kind::Hook => {
                    let ctx = &self.inner.planner(client).await?.ctx;
                    let mut answer = None;
                    for hook in hooks() {
                        answer = hook.handle_simple_query(&statement, ctx, client).await;
                        if answer.is_some() {
                            break;
                        }
                    }
                    answer.unwrap_or(Ok(Response::EmptyQuery))?
                }
                Kind::Query => {
                    let plan = self.inner.plan(client, statement).await?;
                    self.inner.run(client, plan, &Format::UnifiedText).await?
                }
                Kind::IgnoredSet => Response::Execution(Tag::new("SET")),
            };
            answers.push(answer);
        }
        Ok(answers)
    }
}

/// The extended protocol's parser: one statement per `Parse`.
struct Parser(Arc<Inner>);

/// The types of a plan's parameters (`$1`, `$2`, …), in order, as DataFusion
/// infers them, and as PostgreSQL types for the client.
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<(Option<arrow::datatypes::DataType>, Type)>> {
    let types = plan.get_parameter_types().map_err(|e| pg_error(e.into()))?;
    let mut numbered: Vec<(usize, Option<arrow::datatypes::DataType>)> = types
        .into_iter()
        .filter_map(|(id, data_type)| Some((id.strip_prefix('$')?.parse().ok()?, data_type)))
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    numbered
        .into_iter()
        .map(|(_, data_type)| {
            let wire = match &data_type {
                Some(data_type) => into_pg_type(data_type)?,
                None => Type::UNKNOWN,
            };
            Ok((data_type, wire))
        })
        .collect()
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.0.parse(sql)?;
        if statements.len() > 1 {
            return Err(user_error("42601", "cannot insert multiple commands into a prepared statement".into()));
        }
        let Some(statement) = statements.pop().map(show_alias) else { return Ok(None) };
        Ok(Some(match kind(&statement)? {
            Kind::Query => PgStatement::Query(Box::new(self.0.plan(client, statement).await?)),
            Kind::IgnoredSet => PgStatement::IgnoredSet,
            Kind::Hook => {
                let ctx = &self.0.planner(client).await?.ctx;
                let mut plan = None;
                for hook in hooks() {
                    if let Some(described) = hook.handle_extended_parse_query(&statement, ctx, client).await {
                        plan = Some(Box::new(described?));
                        break;
                    }
                }
                PgStatement::Hook(Box::new(statement), plan)
            }
        }))
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        match statement {
            PgStatement::Query(plan) => Ok(parameter_types(plan)?.into_iter().map(|(_, wire)| wire).collect()),
            PgStatement::Hook(..) | PgStatement::IgnoredSet => Ok(Vec::new()),
        }
    }

    fn get_result_schema(&self, statement: &PgStatement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let plan = match statement {
            PgStatement::Query(plan) | PgStatement::Hook(_, Some(plan)) => plan,
            PgStatement::Hook(_, None) | PgStatement::IgnoredSet => return Ok(Vec::new()),
        };
        if matches!(**plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_)) {
            return Ok(Vec::new());
        }
        arrow_schema_to_pg_fields(plan.schema().as_arrow(), format.unwrap_or(&Format::UnifiedText), None)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            PgStatement::Query(plan) => {
                let types = parameter_types(plan)?;
                let inferred: Vec<_> = types.iter().map(|(data_type, _)| data_type.as_ref()).collect();
                let wire: Vec<_> = types.iter().map(|(_, wire)| Some(wire)).collect();
                let values = deserialize_parameters_with_server_types(portal, &inferred, &wire)?;
                let plan = (**plan).clone().replace_params_with_values(&values).map_err(|e| pg_error(e.into()))?;
                self.inner.run(client, plan, &portal.result_column_format).await
            }
            PgStatement::Hook(statement, plan) => {
                let ctx = &self.inner.planner(client).await?.ctx;
                let none = ParamValues::List(Vec::new());
                for hook in hooks() {
                    let answer = match plan {
                        Some(plan) => hook.handle_extended_query(statement, plan, &none, ctx, client).await,
                        None => hook.handle_simple_query(statement, ctx, client).await,
                    };
                    if let Some(answer) = answer {
                        return answer;
                    }
                }
                Ok(Response::EmptyQuery)
            }
            PgStatement::IgnoredSet => Ok(Response::Execution(Tag::new("SET"))),
        }
    }
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

    #[test]
    fn engine_settings_are_refused_and_client_settings_pass() {
        let parser = PostgresCompatibilityParser::new();
        for (sql, refused) in [
            ("SET application_name = 'psql'", false),
            ("SET extra_float_digits = 3", false),
            ("SET statement_timeout = '5s'", false),
            ("SET TIME ZONE 'UTC'", false),
            ("SET datafusion.execution.target_partitions = 1000", true),
            ("SET datafusion.runtime.memory_limit = '100G'", true),
            ("SET client_min_messages = warning", false),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", false),
        ] {
            let statement = parser.parse(sql).unwrap().remove(0);
            assert_eq!(kind(&statement).is_err(), refused, "{sql}");
        }
        let hooked = |sql: &str| matches!(kind(&parser.parse(sql).unwrap()[0]), Ok(Kind::Hook));
        assert!(hooked("SET application_name = 'x'") && hooked("SET TIME ZONE 'UTC'"));
        assert!(!hooked("SET client_min_messages = warning"), "answered, never run on the shared session");
    }
}
