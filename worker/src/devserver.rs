//! A local Temporal dev server, run from the `temporal` CLI (`temporal server start-dev`), for when no
//! server is configured, and for tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running dev server; it is killed when dropped.
pub struct DevServer {
    child: Child,
    /// `127.0.0.1:PORT`
    pub address: String,
    /// UI address, when the UI is on.
    pub ui: Option<String>,
}

/// Where to find the `temporal` CLI: the given path, `TEMPORAL_CLI`, `PATH`, or `.tools/venv/bin`.
pub fn find_cli(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("the temporal CLI was not found at {}", p.display());
    }
    if let Some(p) = std::env::var_os("TEMPORAL_CLI") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("TEMPORAL_CLI names {}, which does not exist", p.display());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("temporal");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let local = PathBuf::from(".tools/venv/bin/temporal");
    if local.is_file() {
        return Ok(local);
    }
    bail!(
        "the temporal CLI was not found (run scripts/setup, put `temporal` on PATH, or set TEMPORAL_CLI)"
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// True when something accepts TCP connections at `addr`.
pub fn reachable(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a: SocketAddr| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// Options of a dev server.
#[derive(Debug, Clone, Default)]
pub struct DevServerOptions {
    /// Frontend port (0: any free port).
    pub port: u16,
    /// UI port; `None` runs headless.
    pub ui_port: Option<u16>,
    /// Namespace to create.
    pub namespace: String,
    /// SQLite file to keep the state in (in memory when `None`).
    pub db_file: Option<PathBuf>,
    /// Extra arguments (e.g. `--dynamic-config-value k=v`).
    pub extra_args: Vec<String>,
    /// Show the server's own log output.
    pub show_output: bool,
}

/// Dynamic config every dev server we start gets. `history.transferProcessorMaxPollRPS` (default 20)
/// rate-limits how often a history shard reads its transfer queue, which is how a new workflow task
/// (a signal's, a child start's) reaches matching: past a burst of ~20, each task waits ~40–50 ms for the
/// next read. Measured on this machine: a signal's task waited 42 ms between scheduled and started
/// (p50, rounds 81–200 of S1) with the default, 1.8 ms with 1000. See BENCHMARKS.md.
pub const LOW_LATENCY_DYNAMIC_CONFIG: &[&str] = &["history.transferProcessorMaxPollRPS=1000"];

impl DevServer {
    /// Starts `temporal server start-dev` and waits until its frontend answers (up to 60 s).
    pub async fn start(cli: &Path, opts: &DevServerOptions) -> anyhow::Result<DevServer> {
        let port = if opts.port == 0 {
            free_port()?
        } else {
            opts.port
        };
        let address = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(cli);
        cmd.args(["server", "start-dev", "--ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args([
                "--namespace",
                if opts.namespace.is_empty() {
                    "default"
                } else {
                    &opts.namespace
                },
            ])
            .args(["--log-level", "warn"])
            .args(
                LOW_LATENCY_DYNAMIC_CONFIG
                    .iter()
                    .flat_map(|kv| ["--dynamic-config-value", kv]),
            );
        match opts.ui_port {
            Some(u) => {
                cmd.args(["--ui-port", &u.to_string()]);
            }
            None => {
                cmd.arg("--headless");
            }
        }
        if let Some(db) = &opts.db_file {
            cmd.arg("--db-filename").arg(db);
        }
        cmd.args(&opts.extra_args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if !opts.show_output {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", cli.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the dev server exited at start ({status}); is port {port} free?");
            }
            if reachable(&address) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the dev server did not listen on {address} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(DevServer {
            child,
            address,
            ui: opts.ui_port.map(|u| format!("http://127.0.0.1:{u}")),
        })
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
