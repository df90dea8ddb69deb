//! SQL over the PostgreSQL wire protocol, with real clients: `psql` (Debian's
//! postgresql-client) and `tokio-postgres`. The README's queries, the
//! catalog queries clients send on connect, types, the refusals and limits
//! of `/api/sql`, tenants with passwords, and TLS.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spanlake_test_support::otlp::trace;
use tokio_postgres::SimpleQueryMessage;

use crate::common::TestServer;

const README: &str = include_str!("../../README.md");

/// The statements of the README's SQL block after `marker`.
fn readme_statements(marker: &str) -> Vec<String> {
    let after = README.split(marker).nth(1).unwrap_or_else(|| panic!("README has {marker}"));
    let block = after.split("```sql").nth(1).and_then(|b| b.split("```").next()).expect("a sql block");
    block
        .split(';')
        .map(str::trim)
        .filter(|s| s.lines().any(|l| !l.trim().is_empty() && !l.starts_with("--")))
        .map(String::from)
        .collect()
}

/// `sql` with Grafana's PostgreSQL macros expanded as Grafana expands them
/// for the window `from`..`to`: `$__timeFilter(c)` is `c BETWEEN '<from>'
/// AND '<to>'` (RFC 3339, UTC), `$__timeGroupAlias(c, '1m')` is
/// `floor(extract(epoch from c)/60)*60 AS "time"`.
fn expand_grafana_macros(sql: &str, from: SystemTime, to: SystemTime) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let call = &rest[at + 3..];
        let open = call.find('(').expect("a macro call");
        let close = call.find(')').expect("a macro call");
        let name = &call[..open];
        let args: Vec<&str> = call[open + 1..close].split(',').map(str::trim).collect();
        let expanded = match name {
            "timeFilter" => format!(
                "{} BETWEEN '{}' AND '{}'",
                args[0],
                humantime::format_rfc3339_nanos(from),
                humantime::format_rfc3339_nanos(to)
            ),
            "timeGroupAlias" => {
                let seconds = humantime::parse_duration(args[1].trim_matches('\'')).unwrap().as_secs();
                format!("floor(extract(epoch from {})/{seconds})*{seconds} AS \"time\"", args[0])
            }
            other => panic!("the test does not expand ${other}"),
        };
        out.push_str(&expanded);
        rest = &call[close + 1..];
    }
    out.push_str(rest);
    out
}

pub(crate) async fn connect(
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(addr.port()).user(user).dbname("spanlake").connect_timeout(Duration::from_secs(10));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `psql` (unaligned, tuples only, stop on error) with `args`.
async fn psql(addr: SocketAddr, conninfo: &str, password: Option<&str>, args: &[&str]) -> Output {
    let conninfo = format!("host=127.0.0.1 port={} dbname=spanlake connect_timeout=10 {conninfo}", addr.port());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let password = password.unwrap_or_default().to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .env("PGPASSWORD", password)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &conninfo])
            .args(args)
            .output()
            .expect("psql runs (Debian's postgresql-client; scripts/test.sh installs it)")
    })
    .await
    .unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(output.status.success(), "psql failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The SQLSTATE and message of a failed statement.
fn db_error(error: tokio_postgres::Error) -> (String, String) {
    let db = error.as_db_error().unwrap_or_else(|| panic!("a database error, got {error:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// The text values of the rows of a simple query.
fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(String::from)).collect()),
            _ => None,
        })
        .collect()
}

