//! Loading from an entity API (a real HTTP server on a loopback address), token rotation through a
//! tree, and what never leaks the token.

use std::time::Duration;

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::{FakeApi, Reply};
use stateful_tests::{Env, ensure_eq, eventually, query_until, root};
use temporalio_client::{UntypedWorkflow, WorkflowFetchHistoryOptions};

async fn start(env: &Env, entity: &str, id: &str, extra: Value) -> anyhow::Result<String> {
    let wid = ops::workflow_id(entity, id);
    let mut input = json!({"id": id, "entityName": entity});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            input[k] = v;
        }
    }
    ops::start(&env.client, &env.task_queue, &wid, input).await?;
    Ok(wid)
}

async fn api_state(env: &Env, wid: &str, want: &str) -> anyhow::Result<Value> {
    query_until(env, wid, "api", |v| {
        v["state"] == want && v["pending"].is_null()
    })
    .await
}

pub async fn loads_at_start_and_on_refresh_url_change_and_rotation(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(2).await?;
    let id = env.id("api-load");
    let path = format!("/users/{id}");
    api.put(&path, json!({"id": id, "name": "From the API"}));
    api.accept(&["tok-a", "tok-b"]);
    let wid = start(
        env,
        "User",
        &id,
        json!({"apiBase": api.base, "apiToken": "tok-a", "data": {"age": 3}}),
    )
    .await?;
    // Loaded at start, merged with the input's data, with the token as a bearer header.
    query_until(env, &wid, "data", |v| {
        v["name"] == "From the API" && v["age"] == 3
    })
    .await?;
    ensure_eq!(api.requests(&path), vec![Some("tok-a".to_string())]);
    let info = api_state(env, &wid, "ok").await?;
    ensure_eq!(info["url"], json!(format!("{}{path}", api.base)));
    ensure_eq!(ops::query(&env.client, &wid, "apiUrl").await?, info["url"]);
    // The change came from the API.
    let recent = ops::query(&env.client, &wid, "recentChanges").await?;
    if !recent.to_string().contains("\"api\"") {
        bail!("no change from the API in {recent}");
    }

    // `refresh` loads again.
    api.put(&path, json!({"id": id, "name": "Refreshed"}));
    ops::signal(&env.client, &wid, "refresh", None).await?;
    query_until(env, &wid, "data", |v| v["name"] == "Refreshed").await?;

    // A new token reloads with it; the same token again does nothing.
    api.put(&path, json!({"id": id, "name": "Rotated"}));
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("tok-b"))).await?;
    query_until(env, &wid, "data", |v| v["name"] == "Rotated").await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("tok-b"))).await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!(""))).await?;
    let info = api_state(env, &wid, "ok").await?;
    ensure_eq!(info["loads"], json!(3));
    ensure_eq!(info["token"]["rotations"], json!(1));
    ensure_eq!(
        api.requests(&path).last().cloned().flatten(),
        Some("tok-b".to_string())
    );

    // A new URL reloads from it.
    let other = format!("/users/{id}-elsewhere");
    api.put(&other, json!({"id": id, "name": "Elsewhere"}));
    ops::signal(
        &env.client,
        &wid,
        "apiUrl",
        Some(&json!(format!("{}{other}", api.base))),
    )
    .await?;
    query_until(env, &wid, "data", |v| v["name"] == "Elsewhere").await?;
    ensure_eq!(api.requests(&other).len(), 1);
    ensure_eq!(api.requests(&path).len(), 3);
    Ok(())
}

