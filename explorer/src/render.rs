//! The pages and their live fragments, as HTML strings. Every piece of workflow data goes through
//! [`escape`] (in text and attributes) or [`enc`] (in URLs).

use std::fmt::Write;

use serde_json::Value;

use crate::data::{Entity, Trees, listed_status};
use crate::graph::{self, Graph};
use crate::html::{enc, escape, json_tree, page, status_class, text, time};

/// The statuses the filters offer (besides those the counts show).
const STATUSES: &[&str] = &[
    "running",
    "paused",
    "unauthorized",
    "completed",
    "cancelled",
];

/// `?entity=..&status=..&closed=1` for the given filters (empty ones left out).
pub fn filter_query(entity: Option<&str>, status: Option<&str>, closed: bool) -> String {
    let mut parts = Vec::new();
    if let Some(e) = entity.filter(|e| !e.is_empty()) {
        parts.push(format!("entity={}", enc(e)));
    }
    if let Some(s) = status.filter(|s| !s.is_empty()) {
        parts.push(format!("status={}", enc(s)));
    }
    if closed {
        parts.push("closed=1".to_string());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge st-{}\">{}</span>",
        status_class(status),
        escape(status)
    )
}

/// An error page's body.
pub fn error_main(title: &str, message: &str) -> String {
    format!(
        "<h1>{}</h1><section class=\"card error\" data-testid=\"error\"><p>{}</p><p><a href=\"/\">All trees</a></p></section>",
        escape(title),
        escape(message)
    )
}

/// A whole error page.
pub fn error_page(title: &str, message: &str) -> String {
    page(title, "data-page=\"error\"", &error_main(title, message))
}

/// The page that asks for the explorer's token (a form that posts it to `/login`, so that it is
/// never in a URL).
pub fn login_page(message: &str) -> String {
    page(
        "Log in",
        "data-page=\"login\"",
        &format!(
            "<h1>Log in</h1><section class=\"card\"><p>{}</p><form method=\"post\" action=\"/login\" class=\"filters\"><label>The explorer's token<input type=\"password\" name=\"token\" data-testid=\"login-token\" autocomplete=\"off\"></label><button type=\"submit\" data-testid=\"login\">Log in</button></form></section>",
            escape(message)
        ),
    )
}

