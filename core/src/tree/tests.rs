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

/// The incarnation a start gave a child (every message of its run carries it).
pub(crate) fn incarnation(effects: &[Effect], wid: &str) -> Value {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Start {
                workflow_id, input, ..
            } if workflow_id == wid => Some(input["incarnation"].clone()),
            _ => None,
        })
        .expect("a start of that child")
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
        Ok(json!({"updates": {"Listing": {"l1": {"id": "l1", "user": "u", "title": "y"}}}, "changeOrigin": "Listing-l1",
                  "incarnation": incarnation(&e, "Listing-l1")})),
    );
    let out = c.process(4);
    assert!(
        signals(&out.effects, "update").is_empty(),
        "{:?}",
        out.effects
    );
    // A client naming the child as the origin (without its run's incarnation) does not stop the
    // child's syncing: the change reaches it.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l1": {"id": "l1", "user": "u", "title": "z"}}}, "changeOrigin": "Listing-l1"})),
    );
    let out = c.process(5);
    assert_eq!(signals(&out.effects, "update"), ["Listing-l1"]);
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

/// A user with two listings whose children were started; `Listing-l0`'s start is refused because a
/// workflow with its id already runs; adoptions are verified (a run of this release).
fn l0_already_running(verify: bool) -> (Core, Vec<Effect>) {
    let (mut c, _) = user_with_listings(2);
    c.set_verify_adoption(verify);
    confirm_all_but_l0(&mut c);
    c.push(crate::msg::Msg::Child(super::ChildEvent::new(
        "Listing-l0",
        1,
        super::ChildEventKind::AlreadyRunning,
        super::ChildOutcome::None,
        String::new(),
    )));
    let out = c.process(3);
    (c, out.effects)
}

fn confirm_all_but_l0(c: &mut Core) {
    c.push(crate::msg::Msg::Child(super::ChildEvent::new(
        "Listing-l1",
        1,
        super::ChildEventKind::Started,
        super::ChildOutcome::None,
        String::new(),
    )));
    c.process(2);
}

fn verified(c: &mut Core, workflow_type: Option<&str>, running: bool, now: u64) -> Vec<Effect> {
    c.push(crate::msg::Msg::Child(super::ChildEvent::verified(
        "Listing-l0",
        1,
        Ok(super::Described {
            workflow_type: workflow_type.map(str::to_string),
            running,
            status: if running { "running" } else { "completed" }.into(),
        }),
    )));
    c.process(now).effects
}

fn to<'a>(effects: &'a [Effect], wid: &str) -> Vec<&'a Effect> {
    effects
        .iter()
        .filter(|e| match e {
            Effect::Signal { workflow_id, .. }
            | Effect::Cancel { workflow_id }
            | Effect::Start { workflow_id, .. }
            | Effect::Verify { workflow_id, .. } => workflow_id == wid,
        })
        .collect()
}

#[test]
fn a_workflow_found_running_is_verified_before_anything_is_sent_to_it() {
    let (mut c, e) = l0_already_running(true);
    assert_eq!(
        e,
        vec![Effect::Verify {
            workflow_id: "Listing-l0".into(),
            generation: 1
        }]
    );
    let rec = &c.tree().children()["Listing-l0"];
    assert!(rec.verifying && !rec.confirmed && !rec.adopted, "{rec:?}");
    assert_eq!(c.tree().children_info()["counts"]["verifying"], json!(1));
    // Meanwhile: a change of its slice, a rotation and a pause reach l1 only.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l0": {"id": "l0", "user": "u", "t": 1}, "l1": {"id": "l1", "user": "u", "t": 1}}}})),
    );
    c.signal(Signal::ApiToken, Ok(json!("t2")));
    let out = c.process(4);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    assert!(
        !to(&out.effects, "Listing-l1").is_empty(),
        "{:?}",
        out.effects
    );
}