/// A user with 2 listings with 2 photos each (7 workflows), every one loading from its own URL.
pub async fn a_three_level_tree_rotates_with_the_starter_and_reloads_with_the_new_token(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(3).await?;
    let u = env.id("api-tree");
    let mut paths = vec![format!("/users/{u}")];
    let mut listings = Vec::new();
    for i in 0..2 {
        let l = format!("{u}-l{i}");
        let photos: Vec<String> = (0..2).map(|j| format!("{l}-p{j}")).collect();
        for p in &photos {
            api.put(
                &format!("/photos/{p}"),
                json!({"id": p, "caption": format!("photo {p}")}),
            );
            paths.push(format!("/photos/{p}"));
        }
        api.put(
            &format!("/listings/{l}"),
            json!({"id": l, "title": format!("listing {i}")}),
        );
        paths.push(format!("/listings/{l}"));
        listings.push(json!({"id": l, "user": u, "photos": photos.iter().map(|p| json!({"id": p, "listing": l})).collect::<Vec<_>>()}));
    }
    api.put(&paths[0], json!({"id": u, "name": "Tree owner"}));
    api.accept(&["tree-1"]);
    let root_wid = start(
        env,
        "User",
        &u,
        json!({"apiBase": api.base, "apiToken": "tree-1", "data": {"id": u, "listings": listings}}),
    )
    .await?;
    // Every workflow loads its own entity with the first token; loaded data reaches the root.
    eventually(Duration::from_secs(60), || async {
        let missing: Vec<_> = paths
            .iter()
            .filter(|p| api.requests(p).is_empty())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("not loaded yet: {missing:?}"))
        }
    })
    .await?;
    let l0 = format!("{u}-l0");
    let p00 = format!("{l0}-p0");
    query_until(env, &root_wid, "state", |v| {
        v["Photo"][&p00]["caption"] == json!(format!("photo {p00}"))
            && v["Listing"][&l0]["title"] == "listing 0"
    })
    .await?;

    // Rotate with the starter: it waits until all 7 use the new token and have reloaded.
    api.accept(&["tree-2"]);
    let before: Vec<usize> = paths.iter().map(|p| api.requests(p).len()).collect();
    let (ok, stdout, stderr) = stateful_tests::starter_env(
        env,
        &[
            "--namespace",
            "default",
            "--json",
            "token",
            "rotate",
            &root_wid,
            "--token-env",
            "NEW_API_TOKEN",
        ],
        &[("NEW_API_TOKEN", "tree-2")],
    )
    .await?;
    if !ok {
        bail!("starter token rotate failed: {stdout}\n{stderr}");
    }
    let report: Value = serde_json::from_str(stdout.trim())?;
    ensure_eq!(report["workflows"], json!(7));
    ensure_eq!(report["loads"], json!({"ok": 7}));
    ensure_eq!(
        report["fingerprint"],
        json!(stateful_engine::fingerprint("tree-2"))
    );
    // The server saw every workflow call again, with the new token.
    for (p, n) in paths.iter().zip(before) {
        let reqs = api.requests(p);
        if reqs.len() <= n || reqs.last().cloned().flatten().as_deref() != Some("tree-2") {
            bail!("{p} was not reloaded with the new token: {reqs:?}");
        }
    }
    if stdout.contains("tree-2") || stderr.contains("tree-2") {
        bail!("the starter printed the token");
    }
    Ok(())
}

pub async fn unauthorized_shows_in_the_status_and_rotation_heals(env: &Env) -> anyhow::Result<()> {
    let api = FakeApi::start(4).await?;
    let id = env.id("api-401");
    let path = format!("/users/{id}");
    api.put(&path, json!({"id": id, "name": "Healed"}));
    api.accept(&["good"]);
    let wid = start(
        env,
        "User",
        &id,
        json!({"apiBase": api.base, "apiToken": "expired"}),
    )
    .await?;
    query_until(env, &wid, "status", |v| v == "unauthorized").await?;
    let info = api_state(env, &wid, "unauthorized").await?;
    let err = info["lastError"].as_str().unwrap_or_default();
    if !err.contains("401") || err.contains("expired") {
        bail!("lastError should name the status and not the token: {err}");
    }
    // Not retried with the same token (401 is final), and the workflow keeps taking changes.
    ensure_eq!(api.requests(&path).len(), 1);
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "age": 40}}),
    )
    .await?;
    let memo = crate::workflow::memo_of(env, &wid).await?;
    ensure_eq!(memo["status"], json!("unauthorized"));
    // A new token heals it.
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("good"))).await?;
    query_until(env, &wid, "data", |v| {
        v["name"] == "Healed" && v["age"] == 40
    })
    .await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    ensure_eq!(
        api.requests(&path).last().cloned().flatten(),
        Some("good".to_string())
    );
    Ok(())
}

