//! Model-based test: a client and a server connection wired together in
//! memory through two in-flight queues, driven by random interleavings of
//! opens (from either side), messages, credit, half-closes, finishes,
//! cancels, expiring deadlines, partial delivery and go-away.
//!
//! Invariants, checked after every step and at the end:
//! * two conforming peers never cause a connection error;
//! * every call ends exactly once on each side that saw it, with one status;
//! * messages of a call arrive in order, none lost or duplicated;
//! * no side holds more unread messages on a call than it granted;
//! * once everything has ended, no call state and no buffered bytes remain.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use zrpc_core::*;

const CREDIT: u32 = 3;

#[derive(Clone, Debug)]
enum Op {
    Open {
        server: bool,
        kind: u8,
        timeout_ms: Option<u16>,
    },
    Send {
        call: usize,
        from_caller: bool,
        size: u16,
    },
    CloseSend {
        call: usize,
    },
    Finish {
        call: usize,
        code: u8,
    },
    Cancel {
        call: usize,
        by_caller: bool,
    },
    Consume {
        server: bool,
        n: u8,
    },
    Deliver {
        to_server: bool,
        n: u8,
    },
    Advance {
        ms: u16,
    },
    GoAway {
        server: bool,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 0u8..4, prop::option::of(1u16..200)).prop_map(|(server, kind, timeout_ms)| Op::Open { server, kind, timeout_ms }),
        6 => (0usize..16, any::<bool>(), prop_oneof![0u16..40, 900u16..3000]).prop_map(|(call, from_caller, size)| Op::Send { call, from_caller, size }),
        2 => (0usize..16).prop_map(|call| Op::CloseSend { call }),
        2 => (0usize..16, prop_oneof![Just(0u8), 1u8..17]).prop_map(|(call, code)| Op::Finish { call, code }),
        1 => (0usize..16, any::<bool>()).prop_map(|(call, by_caller)| Op::Cancel { call, by_caller }),
        4 => (any::<bool>(), 1u8..6).prop_map(|(server, n)| Op::Consume { server, n }),
        6 => (any::<bool>(), 1u8..10).prop_map(|(to_server, n)| Op::Deliver { to_server, n }),
        1 => (1u16..120).prop_map(|ms| Op::Advance { ms }),
        1 => Just(()).prop_map(|_| Op::GoAway { server: true }).boxed().prop_union(Just(Op::GoAway { server: false }).boxed()).boxed(),
    ]
}

/// What one side's application knows about one call.
#[derive(Default, Debug)]
struct AppCall {
    caller: bool,
    kind: Option<CallKind>,
    sent: u32,
    received: u32,
    unread: VecDeque<Bytes>,
    window: u32,
    ended: u32,
    status: Option<Status>,
}

struct Side_ {
    conn: Connection,
    calls: HashMap<StreamId, AppCall>,
    wire: VecDeque<Transmit>,
    finished_with: HashMap<StreamId, Status>,
}

struct World {
    now: Instant,
    sides: [Side_; 2], // 0 = client, 1 = server
    order: Vec<StreamId>,
}

fn payload(id: StreamId, seq: u32, size: u16) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + size as usize);
    b.put_u32(id.0);
    b.put_u32(seq);
    b.put_bytes(0xab, size as usize);
    b.freeze()
}

fn cfg(grow: bool) -> Config {
    Config {
        // With growth on, small messages widen windows (a 2 KiB budget keeps
        // them small enough that blocking still happens).
        stream_window_bytes: if grow { 2048 } else { 0 },
        initial_credit: CREDIT,
        max_fragment_size: 1024,
        max_concurrent_streams: 8,
        ..Config::default()
    }
}

impl World {
    fn new(grow: bool) -> Self {
        let now = Instant::now();
        let mk = |side| Side_ {
            conn: Connection::new(side, Mode::V1, cfg(grow), now),
            calls: HashMap::new(),
            wire: VecDeque::new(),
            finished_with: HashMap::new(),
        };
        World {
            now,
            sides: [mk(Side::Client), mk(Side::Server)],
            order: vec![],
        }
    }

