//! The tree's planner, driven through [`Core`] as the workflow drives it.

use serde_json::{Value, json};

use super::{ChildStatus, Effect};
use crate::msg::Signal;
use crate::state::{Core, started_core};

fn start(schema: &str, input: Value) -> (Core, Vec<Effect>) {
    let mut c = started_core(schema, &input, 1);
    let e = c.initial_effects();
    (c, e)
}

#[test]
fn on_remove_keep_leaves_the_child_running_and_cancel_unsubscribes() {
    let (mut c, e) = start(
        "User: {listings: {entity: Listing, many: true, onRemove: keep}, photos: [Photo]}\nListing: {}\nPhoto: {}",
        json!({"id": "u", "entityName": "User", "data": {"id": "u", "listings": [{"id": "l"}], "photos": [{"id": "p"}]}}),
    );
    assert_eq!(
        e.iter()
            .filter(|e| matches!(e, Effect::Start { .. }))
            .count(),
        2
    );
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "listings": [], "photos": []}})),
    );
    let out = c.process(2);
    // `keep`: no message at all to Listing-l; `cancel` (default): Photo-p is told its parent let go.
    assert!(
        !out.effects
            .iter()
            .any(|e| matches!(e, Effect::Signal { workflow_id, .. } if workflow_id == "Listing-l"))
    );
    assert!(out.effects.iter().any(|e| matches!(e, Effect::Signal { workflow_id, name, .. } if workflow_id == "Photo-p" && name == "unsubscribe")));
    assert_eq!(
        c.tree().children()["Listing-l"].status,
        ChildStatus::Removed
    );
}

#[test]
fn a_child_started_with_a_stamped_slice_keeps_the_parents_stamps() {
    let (_, e) = start(
        "User: {listings: [Listing]}\nListing: {user: User}",
        json!({"id": "u", "entityName": "User", "data": {"id": "u", "listings": [{"id": "l", "user": "u", "name": "x"}]}}),
    );
    let Some(Effect::Start { input, .. }) = e.into_iter().next() else {
        panic!("no start")
    };
    assert_eq!(
        input["stateStamps"]["Listing"]["l"]["name"],
        json!([1, "User-u"])
    );
    let (child, _) = start("User: {listings: [Listing]}\nListing: {user: User}", input);
    assert_eq!(
        child.store().meta("Listing", "l").unwrap().stamps["name"],
        stateful_engine::Stamp::new(1, "User-u")
    );
}

const SCHEMA: &str = "User: {listings: [Listing]}\nListing: {user: User}";

fn user_with_listings(n: usize) -> (Core, Vec<Effect>) {
    let listings: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("l{i}"), "user": "u"}))
        .collect();
    start(
        SCHEMA,
        json!({"id": "u", "entityName": "User", "apiToken": "t1", "data": {"id": "u", "listings": listings}}),
    )
}

fn confirm_all(c: &mut Core, n: usize) {
    for i in 0..n {
        c.push(crate::msg::Msg::Child(super::ChildEvent::new(
            &format!("Listing-l{i}"),
            1,
            super::ChildEventKind::Started,
            super::ChildOutcome::None,
            String::new(),
        )));
    }
    c.process(2);
}

fn signals<'a>(effects: &'a [Effect], name: &str) -> Vec<&'a str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal {
                workflow_id,
                name: n,
                ..
            } if n == name => Some(workflow_id.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_change_reaches_only_the_child_whose_slice_holds_it_and_never_its_source() {
    let (mut c, e) = user_with_listings(3);
    assert_eq!(e.len(), 3, "three starts");
    confirm_all(&mut c, 3);
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l1": {"id": "l1", "user": "u", "title": "x"}}}})),
    );
    let out = c.process(3);
    assert_eq!(signals(&out.effects, "update"), ["Listing-l1"]);
    // The same change coming from the child itself is not sent back to it.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l1": {"id": "l1", "user": "u", "title": "y"}}}, "changeOrigin": "Listing-l1"})),
    );
    let out = c.process(4);
    assert!(
        signals(&out.effects, "update").is_empty(),
        "{:?}",
        out.effects
    );
}

#[test]
fn pause_resume_and_rotation_reach_every_confirmed_child() {
    let (mut c, _) = user_with_listings(2);
    confirm_all(&mut c, 2);
    c.signal(Signal::Pause, Ok(Value::Null));
    let out = c.process(3);
    assert_eq!(signals(&out.effects, "pause"), ["Listing-l0", "Listing-l1"]);
    // While paused: a change is kept for the resume, nothing is sent.
    c.signal(Signal::ApiToken, Ok(json!("t2")));
    let out = c.process(4);
    assert!(out.effects.is_empty(), "{:?}", out.effects);
    c.signal(Signal::Resume, Ok(Value::Null));
    let out = c.process(5);
    assert_eq!(signals(&out.effects, "resume").len(), 2);
    assert_eq!(signals(&out.effects, "update").len(), 2, "resync");
    assert_eq!(signals(&out.effects, "apiToken").len(), 2, "the token held");
}

#[test]
fn ending_cancels_every_child_and_a_child_ended_from_outside_restarts() {
    let (mut c, _) = user_with_listings(2);
    confirm_all(&mut c, 2);
    c.push(crate::msg::Msg::Child(super::ChildEvent::new(
        "Listing-l0",
        1,
        super::ChildEventKind::Ended,
        super::ChildOutcome::Terminated,
        String::new(),
    )));
    let out = c.process(3);
    let Some(Effect::Start {
        workflow_id,
        generation,
        input,
        ..
    }) = out.effects.first()
    else {
        panic!("no restart: {:?}", out.effects)
    };
    assert_eq!((workflow_id.as_str(), *generation), ("Listing-l0", 2));
    assert_eq!(input["apiToken"], json!("t1"), "restarted with the token");
    c.signal(Signal::Cancel, Ok(Value::Null));
    let out = c.process(4);
    let cancelled: Vec<_> = out
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Cancel { .. }))
        .collect();
    assert_eq!(cancelled.len(), 2, "{:?}", out.effects);
    assert!(
        c.tree()
            .children()
            .values()
            .all(|ch| ch.status == ChildStatus::Removed)
    );
}

#[test]
fn effects_never_print_the_token() {
    let (_, e) = user_with_listings(1);
    let shown = format!("{e:?}");
    assert!(
        shown.contains("Listing-l0") && !shown.contains("t1\""),
        "{shown}"
    );
}