pub async fn transient_failures_are_retried_and_unusable_answers_fail_clearly(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(5).await?;
    // 500 then 503 then success: retried by Temporal inside one load.
    let id = env.id("api-500");
    let path = format!("/users/{id}");
    api.put(
        &path,
        json!({"data": {"id": id, "name": "Third time"}, "strategy": "$merge"}),
    );
    api.script(&path, vec![Reply::Status(500), Reply::Status(503)]);
    let wid = start(env, "User", &id, json!({"apiBase": api.base})).await?;
    query_until(env, &wid, "data", |v| v["name"] == "Third time").await?;
    ensure_eq!(api.requests(&path).len(), 3);
    let info = api_state(env, &wid, "ok").await?;
    ensure_eq!(info["failures"], json!(0));

    // A body that is not JSON: one attempt, a clear reason, the data untouched.
    let id = env.id("api-html");
    let path = format!("/users/{id}");
    api.script(&path, vec![Reply::Raw("<html>maintenance</html>".into())]);
    let wid = start(
        env,
        "User",
        &id,
        json!({"apiBase": api.base, "data": {"name": "Kept"}}),
    )
    .await?;
    let info = api_state(env, &wid, "failed").await?;
    let err = info["lastError"].as_str().unwrap_or_default();
    if !err.contains("not JSON") {
        bail!("lastError should say the body is not JSON: {err}");
    }
    ensure_eq!(api.requests(&path).len(), 1);
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?["name"],
        json!("Kept")
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );
    Ok(())
}

pub async fn not_found_keeps_the_data_or_deletes_the_entity(env: &Env) -> anyhow::Result<()> {
    let api = FakeApi::start(6).await?;
    // Default: keep, and say so.
    let id = env.id("api-404-keep");
    let wid = start(
        env,
        "User",
        &id,
        json!({"apiBase": api.base, "data": {"name": "Still here"}}),
    )
    .await?;
    api_state(env, &wid, "notFound").await?;
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?["name"],
        json!("Still here")
    );
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );

    // `onNotFound: delete` in the schema: the entity is deleted and its workflow completes.
    let mut schema =
        stateful_engine::Schema::from_file(root().join("tests/fixtures/schema.yaml"))?.to_json();
    schema["User"]["onNotFound"] = json!("delete");
    let id = env.id("api-404-delete");
    let wid = start(
        env,
        "User",
        &id,
        json!({"apiBase": api.base, "schema": schema, "data": {"name": "Gone soon"}}),
    )
    .await?;
    let result = crate::workflow::result(env, &wid).await?;
    ensure_eq!(result, Value::Null);
    Ok(())
}

pub async fn the_refresh_interval_keeps_loading_across_continue_as_new(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(7).await?;
    let id = env.id("api-interval");
    let path = format!("/users/{id}");
    api.put(&path, json!({"id": id, "name": "Periodic"}));
    let wid = start(
        env,
        "User",
        &id,
        json!({"apiBase": api.base, "refreshInterval": "1s", "maxHistoryLength": 100}),
    )
    .await?;
    // Every refresh adds some 15 events: a 100-event history continues as new within seconds.
    query_until(env, &wid, "version", |v| v["runs"].as_u64() >= Some(2)).await?;
    let n = api.requests(&path).len();
    eventually(Duration::from_secs(20), || async {
        let now = api.requests(&path).len();
        if now >= n + 2 {
            Ok(())
        } else {
            Err(anyhow!("{now} loads, expected at least {}", n + 2))
        }
    })
    .await?;
    let info = ops::query(&env.client, &wid, "api").await?;
    ensure_eq!(info["refreshInterval"], json!(1000));
    ops::signal(&env.client, &wid, "cancel", None).await?;
    crate::workflow::result(env, &wid).await?;
    Ok(())
}

