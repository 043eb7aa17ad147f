//! End-to-end load generator: each system's server runs in its own process,
//! the client in another, on 127.0.0.1, both on the same runtime kind.
//! Prints one JSON line per measurement; `--markdown FILE` also writes a
//! table. Every loop is bounded by count and time, and every result is
//! verified (count and length) before it is reported.
//!
//! ```text
//! cargo run --release -p zrpc-benches --features peers --bin load -- \
//!     [--systems zrpc-tokio,zrpc-smol,ws,tonic,jsonrpsee] \
//!     [--workloads unary1,unary64,stream64,stream64k,stream1m,conns1000,idle10k,live10k,bidi10k] \
//!     [--runtimes multi1,multi2,current] [--secs 3] [--markdown FILE]
//!     [--interceptor]      (zrpc servers run one no-op interceptor on every call)
//!     [--client-interceptor] (zrpc clients run one no-op client interceptor)
//!     [--client-read-buffer N] (zrpc clients read N bytes at a time; default 8 KiB)
//!     [--compress-min-size N] (zrpc servers compress messages of N bytes or more)
//!     [--send-all]         (zrpc servers send a stream with one send_all, not a send per message)
//!     [--addr HOST:PORT]   (load a server already running instead of starting one)
//! ```
//!
//! Runtimes (each process, server and client alike): `multi1` is tokio's
//! multi-thread runtime with one worker (`#[tokio::main(worker_threads = 1)]`),
//! `multi2` the same with two (on this 2-core machine, what `#[tokio::main]`
//! gives), `current` tokio's current-thread runtime. smol runs its global
//! executor on one thread for `multi1` and `current`, on two for `multi2`.
//! Each runtime's rows come from a client process of their own (smol reads
//! its thread count once per process). `ZRPC_LOAD_GLOBAL_QUEUE_INTERVAL=N`
//! sets tokio's `global_queue_interval` on the multi-thread runtimes (an
//! experiment: see `tokio_runtime`).
//!
//! Systems: `zrpc-tokio`, `zrpc-smol` (zrpc over each adapter), `ws` (plain
//! tokio-tungstenite with no RPC layer: the ceiling for anything over
//! WebSocket on this stack), and with the `peers` feature `tonic` (gRPC over
//! HTTP/2) and `jsonrpsee` (JSON-RPC over WebSocket, a subscription for
//! streaming). Without the feature the binary builds with zrpc and `ws` only.

#[cfg(feature = "peers")]
mod jsonrpsee_peer;
#[cfg(feature = "peers")]
mod tonic_peer;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use zrpc_async::{CallOptions, Client, Router, Status};

const UNARY: &str = "bench.Echo/Unary";
const STREAM: &str = "bench.Echo/Stream";
/// A server stream that sends nothing until cancelled (a watch).
const WAIT: &str = "bench.Echo/Wait";
/// A bidi call that sends nothing until cancelled (a chat).
const HOLD: &str = "bench.Echo/Hold";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

// ---------------------------------------------------------------------------
// Servers (run as `load --serve SYSTEM`; print the address, serve until killed)
// ---------------------------------------------------------------------------

/// With `--interceptor`, the server processes get this variable: their
/// routers then run one interceptor that does nothing (what a no-op layer
/// costs).
const INTERCEPTOR_ENV: &str = "ZRPC_LOAD_INTERCEPTOR";

/// With `--compress-min-size N`, the server processes get this variable:
/// their connections compress what they send from `N` bytes (PROTOCOL.md
/// 3.4; the clients accept gzip, as every zrpc client does).
const COMPRESS_ENV: &str = "ZRPC_LOAD_COMPRESS_MIN_SIZE";

/// With `--send-all`, the server processes get this variable: their stream
/// handler sends its messages with one `ResponseSink::send_all` instead of
/// a `send` per message.
const SEND_ALL_ENV: &str = "ZRPC_LOAD_SEND_ALL";

/// An interceptor with every hook left at its default (nothing), for
/// either side.
struct Noop;
impl zrpc_async::Interceptor for Noop {}
impl zrpc_async::ClientInterceptor for Noop {}

/// The client of a zrpc connection, with `--client-interceptor` its no-op
/// interceptor.
fn intercepted(client: zrpc_async::Client) -> zrpc_async::Client {
    if std::env::args().any(|a| a == "--client-interceptor") {
        client.with_interceptor(Noop)
    } else {
        client
    }
}

