//! OpenTelemetry tracing: a worker of its own and the starter, both pointed by the standard
//! `OTEL_*` variables at an OTLP/HTTP (JSON) receiver the test serves on a loopback port. One trace
//! spans the start of a root → child → grandchild tree; a change sent to the root is another trace
//! that reaches the grandchild; no span holds the token; the histories recorded with tracing on
//! replay with the tracing plugin and without it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::history::{RUNNING, raw_history, status_of};
use stateful_tests::{Env, WorkerProc, eventually, query_until, starter_env};
use stateful_workflows::StatefulWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::opentelemetry::OpenTelemetryPlugin;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// An OTLP/HTTP receiver (JSON encoding): keeps every span of every `POST /v1/traces`, and the raw
/// bodies.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<String>>>,
}

/// One received span, flattened: its service, name, ids, and attributes as strings.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn workflow_id(&self) -> Option<&str> {
        self.attr("temporalWorkflowID")
    }
}

/// The first string in an OTLP `AnyValue` (`{"stringValue": ...}`, whatever the nesting).
fn string_in(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.values().find_map(string_in),
        _ => None,
    }
}

fn attributes(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["key"].as_str()?.to_string(), string_in(&a["value"])?)))
        .collect()
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> axum::Json<Value> {
    r.bodies
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).to_string());
    axum::Json(json!({}))
}

impl Receiver {
    /// Serves on 127.0.0.1 (any free port); returns its base URL.
    async fn start() -> anyhow::Result<(Receiver, String)> {
        let r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok((r, base))
    }

    fn raw(&self) -> String {
        self.bodies.lock().unwrap().join("\n")
    }

    fn spans(&self) -> anyhow::Result<Vec<Span>> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let v: Value = serde_json::from_str(body)
                .map_err(|e| anyhow!("an OTLP body is not JSON ({e}): {body}"))?;
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let service = attributes(&rs["resource"]["attributes"])
                    .into_iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                        out.push(Span {
                            service: service.clone(),
                            name: text("name"),
                            trace: text("traceId"),
                            id: text("spanId"),
                            parent: text("parentSpanId"),
                            attrs: attributes(&s["attributes"]),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

async fn ended(env: &Env, wid: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(60), || async {
        match status_of(env, wid).await? {
            RUNNING => bail!("{wid} still runs"),
            _ => Ok(()),
        }
    })
    .await
}

async fn starter_ok(env: &Env, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let (ok, out, err) = starter_env(env, args, envs).await?;
    if !ok {
        bail!("starter {args:?} failed: {out}{err}");
    }
    Ok(())
}

/// The worker and the starter export over OTLP/HTTP (JSON) to the test's receiver, as they end
/// (the starter after its command, the worker on SIGTERM). The spans of the
/// root's, the child's and the grandchild's runs are in the trace of the starter's `start`; a
/// change signalled to the root is the trace of the starter's `signal`, and the signals it causes
/// reach the child and the grandchild in it; the token is in no span. The histories replay with the
/// tracing plugin and without it.
pub async fn one_trace_spans_a_tree_and_a_change_travels_in_its_senders_trace(
    env: &Env,
) -> anyhow::Result<()> {
    let (rx, base) = Receiver::start().await?;
    // The batch exporter's default delay (5 s) and more: what arrives was exported when the
    // processes ended (the starter after each command, the worker on SIGTERM).
    let otel = |service: &'static str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_string()),
            ("OTEL_SERVICE_NAME", service.to_string()),
        ]
    };
    let mut worker_env = otel("e2e-worker");
    worker_env.push(("OTEL_BSP_SCHEDULE_DELAY", "600000".to_string()));
    let worker_env: Vec<(&str, &str)> = worker_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tq = format!("tracing-{}", env.tag);
    let w = WorkerProc::start_env(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-tracing",
        &[],
        "debug",
        &worker_env,
    )
    .await?;
    if !std::fs::read_to_string(&w.log)?.contains("tracing on") {
        bail!("the worker did not say that tracing is on");
    }
    let secret = format!("SECRET-{}-traced", env.tag);
    let mut starter_vars = otel("e2e-starter");
    starter_vars.push(("TRACED_TOKEN", secret.clone()));
    let starter_vars: Vec<(&str, &str)> =
        starter_vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let u = env.id("traced");
    let (l, p) = (format!("{u}-l"), format!("{u}-p"));
    let (root, listing, photo) = (
        ops::workflow_id("User", &u),
        ops::workflow_id("Listing", &l),
        ops::workflow_id("Photo", &p),
    );
    let data = json!({"id": u, "listings": [{"id": l, "user": u,
        "photos": [{"id": p, "listing": l}]}]});
    starter_ok(
        env,
        &[
            "--task-queue",
            &tq,
            "start",
            "--entity",
            "User",
            "--id",
            &u,
            "--data",
            &data.to_string(),
            "--token-env",
            "TRACED_TOKEN",
        ],
        &starter_vars,
    )
    .await?;
    query_until(env, &photo, "status", |v| v == "running").await?;

    // A change to the grandchild's part, sent to the root.
    let change = json!({"data": {"id": u, "listings": [{"id": l, "user": u,
        "photos": [{"id": p, "listing": l, "caption": "traced"}]}]}});
    starter_ok(
        env,
        &["signal", &root, "update", &change.to_string()],
        &starter_vars,
    )
    .await?;
    query_until(env, &photo, "state", |v| {
        v["Photo"][p.as_str()]["caption"] == "traced"
    })
    .await?;

