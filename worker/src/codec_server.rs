//! The codec server: Temporal's codec-server endpoints, `POST /encode` and `POST /decode` (also under a
//! namespace, `POST /{namespace}/encode` and `/{namespace}/decode`, as the CLI's and the UI's endpoint
//! templating call them) with `{"payloads": [{"metadata": {k: base64}, "data": base64}]}` (Temporal's
//! JSON form of payloads), answering the same shape, so that `temporal workflow show --codec-endpoint
//! ...` and the Temporal UI can decode histories for authorised users. The codec itself is
//! [`stateful_client::codec::Codec`], the worker's: `/encode` compresses and/or encrypts as the worker
//! does, `/decode` decrypts and decompresses whatever a payload carries.
//!
//! Secure by default:
//! - it refuses to listen on an address that is not a loopback one without a token
//!   ([`check_address`]);
//! - browsers may call it only from the Temporal UI's usual origins ([`UI_ORIGINS`]) and the
//!   configured ones (CORS; a request from any other origin is refused with `403`);
//! - every request is within [`HttpLimits`] (rate, body size, time; see [`crate::auth::guard`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::bail;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use stateful_client::codec::{Codec, payload_from_json as from_json};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::auth::{self, BearerToken, HttpLimits, error_response};

/// The origins of the Temporal UI as the dev server serves it: always allowed to call the codec server
/// from a browser.
pub const UI_ORIGINS: &[&str] = &["http://localhost:8233", "http://127.0.0.1:8233"];

/// The default body limit (4 MiB). A `/decode` request carries payloads as Temporal stored them, at
/// most 2 MB each by Temporal's default payload limit; in JSON their bytes are base64 (4/3 larger:
/// some 2.7 MiB), plus the envelope. An `/encode` of a decoded payload larger than about 3 MB (which
/// compression can make fit Temporal's limit) needs a larger `--codec-server-max-body`.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;
/// The default rate limit, requests per second. `temporal workflow show` asks one request per
/// payload set, one after another, and the UI one per event: a long history makes thousands, which
/// this paces (at most a second's wait each) rather than refuses.
pub const DEFAULT_RATE_PER_SECOND: u32 = 1000;
/// The default burst above the rate.
pub const DEFAULT_BURST: u32 = 2000;

/// How the codec server is run.
#[derive(Clone)]
pub struct Options {
    /// The token callers must present (`Authorization`, with or without `Bearer `); `None`: no check,
    /// allowed on a loopback address only.
    pub token: Option<String>,
    /// Origins allowed to call it from a browser, besides [`UI_ORIGINS`].
    pub cors_origins: Vec<String>,
    /// Rate, body and time limits.
    pub limits: HttpLimits,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("cors_origins", &self.cors_origins)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            token: None,
            cors_origins: Vec::new(),
            limits: HttpLimits {
                max_body: DEFAULT_MAX_BODY,
                timeout: std::time::Duration::from_secs(30),
                rate_per_second: DEFAULT_RATE_PER_SECOND,
                burst: DEFAULT_BURST,
                max_wait: HttpLimits::DEFAULT_MAX_WAIT,
            },
        }
    }
}

/// Refuses an address that is not a loopback one (`127.0.0.0/8`, `::1`) when no token is required:
/// anyone who reaches the port could otherwise decode (decrypt) every payload.
pub fn check_address(addr: SocketAddr, has_token: bool) -> anyhow::Result<()> {
    if !has_token && !addr.ip().is_loopback() {
        bail!(
            "the codec server would listen on {addr}, which is not a loopback address, without a token: \
             anyone reaching it could decrypt every payload. Set --codec-server-token-env VAR (with the \
             token in the environment variable VAR; callers send it as `Authorization`), or listen on \
             127.0.0.1"
        );
    }
    Ok(())
}

struct Srv {
    codec: Codec,
    token: Option<BearerToken>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn to_json(p: &Payload) -> Value {
    let meta: serde_json::Map<String, Value> = p
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), json!(b64().encode(v))))
        .collect();
    json!({"metadata": meta, "data": b64().encode(&p.data)})
}

