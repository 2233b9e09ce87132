//! Loading from the entity's HTTP API, without Temporal: when a load is due, which URL, what the last
//! one did, and when the next periodic refresh fires. The glue runs the `loadData` activity when
//! [`Api::take_load`] says so and feeds its outcome back as a message.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::load::{FailureKind, LoadStatus, Loaded};
use crate::order::Latest;
use crate::secret::{Secret, TokenState};
use stateful_engine::Stamp;

/// What the last load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoadState {
    /// Nothing loaded yet (or no API configured).
    #[default]
    None,
    /// A load is running.
    Loading,
    /// The last load succeeded.
    Ok,
    /// The API answered 401 or 403: a new token heals it.
    Unauthorized,
    /// The API answered 404.
    NotFound,
    /// The circuit for the API host is open after repeated failures; the next trigger retries.
    CircuitOpen,
    /// The last load failed (retries exhausted, or an unusable answer).
    Failed,
}

impl LoadState {
    /// As the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::None => "none",
            LoadState::Loading => "loading",
            LoadState::Ok => "ok",
            LoadState::Unauthorized => "unauthorized",
            LoadState::NotFound => "notFound",
            LoadState::CircuitOpen => "circuitOpen",
            LoadState::Failed => "failed",
        }
    }
}

/// The API settings and load bookkeeping of one workflow; carried over continue-as-new.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Api {
    /// `apiBase`, handed down from the root to every descendant (fills `{apiBase}` in URL templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The explicit `apiUrl` (input or signal); wins over the entity's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `refreshInterval` from the input (ms); wins over the entity's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_ms: Option<u64>,
    /// Workflow time (ms) of the next periodic refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<u64>,
    /// Why a load is due, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted: Option<String>,
    /// A load activity is running (not carried: a new run loads again).
    #[serde(skip)]
    pub in_flight: bool,
    /// What the last load did.
    #[serde(default)]
    pub state: LoadState,
    /// The last failure's message (never holds the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Workflow time of the last successful load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok_at: Option<u64>,
    /// Loads finished, ever.
    #[serde(default)]
    pub loads: u64,
    /// Loads that failed, ever.
    #[serde(default)]
    pub failures: u64,
    /// The hosts the token may be sent to (see [`crate::valid::allowed`]): fixed when the root
    /// starts, handed down the tree and carried over. `None` in workflows of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<std::collections::BTreeSet<String>>,
}

/// A load to run: the URL, why, and the batch URLs of related entities loaded in the same activity.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRequest {
    /// URL to GET.
    pub url: String,
    /// Why it runs (for logs).
    pub reason: String,
    /// `(entity, url)`: children's entities loaded by one request per (up to 100) ids.
    pub batch: Vec<(String, String)>,
}

/// Children's ids per batch request.
pub const BATCH_IDS: usize = 100;

/// The batch URLs for `ids` of `entity`: `{ids}` is filled with up to [`BATCH_IDS`] comma-separated,
/// percent-encoded ids per URL.
pub fn batch_urls(template: &str, base: Option<&str>, entity: &str, ids: &[String]) -> Vec<String> {
    ids.chunks(BATCH_IDS)
        .filter_map(|chunk| {
            let joined = chunk
                .iter()
                .map(|i| encode_segment(i))
                .collect::<Vec<_>>()
                .join(",");
            render(&template.replace("{ids}", "\u{0}"), base, entity, "")
                .map(|u| u.replace('\u{0}', &joined))
        })
        .collect()
}