#[test]
fn a_verified_stateful_workflow_is_adopted_and_caught_up() {
    let (mut c, _) = l0_already_running(true);
    let e = verified(&mut c, Some("StatefulWorkflow"), true, 4);
    // Subscribed to (updates and deletes), given its slice and the token.
    assert_eq!(signals(&e, "subscribe"), ["Listing-l0", "Listing-l0"]);
    assert_eq!(signals(&e, "update"), ["Listing-l0"]);
    assert_eq!(signals(&e, "apiToken"), ["Listing-l0"]);
    let rec = &c.tree().children()["Listing-l0"];
    assert!(rec.adopted && rec.confirmed && !rec.verifying, "{rec:?}");
    assert_eq!(rec.status, ChildStatus::Running);
    // From now on it is a child like the others: a rotation reaches it.
    c.signal(Signal::ApiToken, Ok(json!("t2")));
    let out = c.process(5);
    assert_eq!(
        signals(&out.effects, "apiToken"),
        ["Listing-l0", "Listing-l1"]
    );
    // A repeated answer (a verification run again after a continue-as-new) changes nothing.
    assert!(verified(&mut c, Some("Impostor"), true, 6).is_empty());
    assert_eq!(
        c.tree().children()["Listing-l0"].status,
        ChildStatus::Running
    );
}

#[test]
fn the_relations_declared_workflow_type_is_adopted_too() {
    let (mut c, _) = start(
        "User: {listings: {entity: Listing, many: true, workflowType: ListingWorkflow}}\nListing: {}",
        json!({"id": "u", "entityName": "User", "data": {"id": "u", "listings": [{"id": "l0"}]}}),
    );
    c.set_verify_adoption(true);
    c.push(crate::msg::Msg::Child(super::ChildEvent::new(
        "Listing-l0",
        1,
        super::ChildEventKind::AlreadyRunning,
        super::ChildOutcome::None,
        String::new(),
    )));
    c.process(2);
    let e = verified(&mut c, Some("ListingWorkflow"), true, 3);
    assert!(!signals(&e, "update").is_empty(), "{e:?}");
    assert!(c.tree().children()["Listing-l0"].adopted);
}

#[test]
fn a_workflow_of_another_type_is_conflicting_and_never_sent_anything() {
    let (mut c, _) = l0_already_running(true);
    let e = verified(&mut c, Some("Impostor"), true, 4);
    assert!(e.is_empty(), "{e:?}");
    let rec = &c.tree().children()["Listing-l0"];
    assert_eq!(rec.status, ChildStatus::Conflicting);
    let reason = rec.conflict.clone().unwrap_or_default();
    assert!(
        reason.contains("`Impostor`") && reason.contains("`StatefulWorkflow`"),
        "{reason}"
    );
    // The `children` query counts and lists it, with the reason.
    let info = c.tree().children_info();
    assert_eq!(info["counts"]["conflicting"], json!(1), "{info}");
    assert_eq!(info["counts"]["running"], json!(1), "{info}");
    let listed = info["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["workflowId"] == "Listing-l0")
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], json!("conflicting"));
    assert_eq!(listed["conflict"], json!(reason));
    // `validate` reports it.
    let v = c.validate_state();
    assert_eq!(v["ok"], json!(false), "{v}");
    assert!(
        v["findings"].to_string().contains("Listing-l0 is not ours"),
        "{v}"
    );
    // No signal on a change of its entity, no token on a rotation, no pause.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l0": {"id": "l0", "user": "u", "t": 2}}}})),
    );
    c.signal(Signal::ApiToken, Ok(json!("t2")));
    let out = c.process(5);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    assert_eq!(signals(&out.effects, "apiToken"), ["Listing-l1"]);
    c.signal(Signal::Pause, Ok(Value::Null));
    c.signal(Signal::Resume, Ok(Value::Null));
    let out = c.process(6);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    // Not restarted, whatever arrives about it.
    c.push(crate::msg::Msg::Child(super::ChildEvent::new(
        "Listing-l0",
        1,
        super::ChildEventKind::Ended,
        super::ChildOutcome::Terminated,
        String::new(),
    )));
    let out = c.process(7);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    // The cascade cancels l1 only.
    c.signal(Signal::Cancel, Ok(Value::Null));
    let out = c.process(8);
    let cancelled: Vec<_> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Cancel { workflow_id } => Some(workflow_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, ["Listing-l1"]);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    assert_eq!(
        c.tree().children()["Listing-l0"].status,
        ChildStatus::Conflicting
    );
}

