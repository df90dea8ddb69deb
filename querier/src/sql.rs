//! SQL over one tenant's spans: exactly one read-only statement, with a time
//! limit and a memory limit.
//!
//! Tables: `spans` (the span schema, one row per span), `traces` (one row
//! per trace: start, end, duration, span count, root service and name),
//! `span_edges` (one row per parent–child pair) and `fanout_parents` (one row
//! per span: its outbound call count and slowest call, for fan-out percentiles).
//! Refused before planning: DDL, DML, `COPY`, `CREATE EXTERNAL TABLE`, `SET`,
//! several statements. DataFusion's own checks stay on as a second line, and
//! the session has no file-reading table functions or URL tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt;
use spanlake_schemas::TenantId;
use url::Url;

use crate::Querier;
use crate::blocks::{Partial, SkippedBlocks};
use crate::error::{QueryError, Result};
use crate::memory::CountedPool;
use crate::table::{Copies, STORE_URL, SpansTable};

/// The blocks the scans of `ctx` skipped so far.
pub(crate) fn skipped_blocks(ctx: &SessionContext) -> Partial {
    ctx.state().config().get_extension::<SkippedBlocks>().map(|s| s.get()).unwrap_or_default()
}

/// Every stored copy of each span (a retried export twice until compaction):
/// for readers that de-duplicate themselves or need no counts.
pub(crate) const SPANS_AS_STORED: &str = "spans_as_stored";

/// Per-trace summary view.
const TRACES_VIEW: &str = "\
SELECT trace_id,
       min(start_time) AS start_time,
       max(end_time) AS end_time,
       arrow_cast(max(end_time) - min(start_time), 'Int64') AS duration_ns,
       count(*) AS span_count,
       max(CASE WHEN parent_span_id IS NULL THEN service_name END) AS root_service_name,
       max(CASE WHEN parent_span_id IS NULL THEN name END) AS root_name,
       sum(CASE WHEN status_code = 'error' THEN 1 ELSE 0 END) AS error_count
FROM spans GROUP BY trace_id";

/// Parent and child side by side, one row per direct child.
const SPAN_EDGES_VIEW: &str = "\
SELECT p.trace_id,
       p.span_id AS parent_span_id, p.service_name AS parent_service, p.name AS parent_operation,
       p.kind AS parent_kind, p.start_time AS parent_start_time, p.end_time AS parent_end_time,
       p.duration_ns AS parent_duration_ns,
       c.span_id AS child_span_id, c.service_name AS child_service, c.name AS child_operation,
       c.kind AS child_kind, c.start_time AS child_start_time, c.end_time AS child_end_time,
       c.duration_ns AS child_duration_ns, c.status_code AS child_status_code,
       c.span_attributes['peer.service']['str'] AS child_peer_service
FROM spans p JOIN spans c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id";

/// One row per span with its outbound calls (client and producer children):
/// degree 0 and a null slowest call when it made none.
const FANOUT_PARENTS_VIEW: &str = "\
SELECT p.trace_id, p.span_id, p.service_name AS parent_service, p.name AS parent_operation,
       p.kind AS parent_kind, p.start_time, p.duration_ns AS parent_duration_ns,
       count(c.span_id) AS degree, max(c.duration_ns) AS max_child_duration_ns,
       sum(c.duration_ns) AS sum_child_duration_ns
FROM spans p LEFT JOIN spans c
  ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id AND c.kind IN ('client', 'producer')
GROUP BY p.trace_id, p.span_id, p.service_name, p.name, p.kind, p.start_time, p.duration_ns";

/// Deepest nesting of parentheses and brackets in one SQL statement.
pub(crate) const MAX_SQL_NESTING: usize = 64;
/// Most operators (arithmetic, comparison, `AND`, `OR`, `NOT`, `CASE`, casts,
/// subscripts, …) in one SQL statement. Expressions deepen only through
/// operators and nesting, so together these bound every walk of the plan.
pub(crate) const MAX_SQL_OPERATORS: usize = 1000;

