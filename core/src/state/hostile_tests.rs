//! Careless and hostile messages: each is refused with a reason or made harmless, and the workflow
//! goes on (issue "validate everything, trust nothing").

use serde_json::{Value, json};
use stateful_engine::Schema;

use super::*;
use crate::tree::{ChildEvent, ChildEventKind, ChildOutcome, ChildStatus, Effect};

const TREE: &str =
    "User: {apiUrl: '{apiBase}/users/{id}', listings: [Listing]}\nListing: {user: User}";

/// A core of this release (API hosts checked), started at time 1000.
fn core_of(input: Value) -> Core {
    let mut c = Core::default();
    c.set_check_hosts(true);
    let s = Schema::parse(TREE, "t").unwrap();
    let js = s.to_json();
    let wid = format!(
        "{}-{}",
        input["entityName"].as_str().unwrap(),
        input["id"].as_str().unwrap()
    );
    c.start(StartInput::parse(&input).unwrap(), s, js, wid, 1000)
        .unwrap();
    c
}

fn last_rejection(c: &Core) -> String {
    c.rejected_info()["recent"]
        .as_array()
        .and_then(|a| a.last())
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn user() -> Core {
    core_of(json!({"id": "u", "entityName": "User", "data": {"id": "u"}}))
}

#[test]
fn a_clients_stamps_never_freeze_a_field() {
    let mut c = user();
    // The largest stamp there is, from a client (no changeOrigin).
    c.signal(
        Signal::Update,
        Ok(json!({"updates": {"User": {"u": {"name": "frozen"}}},
                  "stamps": {"User": {"u": {"name": [u64::MAX, "x"]}}}})),
    );
    c.process(2_000);
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "name": "later"}})),
    );
    c.process(3_000);
    assert_eq!(c.data()["name"], "later", "a later plain update wins");
    assert!(c.store.clock() < 1_000_000, "the clock did not jump");
}

#[test]
fn stamps_from_the_tree_are_clamped_to_a_small_skew() {
    let mut c = core_of(
        json!({"id": "u", "entityName": "User", "ancestorWorkflowIds": ["P-1"],
        "data": {"id": "u"}}),
    );
    c.signal(
        Signal::Update,
        Ok(
            json!({"updates": {"User": {"u": {"name": "ahead"}}}, "changeOrigin": "P-1",
                  "stamps": {"User": {"u": {"name": [u64::MAX, "P-1"]}}}}),
        ),
    );
    c.process(2_000);
    assert_eq!(c.data()["name"], "ahead");
    // Within the skew, the stamped write still wins; past it, a plain update does.
    let after = 2_000 + crate::order::MAX_SKEW_MS + 1;
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "name": "later"}})),
    );
    c.process(after);
    assert_eq!(c.data()["name"], "later");
    // A stamp whose origin is longer than any workflow id is refused.
    c.signal(
        Signal::Update,
        Ok(
            json!({"updates": {"User": {"u": {"name": "x"}}}, "changeOrigin": "P-1",
                  "stamps": {"User": {"u": {"name": [1, "o".repeat(2_000)]}}}}),
        ),
    );
    c.process(after + 1);
    assert!(
        last_rejection(&c).contains("origin"),
        "{}",
        last_rejection(&c)
    );
    // Control stamps too: a pause stamped at the end of time is clamped; a resume after the skew wins.
    c.signal(Signal::Pause, Ok(json!({"stamp": [u64::MAX, "P-1"]})));
    c.process(after + 2);
    assert_eq!(c.status_str(), "paused");
    c.signal(Signal::Resume, Ok(Value::Null));
    c.process(after + 2 + crate::order::MAX_SKEW_MS + 1);
    assert_eq!(c.status_str(), "running");
}

