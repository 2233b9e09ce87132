//! The hooks' decisions: what is observed, coalescing, order, keys, refusals, bounds, carry-over.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use stateful_engine::Stamp;
use stateful_engine::change::{ChangeKind, Deletion, EntityChange, FieldChange};
use stateful_engine::hook::parse_hooks;
use stateful_engine::normalize::Row;

use super::*;

fn hooks(v: Value) -> Vec<Hook> {
    parse_hooks(&v).expect("test hooks")
}

fn change(fields: &[(&str, Value)], source: &str) -> EntityChange {
    EntityChange {
        kind: ChangeKind::Updated,
        fields: fields
            .iter()
            .map(|(f, v)| {
                (
                    f.to_string(),
                    FieldChange {
                        value: Some(v.clone()),
                        stamp: Stamp::new(1, "t"),
                        source: Arc::from(source),
                    },
                )
            })
            .collect(),
        deletion: None,
        previous: None,
    }
}

fn row(v: Value) -> Row {
    v.as_object().cloned().expect("an object")
}

fn target<'a>(row: Option<&'a Row>, hosts: Option<&'a BTreeSet<String>>, now: u64) -> Target<'a> {
    Target {
        workflow_id: "Listing-1",
        entity: "Listing",
        id: "1",
        base: Some("http://api.test"),
        hosts,
        token: None,
        row,
        now,
    }
}

fn observe_change(h: &mut Hooks, hs: &[Hook], before: &Row, c: &EntityChange, v: (u64, u64)) {
    h.observe(
        hs,
        &Observed {
            before: Some(before),
            change: Some(c),
            versions: v,
            now: v.1 * 10,
            ..Observed::default()
        },
    );
}

#[test]
fn a_change_is_delivered_with_old_and_new_values_origins_and_a_key() {
    let hs = hooks(json!([{"url": "{apiBase}/hooks/{id}"}]));
    let mut h = Hooks::default();
    let before = row(json!({"id": "1", "price": 10, "title": "a"}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("price", json!(12))], "client"),
        (1, 2),
    );
    let call = h.take(&hs, &target(None, None, 100)).expect("a call");
    assert_eq!(call.url, "http://api.test/hooks/1");
    assert_eq!(call.key, "Listing-1:2:1");
    assert_eq!(call.body["idempotencyKey"], json!("Listing-1:2:1"));
    assert_eq!(
        call.body["changes"],
        json!({"price": {"old": 10, "new": 12}})
    );
    assert_eq!(call.body["origins"], json!(["client"]));
    assert_eq!(call.body["version"], json!(2));
    assert!(call.body.get("data").is_none());
    // One call at a time.
    assert!(h.take(&hs, &target(None, None, 100)).is_none());
    h.done(call.seq, Ok(204), "Listing-1", 110);
    assert_eq!(h.counts(), (1, 0));
    assert!(!h.busy());
}

#[test]
fn fields_filter_what_calls_a_hook_and_what_its_body_lists() {
    let hs = hooks(json!([{"url": "http://api.test/h", "fields": ["price"]}]));
    let mut h = Hooks::default();
    let before = row(json!({"id": "1", "price": 10, "title": "a"}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("title", json!("b"))], "client"),
        (1, 2),
    );
    assert!(!h.busy(), "a change of another field does not call it");
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("title", json!("c")), ("price", json!(11))], "api"),
        (2, 3),
    );
    let call = h.take(&hs, &target(None, None, 1)).expect("a call");
    assert_eq!(
        call.body["changes"],
        json!({"price": {"old": 10, "new": 11}})
    );
}

