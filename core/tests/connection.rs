//! Transitions of the v1 connection state machine, one behaviour per test.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use zrpc_core::frame::Open;
use zrpc_core::*;

#[test]
fn unary_call_with_headers_trailers_and_metadata() {
    let mut p = Pair::new();
    let md = Metadata::new().with("x-user", "ada").unwrap();
    let id = p
        .client
        .open_call(
            p.now,
            "people.People/CreatePerson",
            CallKind::Unary,
            OpenOptions {
                timeout: None,
                metadata: md,
            },
        )
        .unwrap();
    assert_eq!(id, StreamId(1));
    p.client.send(id, b("req")).unwrap();
    assert_eq!(p.client.send(id, b("again")), Err(UserError::Cardinality));
    p.client.close_send(id).unwrap();
    p.run();

    let calls = opened(&p.server_events);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method.as_str(), "people.People/CreatePerson");
    assert_eq!(calls[0].kind, CallKind::Unary);
    assert_eq!(calls[0].metadata.get_str("x-user"), Some("ada"));
    assert_eq!(calls[0].deadline, None);
    assert_eq!(messages(&p.server_events, id), vec![b("req")]);
    assert!(p.server_events.contains(&Event::RecvClosed { id }));

    // OK without the response message is refused locally.
    assert_eq!(
        p.server.finish(id, Status::ok(), Metadata::new()),
        Err(UserError::Cardinality)
    );
    p.server
        .send_headers(id, Metadata::new().with("h", "1").unwrap())
        .unwrap();
    p.server.send(id, b("resp")).unwrap();
    assert_eq!(
        p.server.send_headers(id, Metadata::new()),
        Err(UserError::HeadersAlreadySent)
    );
    p.server
        .finish(id, Status::ok(), Metadata::new().with("t", "2").unwrap())
        .unwrap();
    p.run();

    let ev = p.take_client();
    assert!(
        matches!(&ev[0], Event::Headers { metadata, .. } if metadata.get_str("h") == Some("1"))
    );
    assert_eq!(messages(&ev, id), vec![b("resp")]);
    match ev.last().unwrap() {
        Event::CallEnded {
            status, trailers, ..
        } => {
            assert!(status.is_ok());
            assert_eq!(trailers.get_str("t"), Some("2"));
        }
        other => panic!("expected CallEnded, got {other:?}"),
    }
    assert_eq!(ended(&p.server_events, id).len(), 1);
    assert_eq!(p.client.live_calls(), 0);
    assert_eq!(p.server.live_calls(), 0);
}

#[test]
fn client_streaming_and_bidi_with_half_close() {
    let mut p = Pair::new();
    let cs = p.open("s/Import", CallKind::ClientStreaming);
    let bi = p.open("s/Chat", CallKind::Bidi);
    for i in 0..5u8 {
        p.client.send(cs, Bytes::from(vec![i])).unwrap();
        p.client.send(bi, Bytes::from(vec![i + 10])).unwrap();
    }
    p.client.close_send(cs).unwrap();
    assert_eq!(p.client.close_send(cs), Err(UserError::SendClosed));
    assert_eq!(p.client.send(cs, b("late")), Err(UserError::SendClosed));
    p.run();
    let got: Vec<u8> = messages(&p.server_events, cs)
        .iter()
        .map(|m| m[0])
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(p.server_events.contains(&Event::RecvClosed { id: cs }));
    assert!(!p.server_events.contains(&Event::RecvClosed { id: bi }));

    // Bidi: the server answers while the client still streams.
    p.server.send(bi, b("pong")).unwrap();
    p.server.send(bi, b("pong2")).unwrap();
    p.server.send(cs, b("summary")).unwrap();
    assert_eq!(p.server.send(cs, b("second")), Err(UserError::Cardinality));
    p.server.finish(cs, Status::ok(), Metadata::new()).unwrap();
    p.run();
    assert_eq!(messages(&p.client_events, bi), vec![b("pong"), b("pong2")]);
    assert_eq!(ended(&p.client_events, cs), vec![Status::ok()]);

    p.client.close_send(bi).unwrap();
    p.run();
    assert!(p.server_events.contains(&Event::RecvClosed { id: bi }));
    p.server
        .finish(bi, Status::new(Code::Aborted, "bye"), Metadata::new())
        .unwrap();
    p.run();
    assert_eq!(
        ended(&p.client_events, bi),
        vec![Status::new(Code::Aborted, "bye")]
    );
    assert_eq!((p.client.live_calls(), p.server.live_calls()), (0, 0));
}

