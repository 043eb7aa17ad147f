//! What a hostile or careless peer gets when it pushes against the core's
//! bounds: bytes queued for sending, credit it never earned, memory held by
//! partial messages, idle connections, and time values at the edge.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use zrpc_core::frame::{Frame, Open};
use zrpc_core::*;

fn open_frame(id: u32, kind: CallKind, credit: u32) -> Bytes {
    Frame::Open(Open {
        stream: StreamId(id),
        kind,
        timeout_ms: 0,
        initial_credit: credit,
        method: Method::new("s/M").unwrap(),
        metadata: Metadata::new(),
    })
    .to_bytes()
}

/// A server whose peer opened `calls` bidi calls granting the most credit
/// the protocol allows, and never reads.
fn server_with_greedy_calls(cfg: Config, calls: u32) -> (Connection, Instant) {
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, Mode::V1, cfg, now);
    for i in 0..calls {
        server
            .handle_message(
                now,
                Incoming::Binary(open_frame(1 + 2 * i, CallKind::Bidi, (1 << 31) - 1)),
            )
            .unwrap();
    }
    while server.poll_event().is_some() {}
    (server, now)
}

#[test]
fn a_call_queues_at_most_its_send_bound_whatever_credit_the_peer_grants() {
    let cfg = Config {
        max_call_send_buffer: 256 * 1024,
        max_connection_send_buffer: 16 * 1024 * 1024,
        ..Config::default()
    };
    let (mut server, _) = server_with_greedy_calls(cfg, 1);
    let id = StreamId(1);
    let msg = Bytes::from(vec![7u8; 100 * 1024]);
    let mut accepted = 0;
    while server.send(id, msg.clone()).is_ok() {
        accepted += 1;
        assert!(accepted < 100, "send never blocked");
    }
    // 100 KiB messages against a 256 KiB bound: the third one crosses it.
    assert_eq!(accepted, 3);
    assert_eq!(server.send(id, msg.clone()), Err(UserError::Blocked));
    assert!(server.queued_send_bytes() <= 256 * 1024 + msg.len());
    // The writer takes what is queued: the call may send again.
    while server.poll_transmit().is_some() {}
    assert_eq!(server.queued_send_bytes(), 0);
    let mut writable = false;
    while let Some(e) = server.poll_event() {
        writable |= e == Event::Writable { id };
    }
    assert!(writable, "no Writable after the queue drained");
    server.send(id, msg).unwrap();
}