    /// Drains one side's events into its application model, checking invariants.
    fn events(&mut self, i: usize) -> Result<(), TestCaseError> {
        let s = &mut self.sides[i];
        while let Some(ev) = s.conn.poll_event() {
            match ev {
                Event::CallOpened(c) => {
                    prop_assert!(!s.calls.contains_key(&c.id), "call {} opened twice", c.id);
                    s.calls.insert(
                        c.id,
                        AppCall {
                            caller: false,
                            kind: Some(c.kind),
                            window: CREDIT,
                            ..Default::default()
                        },
                    );
                    if !self.order.contains(&c.id) {
                        self.order.push(c.id);
                    }
                }
                Event::Message { id, data, .. } => {
                    let call = s.calls.get_mut(&id).expect("message for a known call");
                    prop_assert_eq!(call.ended, 0, "message after end on {}", id);
                    let seq = u32::from_be_bytes(data[4..8].try_into().unwrap());
                    prop_assert_eq!(u32::from_be_bytes(data[0..4].try_into().unwrap()), id.0);
                    prop_assert_eq!(seq, call.received, "order on call {}", id);
                    call.received += 1;
                    call.unread.push_back(data);
                    // The window only grows; the core must never deliver past it.
                    call.window = call.window.max(s.conn.recv_window(id).unwrap_or(0));
                    prop_assert!(
                        call.unread.len() as u32 <= call.window,
                        "unread {} > granted {} on {}",
                        call.unread.len(),
                        call.window,
                        id
                    );
                }
                Event::CallEnded { id, status, .. } => {
                    let call = s.calls.get_mut(&id).expect("end of a known call");
                    call.ended += 1;
                    prop_assert_eq!(call.ended, 1, "call {} ended twice", id);
                    call.status = Some(status);
                    call.unread.clear();
                }
                Event::Closed { error } => {
                    prop_assert!(
                        error.is_none(),
                        "connection error between conforming peers: {:?}",
                        error
                    );
                }
                Event::Headers { .. }
                | Event::RecvClosed { .. }
                | Event::Writable { .. }
                | Event::GoAway { .. }
                | Event::CanOpen => {}
            }
        }
        // The core counts at least what the application holds unread.
        let unread: usize = s
            .calls
            .values()
            .flat_map(|c| c.unread.iter())
            .map(|m| m.len())
            .sum();
        prop_assert!(
            s.conn.buffered_bytes() >= unread,
            "buffered {} < unread {}",
            s.conn.buffered_bytes(),
            unread
        );
        Ok(())
    }

    fn flush(&mut self, i: usize) {
        let s = &mut self.sides[i];
        while let Some(t) = s.conn.poll_transmit() {
            s.wire.push_back(t);
        }
    }

    fn deliver(&mut self, to: usize, n: usize) -> Result<usize, TestCaseError> {
        let from = 1 - to;
        self.flush(from);
        let mut done = 0;
        while done < n {
            let Some(t) = self.sides[from].wire.pop_front() else {
                break;
            };
            let dst = &mut self.sides[to].conn;
            let res = match t {
                Transmit::Binary(b) => dst.handle_message(self.now, Incoming::Binary(b)),
                Transmit::Text(b) => dst.handle_message(self.now, Incoming::Text(b)),
                Transmit::Close { code, reason } => {
                    prop_assert_eq!(code, 1000, "abnormal close: {}", reason);
                    dst.handle_close(Some(code), &reason);
                    Ok(())
                }
            };
            prop_assert!(res.is_ok(), "connection error: {:?}", res);
            done += 1;
            self.events(to)?;
        }
        Ok(done)
    }

    fn pick(&self, i: usize, idx: usize, want_caller: Option<bool>) -> Option<StreamId> {
        let live: Vec<StreamId> = self
            .order
            .iter()
            .copied()
            .filter(|id| {
                self.sides[i]
                    .calls
                    .get(id)
                    .is_some_and(|c| c.ended == 0 && want_caller.is_none_or(|w| c.caller == w))
            })
            .collect();
        (!live.is_empty()).then(|| live[idx % live.len()])
    }