#[test]
fn credit_blocks_the_sender_until_the_reader_consumes() {
    let cfg = Config {
        initial_credit: 4,
        stream_window_bytes: 0,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), cfg);
    let id = p.open("s/Upload", CallKind::ClientStreaming);
    for _ in 0..4 {
        p.client.send(id, b("x")).unwrap();
    }
    assert_eq!(p.client.send(id, b("x")), Err(UserError::Blocked));
    p.run();
    let got = messages(&p.take_server(), id);
    assert_eq!(got.len(), 4);
    // Nothing consumed yet: still blocked after the round trip.
    assert_eq!(p.client.send(id, b("x")), Err(UserError::Blocked));
    // Consuming half the window grants credit back in one CREDIT frame.
    p.server.consume(id, 1);
    p.run();
    assert!(!p.client_events.contains(&Event::Writable { id }));
    p.server.consume(id, 1);
    p.run();
    assert!(p.take_client().contains(&Event::Writable { id }));
    p.client.send(id, b("x")).unwrap();
    p.client.send(id, b("x")).unwrap();
    assert_eq!(p.client.send(id, b("x")), Err(UserError::Blocked));
}

#[test]
fn a_peer_exceeding_credit_is_a_connection_error() {
    let now = Instant::now();
    let mut server = Connection::new(
        Side::Server,
        Mode::V1,
        Config {
            initial_credit: 1,
            ..Config::default()
        },
        now,
    );
    let open = Frame::Open(Open {
        stream: StreamId(1),
        kind: CallKind::Bidi,
        timeout_ms: 0,
        initial_credit: 8,
        method: Method::new("m").unwrap(),
        metadata: Metadata::new(),
    });
    let msg = Frame::Message {
        stream: StreamId(1),
        end_stream: false,
        more: false,
        cursor: None,
        payload: b("x"),
    };
    server
        .handle_message(now, Incoming::Binary(open.to_bytes()))
        .unwrap();
    server
        .handle_message(now, Incoming::Binary(msg.to_bytes()))
        .unwrap();
    let err = server
        .handle_message(now, Incoming::Binary(msg.to_bytes()))
        .unwrap_err();
    assert_eq!(
        err,
        ConnectionError::Protocol("message beyond the granted credit")
    );
    assert_eq!(err.close_code(), 1002);
    let mut last = None;
    while let Some(t) = server.poll_transmit() {
        last = Some(t);
    }
    assert!(matches!(last, Some(Transmit::Close { code: 1002, .. })));
    assert!(server.is_closed());
}

