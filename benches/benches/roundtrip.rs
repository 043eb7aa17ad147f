//! Calls through a pair of in-memory state machines (no sockets): one unary
//! round trip (open, request, response, status, both sides), and a
//! 1,000-message server stream.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

fn unary(c: &mut Criterion) {
    let now = Instant::now();
    let (mut client, mut server) = pair(now);
    let req = Bytes::from(vec![1u8; 64]);
    let resp = Bytes::from(vec![2u8; 64]);
    c.bench_function("roundtrip/unary_64B", |b| {
        b.iter(|| {
            let id = client
                .open_call(
                    now,
                    "bench.Echo/Unary",
                    CallKind::Unary,
                    CallOptions::default(),
                )
                .unwrap();
            client.send(id, req.clone()).unwrap();
            client.close_send(id).unwrap();
            pump(&mut client, &mut server, now);
            drain(&mut server);
            server.send(id, resp.clone()).unwrap();
            server.finish(id, Status::ok(), Metadata::new()).unwrap();
            pump(&mut server, &mut client, now);
            black_box(drain(&mut client));
        })
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
            let mut received = 0;
            while sent < 1000 {
                // Send until the client's credit runs out, then let it read.
                while sent < 1000 && server.send(id, msg.clone()).is_ok() {
                    sent += 1;
                }
                pump(&mut server, &mut client, now);
                received += drain(&mut client);
                pump(&mut client, &mut server, now);
                drain(&mut server);
            }
            server.finish(id, Status::ok(), Metadata::new()).unwrap();
            pump(&mut server, &mut client, now);
            received += drain(&mut client);
            assert_eq!(received, 1001); // 1,000 messages and the end
        })
    });
    g.finish();
}

criterion_group!(benches, unary, stream);
criterion_main!(benches);
