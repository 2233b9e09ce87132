//! `tree` (show or cancel a hierarchy) and `validate`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use stateful_client::ops;
use temporalio_client::{Client, UntypedWorkflow, WorkflowCancelOptions, WorkflowDescribeOptions};

use super::Ctx;
use crate::cli::{TreeArgs, TreeFormat, ValidateArgs};

/// `starter tree`.
pub async fn tree(ctx: &Ctx, a: TreeArgs) -> anyhow::Result<()> {
    let format = match (a.format, ctx.json) {
        (None, false) => TreeFormat::Text,
        (None, true) | (Some(TreeFormat::Json), _) => TreeFormat::Json,
        (Some(f), false) => f,
        (Some(f), true) => bail!("--json asks for JSON, and --format for {f:?}: give one of them"),
    };
    if a.cancel && matches!(format, TreeFormat::Dot | TreeFormat::Mermaid) {
        bail!("--cancel prints text or JSON (--format text or json), not a graph");
    }
    let tree = collect_tree(&ctx.client, &a.workflow_id).await;
    if a.cancel {
        return cancel(ctx, &a.workflow_id, &tree, format == TreeFormat::Json).await;
    }
    match format {
        TreeFormat::Text => println!("{}", render(&tree, 0)),
        TreeFormat::Json => println!("{tree}"),
        TreeFormat::Dot => print!("{}", render_dot(&tree)),
        TreeFormat::Mermaid => print!("{}", render_mermaid(&tree)),
    }
    Ok(())
}

/// `starter tree --cancel`: cancels the root and waits until every running workflow of `tree` ended.
async fn cancel(ctx: &Ctx, workflow_id: &str, tree: &Value, json: bool) -> anyhow::Result<()> {
    let ids = all_ids(tree);
    ctx.client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id)
        .cancel(WorkflowCancelOptions::default())
        .await
        .map_err(|e| anyhow!("cannot cancel {workflow_id}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut running = 0;
        for id in &ids {
            if is_running(&ctx.client, id).await {
                running += 1;
            }
        }
        if !json {
            eprint!(
                "\rcancelling {} workflows: {} still running   ",
                ids.len(),
                running
            );
        }
        if running == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{running} workflows of the tree still run after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if json {
        println!("{}", json!({"cancelled": ids}));
    } else {
        println!("\ncancelled {} workflows", ids.len());
    }
    Ok(())
}

/// `starter validate`: exit code 1 when a check finds an error.
pub async fn validate(ctx: &Ctx, a: ValidateArgs) -> anyhow::Result<()> {
    let results = if a.tree {
        ops::walk(&ctx.client, &a.workflow_id, "validate").await
    } else {
        vec![(
            a.workflow_id.clone(),
            ops::query(&ctx.client, &a.workflow_id, "validate").await,
        )]
    };
    let mut report = Vec::new();
    let mut errors = 0;
    for (wid, r) in results {
        let v = match r {
            Ok(v) => v,
            Err(e) => {
                json!({"ok": false, "findings": [{"severity": "error", "kind": "query", "message": format!("{e:#}")}]})
            }
        };
        if v["ok"] != json!(true) {
            errors += 1;
        }
        report.push(json!({"workflowId": wid, "result": v}));
    }
    ctx.print(&json!({"ok": errors == 0, "workflows": report}), || {
        render_validation(&report, errors)
    });
    if errors > 0 {
        bail!("{errors} workflows failed validation");
    }
    Ok(())
}

/// The text form of a validation report.
fn render_validation(report: &[Value], errors: usize) -> String {
    let mut lines = Vec::new();
    for r in report {
        let v = &r["result"];
        lines.push(format!(
            "{} {}: v{} {} ({} entities)",
            if v["ok"] == json!(true) {
                "ok  "
            } else {
                "FAIL"
            },
            r["workflowId"].as_str().unwrap_or_default(),
            v["version"],
            v["checksum"].as_str().unwrap_or("-"),
            v["entities"]
        ));
        for f in v["findings"].as_array().into_iter().flatten() {
            lines.push(format!(
                "       {} {}: {}",
                f["severity"].as_str().unwrap_or_default(),
                f["kind"].as_str().unwrap_or_default(),
                f["message"].as_str().unwrap_or_default()
            ));
        }
    }
    lines.push(format!(
        "{} workflows checked, {errors} with errors",
        report.len()
    ));
    lines.join("\n")
}

/// The tree under `wid`, from each workflow's queries (breadth-first; a workflow that cannot be
/// queried shows why).
async fn collect_tree(client: &Client, wid: &str) -> Value {
    let mut node = json!({"workflowId": wid});
    for (q, key) in [
        ("entityName", "entityName"),
        ("id", "id"),
        ("status", "status"),
        ("version", "version"),
        ("apiToken", "apiToken"),
    ] {
        match ops::query(client, wid, q).await {
            Ok(v) => {
                node[key] = match key {
                    "version" => v["version"].clone(),
                    "apiToken" => v["fingerprint"].clone(),
                    _ => v,
                }
            }
            Err(e) => {
                node["error"] = json!(format!("{e:#}"));
                return node;
            }
        }
    }
    // The Worker Deployment version its run is on (describe's versioning info).
    match stateful_client::versioning::run_version(client, wid).await {
        Ok(v) => {
            node["deploymentVersion"] = json!(v.version);
            node["versioningBehavior"] = json!(v.behavior);
            if let Some(t) = v.transition {
                node["versionTransition"] = json!(t);
            }
        }
        Err(e) => node["deploymentVersion"] = json!(format!("unknown ({e:#})")),
    }
    // Subscriptions other than the ones managing parents hold (those are the children's edges).
    if let Ok(subs) = ops::query(client, wid, "subscriptions").await {
        let plain: Vec<Value> = subs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s.get("parent").is_none_or(Value::is_null))
            .map(|s| {
                json!({"workflowId": s["workflowId"], "subscriptionId": s["subscriptionId"],
                       "signalName": s["signalName"], "selector": s["selector"]})
            })
            .collect();
        if !plain.is_empty() {
            node["subscribers"] = json!(plain);
        }
    }
    let mut children = Vec::new();
    if let Ok(kids) = ops::query(client, wid, "children").await {
        for c in kids["children"].as_array().cloned().unwrap_or_default() {
            let cw = c["workflowId"].as_str().unwrap_or_default().to_string();
            if c["status"] == "running" {
                children.push(Box::pin(collect_tree(client, &cw)).await);
            } else {
                children.push(json!({"workflowId": cw, "entityName": c["entityName"], "id": c["id"], "status": c["status"], "ended": c["ended"]}));
            }
        }
    }
    node["children"] = json!(children);
    node
}

