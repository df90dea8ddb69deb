use spanlake::config::{Cli, Command, LogFlags, LogFormat, Role, ServerArgs};
use tracing_subscriber::EnvFilter;

fn init_logs(log: &LogFlags) {
    let filter = EnvFilter::try_new(&log.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(server: ServerArgs, role: Role) -> anyhow::Result<()> {
    init_logs(&server.log);
    let spanlake = spanlake::Spanlake::start(&server, role).await?;
    wait_for_signal().await;
    tracing::info!(drain_timeout = ?server.server.drain_timeout, "shutting down: not ready, finishing queries, flushing buffered spans");
    spanlake.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Worker stack size of the main runtime. Every walk over user input has a
/// depth limit; this is the second line of defence (Rust aborts on overflow).
const STACK_BYTES: usize = 16 << 20;

fn main() -> std::process::ExitCode {
    spanlake::tune_allocator();
    let cli = Cli::load().unwrap_or_else(|error| error.exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(STACK_BYTES)
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.server, Role::All).await,
        Some(Command::Run { role }) => {
            let (role, server) = role.into_server();
            serve(server, role).await
        }
        Some(Command::Compact { once: false, args }) => serve(args.into_server(), Role::Compactor).await,
        Some(Command::Compact { once: true, args }) => {
            let server = args.into_server();
            init_logs(&server.log);
            let report = spanlake::compact_once(&server).await?;
            println!("{report:#?}");
            anyhow::ensure!(report.failures == 0, "{} compaction step(s) failed; see the log", report.failures);
            Ok(())
        }
        Some(Command::Loadgen(args)) => spanlake::loadgen::run(args).await,
        Some(Command::Vulture(args)) => {
            init_logs(&LogFlags { log_format: LogFormat::Text, log: "info".into() });
            spanlake::vulture::run(args).await
        }
        Some(Command::Sql { query, client }) => {
            println!("{}", spanlake::client::sql(&client, &query).await?);
            Ok(())
        }
        Some(Command::Fanout { fanout, client }) => {
            print!("{}", spanlake::client::fanout(&client, &fanout).await?);
            Ok(())
        }
        Some(Command::Trace { id, client }) => {
            print!("{}", spanlake::client::trace(&client, &id).await?);
            Ok(())
        }
    }
}
