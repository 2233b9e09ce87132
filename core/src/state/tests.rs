//! The core driven as the glue drives it: batches, carry-over, control signals, loads, checkpoints.

use serde_json::{Value, json};
use stateful_engine::{Schema, checksum, fingerprint};

use super::*;
use crate::api::LoadState;
use crate::load::{FailureKind, LoadOutput, LoadStatus, Loaded};
use crate::secret::Secret;

fn schema() -> Schema {
    Schema::parse("User: {listings: [Listing]}\nListing: {user: User}", "t").unwrap()
}

const SCHEMA: &str = "User: {listings: [Listing]}\nListing: {user: User}";

fn started(input: Value) -> Core {
    started_core(SCHEMA, &input, 1000)
}

#[test]
fn a_batch_applies_in_arrival_order_and_answers_each_update() {
    let mut c = started(json!({"id": "u", "entityName": "User", "data": {"id": "u"}}));
    c.signal(Signal::Update, Ok(json!({"data": {"id": "u", "n": 1}})));
    let t1 = c.enqueue_update(Signal::Update, Ok(json!({"data": {"id": "u", "n": 2}})));
    let t2 = c.enqueue_update(
        Signal::Update,
        Ok(json!({"updates": {"Listing": {"x": {}}}, "strategy": "$set"})),
    );
    c.signal(Signal::Update, Err("no payload".into()));
    let out = c.process(2000);
    assert_eq!(c.data(), json!({"id": "u", "n": 2}));
    assert_eq!(c.store.version(), 2, "one batch, one version");
    assert_eq!(out.rejected.len(), 2);
    assert_eq!(c.take_result(t1).unwrap().unwrap()["version"], json!(2));
    assert!(
        c.take_result(t2)
            .unwrap()
            .unwrap_err()
            .contains("does not exist")
    );
    assert!(c.handlers_idle());
}

#[test]
fn the_carry_says_its_version_and_a_later_one_is_taken_and_said() {
    let mut c = started(json!({"id": "u", "entityName": "User", "data": {"id": "u", "a": 1}}));
    c.process(2000);
    let mut next = c.carry_input();
    assert_eq!(next["carry"]["version"], json!(crate::input::CARRY_VERSION));
    // Without a version (the releases before): version 0, and nothing is said.
    next["carry"].as_object_mut().unwrap().remove("version");
    let parsed = StartInput::parse(&next).unwrap();
    assert_eq!(parsed.carry.as_ref().unwrap().version, 0);
    let restart = |input: &Value| {
        let mut n = Core::default();
        let s = schema();
        let js = s.to_json();
        n.start(
            StartInput::parse(input).unwrap(),
            s,
            js,
            "User-u".into(),
            3000,
        )
        .unwrap();
        n
    };
    let n = restart(&next);
    assert_eq!(n.data(), json!({"id": "u", "a": 1}));
    assert_eq!(n.audit.rejected_total(), 0);
    // Written by a later release (a rollback): what this release knows is taken, and it is said.
    next["carry"]["version"] = json!(crate::input::CARRY_VERSION + 1);
    next["carry"]["somethingNew"] = json!({"x": 1});
    let n = restart(&next);
    assert_eq!(n.data(), json!({"id": "u", "a": 1}));
    assert_eq!(n.audit.rejected_total(), 1);
    assert!(
        n.audit
            .rejected_info()
            .to_string()
            .contains("later release"),
        "{}",
        n.audit.rejected_info()
    );
}