fn all_ids(tree: &Value) -> Vec<String> {
    let mut out = vec![tree["workflowId"].as_str().unwrap_or_default().to_string()];
    for c in tree["children"].as_array().into_iter().flatten() {
        if c["status"] == "running" {
            out.extend(all_ids(c));
        }
    }
    out
}

async fn is_running(client: &Client, wid: &str) -> bool {
    client
        .get_workflow_handle::<UntypedWorkflow>(wid)
        .describe(WorkflowDescribeOptions::default())
        .await
        .ok()
        .and_then(|d| {
            d.raw()
                .workflow_execution_info
                .as_ref()
                .map(|i| i.status == 1)
        })
        .unwrap_or(false)
}

fn render(node: &Value, depth: usize) -> String {
    let s = |k: &str| {
        node[k]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| node[k].to_string())
    };
    let mut line = format!(
        "{}{} {} [{}]",
        "  ".repeat(depth),
        s("entityName"),
        s("id"),
        s("status")
    );
    if node.get("version").is_some_and(|v| !v.is_null()) {
        line.push_str(&format!(" v{}", node["version"]));
    }
    if let Some(f) = node.get("apiToken").and_then(|v| v.as_str()) {
        line.push_str(&format!(" token {f}"));
    }
    if let Some(d) = node.get("deploymentVersion").and_then(|v| v.as_str()) {
        match node.get("versioningBehavior").and_then(|v| v.as_str()) {
            Some(b) if b != "unversioned" => line.push_str(&format!(" on {d} ({b})")),
            _ => line.push_str(&format!(" on {d}")),
        }
        if let Some(t) = node.get("versionTransition").and_then(|v| v.as_str()) {
            line.push_str(&format!(" -> {t}"));
        }
    }
    line.push_str(&format!("  ({})", s("workflowId")));
    if let Some(e) = node.get("error").and_then(|v| v.as_str()) {
        line.push_str(&format!("  unreachable: {e}"));
    }
    if let Some(e) = node.get("ended").and_then(|v| v.as_str()) {
        line.push_str(&format!("  ended: {e}"));
    }
    let mut out = vec![line];
    for c in node["children"].as_array().into_iter().flatten() {
        out.push(render(c, depth + 1));
    }
    out.join("\n")
}

/// One workflow of a graph (`--format dot` / `mermaid`).
struct GraphNode {
    workflow_id: String,
    entity: Option<String>,
    id: Option<String>,
    status: String,
    /// False for a subscriber found outside the tree.
    in_tree: bool,
}

