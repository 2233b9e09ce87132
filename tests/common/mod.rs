//! The integration-test harness: a real Temporal dev server (from the `temporal` CLI), the real `worker`
//! binary, and helpers to drive and poll workflows. Tests are async functions, collected from the
//! suite's source by [`collect`] (through `build.rs`) and run concurrently by [`harness`], which
//! prints libtest's lines (`test NAME ... ok`, and a closing `test result: ...`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use stateful_client::connect::ConnectArgs;
use temporalio_client::Client;
use tokio::process::{Child, Command};
use worker::devserver::{DevServer, DevServerOptions};

pub mod api;
pub mod collect;
pub mod floor;
pub mod forge;
pub mod harness;
pub mod history;
pub mod recorder;

/// What every test gets.
pub struct Env {
    /// A client of the shared dev server.
    pub client: Client,
    /// Its address.
    pub address: String,
    /// The task queue the shared worker polls.
    pub task_queue: String,
    /// The `temporal` CLI.
    pub cli: PathBuf,
    /// Unique per harness run, to keep workflow ids apart.
    pub tag: String,
    /// Where logs go.
    pub log_dir: PathBuf,
    /// The shared worker's ingress (`http://HOST:PORT/v1`) and the token it accepts.
    pub ingress: (String, String),
    /// The shared worker's metrics URL.
    pub metrics: String,
}

impl Env {
    /// A workflow id unique to this run: `{Entity}-{id}` with the run tag in the id.
    pub fn id(&self, base: &str) -> String {
        format!("{base}-{}", self.tag)
    }
}

/// A test: a name and an async body.
pub type TestFn =
    for<'a> fn(&'a Env) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A built binary of the workspace (scripts/test builds them first).
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    bin_in(name, "debug")
}

/// A built binary of the workspace, in the `debug` or `release` profile.
pub fn bin_in(name: &str, profile: &str) -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let p = target.join(profile).join(name);
    if !p.is_file() {
        bail!(
            "{} is not built: run `cargo build --workspace --bins` (scripts/test does)",
            p.display()
        );
    }
    Ok(p)
}

/// The `temporal` CLI, or a loud failure.
pub fn temporal_cli() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("TEMPORAL_CLI").map(PathBuf::from).ok_or_else(|| {
        anyhow!("TEMPORAL_CLI is not set: the integration tests need the temporal CLI; run them with scripts/test")
    })?;
    if !p.is_file() {
        bail!(
            "TEMPORAL_CLI={} does not exist; run scripts/setup",
            p.display()
        );
    }
    Ok(p)
}

/// Starts a dev server with extra arguments.
pub async fn dev_server(cli: &Path, extra: &[&str]) -> anyhow::Result<DevServer> {
    DevServer::start(
        cli,
        &DevServerOptions {
            port: 0,
            ui_port: None,
            namespace: "default".into(),
            db_file: None,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            show_output: false,
        },
    )
    .await
}

/// Connects a client.
pub async fn client(address: &str) -> anyhow::Result<Client> {
    client_in(address, "default").await
}