#[test]
fn large_messages_are_fragmented_and_interleave_with_small_ones() {
    let mut p = Pair::new();
    let big = p.open("s/Big", CallKind::ClientStreaming);
    let small = p.open("s/Small", CallKind::Bidi);
    let payload: Bytes = (0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
    p.client.send(big, payload.clone()).unwrap();
    p.client.send(small, b("tiny")).unwrap();

    // Deliver by hand to observe the order of frames on the wire.
    let mut order = vec![];
    while let Some(Transmit::Binary(f)) = p.client.poll_transmit() {
        if let Ok(Frame::Message {
            stream,
            more,
            payload,
            ..
        }) = Frame::decode(f.clone())
        {
            assert!(payload.len() <= DEFAULT_MAX_FRAGMENT_SIZE as usize);
            order.push((stream, more));
        }
        p.server.handle_message(p.now, Incoming::Binary(f)).unwrap();
    }
    // 300,000 bytes in 64 KiB fragments: 5 frames; the small message goes second.
    assert_eq!(order.len(), 6);
    assert_eq!(order[1], (small, false));
    assert_eq!(order.iter().filter(|(s, _)| *s == big).count(), 5);
    p.collect();
    assert_eq!(messages(&p.server_events, big), vec![payload]);
    assert_eq!(messages(&p.server_events, small), vec![b("tiny")]);
}

#[test]
fn oversized_message_ends_only_its_call() {
    let server_cfg = Config {
        max_message_size: 100_000,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server_cfg);
    let a = p.open("s/A", CallKind::Bidi);
    let b2 = p.open("s/B", CallKind::Bidi);
    // The client knows the limit from SETTINGS and refuses locally...
    assert_eq!(
        p.client.send(a, Bytes::from(vec![0u8; 100_001])),
        Err(UserError::MessageTooLarge {
            len: 100_001,
            limit: 100_000
        })
    );
    // ...and a peer that ignores it gets RESOURCE_EXHAUSTED on that call only.
    let mut raw = Connection::new(Side::Client, Mode::V1, Config::default(), p.now);
    let mut server = Connection::new(
        Side::Server,
        Mode::V1,
        Config {
            max_message_size: 100_000,
            ..Config::default()
        },
        p.now,
    );
    let sid = raw
        .open_call(p.now, "s/A", CallKind::Bidi, OpenOptions::default())
        .unwrap();
    let other = raw
        .open_call(p.now, "s/B", CallKind::Bidi, OpenOptions::default())
        .unwrap();
    raw.send(sid, Bytes::from(vec![0u8; 150_000])).unwrap();
    raw.send(other, b("fine")).unwrap();
    let mut closes = vec![];
    deliver(&mut raw, &mut server, p.now, &mut closes);
    let mut ev = vec![];
    while let Some(e) = server.poll_event() {
        ev.push(e);
    }
    let st = ended(&ev, sid);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].code(), Code::ResourceExhausted);
    assert_eq!(messages(&ev, other), vec![b("fine")]);
    assert!(server.has_call(other));
    assert!(!server.has_call(sid));
    assert_eq!(server.buffered_bytes(), 4);
    deliver(&mut server, &mut raw, p.now, &mut closes);
    let mut cev = vec![];
    while let Some(e) = raw.poll_event() {
        cev.push(e);
    }
    assert_eq!(ended(&cev, sid)[0].code(), Code::ResourceExhausted);
    let _ = b2;
}

#[test]
fn caller_cancel_reaches_the_responder_and_frees_state() {
    let mut p = Pair::new();
    let id = p.open("s/Watch", CallKind::ServerStreaming);
    p.client.send(id, b("q")).unwrap();
    p.run();
    p.server.send(id, b("1")).unwrap();
    p.client.cancel(id).unwrap();
    p.run();
    assert_eq!(
        ended(&p.client_events, id),
        vec![Status::new(Code::Cancelled, "cancelled by the caller")]
    );
    let st = ended(&p.server_events, id);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].code(), Code::Cancelled);
    assert_eq!((p.client.live_calls(), p.server.live_calls()), (0, 0));
    assert_eq!(p.server.send(id, b("2")), Err(UserError::UnknownCall));
    assert_eq!(p.client.cancel(id), Err(UserError::UnknownCall));
}

#[test]
fn responder_cancel_ends_the_call_with_cancelled() {
    let mut p = Pair::new();
    let id = p.open("s/Chat", CallKind::Bidi);
    p.run();
    p.server.cancel(id).unwrap();
    p.run();
    assert_eq!(ended(&p.client_events, id)[0].code(), Code::Cancelled);
    assert_eq!(ended(&p.server_events, id)[0].code(), Code::Cancelled);
    assert_eq!((p.client.live_calls(), p.server.live_calls()), (0, 0));
}