#[test]
fn carry_over_keeps_everything_and_messages_that_arrived_first_in_the_new_run() {
    let mut c =
        started(json!({"id": "u", "entityName": "User", "data": {"id": "u"}, "apiToken": "t1"}));
    c.signal(Signal::ApiToken, Ok(json!("t2")));
    c.signal(Signal::Update, Ok(json!(1)));
    c.process(2000);
    c.signal(Signal::Update, Ok(json!({"data": {"id": "u", "a": 1}})));
    let next = c.carry_input();
    assert!(c.inbox_empty());
    // In the new run, a message arrives before the run loop takes the input.
    let mut n = Core::default();
    n.signal(Signal::Update, Ok(json!({"data": {"id": "u", "a": 2}})));
    let s = schema();
    let js = s.to_json();
    n.start(
        StartInput::parse(&next).unwrap(),
        s,
        js,
        "User-u".into(),
        3000,
    )
    .unwrap();
    n.process(3000);
    assert_eq!(
        n.data(),
        json!({"id": "u", "a": 2}),
        "carried message first, then the new one"
    );
    assert_eq!(n.token_info()["fingerprint"], json!(fingerprint("t2")));
    assert_eq!(n.token_info()["rotations"], json!(1));
    assert_eq!(n.audit.rejected_total(), 1);
    assert_eq!(n.audit.runs(), 1);
}

#[test]
fn control_signals_and_status_transitions() {
    let mut c = started(json!({"id": "u", "entityName": "User", "status": "paused"}));
    c.signal(Signal::Pause, Err("no payload".into()));
    c.process(1);
    assert_eq!(c.status, Status::Paused);
    c.signal(Signal::Resume, Err("no payload".into()));
    assert!(c.process(2).status_changed);
    assert_eq!(c.status, Status::Running);
    c.signal(Signal::Cancel, Ok(Value::Null));
    c.signal(Signal::Resume, Ok(Value::Null));
    c.process(3);
    assert_eq!(
        c.status,
        Status::Cancelled,
        "resume does not revive an ended workflow"
    );
}

#[test]
fn queries_never_hold_the_token() {
    let c = started(json!({"id": "u", "entityName": "User", "apiToken": "very-secret"}));
    let all = [
        c.token_info(),
        c.version_info(),
        c.pending(),
        c.rejected_info(),
        c.state(),
        c.data(),
    ];
    for v in all {
        assert!(!v.to_string().contains("very-secret"));
    }
    assert!(!c.api_info().to_string().contains("very-secret"));
}

fn loaded(c: &mut Core, l: Loaded, now: u64) -> Processed {
    c.push(Msg::Loaded(l));
    c.process(now)
}

fn ok(data: Value) -> Loaded {
    Loaded::Ok(LoadOutput {
        status: LoadStatus::Ok,
        data: Some(data),
        updates: None,
        strategy: None,
    })
}

fn api_core(schema: &str, input: Value) -> Core {
    started_core(schema, &input, 1000)
}

#[test]
fn loads_at_start_from_the_template_and_applies_with_origin_api() {
    let mut c = api_core(
        "User: {apiUrl: '{apiBase}/users/{id}', refreshInterval: 60s}",
        json!({"id": "u", "entityName": "User", "apiBase": "http://h/", "apiToken": "t1"}),
    );
    let (req, token) = c.take_load().expect("a load at start");
    assert_eq!(req.url, "http://h/users/u");
    assert_eq!(token.as_ref().map(Secret::expose), Some("t1"));
    assert!(c.take_load().is_none(), "one at a time");
    assert_eq!(c.refresh_due(), Some(61_000));
    let out = loaded(&mut c, ok(json!({"name": "Ann"})), 2000);
    assert_eq!(c.data(), json!({"id": "u", "name": "Ann"}));
    assert_eq!(
        out.changes
            .sources()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ["api"]
    );
    assert_eq!(c.api.loads.state, LoadState::Ok);
    assert_eq!(
        c.refresh_due(),
        Some(62_000),
        "the next refresh counts from the load"
    );
    assert!(c.take_load().is_none());
    c.push(Msg::RefreshTimer);
    c.process(62_000);
    assert_eq!(c.take_load().unwrap().0.url, "http://h/users/u");
}