/// The trees page's live part: counts by status and the roots.
pub fn trees_fragment(
    t: &Trees,
    entity: Option<&str>,
    status: Option<&str>,
    closed: bool,
) -> String {
    let mut out = String::from("<ul class=\"counts\" data-testid=\"status-counts\">");
    let total: usize = t.counts.values().sum();
    let _ = write!(
        out,
        "<li data-status=\"\"{sel}><a href=\"/{q}\">all</a> <b data-testid=\"count\">{total}</b></li>",
        q = filter_query(entity, None, closed),
        sel = if status.is_none() {
            " aria-current=\"true\""
        } else {
            ""
        },
    );
    for (s, n) in &t.counts {
        let _ = write!(
            out,
            "<li class=\"st-{cls}\" data-status=\"{s}\"{sel}><a href=\"/{q}\">{s}</a> <b data-testid=\"count\">{n}</b></li>",
            cls = status_class(s),
            sel = if status == Some(s.as_str()) {
                " aria-current=\"true\""
            } else {
                ""
            },
            s = escape(s),
            q = filter_query(entity, Some(s), closed),
        );
    }
    out.push_str("</ul>");
    if t.more {
        let _ = write!(
            out,
            "<p class=\"card error\" data-testid=\"more\">More than {max} workflows match: the counts are among the first {max} listed; narrow the filter by entity.</p>",
            max = "5,000"
        );
    }
    out.push_str("<table data-testid=\"roots\"><thead><tr><th>Root workflow</th><th>Entity</th><th>Id</th><th>Status</th><th>Execution</th></tr></thead><tbody>");
    for r in &t.roots {
        let st = listed_status(r);
        let _ = write!(
            out,
            "<tr data-testid=\"root\" data-workflow-id=\"{wid}\" data-status=\"{st}\"><td><a href=\"/tree/{href}\">{wid}</a> <a class=\"muted\" href=\"/entity/{href}\">entity</a></td><td>{entity}</td><td>{id}</td><td>{badge}</td><td class=\"muted\">{exec}</td></tr>",
            wid = escape(&r.workflow_id),
            st = escape(&st),
            href = enc(&r.workflow_id),
            entity = escape(r.entity.as_deref().unwrap_or("-")),
            id = escape(r.id.as_deref().unwrap_or("-")),
            badge = badge(&st),
            exec = escape(&r.execution_status),
        );
    }
    if t.roots.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"muted\" data-testid=\"no-roots\">No tree matches (visibility lists a workflow within a second or so of its start).</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// The trees page.
pub fn trees_page(t: &Trees, entity: Option<&str>, status: Option<&str>, closed: bool) -> String {
    let mut main =
        String::from("<h1>Trees</h1><form class=\"filters\" method=\"get\" action=\"/\">");
    let _ = write!(
        main,
        "<label>Entity<input name=\"entity\" data-testid=\"filter-entity\" value=\"{}\" placeholder=\"any\"></label>",
        escape(entity.unwrap_or_default())
    );
    main.push_str(
        "<label>Status<select name=\"status\" data-testid=\"filter-status\"><option value=\"\">any</option>",
    );
    let mut statuses: Vec<&str> = STATUSES.to_vec();
    for s in t.counts.keys() {
        if !statuses.contains(&s.as_str()) {
            statuses.push(s);
        }
    }
    for s in statuses {
        let sel = if status == Some(s) { " selected" } else { "" };
        let _ = write!(
            main,
            "<option value=\"{s}\"{sel}>{s}</option>",
            s = escape(s)
        );
    }
    let _ = write!(
        main,
        "</select></label><label><span><input type=\"checkbox\" name=\"closed\" value=\"1\" data-testid=\"filter-closed\"{}> include closed workflows</span></label><button type=\"submit\">Filter</button></form>",
        if closed { " checked" } else { "" }
    );
    let _ = write!(
        main,
        "<div id=\"live\">{}</div>",
        trees_fragment(t, entity, status, closed)
    );
    let q = filter_query(entity, status, closed);
    page(
        "Trees",
        &format!(
            "data-page=\"trees\" data-events=\"/events/trees{q}\" data-fragment=\"/fragment/trees{q}\""
        ),
        &main,
    )
}

/// The tree page's live part: counts, the graph, the outline.
pub fn tree_fragment(g: &Graph) -> String {
    let max_depth = g.nodes.iter().map(|n| n.depth).max().unwrap_or(0);
    let mut out = String::from(
        "<div class=\"toolbar\"><label>Levels shown<select data-testid=\"depth\"><option value=\"\">all</option>",
    );
    for d in 0..=max_depth.min(50) {
        let _ = write!(out, "<option value=\"{d}\">0–{d}</option>");
    }
    out.push_str("</select></label></div><ul class=\"counts\" data-testid=\"tree-counts\">");
    let running = g.nodes.iter().filter(|n| n.status == "running").count();
    let _ = write!(
        out,
        "<li>running <b data-testid=\"running-count\">{running}</b> of <b data-testid=\"node-count\">{}</b> workflows</li>",
        g.nodes.len()
    );
    for (s, n) in g.counts() {
        let _ = write!(
            out,
            "<li class=\"st-{}\" data-status=\"{s}\">{s} <b>{n}</b></li>",
            status_class(&s),
            s = escape(&s)
        );
    }
    let shared = g.nodes.iter().filter(|n| n.parents.len() > 1).count();
    if shared > 0 {
        let _ = write!(out, "<li>shared <b>{shared}</b></li>");
    }
    let marked = g
        .nodes
        .iter()
        .flat_map(|n| n.marks.iter().filter(|m| m.notable()))
        .map(|m| m.workflow_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    if marked > 0 {
        let _ = write!(
            out,
            "<li class=\"st-conflicting\">conflicting or skipped children <b>{marked}</b></li>"
        );
    }
    out.push_str("</ul>");
    if g.truncated {
        let _ = write!(
            out,
            "<p class=\"card error\" data-testid=\"truncated\">The tree is larger than this page shows: at most {} workflows, walked within {} s (a tree that takes longer is shown as far as it was walked), or a registry too large for one answer.</p>",
            crate::data::MAX_TREE_NODES,
            crate::server::WALK_LIMIT.as_secs()
        );
    }
    let _ = write!(
        out,
        "<div class=\"graph\">{}</div><p class=\"muted\">Solid lines: parent to child. Dashed: a subscription (from the workflow that holds it to its subscriber). A red dashed border: conflicting or skipped children.</p><h2>Outline</h2>{}",
        graph::svg(g),
        graph::outline(g)
    );
    out
}

/// The tree page.
pub fn tree_page(g: &Graph) -> String {
    let mut main = format!(
        "<h1>Tree <a href=\"/entity/{}\">{}</a></h1><div class=\"toolbar\"><label>Search by id<input type=\"search\" data-testid=\"search\" placeholder=\"workflow id, entity or id\" autocomplete=\"off\"></label><span class=\"muted\" data-testid=\"search-count\"></span></div>",
        enc(&g.root),
        escape(&g.root)
    );
    let _ = write!(main, "<div id=\"live\">{}</div>", tree_fragment(g));
    let root = enc(&g.root);
    page(
        &format!("Tree {}", g.root),
        &format!(
            "data-page=\"tree\" data-wid=\"{}\" data-events=\"/events/tree/{root}\" data-fragment=\"/fragment/tree/{root}\"",
            escape(&g.root)
        ),
        &main,
    )
}

fn section(testid: &str, title: &str, body: &str) -> String {
    format!("<section data-testid=\"{testid}\"><h2>{title}</h2>{body}</section>")
}

fn failed(e: &Entity, q: &str) -> String {
    e.error(q)
        .map(|m| format!("<p class=\"mark\">{}</p>", escape(m)))
        .unwrap_or_default()
}

fn kv(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<dl class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", escape(k));
    }
    out.push_str("</dl>");
    out
}

fn wid_link(wid: &str) -> String {
    format!("<a href=\"/entity/{}\">{}</a>", enc(wid), escape(wid))
}

/// The entity page's live part: every section.
pub fn entity_fragment(e: &Entity) -> String {
    let status = e.status();
    let v = e.get("version");
    let run = e.run.as_ref().ok();
    let ancestors: Vec<String> = e
        .get("ancestorWorkflowIds")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(wid_link)
        .collect();
    let mut out = String::from("<div class=\"grid\">");
    // Summary.
    out.push_str(&section(
        "summary",
        "Workflow",
        &kv(&[
            ("status", format!("<span data-testid=\"status\" data-status=\"{s}\" class=\"badge st-{c}\">{s}</span>", s = escape(&status), c = status_class(&status))),
            ("entity", escape(&text(e.get("entityName")))),
            ("id", escape(&text(e.get("id")))),
            ("state version", format!("<span data-testid=\"version\">{}</span>", escape(&text(&v["version"])))),
            ("checksum", format!("<code>{}</code>", escape(&text(&v["checksum"])))),
            ("entities", escape(&text(&v["entities"]))),
            ("changes applied", escape(&text(&v["changes"]))),
            ("runs", escape(&text(&v["runs"]))),
            ("deployment version", match run {
                Some(r) => escape(&format!("{} ({})", text(&r["deploymentVersion"]), text(&r["versioningBehavior"]))),
                None => failed_run(e),
            }),
            ("run", run.map(|r| format!("<code>{}</code>", escape(&text(&r["runId"])))).unwrap_or_default()),
            ("ancestors", if ancestors.is_empty() { "none (a root)".into() } else { ancestors.join(" → ") }),
        ]),
    ));
    // API and the last load.
    let api = e.get("api");
    let tok = e.get("apiToken");
    let mut api_body = kv(&[
        ("url", escape(&text(&api["url"]))),
        (
            "last load",
            format!(
                "<span data-testid=\"load-state\">{}</span>",
                escape(&text(&api["state"]))
            ),
        ),
        (
            "loading",
            escape(&format!(
                "{}{}",
                text(&api["loading"]),
                if api["pending"].is_null() {
                    String::new()
                } else {
                    format!(" (due: {})", text(&api["pending"]))
                }
            )),
        ),
        ("last error", escape(&text(&api["lastError"]))),
        ("last ok", escape(&time(&api["lastOkAt"]))),
        (
            "loads / failures",
            escape(&format!(
                "{} / {}",
                text(&api["loads"]),
                text(&api["failures"])
            )),
        ),
        (
            "refresh interval (ms)",
            escape(&text(&api["refreshInterval"])),
        ),
        ("next refresh", escape(&time(&api["nextRefreshAt"]))),
        ("loaded by parent", escape(&text(&api["loadedByParent"]))),
        (
            "token fingerprint",
            format!(
                "<code data-testid=\"token-fingerprint\">{}</code>",
                escape(&text(&tok["fingerprint"]))
            ),
        ),
        ("token rotations", escape(&text(&tok["rotations"]))),
    ]);
    api_body.push_str(&failed(e, "api"));
    out.push_str(&section("api", "API status and the last load", &api_body));
    // Timeline of recent changes.
    let mut tl = String::from("<ol class=\"timeline\" reversed>");
    let changes: Vec<&Value> = e
        .get("recentChanges")
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for c in changes.iter().rev() {
        let sources: Vec<String> = c["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("<code>{}</code>", escape(&text(s))))
            .collect();
        let entities: Vec<String> = c["entities"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| escape(&text(s)))
            .collect();
        let _ = write!(
            tl,
            "<li data-testid=\"change\" data-version=\"{ver}\"><b>v{ver}</b> <span class=\"muted\">{t}</span><br>from {src}: +{a} ~{u} −{d} <span class=\"muted\">{ents}</span></li>",
            ver = escape(&text(&c["version"])),
            t = escape(&time(&c["time"])),
            src = if sources.is_empty() {
                "-".into()
            } else {
                sources.join(", ")
            },
            a = escape(&text(&c["added"])),
            u = escape(&text(&c["updated"])),
            d = escape(&text(&c["deleted"])),
            ents = entities.join(", "),
        );
    }
    if changes.is_empty() {
        tl.push_str("<li class=\"muted\">no change applied yet</li>");
    }
    tl.push_str("</ol>");
    tl.push_str(&failed(e, "recentChanges"));
    out.push_str(&section("timeline", "Recent changes (newest first)", &tl));
    // Rejected inputs.
    let rej = e.get("rejected");
    let mut rb = format!(
        "<p class=\"muted\">{} rejected in all</p><table><thead><tr><th>When</th><th>Input</th><th>Reason</th><th>At version</th></tr></thead><tbody>",
        escape(&text(&rej["total"]))
    );
    for r in rej["recent"].as_array().into_iter().flatten().rev() {
        let _ = write!(
            rb,
            "<tr data-testid=\"rejection\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&time(&r["time"])),
            escape(&text(&r["signal"])),
            escape(&text(&r["reason"])),
            escape(&text(&r["version"])),
        );
    }
    rb.push_str("</tbody></table>");
    rb.push_str(&failed(e, "rejected"));
    out.push_str(&section("rejected", "Rejected inputs", &rb));
    // Children.
    let ch = e.get("children");
    let mut cb = format!(
        "<p class=\"muted\">{} children; by status: {}</p><table><thead><tr><th>Workflow</th><th>Entity</th><th>Status</th><th>Version sent</th><th>Note</th></tr></thead><tbody>",
        escape(&text(&ch["total"])),
        escape(&text(&ch["counts"]))
    );
    for c in ch["children"].as_array().into_iter().flatten() {
        let st = text(&c["status"]);
        let mut note = Vec::new();
        if c["adopted"] == Value::Bool(true) {
            note.push("adopted".to_string());
        }
        if c["queued"] == Value::Bool(true) {
            note.push("queued".to_string());
        }
        if c["verifying"] == Value::Bool(true) {
            note.push("verifying".to_string());
        }
        if let Some(x) = c["conflict"].as_str() {
            note.push(format!("conflict: {x}"));
        }
        let _ = write!(
            cb,
            "<tr data-testid=\"child\" data-workflow-id=\"{w}\" data-status=\"{st}\"><td>{link}</td><td>{ent} {id}</td><td>{b}</td><td>{vs}</td><td>{note}</td></tr>",
            w = escape(&text(&c["workflowId"])),
            st = escape(&st),
            link = wid_link(&text(&c["workflowId"])),
            ent = escape(&text(&c["entityName"])),
            id = escape(&text(&c["id"])),
            b = badge(&st),
            vs = escape(&text(&c["versionSent"])),
            note = escape(&note.join(", ")),
        );
    }
    for s in ch["skipped"].as_array().into_iter().flatten() {
        let _ = write!(
            cb,
            "<tr data-testid=\"skipped\"><td>{}</td><td></td><td>{}</td><td></td><td>{}</td></tr>",
            escape(&text(&s["workflowId"])),
            badge("skipped"),
            escape(&text(&s["reason"])),
        );
    }
    cb.push_str("</tbody></table>");
    cb.push_str(&failed(e, "children"));
    out.push_str(&section("children", "Children", &cb));
    // Subscriptions.
    let mut sb = String::from(
        "<table><thead><tr><th>Subscriber</th><th>Signal</th><th>Selector</th><th>Id</th></tr></thead><tbody>",
    );
    let subs: Vec<&Value> = e
        .get("subscriptions")
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for s in &subs {
        let _ = write!(
            sb,
            "<tr data-testid=\"subscription\"><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td class=\"muted\">{}</td></tr>",
            wid_link(&text(&s["workflowId"])),
            escape(&text(&s["signalName"])),
            escape(&text(&s["selector"])),
            escape(&text(&s["subscriptionId"])),
        );
    }
    sb.push_str("</tbody></table>");
    if subs.is_empty() {
        sb.push_str("<p class=\"muted\">none</p>");
    }
    sb.push_str(&failed(e, "subscriptions"));
    out.push_str(&section("subscriptions", "Subscriptions", &sb));
    // Checkpoints.
    let mut kb = String::from(
        "<table><thead><tr><th>When</th><th>Version</th><th>Reason</th><th>Run</th></tr></thead><tbody>",
    );
    for c in e.get("checkpoints").as_array().into_iter().flatten().rev() {
        let _ = write!(
            kb,
            "<tr data-testid=\"checkpoint\"><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&time(&c["time"])),
            escape(&text(&c["version"])),
            escape(&text(&c["reason"])),
            escape(&text(&c["runId"])),
        );
    }
    kb.push_str("</tbody></table>");
    kb.push_str(&failed(e, "checkpoints"));
    out.push_str(&section("checkpoints", "Checkpoints", &kb));
    out.push_str("</div>");
    // The state and the data, full width.
    out.push_str(&section(
        "data",
        "Data (the own entity, denormalized)",
        &format!(
            "<div class=\"json\">{}</div>{}",
            json_tree(e.get("data"), 2),
            failed(e, "data")
        ),
    ));
    out.push_str(&section(
        "state",
        "State (normalized)",
        &format!(
            "<div class=\"json\">{}</div>{}",
            json_tree(e.get("state"), 1),
            failed(e, "state")
        ),
    ));
    out
}

fn failed_run(e: &Entity) -> String {
    match &e.run {
        Err(m) => format!("<span class=\"mark\">{}</span>", escape(m)),
        Ok(_) => String::new(),
    }
}

/// The entity page: the live sections and the actions.
pub fn entity_page(e: &Entity, ui_link: &str) -> String {
    let wid = &e.workflow_id;
    let title = format!("{} {}", text(e.get("entityName")), text(e.get("id")));
    let mut main = format!(
        "<h1>{title} <span class=\"muted\">{wid}</span></h1><p><a href=\"/tree/{href}\">Tree under it</a> · <a data-testid=\"temporal-ui-link\" href=\"{ui}\" rel=\"noopener noreferrer\" target=\"_blank\">Open in the Temporal UI</a></p>",
        title = escape(&title),
        wid = escape(wid),
        href = enc(wid),
        ui = escape(ui_link),
    );
    main.push_str(
        "<section data-testid=\"actions\"><h2>Actions</h2><div class=\"actions\">\
<button type=\"button\" data-action=\"refresh\" data-testid=\"action-refresh\" data-confirm=\"Reload this workflow's entity from its API now\">Refresh</button>\
<button type=\"button\" data-action=\"pause\" data-testid=\"action-pause\" data-confirm=\"Pause this workflow and its whole subtree\">Pause subtree</button>\
<button type=\"button\" data-action=\"resume\" data-testid=\"action-resume\" data-confirm=\"Resume this workflow and its whole subtree\">Resume subtree</button>\
<button type=\"button\" data-action=\"validate\" data-testid=\"action-validate\" data-confirm=\"Validate the state (and, if checked, the whole tree under it)\">Validate</button>\
<label class=\"inline\"><span><input type=\"checkbox\" data-testid=\"validate-tree\" checked> whole tree</span></label>\
<form data-testid=\"rotate-form\" autocomplete=\"off\"><input type=\"password\" data-testid=\"rotate-token-input\" placeholder=\"new API token\" autocomplete=\"new-password\" spellcheck=\"false\"><button type=\"submit\" class=\"danger\" data-testid=\"action-rotate\">Rotate token</button></form>\
</div><div class=\"progress\" data-testid=\"action-progress\" role=\"status\" aria-live=\"polite\"></div></section>",
    );
    let _ = write!(main, "<div id=\"live\">{}</div>", entity_fragment(e));
    page(
        &title,
        &format!(
            "data-page=\"entity\" data-wid=\"{}\" data-events=\"/events/entity/{h}\" data-fragment=\"/fragment/entity/{h}\"",
            escape(wid),
            h = enc(wid)
        ),
        &main,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    const HOSTILE: &str = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";

    fn hostile_entity() -> Entity {
        let mut answers: BTreeMap<&'static str, Result<Value, String>> = BTreeMap::new();
        answers.insert("entityName", Ok(json!(HOSTILE)));
        answers.insert("id", Ok(json!(HOSTILE)));
        answers.insert("status", Ok(json!("running")));
        answers.insert(
            "version",
            Ok(json!({"version": 4, "checksum": HOSTILE, "entities": 2, "changes": 3, "runs": 1})),
        );
        answers.insert("state", Ok(json!({HOSTILE: {HOSTILE: HOSTILE}})));
        answers.insert("data", Ok(json!({"name": HOSTILE, "list": [HOSTILE]})));
        answers.insert("recentChanges", Ok(json!([{"version": 4, "time": 1_700_000_000_000u64, "sources": [HOSTILE], "added": 1, "updated": 0, "deleted": 0, "entities": [HOSTILE]}])));
        answers.insert("rejected", Ok(json!({"total": 1, "recent": [{"signal": HOSTILE, "reason": HOSTILE, "time": 1, "version": 2}]})));
        answers.insert("children", Ok(json!({"children": [{"workflowId": HOSTILE, "entityName": HOSTILE, "id": HOSTILE, "status": "conflicting", "conflict": HOSTILE}], "skipped": [{"workflowId": HOSTILE, "reason": HOSTILE}], "counts": {"conflicting": 1}, "total": 1})));
        answers.insert("subscriptions", Ok(json!([{"workflowId": HOSTILE, "signalName": HOSTILE, "selector": HOSTILE, "subscriptionId": HOSTILE}])));
        answers.insert("api", Ok(json!({"url": HOSTILE, "state": "unauthorized", "lastError": HOSTILE, "token": {"fingerprint": "sha256:1234abcd"}})));
        answers.insert(
            "apiToken",
            Ok(json!({"fingerprint": "sha256:1234abcd", "rotations": 2})),
        );
        answers.insert("checkpoints", Ok(json!([{"runId": HOSTILE, "time": 1, "version": 1, "checksum": HOSTILE, "reason": HOSTILE}])));
        answers.insert("ancestorWorkflowIds", Ok(json!([HOSTILE])));
        answers.insert("managedPaths", Err(HOSTILE.to_string()));
        Entity {
            workflow_id: HOSTILE.into(),
            answers,
            run: Err(HOSTILE.into()),
        }
    }

    fn assert_clean(h: &str) {
        assert!(!h.contains("<script>alert"), "unescaped script in {h}");
        assert!(!h.contains("<img"), "unescaped img in {h}");
        assert!(!h.contains("\"'>"), "an attribute could be ended in {h}");
    }

    #[test]
    fn the_entity_page_escapes_hostile_data_everywhere() {
        let e = hostile_entity();
        let h = entity_page(
            &e,
            &format!("http://ui/namespaces/default/workflows/{}", enc(HOSTILE)),
        );
        assert_clean(&h);
        for id in [
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
            "action-progress",
            "children",
            "subscriptions",
            "checkpoints",
        ] {
            assert!(h.contains(&format!("data-testid=\"{id}\"")), "no {id}");
        }
        // The only script is the static one; nothing inline.
        assert_eq!(h.matches("<script").count(), 1);
        assert!(h.contains("<script src=\"/static/explorer.js\" defer></script>"));
        assert!(h.contains("sha256:1234abcd"));
        assert!(
            !h.contains("value="),
            "the rotate input never holds a value"
        );
    }

    #[test]
    fn the_trees_page_escapes_and_marks_rows() {
        let t = crate::data::roots_of(
            vec![stateful_client::visibility::Listed {
                workflow_id: HOSTILE.into(),
                execution_status: "Running".into(),
                entity: Some(HOSTILE.into()),
                id: Some(HOSTILE.into()),
                status: Some(HOSTILE.into()),
                root: None,
            }],
            None,
            false,
        );
        let h = trees_page(&t, Some(HOSTILE), Some(HOSTILE), true);
        assert_clean(&h);
        assert!(h.contains("data-testid=\"status-counts\""));
        assert!(h.contains("data-testid=\"root\""));
        assert!(h.contains(&format!("href=\"/tree/{}\"", enc(HOSTILE))));
    }

    #[test]
    fn the_filters_keep_closed_workflows_asked_for() {
        assert_eq!(filter_query(None, None, false), "");
        assert_eq!(
            filter_query(Some("User"), Some("paused"), true),
            "?entity=User&status=paused&closed=1"
        );
        let t = crate::data::roots_of(Vec::new(), None, true);
        let h = trees_page(&t, None, None, true);
        assert!(h.contains("data-testid=\"filter-closed\" checked"));
        assert!(h.contains("among the first 5,000 listed"));
        assert!(h.contains("data-events=\"/events/trees?closed=1\""));
    }

    #[test]
    fn no_token_reaches_a_page() {
        // Even if a query answered a token (the workflow never does), the pages show only what
        // they name: the fingerprint.
        let mut e = hostile_entity();
        e.answers.insert(
            "api",
            Ok(json!({"token": {"fingerprint": "sha256:ff", "token": "SECRET-TOKEN-VALUE"}})),
        );
        e.answers.insert(
            "apiToken",
            Ok(json!({"fingerprint": "sha256:ff", "token": "SECRET-TOKEN-VALUE"})),
        );
        let h = entity_page(&e, "http://ui");
        assert!(!h.contains("SECRET-TOKEN-VALUE"));
        let mut g = Graph::new("A-1");
        g.add(crate::graph::Node {
            workflow_id: "A-1".into(),
            status: "running".into(),
            fingerprint: Some("sha256:ff".into()),
            ..Default::default()
        });
        g.finish();
        let h = tree_page(&g);
        assert!(h.contains("sha256:ff"));
        assert!(!h.contains("SECRET"));
    }
}
