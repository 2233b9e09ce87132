//! What guards the worker's HTTP servers (the ingress and the codec server) against careless and
//! hostile clients:
//!
//! - **Bearer tokens** ([`BearerToken`]): only a SHA-256 of the expected token is kept; a presented
//!   token is hashed and the two digests are compared in constant time ([`constant_time_eq`]), so
//!   neither the comparison's time nor an early exit tells how much of a guess was right.
//! - **Limits** ([`HttpLimits`], applied by [`guard`]): a token-bucket rate limit per server (a caller
//!   over the rate is paced for up to [`HttpLimits::max_wait`], then refused with `429` and
//!   `Retry-After`), a request-body limit (`413`), and a time limit per request: a body that has not
//!   arrived in time is answered `408`, an answer that takes longer `503`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The token callers must present, kept as its SHA-256 (the token itself is not kept).
#[derive(Clone)]
pub struct BearerToken {
    hash: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// True when `a` and `b` are equal, in a time that depends only on their lengths (never on where they
/// differ). Used on SHA-256 digests, which always have the same length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the compiler from turning the loop into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

impl BearerToken {
    /// The check for `token`.
    pub fn new(token: &str) -> BearerToken {
        BearerToken {
            hash: sha256(token),
        }
    }

    /// True when `given` is the token (digests compared in constant time).
    pub fn matches(&self, given: &str) -> bool {
        constant_time_eq(&sha256(given), &self.hash)
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` without such a header.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    authorization(h)?.strip_prefix("Bearer ")
}

/// The value of the `Authorization` header, without its `Bearer ` prefix when it has one (the codec
/// server also takes the bare token).
pub fn bearer_or_bare(h: &HeaderMap) -> Option<&str> {
    authorization(h).map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
}

fn authorization(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// The limits of one HTTP server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpLimits {
    /// The largest request body, in bytes (`413` beyond).
    pub max_body: usize,
    /// Time limit of one request: receiving its body (`408` beyond) and answering it (`503`).
    pub timeout: Duration,
    /// Requests per second, sustained (the token bucket's refill rate); 0: no rate limit.
    pub rate_per_second: u32,
    /// Requests allowed at once above the rate (the bucket's size; at least 1).
    pub burst: u32,
    /// How long a request over the rate may be held back until the bucket has a token for it; one that
    /// would wait longer is refused (`429`).
    pub max_wait: Duration,
}

impl HttpLimits {
    /// How long a request over the rate is held back at most, by default.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
}

/// A token bucket: `burst` tokens, refilled at `rate` per second; a request takes one.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_wait: Duration,
    /// Tokens left (negative: reserved by requests being held back) and when they were counted.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `per_second`; `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32, max_wait: Duration) -> Option<RateLimiter> {
        (per_second > 0).then(|| RateLimiter {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            max_wait,
            bucket: Mutex::new((f64::from(burst.max(1)), Instant::now())),
        })
    }

    /// Takes a token at `now`: `Ok(wait)` when the request may go after `wait` (zero when a token is
    /// there), `Err(retry_after)` when it would have to wait longer than the limiter's `max_wait` (no
    /// token is taken then).
    pub fn acquire(&self, now: Instant) -> Result<Duration, Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.1).as_secs_f64();
        b.0 = (b.0 + elapsed * self.rate).min(self.burst);
        b.1 = b.1.max(now);
        let left = b.0 - 1.0;
        if left >= 0.0 {
            b.0 = left;
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_secs_f64(-left / self.rate);
        if wait <= self.max_wait {
            b.0 = left;
            Ok(wait)
        } else {
            Err(wait - self.max_wait)
        }
    }
}

/// What [`guard`]'s middleware holds.
struct Guard {
    limits: HttpLimits,
    rate: Option<RateLimiter>,
}

/// `{"error": message}` with `status`.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// `router` with `limits` applied to every request (its fallback included): the rate limit first,
/// then the body limit and the time limit. `server` names the server in the answers' messages.
pub fn guard<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limits: HttpLimits,
    server: &'static str,
) -> Router<S> {
    let g = Arc::new(Guard {
        limits,
        rate: RateLimiter::new(limits.rate_per_second, limits.burst, limits.max_wait),
    });
    router
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body))
        .layer(axum::middleware::from_fn_with_state(
            g,
            move |State(g): State<Arc<Guard>>, req: Request, next: Next| async move {
                guarded(&g, server, req, next).await
            },
        ))
}

