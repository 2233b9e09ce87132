//! The worker: connects to Temporal (or starts a local dev server), registers `StatefulWorkflow` and
//! the activities, serves Prometheus metrics, and shuts down gracefully.
//!
//! `main.rs` only parses flags; [`run`] does the work, so tests can drive it too.

pub mod auth;
pub mod codec_server;
pub mod devserver;
pub mod ingress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use stateful_client::codec::Codec;
use stateful_client::connect::{ConnectArgs, Resolved};
use stateful_engine::Schema;
use stateful_workflows::{
    DEFAULT_TASK_QUEUE, DescribeActivities, SchemaActivities, StatefulWorkflow,
};
use temporalio_client::{Client, WorkflowCountOptions};
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
};
use temporalio_sdk::runtime::PollerBehavior;
use temporalio_sdk::{Runtime, Worker, WorkerOptions, runtime::RuntimeOptions};
use tracing::{info, warn};

use crate::devserver::{DevServer, DevServerOptions, find_cli, reachable};

/// Worker flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Runs StatefulWorkflow and its activities on a Temporal task queue."
)]
pub struct WorkerArgs {
    /// Connection settings.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Task queue to poll.
    #[arg(long, env = "STATEFUL_TASK_QUEUE", default_value = DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Schema file (YAML or JSON) for workflows started without a `schema` in their input.
    #[arg(long, env = "STATEFUL_SCHEMA")]
    pub schema: Option<PathBuf>,
    /// Prometheus metrics address (`none` to disable).
    #[arg(long, env = "STATEFUL_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// Concurrent workflow-task polls. Trees start many children at once: more pollers start them
    /// in parallel instead of one after another.
    #[arg(long, default_value_t = 10)]
    pub workflow_pollers: usize,
    /// Concurrent activity-task polls.
    #[arg(long, default_value_t = 5)]
    pub activity_pollers: usize,
    /// Workflows kept in memory between tasks (sticky cache).
    #[arg(long, default_value_t = 1000)]
    pub max_cached_workflows: usize,
    /// How long a workflow's next task waits for the worker that cached it before any worker takes it.
    /// Short, so that a crashed worker's workflows move on quickly (the SDK's default is 10 s).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub sticky_timeout_ms: u64,
    /// How long in-flight activities may run on after a shutdown request.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    pub shutdown_grace: u64,
    /// Never start a local dev server; fail if Temporal is unreachable.
    #[arg(long)]
    pub no_dev_server: bool,
    /// The `temporal` CLI used for the local dev server (default: TEMPORAL_CLI, PATH, .tools/venv/bin).
    #[arg(long)]
    pub temporal_cli: Option<PathBuf>,
    /// Port of the local dev server.
    #[arg(long, default_value_t = 7233)]
    pub dev_server_port: u16,
    /// UI port of the local dev server.
    #[arg(long, default_value_t = 8233)]
    pub dev_server_ui_port: u16,
    /// Keep the local dev server's state in this SQLite file (default: in memory).
    #[arg(long)]
    pub dev_server_db: Option<PathBuf>,
    /// Timeout of one request to an entity API.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub api_timeout: u64,
    /// Largest API answer accepted; a larger one fails the load (`BadBody`, not retried). The default
    /// keeps one answer, wrapped in the activity's result, under Temporal's 2 MB payload limit;
    /// raising it past that needs `--compress` and a matching `--api-max-result`.
    #[arg(long, default_value_t = stateful_activities::DEFAULT_MAX_BODY_BYTES, value_name = "BYTES")]
    pub api_max_body: usize,
    /// Largest result (JSON) an HTTP activity returns; a larger one fails `ResultTooLarge` (not
    /// retried), and a batch load takes as many `loadBatch` activities as keep each result within it.
    /// The default is under Temporal's 2 MB payload limit; raise it only with `--compress` (the limit
    /// applies to the compressed payload).
    #[arg(long, default_value_t = stateful_activities::DEFAULT_MAX_RESULT_BYTES, value_name = "BYTES")]
    pub api_max_result: usize,
    /// Consecutive failures (5xx, 408, 429, timeouts, connection errors) that open an API host's
    /// circuit: loads to it then fail fast for the cool-down.
    #[arg(long, default_value_t = 5)]
    pub api_breaker_threshold: u32,
    /// How long an open circuit fails fast.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub api_breaker_cool_down: u64,
    /// Concurrent requests of one `loadBatch` activity.
    #[arg(long, default_value_t = 8)]
    pub api_batch_concurrency: usize,
    /// API hosts the HTTP activities may send requests (and the token) to: `host`, `host:port`,
    /// `*.example.com` (subdomains) or an IP address; repeat the flag or separate with commas. Unset:
    /// any host. Link-local and cloud-metadata destinations are refused unless listed exactly.
    #[arg(long = "api-allow-host", env = "STATEFUL_API_ALLOW_HOST", value_delimiter = ',',
          value_name = "HOST[:PORT]",
          value_parser = |s: &str| stateful_activities::hosts::AllowedHost::parse(s).map(|_| s.trim().to_string()))]
    pub api_allow_host: Vec<String>,
    /// Serve the HTTP ingress (POST/DELETE/GET /v1/{Entity}/{id}) on this address; off by default.
    #[arg(long, env = "STATEFUL_INGRESS", value_name = "HOST:PORT")]
    pub ingress: Option<String>,
    /// The environment variable holding the bearer token ingress callers must present.
    #[arg(long, default_value = "STATEFUL_INGRESS_TOKEN", value_name = "VAR")]
    pub ingress_token_env: String,
    /// Largest request body the ingress accepts (413 beyond). The default fits one signal in
    /// Temporal's 2 MB payload limit; raise it only with `--compress`.
    #[arg(long, default_value_t = ingress::DEFAULT_MAX_BODY, value_name = "BYTES")]
    pub ingress_max_body: usize,
    /// Requests per second the ingress takes, sustained (a token bucket; more are held back up to a
    /// second, then refused with 429); 0: no limit.
    #[arg(long, default_value_t = ingress::DEFAULT_RATE_PER_SECOND, value_name = "N")]
    pub ingress_rate_limit: u32,
    /// Requests the ingress takes at once above its rate (the bucket's size).
    #[arg(long, default_value_t = ingress::DEFAULT_BURST, value_name = "N")]
    pub ingress_rate_burst: u32,
    /// Serve Temporal's codec-server endpoints (`/encode`, `/decode`, `/{namespace}/encode`,
    /// `/{namespace}/decode`) on this address, for `temporal workflow show --codec-endpoint` and the
    /// UI; needs the codec keys or `--compress`. An address that is not a loopback one needs
    /// `--codec-server-token-env`.
    #[arg(long, env = "STATEFUL_CODEC_SERVER", value_name = "HOST:PORT")]
    pub codec_server: Option<String>,
    /// The environment variable holding a token the codec server's callers must present
    /// (`Authorization`, with or without `Bearer `); unset: no check, allowed on a loopback address
    /// only.
    #[arg(long, value_name = "VAR")]
    pub codec_server_token_env: Option<String>,
    /// More origins allowed to call the codec server from a browser (a Temporal UI elsewhere), besides
    /// the UI's usual http://localhost:8233 and http://127.0.0.1:8233, always allowed; repeat the flag
    /// or separate with commas.
    #[arg(long, value_delimiter = ',', value_name = "ORIGIN")]
    pub codec_cors_origin: Vec<String>,
    /// Largest request body the codec server accepts (413 beyond). The default takes a payload of
    /// Temporal's largest (2 MB) in JSON and base64.
    #[arg(long, default_value_t = codec_server::DEFAULT_MAX_BODY, value_name = "BYTES")]
    pub codec_server_max_body: usize,
    /// Requests per second the codec server takes, sustained (more are held back up to a second, then
    /// refused with 429); 0: no limit.
    #[arg(long, default_value_t = codec_server::DEFAULT_RATE_PER_SECOND, value_name = "N")]
    pub codec_server_rate_limit: u32,
    /// Requests the codec server takes at once above its rate.
    #[arg(long, default_value_t = codec_server::DEFAULT_BURST, value_name = "N")]
    pub codec_server_rate_burst: u32,
    /// Time limit of one request to the ingress or the codec server: a body not received within it
    /// is answered 408, an answer not ready within it 503.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub http_request_timeout: u64,
}