#[test]
fn unauthorized_shows_in_the_status_until_a_new_token_loads() {
    let mut c = api_core(
        "User: {}",
        json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "apiToken": "old"}),
    );
    c.take_load().unwrap();
    let out = loaded(
        &mut c,
        Loaded::Error {
            kind: FailureKind::Unauthorized,
            message: "unauthorized: the API answered 401".into(),
        },
        2000,
    );
    assert!(out.status_changed, "the memo follows");
    assert_eq!(c.status_str(), "unauthorized");
    assert_eq!(c.memo()[2].1, "unauthorized");
    assert!(c.take_load().is_none(), "no retry with the same token");
    c.signal(Signal::ApiToken, Ok(json!("new")));
    c.process(3000);
    let (_, token) = c.take_load().expect("a new token reloads");
    assert_eq!(token.as_ref().map(Secret::expose), Some("new"));
    loaded(&mut c, ok(json!({"n": 1})), 4000);
    assert_eq!(c.status_str(), "running");
}

#[test]
fn not_found_keeps_or_deletes_as_the_schema_says() {
    let nf = Loaded::Ok(LoadOutput {
        status: LoadStatus::NotFound,
        data: None,
        updates: None,
        strategy: None,
    });
    let input = json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "data": {"n": 1}});
    let mut keep = api_core("User: {}", input.clone());
    keep.take_load().unwrap();
    loaded(&mut keep, nf.clone(), 2000);
    assert_eq!(keep.api.loads.state, LoadState::NotFound);
    assert_eq!(keep.data(), json!({"id": "u", "n": 1}));
    assert_eq!(keep.status, Status::Running);
    let mut del = api_core("User: {onNotFound: delete}", input);
    del.take_load().unwrap();
    loaded(&mut del, nf, 2000);
    assert_eq!(del.status, Status::Completed);
    assert_eq!(del.data(), Value::Null);
}

#[test]
fn unusable_answers_are_rejected_and_change_nothing() {
    let mut c = api_core(
        "User: {}",
        json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "data": {"n": 1}}),
    );
    c.take_load().unwrap();
    let out = loaded(&mut c, ok(json!({"id": "someone-else"})), 2000);
    assert_eq!(out.rejected.len(), 1);
    assert!(
        out.rejected[0].reason.contains("another entity"),
        "{:?}",
        out.rejected
    );
    assert_eq!(c.api.loads.state, LoadState::Failed);
    assert_eq!(c.data(), json!({"id": "u", "n": 1}));
    // A `refresh` without any API is refused with a reason.
    let mut none = api_core("User: {}", json!({"id": "u", "entityName": "User"}));
    assert!(none.take_load().is_none());
    none.signal(Signal::Refresh, Ok(Value::Null));
    let out = none.process(2000);
    assert!(
        out.rejected[0].reason.contains("no API"),
        "{:?}",
        out.rejected
    );
}

#[test]
fn a_checkpoint_records_the_checksum_and_the_next_run_verifies_it() {
    let mut c = started(json!({"id": "u", "entityName": "User", "data": {"id": "u", "n": 1}}));
    c.signal(Signal::Checkpoint, Ok(Value::Null));
    c.process(2000);
    assert!(c.checkpoint_requested());
    let cp = c.checkpoint("run-1", 2000);
    assert_eq!(
        (cp.reason.as_str(), cp.version),
        ("checkpoint", c.store.version())
    );
    assert_eq!(cp.checksum, checksum(c.store.entities()));
    let next = c.carry_input();
    assert_eq!(next["checkpoint"]["checksum"], json!(cp.checksum));
    let start = |input: &Value| {
        let mut n = Core::default();
        let s = schema();
        let js = s.to_json();
        n.start(
            StartInput::parse(input).unwrap(),
            s,
            js,
            "User-u".into(),
            3000,
        )
        .unwrap();
        n
    };
    let n = start(&next);
    assert_eq!(n.integrity_error, None);
    assert_eq!(n.audit.checkpoints().count(), 1);
    assert_eq!(n.memo()[3].1, format!("v{} {}", cp.version, cp.checksum));
    // A carried state that does not match its checkpoint is reported.
    let mut bad = next.clone();
    bad["carry"]["checkpoints"][0]["checksum"] = json!("sha256:0000");
    assert!(start(&bad).integrity_error.unwrap().contains("sha256:0000"));
}

