//! Durable state operations: checkpoints and validation.

use anyhow::bail;
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::{Env, ensure_eq, query_until, starter};

pub async fn a_checkpoint_hands_the_state_to_a_new_run_with_its_checksum(
    env: &Env,
) -> anyhow::Result<()> {
    let id = env.id("checkpoint");
    let wid = ops::workflow_id("User", &id);
    let data =
        json!({"id": id, "name": "Ann", "listings": [{"id": format!("{id}-l1"), "user": id}]});
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": data}),
    )
    .await?;
    let before = query_until(env, &wid, "version", |v| v["version"].as_u64() >= Some(1)).await?;
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    let cps = query_until(env, &wid, "checkpoints", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await?;
    let cp = &cps[0];
    ensure_eq!(cp["checksum"], before["checksum"]);
    ensure_eq!(cp["version"], before["version"]);
    ensure_eq!(cp["reason"], json!("checkpoint"));
    let after = ops::query(&env.client, &wid, "version").await?;
    ensure_eq!(after["runs"], json!(2));
    ensure_eq!(after["checksum"], before["checksum"]);
    ensure_eq!(ops::query(&env.client, &wid, "data").await?, data);
    let memo = crate::workflow::memo_of(env, &wid).await?;
    let want = format!(
        "v{} {}",
        cp["version"],
        cp["checksum"].as_str().unwrap_or_default()
    );
    ensure_eq!(memo["checkpoint"], json!(want));
    // The audit log came along.
    let audit = ops::query(&env.client, &wid, "audit").await?;
    ensure_eq!(audit["changes"][0]["sources"], json!(["input"]));
    ensure_eq!(audit["checkpoints"].as_array().map(Vec::len), Some(1));
    let v = ops::query(&env.client, &wid, "validate").await?;
    ensure_eq!(v["ok"], json!(true));
    // The child kept running through the checkpoint: still one, same run.
    ensure_eq!(v["children"], json!(1));
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}

pub async fn starter_validate_checks_a_whole_tree(env: &Env) -> anyhow::Result<()> {
    let id = env.id("validate");
    let wid = ops::workflow_id("User", &id);
    let ls: Vec<String> = (0..2).map(|i| format!("{id}-l{i}")).collect();
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id, "listings": ls.iter().map(|l| json!({"id": l, "user": id, "photos": [{"id": format!("{l}-p"), "listing": l}]})).collect::<Vec<_>>()}}),
    )
    .await?;
    for l in &ls {
        query_until(env, &format!("Photo-{l}-p"), "status", |v| v == "running").await?;
    }
    let (ok, stdout, stderr) = starter(
        env,
        &[
            "--namespace",
            "default",
            "--json",
            "validate",
            &wid,
            "--tree",
        ],
    )
    .await?;
    let report: Value = serde_json::from_str(stdout.trim())?;
    if !ok || report["ok"] != json!(true) {
        bail!("validate failed: {report}\n{stderr}");
    }
    ensure_eq!(report["workflows"].as_array().map(Vec::len), Some(5));
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}

