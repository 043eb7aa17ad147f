//! gRPC over HTTP/2: the `grpc-timeout` header and the status in trailers
//! (`grpc-status`, percent-encoded `grpc-message`,
//! `grpc-status-details-bin`).

use std::time::Duration;

use base64::Engine;
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use zrpc_core::{Metadata, Status};

use super::headers::put_metadata;

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub(crate) fn parse_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Percent-encodes a status message as `grpc-message` wants it (bytes
/// outside printable ASCII, and `%`).
pub(crate) fn percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes the status (and the trailers metadata) into `map`.
pub(crate) fn put_status(map: &mut HeaderMap, status: &Status, trailers: &Metadata) {
    map.insert("grpc-status", HeaderValue::from(status.code() as u8 as u16));
    if !status.message().is_empty()
        && let Ok(v) = HeaderValue::from_str(&percent_encode(status.message()))
    {
        map.insert("grpc-message", v);
    }
    if !status.details().is_empty()
        && let Ok(v) = HeaderValue::from_str(
            &base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.details()),
        )
    {
        map.insert("grpc-status-details-bin", v);
    }
    put_metadata(map, trailers, "");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        assert_eq!(parse_timeout("123456789S"), None);
        assert_eq!(parse_timeout("S"), None);
        assert_eq!(parse_timeout("10x"), None);
        assert_eq!(parse_timeout(""), None);
    }

    #[test]
    fn messages() {
        assert_eq!(percent_encode("a b%\n→"), "a b%25%0A%E2%86%92");
    }
}
