//! Payload compression: zstd (level [`ZSTD_LEVEL`], with a content checksum) of one payload's data,
//! for payloads over [`COMPRESS_THRESHOLD`] bytes whose compressed form is smaller.
//!
//! A compressed payload keeps its other metadata; its `encoding` becomes `binary/zstd` and its original
//! `encoding` moves to `compressed-encoding` (absent when it had none), so decompression restores the
//! exact payload. Decompression is bounded: a payload that would expand past [`MAX_DECOMPRESSED`]
//! bytes is refused.

use std::io::Read;

use temporalio_common::protos::temporal::api::common::v1::Payload;

/// `encoding` of a compressed payload.
pub const ENCODING: &[u8] = b"binary/zstd";
/// Metadata key that keeps a compressed payload's original `encoding`.
pub const ORIGINAL_ENCODING: &str = "compressed-encoding";
/// Payloads whose data holds at most this many bytes are never compressed (1 KiB).
pub const COMPRESS_THRESHOLD: usize = 1024;
/// The largest decompressed payload accepted (64 MiB); a larger one is refused.
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;
/// zstd's compression level.
pub const ZSTD_LEVEL: i32 = 3;
/// The largest zstd window accepted when decompressing (2^26 = [`MAX_DECOMPRESSED`]): a frame that
/// asks for more cannot be ours and is refused before any memory is set aside for it.
const WINDOW_LOG_MAX: u32 = 26;
/// What compression adds to the payload besides its data, at most: the `compressed-encoding` entry and
/// the longer `encoding` value (protobuf map entries: tags and lengths included).
const METADATA_OVERHEAD: usize = ORIGINAL_ENCODING.len() + ENCODING.len() + 8;

/// True when the payload is compressed (its `encoding` is `binary/zstd`).
pub fn is_compressed(p: &Payload) -> bool {
    p.metadata.get("encoding").map(Vec::as_slice) == Some(ENCODING)
}

/// Compresses `p` when it is worth it: data over [`COMPRESS_THRESHOLD`] bytes, and a compressed form
/// smaller than the original, metadata included. Otherwise `p` is returned as it is (so is a payload
/// that already carries `compressed-encoding`, which could not be restored exactly).
pub fn compress(mut p: Payload) -> Result<Payload, String> {
    if p.data.len() <= COMPRESS_THRESHOLD || p.metadata.contains_key(ORIGINAL_ENCODING) {
        return Ok(p);
    }
    let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)
        .and_then(|mut c| c.include_checksum(true).map(|()| c))
        .map_err(|e| format!("cannot set up zstd: {e}"))?;
    let packed = zstd
        .compress(&p.data)
        .map_err(|e| format!("compression failed: {e}"))?;
    if packed.len() + METADATA_OVERHEAD >= p.data.len() {
        return Ok(p);
    }
    p.data = packed;
    if let Some(original) = p.metadata.remove("encoding") {
        p.metadata.insert(ORIGINAL_ENCODING.into(), original);
    }
    p.metadata.insert("encoding".into(), ENCODING.to_vec());
    Ok(p)
}

/// Decompresses `p` if it is compressed, restoring its original `encoding`; any other payload is
/// returned as it is. Refuses data that is not a valid zstd stream (or fails its checksum) and data
/// that would expand past [`MAX_DECOMPRESSED`] bytes.
pub fn decompress(mut p: Payload) -> Result<Payload, String> {
    if !is_compressed(&p) {
        return Ok(p);
    }
    let malformed =
        |e: std::io::Error| format!("a compressed payload is malformed or altered: {e}");
    let mut zstd =
        zstd::stream::read::Decoder::with_buffer(p.data.as_slice()).map_err(malformed)?;
    zstd.window_log_max(WINDOW_LOG_MAX).map_err(malformed)?;
    let mut data = Vec::new();
    zstd.take(MAX_DECOMPRESSED as u64 + 1)
        .read_to_end(&mut data)
        .map_err(malformed)?;
    if data.len() > MAX_DECOMPRESSED {
        return Err(format!(
            "a compressed payload expands past {} MiB: refused",
            MAX_DECOMPRESSED >> 20
        ));
    }
    p.data = data;
    match p.metadata.remove(ORIGINAL_ENCODING) {
        Some(original) => p.metadata.insert("encoding".into(), original),
        None => p.metadata.remove("encoding"),
    };
    Ok(p)
}
