//! Frame encode and decode, 64 B and 64 KiB MESSAGE payloads.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use zrpc_core::{Frame, StreamId};

fn message(len: usize) -> Frame {
    Frame::Message {
        stream: StreamId(1),
        end_stream: false,
        more: false,
        cursor: None,
        payload: Bytes::from(vec![0xa5; len]),
    }
}

fn codec(c: &mut Criterion) {
    for (name, len) in [("64B", 64usize), ("64KiB", 64 * 1024)] {
        let frame = message(len);
        let wire = frame.to_bytes();
        let mut g = c.benchmark_group(format!("frame/{name}"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function("decode", |b| {
            b.iter_batched(
                || wire.clone(),
                |w| black_box(Frame::decode(w)),
                BatchSize::SmallInput,
            )
        });
        let mut out = BytesMut::with_capacity(wire.len() * 64);
        g.bench_function("encode", |b| {
            b.iter(|| {
                if out.capacity() - out.len() < wire.len() {
                    out.clear();
                }
                black_box(&frame).encode(&mut out);
            })
        });
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