#[test]
fn deadline_expiry_ends_the_call_on_both_sides() {
    let mut p = Pair::new();
    let id = p
        .client
        .open_call(
            p.now,
            "s/Slow",
            CallKind::Unary,
            OpenOptions {
                timeout: Some(Duration::from_millis(250)),
                metadata: Metadata::new(),
            },
        )
        .unwrap();
    p.client.send(id, b("x")).unwrap();
    p.client.close_send(id).unwrap();
    p.run();
    let call = &opened(&p.server_events)[0];
    assert_eq!(call.deadline, Some(p.now + Duration::from_millis(250)));
    assert_eq!(
        p.client.poll_timeout(),
        Some(p.now + Duration::from_millis(250))
    );
    p.advance(Duration::from_millis(249));
    assert!(ended(&p.client_events, id).is_empty());
    // Only the server's clock passes the deadline: it ends the call and tells the client.
    p.now += Duration::from_millis(1);
    p.server.handle_timeout(p.now);
    p.run();
    assert_eq!(
        ended(&p.server_events, id)[0].code(),
        Code::DeadlineExceeded
    );
    assert_eq!(
        ended(&p.client_events, id)[0].code(),
        Code::DeadlineExceeded
    );
    // The client's own timer fires later and finds nothing to do: exactly one end.
    p.advance(Duration::from_millis(10));
    assert_eq!(ended(&p.client_events, id).len(), 1);
    assert_eq!((p.client.live_calls(), p.server.live_calls()), (0, 0));
    // What is left is the idle release (the clock starts at the next
    // timer), then nothing.
    p.advance(Duration::ZERO);
    p.advance(Duration::from_secs(1));
    assert!(p.client.released());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn caller_deadline_resets_the_responder() {
    let mut p = Pair::new();
    let id = p
        .client
        .open_call(
            p.now,
            "s/Slow",
            CallKind::Bidi,
            OpenOptions {
                timeout: Some(Duration::from_millis(5)),
                metadata: Metadata::new(),
            },
        )
        .unwrap();
    p.run();
    p.now += Duration::from_millis(5);
    p.client.handle_timeout(p.now);
    p.run();
    assert_eq!(
        ended(&p.client_events, id)[0].code(),
        Code::DeadlineExceeded
    );
    assert_eq!(
        ended(&p.server_events, id)[0].code(),
        Code::DeadlineExceeded
    );
    assert_eq!(p.server.live_calls(), 0);
}

#[test]
fn go_away_refuses_unprocessed_calls_and_drains_the_rest() {
    let mut p = Pair::new();
    let a = p.open("s/A", CallKind::Bidi);
    p.run();
    p.server.go_away();
    // Opened before the GOAWAY arrives: above the last processed id.
    let late = p.open("s/Late", CallKind::Bidi);
    p.run();
    assert!(
        p.client_events
            .contains(&Event::GoAway { last_stream_id: a })
    );
    let st = ended(&p.client_events, late);
    assert_eq!(st[0].code(), Code::Unavailable);
    assert!(st[0].message().contains("safe to retry"));
    assert_eq!(opened(&p.server_events).len(), 1);
    assert_eq!(
        p.client
            .open_call(p.now, "s/New", CallKind::Unary, OpenOptions::default()),
        Err(UserError::Draining)
    );
    // The in-flight call still completes, then both sides close normally.
    p.server.send(a, b("last")).unwrap();
    p.server.finish(a, Status::ok(), Metadata::new()).unwrap();
    p.run();
    assert_eq!(messages(&p.client_events, a), vec![b("last")]);
    assert_eq!(ended(&p.client_events, a), vec![Status::ok()]);
    assert_eq!(closed(&p.client_events), vec![None]);
    assert_eq!(closed(&p.server_events), vec![None]);
    assert!(
        p.server_closes
            .iter()
            .chain(&p.client_closes)
            .all(|(c, _)| *c == 1000)
    );
    assert!(p.client.is_closed() && p.server.is_closed());
}

#[test]
fn concurrent_stream_limit_is_respected_and_signalled() {
    let server_cfg = Config {
        max_concurrent_streams: 2,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server_cfg);
    let a = p.open("s/A", CallKind::Bidi);
    let _b = p.open("s/B", CallKind::Bidi);
    assert_eq!(
        p.client
            .open_call(p.now, "s/C", CallKind::Bidi, OpenOptions::default()),
        Err(UserError::StreamLimit)
    );
    p.run();
    p.client.cancel(a).unwrap();
    p.run();
    assert!(p.client_events.contains(&Event::CanOpen));
    p.open("s/C", CallKind::Bidi);
    p.run();
    assert_eq!(opened(&p.server_events).len(), 3);
    assert_eq!(p.server.live_calls(), 2);
}

#[test]
fn a_peer_over_the_stream_limit_gets_resource_exhausted() {
    let now = Instant::now();
    let mut server = Connection::new(
        Side::Server,
        Mode::V1,
        Config {
            max_concurrent_streams: 1,
            ..Config::default()
        },
        now,
    );
    // A client that never saw the server's SETTINGS opens two calls.
    let mut client = Connection::client(now);
    let a = client
        .open_call(now, "m", CallKind::Bidi, OpenOptions::default())
        .unwrap();
    let b2 = client
        .open_call(now, "m", CallKind::Bidi, OpenOptions::default())
        .unwrap();
    let mut closes = vec![];
    deliver(&mut client, &mut server, now, &mut closes);
    deliver(&mut server, &mut client, now, &mut closes);
    let mut ev = vec![];
    while let Some(e) = client.poll_event() {
        ev.push(e);
    }
    assert!(ended(&ev, a).is_empty());
    assert_eq!(ended(&ev, b2)[0].code(), Code::ResourceExhausted);
    assert_eq!(server.live_calls(), 1);
}

#[test]
fn server_initiated_calls_use_even_ids() {
    let mut p = Pair::new();
    let id = p
        .server
        .open_call(
            p.now,
            "client.Notify/Push",
            CallKind::Unary,
            OpenOptions::default(),
        )
        .unwrap();
    assert_eq!(id, StreamId(2));
    p.server.send(id, b("ping")).unwrap();
    p.server.close_send(id).unwrap();
    p.run();
    let calls = opened(&p.client_events);
    assert_eq!(calls[0].id, id);
    p.client.send(id, b("pong")).unwrap();
    p.client.finish(id, Status::ok(), Metadata::new()).unwrap();
    p.run();
    assert_eq!(messages(&p.server_events, id), vec![b("pong")]);
    assert_eq!(ended(&p.server_events, id), vec![Status::ok()]);
}

#[test]
fn transport_loss_fails_every_call_with_unavailable() {
    let mut p = Pair::new();
    let a = p.open("s/A", CallKind::Bidi);
    let c = p.open("s/C", CallKind::ServerStreaming);
    p.run();
    p.client.handle_close(None, "");
    p.collect();
    for id in [a, c] {
        assert_eq!(ended(&p.client_events, id)[0].code(), Code::Unavailable);
    }
    assert_eq!(
        closed(&p.client_events),
        vec![Some(ConnectionError::Closed {
            code: None,
            reason: String::new()
        })]
    );
    assert_eq!(p.client.live_calls(), 0);
    assert!(p.client.poll_transmit().is_none());
    assert_eq!(
        p.client
            .open_call(p.now, "s/B", CallKind::Unary, OpenOptions::default()),
        Err(UserError::ConnectionClosed)
    );
}

fn feed_raw(bytes: &[u8]) -> (ConnectionError, u16) {
    let now = Instant::now();
    let mut s = Connection::server(now);
    let err = s
        .handle_message(now, Incoming::Binary(Bytes::copy_from_slice(bytes)))
        .unwrap_err();
    let mut close = None;
    while let Some(t) = s.poll_transmit() {
        if let Transmit::Close { code, .. } = t {
            close = Some(code);
        }
    }
    (err, close.expect("a close"))
}

#[test]
fn bad_input_gets_the_documented_close_codes() {
    assert_eq!(
        feed_raw(b"\x01"),
        (ConnectionError::Malformed(FrameError::Empty), 1002)
    );
    assert_eq!(
        feed_raw(b"\x42\x00\x00\x00\x00\x01"),
        (
            ConnectionError::Malformed(FrameError::UnknownType(0x42)),
            1002
        )
    );
    let (e, c) = feed_raw(b"\x03\x00\x00\x00\x00\x07abc");
    assert_eq!(
        (e, c),
        (
            ConnectionError::Protocol("frame for a stream that was never opened"),
            1002
        )
    );
    let (e, c) = feed_raw(
        &Frame::Credit {
            stream: StreamId(2),
            credit: 1,
        }
        .to_bytes(),
    );
    assert_eq!(
        (e, c),
        (
            ConnectionError::Protocol("frame for a stream that was never opened"),
            1002
        )
    );

    let now = Instant::now();
    let mut s = Connection::server(now);
    assert_eq!(
        s.handle_message(now, Incoming::Text(b("hello"))),
        Err(ConnectionError::TextMessage)
    );
    let mut s = Connection::server(now);
    let huge = vec![3u8; s.config().max_websocket_message() + 1];
    assert!(matches!(
        s.handle_message(now, Incoming::Binary(huge.into())),
        Err(ConnectionError::TooLarge { .. })
    ));
    // SETTINGS is only allowed first.
    let mut s = Connection::server(now);
    let ping = Frame::Ping {
        ack: false,
        data: [0; 8],
    }
    .to_bytes();
    s.handle_message(now, Incoming::Binary(ping)).unwrap();
    assert_eq!(
        s.handle_message(
            now,
            Incoming::Binary(Frame::Settings(Settings::default()).to_bytes())
        ),
        Err(ConnectionError::Protocol("SETTINGS after the first frame"))
    );
}

#[test]
fn a_connection_error_fails_calls_and_sends_goaway_then_close() {
    let mut p = Pair::new();
    let id = p.open("s/A", CallKind::Bidi);
    p.run();
    let _ = p.server.handle_message(
        p.now,
        Incoming::Binary(Bytes::from_static(b"\x99\x00\x00\x00\x00\x01")),
    );
    p.run();
    assert_eq!(ended(&p.server_events, id)[0].code(), Code::Unavailable);
    let st = ended(&p.client_events, id);
    assert_eq!(st[0].code(), Code::Unavailable);
    assert!(st[0].message().contains("1002"), "{}", st[0]);
    assert!(matches!(
        closed(&p.client_events)[0],
        Some(ConnectionError::PeerError { code: 1002, .. })
    ));
    assert_eq!(p.server_closes[0].0, 1002);
}

#[test]
fn keepalive_pings_and_times_out() {
    let cfg = Config {
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut p = Pair::with(cfg.clone(), Config::default());
    assert_eq!(
        p.client.poll_timeout(),
        Some(p.now + Duration::from_secs(10))
    );
    // An answered ping keeps the connection.
    p.advance(Duration::from_secs(10));
    p.advance(Duration::from_secs(6));
    assert!(closed(&p.client_events).is_empty());
    // An unanswered one closes it with 4000.
    let now = p.now;
    let mut lonely = Connection::new(Side::Client, Mode::V1, cfg, now);
    while lonely.poll_transmit().is_some() {}
    lonely.handle_timeout(now + Duration::from_secs(10));
    let ping = lonely.poll_transmit().unwrap();
    assert!(
        matches!(&ping, Transmit::Binary(f) if matches!(Frame::decode(f.clone()), Ok(Frame::Ping { ack: false, .. })))
    );
    lonely.handle_timeout(now + Duration::from_secs(15));
    let mut ev = vec![];
    while let Some(e) = lonely.poll_event() {
        ev.push(e);
    }
    assert_eq!(closed(&ev), vec![Some(ConnectionError::KeepaliveTimeout)]);
    let mut codes = vec![];
    while let Some(t) = lonely.poll_transmit() {
        if let Transmit::Close { code, .. } = t {
            codes.push(code);
        }
    }
    assert_eq!(codes, vec![4000]);
}

#[test]
fn the_connection_buffer_bound_sheds_the_slowest_call() {
    let server_cfg = Config {
        max_connection_buffer: 200_000,
        initial_credit: 64,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server_cfg);
    let slow = p.open("s/Slow", CallKind::ClientStreaming);
    let fast = p.open("s/Fast", CallKind::ClientStreaming);
    for _ in 0..3 {
        p.client.send(slow, Bytes::from(vec![1u8; 65_000])).unwrap();
    }
    p.run();
    let mut fast_seen = 0;
    for _ in 0..5 {
        // Two in flight at once push the connection over its bound.
        p.client.send(fast, Bytes::from(vec![2u8; 10_000])).unwrap();
        p.client.send(fast, Bytes::from(vec![2u8; 10_000])).unwrap();
        p.run();
        // The fast reader consumes every message it gets.
        for m in messages(&p.take_server(), fast) {
            p.server.consume(fast, m.len());
            fast_seen += 1;
        }
    }
    assert_eq!(fast_seen, 10);
    let st = ended(&p.client_events, slow);
    assert_eq!(st[0].code(), Code::ResourceExhausted);
    assert!(p.server.buffered_bytes() <= 200_000);
    assert!(p.server.has_call(fast));
}

#[test]
fn peer_settings_shape_what_we_send() {
    let server_cfg = Config {
        max_fragment_size: 1024,
        max_batch_size: 0, // one frame per message, so each can be measured
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server_cfg);
    let id = p.open("s/Up", CallKind::ClientStreaming);
    p.client.send(id, Bytes::from(vec![9u8; 4096])).unwrap();
    let mut frames = 0;
    while let Some(Transmit::Binary(f)) = p.client.poll_transmit() {
        assert!(f.len() <= 1024 + 6);
        frames += 1;
        p.server.handle_message(p.now, Incoming::Binary(f)).unwrap();
    }
    assert_eq!(frames, 1 + 4); // OPEN + 4 fragments
    p.collect();
    assert_eq!(
        messages(&p.server_events, id),
        vec![Bytes::from(vec![9u8; 4096])]
    );
}

#[test]
fn local_close_ends_calls_and_closes_with_the_given_code() {
    let mut p = Pair::new();
    let id = p.open("s/A", CallKind::Bidi);
    p.run();
    p.server.close(1001, "shutting down");
    p.run();
    assert_eq!(ended(&p.server_events, id)[0].code(), Code::Unavailable);
    assert_eq!(ended(&p.client_events, id)[0].code(), Code::Unavailable);
    assert_eq!(
        p.server_closes,
        vec![(
            1001,
            "connection closed locally (1001) shutting down".to_string()
        )]
    );
}

#[test]
fn small_messages_grow_the_receive_window_within_the_byte_budget() {
    let server_cfg = Config {
        initial_credit: 4,
        stream_window_bytes: 64 * 1024,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server_cfg);
    let tiny = p.open("s/Tiny", CallKind::ClientStreaming);
    let small = p.open("s/Small", CallKind::ClientStreaming);
    let big = p.open("s/Big", CallKind::ClientStreaming);
    p.client.send(tiny, Bytes::from(vec![1u8; 2])).unwrap();
    p.client.send(small, Bytes::from(vec![1u8; 64])).unwrap();
    p.client
        .send(big, Bytes::from(vec![2u8; 32 * 1024]))
        .unwrap();
    p.run();
    for (id, m) in [(tiny, 2), (small, 64), (big, 32 * 1024)] {
        p.server.consume(id, m);
    }
    p.run();
    // 64 KiB / 2 B = 32,768 > the cap; 64 KiB / 64 B = 1,024 messages (the
    // byte budget); 64 KiB / 32 KiB = 2 < 4: unchanged.
    assert_eq!(p.server.recv_window(tiny), Some(MAX_AUTO_WINDOW));
    assert_eq!(p.server.recv_window(small), Some(1024));
    assert_eq!(p.server.recv_window(big), Some(4));
    // The client may now have that many small messages in flight without blocking.
    for (id, len, window) in [(tiny, 2, MAX_AUTO_WINDOW as usize), (small, 64, 1024)] {
        let mut sent = 0;
        while p.client.send(id, Bytes::from(vec![1u8; len])).is_ok() {
            sent += 1;
            assert!(sent <= 40_000, "credit never ran out");
        }
        assert_eq!(sent, window);
    }
}

/// The messages written until the connection has nothing more.
fn drain_transmits(c: &mut Connection) -> Vec<Bytes> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match c.poll_transmit() {
            Some(Transmit::Binary(b)) => out.push(b),
            Some(other) => panic!("unexpected {other:?}"),
            None => return out,
        }
    }
    panic!("transmit did not end");
}