/// Refuses statements beyond the nesting and operator limits, before any
/// tree is built from them.
pub(crate) fn check_size(sql: &str) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().map_err(|e| QueryError::Sql(e.to_string()))?;
    let (mut depth, mut operators) = (0usize, 0usize);
    for token in &tokens {
        match token {
            Token::LParen | Token::LBrace => depth += 1,
            Token::RParen | Token::RBrace | Token::RBracket => depth = depth.saturating_sub(1),
            Token::LBracket => {
                depth += 1;
                operators += 1;
            }
            Token::Word(word) => {
                operators += matches!(
                    word.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::NOT
                        | Keyword::IS
                        | Keyword::IN
                        | Keyword::LIKE
                        | Keyword::ILIKE
                        | Keyword::SIMILAR
                        | Keyword::BETWEEN
                        | Keyword::CASE
                        | Keyword::WHEN
                        | Keyword::AT
                        | Keyword::COLLATE
                        | Keyword::ESCAPE
                        | Keyword::OVERLAPS
                        | Keyword::EXISTS
                        | Keyword::UNION
                        | Keyword::INTERSECT
                        | Keyword::EXCEPT
                        | Keyword::JOIN
                ) as usize
            }
            Token::EOF
            | Token::Number(..)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::Whitespace(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_) => {}
            // Every other token is an operator of some kind.
            _ => operators += 1,
        }
        if depth > MAX_SQL_NESTING {
            return Err(QueryError::Sql(format!(
                "the statement nests deeper than the limit of {MAX_SQL_NESTING} levels"
            )));
        }
        if operators > MAX_SQL_OPERATORS {
            return Err(QueryError::Sql(format!(
                "the statement has more than the limit of {MAX_SQL_OPERATORS} operators"
            )));
        }
    }
    Ok(())
}

/// Refuses anything but one read-only query, naming what was refused.
pub(crate) fn check_read_only(sql: &str) -> Result<()> {
    check_size(sql)?;
    let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Sql(e.to_string()))?;
    match statements.len() {
        1 => check_statement(&statements[0]),
        0 => Err(QueryError::SqlRefused("the request holds no SQL statement".into())),
        n => Err(QueryError::SqlRefused(format!("exactly one statement per request is allowed, got {n}"))),
    }
}

pub(crate) fn check_statement(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) => Ok(()),
            SqlStatement::Explain { statement, .. } => check_statement(&DfStatement::Statement(statement.clone())),
            other => Err(QueryError::SqlRefused(format!(
                "only read-only queries are allowed; refused: {}",
                statement_kind(&other.to_string())
            ))),
        },
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => {
            Err(QueryError::SqlRefused("CREATE EXTERNAL TABLE is refused: queries may not read files".into()))
        }
        DfStatement::CopyTo(_) => Err(QueryError::SqlRefused("COPY is refused: queries may not write files".into())),
        DfStatement::Reset(_) => Err(QueryError::SqlRefused("RESET is refused: settings are fixed".into())),
    }
}

/// The leading keywords of a statement (`INSERT INTO`, `CREATE TABLE`, …).
fn statement_kind(text: &str) -> String {
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_uppercase()
}

/// A query may spill at most this many times its memory limit to disk.
pub(crate) const SPILL_FACTOR: u64 = 4;

/// How `/api/sql` encodes its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlFormat {
    /// An array of row objects.
    Json,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

/// A finished query, encoded.
#[derive(Debug)]
pub struct SqlAnswer {
    pub body: Vec<u8>,
    /// Blocks skipped (unreadable, missing, foreign): the answer lacks their rows.
    pub(crate) partial: Partial,
    /// Whether the query ran spread over several queriers.
    pub(crate) spread: bool,
}

/// The encoded answer, charged to the query's memory pool as it grows: a
/// result larger than the pool stops with [`QueryError::MemoryLimit`].
struct PoolWriter {
    out: Vec<u8>,
    reservation: MemoryReservation,
    /// Set when the pool refused to grow.
    exhausted: Arc<AtomicBool>,
}

