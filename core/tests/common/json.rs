//! The JSON forms of docs/vectors.json and docs/behaviour.json: hex,
//! metadata, call kinds, frames, both ways.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use zrpc_core::frame::Open;
use zrpc_core::*;

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn num(v: &Value, k: &str, default: u64) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(default)
}

pub fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

pub fn metadata_in(v: Option<&Value>) -> Metadata {
    let mut m = Metadata::new();
    for e in v.and_then(Value::as_array).into_iter().flatten() {
        let (key, val) = (e[0].as_str().unwrap(), e[1].as_str().unwrap());
        let bytes = if key.ends_with("-bin") {
            hex(val)
        } else {
            val.as_bytes().to_vec()
        };
        m.insert(key, bytes).unwrap();
    }
    m
}

pub fn metadata_out(m: &Metadata) -> Value {
    m.iter()
        .map(|(k, v)| {
            let v = if k.ends_with("-bin") {
                to_hex(v)
            } else {
                String::from_utf8_lossy(v).into_owned()
            };
            json!([k, v])
        })
        .collect()
}

pub fn kind_in(s: &str) -> CallKind {
    match s {
        "unary" => CallKind::Unary,
        "server_streaming" => CallKind::ServerStreaming,
        "client_streaming" => CallKind::ClientStreaming,
        "bidi" => CallKind::Bidi,
        k => panic!("kind {k}"),
    }
}

pub fn kind_out(k: CallKind) -> &'static str {
    match k {
        CallKind::Unary => "unary",
        CallKind::ServerStreaming => "server_streaming",
        CallKind::ClientStreaming => "client_streaming",
        CallKind::Bidi => "bidi",
    }
}

/// `payload_len` N: N bytes of 0x78; else `payload_hex`.
pub fn payload_in(v: &Value) -> Bytes {
    match v.get("payload_len").and_then(Value::as_u64) {
        Some(n) => Bytes::from(vec![0x78; n as usize]),
        None => Bytes::from(hex(text(v, "payload_hex"))),
    }
}

/// A frame in the JSON form of docs/vectors.json and docs/behaviour.json
/// (absent fields take their zero value; `initial_credit` 16).
pub fn frame_of(f: &Value) -> Frame {
    let stream = || StreamId(num(f, "stream", 0) as u32);
    match text(f, "type") {
        "SETTINGS" => {
            let s = &f["settings"];
            let g = |k: &str| s.get(k).map(|v| v.as_u64().unwrap() as u32);
            Frame::Settings(Settings {
                max_message_size: g("max_message_size"),
                max_concurrent_streams: g("max_concurrent_streams"),
                initial_credit: g("initial_credit"),
                max_fragment_size: g("max_fragment_size"),
                max_metadata_size: g("max_metadata_size"),
                max_batch_size: g("max_batch_size"),
                max_cursor_size: g("max_cursor_size"),
                compression: g("compression"),
            })
        }
        "OPEN" => Frame::Open(Open {
            stream: stream(),
            kind: kind_in(text(f, "kind")),
            timeout_ms: num(f, "timeout_ms", 0) as u32,
            initial_credit: num(f, "initial_credit", 16) as u32,
            method: Method::new(text(f, "method")).unwrap(),
            metadata: metadata_in(f.get("metadata")),
        }),
        "HEADERS" => Frame::Headers {
            stream: stream(),
            metadata: metadata_in(f.get("metadata")),
        },
        "MESSAGE" => Frame::Message {
            stream: stream(),
            end_stream: flag(f, "end_stream"),
            more: flag(f, "more"),
            cursor: f
                .get("cursor_hex")
                .map(|c| Bytes::from(hex(c.as_str().unwrap()))),
            payload: payload_in(f),
        },
        "HALF_CLOSE" => Frame::HalfClose { stream: stream() },
        "STATUS" => Frame::Status {
            stream: stream(),
            status: Status::new(Code::from_u8(num(f, "code", 0) as u8), text(f, "message"))
                .with_details(Bytes::from(hex(text(f, "details_hex")))),
            trailers: metadata_in(f.get("trailers")),
        },
        "RESET" => Frame::Reset {
            stream: stream(),
            code: Code::from_u8(num(f, "code", 1) as u8),
        },
        "CREDIT" => Frame::Credit {
            stream: stream(),
            credit: num(f, "credit", 0) as u32,
        },
        "PING" => Frame::Ping {
            ack: flag(f, "ack"),
            data: {
                let mut d = [0u8; 8];
                let h = hex(text(f, "data_hex"));
                d[..h.len()].copy_from_slice(&h);
                d
            },
        },
        "GOAWAY" => Frame::GoAway {
            last_stream_id: StreamId(num(f, "last_stream_id", 0) as u32),
            code: num(f, "code", 1000) as u16,
            reason: text(f, "reason").to_owned(),
        },
        t => panic!("frame type {t}"),
    }
}

/// A frame written by the connection, in the scripts' JSON form.
pub fn frame_out(f: &Frame) -> Value {
    match f {
        Frame::Settings(s) => {
            let mut m = Map::new();
            for (k, v) in [
                ("max_message_size", s.max_message_size),
                ("max_concurrent_streams", s.max_concurrent_streams),
                ("initial_credit", s.initial_credit),
                ("max_fragment_size", s.max_fragment_size),
                ("max_metadata_size", s.max_metadata_size),
                ("max_batch_size", s.max_batch_size),
                ("max_cursor_size", s.max_cursor_size),
                ("compression", s.compression),
            ] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            json!({"type": "SETTINGS", "settings": m})
        }
        Frame::Open(o) => json!({"type": "OPEN", "stream": o.stream.0, "kind": kind_out(o.kind),
            "timeout_ms": o.timeout_ms, "initial_credit": o.initial_credit,
            "method": o.method.as_str(), "metadata": metadata_out(&o.metadata)}),
        Frame::Headers { stream, metadata } => {
            json!({"type": "HEADERS", "stream": stream.0, "metadata": metadata_out(metadata)})
        }
        Frame::Message {
            stream,
            end_stream,
            more,
            cursor,
            payload,
        } => {
            let mut m = json!({"type": "MESSAGE", "stream": stream.0, "end_stream": end_stream,
                "more": more, "payload_hex": to_hex(payload), "payload_len": payload.len()});
            if let Some(c) = cursor {
                m["cursor_hex"] = json!(to_hex(c));
            }
            m
        }
        Frame::HalfClose { stream } => json!({"type": "HALF_CLOSE", "stream": stream.0}),
        Frame::Status {
            stream,
            status,
            trailers,
        } => json!({"type": "STATUS", "stream": stream.0, "code": status.code() as u8,
            "message": status.message(), "details_hex": to_hex(status.details()),
            "trailers": metadata_out(trailers)}),
        Frame::Reset { stream, code } => {
            json!({"type": "RESET", "stream": stream.0, "code": *code as u8})
        }
        Frame::Credit { stream, credit } => {
            json!({"type": "CREDIT", "stream": stream.0, "credit": credit})
        }
        Frame::Ping { ack, data } => json!({"type": "PING", "ack": ack, "data_hex": to_hex(data)}),
        Frame::GoAway {
            last_stream_id,
            code,
            reason,
        } => json!({"type": "GOAWAY", "last_stream_id": last_stream_id.0, "code": code,
            "reason": reason}),
    }
}