/// Tokens with a recognisable shape go through start, rotation, a 401 and children; then the worker's
/// log, every query answer, and every failure recorded in the histories are searched for them.
pub async fn no_token_in_logs_queries_or_failures(env: &Env) -> anyhow::Result<()> {
    let api = FakeApi::start(8).await?;
    let u = env.id("api-leak");
    let l = format!("{u}-l0");
    let secrets = [
        format!("SECRET-{}-one", env.tag),
        format!("SECRET-{}-two", env.tag),
    ];
    api.put(
        &format!("/users/{u}"),
        json!({"id": u, "name": "Leak check"}),
    );
    api.put(&format!("/listings/{l}"), json!({"id": l, "title": "t"}));
    api.accept(&[&secrets[1]]);
    let wid = start(
        env,
        "User",
        &u,
        json!({"apiBase": api.base, "apiToken": secrets[0], "data": {"id": u, "listings": [{"id": l, "user": u}]}}),
    )
    .await?;
    let lwid = ops::workflow_id("Listing", &l);
    query_until(env, &lwid, "status", |v| v == "unauthorized").await?;
    query_until(env, &wid, "status", |v| v == "unauthorized").await?;
    ops::signal(&env.client, &wid, "apiToken", Some(&json!(secrets[1]))).await?;
    query_until(env, &lwid, "data", |v| v["title"] == "t").await?;
    query_until(env, &wid, "status", |v| v == "running").await?;
    // A refused input that names the token's signal.
    ops::signal(&env.client, &wid, "apiToken", Some(&json!(42))).await?;
    query_until(env, &wid, "rejected", |v| v["total"].as_u64() >= Some(1)).await?;

    let mut seen = Vec::new();
    let mut failures = 0;
    for w in [&wid, &lwid] {
        for q in [
            "id",
            "entityName",
            "state",
            "data",
            "status",
            "apiUrl",
            "apiToken",
            "api",
            "version",
            "pendingChanges",
            "rejected",
            "recentChanges",
            "subscriptions",
            "children",
            "managedPaths",
            "ancestorWorkflowIds",
            "schema",
        ] {
            seen.push((
                format!("query {q} on {w}"),
                ops::query(&env.client, w, q).await?.to_string(),
            ));
        }
        // Failures and memos in the history (activity and workflow inputs do carry the token: the
        // README says so, and the payload codec encrypts them).
        let history = env
            .client
            .get_workflow_handle::<UntypedWorkflow>(w.as_str())
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await?;
        let h: Value = serde_json::from_slice(&history)?;
        // The SDK's JSON form: `{"events": [{"attributes": {"ActivityTaskFailedEventAttributes": ...}}]}`.
        for ev in h["events"].as_array().into_iter().flatten() {
            for key in [
                "ActivityTaskFailedEventAttributes",
                "UpsertWorkflowSearchAttributesEventAttributes",
                "WorkflowPropertiesModifiedEventAttributes",
                "WorkflowTaskFailedEventAttributes",
            ] {
                if let Some(a) = ev["attributes"].get(key) {
                    if key == "ActivityTaskFailedEventAttributes" {
                        failures += 1;
                    }
                    seen.push((format!("{key} in the history of {w}"), decoded(a)));
                }
            }
        }
    }
    if failures < 2 {
        bail!("expected the 401s in the histories as activity failures, found {failures}");
    }
    seen.push((
        "the worker log".into(),
        std::fs::read_to_string(env.log_dir.join("worker.log"))?,
    ));
    for (what, text) in &seen {
        for s in secrets.iter().chain([&env.ingress.1]) {
            if text.contains(s.as_str()) {
                bail!("{what} holds a token");
            }
        }
    }
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}