/// With the payload codec on, the raw history holds neither the token nor the entity's field values;
/// `temporal workflow show --codec-endpoint` (the worker's codec server) decodes it.
pub async fn the_payload_codec_keeps_tokens_and_data_out_of_the_raw_history(
    env: &Env,
) -> anyhow::Result<()> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys = format!(
        "old:{}\nk-{}:{}\n",
        b64.encode([7u8; 32]),
        env.tag,
        b64.encode(
            env.tag
                .as_bytes()
                .iter()
                .cycle()
                .take(32)
                .copied()
                .collect::<Vec<u8>>()
        )
    );
    let key_file = env.log_dir.join("codec-keys.txt");
    std::fs::write(&key_file, &keys)?;
    let tq = format!("{}-enc", env.task_queue);
    let key_path = key_file.display().to_string();
    let w = stateful_tests::WorkerProc::start_with(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-encrypted",
        &[
            "--codec-keys-file",
            &key_path,
            "--codec-server",
            "127.0.0.1:0",
        ],
        "debug",
    )
    .await?;
    let codec_url = w
        .ready_field("codec_server")
        .ok_or_else(|| anyhow::anyhow!("no codec server address in the worker's log"))?;
    let enc_client = stateful_client::connect::ConnectArgs {
        address: Some(env.address.clone()),
        namespace: Some("default".into()),
        codec_keys_file: Some(key_file.clone()),
        ..Default::default()
    }
    .resolve()?
    .connect("e2e-encrypted")
    .await?;
    let id = env.id("encrypted");
    let wid = ops::workflow_id("User", &id);
    let token = format!("ENC-TOKEN-{}", env.tag);
    let secret_value = format!("PlainTextName-{}", env.tag);
    ops::start(
        &enc_client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "apiToken": token, "data": {"name": secret_value}}),
    )
    .await?;
    ops::signal(
        &enc_client,
        &wid,
        "update",
        Some(&json!({"data": {"id": id, "note": format!("{secret_value}-2")}})),
    )
    .await?;
    let data = eventually_data(&enc_client, &wid, &secret_value).await?;
    ensure_eq!(data["name"], json!(secret_value));
    // The raw history, read without the codec.
    let raw = env
        .client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid.as_str())
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    let raw = String::from_utf8_lossy(&raw).to_string();
    let mut decoded = raw.clone();
    for piece in raw.split('"') {
        if let Ok(bytes) = b64.decode(piece) {
            decoded.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    for secret in [&token, &secret_value] {
        if decoded.contains(secret.as_str()) {
            bail!("the raw history holds `{secret}`");
        }
    }
    if !decoded.contains("binary/encrypted") {
        bail!("no encrypted payload in the history");
    }
    // The CLI decodes it through the worker's codec server.
    let shown = shown_through_codec(env, &wid, &codec_url).await?;
    if !shown.contains(&secret_value) {
        bail!("temporal workflow show --codec-endpoint did not decode the data");
    }
    ops::signal(&enc_client, &wid, "cancel", None).await?;
    w.stop().await;
    Ok(())
}

async fn eventually_data(
    client: &temporalio_client::Client,
    wid: &str,
    want: &str,
) -> anyhow::Result<Value> {
    stateful_tests::eventually(std::time::Duration::from_secs(30), || async {
        let v = ops::query(client, wid, "data").await?;
        if v["name"] == json!(want) && !v["note"].is_null() {
            Ok(v)
        } else {
            Err(anyhow::anyhow!("data is {v}"))
        }
    })
    .await
}

/// `temporal workflow show --output json` through the codec server at `codec_url`, with every base64
/// string of it decoded and appended (payloads are shown in base64).
async fn shown_through_codec(env: &Env, wid: &str, codec_url: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let out = tokio::process::Command::new(&env.cli)
        .args(["workflow", "show", "--workflow-id", wid])
        .args(["--address", &env.address])
        .args(["--codec-endpoint", codec_url, "--output", "json"])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "temporal workflow show --codec-endpoint failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut shown = String::from_utf8_lossy(&out.stdout).to_string();
    for piece in shown.clone().split('"') {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(piece) {
            shown.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    Ok(shown)
}

/// A User of about 3 MB: 100 fields of 30 KB of repetitive text each (over Temporal's 2 MB payload
/// limit as JSON, a few dozen KB compressed).
fn large_user(id: &str, tag: &str) -> Value {
    let mut data = serde_json::Map::new();
    data.insert("id".into(), json!(id));
    for i in 0..100 {
        let line = format!("{tag} field {i}: the quick brown fox jumps over the lazy dog again. ");
        data.insert(format!("f{i:03}"), json!(line.repeat(30_000 / line.len())));
    }
    Value::Object(data)
}

/// With `--compress` (and `STATEFUL_CODEC_COMPRESS=zstd` for the starter), a state of several
/// megabytes fits: it arrives in one update from the starter, is carried through a checkpoint
/// (continue-as-new) and answered by queries, all compressed; clients without compression still read
/// it; the raw history holds `binary/zstd` payloads far smaller than the state; and the worker's codec
/// server, with compression alone (no keys), decodes them for `temporal workflow show`.
pub async fn compression_carries_a_multi_megabyte_state_through_a_checkpoint(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("{}-zstd", env.task_queue);
    let w = stateful_tests::WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-compressed",
        &["--compress", "--codec-server", "127.0.0.1:0"],
    )
    .await?;
    ensure_eq!(w.ready_field("compression"), Some("zstd".to_string()));
    let codec_url = w
        .ready_field("codec_server")
        .ok_or_else(|| anyhow::anyhow!("no codec server address in the worker's log"))?;
    let id = env.id("compressed");
    let wid = ops::workflow_id("User", &id);
    let data = large_user(&id, &env.tag);
    let state_len = data.to_string().len();
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": id, "entityName": "User", "data": {"id": id}}),
    )
    .await?;
    let file = env.log_dir.join(format!("{id}.json"));
    std::fs::write(&file, json!({"data": data}).to_string())?;
    let file_arg = format!("@{}", file.display());
    let args = [
        "--namespace",
        "default",
        "--json",
        "update",
        &wid,
        &file_arg,
    ];
    let (ok, stdout, stderr) =
        stateful_tests::starter_env(env, &args, &[("STATEFUL_CODEC_COMPRESS", "zstd")]).await?;
    if !ok {
        bail!("the compressed update failed: {stdout}\n{stderr}");
    }
    // The shared client has compression off: it still reads compressed answers.
    let before = ops::query(&env.client, &wid, "version").await?;
    ensure_eq!(ops::query(&env.client, &wid, "data").await? == data, true);
    ops::signal(&env.client, &wid, "checkpoint", None).await?;
    query_until(env, &wid, "checkpoints", |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await?;
    let after = ops::query(&env.client, &wid, "version").await?;
    ensure_eq!(after["runs"], json!(2));
    ensure_eq!(after["checksum"], before["checksum"]);
    // The starter reads it too (compression off).
    let (ok, stdout, stderr) = starter(env, &["--json", "query", &wid, "data"]).await?;
    if !ok || serde_json::from_str::<Value>(stdout.trim()).ok() != Some(data.clone()) {
        bail!("the starter did not read the state back: {stderr}");
    }
    check_compressed_history(env, &wid, &codec_url, state_len).await?;
    ops::signal(&env.client, &wid, "cancel", None).await?;
    w.stop().await;
    Ok(())
}

/// The new run's raw history holds its whole state (the continue-as-new input) compressed, and the
/// codec server decodes it.
async fn check_compressed_history(
    env: &Env,
    wid: &str,
    codec_url: &str,
    state_len: usize,
) -> anyhow::Result<()> {
    use base64::Engine;
    let raw = env
        .client
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(wid)
        .fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    let raw = String::from_utf8_lossy(&raw).to_string();
    let zstd = base64::engine::general_purpose::STANDARD.encode("binary/zstd");
    if !raw.contains(&zstd) || raw.len() * 4 > state_len {
        bail!(
            "the raw history ({} bytes, for a state of {state_len}) is not compressed",
            raw.len()
        );
    }
    let shown = shown_through_codec(env, wid, codec_url).await?;
    let marker = format!("{} field 99: the quick brown fox", env.tag);
    if !shown.contains(&marker) {
        bail!("temporal workflow show --codec-endpoint did not decode the compressed state");
    }
    Ok(())
}

pub async fn export_then_import_into_another_namespace_recreates_the_tree(
    env: &Env,
) -> anyhow::Result<()> {
    let id = env.id("export");
    let wid = ops::workflow_id("User", &id);
    let ls: Vec<String> = (0..2).map(|i| format!("{id}-l{i}")).collect();
    let token = format!("EXPORT-TOKEN-{}", env.tag);
    ops::start(
        &env.client,
        &env.task_queue,
        &wid,
        json!({"id": id, "entityName": "User", "apiToken": token, "refreshInterval": "1h",
               "data": {"id": id, "name": "Exported", "listings": ls.iter().map(|l| json!({"id": l, "user": id, "photos": [{"id": format!("{l}-p"), "listing": l}]})).collect::<Vec<_>>()}}),
    )
    .await?;
    // A change made down the tree, which bubbles up.
    let photo = format!("Photo-{}-p", ls[1]);
    query_until(env, &photo, "status", |v| v == "running").await?;
    ops::update(
        &env.client,
        &photo,
        "update",
        &json!({"data": {"id": format!("{}-p", ls[1]), "caption": "from below"}}),
    )
    .await?;
    query_until(env, &wid, "state", |v| {
        v["Photo"][format!("{}-p", ls[1])]["caption"] == "from below"
    })
    .await?;
    let dir = env.log_dir.join(format!("export-{}", env.tag));
    std::fs::create_dir_all(&dir)?;
    let plain = dir.join("tree.json");
    let with = dir.join("tree-with-tokens.json");
    let plain_s = plain.display().to_string();
    let with_s = with.display().to_string();
    let (ok, _, err) = starter(
        env,
        &["--namespace", "default", "export", &wid, "-o", &plain_s],
    )
    .await?;
    if !ok {
        bail!("export failed: {err}");
    }
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&plain)?)?;
    ensure_eq!(exported["workflows"].as_array().map(Vec::len), Some(5));
    if std::fs::read_to_string(&plain)?.contains(&token) {
        bail!("an export without --with-tokens holds the token");
    }
    let (ok, _, err) = starter(
        env,
        &[
            "--namespace",
            "default",
            "export",
            &wid,
            "--with-tokens",
            "-o",
            &with_s,
        ],
    )
    .await?;
    if !ok || !std::fs::read_to_string(&with)?.contains(&token) {
        bail!("export --with-tokens did not carry the token: {err}");
    }
    // Import into the second namespace, with a worker of its own.
    let tq = format!("{}-import", env.task_queue);
    let w = stateful_tests::WorkerProc::start_with(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-import",
        &["--namespace", "e2e-import"],
        "debug",
    )
    .await?;
    let (ok, out, err) = starter(
        env,
        &[
            "--namespace",
            "e2e-import",
            "--task-queue",
            &tq,
            "--json",
            "import",
            &with_s,
        ],
    )
    .await?;
    if !ok {
        bail!("import failed: {out}\n{err}");
    }
    let (ok, out, err) = starter(
        env,
        &[
            "--namespace",
            "e2e-import",
            "--json",
            "validate",
            &wid,
            "--tree",
        ],
    )
    .await?;
    if !ok {
        bail!("the imported tree does not validate: {out}\n{err}");
    }
    // Same states, same token, same settings.
    let other = stateful_tests::client_in(&env.address, "e2e-import").await?;
    for w in exported["workflows"].as_array().into_iter().flatten() {
        let wid = w["workflowId"].as_str().unwrap_or_default();
        ensure_eq!(ops::query(&other, wid, "state").await?, w["state"]);
    }
    let api = ops::query(&other, &wid, "api").await?;
    ensure_eq!(
        api["token"]["fingerprint"],
        json!(stateful_engine::fingerprint(&token))
    );
    ensure_eq!(api["refreshInterval"], json!(3_600_000));
    ops::signal(&other, &wid, "cancel", None).await?;
    ops::signal(&env.client, &wid, "cancel", None).await?;
    w.stop().await;
    Ok(())
}
