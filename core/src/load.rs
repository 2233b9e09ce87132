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
    pub const NON_RETRYABLE: [FailureKind; 4] = [
        FailureKind::Unauthorized,
        FailureKind::Rejected,
        FailureKind::BadBody,
        FailureKind::BadInput,
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
}
