//! Command-line flags (each with a `SPANLAKE_…` env var and a default) and
//! their translation into the role crates' plain config structs.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::storage::StorageArgs;
use crate::units::{parse_duration, parse_size};

/// Spanlake: a distributed tracing backend. OTLP in, Parquet on object storage,
/// Grafana's Tempo API out. With no command, runs every role in one process on ./data.
#[derive(Debug, Parser)]
#[command(name = "spanlake", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one role (or all) as a server
    Run {
        /// Which role to run
        #[arg(value_enum, default_value = "all")]
        role: Role,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send generated traces to an OTLP endpoint
    Loadgen(crate::loadgen::LoadgenArgs),
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
        server: ServerArgs,
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

/// Everything a server process is configured with.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// OTLP/gRPC listen address
    #[arg(long, env = "SPANLAKE_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address
    #[arg(long, env = "SPANLAKE_OTLP_HTTP_ADDR", default_value = "0.0.0.0:4318")]
    pub otlp_http_addr: SocketAddr,
    /// Query API listen address (Tempo API, /metrics)
    #[arg(long, env = "SPANLAKE_HTTP_ADDR", default_value = "0.0.0.0:3200")]
    pub http_addr: SocketAddr,
    /// Take the tenant from the X-Scope-OrgID header (otherwise everything is "single-tenant")
    #[arg(long, env = "SPANLAKE_MULTI_TENANT")]
    pub multi_tenant: bool,
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
    /// Prune blocks, row groups and pages by query filters (turn off only to measure what pruning buys)
    #[arg(long, env = "SPANLAKE_QUERY_PRUNING", default_value = "true", action = clap::ArgAction::Set)]
    pub query_pruning: bool,
    /// How far back a catalog refresh relists commits (covers writers' clock skew and slow puts)
    #[arg(long, env = "SPANLAKE_COMMIT_LOOKBACK", default_value = "2m", value_parser = parse_duration)]
    pub commit_lookback: Duration,
    /// Run the compactor in the background of the all-in-one process
    #[arg(long, env = "SPANLAKE_COMPACTION", default_value = "true", action = clap::ArgAction::Set)]
    pub compaction: bool,
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
    /// Log format
    #[arg(long, env = "SPANLAKE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (RUST_LOG syntax), e.g. info or spanlake_ingester=debug
    #[arg(long, env = "SPANLAKE_LOG", default_value = "info")]
    pub log: String,
    /// Once listening, write the bound addresses as JSON to this file
    /// ({"http": …, "otlp_grpc": …, "otlp_http": …}), for tools that bind port 0
    #[arg(long, env = "SPANLAKE_LISTEN_ADDR_FILE")]
    pub listen_addr_file: Option<std::path::PathBuf>,
}

/// `command` with no environment lookup on any argument, in any subcommand.
fn without_env(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| arg.env(None::<&'static str>)).mut_subcommands(without_env)
}

impl Cli {
    /// Parses `args` as a command line without reading the process
    /// environment, so that tests and tools get the same configuration
    /// whatever `SPANLAKE_*` variables are exported.
    pub fn parse_without_env<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = without_env(Self::command()).try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }
}

impl ServerArgs {
    /// Defaults for tests: ports 0 (OS-assigned) on loopback, data in
    /// `storage`; never read from the environment.
    pub fn for_tests(storage: StorageArgs) -> Self {
        let mut args = Cli::parse_without_env(["spanlake"]).expect("the defaults parse").server;
        args.storage = storage;
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        args.otlp_grpc_addr = loopback;
        args.otlp_http_addr = loopback;
        args.http_addr = loopback;
        args
    }

    pub fn ingester_config(&self) -> spanlake_ingester::Config {
        spanlake_ingester::Config {
            grpc_addr: self.otlp_grpc_addr,
            http_addr: self.otlp_http_addr,
            multi_tenant: self.multi_tenant,
            limits: spanlake_ingester::Limits {
                max_request_bytes: self.max_request_size,
                max_spans_per_request: self.max_spans_per_request,
                max_attribute_value_bytes: self.max_attribute_value_size,
                max_span_future: self.max_span_future,
                max_decoding_bytes: self.max_decoding_bytes,
            },
            buffer: spanlake_ingester::BufferConfig {
                min_flush_interval: self
                    .min_flush_interval
                    .unwrap_or_else(|| self.storage.default_min_flush_interval()),
                flush_bytes: self.flush_size,
                max_tenant_bytes: self.max_tenant_buffer,
                max_total_bytes: self.max_buffer,
                flush_timeout: self.flush_timeout,
            },
        }
    }

    pub fn compactor_config(&self) -> spanlake_compactor::Config {
        spanlake_compactor::Config {
            interval: self.compaction_interval,
            plan: spanlake_compactor::plan::PlanConfig {
                window: self.compaction_window,
                target_block_bytes: self.compaction_target_block_size as u64,
                fan_in: self.compaction_fan_in.max(2),
                cold_after: self.compaction_cold_after,
            },
            retention: self.retention,
            tenant_retention: self.tenant_retention.iter().cloned().collect(),
            grace: self.deletion_grace,
            lease_ttl: self.compactor_lease_ttl,
            checkpoint_interval: self.checkpoint_interval,
            commit_lookback: self.commit_lookback,
            shard: self.compactor_shard,
            ..spanlake_compactor::Config::default()
        }
    }

    pub fn querier_config(&self) -> spanlake_querier::Config {
        spanlake_querier::Config {
            multi_tenant: self.multi_tenant,
            refresh_interval: self.refresh_interval,
            max_trace_bytes: self.max_trace_size,
            query_timeout: self.query_timeout,
            sql_memory_limit: self.sql_memory_limit,
            max_concurrent_queries: self.max_concurrent_queries,
            pruning: self.query_pruning,
            commit_lookback: self.commit_lookback,
        }
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

    #[test]
    fn defaults_match_the_readme() {
        let cli = Cli::parse_without_env(["spanlake"]).unwrap();
        assert!(cli.command.is_none());
        let s = cli.server;
        assert_eq!(s.storage.url, "./data");
        assert_eq!(s.otlp_grpc_addr.port(), 4317);
        assert_eq!(s.otlp_http_addr.port(), 4318);
        assert_eq!(s.http_addr.port(), 3200);
        assert_eq!(s.ingester_config().buffer.min_flush_interval, Duration::from_millis(20));
        assert_eq!(s.max_request_size, 16 << 20);
        assert!(s.compaction);
        assert_eq!(s.retention, Duration::from_secs(14 * 24 * 3600));
        assert_eq!(s.deletion_grace, Duration::from_secs(300));
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
    fn run_role_takes_flags() {
        let cli = Cli::parse_without_env([
            "spanlake",
            "run",
            "ingester",
            "--min-flush-interval",
            "250ms",
            "--storage",
            "memory://",
        ])
        .unwrap();
        let Some(Command::Run { role, server }) = cli.command else { panic!("expected run") };
        assert_eq!(role, Role::Ingester);
        assert_eq!(server.ingester_config().buffer.min_flush_interval, Duration::from_millis(250));
        assert_eq!(server.storage.url, "memory://");
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
        let cli = Cli::parse_without_env(["spanlake", "run", "querier"]).unwrap();
        let Some(Command::Run { server, .. }) = cli.command else { panic!("expected run") };
        assert_eq!(server.query_timeout, Duration::from_secs(30));
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            let env = arg.get_env().unwrap_or_else(|| panic!("--{} has no env var", arg.get_id()));
            assert!(env.to_str().unwrap().starts_with("SPANLAKE_"), "{env:?}");
        }
    }
}