impl std::io::Write for PoolWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.reservation.try_grow(buf.len()).is_err() {
            self.exhausted.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("the SQL result exceeds the memory limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Writer {
    Json(arrow::json::Writer<PoolWriter, arrow::json::writer::JsonArray>),
    Csv(Box<arrow::csv::Writer<PoolWriter>>),
    Arrow(Box<arrow::ipc::writer::StreamWriter<PoolWriter>>),
}

/// Encodes batches in one format into a pool-charged buffer.
struct Encoder {
    writer: Writer,
    exhausted: Arc<AtomicBool>,
    limit: usize,
}

impl Encoder {
    fn new(format: SqlFormat, schema: &SchemaRef, reservation: MemoryReservation, limit: usize) -> Result<Self> {
        let exhausted = Arc::new(AtomicBool::new(false));
        let out = PoolWriter { out: Vec::new(), reservation, exhausted: Arc::clone(&exhausted) };
        let writer = match format {
            SqlFormat::Json => Writer::Json(arrow::json::WriterBuilder::new().with_explicit_nulls(true).build(out)),
            SqlFormat::Csv => Writer::Csv(Box::new(arrow::csv::WriterBuilder::new().with_header(true).build(out))),
            SqlFormat::Arrow => Writer::Arrow(Box::new(
                arrow::ipc::writer::StreamWriter::try_new(out, schema)
                    .map_err(|e| QueryError::Execution(format!("encoding arrow: {e}")))?,
            )),
        };
        Ok(Self { writer, exhausted, limit })
    }

    /// The error for a failed encoding step: the memory limit when the pool
    /// refused, else what the encoder said.
    fn failure(&self, error: arrow::error::ArrowError) -> QueryError {
        if self.exhausted.load(Ordering::Relaxed) {
            return self.over_limit();
        }
        match self.writer {
            Writer::Csv(_) => QueryError::InvalidParameter {
                name: "Accept",
                reason: format!("CSV cannot hold this result ({error}); select scalar columns or ask for JSON"),
            },
            _ => QueryError::Execution(format!("encoding the result: {error}")),
        }
    }

    fn over_limit(&self) -> QueryError {
        result_over_limit(self.limit)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let written = match &mut self.writer {
            Writer::Json(w) => w.write(batch),
            Writer::Csv(w) => w.write(batch),
            Writer::Arrow(w) => w.write(batch),
        };
        written.map_err(|e| self.failure(e))
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        let finished = match &mut self.writer {
            Writer::Json(w) => w.finish(),
            Writer::Csv(_) => Ok(()),
            Writer::Arrow(w) => w.finish(),
        };
        finished.map_err(|e| self.failure(e))?;
        let out = match self.writer {
            Writer::Json(w) => w.into_inner(),
            Writer::Csv(w) => (*w).into_inner(),
            Writer::Arrow(w) => (*w).into_inner().map_err(|e| QueryError::Execution(format!("encoding arrow: {e}")))?,
        };
        Ok(out.out)
    }
}

/// The error for an answer larger than the query's memory pool.
fn result_over_limit(limit: usize) -> QueryError {
    QueryError::MemoryLimit(format!(
        "the result is larger than the per-query memory limit of {limit} bytes (--sql-memory-limit); \
         select fewer rows or columns, or aggregate"
    ))
}

impl Querier {
    /// A DataFusion context with no tables: one query's own memory pool,
    /// spill cap and object store, and the shared footer cache.
    fn context(&self, config: SessionConfig) -> Result<SessionContext> {
        Ok(SessionContext::new_with_config_rt(config, self.runtime()?))
    }

    /// Partitions of a query's scans: one per core.
    pub(crate) fn partitions(&self) -> usize {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
    }

