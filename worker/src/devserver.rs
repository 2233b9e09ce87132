//! A local Temporal dev server, run from the `temporal` CLI (`temporal server start-dev`), for when no
//! server is configured, and for tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
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

/// Why a dev server did not start.
enum StartError {
    /// It exited, with the tail of what it printed on stderr.
    Exited(std::process::ExitStatus, String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// The last [`StderrTail::MAX`] bytes a child printed on its stderr, read by a task for as long as the
/// child lives (so that a chatty server never blocks on a full pipe).
#[derive(Clone, Default)]
struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Option<Arc<tokio::sync::Notify>>,
}

impl StderrTail {
    const MAX: usize = 2048;

    /// Follows `child`'s stderr when it is piped (nothing otherwise).
    fn follow(child: &mut Child) -> StderrTail {
        let Some(mut err) = child.stderr.take() else {
            return StderrTail::default();
        };
        let done = Arc::new(tokio::sync::Notify::new());
        let tail = StderrTail {
            buf: Arc::default(),
            done: Some(done.clone()),
        };
        let buf = tail.buf.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = err.read(&mut chunk).await {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(&chunk[..n]);
                let excess = b.len().saturating_sub(Self::MAX);
                b.drain(..excess);
            }
            done.notify_one();
        });
        tail
    }

    /// What it printed, once its stderr is closed (waiting at most 2 s), trimmed.
    async fn text(&self) -> String {
        if let Some(done) = &self.done {
            let _ = tokio::time::timeout(Duration::from_secs(2), done.notified()).await;
        }
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&b).trim().to_string()
    }
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
///
/// `frontend.enableCancelWorkerPollsOnShutdown` lets a worker that stops (SIGTERM) cancel its long
/// polls on the server, so that the server hands it no task it will not run (the SDK then waits for
/// polls to complete instead of abandoning them): measured with three workers restarted one after
/// another (`tests/many_workers.rs`), tasks handed to a stopping worker and left to time out (10 s
/// each) went from 10 runs in 12 to 2 in 6.
pub const LOW_LATENCY_DYNAMIC_CONFIG: &[&str] = &[
    "history.transferProcessorMaxPollRPS=1000",
    "frontend.enableCancelWorkerPollsOnShutdown=true",
];

/// Environment variables the worker reads that hold secrets (or say where they are), which no child
/// process it starts (the local dev server) may inherit; an entry ending in `*` is a prefix. Besides
/// these, the variables named by `--ingress-token-env` and `--codec-server-token-env` are removed (see
/// [`DevServer::start_without`]).
///
/// - `STATEFUL_CODEC_KEYS`, `STATEFUL_CODEC_KEYS_FILE`: the payload codec's keys, and their file;
/// - `STATEFUL_INGRESS_TOKEN`: the ingress's token (the default of `--ingress-token-env`);
/// - `TEMPORAL_API_KEY`, `TEMPORAL_TLS_CLIENT_KEY_DATA`, `TEMPORAL_TLS_CLIENT_KEY_PATH`,
///   `TEMPORAL_TLS_CLIENT_CERT_DATA`, `TEMPORAL_TLS_CLIENT_CERT_PATH`, `TEMPORAL_GRPC_META_*` (gRPC
///   headers, often an `authorization`): Temporal's client credentials;
/// - `TEMPORAL_CODEC_AUTH`: the `temporal` CLI's codec-server credentials;
/// - `OTEL_EXPORTER_OTLP_*`: the trace exporter's settings (`_HEADERS` often hold a collector's API
///   key; and the dev server has no business exporting to the worker's collector).
pub const SECRET_ENV_VARS: &[&str] = &[
    "STATEFUL_CODEC_KEYS",
    "STATEFUL_CODEC_KEYS_FILE",
    "STATEFUL_INGRESS_TOKEN",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_GRPC_META_*",
    "TEMPORAL_CODEC_AUTH",
    "OTEL_EXPORTER_OTLP_*",
];

/// Removes from `cmd`'s environment every variable of [`SECRET_ENV_VARS`] (prefixes matched against the
/// current environment) and every one named in `also`.
pub fn remove_secret_env(cmd: &mut std::process::Command, also: &[&str]) {
    let present: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    remove_secret_env_in(cmd, also, &present);
}

/// [`remove_secret_env`], with the prefixes matched against the variable names `present`.
fn remove_secret_env_in(
    cmd: &mut std::process::Command,
    also: &[&str],
    present: &[std::ffi::OsString],
) {
    for name in SECRET_ENV_VARS.iter().copied().chain(also.iter().copied()) {
        match name.strip_suffix('*') {
            Some(prefix) => {
                for k in present {
                    if k.to_str().is_some_and(|k| k.starts_with(prefix)) {
                        cmd.env_remove(k);
                    }
                }
            }
            None if !name.is_empty() => {
                cmd.env_remove(name);
            }
            None => {}
        }
    }
}

/// The `temporal server start-dev` command for `opts` on `port`, with the secrets of the worker's
/// environment removed ([`SECRET_ENV_VARS`] and the variables named in `also_remove`).
pub fn command(cli: &Path, opts: &DevServerOptions, port: u16, also_remove: &[&str]) -> Command {
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
        // The search attributes StatefulWorkflows set, in every namespace it creates.
        .args(
            stateful_workflows::visibility::NAMES
                .iter()
                .flat_map(|n| ["--search-attribute".to_string(), format!("{n}=Keyword")]),
        )
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
        // Its stderr is kept (the tail of it) to tell why it stopped; see `StderrTail`.
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    remove_secret_env(cmd.as_std_mut(), also_remove);
    cmd
}

