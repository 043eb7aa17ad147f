//! Legacy mode: the seed's format, both sides.

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::*;
use zrpc_core::*;

fn legacy(side: Side, cfg: Config) -> (Connection, Instant) {
    let now = Instant::now();
    (Connection::new(side, Mode::Legacy, cfg, now), now)
}

fn drain(c: &mut Connection) -> (Vec<Event>, Vec<Transmit>) {
    let (mut ev, mut tx) = (vec![], vec![]);
    // Both queues until quiet, as an adapter's driver loop does.
    for _ in 0..1000 {
        let before = ev.len() + tx.len();
        while let Some(e) = c.poll_event() {
            ev.push(e);
        }
        while let Some(t) = c.poll_transmit() {
            tx.push(t);
        }
        if ev.len() + tx.len() == before {
            break;
        }
    }
    (ev, tx)
}

#[test]
fn seed_request_becomes_a_server_streaming_call() {
    let (mut s, now) = legacy(Side::Server, Config::default());
    s.handle_message(
        now,
        Incoming::Binary(Bytes::from_static(b"\x04\x00\x00\x00echoworld")),
    )
    .unwrap();
    let (ev, tx) = drain(&mut s);
    assert!(tx.is_empty(), "legacy sends no SETTINGS");
    let id = StreamId(1);
    let call = &opened(&ev)[0];
    assert_eq!(
        (call.method.as_str(), call.kind),
        ("echo", CallKind::ServerStreaming)
    );
    assert_eq!(messages(&ev, id), vec![b("world")]);
    assert!(ev.contains(&Event::RecvClosed { id }));

    for _ in 0..10 {
        s.send(id, b("world")).unwrap();
    }
    s.finish(id, Status::ok(), Metadata::new()).unwrap();
    let (ev, tx) = drain(&mut s);
    assert_eq!(ended(&ev, id), vec![Status::ok()]);
    assert_eq!(closed(&ev), vec![None]);
    assert_eq!(tx.len(), 11);
    assert!(tx[..10].iter().all(|t| *t == Transmit::Binary(b("world"))));
    assert_eq!(
        tx[10],
        Transmit::Close {
            code: 1000,
            reason: String::new()
        }
    );
    assert!(s.is_closed());
}

#[test]
fn close_text_variant_and_error_status() {
    let cfg = Config {
        legacy_close_text: true,
        ..Config::default()
    };
    let (mut s, now) = legacy(Side::Server, cfg);
    s.handle_message(
        now,
        Incoming::Binary(legacy::encode_request("dispatch.create_person", b"")),
    )
    .unwrap();
    let (ev, _) = drain(&mut s);
    assert_eq!(opened(&ev)[0].method.as_str(), "dispatch.create_person");
    assert_eq!(messages(&ev, StreamId(1)), vec![Bytes::new()]);
    s.finish(StreamId(1), Status::ok(), Metadata::new())
        .unwrap();
    let (_, tx) = drain(&mut s);
    assert_eq!(
        tx,
        vec![
            Transmit::Text(b("CLOSE")),
            Transmit::Close {
                code: 1000,
                reason: String::new()
            }
        ]
    );

    let (mut s, now) = legacy(Side::Server, Config::default());
    s.handle_message(now, Incoming::Binary(legacy::encode_request("echo", b"x")))
        .unwrap();
    s.finish(
        StreamId(1),
        Status::new(Code::NotFound, "no such method"),
        Metadata::new(),
    )
    .unwrap();
    let (_, tx) = drain(&mut s);
    assert_eq!(
        tx,
        vec![Transmit::Close {
            code: 1011,
            reason: "NOT_FOUND: no such method".into()
        }]
    );
}

#[test]
fn legacy_send_queue_applies_backpressure() {
    let cfg = Config {
        legacy_send_queue: 2,
        ..Config::default()
    };
    let (mut s, now) = legacy(Side::Server, cfg);
    s.handle_message(now, Incoming::Binary(legacy::encode_request("echo", b"x")))
        .unwrap();
    let id = StreamId(1);
    s.send(id, b("1")).unwrap();
    s.send(id, b("2")).unwrap();
    assert_eq!(s.send(id, b("3")), Err(UserError::Blocked));
    assert_eq!(s.poll_transmit(), Some(Transmit::Binary(b("1"))));
    let (ev, _) = drain(&mut s);
    assert!(ev.contains(&Event::Writable { id }));
    s.send(id, b("3")).unwrap();
}

