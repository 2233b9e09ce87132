//! What crosses the boundary with the HTTP activities, without Temporal: their inputs and outputs (the
//! `stateful-activities` crate runs them and re-exports these types), the kinds of failure and which of
//! them retrying cannot fix (decided here, once), and a finished load as the workflow sees it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secret::Secret;

/// `loadData` input: the URL and the token (a [`Secret`]: `Debug` shows only its fingerprint).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadInput {
    /// URL to GET.
    pub url: String,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Timeout override.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `loadBatch` input: many URLs, one token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInput {
    /// URLs to GET.
    pub urls: Vec<String>,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Fail the whole activity on the first failed URL (retryable or not, as that failure is), instead
    /// of answering `{"error", "message"}` for it: what a workflow loading its own entity and its
    /// children's in one call wants, so that Temporal retries transient failures.
    #[serde(default)]
    pub fail_fast: bool,
    /// Answer only the first URLs whose results fit within the worker's result budget (at least one;
    /// a single result over the budget fails `ResultTooLarge`), instead of failing `ResultTooLarge`
    /// when they do not all fit: the caller asks again for the rest (see [`BatchLoad`]). Not sent
    /// when false, so inputs without it keep their recorded shape.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Temporal's default limit of one payload (`limit.blobSize.error`, 2 MiB); an activity's result is
/// one payload, and a larger one is refused by the server.
pub const PAYLOAD_LIMIT_BYTES: usize = 2 * 1024 * 1024;

/// The default result budget of the HTTP activities: the largest result (its JSON) they return; a
/// larger one fails `ResultTooLarge`, and `loadBatch` with [`BatchInput::partial`] stops before it.
/// It leaves 97,152 bytes of [`PAYLOAD_LIMIT_BYTES`] for the payload's metadata and the codec's
/// envelope (encryption adds well under 1 KiB).
pub const DEFAULT_MAX_RESULT_BYTES: usize = 2_000_000;

/// The default largest API answer accepted: one answer wrapped in a load's result (`{"status": "ok",
/// "data": ...}`, re-serialized compactly) stays within [`DEFAULT_MAX_RESULT_BYTES`].
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_900_000;

/// The length of a value's compact JSON (what the payload converter writes), without building it.
pub fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Serializing a `Value` or a derived type into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

/// The bytes of a JSON array being filled within a budget: `[`, the items, their commas, `]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultBudget {
    limit: usize,
    used: usize,
    items: usize,
}

impl ResultBudget {
    /// An empty array (2 bytes) within `limit` bytes.
    pub fn new(limit: usize) -> ResultBudget {
        ResultBudget {
            limit,
            used: 2,
            items: 0,
        }
    }

    /// The array's length in bytes with one more item of `len` bytes.
    pub fn with(&self, len: usize) -> usize {
        self.used + len + usize::from(self.items > 0)
    }

    /// Adds an item of `len` bytes when the array then stays within the limit; false (and nothing
    /// added) otherwise.
    pub fn add(&mut self, len: usize) -> bool {
        let next = self.with(len);
        if next > self.limit {
            return false;
        }
        self.used = next;
        self.items += 1;
        true
    }

    /// Items added.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The most URL bytes one `loadBatch` input of a [`BatchLoad`] holds (at least one URL): an
/// activity's input is a payload too, and a parent of tens of thousands of children has hundreds of
/// batch URLs of 100 ids each.
pub const BATCH_INPUT_BYTES: usize = 1_000_000;

/// A workflow's batch load (its own URL, then its children's batch URLs) in as many `loadBatch`
/// activities as their results need: each activity is asked for the URLs not answered yet (as many
/// as [`BATCH_INPUT_BYTES`] holds), with [`BatchInput::partial`], and answers a prefix of them that
/// fits within the worker's result budget; the next one is asked for the rest. Every activity answers at least one URL (or fails),
/// so a load of `n` URLs takes at most `n` activities. The decisions depend only on the activities'
/// results: deterministic, as workflow code must be.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchLoad {
    /// Every URL: the own entity's first.
    urls: Vec<String>,
    /// The entity of each batch URL (`urls[1..]`).
    entities: Vec<String>,
    /// The answers so far, in URL order.
    answers: Vec<Value>,
    /// Activities asked so far.
    activities: usize,
    /// URLs the last activity was asked for.
    asked: usize,
}

impl BatchLoad {
    /// A load of `own` and the `(entity, url)` batch URLs.
    pub fn new(own: String, batch: Vec<(String, String)>) -> BatchLoad {
        let (entities, batch_urls): (Vec<String>, Vec<String>) = batch.into_iter().unzip();
        let mut urls = Vec::with_capacity(batch_urls.len() + 1);
        urls.push(own);
        urls.extend(batch_urls);
        BatchLoad {
            urls,
            entities,
            answers: Vec::new(),
            activities: 0,
            asked: 0,
        }
    }

