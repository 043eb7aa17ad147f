//! Fixed work for instruction counting (deterministic under
//! `valgrind --tool=callgrind`, unlike wall-clock time on a shared machine):
//! 10,000 unary round trips, a 10,000-message server stream, or (`large`)
//! a server stream of 100 messages of 1 MiB (each sent in 64 KiB fragments
//! and reassembled), through a pair of in-memory connections.
//!
//! ```text
//! cargo build --release -p zrpc-benches --example count
//! valgrind --tool=callgrind target/release/examples/count unary
//! ```

use std::time::Instant;

use bytes::Bytes;
use zrpc_benches::{pair, server_stream, unary_round_trip};

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "unary".into());
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    let msg = Bytes::from(vec![1u8; 64]);
    let events: usize = match what.as_str() {
        "unary" => (0..10_000)
            .map(|_| unary_round_trip(&mut client, &mut server, now, &msg))
            .sum(),
        "large" => {
            let big = Bytes::from(vec![1u8; 1 << 20]);
            server_stream(&mut client, &mut server, now, 100, &big)
        }
        _ => server_stream(&mut client, &mut server, now, 10_000, &msg),
    };
    println!("{what}: {events} events");
}