#[test]
fn bad_subscriptions_are_refused_with_a_reason() {
    for (sub, want) in [
        (
            json!({"workflowId": "", "subscriptionId": "s"}),
            "workflowId",
        ),
        (
            json!({"workflowId": "w", "subscriptionId": "s", "signalName": ""}),
            "signalName",
        ),
        (
            json!({"workflowId": "w", "subscriptionId": "s", "signalName": "cancel"}),
            "signalName",
        ),
        (
            json!({"workflowId": "w".repeat(1_001), "subscriptionId": "s"}),
            "workflowId",
        ),
    ] {
        let mut c = user();
        c.signal(Signal::Subscribe, Ok(sub.clone()));
        c.process(2_000);
        assert!(
            last_rejection(&c).contains(want),
            "{sub}: {}",
            last_rejection(&c)
        );
        assert!(c.tree.subscriptions().is_empty());
        // Nothing is ever sent with an empty name or to an empty id.
        c.signal(Signal::Update, Ok(json!({"data": {"id": "u", "n": 1}})));
        let out = c.process(3_000);
        assert!(out.effects.is_empty(), "{:?}", out.effects);
    }
    // At start too.
    let e = StartInput::parse(&json!({"id": "u", "entityName": "User",
        "subscriptions": [{"workflowId": "w", "signalName": ""}]}))
    .map(|i| {
        let s = Schema::parse(TREE, "t").unwrap();
        let js = s.to_json();
        Core::default().start(i, s, js, "User-u".into(), 1)
    });
    assert!(
        matches!(e, Ok(Err(ref r)) if r.contains("signalName")),
        "{e:?}"
    );
}

#[test]
fn refresh_intervals_are_bounded_and_never_loop() {
    let e = StartInput::parse(&json!({"id": "u", "entityName": "User",
        "refreshInterval": 18446744073709551615u64}))
    .unwrap_err();
    assert!(e.contains("at most 366 days"), "{e}");
    let c = core_of(
        json!({"id": "u", "entityName": "User", "apiBase": "http://api.test",
        "refreshInterval": "8784h"}),
    );
    assert!(c.refresh_due().unwrap() > 1000);
}

#[test]
fn the_token_goes_only_to_the_trees_api_hosts() {
    let mut c = core_of(
        json!({"id": "u", "entityName": "User", "apiBase": "http://api.test:8080",
        "apiToken": "t", "data": {"id": "u"}}),
    );
    assert_eq!(c.api_info()["hosts"], json!(["api.test"]));
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://api.test@evil.test/",
        "file:///etc/passwd",
    ] {
        c.signal(Signal::ApiUrl, Ok(json!(url)));
        c.process(2_000);
        assert!(
            last_rejection(&c).contains("apiUrl"),
            "{url}: {}",
            last_rejection(&c)
        );
        assert_eq!(c.api_url().as_deref(), Some("http://api.test:8080/users/u"));
    }
    c.signal(Signal::ApiUrl, Ok(json!("https://api.test/v2/u")));
    c.process(3_000);
    assert_eq!(c.api_url().as_deref(), Some("https://api.test/v2/u"));
    // Children get the same list.
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "u", "listings": [{"id": "l", "user": "u"}]}})),
    );
    let out = c.process(4_000);
    let start = out
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Start { input, .. } => Some(input.clone()),
            _ => None,
        })
        .expect("the listing's start");
    assert_eq!(start["apiHosts"], json!(["api.test"]));
    // A root started with an explicit list takes URLs on those hosts only.
    let mut r =
        core_of(json!({"id": "r", "entityName": "User", "apiHosts": ["a.test", "b.test:1"]}));
    r.signal(Signal::ApiUrl, Ok(json!("http://b.test/x")));
    r.process(2_000);
    assert_eq!(r.api_url().as_deref(), Some("http://b.test/x"));
    // And one started with no API at all takes none by signal.
    let mut n = user();
    n.signal(Signal::ApiUrl, Ok(json!("http://anywhere.test/")));
    n.process(2_000);
    assert!(
        last_rejection(&n).contains("apiHosts"),
        "{}",
        last_rejection(&n)
    );
}

#[test]
fn malformed_tokens_are_refused_without_echoing_them() {
    let mut c = user();
    c.signal(Signal::ApiToken, Ok(json!("secret\r\nX-Evil: 1")));
    c.process(2_000);
    let r = last_rejection(&c);
    assert!(r.contains("apiToken") && !r.contains("secret"), "{r}");
    assert!(c.token_info()["fingerprint"].is_null());
    assert!(
        StartInput::parse(&json!({"id": "u", "entityName": "User", "apiToken": "a b"})).is_err()
    );
}

