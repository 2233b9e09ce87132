//! What the pages show, fetched from Temporal with `stateful-client`: the roots (visibility), a tree
//! (walked with bounded concurrency), an entity (its queries). Every call has a time limit, so that
//! a hung query never hangs a page.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use stateful_client::visibility::{self, Filter, Listed};
use stateful_client::{ops, versioning};
use temporalio_client::Client;

use crate::graph::{Graph, Mark, Node};

/// Time limit of one call to Temporal.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How many workflows a tree walk queries at once.
pub const QUERIES_AT_ONCE: usize = 32;
/// The most workflows a tree page walks (a larger tree is shown in part, and says so).
pub const MAX_TREE_NODES: usize = 5_000;
/// The most workflows the trees page lists from visibility.
pub const MAX_LISTED: usize = 5_000;
/// Time limit of the trees page's visibility listing (up to [`MAX_LISTED`] workflows, in pages).
pub const LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// `f` within [`CALL_TIMEOUT`].
pub async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "{what} did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// A query, within the time limit.
pub async fn query(client: &Client, wid: &str, name: &str) -> anyhow::Result<Value> {
    timed(
        &format!("query `{name}` on {wid}"),
        ops::query(client, wid, name),
    )
    .await
}

/// True when `e` says the workflow does not exist.
pub fn not_found(e: &anyhow::Error) -> bool {
    let t = format!("{e:#}");
    t.contains("not found") || t.contains("NotFound") || t.contains("not exist")
}

/// The trees page: the roots visibility lists (workflows whose `StatefulRoot` is their own id),
/// filtered by entity and status, with counts by status (over the entity filter only).
#[derive(Debug, Clone, Default)]
pub struct Trees {
    /// The roots that pass the filters, by workflow id.
    pub roots: Vec<Listed>,
    /// Roots by status (before the status filter).
    pub counts: BTreeMap<String, usize>,
    /// True when visibility matched more than [`MAX_LISTED`] workflows.
    pub more: bool,
}

impl Trees {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "roots": self.roots.iter().map(Listed::to_json).collect::<Vec<_>>(),
            "counts": self.counts,
            "more": self.more,
        })
    }
}

/// The status a listed workflow shows: its `StatefulStatus`, else Temporal's execution status.
pub fn listed_status(l: &Listed) -> String {
    l.status
        .clone()
        .unwrap_or_else(|| l.execution_status.to_lowercase())
}

/// Lists the roots: open workflows only, unless `closed`.
pub async fn trees(
    client: &Client,
    entity: Option<&str>,
    status: Option<&str>,
    closed: bool,
) -> anyhow::Result<Trees> {
    let q = visibility::query(&Filter {
        entity: entity.map(str::to_string),
        open: !closed,
        ..Default::default()
    });
    let (listed, more) =
        match tokio::time::timeout(LIST_TIMEOUT, visibility::list(client, &q, MAX_LISTED)).await {
            Ok(r) => r?,
            Err(_) => anyhow::bail!(
                "visibility did not list the workflows within {} s",
                LIST_TIMEOUT.as_secs()
            ),
        };
    Ok(roots_of(listed, status, more))
}

/// The roots among `listed` (a workflow without `StatefulRoot` counts as one), counted by status,
/// then filtered by `status`.
pub fn roots_of(listed: Vec<Listed>, status: Option<&str>, more: bool) -> Trees {
    let mut roots: Vec<Listed> = listed
        .into_iter()
        .filter(|l| l.root.as_deref().is_none_or(|r| r == l.workflow_id))
        .collect();
    roots.sort_by(|a, b| a.workflow_id.cmp(&b.workflow_id));
    roots.dedup_by(|a, b| a.workflow_id == b.workflow_id);
    let mut counts = BTreeMap::new();
    for r in &roots {
        *counts.entry(listed_status(r)).or_default() += 1;
    }
    if let Some(s) = status.filter(|s| !s.is_empty()) {
        roots.retain(|r| listed_status(r) == s);
    }
    Trees {
        roots,
        counts,
        more,
    }
}