/// The benchmark service: unary echo, and a stream of N messages of L bytes
/// (request: u32 N, u32 L, big-endian).
fn router() -> Router {
    let r = bench_router();
    match std::env::var(INTERCEPTOR_ENV).as_deref() {
        Ok("1") => r.interceptor(Noop),
        _ => r,
    }
}

fn bench_router() -> Router {
    Router::new()
        .unary(
            UNARY,
            |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
        )
        .server_streaming(STREAM, |_ctx, req: Bytes, mut sink| async move {
            let (n, len) = parse_stream_request(&req);
            let msg = Bytes::from(vec![0x5a; len]);
            if std::env::var(SEND_ALL_ENV).as_deref() == Ok("1") {
                return sink.send_all(std::iter::repeat_n(msg, n as usize)).await;
            }
            for _ in 0..n {
                sink.send(msg.clone()).await?;
            }
            Ok(())
        })
        .server_streaming(WAIT, |ctx, _req: Bytes, _sink| async move {
            ctx.cancelled().await;
            Ok(())
        })
        .bidi(HOLD, |ctx, _reqs, _sink| async move {
            ctx.cancelled().await;
            Ok(())
        })
}

fn parse_stream_request(req: &[u8]) -> (u32, usize) {
    if req.len() < 8 {
        return (0, 0);
    }
    let n = u32::from_be_bytes([req[0], req[1], req[2], req[3]]);
    let len = u32::from_be_bytes([req[4], req[5], req[6], req[7]]) as usize;
    (n, len.min(16 << 20))
}

fn stream_request(n: u32, len: u32) -> Bytes {
    let mut b = n.to_be_bytes().to_vec();
    b.extend_from_slice(&len.to_be_bytes());
    Bytes::from(b)
}

/// Panics with a clear message on a system this build cannot run.
fn check_system(system: &str) {
    let known = ["zrpc-tokio", "zrpc-smol", "ws"];
    // zrpc-grpc: the zrpc server (tokio) called over gRPC by tonic's client.
    let peers = ["tonic", "jsonrpsee", "zrpc-grpc"];
    let peer = cfg!(feature = "peers") && peers.contains(&system);
    assert!(
        known.contains(&system) || peer,
        "unknown system {system} (tonic and jsonrpsee need --features peers)"
    );
}

fn serve(system: &str) {
    check_system(system);
    // Every load client connects from 127.0.0.1: the per-address limit is
    // lifted (the global one still holds), so 10,000 connections fit.
    fn bench_config() -> zrpc_async::ServerConfig {
        let mut core = if std::env::var("ZRPC_LOAD_NO_TIMERS").is_ok() {
            zrpc_core::Config::default()
        } else {
            zrpc_async::ServerConfig::default().core
        };
        core.compress_min_size = std::env::var(COMPRESS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        zrpc_async::ServerConfig {
            max_connections: 20_000,
            max_connections_per_ip: 20_000,
            core,
            ..Default::default()
        }
    }
    if system == "zrpc-smol" {
        // Everything, the accept loop included, runs on smol's global
        // executor: the runtime's threads (the parent sets SMOL_THREADS),
        // which also drive the I/O reactor. This thread only waits, without touching
        // the reactor (futures-lite's block_on, not smol's).
        futures_lite::future::block_on(smol::spawn(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            announce(listener.local_addr().unwrap());
            let server =
                zrpc_smol::Server::with_config(router(), bench_config(), zrpc_smol::SmolRuntime);
            let _ = zrpc_smol::serve(&server, listener).await;
        }));
        return;
    }
    let rt = tokio_runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        announce(listener.local_addr().unwrap());
        match system {
            "zrpc-tokio" | "zrpc-grpc" => {
                let server = zrpc_tokio::Server::with_config(
                    router(),
                    bench_config(),
                    zrpc_tokio::TokioRuntime,
                );
                let _ = zrpc_tokio::serve(&server, listener).await;
            }
            #[cfg(feature = "peers")]
            "tonic" => tonic_peer::serve(listener).await,
            #[cfg(feature = "peers")]
            "jsonrpsee" => jsonrpsee_peer::serve(listener).await,
            _ => serve_ws(listener).await,
        }
    });
}