#[test]
fn a_clients_child_ended_does_not_detach_a_running_child() {
    let mut c = core_of(json!({"id": "u", "entityName": "User",
        "data": {"id": "u", "listings": [{"id": "l", "user": "u"}]}}));
    let starts = c.initial_effects();
    let inc = crate::tree::tests::incarnation(&starts, "Listing-l");
    c.push(Msg::Child(ChildEvent::new(
        "Listing-l",
        1,
        ChildEventKind::Started,
        ChildOutcome::None,
        String::new(),
    )));
    c.process(1_500);
    c.signal(
        Signal::ChildEnded,
        Ok(json!({"workflowId": "Listing-l", "status": "completed", "reason": "completed"})),
    );
    c.process(2_000);
    assert!(
        last_rejection(&c).contains("childEnded"),
        "{}",
        last_rejection(&c)
    );
    assert_eq!(c.tree.children()["Listing-l"].status, ChildStatus::Running);
    // The child's own report (with its incarnation) is taken.
    c.signal(
        Signal::ChildEnded,
        Ok(
            json!({"workflowId": "Listing-l", "status": "completed", "reason": "completed",
                  "incarnation": inc}),
        ),
    );
    c.process(3_000);
    assert_eq!(
        c.tree.children()["Listing-l"].status,
        ChildStatus::Completed
    );
}

#[test]
fn updates_are_refused_while_the_run_hands_over() {
    let mut c = user();
    let ok = Ok(json!({"data": {"id": "u", "n": 1}}));
    assert!(c.validate(Signal::Update, &ok).is_ok());
    c.set_draining(Some("retry: handing over"));
    assert_eq!(
        c.validate(Signal::Update, &ok).unwrap_err(),
        "retry: handing over"
    );
    c.set_draining(None);
    assert!(c.validate(Signal::Update, &ok).is_ok());
}

/// A run of this release hands the signals that wait to the next run (when its input has room),
/// which issues them first; a workflow that ends drops the signals to children it cancels.
#[test]
fn signals_that_wait_go_to_the_next_run_and_an_ending_drops_those_to_cancelled_children() {
    let listings: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("l{i}"), "user": "u"}))
        .collect();
    let mut c = core_of(
        json!({"id": "u", "entityName": "User", "limits": {"maxPendingSignals": 5},
        "data": {"id": "u", "listings": listings}}),
    );
    c.set_carry_outbox(true);
    let starts = c.initial_effects();
    assert_eq!(starts.len(), 30);
    for i in 0..30 {
        c.push(Msg::Child(ChildEvent::new(
            &format!("Listing-l{i}"),
            1,
            ChildEventKind::Started,
            ChildOutcome::None,
            String::new(),
        )));
    }
    c.process(1_100);
    let renamed: serde_json::Map<String, Value> = (0..30)
        .map(|i| (format!("l{i}"), json!({"name": "renamed"})))
        .collect();
    c.signal(Signal::Update, Ok(json!({"updates": {"Listing": renamed}})));
    let out = c.process(1_200);
    c.enqueue(out.effects);
    let first = c.release(crate::Pending::default(), 1);
    assert_eq!(first.len(), 5, "five signals in flight at most");
    let waiting = c.outbox_len();
    assert_eq!(waiting, 25);
    // The hand-over: what waits is in the next run's input, and the next run issues it first.
    c.hand_over(Vec::new());
    c.checkpoint("r1", 1_300);
    let input = c.carry_input();
    assert_eq!(input["carry"]["outbox"].as_array().map(Vec::len), Some(25));
    let mut next = Core::default();
    next.set_check_hosts(true);
    next.set_carry_outbox(true);
    let s = Schema::parse(TREE, "t").unwrap();
    let js = s.to_json();
    next.start(
        StartInput::parse(&input).unwrap(),
        s,
        js,
        "User-u".into(),
        1_400,
    )
    .unwrap();
    assert_eq!(next.outbox_len(), 25);
    let wave = next.release(crate::Pending::default(), 1);
    assert_eq!(wave.len(), 5);
    assert!(
        wave.iter()
            .all(|e| matches!(e, Effect::Signal { name, .. } if name == "update"))
    );
    // Cancelled: the signals to children whose cancellation waits are dropped.
    next.signal(Signal::Cancel, Ok(Value::Null));
    let out = next.process(1_500);
    next.enqueue(out.effects);
    next.drop_signals_to_cancelled();
    assert_eq!(
        next.outbox_len(),
        30,
        "thirty cancellations, no signal left: {}",
        next.outbox_len()
    );
    // Without the mode (histories of earlier releases), nothing is carried.
    let mut old = core_of(json!({"id": "u", "entityName": "User", "data": {"id": "u"}}));
    old.enqueue(vec![Effect::Signal {
        workflow_id: "Other-1".into(),
        name: "update".into(),
        payload: Some(json!({})),
        child_generation: None,
    }]);
    assert!(old.carry_input()["carry"].get("outbox").is_none());
}
