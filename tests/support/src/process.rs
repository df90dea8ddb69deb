//! The `spanlake` binary in a child process on loopback port 0, its bound
//! addresses read from the file it writes (`--listen-addr-file`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `spanlake` process; killed when dropped.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    /// The query API (every role serves `/metrics` and `/ready` there).
    pub http: SocketAddr,
    /// OTLP/gRPC, when the process runs an ingester.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP, when the process runs an ingester.
    pub otlp_http: Option<SocketAddr>,
    /// The PostgreSQL listener, when the process runs a querier.
    pub pg: Option<SocketAddr>,
    /// The worker listener, when the process runs a querier with `--worker-addr`.
    pub worker: Option<SocketAddr>,
    /// Holds the address file.
    _dir: tempfile::TempDir,
}

impl Spawned {
    /// Runs `binary` (the test's `env!("CARGO_BIN_EXE_spanlake")`) with
    /// `args` (a server command: the flags below go after it), every
    /// listener on 127.0.0.1 port 0, JSON logs to stderr (or nowhere unless
    /// `SPANLAKE_TEST_LOGS` is set), and none of the `SPANLAKE_*` variables of
    /// this environment; returns once it listens.
    pub fn start(binary: &str, args: &[&str]) -> Self {
        Self::start_with_env(binary, args, &[])
    }

    /// Like [`Spawned::start`], with `env` set in the child's environment.
    pub fn start_with_env(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let file = dir.path().join("listen.json");
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SPANLAKE_") {
                command.env_remove(key);
            }
        }
        let logs = if std::env::var_os("SPANLAKE_TEST_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() };
        let mut child = command
            .args(args)
            .args(["--log-format", "json", "--listen-addr-file"])
            .arg(&file)
            .args(["--http-addr", "127.0.0.1:0"])
            // Variables, not flags: a role without an ingester has no such flags.
            .env("SPANLAKE_OTLP_GRPC_ADDR", "127.0.0.1:0")
            .env("SPANLAKE_OTLP_HTTP_ADDR", "127.0.0.1:0")
            .env("SPANLAKE_PG_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .expect("spawn spanlake");
        let addrs = wait_for_file(&mut child, &file);
        let addr = |name: &str| addrs[name].as_str().map(|a| a.parse().expect("a socket address"));
        Self {
            http: addr("http").expect("the http address"),
            grpc: addr("otlp_grpc"),
            otlp_http: addr("otlp_http"),
            pg: addr("pg"),
            worker: addr("worker"),
            child,
            _dir: dir,
        }
    }

    /// The process id, for /proc readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (at most a minute) for the address file, failing at once if the
/// process exits first.
fn wait_for_file(child: &mut Child, file: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            return serde_json::from_str(&text).expect("the address file is JSON");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("spanlake exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "spanlake did not start within a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
}
