//! The web explorer (issue 21) in a real browser, and `starter tree --format dot|mermaid`.
//!
//! Each browser test starts a worker of its own, on a task queue of its own, serving the explorer
//! (`--explorer 127.0.0.1:PORT`), and a headless Chromium driven over WebDriver by `chromedriver`
//! (both from the distribution's packages, which `scripts/setup` installs; a machine without them
//! fails these tests, it does not skip them). The WebDriver client is the small one below, over
//! reqwest. Every wait polls a condition with a deadline.
//!
//! With `E2E_EXPLORER_SCREENSHOTS=DIR`, the 111-workflow test saves screenshots of the three views
//! (`explorer-trees.png`, `explorer-tree.png`, `explorer-entity.png`, as in docs/images/) there.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use stateful_tests::api::{FakeApi, user_tree, wait_tree_on_token};
use stateful_tests::{Env, WorkerProc, ensure_eq, eventually, root as root_dir, starter};

use browser::Browser;

/// An explorer served by a worker of its own (`--explorer`), polling a task queue of its own.
struct Explorer {
    worker: WorkerProc,
    /// `http://127.0.0.1:PORT`
    base: String,
    task_queue: String,
}

impl Explorer {
    async fn start(env: &Env, name: &str) -> anyhow::Result<Explorer> {
        let task_queue = format!("{name}-{}", env.tag);
        let worker = WorkerProc::start(
            &env.address,
            &task_queue,
            &env.log_dir,
            &format!("worker-{name}"),
            &["--explorer", "127.0.0.1:0"],
        )
        .await?;
        let base = worker
            .ready_field("explorer")
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .ok_or_else(|| {
                anyhow!(
                    "the worker ({}) did not say where its explorer is",
                    worker.log.display()
                )
            })?
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), || async {
            let r = http.get(format!("{base}/")).send().await?;
            if r.status().is_success() {
                Ok(())
            } else {
                bail!("GET {base}/ answered {}", r.status())
            }
        })
        .await
        .with_context(|| format!("the explorer at {base} (log {})", worker.log.display()))?;
        Ok(Explorer {
            worker,
            base,
            task_queue,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts `User-{u}` with `data` (plus `extra` input fields) on this explorer's worker.
    async fn start_user(
        &self,
        env: &Env,
        u: &str,
        data: Value,
        extra: Value,
    ) -> anyhow::Result<String> {
        let mut input = json!({"id": u, "entityName": "User", "data": data});
        for (k, v) in extra.as_object().into_iter().flatten() {
            input[k] = v.clone();
        }
        let wid = format!("User-{u}");
        ops::start(&env.client, &self.task_queue, &wid, input).await?;
        Ok(wid)
    }
}

/// Waits until the tree under `root` has `n` workflows, each answering its `status` query with
/// `status`; returns every workflow's status.
async fn tree_statuses(
    env: &Env,
    root: &str,
    n: usize,
    status: impl Fn(&str) -> &'static str,
    within: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    eventually(within, || async {
        let all = ops::walk(&env.client, root, "status").await;
        let mut out = BTreeMap::new();
        let mut off = Vec::new();
        for (wid, s) in all {
            match s {
                Ok(Value::String(s)) => {
                    if s != status(&wid) {
                        off.push(format!("{wid} is {s}"));
                    }
                    out.insert(wid, s);
                }
                Ok(v) => off.push(format!("{wid}: status {v}")),
                Err(e) => off.push(format!("{wid}: {e:#}")),
            }
        }
        if out.len() == n && off.is_empty() {
            Ok(out)
        } else {
            bail!(
                "{} of {n} workflows found; {} not as expected, e.g. {:?}",
                out.len(),
                off.len(),
                off.iter().take(5).collect::<Vec<_>>()
            )
        }
    })
    .await
}

/// The nodes of the tree page: (workflow id, status, entity) of each `data-testid="node"`.
const NODES_JS: &str = "return Array.from(document.querySelectorAll('[data-testid=\"node\"]'))\
     .map(function (e) { return [e.getAttribute('data-workflow-id'), \
     e.getAttribute('data-status'), e.getAttribute('data-entity')]; });";

/// The status of the trees page's row for the root `arguments[0]`, or null.
const ROOT_ROW_JS: &str = "var r = document.querySelector('tr[data-testid=\"root\"]\
     [data-workflow-id=\"' + CSS.escape(arguments[0]) + '\"]'); \
     return r ? r.getAttribute('data-status') : null;";

/// The text of the page's error notes.
const ERRORS_JS: &str = "return Array.from(document.querySelectorAll('.error'))\
     .map(function (e) { return e.textContent; });";

/// The `data-testid`s of `arguments[0]` that the page lacks.
const MISSING_JS: &str = "return arguments[0].filter(function (t) { \
     return !document.querySelector('[data-testid=\"' + t + '\"]'); });";

/// What the entity page holds.
const ENTITY_PARTS: [&str; 13] = [
    "state",
    "data",
    "timeline",
    "rejected",
    "api",
    "status",
    "temporal-ui-link",
    "action-refresh",
    "action-pause",
    "action-resume",
    "action-validate",
    "rotate-token-input",
    "action-rotate",
];

/// Checks the tree page's nodes (as [`NODES_JS`] reads them) against `want`: each workflow once,
/// with its status, and no other.
fn nodes_as_wanted(v: &Value, want: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let nodes = v.as_array().cloned().unwrap_or_default();
    let mut seen = BTreeMap::new();
    let mut twice = Vec::new();
    for n in &nodes {
        let wid = n[0].as_str().unwrap_or_default().to_string();
        let status = n[1].as_str().unwrap_or_default().to_string();
        if seen.insert(wid.clone(), status).is_some() {
            twice.push(wid);
        }
    }
    if !twice.is_empty() {
        bail!("shown more than once: {twice:?}");
    }
    let wrong: Vec<String> = want
        .iter()
        .filter(|(w, s)| seen.get(*w) != Some(*s))
        .map(|(w, s)| format!("{w}: {:?}, not {s}", seen.get(w)))
        .take(5)
        .collect();
    let extra: Vec<&String> = seen.keys().filter(|w| !want.contains_key(*w)).collect();
    if wrong.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        bail!(
            "{} nodes; wrong or missing: {wrong:?}; not in the tree: {extra:?}",
            nodes.len()
        )
    }
}