#[test]
fn changes_made_while_a_call_is_out_coalesce_into_one_next_call() {
    let hs = hooks(json!([{"url": "http://api.test/h"}]));
    let mut h = Hooks::default();
    let mut before = row(json!({"id": "1", "price": 1}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("price", json!(2))], "client"),
        (1, 2),
    );
    let first = h.take(&hs, &target(None, None, 1)).expect("a call");
    for v in 2..10u64 {
        before.insert("price".into(), json!(v));
        observe_change(
            &mut h,
            &hs,
            &before,
            &change(&[("price", json!(v + 1))], "api"),
            (v, v + 1),
        );
    }
    assert!(
        h.take(&hs, &target(None, None, 1)).is_none(),
        "one call out at a time"
    );
    h.done(first.seq, Ok(200), "Listing-1", 2);
    let next = h
        .take(&hs, &target(None, None, 3))
        .expect("the coalesced call");
    assert_eq!(
        next.body["changes"],
        json!({"price": {"old": 2, "new": 10}})
    );
    assert_eq!(next.body["fromVersion"], json!(2));
    assert_eq!(next.body["version"], json!(10));
    assert_eq!(next.body["events"], json!(8));
    assert_eq!(next.key, "Listing-1:10:2");
    assert_eq!(h.to_json(&hs)["coalesced"], json!(7));
}

#[test]
fn deliveries_of_several_hooks_go_in_version_order() {
    let hs = hooks(json!([
        {"url": "http://api.test/a", "fields": ["a"]},
        {"url": "http://api.test/b", "fields": ["b"]}
    ]));
    let mut h = Hooks::default();
    let before = row(json!({"id": "1"}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("b", json!(1))], "client"),
        (1, 2),
    );
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("a", json!(1))], "client"),
        (2, 3),
    );
    let mut order = Vec::new();
    while let Some(c) = h.take(&hs, &target(None, None, 1)) {
        order.push((
            c.url.clone(),
            c.body["version"].as_u64().unwrap_or_default(),
        ));
        h.done(c.seq, Ok(200), "Listing-1", 1);
    }
    assert_eq!(
        order,
        vec![
            ("http://api.test/b".into(), 2),
            ("http://api.test/a".into(), 3)
        ]
    );
}

#[test]
fn refused_deliveries_are_recorded_and_do_not_block_the_next() {
    let hs = hooks(json!([{"url": "http://api.test/h"}]));
    let mut h = Hooks::default();
    let before = row(json!({"id": "1"}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("x", json!(1))], "client"),
        (1, 2),
    );
    let c = h.take(&hs, &target(None, None, 1)).expect("a call");
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("x", json!(2))], "client"),
        (2, 3),
    );
    h.done(c.seq, Ok(404), "Listing-1", 5);
    let c = h.take(&hs, &target(None, None, 6)).expect("the next call");
    h.done(c.seq, Err("Unauthorized: 401".into()), "Listing-1", 7);
    let info = h.to_json(&hs);
    assert_eq!(info["refused"], json!(2));
    assert_eq!(
        info["refusals"][0]["reason"],
        json!("the hook answered HTTP 404")
    );
    assert_eq!(info["refusals"][1]["key"], json!("Listing-1:3:2"));
    // A stale or unknown outcome changes nothing.
    h.done(99, Ok(200), "Listing-1", 8);
    assert_eq!(h.counts(), (0, 2));
}

#[test]
fn a_host_outside_the_api_hosts_or_a_missing_base_refuses_the_delivery() {
    let hs = hooks(json!([{"url": "http://evil.test/h"}, {"url": "{apiBase}/h"}]));
    let mut h = Hooks::default();
    let before = row(json!({"id": "1"}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("x", json!(1))], "client"),
        (1, 2),
    );
    let hosts = BTreeSet::from(["api.test".to_string()]);
    let c = h
        .take(&hs, &target(None, Some(&hosts), 1))
        .expect("the allowed one goes");
    assert_eq!(c.url, "http://api.test/h");
    assert_eq!(h.counts().1, 1, "the other is refused");
    h.done(c.seq, Ok(200), "Listing-1", 2);
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("x", json!(2))], "client"),
        (2, 3),
    );
    let mut t = target(None, None, 3);
    t.base = None;
    // evil.test is allowed without a host list; {apiBase} cannot be filled.
    let c = h.take(&hs, &t).expect("one call");
    assert_eq!(c.url, "http://evil.test/h");
    h.done(c.seq, Ok(200), "Listing-1", 4);
    assert!(h.take(&hs, &t).is_none());
    assert!(
        h.to_json(&hs)["refusals"][1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("apiBase")
    );
}