async fn handle(
    srv: Arc<Srv>,
    method: Method,
    h: HeaderMap,
    body: &[u8],
    encode: bool,
) -> Response {
    if method == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    if let Some(want) = &srv.token
        && !auth::bearer_or_bare(&h).is_some_and(|t| want.matches(t))
    {
        return error_response(StatusCode::UNAUTHORIZED, "missing or wrong Authorization");
    }
    let out: Result<Vec<Value>, String> = serde_json::from_slice::<Value>(body)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|v| {
            v.get("payloads")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| "expected {\"payloads\": [...]}".to_string())
        })
        .and_then(|ps| {
            ps.iter()
                .map(|p| {
                    let p = from_json(p)?;
                    let q = if encode {
                        srv.codec.encode_payload(p)?
                    } else {
                        srv.codec.decode_payload(p)?
                    };
                    Ok(to_json(&q))
                })
                .collect()
        });
    match out {
        Ok(ps) => axum::Json(json!({"payloads": ps})).into_response(),
        Err(e) => error_response(StatusCode::BAD_REQUEST, &e),
    }
}

/// `POST` (and the browser's `OPTIONS` preflight) of one direction.
fn endpoint(encode: bool) -> axum::routing::MethodRouter<Arc<Srv>> {
    axum::routing::on(
        axum::routing::MethodFilter::POST.or(axum::routing::MethodFilter::OPTIONS),
        move |State(s): State<Arc<Srv>>, m: Method, h: HeaderMap, b: axum::body::Bytes| async move {
            handle(s, m, h, &b, encode).await
        },
    )
}