/// A collected tree as a graph: every workflow once (a shared child under several parents too),
/// the parent-to-child edges, and the subscriptions (publisher to subscriber).
#[derive(Default)]
struct Graph {
    nodes: Vec<GraphNode>,
    index: std::collections::HashMap<String, usize>,
    edges: Vec<(usize, usize)>,
    subscriptions: Vec<(usize, usize)>,
    /// The edges and subscriptions drawn already.
    drawn: std::collections::HashSet<(bool, usize, usize)>,
}

impl Graph {
    fn of(tree: &Value) -> Graph {
        let mut g = Graph::default();
        g.add(tree);
        // Subscribers last: a subscriber that is in the tree is the node already there.
        let mut subs = Vec::new();
        g.collect_subscriptions(tree, &mut subs);
        for (publisher, subscriber) in subs {
            let to = match g.index.get(&subscriber) {
                Some(&i) => i,
                None => g.node(GraphNode {
                    workflow_id: subscriber,
                    entity: None,
                    id: None,
                    status: "subscriber".into(),
                    in_tree: false,
                }),
            };
            if g.drawn.insert((true, publisher, to)) {
                g.subscriptions.push((publisher, to));
            }
        }
        g
    }

    fn node(&mut self, n: GraphNode) -> usize {
        let i = self.nodes.len();
        self.index.insert(n.workflow_id.clone(), i);
        self.nodes.push(n);
        i
    }

    /// Adds `v` and what is under it (parents before children, edges in order); returns its index.
    fn add(&mut self, v: &Value) -> usize {
        let i = self.ensure(v);
        for c in v["children"].as_array().into_iter().flatten() {
            let ci = self.ensure(c);
            if self.drawn.insert((false, i, ci)) {
                self.edges.push((i, ci));
            }
            self.add(c);
        }
        i
    }

    /// The index of `v`'s workflow, added when new (a shared one keeps its first record).
    fn ensure(&mut self, v: &Value) -> usize {
        let wid = v["workflowId"].as_str().unwrap_or_default().to_string();
        if let Some(&i) = self.index.get(&wid) {
            return i;
        }
        let text = |k: &str| v[k].as_str().map(str::to_string);
        let status = text("status").unwrap_or_else(|| {
            if v.get("error").is_some() {
                "unreachable".into()
            } else {
                "unknown".into()
            }
        });
        self.node(GraphNode {
            workflow_id: wid,
            entity: text("entityName"),
            id: text("id"),
            status,
            in_tree: true,
        })
    }

    fn collect_subscriptions(&self, v: &Value, out: &mut Vec<(usize, String)>) {
        let me = self.index[v["workflowId"].as_str().unwrap_or_default()];
        for s in v["subscribers"].as_array().into_iter().flatten() {
            if let Some(w) = s["workflowId"].as_str() {
                out.push((me, w.to_string()));
            }
        }
        for c in v["children"].as_array().into_iter().flatten() {
            self.collect_subscriptions(c, out);
        }
    }

    /// A node's label lines: entity, id, status (the workflow id when entity and id are unknown).
    fn label_lines(n: &GraphNode) -> Vec<&str> {
        match (&n.entity, &n.id) {
            (Some(e), Some(i)) => vec![e, i, &n.status],
            _ => vec![&n.workflow_id, &n.status],
        }
    }
}

/// The fill and line colours of a status; the class name Mermaid uses for it (never taken from
/// the input).
fn status_style(status: &str) -> (&'static str, &'static str, &'static str) {
    match status {
        "running" => ("running", "#c8e6c9", "#2e7d32"),
        "paused" => ("paused", "#fff59d", "#f9a825"),
        "unauthorized" => ("unauthorized", "#ffcc80", "#ef6c00"),
        "queued" | "verifying" => ("pending", "#b3e5fc", "#0277bd"),
        "completed" => ("completed", "#bbdefb", "#1565c0"),
        "cancelled" | "removed" => ("ended", "#e0e0e0", "#616161"),
        "failed" | "conflicting" | "unreachable" => ("failed", "#ffcdd2", "#c62828"),
        _ => ("other", "#ffffff", "#9e9e9e"),
    }
}

