//! An example custom worker: the stock worker's `StatefulWorkflow`, flags and activities, plus
//!
//! - a hook on `Listing` ([`PriceWatch`]): when a listing's `price` changes, it keeps the last
//!   prices in the listing (`priceHistory`) and calls the custom activity `priceAlert`; the
//!   activity's answer is written back into the listing as `lastAlert`;
//! - the activity `priceAlert` ([`PriceAlerts`], ordinary activity code: it may do I/O; here it
//!   counts the alerts in memory and describes the change);
//! - a custom query `priceHistory` (`{"name": "priceHistory", "args": {"last": N}}`), a custom
//!   signal `clearHistory` and a custom acknowledged update `discount` (`{"percent": P}`: lowers
//!   the price, which the hook then sees like any other change).
//!
//! Run it as the stock worker (the same flags): `custom-worker --schema examples/schema.yaml`
//! (without `--schema`, the repository's `examples/schema.yaml`, built in). Then:
//!
//! ```text
//! temporal workflow signal --workflow-id Listing-l1 --name update \
//!     --input '{"data": {"id": "l1", "price": 120}}'
//! temporal workflow query --workflow-id Listing-l1 --type custom --input '{"name": "priceHistory"}'
//! temporal workflow update execute --workflow-id Listing-l1 --name custom \
//!     --input '{"name": "discount", "args": {"percent": 10}}'
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use stateful_workflows::extend::{ActivityDone, EntityHook, HookCx, QueryCx};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// How many prices `priceHistory` keeps.
const HISTORY: usize = 10;

/// The hook: workflow code, so deterministic (no I/O, no clock but `cx.now_ms()`, no randomness);
/// what it remembers lives in the listing itself.
struct PriceWatch;

impl EntityHook for PriceWatch {
    fn on_change(&self, cx: &mut HookCx<'_>) {
        let Some(change) = cx.changes().get("price").cloned() else {
            return;
        };
        let Some(price) = change.new.filter(Value::is_number) else {
            return;
        };
        // The last prices, newest last, kept in the listing (carried over continue-as-new with
        // the rest of the state).
        let mut history: Vec<Value> = cx
            .get("priceHistory")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        history.push(json!({"price": price, "at": cx.now_ms()}));
        let skip = history.len().saturating_sub(HISTORY);
        history.drain(..skip);
        cx.set(fields([("priceHistory", Value::Array(history))]));
        cx.activity(
            "priceAlert",
            json!({"listing": cx.id(), "from": change.old, "to": price}),
        );
        // A later change of what this hook does (another activity, another input) needs a patch:
        // `if cx.patched("price-alert-v2") { new behaviour } else { old behaviour }`.
    }

    fn on_activity_result(&self, cx: &mut HookCx<'_>, done: &ActivityDone) {
        if done.name != "priceAlert" {
            return;
        }
        let alert = match &done.result {
            Ok(v) => v.clone(),
            Err(e) => json!({"error": e}),
        };
        cx.set(fields([("lastAlert", alert)]));
    }
}

fn fields<const N: usize>(kv: [(&str, Value); N]) -> Map<String, Value> {
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The custom activity. Activities are ordinary code: they may call services, read clocks and
/// fail (a failure is retried, then handed to the hook as an error).
#[derive(Clone, Default)]
pub struct PriceAlerts {
    sent: Arc<AtomicU64>,
}

#[activities]
impl PriceAlerts {
    /// `{listing, from, to}` → `{listing, from, to, change, alert}`.
    #[activity(name = "priceAlert")]
    pub async fn price_alert(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: Value,
    ) -> Result<Value, ActivityError> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(alert(&input, n))
    }
}

/// What `priceAlert` answers: the change, described (`n`: the alerts this worker sent so far).
fn alert(input: &Value, n: u64) -> Value {
    let to = input["to"].as_f64().unwrap_or(0.0);
    let change = input["from"].as_f64().map(|f| to - f);
    let direction = match change {
        Some(c) if c < 0.0 => "down",
        Some(c) if c > 0.0 => "up",
        Some(_) => "unchanged",
        None => "new",
    };
    json!({
        "listing": input["listing"],
        "from": input["from"],
        "to": input["to"],
        "change": change,
        "alert": format!("price {direction}"),
        "sentByThisWorker": n,
    })
}