#[test]
fn small_frames_ready_together_go_out_in_one_batch() {
    let mut p = Pair::new();
    let id = p.open("s/Down", CallKind::ServerStreaming);
    p.client.send(id, Bytes::from_static(b"go")).unwrap();
    p.client.close_send(id).unwrap();
    p.run();
    // The initial credit (16) bounds what the server may queue.
    let mut sent = 0u8;
    while p.server.send(id, Bytes::from(vec![sent; 64])).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 16);
    let msgs = drain_transmits(&mut p.server);
    // All of them in one BATCH no larger than the client's advertised size.
    assert_eq!(msgs.len(), 1, "{} messages", msgs.len());
    assert_eq!(msgs[0][0], zrpc_core::frame::kind::BATCH);
    assert!(msgs[0].len() <= 6 + zrpc_core::DEFAULT_MAX_BATCH_SIZE as usize);
    let inner: Vec<_> = zrpc_core::frame::split_batch(msgs[0].clone())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(inner.len(), 16);
    for m in msgs {
        p.client.handle_message(p.now, Incoming::Binary(m)).unwrap();
    }
    p.collect();
    let got = messages(&p.client_events, id);
    assert_eq!(got.len(), 16);
    assert!(got.iter().enumerate().all(|(i, m)| m[..] == [i as u8; 64]));
    // The client consumes; the credit it returns lets the rest through.
    for m in messages(&p.take_client(), id) {
        p.client.consume(id, m.len());
    }
    p.run();
    for i in 16..40u8 {
        p.server.send(id, Bytes::from(vec![i; 64])).unwrap();
    }
    p.server.finish(id, Status::ok(), Metadata::new()).unwrap();
    p.run();
    let got = messages(&p.client_events, id);
    assert_eq!(got.len(), 24);
    assert!(got.iter().zip(16u8..).all(|(m, i)| m[..] == [i; 64]));
    assert!(ended(&p.client_events, id)[0].is_ok());
}

