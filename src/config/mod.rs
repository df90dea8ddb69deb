//! Command-line flags (each with a `SPANLAKE_…` env var, a key in the YAML
//! config file, and a default) grouped by role, and their translation into
//! the role crates' plain config structs.
//!
//! Precedence: flag > environment variable > config file > default. The
//! defaults are the role crates' `Config::default()` (a test checks that the
//! flags' defaults produce exactly those).

mod file;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::storage::StorageArgs;
use crate::units::{parse_duration, parse_size};

/// Spanlake: a distributed tracing backend. OTLP in, Parquet on object storage,
/// Grafana's Tempo API out. With no command, runs every role in one process on ./data.
#[derive(Debug, Parser)]
#[command(name = "spanlake", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one role (or all) as a server; each role takes only its own flags
    Run {
        #[command(subcommand)]
        role: RunCommand,
    },
    /// Send generated traces to an OTLP endpoint
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Check a running cluster end to end: write traces continuously over
    /// OTLP, read them back by id and by search, and report missing,
    /// duplicated and late spans (as Prometheus metrics and log lines)
    Vulture(crate::vulture::VultureArgs),
    /// Run one read-only SQL query over your spans and print a table
    Sql {
        /// The query, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1"
        query: String,
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
    /// Run compaction over the store: merge small blocks, expire old ones,
    /// delete retired files (with --once: one pass, then exit)
    Compact {
        /// Run one pass and exit (for cron-style use and tests)
        #[arg(long, env = "SPANLAKE_COMPACT_ONCE")]
        once: bool,
        #[command(flatten)]
        args: CompactorRole,
    },
    /// Fan-out latency report: per downstream edge, calls per parent, latency
    /// percentiles and critical-path share; then the parent's observed tail
    /// against the tail its calls predict
    Fanout {
        #[command(flatten)]
        fanout: crate::client::FanoutArgs,
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
    /// Print a trace as a waterfall
    Trace {
        /// Trace id (hex)
        id: String,
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
}

/// `spanlake run <role>`: every role with the flags it uses and no others
/// (`run ingester --compaction-window 1h` is an error, not silently ignored).
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Every role in one process (the same as `spanlake` alone)
    All(Box<ServerArgs>),
    /// OTLP receivers: buffer, write blocks, acknowledge once durable
    Ingester(IngesterRole),
    /// Tempo API, TraceQL, SQL and fan-out over the blocks
    Querier(QuerierRole),
    /// Merge small blocks, expire old ones, delete retired files
    Compactor(CompactorRole),
}

/// `spanlake run ingester`: storage, server, ingester and log flags.
#[derive(Debug, Clone, clap::Args)]
pub struct IngesterRole {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub ingester: IngesterFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// `spanlake run querier`: storage, server, querier and log flags.
#[derive(Debug, Clone, clap::Args)]
pub struct QuerierRole {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub querier: QuerierFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// `spanlake run compactor` and `spanlake compact`: storage, server,
/// compactor and log flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactorRole {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub compactor: CompactorFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

impl RunCommand {
    /// The role to start and its configuration; the groups a role does not
    /// take keep their defaults (they configure nothing it runs).
    pub fn into_server(self) -> (Role, ServerArgs) {
        let defaults = ServerArgs::defaults();
        match self {
            Self::All(args) => (Role::All, *args),
            Self::Ingester(IngesterRole { storage, server, ingester, log }) => {
                (Role::Ingester, ServerArgs { storage, server, ingester, log, ..defaults })
            }
            Self::Querier(QuerierRole { storage, server, querier, log }) => {
                (Role::Querier, ServerArgs { storage, server, querier, log, ..defaults })
            }
            Self::Compactor(role) => (Role::Compactor, role.into_server()),
        }
    }
}

impl CompactorRole {
    pub fn into_server(self) -> ServerArgs {
        let Self { storage, server, compactor, log } = self;
        ServerArgs { storage, server, compactor, log, ..ServerArgs::defaults() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    All,
    Ingester,
    Querier,
    Compactor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything a server process is configured with: every role's flags
/// (`spanlake` and `spanlake run all` take them all; each `run <role>` takes
/// only its own groups, see [`RunCommand`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub ingester: IngesterFlags,
    #[command(flatten)]
    pub querier: QuerierFlags,
    #[command(flatten)]
    pub compactor: CompactorFlags,
    #[command(flatten)]
    pub all_in_one: AllInOneFlags,
    #[command(flatten)]
    pub log: LogFlags,
}

/// Flags every server role takes: its HTTP listener (`/metrics`, `/ready`,
/// and the query API on a querier), tenancy, shutdown and the config file.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerFlags {
    /// Query API listen address (Tempo API, /metrics)
    #[arg(long, env = "SPANLAKE_HTTP_ADDR", default_value = "0.0.0.0:3200")]
    pub http_addr: SocketAddr,
    /// Take the tenant from the X-Scope-OrgID header (otherwise everything is "single-tenant")
    #[arg(long, env = "SPANLAKE_MULTI_TENANT")]
    pub multi_tenant: bool,
    /// How far back a catalog refresh relists commits (covers writers' clock skew and slow puts)
    #[arg(long, help_heading = "Storage", env = "SPANLAKE_COMMIT_LOOKBACK", default_value = "2m", value_parser = parse_duration)]
    pub commit_lookback: Duration,
    /// How long a stopping process (SIGTERM) waits for queries in flight and
    /// the ingester's last flush before it exits; keep it below Kubernetes'
    /// terminationGracePeriodSeconds
    #[arg(long, env = "SPANLAKE_DRAIN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A YAML configuration file (see deploy/spanlake.yaml); flags and
    /// SPANLAKE_* variables override its values
    #[arg(long, env = "SPANLAKE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Once listening, write the bound addresses as JSON to this file
    /// ({"http": …, "otlp_grpc": …, "otlp_http": …, "pg": …}), for tools that bind port 0
    #[arg(long, env = "SPANLAKE_LISTEN_ADDR_FILE")]
    pub listen_addr_file: Option<std::path::PathBuf>,
    /// The configuration in effect and where each value came from, as YAML
    /// (served at `/status/config`); filled in by [`Cli::load`].
    #[arg(skip)]
    pub effective_config: String,
}

/// The ingester's flags: OTLP listeners, request limits, buffering.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Ingester")]
pub struct IngesterFlags {
    /// OTLP/gRPC listen address
    #[arg(long, env = "SPANLAKE_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address
    #[arg(long, env = "SPANLAKE_OTLP_HTTP_ADDR", default_value = "0.0.0.0:4318")]
    pub otlp_http_addr: SocketAddr,
    /// Shortest time between two block writes of one tenant (an idle tenant's
    /// requests are written at once). Default: 20ms on a local disk or in memory,
    /// 100ms on s3/gs/az, where each block costs two PUT requests (see README)
    #[arg(long, env = "SPANLAKE_MIN_FLUSH_INTERVAL", value_parser = parse_duration)]
    pub min_flush_interval: Option<Duration>,
    /// Most buffered bytes one block write takes; the rest goes in the next
    #[arg(long, env = "SPANLAKE_FLUSH_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub flush_size: usize,
    /// Most memory buffered for one tenant; beyond it requests get 429 / RESOURCE_EXHAUSTED
    #[arg(long, env = "SPANLAKE_MAX_TENANT_BUFFER", default_value = "256MiB", value_parser = parse_size)]
    pub max_tenant_buffer: usize,
    /// Most memory buffered in total; beyond it requests get 429 / RESOURCE_EXHAUSTED
    #[arg(long, env = "SPANLAKE_MAX_BUFFER", default_value = "1GiB", value_parser = parse_size)]
    pub max_buffer: usize,
    /// How long a failing block upload is retried before its requests get 503 / UNAVAILABLE
    #[arg(long, env = "SPANLAKE_FLUSH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub flush_timeout: Duration,
    /// Largest OTLP request body, checked before and after decompression
    #[arg(long, env = "SPANLAKE_MAX_REQUEST_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_request_size: usize,
    /// Most spans in one OTLP request
    #[arg(long, env = "SPANLAKE_MAX_SPANS_PER_REQUEST", default_value = "100000")]
    pub max_spans_per_request: usize,
    /// Longer string/bytes attribute values are truncated (and reported in partial success)
    #[arg(long, env = "SPANLAKE_MAX_ATTRIBUTE_VALUE_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_attribute_value_size: usize,
    /// Spans starting or ending further than this past now are refused (partial success)
    #[arg(long, env = "SPANLAKE_MAX_SPAN_FUTURE", default_value = "1h", value_parser = parse_duration)]
    pub max_span_future: Duration,
    /// Most bytes of OTLP request bodies being read, decompressed or decoded at once; beyond it requests get 429 / RESOURCE_EXHAUSTED before they are read
    #[arg(long, env = "SPANLAKE_MAX_DECODING_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub max_decoding_bytes: usize,
    /// OTLP/gRPC connections are closed (gracefully) after this long, so that
    /// long-lived clients spread over new ingesters behind a load balancer
    #[arg(long, env = "SPANLAKE_MAX_CONNECTION_AGE", default_value = "5m", value_parser = parse_duration)]
    pub max_connection_age: Duration,
}

/// The querier's flags: catalog refresh and per-query limits.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Querier")]
pub struct QuerierFlags {
    /// How often a querier lists new blocks written by other processes
    #[arg(long, env = "SPANLAKE_REFRESH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub refresh_interval: Duration,
    /// Largest trace returned in full by trace-by-id (v1 answers 422, v2 a partial trace)
    #[arg(long, env = "SPANLAKE_MAX_TRACE_SIZE", default_value = "50MiB", value_parser = parse_size)]
    pub max_trace_size: usize,
    /// Longest any query (search, tags, trace by id, SQL, fan-out) may run; beyond it: 408
    #[arg(long, alias = "sql-timeout", env = "SPANLAKE_QUERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub query_timeout: Duration,
    /// Most memory one SQL query may use
    #[arg(long, env = "SPANLAKE_SQL_MEMORY_LIMIT", default_value = "1GiB", value_parser = parse_size)]
    pub sql_memory_limit: usize,
    /// Most queries running at once in a querier; more get 429
    #[arg(long, env = "SPANLAKE_MAX_CONCURRENT_QUERIES", default_value = "16")]
    pub max_concurrent_queries: usize,
    /// Most block bytes a tag or tag-values request reads when block summaries cannot answer it (a `q` filter, a key with too many values); past it the newest blocks answer and the response says it is partial
    #[arg(long, env = "SPANLAKE_MAX_TAG_SCAN_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_tag_scan_bytes: usize,
    /// TraceQL metrics over a window of more spans take exemplars from a sample of the traces (a slice of trace ids in a few blocks) rather than reading every span's trace id
    #[arg(long, env = "SPANLAKE_EXEMPLAR_SAMPLE_SPANS", default_value = "1000000")]
    pub exemplar_sample_spans: u64,
    /// Prune blocks, row groups and pages by query filters (turn off only to measure what pruning buys)
    #[arg(long, env = "SPANLAKE_QUERY_PRUNING", default_value = "true", action = clap::ArgAction::Set)]
    pub query_pruning: bool,
    /// PostgreSQL wire protocol listen address (psql, Grafana's PostgreSQL data source, drivers), or "off"
    #[arg(long, env = "SPANLAKE_PG_ADDR", default_value = "0.0.0.0:5433", value_parser = parse_listen_addr)]
    pub pg_addr: Listen,
    /// A file of `user:password` lines allowed to connect over PostgreSQL (SCRAM-SHA-256). With
    /// multi-tenancy on, the user name is the tenant, and without the file the listener stays off;
    /// single-tenant without it, connections are trusted
    #[arg(long, env = "SPANLAKE_PG_CREDENTIALS_FILE")]
    pub pg_credentials_file: Option<std::path::PathBuf>,
    /// Most PostgreSQL connections open at once; more are refused
    #[arg(long, env = "SPANLAKE_PG_MAX_CONNECTIONS", default_value = "64")]
    pub pg_max_connections: usize,
    /// PEM certificate chain for TLS on the PostgreSQL listener (with --pg-tls-key)
    #[arg(long, env = "SPANLAKE_PG_TLS_CERT", requires = "pg_tls_key")]
    pub pg_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for TLS on the PostgreSQL listener (with --pg-tls-cert)
    #[arg(long, env = "SPANLAKE_PG_TLS_KEY", requires = "pg_tls_cert")]
    pub pg_tls_key: Option<std::path::PathBuf>,
    /// Where other queriers send this one their shares of large queries (Arrow Flight), or "off".
    /// Cluster-internal: it reads any tenant's blocks it is told to, so never expose it
    #[arg(long, env = "SPANLAKE_WORKER_ADDR", default_value = "off", value_parser = parse_listen_addr)]
    pub worker_addr: Listen,
    /// Every querier's worker address, this one's included, to spread large queries over:
    /// http://host:port, or dns://name:port for every address of a name (a headless Service);
    /// comma-separated. Empty: every query runs on the querier that received it
    #[arg(long, env = "SPANLAKE_QUERY_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub query_peers: Vec<String>,
    /// Queries reading fewer bytes (of the columns they read) run on the querier that received them; a spread query
    /// gives each querier about this many bytes or more
    #[arg(long, env = "SPANLAKE_SPREAD_MIN_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub spread_min_bytes: usize,
    /// How Arrow batches travel between the queriers of a spread query: `none`, or `lz4` (a
    /// quarter fewer bytes on the wire, for 4–10 % more CPU in all; for a network slower than
    /// the queriers' cores)
    #[arg(long, env = "SPANLAKE_SPREAD_COMPRESSION", default_value = "none", value_parser = ["none", "lz4"])]
    pub spread_compression: String,
    /// A secret all queriers share (from a Kubernetes Secret): sent with every share of a spread
    /// query, and a share without it is refused. Unset: shares are not checked
    #[arg(long, env = "SPANLAKE_WORKER_SECRET", hide_env_values = true)]
    pub worker_secret: Option<String>,
}

fn parse_peer(text: &str) -> Result<String, String> {
    spanlake_querier::check_peer(text.trim())?;
    Ok(text.trim().to_owned())
}

/// A listen address, or none ("off").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

fn parse_listen_addr(text: &str) -> Result<Listen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    text.parse().map(|addr| Listen(Some(addr))).map_err(|e| format!("{text:?} is not host:port or \"off\": {e}"))
}

/// The compactor's flags: merging, retention, deletion, leases.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Compactor")]
pub struct CompactorFlags {
    /// Time between compaction passes
    #[arg(long, env = "SPANLAKE_COMPACTION_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub compaction_interval: Duration,
    /// Blocks are compacted within time windows of this length
    #[arg(long, env = "SPANLAKE_COMPACTION_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub compaction_window: Duration,
    /// Size merged blocks grow to
    #[arg(long, env = "SPANLAKE_COMPACTION_TARGET_BLOCK_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub compaction_target_block_size: usize,
    /// Blocks of one level merged at once
    #[arg(long, env = "SPANLAKE_COMPACTION_FAN_IN", default_value = "8")]
    pub compaction_fan_in: usize,
    /// A window this long past its end gets no new blocks: its small blocks are merged whatever their level
    #[arg(long, env = "SPANLAKE_COMPACTION_COLD_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub compaction_cold_after: Duration,
    /// How long spans are kept
    #[arg(long, env = "SPANLAKE_RETENTION", default_value = "14days", value_parser = parse_duration)]
    pub retention: Duration,
    /// Per-tenant retention, e.g. team-a=3days (repeat, or comma-separate in the env var)
    #[arg(long, env = "SPANLAKE_TENANT_RETENTION", value_delimiter = ',', value_parser = parse_tenant_retention)]
    pub tenant_retention: Vec<(spanlake_schemas::TenantId, Duration)>,
    /// Retired block files (and folded commits) are deleted this long after retirement
    #[arg(long, env = "SPANLAKE_DELETION_GRACE", default_value = "5m", value_parser = parse_duration)]
    pub deletion_grace: Duration,
    /// A compaction lease not renewed for this long is taken over by another compactor
    #[arg(long, env = "SPANLAKE_COMPACTOR_LEASE_TTL", default_value = "2m", value_parser = parse_duration)]
    pub compactor_lease_ttl: Duration,
    /// How often a tenant's catalog is checkpointed and its commit log trimmed
    #[arg(long, env = "SPANLAKE_CHECKPOINT_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,
    /// Only for stores without conditional writes: this compactor's share of the work, e.g. 0/3
    #[arg(long, env = "SPANLAKE_COMPACTOR_SHARD", value_parser = parse_shard)]
    pub compactor_shard: Option<(u32, u32)>,
}

/// Only the all-in-one process has a compactor to switch off.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Compactor")]
pub struct AllInOneFlags {
    /// Run the compactor in the background of the all-in-one process
    #[arg(long, env = "SPANLAKE_COMPACTION", default_value = "true", action = clap::ArgAction::Set)]
    pub compaction: bool,
}

/// Logging, for every role.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct LogFlags {
    /// Log format
    #[arg(long, env = "SPANLAKE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (RUST_LOG syntax), e.g. info or spanlake_ingester=debug
    #[arg(long, env = "SPANLAKE_LOG", default_value = "info")]
    pub log: String,
}

/// `command` with no environment lookup on any argument, in any subcommand.
fn without_env(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| arg.env(None::<&'static str>)).mut_subcommands(without_env)
}

impl Cli {
    /// The process's command line and `SPANLAKE_*` environment, over the
    /// YAML file that `--config` (or `SPANLAKE_CONFIG`) names.
    pub fn load() -> Result<Self, clap::Error> {
        Self::load_from(std::env::args_os(), true)
    }

    /// Parses `args` as a command line without reading the process
    /// environment, so that tests and tools get the same configuration
    /// whatever `SPANLAKE_*` variables are exported. A `--config` file in
    /// `args` is still read.
    pub fn parse_without_env<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::load_from(args, false)
    }

    fn load_from<I, T>(args: I, use_env: bool) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut command = if use_env { Self::command() } else { without_env(Self::command()) };
        let file = file::ConfigFile::named_by(&args, use_env)
            .map_err(|message| command.error(clap::error::ErrorKind::ValueValidation, message))?;
        if let Some(file) = &file {
            command = file
                .apply(command.clone())
                .map_err(|message| command.error(clap::error::ErrorKind::ValueValidation, message))?;
        }
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        let effective = file::effective(&command, &matches, file.as_ref());
        if let Some(server) = cli.server_flags_mut() {
            server.effective_config = effective;
        }
        Ok(cli)
    }

    /// The server flags of this command, if it runs a server.
    fn server_flags_mut(&mut self) -> Option<&mut ServerFlags> {
        match &mut self.command {
            None => Some(&mut self.server.server),
            Some(Command::Run { role: RunCommand::All(args) }) => Some(&mut args.server),
            Some(Command::Run { role: RunCommand::Ingester(role) }) => Some(&mut role.server),
            Some(Command::Run { role: RunCommand::Querier(role) }) => Some(&mut role.server),
            Some(Command::Run { role: RunCommand::Compactor(role) }) | Some(Command::Compact { args: role, .. }) => {
                Some(&mut role.server)
            }
            _ => None,
        }
    }
}

impl ServerArgs {
    /// Every flag at its default, whatever the environment holds.
    pub fn defaults() -> Self {
        Cli::parse_without_env(["spanlake"]).expect("the defaults parse").server
    }

    /// Defaults for tests: ports 0 (OS-assigned) on loopback, data in
    /// `storage`; never read from the environment.
    pub fn for_tests(storage: StorageArgs) -> Self {
        let mut args = Self::defaults();
        args.storage = storage;
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        args.ingester.otlp_grpc_addr = loopback;
        args.ingester.otlp_http_addr = loopback;
        args.server.http_addr = loopback;
        args.querier.pg_addr = Listen(Some(loopback));
        args
    }

    pub fn ingester_config(&self) -> spanlake_ingester::Config {
        let flags = &self.ingester;
        spanlake_ingester::Config {
            grpc_addr: flags.otlp_grpc_addr,
            http_addr: flags.otlp_http_addr,
            multi_tenant: self.server.multi_tenant,
            max_connection_age: flags.max_connection_age,
            limits: spanlake_ingester::Limits {
                max_request_bytes: flags.max_request_size,
                max_spans_per_request: flags.max_spans_per_request,
                max_attribute_value_bytes: flags.max_attribute_value_size,
                max_span_future: flags.max_span_future,
                max_decoding_bytes: flags.max_decoding_bytes,
            },
            buffer: spanlake_ingester::BufferConfig {
                min_flush_interval: flags
                    .min_flush_interval
                    .unwrap_or_else(|| self.storage.default_min_flush_interval()),
                flush_bytes: flags.flush_size,
                max_tenant_bytes: flags.max_tenant_buffer,
                max_total_bytes: flags.max_buffer,
                flush_timeout: flags.flush_timeout,
            },
        }
    }

    pub fn compactor_config(&self) -> spanlake_compactor::Config {
        let flags = &self.compactor;
        spanlake_compactor::Config {
            interval: flags.compaction_interval,
            plan: spanlake_compactor::plan::PlanConfig {
                window: flags.compaction_window,
                target_block_bytes: flags.compaction_target_block_size as u64,
                fan_in: flags.compaction_fan_in.max(2),
                cold_after: flags.compaction_cold_after,
            },
            retention: flags.retention,
            tenant_retention: flags.tenant_retention.iter().cloned().collect(),
            grace: flags.deletion_grace,
            lease_ttl: flags.compactor_lease_ttl,
            checkpoint_interval: flags.checkpoint_interval,
            commit_lookback: self.server.commit_lookback,
            shard: flags.compactor_shard,
            ..spanlake_compactor::Config::default()
        }
    }

    pub fn querier_config(&self) -> spanlake_querier::Config {
        let flags = &self.querier;
        spanlake_querier::Config {
            multi_tenant: self.server.multi_tenant,
            refresh_interval: flags.refresh_interval,
            max_trace_bytes: flags.max_trace_size,
            query_timeout: flags.query_timeout,
            sql_memory_limit: flags.sql_memory_limit,
            max_concurrent_queries: flags.max_concurrent_queries,
            max_tag_scan_bytes: flags.max_tag_scan_bytes,
            pruning: flags.query_pruning,
            exemplar_sample_spans: flags.exemplar_sample_spans,
            commit_lookback: self.server.commit_lookback,
            cluster: spanlake_querier::ClusterConfig {
                peers: flags.query_peers.clone(),
                min_bytes: flags.spread_min_bytes as u64,
                secret: flags.worker_secret.clone(),
                lz4: flags.spread_compression == "lz4",
            },
        }
    }

    /// The PostgreSQL listener's settings (reads the credentials file).
    pub fn pg_config(&self) -> anyhow::Result<spanlake_querier::pg::PgConfig> {
        let flags = &self.querier;
        let credentials = match &flags.pg_credentials_file {
            Some(path) => {
                Some(Arc::new(spanlake_querier::pg::Credentials::from_file(path).map_err(anyhow::Error::msg)?))
            }
            None => None,
        };
        let tls = flags.pg_tls_cert.clone().zip(flags.pg_tls_key.clone());
        Ok(spanlake_querier::pg::PgConfig { credentials, max_connections: flags.pg_max_connections, tls })
    }
}

fn parse_tenant_retention(text: &str) -> Result<(spanlake_schemas::TenantId, Duration), String> {
    let (tenant, duration) =
        text.split_once('=').ok_or_else(|| format!("{text:?} is not tenant=duration, e.g. team-a=3days"))?;
    let tenant = spanlake_schemas::TenantId::new(tenant.trim()).map_err(|e| e.to_string())?;
    Ok((tenant, parse_duration(duration)?))
}

fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((index, count)) if index < count => Ok((index, count)),
        _ => Err(format!("{text:?} is not a shard like 0/3 (index below count)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> (Role, ServerArgs) {
        let cli = Cli::parse_without_env(args).unwrap();
        let Some(Command::Run { role }) = cli.command else { panic!("expected run") };
        role.into_server()
    }

    #[test]
    fn defaults_match_the_readme() {
        let cli = Cli::parse_without_env(["spanlake"]).unwrap();
        assert!(cli.command.is_none());
        let s = cli.server;
        assert_eq!(s.storage.url, "./data");
        assert_eq!(s.ingester.otlp_grpc_addr.port(), 4317);
        assert_eq!(s.ingester.otlp_http_addr.port(), 4318);
        assert_eq!(s.server.http_addr.port(), 3200);
        assert_eq!(s.ingester_config().buffer.min_flush_interval, Duration::from_millis(20));
        assert_eq!(s.ingester.max_request_size, 16 << 20);
        assert!(s.all_in_one.compaction);
        assert_eq!(s.compactor.retention, Duration::from_secs(14 * 24 * 3600));
        assert_eq!(s.compactor.deletion_grace, Duration::from_secs(300));
    }

    /// One source of defaults: the flags' defaults are the role crates'
    /// `Config::default()`, field for field.
    #[test]
    fn flag_defaults_are_the_role_defaults() {
        let s = ServerArgs::defaults();
        assert_eq!(format!("{:?}", s.ingester_config()), format!("{:?}", spanlake_ingester::Config::default()));
        assert_eq!(format!("{:?}", s.querier_config()), format!("{:?}", spanlake_querier::Config::default()));
        assert_eq!(format!("{:?}", s.compactor_config()), format!("{:?}", spanlake_compactor::Config::default()));
    }

    #[test]
    fn compaction_flags_parse_and_reject_bad_values() {
        let cli = Cli::parse_without_env(["spanlake", "--tenant-retention", "a=1day,b=2h", "--compactor-shard", "1/3"])
            .unwrap();
        let config = cli.server.compactor_config();
        assert_eq!(config.tenant_retention.len(), 2);
        assert_eq!(config.shard, Some((1, 3)));
        assert!(Cli::parse_without_env(["spanlake", "--compactor-shard", "3/3"]).is_err());
        assert!(Cli::parse_without_env(["spanlake", "--tenant-retention", "../x=1d"]).is_err());
        assert!(Cli::parse_without_env(["spanlake", "--tenant-retention", "a"]).is_err());
    }

    #[test]
    fn run_role_takes_its_own_flags() {
        let (role, server) =
            run(&["spanlake", "run", "ingester", "--min-flush-interval", "250ms", "--storage", "memory://"]);
        assert_eq!(role, Role::Ingester);
        assert_eq!(server.ingester_config().buffer.min_flush_interval, Duration::from_millis(250));
        assert_eq!(server.storage.url, "memory://");
        let (role, server) = run(&["spanlake", "run", "compactor", "--retention", "3days", "--log", "debug"]);
        assert_eq!(role, Role::Compactor);
        assert_eq!(server.compactor.retention, Duration::from_secs(3 * 86400));
        assert_eq!(server.log.log, "debug");
        let (role, _) = run(&["spanlake", "run", "all", "--retention", "3days", "--refresh-interval", "1s"]);
        assert_eq!(role, Role::All);
    }

    #[test]
    fn run_role_refuses_other_roles_flags() {
        for (role, flag, value) in [
            ("ingester", "--compaction-window", "1h"),
            ("ingester", "--query-timeout", "1s"),
            ("querier", "--flush-size", "1MiB"),
            ("querier", "--retention", "1d"),
            ("compactor", "--otlp-grpc-addr", "127.0.0.1:0"),
            ("compactor", "--sql-memory-limit", "1GiB"),
        ] {
            let error = Cli::parse_without_env(["spanlake", "run", role, flag, value]).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument, "{role} {flag}");
        }
        // Flags before a command are the all-in-one's: not silently dropped.
        assert!(Cli::parse_without_env(["spanlake", "--retention", "1d", "run", "ingester"]).is_err());
    }

    #[test]
    fn help_shows_sections() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let help = command.find_subcommand_mut("run").unwrap().find_subcommand_mut("ingester").unwrap().render_help();
        let help = help.to_string();
        for section in ["Storage:", "Server:", "Ingester:", "Logging:"] {
            assert!(help.contains(section), "{section} missing from:\n{help}");
        }
        assert!(!help.contains("Compactor:") && !help.contains("--retention"), "{help}");
    }

    #[test]
    fn parse_without_env_reads_no_variable() {
        // Structural, so that it holds without mutating the process
        // environment: the command it parses with has no env lookup left
        // anywhere, while the real command has them.
        use clap::CommandFactory;
        fn has_env(command: &clap::Command) -> bool {
            command.get_arguments().any(|a| a.get_env().is_some()) || command.get_subcommands().any(has_env)
        }
        assert!(has_env(&Cli::command()));
        assert!(!has_env(&without_env(Cli::command())));
        let (_, server) = run(&["spanlake", "run", "querier"]);
        assert_eq!(server.querier.query_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        fn check(command: &clap::Command) {
            for arg in command.get_arguments() {
                if ["help", "version"].contains(&arg.get_id().as_str()) || arg.is_positional() {
                    continue;
                }
                let env = arg.get_env().unwrap_or_else(|| panic!("--{} has no env var", arg.get_id()));
                assert!(env.to_str().unwrap().starts_with("SPANLAKE_"), "{env:?}");
            }
            command.get_subcommands().for_each(check);
        }
        check(&Cli::command());
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    const CLUSTER_FILE: &str = "
storage:
  storage: s3://traces/prod
  s3-endpoint: http://seaweedfs:8333
  s3_secret_access_key: hunter2
server:
  multi_tenant: true
ingester:
  min_flush_interval: 100ms
  max_buffer: 2GiB
querier:
  query_timeout: 45s
compactor:
  retention: 7days
  tenant_retention: [team-a=3days, team-b=1day]
logging:
  log_format: json
";

    #[test]
    fn config_file_values_sit_between_flags_and_defaults() {
        let file = config_file(CLUSTER_FILE);
        let path = file.path().to_str().unwrap();
        let (_, s) = run(&["spanlake", "run", "ingester", "--config", path, "--max-buffer", "3GiB"]);
        assert_eq!(s.storage.url, "s3://traces/prod");
        assert_eq!(s.storage.s3_endpoint.as_deref(), Some("http://seaweedfs:8333"));
        assert!(s.server.multi_tenant);
        assert_eq!(s.ingester.min_flush_interval, Some(Duration::from_millis(100)));
        assert_eq!(s.ingester.max_buffer, 3 << 30, "the flag wins over the file");
        assert_eq!(s.ingester.max_request_size, 16 << 20, "untouched keys keep their default");
        assert_eq!(s.log.log_format, LogFormat::Json);
        // The same file configures every role (one ConfigMap for a cluster).
        let (_, s) = run(&["spanlake", "run", "compactor", "--config", path]);
        assert_eq!(s.compactor.retention, Duration::from_secs(7 * 86400));
        assert_eq!(s.compactor_config().tenant_retention.len(), 2);
        let (_, s) = run(&["spanlake", "run", "querier", &format!("--config={path}")]);
        assert_eq!(s.querier.query_timeout, Duration::from_secs(45));
        let all = Cli::parse_without_env(["spanlake", "--config", path]).unwrap().server;
        assert_eq!(all.querier.query_timeout, Duration::from_secs(45));
        assert_eq!(all.compactor.retention, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn status_config_says_where_each_value_came_from() {
        let file = config_file(CLUSTER_FILE);
        let path = file.path().to_str().unwrap();
        let cli = Cli::parse_without_env(["spanlake", "run", "ingester", "--config", path, "--max-buffer", "3GiB"]);
        let Some(Command::Run { role }) = cli.unwrap().command else { panic!("expected run") };
        let text = role.into_server().1.server.effective_config;
        assert!(text.contains("  max_buffer: \"3GiB\"  # flag"), "{text}");
        assert!(text.contains("  min_flush_interval: \"100ms\"  # file"), "{text}");
        assert!(text.contains("  max_request_size: \"16MiB\"  # default"), "{text}");
        assert!(text.contains("  s3_secret_access_key: \"<redacted>\"  # file"), "{text}");
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("retention"), "a role shows only its own flags: {text}");
        // What it shows is itself a config file that gives the same configuration.
        let again = config_file(&text.replace("\"<redacted>\"", "hunter2"));
        let (_, s) = run(&["spanlake", "run", "ingester", "--config", again.path().to_str().unwrap()]);
        assert_eq!(s.ingester.max_buffer, 3 << 30);
        assert_eq!(s.storage.s3_secret_access_key.as_deref(), Some("hunter2"));
    }

    #[test]
    fn config_file_mistakes_name_the_key() {
        let error = |text: &str| {
            let file = config_file(text);
            let args = ["spanlake", "run", "ingester", "--config", file.path().to_str().unwrap()];
            Cli::parse_without_env(args).unwrap_err().to_string()
        };
        let e = error("ingester:\n  max_bufer: 1GiB\n");
        assert!(e.contains("unknown key `ingester.max_bufer`"), "{e}");
        let e = error("querier:\n  retention: 1d\n");
        assert!(e.contains("`retention` belongs in section `compactor:`"), "{e}");
        let e = error("ingester:\n  max_buffer: lots\n");
        assert!(e.contains("lots") && e.contains("--max-buffer"), "{e}");
        let e = error("ingester: [1, 2]\n");
        assert!(e.contains("section `ingester` must hold"), "{e}");
        let e = error("ingester:\n  max_buffer: {a: 1}\n");
        assert!(e.contains("`ingester.max_buffer` must be a value"), "{e}");
        let e = error("{{{{");
        assert!(e.contains("not valid YAML"), "{e}");
        let e = Cli::parse_without_env(["spanlake", "--config", "/nonexistent/spanlake.yaml"]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/spanlake.yaml"), "{e}");
    }

    /// The configuration files shipped in deploy/ load for every role they
    /// configure, with the values they set.
    #[test]
    fn the_shipped_config_files_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in [
            "deploy/spanlake.yaml",
            "deploy/compose/spanlake.yaml",
            "deploy/kubernetes/base/spanlake.yaml",
            "deploy/kubernetes/overlays/all-in-one/config.yaml",
        ] {
            let path = root.join(file);
            let path = path.to_str().unwrap();
            for role in ["all", "ingester", "querier", "compactor"] {
                let (_, s) = run(&["spanlake", "run", role, "--config", path]);
                assert!(s.server.effective_config.contains("# file"), "{file} sets nothing for {role}");
            }
        }
        let example = root.join("deploy/spanlake.yaml");
        let (_, s) = run(&["spanlake", "run", "all", "--config", example.to_str().unwrap()]);
        assert_eq!(s.storage.url, "s3://traces/spanlake");
        assert!(s.server.multi_tenant);
        assert_eq!(s.querier.max_concurrent_queries, 4);
        assert!(s.compactor.tenant_retention.is_empty());
    }
}
