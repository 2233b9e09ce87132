//! A fuzz (property) test of the decision core against careless and hostile clients: random start
//! inputs, then random signals and acknowledged updates of every kind, in random order and random
//! batches, with the glue's side simulated (effects issued in waves, child starts confirmed or
//! refused, children ending, signals failing, loads finishing, the refresh timer firing, runs
//! continuing as new). The messages are mostly realistic shapes with hostile values (huge and
//! negative numbers, empty and 10 KB strings, deep nesting, wrong types, unknown fields, stamps far
//! in the future, subscriptions with empty fields), and some fully random JSON.
//!
//! Checked, for every case:
//! - nothing panics;
//! - every effect the core produces (`initial_effects`, `process`, and each wave `release` issues)
//!   passes [`Effect::check`]: Temporal would accept its command;
//! - the state stays bounded: the inbox is empty after a batch and every acknowledged update is
//!   answered; rejections, recent changes, subscriptions, the children registry and the
//!   subscriptions' order stay within their bounds; no stamp is further ahead of the workflow time
//!   than a message may set it; the next run's input fits one payload;
//! - no tight loop: once the refresh timer fired, the next refresh (if any) is after now (the glue
//!   arms the timer again for it: one due now would fire at once, again and again);
//! - a run's hand-over (continue-as-new) starts the next run.
//!
//! A failing case prints `FUZZ_SEED=<n>`; `FUZZ_SEED=<n> cargo test -p stateful-core --test fuzz`
//! replays it alone, with `FUZZ_TRACE=1` every message and batch is printed (`FUZZ_TRACE=full`: whole
//! messages, not their first 300 bytes). `FUZZ_CASES=N` runs more cases, `FUZZ_FROM=N` starts
//! elsewhere.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use stateful_core::audit::{MAX_REASON, MAX_RECENT, MAX_REJECTED};
use stateful_core::input::StartInput;
use stateful_core::order::{MAX_SKEW_MS, MAX_UNSUBSCRIBED};
use stateful_core::tree::{MAX_ENDED_CHILDREN, MAX_SUBSCRIPTIONS};
use stateful_core::{
    ChildEvent, ChildEventKind, ChildOutcome, Core, Effect, Limits, Loaded, Msg, Pending, Signal,
};
use stateful_engine::Schema;

/// A schema with managed relations (User → Listing → Photo), API URL templates, a batch URL and a
/// refresh interval.
const SCHEMA: &str = r#"
User:
  apiUrl: "{apiBase}/users/{id}"
  refreshInterval: 5m
  listings: [Listing]
Listing:
  apiUrl: "{apiBase}/listings/{id}"
  batchUrl: "{apiBase}/listings?ids={ids}"
  user: User
  photos: [Photo]
Photo:
  listing: Listing
"#;

/// Cases run by default, and client messages per case.
const CASES: u64 = 1_000;
const MESSAGES: usize = 30;

/// How far ahead of the workflow time a stamp may be: what a message may set (the core clamps a
/// message's stamp to [`MAX_SKEW_MS`] ahead) plus the stamps a workflow makes in a burst (1 ms each).
const SKEW_MS: u64 = MAX_SKEW_MS + 10_000;

/// Workflow time at the start of a case (ms since the epoch).
const T0: u64 = 1_700_000_000_000;

/// What the cases did (printed with the result, to see that they do something).
static STARTED: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);
static ISSUED: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);
static RUNS: AtomicU64 = AtomicU64::new(0);

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// Interesting numbers.
fn number(r: &mut Rng) -> Value {
    match r.below(12) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(1.5e308),
        5 => json!(-0.5),
        6 => json!(9_007_199_254_740_993_u64),
        7 => json!(u32::MAX),
        8 => json!(T0),
        _ => json!(r.below(1000)),
    }
}

/// Interesting strings.
fn string(r: &mut Rng) -> String {
    match r.below(16) {
        0 => String::new(),
        1 => "x".repeat(10_000),
        2 => "ü€😀\u{0}\u{1f}\n\t\"\\".into(),
        3 => "$merge".into(),
        4 => r
            .pick(&["$set", "$unset", "$push", "$replace", "$splice", "$nope"])
            .into(),
        5 => "https://api.example.com/users/u".into(),
        6 => "User-u".into(),
        7 => "Listing-l1".into(),
        8 => " ".into(),
        9 => "a".repeat(1_001),
        10 => r
            .pick(&["update", "delete", "*", "Listing:l1", "User:u"])
            .into(),
        _ => format!("s{}", r.below(20)),
    }
}

/// A key: mostly one the core knows, sometimes anything.
fn key(r: &mut Rng) -> String {
    const KEYS: &[&str] = &[
        "id",
        "data",
        "updates",
        "entityName",
        "strategy",
        "stamps",
        "stamp",
        "workflowId",
        "signalName",
        "subscriptionId",
        "selector",
        "token",
        "url",
        "status",
        "listings",
        "photos",
        "user",
        "listing",
        "changeOrigin",
        "incarnation",
        "answers",
        "catchUp",
        "deletions",
        "parent",
        "child",
        "ancestorWorkflowIds",
        "reason",
        "User",
        "Listing",
        "Photo",
        "u",
        "l1",
    ];
    if r.chance(80) {
        r.pick(KEYS).to_string()
    } else {
        string(r)
    }
}