#[test]
fn a_conflicting_child_removed_and_added_again_is_started_again() {
    let (mut c, _) = l0_already_running(true);
    verified(&mut c, Some("Impostor"), true, 4);
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "listings": ["l1"]}})),
    );
    let out = c.process(5);
    // Removed from the relation: nothing is sent to it (it was never ours).
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    assert_eq!(
        c.tree().children()["Listing-l0"].status,
        ChildStatus::Removed
    );
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "listings": ["l0", "l1"]}})),
    );
    let out = c.process(6);
    assert!(
        out.effects.iter().any(
            |e| matches!(e, Effect::Start { workflow_id, generation: 2, .. } if workflow_id == "Listing-l0")
        ),
        "{:?}",
        out.effects
    );
}

#[test]
fn nothing_running_any_more_starts_it_again_and_a_failed_description_is_a_conflict() {
    let (mut c, _) = l0_already_running(true);
    let e = verified(&mut c, Some("StatefulWorkflow"), false, 4);
    assert!(
        matches!(e.as_slice(), [Effect::Start { workflow_id, generation: 2, .. }] if workflow_id == "Listing-l0"),
        "{e:?}"
    );
    let (mut c, _) = l0_already_running(true);
    c.push(crate::msg::Msg::Child(super::ChildEvent::verified(
        "Listing-l0",
        1,
        Err("permission denied".into()),
    )));
    let out = c.process(4);
    assert!(out.effects.is_empty(), "{:?}", out.effects);
    let rec = &c.tree().children()["Listing-l0"];
    assert_eq!(rec.status, ChildStatus::Conflicting);
    assert!(
        rec.conflict
            .as_deref()
            .is_some_and(|r| r.contains("permission denied")),
        "{rec:?}"
    );
}

#[test]
fn a_child_being_verified_is_not_cancelled_by_the_cascade_nor_told_it_was_removed() {
    let (mut c, _) = l0_already_running(true);
    c.signal(Signal::Cancel, Ok(Value::Null));
    let out = c.process(4);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    assert!(
        !to(&out.effects, "Listing-l1").is_empty(),
        "{:?}",
        out.effects
    );
    let (mut c, _) = l0_already_running(true);
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "listings": ["l1"]}})),
    );
    let out = c.process(4);
    assert!(
        to(&out.effects, "Listing-l0").is_empty(),
        "{:?}",
        out.effects
    );
    // Its late answer changes nothing.
    assert!(verified(&mut c, Some("StatefulWorkflow"), true, 5).is_empty());
}

#[test]
fn without_the_patch_a_workflow_found_running_is_adopted_at_once() {
    // A history recorded before verification (or a core the glue did not tell): as before.
    let (c, e) = l0_already_running(false);
    assert_eq!(signals(&e, "subscribe"), ["Listing-l0", "Listing-l0"]);
    assert!(c.tree().children()["Listing-l0"].adopted);
    let (mut c, _) = user_with_listings(1);
    assert!(!c.adoption_mode_needed());
    c.push(crate::msg::Msg::Child(super::ChildEvent::new(
        "Listing-l0",
        1,
        super::ChildEventKind::AlreadyRunning,
        super::ChildOutcome::None,
        String::new(),
    )));
    assert!(c.adoption_mode_needed(), "the glue must ask the patch");
    let out = c.process(2);
    assert_eq!(
        signals(&out.effects, "subscribe").len(),
        2,
        "undecided: adopted"
    );
}

