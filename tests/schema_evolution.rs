//! Schema evolution of a running tree: `starter schema apply` adds a relation (children start for
//! the entities the state already holds) and removes one (its children end), every workflow then
//! reports the new checksum; a schema that is not allowed is refused with the reason (exit code 1);
//! no workflow task fails.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use stateful_client::ops;
use stateful_engine::Schema;
use stateful_tests::history::{RUNNING, no_failed_task, status_of, temporal};
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, query_until, starter};

/// The schema the tree starts with: User → Listing → Photo; a Profile that no relation holds.
const OLD: &str =
    "User: {listings: [Listing]}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}\n";
/// Adds `User.profile` and removes `Listing.photos`.
const NEW: &str =
    "User: {listings: [Listing], profile: Profile}\nListing: {}\nPhoto: {}\nProfile: {}\n";
/// Not allowed: the id attribute of `User` changed.
const BAD_ID: &str = "User: {idAttribute: uid, listings: [Listing], profile: Profile}\nListing: {}\nPhoto: {}\nProfile: {}\n";
/// The state does not fit: it holds Profiles.
const NO_PROFILE: &str = "User: {listings: [Listing]}\nListing: {}\nPhoto: {}\n";

fn checksum(yaml: &str) -> anyhow::Result<String> {
    Ok(Schema::parse(yaml, "test")?.checksum())
}

async fn schema_checksum(env: &Env, wid: &str) -> anyhow::Result<String> {
    let v = ops::query(&env.client, wid, "schema").await?;
    Ok(v["checksum"].as_str().unwrap_or_default().to_string())
}

pub async fn schema_apply_adds_and_removes_relations_across_a_three_level_tree(
    env: &Env,
) -> anyhow::Result<()> {
    let u = env.id("se");
    let (l, ph, p) = (format!("{u}-l"), format!("{u}-ph"), format!("{u}-p"));
    let old = Schema::parse(OLD, "old")?.to_json();
    let input = json!({"id": u, "entityName": "User", "schema": old,
        "state": {"Profile": {p.clone(): {"id": p, "name": "Pat"}}},
        "data": {"id": u, "profile": p, "listings": [{"id": l, "photos": [{"id": ph}]}]}});
    let root = format!("User-{u}");
    let (lw, phw, pw) = (
        format!("Listing-{l}"),
        format!("Photo-{ph}"),
        format!("Profile-{p}"),
    );
    ops::start(&env.client, &env.task_queue, &root, input).await?;
    query_until(env, &phw, "status", |v| v == "running").await?;
    ensure_eq!(schema_checksum(env, &phw).await?, checksum(OLD)?);

    let dir = env.log_dir.join(format!("schema-evolution-{}", env.tag));
    std::fs::create_dir_all(&dir)?;
    let file = |name: &str, text: &str| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path.to_string_lossy().to_string())
    };

    // Refused: not allowed, and a state that does not fit; nothing changes.
    for (name, text, reason) in [
        (
            "bad-id.yaml",
            BAD_ID,
            "not allowed: changing the `idAttribute` of `User`",
        ),
        (
            "no-profile.yaml",
            NO_PROFILE,
            "entity `Profile` is not in the schema",
        ),
    ] {
        let f = file(name, text)?;
        let (ok, out, err) = starter(
            env,
            &[
                "schema",
                "apply",
                &root,
                "--file",
                &f,
                "--timeout-secs",
                "20",
            ],
        )
        .await?;
        if ok || !err.contains(reason) {
            bail!("`schema apply {name}` should fail with `{reason}`: ok={ok}\n{out}\n{err}");
        }
    }
    // The signal, as anyone could send it: a rejection with the reason, listed by `rejected`.
    temporal(
        env,
        &[
            "workflow",
            "signal",
            "-w",
            &root,
            "--name",
            "schema",
            "--input",
            r#"{"User": 42}"#,
        ],
    )?;
    query_until(env, &root, "rejected", |v| {
        v["recent"].as_array().into_iter().flatten().any(|r| {
            r["signal"] == "schema"
                && r["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("not a schema"))
        })
    })
    .await?;
    ensure_eq!(schema_checksum(env, &root).await?, checksum(OLD)?);

    // Applied: the profile's child starts, the photo's ends, every workflow runs the new schema.
    let f = file("new.yaml", NEW)?;
    let (ok, out, err) = starter(
        env,
        &[
            "--json",
            "schema",
            "apply",
            &root,
            "--file",
            &f,
            "--timeout-secs",
            "60",
        ],
    )
    .await?;
    if !ok {
        bail!("`schema apply` failed:\n{out}\n{err}");
    }
    let want = checksum(NEW)?;
    let printed: serde_json::Value = serde_json::from_str(out.trim())?;
    ensure_eq!(printed["checksum"], json!(want));
    ensure_eq!(printed["workflows"], json!(3));
    for wid in [&root, &lw, &pw] {
        ensure_eq!(schema_checksum(env, wid).await?, want);
        ensure_eq!(
            ops::query(&env.client, wid, "schema").await?["version"],
            json!(1)
        );
    }
    let st = query_until(env, &pw, "state", |v| v["Profile"][&p].is_object()).await?;
    ensure_eq!(st["Profile"][&p]["name"], json!("Pat"));
    eventually(Duration::from_secs(30), || async {
        if status_of(env, &phw).await? != RUNNING {
            Ok(())
        } else {
            bail!("{phw} still running")
        }
    })
    .await?;
    let children = ops::query(&env.client, &lw, "children").await?;
    ensure_eq!(children["children"][0]["status"], json!("removed"));

    for wid in [&root, &lw, &pw, &phw] {
        no_failed_task(env, wid)?;
    }
    // Replayed by `replay::replay_all`: the schema's batch, its children's start and removal.
    crate::replay::save_from(&env.client, &root, "schema-evolution-root").await?;
    crate::replay::save_from(&env.client, &lw, "schema-evolution-child").await?;
    Ok(())
}