#[test]
fn api_settings_and_a_due_load_survive_continue_as_new() {
    let mut c = api_core(
        "User: {refreshInterval: 60s}",
        json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "apiBase": "http://b"}),
    );
    c.take_load().unwrap();
    let next = c.carry_input();
    let mut n = Core::default();
    let s = Schema::from_json(&next["schema"]).unwrap();
    n.start(
        StartInput::parse(&next).unwrap(),
        s,
        next["schema"].clone(),
        "User-u".into(),
        5000,
    )
    .unwrap();
    assert_eq!(n.api.loads.base.as_deref(), Some("http://b"));
    assert_eq!(n.refresh_due(), Some(61_000), "the refresh time is kept");
    assert_eq!(n.take_load().unwrap().0.reason, "continued");
}

/// A `User` with managed `listings`, started with no listings; `extra` adds input fields.
fn user_core(extra: Value) -> Core {
    let mut input = json!({"id": "u", "entityName": "User", "data": {"id": "u"}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        input[k] = v.clone();
    }
    let mut c = started_core("User:\n  listings: [Listing]\nListing: {}\n", &input, 1);
    let _ = c.initial_effects();
    c
}

/// An update that makes `ids` the user's listings, each a row of its own.
fn listings_update(ids: &[String]) -> Value {
    let rows: serde_json::Map<String, Value> =
        ids.iter().map(|l| (l.clone(), json!({"id": l}))).collect();
    json!({"updates": {"User": {"u": {"listings": ids}}, "Listing": rows}})
}

#[test]
fn an_entity_whose_child_id_would_be_too_long_is_refused_and_its_siblings_start() {
    let schema = "User:\n  listings: [Listing]\nListing:\n  user: User\n";
    let mut c = started_core(
        schema,
        &json!({"id": "u", "entityName": "User", "data": {"id": "u"}}),
        1,
    );
    let _ = c.initial_effects();
    let long = "x".repeat(1_200);
    let change = json!({"updates": {"User": {"u": {"listings": ["a", long]}},
                                    "Listing": {"a": {"id": "a"}, long.clone(): {"id": long}}}});
    let e = c.validate(Signal::Update, &Ok(change.clone())).unwrap_err();
    assert!(e.contains("Temporal accepts at most 1000"), "{e}");
    c.signal(Signal::Update, Ok(change));
    let out = c.process(2);
    assert!(out.effects.is_empty());
    assert!(out.rejected[0].reason.contains("shorten its id"));
    // The good sibling alone is accepted and started; a dangling long id in the relation (no
    // entity) starts nothing and fails nothing.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"listings": ["a", long]}}, "Listing": {"a": {"id": "a"}}}})),
    );
    let out = c.process(3);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let started: Vec<_> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start { workflow_id, .. } => Some(workflow_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["Listing-a"]);
}

#[test]
fn a_rejection_never_echoes_an_oversized_input_at_full_length() {
    let schema = "User: {}\n";
    let mut c = started_core(
        schema,
        &json!({"id": "u", "entityName": "User", "data": {"id": "u"}}),
        1,
    );
    let _ = c.initial_effects();
    let huge = "y".repeat(100_000);
    let ticket = c.enqueue_update(
        Signal::Update,
        Ok(json!({"updates": {huge.clone(): {"u": {}}}})),
    );
    let out = c.process(2);
    let reason = &out.rejected[0].reason;
    assert!(reason.len() < 600 && reason.ends_with("bytes)"), "{reason}");
    let answer = c.take_result(ticket).unwrap().unwrap_err();
    assert_eq!(&answer, reason);
}

