//! A tree as a graph: every workflow once (shared entities deduplicated by workflow id, with an edge
//! from each of their parents), subscriptions as their own edges, conflicting and skipped children
//! as marks on their parent; a layered layout (one layer per level) and its SVG, and the outline
//! list that goes with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use serde_json::{Value, json};

use crate::html::{enc, escape, status_class};

/// A child the tree could not take as a node: a conflicting or skipped one.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// `conflicting` or `skipped`.
    pub kind: String,
    /// The child's workflow id.
    pub workflow_id: String,
    /// Why.
    pub reason: String,
}

impl Mark {
    /// False for what every tree has and nobody needs to look at: a back-reference to an ancestor,
    /// skipped as circular.
    pub fn notable(&self) -> bool {
        !(self.kind == "skipped" && self.reason.starts_with("circular"))
    }
}

/// One workflow of the tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// Workflow id.
    pub workflow_id: String,
    /// Entity name.
    pub entity: String,
    /// Entity id.
    pub id: String,
    /// The `status` query's answer, `unreachable` when it failed, or (not queried) the status its
    /// parent's registry records: `completed`, `failed`, `removed`, `queued`.
    pub status: String,
    /// State version.
    pub version: Option<u64>,
    /// The API token's fingerprint (never the token).
    pub fingerprint: Option<String>,
    /// The last load's state (`ok`, `unauthorized`, ...), when it loads from an API.
    pub load_state: Option<String>,
    /// Level (the root is 0): the shortest path from the root.
    pub depth: usize,
    /// Parents' workflow ids, in the order they were found.
    pub parents: Vec<String>,
    /// Why it could not be queried.
    pub error: Option<String>,
    /// Its conflicting and skipped children.
    pub marks: Vec<Mark>,
    /// Subscribers outside the tree (workflow ids).
    pub external_subscribers: Vec<String>,
    /// True when it was not queried (an ended or queued child, as its parent's registry shows it).
    pub from_registry: bool,
}

/// An edge: parent to child, or (dashed) a subscription: from the workflow holding it to the
/// subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    /// From (parent, or the workflow that holds the subscription).
    pub from: String,
    /// To (child, or subscriber).
    pub to: String,
    /// True for a subscription.
    pub subscription: bool,
}

/// A tree.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The root's workflow id.
    pub root: String,
    /// The workflows, in the order they were found (breadth-first).
    pub nodes: Vec<Node>,
    index: HashMap<String, usize>,
    /// Edges, each once.
    pub edges: Vec<Edge>,
    edge_set: HashSet<Edge>,
    /// True when the walk stopped at its node limit.
    pub truncated: bool,
}

impl Graph {
    /// An empty graph of the tree under `root`.
    pub fn new(root: &str) -> Graph {
        Graph {
            root: root.to_string(),
            ..Default::default()
        }
    }

    /// The node of `workflow_id`, if it is in the graph.
    pub fn get(&self, workflow_id: &str) -> Option<&Node> {
        self.index.get(workflow_id).map(|&i| &self.nodes[i])
    }

    /// The node of `workflow_id`, mutable.
    pub fn get_mut(&mut self, workflow_id: &str) -> Option<&mut Node> {
        self.index.get(workflow_id).map(|&i| &mut self.nodes[i])
    }

    /// Adds `node` unless a node of its workflow id is there already; true when it was added.
    pub fn add(&mut self, node: Node) -> bool {
        if self.index.contains_key(&node.workflow_id) {
            return false;
        }
        self.index
            .insert(node.workflow_id.clone(), self.nodes.len());
        self.nodes.push(node);
        true
    }

    /// Records that `parent` has the child `child` (both in the graph): one edge, however often.
    pub fn link(&mut self, parent: &str, child: &str) {
        let e = Edge {
            from: parent.to_string(),
            to: child.to_string(),
            subscription: false,
        };
        if self.edge_set.insert(e.clone()) {
            self.edges.push(e);
            if let Some(n) = self.get_mut(child)
                && !n.parents.iter().any(|p| p == parent)
            {
                n.parents.push(parent.to_string());
            }
        }
    }

    /// Records a subscription held by `holder` for `subscriber`.
    pub fn subscribe(&mut self, holder: &str, subscriber: &str) {
        let e = Edge {
            from: holder.to_string(),
            to: subscriber.to_string(),
            subscription: true,
        };
        if self.edge_set.insert(e.clone()) {
            self.edges.push(e);
        }
    }