#[test]
fn status_and_child_events_call_only_the_hooks_that_ask_for_them() {
    let hs = hooks(json!([
        {"url": "http://api.test/changes"},
        {"url": "http://api.test/life", "on": ["status", "child"]}
    ]));
    let mut h = Hooks::default();
    h.observe(
        &hs,
        &Observed {
            status: Some(("running", "unauthorized")),
            children: vec![ChildNote {
                event: "started".into(),
                workflow_id: "Photo-1".into(),
                outcome: String::new(),
            }],
            versions: (4, 4),
            now: 9,
            ..Observed::default()
        },
    );
    let c = h.take(&hs, &target(None, None, 10)).expect("a call");
    assert_eq!(c.url, "http://api.test/life");
    assert_eq!(c.body["statuses"][0]["to"], json!("unauthorized"));
    assert_eq!(c.body["children"][0]["workflowId"], json!("Photo-1"));
    h.done(c.seq, Ok(200), "Listing-1", 11);
    assert!(!h.busy());
    // No transition, no call.
    h.observe(
        &hs,
        &Observed {
            status: Some(("running", "running")),
            ..Observed::default()
        },
    );
    assert!(!h.busy());
}

#[test]
fn a_deletion_is_delivered() {
    let hs = hooks(json!([{"url": "http://api.test/h"}]));
    let mut h = Hooks::default();
    let c = EntityChange {
        kind: ChangeKind::Deleted,
        fields: Default::default(),
        deletion: Some(Deletion {
            stamp: Stamp::new(1, "t"),
            source: Arc::from("client"),
        }),
        previous: None,
    };
    observe_change(&mut h, &hs, &row(json!({"id": "1"})), &c, (3, 4));
    let call = h.take(&hs, &target(None, None, 1)).expect("a call");
    assert_eq!(call.body["deleted"], json!(true));
}

#[test]
fn bodies_and_kept_values_are_bounded() {
    let hs = hooks(
        json!([{"url": "http://api.test/h", "include": "entity", "on": ["change", "child"]}]),
    );
    let mut h = Hooks::default();
    let big = "x".repeat(MAX_HOOK_VALUE_BYTES + 1);
    let huge_row = row(json!({"id": "1", "blob": "y".repeat(MAX_HOOK_BODY_BYTES)}));
    observe_change(
        &mut h,
        &hs,
        &row(json!({"id": "1"})),
        &change(&[("big", json!(big))], "client"),
        (1, 2),
    );
    for i in 0..(MAX_HOOK_CHILDREN + 5) {
        h.observe(
            &hs,
            &Observed {
                children: vec![ChildNote {
                    event: "ended".into(),
                    workflow_id: format!("C-{i}"),
                    outcome: "completed".into(),
                }],
                versions: (2, 2),
                ..Observed::default()
            },
        );
    }
    let call = h
        .take(&hs, &target(Some(&huge_row), None, 1))
        .expect("a call");
    assert_eq!(
        call.body["changes"]["big"]["new"]["omittedBytes"],
        json!(MAX_HOOK_VALUE_BYTES + 3)
    );
    assert_eq!(call.body["dataOmitted"], json!(true));
    assert_eq!(
        call.body["children"].as_array().map(Vec::len),
        Some(MAX_HOOK_CHILDREN)
    );
    assert_eq!(call.body["childrenOmitted"], json!(5));
    assert!(serde_json::to_vec(&call.body).unwrap().len() <= MAX_HOOK_BODY_BYTES);
    // Refusals kept: at most MAX_HOOK_REFUSALS.
    h.done(call.seq, Ok(500), "Listing-1", 2);
    for v in 3..60u64 {
        observe_change(
            &mut h,
            &hs,
            &row(json!({"id": "1"})),
            &change(&[("x", json!(v))], "client"),
            (v, v + 1),
        );
        let c = h.take(&hs, &target(None, None, v)).expect("a call");
        h.done(c.seq, Ok(500), "Listing-1", v);
    }
    assert_eq!(
        h.to_json(&hs)["refusals"].as_array().map(Vec::len),
        Some(MAX_HOOK_REFUSALS)
    );
}