/// One workflow's answers as the tree shows them.
struct Answers {
    status: String,
    version: Option<u64>,
    fingerprint: Option<String>,
    load_state: Option<String>,
    children: Value,
    subscriptions: Value,
    entity: Option<String>,
    id: Option<String>,
    error: Option<String>,
}

/// Queries one workflow of the tree (one query at a time: the walk's concurrency is the number of
/// workflows at once). `ident` also asks its entity name and id (the root's, which no registry
/// records).
async fn answers(client: &Client, wid: &str, ident: bool) -> Answers {
    let mut a = Answers {
        status: "unreachable".into(),
        version: None,
        fingerprint: None,
        load_state: None,
        children: Value::Null,
        subscriptions: Value::Null,
        entity: None,
        id: None,
        error: None,
    };
    // One `overview` query answers all of it (workers of 0.3.0 on); a busy worker may answer late:
    // it is asked once more before the workflow is shown as unreachable (at most twice the time
    // limit). A worker without it (an older release) is asked query by query below.
    let overview = match query(client, wid, "overview").await {
        Err(e) if format!("{e:#}").contains("did not answer within") => {
            query(client, wid, "overview").await
        }
        r => r,
    };
    match overview {
        Ok(v) => {
            a.status = v["status"].as_str().unwrap_or("unknown").to_string();
            if ident {
                a.entity = v["entityName"].as_str().map(str::to_string);
                a.id = v["id"].as_str().map(str::to_string);
            }
            a.version = v["version"]["version"].as_u64();
            a.fingerprint = v["api"]["token"]["fingerprint"]
                .as_str()
                .map(str::to_string);
            if !v["api"]["url"].is_null() {
                a.load_state = v["api"]["state"].as_str().map(str::to_string);
            }
            a.children = v["children"].clone();
            a.subscriptions = v["subscriptions"].clone();
            return a;
        }
        Err(e) if format!("{e:#}").contains("did not answer within") => {
            a.error = Some(format!("{e:#}"));
            return a;
        }
        Err(_) => {}
    }
    let status = match query(client, wid, "status").await {
        Err(e) if format!("{e:#}").contains("did not answer within") => {
            query(client, wid, "status").await
        }
        r => r,
    };
    match status {
        Ok(v) => a.status = v.as_str().unwrap_or("unknown").to_string(),
        Err(e) => {
            a.error = Some(format!("{e:#}"));
            return a;
        }
    }
    if ident {
        a.entity = query(client, wid, "entityName")
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        a.id = query(client, wid, "id")
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
    }
    if let Ok(v) = query(client, wid, "version").await {
        a.version = v["version"].as_u64();
    }
    if let Ok(v) = query(client, wid, "api").await {
        a.fingerprint = v["token"]["fingerprint"].as_str().map(str::to_string);
        if !v["url"].is_null() {
            a.load_state = v["state"].as_str().map(str::to_string);
        }
    }
    match query(client, wid, "children").await {
        Ok(v) => a.children = v,
        Err(e) => a.error = Some(format!("its children could not be listed: {e:#}")),
    }
    if let Ok(v) = query(client, wid, "subscriptions").await {
        a.subscriptions = v;
    }
    a
}

