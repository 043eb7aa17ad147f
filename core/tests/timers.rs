//! The timer rule: once `handle_timeout(now)` has run, no instant the
//! connection reports from `poll_timeout` is already due. A timer reported
//! due that handling does not move would wake the driver in a loop (a live
//! call that waits would burn a core on both sides).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Pair, deliver};
use proptest::prelude::*;
use zrpc_core::*;

/// Every clock on, short enough that random sequences cross them all.
fn timed(release: bool) -> Config {
    Config {
        keepalive_interval: Some(Duration::from_millis(300)),
        keepalive_timeout: Duration::from_millis(200),
        idle_timeout: Some(Duration::from_millis(700)),
        release_idle_after: release.then(|| Duration::from_millis(100)),
        max_concurrent_streams: 8,
        ..Config::default()
    }
}

/// `handle_timeout(now)` leaves nothing due at `now`.
fn check(conn: &mut Connection, now: Instant) -> Result<(), TestCaseError> {
    conn.handle_timeout(now);
    if let Some(d) = conn.poll_timeout() {
        prop_assert!(
            d > now,
            "a timer is still due after handle_timeout: {:?} <= now",
            now - d
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Open { kind: u8, timeout_ms: Option<u16> },
    Send { call: usize, from_server: bool },
    Finish { call: usize },
    Cancel { call: usize },
    Deliver { to_server: bool },
    Advance { ms: u16 },
    GoAway { server: bool },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4, prop::option::of(1u16..900)).prop_map(|(kind, timeout_ms)| Op::Open { kind, timeout_ms }),
        3 => (0usize..8, any::<bool>()).prop_map(|(call, from_server)| Op::Send { call, from_server }),
        2 => (0usize..8).prop_map(|call| Op::Finish { call }),
        1 => (0usize..8).prop_map(|call| Op::Cancel { call }),
        4 => any::<bool>().prop_map(|to_server| Op::Deliver { to_server }),
        5 => (1u16..500).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|server| Op::GoAway { server }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
    ))]

    /// Over random sequences of calls (live, idle, ended), messages,
    /// deliveries, time and drains, with every timer on: after each step and
    /// `handle_timeout`, both sides report only future instants.
    #[test]
    fn no_timer_is_due_after_handle_timeout(
        release in any::<bool>(),
        ops in prop::collection::vec(arb_op(), 1..120),
    ) {
        let mut p = Pair::with(timed(release), timed(release));
        let mut calls: Vec<StreamId> = Vec::new();
        let mut served: Vec<StreamId> = Vec::new();
        for op in ops {
            match op {
                Op::Open { kind, timeout_ms } => {
                    let kind = [CallKind::Unary, CallKind::ServerStreaming, CallKind::ClientStreaming, CallKind::Bidi][kind as usize];
                    let opts = OpenOptions {
                        timeout: timeout_ms.map(|ms| Duration::from_millis(ms as u64)),
                        ..OpenOptions::default()
                    };
                    if let Ok(id) = p.client.open_call(p.now, "t.T/M", kind, opts) {
                        calls.push(id);
                    }
                }
                Op::Send { call, from_server } => {
                    let msg = Bytes::from_static(b"x");
                    if from_server {
                        if let Some(id) = served.get(call) {
                            let _ = p.server.send(*id, msg);
                        }
                    } else if let Some(id) = calls.get(call) {
                        let _ = p.client.send(*id, msg);
                    }
                }
                Op::Finish { call } => {
                    if let Some(id) = served.get(call) {
                        let _ = p.server.finish(*id, Status::ok(), Metadata::new());
                    }
                }
                Op::Cancel { call } => {
                    if let Some(id) = calls.get(call) {
                        let _ = p.client.cancel(*id);
                    }
                }
                Op::Deliver { to_server } => {
                    let (from, to) = if to_server {
                        (&mut p.client, &mut p.server)
                    } else {
                        (&mut p.server, &mut p.client)
                    };
                    deliver(from, to, p.now, &mut Vec::new());
                }
                Op::Advance { ms } => p.now += Duration::from_millis(ms as u64),
                Op::GoAway { server } => {
                    if server { p.server.go_away() } else { p.client.go_away() }
                }
            }
            while let Some(e) = p.server.poll_event() {
                if let Event::CallOpened(c) = e {
                    served.push(c.id);
                }
            }
            while p.client.poll_event().is_some() {}
            check(&mut p.client, p.now)?;
            check(&mut p.server, p.now)?;
        }
    }
}

/// The regression this file exists for: a server stream that waits (no
/// message either way) must let both sides sleep until a real timer: over a
/// minute of simulated time, each wakes about once per keepalive interval,
/// not in a loop.
#[test]
fn a_live_call_that_waits_wakes_its_connection_rarely() {
    let config = Config {
        keepalive_interval: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(300)),
        ..Config::default()
    };
    let mut p = Pair::with(config.clone(), config);
    let id = p.open("people.People/WatchPeople", CallKind::ServerStreaming);
    p.client.send(id, Bytes::from_static(b"{}")).unwrap();
    p.client.close_send(id).unwrap();
    p.run();
    assert!(p.server.live_calls() == 1 && p.client.live_calls() == 1);
    let start = p.now;
    let mut wakeups = 0;
    while p.now < start + Duration::from_secs(60) {
        let next = [p.client.poll_timeout(), p.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("keepalive is on");
        assert!(next > p.now, "a timer is due again at once");
        p.now = next;
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
        p.run();
        wakeups += 1;
        assert!(wakeups < 20, "woken {wakeups} times in {:?}", p.now - start);
    }
    // The call is still live, and the connection open: keepalive answered.
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!(p.server.live_calls(), 1);
}

/// Idle timeout counts from the last call's activity, not from PINGs: a
/// server with keepalive on still drains a connection whose calls ended.
#[test]
fn keepalive_answers_do_not_hold_off_the_idle_timeout() {
    let config = Config {
        keepalive_interval: Some(Duration::from_secs(30)),
        idle_timeout: Some(Duration::from_secs(120)),
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), config);
    let id = p.open("a.B/C", CallKind::Unary);
    p.client.send(id, Bytes::from_static(b"x")).unwrap();
    p.run();
    let served = common::opened(&p.take_server())[0].id;
    p.server.send(served, Bytes::from_static(b"y")).unwrap();
    p.server
        .finish(served, Status::ok(), Metadata::new())
        .unwrap();
    p.run();
    assert_eq!(p.server.live_calls(), 0);
    for _ in 0..10 {
        let Some(next) = p.server.poll_timeout() else {
            break;
        };
        p.now = next;
        p.client.handle_timeout(p.now);
        p.server.handle_timeout(p.now);
        p.run();
    }
    assert!(p.server.is_draining(), "idle connection not drained");
    assert!(p.client.is_draining());
}
