//! Error classification: one place decides what is retried.

use std::time::Duration;

use stateful_core::FailureKind;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// Why an HTTP call failed, with what decides retrying.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    /// 401 or 403: the token is missing, wrong or expired. Not retried: a new token heals it.
    #[error("unauthorized: the API answered {status} for {url} (rotate the apiToken)")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// URL (never holds the token: it travels in a header).
        url: String,
    },
    /// 408, 429, 5xx: retried with backoff; `Retry-After` is honoured.
    #[error("the API answered {status} for {url}; retrying")]
    Transient {
        /// HTTP status.
        status: u16,
        /// URL.
        url: String,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: the request is wrong; not retried.
    #[error("the API refused the request: {status} for {url}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// URL.
        url: String,
    },
    /// Timeouts and connection errors: retried.
    #[error("cannot reach the API at {url}: {reason}")]
    Network {
        /// URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// A body that is not JSON, or too large: not retried.
    #[error("the API's answer for {url} is unusable: {reason}")]
    BadBody {
        /// URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The circuit for this host is open after repeated failures: fail fast, retry after the cool-down.
    #[error("the circuit for {host} is open after repeated failures; next try in {retry_in:?}")]
    CircuitOpen {
        /// Host.
        host: String,
        /// Time left in the cool-down.
        retry_in: Duration,
    },
    /// A malformed activity input.
    #[error("bad activity input: {0}")]
    BadInput(String),
    /// The activity's result would exceed the worker's result budget, so Temporal's payload limit:
    /// not retried (the same answer would not fit again).
    #[error(
        "the {activity} result for {url} would be {bytes} bytes, over the worker's {limit}-byte result budget (Temporal refuses a payload over 2 MB): make the API answer smaller, or raise --api-max-result with --compress"
    )]
    ResultTooLarge {
        /// The activity.
        activity: &'static str,
        /// The URL whose answer did not fit.
        url: String,
        /// The result's size (JSON bytes) with that answer.
        bytes: usize,
        /// The result budget.
        limit: usize,
    },
}

impl HttpError {
    /// The failure kind Temporal records as the type name (and retry policies can match).
    pub fn kind(&self) -> FailureKind {
        match self {
            HttpError::Unauthorized { .. } => FailureKind::Unauthorized,
            HttpError::Transient { .. } => FailureKind::Transient,
            HttpError::Rejected { .. } => FailureKind::Rejected,
            HttpError::Network { .. } => FailureKind::Network,
            HttpError::BadBody { .. } => FailureKind::BadBody,
            HttpError::CircuitOpen { .. } => FailureKind::CircuitOpen,
            HttpError::BadInput(_) => FailureKind::BadInput,
            HttpError::ResultTooLarge { .. } => FailureKind::ResultTooLarge,
        }
    }

    /// The failure type name.
    pub fn type_name(&self) -> String {
        self.kind().as_str().to_string()
    }

    /// True when retrying can help (decided once, by [`FailureKind::retryable`]).
    pub fn retryable(&self) -> bool {
        self.kind().retryable()
    }

    /// True when it counts against the host's circuit.
    pub fn counts_against_host(&self) -> bool {
        matches!(
            self,
            HttpError::Transient { .. } | HttpError::Network { .. }
        )
    }

    /// Classifies a status code (None: a success).
    pub fn from_status(status: u16, url: &str, retry_after: Option<Duration>) -> Option<HttpError> {
        let url = url.to_string();
        match status {
            200..=299 => None,
            401 | 403 => Some(HttpError::Unauthorized { status, url }),
            408 | 429 | 500..=599 => Some(HttpError::Transient {
                status,
                url,
                retry_after,
            }),
            _ => Some(HttpError::Rejected { status, url }),
        }
    }
}

impl HttpError {
    /// The activity failure: retryable or not, with its type name and the retry delay the server
    /// asked for. (Explicit, not `From`: the SDK's blanket conversion would make every error retryable.)
    pub fn into_activity_error(self) -> ActivityError {
        let e = self;
        let delay = match &e {
            HttpError::Transient { retry_after, .. } => *retry_after,
            HttpError::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        };
        let type_name = e.type_name();
        let retryable = e.retryable();
        ActivityError::application(
            ApplicationFailure::builder(e)
                .type_name(type_name)
                .non_retryable(!retryable)
                .maybe_next_retry_delay(delay)
                .build(),
        )
    }
}

/// Parses `Retry-After` (seconds; HTTP dates are not honoured).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v.and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        assert!(HttpError::from_status(200, "u", None).is_none());
        assert_eq!(
            HttpError::from_status(401, "u", None).unwrap().type_name(),
            "Unauthorized"
        );
        assert!(!HttpError::from_status(403, "u", None).unwrap().retryable());
        for s in [408, 429, 500, 503] {
            assert!(
                HttpError::from_status(s, "u", None).unwrap().retryable(),
                "{s}"
            );
        }
        assert!(!HttpError::from_status(400, "u", None).unwrap().retryable());
        let big = HttpError::ResultTooLarge {
            activity: "loadBatch",
            url: "http://h/l?ids=1".into(),
            bytes: 2_100_000,
            limit: 2_000_000,
        };
        assert_eq!(
            (big.type_name().as_str(), big.retryable()),
            ("ResultTooLarge", false)
        );
        assert!(
            big.to_string()
                .contains("would be 2100000 bytes, over the worker's 2000000-byte result budget"),
            "{big}"
        );
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }
}