    /// The next activity's input (the URLs not answered yet, up to [`BATCH_INPUT_BYTES`] of them),
    /// or None when every URL is answered.
    pub fn next_input(&mut self, token: Option<&Secret>) -> Option<BatchInput> {
        let rest = self
            .urls
            .get(self.answers.len()..)
            .filter(|r| !r.is_empty())?;
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|u| {
                bytes += u.len();
                bytes <= BATCH_INPUT_BYTES
            })
            .count()
            .max(1);
        self.activities += 1;
        self.asked = n;
        Some(BatchInput {
            urls: rest[..n].to_vec(),
            token: token.cloned(),
            fail_fast: true,
            partial: true,
        })
    }

    /// Takes an activity's answers: those of the first URLs it was asked for. An activity that
    /// answered none, or more than it was asked, breaks the contract: the load fails with that reason.
    pub fn take(&mut self, answers: Vec<Value>) -> Result<(), String> {
        let asked = self.asked;
        if answers.is_empty() || answers.len() > asked {
            return Err(format!(
                "loadBatch answered {} results for {asked} URLs",
                answers.len()
            ));
        }
        self.answers.extend(answers);
        self.asked = 0;
        Ok(())
    }

    /// Activities asked so far.
    pub fn activities(&self) -> usize {
        self.activities
    }

    /// The outcome, once every URL is answered: the own entity's output and each batch URL's (an
    /// answer that is not a load output counts as `notFound`).
    pub fn finish(self) -> Loaded {
        let mut outs = self
            .answers
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap_or_else(|_| LoadOutput::not_found()));
        let own = outs.next().unwrap_or_else(LoadOutput::not_found);
        Loaded::Many {
            own,
            related: self.entities.into_iter().zip(outs).collect(),
        }
    }
}

/// What a load found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadStatus {
    /// The API answered with the entity.
    Ok,
    /// The API answered 404.
    NotFound,
}

impl LoadStatus {
    /// As the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadStatus::Ok => "ok",
            LoadStatus::NotFound => "notFound",
        }
    }
}

/// `loadData` output: chrono-forge's `loadData` shape (`data`, or `updates` with a `strategy`), or
/// `notFound`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadOutput {
    /// `ok` or `notFound`.
    pub status: LoadStatus,
    /// The entity (or a list of entities), denormalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Normalized updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<Value>,
    /// Strategy for `updates` / `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

impl LoadOutput {
    /// A 404.
    pub fn not_found() -> LoadOutput {
        LoadOutput {
            status: LoadStatus::NotFound,
            data: None,
            updates: None,
            strategy: None,
        }
    }
}

/// Why an HTTP activity failed: the failure type name Temporal records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FailureKind {
    /// 401 or 403: a new token heals it.
    Unauthorized,
    /// 408, 429, 5xx.
    Transient,
    /// Any other 4xx.
    Rejected,
    /// Timeouts and connection errors.
    Network,
    /// A body that is not JSON, or too large.
    BadBody,
    /// The circuit for the host is open.
    CircuitOpen,
    /// The activity's result would exceed the worker's result budget (and so Temporal's payload
    /// limit): the answer fits no activity result; not retried.
    ResultTooLarge,
    /// A malformed activity input.
    BadInput,
    /// The activity timed out (as Temporal reports it).
    Timeout,
    /// Anything else (a failure with no type).
    Failed,
    /// A type name this version does not know.
    Other(String),
}

impl FailureKind {
    /// The kinds that retrying cannot fix: activities fail them as non-retryable, and the workflow's
    /// retry policy names them.
    pub const NON_RETRYABLE: [FailureKind; 5] = [
        FailureKind::Unauthorized,
        FailureKind::Rejected,
        FailureKind::BadBody,
        FailureKind::BadInput,
        FailureKind::ResultTooLarge,
    ];

    /// The type name.
    pub fn as_str(&self) -> &str {
        match self {
            FailureKind::Unauthorized => "Unauthorized",
            FailureKind::Transient => "Transient",
            FailureKind::Rejected => "Rejected",
            FailureKind::Network => "Network",
            FailureKind::BadBody => "BadBody",
            FailureKind::CircuitOpen => "CircuitOpen",
            FailureKind::ResultTooLarge => "ResultTooLarge",
            FailureKind::BadInput => "BadInput",
            FailureKind::Timeout => "Timeout",
            FailureKind::Failed => "Failed",
            FailureKind::Other(s) => s,
        }
    }

