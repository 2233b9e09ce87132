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
    /// The token cannot be sent in an `Authorization` header (a control character, a non-ASCII
    /// character): reported as `Unauthorized` (not retried; a new token heals it), no request made,
    /// and never counted against the host.
    #[error("the apiToken for {url} cannot be sent: {reason} (rotate the apiToken)")]
    MalformedToken {
        /// URL.
        url: String,
        /// What is wrong with the token (never the token itself).
        reason: String,
    },
    /// The destination is refused by the worker's API host policy (not in `--api-allow-host`, a
    /// link-local or cloud-metadata address, a scheme other than http/https, a redirect to another
    /// host): no request made (or followed); reported as `BadInput`, not retried.
    #[error("refused to send a request to {url}: {reason}")]
    Refused {
        /// URL.
        url: String,
        /// Why, naming the host and the option that would allow it.
        reason: String,
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
            HttpError::MalformedToken { .. } => FailureKind::Unauthorized,
            HttpError::Refused { .. } | HttpError::BadInput(_) => FailureKind::BadInput,
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

    /// True when it counts against the host's circuit: only what says the host is unwell
    /// (connection errors, timeouts, 408, 429, 5xx). Errors about the caller (a malformed or rejected
    /// token, 404, other 4xx, a refused destination, a bad input) never do.
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

/// The longest `Retry-After` honoured: a server asking for more gets this (a hostile or broken API
/// cannot park a workflow's loads for days).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Parses `Retry-After`: delay-seconds, or an HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37
/// GMT`; a date in the past: no delay asked), capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    parse_retry_after_at(v, std::time::SystemTime::now())
}

/// [`parse_retry_after`] at a given time (an HTTP date is relative to it).
pub fn parse_retry_after_at(v: Option<&str>, now: std::time::SystemTime) -> Option<Duration> {
    let s = v?.trim();
    let delay = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: a number too large for u64 is "very long".
        Duration::from_secs(s.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(parse_imf_fixdate(s)?);
        at.duration_since(now).ok()?
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Seconds since the Unix epoch of an IMF-fixdate (RFC 9110 5.6.7), the HTTP date senders must use.
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (_weekday, rest) = s.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let num = |t: &str, len: usize| -> Option<u64> {
        (t.len() == len && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?
    };
    let day = num(day, 2)?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u64
        + 1;
    let year = num(year, 4)?;
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, sec] = hms[..] else {
        return None;
    };
    let (h, m, sec) = (num(h, 2)?, num(m, 2)?, num(sec, 2)?);
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), for years from 1970.
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3_600 + m * 60 + sec)
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
    }

    #[test]
    fn retry_after_is_capped_in_both_forms() {
        let secs = |n: u64| Some(Duration::from_secs(n));
        assert_eq!(parse_retry_after(Some("999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(Some("99999999999999999999999")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after(Some("300")), secs(300));
        assert_eq!(parse_retry_after(Some("0")), secs(0));
        for bad in ["", "-5", "1.5", "soon", "Wed, 21 Oct 2015 07:28 GMT"] {
            assert_eq!(parse_retry_after(Some(bad)), None, "{bad}");
        }
        assert_eq!(parse_retry_after(None), None);
        // HTTP dates: relative to now, in the past no delay, far away capped.
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_imf_fixdate("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(
            parse_imf_fixdate("Tue, 29 Feb 2028 23:59:59 GMT"),
            Some(1_835_481_599)
        );
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let at = |s: &str| parse_retry_after_at(Some(s), now);
        assert_eq!(at("Wed, 21 Oct 2015 07:28:30 GMT"), secs(30));
        assert_eq!(at("Wed, 21 Oct 2015 07:27:00 GMT"), None);
        assert_eq!(at("Thu, 21 Oct 2100 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(at("Wed, 21 Oct 2015 07:28:30 UTC"), None);
    }

    #[test]
    fn what_counts_against_the_host() {
        let u = "http://h/x";
        for s in [408, 429, 500, 502, 503] {
            assert!(
                HttpError::from_status(s, u, None)
                    .unwrap()
                    .counts_against_host(),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(
                !HttpError::from_status(s, u, None)
                    .unwrap()
                    .counts_against_host(),
                "{s}"
            );
        }
        let malformed = HttpError::MalformedToken {
            url: u.into(),
            reason: "it holds a control character".into(),
        };
        assert_eq!(
            (malformed.type_name().as_str(), malformed.retryable()),
            ("Unauthorized", false)
        );
        assert!(!malformed.counts_against_host());
        let refused = HttpError::Refused {
            url: u.into(),
            reason: "no".into(),
        };
        assert_eq!(
            (refused.type_name().as_str(), refused.retryable()),
            ("BadInput", false)
        );
        assert!(!refused.counts_against_host());
        assert!(
            HttpError::Network {
                url: u.into(),
                reason: "refused".into()
            }
            .counts_against_host()
        );
    }
}