impl WorkerArgs {
    /// The ingress's limits (`--ingress-max-body`, `--ingress-rate-*`, `--http-request-timeout`).
    pub fn ingress_limits(&self) -> auth::HttpLimits {
        auth::HttpLimits {
            max_body: self.ingress_max_body,
            timeout: Duration::from_secs(self.http_request_timeout.max(1)),
            rate_per_second: self.ingress_rate_limit,
            burst: self.ingress_rate_burst,
            max_wait: auth::HttpLimits::DEFAULT_MAX_WAIT,
        }
    }

    /// The codec server's limits (`--codec-server-max-body`, `--codec-server-rate-*`,
    /// `--http-request-timeout`).
    pub fn codec_server_limits(&self) -> auth::HttpLimits {
        auth::HttpLimits {
            max_body: self.codec_server_max_body,
            timeout: Duration::from_secs(self.http_request_timeout.max(1)),
            rate_per_second: self.codec_server_rate_limit,
            burst: self.codec_server_rate_burst,
            max_wait: auth::HttpLimits::DEFAULT_MAX_WAIT,
        }
    }

    /// The environment variables that hold the worker's HTTP tokens (`--ingress-token-env`,
    /// `--codec-server-token-env`): removed, with [`devserver::SECRET_ENV_VARS`], from the dev
    /// server's environment.
    pub fn token_env_vars(&self) -> Vec<&str> {
        std::iter::once(self.ingress_token_env.as_str())
            .chain(self.codec_server_token_env.as_deref())
            .collect()
    }

