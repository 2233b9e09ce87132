//! The activities: `loadData`, `httpRequest`, `loadBatch`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::breaker::Breaker;
use crate::error::{HttpError, parse_retry_after};
use crate::hosts::{GuardedResolver, HostPolicy, Lookup, refusal_in, system_lookup};
use stateful_core::Secret;
use stateful_core::load::{
    BatchInput, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RESULT_BYTES, LoadInput, LoadOutput,
    LoadStatus, ResultBudget, json_len,
};

/// Worker-wide settings of the HTTP activities.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Default request timeout.
    pub timeout: Duration,
    /// Largest body accepted (default [`DEFAULT_MAX_BODY_BYTES`]: one answer, wrapped in a load's
    /// result, fits the result budget); a larger one fails `BadBody`.
    pub max_body_bytes: usize,
    /// Largest result (its JSON) an activity returns (default [`DEFAULT_MAX_RESULT_BYTES`], under
    /// Temporal's 2 MB payload limit); a larger one fails `ResultTooLarge` instead of being refused
    /// by the server, and `loadBatch` with `partial` stops before it.
    pub max_result_bytes: usize,
    /// Consecutive failures that open a host's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast.
    pub breaker_cool_down: Duration,
    /// Concurrent requests of one batch load.
    pub batch_concurrency: usize,
    /// The API hosts requests may go to (`host`, `host:port`, `*.example.com`, an IP address); empty:
    /// any host. Link-local and cloud-metadata destinations are refused either way unless listed
    /// exactly (see [`crate::hosts`]). An entry that does not parse allows nothing.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
            batch_concurrency: 8,
            allowed_hosts: Vec::new(),
        }
    }
}

/// `httpRequest` input.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInput {
    /// Method (GET, POST, PUT, PATCH, DELETE, ...).
    pub method: String,
    /// URL.
    pub url: String,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body.
    #[serde(default)]
    pub body: Option<Value>,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Timeout override.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl std::fmt::Debug for RequestInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestInput")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `httpRequest` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestOutput {
    /// HTTP status.
    pub status: u16,
    /// JSON body (null when empty).
    pub body: Value,
}

/// The HTTP activities (one instance per worker: one connection pool, one circuit breaker).
pub struct HttpActivities {
    client: reqwest::Client,
    cfg: HttpConfig,
    breaker: Arc<Breaker>,
    policy: Arc<HostPolicy>,
    metrics: Option<crate::Metrics>,
}

impl HttpActivities {
    /// Builds them, resolving host names with the system's resolver.
    pub fn new(cfg: HttpConfig) -> HttpActivities {
        HttpActivities::with_lookup(cfg, system_lookup())
    }