    /// True when retrying can help.
    pub fn retryable(&self) -> bool {
        !Self::NON_RETRYABLE.contains(self)
    }
}

impl From<String> for FailureKind {
    fn from(s: String) -> FailureKind {
        match s.as_str() {
            "Unauthorized" => FailureKind::Unauthorized,
            "Transient" => FailureKind::Transient,
            "Rejected" => FailureKind::Rejected,
            "Network" => FailureKind::Network,
            "BadBody" => FailureKind::BadBody,
            "CircuitOpen" => FailureKind::CircuitOpen,
            "ResultTooLarge" => FailureKind::ResultTooLarge,
            "BadInput" => FailureKind::BadInput,
            "Timeout" => FailureKind::Timeout,
            "Failed" => FailureKind::Failed,
            _ => FailureKind::Other(s),
        }
    }
}

impl From<FailureKind> for String {
    fn from(k: FailureKind) -> String {
        k.as_str().to_string()
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a `loadData` (or `loadBatch`) activity, as the glue reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Loaded {
    /// The activity's output.
    Ok(LoadOutput),
    /// A batch: the own entity's output, and related entities' outputs by entity name.
    Many {
        /// The own entity's.
        own: LoadOutput,
        /// `(entity, output)` per batch URL.
        related: Vec<(String, LoadOutput)>,
    },
    /// The activity failed: its failure type and message.
    Error {
        /// Failure type.
        #[serde(rename = "type")]
        kind: FailureKind,
        /// Message (never holds the token).
        message: String,
    },
}

impl Loaded {
    /// The outcome as the `stateful_loads{outcome}` metric counts it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Loaded::Ok(o) | Loaded::Many { own: o, .. } => o.status.as_str(),
            Loaded::Error { kind, .. } => match kind {
                FailureKind::Unauthorized => "unauthorized",
                FailureKind::CircuitOpen => "circuitOpen",
                _ => "failed",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failure_kinds_keep_their_names_and_one_list_decides_retrying() {
        for k in [
            "Unauthorized",
            "Transient",
            "Rejected",
            "Network",
            "BadBody",
            "CircuitOpen",
            "ResultTooLarge",
            "BadInput",
            "Timeout",
            "Failed",
            "SomethingNew",
        ] {
            let kind = FailureKind::from(k.to_string());
            assert_eq!(kind.as_str(), k);
            assert_eq!(serde_json::to_value(&kind).unwrap(), json!(k));
        }
        assert!(!FailureKind::Unauthorized.retryable());
        assert!(FailureKind::Transient.retryable());
        assert!(!FailureKind::ResultTooLarge.retryable());
    }

    #[test]
    fn outputs_and_outcomes_keep_their_recorded_shape() {
        let l: Loaded =
            serde_json::from_value(json!({"error": {"type": "Unauthorized", "message": "401"}}))
                .unwrap();
        assert_eq!(l.outcome(), "unauthorized");
        let o: Loaded = serde_json::from_value(json!({"ok": {"status": "notFound"}})).unwrap();
        assert_eq!(o, Loaded::Ok(LoadOutput::not_found()));
        assert_eq!(
            serde_json::to_value(LoadInput {
                url: "u".into(),
                token: Some(Secret::new("t")),
                timeout_ms: None
            })
            .unwrap(),
            json!({"url": "u", "token": "t", "timeoutMs": null})
        );
    }

    #[test]
    fn json_len_is_the_compact_length_and_the_budget_counts_brackets_and_commas() {
        let v = json!({"status": "ok", "data": {"id": "é", "n": 1e3}});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
        let items = [json!("a"), json!({"b": [1, 2]}), json!(null)];
        let mut b = ResultBudget::new(usize::MAX);
        for i in &items {
            assert!(b.add(json_len(i)));
        }
        assert_eq!(b.with(0) - 1, json_len(&items));
        // Exactly full fits; one byte more does not, and changes nothing.
        let mut b = ResultBudget::new(json_len(&items[..2]));
        assert!(b.add(json_len(&items[0])) && b.add(json_len(&items[1])));
        assert!(!b.add(0));
        assert_eq!((b.items(), b.limit()), (2, json_len(&items[..2])));
    }

    /// What `loadBatch` with `partial` does, without HTTP: the answers of `urls` (by URL) that fit.
    fn activity(input: &BatchInput, answers: &dyn Fn(&str) -> Value, limit: usize) -> Vec<Value> {
        let mut budget = ResultBudget::new(limit);
        let mut out = Vec::new();
        for u in &input.urls {
            let a = answers(u);
            if !budget.add(json_len(&a)) {
                break;
            }
            out.push(a);
        }
        assert!(!out.is_empty(), "every answer fits alone here");
        out
    }

    fn answer(url: &str) -> Value {
        let n: usize = url.rsplit('/').next().unwrap().parse().unwrap();
        json!({"status": "ok", "data": {"id": url, "pad": "x".repeat(n)}})
    }

    #[test]
    fn a_batch_load_splits_into_activities_whose_results_fit_and_answers_every_url() {
        let batch: Vec<(String, String)> = (0..40)
            .map(|i| {
                (
                    "Listing".to_string(),
                    format!("http://h/l/{}", (i * 37) % 500),
                )
            })
            .collect();
        let limit = 2_000;
        let mut load = BatchLoad::new("http://h/u/10".into(), batch.clone());
        let token = Secret::new("t");
        let mut results = Vec::new();
        while let Some(input) = load.next_input(Some(&token)) {
            assert!(input.fail_fast && input.partial);
            assert_eq!(input.token.as_ref().map(Secret::expose), Some("t"));
            let out = activity(&input, &answer, limit);
            results.push(json_len(&out));
            load.take(out).unwrap();
        }
        assert!(results.iter().all(|&n| n <= limit), "{results:?}");
        assert!(load.activities() > 1 && load.activities() == results.len());
        let Loaded::Many { own, related } = load.finish() else {
            panic!("a batch");
        };
        assert_eq!(own.data.unwrap()["id"], json!("http://h/u/10"));
        assert_eq!(related.len(), batch.len());
        for ((entity, out), (e, url)) in related.iter().zip(&batch) {
            assert_eq!(
                (entity, &out.data.as_ref().unwrap()["id"]),
                (e, &json!(url))
            );
        }
    }

    #[test]
    fn a_batch_whose_results_fit_takes_one_activity_and_keeps_its_recorded_shape() {
        let mut load = BatchLoad::new("u".into(), vec![("L".into(), "b".into())]);
        let input = load.next_input(None).unwrap();
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            json!({"urls": ["u", "b"], "token": null, "failFast": true, "partial": true})
        );
        let old: BatchInput = serde_json::from_value(json!({"urls": ["u"]})).unwrap();
        assert!(!old.partial && !old.fail_fast);
        assert_eq!(
            serde_json::to_value(&old).unwrap(),
            json!({"urls": ["u"], "token": null, "failFast": false})
        );
        load.take(vec![
            json!({"status": "ok", "data": {"id": "u"}}),
            json!({"status": "notFound"}),
        ])
        .unwrap();
        assert!(load.next_input(None).is_none());
        assert_eq!(load.activities(), 1);
        assert_eq!(
            load.finish(),
            Loaded::Many {
                own: LoadOutput {
                    status: LoadStatus::Ok,
                    data: Some(json!({"id": "u"})),
                    updates: None,
                    strategy: None
                },
                related: vec![("L".into(), LoadOutput::not_found())]
            }
        );
    }

    #[test]
    fn each_input_holds_at_most_its_byte_budget_of_urls() {
        let url = |i: usize| format!("http://h/l?ids={i:0>9985}");
        let batch: Vec<(String, String)> = (0..250).map(|i| ("L".to_string(), url(i))).collect();
        let mut load = BatchLoad::new("http://h/u".into(), batch);
        let mut sizes = Vec::new();
        while let Some(input) = load.next_input(None) {
            assert!(input.urls.iter().map(String::len).sum::<usize>() <= BATCH_INPUT_BYTES);
            sizes.push(input.urls.len());
            let n = input.urls.len();
            load.take(vec![json!({"status": "notFound"}); n]).unwrap();
        }
        assert_eq!(sizes, [100, 100, 51]);
        let Loaded::Many { related, .. } = load.finish() else {
            panic!("a batch");
        };
        assert_eq!(related.len(), 250);
        // One URL over the budget still goes, alone.
        let mut huge = BatchLoad::new("x".repeat(BATCH_INPUT_BYTES + 1), Vec::new());
        assert_eq!(huge.next_input(None).unwrap().urls.len(), 1);
    }

    #[test]
    fn an_activity_that_answers_nothing_or_too_much_fails_the_load() {
        let mut load = BatchLoad::new("u".into(), vec![("L".into(), "b".into())]);
        load.next_input(None).unwrap();
        let e = load.take(Vec::new()).unwrap_err();
        assert!(e.contains("0 results for 2 URLs"), "{e}");
        load.take(vec![json!({"status": "notFound"})]).unwrap();
        let rest = load.next_input(None).unwrap();
        assert_eq!(rest.urls, ["b"]);
        let e = load.take(vec![json!(1), json!(2)]).unwrap_err();
        assert!(e.contains("2 results for 1 URLs"), "{e}");
    }
}