/// A history attribute as text, with every base64 payload decoded.
fn decoded(v: &Value) -> String {
    use base64::Engine;
    let mut out = v.to_string();
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(d)) = m.get("data")
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(d)
                {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// The worker's HTTP ingress: a webhook pushes changes in without a Temporal client.
pub async fn the_ingress_takes_webhook_changes_and_refuses_bad_ones(
    env: &Env,
) -> anyhow::Result<()> {
    let (base, token) = &env.ingress;
    let http = reqwest::Client::new();
    let id = env.id("ingress");
    let url = format!("{base}/User/{id}");
    let wid = ops::workflow_id("User", &id);
    let send = |method: reqwest::Method, url: String, body: Option<&str>, auth: Option<&str>| {
        let mut r = http.request(method, url);
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        async move {
            let resp = r.send().await?;
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, v))
        }
    };
    use reqwest::Method;
    // Refused, each with a reason, and nothing started.
    for (method, u, body, auth, want, says) in [
        (
            Method::POST,
            url.clone(),
            Some("{\"name\":\"A\"}"),
            None,
            401,
            "Bearer",
        ),
        (
            Method::POST,
            url.clone(),
            Some("{\"name\":\"A\"}"),
            Some("nope"),
            401,
            "wrong",
        ),
        (
            Method::POST,
            url.clone(),
            Some("{not json"),
            Some(token.as_str()),
            400,
            "not JSON",
        ),
        (
            Method::POST,
            url.clone(),
            Some("[1]"),
            Some(token.as_str()),
            400,
            "JSON object",
        ),
        (
            Method::POST,
            format!("{base}/Nobody/{id}"),
            Some("{}"),
            Some(token.as_str()),
            404,
            "Nobody",
        ),
        (
            Method::POST,
            url.clone(),
            Some("{\"id\":\"other\"}"),
            Some(token.as_str()),
            400,
            "URL says",
        ),
        (
            Method::POST,
            format!("{url}?strategy=$nope"),
            Some("{}"),
            Some(token.as_str()),
            422,
            "strategy",
        ),
    ] {
        let (status, v) = send(method, u.clone(), body, auth).await?;
        if status != want || !v["error"].as_str().unwrap_or_default().contains(says) {
            bail!("{u} with {body:?}: expected {want} saying `{says}`, got {status} {v}");
        }
    }
    if ops::query(&env.client, &wid, "status").await.is_ok() {
        bail!("a refused request started {wid}");
    }
    // A POST for an entity without a workflow starts it (update-with-start) and answers once the
    // change is applied, with the new version.
    let (status, v) = send(
        Method::POST,
        url.clone(),
        Some("{\"name\":\"Webhook\"}"),
        Some(token),
    )
    .await?;
    ensure_eq!((status, v["workflowId"].clone()), (200, json!(wid)));
    let first = v["version"]
        .as_u64()
        .ok_or_else(|| anyhow!("no version in {v}"))?;
    if first == 0 || v["changed"].as_u64().unwrap_or(0) == 0 {
        bail!("the first POST should say what it changed: {v}");
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?["name"],
        json!("Webhook")
    );
    // A second one updates it (the workflow runs: it is not started again).
    let (status, v) = send(Method::POST, url.clone(), Some("{\"age\":7}"), Some(token)).await?;
    ensure_eq!(status, 200);
    if v["version"].as_u64().unwrap_or(0) <= first {
        bail!("the second POST should answer a newer version than {first}: {v}");
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "data").await?["age"],
        json!(7)
    );
    // A change the workflow refuses (a listing whose child workflow id would be too long: the
    // ingress's schema check cannot tell) is answered 422 with the workflow's reason, and changes
    // nothing.
    let long = "x".repeat(1_000);
    let body = json!({"listings": [{"id": long, "user": id}]}).to_string();
    let (status, v) = send(Method::POST, url.clone(), Some(&body), Some(token)).await?;
    if status != 422
        || !v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("shorten its id")
    {
        bail!("a change the workflow refuses: expected 422 with its reason, got {status} {v}");
    }
    // GET answers the data and the state.
    let (status, data) = send(Method::GET, url.clone(), None, Some(token)).await?;
    ensure_eq!(status, 200);
    ensure_eq!(data, json!({"id": id, "name": "Webhook", "age": 7}));
    let (_, state) = send(Method::GET, format!("{url}?view=state"), None, Some(token)).await?;
    ensure_eq!(state["User"][&id]["age"], json!(7));
    // DELETE deletes the entity: its workflow completes.
    let (status, _) = send(Method::DELETE, url.clone(), None, Some(token)).await?;
    ensure_eq!(status, 202);
    ensure_eq!(crate::workflow::result(env, &wid).await?, Value::Null);
    // Nothing running any more: 404 with a reason.
    let (status, v) = send(
        Method::DELETE,
        format!("{base}/User/{id}-never"),
        None,
        Some(token),
    )
    .await?;
    if status != 404 || v["error"].is_null() {
        bail!("DELETE of an entity without a workflow: {status} {v}");
    }
    Ok(())
}

