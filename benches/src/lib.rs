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
