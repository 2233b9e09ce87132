//! `list`: workflows found through Temporal's visibility by their search attributes.

use serde_json::Value;
use stateful_client::visibility::{self, Filter, Listed};

use super::Ctx;
use crate::cli::ListArgs;

/// `starter list`: a table (workflow id, entity, id, status, root), or one JSON array with `--json`,
/// sorted by workflow id; at most `--limit` (the newest), and a note on stderr when more match.
pub async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let filter = Filter {
        entity: a.entity,
        id: a.id,
        status: a.status,
        root: a.root,
        open: a.open,
    };
    let query = visibility::query(&filter);
    let (mut found, more) = visibility::list(&ctx.client, &query, a.limit).await?;
    // Visibility lists the newest first; by workflow id, a tree reads better.
    found.sort_by(|x, y| x.workflow_id.cmp(&y.workflow_id));
    let v = Value::Array(found.iter().map(Listed::to_json).collect());
    ctx.print(&v, || table(&found));
    if more {
        eprintln!(
            "more than {} workflows match: narrow the filters or raise --limit (query: {query})",
            a.limit
        );
    }
    Ok(())
}

/// The text table; `-` for an attribute a workflow lacks (started before search attributes, or
/// while its namespace lacked them).
fn table(found: &[Listed]) -> String {
    let header = ["WORKFLOW ID", "ENTITY", "ID", "STATUS", "ROOT"];
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<[String; 5]> = found
        .iter()
        .map(|l| {
            [
                l.workflow_id.clone(),
                dash(&l.entity),
                dash(&l.id),
                dash(&l.status),
                dash(&l.root),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    let mut out = vec![line(header)];
    for r in &rows {
        out.push(line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
    if rows.is_empty() {
        out.push("(no workflow matches)".into());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_shows_missing_attributes_as_a_dash() {
        let l = |wid: &str, e: Option<&str>| Listed {
            workflow_id: wid.into(),
            execution_status: "Running".into(),
            entity: e.map(Into::into),
            id: e.map(|_| "u1".into()),
            status: e.map(|_| "running".into()),
            root: e.map(|_| "User-u1".into()),
        };
        let t = table(&[l("User-u1", Some("User")), l("Old-1", None)]);
        assert_eq!(
            t,
            "WORKFLOW ID  ENTITY  ID  STATUS   ROOT\n\
             User-u1      User    u1  running  User-u1\n\
             Old-1        -       -   -        -"
        );
        assert!(table(&[]).ends_with("(no workflow matches)"));
    }
}