    /// One query's runtime: its own memory pool, spill cap and object
    /// store, and the shared footer cache.
    pub(crate) fn runtime(&self) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
        // Per query: its own memory limit; shared: the cache of parsed Parquet footers.
        let caches = CacheManagerConfig::default().with_file_metadata_cache(Some(Arc::clone(&self.file_metadata)));
        // Spilling (sorts, aggregates) is capped at SPILL_FACTOR × the memory limit per query.
        let spill = (self.config.sql_memory_limit as u64).saturating_mul(SPILL_FACTOR);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(CountedPool::new(self.config.sql_memory_limit, self.metrics.memory.clone())))
            .with_max_temp_directory_size(spill)
            .with_cache_manager(caches)
            .build_arc()?;
        let url = Url::parse(STORE_URL).expect("valid store url");
        let counted = crate::read_counter::ReadCounter::new(
            Arc::clone(self.storage.object_store()),
            self.metrics.bytes_read.clone(),
        );
        runtime.register_object_store(&url, Arc::new(counted));
        Ok(runtime)
    }

    pub(crate) fn session_config(&self) -> SessionConfig {
        SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(self.partitions())
            // Off only for the no-pruning baseline: DataFusion's own row-group pruning too.
            .set_bool("datafusion.execution.parquet.pruning", self.config.pruning)
            .with_extension(Arc::new(SkippedBlocks::default()))
    }

    /// Registers `tenant`'s tables and views, and only those, in `ctx`.
    pub(crate) async fn register_tables(&self, ctx: &SessionContext, tenant: &TenantId) -> Result<()> {
        for (name, copies) in [("spans", Copies::Once), (SPANS_AS_STORED, Copies::AsStored)] {
            let table = SpansTable::new(
                Arc::clone(&self.catalog),
                Arc::clone(&self.blocks),
                tenant.clone(),
                self.config.pruning,
                copies,
            );
            ctx.register_table(name, Arc::new(table))?;
        }
        for (name, view) in
            [("traces", TRACES_VIEW), ("span_edges", SPAN_EDGES_VIEW), ("fanout_parents", FANOUT_PARENTS_VIEW)]
        {
            let view = ctx.sql(view).await?.into_view();
            ctx.register_table(name, view)?;
        }
        Ok(())
    }

    /// A DataFusion session over `tenant`'s tables only.
    pub(crate) async fn session(&self, tenant: &TenantId) -> Result<SessionContext> {
        let ctx = self.context(self.session_config())?;
        self.register_tables(&ctx, tenant).await?;
        Ok(ctx)
    }

    /// A PostgreSQL connection's planning session: `tenant`'s tables, and
    /// the `pg_catalog` and `information_schema` over them that clients read.
    pub(crate) async fn pg_session(&self, tenant: &TenantId) -> Result<SessionContext> {
        const CATALOG: &str = "spanlake";
        let config =
            self.session_config().with_information_schema(true).with_default_catalog_and_schema(CATALOG, "public");
        let ctx = self.context(config)?;
        self.register_tables(&ctx, tenant).await?;
        let roles = datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
        datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(&ctx, CATALOG, roles).map_err(|e| *e)?;
        // Drivers parse `version()` for "PostgreSQL <major>.<minor>" (SQLAlchemy fails without it).
        let version = format!(
            "PostgreSQL 16.6 (Spanlake {}, Apache DataFusion {})",
            env!("CARGO_PKG_VERSION"),
            datafusion::DATAFUSION_VERSION
        );
        ctx.register_udf(datafusion::logical_expr::create_udf(
            "version",
            Vec::new(),
            arrow::datatypes::DataType::Utf8,
            datafusion::logical_expr::Volatility::Immutable,
            Arc::new(move |_| Ok(datafusion::logical_expr::ColumnarValue::Scalar(version.as_str().into()))),
        ));
        Ok(ctx)
    }

    /// Runs a plan made in another session (a PostgreSQL connection's) in a
    /// fresh context: this query's own memory pool, which also holds its
    /// rows until they are sent. `timeout` is the client's own, when shorter.
    pub(crate) async fn run_plan(
        &self,
        plan: LogicalPlan,
        timeout: Option<std::time::Duration>,
    ) -> Result<(Vec<RecordBatch>, Partial)> {
        let limit = self.config.sql_memory_limit;
        let run = |ctx: SessionContext| {
            let plan = plan.clone();
            async move {
                let held = MemoryConsumer::new("PostgreSQL result").register(&ctx.runtime_env().memory_pool);
                let mut rows = ctx.execute_logical_plan(plan).await?.execute_stream().await?;
                let mut batches = Vec::new();
                while let Some(batch) = rows.next().await {
                    let batch = batch?;
                    held.try_grow(crate::memory::batch_bytes(&batch)).map_err(|_| result_over_limit(limit))?;
                    batches.push(batch);
                }
                // The rows leave the pool here; they were counted while it bounded them.
                drop(held);
                Ok::<_, QueryError>((batches, skipped_blocks(&ctx)))
            }
        };
        // The plan holds its tables (the connection's session made them).
        let spread = self.spread_or_here(None, run);
        let (answer, _) = match timeout {
            Some(limit) => tokio::time::timeout(limit, spread).await.map_err(|_| QueryError::Timeout { limit })??,
            None => spread.await?,
        };
        Ok(answer)
    }

    /// Runs one read-only statement over `tenant`'s spans.
    /// The rows stream into the encoder one batch at a time; the batch being
    /// encoded and the encoded answer are charged to the query's memory pool
    /// with its operators' state, so the whole query stays within
    /// `--sql-memory-limit`.
    pub async fn sql(&self, tenant: &TenantId, query: &str, format: SqlFormat) -> Result<SqlAnswer> {
        check_read_only(query)?;
        let (mut answer, spread) = self.spread_or_here(Some(tenant), |ctx| self.sql_in(ctx, query, format)).await?;
        answer.spread = spread;
        Ok(answer)
    }

    /// Runs one read-only statement in `ctx`, encoding its rows.
    async fn sql_in(&self, ctx: SessionContext, query: &str, format: SqlFormat) -> Result<SqlAnswer> {
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let mut frame = ctx.sql_with_options(query, options).await?;
        // EXPLAIN ANALYZE of a plan spread over queriers shows what each
        // querier's part did: their metrics travel back for it alone.
        if matches!(frame.logical_plan(), datafusion::logical_expr::LogicalPlan::Analyze(_))
            && ctx.state().config().get_extension::<crate::table::Spread>().is_some()
        {
            let mut ctx = ctx.clone();
            datafusion_distributed::DistributedExt::set_distributed_metrics_collection(&mut ctx, true)?;
            frame = ctx.sql_with_options(query, options).await?;
        }
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let pool = &ctx.runtime_env().memory_pool;
        let answer = MemoryConsumer::new("SQL answer").register(pool);
        let mut encoder = Encoder::new(format, &schema, answer, self.config.sql_memory_limit)?;
        let held = MemoryConsumer::new("SQL result batch").register(pool);
        let mut rows = frame.execute_stream().await?;
        while let Some(batch) = rows.next().await {
            let batch = batch?;
            held.try_resize(crate::memory::batch_bytes(&batch)).map_err(|_| encoder.over_limit())?;
            encoder.write(&batch)?;
        }
        let mut body = encoder.finish()?;
        if format == SqlFormat::Json && body.is_empty() {
            body.extend_from_slice(b"[]");
        }
        Ok(SqlAnswer { body, partial: skipped_blocks(&ctx), spread: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_read_only_statement_passes() {
        for ok in [
            "SELECT 1",
            "select name, count(*) from spans group by name",
            "WITH t AS (SELECT * FROM traces) SELECT count(*) FROM t",
            "EXPLAIN SELECT * FROM spans",
        ] {
            check_read_only(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (refused, why) in [
            ("CREATE TABLE x (a int)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE spans", "DROP TABLE"),
            ("INSERT INTO spans VALUES (1)", "INSERT INTO"),
            ("DELETE FROM spans", "DELETE FROM"),
            ("UPDATE spans SET name = 'x'", "UPDATE SPANS"),
            ("COPY spans TO '/tmp/x.parquet'", "COPY is refused"),
            ("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'", "CREATE EXTERNAL TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("SELECT 1; SELECT 2", "exactly one statement"),
            ("EXPLAIN COPY spans TO 'x.csv'", "COPY is refused"),
        ] {
            let error = check_read_only(refused).expect_err(refused).to_string();
            assert!(error.contains(why), "{refused}: {error}");
        }
    }
}