/// The worker's metrics show API requests by host and outcome, and the circuit state; every series
/// of ours is labelled with the worker's namespace and task queue.
pub async fn api_requests_and_the_circuit_show_in_metrics(env: &Env) -> anyhow::Result<()> {
    let api = FakeApi::start(10).await?;
    let id = env.id("api-metrics");
    let path = format!("/users/{id}");
    // Always 503: the activity retries until the host's circuit opens (5 failures) and fails fast.
    api.script(&path, vec![Reply::Status(503); 20]);
    let wid = start(env, "User", &id, json!({"apiBase": api.base})).await?;
    let info = query_until(env, &wid, "api", |v| v["state"] == "circuitOpen").await?;
    if !info["lastError"]
        .as_str()
        .unwrap_or_default()
        .contains("circuit")
    {
        bail!("lastError should name the open circuit: {info}");
    }
    ensure_eq!(
        ops::query(&env.client, &wid, "status").await?,
        json!("running")
    );
    let host = "127.0.0.10";
    let text = eventually(Duration::from_secs(10), || async {
        let text = reqwest::get(&env.metrics).await?.text().await?;
        let has = |needle: &str| text.lines().any(|l| l.contains(needle) && l.contains(host));
        if has("stateful_api_requests")
            && has("outcome=\"transient\"")
            && has("outcome=\"circuitOpen\"")
            && has("stateful_api_circuit_open")
        {
            Ok(text)
        } else {
            Err(anyhow!("metrics for {host} not there yet"))
        }
    })
    .await?;
    // The workflows' own counters: changes applied, and this load's outcome.
    ops::update(
        &env.client,
        &wid,
        "update",
        &json!({"data": {"id": id, "x": 1}}),
    )
    .await?;
    eventually(Duration::from_secs(10), || async {
        let text = reqwest::get(&env.metrics).await?.text().await?;
        let value = |prefix: &str, label: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(label))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        if value("stateful_changes_applied", "") > 0.0
            && value("stateful_loads", "outcome=\"circuitOpen\"") > 0.0
        {
            Ok(text)
        } else {
            let ours: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("stateful_") && !l.starts_with("stateful_api"))
                .collect();
            Err(anyhow!("workflow counters not there yet: {ours:?}"))
        }
    })
    .await?;
    let open = text
        .lines()
        .find(|l| l.starts_with("stateful_api_circuit_open") && l.contains(host))
        .unwrap_or_default();
    if !open.trim_end().ends_with(" 1") {
        bail!("the circuit gauge should be 1: {open}");
    }
    // Every series of ours carries the shared worker's namespace and task queue.
    let scope = "namespace=\"default\"";
    let queue = format!("task_queue=\"{}\"", env.task_queue);
    let text = reqwest::get(&env.metrics).await?.text().await?;
    for l in text.lines().filter(|l| l.starts_with("stateful_")) {
        if !l.contains(scope) || !l.contains(&queue) {
            bail!("a series without namespace and task_queue labels: {l}");
        }
    }
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}

