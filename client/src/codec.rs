//! Payload encryption: an AES-256-GCM payload codec for the worker and the starter (the worker also
//! serves it as Temporal's codec-server endpoints, so that `temporal workflow show --codec-endpoint
//! ...` and the Temporal UI can decode histories for authorised users).
//!
//! Keys: one per line, `KEY_ID:BASE64_OF_32_BYTES` (blank lines and `#` comments ignored), from the
//! file named by `--codec-keys-file` / `STATEFUL_CODEC_KEYS_FILE`, or the value of `STATEFUL_CODEC_KEYS`
//! (lines separated by newlines or `;`). The **last** key encrypts; every key decrypts, so a key is
//! rotated by appending a new one (and dropped once no history needs it). Each encrypted payload names
//! its key in the metadata (`encryption-key-id`); payloads that are not encrypted pass through, so
//! histories written before encryption was turned on still read.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{anyhow, bail};
use base64::Engine;
use futures::FutureExt;
use futures::future::BoxFuture;
use prost::Message;
use temporalio_common::data_converters::{
    PayloadCodec, PayloadConversionError, SerializationContextData,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// `encoding` of an encrypted payload.
pub const ENCODING: &[u8] = b"binary/encrypted";
/// Metadata key that names the key.
pub const KEY_ID: &str = "encryption-key-id";

/// The codec: keys by id, and the id of the one that encrypts.
#[derive(Clone)]
pub struct AesCodec {
    keys: BTreeMap<String, Aes256Gcm>,
    current: String,
}

impl std::fmt::Debug for AesCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AesCodec")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl AesCodec {
    /// Parses keys (`ID:BASE64` per line or `;`-separated); the last one encrypts.
    pub fn parse(text: &str) -> anyhow::Result<AesCodec> {
        let mut keys = BTreeMap::new();
        let mut current = None;
        for (n, line) in text.split(['\n', ';']).enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, b64) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("codec key {}: expected KEY_ID:BASE64", n + 1))?;
            let id = id.trim();
            if id.is_empty() {
                bail!("codec key {}: the key id is empty", n + 1);
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| anyhow!("codec key `{id}`: not base64"))?;
            if bytes.len() != 32 {
                bail!(
                    "codec key `{id}`: AES-256 needs 32 bytes, found {} (make one with `openssl rand -base64 32`)",
                    bytes.len()
                );
            }
            keys.insert(
                id.to_string(),
                Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            );
            current = Some(id.to_string());
        }
        let current = current.ok_or_else(|| anyhow!("no codec key given"))?;
        Ok(AesCodec { keys, current })
    }

    /// The codec from `file`, or from `STATEFUL_CODEC_KEYS`, or none.
    pub fn from_env(file: Option<&Path>) -> anyhow::Result<Option<AesCodec>> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow!("cannot read the codec keys file {}: {e}", f.display()))?;
            return Self::parse(&text).map(Some);
        }
        match std::env::var("STATEFUL_CODEC_KEYS") {
            Ok(t) if !t.trim().is_empty() => Self::parse(&t).map(Some),
            _ => Ok(None),
        }
    }

    /// The id of the key that encrypts.
    pub fn current_key(&self) -> &str {
        &self.current
    }

    /// Encrypts one payload (the whole payload, metadata included, is the plaintext).
    pub fn encrypt(&self, p: &Payload) -> Result<Payload, String> {
        let cipher = &self.keys[&self.current];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut data = nonce.to_vec();
        data.extend(
            cipher
                .encrypt(&nonce, p.encode_to_vec().as_slice())
                .map_err(|_| "encryption failed".to_string())?,
        );
        let mut out = Payload {
            data,
            ..Default::default()
        };
        out.metadata.insert("encoding".into(), ENCODING.to_vec());
        out.metadata
            .insert(KEY_ID.into(), self.current.as_bytes().to_vec());
        Ok(out)
    }

    /// Decrypts one payload; one that is not encrypted is returned as it is.
    pub fn decrypt(&self, p: &Payload) -> Result<Payload, String> {
        if p.metadata.get("encoding").map(Vec::as_slice) != Some(ENCODING) {
            return Ok(p.clone());
        }
        let id = p
            .metadata
            .get(KEY_ID)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .ok_or("an encrypted payload without `encryption-key-id`")?;
        let cipher = self.keys.get(&id).ok_or_else(|| {
            format!("this payload was encrypted with key `{id}`, which is not among the codec keys")
        })?;
        if p.data.len() < 12 {
            return Err("an encrypted payload too short to hold its nonce".into());
        }
        let (nonce, ct) = p.data.split_at(12);
        let plain = cipher.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| {
            format!("the payload does not decrypt with key `{id}` (wrong key or tampered data)")
        })?;
        Payload::decode(plain.as_slice())
            .map_err(|e| format!("a decrypted payload is malformed: {e}"))
    }
}

