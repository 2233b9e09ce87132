//! The e2e harness: each test is a [`libtest_mimic`] trial, so the suite takes libtest's flags
//! (`--list`, a name filter, `--exact`, `--skip`, `--test-threads`, ...) and ends with libtest's
//! `test result: ...` line.
//!
//! The tests share one dev server and one worker, started once before the first test (not for
//! `--list`, nor when the filter selects no test that needs them), and one tokio runtime: each trial
//! runs its test on that runtime ([`tokio::runtime::Handle::block_on`]), [`CONCURRENCY`] at a time
//! unless `--test-threads` says otherwise, each within [`TIMEOUT`]. The *final* tests (replaying the
//! histories that the others recorded) start once every other selected test has ended.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use tokio::runtime::Handle;
use worker::devserver::DevServer;

use crate::{Env, TestFn, WorkerProc, client, dev_server, root, temporal_cli};

/// Tests run at once, unless `--test-threads` says otherwise.
pub const CONCURRENCY: usize = 6;
/// The time limit of one test.
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// The time limit of one final test.
pub const FINAL_TIMEOUT: Duration = Duration::from_secs(120);

/// A final test: it runs after every other selected test ended, without the [`Env`] (its future need
/// not be `Send`).
pub type FinalFn = fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// The dev server and the worker that the tests share, and what the tests get.
pub struct Fixture {
    /// What every test gets.
    pub env: Env,
    server: DevServer,
    worker: WorkerProc,
}

impl Fixture {
    /// Starts a dev server (with a second namespace, `e2e-import`) and the shared worker (with its
    /// ingress on).
    pub async fn start() -> anyhow::Result<Fixture> {
        let cli = temporal_cli()?;
        let log_dir = root().join("target/e2e/logs");
        // A second namespace, for the export/import round trip.
        let server = dev_server(&cli, &["--namespace", "e2e-import"]).await?;
        let c = client(&server.address).await?;
        let task_queue = "e2e".to_string();
        let ingress_token = "e2e-ingress-token";
        let worker = WorkerProc::start_env(
            &server.address,
            &task_queue,
            &log_dir,
            "worker",
            &[
                "--ingress",
                "127.0.0.1:0",
                "--ingress-token-env",
                "E2E_INGRESS_TOKEN",
            ],
            "debug",
            &[("E2E_INGRESS_TOKEN", ingress_token)],
        )
        .await?;
        let ingress = worker
            .ready_field("ingress")
            .ok_or_else(|| anyhow::anyhow!("the worker did not say where its ingress is"))?;
        let metrics = worker
            .ready_field("metrics")
            .ok_or_else(|| anyhow::anyhow!("the worker did not say where its metrics are"))?;
        let tag = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        let env = Env {
            client: c,
            address: server.address.clone(),
            task_queue,
            cli,
            tag,
            log_dir,
            ingress: (ingress, ingress_token.to_string()),
            metrics,
        };
        Ok(Fixture {
            env,
            server,
            worker,
        })
    }

    /// Stops the worker and the dev server.
    pub async fn stop(self) {
        self.worker.stop().await;
        self.server.stop().await;
    }
}

/// What the trials share.
struct Shared {
    rt: Handle,
    /// Set before the first trial runs; the error text when the setup failed.
    fixture: OnceLock<Result<Fixture, String>>,
    /// Selected tests (not final ones) that have not ended yet.
    pending: Mutex<usize>,
    ended: Condvar,
}

/// Counts a test as ended when dropped (also when it panicked).
struct Ended<'a>(&'a Shared);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut p = self.0.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p = p.saturating_sub(1);
        self.0.ended.notify_all();
    }
}

impl Shared {
    fn run_test(&self, test: TestFn) -> Result<(), Failed> {
        let _ended = Ended(self);
        let fixture = match self.fixture.get() {
            Some(Ok(f)) => f,
            Some(Err(_)) => return Err("the e2e setup failed (its error is printed above)".into()),
            None => return Err("the e2e setup did not run".into()),
        };
        let t0 = Instant::now();
        // `timeout` needs the runtime's timer when it is made: inside `block_on`.
        let res = match self
            .rt
            .block_on(async { tokio::time::timeout(TIMEOUT, test(&fixture.env)).await })
        {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("timed out after {} s", TIMEOUT.as_secs())),
        };
        res.map_err(|e| {
            format!(
                "{e:#}\n\n(after {:.1} s; the shared worker's log: {})",
                t0.elapsed().as_secs_f64(),
                fixture.worker.log.display()
            )
            .into()
        })
    }

    fn run_final(&self, test: FinalFn) -> Result<(), Failed> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (pending, _) = self
            .ended
            .wait_timeout_while(pending, Duration::from_secs(3600), |p| *p > 0)
            .unwrap_or_else(|e| e.into_inner());
        if *pending > 0 {
            return Err(format!("{} other tests still run after an hour", *pending).into());
        }
        drop(pending);
        match self
            .rt
            .block_on(async { tokio::time::timeout(FINAL_TIMEOUT, test()).await })
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}").into()),
            Err(_) => Err(format!("did not finish within {} s", FINAL_TIMEOUT.as_secs()).into()),
        }
    }
}

/// Runs the suite: `tests` with the shared [`Fixture`], then `finals`; returns the exit code.
pub fn main(tests: Vec<(&'static str, TestFn)>, finals: Vec<(&'static str, FinalFn)>) -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = args.test_threads.or(Some(CONCURRENCY));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let shared = Arc::new(Shared {
        rt: rt.handle().clone(),
        fixture: OnceLock::new(),
        pending: Mutex::new(0),
        ended: Condvar::new(),
    });
    let mut trials: Vec<Trial> = tests
        .into_iter()
        .map(|(name, test)| {
            let s = shared.clone();
            Trial::test(name, move || s.run_test(test))
        })
        .collect();
    let selected = trials.iter().filter(|t| !args.is_filtered_out(t)).count();
    // Last: a thread takes a trial only after those before it were taken.
    trials.extend(finals.into_iter().map(|(name, test)| {
        let s = shared.clone();
        Trial::test(name, move || s.run_final(test))
    }));
    *shared.pending.lock().expect("pending") = selected;
    if !args.list && trials.iter().any(|t| !args.is_filtered_out(t)) {
        // The replay tests replay the histories of this run only.
        let _ = std::fs::remove_dir_all(root().join("target/e2e/histories"));
    }
    if !args.list && selected > 0 {
        let fixture = rt.block_on(Fixture::start()).map_err(|e| format!("{e:#}"));
        match &fixture {
            Ok(f) => println!(
                "e2e: dev server {} , worker log {}",
                f.env.address,
                f.worker.log.display()
            ),
            Err(e) => println!("e2e setup FAILED: {e}"),
        }
        let _ = shared.fixture.set(fixture);
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(Ok(f)) = Arc::into_inner(shared).and_then(|s| s.fixture.into_inner()) {
        rt.block_on(f.stop());
    }
    conclusion.exit_code()
}