/// Walks the tree under `root` level by level ([`QUERIES_AT_ONCE`] workflows at once), as
/// [`ops::walk`] does, but keeping what the page shows: each workflow once (a shared one with all
/// its parents), subscriptions, conflicting and skipped children; ended and queued children as
/// their parent's registry records them (not queried; a workflow one parent records ended or queued
/// and another running is queried). Stops at [`MAX_TREE_NODES`], or at `deadline` (the graph is
/// then `truncated`: what was not walked shows as its parent's registry records it).
pub async fn tree(client: &Client, root: &str, deadline: tokio::time::Instant) -> Graph {
    let mut g = Graph::new(root);
    g.add(Node {
        workflow_id: root.to_string(),
        ..Default::default()
    });
    let mut level = vec![root.to_string()];
    let mut depth = 0;
    while !level.is_empty() {
        let mut stream = futures::stream::iter(level)
            .map(|wid| async move {
                let a = answers(client, &wid, depth == 0).await;
                (wid, a)
            })
            .buffer_unordered(QUERIES_AT_ONCE);
        let mut results: Vec<(String, Answers)> = Vec::new();
        let mut late = false;
        loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(r)) => results.push(r),
                Ok(None) => break,
                Err(_) => {
                    late = true;
                    break;
                }
            }
        }
        drop(stream);
        if late {
            g.truncated = true;
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        let mut next = Vec::new();
        for (wid, a) in results {
            if let Some(n) = g.get_mut(&wid) {
                n.status = a.status;
                n.version = a.version;
                n.fingerprint = a.fingerprint;
                n.load_state = a.load_state;
                n.error = a.error;
                if let Some(e) = a.entity {
                    n.entity = e;
                }
                if let Some(i) = a.id {
                    n.id = i;
                }
            }
            for c in a.children["children"].as_array().into_iter().flatten() {
                let Some(cw) = c["workflowId"].as_str() else {
                    continue;
                };
                let status = c["status"].as_str().unwrap_or_default();
                if status == "conflicting" {
                    if let Some(n) = g.get_mut(&wid) {
                        n.marks.push(Mark {
                            kind: "conflicting".into(),
                            workflow_id: cw.to_string(),
                            reason: c["conflict"]
                                .as_str()
                                .unwrap_or("another workflow runs under its id")
                                .to_string(),
                        });
                    }
                    continue;
                }
                let running_here = status == "running" && c["queued"] != json!(true);
                if running_here
                    && let Some(n) = g.get_mut(cw)
                    && n.from_registry
                {
                    // Another parent recorded it ended or queued; this one runs it: query it.
                    n.from_registry = false;
                    n.status = "running".into();
                    next.push(cw.to_string());
                }
                if g.get(cw).is_none() {
                    if g.nodes.len() >= MAX_TREE_NODES {
                        g.truncated = true;
                        continue;
                    }
                    let queued = c["queued"] == json!(true);
                    let ended = status != "running";
                    g.add(Node {
                        workflow_id: cw.to_string(),
                        entity: c["entityName"].as_str().unwrap_or_default().to_string(),
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        status: if queued && !ended {
                            "queued".into()
                        } else {
                            status.to_string()
                        },
                        depth: depth + 1,
                        from_registry: ended || queued,
                        ..Default::default()
                    });
                    if !ended && !queued {
                        next.push(cw.to_string());
                    }
                }
                g.link(&wid, cw);
            }
            for s in a.children["skipped"].as_array().into_iter().flatten() {
                if let Some(n) = g.get_mut(&wid) {
                    n.marks.push(Mark {
                        kind: "skipped".into(),
                        workflow_id: s["workflowId"].as_str().unwrap_or_default().to_string(),
                        reason: s["reason"].as_str().unwrap_or_default().to_string(),
                    });
                }
            }
            if a.children["truncated"] == json!(true) {
                g.truncated = true;
            }
            for s in a.subscriptions.as_array().into_iter().flatten() {
                if let Some(sub) = s["workflowId"].as_str()
                    && sub != wid
                {
                    g.subscribe(&wid, sub);
                }
            }
        }
        level = if late { Vec::new() } else { next };
        depth += 1;
    }
    g.finish();
    g
}

/// Every running workflow of the subtree under `root` and its `status` (`None` when it does not
/// answer), walked level by level through `children` queries, [`QUERIES_AT_ONCE`] workflows at once
/// (at most [`MAX_TREE_NODES`]).
pub async fn statuses(client: &Client, root: &str) -> Vec<(String, Option<String>)> {
    walk_query(client, root, "status")
        .await
        .into_iter()
        .map(|(w, r)| (w, r.ok().and_then(|v| v.as_str().map(str::to_string))))
        .collect()
}