fn codec_error(message: String) -> PayloadConversionError {
    PayloadConversionError::EncodingError(message.into())
}

/// `f` on every payload, at once (the codec is synchronous); the first failure fails them all.
fn each(
    payloads: &[Payload],
    f: impl Fn(&Payload) -> Result<Payload, String>,
) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
    let r = payloads.iter().map(|p| f(p).map_err(codec_error)).collect();
    async move { r }.boxed()
}

impl PayloadCodec for AesCodec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        each(&payloads, |p| self.encrypt(p))
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        each(&payloads, |p| self.decrypt(p))
    }
}

/// A data converter with the codec (the default JSON payload and failure converters).
pub fn data_converter(codec: AesCodec) -> temporalio_common::data_converters::DataConverter {
    temporalio_common::data_converters::DataConverter::new(
        temporalio_common::data_converters::PayloadConverter::default(),
        temporalio_common::data_converters::DefaultFailureConverter::default(),
        Arc::new(codec),
    )
}

/// A payload from Temporal's JSON form (`{"metadata": {k: base64}, "data": base64}`).
pub fn payload_from_json(v: &serde_json::Value) -> Result<Payload, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut p = Payload::default();
    if let Some(m) = v.get("metadata").and_then(serde_json::Value::as_object) {
        for (k, x) in m {
            let s = x.as_str().ok_or("metadata values must be base64 strings")?;
            p.metadata.insert(
                k.clone(),
                b64.decode(s).map_err(|_| "metadata is not base64")?,
            );
        }
    }
    if let Some(d) = v.get("data").and_then(serde_json::Value::as_str) {
        p.data = b64.decode(d).map_err(|_| "data is not base64")?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    }

    #[test]
    fn round_trips_rotates_and_refuses_what_it_cannot_read() {
        let old = AesCodec::parse(&format!("k1:{}", key(1))).unwrap();
        let both = AesCodec::parse(&format!("# keys\nk1:{}\nk2:{}\n", key(1), key(2))).unwrap();
        assert_eq!(both.current_key(), "k2");
        let mut p = Payload::default();
        p.metadata.insert("encoding".into(), b"json/plain".to_vec());
        p.data = br#"{"apiToken":"secret"}"#.to_vec();
        let e1 = old.encrypt(&p).unwrap();
        assert!(!String::from_utf8_lossy(&e1.data).contains("secret"));
        assert_eq!(e1.metadata[KEY_ID], b"k1");
        // After rotation, old payloads still decrypt and new ones use the new key.
        assert_eq!(both.decrypt(&e1).unwrap(), p);
        let e2 = both.encrypt(&p).unwrap();
        assert_eq!(e2.metadata[KEY_ID], b"k2");
        assert!(old.decrypt(&e2).unwrap_err().contains("`k2`"));
        // Plain payloads pass through; tampering is detected.
        assert_eq!(old.decrypt(&p).unwrap(), p);
        let mut bad = e1.clone();
        let last = bad.data.len() - 1;
        bad.data[last] ^= 1;
        assert!(old.decrypt(&bad).unwrap_err().contains("tampered"));
        for (text, says) in [
            ("", "no codec key"),
            ("k1", "KEY_ID:BASE64"),
            ("k1:!!", "not base64"),
            ("k1:AAAA", "32 bytes"),
        ] {
            let e = AesCodec::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(!format!("{both:?}").contains(&key(2)));
    }
}
