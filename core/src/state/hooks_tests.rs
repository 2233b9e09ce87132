//! Hooks driven as the glue drives them: a batch observes, `take_hook` hands out one call, paused
//! workflows hold them, the carry hands them to the next run, derived API hosts include them.

use serde_json::{Value, json};
use stateful_engine::Schema;

use super::*;
use crate::secret::Secret;

const SCHEMA: &str = r#"
Listing:
  apiUrl: "https://api.test/listings/{id}"
  onChange:
    - url: "https://api.test/hooks/listing/{id}"
      fields: [price]
    - url: "https://hooks.test/life"
      on: [status]
"#;

fn started(input: Value) -> Core {
    let mut c = Core::default();
    c.set_check_hosts(true);
    let s = Schema::parse(SCHEMA, "t").unwrap();
    let js = s.to_json();
    c.start(
        StartInput::parse(&input).unwrap(),
        s,
        js,
        "Listing-1".into(),
        1000,
    )
    .unwrap();
    c
}

fn input() -> Value {
    json!({"id": "1", "entityName": "Listing", "data": {"id": "1", "price": 5, "title": "t"},
           "apiToken": "tok-abcdef-123456"})
}

#[test]
fn a_change_of_a_hooked_field_calls_the_hook_with_the_token_and_the_key() {
    let mut c = started(input());
    c.process(1000);
    assert!(
        c.take_hook(1000).is_none(),
        "the start itself changes no price yet"
    );
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "1", "title": "u"}})),
    );
    c.process(2000);
    assert!(c.take_hook(2000).is_none(), "title is not a hooked field");
    c.signal(Signal::Update, Ok(json!({"data": {"id": "1", "price": 7}})));
    c.process(3000);
    let call = c.take_hook(3000).expect("a call");
    assert_eq!(call.url, "https://api.test/hooks/listing/1");
    assert_eq!(call.body["changes"], json!({"price": {"old": 5, "new": 7}}));
    assert_eq!(call.body["origins"], json!(["client"]));
    assert_eq!(
        call.token.as_ref().map(Secret::expose),
        Some("tok-abcdef-123456")
    );
    assert!(
        !call.body.to_string().contains("tok-abcdef"),
        "the token is never in the body"
    );
    assert_eq!(call.key, format!("Listing-1:{}:1", c.store.version()));
    c.hook_done(call.seq, Ok(200), 3100);
    assert_eq!(c.hooks_info()["delivered"], json!(1));
}

#[test]
fn a_paused_workflow_holds_its_hooks_until_resumed() {
    let mut c = started(input());
    c.process(1000);
    c.signal(Signal::Pause, Ok(json!({})));
    c.process(2000);
    c.signal(Signal::Update, Ok(json!({"data": {"id": "1", "price": 8}})));
    c.process(3000);
    assert!(c.take_hook(3000).is_none(), "held while paused");
    c.signal(Signal::Resume, Ok(json!({})));
    c.process(4000);
    let mut urls = Vec::new();
    while let Some(call) = c.take_hook(5000) {
        urls.push((call.url.clone(), call.body.clone()));
        c.hook_done(call.seq, Ok(204), 5000);
    }
    // The status hook (host hooks.test) is outside the derived API hosts only if not derived: the
    // schema's hook URLs are among them.
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert_eq!(urls[0].0, "https://hooks.test/life");
    assert_eq!(
        urls[0].1["statuses"],
        json!([{"from": "running", "to": "paused", "at": 2000}, {"from": "paused", "to": "running", "at": 4000}])
    );
    assert_eq!(urls[1].1["changes"]["price"], json!({"old": 5, "new": 8}));
}

#[test]
fn the_next_run_takes_over_what_waits_and_sends_a_cut_call_again() {
    let mut c = started(input());
    c.process(1000);
    c.signal(Signal::Update, Ok(json!({"data": {"id": "1", "price": 9}})));
    c.process(2000);
    let out = c.take_hook(2000).expect("a call");
    c.signal(
        Signal::Update,
        Ok(json!({"data": {"id": "1", "price": 10}})),
    );
    c.process(3000);
    let next = c.carry_input();
    assert!(next["carry"]["hooks"]["current"].is_object());
    let mut n = Core::default();
    let s = Schema::parse(SCHEMA, "t").unwrap();
    let js = s.to_json();
    n.start(
        StartInput::parse(&next).unwrap(),
        s,
        js,
        "Listing-1".into(),
        4000,
    )
    .unwrap();
    let again = n.take_hook(4000).expect("sent again");
    assert_eq!(again.key, out.key);
    n.hook_done(again.seq, Ok(200), 4000);
    let then = n.take_hook(4000).expect("then what waited");
    assert_eq!(then.body["changes"]["price"], json!({"old": 9, "new": 10}));
}

#[test]
fn hook_hosts_join_the_derived_api_hosts_and_others_are_refused() {
    let mut c = started(input());
    let hosts = c.api.loads.hosts.clone().unwrap_or_default();
    assert!(
        hosts.contains("api.test") && hosts.contains("hooks.test"),
        "{hosts:?}"
    );
    // A tree whose input names its API hosts: a hook elsewhere is refused, with the reason.
    let mut i = input();
    i["apiHosts"] = json!(["api.test"]);
    c = started(i);
    c.process(1000);
    c.signal(Signal::Pause, Ok(json!({})));
    c.process(2000);
    c.signal(Signal::Resume, Ok(json!({})));
    c.process(3000);
    assert!(c.take_hook(3000).is_none());
    let info = c.hooks_info();
    assert_eq!(info["refused"], json!(1), "{info}");
    assert!(
        info["refusals"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("hooks.test"),
        "{info}"
    );
}