    /// The HTTP activities' settings.
    pub fn http_config(&self) -> stateful_activities::HttpConfig {
        stateful_activities::HttpConfig {
            timeout: Duration::from_secs(self.api_timeout.max(1)),
            max_body_bytes: self.api_max_body,
            max_result_bytes: self.api_max_result.max(1024),
            breaker_threshold: self.api_breaker_threshold.max(1),
            breaker_cool_down: Duration::from_secs(self.api_breaker_cool_down),
            batch_concurrency: self.api_batch_concurrency.max(1),
            allowed_hosts: self.api_allow_host.clone(),
        }
    }

    /// Warnings about the API limits: a body limit whose answers cannot fit the result budget, and a
    /// result budget over Temporal's payload limit without compression.
    pub fn api_limit_warnings(&self, compress: bool) -> Vec<String> {
        let mut out = Vec::new();
        // `{"status":"ok","data":...}` around the answer.
        let wrapped = self.api_max_body.saturating_add(64);
        if wrapped > self.api_max_result {
            out.push(format!(
                "--api-max-body {} is over what fits --api-max-result {}: answers near the body limit fail ResultTooLarge",
                self.api_max_body, self.api_max_result
            ));
        }
        if self.api_max_result > stateful_activities::PAYLOAD_LIMIT_BYTES && !compress {
            out.push(format!(
                "--api-max-result {} is over Temporal's payload limit ({} bytes) and --compress is off: larger results fail at the server",
                self.api_max_result,
                stateful_activities::PAYLOAD_LIMIT_BYTES
            ));
        }
        out
    }
}