/// The plain-WebSocket server: a binary message is echoed; a text "N L"
/// streams N messages of L bytes.
async fn serve_ws(listener: tokio::net::TcpListener) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Binary(b) => {
                        // Echoes what was already read with one flush.
                        if ws.feed(Message::Binary(b)).await.is_err() {
                            return;
                        }
                        while let Some(Some(Ok(Message::Binary(b)))) =
                            futures_util::FutureExt::now_or_never(ws.next())
                        {
                            if ws.feed(Message::Binary(b)).await.is_err() {
                                return;
                            }
                        }
                        if ws.flush().await.is_err() {
                            return;
                        }
                    }
                    Message::Text(t) => {
                        let mut it = t.split(' ').filter_map(|x| x.parse::<usize>().ok());
                        let (n, len) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                        let msg = Bytes::from(vec![0x5a; len]);
                        for _ in 0..n {
                            if ws.feed(Message::Binary(msg.clone())).await.is_err() {
                                return;
                            }
                        }
                        if ws.flush().await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        });
    }
}

fn announce(addr: std::net::SocketAddr) {
    println!("{addr}");
    std::io::stdout().flush().unwrap();
}

struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(system: &str) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--serve", system])
            .env("SMOL_THREADS", runtime().smol_threads().to_string())
            .env(
                INTERCEPTOR_ENV,
                if std::env::args().any(|a| a == "--interceptor") {
                    "1"
                } else {
                    "0"
                },
            )
            .env(
                COMPRESS_ENV,
                arg("--compress-min-size").unwrap_or_else(|| "0".into()),
            )
            .env(
                SEND_ALL_ENV,
                if std::env::args().any(|a| a == "--send-all") {
                    "1"
                } else {
                    "0"
                },
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            addr: line.trim().to_owned(),
        }
    }
}

/// The server process of the current workload (0: none of ours), for CPU
/// accounting.
static SERVER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// CPU time (user + system) a process has used so far, in clock ticks
/// (`/proc/PID/stat`; 100 per second on Linux).
/// CPU ticks (user + system) and minor page faults of a process so far.
fn cpu_and_faults(pid: &str) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): minflt is the
    // 10th of the line, utime and stime the 14th and 15th (the 8th, 12th
    // and 13th after it).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Usage {
        ticks: at(11) + at(12),
        faults: at(7),
    }
}

/// What a process used so far: CPU ticks and minor page faults.
#[derive(Clone, Copy, Default)]
struct Usage {
    ticks: u64,
    faults: u64,
}

/// CPU and page faults so far of the server (`.0`) and of this client
/// process (`.1`).
#[derive(Clone, Copy)]
struct CpuMark(Usage, Usage);

impl CpuMark {
    fn now() -> Self {
        let server = SERVER_PID.load(std::sync::atomic::Ordering::Relaxed);
        let server = if server == 0 {
            Usage::default()
        } else {
            cpu_and_faults(&server.to_string())
        };
        CpuMark(server, cpu_and_faults("self"))
    }