/// With `batchUrl` on Listing, a user loads all its listings in one request (and again after a
/// rotation), and the listings' workflows do not call the API themselves.
pub async fn a_parent_loads_its_children_in_one_batch_request(env: &Env) -> anyhow::Result<()> {
    let api = FakeApi::start(11).await?;
    let u = env.id("api-batch");
    let ls: Vec<String> = (0..5).map(|i| format!("{u}-l{i}")).collect();
    let mut schema =
        stateful_engine::Schema::from_file(root().join("tests/fixtures/schema.yaml"))?.to_json();
    schema["Listing"]["batchUrl"] = json!("{apiBase}/listings?ids={ids}");
    let batch_path = format!("/listings?ids={}", ls.join(","));
    api.put(
        &format!("/users/{u}"),
        json!({"id": u, "name": "Batch owner"}),
    );
    api.put(
        &batch_path,
        json!(
            ls.iter()
                .map(|l| json!({"id": l, "title": format!("title {l}")}))
                .collect::<Vec<_>>()
        ),
    );
    let wid = start(
        env,
        "User",
        &u,
        json!({"apiBase": api.base, "apiToken": "batch-1", "schema": schema,
               "data": {"id": u, "listings": ls.iter().map(|l| json!({"id": l, "user": u})).collect::<Vec<_>>()}}),
    )
    .await?;
    for l in &ls {
        query_until(env, &ops::workflow_id("Listing", l), "data", |v| {
            v["title"] == json!(format!("title {l}"))
        })
        .await?;
    }
    ensure_eq!(api.requests(&batch_path).len(), 1);
    ops::signal(&env.client, &wid, "apiToken", Some(&json!("batch-2"))).await?;
    eventually(Duration::from_secs(30), || async {
        match api.requests(&batch_path).last().cloned().flatten() {
            Some(t) if t == "batch-2" => Ok(()),
            other => Err(anyhow!("last batch request had {other:?}")),
        }
    })
    .await?;
    for l in &ls {
        query_until(env, &ops::workflow_id("Listing", l), "apiToken", |v| {
            v["fingerprint"] == json!(stateful_engine::fingerprint("batch-2"))
        })
        .await?;
    }
    let all = api.all_requests();
    let singles: Vec<_> = all
        .iter()
        .filter(|(p, _)| p.starts_with("/listings/"))
        .collect();
    if !singles.is_empty() {
        bail!("listings loaded themselves: {singles:?}");
    }
    ensure_eq!(api.requests(&batch_path).len(), 2);
    ensure_eq!(api.requests(&format!("/users/{u}")).len(), 2);
    ops::signal(&env.client, &wid, "cancel", None).await?;
    Ok(())
}

/// A batch load whose answers do not fit one activity result is split: with a worker whose result
/// budget is 50,000 bytes, a user's own answer (30 KB), its listings' batch answer (30 KB) and its
/// profile's (30 KB) take three `loadBatch` activities, each result within the budget, and every
/// child gets its answer.
pub async fn a_batch_load_larger_than_one_activity_result_is_split_and_loads_every_child(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(14).await?;
    let tq = format!("api-split-{}", env.tag);
    let budget = 50_000;
    let w = stateful_tests::WorkerProc::start(
        &env.address,
        &tq,
        &env.log_dir,
        "worker-api-split",
        &["--api-max-result", &budget.to_string()],
    )
    .await?;
    let u = env.id("api-split");
    let p = format!("{u}-p");
    let ls: Vec<String> = (0..5).map(|i| format!("{u}-l{i}")).collect();
    let mut schema =
        stateful_engine::Schema::from_file(root().join("tests/fixtures/schema.yaml"))?.to_json();
    schema["Listing"]["batchUrl"] = json!("{apiBase}/listings?ids={ids}");
    schema["Profile"]["batchUrl"] = json!("{apiBase}/profiles?ids={ids}");
    api.put(
        &format!("/users/{u}"),
        json!({"id": u, "name": "Split", "bio": "b".repeat(30_000)}),
    );
    api.put(
        &format!("/listings?ids={}", ls.join(",")),
        json!(
            ls.iter()
                .map(|l| json!({"id": l, "title": format!("title {l}"), "text": "t".repeat(6_000)}))
                .collect::<Vec<_>>()
        ),
    );
    api.put(
        &format!("/profiles?ids={p}"),
        json!([{"id": p, "about": "a".repeat(30_000)}]),
    );
    let wid = ops::workflow_id("User", &u);
    let listings: Vec<Value> = ls.iter().map(|l| json!({"id": l, "user": u})).collect();
    ops::start(
        &env.client,
        &tq,
        &wid,
        json!({"id": u, "entityName": "User", "apiBase": api.base, "apiToken": "split-1",
               "schema": schema, "data": {"id": u, "listings": listings, "profile": {"id": p}}}),
    )
    .await?;
    for l in &ls {
        query_until(env, &ops::workflow_id("Listing", l), "data", |v| {
            v["title"] == json!(format!("title {l}"))
        })
        .await?;
    }
    query_until(env, &ops::workflow_id("Profile", &p), "data", |v| {
        v["about"].as_str().map(str::len) == Some(30_000)
    })
    .await?;
    let info = api_state(env, &wid, "ok").await?;
    ensure_eq!(info["lastError"], Value::Null);
    let sizes = batch_result_sizes(env, &wid).await?;
    if sizes.len() != 3 || sizes.iter().any(|&n| n > budget) {
        bail!("expected three loadBatch results within {budget} bytes, got {sizes:?}");
    }
    ops::signal(&env.client, &wid, "cancel", None).await?;
    w.stop().await;
    Ok(())
}