    /// Once every node is in: a subscription to a workflow outside the tree becomes a note on its
    /// holder, and one that only repeats a parent-child link (a child's subscription for its
    /// parent) is dropped.
    pub fn finish(&mut self) {
        let links: HashSet<(String, String)> = self
            .edges
            .iter()
            .filter(|e| !e.subscription)
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect();
        let mut external: Vec<(String, String)> = Vec::new();
        let index = &self.index;
        self.edges.retain(|e| {
            if !e.subscription {
                return true;
            }
            if !index.contains_key(&e.to) {
                external.push((e.from.clone(), e.to.clone()));
                return false;
            }
            !links.contains(&(e.to.clone(), e.from.clone()))
                && !links.contains(&(e.from.clone(), e.to.clone()))
        });
        self.edge_set = self.edges.iter().cloned().collect();
        for (holder, subscriber) in external {
            if let Some(n) = self.get_mut(&holder)
                && !n.external_subscribers.contains(&subscriber)
            {
                n.external_subscribers.push(subscriber);
            }
        }
    }

    /// Nodes by status.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for n in &self.nodes {
            *m.entry(n.status.clone()).or_default() += 1;
        }
        m
    }

    /// As JSON (`root`, `nodes`, `edges`, `counts`, `truncated`); never a token, only fingerprints.
    pub fn to_json(&self) -> Value {
        json!({
            "root": self.root,
            "truncated": self.truncated,
            "counts": self.counts(),
            "nodes": self.nodes.iter().map(|n| json!({
                "workflowId": n.workflow_id,
                "entityName": n.entity,
                "id": n.id,
                "status": n.status,
                "version": n.version,
                "tokenFingerprint": n.fingerprint,
                "loadState": n.load_state,
                "depth": n.depth,
                "parents": n.parents,
                "error": n.error,
                "externalSubscribers": n.external_subscribers,
                "marks": n.marks.iter().map(|m| json!({"kind": m.kind, "workflowId": m.workflow_id, "reason": m.reason})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "edges": self.edges.iter().map(|e| json!({
                "from": e.from, "to": e.to, "kind": if e.subscription { "subscription" } else { "child" },
            })).collect::<Vec<_>>(),
        })
    }
}

/// Where the layout puts a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pos {
    /// Left.
    pub x: f64,
    /// Top.
    pub y: f64,
}

/// Node box width and height, and the gaps between boxes.
pub const NODE_W: f64 = 190.0;
const NODE_H: f64 = 44.0;
const GAP_X: f64 = 14.0;
const GAP_Y: f64 = 46.0;
const ROW_GAP: f64 = 12.0;
const MARGIN: f64 = 12.0;
/// The most nodes side by side: a wider level wraps onto more rows.
pub const MAX_PER_ROW: usize = 24;

/// A layered layout: one band per level (wrapped past [`MAX_PER_ROW`] nodes), the nodes of a level
/// ordered by their first parent's place (then by workflow id), so that siblings stay together.
/// Answers each node's position (by index in `g.nodes`) and the drawing's width and height.
pub fn layout(g: &Graph) -> (Vec<Pos>, f64, f64) {
    let mut levels: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        levels.entry(n.depth).or_default().push(i);
    }
    let mut order: HashMap<&str, usize> = HashMap::new();
    let mut pos = vec![Pos { x: 0.0, y: 0.0 }; g.nodes.len()];
    let mut y = MARGIN;
    let mut widest = 1usize;
    for nodes in levels.values_mut() {
        nodes.sort_by(|&a, &b| {
            let key = |i: usize| {
                let n = &g.nodes[i];
                let p = n
                    .parents
                    .iter()
                    .filter_map(|p| order.get(p.as_str()))
                    .min()
                    .copied()
                    .unwrap_or(usize::MAX);
                (p, n.workflow_id.as_str())
            };
            key(a).cmp(&key(b))
        });
        let rows = nodes.len().div_ceil(MAX_PER_ROW).max(1);
        for (k, &i) in nodes.iter().enumerate() {
            order.insert(g.nodes[i].workflow_id.as_str(), k);
            let (row, col) = (k / MAX_PER_ROW, k % MAX_PER_ROW);
            pos[i] = Pos {
                x: MARGIN + col as f64 * (NODE_W + GAP_X),
                y: y + row as f64 * (NODE_H + ROW_GAP),
            };
        }
        widest = widest.max(nodes.len().min(MAX_PER_ROW));
        y += rows as f64 * (NODE_H + ROW_GAP) - ROW_GAP + GAP_Y;
    }
    let width = 2.0 * MARGIN + widest as f64 * (NODE_W + GAP_X) - GAP_X;
    let height = (y - GAP_Y + MARGIN).max(NODE_H + 2.0 * MARGIN);
    (pos, width, height)
}

/// `s` cut to `max` characters (with an ellipsis).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// What the search box matches: workflow id, entity and id, lowercased.
fn search_key(n: &Node) -> String {
    format!("{} {} {}", n.workflow_id, n.entity, n.id).to_lowercase()
}

/// The node's second line: version, token fingerprint, load state.
fn detail_line(n: &Node) -> String {
    let mut parts = Vec::new();
    if let Some(v) = n.version {
        parts.push(format!("v{v}"));
    }
    if let Some(f) = &n.fingerprint {
        parts.push(format!("key {}", clip(f, 16)));
    }
    if let Some(l) = &n.load_state
        && !l.is_empty()
    {
        parts.push(l.clone());
    }
    if parts.is_empty() {
        parts.push(n.status.clone());
    }
    parts.join(" · ")
}

/// The graph as SVG: one `<g data-testid="node">` per workflow (status colour, entity and id,
/// version, token fingerprint, load state; a link to its entity page), parent-child edges as lines,
/// subscriptions dashed.
pub fn svg(g: &Graph) -> String {
    let (pos, width, height) = layout(g);
    let mut out = String::with_capacity(g.nodes.len() * 700 + 512);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" data-testid=\"graph\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"tree of {}\">",
        escape(&g.root)
    );
    out.push_str("<g class=\"edges\">");
    for e in &g.edges {
        let (Some(&a), Some(&b)) = (g.index.get(&e.from), g.index.get(&e.to)) else {
            continue;
        };
        let (pa, pb) = (pos[a], pos[b]);
        let depth = g.nodes[a].depth.max(g.nodes[b].depth);
        let (x1, y1, x2, y2) = if e.subscription {
            // From the side of the holder to the side of the subscriber, curved.
            (
                pa.x + NODE_W,
                pa.y + NODE_H / 2.0,
                pb.x + NODE_W,
                pb.y + NODE_H / 2.0,
            )
        } else {
            (
                pa.x + NODE_W / 2.0,
                pa.y + NODE_H,
                pb.x + NODE_W / 2.0,
                pb.y,
            )
        };
        if e.subscription {
            let cx = x1.max(x2) + 40.0;
            let _ = write!(
                out,
                "<path class=\"e sub\" data-testid=\"edge-subscription\" data-from=\"{}\" data-to=\"{}\" data-edge-depth=\"{depth}\" d=\"M{x1:.0},{y1:.0} C{cx:.0},{y1:.0} {cx:.0},{y2:.0} {x2:.0},{y2:.0}\"/>",
                escape(&e.from),
                escape(&e.to)
            );
        } else {
            let _ = write!(
                out,
                "<line class=\"e\" data-testid=\"edge\" data-from=\"{}\" data-to=\"{}\" data-edge-depth=\"{depth}\" x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\"/>",
                escape(&e.from),
                escape(&e.to)
            );
        }
    }
    out.push_str("</g><g class=\"nodes\">");
    for (i, n) in g.nodes.iter().enumerate() {
        let p = pos[i];
        let mut class = format!("n st-{}", status_class(&n.status));
        if n.workflow_id == g.root {
            class.push_str(" root");
        }
        if n.marks.iter().any(Mark::notable) {
            class.push_str(" marked");
        }
        let label = if n.entity.is_empty() {
            n.workflow_id.clone()
        } else {
            format!("{} {}", n.entity, n.id)
        };
        let mut title = format!("{} [{}]", n.workflow_id, n.status);
        if n.parents.len() > 1 {
            let _ = write!(title, " — shared by {} parents", n.parents.len());
        }
        for m in n.marks.iter().filter(|m| m.notable()) {
            let _ = write!(title, "\n{} child {}: {}", m.kind, m.workflow_id, m.reason);
        }
        if let Some(e) = &n.error {
            let _ = write!(title, "\n{}", clip(e, 300));
        }
        let _ = write!(
            out,
            "<g class=\"{class}\" data-testid=\"node\" data-workflow-id=\"{wid}\" data-status=\"{status}\" data-entity=\"{entity}\" data-depth=\"{depth}\" data-parents=\"{parents}\" data-search=\"{search}\">\
<a href=\"/entity/{href}\"><title>{title}</title>\
<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{NODE_W:.0}\" height=\"{NODE_H:.0}\" rx=\"5\"/>\
<text x=\"{tx:.0}\" y=\"{ty1:.0}\">{label}</text><text class=\"sub\" x=\"{tx:.0}\" y=\"{ty2:.0}\">{detail}</text></a></g>",
            wid = escape(&n.workflow_id),
            status = escape(&n.status),
            entity = escape(&n.entity),
            depth = n.depth,
            parents = n.parents.len(),
            search = escape(&search_key(n)),
            href = enc(&n.workflow_id),
            title = escape(&title),
            x = p.x,
            y = p.y,
            tx = p.x + 7.0,
            ty1 = p.y + 17.0,
            ty2 = p.y + 34.0,
            label = escape(&clip(&label, 30)),
            detail = escape(&clip(&detail_line(n), 34)),
        );
    }
    out.push_str("</g></svg>");
    out
}