    /// Builds them, resolving host names with `lookup` (every resolved address is checked against
    /// the host policy before a connection is made).
    pub fn with_lookup(cfg: HttpConfig, lookup: Lookup) -> HttpActivities {
        let (policy, errors) = HostPolicy::new(&cfg.allowed_hosts);
        for e in errors {
            tracing::warn!("{e}; this entry allows nothing");
        }
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("stateful-worker/", env!("CARGO_PKG_VERSION")))
            .redirect(policy.redirect_policy())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                lookup,
            }))
            .build()
            .expect("a TLS backend is compiled in");
        let breaker = Arc::new(
            Breaker::new(cfg.breaker_threshold, cfg.breaker_cool_down)
                .with_probe_lease(cfg.timeout + Duration::from_secs(1)),
        );
        HttpActivities {
            client,
            cfg,
            breaker,
            policy,
            metrics: None,
        }
    }

    /// Records requests, latency and circuit state in these metrics (which label at most
    /// [`crate::MAX_TRACKED_HOSTS`] hosts by name, as many as the breaker tracks).
    pub fn with_metrics(mut self, metrics: crate::Metrics) -> HttpActivities {
        self.metrics = Some(metrics);
        self
    }

    /// The API host policy (the allow-list, and what is always refused).
    pub fn host_policy(&self) -> Arc<HostPolicy> {
        self.policy.clone()
    }

    /// The circuit breaker (for metrics and status).
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }

    /// One request, classified: `Ok` for 2xx (with the body's JSON, null when empty) and 404 (as
    /// `None`); every other outcome is an [`HttpError`]. Before anything is sent: the URL is checked
    /// against the host policy (`Refused`), the token must fit a header (`MalformedToken`), and the
    /// host's circuit must admit the call (`CircuitOpen`).
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        headers: &BTreeMap<String, String>,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Option<(u16, Value)>, HttpError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| HttpError::BadInput(format!("`{url}` is not a URL: {e}")))?;
        let host = parsed.host_str().unwrap_or("").to_string();
        let req = self.prepare(&parsed, url, method, token, headers, body, timeout);
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                self.observe(&host, &Err(e.clone()), None);
                return Err(e);
            }
        };
        let permit = match self.breaker.admit(&host) {
            Ok(p) => p,
            Err(e) => {
                self.observe(&host, &Err(e.clone()), None);
                return Err(e);
            }
        };
        let t0 = std::time::Instant::now();
        let res = self.send(req, url).await;
        match &res {
            Err(e) if e.counts_against_host() => permit.failure(),
            // Refused or never built: the host was not asked (a probe's slot is freed).
            Err(HttpError::Refused { .. } | HttpError::BadInput(_)) => drop(permit),
            _ => permit.success(),
        }
        self.observe(&host, &res, Some(t0.elapsed()));
        res
    }

    /// The request, once the URL, token, method and headers are known to be sendable.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        parsed: &reqwest::Url,
        url: &str,
        method: &str,
        token: Option<&str>,
        headers: &BTreeMap<String, String>,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::RequestBuilder, HttpError> {
        self.policy
            .check_url(parsed)
            .map_err(|r| HttpError::Refused {
                url: url.to_string(),
                reason: r.reason,
            })?;
        if let Some(reason) = token.and_then(token_problem) {
            return Err(HttpError::MalformedToken {
                url: url.to_string(),
                reason: reason.to_string(),
            });
        }
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpError::BadInput(format!("`{method}` is not an HTTP method")))?;
        let mut req = self.client.request(method, parsed.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| HttpError::BadInput(format!("`{k}` is not a header name")))?;
            // The value is not quoted: it may be a credential.
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                HttpError::BadInput(format!(
                    "the value of header `{k}` cannot be sent (a control character)"
                ))
            })?;
            req = req.header(name, value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        Ok(req)
    }

    fn observe(
        &self,
        host: &str,
        res: &Result<Option<(u16, Value)>, HttpError>,
        took: Option<Duration>,
    ) {
        let Some(m) = &self.metrics else {
            return;
        };
        let outcome = match res {
            Ok(Some(_)) => "ok",
            Ok(None) => "notFound",
            Err(HttpError::Unauthorized { .. }) => "unauthorized",
            Err(HttpError::Transient { .. }) => "transient",
            Err(HttpError::Rejected { .. }) => "rejected",
            Err(HttpError::Network { .. }) => "network",
            Err(HttpError::BadBody { .. }) => "badBody",
            Err(HttpError::CircuitOpen { .. }) => "circuitOpen",
            Err(HttpError::MalformedToken { .. }) => "malformedToken",
            Err(HttpError::Refused { .. }) => "refused",
            Err(HttpError::BadInput(_)) => "badInput",
            Err(HttpError::ResultTooLarge { .. }) => "resultTooLarge",
        };
        m.request(host, outcome, took, self.breaker.is_open(host));
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Option<(u16, Value)>, HttpError> {
        let resp = req.send().await.map_err(|e| classify_send_error(e, url))?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        let retry_after = parse_retry_after(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        if let Some(e) = HttpError::from_status(status, url, retry_after) {
            return Err(e);
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > self.cfg.max_body_bytes)
        {
            return Err(self.too_large(url));
        }
        let mut bytes = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp.chunk().await.map_err(|e| HttpError::Network {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        })? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > self.cfg.max_body_bytes {
                return Err(self.too_large(url));
            }
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Some((status, Value::Null)));
        }
        let v = serde_json::from_slice(&bytes).map_err(|e| HttpError::BadBody {
            url: url.to_string(),
            reason: format!("not JSON ({e})"),
        })?;
        Ok(Some((status, v)))
    }

    fn too_large(&self, url: &str) -> HttpError {
        HttpError::BadBody {
            url: url.to_string(),
            reason: format!("larger than {} bytes", self.cfg.max_body_bytes),
        }
    }

    /// `out` when its JSON fits the result budget; `ResultTooLarge` otherwise.
    fn within_budget<T: Serialize>(
        &self,
        activity: &'static str,
        url: &str,
        out: T,
    ) -> Result<T, HttpError> {
        let bytes = json_len(&out);
        if bytes > self.cfg.max_result_bytes {
            return Err(HttpError::ResultTooLarge {
                activity,
                url: url.to_string(),
                bytes,
                limit: self.cfg.max_result_bytes,
            });
        }
        Ok(out)
    }

    /// `loadBatch` without Temporal: the answers of `input.urls`, in order, at most
    /// `batch_concurrency` requests at a time, within the result budget. With `partial`, the answers
    /// of the first URLs that fit (at least one); otherwise all of them, or `ResultTooLarge`. A
    /// failed URL fails the batch with `fail_fast`, else answers `{"error": type, "message": ...}`.
    pub async fn load_many(&self, input: BatchInput) -> Result<Vec<Value>, HttpError> {
        let n = self.cfg.batch_concurrency.max(1);
        let token = input.token.clone();
        let mut results = futures::stream::iter(input.urls.iter().cloned().map(|url| {
            let token = token.clone();
            async move {
                let r = self
                    .load(&LoadInput {
                        url: url.clone(),
                        token,
                        timeout_ms: None,
                    })
                    .await;
                (url, r)
            }
        }))
        .buffered(n);
        let mut budget = ResultBudget::new(self.cfg.max_result_bytes);
        let mut out = Vec::with_capacity(input.urls.len());
        // Dropping the stream early (a failure, or a full result) cancels the requests still running.
        while let Some((url, r)) = results.next().await {
            let v = match r {
                Ok(o) => serde_json::to_value(o).unwrap_or(Value::Null),
                Err(e) if input.fail_fast => return Err(e),
                Err(e) => serde_json::json!({"error": e.type_name(), "message": e.to_string()}),
            };
            let len = json_len(&v);
            if !budget.add(len) {
                if input.partial && budget.items() > 0 {
                    break;
                }
                return Err(HttpError::ResultTooLarge {
                    activity: "loadBatch",
                    url,
                    bytes: budget.with(len),
                    limit: budget.limit(),
                });
            }
            out.push(v);
        }
        Ok(out)
    }

    /// `loadData` without Temporal: GET the URL and interpret the body.
    pub async fn load(&self, input: &LoadInput) -> Result<LoadOutput, HttpError> {
        let got = self
            .call(
                "GET",
                &input.url,
                input.token.as_ref().map(Secret::expose),
                &BTreeMap::new(),
                None,
                input.timeout_ms.map(Duration::from_millis),
            )
            .await?;
        Ok(match got {
            None => LoadOutput {
                status: LoadStatus::NotFound,
                data: None,
                updates: None,
                strategy: None,
            },
            Some((_, body)) => interpret(body),
        })
    }
}