async fn guarded(g: &Guard, server: &str, req: Request, next: Next) -> Response {
    if let Some(rate) = &g.rate {
        match rate.acquire(Instant::now()) {
            Ok(wait) if wait.is_zero() => {}
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(retry_after) => {
                let mut r = error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "too many requests to the {server} (over {} a second): retry later",
                        g.limits.rate_per_second
                    ),
                );
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                return r;
            }
        }
    }
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request body is over the {server}'s limit of {} bytes",
                g.limits.max_body
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let discard_up_to = g.limits.max_body.saturating_add(DRAIN_BEYOND_LIMIT);
    if declared.is_some_and(|n| n > discard_up_to as u64) {
        return too_large();
    }
    let deadline = tokio::time::Instant::now() + g.limits.timeout;
    let secs = g.limits.timeout.as_secs_f64();
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body, g.limits.max_body, discard_up_to, deadline).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::TimedOut) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the request body did not arrive within {secs} s"),
            );
        }
        Err(BodyError::Failed(e)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            );
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match tokio::time::timeout_at(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the {server} did not answer within {secs} s"),
        ),
    }
}

/// How much of a body over the limit is still read (and thrown away) before it is answered `413`: a
/// client that sends its whole body before it reads the answer (most do) then gets the `413` instead of
/// a broken connection. A body declared larger than the limit and this is answered at once.
pub const DRAIN_BEYOND_LIMIT: usize = 16 * 1024 * 1024;

enum BodyError {
    TooLarge,
    TimedOut,
    Failed(String),
}