/// 1 root, 10 listings, 100 photos; one listing paused (its photos with it): the tree page shows
/// every workflow exactly once with the status its `status` query gives, the trees page shows the
/// root, and the entity page has its sections.
pub async fn the_tree_view_shows_every_workflow_of_a_111_workflow_tree_with_its_status(
    env: &Env,
) -> anyhow::Result<()> {
    let ex = Explorer::start(env, "explorer-111").await?;
    let u = env.id("ex111");
    let root = ex
        .start_user(env, &u, user_tree(&u, 10, 10), json!({}))
        .await?;
    let paused_listing = format!("Listing-{u}-l3");
    tree_statuses(env, &root, 111, |_| "running", Duration::from_secs(120)).await?;
    ops::signal(&env.client, &paused_listing, "pause", None).await?;
    let under_paused = |w: &str| w == paused_listing || w.starts_with(&format!("Photo-{u}-l3-p"));
    let want = tree_statuses(
        env,
        &root,
        111,
        |w| if under_paused(w) { "paused" } else { "running" },
        Duration::from_secs(60),
    )
    .await?;
    ensure_eq!(want.values().filter(|s| *s == "paused").count(), 11);
    // (A relative directory is taken from the workspace root: cargo runs the tests in tests/.)
    let shots = std::env::var_os("E2E_EXPLORER_SCREENSHOTS").map(|d| root_dir().join(d));
    let mut roots = vec![(root.clone(), "running")];
    if shots.is_some() {
        // For the trees page's picture, two more roots: a small tree, and a paused one.
        let (small, held) = (env.id("exsmall"), env.id("exheld"));
        let small = ex
            .start_user(env, &small, user_tree(&small, 2, 1), json!({}))
            .await?;
        let held = ex
            .start_user(env, &held, user_tree(&held, 1, 0), json!({}))
            .await?;
        tree_statuses(env, &held, 2, |_| "running", Duration::from_secs(60)).await?;
        ops::signal(&env.client, &held, "pause", None).await?;
        tree_statuses(env, &small, 5, |_| "running", Duration::from_secs(60)).await?;
        tree_statuses(env, &held, 2, |_| "paused", Duration::from_secs(60)).await?;
        roots.extend([(small, "running"), (held, "paused")]);
    }
    let b = Browser::start(&env.log_dir, &format!("explorer-111-{}", env.tag)).await?;
    let res = async {
        b.set_window_size(1280, 900).await?;
        // The tree view: every workflow once, with its status; each names its entity.
        b.goto(&ex.url(&format!("/tree/{}", browser::enc(&root))))
            .await?;
        let nodes = b
            .wait_js(
                "the tree's 111 nodes with their statuses",
                Duration::from_secs(30),
                NODES_JS,
                json!([]),
                |v| nodes_as_wanted(v, &want),
            )
            .await?;
        for n in nodes.as_array().into_iter().flatten() {
            let wid = n[0].as_str().unwrap_or_default();
            let entity = n[2].as_str().unwrap_or_default();
            if entity.is_empty() || !wid.starts_with(&format!("{entity}-")) {
                bail!("node {wid} has entity {entity:?}");
            }
        }
        ensure_eq!(b.exec(MISSING_JS, json!([["search"]])).await?, json!([]));
        b.screenshot_into(shots.as_deref(), "explorer-tree.png")
            .await?;
        // The trees page: a row for the root, with its status, and the counts. (Narrowed to the
        // entity: the page lists the roots among the first 5,000 workflows visibility lists, and
        // the suite's namespace holds more.)
        eventually(Duration::from_secs(30), || async {
            b.goto(&ex.url("/?entity=User")).await?;
            for (r, want) in &roots {
                let s = b.exec(ROOT_ROW_JS, json!([r])).await?;
                if s != json!(want) {
                    let errors = b.exec(ERRORS_JS, json!([])).await?;
                    bail!("the trees page shows {r} as {s}, not {want} (errors shown: {errors})");
                }
            }
            Ok(())
        })
        .await?;
        ensure_eq!(
            b.exec(MISSING_JS, json!([["status-counts"]])).await?,
            json!([])
        );
        b.screenshot_into(shots.as_deref(), "explorer-trees.png")
            .await?;
        // The entity page of the paused listing: its sections, and its status.
        b.goto(&ex.url(&format!("/entity/{}", browser::enc(&paused_listing))))
            .await?;
        b.wait_js(
            "the entity page's sections",
            Duration::from_secs(15),
            MISSING_JS,
            json!([ENTITY_PARTS]),
            |v| match v.as_array() {
                Some(a) if a.is_empty() => Ok(()),
                _ => bail!("missing: {v}"),
            },
        )
        .await?;
        b.wait_text("status", "paused", Duration::from_secs(15))
            .await?;
        let input_type =
            "return document.querySelector('[data-testid=\"rotate-token-input\"]').type";
        ensure_eq!(b.exec(input_type, json!([])).await?, json!("password"));
        b.screenshot_into(shots.as_deref(), "explorer-entity.png")
            .await?;
        anyhow::Ok(())
    }
    .await;
    b.quit().await;
    res?;
    ex.worker.stop().await;
    Ok(())
}