#[test]
fn the_connection_bound_holds_every_call_back_and_wakes_them_all() {
    let cfg = Config {
        max_call_send_buffer: 1024 * 1024,
        max_connection_send_buffer: 128 * 1024,
        ..Config::default()
    };
    let (mut server, _) = server_with_greedy_calls(cfg, 4);
    let msg = Bytes::from(vec![1u8; 64 * 1024]);
    let ids: Vec<StreamId> = (0..4).map(|i| StreamId(1 + 2 * i)).collect();
    let mut blocked = Vec::new();
    for &id in &ids {
        match server.send(id, msg.clone()) {
            Ok(()) => {}
            Err(UserError::Blocked) => blocked.push(id),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(blocked, ids[2..].to_vec());
    assert!(server.queued_send_bytes() <= 128 * 1024);
    while server.poll_transmit().is_some() {}
    let mut woken = Vec::new();
    while let Some(e) = server.poll_event() {
        if let Event::Writable { id } = e {
            woken.push(id);
        }
    }
    assert_eq!(woken, blocked);
}

#[test]
fn a_cancelled_call_releases_its_queued_bytes() {
    let cfg = Config {
        max_call_send_buffer: 1024 * 1024,
        max_connection_send_buffer: 64 * 1024,
        ..Config::default()
    };
    let (mut server, _) = server_with_greedy_calls(cfg, 2);
    let big = Bytes::from(vec![0u8; 64 * 1024]);
    server.send(StreamId(1), big.clone()).unwrap();
    assert_eq!(
        server.send(StreamId(3), big.clone()),
        Err(UserError::Blocked)
    );
    server.cancel(StreamId(1)).unwrap();
    assert_eq!(server.queued_send_bytes(), 0);
    let mut writable = false;
    while let Some(e) = server.poll_event() {
        writable |= e == Event::Writable { id: StreamId(3) };
    }
    assert!(writable);
    server.send(StreamId(3), big).unwrap();
}

#[test]
fn consuming_more_than_was_delivered_grants_nothing() {
    let cfg = Config {
        initial_credit: 2,
        stream_window_bytes: 0,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), cfg);
    let id = p.open("s/Upload", CallKind::ClientStreaming);
    p.client.send(id, b("x")).unwrap();
    p.run();
    assert_eq!(messages(&p.take_server(), id).len(), 1);
    // One message delivered; the application "consumes" it many times.
    for _ in 0..100 {
        p.server.consume(id, 1);
    }
    p.run();
    // The window is 2: one message was in flight, one consumed and granted
    // back, so the caller may send exactly 2 more, not 101.
    p.client.send(id, b("x")).unwrap();
    p.client.send(id, b("x")).unwrap();
    assert_eq!(p.client.send(id, b("x")), Err(UserError::Blocked));
}

#[test]
fn a_timeout_too_large_to_represent_is_no_deadline_and_no_panic() {
    let mut p = Pair::new();
    let id = p
        .client
        .open_call(
            p.now,
            "s/M",
            CallKind::Unary,
            OpenOptions {
                timeout: Some(Duration::MAX),
                ..OpenOptions::default()
            },
        )
        .unwrap();
    p.client.send(id, b("x")).unwrap();
    p.run();
    // The wire carries the largest timeout it can (u32 ms, ~49 days).
    let call = &opened(&p.take_server())[0];
    assert!(call.deadline.is_some());
    // A keepalive interval at the edge of the clock is no timer either.
    let now = Instant::now();
    let mut c = Connection::new(
        Side::Server,
        Mode::V1,
        Config {
            keepalive_interval: Some(Duration::MAX),
            keepalive_timeout: Duration::MAX,
            idle_timeout: Some(Duration::MAX),
            ..Config::default()
        },
        now,
    );
    c.handle_timeout(now + Duration::from_secs(1));
    assert!(c.is_open());
}

#[test]
fn partial_messages_count_with_the_memory_they_take() {
    let cfg = Config {
        max_connection_buffer: 1024 * 1024,
        ..Config::default()
    };
    let now = Instant::now();
    let mut server = Connection::new(Side::Server, Mode::V1, cfg, now);
    let frag = Bytes::from(vec![0u8; 64 * 1024]);
    // A hoarder: many calls, each holding an unfinished 64 KiB fragment.
    let mut ended = 0;
    for i in 0..64u32 {
        let id = 1 + 2 * i;
        server
            .handle_message(now, Incoming::Binary(open_frame(id, CallKind::Bidi, 16)))
            .unwrap();
        let m = Frame::Message {
            stream: StreamId(id),
            end_stream: false,
            more: true,
            cursor: None,
            payload: frag.clone(),
        };
        server
            .handle_message(now, Incoming::Binary(m.to_bytes()))
            .unwrap();
        assert!(server.buffered_bytes() <= 1024 * 1024);
        while let Some(e) = server.poll_event() {
            if let Event::CallEnded { status, .. } = e {
                assert_eq!(status.code(), Code::ResourceExhausted);
                ended += 1;
            }
        }
    }
    // 64 × 64 KiB = 4 MiB held against a 1 MiB bound: all but 16 were shed.
    assert_eq!(ended, 64 - 16);
    assert!(server.is_open(), "shedding ends calls, not the connection");
}

#[test]
fn an_idle_connection_is_drained_and_closed() {
    let cfg = Config {
        idle_timeout: Some(Duration::from_secs(60)),
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), cfg);
    // A call keeps it alive, however long it lasts.
    let id = p.open("s/Bidi", CallKind::Bidi);
    p.run();
    p.advance(Duration::from_secs(120));
    assert!(p.server.is_open());
    p.client.cancel(id).unwrap();
    p.run();
    // The clock starts when the last call ends.
    p.advance(Duration::from_secs(1));
    p.advance(Duration::from_secs(30));
    assert!(p.server.is_open());
    p.advance(Duration::from_secs(31));
    assert!(p.server.is_closed());
    assert_eq!(p.client_closes, vec![]);
    assert_eq!(p.server_closes, vec![(1000, "idle timeout".to_string())]);
    assert!(p.client.is_closed());
}

#[test]
fn an_idle_connection_releases_its_buffers_on_time() {
    let cfg = |release| Config {
        release_idle_after: release,
        ..Config::default()
    };
    let mut p = Pair::with(cfg(Some(Duration::from_secs(1))), cfg(None));
    // A fresh connection holds nothing: no timer.
    assert_eq!(p.client.poll_timeout(), None);
    let id = p.open("s/Bidi", CallKind::Bidi);
    p.client.close_send(id).unwrap();
    p.run();
    // A live call holds its buffers, however long it lasts: the timer fires
    // and does nothing.
    p.advance(Duration::from_secs(5));
    assert!(!p.client.released());
    // The call ends with the server's status, received now: the release
    // comes one second after that last message, not before.
    p.server.finish(id, Status::ok(), Metadata::new()).unwrap();
    p.run();
    assert_eq!(p.client.live_calls(), 0);
    assert_eq!(
        p.client.poll_timeout(),
        Some(p.now + Duration::from_secs(1))
    );
    p.advance(Duration::from_millis(999));
    assert!(!p.client.released());
    p.advance(Duration::from_millis(1));
    assert!(p.client.released());
    // Nothing more to do: no timer left on a client without keepalive.
    assert_eq!(p.client.poll_timeout(), None);
    // The server's release is off: it never releases, and has no timer.
    assert!(!p.server.released());
    assert_eq!(p.server.poll_timeout(), None);
    // A call after the release works, and holds buffers again.
    let id = p.open("s/Bidi", CallKind::Bidi);
    p.client.send(id, Bytes::from_static(b"again")).unwrap();
    p.run();
    assert!(!p.client.released());
    let got = messages(&p.take_server(), id);
    assert_eq!(got, vec![Bytes::from_static(b"again")]);
}