/// Connects a client to a namespace.
pub async fn client_in(address: &str, namespace: &str) -> anyhow::Result<Client> {
    let args = ConnectArgs {
        address: Some(address.to_string()),
        namespace: Some(namespace.into()),
        ..Default::default()
    };
    let resolved = args.resolve()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match resolved.connect("e2e").await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A worker process (the real binary); killed when dropped.
pub struct WorkerProc {
    /// The process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl WorkerProc {
    /// Starts `worker` against `address` on `task_queue`, logging to `log_dir/{name}.log`.
    pub async fn start(
        address: &str,
        task_queue: &str,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> anyhow::Result<WorkerProc> {
        Self::start_with(address, task_queue, log_dir, name, extra, "debug").await
    }

    /// Same, with the binary of a given profile (`release` for benchmarks).
    pub async fn start_with(
        address: &str,
        task_queue: &str,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
        profile: &str,
    ) -> anyhow::Result<WorkerProc> {
        Self::start_env(address, task_queue, log_dir, name, extra, profile, &[]).await
    }

    /// Same, with extra environment variables.
    pub async fn start_env(
        address: &str,
        task_queue: &str,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
        profile: &str,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProc> {
        Self::start_bin(
            "worker", address, task_queue, log_dir, name, extra, profile, envs,
        )
        .await
    }

    /// Same, with another worker binary of the workspace (a custom worker: `custom-worker`).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_bin(
        bin: &str,
        address: &str,
        task_queue: &str,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
        profile: &str,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<WorkerProc> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin_in(bin, profile)?)
            .args(["--address", address, "--task-queue", task_queue])
            .args(if extra.contains(&"--namespace") {
                vec![]
            } else {
                vec!["--namespace", "default"]
            })
            .args(if extra.contains(&"--schema") {
                vec![]
            } else {
                vec![
                    "--schema".to_string(),
                    root()
                        .join("tests/fixtures/schema.yaml")
                        .display()
                        .to_string(),
                ]
            })
            .args(["--metrics-addr", "127.0.0.1:0", "--no-dev-server"])
            .args(extra)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting the worker binary")?;
        let mut w = WorkerProc { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .contains("worker ready")
            {
                return Ok(w);
            }
            if let Some(status) = w.child.try_wait()? {
                bail!(
                    "the worker exited ({status}) before it was ready; its log:\n{}",
                    std::fs::read_to_string(&w.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the worker was not ready within 60 s; its log:\n{}",
                    std::fs::read_to_string(&w.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the worker did not log `{needle}` within {within:?}; its log:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of `key=` in the worker's `worker ready` line (e.g. `ingress`, `metrics`).
    pub fn ready_field(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = text.lines().find(|l| l.contains("worker ready"))?;
        let rest = &line[line.find(&format!(" {key}="))? + key.len() + 2..];
        Some(
            rest.split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string(),
        )
    }

    /// Stops it with SIGTERM-like kill and waits.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends it SIGTERM (a graceful stop: the worker finishes its in-flight tasks) and waits up to
    /// `within` for it to exit; its exit status. (Its Temporal identity, `stateful-worker-{pid}@…`,
    /// names its pid: take `child.id()` first when the history has to be read for it.)
    pub async fn terminate(mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow!("the worker ({}) has already exited", self.log.display()))?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed ({sent})");
        }
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!(
                "the worker {pid} did not exit within {within:?} of SIGTERM; its log: {}",
                self.log.display()
            ),
        }
    }
}

/// Runs an in-process worker with the options `build` makes, on a thread of its own (the SDK's worker
/// future is not `Send`), until the process ends.
pub fn spawn_worker(
    client: Client,
    build: impl FnOnce() -> temporalio_sdk::WorkerOptions + Send + 'static,
) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let runtime = temporalio_sdk::Runtime::from_current_tokio(Default::default())
                .expect("sdk runtime");
            let mut w = temporalio_sdk::Worker::new(&runtime, client, build()).expect("worker");
            let _ = w.run().await;
        });
    });
}

/// Runs the `starter` binary against the shared dev server with `args` (and extra environment);
/// returns (success, stdout, stderr).
pub async fn starter_env(
    env: &Env,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<(bool, String, String)> {
    let out = Command::new(bin("starter")?)
        .args(["--address", &env.address])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

/// [`starter_env`] without extra environment.
pub async fn starter(env: &Env, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    starter_env(env, args, &[]).await
}

/// Polls `check` every 50 ms until it returns `Ok`, or fails with its last error after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("still not true after {within:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls a query until `pred` holds for its answer; returns that answer.
pub async fn query_until(
    env: &Env,
    wid: &str,
    query: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    eventually(Duration::from_secs(30), || async {
        let v = stateful_client::ops::query(&env.client, wid, query).await?;
        if pred(&v) {
            Ok(v)
        } else {
            Err(anyhow!("`{query}` on {wid} is {v}"))
        }
    })
    .await
}

/// Asserts, with a message.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            anyhow::bail!(
                "{} != {}\n  left: {:?}\n right: {:?}",
                stringify!($left),
                stringify!($right),
                l,
                r
            );
        }
    }};
}
