//! The seed's wire format ("legacy mode").
//!
//! Request, one binary WebSocket message from the client:
//! `u32 little-endian name length | method name (UTF-8) | payload`.
//! Replies are raw WebSocket messages (binary or text); the call ends when
//! the server closes the WebSocket normally, or, in the older variant, with
//! the text message `CLOSE`. There is no status: a failure is a close with
//! code 1011 and the status as the reason.

mod conn;

use bytes::{BufMut, Bytes, BytesMut};

pub(crate) use conn::LegacyConnection;

use crate::call::MAX_METHOD_LEN;
use crate::call::Method;
use crate::error::ConnectionError;
use crate::lifecycle::close_reason;
use crate::status::{Code, Status};

/// The text message that ends a call in the seed README's older variant.
pub const CLOSE_TEXT: &[u8] = b"CLOSE";

pub use crate::lifecycle::MAX_CLOSE_REASON;

/// Builds a legacy request message.
pub fn encode_request(method: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + method.len() + payload.len());
    b.put_u32_le(method.len() as u32);
    b.put_slice(method.as_bytes());
    b.put_slice(payload);
    b.freeze()
}

/// Splits a legacy request into its method name and payload (zero copy).
pub fn decode_request(buf: Bytes) -> Result<(Method, Bytes), ConnectionError> {
    if buf.len() < 4 {
        return Err(ConnectionError::Legacy(
            "request shorter than its 4-byte name length",
        ));
    }
    let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if n == 0 || n > MAX_METHOD_LEN {
        return Err(ConnectionError::Legacy(
            "method name length outside 1..=1024",
        ));
    }
    if n > buf.len() - 4 {
        return Err(ConnectionError::Legacy(
            "method name length runs past the message",
        ));
    }
    let method = Method::from_bytes(buf.slice(4..4 + n))
        .map_err(|_| ConnectionError::Legacy("method name is not UTF-8"))?;
    Ok((method, buf.slice(4 + n..)))
}

/// Splits a dotted legacy name `service.method` into the handler and the
/// routed name (`dispatch.create_person` -> `("dispatch", Some("create_person"))`).
pub fn split_dotted(name: &str) -> (&str, Option<&str>) {
    match name.split_once('.') {
        Some((service, method)) => (service, Some(method)),
        None => (name, None),
    }
}

/// The close code and reason that end a legacy call with `status`.
pub(crate) fn close_for(status: &Status) -> (u16, String) {
    match status.code() {
        Code::Ok => (1000, String::new()),
        Code::Cancelled => (1001, close_reason(&status.to_string())),
        _ => (1011, close_reason(&status.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip_matches_the_seed_layout() {
        let b = encode_request("echo", b"world");
        assert_eq!(&b[..], b"\x04\x00\x00\x00echoworld");
        let (m, p) = decode_request(b).unwrap();
        assert_eq!(m.as_str(), "echo");
        assert_eq!(&p[..], b"world");
    }

    #[test]
    fn empty_payload_and_dotted_names() {
        let (m, p) = decode_request(encode_request("dispatch.create_person", b"")).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            split_dotted(m.as_str()),
            ("dispatch", Some("create_person"))
        );
        assert_eq!(split_dotted("echo"), ("echo", None));
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        for bad in [
            &b"\x01\x00"[..],
            b"\x00\x00\x00\x00x",
            b"\x09\x00\x00\x00abc",
            b"\xff\xff\xff\xffabc",
            b"\x01\x00\x00\x00\xff",
        ] {
            assert!(
                matches!(
                    decode_request(Bytes::copy_from_slice(bad)),
                    Err(ConnectionError::Legacy(_))
                ),
                "{bad:?}"
            );
        }
    }
}