/// `priceHistory`: the last prices (`args.last`: how many; default all that are kept).
fn price_history(q: &QueryCx<'_>, args: Value) -> Result<Value, String> {
    let all = q
        .get("priceHistory")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = match args.get("last") {
        None | Some(Value::Null) => all.len(),
        Some(v) => v.as_u64().ok_or("`last` must be a whole number")? as usize,
    };
    let skip = all.len().saturating_sub(last);
    Ok(json!({
        "listing": q.id(),
        "price": q.get("price"),
        "history": all[skip..],
    }))
}

/// `discount` (`{"percent": P}`, 0 < P < 100): lowers the price; answers the new price.
fn discount(cx: &mut HookCx<'_>, args: Value) -> Result<Value, String> {
    let percent = args["percent"]
        .as_f64()
        .filter(|p| *p > 0.0 && *p < 100.0)
        .ok_or("`percent` must be a number between 0 and 100")?;
    let price = cx
        .get("price")
        .and_then(Value::as_f64)
        .ok_or("the listing has no price")?;
    let new = (price * (100.0 - percent)).round() / 100.0;
    cx.set(fields([("price", json!(new))]));
    Ok(json!({"from": price, "to": new}))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = worker::Worker::builder()
        .schema_text(include_str!("../../schema.yaml"), "examples/schema.yaml")
        .hook("Listing", PriceWatch)
        .activities(PriceAlerts::default())
        .query("priceHistory", price_history)
        .signal("clearHistory", |cx, _args| {
            cx.set(fields([("priceHistory", json!([]))]))
        })
        .update("discount", discount)
        .run()
        .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The hook and the handlers without Temporal (`stateful_workflows::extend::testing`).
#[cfg(test)]
mod tests {
    use super::*;
    use stateful_workflows::extend::testing::Probe;

    #[test]
    fn a_price_change_is_kept_and_alerted() {
        let probe = Probe::new("Listing", "l1")
            .at(7, 1_000)
            .before(json!({"id": "l1", "price": 100, "priceHistory": [{"price": 100, "at": 1}]}))
            .after(json!({"id": "l1", "price": 120, "priceHistory": [{"price": 100, "at": 1}]}));
        let r = probe.on_change(&PriceWatch);
        assert_eq!(
            r.updates,
            vec![json!({"updates": {"Listing": {"l1": {"priceHistory": [
                {"price": 100, "at": 1}, {"price": 120, "at": 1_000}]}}}})]
        );
        assert_eq!(r.activities.len(), 1);
        assert_eq!(r.activities[0].0, "priceAlert");
        assert_eq!(
            r.activities[0].1,
            json!({"listing": "l1", "from": 100, "to": 120})
        );
        // Its own write (another field) asks for nothing.
        let r = Probe::new("Listing", "l1")
            .before(json!({"id": "l1", "price": 120}))
            .after(json!({"id": "l1", "price": 120, "lastAlert": {}}))
            .on_change(&PriceWatch);
        assert_eq!(r, Default::default());
    }

    #[test]
    fn the_alert_is_written_back() {
        let done = ActivityDone {
            name: "priceAlert".into(),
            input: json!({}),
            result: Err("Failed: down".into()),
        };
        let r = Probe::new("Listing", "l1").on_activity_result(&PriceWatch, &done);
        assert_eq!(
            r.updates,
            vec![json!({"updates": {"Listing": {"l1": {"lastAlert": {"error": "Failed: down"}}}}})]
        );
    }

    #[test]
    fn discount_lowers_the_price_or_refuses() {
        let probe = Probe::new("Listing", "l1").after(json!({"id": "l1", "price": 120}));
        let (answer, r) = probe.handler(|cx| discount(cx, json!({"percent": 10})));
        assert_eq!(answer, Ok(json!({"from": 120.0, "to": 108.0})));
        assert_eq!(
            r.updates,
            vec![json!({"updates": {"Listing": {"l1": {"price": 108.0}}}})]
        );
        let (answer, r) = probe.handler(|cx| discount(cx, json!({"percent": 100})));
        assert!(answer.unwrap_err().contains("between 0 and 100"));
        assert!(r.updates.is_empty());
    }

    #[test]
    fn the_activity_describes_the_change() {
        let out = alert(&json!({"listing": "l1", "from": 100, "to": 90}), 1);
        assert_eq!(out["alert"], json!("price down"));
        assert_eq!(out["change"], json!(-10.0));
        assert_eq!(alert(&json!({"to": 5}), 2)["alert"], json!("price new"));
    }
}