    /// CPU microseconds and minor page faults per operation since this
    /// mark, server and client: where the time goes, independent of how
    /// busy the machine is. Faults show a large message's buffers coming
    /// back from the system every time (the allocator gave them back).
    fn per_op(self, ops: u64) -> Vec<(&'static str, f64)> {
        let now = CpuMark::now();
        let us = |ticks: u64| ticks as f64 * 10_000.0 / ops.max(1) as f64;
        let per = |n: u64| n as f64 / ops.max(1) as f64;
        let mut fields = vec![
            ("client_cpu_us_per_op", us(now.1.ticks - self.1.ticks)),
            ("client_faults_per_op", per(now.1.faults - self.1.faults)),
        ];
        if SERVER_PID.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            fields.push(("server_cpu_us_per_op", us(now.0.ticks - self.0.ticks)));
            fields.push(("server_faults_per_op", per(now.0.faults - self.0.faults)));
        }
        fields
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs a task on the client's executor: smol's global executor for
/// `zrpc-smol` (so the load loop and the connections' driver tasks share its
/// one thread, as they share tokio's current-thread runtime otherwise).
fn spawn<T: Send + 'static>(
    system: &str,
    f: impl Future<Output = T> + Send + 'static,
) -> Pin<Box<dyn Future<Output = T> + Send>> {
    if system == "zrpc-smol" {
        Box::pin(smol::spawn(f))
    } else {
        let task = tokio::spawn(f);
        Box::pin(async move { task.await.expect("load task") })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// One result line.
struct Row {
    system: String,
    runtime: &'static str,
    workload: &'static str,
    fields: Vec<(&'static str, f64)>,
}

impl Row {
    fn json(&self) -> String {
        let mut s = format!(
            "{{\"system\":\"{}\",\"runtime\":\"{}\",\"workload\":\"{}\"",
            self.system, self.runtime, self.workload
        );
        for (k, v) in &self.fields {
            s.push_str(&format!(",\"{k}\":{v:.3}"));
        }
        s.push('}');
        s
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0 // ns -> µs
}

fn latency_fields(calls: u64, elapsed: Duration, mut lat: Vec<u64>) -> Vec<(&'static str, f64)> {
    lat.sort_unstable();
    vec![
        ("calls_per_s", calls as f64 / elapsed.as_secs_f64()),
        ("p50_us", percentile(&lat, 0.50)),
        ("p99_us", percentile(&lat, 0.99)),
        ("calls", calls as f64),
    ]
}

/// A client connection of one system, able to do the two call shapes.
enum Conn {
    Zrpc(Client),
    Ws(Box<tokio::sync::Mutex<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>>),
    #[cfg(feature = "peers")]
    Tonic(tonic_peer::EchoClient<tonic::transport::Channel>),
    #[cfg(feature = "peers")]
    Jsonrpsee(Box<jsonrpsee::ws_client::WsClient>),
}

impl Conn {
    async fn open(system: &str, addr: &str) -> Conn {
        let url = format!("ws://{addr}/");
        let mut config = zrpc_async::ClientConfig::default();
        if let Some(n) = arg("--client-read-buffer").and_then(|n| n.parse().ok()) {
            config.read_buffer_size = n;
        }
        match system {
            "zrpc-tokio" => Conn::Zrpc(intercepted(
                zrpc_tokio::connect_with(&url, config)
                    .await
                    .expect("connect"),
            )),
            // The smol client: its driver tasks and the load loop share
            // smol's executor thread (see `spawn`).
            "zrpc-smol" => Conn::Zrpc(intercepted(
                zrpc_smol::connect_with(&url, config)
                    .await
                    .expect("connect"),
            )),
            #[cfg(feature = "peers")]
            "tonic" | "zrpc-grpc" => Conn::Tonic(tonic_peer::connect(addr).await),
            #[cfg(feature = "peers")]
            "jsonrpsee" => Conn::Jsonrpsee(Box::new(jsonrpsee_peer::connect(addr).await)),
            _ => {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let (ws, _) = tokio_tungstenite::client_async(&url, tcp)
                    .await
                    .expect("handshake");
                Conn::Ws(Box::new(tokio::sync::Mutex::new(ws)))
            }
        }
    }

    async fn unary(&self, payload: &Bytes) {
        match self {
            Conn::Zrpc(c) => {
                let r = c
                    .unary(UNARY, payload.clone(), CallOptions::default())
                    .await
                    .expect("unary call");
                assert_eq!(r.len(), payload.len(), "echo length");
            }
            Conn::Ws(ws) => {
                let mut ws = ws.lock().await;
                ws.send(Message::Binary(payload.clone()))
                    .await
                    .expect("send");
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        assert_eq!(b.len(), payload.len(), "echo length")
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            #[cfg(feature = "peers")]
            Conn::Tonic(c) => {
                let r = c
                    .clone()
                    .unary(payload.clone())
                    .await
                    .expect("tonic unary")
                    .into_inner();
                assert_eq!(r.len(), payload.len(), "echo length");
            }
            #[cfg(feature = "peers")]
            Conn::Jsonrpsee(c) => {
                // The same number of payload bytes, as a JSON string.
                let text = "Z".repeat(payload.len());
                jsonrpsee_peer::unary(c, &text).await;
            }
        }
    }

    /// Streams `n` messages of `len` bytes; returns the bytes received.
    async fn stream(&self, n: u32, len: u32) -> u64 {
        let mut got = 0u64;
        let mut count = 0u32;
        match self {
            Conn::Zrpc(c) => {
                let mut call = c
                    .server_streaming(STREAM, stream_request(n, len), CallOptions::default())
                    .await
                    .expect("stream call");
                while let Some(m) = call.message().await.expect("stream message") {
                    assert_eq!(m.len(), len as usize);
                    got += m.len() as u64;
                    count += 1;
                }
            }
            Conn::Ws(ws) => {
                let mut ws = ws.lock().await;
                ws.send(Message::text(format!("{n} {len}")))
                    .await
                    .expect("send");
                while count < n {
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) => {
                            assert_eq!(b.len(), len as usize);
                            got += b.len() as u64;
                            count += 1;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            #[cfg(feature = "peers")]
            Conn::Tonic(c) => {
                let mut s = c
                    .clone()
                    .stream(stream_request(n, len))
                    .await
                    .expect("tonic stream")
                    .into_inner();
                while let Some(m) = s.message().await.expect("tonic stream message") {
                    assert_eq!(m.len(), len as usize);
                    got += m.len() as u64;
                    count += 1;
                }
            }
            #[cfg(feature = "peers")]
            Conn::Jsonrpsee(c) => (count, got) = jsonrpsee_peer::stream(c, n, len).await,
        }
        assert_eq!(count, n, "message count");
        got
    }
}

/// The plain-WebSocket ceiling with `in_flight` requests outstanding on one
/// socket: echoes come back in order, so each reply matches the oldest send.
async fn ws_pipelined(addr: &str, in_flight: usize, secs: f64) -> Vec<(&'static str, f64)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .expect("handshake");
    let (mut tx, mut rx) = ws.split();
    let payload = Bytes::from(vec![7u8; 64]);
    let mut sent_at = std::collections::VecDeque::with_capacity(in_flight);
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu = CpuMark::now();
    for _ in 0..in_flight {
        tx.feed(Message::Binary(payload.clone()))
            .await
            .expect("send");
        sent_at.push_back(Instant::now());
    }
    tx.flush().await.expect("flush");
    // Each round waits for one reply, takes the replies already read
    // without waiting, then sends as many requests with one flush: the
    // batching a pipelining client does (zrpc's writer does the same).
    let check = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Binary(b))) => assert_eq!(b.len(), payload.len(), "echo length"),
        other => panic!("unexpected {other:?}"),
    };
    while let Some(t) = sent_at.pop_front() {
        check(rx.next().await);
        lat.push(t.elapsed().as_nanos() as u64);
        let mut refill = 1;
        while !sent_at.is_empty() {
            let Some(m) = futures_util::FutureExt::now_or_never(rx.next()) else {
                break;
            };
            check(m);
            let t = sent_at.pop_front().expect("a request in flight");
            lat.push(t.elapsed().as_nanos() as u64);
            refill += 1;
        }
        if Instant::now() < deadline && lat.len() < 50_000_000 {
            for _ in 0..refill {
                tx.feed(Message::Binary(payload.clone()))
                    .await
                    .expect("send");
                sent_at.push_back(Instant::now());
            }
            tx.flush().await.expect("flush");
        }
    }
    let calls = lat.len() as u64;
    let mut fields = latency_fields(calls, start.elapsed(), lat);
    fields.extend(cpu.per_op(calls));
    fields
}

/// Unary calls one after another until the deadline (or `max` calls);
/// returns each call's latency in nanoseconds.
async fn unary_loop(conn: Arc<Conn>, payload: Bytes, deadline: Instant, max: usize) -> Vec<u64> {
    let mut lat = Vec::new();
    while Instant::now() < deadline && lat.len() < max {
        let t = Instant::now();
        conn.unary(&payload).await;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat
}

async fn unary_in_flight(
    system: &str,
    addr: &str,
    in_flight: usize,
    secs: f64,
) -> Vec<(&'static str, f64)> {
    if system == "ws" && in_flight > 1 {
        return ws_pipelined(addr, in_flight, secs).await;
    }
    let conn = Arc::new(Conn::open(system, addr).await);
    let payload = Bytes::from(vec![7u8; 64]);
    for _ in 0..200 {
        conn.unary(&payload).await; // warm-up
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu = CpuMark::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let conn = conn.clone();
        let payload = payload.clone();
        tasks.push(spawn(
            system,
            unary_loop(conn, payload, deadline, 5_000_000),
        ));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await);
    }
    let calls = all.len() as u64;
    let mut fields = latency_fields(calls, start.elapsed(), all);
    fields.extend(cpu.per_op(calls));
    fields
}

async fn streaming(system: &str, addr: &str, len: u32, secs: f64) -> Vec<(&'static str, f64)> {
    let conn = Conn::open(system, addr).await;
    let per_call: u32 = match len {
        0..=64 => 200_000,
        65..=65536 => 2_000,
        _ => 200,
    };
    conn.stream(per_call.min(1000), len).await; // warm-up
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu = CpuMark::now();
    let (mut bytes, mut msgs) = (0u64, 0u64);
    while Instant::now() < deadline && msgs < 1_000_000_000 {
        bytes += conn.stream(per_call, len).await;
        msgs += per_call as u64;
    }
    let el = start.elapsed().as_secs_f64();
    let mut fields = vec![
        ("msgs_per_s", msgs as f64 / el),
        ("mb_per_s", bytes as f64 / el / 1e6),
        ("msgs", msgs as f64),
    ];
    fields.extend(cpu.per_op(msgs));
    fields
}

async fn many_connections(
    system: &str,
    addr: &str,
    conns: usize,
    secs: f64,
) -> Vec<(&'static str, f64)> {
    let mut opened = Vec::with_capacity(conns);
    for _ in 0..conns {
        opened.push(Arc::new(Conn::open(system, addr).await));
    }
    let payload = Bytes::from(vec![7u8; 64]);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu = CpuMark::now();
    let mut tasks = Vec::new();
    for conn in opened {
        let payload = payload.clone();
        tasks.push(spawn(
            system,
            unary_loop(conn, payload, deadline, 1_000_000),
        ));
    }
    let mut all = Vec::new();
    let (mut least, mut most) = (usize::MAX, 0);
    for t in tasks {
        let lat = t.await;
        least = least.min(lat.len());
        most = most.max(lat.len());
        all.extend(lat);
    }
    let calls = all.len() as u64;
    let mut fields = latency_fields(calls, start.elapsed(), all);
    // Fairness: the calls of the least and the most served connection.
    fields.push(("least_conn_calls", least as f64));
    fields.push(("most_conn_calls", most as f64));
    fields.extend(cpu.per_op(calls));
    fields
}

async fn idle_connections(
    system: &str,
    addr: &str,
    server_pid: u32,
    conns: usize,
) -> Vec<(&'static str, f64)> {
    let measured = server_pid != 0;
    let before = if measured { rss_kib(server_pid) } else { 0 };
    let mut opened = Vec::with_capacity(conns);
    // One 64-byte call on each connection: what stays allocated is what an
    // idle connection that has been used costs.
    let payload = Bytes::from(vec![7u8; 64]);
    for _ in 0..conns {
        let conn = Conn::open(system, addr).await;
        conn.unary(&payload).await;
        opened.push(conn);
    }
    // Let the server settle: idle connections release their buffers after
    // 1 s without calls (`Config::release_idle_after`); then read its memory.
    smol::Timer::after(Duration::from_millis(2000)).await;
    let after = if measured { rss_kib(server_pid) } else { 0 };
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / conns as f64;
    drop(opened);
    let mut fields = vec![("connections", conns as f64)];
    if measured {
        fields.push(("server_bytes_per_conn", per_conn));
        fields.push(("server_rss_mib", after as f64 / 1024.0));
    }
    fields
}

/// `conns` connections each holding one live call that sends nothing
/// (`bidi`: a bidi call, else a server stream): what holding them costs
/// the server and the client in CPU (percent of one core, over `secs`
/// after a 2 s settle in which idle buffers are released) and the server
/// in memory per connection. zrpc systems only.
async fn live_idle_calls(
    system: &str,
    addr: &str,
    server_pid: u32,
    conns: usize,
    bidi: bool,
    secs: f64,
) -> Vec<(&'static str, f64)> {
    let measured = server_pid != 0;
    let before = if measured { rss_kib(server_pid) } else { 0 };
    let mut held = Vec::with_capacity(conns);
    for _ in 0..conns {
        let Conn::Zrpc(client) = Conn::open(system, addr).await else {
            panic!("live idle calls are zrpc rows");
        };
        let call = if bidi {
            client.bidi(HOLD, CallOptions::default()).await
        } else {
            client
                .server_streaming(WAIT, Bytes::new(), CallOptions::default())
                .await
        };
        held.push((call.expect("open the call"), client));
    }
    smol::Timer::after(Duration::from_millis(2000)).await;
    let after = if measured { rss_kib(server_pid) } else { 0 };
    let start = Instant::now();
    let cpu = CpuMark::now();
    smol::Timer::after(Duration::from_secs_f64(secs)).await;
    let end = CpuMark::now();
    let el = start.elapsed().as_secs_f64();
    // Ticks are hundredths of a second: ticks / seconds is percent of a core.
    let pct = |ticks: u64| ticks as f64 / el;
    let mut fields = vec![
        ("connections", conns as f64),
        ("client_cpu_pct", pct(end.1.ticks - cpu.1.ticks)),
    ];
    if measured {
        fields.push(("server_cpu_pct", pct(end.0.ticks - cpu.0.ticks)));
        let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / conns as f64;
        fields.push(("server_bytes_per_conn", per_conn));
    }
    drop(held);
    fields
}

/// The runtime kind every process of one run uses (see the module docs).
#[derive(Clone, Copy, PartialEq, Debug)]
enum RuntimeKind {
    /// tokio's multi-thread runtime with this many workers; smol with this
    /// many executor threads.
    Multi(usize),
    /// tokio's current-thread runtime; smol with one thread.
    Current,
}

impl RuntimeKind {
    fn parse(name: &str) -> RuntimeKind {
        match name {
            "current" => RuntimeKind::Current,
            "multi1" => RuntimeKind::Multi(1),
            "multi2" => RuntimeKind::Multi(2),
            other => panic!("unknown runtime {other} (multi1, multi2, current)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            RuntimeKind::Current => "current",
            RuntimeKind::Multi(1) => "multi1",
            RuntimeKind::Multi(_) => "multi2",
        }
    }

    fn smol_threads(self) -> usize {
        match self {
            RuntimeKind::Current => 1,
            RuntimeKind::Multi(n) => n,
        }
    }
}

/// This process's runtime kind: `ZRPC_LOAD_RUNTIME`, set by the parent for
/// its client and server processes (`multi1` when unset).
fn runtime() -> RuntimeKind {
    RuntimeKind::parse(
        std::env::var("ZRPC_LOAD_RUNTIME")
            .as_deref()
            .unwrap_or("multi1"),
    )
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    let mut b = match runtime() {
        RuntimeKind::Multi(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            // An experiment's knob (not set by default): how often a worker
            // takes tasks from the shared queue before its own (tokio's
            // default is adaptive, about every 61 polls). Tasks that
            // overflowed a worker's local queue wait there: with 1,000 busy
            // connections, that is the tail latency of the multi-thread rows.
            if let Ok(v) = std::env::var("ZRPC_LOAD_GLOBAL_QUEUE_INTERVAL") {
                b.global_queue_interval(v.parse().expect("a number of polls"));
            }
            b
        }
        RuntimeKind::Current => tokio::runtime::Builder::new_current_thread(),
    };
    b.enable_all().build().unwrap()
}

/// Runs each runtime's rows in a client process of its own (this binary
/// with `--runtimes` of one kind and the environment that kind needs),
/// passing the other arguments through.
fn run_each_runtime(runtimes: &[RuntimeKind], markdown: Option<&str>) {
    if let Some(path) = markdown {
        std::fs::write(
            path,
            "| system | runtime | workload | results |\n|---|---|---|---|\n",
        )
        .expect("write markdown");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    for rt in runtimes {
        let mut pass = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--runtimes" || a == "--markdown" {
                it.next();
            } else {
                pass.push(a.clone());
            }
        }
        pass.extend(["--runtimes".to_owned(), rt.name().to_owned()]);
        if let Some(path) = markdown {
            pass.extend(["--markdown-append".to_owned(), path.to_owned()]);
        }
        let status = Command::new(std::env::current_exe().unwrap())
            .args(&pass)
            .env("ZRPC_LOAD_RUNTIME", rt.name())
            .env("SMOL_THREADS", rt.smol_threads().to_string())
            .status()
            .expect("start client process");
        assert!(status.success(), "the {} run failed", rt.name());
    }
}

fn main() {
    if let Some(system) = arg("--serve") {
        serve(&system);
        return;
    }
    let all = if cfg!(feature = "peers") {
        "zrpc-tokio,zrpc-smol,ws,tonic,zrpc-grpc,jsonrpsee"
    } else {
        "zrpc-tokio,zrpc-smol,ws"
    };
    let systems = arg("--systems").unwrap_or_else(|| all.into());
    let workloads = arg("--workloads").unwrap_or_else(|| {
        "unary1,unary64,stream64,stream64k,stream1m,conns1000,idle10k,live10k,bidi10k".into()
    });
    let secs: f64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(3.0);
    systems.split(',').for_each(check_system);
    let runtimes: Vec<RuntimeKind> = arg("--runtimes")
        .unwrap_or_else(|| "multi1,multi2,current".into())
        .split(',')
        .map(RuntimeKind::parse)
        .collect();
    let this_process = std::env::var("ZRPC_LOAD_RUNTIME")
        .ok()
        .map(|r| RuntimeKind::parse(&r));
    if runtimes.len() != 1 || this_process != Some(runtimes[0]) {
        run_each_runtime(&runtimes, arg("--markdown").as_deref());
        return;
    }
    let rt_name = runtimes[0].name();
    let mut rows = Vec::new();
    for system in systems.split(',') {
        for workload in workloads.split(',').map(str::to_owned) {
            // Live calls that wait are zrpc's own shape (other systems have
            // no such call here).
            if matches!(workload.as_str(), "live10k" | "bidi10k")
                && (!system.starts_with("zrpc") || system == "zrpc-grpc")
            {
                continue;
            }
            // `--addr HOST:PORT`: load a server already running (one started
            // with `--serve zrpc-tokio`, say, that other clients load too).
            // With `idle10k` the connections are opened and used, but the
            // server's memory is only read from a server this run started
            // (a server run by hand can be measured by a heap profiler).
            let external = arg("--addr");
            let server = external.is_none().then(|| ServerProcess::start(system));
            let (sys, addr, pid) = match (&server, external) {
                (Some(s), _) => (system.to_owned(), s.addr.clone(), s.child.id()),
                (None, Some(addr)) => (system.to_owned(), addr, 0),
                (None, None) => unreachable!(),
            };
            SERVER_PID.store(
                if server.is_some() { pid } else { 0 },
                std::sync::atomic::Ordering::Relaxed,
            );
            let work = async move {
                let (system, addr) = (sys.as_str(), addr.as_str());
                match workload.as_str() {
                    "unary1" => (
                        "unary 64 B, 1 in flight",
                        unary_in_flight(system, addr, 1, secs).await,
                    ),
                    "unary64" => (
                        "unary 64 B, 64 in flight",
                        unary_in_flight(system, addr, 64, secs).await,
                    ),
                    "stream64" => (
                        "server stream 64 B",
                        streaming(system, addr, 64, secs).await,
                    ),
                    "stream64k" => (
                        "server stream 64 KiB",
                        streaming(system, addr, 64 * 1024, secs).await,
                    ),
                    "stream1m" => (
                        "server stream 1 MiB",
                        streaming(system, addr, 1 << 20, secs).await,
                    ),
                    "conns1000" => (
                        "1,000 connections, 1 call each",
                        many_connections(system, addr, 1000, secs).await,
                    ),
                    "idle10k" => (
                        "10,000 idle connections",
                        idle_connections(system, addr, pid, 10_000).await,
                    ),
                    "live10k" => (
                        "10,000 connections, a live stream each, sending nothing",
                        live_idle_calls(system, addr, pid, 10_000, false, secs).await,
                    ),
                    "bidi10k" => (
                        "10,000 connections, a live bidi call each, sending nothing",
                        live_idle_calls(system, addr, pid, 10_000, true, secs).await,
                    ),
                    other => panic!("unknown workload {other}"),
                }
            };
            let (name, fields) = if system == "zrpc-smol" {
                // See `serve`: the work runs on the executor's one thread.
                futures_lite::future::block_on(smol::spawn(work))
            } else {
                // A runtime per workload: dropping it ends every client task
                // and closes its sockets before the next workload starts.
                // The work is a task: on the multi-thread runtime it runs
                // on the workers, as a spawned server or client task would,
                // not on this thread.
                let rt = tokio_runtime();
                rt.block_on(async { tokio::spawn(work).await.expect("load task") })
            };
            let row = Row {
                system: system.to_owned(),
                runtime: rt_name,
                workload: name,
                fields,
            };
            println!("{}", row.json());
            rows.push(row);
        }
    }
    if let Some(path) = arg("--markdown-append") {
        let mut md = String::new();
        for r in &rows {
            let cells: Vec<String> = r
                .fields
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.system,
                r.runtime,
                r.workload,
                cells.join(", ")
            ));
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open markdown");
        f.write_all(md.as_bytes()).expect("write markdown");
    }
}
