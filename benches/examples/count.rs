//! Fixed work for instruction counting (deterministic under
//! `valgrind --tool=callgrind`, unlike wall-clock time on a shared machine):
//! 10,000 unary round trips, then a 10,000-message server stream, through a
//! pair of in-memory connections.
//!
//! ```text
//! cargo build --release -p zrpc-benches --example count
//! valgrind --tool=callgrind target/release/examples/count unary
//! ```

use std::time::Instant;

use bytes::Bytes;
use zrpc_benches::{pair, pump};
use zrpc_core::{CallKind, CallOptions, Connection, Event, Metadata, Status};

fn drain(c: &mut Connection) -> usize {
    let mut n = 0;
    while let Some(ev) = c.poll_event() {
        if let Event::Message { id, data } = ev {
            c.consume(id, data.len());
        }
        n += 1;
    }
    n
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "unary".into());
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    let msg = Bytes::from(vec![1u8; 64]);
    let mut events = 0;
    match what.as_str() {
        "unary" => {
            for _ in 0..10_000 {
                let id = client
                    .open_call(
                        now,
                        "bench.Echo/Unary",
                        CallKind::Unary,
                        CallOptions::default(),
                    )
                    .unwrap();
                client.send(id, msg.clone()).unwrap();
                client.close_send(id).unwrap();
                pump(&mut client, &mut server, now);
                events += drain(&mut server);
                server.send(id, msg.clone()).unwrap();
                server.finish(id, Status::ok(), Metadata::new()).unwrap();
                pump(&mut server, &mut client, now);
                events += drain(&mut client);
            }
        }
        _ => {
            let id = client
                .open_call(
                    now,
                    "bench.Echo/Stream",
                    CallKind::ServerStreaming,
                    CallOptions::default(),
                )
                .unwrap();
            client.send(id, msg.clone()).unwrap();
            client.close_send(id).unwrap();
            pump(&mut client, &mut server, now);
            drain(&mut server);
            let mut sent = 0;
            while sent < 10_000 {
                while sent < 10_000 && server.send(id, msg.clone()).is_ok() {
                    sent += 1;
                }
                pump(&mut server, &mut client, now);
                events += drain(&mut client);
                pump(&mut client, &mut server, now);
                drain(&mut server);
            }
        }
    }
    println!("{what}: {events} events");
}
