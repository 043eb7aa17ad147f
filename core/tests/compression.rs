//! COMPRESSED messages (PROTOCOL.md 3.4) between two connections in
//! memory: negotiated per connection, chosen per WebSocket message above a
//! size, sent only when they pay; and what a hostile peer gets for one that
//! was not offered, does not inflate, inflates too far, or nests.

mod common;

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use common::*;
use zrpc_core::frame::{Frame, Settings, kind};
use zrpc_core::*;

fn compressing(min: u32) -> Config {
    Config {
        compress_min_size: min,
        ..Config::default()
    }
}

/// A server stream of `n` small protobuf-like records, through `pair`; the
/// wire bytes from the server, and how many of its messages were COMPRESSED.
fn stream_records(pair: &mut Pair, n: u32) -> (usize, usize, Vec<Bytes>) {
    let id = pair.open("people.People/ListPeople", CallKind::ServerStreaming);
    pair.client.send(id, Bytes::new()).unwrap();
    pair.client.close_send(id).unwrap();
    pair.run();
    let records: Vec<Bytes> = (0..n)
        .map(|i| {
            Bytes::from(format!(
                "\x08{}\x12\x0bPerson {i:04}\x1a\x14person{i}@example.com",
                i % 128
            ))
        })
        .collect();
    let (mut wire, mut compressed) = (0, 0);
    let mut got = Vec::new();
    let mut sent = records.iter().peekable();
    for _ in 0..100_000 {
        // Send as credit allows, deliver by hand to count the bytes, read
        // what arrived (its credit goes back).
        while let Some(r) = sent.peek() {
            match pair.server.send(id, (*r).clone()) {
                Ok(()) => {
                    sent.next();
                }
                Err(UserError::Blocked) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        while let Some(t) = pair.server.poll_transmit() {
            if let Transmit::Binary(b) = t {
                wire += b.len();
                compressed += usize::from(b[0] == kind::COMPRESSED);
                pair.client
                    .handle_message(pair.now, Incoming::Binary(b))
                    .unwrap();
            }
        }
        pair.run();
        for m in messages(&pair.take_client(), id) {
            pair.client.consume(id, m.len());
            got.push(m);
        }
        pair.run();
        if sent.peek().is_none() && got.len() == records.len() {
            break;
        }
    }
    (wire, compressed, got)
}

#[test]
fn a_stream_of_records_crosses_compressed_when_the_sender_asks_and_the_peer_accepts() {
    let raw = stream_records(
        &mut Pair::with(Config::default(), Config::default()),
        10_000,
    );
    let mut pair = Pair::with(Config::default(), compressing(1024));
    let packed = stream_records(&mut pair, 10_000);
    eprintln!(
        "records: {} bytes plain, {} compressed ({} COMPRESSED messages)",
        raw.0, packed.0, packed.1
    );
    assert_eq!(
        packed.2, raw.2,
        "every message arrives, the same and in order"
    );
    assert_eq!(packed.2.len(), 10_000);
    assert_eq!(raw.1, 0, "nothing is compressed by default");
    assert!(packed.1 > 0);
    assert!(
        packed.0 * 100 <= raw.0 * 30,
        "compressed {} bytes of {} ({}%)",
        packed.0,
        raw.0,
        packed.0 * 100 / raw.0
    );
}

#[test]
fn a_peer_that_does_not_accept_gzip_gets_plain_messages() {
    let no_gzip = Config {
        accept_gzip: false,
        ..Config::default()
    };
    let mut pair = Pair::with(no_gzip, compressing(1024));
    let (_, compressed, got) = stream_records(&mut pair, 2_000);
    assert_eq!(compressed, 0);
    assert_eq!(got.len(), 2_000);
}

#[test]
fn incompressible_messages_go_as_they_are() {
    let mut pair = Pair::with(Config::default(), compressing(1024));
    let id = pair.open("t/Noise", CallKind::ServerStreaming);
    pair.client.send(id, Bytes::new()).unwrap();
    pair.client.close_send(id).unwrap();
    pair.run();
    // xorshift noise: gzip cannot shrink it.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..8 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut compressed = 0;
    for _ in 0..8 {
        pair.server.send(id, Bytes::from(noise.clone())).unwrap();
        while let Some(t) = pair.server.poll_transmit() {
            if let Transmit::Binary(b) = t {
                compressed += usize::from(b[0] == kind::COMPRESSED);
                pair.client
                    .handle_message(pair.now, Incoming::Binary(b))
                    .unwrap();
            }
        }
        pair.run();
    }
    assert_eq!(compressed, 0);
    assert_eq!(messages(&pair.take_client(), id).len(), 8);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn compressed_message(content: &[u8]) -> Bytes {
    let mut m = vec![kind::COMPRESSED, 0, 0, 0, 0, 0];
    m.extend(gzip(content));
    m.into()
}

/// A server that received the client's SETTINGS; `accept_gzip` as given.
fn server(accept_gzip: bool) -> (Connection, Instant) {
    let now = Instant::now();
    let cfg = Config {
        accept_gzip,
        ..Config::default()
    };
    let mut s = Connection::new(Side::Server, Mode::V1, cfg, now);
    let settings = Frame::Settings(Settings::default()).to_bytes();
    s.handle_message(now, Incoming::Binary(settings)).unwrap();
    (s, now)
}

fn close_code(s: &mut Connection, now: Instant, msg: Bytes) -> u16 {
    let err = s.handle_message(now, Incoming::Binary(msg)).unwrap_err();
    let code = err.close_code();
    // The close goes out; nothing panics, nothing after it.
    let mut closed = false;
    while let Some(t) = s.poll_transmit() {
        if let Transmit::Close { code: c, .. } = t {
            assert_eq!(c, code);
            closed = true;
        }
    }
    assert!(closed);
    code
}

#[test]
fn a_compressed_ping_is_answered_as_a_ping() {
    let (mut s, now) = server(true);
    while s.poll_transmit().is_some() {}
    let ping = Frame::Ping {
        ack: false,
        data: [7; 8],
    }
    .to_bytes();
    s.handle_message(now, Incoming::Binary(compressed_message(&ping)))
        .unwrap();
    let mut acked = false;
    while let Some(t) = s.poll_transmit() {
        if let Transmit::Binary(b) = t {
            acked |= matches!(
                Frame::decode(b),
                Ok(Frame::Ping {
                    ack: true,
                    data: [7, 7, 7, 7, 7, 7, 7, 7]
                })
            );
        }
    }
    assert!(acked);
}

#[test]
fn hostile_compressed_messages_close_the_connection_with_a_clear_code() {
    let ping = Frame::Ping {
        ack: false,
        data: [7; 8],
    }
    .to_bytes();
    // Not offered: 1002.
    let (mut s, now) = server(false);
    assert_eq!(close_code(&mut s, now, compressed_message(&ping)), 1002);
    // Before the peer's SETTINGS: 1002.
    let now = Instant::now();
    let mut fresh = Connection::new(Side::Server, Mode::V1, Config::default(), now);
    assert_eq!(close_code(&mut fresh, now, compressed_message(&ping)), 1002);
    // Not gzip: 1002.
    let (mut s, now) = server(true);
    let mut junk = vec![kind::COMPRESSED, 0, 0, 0, 0, 0];
    junk.extend_from_slice(b"this is not gzip");
    assert_eq!(close_code(&mut s, now, junk.into()), 1002);
    // A stream id or flags on it: 1002.
    let (mut s, now) = server(true);
    let mut flagged = compressed_message(&ping).to_vec();
    flagged[5] = 1;
    assert_eq!(close_code(&mut s, now, flagged.into()), 1002);
    // Nested: 1002.
    let (mut s, now) = server(true);
    let nested = compressed_message(&compressed_message(&ping));
    assert_eq!(close_code(&mut s, now, nested), 1002);
    // A bomb: 64 MiB of zeros in a small message; inflating stops at the
    // largest message this side accepts, 1009.
    let (mut s, now) = server(true);
    let mut bomb = vec![kind::COMPRESSED, 0, 0, 0, 0, 0];
    bomb.extend(gzip(&vec![0u8; 64 << 20]));
    assert!(bomb.len() < 128 * 1024);
    assert_eq!(close_code(&mut s, now, bomb.into()), 1009);
    // Content just over the limit (a frame that would be refused
    // uncompressed too): 1009.
    let (mut s, now) = server(true);
    let limit = Config::default().max_websocket_message_for(Mode::V1);
    let mut big = ping.to_vec();
    big.resize(limit + 1, 0);
    assert_eq!(close_code(&mut s, now, compressed_message(&big)), 1009);
}
