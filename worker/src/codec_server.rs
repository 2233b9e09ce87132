//! The codec server: Temporal's codec-server endpoints, `POST /encode` and `POST /decode` with
//! `{"payloads": [{"metadata": {k: base64}, "data": base64}]}` (Temporal's JSON form of payloads),
//! answering the same shape, so that `temporal workflow show --codec-endpoint ...` and the Temporal UI
//! can decode histories for authorised users; CORS for the UI. The codec itself is
//! [`stateful_client::codec::Codec`], the worker's: `/encode` compresses and/or encrypts as the worker
//! does, `/decode` decrypts and decompresses whatever a payload carries.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use stateful_client::codec::{Codec, payload_from_json as from_json};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::auth::{self, BearerToken};

struct Srv {
    codec: Codec,
    token: Option<BearerToken>,
    origin: Option<String>,
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

fn cors(srv: &Srv, mut r: Response) -> Response {
    if let Some(o) = &srv.origin
        && let Ok(v) = HeaderValue::from_str(o)
    {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, x-namespace, authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    r
}

async fn handle(
    srv: Arc<Srv>,
    method: Method,
    h: HeaderMap,
    body: &[u8],
    encode: bool,
) -> Response {
    if method == Method::OPTIONS {
        return cors(&srv, StatusCode::OK.into_response());
    }
    if let Some(want) = &srv.token
        && !auth::bearer_or_bare(&h).is_some_and(|t| want.matches(t))
    {
        return cors(
            &srv,
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "missing or wrong Authorization"})),
            )
                .into_response(),
        );
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
    cors(
        &srv,
        match out {
            Ok(ps) => axum::Json(json!({"payloads": ps})).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response(),
        },
    )
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

/// The largest request body: `/encode` takes decoded payloads, which may be as large as the largest
/// payload the codec decompresses, in base64 (axum's default, 2 MB, would refuse a large state).
const MAX_BODY: usize = 2 * stateful_client::codec::compress::MAX_DECOMPRESSED;

/// Serves the codec endpoints on `addr`; returns the bound address.
pub async fn serve(
    codec: Codec,
    addr: SocketAddr,
    token: Option<&str>,
    cors_origin: Option<String>,
) -> anyhow::Result<SocketAddr> {
    let srv = Arc::new(Srv {
        codec,
        token: token.map(BearerToken::new),
        origin: cors_origin,
    });
    let app = Router::new()
        .route("/encode", endpoint(true))
        .route("/decode", endpoint(false))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(srv);
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
            origin: Some("http://localhost:8233".into()),
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
}
