//! Schema evolution: refusals with their reasons, new relations start children, removed ones end
//! theirs per `onRemove`, the schema is handed down stamped, an older one is ignored, and the
//! schema survives continue-as-new.

use serde_json::{Value, json};
use stateful_engine::Schema;

use super::*;
use crate::tree::{ChildEvent, ChildEventKind, ChildOutcome, Effect};

const OLD: &str = "User: {listings: [Listing]}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}";
/// `OLD` with a new relation `User.profile`.
const ADD: &str = "User: {listings: [Listing], profile: Profile}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}";
/// `OLD` without the relation `User.listings`.
const REMOVE: &str = "User: {}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}";

fn json_of(yaml: &str) -> Value {
    Schema::parse(yaml, "t").unwrap().to_json()
}

fn checksum_of(yaml: &str) -> String {
    Schema::parse(yaml, "t").unwrap().checksum()
}

/// A User root with a listing (a running, confirmed child) and a profile that no relation holds.
fn root(schema: &str) -> Core {
    let input = json!({"id": "u", "entityName": "User",
        "state": {"Profile": {"p": {"id": "p"}}},
        "data": {"id": "u", "profile": "p", "listings": [{"id": "l", "photos": [{"id": "ph"}]}]}});
    let mut c = started_core(schema, &input, 1000);
    let first = c.initial_effects();
    assert_eq!(starts(&first), ["Listing-l"]);
    c.push(Msg::Child(ChildEvent::new(
        "Listing-l",
        1,
        ChildEventKind::Started,
        ChildOutcome::None,
        String::new(),
    )));
    c.process(1001);
    c
}

fn starts(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start { workflow_id, .. } => Some(workflow_id.as_str()),
            _ => None,
        })
        .collect()
}

fn signals_to<'a>(effects: &'a [Effect], to: &str) -> Vec<(&'a str, Option<&'a Value>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Signal {
                workflow_id,
                name,
                payload,
                ..
            } if workflow_id == to => Some((name.as_str(), payload.as_ref())),
            _ => None,
        })
        .collect()
}

fn refusal(c: &Core, payload: Result<Value, String>) -> String {
    c.validate(Signal::Schema, &payload).unwrap_err()
}

#[test]
fn a_schema_that_is_not_allowed_or_does_not_fit_the_state_is_refused_with_the_reasons() {
    let c = root(OLD);
    // Not JSON, not a schema.
    assert!(refusal(&c, Err("not JSON".into())).contains("not JSON"));
    assert!(refusal(&c, Ok(json!(42))).contains("not a schema"));
    assert!(refusal(&c, Ok(json!({"User": {"listings": ["Nope"]}}))).contains("not a schema"));
    // The own entity removed.
    let e = refusal(&c, Ok(json_of("Listing: {}\nPhoto: {}\nProfile: {}")));
    assert!(
        e.contains("removing `User`, this workflow's own entity"),
        "{e}"
    );
    // An id attribute changed.
    let e = refusal(
        &c,
        Ok(json_of(
            "User: {idAttribute: uid, listings: [Listing]}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}",
        )),
    );
    assert!(
        e.contains("not allowed: changing the `idAttribute` of `User`"),
        "{e}"
    );
    // The state does not conform: an entity it holds is gone, a relation that holds no ids.
    let e = refusal(
        &c,
        Ok(json_of(
            "User: {listings: [Listing]}\nListing: {photos: [Photo]}\nPhoto: {}",
        )),
    );
    assert!(
        e.contains("the state does not conform: entity `Profile` is not in the schema"),
        "{e}"
    );
    let e = refusal(
        &c,
        Ok(json_of(
            "User: {listings: [Listing], profile: [Profile]}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}",
        )),
    );
    assert!(e.contains("`profile` should hold a list of ids"), "{e}");
    // The same refusal as a signal: a rejection with the reason, the schema unchanged.
    let mut c = c;
    let before = c.schema_info();
    c.signal(
        Signal::Schema,
        Ok(json_of("Listing: {}\nPhoto: {}\nProfile: {}")),
    );
    let out = c.process(2000);
    assert!(!out.schema_changed);
    assert!(out.rejected[0].reason.contains("own entity"));
    assert_eq!(
        c.rejected_info()["recent"][0]["signal"],
        json!("schema"),
        "{}",
        c.rejected_info()
    );
    assert_eq!(c.schema_info(), before);
    // An acknowledged one is answered with the reason.
    let t = c.enqueue_update(Signal::Schema, Ok(json!({"User": "nope"})));
    c.process(2001);
    assert!(
        c.take_result(t)
            .unwrap()
            .unwrap_err()
            .contains("not a schema")
    );
}