/// `s` as the inside of a DOT quoted string: `\` and `"` escaped, line breaks as `\n` / `\r` (an
/// injective mapping, so distinct workflow ids stay distinct node ids).
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// `starter tree --format dot`: a Graphviz digraph; nodes are the quoted workflow ids, labelled
/// entity, id and status and coloured by status; subscriptions are dashed edges.
fn render_dot(tree: &Value) -> String {
    let g = Graph::of(tree);
    let mut out = String::from(
        "digraph tree {\n  rankdir=TB;\n  \
         node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
    );
    for n in &g.nodes {
        let (_, fill, line) = status_style(&n.status);
        let label: Vec<String> = Graph::label_lines(n).into_iter().map(dot_escape).collect();
        let dashed = if n.in_tree {
            ""
        } else {
            ", style=\"rounded,dashed\""
        };
        out.push_str(&format!(
            "  \"{}\" [label=\"{}\", fillcolor=\"{fill}\", color=\"{line}\"{dashed}];\n",
            dot_escape(&n.workflow_id),
            label.join("\\n"),
        ));
    }
    let id = |i: usize| dot_escape(&g.nodes[i].workflow_id);
    for &(p, c) in &g.edges {
        out.push_str(&format!("  \"{}\" -> \"{}\";\n", id(p), id(c)));
    }
    for &(p, s) in &g.subscriptions {
        out.push_str(&format!(
            "  \"{}\" -> \"{}\" [style=dashed, label=\"subscription\"];\n",
            id(p),
            id(s)
        ));
    }
    out.push_str("}\n");
    out
}

/// `s` for a Mermaid label: everything but letters, digits and a few plain signs as an entity code
/// (`#34;`), so quotes, brackets, braces, pipes, `<`, `#` and backticks cannot end or format it.
fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || " -_.:/@,=+".contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("#{};", c as u32));
        }
    }
    out
}