#[test]
fn a_change_that_would_not_fit_in_the_next_runs_input_is_refused_and_the_workflow_keeps_its_state()
{
    let schema = "User:\n  listings: [Listing]\nListing: {}\n";
    let mut c = user_core(json!({"limits": {"maxPayloadBytes": 30_000}}));
    let text = "some words of a listing's description ".repeat(50);
    let mut refused = None;
    for i in 0..40 {
        let before = c.state();
        let ticket = c.enqueue_update(
            Signal::Update,
            Ok(json!({"updates": {"Listing": {format!("l{i}"): {"id": format!("l{i}"), "text": text}}}})),
        );
        let out = c.process(2 + i);
        assert!(c.carry_size() <= 30_000, "{} after {i}", c.carry_size());
        if let Err(e) = c.take_result(ticket).unwrap() {
            assert!(
                e.contains("more than the 27000 bytes a state may take"),
                "{e}"
            );
            assert_eq!(out.rejected.len(), 1);
            assert_eq!(
                c.state(),
                before,
                "a refused change leaves the state as it was"
            );
            refused = Some(i);
            break;
        }
    }
    let i = refused.expect("the state grew past the limit without a refusal");
    assert!(i > 5, "refused too early: after {i} listings");
    // Small changes still go through, and the hand-over fits.
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"name": "still here"}}}})),
    );
    assert!(c.process(100).rejected.is_empty());
    let next = c.carry_input();
    assert!(crate::outbox::json_len(&next) <= 30_000);
    // An initial state that cannot be carried is refused at the start, saying why.
    let mut big = Core::default();
    let s = Schema::parse(schema, "t").unwrap();
    let js = s.to_json();
    let input = StartInput::parse(&json!({"id": "u", "entityName": "User",
        "data": {"id": "u", "name": "x".repeat(40_000)}, "limits": {"maxPayloadBytes": 30_000}}))
    .unwrap();
    let e = big.start(input, s, js, "User-u".into(), 1).unwrap_err();
    assert!(e.contains("the initial state would take"), "{e}");
}

#[test]
fn the_registry_records_of_new_children_count_in_the_size_guard() {
    let mut c = user_core(json!({"limits": {"maxPayloadBytes": 30_000}}));
    let ids: Vec<String> = (0..100).map(|i| format!("l{i}")).collect();
    // A few KB of payload, but a hundred children's records would not fit.
    c.signal(Signal::Update, Ok(listings_update(&ids)));
    let out = c.process(2);
    assert_eq!(out.rejected.len(), 1, "{:?}", out.effects.len());
    assert!(out.effects.is_empty());
    // Twenty fit.
    let ids: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
    c.signal(Signal::Update, Ok(listings_update(&ids)));
    let out = c.process(3);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.effects.len(), 20);
    let next = c.carry_input();
    assert!(
        crate::outbox::json_len(&next) <= 30_000,
        "{}",
        crate::outbox::json_len(&next)
    );
}

#[test]
fn what_a_workflow_keeps_stays_bounded_however_long_it_runs() {
    let mut c = user_core(json!({}));
    // Children that come and go: the records of ended ones are kept up to a bound.
    let n = crate::tree::MAX_ENDED_CHILDREN + 200;
    let ids: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
    c.signal(Signal::Update, Ok(listings_update(&ids)));
    assert_eq!(c.process(2).effects.len(), n);
    // A registry too large to list whole lists its first records, and counts them all.
    let info = c.tree().children_info_within(10);
    assert_eq!(info["children"].as_array().map(Vec::len), Some(10));
    assert_eq!(info["counts"]["running"], json!(n));
    assert_eq!(info["truncated"], json!(true));
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"listings": []}}}})),
    );
    c.process(3);
    assert_eq!(c.tree().children().len(), crate::tree::MAX_ENDED_CHILDREN);
    // Subscriptions: past the bound, a new one is refused with the reason.
    for i in 0..crate::tree::MAX_SUBSCRIPTIONS {
        c.signal(
            Signal::Subscribe,
            // (`delete` subscribers: an `update` one would be sent our whole state.)
            Ok(json!({"workflowId": format!("w{i}"), "subscriptionId": "s", "signalName": "delete"})),
        );
    }
    assert!(c.process(4).rejected.is_empty());
    c.signal(
        Signal::Subscribe,
        Ok(json!({"workflowId": "one-more", "subscriptionId": "s"})),
    );
    let out = c.process(5);
    assert!(
        out.rejected[0]
            .reason
            .contains("already has 1000 subscriptions")
    );
}

