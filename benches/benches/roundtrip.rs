//! Calls through a pair of in-memory state machines (no sockets): one unary
//! round trip (open, request, response, status, both sides), and a
//! 1,000-message server stream.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zrpc_benches::{pair, server_stream, unary_round_trip};

fn unary(c: &mut Criterion) {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    let msg = Bytes::from(vec![1u8; 64]);
    c.bench_function("roundtrip/unary_64B", |b| {
        b.iter(|| black_box(unary_round_trip(&mut client, &mut server, now, &msg)))
    });
    assert_eq!(client.live_calls() + server.live_calls(), 0);
}

fn stream(c: &mut Criterion) {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    let msg = Bytes::from(vec![3u8; 64]);
    let mut g = c.benchmark_group("roundtrip");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("server_stream_1000x64B", |b| {
        b.iter(|| {
            let events = server_stream(&mut client, &mut server, now, 1000, &msg);
            assert_eq!(events, 1001); // 1,000 messages and the end
        })
    });
    g.finish();
}

criterion_group!(benches, unary, stream);
criterion_main!(benches);