/// Every running workflow of the subtree under `root` (itself first) and its answer to `name`,
/// walked level by level through `children` queries, [`QUERIES_AT_ONCE`] workflows at once (at
/// most [`MAX_TREE_NODES`]), each query within [`CALL_TIMEOUT`]. The caller bounds the whole walk.
pub async fn walk_query(
    client: &Client,
    root: &str,
    name: &str,
) -> Vec<(String, anyhow::Result<Value>)> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    seen.insert(root.to_string());
    let mut level = vec![root.to_string()];
    while !level.is_empty() && out.len() < MAX_TREE_NODES {
        let results: Vec<_> = futures::stream::iter(level)
            .map(|wid| async move {
                let answer = query(client, &wid, name).await;
                let kids = match (&answer, name) {
                    (Err(_), "status") => None,
                    _ => query(client, &wid, "children").await.ok(),
                };
                (wid, answer, kids)
            })
            .buffer_unordered(QUERIES_AT_ONCE)
            .collect()
            .await;
        let mut next = Vec::new();
        for (wid, answer, kids) in results {
            for c in kids
                .as_ref()
                .and_then(|k| k["children"].as_array())
                .into_iter()
                .flatten()
            {
                if c["status"] == "running"
                    && c["queued"] != json!(true)
                    && let Some(w) = c["workflowId"].as_str()
                    && seen.insert(w.to_string())
                {
                    next.push(w.to_string());
                }
            }
            out.push((wid, answer));
        }
        level = next;
    }
    out
}

/// `v` (an `api` or `apiToken` answer) with nothing of its token but the fingerprint and the
/// rotation count: the workflows never answer the token, and the explorer does not pass one on
/// if one ever did.
pub fn redact_token(mut v: Value) -> Value {
    let keep = |t: &Value| json!({"fingerprint": t["fingerprint"], "rotations": t["rotations"]});
    if v.get("token").is_some() {
        v["token"] = keep(&v["token"]);
    } else if v.is_object() {
        v = keep(&v);
    }
    v
}

/// The queries the entity page shows, in its order.
pub const ENTITY_QUERIES: &[&str] = &[
    "entityName",
    "id",
    "status",
    "version",
    "state",
    "data",
    "recentChanges",
    "rejected",
    "children",
    "subscriptions",
    "api",
    "apiToken",
    "checkpoints",
    "ancestorWorkflowIds",
    "managedPaths",
];

/// An entity: each query's answer (or why it failed), and its run's deployment version.
#[derive(Debug, Clone)]
pub struct Entity {
    /// The workflow id.
    pub workflow_id: String,
    /// By query name.
    pub answers: BTreeMap<&'static str, Result<Value, String>>,
    /// Describe's versioning info (`runId`, `running`, `deploymentVersion`, ...).
    pub run: Result<Value, String>,
}

impl Entity {
    /// A query's answer, or null.
    pub fn get(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        match self.answers.get(name) {
            Some(Ok(v)) => v,
            _ => &NULL,
        }
    }

    /// Why a query failed.
    pub fn error(&self, name: &str) -> Option<&str> {
        match self.answers.get(name) {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// The status query's answer, or `unreachable`.
    pub fn status(&self) -> String {
        self.get("status")
            .as_str()
            .unwrap_or("unreachable")
            .to_string()
    }

    /// As JSON: every answer (the `api` and `apiToken` ones hold the token's fingerprint, never the
    /// token), and errors as `{"error": ...}`.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("workflowId".into(), json!(self.workflow_id));
        for (k, v) in &self.answers {
            m.insert(
                (*k).to_string(),
                match v {
                    Ok(v) => v.clone(),
                    Err(e) => json!({"error": e}),
                },
            );
        }
        m.insert(
            "run".into(),
            match &self.run {
                Ok(v) => v.clone(),
                Err(e) => json!({"error": e}),
            },
        );
        Value::Object(m)
    }
}

/// Fetches an entity (all its queries at once); `Err` when the workflow does not exist or does not
/// answer at all.
pub async fn entity(client: &Client, wid: &str) -> anyhow::Result<Entity> {
    let status = query(client, wid, "status").await?;
    let describe = format!("describe of {wid}");
    let (answers, run) = futures::join!(
        futures::future::join_all(ENTITY_QUERIES.iter().filter(|q| **q != "status").map(
            |q| async move {
                (
                    *q,
                    query(client, wid, q).await.map_err(|e| format!("{e:#}")),
                )
            }
        )),
        timed(&describe, versioning::run_version(client, wid))
    );
    let mut e = Entity {
        workflow_id: wid.to_string(),
        answers: answers.into_iter().collect(),
        run: run.map(|r| r.to_json()).map_err(|e| format!("{e:#}")),
    };
    e.answers.insert("status", Ok(status));
    for q in ["api", "apiToken"] {
        if let Some(Ok(v)) = e.answers.get_mut(q) {
            *v = redact_token(v.take());
        }
    }
    Ok(e)
}

/// A short hash of `s` (stamps are compared, never shown).
fn digest(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..16])
}

