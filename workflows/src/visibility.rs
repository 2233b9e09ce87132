//! Search attributes: what makes a StatefulWorkflow findable in Temporal's visibility
//! (`temporal workflow list --query "StatefulEntity='User' AND StatefulStatus='unauthorized'"`, the
//! UI's filters, `starter list`).
//!
//! - `StatefulEntity`, `StatefulId`: the entity's name and id;
//! - `StatefulStatus`: the status as queries and the memo show it (`running`, `paused`,
//!   `unauthorized`, `cancelled`, `completed`);
//! - `StatefulRoot`: the workflow id of its tree's root (the first of `ancestorWorkflowIds`; its own
//!   id for a root).
//!
//! All four are `Keyword`s. A run upserts the ones that differ from what the workflow holds, first
//! when it starts and then whenever its memo changes (`run::upsert_memo`).
//!
//! **Replay.** An upsert is a command: histories recorded before search attributes replay only if
//! their runs do not upsert. Each run asks the patch [`PATCH`] once, as it starts ([`decide`]); only
//! a run that holds its marker upserts. **Whether the namespace has the attributes** is part of the
//! same decision: the worker checks them at startup (and registers them when it may), and tells the
//! workflows of its process ([`crate::set_search_attributes`]). A run that is not replaying asks the
//! patch only when the worker found them, so the marker is recorded exactly when they exist; a
//! replaying run always asks it, and gets what its history recorded, whatever the worker replaying
//! it found. (This is what the SDK's experimental patch-activation callback does.) A run started
//! while the namespace lacked them never upserts; the next run (continue-as-new) decides again.

use temporalio_common::search_attributes::SearchAttributeKey;
use temporalio_sdk::WorkflowContext;

use crate::StatefulWorkflow;

/// The entity's name.
pub const ENTITY: SearchAttributeKey<String> = SearchAttributeKey::keyword("StatefulEntity");
/// The entity's id.
pub const ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("StatefulId");
/// The status (`running`, `paused`, `unauthorized`, `cancelled`, `completed`).
pub const STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("StatefulStatus");
/// The workflow id of the tree's root.
pub const ROOT: SearchAttributeKey<String> = SearchAttributeKey::keyword("StatefulRoot");

/// Every search attribute a StatefulWorkflow sets, in the order the commands list them.
pub const KEYS: [SearchAttributeKey<String>; 4] = [ENTITY, ID, STATUS, ROOT];

/// Every search attribute's name (all `Keyword`).
pub const NAMES: [&str; 4] = [
    "StatefulEntity",
    "StatefulId",
    "StatefulStatus",
    "StatefulRoot",
];

/// Their type, as `temporal operator search-attribute create --type` spells it.
pub const TYPE: &str = "Keyword";

/// The patch under which a run sets its search attributes (see the module's documentation).
pub const PATCH: &str = "search-attributes";

/// Longest value written: SQL visibility stores a `Keyword` in 255 characters (a longer value is cut,
/// on a character boundary).
pub const MAX_VALUE_BYTES: usize = 255;

/// `s`, cut to [`MAX_VALUE_BYTES`] on a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_VALUE_BYTES {
        return s.to_string();
    }
    let mut end = MAX_VALUE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The values of the four attributes: entity, id, status and root (`workflow_id` for a root).
pub fn values(
    entity: &str,
    id: &str,
    status: &str,
    ancestors: &[String],
    workflow_id: &str,
) -> [(SearchAttributeKey<String>, String); 4] {
    let root = ancestors.first().map_or(workflow_id, String::as_str);
    [
        (ENTITY, bounded(entity)),
        (ID, bounded(id)),
        (STATUS, bounded(status)),
        (ROOT, bounded(root)),
    ]
}

/// Whether this run sets its search attributes: asked once, as the run starts (see the module's
/// documentation). Not replaying, the patch is asked only when this worker found the attributes in
/// the namespace; replaying, it is always asked, and answers what the history recorded.
pub(crate) fn decide(ctx: &WorkflowContext<StatefulWorkflow>) -> bool {
    (ctx.is_replaying() || crate::search_attributes()) && ctx.patched(PATCH)
}

/// Upserts the attributes whose value differs from what the workflow holds (nothing when this run
/// does not set them, or when none changed); called once the core has started. A pure function of the history: the values come from
/// the core, what the workflow holds from its start event and its earlier upserts.
pub(crate) fn upsert(ctx: &WorkflowContext<StatefulWorkflow>) {
    if !ctx.state(|s| s.search_attributes) {
        return;
    }
    let wid = ctx.workflow_id().to_string();
    let wanted = ctx.state(|s| {
        values(
            s.core.entity(),
            s.core.id(),
            s.core.status_str(),
            s.core.ancestors(),
            &wid,
        )
    });
    let held = ctx.search_attributes();
    let updates: Vec<_> = wanted
        .into_iter()
        .filter(|(k, v)| held.get(k).as_deref() != Some(v.as_str()))
        .map(|(k, v)| k.value_set(v))
        .collect();
    if !updates.is_empty() {
        ctx.upsert_search_attributes(updates);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_first_ancestor_or_the_workflow_itself() {
        let v = values("User", "u1", "running", &[], "User-u1");
        assert_eq!(v[3].1, "User-u1");
        let v = values(
            "Like",
            "k",
            "paused",
            &["User-u1".into(), "Photo-p".into()],
            "Like-k",
        );
        assert_eq!(
            v.iter()
                .map(|(k, v)| (k.name(), v.as_str()))
                .collect::<Vec<_>>(),
            [
                ("StatefulEntity", "Like"),
                ("StatefulId", "k"),
                ("StatefulStatus", "paused"),
                ("StatefulRoot", "User-u1")
            ]
        );
        assert_eq!(KEYS.map(|k| k.name()), NAMES);
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(200); // 400 bytes
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_VALUE_BYTES && cut.len() >= MAX_VALUE_BYTES - 1);
        assert!(long.starts_with(&cut));
    }
}