/// A worker started with `--adopt-worker-schema` moves a tree to its schema at each workflow's next
/// continue-as-new (here: a `checkpoint`), handed down the tree.
pub async fn adopt_worker_schema_moves_a_tree_at_its_next_continue_as_new(
    env: &Env,
) -> anyhow::Result<()> {
    let tq = format!("adopt-{}", env.tag);
    let u = env.id("adopt");
    let (l, p) = (format!("{u}-l"), format!("{u}-p"));
    let (root, lw, pw) = (
        format!("User-{u}"),
        format!("Listing-{l}"),
        format!("Profile-{p}"),
    );
    let file = env.log_dir.join(format!("adopt-schema-{}.yaml", env.tag));
    std::fs::write(&file, NEW)?;
    let w = WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-adopt",
        &[
            "--schema",
            file.to_str().unwrap_or_default(),
            "--adopt-worker-schema",
        ],
    )
    .await?;
    let input = json!({"id": u, "entityName": "User", "schema": Schema::parse(OLD, "old")?.to_json(),
        "state": {"Profile": {p.clone(): {"id": p}}},
        "data": {"id": u, "profile": p, "listings": [{"id": l}]}});
    ops::start(&env.client, &tq, &root, input).await?;
    query_until(env, &lw, "status", |v| v == "running").await?;
    // Not before its next run.
    ensure_eq!(schema_checksum(env, &root).await?, checksum(OLD)?);
    ops::signal(&env.client, &root, "checkpoint", None).await?;
    let want = checksum(NEW)?;
    for wid in [&root, &lw] {
        eventually(Duration::from_secs(30), || async {
            let got = schema_checksum(env, wid).await?;
            if got == want {
                Ok(())
            } else {
                bail!("{wid} runs {got}")
            }
        })
        .await?;
    }
    query_until(env, &pw, "status", |v| v == "running").await?;
    for wid in [&root, &lw, &pw] {
        no_failed_task(env, wid)?;
    }
    // Replayed by `replay::replay_all`: a run that adopted the worker's schema.
    crate::replay::save_from(&env.client, &root, "adopt-worker-schema-root").await?;
    w.stop().await;
    Ok(())
}
