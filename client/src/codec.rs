//! The payload codec of the worker and the starter: optional compression ([`compress`], zstd), then
//! optional encryption ([`AesCodec`], AES-256-GCM), composed by [`Codec`]. The worker also serves it
//! as Temporal's codec-server endpoints, so that `temporal workflow show --codec-endpoint ...` and the
//! Temporal UI can decode histories for authorised users.
//!
//! Encoding compresses (when `--compress` / `STATEFUL_CODEC_COMPRESS` is on, and only payloads over
//! 1 KiB that shrink), then encrypts (when keys are configured). Decoding undoes whichever of the two
//! a payload carries, whatever is configured now (so histories written with compression on still read
//! once it is off, and with neither on, payloads pass through).
//!
//! Keys: one per line, `KEY_ID:BASE64_OF_32_BYTES` (blank lines and `#` comments ignored), from the
//! file named by `--codec-keys-file` / `STATEFUL_CODEC_KEYS_FILE`, or the value of `STATEFUL_CODEC_KEYS`
//! (lines separated by newlines or `;`). The **last** key encrypts; every key decrypts, so a key is
//! rotated by appending a new one (and dropped once no history needs it). Each encrypted payload names
//! its key in the metadata (`encryption-key-id`); payloads that are not encrypted pass through, so
//! histories written before encryption was turned on still read.

pub mod compress;

use std::collections::BTreeMap;
use std::path::Path;

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
    payloads: Vec<Payload>,
    f: impl Fn(Payload) -> Result<Payload, String>,
) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
    let r = payloads
        .into_iter()
        .map(|p| f(p).map_err(codec_error))
        .collect();
    async move { r }.boxed()
}

impl PayloadCodec for AesCodec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        each(payloads, |p| self.encrypt(&p))
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        each(payloads, |p| self.decrypt(&p))
    }
}

/// The composed codec: compression (optional), then encryption (optional). With neither, encoding
/// changes nothing and decoding still decompresses (and refuses an encrypted payload, naming the
/// missing keys).
#[derive(Clone, Debug, Default)]
pub struct Codec {
    /// Compress payloads (zstd) before encrypting them.
    pub compress: bool,
    /// Encrypt with these keys (and decrypt with any of them).
    pub aes: Option<AesCodec>,
}

impl Codec {
    /// True when encoding changes payloads (compression or encryption is on).
    pub fn is_on(&self) -> bool {
        self.compress || self.aes.is_some()
    }

    /// Encodes one payload: compresses it (if on and worth it), then encrypts it (if keys are set).
    pub fn encode_payload(&self, p: Payload) -> Result<Payload, String> {
        let p = if self.compress {
            compress::compress(p)?
        } else {
            p
        };
        match &self.aes {
            Some(aes) => aes.encrypt(&p),
            None => Ok(p),
        }
    }

    /// Decodes one payload: decrypts it (if encrypted), then decompresses it (if compressed); a
    /// payload that is neither is returned as it is.
    pub fn decode_payload(&self, p: Payload) -> Result<Payload, String> {
        const NO_KEYS: &str = "an encrypted payload, and no codec keys to decrypt it \
                               (--codec-keys-file or STATEFUL_CODEC_KEYS)";
        let p = if p.metadata.get("encoding").map(Vec::as_slice) == Some(ENCODING) {
            self.aes.as_ref().ok_or(NO_KEYS)?.decrypt(&p)?
        } else {
            p
        };
        compress::decompress(p)
    }
}

impl PayloadCodec for Codec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        each(payloads, |p| self.encode_payload(p))
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        each(payloads, |p| self.decode_payload(p))
    }
}

