//! The behaviour suite of docs/behaviour.json, run against the Rust core.
//! The TypeScript protocol module runs the same scripts
//! (clients/js/test/behaviour.test.ts): where the two implementations
//! behave alike, both pass. PROTOCOL.md section 12 describes the format.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value, json};
use zrpc_core::frame::{Open, split_batch};
use zrpc_core::*;

fn suite() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/behaviour.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/behaviour.json"))
        .expect("valid JSON")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn num(v: &Value, k: &str, default: u64) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(default)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn metadata_in(v: Option<&Value>) -> Metadata {
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

fn metadata_out(m: &Metadata) -> Value {
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

fn kind_in(s: &str) -> CallKind {
    match s {
        "unary" => CallKind::Unary,
        "server_streaming" => CallKind::ServerStreaming,
        "client_streaming" => CallKind::ClientStreaming,
        "bidi" => CallKind::Bidi,
        k => panic!("kind {k}"),
    }
}

fn kind_out(k: CallKind) -> &'static str {
    match k {
        CallKind::Unary => "unary",
        CallKind::ServerStreaming => "server_streaming",
        CallKind::ClientStreaming => "client_streaming",
        CallKind::Bidi => "bidi",
    }
}

/// `payload_len` N: N bytes of 0x78; else `payload_hex`.
fn payload_in(v: &Value) -> Bytes {
    match v.get("payload_len").and_then(Value::as_u64) {
        Some(n) => Bytes::from(vec![0x78; n as usize]),
        None => Bytes::from(hex(text(v, "payload_hex"))),
    }
}

/// A script's frame (absent fields take their zero value) as bytes.
fn frame_in(f: &Value) -> Bytes {
    let stream = || StreamId(num(f, "stream", 0) as u32);
    let frame = match text(f, "type") {
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
    };
    frame.to_bytes()
}

/// A frame written by the connection, in the scripts' JSON form.
fn frame_out(f: &Frame) -> Value {
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
            payload,
        } => json!({"type": "MESSAGE", "stream": stream.0, "end_stream": end_stream,
            "more": more, "payload_hex": to_hex(payload), "payload_len": payload.len()}),
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

fn event_out(e: &Event) -> Option<Value> {
    Some(match e {
        Event::CallOpened(c) => json!({"type": "opened", "stream": c.id.0,
            "kind": kind_out(c.kind), "method": c.method.as_str(),
            "metadata": metadata_out(&c.metadata)}),
        Event::Headers { id, metadata } => {
            json!({"type": "headers", "stream": id.0, "metadata": metadata_out(metadata)})
        }
        Event::Message { id, data } => {
            json!({"type": "message", "stream": id.0, "payload_hex": to_hex(data)})
        }
        Event::RecvClosed { id } => json!({"type": "recv_closed", "stream": id.0}),
        Event::Writable { id } => json!({"type": "writable", "stream": id.0}),
        Event::CallEnded { id, status, .. } => json!({"type": "ended", "stream": id.0,
            "code": status.code() as u8, "message": status.message(),
            "not_processed": status.is_not_processed()}),
        Event::GoAway { last_stream_id } => {
            json!({"type": "goaway", "last_stream_id": last_stream_id.0})
        }
        // The TypeScript connection has no stream limit of its own to wait on.
        Event::CanOpen => return None,
        Event::Closed { error } => {
            json!({"type": "closed", "code": error.as_ref().map_or(1000, |e| e.close_code())})
        }
    })
}

/// `want`'s fields all equal `got`'s (fields `want` leaves out are not checked).
fn matches(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| matches(v, gv))),
        _ => want == got,
    }
}

fn expect_list(what: &str, at: &str, want: &Value, got: &[Value]) {
    let want = want.as_array().unwrap();
    let ok = want.len() == got.len() && want.iter().zip(got).all(|(w, g)| matches(w, g));
    assert!(
        ok,
        "{at}: {what}\n  expected {}\n  got      {}",
        serde_json::to_string(want).unwrap(),
        serde_json::to_string(got).unwrap()
    );
}