fn ns_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_run_the_readme_queries_and_answer_as_api_sql_does() {
    let server = TestServer::start().await;
    let pg = server.spanlake.pg_addr().expect("the querier serves PostgreSQL");
    // Whole microseconds: PostgreSQL's timestamps have no finer unit.
    let base = ns_since_epoch(SystemTime::now() - Duration::from_secs(600)) / 1000 * 1000;
    server.ingest(None, vec![trace(1, "shop", 3, base), trace(2, "shop", 1, base + 1_000_000_000)]).await;
    server.ingest(None, vec![trace(3, "cart", 0, base + 2_000_000_000)]).await;
    let client = connect(pg, "grafana", None).await.unwrap();

    // The same rows as /api/sql, over the extended protocol (binary results).
    let query = "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name";
    let rows = client.query(query, &[]).await.unwrap();
    let over_pg: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(over_pg, vec![("cart".to_owned(), 1), ("shop".to_owned(), 6)]);
    let over_http = server.sql_json(None, query).await;
    assert_eq!(
        over_http,
        serde_json::json!([{"service_name": "cart", "spans": 1}, {"service_name": "shop", "spans": 6}])
    );

    // Parameters, typed by the columns they meet.
    let rows = client
        .query(
            "SELECT name, duration_ns FROM spans WHERE service_name = $1 AND duration_ns >= $2 ORDER BY duration_ns DESC",
            &[&"shop", &20_000_000_i64],
        )
        .await
        .unwrap();
    let found: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        found,
        [("GET /shop", 100_000_000), ("GET /shop", 100_000_000), ("SELECT", 30_000_000), ("SELECT", 20_000_000)]
            .map(|(n, d)| (n.to_owned(), d))
    );

    // Ids as the HTTP API shows them; timestamps as timestamptz; maps as JSON.
    let row = client
        .query_one("SELECT trace_id, span_id, parent_span_id, start_time, span_attributes FROM spans WHERE service_name = 'cart'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "03".repeat(16));
    assert_eq!(row.get::<_, String>(1).len(), 16);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert_eq!(row.get::<_, SystemTime>(3), UNIX_EPOCH + Duration::from_nanos(base + 2_000_000_000));
    let attributes: serde_json::Value = serde_json::from_str(&row.get::<_, String>(4)).unwrap();
    assert_eq!(attributes, serde_json::json!({"http.response.status_code": {"int": 200}}));

    // What drivers and Grafana ask on connect.
    let version: String = client.query_one("SELECT version()", &[]).await.unwrap().get(0);
    assert!(version.starts_with("PostgreSQL 16.6 (Spanlake"), "{version}");
    let answers = client
        .simple_query(
            "SET application_name = 'dashboards'; SHOW application_name; BEGIN; SELECT 1 AS one; COMMIT; SHOW timezone",
        )
        .await
        .unwrap();
    assert_eq!(
        simple_rows(&answers),
        vec![vec![Some("dashboards".to_owned())], vec![Some("1".to_owned())], vec![Some("UTC".to_owned())]]
    );

    // Grafana's table and column pickers (the queries its PostgreSQL data source sends).
    let tables = client.simple_query(GRAFANA_TABLES).await.unwrap();
    let mut tables: Vec<String> = simple_rows(&tables).into_iter().map(|r| r[0].clone().unwrap()).collect();
    tables.sort();
    // Schema-qualified: the picker resolves `search_path` with a function
    // that datafusion-postgres answers as empty, and qualifies every name.
    assert_eq!(
        tables,
        ["public.fanout_parents", "public.span_edges", "public.spans", "public.spans_as_stored", "public.traces"]
    );
    let columns = client.simple_query(&GRAFANA_COLUMNS.replace("TABLE", "public.spans")).await.unwrap();
    let columns: Vec<String> = simple_rows(&columns).into_iter().map(|r| r[0].clone().unwrap()).collect();
    for column in ["trace_id", "start_time", "duration_ns", "service_name", "span_attributes"] {
        assert!(columns.iter().any(|c| c == column), "{column} in {columns:?}");
    }

    // DBeaver's navigator: schemas, then the relations of `public` and their columns.
    for query in DBEAVER {
        client.simple_query(query).await.unwrap_or_else(|e| panic!("{query}: {e:?}"));
    }
    let relations = client
        .simple_query(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') ORDER BY 1",
        )
        .await
        .unwrap();
    let relations: Vec<String> = simple_rows(&relations).into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(relations, ["fanout_parents", "span_edges", "spans", "spans_as_stored", "traces"]);
    let attributes = client
        .simple_query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON a.attrelid = c.oid WHERE c.relname = 'traces' AND a.attnum > 0 ORDER BY a.attnum",
        )
        .await
        .unwrap();
    let attributes: Vec<String> = simple_rows(&attributes).into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(attributes[..3], ["trace_id", "start_time", "end_time"]);

    // The README's queries: its SQL examples, and its Grafana dashboard
    // queries with the macros expanded for the last hour, through both clients.
    let now = SystemTime::now();
    let mut statements = readme_statements("<!-- sql-examples");
    statements.extend(
        readme_statements("<!-- pg-dashboard-queries")
            .iter()
            .map(|s| expand_grafana_macros(s, now - Duration::from_secs(3600), now)),
    );
    assert!(statements.len() >= 9, "{statements:?}");
    for statement in &statements {
        client.query(statement.as_str(), &[]).await.unwrap_or_else(|e| panic!("{statement}: {e:?}"));
        let output = psql(pg, "user=grafana", None, &["-c", statement]).await;
        assert!(output.status.success(), "psql: {statement}: {}", String::from_utf8_lossy(&output.stderr));
    }
    // The RED panel counts what /api/sql counts.
    let red =
        expand_grafana_macros(&readme_statements("<!-- pg-dashboard-queries")[0], now - Duration::from_secs(3600), now);
    let requests: i64 =
        client.query(red.as_str(), &[]).await.unwrap().iter().map(|r| r.get::<_, i64>("requests")).sum();
    assert_eq!(requests, 3, "one server span per trace");

    // psql's own catalog queries: \d lists exactly this tenant's relations.
    let relations = stdout_of(&psql(pg, "user=grafana", None, &["-c", "\\d"]).await);
    let mut names: Vec<&str> = relations.lines().map(|l| l.split('|').nth(1).unwrap()).collect();
    names.sort();
    assert_eq!(names, ["fanout_parents", "span_edges", "spans", "spans_as_stored", "traces"], "{relations}");
    let spans = stdout_of(&psql(pg, "user=grafana", None, &["-c", "\\d spans"]).await);
    // The catalog shows columns as stored (ids are bytea, so `decode(…, 'hex')`
    // compares with them); result rows show ids as hex text.
    assert!(spans.contains("trace_id|bytea") && spans.contains("start_time|timestamp with time zone"), "{spans}");
    let by_id = format!("SELECT name FROM spans WHERE trace_id = decode('{}', 'hex')", "03".repeat(16));
    assert_eq!(stdout_of(&psql(pg, "user=grafana", None, &["-c", &by_id]).await).trim(), "GET /cart");
    let count = stdout_of(&psql(pg, "user=grafana", None, &["-c", "SELECT count(*) FROM spans"]).await);
    assert_eq!(count.trim(), "7");
}