/// `starter tree --format mermaid`: a `flowchart TD`; nodes are `n0`, `n1`, ... (the ids are only
/// in the escaped labels), one class per status, subscriptions dashed.
fn render_mermaid(tree: &Value) -> String {
    let g = Graph::of(tree);
    let mut out = String::from("flowchart TD\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let label: Vec<String> = Graph::label_lines(n)
            .into_iter()
            .map(mermaid_escape)
            .collect();
        out.push_str(&format!("  n{i}[\"{}\"]\n", label.join("<br/>")));
    }
    for &(p, c) in &g.edges {
        out.push_str(&format!("  n{p} --> n{c}\n"));
    }
    for &(p, s) in &g.subscriptions {
        out.push_str(&format!("  n{p} -.->|subscription| n{s}\n"));
    }
    let mut classes: Vec<(&str, &str, &str, Vec<String>)> = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let (class, fill, line) = status_style(&n.status);
        match classes.iter_mut().find(|c| c.0 == class) {
            Some(c) => c.3.push(format!("n{i}")),
            None => classes.push((class, fill, line, vec![format!("n{i}")])),
        }
    }
    for (class, fill, line, members) in classes {
        out.push_str(&format!(
            "  classDef {class} fill:{fill},stroke:{line}\n  class {} {class}\n",
            members.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root with two children that share a grandchild, a hostile id, an ended child, an
    /// unreachable one and a subscriber outside the tree.
    fn sample() -> Value {
        let shared = json!({"workflowId": "Photo-p1", "entityName": "Photo", "id": "p1", "status": "running", "children": []});
        json!({"workflowId": "User-u1", "entityName": "User", "id": "u1", "status": "running", "children": [
            {"workflowId": "Listing-a\"b]{x}", "entityName": "Listing", "id": "a\"b]{x}", "status": "paused",
             "children": [shared.clone()],
             "subscribers": [{"workflowId": "Other-o\\1", "subscriptionId": "s"}]},
            {"workflowId": "Listing-l2", "entityName": "Listing", "id": "l2", "status": "running", "children": [shared]},
            {"workflowId": "Listing-l3", "entityName": "Listing", "id": "l3", "status": "removed", "ended": "x"},
            {"workflowId": "Listing-l4", "error": "query failed", "children": []},
        ]})
    }

    #[test]
    fn dot_draws_every_workflow_once_and_escapes_ids() {
        let dot = render_dot(&sample());
        assert!(
            dot.starts_with("digraph tree {\n") && dot.ends_with("}\n"),
            "{dot}"
        );
        let node_lines: Vec<&str> = dot.lines().filter(|l| l.contains("[label=")).collect();
        assert_eq!(node_lines.len(), 7, "{dot}");
        // The shared grandchild: one node, an edge from each parent.
        assert_eq!(dot.matches("\"Photo-p1\" [label=").count(), 1, "{dot}");
        assert!(
            dot.contains("  \"Listing-a\\\"b]{x}\" -> \"Photo-p1\";\n"),
            "{dot}"
        );
        assert!(dot.contains("  \"Listing-l2\" -> \"Photo-p1\";\n"), "{dot}");
        // The hostile id, quoted and escaped, as node id and in the label.
        assert!(
            dot.contains("  \"Listing-a\\\"b]{x}\" [label=\"Listing\\na\\\"b]{x}\\npaused\", fillcolor=\"#fff59d\""),
            "{dot}"
        );
        // Statuses coloured; the unreachable one labelled with its workflow id.
        assert!(
            dot.contains("\"User-u1\" [label=\"User\\nu1\\nrunning\", fillcolor=\"#c8e6c9\""),
            "{dot}"
        );
        assert!(
            dot.contains(
                "\"Listing-l4\" [label=\"Listing-l4\\nunreachable\", fillcolor=\"#ffcdd2\""
            ),
            "{dot}"
        );
        // The subscription: dashed, to an escaped subscriber outside the tree.
        assert!(
            dot.contains("\"Other-o\\\\1\" [label=\"Other-o\\\\1\\nsubscriber\""),
            "{dot}"
        );
        assert!(
            dot.contains("  \"Listing-a\\\"b]{x}\" -> \"Other-o\\\\1\" [style=dashed, label=\"subscription\"];\n"),
            "{dot}"
        );
        // Every quote inside a quoted string is escaped: the unescaped ones pair up on each line.
        for l in dot.lines() {
            let bare = l.replace("\\\\", "").replace("\\\"", "");
            assert_eq!(bare.matches('"').count() % 2, 0, "{l}");
        }
    }

    #[test]
    fn dot_escaping_keeps_distinct_ids_distinct() {
        let ids = ["a\\\"", "a\\", "a\"", "a\\\\", "a\n", "a\\n"];
        let escaped: std::collections::HashSet<String> =
            ids.iter().map(|i| dot_escape(i)).collect();
        assert_eq!(escaped.len(), ids.len());
        for e in &escaped {
            // No quote ends the string early, and no trailing lone backslash escapes the closing one.
            let bare = e.replace("\\\\", "").replace("\\\"", "");
            assert!(!bare.contains('"') && !bare.ends_with('\\'), "{e}");
        }
    }

    #[test]
    fn mermaid_uses_plain_node_ids_and_escaped_labels() {
        let m = render_mermaid(&sample());
        assert!(m.starts_with("flowchart TD\n"), "{m}");
        let nodes: Vec<&str> = m.lines().filter(|l| l.contains("[\"")).collect();
        assert_eq!(nodes.len(), 7, "{m}");
        for l in &nodes {
            // `  nK["..."]`: one pair of quotes, nothing Mermaid reads inside.
            let inner = l
                .trim()
                .split_once("[\"")
                .unwrap()
                .1
                .strip_suffix("\"]")
                .unwrap();
            assert!(
                !inner.contains(['"', '[', ']', '{', '}', '|', '`', '<', '>', '(', ')'])
                    || inner.contains("<br/>"),
                "{l}"
            );
            assert!(
                !inner
                    .replace("<br/>", "")
                    .contains(['"', '[', ']', '{', '}', '|', '`', '<', '>', '(', ')']),
                "{l}"
            );
        }
        assert!(
            m.contains("[\"Listing<br/>a#34;b#93;#123;x#125;<br/>paused\"]"),
            "{m}"
        );
        // The shared grandchild once, with an edge from each parent.
        assert_eq!(
            m.matches("[\"Photo<br/>p1<br/>running\"]").count(),
            1,
            "{m}"
        );
        let photo = nodes
            .iter()
            .position(|l| l.contains("Photo<br/>p1"))
            .unwrap();
        let photo = format!("n{photo}");
        assert_eq!(m.matches(&format!(" --> {photo}\n")).count(), 2, "{m}");
        assert!(m.contains("-.->|subscription|"), "{m}");
        assert!(m.contains("[\"Other-o#92;1<br/>subscriber\"]"), "{m}");
        assert!(
            m.contains("classDef paused fill:#fff59d,stroke:#f9a825\n"),
            "{m}"
        );
        assert!(m.contains("classDef failed"), "{m}");
        // Every node is in exactly one class.
        let classed: usize = m
            .lines()
            .filter_map(|l| l.trim().strip_prefix("class "))
            .map(|l| l.split_once(' ').unwrap().0.split(',').count())
            .sum();
        assert_eq!(classed, 7, "{m}");
    }

    #[test]
    fn mermaid_escape_leaves_nothing_special() {
        let e = mermaid_escape("a\"b]{x}<script>`|#;&\n é");
        assert_eq!(
            e,
            "a#34;b#93;#123;x#125;#60;script#62;#96;#124;#35;#59;#38;#10; #233;"
        );
    }
}