#[test]
fn a_tree_stops_growing_at_its_depth_limit() {
    let schema = "User:\n  listings: [Listing]\nListing: {}\n";
    let deep: Vec<String> = (0..stateful_engine::plan::MAX_TREE_DEPTH - 1)
        .map(|i| format!("A-{i}"))
        .collect();
    let mut c = started_core(
        schema,
        &json!({"id": "u", "entityName": "User", "ancestorWorkflowIds": deep,
                "data": {"id": "u", "listings": [{"id": "l1"}]}}),
        1,
    );
    assert!(c.initial_effects().is_empty());
    let skipped = &c.tree().children_info()["skipped"];
    assert!(
        skipped[0]["reason"].as_str().unwrap().contains("deep"),
        "{skipped}"
    );
}

#[test]
fn a_run_whose_history_holds_many_megabytes_of_payloads_continues_as_new() {
    let mut c = user_core(json!({}));
    let text = "x".repeat(1_000_000);
    for i in 0..19 {
        c.signal(
            Signal::Update,
            Ok(json!({"updates": {"User": {"u": {"text": text}}}})),
        );
        c.process(2 + i);
        assert!(!c.wants_new_run(), "after {} MB", i + 1);
    }
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"text": text}}}})),
    );
    c.process(30);
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"text": "y"}}}})),
    );
    c.process(31);
    assert!(c.wants_new_run());
    assert_eq!(c.checkpoint("r", 40).reason, "historySize");
}

/// The child starts `c` releases now: (workflow id, input).
fn released_starts(c: &mut Core) -> Vec<(String, Value)> {
    c.release(crate::Pending::default(), 1)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Start {
                workflow_id, input, ..
            } => Some((workflow_id, input)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_activity_task_queue_is_handed_down_and_carried_over_and_absent_when_unset() {
    // Set: every child's input and the next run's input carry it.
    let mut c = user_core(json!({"activityTaskQueue": "http-q"}));
    assert_eq!(c.activity_task_queue(), Some("http-q"));
    c.signal(Signal::Update, Ok(listings_update(&["l1".into()])));
    let out = c.process(2);
    c.enqueue(out.effects);
    let starts = released_starts(&mut c);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].1["activityTaskQueue"], json!("http-q"));
    let next = c.carry_input();
    assert_eq!(next["activityTaskQueue"], json!("http-q"));
    assert_eq!(
        StartInput::parse(&next)
            .unwrap()
            .activity_task_queue
            .as_deref(),
        Some("http-q")
    );
    // Unset (every history recorded before it): nothing is written, so nothing changes.
    let mut c = user_core(json!({}));
    assert_eq!(c.activity_task_queue(), None);
    c.signal(Signal::Update, Ok(listings_update(&["l1".into()])));
    let out = c.process(2);
    c.enqueue(out.effects);
    let starts = released_starts(&mut c);
    assert_eq!(starts.len(), 1);
    assert!(starts[0].1.get("activityTaskQueue").is_none());
    assert!(c.carry_input().get("activityTaskQueue").is_none());
}

#[test]
fn the_overview_answers_what_a_tree_view_shows_and_never_the_token() {
    let mut c = started(
        json!({"id": "u", "entityName": "User", "apiToken": "ov-secret-123456",
                               "data": {"id": "u", "listings": [{"id": "l1", "user": "u"}]}}),
    );
    c.process(2000);
    let o = c.overview(None);
    assert_eq!(o["status"], json!("running"));
    assert_eq!(
        (o["entityName"].clone(), o["id"].clone()),
        (json!("User"), json!("u"))
    );
    assert_eq!(o["version"], c.version_info());
    assert_eq!(o["children"], c.tree().children_info());
    assert_eq!(
        o["api"]["token"]["fingerprint"],
        json!(fingerprint("ov-secret-123456"))
    );
    assert!(!o.to_string().contains("ov-secret"), "{o}");
    assert_eq!(
        c.overview(Some(0))["children"],
        c.tree().children_info_within(0)
    );
}