    // The tree ends (a cascade): every run's span ends, and is exported.
    starter_ok(env, &["signal", &root, "cancel"], &starter_vars).await?;
    for wid in [&root, &listing, &photo] {
        ended(env, wid).await?;
    }
    // The worker's spans are exported as it stops.
    let status = w.terminate(Duration::from_secs(30)).await?;
    if !status.success() {
        bail!("the worker exited with {status} on SIGTERM");
    }

    let run_of = |spans: &[Span], wid: &str| -> Option<Span> {
        spans
            .iter()
            .find(|s| s.name == "RunWorkflow:StatefulWorkflow" && s.workflow_id() == Some(wid))
            .cloned()
    };
    let (spans, start_trace) = eventually(Duration::from_secs(30), || async {
        let spans = rx.spans()?;
        let start = spans
            .iter()
            .find(|s| s.name == "starter start" && s.service == "e2e-starter")
            .ok_or_else(|| anyhow!("no `starter start` span yet"))?
            .clone();
        for wid in [&root, &listing, &photo] {
            if run_of(&spans, wid).is_none() {
                bail!("no RunWorkflow span of {wid} yet");
            }
        }
        Ok((spans, start.trace))
    })
    .await?;

    // What was received, for a look when this fails.
    std::fs::write(env.log_dir.join("tracing-spans.json"), rx.raw())?;
    // 1. The start: the starter's span, its StartWorkflow call, and the three runs in one trace.
    let client_start = spans
        .iter()
        .find(|s| s.name == "StartWorkflow:StatefulWorkflow" && s.workflow_id() == Some(&root))
        .ok_or_else(|| anyhow!("no StartWorkflow span of the starter"))?;
    if client_start.trace != start_trace || client_start.service != "e2e-starter" {
        bail!("the starter's StartWorkflow span is not in its command's trace: {client_start:?}");
    }
    for wid in [&root, &listing, &photo] {
        let run = run_of(&spans, wid).expect("found above");
        if run.trace != start_trace || run.service != "e2e-worker" {
            bail!(
                "the run of {wid} is not in the start's trace {start_trace}: {run:?}\nall spans: {spans:#?}"
            );
        }
    }
    // Each child's run is a child of its parent's StartChildWorkflow span.
    for (parent, child) in [(&root, &listing), (&listing, &photo)] {
        let run = run_of(&spans, child).expect("found above");
        let start = spans
            .iter()
            .find(|s| s.id == run.parent)
            .ok_or_else(|| anyhow!("the parent span of {child}'s run was not received"))?;
        if start.name != "StartChildWorkflow:StatefulWorkflow"
            || start.workflow_id() != Some(parent.as_str())
        {
            bail!("{child}'s run is not under {parent}'s child start: {start:?}");
        }
    }

    // 2. The change: the starter's `signal` command is a trace of its own, which the signals the
    // change caused follow to the child and the grandchild.
    let signal_cmd = spans
        .iter()
        .find(|s| {
            s.name == "starter signal"
                && spans
                    .iter()
                    .any(|c| c.parent == s.id && c.name == "SignalWorkflow:update")
        })
        .ok_or_else(|| anyhow!("no `starter signal` span sending the update"))?;
    let journey: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace == signal_cmd.trace)
        .collect();
    let names: Vec<String> = journey
        .iter()
        .map(|s| format!("{} ({})", s.name, s.workflow_id().unwrap_or("-")))
        .collect();
    // Who handled a signal sent by `sender` in this trace.
    let handled_from = |sender: &str| {
        journey.iter().any(|out| {
            out.name.starts_with("SignalWorkflow:")
                && out.workflow_id() == Some(sender)
                && journey
                    .iter()
                    .any(|h| h.parent == out.id && h.name.starts_with("HandleSignal:"))
        })
    };
    for sender in [&root, &listing] {
        if !handled_from(sender) {
            bail!(
                "no signal from {sender} handled in the change's trace {}: {names:?}",
                signal_cmd.trace
            );
        }
    }

    // 3. No token anywhere.
    if rx.raw().contains(&secret) {
        bail!("an exported span holds the token");
    }

    // 4. The histories hold the trace header, and replay with the tracing plugin and without it
    // (and in the final `replay::replay_all` of a whole run).
    let mut histories = Vec::new();
    for (wid, name) in [
        (&root, "tracing-root"),
        (&listing, "tracing-child"),
        (&photo, "tracing-grandchild"),
    ] {
        let raw = raw_history(&env.client, wid).await?;
        if !raw.contains("_tracer-data") {
            bail!("the history of {wid} has no `_tracer-data` header");
        }
        histories.push((wid.clone(), raw));
        crate::replay::save_from(&env.client, wid, name).await?;
    }
    // The replayer's futures are not `Send`: on a thread of their own.
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let traced = WorkflowReplayer::new(
                WorkflowReplayerOptions::new()
                    .register_workflow::<StatefulWorkflow>()?
                    .worker_plugin(OpenTelemetryPlugin::builder().build())
                    .build(),
            )?;
            let untraced = WorkflowReplayer::new(
                WorkflowReplayerOptions::new()
                    .register_workflow::<StatefulWorkflow>()?
                    .build(),
            )?;
            for (wid, raw) in histories {
                for (replayer, how) in [(&traced, "with"), (&untraced, "without")] {
                    replayer
                        .replay_workflow(WorkflowHistory::from_json(raw.as_bytes())?)
                        .await
                        .map_err(|e| {
                            anyhow!("{wid} does not replay {how} the tracing plugin: {e:#}")
                        })?;
                }
            }
            anyhow::Ok(())
        })
    })
    .await??;
    Ok(())
}