#[test]
fn no_batch_reaches_a_peer_that_did_not_offer_one() {
    let no_batch = Config {
        max_batch_size: 0,
        ..Config::default()
    };
    let mut p = Pair::with(no_batch, Config::default());
    let id = p.open("s/Down", CallKind::ServerStreaming);
    p.client.send(id, Bytes::from_static(b"go")).unwrap();
    p.client.close_send(id).unwrap();
    p.run();
    for _ in 0..10 {
        p.server.send(id, Bytes::from_static(b"m")).unwrap();
    }
    let msgs = drain_transmits(&mut p.server);
    assert_eq!(msgs.len(), 10);
    assert!(msgs.iter().all(|m| m[0] == zrpc_core::frame::kind::MESSAGE));
}

#[test]
fn a_batch_the_side_did_not_offer_or_a_bad_batch_is_a_protocol_error() {
    let ping = [8u8, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let batch = |entries: &[&[u8]]| {
        let mut b = vec![0x0a, 0, 0, 0, 0, 0];
        for e in entries {
            b.extend_from_slice(&(e.len() as u16).to_be_bytes());
            b.extend_from_slice(e);
        }
        b
    };
    let feed = |cfg: Config, msg: Vec<u8>| {
        let now = Instant::now();
        let mut c = Connection::new(Side::Server, Mode::V1, cfg, now);
        c.handle_message(now, Incoming::Binary(Bytes::from(msg)))
    };
    let refused = Config {
        max_batch_size: 0,
        ..Config::default()
    };
    let err = feed(refused, batch(&[&ping])).unwrap_err();
    assert_eq!(err.close_code(), 1002, "{err}");
    // Accepted: both PINGs are answered.
    let now = Instant::now();
    let mut c = Connection::new(Side::Server, Mode::V1, Config::default(), now);
    c.handle_message(now, Incoming::Binary(Bytes::from(batch(&[&ping, &ping]))))
        .unwrap();
    let out = drain_transmits(&mut c);
    let pongs = out.iter().filter(|m| m[0] == 8).count()
        + out
            .iter()
            .filter(|m| m[0] == 0x0a)
            .flat_map(|m| zrpc_core::frame::split_batch(m.clone()).unwrap())
            .filter(|f| f.as_ref().unwrap()[0] == 8)
            .count();
    // (No peer SETTINGS arrived, so nothing is packed toward it.)
    assert_eq!(pongs, 2);
    for bad in [
        vec![0x0a, 0, 0, 0, 0, 0],                  // empty
        vec![0x0a, 0, 0, 0, 0, 1, 0, 14],           // stream id not 0
        batch(&[&ping[..4]]),                       // entry shorter than a header
        batch(&[&batch(&[&ping])]),                 // nested
        [batch(&[&ping]), vec![0, 20, 8]].concat(), // truncated entry
    ] {
        let err = feed(Config::default(), bad.clone()).unwrap_err();
        assert_eq!(err.close_code(), 1002, "{bad:?}: {err}");
    }
    let big = vec![0u8; 2 * zrpc_core::DEFAULT_MAX_BATCH_SIZE as usize];
    let err = feed(Config::default(), batch(&[&big])).unwrap_err();
    assert_eq!(err.close_code(), 1009, "{err}");
}

#[test]
fn a_transport_lost_while_draining_reports_closed_exactly_once() {
    // A drain with live calls, then the WebSocket goes away: the calls end
    // and `Closed` comes once (the last call's end must not also complete
    // the drain and report a second time).
    for code in [Some(1000), Some(1006), None] {
        let mut p = Pair::new();
        let a = p.open("demo.Echo/Chat", CallKind::Bidi);
        let b = p.open("demo.Echo/Chat", CallKind::Bidi);
        p.run();
        p.client.go_away();
        p.run();
        assert!(p.client.is_open(), "calls are live: still draining");
        p.take_client();
        p.client.handle_close(code, "gone");
        p.collect();
        let events = p.take_client();
        assert_eq!(closed(&events).len(), 1, "{code:?}: {events:?}");
        assert_eq!(ended(&events, a).len(), 1);
        assert_eq!(ended(&events, b).len(), 1);
        assert!(p.client.is_closed());
        assert_eq!(p.client.live_calls(), 0);
    }
}