#[test]
fn a_new_relation_starts_children_and_the_schema_goes_down_stamped_first() {
    let mut c = root(OLD);
    assert_eq!(c.schema_info()["version"], json!(0));
    let t = c.enqueue_update(Signal::Schema, Ok(json_of(ADD)));
    let out = c.process(2000);
    assert!(out.schema_changed);
    assert_eq!(starts(&out.effects), ["Profile-p"]);
    let answer = c.take_result(t).unwrap().unwrap();
    assert_eq!(answer["checksum"], json!(checksum_of(ADD)));
    assert_eq!(answer["version"], json!(1));
    assert_eq!(c.schema_info()["checksum"], json!(checksum_of(ADD)));
    // The running child gets the schema, stamped, before its (widened) slice.
    let to_l = signals_to(&out.effects, "Listing-l");
    assert_eq!(to_l[0].0, "schema", "{to_l:?}");
    let p = to_l[0].1.unwrap();
    assert!(p["stamp"].is_array());
    assert_eq!(p["version"], json!(1));
    assert_eq!(
        Schema::from_json(&p["schema"]).unwrap().checksum(),
        checksum_of(ADD)
    );
    // The new child's input carries the schema with its stamp and version.
    let Some(Effect::Start { input, .. }) = out
        .effects
        .iter()
        .find(|e| matches!(e, Effect::Start { .. }))
    else {
        unreachable!()
    };
    assert_eq!(input["schemaStamp"], p["stamp"]);
    assert_eq!(input["schemaVersion"], json!(1));
    // The same schema again (here in chrono-forge's flat format) changes nothing.
    c.signal(Signal::Schema, Ok(add_flat()));
    let out = c.process(3000);
    assert!(
        !out.schema_changed && out.rejected.is_empty(),
        "{:?}",
        out.rejected
    );
}

/// `ADD` in chrono-forge's flat format, as JSON: the same schema, the same checksum.
fn add_flat() -> Value {
    json!({"User": {"listings": ["Listing"], "profile": "Profile"},
        "Listing": {"photos": ["Photo"]}, "Photo": {}, "Profile": {}})
}

#[test]
fn the_flat_format_has_the_checksum_of_the_extended_one() {
    let s = Schema::from_json(&add_flat()).unwrap();
    assert_eq!(s.checksum(), checksum_of(ADD));
}

#[test]
fn a_removed_relation_ends_its_children_as_its_on_remove_says() {
    let mut c = root(OLD);
    c.signal(Signal::Schema, Ok(json_of(REMOVE)));
    let out = c.process(2000);
    assert!(out.schema_changed);
    let to_l = signals_to(&out.effects, "Listing-l");
    let names: Vec<&str> = to_l.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["unsubscribe", "unsubscribe"], "{to_l:?}");
    assert_eq!(c.tree().running().count(), 0);

    let keep = "User: {listings: {entity: Listing, many: true, onRemove: keep}}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}";
    let mut c = root(keep);
    c.signal(Signal::Schema, Ok(json_of(REMOVE)));
    let out = c.process(2000);
    assert!(out.schema_changed);
    assert!(
        signals_to(&out.effects, "Listing-l").is_empty()
            && !out
                .effects
                .iter()
                .any(|e| matches!(e, Effect::Cancel { .. })),
        "{:?}",
        out.effects
    );
}

#[test]
fn children_of_another_type_are_not_sent_the_schema() {
    let other = "User: {listings: {entity: Listing, many: true, workflowType: Other}}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}";
    let other_add = "User: {listings: {entity: Listing, many: true, workflowType: Other}, profile: Profile}\nListing: {photos: [Photo]}\nPhoto: {}\nProfile: {}";
    let mut c = root(other);
    c.signal(Signal::Schema, Ok(json_of(other_add)));
    let out = c.process(2000);
    assert!(out.schema_changed);
    assert!(
        !signals_to(&out.effects, "Listing-l")
            .iter()
            .any(|(n, _)| *n == "schema")
    );
}

#[test]
fn an_older_schema_never_undoes_a_newer_one_and_the_schema_is_carried_over() {
    let input = json!({"id": "l", "entityName": "Listing", "data": {"id": "l"}});
    let mut c = started_core(OLD, &input, 1000);
    c.initial_effects();
    let stamped = |yaml: &str, t: u64, v: u64| json!({"schema": json_of(yaml), "stamp": [t, "User-u"], "version": v});
    c.signal(Signal::Schema, Ok(stamped(REMOVE, 2000, 2)));
    assert!(c.process(2001).schema_changed);
    c.signal(Signal::Schema, Ok(stamped(ADD, 1500, 1)));
    let out = c.process(2002);
    assert!(!out.schema_changed && out.rejected.is_empty());
    assert_eq!(c.schema_info()["checksum"], json!(checksum_of(REMOVE)));
    assert_eq!(c.schema_info()["version"], json!(2));
    // Continue-as-new: the schema, its version and its stamp are carried.
    let next = c.carry_input();
    assert_eq!(next["carry"]["version"], json!(crate::input::CARRY_VERSION));
    let mut n = Core::default();
    let s = Schema::from_json(&next["schema"]).unwrap();
    n.start(
        StartInput::parse(&next).unwrap(),
        s,
        next["schema"].clone(),
        "Listing-l".into(),
        3000,
    )
    .unwrap();
    assert_eq!(n.schema_info()["checksum"], json!(checksum_of(REMOVE)));
    assert_eq!(n.schema_info()["version"], json!(2));
    assert_eq!(n.schema_info()["stamp"], json!([2000, "User-u"]));
    n.signal(Signal::Schema, Ok(stamped(ADD, 1800, 1)));
    assert!(
        !n.process(3001).schema_changed,
        "still older after the hand-over"
    );
    // A child started with a changed schema takes its stamp from the input.
    let mut input = json!({"id": "l", "entityName": "Listing", "data": {"id": "l"},
        "schemaStamp": [2000, "User-u"], "schemaVersion": 2});
    input["schema"] = json_of(REMOVE);
    let mut k = started_core(REMOVE, &input, 1000);
    k.signal(Signal::Schema, Ok(stamped(ADD, 1500, 1)));
    assert!(!k.process(2500).schema_changed);
    assert_eq!(k.schema_info()["version"], json!(2));
}
