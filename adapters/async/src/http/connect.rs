//! Connect (connectrpc.com): unary calls are plain POSTs whose body is the
//! message, answered with a real HTTP status and, on error, Connect's
//! error JSON; streaming calls carry enveloped messages and end with an
//! end-of-stream message (flag 0x02) holding the error and trailers as
//! JSON. Timeouts come as `connect-timeout-ms`.

use std::fmt::Write;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use zrpc_core::{Code, Metadata, Status};

use super::envelope::{self, END_STREAM};

/// Connect's name of a code.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status a unary error is answered with.
pub(crate) fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// `connect-timeout-ms`: at most 10 digits.
pub(crate) fn parse_timeout(v: &str) -> Option<Duration> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().map(Duration::from_millis)
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Connect's error object: `{"code":"not_found","message":"..."}`.
pub(crate) fn error_json(status: &Status) -> String {
    let mut out = String::from("{\"code\":");
    json_string(&mut out, code_name(status.code()));
    if !status.message().is_empty() {
        out.push_str(",\"message\":");
        json_string(&mut out, status.message());
    }
    if let Some(details) = details(status.details()) {
        out.push_str(",\"details\":[");
        for (i, d) in details.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"type\":");
            let name = d.type_url.rsplit('/').next().unwrap_or_default();
            json_string(&mut out, name);
            out.push_str(",\"value\":");
            json_string(
                &mut out,
                &base64::engine::general_purpose::STANDARD_NO_PAD.encode(&d.value),
            );
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// `google.rpc.Status`, the usual content of a status's details bytes (what
/// gRPC sends as `grpc-status-details-bin`).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The entries of details bytes that hold a `google.rpc.Status` (Connect
/// carries them as `{"type", "value"}`); other details bytes have no
/// Connect form and are left out.
fn details(bytes: &[u8]) -> Option<Vec<Any>> {
    if bytes.is_empty() {
        return None;
    }
    let s = <RpcStatus as prost::Message>::decode(bytes).ok()?;
    (!s.details.is_empty()).then_some(s.details)
}

/// A metadata value as text (`-bin` keys base64, unpadded).
pub(crate) fn text_value(key: &str, v: &[u8]) -> String {
    if key.ends_with("-bin") {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(v)
    } else {
        String::from_utf8_lossy(v).into_owned()
    }
}

/// The end-of-stream message of a streaming call.
pub(crate) fn end_stream(status: &Status, trailers: &Metadata) -> Bytes {
    let mut out = String::from("{");
    if !status.is_ok() {
        out.push_str("\"error\":");
        out.push_str(&error_json(status));
    }
    if !trailers.is_empty() {
        if !status.is_ok() {
            out.push(',');
        }
        out.push_str("\"metadata\":{");
        // Repeated keys become one array.
        let mut keys: Vec<&str> = trailers.iter().map(|(k, _)| k).collect();
        keys.dedup();
        let mut first = true;
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            if !seen.insert(k) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            json_string(&mut out, k);
            out.push_str(":[");
            let mut vfirst = true;
            for (_, v) in trailers.iter().filter(|(kk, _)| *kk == k) {
                if !vfirst {
                    out.push(',');
                }
                vfirst = false;
                json_string(&mut out, &text_value(k, v));
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push('}');
    envelope::encode(END_STREAM, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_stream_json() {
        let md = Metadata::new()
            .with("x-a", "1")
            .unwrap()
            .with("x-a", "2")
            .unwrap();
        let b = end_stream(&Status::not_found("no \"one\""), &md);
        assert_eq!(b[0], END_STREAM);
        assert_eq!(
            std::str::from_utf8(&b[5..]).unwrap(),
            r#"{"error":{"code":"not_found","message":"no \"one\""},"metadata":{"x-a":["1","2"]}}"#
        );
        assert_eq!(&end_stream(&Status::ok(), &Metadata::new())[5..], b"{}");
        // Details holding a google.rpc.Status: each Any as type and value.
        let any = Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
            value: vec![1, 2, 3],
        };
        let rpc = RpcStatus {
            code: 3,
            message: "m".into(),
            details: vec![any],
        };
        let st = Status::invalid_argument("bad")
            .with_details(prost::Message::encode_to_vec(&rpc).into());
        assert_eq!(
            error_json(&st),
            r#"{"code":"invalid_argument","message":"bad","details":[{"type":"google.rpc.BadRequest","value":"AQID"}]}"#
        );
        // Opaque details bytes are left out.
        let st = Status::invalid_argument("bad").with_details(Bytes::from_static(&[0xff, 0xff]));
        assert_eq!(
            error_json(&st),
            r#"{"code":"invalid_argument","message":"bad"}"#
        );
        assert_eq!(parse_timeout("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("12345678901"), None);
    }
}
