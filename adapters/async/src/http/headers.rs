//! Call metadata to and from HTTP headers: `-bin` keys are base64 on the
//! wire (padded or not on the way in, unpadded on the way out); the
//! protocols' own headers are not metadata.

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use zrpc_core::Metadata;

/// Headers that belong to HTTP or to a protocol, never to the call.
fn reserved(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "content-encoding"
            | "accept-encoding"
            | "te"
            | "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
    ) || name.starts_with("grpc-")
        || name.starts_with("connect-")
        || name.starts_with(':')
}

/// The request's metadata (entries the core would refuse are skipped).
pub(crate) fn to_metadata(headers: &HeaderMap) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in headers {
        let key = k.as_str();
        if reserved(key) {
            continue;
        }
        let value = if key.ends_with("-bin") {
            let text = v.as_bytes();
            let engine = if text.ends_with(b"=") {
                &base64::engine::general_purpose::STANDARD
            } else {
                &base64::engine::general_purpose::STANDARD_NO_PAD
            };
            match engine.decode(text) {
                Ok(b) => b.into(),
                Err(_) => continue,
            }
        } else {
            bytes::Bytes::copy_from_slice(v.as_bytes())
        };
        let _ = md.insert(key, value);
    }
    md
}

/// Adds `md` to `map`, each key under `prefix` (Connect's `trailer-`).
pub(crate) fn put_metadata(map: &mut HeaderMap, md: &Metadata, prefix: &str) {
    for (k, v) in md.iter() {
        if reserved(k) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(format!("{prefix}{k}").as_bytes()) else {
            continue;
        };
        let value = if k.ends_with("-bin") {
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(v))
        } else {
            HeaderValue::from_bytes(v)
        };
        if let Ok(value) = value {
            map.append(name, value);
        }
    }
}
