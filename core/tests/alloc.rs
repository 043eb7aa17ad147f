//! Heap allocations on the hot paths, counted with a global allocator.
//! This file holds a single test so no other test allocates concurrently.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use zrpc_core::*;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; the only
// additions are relaxed counter updates, which cannot affect the memory
// returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(n, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.load(Ordering::Relaxed)
}

fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
    while let Some(t) = from.poll_transmit() {
        if let Transmit::Binary(b) = t {
            to.handle_message(now, Incoming::Binary(b)).unwrap();
        }
    }
}

fn drain(c: &mut Connection) -> usize {
    let mut n = 0;
    while let Some(ev) = c.poll_event() {
        if let Event::Message { id, data, .. } = ev {
            c.consume(id, data.len());
        }
        n += 1;
    }
    n
}

#[test]
fn hot_paths_allocate_nothing_per_message() {
    let now = Instant::now();
    let mut client = Connection::client(now);
    let mut server = Connection::server(now);
    pump(&mut client, &mut server, now);
    pump(&mut server, &mut client, now);

    // Receive path: 10,000 pre-encoded 64-byte MESSAGE frames into a
    // streaming call, each decoded, delivered as an event and consumed
    // (which also sends CREDIT back).
    let id = client
        .open_call(
            now,
            "bench.Echo/Upload",
            CallKind::ClientStreaming,
            OpenOptions::default(),
        )
        .unwrap();
    pump(&mut client, &mut server, now);
    drain(&mut server);
    let frames: Vec<Bytes> = (0..10_000)
        .map(|_| {
            Frame::Message {
                stream: id,
                end_stream: false,
                more: false,
                cursor: None,
                payload: Bytes::from(vec![7u8; 64]),
            }
            .to_bytes()
        })
        .collect();
    // Warm up queues to their working size.
    let mut frames = frames.into_iter();
    for f in frames.by_ref().take(100) {
        server.handle_message(now, Incoming::Binary(f)).unwrap();
        drain(&mut server);
        while server.poll_transmit().is_some() {}
    }
    let before = allocs();
    let mut delivered = 0;
    for f in frames {
        server.handle_message(now, Incoming::Binary(f)).unwrap();
        delivered += drain(&mut server);
        // Discard the CREDIT frames: this measures the receive side.
        while server.poll_transmit().is_some() {}
    }
    let recv_allocs = allocs() - before;
    assert_eq!(delivered, 9_900);
    println!("receive path: {recv_allocs} allocations for 9,900 messages");
    // CREDIT replies are carved from a shared 16 KiB output chunk: about one
    // allocation per 1,300 frames written, nothing per received message.
    assert!(
        recv_allocs <= 9_900 / 1000,
        "{recv_allocs} allocations on the receive path"
    );

    // Send path, end to end: 64-byte messages queued, written as frames,
    // received, consumed, with credit flowing back.
    let sid = server
        .open_call(
            now,
            "client.Push/Stream",
            CallKind::ServerStreaming,
            OpenOptions::default(),
        )
        .unwrap();
    server.send(sid, Bytes::from_static(b"req")).unwrap();
    server.close_send(sid).unwrap();
    pump(&mut server, &mut client, now);
    drain(&mut client);
    let msg = Bytes::from(vec![1u8; 64]);
    let stream = |client: &mut Connection, server: &mut Connection, n: usize| {
        let mut received = 0;
        while received < n {
            while client.send(sid, msg.clone()).is_ok() {}
            pump(client, server, now);
            received += drain(server);
            pump(server, client, now);
            drain(client);
        }
        received
    };
    stream(&mut client, &mut server, 1000);
    let before = allocs();
    let received = stream(&mut client, &mut server, 20_000);
    let send_allocs = allocs() - before;
    println!("stream path: {send_allocs} allocations for {received} messages sent and received");
    // Frames are carved from 16 KiB output chunks: one allocation per ~200
    // 70-byte frames, nothing per message otherwise.
    assert!(
        send_allocs <= received / 100,
        "{send_allocs} allocations for {received} messages"
    );

    // A whole unary round trip, both sides.
    let req = Bytes::from(vec![1u8; 64]);
    let unary = |client: &mut Connection, server: &mut Connection| {
        let id = client
            .open_call(
                now,
                "bench.Echo/Unary",
                CallKind::Unary,
                OpenOptions::default(),
            )
            .unwrap();
        client.send(id, req.clone()).unwrap();
        client.close_send(id).unwrap();
        pump(client, server, now);
        drain(server);
        server.send(id, req.clone()).unwrap();
        server.finish(id, Status::ok(), Metadata::new()).unwrap();
        pump(server, client, now);
        drain(client);
    };
    for _ in 0..100 {
        unary(&mut client, &mut server);
    }
    let before = allocs();
    for _ in 0..1000 {
        unary(&mut client, &mut server);
    }
    let per_call = (allocs() - before) as f64 / 1000.0;
    println!("unary round trip: {per_call:.2} allocations per call (both sides)");
    assert!(per_call <= 3.0, "{per_call} allocations per unary call");

    // Idle: once the streaming call is over and nothing happened for
    // `release_idle_after` (1 s), both sides give their reusable buffers
    // back (each holds a 16 KiB output chunk by now), and a call after that
    // works as before.
    client.cancel(id).unwrap();
    server.cancel(sid).unwrap();
    for _ in 0..2 {
        pump(&mut server, &mut client, now);
        drain(&mut client);
        pump(&mut client, &mut server, now);
        drain(&mut server);
    }
    assert_eq!(client.live_calls() + server.live_calls(), 0);
    assert!(!client.released() && !server.released());
    // The first timer after the last call starts the idle clock.
    client.handle_timeout(now);
    server.handle_timeout(now);
    let t = now + std::time::Duration::from_secs(1);
    assert_eq!(client.poll_timeout(), Some(t));
    assert_eq!(server.poll_timeout(), Some(t));
    let held = LIVE.load(Ordering::Relaxed);
    client.handle_timeout(t);
    server.handle_timeout(t);
    let freed = held.saturating_sub(LIVE.load(Ordering::Relaxed));
    println!("idle release: {freed} bytes freed (both sides)");
    assert!(client.released() && server.released());
    assert!(freed >= 2 * 16 * 1024, "only {freed} bytes released");
    unary(&mut client, &mut server);
    assert!(!client.released() && !server.released());
}
