//! Peers that send no stamps (chrono-forge): what they write is ordered by its arrival here, and
//! answered once with what won, so that both copies end equal.

use serde_json::{Value, json};
use stateful_engine::Schema;

use super::*;
use crate::tree::{ChildEvent, ChildEventKind, ChildOutcome, Effect};

/// A User whose notes are `ForgeWorkflow` children (a chrono-forge child on another queue).
const MIXED: &str =
    "User: {notes: {entity: Note, many: true, workflowType: ForgeWorkflow}}\nNote: {}";

fn mixed_parent(echo: Option<bool>) -> Core {
    let mut c = Core::default();
    let s = Schema::parse(MIXED, "t").unwrap();
    let js = s.to_json();
    let input = json!({"id": "u", "entityName": "User",
        "data": {"id": "u", "notes": [{"id": "n", "text": "a"}]}});
    c.start(
        StartInput::parse(&input).unwrap(),
        s,
        js,
        "User-u".into(),
        1000,
    )
    .unwrap();
    c.initial_effects();
    c.push(Msg::Child(ChildEvent::new(
        "Note-n",
        1,
        ChildEventKind::Started,
        ChildOutcome::None,
        String::new(),
    )));
    c.process(1001);
    if let Some(on) = echo {
        c.set_echo_peers(on);
    }
    c
}

fn signals_to<'a>(effects: &'a [Effect], to: &str) -> Vec<(&'a str, &'a Value)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal {
                workflow_id,
                name,
                payload: Some(p),
                ..
            } if workflow_id == to => Some((name.as_str(), p)),
            _ => None,
        })
        .collect()
}

fn forge_write(text: &str) -> Value {
    json!({"updates": {"Note": {"n": {"id": "n", "text": text}}}, "changeOrigin": "Note-n",
           "subscriptionId": "s", "sync": true})
}

#[test]
fn a_stampless_childs_write_is_answered_once_with_the_winning_row() {
    let mut c = mixed_parent(None);
    c.signal(Signal::Update, Ok(forge_write("b")));
    assert!(c.echo_mode_needed(), "the glue asks the patch");
    c.set_echo_peers(true);
    assert!(!c.echo_mode_needed(), "asked once per run");
    let out = c.process(2000);
    let sent = signals_to(&out.effects, "Note-n");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (name, p) = sent[0];
    assert_eq!(name, "update");
    assert_eq!(p["updates"]["Note"]["n"]["text"], json!("b"));
    assert_eq!(
        p["changeOrigin"],
        json!("User-u"),
        "its echo guard stops it there"
    );
    assert_eq!(c.state()["Note"]["n"]["text"], json!("b"));
    // Nothing is pending: the next batch sends nothing more.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"x": 1}}}})),
    );
    let out = c.process(2001);
    assert!(signals_to(&out.effects, "Note-n").is_empty());
}

#[test]
fn when_our_newer_write_wins_the_stampless_child_is_sent_it() {
    let mut c = mixed_parent(Some(true));
    // A write stamped later than the child's arrives first (a clock ahead within the skew).
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Note": {"n": {"text": "ours"}}},
                  "stamps": {"Note": {"n": {"text": [2500, "User-root"]}}},
                  "changeOrigin": "User-root"})),
    );
    c.process(2000);
    c.signal(Signal::Update, Ok(forge_write("theirs")));
    let out = c.process(2001);
    assert_eq!(c.state()["Note"]["n"]["text"], json!("ours"));
    let sent = signals_to(&out.effects, "Note-n");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1["updates"]["Note"]["n"]["text"], json!("ours"));
}

#[test]
fn only_relatives_are_answered_and_only_when_the_run_answers() {
    // A workflow outside the tree named as `changeOrigin`: applied, never written to.
    let mut c = mixed_parent(Some(true));
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Note": {"n": {"text": "x"}}}, "changeOrigin": "Elsewhere-1"})),
    );
    let out = c.process(2000);
    assert!(signals_to(&out.effects, "Elsewhere-1").is_empty());
    // Decided off (a history recorded before answers): the child is not answered.
    let mut c = mixed_parent(Some(false));
    c.signal(Signal::Update, Ok(forge_write("b")));
    let out = c.process(2000);
    assert!(signals_to(&out.effects, "Note-n").is_empty());
    // A stamped message (ours) asks for no patch.
    let mut c = mixed_parent(None);
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Note": {"n": {"text": "s"}}},
                  "stamps": {"Note": {"n": {"text": [1500, "Note-n"]}}}, "changeOrigin": "Note-n"})),
    );
    assert!(!c.echo_mode_needed());
}

#[test]
fn a_stampless_parent_is_answered_through_its_subscription() {
    // A chrono-forge parent started us, subscribed with a selector.
    let input = json!({"id": "n", "entityName": "Note", "state": {"Note": {"n": {"id": "n", "text": "a", "tag": "t"}}},
        "ancestorWorkflowIds": ["User-u"],
        "subscriptions": [{"workflowId": "User-u", "signalName": "update", "selector": "Note.*", "subscriptionId": "sub-1"}]});
    let mut c = started_core(MIXED, &input, 1000);
    c.initial_effects();
    c.set_echo_peers(true);
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"Note": {"n": {"text": "parent"}}}, "changeOrigin": "User-u"})),
    );
    let out = c.process(2000);
    let sent = signals_to(&out.effects, "User-u");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (name, p) = sent[0];
    assert_eq!(name, "update");
    assert_eq!(p["subscriptionId"], json!("sub-1"));
    assert_eq!(p["updates"]["Note"]["n"]["text"], json!("parent"));
    assert_eq!(p["changeOrigin"], json!("Note-n"));
    // It deleted an entity we hold: we delete it too, and do not send the deletion back.
    c.signal(
        Signal::Delete,
        Ok(json!({"deletions": {"Note": {"n": {}}}, "changeOrigin": "User-u"})),
    );
    let out = c.process(2001);
    assert!(
        signals_to(&out.effects, "User-u")
            .iter()
            .all(|(n, _)| *n != "delete"),
        "{:?}",
        out.effects
    );
}