/// The entity page of an open tree: a change made with `starter update` shows up in it without a
/// reload (the page's own state, a marker set in it, survives).
pub async fn a_change_made_with_the_cli_appears_in_the_open_entity_page_without_a_reload(
    env: &Env,
) -> anyhow::Result<()> {
    let ex = Explorer::start(env, "explorer-live").await?;
    let u = env.id("exlive");
    let l = format!("{u}-l0");
    let root = ex
        .start_user(
            env,
            &u,
            json!({"id": u, "name": "Ann", "listings": [{"id": l, "user": u}]}),
            json!({}),
        )
        .await?;
    tree_statuses(env, &root, 2, |_| "running", Duration::from_secs(60)).await?;
    let new_name = format!("Bea-{}", env.tag);
    let new_title = format!("Loft-{}", env.tag);
    let b = Browser::start(&env.log_dir, &format!("explorer-live-{}", env.tag)).await?;
    let res = async {
        b.goto(&ex.url(&format!("/entity/{}", browser::enc(&root))))
            .await?;
        b.wait_text("data", "Ann", Duration::from_secs(15)).await?;
        b.exec("window.__marker = 1; return null;", json!([]))
            .await?;
        // The root's own entity, and a listing under it (it comes back up to the root).
        let listing = format!("Listing-{l}");
        let changes = [
            (&root, json!({"data": {"id": u, "name": new_name}})),
            (
                &listing,
                json!({"data": {"id": l, "title": new_title}, "entityName": "Listing"}),
            ),
        ];
        for (wid, change) in changes {
            let (ok, out, err) = starter(env, &["update", wid, &change.to_string()]).await?;
            if !ok {
                bail!("starter update {wid} failed: {out}{err}");
            }
        }
        for want in [&new_name, &new_title] {
            b.wait_text("data", want, Duration::from_secs(30)).await?;
        }
        // Still the same page: not reloaded.
        ensure_eq!(
            b.exec("return window.__marker === 1", json!([])).await?,
            json!(true)
        );
        let navigations = "return performance.getEntriesByType('navigation').length";
        ensure_eq!(b.exec(navigations, json!([])).await?, json!(1));
        anyhow::Ok(())
    }
    .await;
    b.quit().await;
    res?;
    ex.worker.stop().await;
    Ok(())
}

/// Clicks `data-testid=testid` and accepts the `confirm()` it opens.
async fn click_confirmed(b: &Browser, testid: &str) -> anyhow::Result<()> {
    b.click(&format!("[data-testid=\"{testid}\"]")).await?;
    b.accept_dialog(Duration::from_secs(10))
        .await
        .with_context(|| format!("the confirmation of {testid}"))
}