fn config_of(v: &Value) -> Config {
    let ms = |k: &str| v.get(k).and_then(Value::as_u64);
    let c = Config::default();
    Config {
        max_message_size: ms("max_message_size").map_or(c.max_message_size, |x| x as u32),
        max_concurrent_streams: ms("max_concurrent_streams")
            .map_or(c.max_concurrent_streams, |x| x as u32),
        initial_credit: ms("initial_credit").map_or(c.initial_credit, |x| x as u32),
        max_fragment_size: ms("max_fragment_size").map_or(c.max_fragment_size, |x| x as u32),
        max_metadata_size: ms("max_metadata_size").map_or(c.max_metadata_size, |x| x as u32),
        max_batch_size: ms("max_batch_size").map_or(c.max_batch_size, |x| x as u32),
        stream_window_bytes: ms("window_bytes").map_or(c.stream_window_bytes, |x| x as u32),
        max_connection_buffer: ms("max_connection_buffer")
            .map_or(c.max_connection_buffer, |x| x as usize),
        max_call_send_buffer: ms("max_call_send_buffer")
            .map_or(c.max_call_send_buffer, |x| x as usize),
        max_connection_send_buffer: ms("max_connection_send_buffer")
            .map_or(c.max_connection_send_buffer, |x| x as usize),
        keepalive_interval: ms("keepalive_interval_ms")
            .filter(|&x| x > 0)
            .map(Duration::from_millis),
        keepalive_timeout: ms("keepalive_timeout_ms")
            .map_or(c.keepalive_timeout, Duration::from_millis),
        max_pending_control: ms("max_pending_control")
            .map_or(c.max_pending_control, |x| x as usize),
        idle_timeout: ms("idle_timeout_ms")
            .filter(|&x| x > 0)
            .map(Duration::from_millis),
        release_idle_after: ms("release_idle_after_ms")
            .filter(|&x| x > 0)
            .map(Duration::from_millis),
        ..c
    }
}

struct Run {
    t0: Instant,
    now: Instant,
    conn: Connection,
    frames: Vec<Value>,
    close: Option<Value>,
    events: Vec<Value>,
}

impl Run {
    /// Everything the connection has to write: frames (BATCH split into
    /// its frames) and the close.
    fn transmit(&mut self) {
        while let Some(t) = self.conn.poll_transmit() {
            match t {
                Transmit::Binary(b) => {
                    if b.first() == Some(&frame::kind::BATCH) {
                        for f in split_batch(b).expect("batch") {
                            let f = Frame::decode(f.expect("entry")).expect("frame");
                            self.frames.push(frame_out(&f));
                        }
                    } else {
                        self.frames
                            .push(frame_out(&Frame::decode(b).expect("frame")));
                    }
                }
                Transmit::Text(_) => panic!("text on v1"),
                Transmit::Close { code, .. } => {
                    assert!(self.close.is_none(), "one close");
                    self.close = Some(json!({"code": code}));
                }
            }
        }
    }

    fn collect(&mut self) {
        while let Some(e) = self.conn.poll_event() {
            self.events.extend(event_out(&e));
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.duration_since(self.t0).as_millis() as u64
    }

    fn state(&self) -> Value {
        json!({
            "is_open": self.conn.is_open(),
            "is_draining": self.conn.is_draining(),
            "is_closed": self.conn.is_closed(),
            "live_calls": self.conn.live_calls(),
            "buffered_bytes": self.conn.buffered_bytes(),
            "queued_send_bytes": self.conn.queued_send_bytes(),
            "timeout_ms": self.conn.poll_timeout().map(|t| self.ms(t)),
            "released": self.conn.released(),
        })
    }

    fn call_state(&self, id: u32) -> Value {
        let id = StreamId(id);
        json!({
            "live": self.conn.has_call(id),
            "send_credit": self.conn.send_credit(id),
            "recv_window": self.conn.recv_window(id),
            "would_block": self.conn.would_block(id),
        })
    }
}

fn user_result(r: Result<(), UserError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(UserError::Blocked) => "blocked",
        Err(UserError::UnknownCall) | Err(UserError::SendClosed) => "ended",
        Err(UserError::MessageTooLarge { .. }) => "too_large",
        Err(e) => panic!("unexpected {e:?}"),
    }
}