#[test]
fn a_verification_under_way_crosses_continue_as_new() {
    let (mut c, _) = l0_already_running(true);
    let carried = c.carry_input();
    let rec = &carried["carry"]["children"]["Listing-l0"];
    assert_eq!(rec["verifying"], json!(true), "{carried}");
    assert!(rec.get("conflict").is_none(), "{rec}");
    // The next run verifies it again.
    let mut next = crate::state::started_core(SCHEMA, &carried, 10);
    next.set_verify_adoption(true);
    let e = next.initial_effects();
    assert!(
        e.contains(&Effect::Verify {
            workflow_id: "Listing-l0".into(),
            generation: 1
        }),
        "{e:?}"
    );
    assert!(to(&e, "Listing-l0").len() == 1, "{e:?}");
    // A conflicting record is carried with its reason.
    verified(&mut next, Some("Impostor"), true, 11);
    let carried = next.carry_input();
    let rec = &carried["carry"]["children"]["Listing-l0"];
    assert_eq!(rec["status"], json!("conflicting"), "{rec}");
    assert!(
        rec["conflict"]
            .as_str()
            .is_some_and(|r| r.contains("Impostor"))
    );
    assert!(rec.get("verifying").is_none(), "{rec}");
}

#[test]
fn records_and_events_of_earlier_releases_read_and_keep_their_shape() {
    // A registry record and a child event as earlier releases carried them.
    let rec = json!({"entity": "Listing", "id": "l0", "field": "listings", "workflowType": "StatefulWorkflow",
                     "taskQueue": null, "status": "running", "generation": 1, "versionSent": 3,
                     "adopted": true, "confirmed": true, "ended": null});
    let r: super::ChildRec = serde_json::from_value(rec.clone()).unwrap();
    assert!(!r.verifying && r.conflict.is_none());
    assert_eq!(serde_json::to_value(&r).unwrap(), rec);
    let ev = json!({"workflowId": "L-1", "generation": 2, "event": "alreadyRunning", "outcome": "", "detail": ""});
    let e: super::ChildEvent = serde_json::from_value(ev.clone()).unwrap();
    assert_eq!(e.workflow_type, None);
    assert_eq!(serde_json::to_value(&e).unwrap(), ev);
    // The new event round-trips.
    let v = super::ChildEvent::verified(
        "L-1",
        2,
        Ok(super::Described {
            workflow_type: Some("Impostor".into()),
            running: true,
            status: "running".into(),
        }),
    );
    let back: super::ChildEvent =
        serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    assert_eq!(
        serde_json::to_value(&v).unwrap()["workflowType"],
        json!("Impostor")
    );
}

#[test]
fn a_resume_verifies_again_what_is_not_verified_yet_and_sends_it_nothing() {
    let (mut c, _) = l0_already_running(true);
    c.signal(Signal::Pause, Ok(Value::Null));
    c.process(4);
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"l0": {"id": "l0", "user": "u", "t": 3}}}})),
    );
    c.process(5);
    c.signal(Signal::Resume, Ok(Value::Null));
    let out = c.process(6);
    assert_eq!(
        to(&out.effects, "Listing-l0"),
        [&Effect::Verify {
            workflow_id: "Listing-l0".into(),
            generation: 1
        }]
    );
    assert_eq!(signals(&out.effects, "resume"), ["Listing-l1"]);
}

#[test]
fn what_the_registry_keeps_of_a_childs_end_is_bounded() {
    let (mut c, _) = user_with_listings(2);
    confirm_all(&mut c, 2);
    for (i, kind, outcome) in [
        (0, super::ChildEventKind::Ended, super::ChildOutcome::Failed),
        (
            1,
            super::ChildEventKind::StartFailed,
            super::ChildOutcome::None,
        ),
    ] {
        c.push(crate::msg::Msg::Child(super::ChildEvent::new(
            &format!("Listing-l{i}"),
            1,
            kind,
            outcome,
            "x".repeat(100_000),
        )));
    }
    c.process(3);
    for ch in c.tree().children().values() {
        let ended = ch.ended.as_deref().unwrap_or_default();
        assert!(ended.len() < 600, "{} bytes kept", ended.len());
        assert!(ended.ends_with("(100000 bytes)"), "{ended}");
    }
}