impl DevServer {
    /// Starts `temporal server start-dev` and waits until its frontend answers (up to 60 s). It does
    /// not inherit the secrets of [`SECRET_ENV_VARS`].
    pub async fn start(cli: &Path, opts: &DevServerOptions) -> anyhow::Result<DevServer> {
        Self::start_without(cli, opts, &[]).await
    }

    /// [`DevServer::start`], also removing the variables named in `also_remove` from the server's
    /// environment (the worker's token variables, whose names are options).
    pub async fn start_without(
        cli: &Path,
        opts: &DevServerOptions,
        also_remove: &[&str],
    ) -> anyhow::Result<DevServer> {
        // A port we chose ourselves can be taken between our choice and the server's bind (another
        // process picks free ports the same way): then we choose again, up to three times.
        let attempts = if opts.port == 0 { 3 } else { 1 };
        let mut attempt = 1;
        loop {
            let port = if opts.port == 0 {
                free_port()?
            } else {
                opts.port
            };
            match Self::start_on(cli, opts, port, also_remove).await {
                Err(StartError::Exited(status, tail)) if attempt < attempts => {
                    tracing::warn!(
                        port,
                        %status,
                        output = %tail,
                        "the dev server exited at start; trying another port"
                    );
                    attempt += 1;
                }
                Err(StartError::Exited(status, tail)) => {
                    bail!(
                        "the dev server exited at start ({status}); is port {port} free? {}",
                        if tail.is_empty() {
                            "(it printed nothing)".to_string()
                        } else {
                            format!("it said: {tail}")
                        }
                    )
                }
                Err(StartError::Other(e)) => return Err(e),
                Ok(srv) => return Ok(srv),
            }
        }
    }

    async fn start_on(
        cli: &Path,
        opts: &DevServerOptions,
        port: u16,
        also_remove: &[&str],
    ) -> Result<DevServer, StartError> {
        let address = format!("127.0.0.1:{port}");
        let mut cmd = command(cli, opts, port, also_remove);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", cli.display()))?;
        let tail = StderrTail::follow(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().map_err(anyhow::Error::from)? {
                return Err(StartError::Exited(status, tail.text().await));
            }
            if reachable(&address) {
                break;
            }
            if Instant::now() > deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "the dev server did not listen on {address} within 60 s"
                )));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    /// A "CLI" that fails as the dev server does when a port is taken, counting its runs.
    fn failing_cli(dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let cli = dir.join("temporal");
        let runs = dir.join("runs");
        std::fs::write(
            &cli,
            format!(
                "#!/bin/sh\necho run >> '{}'\necho \"Error: can't set UI port 1: bind: address already in use\" >&2\nexit 1\n",
                runs.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
        cli
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    #[tokio::test]
    async fn a_dev_server_that_exits_at_start_is_reported_with_its_reason_and_retried_on_our_ports()
    {
        let dir = std::env::temp_dir().join(format!("devserver-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cli = failing_cli(&dir);
        // A port we choose: three attempts, each on a new port, then the server's own words.
        let opts = DevServerOptions {
            ui_port: Some(1),
            ..Default::default()
        };
        let err = DevServer::start(&cli, &opts)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("exited at start"), "{err}");
        assert!(err.contains("address already in use"), "{err}");
        assert_eq!(runs(&dir), 3);
        // A port the user gave: one attempt.
        let opts = DevServerOptions { port: 7233, ..opts };
        let err = DevServer::start(&cli, &opts)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is port 7233 free?"), "{err}");
        assert!(err.contains("address already in use"), "{err}");
        assert_eq!(runs(&dir), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_dev_server_inherits_no_secret() {
        let opts = DevServerOptions {
            ui_port: Some(8233),
            namespace: "ns".into(),
            ..Default::default()
        };
        let cmd = command(
            Path::new("/bin/true"),
            &opts,
            7233,
            &["MY_INGRESS_TOKEN", "MY_CODEC_TOKEN"],
        );
        let removed: Vec<&OsStr> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        for name in SECRET_ENV_VARS.iter().filter(|n| !n.ends_with('*')) {
            assert!(removed.contains(&OsStr::new(name)), "{name} is inherited");
        }
        for name in ["MY_INGRESS_TOKEN", "MY_CODEC_TOKEN", "STATEFUL_CODEC_KEYS"] {
            assert!(removed.contains(&OsStr::new(name)), "{name} is inherited");
        }
        // Nothing is set, only removed; the arguments are the dev server's.
        assert!(cmd.as_std().get_envs().all(|(_, v)| v.is_none()));
        let args: Vec<_> = cmd.as_std().get_args().collect();
        assert_eq!(&args[..2], [OsStr::new("server"), OsStr::new("start-dev")]);
        assert!(args.contains(&OsStr::new("--ui-port")));
        assert!(args.contains(&OsStr::new("ns")));
        assert!(args.contains(&OsStr::new("StatefulRoot=Keyword")));
    }

    #[test]
    fn a_child_really_does_not_see_them() {
        // Variables set on the command stand for inherited ones; the prefix is matched against the
        // names given as the environment.
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "env"])
            .env("TEMPORAL_API_KEY", "k")
            .env("TEMPORAL_GRPC_META_AUTHORIZATION", "Bearer x")
            .env("MY_TOKEN", "t")
            .env("KEEP_ME", "1");
        let present = ["TEMPORAL_GRPC_META_AUTHORIZATION".into(), "KEEP_ME".into()];
        remove_secret_env_in(&mut cmd, &["MY_TOKEN"], &present);
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        assert!(out.contains("KEEP_ME=1"), "{out}");
        for gone in ["TEMPORAL_API_KEY=", "TEMPORAL_GRPC_META_", "MY_TOKEN="] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }
}