fn run(script: &Value, defaults: &Value) {
    let name = script["name"].as_str().unwrap();
    let mut cfg = defaults.as_object().unwrap().clone();
    if let Some(o) = script.get("config").and_then(Value::as_object) {
        cfg.extend(o.clone());
    }
    let t0 = Instant::now();
    let mut r = Run {
        t0,
        now: t0,
        conn: Connection::new(Side::Client, Mode::V1, config_of(&Value::Object(cfg)), t0),
        frames: Vec::new(),
        close: None,
        events: Vec::new(),
    };
    for (i, step) in script["steps"].as_array().unwrap().iter().enumerate() {
        let at = format!("{name}, step {}", i + 1);
        let (op, arg) = step.as_object().unwrap().iter().next().unwrap();
        match op.as_str() {
            "recv" => {
                for f in arg.as_array().unwrap() {
                    let _ = r.conn.handle_message(r.now, Incoming::Binary(frame_in(f)));
                }
            }
            "recv_batch" => {
                let mut b = BytesMut::new();
                b.put_slice(&[frame::kind::BATCH, 0, 0, 0, 0, 0]);
                for f in arg.as_array().unwrap() {
                    let f = frame_in(f);
                    b.put_u16(f.len() as u16);
                    b.put_slice(&f);
                }
                let _ = r.conn.handle_message(r.now, Incoming::Binary(b.freeze()));
            }
            "recv_hex" => {
                let b = Bytes::from(hex(arg.as_str().unwrap()));
                let _ = r.conn.handle_message(r.now, Incoming::Binary(b));
            }
            "recv_text" => {
                let b = Bytes::from(arg.as_str().unwrap().to_owned());
                let _ = r.conn.handle_message(r.now, Incoming::Text(b));
            }
            "peer_close" => r.conn.handle_close(
                arg.get("code").and_then(Value::as_u64).map(|c| c as u16),
                text(arg, "reason"),
            ),
            "advance_ms" => {
                r.now += Duration::from_millis(arg.as_u64().unwrap());
                r.conn.handle_timeout(r.now);
            }
            "open" => {
                let mut opts = OpenOptions {
                    metadata: metadata_in(arg.get("metadata")),
                    ..OpenOptions::default()
                };
                if let Some(t) = arg.get("timeout_ms").and_then(Value::as_u64) {
                    opts.timeout = Some(Duration::from_millis(t));
                }
                let got = r
                    .conn
                    .open_call(r.now, text(arg, "method"), kind_in(text(arg, "kind")), opts)
                    .map(|id| json!(id.0))
                    .unwrap_or_else(|_| json!("refused"));
                assert_eq!(got, arg["expect"], "{at}: open");
            }
            "send" => {
                let id = StreamId(num(arg, "stream", 0) as u32);
                let data = payload_in(arg);
                let mut got = user_result(r.conn.send(id, data));
                if got == "ok" && flag(arg, "end") {
                    got = user_result(r.conn.close_send(id));
                }
                assert_eq!(got, text(arg, "expect"), "{at}: send");
            }
            "half_close" => {
                let _ = r.conn.close_send(StreamId(arg.as_u64().unwrap() as u32));
            }
            "consume" => r.conn.consume(
                StreamId(num(arg, "stream", 0) as u32),
                num(arg, "len", 0) as usize,
            ),
            "cancel" => {
                let _ = r.conn.cancel(StreamId(arg.as_u64().unwrap() as u32));
            }
            "send_headers" => {
                let id = StreamId(num(arg, "stream", 0) as u32);
                let _ = r.conn.send_headers(id, metadata_in(arg.get("metadata")));
            }
            "finish" => {
                let id = StreamId(num(arg, "stream", 0) as u32);
                let s = Status::new(
                    Code::from_u8(num(arg, "code", 0) as u8),
                    text(arg, "message"),
                );
                let _ = r.conn.finish(id, s, metadata_in(arg.get("trailers")));
            }
            "go_away" => r.conn.go_away(),
            "close" => r
                .conn
                .close(num(arg, "code", 1000) as u16, text(arg, "reason")),
            "expect_out" => {
                r.transmit();
                let got = std::mem::take(&mut r.frames);
                expect_list("frames written", &at, arg, &got);
            }
            "expect_close" => {
                r.transmit();
                assert!(r.frames.is_empty(), "{at}: frames before the close");
                let got = r.close.take().unwrap_or(Value::Null);
                assert!(matches(arg, &got), "{at}: close: expected {arg}, got {got}");
            }
            "expect_events" => {
                r.collect();
                let got = std::mem::take(&mut r.events);
                expect_list("events", &at, arg, &got);
            }
            "expect_state" => {
                let got = r.state();
                assert!(matches(arg, &got), "{at}: state: expected {arg}, got {got}");
            }
            "expect_call" => {
                let got = r.call_state(num(arg, "stream", 0) as u32);
                assert!(
                    matches(arg, &{
                        let mut g = got.clone();
                        g["stream"] = arg["stream"].clone();
                        g
                    }),
                    "{at}: call: expected {arg}, got {got}"
                );
            }
            op => panic!("{at}: unknown step {op}"),
        }
    }
    // Whatever the script did not look at must not be pending.
    r.collect();
    r.transmit();
    assert!(
        r.events.is_empty(),
        "{name}: events not expected: {:?}",
        r.events
    );
    assert!(
        r.frames.is_empty(),
        "{name}: frames not expected: {:?}",
        r.frames
    );
}

#[test]
fn every_behaviour_script_passes() {
    let s = suite();
    let scripts = s["scripts"].as_array().unwrap();
    assert!(
        scripts.len() >= 30,
        "the suite has {} scripts",
        scripts.len()
    );
    let mut failures = Vec::new();
    std::panic::set_hook(Box::new(|_| {}));
    for script in scripts {
        let only = script.get("only").and_then(Value::as_str);
        if only.is_some_and(|o| o != "rust") {
            continue;
        }
        let name = script["name"].as_str().unwrap().to_owned();
        if let Err(e) = std::panic::catch_unwind(|| run(script, &s["config"])) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{name}: {msg}"));
        }
    }
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