#[test]
fn bad_legacy_requests_close_with_typed_errors() {
    for (bytes, code) in [
        (&b"\x01\x00"[..], 1008),
        (b"\x10\x00\x00\x00abc", 1008),
        (b"\x02\x00\x00\x00\xff\xfe", 1008),
    ] {
        let (mut s, now) = legacy(Side::Server, Config::default());
        let err = s
            .handle_message(now, Incoming::Binary(Bytes::copy_from_slice(bytes)))
            .unwrap_err();
        assert_eq!(err.close_code(), code);
        let (_, tx) = drain(&mut s);
        assert!(matches!(tx.last(), Some(Transmit::Close { code: c, .. }) if *c == code));
    }
    // A text request, and a second request on the same connection.
    let (mut s, now) = legacy(Side::Server, Config::default());
    assert!(matches!(
        s.handle_message(now, Incoming::Text(b("echo"))),
        Err(ConnectionError::Legacy(_))
    ));
    let (mut s, now) = legacy(Side::Server, Config::default());
    s.handle_message(now, Incoming::Binary(legacy::encode_request("echo", b"x")))
        .unwrap();
    let err = s
        .handle_message(now, Incoming::Binary(legacy::encode_request("echo", b"y")))
        .unwrap_err();
    assert_eq!(
        err,
        ConnectionError::Legacy("a legacy connection carries one request")
    );
    let (ev, _) = drain(&mut s);
    assert_eq!(ended(&ev, StreamId(1))[0].code(), Code::Unavailable);
}

#[test]
fn legacy_client_reads_until_close() {
    let (mut c, now) = legacy(Side::Client, Config::default());
    let id = c
        .open_call(
            now,
            "echo",
            CallKind::ServerStreaming,
            OpenOptions::default(),
        )
        .unwrap();
    assert_eq!(
        c.open_call(
            now,
            "echo",
            CallKind::ServerStreaming,
            OpenOptions::default()
        ),
        Err(UserError::LegacyOneCall)
    );
    c.send(id, b("world")).unwrap();
    c.close_send(id).unwrap();
    let (_, tx) = drain(&mut c);
    assert_eq!(
        tx,
        vec![Transmit::Binary(Bytes::from_static(
            b"\x04\x00\x00\x00echoworld"
        ))]
    );
    c.handle_message(now, Incoming::Binary(b("world"))).unwrap();
    c.handle_message(now, Incoming::Text(b("Streaming")))
        .unwrap();
    c.handle_close(Some(1000), "");
    let (ev, _) = drain(&mut c);
    assert_eq!(messages(&ev, id), vec![b("world"), b("Streaming")]);
    assert_eq!(ended(&ev, id), vec![Status::ok()]);
    assert_eq!(closed(&ev), vec![None]);
}

#[test]
fn legacy_client_understands_the_close_text_and_abnormal_closes() {
    let (mut c, now) = legacy(Side::Client, Config::default());
    let id = c
        .open_call(
            now,
            "echo",
            CallKind::ServerStreaming,
            OpenOptions::default(),
        )
        .unwrap();
    c.send(id, b("w")).unwrap();
    c.handle_message(now, Incoming::Text(b("CLOSE"))).unwrap();
    let (ev, tx) = drain(&mut c);
    assert_eq!(ended(&ev, id), vec![Status::ok()]);
    assert_eq!(
        tx.last(),
        Some(&Transmit::Close {
            code: 1000,
            reason: String::new()
        })
    );

    let (mut c, now) = legacy(Side::Client, Config::default());
    let id = c
        .open_call(
            now,
            "echo",
            CallKind::ServerStreaming,
            OpenOptions::default(),
        )
        .unwrap();
    c.send(id, b("w")).unwrap();
    c.handle_close(None, "");
    let (ev, _) = drain(&mut c);
    assert_eq!(ended(&ev, id)[0].code(), Code::Unavailable);
}

#[test]
fn legacy_pair_end_to_end() {
    let now = Instant::now();
    let mut c = Connection::new(Side::Client, Mode::Legacy, Config::default(), now);
    let mut s = Connection::new(Side::Server, Mode::Legacy, Config::default(), now);
    let id = c
        .open_call(
            now,
            "echo",
            CallKind::ServerStreaming,
            OpenOptions::default(),
        )
        .unwrap();
    c.send(id, b("hi")).unwrap();
    let mut closes = vec![];
    deliver(&mut c, &mut s, now, &mut closes);
    while s.poll_event().is_some() {}
    for _ in 0..10 {
        s.send(StreamId(1), b("hi")).unwrap();
        deliver(&mut s, &mut c, now, &mut closes);
    }
    s.finish(StreamId(1), Status::ok(), Metadata::new())
        .unwrap();
    deliver(&mut s, &mut c, now, &mut closes);
    let (ev, _) = drain(&mut c);
    assert_eq!(messages(&ev, id).len(), 10);
    assert_eq!(ended(&ev, id), vec![Status::ok()]);
    assert_eq!(closes, vec![(1000, String::new())]);
}
