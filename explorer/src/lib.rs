//! The web explorer of StatefulWorkflow trees, served by the worker (`--explorer HOST:PORT`) and by
//! `starter explorer`: server-rendered HTML with one small static script (no front-end build, no
//! external library), on axum.
//!
//! - `GET /`: the roots (visibility), filterable by entity and status, with counts by status;
//! - `GET /tree/{workflowId}`: the whole hierarchy as an SVG graph (each workflow once, shared ones
//!   with all their parents, subscriptions dashed, conflicting and skipped children marked) and an
//!   outline, with search by id and levels to collapse;
//! - `GET /entity/{workflowId}`: state, data, recent changes, rejected inputs, children,
//!   subscriptions, API status, checkpoints, a link to the Temporal UI, and the actions;
//! - live updates: `GET /events/{entity,tree}/{workflowId}` and `GET /events/trees` are server-sent
//!   events (the server polls the workflow and says when it changed); the page then fetches
//!   `GET /fragment/...` and swaps it in;
//! - actions: `POST /api/action/{workflowId}/{pause|resume|refresh|validate|rotate}` (JSON, with the
//!   header `X-Explorer: 1`) start a job, polled at `GET /api/jobs/{id}`;
//! - JSON: `GET /api/trees`, `GET /api/tree/{workflowId}`, `GET /api/entity/{workflowId}`.
//!
//! **Security.** The API token never appears in a page, a fragment, JSON, an event or a log: only
//! its fingerprint (the workflows never answer it; the explorer also drops it from what it passes
//! on). Every piece of workflow data is escaped ([`html::escape`]); pages hold no inline script
//! (`Content-Security-Policy: script-src 'self'`). With a token ([`Config::auth`]), every request
//! but `/static/` and `/login` needs it: an `Authorization: Bearer` header, or the `HttpOnly`,
//! `SameSite=Strict` cookie the login form sets (`POST /login`, form-encoded `token`; the cookie
//! holds [`session_value`] of the token, never the token; at most 10 failed logins a minute from
//! one address). Actions are `POST`s that need the `X-Explorer: 1` header, which a cross-site form
//! cannot send. On a loopback address, requests whose `Host` is not a loopback name are refused (no
//! DNS rebinding).

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use temporalio_client::Client;

pub mod data;
pub mod graph;
pub mod html;
mod jobs;
pub mod render;
mod server;

/// Checks a presented token (the worker passes its ingress's constant-time check).
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The explorer's authentication: the token check (for `Authorization: Bearer` and the login form)
/// and the session value the login cookie holds ([`session_value`] of the token).
#[derive(Clone)]
pub struct Auth {
    check: TokenCheck,
    session: String,
}

impl Auth {
    /// Authentication by `token`, checked by `check` (the constant-time [`token_check`] of the token
    /// when `None`).
    pub fn new(token: &str, check: Option<TokenCheck>) -> Auth {
        Auth {
            check: check.unwrap_or_else(|| token_check(token)),
            session: session_value(token),
        }
    }

    /// True when `token` is the token.
    pub fn token(&self, token: &str) -> bool {
        (self.check)(token)
    }

    /// True when `value` is the login cookie's value (compared in constant time).
    pub fn session(&self, value: &str) -> bool {
        ct_eq(value.as_bytes(), self.session.as_bytes())
    }

    /// The login cookie's value.
    pub(crate) fn session_cookie(&self) -> &str {
        &self.session
    }
}

/// The login cookie's value for `token`: `hex(sha256("stateful-explorer-session\0" + token))`, so
/// that the cookie never holds the token itself.
pub fn session_value(token: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"stateful-explorer-session\0");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// Compares every byte of `expected`, whatever `given`'s length.
fn ct_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// What the explorer needs besides the client.
#[derive(Clone)]
pub struct Config {
    /// The namespace (for the Temporal UI's links).
    pub namespace: String,
    /// The Temporal UI's base URL (`http://localhost:8233` for the dev server's UI).
    pub temporal_ui_url: String,
    /// The token callers must present; `None`: no check (loopback only).
    pub auth: Option<Auth>,
    /// True when served on a loopback address: requests must name a loopback host.
    pub loopback: bool,
    /// True to mark the login cookie `Secure` (behind a TLS proxy).
    pub secure_cookie: bool,
}