/// Runs the worker until `shutdown` completes (or a fatal error).
pub async fn run(
    args: WorkerArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let schema = match &args.schema {
        Some(p) => {
            let s = Schema::from_file(p).map_err(|e| anyhow!("{e}"))?;
            info!(file = %p.display(), entities = s.entities().len(), "schema loaded");
            Some(s)
        }
        None => {
            warn!("no --schema: only workflows that carry `schema` in their input can start");
            None
        }
    };
    let mut resolved = args.connect.resolve()?;
    let mut dev_server = None;
    if !resolved.address_configured && !reachable("localhost:7233") {
        if args.no_dev_server {
            bail!(
                "no Temporal server is configured and none answers at localhost:7233 (set TEMPORAL_ADDRESS or --address)"
            );
        }
        let cli = find_cli(args.temporal_cli.as_deref())?;
        let opts = DevServerOptions {
            port: args.dev_server_port,
            ui_port: Some(args.dev_server_ui_port),
            namespace: resolved.namespace(),
            db_file: args.dev_server_db.clone(),
            extra_args: Vec::new(),
            show_output: false,
        };
        // The dev server does not inherit the worker's secrets (codec keys, tokens, credentials).
        let srv = DevServer::start_without(&cli, &opts, &args.token_env_vars()).await?;
        info!(
            address = %srv.address,
            ui = srv.ui.as_deref().unwrap_or("-"),
            "no Temporal server configured: started a local dev server ({})",
            cli.display()
        );
        resolved.profile.address = Some(srv.address.clone());
        dev_server = Some(srv);
    }
    let identity = format!("stateful-worker-{}@{}", std::process::id(), hostname());
    let client = connect_with_retry(&resolved, &identity).await?;
    let result = run_with_client(
        &args,
        client,
        resolved.codec.clone(),
        schema,
        &resolved.address(),
        &resolved.namespace(),
        shutdown,
    )
    .await;
    if let Some(srv) = dev_server {
        srv.stop().await;
    }
    result
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn connect_with_retry(resolved: &Resolved, identity: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = resolved.connect(identity).await?;
            client
                .count_workflows("", WorkflowCountOptions::default())
                .await
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("namespace `{}` does not answer", resolved.namespace()))?;
            anyhow::Ok(client)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn run_with_client(
    args: &WorkerArgs,
    client: Client,
    codec: Codec,
    schema: Option<Schema>,
    address: &str,
    namespace: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    for w in args.api_limit_warnings(codec.compress) {
        warn!("{w}");
    }
    let (meter, metrics_bound) = serve_metrics(&args.metrics_addr)?;
    let mut http = stateful_activities::HttpActivities::new(args.http_config());
    if let Some(m) = &meter {
        http = http.with_metrics(stateful_activities::Metrics::new(m.clone()));
        tokio::spawn(export_workflow_metrics(m.clone()));
    }
    let telemetry = TelemetryOptions::builder().maybe_metrics(meter);
    let runtime_opts = RuntimeOptions::builder()
        .telemetry_options(telemetry.build())
        .build()
        .map_err(|e| anyhow!(e))?;
    let runtime = Runtime::from_current_tokio(runtime_opts)?;
    let options = worker_options(args, schema.as_ref(), http, &client)?;
    let codec_bound = serve_codec(args, &codec).await?;
    stateful_workflows::set_payload_compression(codec.compress);
    let ingress_bound = serve_ingress(args, &client, schema.as_ref()).await?;
    let mut worker = Worker::new(&runtime, client, options)?;
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: finishing in-flight tasks");
        stop();
    });
    info!(
        address,
        namespace,
        task_queue = %args.task_queue,
        metrics = %metrics_bound.map(|a| format!("http://{a}/metrics")).unwrap_or_else(|| "off".into()),
        ingress = %ingress_bound.map(|a| format!("http://{a}/v1")).unwrap_or_else(|| "off".into()),
        encryption = %codec.aes.as_ref().map(|c| format!("aes-256-gcm key {}", c.current_key())).unwrap_or_else(|| "off".into()),
        compression = %if codec.compress { "zstd" } else { "off" },
        codec_server = %codec_bound.map(|a| format!("http://{a}")).unwrap_or_else(|| "off".into()),
        "worker ready"
    );
    worker.run().await?;
    info!("worker stopped");
    Ok(())
}

