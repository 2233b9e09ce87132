//! Bearer tokens of the worker's HTTP endpoints (the ingress and the codec server): only a SHA-256 of
//! the expected token is kept, and a presented token is hashed and compared with it (the comparison's
//! time then does not depend on where two tokens differ).

use axum::http::{HeaderMap, header};
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

impl BearerToken {
    /// The check for `token`.
    pub fn new(token: &str) -> BearerToken {
        BearerToken {
            hash: sha256(token),
        }
    }

    /// True when `given` is the token.
    pub fn matches(&self, given: &str) -> bool {
        sha256(given) == self.hash
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

#[cfg(test)]
mod tests {
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
}
