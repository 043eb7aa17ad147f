//! Shared helpers for zrpc's benchmarks: a pair of in-memory connections.

use std::time::Instant;

use zrpc_core::{Connection, Incoming, Transmit};

/// Moves every pending WebSocket message from `from` to `to`; returns how many.
pub fn pump(from: &mut Connection, to: &mut Connection, now: Instant) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit() {
        if let Transmit::Binary(b) = t {
            let _ = to.handle_message(now, Incoming::Binary(b));
            n += 1;
        }
    }
    n
}

/// A connected client/server pair with SETTINGS already exchanged.
pub fn pair(now: Instant) -> (Connection, Connection) {
    let mut c = Connection::client(now);
    let mut s = Connection::server(now);
    pump(&mut c, &mut s, now);
    pump(&mut s, &mut c, now);
    (c, s)
}

/// Drains events, consuming every message (so credit flows back); returns
/// how many events there were.
pub fn drain(c: &mut Connection) -> usize {
    let mut n = 0;
    while let Some(ev) = c.poll_event() {
        if let zrpc_core::Event::Message { id, data, .. } = ev {
            c.consume(id, data.len());
        }
        n += 1;
    }
    n
}

/// One unary call through the pair: open, request, response, status.
pub fn unary_round_trip(
    client: &mut Connection,
    server: &mut Connection,
    now: Instant,
    msg: &bytes::Bytes,
) -> usize {
    use zrpc_core::{CallKind, Metadata, OpenOptions, Status};
    let id = client
        .open_call(
            now,
            "bench.Echo/Unary",
            CallKind::Unary,
            OpenOptions::default(),
        )
        .expect("open");
    client.send(id, msg.clone()).expect("send");
    client.close_send(id).expect("close_send");
    pump(client, server, now);
    let mut events = drain(server);
    server.send(id, msg.clone()).expect("respond");
    server
        .finish(id, Status::ok(), Metadata::new())
        .expect("finish");
    pump(server, client, now);
    events += drain(client);
    events
}

/// A server stream of `n` copies of `msg` through the pair, sending as
/// credit allows; returns the client's events (messages and the end).
pub fn server_stream(
    client: &mut Connection,
    server: &mut Connection,
    now: Instant,
    n: usize,
    msg: &bytes::Bytes,
) -> usize {
    use zrpc_core::{CallKind, Metadata, OpenOptions, Status};
    let id = client
        .open_call(
            now,
            "bench.Echo/Stream",
            CallKind::ServerStreaming,
            OpenOptions::default(),
        )
        .expect("open");
    client.send(id, msg.clone()).expect("send");
    client.close_send(id).expect("close_send");
    pump(client, server, now);
    drain(server);
    let (mut sent, mut received) = (0, 0);
    while sent < n {
        while sent < n && server.send(id, msg.clone()).is_ok() {
            sent += 1;
        }
        pump(server, client, now);
        received += drain(client);
        pump(client, server, now);
        drain(server);
    }
    server
        .finish(id, Status::ok(), Metadata::new())
        .expect("finish");
    pump(server, client, now);
    received + drain(client)
}