/// An origin as browsers send it: lower-case, without a trailing `/`.
fn normalize_origin(o: &str) -> String {
    o.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The origins allowed to call from a browser: [`UI_ORIGINS`] and `configured`.
fn allowed_origins(configured: &[String]) -> Vec<String> {
    let mut out: Vec<String> = UI_ORIGINS
        .iter()
        .map(|o| o.to_string())
        .chain(configured.iter().map(|o| normalize_origin(o)))
        .filter(|o| !o.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// CORS: a request without `Origin` (not from a browser) passes as it is; one from an allowed origin
/// gets the CORS headers (its preflight is answered here); one from any other origin is refused.
async fn cors(State(origins): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let text = origin.to_str().unwrap_or_default();
    if !origins.iter().any(|o| *o == normalize_origin(text)) {
        return error_response(
            StatusCode::FORBIDDEN,
            &format!(
                "origin `{text}` may not call the codec server (allowed: {}; add one with --codec-cors-origin)",
                origins.join(", ")
            ),
        );
    }
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut r = if preflight {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, x-namespace, authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    r
}

/// The codec server's routes, CORS and limits.
fn router(codec: Codec, opts: &Options) -> Router {
    let srv = Arc::new(Srv {
        codec,
        token: opts.token.as_deref().map(BearerToken::new),
    });
    let routes = Router::new()
        .route("/encode", endpoint(true))
        .route("/decode", endpoint(false))
        .route("/{namespace}/encode", endpoint(true))
        .route("/{namespace}/decode", endpoint(false))
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                "not found: POST /encode, /decode, /{namespace}/encode or /{namespace}/decode",
            )
        })
        .with_state(srv);
    auth::guard(routes, opts.limits, "codec server").layer(axum::middleware::from_fn_with_state(
        Arc::new(allowed_origins(&opts.cors_origins)),
        cors,
    ))
}

/// Serves the codec endpoints on `addr`; returns the bound address. Refuses (before binding) an
/// address that is not a loopback one without a token.
pub async fn serve(codec: Codec, addr: SocketAddr, opts: Options) -> anyhow::Result<SocketAddr> {
    let opts = Options {
        token: opts
            .token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()),
        ..opts
    };
    check_address(addr, opts.token.is_some())?;
    let app = router(codec, &opts);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve the codec endpoints on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(token: Option<&str>) -> Arc<Srv> {
        let key = b64().encode([7u8; 32]);
        with_codec(
            token,
            Codec {
                compress: true,
                aes: Some(stateful_client::codec::AesCodec::parse(&format!("k1:{key}")).unwrap()),
            },
        )
    }

    fn with_codec(token: Option<&str>, codec: Codec) -> Arc<Srv> {
        Arc::new(Srv {
            codec,
            token: token.map(BearerToken::new),
        })
    }

    fn payloads(encoding: &str, data: &str) -> Value {
        json!({"payloads": [{"metadata": {"encoding": b64().encode(encoding)}, "data": b64().encode(data)}]})
    }

    fn encoding_of(v: &Value) -> String {
        let e = v["payloads"][0]["metadata"]["encoding"].as_str().unwrap();
        String::from_utf8(b64().decode(e).unwrap()).unwrap()
    }

    async fn call(srv: &Arc<Srv>, auth: Option<&str>, body: &Value, encode: bool) -> (u16, Value) {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        let r = handle(
            srv.clone(),
            Method::POST,
            h,
            body.to_string().as_bytes(),
            encode,
        )
        .await;
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn checks_the_token_and_round_trips() {
        let plain = json!({"payloads": [{"metadata": {"encoding": b64().encode("json/plain")}, "data": b64().encode("{}")}]});
        let s = srv(Some("t0k"));
        for auth in [None, Some("Bearer wrong"), Some("wrong")] {
            let (status, v) = call(&s, auth, &plain, true).await;
            assert_eq!(status, 401, "{auth:?}");
            assert_eq!(v["error"], "missing or wrong Authorization");
        }
        for auth in [Some("Bearer t0k"), Some("t0k")] {
            let (status, enc) = call(&s, auth, &plain, true).await;
            assert_eq!(status, 200, "{auth:?}: {enc}");
            let (status, dec) = call(&s, auth, &enc, false).await;
            assert_eq!(status, 200);
            assert_eq!(dec, plain);
        }
        let (status, v) = call(&srv(None), None, &json!({}), true).await;
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("payloads"), "{v}");
    }

    #[tokio::test]
    async fn compresses_then_encrypts_and_decodes_with_compression_alone() {
        let big = format!("[{}]", vec!["\"the same words again\""; 500].join(","));
        let plain = payloads("json/plain", &big);
        // Compression and encryption: the encrypted payload decodes to the exact original.
        let both = srv(None);
        let (status, enc) = call(&both, None, &plain, true).await;
        assert_eq!(status, 200, "{enc}");
        assert_eq!(encoding_of(&enc), "binary/encrypted");
        let (_, dec) = call(&both, None, &enc, false).await;
        assert_eq!(dec, plain);
        // Compression alone (no keys): payloads shrink, and decode back.
        let zstd = with_codec(
            None,
            Codec {
                compress: true,
                aes: None,
            },
        );
        let (status, enc) = call(&zstd, None, &plain, true).await;
        assert_eq!(status, 200, "{enc}");
        assert_eq!(encoding_of(&enc), "binary/zstd");
        assert!(enc.to_string().len() < plain.to_string().len() / 10);
        let (_, dec) = call(&zstd, None, &enc, false).await;
        assert_eq!(dec, plain);
        // Small payloads stay as they are; an encrypted one without keys is refused, saying why.
        let small = payloads("json/plain", "{}");
        assert_eq!(call(&zstd, None, &small, true).await.1, small);
        let (_, encrypted) = call(&both, None, &small, true).await;
        let (status, v) = call(&zstd, None, &encrypted, false).await;
        assert_eq!(status, 400);
        assert!(
            v["error"].as_str().unwrap().contains("no codec keys"),
            "{v}"
        );
    }

    #[test]
    fn a_non_loopback_address_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let e = check_address(any, false).unwrap_err().to_string();
        assert!(e.contains("--codec-server-token-env"), "{e}");
        assert!(e.contains("0.0.0.0:8081"), "{e}");
        assert!(check_address(any, true).is_ok());
        assert!(check_address("192.168.1.5:8081".parse().unwrap(), false).is_err());
        assert!(check_address("[::]:8081".parse().unwrap(), false).is_err());
        for local in ["127.0.0.1:8081", "127.1.2.3:0", "[::1]:8081"] {
            assert!(
                check_address(local.parse().unwrap(), false).is_ok(),
                "{local}"
            );
        }
    }

    fn zstd() -> Codec {
        Codec {
            compress: true,
            aes: None,
        }
    }

    #[tokio::test]
    async fn serve_refuses_an_open_address_without_a_token_and_allows_loopback() {
        let open: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let e = serve(zstd(), open, Options::default()).await.unwrap_err();
        assert!(e.to_string().contains("--codec-server-token-env"), "{e}");
        // A blank token is no token.
        let blank = Options {
            token: Some("  ".into()),
            ..Options::default()
        };
        assert!(serve(zstd(), open, blank).await.is_err());
        let local = serve(zstd(), "127.0.0.1:0".parse().unwrap(), Options::default()).await;
        assert!(local.unwrap().ip().is_loopback());
        let with_token = Options {
            token: Some("t0k".into()),
            ..Options::default()
        };
        assert!(serve(zstd(), open, with_token).await.is_ok());
    }

    use crate::auth::tests::raw_request;
    use std::time::Duration;

    async fn started(opts: Options) -> SocketAddr {
        serve(zstd(), "127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap()
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn preflight(path: &str, origin: &str) -> String {
        format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type, x-namespace"
        )
    }

    async fn post(
        a: SocketAddr,
        path: &str,
        extra: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}{extra}",
            body.len()
        );
        raw_request(a, &head, body.as_bytes(), 1, Duration::ZERO).await
    }

    #[tokio::test]
    async fn cors_allows_the_ui_and_configured_origins_and_refuses_others() {
        let a = started(Options {
            cors_origins: vec!["https://temporal.example.com/".into()],
            ..Options::default()
        })
        .await;
        for origin in [
            "http://localhost:8233",
            "http://127.0.0.1:8233",
            "https://temporal.example.com",
        ] {
            for path in ["/decode", "/default/decode", "/my-ns/encode"] {
                let (status, h, body) =
                    raw_request(a, &preflight(path, origin), b"", 1, Duration::ZERO).await;
                assert_eq!(status, 200, "{origin} {path}: {body}");
                assert_eq!(header(&h, "access-control-allow-origin"), Some(origin));
                assert_eq!(
                    header(&h, "access-control-allow-methods"),
                    Some("POST, OPTIONS")
                );
                let allowed = header(&h, "access-control-allow-headers").unwrap();
                assert!(allowed.contains("x-namespace") && allowed.contains("authorization"));
            }
        }
        // Another origin: refused, without any CORS header (the browser shows nothing of it).
        let (status, h, body) = raw_request(
            a,
            &preflight("/decode", "http://evil.example"),
            b"",
            1,
            Duration::ZERO,
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(header(&h, "access-control-allow-origin"), None);
        assert!(body.contains("--codec-cors-origin"), "{body}");
        let small = payloads("json/plain", "{}").to_string();
        let (status, h, _) = post(a, "/decode", "\r\nOrigin: http://evil.example", &small).await;
        assert_eq!(
            (status, header(&h, "access-control-allow-origin")),
            (403, None)
        );
        // The UI's own request gets its origin back; a client without Origin (the CLI) needs none.
        let (status, h, body) =
            post(a, "/decode", "\r\nOrigin: http://localhost:8233", &small).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("http://localhost:8233")
        );
        let (status, h, _) = post(a, "/decode", "", &small).await;
        assert_eq!(
            (status, header(&h, "access-control-allow-origin")),
            (200, None)
        );
    }

    #[tokio::test]
    async fn namespace_routes_decode_like_the_plain_ones() {
        let a = started(Options {
            token: Some("t0k".into()),
            ..Options::default()
        })
        .await;
        let big = format!("[{}]", vec!["\"the same words again\""; 500].join(","));
        let plain = payloads("json/plain", &big);
        let (status, _, enc) = post(
            a,
            "/default/encode",
            "\r\nAuthorization: Bearer t0k",
            &plain.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{enc}");
        let enc: Value = serde_json::from_str(&enc).unwrap();
        assert_eq!(encoding_of(&enc), "binary/zstd");
        for path in ["/default/decode", "/decode", "/other-namespace/decode"] {
            let (status, _, dec) = post(a, path, "\r\nAuthorization: t0k", &enc.to_string()).await;
            assert_eq!(status, 200, "{path}: {dec}");
            assert_eq!(
                serde_json::from_str::<Value>(&dec).unwrap(),
                plain,
                "{path}"
            );
        }
        let (status, _, _) = post(a, "/default/decode", "", &enc.to_string()).await;
        assert_eq!(status, 401);
        let (status, _, body) = post(a, "/default/nope", "", "{}").await;
        assert_eq!(status, 404, "{body}");
        let (status, _, _) = post(a, "/a/b/decode", "", "{}").await;
        assert_eq!(status, 404);
        let (status, _, _) = raw_request(
            a,
            "GET /default/decode HTTP/1.1\r\nHost: x",
            b"",
            1,
            Duration::ZERO,
        )
        .await;
        assert_eq!(status, 405);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413_and_a_flood_429() {
        let defaults = Options::default();
        assert_eq!(defaults.limits.max_body, 4 * 1024 * 1024);
        let a = started(Options {
            limits: HttpLimits {
                max_body: 10_000,
                rate_per_second: 1,
                burst: 3,
                max_wait: Duration::ZERO,
                ..defaults.limits
            },
            ..defaults
        })
        .await;
        let large = payloads("json/plain", &"x".repeat(10_000)).to_string();
        let (status, h, body) = post(
            a,
            "/default/decode",
            "\r\nOrigin: http://localhost:8233",
            &large,
        )
        .await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("10000 bytes"), "{body}");
        // The browser can read the refusal: it carries the CORS headers.
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("http://localhost:8233")
        );
        let small = payloads("json/plain", "{}").to_string();
        for _ in 0..2 {
            assert_eq!(post(a, "/decode", "", &small).await.0, 200);
        }
        let (status, h, body) = post(a, "/decode", "", &small).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(header(&h, "retry-after"), Some("1"));
    }
}
