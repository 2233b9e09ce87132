//! Secrets: the API token travels as a [`Secret`], whose `Debug` and `Display` show only its
//! fingerprint, so that printing a struct that holds one can never leak it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stateful_engine::{Stamp, fingerprint};

use crate::order::Latest;

/// A secret string (an API token). Serialized as the plain string (it must reach the API and the
/// children), printed only as `Secret(fingerprint)`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself: for the HTTP header and the children's input only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits of its SHA-256: what queries, logs and metrics may show.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "secret:{}", self.fingerprint())
    }
}

/// The token a workflow holds, the stamp of the message that set it, and how many times it was
/// rotated.
#[derive(Debug, Clone, Default)]
pub struct TokenState {
    token: Option<Secret>,
    rotations: u64,
    order: Latest,
}

impl TokenState {
    /// With the start input's token (and its stamp) and the rotations carried over.
    pub fn new(token: Option<Secret>, rotations: u64, order: Latest) -> TokenState {
        TokenState {
            token,
            rotations,
            order,
        }
    }

    /// The stamp of the message that set the token, if it had one.
    pub fn stamp(&self) -> Option<&Stamp> {
        self.order.get()
    }

    /// The ordering state (carried over continue-as-new).
    pub fn order(&self) -> &Latest {
        &self.order
    }

    /// Takes a token stamped `s`: ignored (false) when a newer or equal message set the token;
    /// else as [`TokenState::rotate`].
    pub fn rotate_stamped(&mut self, token: Secret, s: &Stamp) -> bool {
        self.order.accept(s) && self.rotate(token)
    }

    /// The token, if any.
    pub fn get(&self) -> Option<&Secret> {
        self.token.as_ref()
    }

    /// Rotations so far.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// Takes a new token; true when it differs from the one held (a rotation).
    pub fn rotate(&mut self, token: Secret) -> bool {
        if self.token.as_ref() == Some(&token) {
            return false;
        }
        self.token = Some(token);
        self.rotations += 1;
        true
    }

    /// What the `apiToken` query answers: a fingerprint and the rotation count, never the token.
    pub fn info(&self) -> Value {
        json!({
            "set": self.token.is_some(),
            "fingerprint": self.token.as_ref().map(Secret::fingerprint),
            "rotations": self.rotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printing_shows_only_the_fingerprint_and_serde_keeps_the_string() {
        let s = Secret::new("very-secret");
        for shown in [format!("{s:?}"), format!("{s}"), format!("{:?}", Some(&s))] {
            assert!(!shown.contains("very-secret"), "{shown}");
            assert!(shown.contains(&fingerprint("very-secret")), "{shown}");
        }
        assert_eq!(serde_json::to_value(&s).unwrap(), json!("very-secret"));
        let back: Secret = serde_json::from_value(json!("very-secret")).unwrap();
        assert_eq!(back.expose(), "very-secret");
    }

    #[test]
    fn the_same_token_again_is_no_rotation() {
        let mut t = TokenState::new(Some(Secret::new("a")), 0, Latest::default());
        assert!(!t.rotate(Secret::new("a")));
        assert!(t.rotate(Secret::new("b")));
        assert_eq!(t.rotations(), 1);
        assert!(!t.info().to_string().contains("\"b\""));
        // Stamped: an older token never undoes a newer one, and the same token is no rotation.
        assert!(t.rotate_stamped(Secret::new("c"), &Stamp::new(10, "root")));
        assert!(!t.rotate_stamped(Secret::new("b"), &Stamp::new(9, "root")));
        assert!(!t.rotate_stamped(Secret::new("c"), &Stamp::new(11, "root")));
        assert_eq!((t.get().unwrap().expose(), t.rotations()), ("c", 2));
    }
}