/// The Prometheus exporter on `addr` (`none`: off): its meter and the address it bound.
#[allow(clippy::type_complexity)]
fn serve_metrics(
    addr: &str,
) -> anyhow::Result<(
    Option<Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>>,
    Option<SocketAddr>,
)> {
    if addr == "none" {
        return Ok((None, None));
    }
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics-addr `{addr}` is not host:port"))?;
    let srv = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(addr)
            .build(),
    )
    .with_context(|| format!("cannot serve metrics on {addr}"))?;
    Ok((
        Some(srv.meter as Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>),
        Some(srv.bound_addr),
    ))
}

/// The SDK worker's options: StatefulWorkflow, the schema, `workflowType` (with the worker's
/// client) and HTTP activities, pollers, cache, sticky timeout, graceful shutdown.
fn worker_options(
    args: &WorkerArgs,
    schema: Option<&Schema>,
    http: stateful_activities::HttpActivities,
    client: &Client,
) -> anyhow::Result<WorkerOptions> {
    Ok(WorkerOptions::new(args.task_queue.clone())
        .register_workflow::<StatefulWorkflow>()?
        .register_activities(SchemaActivities::new(schema))
        // `workflowType`: what runs under a child's id, before it is adopted.
        .register_activities(DescribeActivities::new(client.clone()))
        .register_activities(http)
        .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(args.workflow_pollers.max(2)))
        .activity_task_poller_behavior(PollerBehavior::SimpleMaximum(args.activity_pollers.max(1)))
        .max_cached_workflows(args.max_cached_workflows)
        .sticky_queue_schedule_to_start_timeout(Duration::from_millis(
            args.sticky_timeout_ms.max(100),
        ))
        .graceful_shutdown_period(Duration::from_secs(args.shutdown_grace))
        .build())
}

/// The codec server (`--codec-server`), if asked for: the address it bound. It needs something to
/// serve: the codec keys, compression, or both.
async fn serve_codec(args: &WorkerArgs, codec: &Codec) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = &args.codec_server else {
        return Ok(None);
    };
    if !codec.is_on() {
        bail!(
            "--codec-server needs the codec keys (--codec-keys-file or STATEFUL_CODEC_KEYS) or compression (--compress or STATEFUL_CODEC_COMPRESS=zstd)"
        );
    }
    let codec = codec.clone();
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--codec-server `{addr}` is not host:port"))?;
    let token = match &args.codec_server_token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t),
            _ => {
                bail!("--codec-server-token-env: the environment variable {var} is unset or empty")
            }
        },
        None => None,
    };
    let opts = codec_server::Options {
        token,
        cors_origins: args.codec_cors_origin.clone(),
        limits: args.codec_server_limits(),
    };
    let bound = codec_server::serve(codec, addr, opts).await?;
    Ok(Some(bound))
}

/// The HTTP ingress (`--ingress`), if asked for: the address it bound.
async fn serve_ingress(
    args: &WorkerArgs,
    client: &Client,
    schema: Option<&Schema>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = &args.ingress else {
        return Ok(None);
    };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--ingress `{addr}` is not host:port"))?;
    let token = std::env::var(&args.ingress_token_env).unwrap_or_default();
    if token.trim().is_empty() {
        bail!(
            "--ingress needs a bearer token for its callers in the environment variable {} (it is unset or empty)",
            args.ingress_token_env
        );
    }
    let ing = ingress::Ingress::new(
        client.clone(),
        args.task_queue.clone(),
        schema.cloned().map(Arc::new),
        token.trim(),
    )
    .with_limits(args.ingress_limits());
    Ok(Some(ing.serve(addr).await?))
}