/// Reads `body` whole if it is at most `max` bytes; past `max`, reads on without keeping anything
/// until the body ends or `discard_up_to` bytes came, then says `TooLarge` (also when the deadline
/// passes meanwhile).
async fn read_body(
    mut body: Body,
    max: usize,
    discard_up_to: usize,
    deadline: tokio::time::Instant,
) -> Result<axum::body::Bytes, BodyError> {
    use http_body_util::BodyExt;
    let mut kept: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if seen > max => return Err(BodyError::TooLarge),
            Err(_) => return Err(BodyError::TimedOut),
            Ok(None) if seen > max => return Err(BodyError::TooLarge),
            Ok(None) => return Ok(kept.into()),
            Ok(Some(Err(_))) if seen > max => return Err(BodyError::TooLarge),
            Ok(Some(Err(e))) => return Err(BodyError::Failed(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > discard_up_to {
            return Err(BodyError::TooLarge);
        }
        if seen > max {
            kept = Vec::new();
        } else {
            kept.extend_from_slice(&data);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = value {
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn matches_only_the_token_and_reads_both_header_forms() {
        let t = BearerToken::new("s3cret");
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cret "));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));

        assert_eq!(bearer(&headers(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(&headers(Some("abc"))), None);
        assert_eq!(bearer(&headers(None)), None);
        assert_eq!(bearer_or_bare(&headers(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_or_bare(&headers(Some("abc"))), Some("abc"));
        assert_eq!(bearer_or_bare(&headers(None)), None);
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(&[7u8; 32], &[7u8; 32]));
        // A difference anywhere, first byte or last, and a length difference.
        let a = [7u8; 32];
        for i in [0, 15, 31] {
            let mut b = a;
            b[i] ^= 1;
            assert!(!constant_time_eq(&a, &b), "byte {i}");
        }
        assert!(!constant_time_eq(&a, &a[..31]));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }

    #[test]
    fn the_bucket_allows_its_burst_paces_then_refuses() {
        let t0 = Instant::now();
        let r = RateLimiter::new(10, 3, Duration::from_millis(200)).unwrap();
        for _ in 0..3 {
            assert_eq!(r.acquire(t0), Ok(Duration::ZERO));
        }
        // Empty: the next ones wait 100 ms, 200 ms; one more would wait 300 ms (over 200): refused.
        assert_eq!(r.acquire(t0), Ok(Duration::from_millis(100)));
        assert_eq!(r.acquire(t0), Ok(Duration::from_millis(200)));
        let retry = r.acquire(t0).unwrap_err();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_millis(100),
            "{retry:?}"
        );
        // A refusal takes nothing; a second later the reservations are paid (10 tokens came back,
        // 2 of them owed) and the bucket is full again, never fuller than the burst.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(r.acquire(t1), Ok(Duration::ZERO));
        }
        assert!(r.acquire(t1).unwrap() > Duration::ZERO);
        // Rate 0 is no limiter at all.
        assert!(RateLimiter::new(0, 10, Duration::ZERO).is_none());
    }

    /// A minimal HTTP/1.1 client for tests against real servers: sends `head` (the request line and
    /// headers, without the blank line), then `body` in `chunks` with `pause` between them; returns
    /// the status, the headers (names lower-case) and the body.
    pub(crate) async fn raw_request(
        addr: std::net::SocketAddr,
        head: &str,
        body: &[u8],
        chunks: usize,
        pause: Duration,
    ) -> (u16, Vec<(String, String)>, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let size = body.len().div_ceil(chunks.max(1)).max(1);
        for (i, c) in body.chunks(size).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            // The server may answer (and close) before the whole body is sent.
            if s.write_all(c).await.is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    /// Sends the request whole, then reads the answer: its status, and whether every byte of the body
    /// could be sent (a server that answers and closes early breaks the connection).
    async fn send_all_then_read(
        addr: std::net::SocketAddr,
        head: &str,
        body: &[u8],
    ) -> (u16, bool) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{head}\r\nConnection: close\r\n\r\n").into_bytes();
        req.extend_from_slice(body);
        let sent_all = s.write_all(&req).await.is_ok();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, sent_all)
    }

    /// Serves `router` on 127.0.0.1 (any port); returns the address.
    pub(crate) async fn serve_on_loopback(router: Router) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        });
        a
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            max_body: 1000,
            timeout: Duration::from_millis(300),
            rate_per_second: 0,
            burst: 1,
            max_wait: Duration::ZERO,
        }
    }

    fn echo(limits: HttpLimits) -> Router {
        let r = Router::new()
            .route(
                "/echo",
                axum::routing::post(|b: axum::body::Bytes| async move { b.len().to_string() }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        guard(r, limits, "test server")
    }

    fn post(len: usize) -> String {
        format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len}")
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_413() {
        let a = serve_on_loopback(echo(limits())).await;
        let ok = raw_request(a, &post(1000), &[b'x'; 1000], 1, Duration::ZERO).await;
        assert_eq!((ok.0, ok.2.as_str()), (200, "1000"));
        // Declared too large: refused, after the body is read and thrown away, so that a client that
        // sends all of it first gets the answer (not a broken connection).
        let (status, _, body) = raw_request(a, &post(1001), &[b'x'; 1001], 1, Duration::ZERO).await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("limit of 1000 bytes"), "{body}");
        for _ in 0..5 {
            let big = vec![b'x'; 12 * 1024 * 1024];
            let (status, sent_all) = send_all_then_read(a, &post(big.len()), &big).await;
            assert_eq!((status, sent_all), (413, true));
        }
        // Declared far too large (past what is thrown away): answered at once.
        let huge = post(1000 + DRAIN_BEYOND_LIMIT + 1);
        let (status, _, _) = raw_request(a, &huge, b"x", 1, Duration::ZERO).await;
        assert_eq!(status, 413);
        // Chunked, no length declared: refused once past the limit.
        let mut chunked = Vec::new();
        for _ in 0..3 {
            chunked.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
            chunked.extend_from_slice(&[b'y'; 600]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked";
        let (status, _, body) = raw_request(a, head, &chunked, 1, Duration::ZERO).await;
        assert_eq!(status, 413, "{body}");
    }

    #[tokio::test]
    async fn a_slow_body_gets_408_and_a_slow_answer_503() {
        let a = serve_on_loopback(echo(limits())).await;
        let (status, _, body) =
            raw_request(a, &post(10), b"0123456789", 2, Duration::from_secs(1)).await;
        assert_eq!(status, 408, "{body}");
        let (status, _, body) =
            raw_request(a, "GET /slow HTTP/1.1\r\nHost: x", b"", 1, Duration::ZERO).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("did not answer within 0.3 s"), "{body}");
    }

    #[tokio::test]
    async fn requests_over_the_rate_get_429_with_retry_after() {
        let a = serve_on_loopback(echo(HttpLimits {
            rate_per_second: 1,
            burst: 2,
            ..limits()
        }))
        .await;
        for _ in 0..2 {
            let (status, _, _) = raw_request(a, &post(1), b"x", 1, Duration::ZERO).await;
            assert_eq!(status, 200);
        }
        let (status, headers, body) = raw_request(a, &post(1), b"x", 1, Duration::ZERO).await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body.contains("too many requests to the test server"),
            "{body}"
        );
        assert!(
            headers.iter().any(|(k, v)| k == "retry-after" && v == "1"),
            "{headers:?}"
        );
    }
}