/// Why a token cannot be sent in an `Authorization` header (never quoting it), or `None`.
fn token_problem(token: &str) -> Option<&'static str> {
    if token.chars().any(|c| c.is_ascii_control()) {
        Some("it holds a control character (a line break, a tab, ...)")
    } else if !token.is_ascii() {
        Some("it holds a non-ASCII character")
    } else {
        None
    }
}

/// A failed send: a refusal by the host policy (a redirect elsewhere, a name resolving to a metadata
/// address), a request that could not be built, or a network error (timeouts, connections).
fn classify_send_error(e: reqwest::Error, url: &str) -> HttpError {
    if let Some(r) = refusal_in(&e) {
        return HttpError::Refused {
            url: url.to_string(),
            reason: r.reason.clone(),
        };
    }
    // reqwest's messages name the URL, never a header: the token stays out of them.
    if e.is_builder() {
        return HttpError::BadInput(format!(
            "the request to {url} cannot be built: {}",
            e.without_url()
        ));
    }
    HttpError::Network {
        url: url.to_string(),
        reason: if e.is_timeout() {
            "timed out".into()
        } else {
            e.without_url().to_string()
        },
    }
}

/// A body in chrono-forge's `loadData` shape (`{data?, updates?, strategy?}`) is taken as it is;
/// anything else is the entity data itself.
fn interpret(body: Value) -> LoadOutput {
    let shaped = body.as_object().is_some_and(|m| {
        !m.is_empty()
            && m.keys()
                .all(|k| matches!(k.as_str(), "data" | "updates" | "strategy"))
    });
    if shaped {
        let mut m = body.as_object().cloned().unwrap_or_default();
        LoadOutput {
            status: LoadStatus::Ok,
            data: m.remove("data"),
            updates: m.remove("updates"),
            strategy: m
                .remove("strategy")
                .and_then(|s| s.as_str().map(str::to_string)),
        }
    } else {
        LoadOutput {
            status: LoadStatus::Ok,
            data: Some(body),
            updates: None,
            strategy: None,
        }
    }
}

#[activities]
impl HttpActivities {
    /// GET the workflow's `apiUrl` with its token; the entity data (or `notFound`).
    #[activity(name = "loadData")]
    pub async fn load_data(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: LoadInput,
    ) -> Result<LoadOutput, ActivityError> {
        self.load(&input)
            .await
            .and_then(|out| self.within_budget("loadData", &input.url, out))
            .map_err(HttpError::into_activity_error)
    }

    /// A generic request (method, URL, headers, JSON body, timeout), for workflows that write back.
    #[activity(name = "httpRequest")]
    pub async fn http_request(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RequestInput,
    ) -> Result<RequestOutput, ActivityError> {
        let got = self
            .call(
                &input.method,
                &input.url,
                input.token.as_ref().map(Secret::expose),
                &input.headers,
                input.body.as_ref(),
                input.timeout_ms.map(Duration::from_millis),
            )
            .await
            .map_err(HttpError::into_activity_error)?;
        let out = match got {
            Some((status, body)) => RequestOutput { status, body },
            None => RequestOutput {
                status: 404,
                body: Value::Null,
            },
        };
        self.within_budget("httpRequest", &input.url, out)
            .map_err(HttpError::into_activity_error)
    }

    /// Many loads in one activity, at most `batch_concurrency` at a time, so that a parent with
    /// hundreds of children does not make hundreds of activity round trips. One result per URL, in
    /// order: a load's output, or `{"error": type, "message": ...}`; with `partial`, the results of
    /// the first URLs that fit the worker's result budget (the caller asks again for the rest).
    #[activity(name = "loadBatch")]
    pub async fn load_batch(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: BatchInput,
    ) -> Result<Vec<Value>, ActivityError> {
        self.load_many(input)
            .await
            .map_err(HttpError::into_activity_error)
    }
}