/// Fills a URL template: `{apiBase}`, `{id}` (percent-encoded) and `{entityName}`. None when the
/// template needs `apiBase` and there is none.
pub fn render(template: &str, base: Option<&str>, entity: &str, id: &str) -> Option<String> {
    if template.contains("{apiBase}") && base.is_none() {
        return None;
    }
    let base = base.unwrap_or("").trim_end_matches('/');
    Some(
        template
            .replace("{apiBase}", base)
            .replace("{entityName}", entity)
            .replace("{id}", &encode_segment(id)),
    )
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    /// The URL a load uses: the explicit one, or the entity's template filled in.
    pub fn effective_url(&self, template: Option<&str>, entity: &str, id: &str) -> Option<String> {
        self.url
            .clone()
            .or_else(|| template.and_then(|t| render(t, self.base.as_deref(), entity, id)))
    }

    /// The refresh interval in force.
    pub fn interval(&self, entity_default: Option<u64>) -> Option<u64> {
        self.refresh_ms.or(entity_default)
    }

    /// Asks for a load (a later reason replaces an earlier one; one load serves both).
    pub fn want(&mut self, reason: &str) {
        self.wanted = Some(reason.to_string());
    }

    /// The load to start now, if one is due and none is running. `url` is the effective URL. A URL
    /// outside the tree's API hosts is not loaded: the load fails with the reason.
    pub fn take_load(&mut self, url: Option<String>) -> Option<LoadRequest> {
        if self.in_flight {
            return None;
        }
        let reason = self.wanted.take()?;
        let url = url?;
        if let Err(e) = crate::valid::allowed(&url, self.hosts.as_ref()) {
            self.state = LoadState::Failed;
            self.last_error = Some(crate::audit::clip(&e, crate::audit::MAX_REASON));
            return None;
        }
        self.in_flight = true;
        if self.state != LoadState::Unauthorized {
            self.state = LoadState::Loading;
        }
        Some(LoadRequest {
            url,
            reason,
            batch: Vec::new(),
        })
    }

    /// Records a finished load (the data itself is applied by the caller); `now` is workflow time.
    pub fn finish(&mut self, outcome: &Loaded, now: u64, interval: Option<u64>) {
        self.in_flight = false;
        self.loads += 1;
        match outcome {
            Loaded::Ok(out) | Loaded::Many { own: out, .. }
                if out.status == LoadStatus::NotFound =>
            {
                self.state = LoadState::NotFound;
                self.last_error = Some("the API answered 404".into());
            }
            Loaded::Ok(_) | Loaded::Many { .. } => {
                self.state = LoadState::Ok;
                self.last_error = None;
                self.last_ok_at = Some(now);
            }
            Loaded::Error { kind, message } => {
                self.failures += 1;
                self.last_error = Some(crate::audit::clip(message, crate::audit::MAX_REASON));
                self.state = match kind {
                    // A newer token is already waiting: its load decides.
                    FailureKind::Unauthorized if self.wanted.is_some() => LoadState::Loading,
                    FailureKind::Unauthorized => LoadState::Unauthorized,
                    FailureKind::CircuitOpen => LoadState::CircuitOpen,
                    _ => LoadState::Failed,
                };
            }
        }
        self.next_refresh_at = interval.map(|i| now.saturating_add(i));
    }

    /// Carried into the next run: a load that was running there is due again.
    pub fn carried(&self) -> Api {
        let mut a = self.clone();
        if a.in_flight && a.wanted.is_none() {
            a.wanted = Some("continued".into());
        }
        a.in_flight = false;
        a
    }

    /// What the `api` query answers.
    pub fn info(&self, url: Option<String>, interval: Option<u64>, token: Value) -> Value {
        json!({
            "url": url,
            "apiBase": self.base,
            "explicitUrl": self.url,
            "state": self.state.as_str(),
            "loading": self.in_flight,
            "pending": self.wanted,
            "lastError": self.last_error,
            "lastOkAt": self.last_ok_at,
            "loads": self.loads,
            "failures": self.failures,
            "refreshInterval": interval,
            "nextRefreshAt": self.next_refresh_at,
            "hosts": self.hosts,
            "token": token,
        })
    }
}

/// A workflow's side of its API: the load bookkeeping, the token, and whether its parent loads it.
#[derive(Debug, Default)]
pub struct ApiState {
    /// URL, base, refresh interval and what the last load did.
    pub(crate) loads: Api,
    /// The token and its rotations.
    pub(crate) token: TokenState,
    /// Its parent loads its entity in a batch: it does not load at start or on a new token itself.
    pub(crate) loaded_by_parent: bool,
    /// The stamp of the message that set the URL.
    pub(crate) url_order: Latest,
}

impl ApiState {
    /// The load bookkeeping.
    pub fn loads(&self) -> &Api {
        &self.loads
    }

    /// The token (a secret: for activities and children only, never for queries or logs).
    pub fn token(&self) -> Option<&Secret> {
        self.token.get()
    }

    /// Takes a token from an `apiToken` signal: true on a rotation, which reloads (unless the parent
    /// loads this entity).
    pub fn rotate(&mut self, token: Secret, stamp: Option<&Stamp>) -> bool {
        let rotated = match stamp {
            Some(s) => self.token.rotate_stamped(token, s),
            None => self.token.rotate(token),
        };
        if rotated && !self.loaded_by_parent {
            self.loads.want("apiToken");
        }
        rotated
    }