/// What changes when an entity changes, from one `overview` query (status, version and change
/// count, the API's load, loads, failures, last error and token fingerprint, children,
/// subscriptions, hooks) and its rejected inputs. Two equal stamps: nothing to show anew.
pub async fn entity_stamp(client: &Client, wid: &str) -> String {
    let (o, r) = futures::join!(
        query(client, wid, "overview"),
        query(client, wid, "rejected")
    );
    let part = |r: anyhow::Result<Value>| match r {
        Ok(v) => v.to_string(),
        Err(_) => "error".to_string(),
    };
    digest(&format!(
        "{}|{}",
        part(o.map(redact_token_of_overview)),
        part(r)
    ))
}

/// An `overview` answer with nothing of its token but the fingerprint.
fn redact_token_of_overview(mut v: Value) -> Value {
    if v.get("api").is_some() {
        v["api"] = redact_token(v["api"].take());
    }
    v
}

/// What changes when a tree changes, cheaply: the root's `overview`, and visibility's listing of
/// the tree's workflows (their `StatefulStatus` and execution status; one listing).
pub async fn tree_stamp(client: &Client, root: &str) -> String {
    let q = visibility::query(&Filter {
        root: Some(root.to_string()),
        ..Default::default()
    });
    let listed = match timed("visibility", visibility::list(client, &q, MAX_TREE_NODES)).await {
        Ok((mut l, more)) => {
            l.sort_by(|a, b| a.workflow_id.cmp(&b.workflow_id));
            let mut s = format!("{more}");
            for l in &l {
                s.push_str(&format!(
                    ",{}={}/{}",
                    l.workflow_id,
                    listed_status(l),
                    l.execution_status
                ));
            }
            s
        }
        Err(_) => "error".into(),
    };
    let root = match query(client, root, "overview").await {
        Ok(v) => redact_token_of_overview(v).to_string(),
        Err(_) => "error".into(),
    };
    digest(&format!("{root}#{listed}"))
}

/// What changes on the trees page: visibility's roots and statuses.
pub async fn trees_stamp(
    client: &Client,
    entity: Option<&str>,
    status: Option<&str>,
    closed: bool,
) -> String {
    match trees(client, entity, status, closed).await {
        Ok(t) => digest(&t.to_json().to_string()),
        Err(_) => "error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_the_workflows_that_are_their_own_root() {
        let l = |wid: &str, root: Option<&str>, status: &str| Listed {
            workflow_id: wid.into(),
            execution_status: "Running".into(),
            entity: Some("User".into()),
            id: None,
            status: Some(status.into()),
            root: root.map(Into::into),
        };
        let t = roots_of(
            vec![
                l("User-u2", Some("User-u2"), "paused"),
                l("Listing-l1", Some("User-u2"), "running"),
                l("User-u1", Some("User-u1"), "running"),
                l("Old-1", None, "running"),
            ],
            None,
            false,
        );
        let ids: Vec<_> = t.roots.iter().map(|r| r.workflow_id.as_str()).collect();
        assert_eq!(ids, ["Old-1", "User-u1", "User-u2"]);
        assert_eq!(t.counts.get("running"), Some(&2));
        assert_eq!(t.counts.get("paused"), Some(&1));
        let t = roots_of(
            vec![
                l("User-u2", Some("User-u2"), "paused"),
                l("User-u1", Some("User-u1"), "running"),
            ],
            Some("paused"),
            false,
        );
        assert_eq!(t.roots.len(), 1);
        assert_eq!(t.counts.len(), 2);
    }
}