/// Exports the workflows' process-wide counters (see `stateful_workflows::metrics`) every second.
async fn export_workflow_metrics(meter: Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>) {
    use stateful_workflows::metrics as wm;
    use temporalio_common::telemetry::metrics::{MetricKeyValue, MetricParameters, NewAttributes};
    let p = |name: &'static str, description: &'static str| {
        MetricParameters::builder()
            .name(name)
            .description(description)
            .build()
    };
    let plain: Vec<_> = wm::all()
        .into_iter()
        .map(|(name, description, count)| (meter.counter(p(name, description)), count, 0u64))
        .collect();
    let loads = meter.counter(p("stateful_loads", "Loads from entity APIs, by outcome"));
    let load_attrs: Vec<_> = wm::LOADS
        .iter()
        .map(|(k, c)| {
            (
                meter.new_attributes(NewAttributes::from([MetricKeyValue::new("outcome", *k)])),
                c,
            )
        })
        .collect();
    let none = meter.new_attributes(NewAttributes::default());
    let mut plain = plain;
    let mut load_seen = vec![0u64; load_attrs.len()];
    loop {
        for (counter, count, seen) in plain.iter_mut() {
            let now = count.get();
            counter.add(now - *seen, &none);
            *seen = now;
        }
        for ((attrs, count), seen) in load_attrs.iter().zip(load_seen.iter_mut()) {
            let now = count.get();
            loads.add(now - *seen, attrs);
            *seen = now;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_http_servers_limits_default_and_parse() {
        let args = WorkerArgs::parse_from(["worker"]);
        let ing = args.ingress_limits();
        assert_eq!(ing.max_body, 2 * 1024 * 1024);
        assert_eq!((ing.rate_per_second, ing.burst), (100, 200));
        assert_eq!(ing.timeout, Duration::from_secs(30));
        let codec = args.codec_server_limits();
        assert_eq!(codec.max_body, 4 * 1024 * 1024);
        assert_eq!((codec.rate_per_second, codec.burst), (1000, 2000));
        assert!(args.codec_cors_origin.is_empty());
        assert_eq!(args.token_env_vars(), ["STATEFUL_INGRESS_TOKEN"]);
        let set = WorkerArgs::parse_from([
            "worker",
            "--codec-cors-origin",
            "https://a.example,https://b.example",
            "--codec-cors-origin",
            "https://c.example",
            "--codec-server-token-env",
            "CODEC_TOKEN",
            "--ingress-rate-limit",
            "0",
            "--http-request-timeout",
            "5",
        ]);
        assert_eq!(
            set.codec_cors_origin,
            [
                "https://a.example",
                "https://b.example",
                "https://c.example"
            ]
        );
        assert_eq!(
            set.token_env_vars(),
            ["STATEFUL_INGRESS_TOKEN", "CODEC_TOKEN"]
        );
        assert_eq!(set.ingress_limits().rate_per_second, 0);
        assert_eq!(set.codec_server_limits().timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_api_limits_default_within_the_payload_limit_and_warn_when_raised_alone() {
        let args = WorkerArgs::parse_from(["worker"]);
        let cfg = args.http_config();
        assert!(cfg.max_body_bytes <= 1_900_000);
        assert!(cfg.max_result_bytes < stateful_activities::PAYLOAD_LIMIT_BYTES);
        assert!(args.api_limit_warnings(false).is_empty());
        let raised = WorkerArgs::parse_from(["worker", "--api-max-body", "4194304"]);
        let w = raised.api_limit_warnings(true);
        assert!(w.len() == 1 && w[0].contains("ResultTooLarge"), "{w:?}");
        let both = WorkerArgs::parse_from([
            "worker",
            "--api-max-body",
            "4194304",
            "--api-max-result",
            "4300000",
        ]);
        assert!(both.api_limit_warnings(true).is_empty());
        let w = both.api_limit_warnings(false);
        assert!(w.len() == 1 && w[0].contains("--compress"), "{w:?}");
    }
}