    fn consume(&mut self, i: usize, n: usize) {
        let s = &mut self.sides[i];
        let mut ids: Vec<StreamId> = s.calls.keys().copied().collect();
        ids.sort();
        let mut left = n;
        for id in ids {
            let call = s.calls.get_mut(&id).unwrap();
            while left > 0 {
                let Some(m) = call.unread.pop_front() else {
                    break;
                };
                s.conn.consume(id, m.len());
                // Windows grow when the receiver consumes: record it here,
                // since a BATCH may deliver (and end) much before the
                // application sees the next event.
                call.window = call.window.max(s.conn.recv_window(id).unwrap_or(0));
                left -= 1;
            }
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Open {
                server,
                kind,
                timeout_ms,
            } => {
                let i = server as usize;
                let kind = [
                    CallKind::Unary,
                    CallKind::ServerStreaming,
                    CallKind::ClientStreaming,
                    CallKind::Bidi,
                ][kind as usize];
                let opts = OpenOptions {
                    timeout: timeout_ms.map(|ms| Duration::from_millis(ms as u64)),
                    metadata: Metadata::new(),
                };
                if let Ok(id) = self.sides[i]
                    .conn
                    .open_call(now, "model.Svc/Call", kind, opts)
                {
                    let window = if kind.single_response() { 1 } else { CREDIT };
                    self.sides[i].calls.insert(
                        id,
                        AppCall {
                            caller: true,
                            kind: Some(kind),
                            window,
                            ..Default::default()
                        },
                    );
                    self.order.push(id);
                }
            }
            Op::Send {
                call,
                from_caller,
                size,
            } => {
                for i in 0..2 {
                    if let Some(id) = self.pick(i, call, Some(from_caller)) {
                        let s = &mut self.sides[i];
                        let c = s.calls.get_mut(&id).unwrap();
                        if s.conn.send(id, payload(id, c.sent, size)).is_ok() {
                            c.sent += 1;
                        }
                        break;
                    }
                }
            }
            Op::CloseSend { call } => {
                for i in 0..2 {
                    if let Some(id) = self.pick(i, call, Some(true)) {
                        let _ = self.sides[i].conn.close_send(id);
                        break;
                    }
                }
            }
            Op::Finish { call, code } => {
                for i in 0..2 {
                    if let Some(id) = self.pick(i, call, Some(false)) {
                        let status = Status::new(Code::from_u8(code), "model");
                        if self.sides[i]
                            .conn
                            .finish(id, status.clone(), Metadata::new())
                            .is_ok()
                        {
                            self.sides[i].finished_with.insert(id, status);
                        }
                        break;
                    }
                }
            }
            Op::Cancel { call, by_caller } => {
                for i in 0..2 {
                    if let Some(id) = self.pick(i, call, Some(by_caller)) {
                        self.sides[i].conn.cancel(id).unwrap();
                        break;
                    }
                }
            }
            Op::Consume { server, n } => self.consume(server as usize, n as usize),
            Op::Deliver { to_server, n } => {
                self.deliver(to_server as usize, n as usize)?;
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms as u64);
                for i in 0..2 {
                    self.sides[i].conn.handle_timeout(self.now);
                }
            }
            Op::GoAway { server } => self.sides[server as usize].conn.go_away(),
        }
        self.events(0)?;
        self.events(1)
    }

    /// Ends everything: callers cancel what is live, everything is delivered
    /// and read, until both sides are quiet. Bounded.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for round in 0..200 {
            for i in 0..2 {
                let live: Vec<StreamId> = self.sides[i]
                    .calls
                    .iter()
                    .filter(|(_, c)| c.caller && c.ended == 0)
                    .map(|(id, _)| *id)
                    .collect();
                if round > 0 {
                    for id in live {
                        let _ = self.sides[i].conn.cancel(id);
                    }
                }
                self.consume(i, usize::MAX);
            }
            self.events(0)?;
            self.events(1)?;
            let a = self.deliver(1, usize::MAX)?;
            let b = self.deliver(0, usize::MAX)?;
            if a + b == 0 && round > 0 {
                return Ok(());
            }
        }
        Err(TestCaseError::fail("did not settle (livelock)"))
    }

    fn check_end(&self) -> Result<(), TestCaseError> {
        for (i, s) in self.sides.iter().enumerate() {
            for (id, c) in &s.calls {
                prop_assert_eq!(c.ended, 1, "side {} call {} ended {} times", i, id, c.ended);
                if let Some(kind) = c.kind {
                    let single = if c.caller {
                        kind.single_response()
                    } else {
                        kind.single_request()
                    };
                    if single {
                        prop_assert!(c.received <= 1);
                    }
                }
            }
            prop_assert_eq!(s.conn.live_calls(), 0, "side {} keeps call state", i);
            prop_assert_eq!(
                s.conn.buffered_bytes(),
                0,
                "side {} keeps buffered bytes",
                i
            );
        }
        // A caller that did not end the call itself sees the responder's status.
        for i in 0..2 {
            for (id, status) in &self.sides[1 - i].finished_with {
                let caller = &self.sides[i].calls[id];
                let got = caller.status.as_ref().unwrap();
                if !matches!(
                    got.code(),
                    Code::Cancelled | Code::DeadlineExceeded | Code::Unavailable
                ) {
                    prop_assert_eq!(got, status, "call {}", id);
                }
            }
        }
        Ok(())
    }
}

proptest! {
    // PROPTEST_CASES raises the count for long local runs.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    #[test]
    fn random_interleavings_keep_the_invariants(
        grow in any::<bool>(),ops in prop::collection::vec(arb_op(), 1..150)) {
        let mut w = World::new(grow);
        w.deliver(1, usize::MAX)?;
        w.deliver(0, usize::MAX)?;
        for op in ops {
            w.step(op)?;
        }
        w.settle()?;
        w.check_end()?;
    }
}
