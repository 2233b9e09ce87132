//! The worker's health endpoints, on the metrics listener (`--metrics-addr`):
//!
//! - `GET /healthz`: the process is alive: always `200 {"status": "alive"}`.
//! - `GET /readyz`: connected to Temporal and polling: `200 {"status": "ready", ...}`; otherwise
//!   `503 {"status": ..., "reason": ...}`: `connecting` (no connection to Temporal yet), `starting`
//!   (connected, the worker is being started), `unreachable` (Temporal stopped answering the
//!   worker's probe, every [`PROBE_EVERY`]), `draining` (a shutdown signal arrived: polling stopped,
//!   in-flight tasks finish) or `stopped`.
//! - `GET /metrics`: the Prometheus metrics.
//!
//! The SDK's Prometheus exporter serves `/metrics` and nothing else, and does not give access to
//! its registry; so it runs on a loopback port of its own (`127.0.0.1`, any free port) and this
//! server, on the metrics address, answers `/metrics` with what the exporter answers (status,
//! content type and body as they are).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use temporalio_client::Client;
use temporalio_common::protos::temporal::api::workflowservice::v1::GetSystemInfoRequest;

/// How often a polling worker checks that Temporal answers (and how long it waits for it).
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting to Temporal (or starting a local dev server).
    Connecting,
    /// Connected; the SDK worker is being built and started.
    Starting,
    /// The poll loop runs.
    Polling,
    /// A shutdown signal arrived: polling stopped, in-flight tasks finish.
    Draining,
    /// The worker stopped.
    Stopped,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    since: Instant,
    /// The last probe's error, and since when probes fail.
    unreachable: Option<(String, Instant)>,
    /// What `/readyz` shows when ready (mode, task queues).
    detail: Value,
}

/// The worker's health, shared by the worker and the HTTP server.
#[derive(Debug)]
pub struct Health {
    state: Mutex<Inner>,
}

impl Health {
    /// A worker that is connecting.
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            state: Mutex::new(Inner {
                phase: Phase::Connecting,
                since: Instant::now(),
                unreachable: None,
                detail: json!({}),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves to `phase` (never back from draining or stopped).
    pub fn set_phase(&self, phase: Phase) {
        let mut s = self.lock();
        let settled = matches!(s.phase, Phase::Draining | Phase::Stopped);
        if s.phase != phase && (!settled || phase == Phase::Stopped) {
            s.phase = phase;
            s.since = Instant::now();
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// What `/readyz` shows besides its status when ready.
    pub fn set_detail(&self, detail: Value) {
        self.lock().detail = detail;
    }

    /// The outcome of a probe of Temporal.
    pub fn set_probe(&self, outcome: Result<(), String>) {
        let mut s = self.lock();
        s.unreachable = match (outcome, s.unreachable.take()) {
            (Ok(()), _) => None,
            (Err(e), Some((_, since))) => Some((e, since)),
            (Err(e), None) => Some((e, Instant::now())),
        };
    }

    /// Ready or not, and the JSON answer of `/readyz`.
    pub fn readiness(&self) -> (bool, Value) {
        let s = self.lock();
        let secs = s.since.elapsed().as_secs();
        let not =
            |status: &str, reason: String| (false, json!({"status": status, "reason": reason}));
        match s.phase {
            Phase::Connecting => not(
                "connecting",
                format!("connecting to Temporal (for {secs} s)"),
            ),
            Phase::Starting => not(
                "starting",
                "connected to Temporal; the worker is starting".into(),
            ),
            Phase::Polling => match &s.unreachable {
                Some((e, since)) => not(
                    "unreachable",
                    format!(
                        "Temporal does not answer (for {} s): {e}",
                        since.elapsed().as_secs()
                    ),
                ),
                None => {
                    let mut v = json!({"status": "ready"});
                    if let (Value::Object(m), Value::Object(d)) = (&mut v, &s.detail) {
                        m.extend(d.clone());
                    }
                    (true, v)
                }
            },
            Phase::Draining => not(
                "draining",
                format!("shutting down (for {secs} s): polling stopped, in-flight tasks finish"),
            ),
            Phase::Stopped => not("stopped", "the worker stopped".into()),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    health: Arc<Health>,
    /// The SDK's exporter (`http://127.0.0.1:PORT/metrics`).
    metrics: Option<String>,
    http: reqwest::Client,
}

/// Serves `/healthz`, `/readyz` and (with the SDK exporter's loopback address) `/metrics` on
/// `addr`; returns the address bound.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    exporter: Option<SocketAddr>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics and health on {addr}"))?;
    let bound = listener.local_addr()?;
    let ctx = Ctx {
        health,
        metrics: exporter.map(|a| format!("http://{a}/metrics")),
        // The exporter is on loopback: never through a proxy from the environment.
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ctx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics and health server stopped: {e}");
        }
    });
    Ok(bound)
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "alive"})).into_response()
}