/// The default Temporal UI (the dev server's).
pub const DEFAULT_TEMPORAL_UI: &str = "http://localhost:8233";

/// The explorer: a client and its settings; [`Explorer::router`] has its routes.
pub struct Explorer {
    client: Client,
    config: Config,
}

impl Explorer {
    /// An explorer over `client`; refuses a Temporal UI URL that is not `http(s)://`.
    pub fn new(client: Client, config: Config) -> anyhow::Result<Explorer> {
        let ui = config.temporal_ui_url.trim();
        if !(ui.starts_with("http://") || ui.starts_with("https://"))
            || ui.contains(['"', '<', '>', ' '])
        {
            anyhow::bail!("--temporal-ui-url `{ui}` is not an http:// or https:// URL");
        }
        Ok(Explorer { client, config })
    }

    /// The routes (every request within the explorer's own checks: authentication, host, security
    /// headers).
    pub fn router(self) -> axum::Router {
        server::router(self.client, self.config)
    }
}

/// A constant-time check of `expected` (for callers without one of their own, as the starter).
pub fn token_check(expected: &str) -> TokenCheck {
    let expected = expected.as_bytes().to_vec();
    Arc::new(move |given: &str| ct_eq(given.as_bytes(), &expected))
}

/// Resolves `addr` (`HOST:PORT`, a name such as `localhost:8089` too) to its first address; `flag`
/// names it in the error.
pub async fn resolve(addr: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut all = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} `{addr}` is not host:port ({e})"))?;
    all.next()
        .ok_or_else(|| anyhow::anyhow!("{flag} `{addr}` resolves to no address"))
}

/// `router` with the explorer's security headers on every answer (for layers outside the
/// explorer's own routes, as a rate limit's 429).
pub fn with_security_headers(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::map_response(
        |r: axum::response::Response| async move { server::secure(r) },
    ))
}

/// True for a loopback address (127.0.0.0/8, ::1).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The token to require, by the worker's and the starter's rule: on a loopback address, the
/// variable's value if it is set (none otherwise); elsewhere it must be set (`Err` says so).
pub fn token_from_env(addr: &SocketAddr, var: &str, flag: &str) -> anyhow::Result<Option<String>> {
    let token = std::env::var(var)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if token.is_none() && !is_loopback(addr) {
        anyhow::bail!(
            "{flag} {addr} is not a loopback address: it needs a token for its users in the environment variable {var} (it is unset or empty)"
        );
    }
    Ok(token)
}

/// Binds `addr` and serves `router` on a task of its own; answers the bound address.
pub async fn serve(router: axum::Router, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the explorer on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::warn!(error = %e, "the explorer stopped");
        }
    });
    Ok(bound)
}

/// The URL to print for `bound`, without a trailing slash (a wildcard address printed as
/// `127.0.0.1`).
pub fn url(bound: &SocketAddr) -> String {
    let mut a = *bound;
    if a.ip().is_unspecified() {
        a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{a}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_matches_only_the_token() {
        let c = token_check("s3cret");
        assert!(c("s3cret"));
        assert!(!c("s3cre"));
        assert!(!c("s3cret!"));
        assert!(!c(""));
        let a = Auth::new("s3cret", None);
        assert!(a.token("s3cret"));
        assert!(!a.session("s3cret"));
        assert!(a.session(&session_value("s3cret")));
        assert_eq!(session_value("s3cret").len(), 64);
        assert_ne!(session_value("s3cret"), session_value("s3cre"));
    }

    #[test]
    fn a_token_is_required_off_loopback_only() {
        let var = "STATEFUL_EXPLORER_TEST_UNSET_VAR";
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert_eq!(token_from_env(&lo, var, "--explorer").unwrap(), None);
        let e = token_from_env(&any, var, "--explorer")
            .unwrap_err()
            .to_string();
        assert!(e.contains(var), "{e}");
        assert_eq!(url(&any), "http://127.0.0.1:1");
    }
}