#[test]
fn a_call_cut_short_by_a_hand_over_is_sent_again_first_with_the_same_key() {
    let hs = hooks(
        json!([{"url": "http://api.test/a", "fields": ["a"]}, {"url": "http://api.test/b", "fields": ["b"]}]),
    );
    let mut h = Hooks::default();
    let before = row(json!({"id": "1"}));
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("a", json!(1))], "client"),
        (1, 2),
    );
    let out = h.take(&hs, &target(None, None, 1)).expect("a call");
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("b", json!(1))], "client"),
        (2, 3),
    );
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("a", json!(2))], "client"),
        (3, 4),
    );
    let carried = h.carry();
    let json = serde_json::to_value(&carried).unwrap();
    let mut next = Hooks::carried(serde_json::from_value(json).unwrap());
    let again = next.take(&hs, &target(None, None, 2)).expect("sent again");
    assert_eq!(
        (again.key.as_str(), again.url.as_str()),
        (out.key.as_str(), "http://api.test/a")
    );
    next.done(again.seq, Ok(200), "Listing-1", 3);
    let b = next
        .take(&hs, &target(None, None, 4))
        .expect("then b (version 3)");
    assert_eq!(b.url, "http://api.test/b");
    next.done(b.seq, Ok(200), "Listing-1", 5);
    let a = next
        .take(&hs, &target(None, None, 6))
        .expect("then a again");
    assert_eq!(a.key, "Listing-1:4:3");
    assert!(Hooks::default().carry().is_empty());
}

#[test]
fn a_hook_that_left_the_schema_refuses_what_waited_for_it() {
    let hs = hooks(json!([{"url": "http://api.test/a"}]));
    let mut h = Hooks::default();
    observe_change(
        &mut h,
        &hs,
        &row(json!({"id": "1"})),
        &change(&[("a", json!(1))], "client"),
        (1, 2),
    );
    let other = hooks(json!([{"url": "http://api.test/z"}]));
    assert!(h.take(&other, &target(None, None, 1)).is_none());
    assert_eq!(h.counts(), (0, 1));
    assert!(!h.busy());
}

#[test]
fn keys_name_the_execution_chain_which_the_next_run_keeps() {
    let hs = hooks(json!([{"url": "http://api.test/h"}]));
    let before = row(json!({"id": "1"}));
    let mut h = Hooks::default();
    h.set_chain("0193a2b4-c5d6-7e8f-9012-abcdef");
    observe_change(
        &mut h,
        &hs,
        &before,
        &change(&[("x", json!(1))], "client"),
        (1, 2),
    );
    let c = h.take(&hs, &target(None, None, 1)).expect("a call");
    assert_eq!(c.key, "Listing-1:0193a2b4-c5d:2:1");
    // The next run is given its own run id: the chain stays the first run's.
    let mut next = Hooks::carried(h.carry());
    next.set_chain("ffffffff-0000");
    let again = next.take(&hs, &target(None, None, 2)).expect("sent again");
    assert_eq!(again.key, c.key);
    // Another execution under the same workflow id: another chain, other keys.
    let mut other = Hooks::default();
    other.set_chain("77777777-8888");
    observe_change(
        &mut other,
        &hs,
        &before,
        &change(&[("x", json!(1))], "client"),
        (1, 2),
    );
    let o = other.take(&hs, &target(None, None, 1)).expect("a call");
    assert_ne!(o.key, c.key);
}
