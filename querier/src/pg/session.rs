//! One connection's statements: parsing within the size limits, the
//! read-only check, planning in the tenant's planning session, and running
//! each query in its own admission slot, deadline and memory pool. `SET`,
//! `SHOW` and transaction statements go to datafusion-postgres' hooks.

use std::fmt::Debug;
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
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::NoticeResponse;
use pgwire::types::format::FormatOptions;
use spanlake_schemas::TenantId;
use tokio::sync::OnceCell;

use super::{PgServer, display, pg_error, user_error};
use crate::error::QueryError;

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

pub(super) struct Session {
    inner: Arc<Inner>,
    parser: Arc<Parser>,
}

impl Session {
    pub(super) fn new(server: &Arc<PgServer>) -> Self {
        let inner = Arc::new(Inner { server: Arc::clone(server), planner: OnceCell::new() });
        Self { parser: Arc::new(Parser(Arc::clone(&inner))), inner }
    }
}

/// A parsed statement of the extended protocol.
#[derive(Debug, Clone)]
pub(super) enum PgStatement {
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
    // What is refused, as the error names it: `SET <name>`, or the whole statement.
    let (name, refused) = match set {
        Set::SingleAssignment { variable, .. } => {
            let name = variable.to_string().to_ascii_lowercase();
            let refused = name.contains('.').then(|| format!("SET {name}"));
            (name, refused)
        }
        other => {
            let text = other.to_string();
            let refused = text.to_ascii_lowercase().contains("datafusion.").then(|| text.clone());
            (text, refused)
        }
    };
    if let Some(refused) = refused {
        return Err(user_error(
            "42501",
            format!("the query engine's settings are fixed (limits apply to every query); refused: {refused}"),
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
        let row_fields = Arc::clone(&fields);
        // Rows are encoded in the query's task too (CPU work off the
        // connections' runtime); each batch is dropped once encoded.
        let (rows, partial) = querier
            .execute("pgwire", permit, move |q| async move {
                let (batches, partial) = q.run_plan(plan, timeout).await?;
                let mut rows = Vec::new();
                for batch in batches {
                    for row in encode_recordbatch(Arc::clone(&row_fields), batch) {
                        rows.push(row.map_err(|e| QueryError::Execution(format!("encoding a row: {e}")))?);
                    }
                }
                Ok((rows, partial))
            })
            .await
            .map_err(pg_error)?;
        if let Some(message) = partial.message() {
            querier.metrics.answered_partial("pgwire");
            let notice = ErrorInfo::new("WARNING".into(), "01000".into(), format!("partial answer: {message}"));
            client.send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(notice))).await?;
        }
        Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter(rows.into_iter().map(Ok)))))
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
pub(super) struct Parser(Arc<Inner>);

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
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

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