/// Any JSON, at most `depth` levels deep.
fn any(r: &mut Rng, depth: usize) -> Value {
    let leaf = depth == 0 || r.chance(45);
    match r.below(if leaf { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(r.chance(50)),
        2 => number(r),
        3 | 4 => json!(string(r)),
        5 => Value::Array((0..r.below(4)).map(|_| any(r, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..r.below(5) {
                m.insert(key(r), any(r, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// A value nested `n` levels deep (what a payload decoder still reads is at most 128).
fn deep(r: &mut Rng, n: usize) -> Value {
    let mut v = any(r, 0);
    for i in 0..n {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            let k = key(r);
            json!({ k: v })
        };
    }
    v
}

/// A field value: mostly plain, sometimes hostile.
fn value(r: &mut Rng) -> Value {
    match r.below(10) {
        0 => {
            let n = 1 + r.below(120);
            deep(r, n)
        }
        1..=3 => any(r, 3),
        4 => stamp(r),
        _ => json!(string(r)),
    }
}

/// A stamp: mostly plausible, sometimes far away or malformed.
fn stamp(r: &mut Rng) -> Value {
    match r.below(10) {
        0 => json!([u64::MAX, "x"]),
        1 => json!([u64::MAX, ""]),
        2 => json!([-1, "x"]),
        3 => json!(["soon", 1]),
        4 => json!([T0 + 1_000_000_000, "User-u"]),
        5 => json!([0, "a".repeat(2_000)]),
        6 => any(r, 2),
        _ => json!([
            T0 - r.below(100_000) as u64,
            r.pick(&["User-u", "Listing-l1", "x", ""])
        ]),
    }
}

fn entity_name(r: &mut Rng) -> Value {
    if r.chance(85) {
        json!(r.pick(&["User", "Listing", "Photo"]))
    } else {
        any(r, 1)
    }
}

fn listing_id(r: &mut Rng) -> Value {
    match r.below(12) {
        0 => json!(""),
        1 => json!("l".repeat(1_200)),
        2 => json!(u64::MAX),
        3 => json!(-7),
        4 => json!("l/ü?#"),
        5 => any(r, 1),
        _ => json!(format!("l{}", r.below(4))),
    }
}

fn photo(r: &mut Rng) -> Value {
    let mut p = json!({"id": format!("p{}", r.below(3)), "url": value(r)});
    if r.chance(20) {
        p["id"] = listing_id(r);
    }
    p
}

fn listing(r: &mut Rng) -> Value {
    let mut l = Map::new();
    l.insert("id".into(), listing_id(r));
    if r.chance(60) {
        l.insert("title".into(), value(r));
    }
    if r.chance(40) {
        l.insert("user".into(), json!("u"));
    }
    if r.chance(40) {
        l.insert(
            "photos".into(),
            Value::Array((0..r.below(3)).map(|_| photo(r)).collect()),
        );
    }
    if r.chance(15) {
        l.insert(key(r), value(r));
    }
    Value::Object(l)
}

fn user(r: &mut Rng) -> Value {
    let mut u = Map::new();
    u.insert("id".into(), json!("u"));
    if r.chance(10) {
        u.insert("id".into(), listing_id(r));
    }
    if r.chance(60) {
        u.insert("name".into(), value(r));
    }
    if r.chance(60) {
        let n = if r.chance(5) { 60 } else { r.below(4) };
        u.insert(
            "listings".into(),
            Value::Array((0..n).map(|_| listing(r)).collect()),
        );
    }
    if r.chance(10) {
        u.insert("listings".into(), any(r, 2));
    }
    if r.chance(15) {
        u.insert(key(r), value(r));
    }
    Value::Object(u)
}

/// Normalized entities (`updates`, `state`).
fn entities(r: &mut Rng) -> Value {
    let mut top = Map::new();
    for _ in 0..1 + r.below(3) {
        let e = entity_name(r);
        let name = e.as_str().unwrap_or("Nope").to_string();
        let mut group = Map::new();
        for _ in 0..r.below(3) {
            let row = match name.as_str() {
                "User" => user(r),
                "Listing" => listing(r),
                _ => photo(r),
            };
            let id = row["id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| string(r));
            group.insert(id, if r.chance(90) { row } else { any(r, 2) });
        }
        top.insert(name, Value::Object(group));
    }
    Value::Object(top)
}

/// `stamps` for normalized entities: per field, or per entity (deletions).
fn stamps_for(r: &mut Rng, ents: &Value) -> Value {
    let mut top = Map::new();
    for (e, group) in ents.as_object().into_iter().flatten() {
        let mut g = Map::new();
        for (id, row) in group.as_object().into_iter().flatten() {
            let s = match row.as_object() {
                Some(fields) if r.chance(80) => {
                    Value::Object(fields.keys().map(|k| (k.clone(), stamp(r))).collect())
                }
                _ => stamp(r),
            };
            g.insert(id.clone(), s);
        }
        top.insert(e.clone(), Value::Object(g));
    }
    Value::Object(top)
}

/// The fields our own messages add (origin, subscription, incarnation, catch-up).
fn ours(r: &mut Rng, m: &mut Map<String, Value>) {
    if r.chance(30) {
        m.insert(
            "changeOrigin".into(),
            json!(r.pick(&["Listing-l1", "User-u", "", "api"])),
        );
    }
    if r.chance(20) {
        m.insert("subscriptionId".into(), json!(string(r)));
    }
    if r.chance(15) {
        m.insert("incarnation".into(), stamp(r));
    }
    if r.chance(10) {
        m.insert("answers".into(), stamp(r));
    }
    if r.chance(10) {
        m.insert("catchUp".into(), json!(true));
    }
    if r.chance(10) {
        m.insert(key(r), value(r));
    }
}

fn update(r: &mut Rng) -> Value {
    let mut m = Map::new();
    if r.chance(60) {
        let e = entity_name(r);
        let data = match e.as_str() {
            Some("Listing") => listing(r),
            Some("Photo") => photo(r),
            _ => user(r),
        };
        m.insert("data".into(), data);
        if r.chance(50) {
            m.insert("entityName".into(), e);
        }
    } else {
        let ents = entities(r);
        if r.chance(40) {
            m.insert("stamps".into(), stamps_for(r, &ents));
        }
        m.insert("updates".into(), ents);
    }
    if r.chance(30) {
        m.insert("strategy".into(), json!(string(r)));
    }
    ours(r, &mut m);
    Value::Object(m)
}

fn delete(r: &mut Rng) -> Value {
    let mut m = Map::new();
    if r.chance(40) {
        m.insert("data".into(), listing(r));
        m.insert("entityName".into(), entity_name(r));
    } else {
        let ents = entities(r);
        if r.chance(40) {
            m.insert("stamps".into(), stamps_for(r, &ents));
        }
        let dels = if r.chance(20) {
            json!({"Listing": [listing_id(r), listing_id(r)]})
        } else {
            ents
        };
        m.insert("deletions".into(), dels);
    }
    ours(r, &mut m);
    Value::Object(m)
}

fn subscription(r: &mut Rng) -> Value {
    let mut m = Map::new();
    let wid = match r.below(8) {
        0 => json!(""),
        1 => json!("w".repeat(1_500)),
        2 => any(r, 1),
        _ => json!(r.pick(&["Listing-l1", "User-u", "Other-1", "Sub-x"])),
    };
    if r.chance(95) {
        m.insert("workflowId".into(), wid);
    }
    for (k, p) in [
        ("subscriptionId", 80),
        ("signalName", 70),
        ("selector", 40),
        ("parent", 15),
        ("child", 10),
    ] {
        if r.chance(p) {
            let v = match r.below(6) {
                0 => json!(""),
                1 if k == "signalName" => json!(r.pick(&["update", "delete", "nope"])),
                1 if k == "selector" => json!(r.pick(&["*", "listings", "listings.photos"])),
                2 => any(r, 1),
                3 => json!("s".repeat(5_000)),
                _ => json!(string(r)),
            };
            m.insert(k.into(), v);
        }
    }
    if r.chance(20) {
        m.insert(
            "ancestorWorkflowIds".into(),
            if r.chance(80) {
                json!([string(r), "User-u"])
            } else {
                any(r, 2)
            },
        );
    }
    if r.chance(20) {
        m.insert("incarnation".into(), stamp(r));
    }
    if r.chance(40) {
        m.insert("stamp".into(), stamp(r));
    }
    if r.chance(10) {
        m.insert(key(r), value(r));
    }
    Value::Object(m)
}

fn stamped(r: &mut Rng, field: &str, v: Value) -> Value {
    if r.chance(50) {
        return v;
    }
    let mut m = Map::new();
    m.insert(field.into(), v);
    if r.chance(70) {
        m.insert("stamp".into(), stamp(r));
    }
    Value::Object(m)
}

fn url(r: &mut Rng) -> Value {
    match r.below(8) {
        0 => json!(""),
        1 => json!(format!("https://api.example.com/{}", "x".repeat(5_000))),
        2 => json!("file:///etc/passwd"),
        3 => json!("https://evil.example.org/steal"),
        4 => json!("http://[::1"),
        5 => any(r, 1),
        _ => json!(format!("https://api.example.com/users/u{}", r.below(3))),
    }
}

fn token(r: &mut Rng) -> Value {
    match r.below(8) {
        0 => json!(""),
        1 => json!("t".repeat(10_000)),
        2 => json!("tok en\r\nX-Evil: 1"),
        3 => any(r, 1),
        _ => json!(format!("token-{}", r.below(5))),
    }
}

/// A signal's payload: realistic for its kind, or anything.
fn payload(r: &mut Rng, s: Signal) -> Result<Value, String> {
    if r.chance(3) {
        return Err("the payload could not be decoded".into());
    }
    if r.chance(12) {
        return Ok(any(r, 4));
    }
    Ok(match s {
        Signal::Update => update(r),
        Signal::Delete => delete(r),
        Signal::State => {
            if r.chance(70) {
                entities(r)
            } else {
                json!({"User": {"u": user(r)}})
            }
        }
        Signal::ApiToken => {
            let t = token(r);
            stamped(r, "token", t)
        }
        Signal::ApiUrl => {
            let u = url(r);
            stamped(r, "url", u)
        }
        Signal::Status => {
            let s = json!(r.pick(&["running", "paused", "completed", "cancelled", "nope", ""]));
            stamped(r, "status", s)
        }
        Signal::Subscribe => subscription(r),
        Signal::Unsubscribe => {
            let mut s = subscription(r);
            if let Some(m) = s.as_object_mut() {
                m.retain(|k, _| matches!(k.as_str(), "workflowId" | "subscriptionId" | "stamp"));
            }
            s
        }
        Signal::ChildEnded => {
            let mut m = Map::new();
            m.insert(
                "workflowId".into(),
                json!(r.pick(&["Listing-l1", "Listing-l2", "Photo-p1", "", "Nope-1"])),
            );
            if r.chance(70) {
                m.insert(
                    "reason".into(),
                    json!(r.pick(&["cancelled", "completed", "deleted", ""])),
                );
            }
            if r.chance(30) {
                m.insert("status".into(), json!(string(r)));
            }
            if r.chance(30) {
                m.insert("incarnation".into(), stamp(r));
            }
            Value::Object(m)
        }
        Signal::Schema => schema_change(r),
        // `refresh`, `checkpoint`, `pause`, `resume`, `cancel`: no argument, or a stamp, or junk.
        _ => match r.below(4) {
            0 => Value::Null,
            1 => json!({"stamp": stamp(r)}),
            _ => any(r, 2),
        },
    })
}

/// A `schema` payload: the fuzz schema with a relation added or removed, an entity or its id
/// attribute changed, junk, in either format, plain or stamped (ours).
fn schema_change(r: &mut Rng) -> Value {
    let mut s = Schema::parse(SCHEMA, "fuzz")
        .expect("the fuzz schema")
        .to_json();
    match r.below(8) {
        0 => s["User"]["photos"] = json!({"entity": "Photo", "many": true}),
        1 => {
            if let Some(m) = s["Listing"].as_object_mut() {
                m.remove("photos");
            }
        }
        2 => s["Listing"]["photos"]["onRemove"] = json!("keep"),
        3 => s["User"]["idAttribute"] = json!("uid"),
        4 => {
            if let Some(m) = s.as_object_mut() {
                m.remove(r.pick(&["User", "Photo"]));
            }
        }
        5 => s = any(r, 3),
        6 => {
            s = json!({"User": {"listings": ["Listing"]}, "Listing": {"user": "User", "photos": ["Photo"]}, "Photo": {}})
        }
        _ => {}
    }
    if r.chance(40) {
        json!({"schema": s, "stamp": stamp(r), "version": r.below(4)})
    } else {
        s
    }
}

fn limits(r: &mut Rng) -> Value {
    match r.below(6) {
        0 => json!({"maxPayloadBytes": 10_000, "maxTaskBytes": 10_000}),
        1 => json!({"maxChildrenPerRun": 1, "maxPendingSignals": 1, "maxPendingCancels": 1}),
        2 => json!({"compressed": true, "maxPayloadBytes": 20_000}),
        3 => any(r, 2),
        _ => json!({"maxPayloadBytes": 30_000 + r.below(100_000)}),
    }
}

/// A plain start input, as a careful client or a parent writes it (the messages that follow bring
/// the hostility).
fn plain_start_input(r: &mut Rng) -> Value {
    let listings: Vec<Value> = (0..r.below(4))
        .map(|i| {
            let photos: Vec<Value> = (0..r.below(3))
                .map(|j| json!({"id": format!("p{i}{j}"), "url": "https://img.example.com/p"}))
                .collect();
            json!({"id": format!("l{i}"), "user": "u", "title": string(r), "photos": photos})
        })
        .collect();
    let mut v = json!({"id": "u", "entityName": "User",
                       "data": {"id": "u", "name": "Ann", "listings": listings}});
    if r.chance(70) {
        v["apiToken"] = json!("token-0");
        v["apiBase"] = json!("https://api.example.com");
    }
    if r.chance(30) {
        v["refreshInterval"] = json!(r.pick(&["30s", "5m", "1h"]));
    }
    if r.chance(30) {
        v["subscriptions"] = json!([{"workflowId": "Parent-1", "subscriptionId": "s1",
                                     "signalName": "update", "selector": "*"}]);
        v["ancestorWorkflowIds"] = json!(["Parent-1"]);
    }
    if r.chance(30) {
        v["limits"] = json!({"maxChildrenPerRun": 1 + r.below(3), "maxPendingSignals": 1 + r.below(3),
                             "maxPayloadBytes": 10_000 + r.below(50_000)});
    }
    if r.chance(20) {
        v["incarnation"] = json!([T0 - 5, "Parent-1"]);
    }
    // A starter's stamps (a parent hands down those of its token and status).
    for k in ["incarnation", "statusStamp", "apiTokenStamp"] {
        if r.chance(4) {
            v[k] = stamp(r);
        }
    }
    v
}

/// A start input: a plain one, a realistic one with hostile values, or anything.
fn start_input(r: &mut Rng) -> Value {
    if r.chance(50) {
        return plain_start_input(r);
    }
    if r.chance(20) {
        return any(r, 4);
    }
    let mut m = Map::new();
    let id = match r.below(10) {
        0 => json!(""),
        1 => json!(u64::MAX),
        2 => json!(-3),
        3 => json!("u".repeat(1_200)),
        4 => any(r, 1),
        _ => json!("u"),
    };
    if r.chance(97) {
        m.insert("id".into(), id);
    }
    let entity = if r.chance(85) {
        json!("User")
    } else {
        entity_name(r)
    };
    m.insert("entityName".into(), entity);
    if r.chance(80) {
        let mut d = user(r);
        if let Some(id) = m.get("id").filter(|_| r.chance(80)) {
            d["id"] = id.clone();
        }
        m.insert("data".into(), d);
    }
    let optional: [(&str, u64); 17] = [
        ("apiToken", 50),
        ("apiBase", 40),
        ("apiUrl", 15),
        ("refreshInterval", 40),
        ("subscriptions", 40),
        ("ancestorWorkflowIds", 20),
        ("limits", 25),
        ("status", 20),
        ("maxHistoryLength", 10),
        ("incarnation", 20),
        ("statusStamp", 10),
        ("apiTokenStamp", 10),
        ("state", 10),
        ("loadedByParent", 10),
        ("carry", 3),
        ("schema", 3),
        ("unknownField", 10),
    ];
    for (k, p) in optional {
        if !r.chance(p) {
            continue;
        }
        let v = match k {
            "apiToken" => token(r),
            "apiBase" => {
                if r.chance(70) {
                    json!("https://api.example.com")
                } else {
                    url(r)
                }
            }
            "apiUrl" => url(r),
            "refreshInterval" => match r.below(12) {
                0 => json!(u64::MAX),
                1 => json!(0),
                2 => json!(-5),
                3 => json!("0s"),
                4 => json!("1ms"),
                5 => json!(1e20),
                6 => json!("99999999999999999h"),
                7 => json!("5m"),
                8 => json!(u64::MAX - T0 / 2),
                9 => any(r, 1),
                _ => json!(1 + r.below(100_000)),
            },
            "subscriptions" => {
                if r.chance(90) {
                    Value::Array((0..r.below(4)).map(|_| subscription(r)).collect())
                } else {
                    any(r, 2)
                }
            }
            "ancestorWorkflowIds" => match r.below(4) {
                0 => Value::Array((0..150).map(|i| json!(format!("A-{i}"))).collect()),
                1 => any(r, 2),
                _ => json!(["Root-1", string(r)]),
            },
            "limits" => limits(r),
            "status" => json!(r.pick(&["running", "paused", "completed", ""])),
            "maxHistoryLength" => number(r),
            "incarnation" | "statusStamp" | "apiTokenStamp" => stamp(r),
            "state" => {
                let ents = entities(r);
                if r.chance(50) {
                    m.insert("stateStamps".into(), stamps_for(r, &ents));
                }
                ents
            }
            "loadedByParent" => json!(r.chance(50)),
            "carry" => match r.below(3) {
                0 => json!({"store": {"clock": u64::MAX, "version": u64::MAX}}),
                1 => json!({"api": {"nextRefreshAt": 0, "refreshMs": 0}}),
                _ => any(r, 3),
            },
            "schema" => any(r, 3),
            _ => value(r),
        };
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// An API answer (or a failed load).
fn loaded(r: &mut Rng) -> Loaded {
    let v = match r.below(6) {
        0 => {
            json!({"error": {"type": r.pick(&["Unauthorized", "Failed", "CircuitOpen", "Timeout", "Nope"]), "message": string(r)}})
        }
        1 => json!({"ok": {"status": "notFound"}}),
        2 => any(r, 4),
        _ => json!({"ok": {"status": "ok", "data": user(r)}}),
    };
    serde_json::from_value(v).unwrap_or(Loaded::Error {
        kind: stateful_core::FailureKind::Failed,
        message: "the activity failed".into(),
    })
}

// ---------------------------------------------------------------------------------------------
// The glue, simulated.

/// What the simulated glue has in flight for the current run.
#[derive(Default)]
struct Glue {
    /// Child starts issued, not yet confirmed or refused.
    starts: Vec<(String, u32)>,
    /// Children started by this run and not ended.
    running: Vec<(String, u32)>,
    /// Signals not yet acknowledged: (target, child generation).
    signals: Vec<(String, Option<u32>)>,
    /// Cancellation requests not yet acknowledged.
    cancels: usize,
    /// A load is running.
    load: bool,
    /// Update tickets not yet answered.
    tickets: Vec<u64>,
    /// The refresh timer fired (its message is in the inbox).
    timer_fired: bool,
}

impl Glue {
    fn pending(&self) -> Pending {
        Pending {
            children: self.starts.len() + self.running.len(),
            signals: self.signals.len(),
            cancels: self.cancels,
        }
    }
}

struct Case {
    r: Rng,
    core: Core,
    schema: Schema,
    schema_json: Value,
    workflow_id: String,
    now: u64,
    task: u64,
    glue: Glue,
    trace: bool,
    ended: bool,
    /// Client messages sent so far.
    sent: usize,
    /// Properties that did not hold (the case goes on: one failure does not hide the next).
    problems: Vec<String>,
}

/// `FUZZ_TRACE=full`: traces show whole messages.
static FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `v`, cut to 300 bytes (unless `FUZZ_TRACE=full`).
fn short(v: &impl std::fmt::Display) -> String {
    let s = v.to_string();
    if s.len() > 300 && !FULL.load(Ordering::Relaxed) {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s
    }
}

/// A problem's kind: its text without numbers and quoted names (the report shows one case of
/// each kind).
fn kind(problem: &str) -> String {
    let mut quoted = false;
    problem
        .chars()
        .filter(|c| {
            if *c == '`' {
                quoted = !quoted;
            }
            !quoted && !c.is_ascii_digit()
        })
        .take(90)
        .collect()
}

impl Case {
    fn trace(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{}] {}", self.now - T0, what());
        }
    }

    /// Records a property that did not hold (once per kind and case).
    fn fail(&mut self, problem: String) {
        self.trace(|| format!("PROBLEM: {problem}"));
        if !self.problems.iter().any(|p| kind(p) == kind(&problem)) {
            self.problems.push(problem);
        }
    }

    fn limits(&self) -> Limits {
        *self.core.limits()
    }

    /// Every effect passes the outgoing-command check (payload sizes only for what is issued: a
    /// batch's signal too large for one payload is split when it is queued).
    fn check_effects(&mut self, effects: &[Effect], issued: bool) {
        let limits = if issued {
            self.limits()
        } else {
            Limits {
                max_payload_bytes: u64::MAX,
                compressed: false,
                ..self.limits()
            }
        };
        let what = if issued { "an issued" } else { "a planned" };
        for e in effects {
            if let Err(reason) = e.check(&limits) {
                self.fail(format!("{what} effect fails the check: {reason}"));
            }
        }
    }

    /// What a wave issued is now in flight.
    fn issued(&mut self, wave: Vec<Effect>) {
        for e in wave {
            self.trace(|| format!("issue {e:?}"));
            match e {
                Effect::Start {
                    workflow_id,
                    generation,
                    ..
                } => self.glue.starts.push((workflow_id, generation)),
                Effect::Signal {
                    workflow_id,
                    child_generation,
                    ..
                } => self.glue.signals.push((workflow_id, child_generation)),
                Effect::Cancel { .. } => self.glue.cancels += 1,
                _ => {}
            }
        }
    }

    /// Queues a batch's effects and issues a first wave.
    fn send(&mut self, effects: Vec<Effect>) {
        self.check_effects(&effects, false);
        self.core.enqueue(effects);
        self.release();
    }

    /// Issues the next wave (as acknowledgements make room).
    fn release(&mut self) {
        self.task += 1;
        let wave = self.core.release(self.glue.pending(), self.task);
        self.check_effects(&wave, true);
        ISSUED.fetch_add(wave.len() as u64, Ordering::Relaxed);
        self.issued(wave);
    }

    /// Some of what is in flight resolves, as the SDK would report it.
    fn outcomes(&mut self) -> Vec<ChildEvent> {
        let mut out = Vec::new();
        let n = self.r.below(self.glue.starts.len() + 1);
        for (wid, g) in self.glue.starts.drain(..n).collect::<Vec<_>>() {
            let kind = match self.r.below(10) {
                0 => ChildEventKind::AlreadyRunning,
                1 => ChildEventKind::StartFailed,
                _ => {
                    self.glue.running.push((wid.clone(), g));
                    ChildEventKind::Started
                }
            };
            out.push(ChildEvent::new(
                &wid,
                g,
                kind,
                ChildOutcome::None,
                String::new(),
            ));
        }
        if !self.glue.running.is_empty() && self.r.chance(20) {
            let i = self.r.below(self.glue.running.len());
            let (wid, g) = self.glue.running.remove(i);
            let outcome = self.r.pick(&[
                ChildOutcome::Completed,
                ChildOutcome::Failed,
                ChildOutcome::Cancelled,
                ChildOutcome::Terminated,
                ChildOutcome::TimedOut,
            ]);
            let detail = string(&mut self.r);
            out.push(ChildEvent::new(
                &wid,
                g,
                ChildEventKind::Ended,
                outcome,
                detail,
            ));
        }
        for (wid, g) in std::mem::take(&mut self.glue.signals) {
            if let Some(g) = g
                && self.r.chance(5)
            {
                out.push(ChildEvent::new(
                    &wid,
                    g,
                    ChildEventKind::SignalFailed,
                    ChildOutcome::Gone,
                    "not found".into(),
                ));
            }
        }
        self.glue.cancels = 0;
        out
    }

    /// One batch, as `run::run_batch` runs it, and the properties after it.
    fn batch(&mut self) -> Result<(), String> {
        let tickets = std::mem::take(&mut self.glue.tickets);
        let mut out = self.core.process(self.now);
        // A `schema` message ends its batch: the glue's loop runs the next at once (it has work).
        for _ in 0..100 {
            if self.core.inbox_empty() {
                break;
            }
            let more = self.core.process(self.now);
            out.effects.extend(more.effects);
            out.rejected.extend(more.rejected);
        }
        BATCHES.fetch_add(1, Ordering::Relaxed);
        REJECTED.fetch_add(out.rejected.len() as u64, Ordering::Relaxed);
        self.trace(|| {
            format!(
                "batch: {} changes, {} rejected {:?}, {} effects, status {:?}",
                out.changes.len(),
                out.rejected.len(),
                out.rejected
                    .iter()
                    .map(|r| short(&r.reason))
                    .collect::<Vec<_>>(),
                out.effects.len(),
                self.core.status()
            )
        });
        if !self.core.inbox_empty() {
            self.fail("the inbox is not empty after a batch".into());
        }
        for t in tickets {
            if !self.core.results_ready(t) {
                self.fail(format!("update ticket {t} is not answered by its batch"));
            }
            self.core.take_result(t);
        }
        if !self.core.handlers_idle() {
            self.fail("an update is still open after its result was taken".into());
        }
        self.send(out.effects);
        self.after_batch();
        if self.core.status().is_terminal() {
            self.flush()?;
            self.ended = true;
        }
        Ok(())
    }

    /// The queries a client may make at any time (none may panic).
    fn queries(&self) {
        let c = &self.core;
        let _ = (
            c.state(),
            c.data(),
            c.version_info(),
            c.api_info(),
            c.token_info(),
        );
        let _ = (
            c.pending(),
            c.rejected_info(),
            c.subscriptions_info(),
            c.memo(),
        );
        let _ = (
            c.tree().children_info_within(100),
            c.audit().info(),
            c.managed_paths(),
            c.schema_info(),
        );
        let _ = (c.status_str(), c.api_url(), c.refresh_interval());
    }

    /// After a batch or a start: the load to run, and the state's properties.
    fn after_batch(&mut self) {
        if self.r.chance(25) {
            self.queries();
        }
        if !self.glue.load
            && let Some((req, _)) = self.core.take_load()
        {
            self.trace(|| format!("load {}", short(&req.url)));
            self.glue.load = true;
        }
        self.bounded();
        if std::mem::take(&mut self.glue.timer_fired)
            && let Some(due) = self.core.refresh_due()
            && due <= self.now
        {
            let load = if self.glue.load { "a load" } else { "no load" };
            self.fail(format!(
                "tight loop ({:?}, {load} running): after the refresh timer fired, the next \
                 refresh is due at {due}, not after now ({})",
                self.core.status(),
                self.now,
            ));
        }
    }

    /// Before a run ends or hands over: everything but child starts is issued.
    fn flush(&mut self) -> Result<(), String> {
        for _ in 0..10_000 {
            if self.core.outbox_settled() {
                return Ok(());
            }
            self.glue.signals.clear();
            self.glue.cancels = 0;
            self.release();
        }
        Err("the outbox does not drain".into())
    }

    /// The state stays within its bounds.
    fn bounded(&mut self) {
        let c = &self.core;
        let mut problems = Vec::new();
        let rejected = c.rejected_info();
        let recent = rejected["recent"].as_array().map_or(0, Vec::len);
        if recent > MAX_REJECTED {
            problems.push(format!("{recent} rejections kept"));
        }
        for r in rejected["recent"].as_array().into_iter().flatten() {
            let len = r["reason"].as_str().map_or(0, str::len);
            if len > MAX_REASON + 40 {
                problems.push(format!("a rejection reason of {len} bytes"));
            }
        }
        let changes = c.audit().recent_info().as_array().map_or(0, Vec::len);
        if changes > MAX_RECENT {
            problems.push(format!("{changes} recent changes kept"));
        }
        let subs = c.tree().subscriptions().len();
        if subs > MAX_SUBSCRIPTIONS {
            problems.push(format!("{subs} subscriptions"));
        }
        let children = c.tree().children().len();
        if children > c.store().len() + MAX_ENDED_CHILDREN {
            problems.push(format!("{children} children in the registry"));
        }
        let order = c.tree().sub_order().len();
        if order > MAX_UNSUBSCRIBED + MAX_SUBSCRIPTIONS {
            problems.push(format!("{order} subscriptions remembered"));
        }
        let clock = c.store().clock();
        if clock > self.now.saturating_add(SKEW_MS) {
            problems.push(format!(
                "the store's clock is at {clock}, {} ms ahead of the workflow time",
                clock - self.now
            ));
        }
        for p in problems {
            self.fail(p);
        }
    }

    /// The next run's input: within one payload, its stamps not in the future.
    fn carry_checks(&mut self) -> Value {
        let size = self.core.carry_size();
        let max = self.limits().max_payload_bytes;
        if size > max {
            self.fail(format!(
                "the next run's input takes {size} bytes, more than the {max} of one payload"
            ));
        }
        let input = self.core.carry_input();
        if size > max {
            self.trace(|| {
                let sizes: Vec<String> = input
                    .as_object()
                    .into_iter()
                    .flatten()
                    .chain(
                        input
                            .get("carry")
                            .and_then(Value::as_object)
                            .into_iter()
                            .flatten(),
                    )
                    .map(|(k, v)| format!("{k}: {}", v.to_string().len()))
                    .collect();
                format!("the next run's input, by field: {}", sizes.join(", "))
            });
        }
        let horizon = self.now.saturating_add(SKEW_MS);
        let mut late = Vec::new();
        for part in [
            input.pointer("/carry/order"),
            input.pointer("/carry/store/meta"),
            input.pointer("/carry/store/tombstones"),
            input.get("subscriptions"),
            input.get("incarnation"),
        ]
        .into_iter()
        .flatten()
        {
            future_stamps(part, horizon, &mut late);
        }
        for c in input
            .pointer("/carry/children")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
        {
            for k in ["tokenSent", "statusSent", "incarnation", "adoptedAt"] {
                if let Some(s) = c.get(k) {
                    future_stamps(s, horizon, &mut late);
                }
            }
        }
        if let Some(t) = late.first() {
            self.fail(format!(
                "the next run's input holds {} stamps more than {SKEW_MS} ms ahead of the workflow \
                 time ({}), e.g. [{t}, ...]",
                late.len(),
                self.now
            ));
        }
        input
    }

    /// Continue-as-new, as `run::continue_as_new` does it: a last batch, the outbox flushed, what
    /// resolved handed over, then the next run starts from the carry-over.
    fn continue_as_new(&mut self) -> Result<(), String> {
        self.trace(|| "continue as new".into());
        self.batch()?;
        if self.ended {
            return Ok(());
        }
        self.flush()?;
        let outcomes = self.outcomes();
        self.core.hand_over(outcomes);
        if self.core.carry_size() > self.limits().max_payload_bytes {
            // What resolved as the run drained (handed over in the inbox) leaves no room: the glue
            // goes on in this run (`defer_handover`), whose next batch applies it, and hands over
            // later. The hand-over after that batch must fit.
            self.trace(|| "hand-over deferred: one more batch in this run".into());
            self.batch()?;
            if self.ended {
                return Ok(());
            }
            self.flush()?;
            let outcomes = self.outcomes();
            self.core.hand_over(outcomes);
        }
        self.core.checkpoint("run", self.now);
        let input = self.carry_checks();
        let mut next = Core::default();
        next.set_check_hosts(true);
        let parsed = StartInput::parse(&input)
            .map_err(|e| format!("the next run's input does not parse: {e}"))?;
        next.start(
            parsed,
            self.schema.clone(),
            self.schema_json.clone(),
            self.workflow_id.clone(),
            self.now,
        )
        .map_err(|e| format!("the next run does not start: {e}"))?;
        self.core = next;
        RUNS.fetch_add(1, Ordering::Relaxed);
        self.glue = Glue::default();
        let effects = self.core.initial_effects();
        self.send(effects);
        self.after_batch();
        Ok(())
    }

    /// A client's message: a signal, or an acknowledged update through its validator. Messages
    /// that end the workflow are rarer (they end the case).
    /// A message from a child of ours (its run's incarnation included, as our children send it):
    /// what it changed in its entity, or its report that it ended, with any values.
    fn child_message(&mut self) -> Option<(Signal, Value)> {
        let children: Vec<(String, Value, String, String)> = self
            .core
            .tree()
            .children()
            .iter()
            .map(|(w, c)| {
                (
                    w.clone(),
                    json!(c.incarnation),
                    c.entity.clone(),
                    c.id.clone(),
                )
            })
            .collect();
        if children.is_empty() {
            return None;
        }
        let (wid, incarnation, entity, id) = self.r.pick(&children);
        Some(if self.r.chance(70) {
            let mut row = Map::new();
            row.insert("id".into(), json!(id));
            row.insert(key(&mut self.r), value(&mut self.r));
            (
                Signal::Update,
                json!({"updates": {entity: {id: row}}, "changeOrigin": wid,
                       "incarnation": incarnation}),
            )
        } else {
            let reason = if self.r.chance(50) {
                self.r
                    .pick(&["completed", "cancelled", "deleted"])
                    .to_string()
            } else {
                string(&mut self.r)
            };
            (
                Signal::ChildEnded,
                json!({"workflowId": wid, "reason": reason, "incarnation": incarnation}),
            )
        })
    }

    fn client(&mut self) {
        self.sent += 1;
        if self.r.chance(10)
            && let Some((s, p)) = self.child_message()
        {
            self.trace(|| format!("from a child: signal {} {}", s.name(), short(&p)));
            self.core.signal(s, Ok(p));
            return;
        }
        let mut s = self.r.pick(&Signal::ALL);
        if matches!(s, Signal::Cancel | Signal::Status) && self.r.chance(80) {
            s = self
                .r
                .pick(&[Signal::Update, Signal::Subscribe, Signal::ApiToken]);
        }
        let p = payload(&mut self.r, s);
        let acknowledged = matches!(
            s,
            Signal::Update | Signal::Delete | Signal::State | Signal::Schema
        ) && self.r.chance(30);
        self.trace(|| {
            format!(
                "{} {} {}",
                if acknowledged { "update" } else { "signal" },
                s.name(),
                match &p {
                    Ok(v) => short(v),
                    Err(e) => format!("Err({e})"),
                }
            )
        });
        if acknowledged {
            match self.core.validate(s, &p) {
                Ok(()) => {
                    let t = self.core.enqueue_update(s, p);
                    self.glue.tickets.push(t);
                }
                Err(e) => self.trace(|| format!("  refused by the validator: {}", short(&e))),
            }
        } else {
            self.core.signal(s, p);
        }
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += self.r.below(5_000) as u64;
        match self.r.below(100) {
            0..=69 => self.client(),
            70..=81 => {
                for ev in self.outcomes() {
                    self.trace(|| format!("child event {ev:?}"));
                    self.core.push(Msg::Child(ev));
                }
                // Acknowledgements make room.
                self.release();
            }
            82..=87 => {
                if self.glue.load {
                    self.glue.load = false;
                    let l = loaded(&mut self.r);
                    self.trace(|| format!("loaded {}", short(&json!(l))));
                    self.core.push(Msg::Loaded(l));
                }
            }
            88..=94 => {
                // The refresh timer fires when the refresh is due (the glue checks it).
                if let Some(due) = self.core.refresh_due() {
                    self.now = self.now.max(due);
                    self.trace(|| "refresh timer".into());
                    self.core.push(Msg::RefreshTimer);
                    self.glue.timer_fired = true;
                }
            }
            95..=97 => return self.continue_as_new(),
            _ => {
                if self.r.chance(20) {
                    self.trace(|| "Temporal cancellation".into());
                    self.core.push(Msg::TemporalCancel);
                }
            }
        }
        // Several messages often land in one workflow task.
        if self.core.has_work() && self.r.chance(60) {
            self.batch()?;
        }
        Ok(())
    }
}

/// Collects the stamps (`[time, origin]`) in `v` later than `horizon`.
fn future_stamps(v: &Value, horizon: u64, out: &mut Vec<u64>) {
    match v {
        Value::Array(a) if a.len() == 2 && a[1].is_string() => {
            if let Some(t) = a[0].as_u64()
                && t > horizon
            {
                out.push(t);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| future_stamps(x, horizon, out)),
        Value::Object(m) => m.values().for_each(|x| future_stamps(x, horizon, out)),
        _ => {}
    }
}

/// One case: a start, then [`MESSAGES`] client messages with the glue's events among them.
/// Returns the properties that did not hold.
fn run_case(seed: u64, trace: bool) -> Vec<String> {
    let schema = Schema::parse(SCHEMA, "fuzz").expect("the fuzz schema");
    let schema_json = schema.to_json();
    let mut r = Rng(seed);
    let input = start_input(&mut r);
    if trace {
        eprintln!("start input: {}", short(&input));
    }
    if let Some(s) = input.get("schema") {
        // The glue reads a schema given in the input (this one runs with the fixed schema).
        let _ = Schema::from_json(s);
    }
    let parsed = match StartInput::parse(&input) {
        Ok(p) => p,
        Err(e) => {
            if trace {
                eprintln!("start input refused: {}", short(&e));
            }
            return Vec::new();
        }
    };
    let workflow_id = format!("{}-{}", parsed.entity_name, parsed.id);
    let mut core = Core::default();
    // As the glue sets it for a workflow of this release: the token goes to the tree's API hosts.
    core.set_check_hosts(true);
    if let Err(e) = core.start(
        parsed,
        schema.clone(),
        schema_json.clone(),
        workflow_id.clone(),
        T0,
    ) {
        if trace {
            eprintln!("start refused: {}", short(&e));
        }
        return Vec::new();
    }
    STARTED.fetch_add(1, Ordering::Relaxed);
    let mut c = Case {
        r,
        core,
        schema,
        schema_json,
        workflow_id,
        now: T0,
        task: 0,
        glue: Glue::default(),
        trace,
        ended: false,
        sent: 0,
        problems: Vec::new(),
    };
    let effects = c.core.initial_effects();
    c.send(effects);
    c.after_batch();
    let mut done = Ok(());
    while done.is_ok() && c.sent < MESSAGES && !c.ended {
        done = c.step();
    }
    if done.is_ok() && !c.ended {
        done = c.batch();
    }
    if done.is_ok() && !c.ended {
        // The `validate` query (costly: once per case).
        let _ = c.core.validate_state();
        c.carry_checks();
    }
    if let Err(e) = done {
        c.fail(e);
    }
    c.problems
}

thread_local! {
    /// Where the last panic happened (set by the test's panic hook).
    static PANICKED_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs one case, a panic included.
fn run_seed(seed: u64, trace: bool) -> Vec<String> {
    match catch_unwind(AssertUnwindSafe(|| run_case(seed, trace))) {
        Ok(problems) => problems,
        Err(p) => vec![format!(
            "panic: {} (at {})",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
            PANICKED_AT.with(|a| a.borrow().clone())
        )],
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

#[test]
fn careless_and_hostile_clients_cannot_break_a_workflow() {
    let trace = std::env::var("FUZZ_TRACE").is_ok();
    FULL.store(
        std::env::var("FUZZ_TRACE").is_ok_and(|t| t == "full"),
        Ordering::Relaxed,
    );
    if let Some(seed) = env("FUZZ_SEED") {
        let problems = run_seed(seed, trace);
        assert!(
            problems.is_empty(),
            "FUZZ_SEED={seed}:\n{}",
            problems.join("\n")
        );
        return;
    }
    // Panics are reported with their seed below; the default hook would print each one too.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(ToString::to_string).unwrap_or_default();
        PANICKED_AT.with(|a| *a.borrow_mut() = at);
    }));
    let from = env("FUZZ_FROM").unwrap_or(0);
    let n = env("FUZZ_CASES").unwrap_or(CASES);
    // Failures by kind (the message without its numbers): the first seed, and how many.
    let mut kinds: BTreeMap<String, (u64, String, usize)> = BTreeMap::new();
    let started = std::time::Instant::now();
    for seed in from..from + n {
        for p in run_seed(seed, false) {
            kinds.entry(kind(&p)).or_insert((seed, p, 0)).2 += 1;
        }
    }
    std::panic::set_hook(hook);
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{n} cases in {:.1?}: {} started, {} batches, {} rejections, {} effects issued, {} runs \
         continued as new",
        started.elapsed(),
        count(&STARTED),
        count(&BATCHES),
        count(&REJECTED),
        count(&ISSUED),
        count(&RUNS)
    );
    let report: Vec<String> = kinds
        .values()
        .map(|(seed, e, count)| format!("FUZZ_SEED={seed} ({count} cases): {}", short(e)))
        .collect();
    assert!(
        report.is_empty(),
        "{} kinds of failure (replay one with FUZZ_SEED=N FUZZ_TRACE=1 cargo test -p stateful-core \
         --test fuzz):\n{}",
        report.len(),
        report.join("\n")
    );
}