/// A pause clicked on the root's page (its confirmation accepted) pauses the whole subtree; a
/// resume clicked there resumes it; the page shows progress and, live, the new status.
pub async fn a_pause_clicked_on_the_page_pauses_the_subtree_and_a_resume_resumes_it(
    env: &Env,
) -> anyhow::Result<()> {
    let ex = Explorer::start(env, "explorer-pause").await?;
    let u = env.id("expause");
    let root = ex
        .start_user(env, &u, user_tree(&u, 2, 2), json!({}))
        .await?;
    tree_statuses(env, &root, 7, |_| "running", Duration::from_secs(60)).await?;
    let b = Browser::start(&env.log_dir, &format!("explorer-pause-{}", env.tag)).await?;
    let res = async {
        b.goto(&ex.url(&format!("/entity/{}", browser::enc(&root))))
            .await?;
        for (action, status) in [("action-pause", "paused"), ("action-resume", "running")] {
            click_confirmed(&b, action).await?;
            b.wait_text("action-progress", "", Duration::from_secs(10))
                .await
                .with_context(|| format!("progress of {action}"))?;
            tree_statuses(env, &root, 7, |_| status, Duration::from_secs(30))
                .await
                .with_context(|| format!("after {action} clicked"))?;
            b.wait_text("status", status, Duration::from_secs(20))
                .await
                .with_context(|| format!("after {action} clicked"))?;
        }
        anyhow::Ok(())
    }
    .await;
    b.quit().await;
    res?;
    ex.worker.stop().await;
    Ok(())
}

/// A tree started with a known token, its three views opened and the token rotated through the
/// entity page's form: neither token is in any page, in any response the browser got (bodies, the
/// live updates' events, headers) or in the worker's log; the new token is in one request only,
/// the rotation's.
pub async fn the_token_is_never_in_the_pages_their_traffic_or_the_log(
    env: &Env,
) -> anyhow::Result<()> {
    let ex = Explorer::start(env, "explorer-token").await?;
    let api = FakeApi::start(50).await?;
    let u = env.id("extoken");
    let old = format!("explorer-old-token-{}", env.tag);
    let new = format!("explorer-new-token-{}", env.tag);
    api.serve_user_tree(&u, 2, 1);
    api.accept(&[&old, &new]);
    let root = ex
        .start_user(
            env,
            &u,
            user_tree(&u, 2, 1),
            json!({"apiBase": api.base, "apiToken": old}),
        )
        .await?;
    wait_tree_on_token(&env.client, &root, &old, 5, Duration::from_secs(60)).await?;
    let photo = format!("Photo-{u}-l0-p0");
    let b = Browser::start(&env.log_dir, &format!("explorer-token-{}", env.tag)).await?;
    let res = async {
        let secrets = [old.as_str(), new.as_str()];
        let mut traffic = Traffic {
            origin: ex.base.clone(),
            ..Traffic::default()
        };
        for path in [
            "/".to_string(),
            format!("/tree/{}", browser::enc(&root)),
            format!("/entity/{}", browser::enc(&photo)),
        ] {
            b.goto(&ex.url(&path)).await?;
            b.wait_js(
                "the page",
                Duration::from_secs(15),
                "return document.readyState",
                json!([]),
                |v| {
                    if v == "complete" {
                        Ok(())
                    } else {
                        bail!("{v}")
                    }
                },
            )
            .await?;
            traffic.take(&b).await?;
            traffic.check_page(&b, &path, &secrets).await?;
        }
        // Rotate through the root's page.
        b.goto(&ex.url(&format!("/entity/{}", browser::enc(&root))))
            .await?;
        b.type_into("[data-testid=\"rotate-token-input\"]", &new)
            .await?;
        click_confirmed(&b, "action-rotate").await?;
        wait_tree_on_token(&env.client, &root, &new, 5, Duration::from_secs(60)).await?;
        // The page follows live (the rotation's progress, the api section's fingerprint).
        let fp = stateful_engine::fingerprint(&new);
        b.wait_js(
            "the new fingerprint on the page",
            Duration::from_secs(20),
            "return document.body.textContent",
            json!([]),
            |v| {
                if v.as_str().is_some_and(|s| s.contains(&fp)) {
                    Ok(())
                } else {
                    bail!("fingerprint {fp} not shown")
                }
            },
        )
        .await?;
        traffic.take(&b).await?;
        traffic
            .check_page(&b, "the root's page after the rotation", &secrets)
            .await?;
        ensure_eq!(
            b.exec(
                "return document.querySelector('[data-testid=\"rotate-token-input\"]').value",
                json!([])
            )
            .await?,
            json!("")
        );
        for path in [
            "/".to_string(),
            format!("/tree/{}", browser::enc(&root)),
            format!("/entity/{}", browser::enc(&photo)),
        ] {
            b.goto(&ex.url(&path)).await?;
            traffic.take(&b).await?;
            traffic.check_page(&b, &path, &secrets).await?;
        }
        traffic.check(&secrets)?;
        // What was looked through is the real traffic: the new fingerprint came in a response
        // or an event (the api section), not only in the pages' sources.
        if !traffic
            .got
            .iter()
            .any(|(what, text)| !what.starts_with("page ") && text.contains(&fp))
        {
            bail!("no response or event the browser got shows the new fingerprint {fp}");
        }
        if traffic.event_messages == 0 {
            bail!("the browser got no live update (server-sent event) to check");
        }
        // The new token went out once, in the rotation's request body; the old one never.
        ensure_eq!(traffic.sent_with(&new), 1);
        ensure_eq!(traffic.sent_with(&old), 0);
        anyhow::Ok(())
    }
    .await;
    b.quit().await;
    res?;
    let log = std::fs::read_to_string(&ex.worker.log)?;
    for t in [&old, &new] {
        if log.contains(t.as_str()) {
            bail!(
                "the worker's log ({}) holds a token",
                ex.worker.log.display()
            );
        }
    }
    ex.worker.stop().await;
    Ok(())
}

