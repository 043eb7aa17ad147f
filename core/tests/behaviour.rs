//! The behaviour suite of docs/behaviour.json, run against the Rust core.
//! The TypeScript protocol module runs the same scripts
//! (clients/js/test/behaviour.test.ts): where the two implementations
//! behave alike, both pass. PROTOCOL.md section 12 describes the format.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use zrpc_core::frame::split_batch;
use zrpc_core::*;

mod common;
use common::json::*;

fn suite() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/behaviour.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/behaviour.json"))
        .expect("valid JSON")
}

/// A script's frame as bytes.
fn frame_in(f: &Value) -> Bytes {
    frame_of(f).to_bytes()
}

fn event_out(e: &Event) -> Option<Value> {
    Some(match e {
        Event::CallOpened(c) => json!({"type": "opened", "stream": c.id.0,
            "kind": kind_out(c.kind), "method": c.method.as_str(),
            "metadata": metadata_out(&c.metadata)}),
        Event::Headers { id, metadata } => {
            json!({"type": "headers", "stream": id.0, "metadata": metadata_out(metadata)})
        }
        Event::Message { id, data, cursor } => {
            let mut m = json!({"type": "message", "stream": id.0, "payload_hex": to_hex(data)});
            if let Some(c) = cursor {
                m["cursor_hex"] = json!(to_hex(c));
            }
            m
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
        max_cursor_size: ms("max_cursor_size").map_or(c.max_cursor_size, |x| x as u8),
        accept_gzip: v
            .get("accept_gzip")
            .and_then(Value::as_bool)
            .unwrap_or(c.accept_gzip),
        compress_min_size: ms("compress_min_size").map_or(c.compress_min_size, |x| x as u32),
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
        Err(UserError::NotResumable) => "not_resumable",
        Err(UserError::CursorTooLarge { .. }) => "cursor_too_large",
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
            "recv_compressed" => {
                let content: Vec<u8> = if let Some(h) = arg.get("hex") {
                    hex(h.as_str().unwrap())
                } else if let Some(n) = arg.get("zeros") {
                    vec![0; n.as_u64().unwrap() as usize]
                } else {
                    let frames: Vec<Bytes> = arg["frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(frame_in)
                        .collect();
                    if frames.len() == 1 {
                        frames[0].to_vec()
                    } else {
                        let mut b = BytesMut::new();
                        b.put_slice(&[frame::kind::BATCH, 0, 0, 0, 0, 0]);
                        for f in &frames {
                            b.put_u16(f.len() as u16);
                            b.put_slice(f);
                        }
                        b.to_vec()
                    }
                };
                let mut gz = flate2::write::GzEncoder::new(
                    vec![frame::kind::COMPRESSED, 0, 0, 0, 0, 0],
                    flate2::Compression::default(),
                );
                std::io::Write::write_all(&mut gz, &content).unwrap();
                let msg = Bytes::from(gz.finish().unwrap());
                let _ = r.conn.handle_message(r.now, Incoming::Binary(msg));
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
                let mut got = user_result(match arg.get("cursor_hex").and_then(Value::as_str) {
                    Some(c) => r.conn.send_with_cursor(id, data, Bytes::from(hex(c))),
                    None => r.conn.send(id, data),
                });
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