/// A data converter with the codec (the default JSON payload and failure converters).
pub fn data_converter(
    codec: impl PayloadCodec + Send + Sync + 'static,
) -> temporalio_common::data_converters::DataConverter {
    temporalio_common::data_converters::DataConverter::new(
        temporalio_common::data_converters::PayloadConverter::default(),
        temporalio_common::data_converters::DefaultFailureConverter::default(),
        codec,
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

    fn json_payload(data: Vec<u8>) -> Payload {
        let mut p = Payload::default();
        p.metadata.insert("encoding".into(), b"json/plain".to_vec());
        p.metadata.insert("messageType".into(), b"kept".to_vec());
        p.data = data;
        p
    }

    /// 64 KiB of repetitive JSON (a state's worth of similar entities).
    fn repetitive() -> Vec<u8> {
        let e = (0..1000)
            .map(|i| format!(r#"{{"id":"e{i}","text":"the same words again and again"}}"#))
            .collect::<Vec<_>>();
        format!("[{}]", e.join(",")).into_bytes()
    }

    fn encoding(p: &Payload) -> &[u8] {
        p.metadata
            .get("encoding")
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn zstd_only() -> Codec {
        Codec {
            compress: true,
            aes: None,
        }
    }

    fn both() -> Codec {
        Codec {
            compress: true,
            aes: Some(AesCodec::parse(&format!("k1:{}", key(1))).unwrap()),
        }
    }

    #[test]
    fn compresses_large_payloads_and_restores_them_exactly() {
        let p = json_payload(repetitive());
        let c = zstd_only().encode_payload(p.clone()).unwrap();
        assert_eq!(encoding(&c), compress::ENCODING);
        assert_eq!(c.metadata[compress::ORIGINAL_ENCODING], b"json/plain");
        assert_eq!(c.metadata["messageType"], b"kept");
        assert!(c.data.len() * 20 < p.data.len(), "{} bytes", c.data.len());
        assert_eq!(zstd_only().decode_payload(c.clone()).unwrap(), p);
        // Turned off, the codec still reads what it wrote; plain payloads pass through either way.
        assert_eq!(Codec::default().decode_payload(c).unwrap(), p);
        assert_eq!(Codec::default().encode_payload(p.clone()).unwrap(), p);
        assert_eq!(zstd_only().decode_payload(p.clone()).unwrap(), p);
        // A payload without an `encoding` gets none back.
        let bare = Payload {
            data: repetitive(),
            ..Default::default()
        };
        let c = zstd_only().encode_payload(bare.clone()).unwrap();
        assert!(!c.metadata.contains_key(compress::ORIGINAL_ENCODING));
        assert_eq!(zstd_only().decode_payload(c).unwrap(), bare);
    }

    #[test]
    fn small_incompressible_and_foreign_payloads_are_left_alone() {
        let small = json_payload(vec![b'a'; compress::COMPRESS_THRESHOLD]);
        assert_eq!(zstd_only().encode_payload(small.clone()).unwrap(), small);
        let over = json_payload(vec![b'a'; compress::COMPRESS_THRESHOLD + 1]);
        assert_eq!(
            encoding(&zstd_only().encode_payload(over).unwrap()),
            compress::ENCODING
        );
        // Noise does not shrink: stored as it is.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let noise = json_payload(noise);
        assert_eq!(zstd_only().encode_payload(noise.clone()).unwrap(), noise);
        // A payload that already uses the `compressed-encoding` key could not be restored exactly.
        let mut foreign = json_payload(repetitive());
        foreign
            .metadata
            .insert(compress::ORIGINAL_ENCODING.into(), b"x".to_vec());
        assert_eq!(
            zstd_only().encode_payload(foreign.clone()).unwrap(),
            foreign
        );
    }

    #[test]
    fn compresses_then_encrypts_and_reads_what_was_written_before() {
        let p = json_payload(repetitive());
        let codec = both();
        let aes = codec.aes.clone().unwrap();
        let e = codec.encode_payload(p.clone()).unwrap();
        assert_eq!(encoding(&e), ENCODING);
        // Compressed inside: the encrypted payload is small, and decrypting alone shows `binary/zstd`.
        assert!(e.data.len() * 20 < p.data.len());
        assert_eq!(encoding(&aes.decrypt(&e).unwrap()), compress::ENCODING);
        assert_eq!(codec.decode_payload(e.clone()).unwrap(), p);
        // Written before compression was on (encrypted only), or before encryption (compressed only).
        assert_eq!(codec.decode_payload(aes.encrypt(&p).unwrap()).unwrap(), p);
        let zipped = zstd_only().encode_payload(p.clone()).unwrap();
        assert_eq!(codec.decode_payload(zipped).unwrap(), p);
        // Without keys, an encrypted payload is refused, naming what is missing.
        let err = zstd_only().decode_payload(e.clone()).unwrap_err();
        assert!(err.contains("no codec keys"), "{err}");
        // Tampering is detected, encrypted or not.
        let mut bad = e;
        let last = bad.data.len() - 1;
        bad.data[last] ^= 1;
        assert!(codec.decode_payload(bad).unwrap_err().contains("tampered"));
        let mut bad = zstd_only().encode_payload(p).unwrap();
        let last = bad.data.len() - 1;
        bad.data[last] ^= 1;
        let err = zstd_only().decode_payload(bad).unwrap_err();
        assert!(err.contains("malformed or altered"), "{err}");
    }

    #[test]
    fn decompression_is_bounded() {
        // A bomb: frames of 1 MiB of zeros, a few dozen bytes each, one more than the cap allows.
        let frame = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        let frames = compress::MAX_DECOMPRESSED / (1 << 20) + 1;
        let mut bomb = Payload {
            data: frame.repeat(frames),
            ..Default::default()
        };
        assert!(bomb.data.len() < 64 * 1024);
        bomb.metadata
            .insert("encoding".into(), compress::ENCODING.to_vec());
        let err = Codec::default().decode_payload(bomb.clone()).unwrap_err();
        assert!(err.contains("expands past 64 MiB"), "{err}");
        // One frame fewer is accepted.
        bomb.data = frame.repeat(frames - 1);
        let ok = Codec::default().decode_payload(bomb).unwrap();
        assert_eq!(ok.data.len(), compress::MAX_DECOMPRESSED);
        // A frame asking for a 128 MiB window (zstd's own default limit) is refused up front:
        // magic, no content size, window log 27, one raw last block of one byte.
        let mut wide = Payload {
            data: vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x88, 0x09, 0x00, 0x00, b'A'],
            ..Default::default()
        };
        wide.metadata
            .insert("encoding".into(), compress::ENCODING.to_vec());
        let err = Codec::default().decode_payload(wide).unwrap_err();
        assert!(err.contains("malformed or altered"), "{err}");
    }
}
