//! Control messages are ordered by stamps: an older one never undoes a newer one.

use serde_json::{Value, json};
use stateful_engine::Schema;

use super::*;
use crate::load::{LoadOutput, LoadStatus, Loaded};
use crate::tree::Effect;

const TREE: &str = "User: {listings: [Listing]}\nListing: {user: User, photos: [Photo]}\nPhoto: {listing: Listing}";

fn tree_core(input: Value) -> (Core, Vec<Effect>) {
    let mut c = started_core(TREE, &input, 1000);
    let e = c.initial_effects();
    (c, e)
}

fn stamped_token(t: &str, time: u64) -> Value {
    json!({"token": t, "stamp": [time, "User-u"]})
}

fn signals<'a>(effects: &'a [Effect], name: &str) -> Vec<&'a Effect> {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Signal { name: n, .. } if n == name))
        .collect()
}

#[test]
fn an_older_token_never_undoes_a_newer_one_and_the_same_token_does_not_reload() {
    let (mut c, _) = tree_core(
        json!({"id": "l", "entityName": "Listing", "apiUrl": "http://h/l", "apiToken": "t0"}),
    );
    c.take_load().unwrap();
    c.push(Msg::Loaded(Loaded::Ok(LoadOutput {
        status: LoadStatus::Ok,
        data: None,
        updates: None,
        strategy: None,
    })));
    c.process(1001);
    // The rotation to t2 arrives before the catch-up that carried t1.
    c.signal(Signal::ApiToken, Ok(stamped_token("t2", 2000)));
    assert!(c.process(2001).token_changed);
    assert!(c.take_load().is_some(), "a rotation reloads");
    c.signal(Signal::ApiToken, Ok(stamped_token("t1", 1500)));
    let out = c.process(2002);
    assert!(!out.token_changed);
    assert_eq!(c.api_token().unwrap().expose(), "t2");
    assert_eq!(c.token_info()["rotations"], json!(1));
    // The same token again (a newer catch-up): no rotation, no reload.
    c.signal(Signal::ApiToken, Ok(stamped_token("t2", 2500)));
    assert!(!c.process(2003).token_changed);
    assert_eq!(c.token_info()["rotations"], json!(1));
    // A client's plain token is stamped on arrival: it is the newest.
    c.signal(Signal::ApiToken, Ok(json!("t3")));
    assert!(c.process(3000).token_changed);
    assert_eq!(c.api_token().unwrap().expose(), "t3");
}

#[test]
fn a_resume_overtaken_by_its_pause_leaves_the_workflow_running() {
    let (mut c, _) = tree_core(json!({"id": "l", "entityName": "Listing"}));
    c.signal(Signal::Resume, Ok(json!({"stamp": [20, "User-u"]})));
    c.signal(Signal::Pause, Ok(json!({"stamp": [10, "User-u"]})));
    c.process(30);
    assert_eq!(c.status(), Status::Running);
    c.signal(
        Signal::Status,
        Ok(json!({"status": "paused", "stamp": [15, "User-u"]})),
    );
    c.process(31);
    assert_eq!(c.status(), Status::Running, "older than the resume");
    c.signal(Signal::Pause, Ok(Value::Null));
    c.process(32);
    assert_eq!(c.status(), Status::Paused, "a client's pause is the newest");
}

#[test]
fn an_old_subscribe_does_not_undo_a_newer_unsubscribe() {
    let (mut c, _) = tree_core(json!({"id": "p", "entityName": "Photo"}));
    let sub = |stamp: u64| json!({"workflowId": "Listing-l", "subscriptionId": "s", "stamp": [stamp, "Listing-l"]});
    c.signal(Signal::Unsubscribe, Ok(sub(20)));
    c.signal(Signal::Subscribe, Ok(sub(10)));
    c.process(30);
    assert_eq!(c.subscriptions_info(), json!([]));
    c.signal(Signal::Subscribe, Ok(sub(40)));
    c.process(41);
    assert_eq!(c.subscriptions_info()[0]["workflowId"], json!("Listing-l"));
}