/// The tree as an indented list (depth-first, each workflow once, under its first parent; its other
/// parents named), for reading, searching and screen readers.
pub fn outline(g: &Graph) -> String {
    let mut kids: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(p) = n.parents.first() {
            kids.entry(p.as_str()).or_default().push(i);
        }
    }
    let mut out = String::from("<ul class=\"outline\" data-testid=\"outline\">");
    let mut done = vec![false; g.nodes.len()];
    // Roots of the outline: the root, then anything not reached from it (cannot happen in a walk,
    // but a node is never lost).
    let mut starts: Vec<usize> = g.index.get(&g.root).copied().into_iter().collect();
    starts.extend(
        g.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.parents.is_empty() && n.workflow_id != g.root)
            .map(|(i, _)| i),
    );
    let mut stack: Vec<(usize, usize)> = starts.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, level)) = stack.pop() {
        if std::mem::replace(&mut done[i], true) {
            continue;
        }
        let n = &g.nodes[i];
        let _ = write!(
            out,
            "<li class=\"lvl-{lvl}\" data-testid=\"outline-item\" data-workflow-id=\"{wid}\" data-status=\"{st}\" data-depth=\"{depth}\" data-search=\"{search}\">\
<a href=\"/entity/{href}\">{wid}</a> <span class=\"badge st-{cls}\">{st}</span> <span class=\"muted\">{detail}</span>",
            lvl = level.min(40),
            wid = escape(&n.workflow_id),
            st = escape(&n.status),
            depth = n.depth,
            search = escape(&search_key(n)),
            href = enc(&n.workflow_id),
            cls = status_class(&n.status),
            detail = escape(&detail_line(n)),
        );
        if n.parents.len() > 1 {
            let _ = write!(
                out,
                " <span class=\"muted\" data-testid=\"shared\">shared: also under {}</span>",
                escape(&n.parents[1..].join(", "))
            );
        }
        for m in &n.marks {
            let _ = write!(
                out,
                " <span class=\"{class}\" data-testid=\"{kind}\" data-workflow-id=\"{wid}\">{kind} child {wid}: {reason}</span>",
                class = if m.notable() { "mark" } else { "muted" },
                kind = escape(&m.kind),
                wid = escape(&m.workflow_id),
                reason = escape(&clip(&m.reason, 200)),
            );
        }
        if !n.external_subscribers.is_empty() {
            let _ = write!(
                out,
                " <span class=\"muted\">subscribers outside the tree: {}</span>",
                escape(&n.external_subscribers.join(", "))
            );
        }
        if let Some(e) = &n.error {
            let _ = write!(
                out,
                " <span class=\"mark\">{}</span>",
                escape(&clip(e, 300))
            );
        }
        out.push_str("</li>");
        for &k in kids.get(n.workflow_id.as_str()).into_iter().flatten().rev() {
            if !done[k] {
                stack.push((k, level + 1));
            }
        }
    }
    out.push_str("</ul>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(wid: &str, depth: usize, status: &str) -> Node {
        Node {
            workflow_id: wid.into(),
            entity: wid.split('-').next().unwrap_or_default().into(),
            id: wid.split('-').nth(1).unwrap_or_default().into(),
            status: status.into(),
            depth,
            version: Some(3),
            fingerprint: Some("sha256:abcd".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_shared_entity_is_drawn_once_with_an_edge_from_each_parent() {
        let mut g = Graph::new("User-u1");
        g.add(node("User-u1", 0, "running"));
        for l in ["Listing-l1", "Listing-l2"] {
            g.add(node(l, 1, "running"));
            g.link("User-u1", l);
        }
        assert!(g.add(node("Member-m1", 2, "paused")));
        assert!(!g.add(node("Member-m1", 2, "paused")));
        g.link("Listing-l1", "Member-m1");
        g.link("Listing-l2", "Member-m1");
        g.link("Listing-l2", "Member-m1");
        // The child's subscription for its parent repeats the link; one to a sibling does not.
        g.subscribe("Member-m1", "Listing-l1");
        g.subscribe("Listing-l1", "Listing-l2");
        g.subscribe("Listing-l1", "Elsewhere-x");
        g.finish();
        let s = svg(&g);
        assert_eq!(s.matches("data-workflow-id=\"Member-m1\"").count(), 1);
        assert_eq!(s.matches("data-testid=\"node\"").count(), 4);
        assert_eq!(s.matches("data-to=\"Member-m1\"").count(), 2);
        assert_eq!(s.matches("data-testid=\"edge-subscription\"").count(), 1);
        assert_eq!(g.get("Member-m1").map(|n| n.parents.len()), Some(2));
        assert_eq!(
            g.get("Listing-l1").map(|n| n.external_subscribers.clone()),
            Some(vec!["Elsewhere-x".to_string()])
        );
        let o = outline(&g);
        assert_eq!(o.matches("data-workflow-id=\"Member-m1\"").count(), 1);
        assert!(o.contains("shared: also under Listing-l2"));
        assert_eq!(g.counts().get("running"), Some(&3));
    }

    #[test]
    fn hostile_ids_are_escaped_in_the_svg_and_the_outline() {
        let mut g = Graph::new("X-<script>");
        let mut n = node("X-<script>", 0, "\"><img src=x onerror=alert(1)>");
        n.error = Some("<b>boom</b>".into());
        n.marks.push(Mark {
            kind: "skipped".into(),
            workflow_id: "Y-\"'".into(),
            reason: "<i>why</i>".into(),
        });
        g.add(n);
        g.finish();
        for h in [svg(&g), outline(&g)] {
            assert!(!h.contains("<script>"), "{h}");
            assert!(!h.contains("<img"), "{h}");
            assert!(!h.contains("<b>boom"), "{h}");
            assert!(!h.contains("<i>why"), "{h}");
            assert!(h.contains("st-other"), "{h}");
        }
    }

    #[test]
    fn a_thousand_nodes_lay_out_quickly_and_within_bounds() {
        let mut g = Graph::new("Root-r");
        g.add(node("Root-r", 0, "running"));
        let mut n = 1;
        for a in 0..10 {
            let mid = format!("A-{a}");
            g.add(node(&mid, 1, "running"));
            g.link("Root-r", &mid);
            n += 1;
            for b in 0..99 {
                let leaf = format!("B-{a}x{b}");
                g.add(node(
                    &leaf,
                    2,
                    if b % 7 == 0 { "paused" } else { "running" },
                ));
                g.link(&mid, &leaf);
                n += 1;
            }
        }
        g.finish();
        assert_eq!(n, 1001);
        let t0 = std::time::Instant::now();
        let (pos, w, h) = layout(&g);
        let s = svg(&g);
        let o = outline(&g);
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(s.matches("data-testid=\"node\"").count(), 1001);
        assert_eq!(o.matches("data-testid=\"outline-item\"").count(), 1001);
        // No two nodes overlap, and every one is inside the drawing.
        let mut seen = HashSet::new();
        for p in &pos {
            assert!(p.x >= 0.0 && p.x + NODE_W <= w && p.y >= 0.0 && p.y <= h);
            assert!(seen.insert((p.x as i64, p.y as i64)));
        }
        assert!(w <= MAX_PER_ROW as f64 * (NODE_W + 14.0) + 24.0);
        // Levels keep their order: every level-2 node is below every level-1 node.
        let lowest_mid = (1..=10)
            .map(|k| pos[g.index[&format!("A-{}", k - 1)]].y)
            .fold(0.0, f64::max);
        assert!(
            g.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.depth == 2)
                .all(|(i, _)| pos[i].y > lowest_mid)
        );
    }
}