async fn readyz(State(ctx): State<Ctx>) -> Response {
    let (ready, body) = ctx.health.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let Some(url) = &ctx.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let answer = async {
        let r = ctx.http.get(url).send().await?;
        let status = r.status().as_u16();
        let kind = r.headers().get(header::CONTENT_TYPE).cloned();
        let body = r.bytes().await?;
        anyhow::Ok((status, kind, body))
    };
    match answer.await {
        Ok((status, kind, body)) => {
            let mut resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                body,
            )
                .into_response();
            if let Some(k) = kind {
                resp.headers_mut().insert(header::CONTENT_TYPE, k);
            }
            resp
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the SDK's metrics exporter did not answer: {e:#}\n"),
        )
            .into_response(),
    }
}

/// Checks every [`PROBE_EVERY`] that Temporal answers (`GetSystemInfo`), while the worker polls.
pub async fn probe(client: Client, health: Arc<Health>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        match health.phase() {
            Phase::Polling => {}
            Phase::Draining | Phase::Stopped => return,
            Phase::Connecting | Phase::Starting => continue,
        }
        let mut svc = client.connection().workflow_service();
        let call = svc.get_system_info(tonic_request(GetSystemInfoRequest::default()));
        let outcome = match tokio::time::timeout(PROBE_EVERY, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!(
                "no answer to GetSystemInfo within {} s",
                PROBE_EVERY.as_secs()
            )),
        };
        health.set_probe(outcome);
    }
}

fn tonic_request<T>(m: T) -> temporalio_client::tonic::Request<T> {
    temporalio_client::tonic::Request::new(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_polling_and_answering_and_never_again_once_draining() {
        let h = Health::new();
        assert_eq!(h.readiness().1["status"], "connecting");
        h.set_phase(Phase::Starting);
        assert!(!h.readiness().0);
        h.set_detail(json!({"mode": "both"}));
        h.set_phase(Phase::Polling);
        let (ready, v) = h.readiness();
        assert!(ready);
        assert_eq!(v, json!({"status": "ready", "mode": "both"}));
        h.set_probe(Err("Unavailable: down".into()));
        let (ready, v) = h.readiness();
        assert!(!ready);
        assert_eq!(v["status"], "unreachable");
        assert!(v["reason"].as_str().unwrap().contains("down"), "{v}");
        h.set_probe(Ok(()));
        assert!(h.readiness().0);
        h.set_phase(Phase::Draining);
        assert_eq!(h.readiness().1["status"], "draining");
        // A worker that drains never becomes ready again.
        h.set_phase(Phase::Polling);
        assert_eq!(h.readiness().1["status"], "draining");
        h.set_phase(Phase::Stopped);
        assert_eq!(h.readiness().1["status"], "stopped");
    }

    #[tokio::test]
    async fn the_server_answers_health_readiness_and_passes_metrics_through() {
        // A stand-in for the SDK's exporter.
        let exporter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let exporter_addr = exporter.local_addr().unwrap();
        let app = Router::new().route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    "temporal_up 1\n",
                )
            }),
        );
        tokio::spawn(async move { axum::serve(exporter, app).await });
        let h = Health::new();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            h.clone(),
            Some(exporter_addr),
        )
        .await
        .unwrap();
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| {
            let (c, url) = (c.clone(), format!("http://{addr}{path}"));
            async move {
                let r = c.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let kind = r
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string());
                (status, kind, r.text().await.unwrap())
            }
        };
        let (s, _, body) = get("/healthz").await;
        assert_eq!((s, body.as_str()), (200, r#"{"status":"alive"}"#));
        let (s, _, body) = get("/readyz").await;
        assert_eq!(s, 503);
        assert!(body.contains("connecting"), "{body}");
        h.set_phase(Phase::Polling);
        assert_eq!(get("/readyz").await.0, 200);
        h.set_phase(Phase::Draining);
        let (s, _, body) = get("/readyz").await;
        assert_eq!(s, 503);
        assert!(body.contains("draining"), "{body}");
        let (s, kind, body) = get("/metrics").await;
        assert_eq!((s, body.as_str()), (200, "temporal_up 1\n"));
        assert_eq!(kind.as_deref(), Some("text/plain; version=0.0.4"));
        assert_eq!(get("/nothing").await.0, 404);
    }
}