#[test]
fn children_of_ours_get_stamped_payloads_and_others_plain_ones() {
    let schema_other = "User: {listings: [Listing], notes: {entity: Note, many: true, workflowType: Other}}\nListing: {user: User}\nNote: {}";
    let mut c = Core::default();
    let s = Schema::parse(schema_other, "t").unwrap();
    let js = s.to_json();
    let input = json!({"id": "u", "entityName": "User", "apiToken": "t0",
        "data": {"id": "u", "listings": [{"id": "l", "user": "u"}], "notes": [{"id": "n"}]}});
    c.start(
        StartInput::parse(&input).unwrap(),
        s,
        js,
        "User-u".into(),
        1000,
    )
    .unwrap();
    let starts = c.initial_effects();
    let Some(Effect::Start { input, .. }) = starts.first() else {
        panic!("no start")
    };
    assert_eq!(
        input["apiTokenStamp"],
        json!([0, ""]),
        "the input's token is older than any message"
    );
    for wid in ["Listing-l", "Note-n"] {
        c.push(Msg::Child(crate::tree::ChildEvent::new(
            wid,
            1,
            crate::tree::ChildEventKind::Started,
            crate::tree::ChildOutcome::None,
            String::new(),
        )));
    }
    c.process(1001);
    c.signal(Signal::ApiToken, Ok(json!("t1")));
    c.signal(Signal::Pause, Ok(Value::Null));
    let out = c.process(2000);
    for e in signals(&out.effects, "apiToken")
        .into_iter()
        .chain(signals(&out.effects, "pause"))
    {
        let Effect::Signal {
            workflow_id,
            name,
            payload,
            ..
        } = e
        else {
            unreachable!()
        };
        let stamped = payload.as_ref().is_some_and(|p| p.get("stamp").is_some());
        assert_eq!(
            stamped,
            workflow_id == "Listing-l",
            "{name} to {workflow_id}: {payload:?}"
        );
    }
}

#[test]
fn a_child_that_adds_an_entity_is_not_sent_it_back() {
    let (mut c, e) = tree_core(json!({"id": "u", "entityName": "User",
        "data": {"id": "u", "listings": [{"id": "l", "user": "u"}]}}));
    let inc = crate::tree::tests::incarnation(&e, "Listing-l");
    c.push(Msg::Child(crate::tree::ChildEvent::new(
        "Listing-l",
        1,
        crate::tree::ChildEventKind::Started,
        crate::tree::ChildOutcome::None,
        String::new(),
    )));
    c.process(1001);
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l": {"photos": ["p"]}}, "Photo": {"p": {"id": "p", "listing": "l"}}},
                  "stamps": {"Listing": {"l": {"photos": [1500, "Listing-l"]}}, "Photo": {"p": {"id": [1500, "Listing-l"], "listing": [1500, "Listing-l"]}}},
                  "changeOrigin": "Listing-l", "incarnation": inc})),
    );
    let out = c.process(1600);
    assert_eq!(out.changes.len(), 2);
    assert!(
        signals(&out.effects, "update").is_empty(),
        "{:?}",
        out.effects
    );
}

#[test]
fn ordering_and_subscriptions_survive_continue_as_new() {
    let (mut c, _) = tree_core(json!({"id": "p", "entityName": "Photo", "apiToken": "t0",
        "subscriptions": [{"workflowId": "Listing-l", "subscriptionId": "s", "parent": "Listing:l"}]}));
    c.signal(Signal::ApiToken, Ok(stamped_token("t2", 2000)));
    c.signal(Signal::Pause, Ok(json!({"stamp": [2000, "User-u"]})));
    c.process(2001);
    let next = c.carry_input();
    let mut n = Core::default();
    let s = Schema::parse(TREE, "t").unwrap();
    n.start(
        StartInput::parse(&next).unwrap(),
        s.clone(),
        s.to_json(),
        "Photo-p".into(),
        3000,
    )
    .unwrap();
    assert_eq!(n.subscriptions_info()[0]["workflowId"], json!("Listing-l"));
    n.signal(Signal::ApiToken, Ok(stamped_token("t1", 1500)));
    n.signal(Signal::Resume, Ok(json!({"stamp": [1500, "User-u"]})));
    n.process(3001);
    assert_eq!(n.api_token().unwrap().expose(), "t2");
    assert_eq!(n.status(), Status::Paused);
}

#[test]
fn legacy_runs_keep_the_plain_unordered_behaviour() {
    let mut c = Core::default();
    c.set_legacy(true);
    let s = Schema::parse(TREE, "t").unwrap();
    let js = s.to_json();
    c.start(
        StartInput::parse(&json!({"id": "l", "entityName": "Listing", "apiToken": "t0"})).unwrap(),
        s,
        js,
        "Listing-l".into(),
        1000,
    )
    .unwrap();
    c.signal(Signal::ApiToken, Ok(stamped_token("t2", 2000)));
    c.signal(Signal::ApiToken, Ok(stamped_token("t1", 1500)));
    c.process(2001);
    assert_eq!(
        c.api_token().unwrap().expose(),
        "t1",
        "last arrival wins, as before"
    );
}
