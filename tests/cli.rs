//! The built binaries, used the way a user does: the `temporal` CLI against a workflow run by the
//! worker binary, and the `starter` binary.

use std::process::Command;

use anyhow::bail;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::{Env, bin, ensure_eq, query_until};

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}):\n{}\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn temporal(env: &Env, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new(&env.cli).args(args).args([
        "--address",
        &env.address,
        "--namespace",
        "default",
    ]))
}

fn starter(env: &Env, args: &[&str]) -> Command {
    let mut c = Command::new(bin("starter").expect("starter is built"));
    c.args([
        "--address",
        &env.address,
        "--namespace",
        "default",
        "--task-queue",
        &env.task_queue,
    ])
    .args(args);
    c
}

pub async fn temporal_cli_drives_a_workflow(env: &Env) -> anyhow::Result<()> {
    let id = env.id("cli");
    let l1 = format!("{id}-l1");
    let wid = format!("User-{id}");
    let input = json!({"id": id, "entityName": "User", "data": {"id": id, "name": "Ann", "listings": [{"id": l1, "user": id}]}});
    temporal(
        env,
        &[
            "workflow",
            "start",
            "--type",
            "StatefulWorkflow",
            "--task-queue",
            &env.task_queue,
            "--workflow-id",
            &wid,
            "--input",
            &input.to_string(),
        ],
    )?;
    temporal(
        env,
        &[
            "workflow",
            "signal",
            "--workflow-id",
            &wid,
            "--name",
            "update",
            "--input",
            &json!({"data": {"id": l1, "name": "Loft"}, "entityName": "Listing"}).to_string(),
        ],
    )?;
    query_until(env, &wid, "state", |v| v["Listing"][&l1]["name"] == "Loft").await?;
    let out = temporal(
        env,
        &[
            "workflow",
            "query",
            "--workflow-id",
            &wid,
            "--name",
            "data",
            "-o",
            "json",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    let data = v["queryResult"][0].clone();
    ensure_eq!(
        data,
        json!({"id": id, "name": "Ann", "listings": [{"id": l1, "user": id, "name": "Loft"}]})
    );
    let out = temporal(
        env,
        &[
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            &wid,
            "--name",
            "update",
            "--input",
            &json!({"data": {"id": id, "name": "Bea"}}).to_string(),
        ],
    )?;
    if !out.contains("version") {
        bail!("the update's answer lacks the version: {out}");
    }
    // Zero-argument control signals work from the CLI.
    temporal(
        env,
        &[
            "workflow",
            "signal",
            "--workflow-id",
            &wid,
            "--name",
            "pause",
        ],
    )?;
    query_until(env, &wid, "status", |v| v == "paused").await?;
    Ok(())
}

pub async fn starter_starts_signals_queries_and_updates(env: &Env) -> anyhow::Result<()> {
    let id = env.id("starter");
    let wid = format!("User-{id}");
    let data = json!({"id": id, "name": "Ann"}).to_string();
    let out = run(starter(
        env,
        &[
            "--json",
            "start",
            "--entity",
            "User",
            "--id",
            &id,
            "--data",
            &data,
            "--token-env",
            "E2E_TOKEN",
        ],
    )
    .env("E2E_TOKEN", "starter-secret"))?;
    let v: Value = serde_json::from_str(out.trim())?;
    ensure_eq!(v["workflowId"], json!(wid));
    run(&mut starter(
        env,
        &[
            "signal",
            &wid,
            "update",
            &json!({"data": {"id": id, "age": 3}}).to_string(),
        ],
    ))?;
    query_until(env, &wid, "data", |v| v["age"] == 3).await?;
    let out = run(&mut starter(
        env,
        &[
            "--json",
            "update",
            &wid,
            &json!({"data": {"id": id, "age": 4}}).to_string(),
        ],
    ))?;
    let v: Value = serde_json::from_str(out.trim())?;
    ensure_eq!(v["changed"], json!(1));
    let out = run(&mut starter(env, &["--json", "query", &wid, "apiToken"]))?;
    let v: Value = serde_json::from_str(out.trim())?;
    ensure_eq!(
        v["fingerprint"],
        json!(stateful_engine::fingerprint("starter-secret"))
    );
    // Rotation reads the token from stdin, never from an argument.
    let mut c = starter(env, &["signal", &wid, "apiToken", "--token-stdin"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"starter-secret-2\n")?;
    if !child.wait_with_output()?.status.success() {
        bail!("starter signal apiToken --token-stdin failed");
    }
    query_until(env, &wid, "apiToken", |v| v["rotations"] == 1).await?;
    let out = starter(env, &["signal", &wid, "apiToken", "inline-token"]).output()?;
    if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("--token-env") {
        bail!(
            "a token given as an argument was not refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A refused update is a failure with the reason, for scripts too.
    let out = starter(
        env,
        &[
            "update",
            &wid,
            &json!({"updates": {"Listing": {"x": {"a": 1}}}, "strategy": "$set"}).to_string(),
        ],
    )
    .output()?;
    if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("does not exist") {
        bail!(
            "a refused update did not fail with its reason: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub async fn starter_tree_shows_and_cancels_a_hierarchy(env: &Env) -> anyhow::Result<()> {
    let u = env.id("stree");
    let (l, p) = (format!("{u}-l"), format!("{u}-p"));
    let data =
        json!({"id": u, "listings": [{"id": l, "user": u, "photos": [{"id": p, "listing": l}]}]})
            .to_string();
    let wid = format!("User-{u}");
    run(starter(
        env,
        &[
            "start",
            "--entity",
            "User",
            "--id",
            &u,
            "--data",
            &data,
            "--token-env",
            "TREE_TOKEN",
        ],
    )
    .env("TREE_TOKEN", "tree-secret"))?;
    query_until(env, &format!("Photo-{p}"), "status", |v| v == "running").await?;
    let out = run(&mut starter(env, &["--json", "tree", &wid]))?;
    let t: Value = serde_json::from_str(out.trim())?;
    ensure_eq!(t["entityName"], json!("User"));
    ensure_eq!(
        t["children"][0]["workflowId"],
        json!(format!("Listing-{l}"))
    );
    ensure_eq!(
        t["children"][0]["children"][0]["workflowId"],
        json!(format!("Photo-{p}"))
    );
    ensure_eq!(
        t["children"][0]["children"][0]["apiToken"],
        json!(stateful_engine::fingerprint("tree-secret"))
    );
    let text = run(&mut starter(env, &["tree", &wid]))?;
    if !text.contains(&format!("  Listing {l} [running] v1")) || text.contains("tree-secret") {
        bail!("unexpected tree output:\n{text}");
    }
    let out = run(&mut starter(env, &["--json", "tree", &wid, "--cancel"]))?;
    let v: Value = serde_json::from_str(out.trim())?;
    ensure_eq!(v["cancelled"].as_array().map(Vec::len), Some(3));
    Ok(())
}

fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Three different free ports on 127.0.0.1 (held together while chosen, so never the same twice).
fn distinct_free_ports() -> anyhow::Result<(u16, u16, u16)> {
    let l: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let p = |i: usize| l[i].local_addr().map(|a| a.port());
    Ok((p(0)?, p(1)?, p(2)?))
}

pub async fn worker_binary_starts_a_dev_server_serves_metrics_and_stops_on_sigterm(
    env: &Env,
) -> anyhow::Result<()> {
    use worker::devserver::reachable;
    if reachable("localhost:7233") {
        bail!(
            "something listens on localhost:7233, so the worker would use it instead of starting its own dev server: stop it to run this test"
        );
    }
    let home = stateful_tests::root().join(format!("target/e2e/home-{}", env.tag));
    std::fs::create_dir_all(&home)?;
    let log = env.log_dir.join("worker-embedded.log");
    let wait_log = |needle: &'static str| {
        let log = log.clone();
        async move {
            stateful_tests::eventually(std::time::Duration::from_secs(60), || async {
                let t = std::fs::read_to_string(&log).unwrap_or_default();
                if t.contains(needle) {
                    Ok(t)
                } else {
                    bail!("no `{needle}` in the worker log yet:\n{t}")
                }
            })
            .await
        }
    };
    // The ports are chosen free, but another process (a parallel test, the dev server's own choice of
    // its internal ports) can take one before the dev server binds it: the worker then says the dev
    // server exited at start, with the server's reason, and we choose again (three attempts).
    let mut attempt = 1;
    let (mut child, port, ui, metrics, text) = loop {
        let (port, ui, metrics) = distinct_free_ports()?;
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin("worker")?)
            .args(["--schema"])
            .arg(stateful_tests::root().join("tests/fixtures/schema.yaml"))
            .arg("--temporal-cli")
            .arg(&env.cli)
            .args([
                "--dev-server-port",
                &port.to_string(),
                "--dev-server-ui-port",
                &ui.to_string(),
            ])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
                "--task-queue",
                "embedded",
            ])
            .env_remove("TEMPORAL_ADDRESS")
            .env_remove("TEMPORAL_NAMESPACE")
            .env_remove("TEMPORAL_PROFILE")
            .env_remove("TEMPORAL_CONFIG_FILE")
            .env("HOME", &home)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()?;
        // Ready, or the dev server's failure (no need to wait out the deadline then).
        let text = stateful_tests::eventually(std::time::Duration::from_secs(60), || async {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.contains("worker ready") || t.contains("the dev server exited at start") {
                Ok(t)
            } else {
                bail!("no `worker ready` in the worker log yet:\n{t}")
            }
        })
        .await?;
        if !text.contains("the dev server exited at start") {
            break (child, port, ui, metrics, text);
        }
        if attempt == 3 {
            bail!("the dev server did not start in three attempts; the last:\n{text}");
        }
        eprintln!(
            "  the dev server did not start (attempt {attempt}), choosing other ports:\n{text}"
        );
        attempt += 1;
    };
    if !text.contains("started a local dev server")
        || !text.contains(&format!("http://127.0.0.1:{ui}"))
    {
        bail!("the worker did not say it started a dev server, with the UI address:\n{text}");
    }
    // It works: a workflow runs on it.
    let c = stateful_tests::client(&format!("127.0.0.1:{port}")).await?;
    ops::start(
        &c,
        "embedded",
        "User-emb",
        json!({"id": "emb", "entityName": "User", "data": {"id": "emb"}}),
    )
    .await?;
    stateful_tests::eventually(std::time::Duration::from_secs(30), || async {
        let v = ops::query(&c, "User-emb", "status").await?;
        if v == "running" { Ok(()) } else { bail!("{v}") }
    })
    .await?;
    // Prometheus metrics.
    let m = http_get(&format!("127.0.0.1:{metrics}"), "/metrics")?;
    if !m.contains("200 OK") || !m.contains("temporal_") {
        bail!("no Prometheus metrics: {}", &m[..m.len().min(300)]);
    }
    // SIGTERM: a graceful stop that also stops the dev server it started.
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait()).await??;
    if !status.success() {
        bail!("the worker exited with {status} on SIGTERM");
    }
    wait_log("worker stopped").await?;
    stateful_tests::eventually(std::time::Duration::from_secs(10), || async {
        if reachable(&format!("127.0.0.1:{port}")) {
            bail!("the dev server still listens")
        } else {
            Ok(())
        }
    })
    .await?;
    Ok(())
}

/// `starter upsert`: update-with-start. It starts the entity's workflow (with its summary) and
/// applies the change in one call, answering the new version; on a running workflow it only
/// applies; a change the workflow refuses fails with the workflow's reason.
pub async fn starter_upsert_starts_applies_and_tells_refusals(env: &Env) -> anyhow::Result<()> {
    let id = env.id("upsert");
    let wid = format!("User-{id}");
    let first: Value = serde_json::from_str(&run(&mut starter(
        env,
        &[
            "--json",
            "upsert",
            "--entity",
            "User",
            "--id",
            &id,
            "--data",
            &json!({"id": id, "name": "Started"}).to_string(),
            &json!({"data": {"id": id, "age": 3}}).to_string(),
        ],
    ))?)?;
    ensure_eq!(first["workflowId"], json!(wid));
    let v1 = first["version"].as_u64().unwrap_or(0);
    if v1 == 0 || first["changed"].as_u64().unwrap_or(0) == 0 {
        bail!("upsert should answer the version it made: {first}");
    }
    // Both the start's data and the change are there when it answers.
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?,
        json!({"id": id, "name": "Started", "age": 3})
    );
    let run_id = stateful_tests::history::run_id_of(env, &wid).await?;
    let described: Value = serde_json::from_str(&temporal(
        env,
        &["workflow", "describe", "-w", &wid, "--output", "json"],
    )?)?;
    ensure_eq!(
        described["executionConfig"]["userMetadata"]["summary"],
        json!(format!("User {id}"))
    );
    // Running: the change is applied to the same run.
    let second = run(&mut starter(
        env,
        &[
            "upsert",
            "--entity",
            "User",
            "--id",
            &id,
            &json!({"data": {"id": id, "age": 4}}).to_string(),
        ],
    ))?;
    if !second.contains(&format!("applied to {wid}: version")) {
        bail!("upsert on a running workflow: {second}");
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?["age"],
        json!(4)
    );
    ensure_eq!(stateful_tests::history::run_id_of(env, &wid).await?, run_id);
    // Refused by the workflow (a listing whose child workflow id would be too long): exit code 1
    // with its reason, and nothing changed.
    let long = "y".repeat(1_000);
    let out = starter(
        env,
        &[
            "--json",
            "upsert",
            "--entity",
            "User",
            "--id",
            &id,
            &json!({"data": {"id": id, "listings": [{"id": long, "user": id}]}}).to_string(),
        ],
    )
    .output()?;
    let said: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let error = said["error"].as_str().unwrap_or_default();
    if out.status.success() || !error.starts_with("refused:") || !error.contains("shorten its id") {
        bail!(
            "a refused upsert: {} {said} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?,
        json!({"id": id, "name": "Started", "age": 4})
    );
    Ok(())
}