/// What DBeaver sends on connect and to fill its navigator (a selection).
const DBEAVER: [&str; 8] = [
    "SET extra_float_digits = 3",
    "SET application_name = 'DBeaver 25.1.5 - Main <postgres>'",
    "SELECT current_schema(),session_user",
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d \
     ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SHOW search_path",
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='spanlake'",
    "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'",
    "SELECT c.oid,c.*,d.description FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d \
     ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass WHERE c.relkind not in ('i','I','c')",
];

/// Grafana's PostgreSQL data source: the table picker.
const GRAFANA_TABLES: &str = r#"SELECT
    CASE WHEN
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY 1"#;

/// Grafana's PostgreSQL data source: the column picker of table `TABLE`.
const GRAFANA_COLUMNS: &str = r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('TABLE'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('TABLE'))[1]
          AND quote_ident(table_name) = (parse_ident('TABLE'))[2]
        ELSE quote_ident(table_name) = 'TABLE'
          AND
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      END"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_files_and_engine_settings_are_refused_over_the_wire() {
    let server = TestServer::start().await;
    let pg = server.spanlake.pg_addr().unwrap();
    server.ingest(None, vec![trace(1, "shop", 1, ns_since_epoch(SystemTime::now()) - 60_000_000_000)]).await;
    let client = connect(pg, "anyone", None).await.unwrap();
    let nested = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
    for (sql, code, why) in [
        ("INSERT INTO spans VALUES (1)", "25006", "only read-only queries are allowed; refused: INSERT INTO"),
        ("DELETE FROM spans", "25006", "refused: DELETE FROM"),
        ("UPDATE spans SET name = 'x'", "25006", "refused: UPDATE"),
        ("DROP TABLE spans", "25006", "refused: DROP TABLE"),
        ("CREATE TABLE t (a int)", "25006", "refused: CREATE TABLE"),
        ("CREATE VIEW v AS SELECT 1", "25006", "refused: CREATE VIEW"),
        ("COPY spans TO '/tmp/spans.csv'", "25006", "refused: COPY"),
        ("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'", "25006", "refused: CREATE EXTERNAL"),
        ("SET datafusion.execution.target_partitions = 1000", "42501", "the query engine's settings are fixed"),
        ("SET datafusion.runtime.memory_limit = '100G'", "42501", "refused: SET datafusion.runtime.memory_limit"),
        ("SELECT * FROM '/etc/passwd'", "42601", "/etc/passwd"),
        ("SELECT * FROM read_parquet('/etc/passwd')", "42601", "read_parquet"),
        ("SELECT * FROM no_such_table", "42601", "no_such_table"),
        ("SELEC 1", "42601", "invalid SQL"),
        (nested.as_str(), "42601", "nests deeper than the limit of 64 levels"),
    ] {
        // Simple protocol, then extended (prepare): the same refusal.
        let (got, message) = db_error(client.simple_query(sql).await.expect_err(sql));
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(why), "{sql}: {message}");
        let (got, message) = db_error(client.prepare(sql).await.expect_err(sql));
        assert_eq!(got, code, "{sql} (prepared): {message}");
    }
    // A message over the size limit ends its connection with an error naming
    // the limit, before the server holds it; other connections go on.
    let huge = format!("SELECT '{}'", "x".repeat(5 << 20));
    let victim = connect(pg, "anyone", None).await.unwrap();
    let (code, message) = db_error(victim.simple_query(&huge).await.unwrap_err());
    assert_eq!(code, "54000", "{message}");
    assert!(message.contains("larger than the limit of 4194304 bytes"), "{message}");
    let just_under = format!("SELECT length('{}')", "x".repeat(4 << 20).split_at((4 << 20) - 64).0);
    let length: i32 = client.query_one(just_under.as_str(), &[]).await.unwrap().get(0);
    assert_eq!(length, (4 << 20) - 64);

    // Nothing was written, and the connection still answers.
    let count: i64 = client.query_one("SELECT count(*) FROM spans", &[]).await.unwrap().get(0);
    assert_eq!(count, 2);
    let refused = psql(pg, "user=anyone", None, &["-c", "DELETE FROM spans"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only read-only queries are allowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_memory_limit_admission_and_connection_limit_hold_over_the_wire() {
    let server = TestServer::start_with(|args| {
        args.querier.query_timeout = Duration::from_secs(2);
        args.querier.sql_memory_limit = 16 << 20;
        args.querier.max_concurrent_queries = 1;
        args.querier.pg_max_connections = 3;
    })
    .await;
    let pg = server.spanlake.pg_addr().unwrap();
    let slow = "SELECT count(*) FROM generate_series(1, 100000000000)";

    // A result larger than the per-query memory limit.
    let client = connect(pg, "anyone", None).await.unwrap();
    let (code, message) =
        db_error(client.query("SELECT repeat('x', 100000) FROM generate_series(1, 1000)", &[]).await.unwrap_err());
    assert_eq!(code, "53200", "{message}");
    assert!(message.contains("larger than the per-query memory limit"), "{message}");

    // The querier's deadline, and the client's own statement_timeout.
    let started = std::time::Instant::now();
    let (code, message) = db_error(client.query(slow, &[]).await.unwrap_err());
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("time limit of 2s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    client.simple_query("SET statement_timeout = '300ms'").await.unwrap();
    let (code, message) = db_error(client.simple_query(slow).await.unwrap_err());
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("300ms"), "{message}");
    client.simple_query("SET statement_timeout = 0").await.unwrap();

    // psql's Ctrl-C: a cancel request stops the running query, well before its deadline.
    let victim = connect(pg, "anyone", None).await.unwrap();
    let token = victim.cancel_token();
    let started = std::time::Instant::now();
    let running = tokio::spawn(async move { victim.query(slow, &[]).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (code, message) = db_error(running.await.unwrap().unwrap_err());
    assert_eq!(code, "57014", "{message}");
    assert!(!message.contains("time limit"), "cancelled, not timed out: {message}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The slot is freed once the query's task has really stopped: the abort
    // reaches it at its next poll, which may come just after the error was
    // answered. It must come well before the deadline would have.
    let cancelled = std::time::Instant::now();
    loop {
        match client.query("SELECT 1", &[]).await {
            Ok(_) => break,
            Err(error) => {
                let (code, message) = db_error(error);
                assert_eq!(code, "53300", "{message}");
                assert!(cancelled.elapsed() < Duration::from_secs(1), "the cancelled query still holds its slot");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    // One admission slot: a second query while the first runs is refused.
    let busy = connect(pg, "anyone", None).await.unwrap();
    let running = tokio::spawn(async move { busy.query(slow, &[]).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, message) = db_error(client.query("SELECT 1", &[]).await.unwrap_err());
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("saturated"), "{message}");
    let (code, _) = db_error(running.await.unwrap().unwrap_err());
    assert_eq!(code, "57014");
    client.query("SELECT 1", &[]).await.expect("a free slot again");

    // Three connections at most (the busy one has closed): a fourth is refused at start-up.
    let _second = connect(pg, "anyone", None).await.unwrap();
    let _third = connect(pg, "anyone", None).await.unwrap();
    let Err(refused) = connect(pg, "anyone", None).await else { panic!("a fourth connection is refused") };
    let (code, message) = db_error(refused);
    assert_eq!(code, "53300", "{message}");
    assert!(message.contains("--pg-max-connections"), "{message}");
    drop(_third);
    spanlake_test_support::wait_until("a closed connection frees its slot", Duration::from_secs(10), || async {
        connect(pg, "anyone", None).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_log_in_with_scram_and_see_only_their_own_spans() {
    let secrets = tempfile::TempDir::new().unwrap();
    let credentials = secrets.path().join("pg-credentials");
    std::fs::write(&credentials, "# user:password, the user is the tenant\nteam-a:alpha-secret\nteam-b:beta-secret\n")
        .unwrap();
    let file = credentials.clone();
    let server = TestServer::start_with(move |args| {
        args.server.multi_tenant = true;
        args.querier.pg_credentials_file = Some(file);
    })
    .await;
    let pg = server.spanlake.pg_addr().unwrap();
    let base = ns_since_epoch(SystemTime::now()) - 60_000_000_000;
    server.ingest(Some("team-a"), vec![trace(1, "shop", 3, base)]).await;
    server.ingest(Some("team-b"), vec![trace(2, "cart", 0, base)]).await;

    let team_a = connect(pg, "team-a", Some("alpha-secret")).await.unwrap();
    let rows = team_a.query("SELECT service_name, count(*) FROM spans GROUP BY 1", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<(String, i64)>>(), [("shop".to_owned(), 4)]);
    let tables = team_a
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1", &[])
        .await
        .unwrap();
    let tables: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    assert_eq!(tables, ["fanout_parents", "span_edges", "spans", "spans_as_stored", "traces"]);

    let team_b =
        psql(pg, "user=team-b", Some("beta-secret"), &["-c", "SELECT service_name, count(*) FROM spans GROUP BY 1"])
            .await;
    assert_eq!(stdout_of(&team_b).trim(), "cart|1");

    for (user, password) in [("team-a", Some("beta-secret")), ("team-c", Some("alpha-secret")), ("team-a", None)] {
        let refused =
            connect(pg, user, password).await.err().unwrap_or_else(|| panic!("{user} gets in with {password:?}"));
        if let Some(db) = refused.as_db_error() {
            assert_eq!(db.code().code(), "28P01", "{user}: {db:?}");
        } else {
            // No password to give: the client stops before sending one.
            assert!(password.is_none(), "{user}: {refused:?}");
        }
    }
    let refused = psql(pg, "user=team-c", Some("alpha-secret"), &["-c", "SELECT 1"]).await;
    assert!(
        String::from_utf8_lossy(&refused.stderr).to_lowercase().contains("password authentication failed"),
        "{refused:?}"
    );

    // Multi-tenancy without credentials keeps the listener closed, not open to all.
    let closed = TestServer::start_with(|args| args.server.multi_tenant = true).await;
    assert_eq!(closed.spanlake.pg_addr(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_connects_over_tls_when_a_certificate_is_configured() {
    let dir = tempfile::TempDir::new().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let server = TestServer::start_with(move |args| {
        args.querier.pg_tls_cert = Some(cert);
        args.querier.pg_tls_key = Some(key);
    })
    .await;
    let pg = server.spanlake.pg_addr().unwrap();
    let output = psql(pg, "user=spanlake sslmode=require", None, &["-c", "\\conninfo", "-c", "SELECT 40 + 2"]).await;
    let text = stdout_of(&output);
    assert!(text.contains("SSL connection (protocol: TLSv1."), "{text}");
    assert!(text.trim_end().ends_with("42"), "{text}");
}