/// The values of the page's inputs, one a line.
const INPUT_VALUES_JS: &str = "return Array.from(document.querySelectorAll('input, textarea'))\
     .map(function (i) { return i.value; }).join('\\n')";

/// What the browser got: every response (URL, headers, body), every server-sent event, from
/// Chromium's performance log and the DevTools protocol; and the request bodies it sent.
#[derive(Default)]
struct Traffic {
    /// (what, text): response headers and bodies, event data, request URLs and headers.
    got: Vec<(String, String)>,
    /// Request bodies (URL, body).
    sent: Vec<(String, String)>,
    /// The explorer's `http://HOST:PORT`.
    origin: String,
    /// Request methods by request id.
    methods: BTreeMap<String, String>,
    responses: usize,
    event_messages: usize,
}

impl Traffic {
    /// Drains the browser's performance log; fetches the body of every response in it.
    async fn take(&mut self, b: &Browser) -> anyhow::Result<()> {
        for entry in b.performance_log().await? {
            let Ok(m) =
                serde_json::from_str::<Value>(entry["message"].as_str().unwrap_or_default())
            else {
                continue;
            };
            let (method, params) = (
                m["message"]["method"].as_str().unwrap_or_default(),
                &m["message"]["params"],
            );
            match method {
                "Network.requestWillBeSent" => {
                    let mut req = params["request"].clone();
                    let url = req["url"].as_str().unwrap_or_default().to_string();
                    self.methods.insert(
                        params["requestId"].as_str().unwrap_or_default().to_string(),
                        req["method"].as_str().unwrap_or_default().to_string(),
                    );
                    if let Some(o) = req.as_object_mut() {
                        for k in ["postData", "postDataEntries"] {
                            if let Some(body) = o.remove(k) {
                                self.sent.push((url.clone(), body.to_string()));
                            }
                        }
                    }
                    self.got.push((format!("request {url}"), req.to_string()));
                }
                "Network.responseReceived" => {
                    self.responses += 1;
                    let url = params["response"]["url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    self.got
                        .push((format!("response {url}"), params["response"].to_string()));
                    let is_stream = params["response"]["mimeType"] == "text/event-stream";
                    let request_id = params["requestId"].as_str().unwrap_or_default().to_string();
                    match b
                        .cdp(
                            "Network.getResponseBody",
                            json!({"requestId": params["requestId"]}),
                        )
                        .await
                    {
                        Ok(v) => {
                            let body = if v["base64Encoded"] == true {
                                use base64::Engine;
                                let raw = base64::engine::general_purpose::STANDARD
                                    .decode(v["body"].as_str().unwrap_or_default())
                                    .unwrap_or_default();
                                String::from_utf8_lossy(&raw).to_string()
                            } else {
                                v["body"].as_str().unwrap_or_default().to_string()
                            };
                            self.got.push((format!("body of {url}"), body));
                        }
                        // The events of a stream come one by one (below); a body no longer held
                        // is fetched again.
                        Err(_) if is_stream => {}
                        // (Only the explorer's: Chromium's own pages, `chrome://...`, hold
                        // nothing of ours.)
                        Err(_) if !url.starts_with(&self.origin) => {}
                        Err(_)
                            if self.methods.get(&request_id).map(String::as_str) == Some("GET") =>
                        {
                            let body = reqwest::get(&url).await?.text().await?;
                            self.got
                                .push((format!("body of {url} (fetched again)"), body));
                        }
                        Err(e) => bail!("cannot read the body of {url}: {e:#}"),
                    }
                }
                "Network.eventSourceMessageReceived" => {
                    self.event_messages += 1;
                    self.got
                        .push(("server-sent event".into(), params.to_string()));
                }
                "Network.webSocketFrameReceived"
                | "Network.dataReceived"
                | "Network.responseReceivedExtraInfo"
                | "Network.requestWillBeSentExtraInfo" => {
                    self.got.push((method.to_string(), params.to_string()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The page as the browser holds it (source, and every input's value) holds no secret.
    async fn check_page(
        &mut self,
        b: &Browser,
        what: &str,
        secrets: &[&str],
    ) -> anyhow::Result<()> {
        let source = b.source().await?;
        let inputs = b.exec(INPUT_VALUES_JS, json!([])).await?;
        for s in secrets {
            if source.contains(s) || inputs.as_str().unwrap_or_default().contains(s) {
                bail!("{what}: the page holds a token");
            }
        }
        self.got.push((format!("page {what}"), source));
        Ok(())
    }

    fn check(&self, secrets: &[&str]) -> anyhow::Result<()> {
        if self.responses == 0 {
            bail!("no response recorded: the performance log is empty");
        }
        for (what, text) in &self.got {
            for s in secrets {
                if text.contains(s) {
                    bail!("a token is in {what}");
                }
            }
        }
        Ok(())
    }

    /// Requests whose body holds `secret`.
    fn sent_with(&self, secret: &str) -> usize {
        self.sent.iter().filter(|(_, b)| b.contains(secret)).count()
    }
}

/// `starter tree ROOT --format dot` and `--format mermaid` on a small tree with a photo shared by
/// both listings: every workflow is drawn once (the shared photo with an edge from each listing).
pub async fn starter_tree_draws_a_tree_as_dot_and_mermaid(env: &Env) -> anyhow::Result<()> {
    let u = env.id("exdot");
    let (l0, l1, p) = (format!("{u}-l0"), format!("{u}-l1"), format!("{u}-p"));
    let root = format!("User-{u}");
    ops::start(
        &env.client,
        &env.task_queue,
        &root,
        json!({"id": u, "entityName": "User", "data": {"id": u, "listings": [
            {"id": l0, "user": u, "photos": [{"id": p}]},
            {"id": l1, "user": u, "photos": [{"id": p}]},
        ]}}),
    )
    .await?;
    let (lw0, lw1, pw) = (
        format!("Listing-{l0}"),
        format!("Listing-{l1}"),
        format!("Photo-{p}"),
    );
    // Both listings hold the photo (one started it, the other adopted it).
    for lw in [&lw0, &lw1] {
        eventually(Duration::from_secs(60), || async {
            let c = ops::query(&env.client, lw, "children").await?;
            let held = c["children"].as_array().into_iter().flatten().any(|c| {
                c["workflowId"] == json!(pw) && c["status"] == "running" && c["verifying"] != true
            });
            if held {
                Ok(())
            } else {
                bail!("{lw} children: {c}")
            }
        })
        .await?;
    }
    let all = [root.as_str(), &lw0, &lw1, &pw];
    let (ok, dot, err) = starter(env, &["tree", &root, "--format", "dot"]).await?;
    if !ok {
        bail!("starter tree --format dot failed: {err}");
    }
    std::fs::write(env.log_dir.join(format!("{root}.dot")), &dot)?;
    if !dot.starts_with("digraph") || !dot.trim_end().ends_with('}') {
        bail!("not a digraph:\n{dot}");
    }
    for w in all {
        ensure_eq!(dot.matches(&format!("\"{w}\" [label=")).count(), 1);
    }
    ensure_eq!(dot.lines().filter(|l| l.contains("[label=")).count(), 4);
    for (from, to) in [(&root, &lw0), (&root, &lw1), (&lw0, &pw), (&lw1, &pw)] {
        ensure_eq!(dot.matches(&format!("\"{from}\" -> \"{to}\";")).count(), 1);
    }
    let (ok, mermaid, err) = starter(env, &["tree", &root, "--format", "mermaid"]).await?;
    if !ok {
        bail!("starter tree --format mermaid failed: {err}");
    }
    std::fs::write(env.log_dir.join(format!("{root}.mmd")), &mermaid)?;
    if !mermaid.starts_with("flowchart TD\n") {
        bail!("not a flowchart:\n{mermaid}");
    }
    let nodes: Vec<&str> = mermaid.lines().filter(|l| l.contains("[\"")).collect();
    ensure_eq!(nodes.len(), 4);
    // Labels name entity and id; ids made of letters, digits and `-` are not escaped.
    let node_of = |entity: &str, id: &str| -> anyhow::Result<String> {
        let label = format!("[\"{entity}<br/>{id}<br/>running\"]");
        let found: Vec<&&str> = nodes.iter().filter(|l| l.contains(&label)).collect();
        ensure_eq!(found.len(), 1);
        Ok(found[0]
            .trim()
            .split('[')
            .next()
            .unwrap_or_default()
            .to_string())
    };
    let (nr, n0, n1, np) = (
        node_of("User", &u)?,
        node_of("Listing", &l0)?,
        node_of("Listing", &l1)?,
        node_of("Photo", &p)?,
    );
    for (from, to) in [(&nr, &n0), (&nr, &n1), (&n0, &np), (&n1, &np)] {
        ensure_eq!(mermaid.matches(&format!("  {from} --> {to}\n")).count(), 1);
    }
    // `--json` and `--format json` print the same tree; `--format text` the outline.
    let (_, a, _) = starter(env, &["tree", &root, "--json"]).await?;
    let (_, b, _) = starter(env, &["tree", &root, "--format", "json"]).await?;
    let (a, b): (Value, Value) = (serde_json::from_str(&a)?, serde_json::from_str(&b)?);
    ensure_eq!(a["workflowId"], json!(root));
    ensure_eq!(b["children"].as_array().map(Vec::len), Some(2));
    let (_, text, _) = starter(env, &["tree", &root, "--format", "text"]).await?;
    if !text.starts_with(&format!("User {u} [running]")) {
        bail!("text outline:\n{text}");
    }
    let (ok, out, err) = starter(env, &["tree", &root, "--json", "--format", "dot"]).await?;
    if ok || !format!("{out}{err}").contains("--format") {
        bail!("--json with --format dot was not refused: {out}{err}");
    }
    Ok(())
}

/// A minimal WebDriver client (W3C protocol, over reqwest) for `chromedriver` and headless
/// Chromium, with the few Chromium extensions the tests use (the performance log, DevTools
/// commands).
mod browser {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use anyhow::{Context, anyhow, bail};
    use serde_json::{Value, json};
    use tokio::process::{Child, Command};

    pub const CHROMIUM: &str = "/usr/bin/chromium";
    pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
    /// The key of an element reference in W3C WebDriver.
    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

    /// A free loopback port (bound, then released).
    pub fn free_port() -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    /// A path segment, percent-encoded.
    pub fn enc(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// A chromedriver process and one session of headless Chromium.
    pub struct Browser {
        http: reqwest::Client,
        /// `http://127.0.0.1:PORT/session/ID`
        session: String,
        driver: Child,
        profile: PathBuf,
    }

    impl Browser {
        /// Starts chromedriver on a free port and a headless Chromium session with a fresh profile;
        /// fails (not skips) when Chromium or chromedriver is missing.
        pub async fn start(log_dir: &Path, name: &str) -> anyhow::Result<Browser> {
            for bin in [CHROMIUM, CHROMEDRIVER] {
                if !Path::new(bin).is_file() {
                    bail!(
                        "{bin} is missing: the explorer's browser tests need the packages chromium and \
                         chromium-driver; run scripts/setup (as root, or with password-less sudo)"
                    );
                }
            }
            std::fs::create_dir_all(log_dir)?;
            let profile = std::env::temp_dir().join(format!("e2e-chromium-{name}"));
            let _ = std::fs::remove_dir_all(&profile);
            std::fs::create_dir_all(&profile)?;
            let port = free_port()?;
            let log = std::fs::File::create(log_dir.join(format!("chromedriver-{name}.log")))?;
            let driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting chromedriver")?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?;
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let ready = match http.get(format!("{base}/status")).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .ok()
                        .is_some_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("chromedriver on port {port} was not ready within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "unhandledPromptBehavior": "ignore",
                "goog:loggingPrefs": {"performance": "ALL"},
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync",
                             "--disable-dev-shm-usage", "--window-size=1280,900",
                             format!("--user-data-dir={}", profile.display())],
                    "perfLoggingPrefs": {"enableNetwork": true, "enablePage": false},
                },
            }}});
            let mut b = Browser {
                http,
                session: String::new(),
                driver,
                profile,
            };
            let v = b
                .call(
                    reqwest::Method::POST,
                    &format!("{base}/session"),
                    Some(caps),
                )
                .await
                .context("starting a Chromium session")?;
            let id = v["sessionId"]
                .as_str()
                .ok_or_else(|| anyhow!("no session id in {v}"))?;
            b.session = format!("{base}/session/{id}");
            Ok(b)
        }

        async fn call(
            &self,
            method: reqwest::Method,
            url: &str,
            body: Option<Value>,
        ) -> anyhow::Result<Value> {
            let mut req = self.http.request(method.clone(), url);
            if let Some(b) = body {
                req = req.json(&b);
            } else if method == reqwest::Method::POST {
                req = req.json(&json!({}));
            }
            let r = req
                .send()
                .await
                .with_context(|| format!("WebDriver {url}"))?;
            let status = r.status();
            let v: Value = r.json().await.with_context(|| format!("WebDriver {url}"))?;
            if !status.is_success() || v["value"]["error"].is_string() {
                bail!(
                    "WebDriver {url}: {} {}",
                    v["value"]["error"].as_str().unwrap_or(status.as_str()),
                    v["value"]["message"].as_str().unwrap_or_default()
                );
            }
            Ok(v["value"].clone())
        }

        async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
            self.call(
                reqwest::Method::POST,
                &format!("{}{path}", self.session),
                Some(body),
            )
            .await
        }

        async fn get(&self, path: &str) -> anyhow::Result<Value> {
            self.call(
                reqwest::Method::GET,
                &format!("{}{path}", self.session),
                None,
            )
            .await
        }

        pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
            self.post("/url", json!({"url": url})).await.map(|_| ())
        }

        pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
            self.post("/window/rect", json!({"width": width, "height": height}))
                .await
                .map(|_| ())
        }

        /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
        pub async fn exec(&self, script: &str, args: Value) -> anyhow::Result<Value> {
            self.post("/execute/sync", json!({"script": script, "args": args}))
                .await
        }

        /// Polls `script` until `check` accepts its value, or fails with `what` and the last
        /// reason after `within`.
        pub async fn wait_js(
            &self,
            what: &str,
            within: Duration,
            script: &str,
            args: Value,
            check: impl Fn(&Value) -> anyhow::Result<()>,
        ) -> anyhow::Result<Value> {
            let deadline = Instant::now() + within;
            loop {
                let last = match self.exec(script, args.clone()).await {
                    Ok(v) => match check(&v) {
                        Ok(()) => return Ok(v),
                        Err(e) => e,
                    },
                    Err(e) => e,
                };
                if Instant::now() > deadline {
                    return Err(last.context(format!("waiting {within:?} for {what}")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        async fn find(&self, css: &str) -> anyhow::Result<String> {
            let v = self
                .post("/element", json!({"using": "css selector", "value": css}))
                .await?;
            v[ELEMENT]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("no element reference for {css}: {v}"))
        }

        pub async fn click(&self, css: &str) -> anyhow::Result<()> {
            let e = self.find(css).await?;
            self.post(&format!("/element/{e}/click"), json!({}))
                .await
                .map(|_| ())
        }

        pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
            let e = self.find(css).await?;
            self.post(&format!("/element/{e}/value"), json!({"text": text}))
                .await
                .map(|_| ())
        }

        /// Waits for a dialog (`confirm()`) and accepts it.
        pub async fn accept_dialog(&self, within: Duration) -> anyhow::Result<()> {
            let deadline = Instant::now() + within;
            loop {
                match self.get("/alert/text").await {
                    Ok(_) => return self.post("/alert/accept", json!({})).await.map(|_| ()),
                    Err(e) if Instant::now() > deadline => {
                        return Err(e.context(format!("no dialog opened within {within:?}")));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }

        /// Polls the text of the element `data-testid=testid` until it holds `needle` (and is not
        /// blank); that text.
        pub async fn wait_text(
            &self,
            testid: &str,
            needle: &str,
            within: Duration,
        ) -> anyhow::Result<String> {
            const TEXT_JS: &str = "var d = document.querySelector('[data-testid=\"' + arguments[0] \
                 + '\"]'); return d ? d.textContent : null;";
            let v = self
                .wait_js(
                    &format!("`{needle}` in {testid}"),
                    within,
                    TEXT_JS,
                    json!([testid]),
                    |v| match v.as_str() {
                        Some(t) if !t.trim().is_empty() && t.contains(needle) => Ok(()),
                        _ => bail!("{testid} shows {v}"),
                    },
                )
                .await?;
            Ok(v.as_str().unwrap_or_default().to_string())
        }

        /// A screenshot into `dir/name`, when there is a `dir`.
        pub async fn screenshot_into(&self, dir: Option<&Path>, name: &str) -> anyhow::Result<()> {
            match dir {
                Some(d) => self.screenshot(&d.join(name)).await,
                None => Ok(()),
            }
        }

        /// The page's source.
        pub async fn source(&self) -> anyhow::Result<String> {
            Ok(self
                .get("/source")
                .await?
                .as_str()
                .unwrap_or_default()
                .to_string())
        }

        pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
            use base64::Engine;
            let v = self.get("/screenshot").await?;
            let png =
                base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, png)?;
            Ok(())
        }

        /// The entries of Chromium's performance log since the last call (DevTools events as
        /// JSON text in `message`).
        pub async fn performance_log(&self) -> anyhow::Result<Vec<Value>> {
            let v = self.post("/se/log", json!({"type": "performance"})).await?;
            Ok(v.as_array().cloned().unwrap_or_default())
        }

        /// A DevTools protocol command.
        pub async fn cdp(&self, cmd: &str, params: Value) -> anyhow::Result<Value> {
            self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
                .await
        }

        /// Ends the session (Chromium exits), stops chromedriver, removes the profile.
        pub async fn quit(mut self) {
            let _ = self
                .call(reqwest::Method::DELETE, &self.session.clone(), None)
                .await;
            let _ = self.driver.kill().await;
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}