    /// Takes a URL from an `apiUrl` signal (ignored when a newer or equal message set the URL):
    /// true when it changed, which reloads.
    pub fn set_url(&mut self, url: &str, stamp: Option<&Stamp>) -> bool {
        debug_assert!(crate::valid::allowed(url, self.loads.hosts.as_ref()).is_ok());
        if stamp.is_some_and(|s| !self.url_order.accept(s))
            || self.loads.url.as_deref() == Some(url)
        {
            return false;
        }
        self.loads.url = Some(url.to_string());
        self.loads.want("apiUrl");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Loaded {
        Loaded::Ok(crate::load::LoadOutput {
            status: LoadStatus::Ok,
            data: Some(json!({"id": "1"})),
            updates: None,
            strategy: None,
        })
    }

    #[test]
    fn templates_fill_base_id_and_entity() {
        assert_eq!(
            render(
                "{apiBase}/users/{id}",
                Some("http://h/v1/"),
                "User",
                "a b/c"
            )
            .as_deref(),
            Some("http://h/v1/users/a%20b%2Fc")
        );
        assert_eq!(render("{apiBase}/u/{id}", None, "User", "1"), None);
        assert_eq!(
            render("http://fixed/{entityName}/{id}", None, "User", "1").as_deref(),
            Some("http://fixed/User/1")
        );
        let a = Api {
            url: Some("http://explicit".into()),
            base: Some("http://b".into()),
            ..Default::default()
        };
        assert_eq!(
            a.effective_url(Some("{apiBase}/x/{id}"), "X", "1")
                .as_deref(),
            Some("http://explicit")
        );
    }

    #[test]
    fn one_load_at_a_time_and_a_later_trigger_runs_after() {
        let mut a = Api::default();
        assert_eq!(a.take_load(Some("u".into())), None, "nothing wanted");
        a.want("start");
        let r = a.take_load(Some("u".into())).unwrap();
        assert_eq!(r.reason, "start");
        a.want("apiToken");
        assert_eq!(a.take_load(Some("u".into())), None, "one in flight");
        a.finish(
            &Loaded::Error {
                kind: FailureKind::Unauthorized,
                message: "401".into(),
            },
            5,
            Some(100),
        );
        assert_eq!(a.state, LoadState::Loading, "a newer token decides");
        assert_eq!(a.next_refresh_at, Some(105));
        assert_eq!(a.take_load(Some("u".into())).unwrap().reason, "apiToken");
        a.finish(
            &Loaded::Error {
                kind: FailureKind::Unauthorized,
                message: "401".into(),
            },
            6,
            None,
        );
        assert_eq!(a.state, LoadState::Unauthorized);
        a.want("apiToken");
        a.take_load(Some("u".into())).unwrap();
        a.finish(&ok(), 7, None);
        assert_eq!(
            (a.state, a.last_ok_at, a.loads, a.failures),
            (LoadState::Ok, Some(7), 3, 2)
        );
    }

    #[test]
    fn a_load_running_at_continue_as_new_runs_again() {
        let mut a = Api::default();
        a.want("start");
        a.take_load(Some("u".into())).unwrap();
        let c: Api = serde_json::from_value(serde_json::to_value(a.carried()).unwrap()).unwrap();
        assert!(!c.in_flight);
        assert_eq!(c.wanted.as_deref(), Some("continued"));
    }

    #[test]
    fn batch_urls_chunk_and_encode_ids() {
        let ids: Vec<String> = (0..150).map(|i| format!("l {i}")).collect();
        let urls = batch_urls(
            "{apiBase}/listings?ids={ids}",
            Some("http://h"),
            "Listing",
            &ids,
        );
        assert_eq!(urls.len(), 2);
        assert!(urls[0].starts_with("http://h/listings?ids=l%200,l%201,"));
        assert!(urls[1].ends_with("l%20149"));
        assert!(batch_urls("{apiBase}/x?ids={ids}", None, "X", &ids).is_empty());
    }

    #[test]
    fn no_url_means_no_load() {
        let mut a = Api::default();
        a.want("refresh");
        assert_eq!(a.take_load(None), None);
        assert!(!a.in_flight);
    }
}