/// The sizes of the `loadBatch` results in a workflow's history (its latest run).
async fn batch_result_sizes(env: &Env, wid: &str) -> anyhow::Result<Vec<usize>> {
    use base64::Engine;
    let history = env
        .client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .to_json()
        .await?;
    let h: Value = serde_json::from_slice(&history)?;
    let events = h["events"].as_array().cloned().unwrap_or_default();
    let batch_ids: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["attributes"]["ActivityTaskScheduledEventAttributes"]["activity_type"]["name"]
                == "loadBatch"
        })
        .map(|e| &e["event_id"])
        .collect();
    let mut sizes = Vec::new();
    for e in &events {
        let done = &e["attributes"]["ActivityTaskCompletedEventAttributes"];
        if batch_ids.contains(&&done["scheduled_event_id"]) {
            let data = done["result"]["payloads"][0]["data"].as_str().unwrap_or("");
            sizes.push(
                base64::engine::general_purpose::STANDARD
                    .decode(data)?
                    .len(),
            );
        }
    }
    Ok(sizes)
}

/// A 111-workflow tree (1 user, 10 listings, 10 photos each) whose token is rotated three times in
/// quick succession while its children are still starting, against an API that accepts only the
/// newest token: every workflow ends with the newest token and a successful load, whatever order
/// the rotations and the start catch-ups reached it in.
pub async fn rotations_during_the_start_of_a_111_workflow_tree_all_end_with_the_newest_token(
    env: &Env,
) -> anyhow::Result<()> {
    let api = FakeApi::start(13).await?;
    let u = env.id("api-race");
    api.put(&format!("/users/{u}"), json!({"id": u, "name": "Race"}));
    let mut listings = Vec::new();
    for i in 0..10 {
        let l = format!("{u}-l{i}");
        api.put(
            &format!("/listings/{l}"),
            json!({"id": l, "title": format!("listing {i}")}),
        );
        let photos: Vec<Value> = (0..10)
            .map(|j| {
                let p = format!("{l}-p{j}");
                api.put(&format!("/photos/{p}"), json!({"id": p, "caption": "c"}));
                json!({"id": p, "listing": l})
            })
            .collect();
        listings.push(json!({"id": l, "user": u, "photos": photos}));
    }
    api.accept(&["race-4"]);
    let root_wid = start(
        env,
        "User",
        &u,
        json!({"apiBase": api.base, "apiToken": "race-1", "data": {"id": u, "listings": listings}}),
    )
    .await?;
    for t in ["race-2", "race-3", "race-4"] {
        ops::signal(&env.client, &root_wid, "apiToken", Some(&json!(t))).await?;
    }
    let want = stateful_engine::fingerprint("race-4");
    eventually(Duration::from_secs(150), || async {
        let states = ops::token_states(&env.client, &root_wid).await;
        let behind: Vec<String> = states
            .iter()
            .filter(|s| {
                s.fingerprint.as_deref() != Some(want.as_str()) || s.load_state != "ok" || s.loading
            })
            .map(|s| format!("{} ({:?}, {})", s.workflow_id, s.error, s.load_state))
            .take(5)
            .collect();
        if states.len() == 111 && behind.is_empty() {
            Ok(())
        } else {
            Err(anyhow!(
                "{} workflows found, not all on the newest token with a successful load yet: {behind:?}",
                states.len()
            ))
        }
    })
    .await?;
    // Nothing was loaded with a token older than the newest after it succeeded: the last request
    // of every entity carried the newest token.
    let paths: std::collections::BTreeSet<String> =
        api.all_requests().into_iter().map(|(p, _)| p).collect();
    ensure_eq!(paths.len(), 111);
    for path in paths {
        let last = api.requests(&path).last().cloned().flatten();
        if last.as_deref() != Some("race-4") {
            bail!("{path} was last loaded with another token than the newest");
        }
    }
    Ok(())
}
