//! Secure defaults of the worker's HTTP servers and secrets, with the real binary: the codec server
//! refuses an open address without a token and serves the namespace routes the CLI and the UI call,
//! with CORS for the UI only; the ingress's body, rate and time limits; and the local dev server that
//! the worker starts inherits none of its secrets.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::{Env, WorkerProc, bin, ensure_eq};

/// Sends `head` (request line and headers, without the blank line), then `body` in two halves with
/// `pause` between them, over a plain TCP connection; returns the status and the whole answer.
async fn raw(
    addr: &str,
    head: &str,
    body: &[u8],
    pause: Duration,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let (a, b) = body.split_at(body.len() / 2);
    s.write_all(a).await?;
    tokio::time::sleep(pause).await;
    let _ = s.write_all(b).await; // the server may have answered and closed already
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP answer: {text:?}"))?;
    Ok((status, text))
}

/// `host:port` of an `http://host:port[/...]` URL, with an unspecified host (`0.0.0.0`) as 127.0.0.1.
fn host_port(url: &str) -> String {
    let rest = url.trim_start_matches("http://");
    let hp = rest.split('/').next().unwrap_or(rest);
    hp.replace("0.0.0.0", "127.0.0.1")
}

/// The codec server on an address that is not a loopback one: refused at start without a token, and
/// with one, served to callers that present it, on `/{namespace}/decode` too (what `temporal ...
/// --codec-endpoint http://host/NAMESPACE` calls), with CORS for the UI's origins only.
pub async fn the_codec_server_needs_a_token_off_loopback_and_serves_the_namespace_routes(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("{}-codec-open", env.task_queue);
    let refused = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-codec-open-refused",
        &["--compress", "--codec-server", "0.0.0.0:0"],
    )
    .await;
    match refused {
        Ok(w) => {
            w.stop().await;
            bail!("the worker served the codec endpoints on 0.0.0.0 without a token");
        }
        Err(e) if format!("{e:#}").contains("--codec-server-token-env") => {}
        Err(e) => bail!("the worker failed, but without naming --codec-server-token-env: {e:#}"),
    }
    let token = format!("codec-token-{}", env.tag);
    let w = WorkerProc::start_env(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-codec-open",
        &[
            "--compress",
            "--codec-server",
            "0.0.0.0:0",
            "--codec-server-token-env",
            "E2E_CODEC_TOKEN",
        ],
        "debug",
        &[("E2E_CODEC_TOKEN", &token)],
    )
    .await?;
    let url = w
        .ready_field("codec_server")
        .ok_or_else(|| anyhow::anyhow!("no codec server address in the worker's log"))?;
    let base = format!("http://{}", host_port(&url));
    let http = reqwest::Client::new();
    // A compressed payload, through the namespace route; decoded back by every route.
    let big = format!("[{}]", vec!["\"the same words again\""; 500].join(","));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let plain = json!({"payloads": [{"metadata": {"encoding": b64.encode("json/plain")}, "data": b64.encode(&big)}]});
    let post = |path: &str, auth: Option<&str>, origin: Option<&str>, body: &Value| {
        let mut r = http.post(format!("{base}{path}")).json(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        async move {
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            let acao = resp
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, acao, v))
        }
    };
    let bearer = format!("Bearer {token}");
    let (status, _, v) = post("/default/decode", None, None, &plain).await?;
    ensure_eq!(
        (status, v["error"].as_str()),
        (401, Some("missing or wrong Authorization"))
    );
    let (status, _, _) = post("/default/encode", Some("Bearer wrong"), None, &plain).await?;
    ensure_eq!(status, 401);
    let (status, _, enc) = post("/default/encode", Some(&bearer), None, &plain).await?;
    ensure_eq!(status, 200);
    if !enc.to_string().contains(&b64.encode("binary/zstd")) {
        bail!("not compressed: {enc}");
    }
    for path in ["/decode", "/default/decode", "/e2e-import/decode"] {
        let (status, _, dec) = post(path, Some(&token), None, &enc).await?;
        ensure_eq!((path, status), (path, 200));
        ensure_eq!(dec, plain);
    }
    // CORS: the UI's origins get their origin back; another origin is refused, without CORS headers.
    for origin in ["http://localhost:8233", "http://127.0.0.1:8233"] {
        let pre = http
            .request(reqwest::Method::OPTIONS, format!("{base}/default/decode"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, x-namespace, authorization",
            )
            .send()
            .await?;
        ensure_eq!(pre.status().as_u16(), 200);
        ensure_eq!(
            pre.headers()
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some(origin)
        );
        let (status, acao, _) = post("/default/decode", Some(&bearer), Some(origin), &enc).await?;
        ensure_eq!((status, acao.as_deref()), (200, Some(origin)));
    }
    let (status, acao, v) = post(
        "/default/decode",
        Some(&bearer),
        Some("http://evil.example"),
        &enc,
    )
    .await?;
    ensure_eq!((status, acao), (403, None));
    if !v["error"]
        .as_str()
        .unwrap_or_default()
        .contains("--codec-cors-origin")
    {
        bail!("the refusal does not say how to allow an origin: {v}");
    }
    // A body over the limit (4 MiB by default).
    let huge = json!({"payloads": [{"metadata": {}, "data": b64.encode(vec![b'x'; 3_500_000])}]});
    let (status, _, v) = post("/default/decode", Some(&bearer), None, &huge).await?;
    ensure_eq!(status, 413);
    if !v["error"]
        .as_str()
        .unwrap_or_default()
        .contains("4194304 bytes")
    {
        bail!("the 413 does not give the limit: {v}");
    }
    // The CLI, with the namespace in the endpoint's path, decodes a history through it.
    let id = env.id("codec-open");
    let wid = ops::workflow_id("User", &id);
    let secret = format!("NamespaceRoute-{}", env.tag);
    let zstd_client = stateful_client::connect::ConnectArgs {
        address: Some(env.address.clone()),
        namespace: Some("default".into()),
        compress: true,
        ..Default::default()
    }
    .resolve()?
    .connect("e2e-codec-open")
    .await?;
    let mut data = serde_json::Map::new();
    data.insert("id".into(), json!(id));
    data.insert("name".into(), json!(secret));
    data.insert("padding".into(), json!("compressible text ".repeat(200)));
    ops::start(
        &zstd_client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "data": Value::Object(data)}),
    )
    .await?;
    stateful_tests::query_until(env, &wid, "status", |v| v == "running").await?;
    let out = tokio::process::Command::new(&env.cli)
        .args(["workflow", "show", "--workflow-id", &wid])
        .args(["--address", &env.address, "--namespace", "default"])
        .args(["--codec-endpoint", &format!("{base}/default")])
        .args(["--codec-auth", &bearer, "--output", "json"])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "temporal workflow show --codec-endpoint {base}/default failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut shown = String::from_utf8_lossy(&out.stdout).to_string();
    for piece in shown.clone().split('"') {
        if let Ok(bytes) = b64.decode(piece) {
            shown.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    if !shown.contains(&secret) {
        bail!("temporal workflow show did not decode the history through /default/decode");
    }
    ops::signal(&env.client, &wid, "cancel", None).await?;
    w.stop().await;
    Ok(())
}

/// The ingress's limits: the shared worker's default body limit (2 MiB), and, on a worker of its own
/// with a low rate and a short time limit, 429 with `Retry-After` past the burst and 408 for a body
/// that does not arrive in time.
pub async fn the_ingress_refuses_large_bodies_floods_and_slow_bodies(
    env: &Env,
) -> anyhow::Result<()> {
    let (base, token) = &env.ingress;
    let http = reqwest::Client::new();
    let id = env.id("ingress-limits");
    let huge = format!(
        "{{\"id\": \"{id}\", \"blob\": \"{}\"}}",
        "x".repeat(3 * 1024 * 1024)
    );
    let r = http
        .post(format!("{base}/User/{id}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await?;
    ensure_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await?;
    if !v["error"]
        .as_str()
        .unwrap_or_default()
        .contains("2097152 bytes")
    {
        bail!("the 413 does not give the limit: {v}");
    }
    // Nothing was started.
    if ops::query(&env.client, &ops::workflow_id("User", &id), "status")
        .await
        .is_ok()
    {
        bail!("a refused body started a workflow");
    }
    // A worker of its own: 1 request a second, bursts of 2, 1 s per request.
    let ingress_token = format!("limits-{}", env.tag);
    let w = WorkerProc::start_env(
        &env.address,
        &format!("{}-ingress-limits", env.task_queue),
        &env.log_dir,
        "worker-ingress-limits",
        &[
            "--ingress",
            "127.0.0.1:0",
            "--ingress-token-env",
            "E2E_LIMITS_TOKEN",
            "--ingress-rate-limit",
            "1",
            "--ingress-rate-burst",
            "2",
            "--http-request-timeout",
            "1",
        ],
        "debug",
        &[("E2E_LIMITS_TOKEN", &ingress_token)],
    )
    .await?;
    let base = w
        .ready_field("ingress")
        .ok_or_else(|| anyhow::anyhow!("no ingress address in the worker's log"))?;
    let addr = host_port(&base);
    // A body sent half, then the rest 2 s later: 408.
    let head = format!(
        "POST /v1/User/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ingress_token}\r\nContent-Type: application/json\r\nContent-Length: 20"
    );
    let (status, text) = raw(
        &addr,
        &head,
        b"{\"name\": \"slowly...\"",
        Duration::from_secs(2),
    )
    .await?;
    ensure_eq!(status, 408);
    if !text.contains("did not arrive within 1 s") {
        bail!("the 408 does not say why: {text}");
    }
    // A flood: 8 requests at once; the bucket (maybe less than full after the request above) lets
    // a few through, at most one more is held back a second, and the rest are refused with 429.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let get = |i: usize| {
        let r = http
            .get(format!("{base}/User/{id}-flood-{i}"))
            .bearer_auth(&ingress_token);
        async move {
            let resp = r.send().await?;
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            anyhow::Ok((resp.status().as_u16(), retry))
        }
    };
    let answers = futures::future::join_all((0..8).map(get)).await;
    let answers: Vec<(u16, Option<String>)> = answers.into_iter().collect::<Result<_, _>>()?;
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    let passed = answers.len() - refused.len();
    if !(2..=4).contains(&passed) || refused.iter().any(|(_, r)| r.is_none()) {
        bail!("expected 2 or 3 requests through and the rest 429 with Retry-After: {answers:?}");
    }
    w.stop().await;
    Ok(())
}

/// The local dev server that the worker starts inherits none of the worker's secrets: the codec keys,
/// the ingress token (in a variable named by `--ingress-token-env`), Temporal's gRPC headers and the
/// CLI's codec credentials (seen through a `temporal` wrapper that writes its environment down).
pub async fn the_dev_server_started_by_the_worker_inherits_no_secret(
    env: &Env,
) -> anyhow::Result<()> {
    use worker::devserver::{free_port, reachable};
    if reachable("localhost:7233") {
        bail!(
            "something listens on localhost:7233, so the worker would use it instead of starting its own dev server: stop it to run this test"
        );
    }
    let dir = stateful_tests::root().join(format!("target/e2e/no-secrets-{}", env.tag));
    std::fs::create_dir_all(&dir)?;
    let dump = dir.join("dev-server.env");
    let wrapper = dir.join("temporal");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&wrapper)?;
        write!(
            f,
            "#!/bin/sh\nenv > '{}'\nexec '{}' \"$@\"\n",
            dump.display(),
            env.cli.display()
        )?;
    }
    use base64::Engine;
    let keys = format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    );
    let secrets = [
        ("STATEFUL_CODEC_KEYS", keys.clone()),
        ("E2E_SECRET_INGRESS", format!("ingress-secret-{}", env.tag)),
        (
            "TEMPORAL_GRPC_META_X_E2E_SECRET",
            format!("grpc-secret-{}", env.tag),
        ),
        (
            "TEMPORAL_CODEC_AUTH",
            format!("codec-auth-secret-{}", env.tag),
        ),
    ];
    let (port, ui, metrics) = (free_port()?, free_port()?, free_port()?);
    let log = env.log_dir.join("worker-no-secrets.log");
    let out = std::fs::File::create(&log)?;
    let mut child = tokio::process::Command::new(bin("worker")?)
        .arg("--schema")
        .arg(stateful_tests::root().join("tests/fixtures/schema.yaml"))
        .arg("--temporal-cli")
        .arg(&wrapper)
        .args(["--dev-server-port", &port.to_string()])
        .args(["--dev-server-ui-port", &ui.to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--task-queue", "no-secrets"])
        .args([
            "--ingress",
            "127.0.0.1:0",
            "--ingress-token-env",
            "E2E_SECRET_INGRESS",
        ])
        .env_remove("TEMPORAL_ADDRESS")
        .env_remove("TEMPORAL_NAMESPACE")
        .env_remove("TEMPORAL_PROFILE")
        .env_remove("TEMPORAL_CONFIG_FILE")
        .env("HOME", &dir)
        .envs(secrets.iter().map(|(k, v)| (*k, v.as_str())))
        .env("E2E_NOT_A_SECRET", "kept")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()?;
    let ready = stateful_tests::eventually(Duration::from_secs(90), || async {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        if t.contains("worker ready") {
            Ok(t)
        } else {
            bail!("no `worker ready` in the worker log yet:\n{t}")
        }
    })
    .await;
    // Stop it (SIGTERM: it stops its dev server too) whatever happened.
    if let Some(pid) = child.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let ready = ready?;
    if !ready.contains("started a local dev server") || !ready.contains("encryption=aes-256-gcm") {
        bail!("the worker did not start a dev server with encryption on:\n{ready}");
    }
    let seen = std::fs::read_to_string(&dump)
        .with_context(|| format!("the temporal wrapper did not write {}", dump.display()))?;
    if !seen.contains("E2E_NOT_A_SECRET=kept") {
        bail!("the dev server's environment is not the worker's at all:\n{seen}");
    }
    for (name, value) in &secrets {
        if seen.contains(name) || seen.contains(value.as_str()) {
            bail!("the dev server inherited {name}");
        }
    }
    Ok(())
}
