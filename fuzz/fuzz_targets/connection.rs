//! Arbitrary sequences of received messages (structured frames and raw
//! bytes) and local actions into one connection, either side, v1 or legacy.
//! Nothing may panic, the bytes held for the application never exceed the
//! configured connection bound, every call ends at most once, and the
//! connection reports `Closed` exactly once (after the transport's end).
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zrpc_core::frame::{self, Open};
use zrpc_core::*;

#[derive(Arbitrary, Debug)]
enum Wire {
    Open { stream: u8, kind: CallKind, timeout_ms: u16, credit: u8, metadata: Metadata },
    Headers { stream: u8, metadata: Metadata },
    Message { stream: u8, end: bool, more: bool, len: u16, cursor: Option<u8> },
    HalfClose { stream: u8 },
    Status { stream: u8, status: Status, trailers: Metadata },
    Reset { stream: u8, code: Code },
    Credit { stream: u8, credit: u32 },
    Ping { ack: bool },
    GoAway { last: u8, code: u16 },
    Settings(Settings),
    Raw(Vec<u8>),
    Text(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Recv(Wire),
    /// Several frames packed in one BATCH message.
    RecvBatch(Vec<Wire>),
    /// Frames in a COMPRESSED message: one alone, more as a BATCH.
    RecvCompressed(Vec<Wire>),
    Open { kind: CallKind, timeout_ms: Option<u16>, metadata: Metadata },
    Send { call: u8, len: u16 },
    CloseSend { call: u8 },
    Headers { call: u8, metadata: Metadata },
    Finish { call: u8, status: Status, trailers: Metadata },
    Cancel { call: u8 },
    Consume { call: u8, len: u16 },
    Advance { ms: u16 },
    GoAway,
    Close { code: u16 },
    PeerClose { code: Option<u16> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    server: bool,
    legacy: bool,
    ops: Vec<Op>,
}

const BOUND: usize = 64 * 1024;
const SEND_BOUND: usize = 16 * 1024;

fn encode(w: Wire) -> Incoming {
    let sid = |s: u8| StreamId(s as u32);
    let f = match w {
        Wire::Raw(b) => return Incoming::Binary(b.into()),
        Wire::Text(b) => return Incoming::Text(b.into()),
        Wire::Open { stream, kind, timeout_ms, credit, metadata } => Frame::Open(Open {
            stream: sid(stream),
            kind,
            timeout_ms: timeout_ms as u32,
            initial_credit: credit as u32,
            method: Method::new("fuzz.Svc/Call").unwrap(),
            metadata,
        }),
        Wire::Headers { stream, metadata } => Frame::Headers { stream: sid(stream), metadata },
        Wire::Message { stream, end, more, len, cursor } => Frame::Message {
            stream: sid(stream),
            end_stream: end,
            more: more && !end,
            cursor: cursor.filter(|_| !more || end).map(|n| Bytes::from(vec![0xc5; n as usize])),
            payload: Bytes::from(vec![0x5a; len as usize]),
        },
        Wire::HalfClose { stream } => Frame::HalfClose { stream: sid(stream) },
        Wire::Status { stream, status, trailers } => Frame::Status { stream: sid(stream), status, trailers },
        Wire::Reset { stream, code } => Frame::Reset { stream: sid(stream), code },
        Wire::Credit { stream, credit } => Frame::Credit { stream: sid(stream), credit },
        Wire::Ping { ack } => Frame::Ping { ack, data: [1; 8] },
        Wire::GoAway { last, code } => Frame::GoAway { last_stream_id: sid(last), code, reason: "fuzz".into() },
        Wire::Settings(s) => Frame::Settings(s),
    };
    Incoming::Binary(f.to_bytes())
}

/// `ws` packed in one BATCH message.
fn batch(ws: Vec<Wire>) -> Vec<u8> {
    let mut b = vec![frame::kind::BATCH, 0, 0, 0, 0, 0];
    for w in ws {
        let (Incoming::Binary(f) | Incoming::Text(f)) = encode(w);
        let len = f.len().min(u16::MAX as usize);
        b.extend_from_slice(&(len as u16).to_be_bytes());
        b.extend_from_slice(&f[..len]);
    }
    b
}

fuzz_target!(|input: Input| {
    let start = Instant::now();
    let mut now = start;
    let side = if input.server { Side::Server } else { Side::Client };
    let mode = if input.legacy { Mode::Legacy } else { Mode::V1 };
    let cfg = Config {
        max_connection_buffer: BOUND,
        max_fragment_size: 1024,
        max_message_size: 32 * 1024,
        keepalive_interval: Some(Duration::from_millis(500)),
        keepalive_timeout: Duration::from_millis(300),
        idle_timeout: Some(Duration::from_millis(700)),
        max_call_send_buffer: 4096,
        max_connection_send_buffer: SEND_BOUND,
        // Its own messages of 256 bytes or more go COMPRESSED when the
        // peer offered gzip.
        compress_min_size: 256,
        ..Config::default()
    };
    let mut c = Connection::new(side, mode, cfg, now);
    let mut calls: Vec<StreamId> = Vec::new();
    let mut ended: std::collections::HashSet<StreamId> = Default::default();
    let mut closed = 0;
    let pick = |calls: &Vec<StreamId>, i: u8| calls.get(i as usize % calls.len().max(1)).copied().unwrap_or(StreamId(1));
    for op in input.ops {
        match op {
            Op::Recv(w) => {
                let _ = c.handle_message(now, encode(w));
            }
            Op::RecvBatch(ws) => {
                let _ = c.handle_message(now, Incoming::Binary(batch(ws).into()));
            }
            Op::RecvCompressed(mut ws) => {
                let content = if ws.len() == 1 {
                    let (Incoming::Binary(f) | Incoming::Text(f)) = encode(ws.remove(0));
                    f.to_vec()
                } else {
                    batch(ws)
                };
                let mut gz = flate2::write::GzEncoder::new(
                    vec![frame::kind::COMPRESSED, 0, 0, 0, 0, 0],
                    flate2::Compression::fast(),
                );
                let _ = std::io::Write::write_all(&mut gz, &content);
                let _ = c.handle_message(now, Incoming::Binary(gz.finish().unwrap_or_default().into()));
            }
            Op::Open { kind, timeout_ms, metadata } => {
                let opts = OpenOptions { timeout: timeout_ms.map(|ms| Duration::from_millis(ms as u64)), metadata };
                if let Ok(id) = c.open_call(now, "fuzz.Svc/Call", kind, opts) {
                    calls.push(id);
                }
            }
            Op::Send { call, len } => {
                let _ = c.send(pick(&calls, call), Bytes::from(vec![1; len as usize]));
            }
            Op::CloseSend { call } => {
                let _ = c.close_send(pick(&calls, call));
            }
            Op::Headers { call, metadata } => {
                let _ = c.send_headers(pick(&calls, call), metadata);
            }
            Op::Finish { call, status, trailers } => {
                let _ = c.finish(pick(&calls, call), status, trailers);
            }
            Op::Cancel { call } => {
                let _ = c.cancel(pick(&calls, call));
            }
            Op::Consume { call, len } => c.consume(pick(&calls, call), len as usize),
            Op::Advance { ms } => {
                now += Duration::from_millis(ms as u64);
                c.handle_timeout(now);
            }
            Op::GoAway => c.go_away(),
            Op::Close { code } => c.close(code, "fuzz"),
            Op::PeerClose { code } => c.handle_close(code, "fuzz"),
        }
        assert!(c.buffered_bytes() <= BOUND, "buffered {} over the bound", c.buffered_bytes());
        // Queued for sending: under the bound before the last accepted
        // message, so at most the bound plus one message.
        assert!(c.queued_send_bytes() < SEND_BOUND + u16::MAX as usize + 1, "queued {}", c.queued_send_bytes());
        if let Some(t) = c.poll_timeout() {
            assert!(t >= start);
        }
        let mut n = 0;
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::CallOpened(call) => calls.push(call.id),
                Event::CallEnded { id, .. } => assert!(ended.insert(id), "{id} ended twice"),
                Event::Closed { .. } => closed += 1,
                _ => {}
            }
            n += 1;
            assert!(n < 100_000);
        }
        assert!(closed <= 1, "Closed reported {closed} times");
        while c.poll_transmit().is_some() {
            n += 1;
            assert!(n < 100_000);
        }
    }
    c.handle_close(None, "end");
    while let Some(ev) = c.poll_event() {
        match ev {
            Event::CallEnded { id, .. } => assert!(ended.insert(id), "{id} ended twice"),
            Event::Closed { .. } => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, 1, "Closed must be reported exactly once");
    assert_eq!(c.live_calls(), 0);
    assert_eq!(c.buffered_bytes(), 0);
    assert_eq!(c.queued_send_bytes(), 0);
});
