//! End-to-end load generator: each system's server runs in its own process
//! (one worker thread), the client in this one (one worker thread), on
//! 127.0.0.1. Prints one JSON line per measurement; `--markdown FILE` also
//! writes a table. Every loop is bounded by count and time, and every result
//! is verified (count and length) before it is reported.
//!
//! ```text
//! cargo run --release -p zrpc-benches --features peers --bin load -- \
//!     [--systems zrpc-tokio,zrpc-smol,ws,tonic,jsonrpsee] \
//!     [--workloads unary1,unary64,stream64,stream64k,conns1000,idle10k] [--secs 3] [--markdown FILE]
//!     [--addr HOST:PORT]   (load a server already running instead of starting one)
//! ```
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

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

// ---------------------------------------------------------------------------
// Servers (run as `load --serve SYSTEM`; print the address, serve until killed)
// ---------------------------------------------------------------------------

/// The benchmark service: unary echo, and a stream of N messages of L bytes
/// (request: u32 N, u32 L, big-endian).
fn router() -> Router {
    Router::new()
        .unary(
            UNARY,
            |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
        )
        .server_streaming(STREAM, |_ctx, req: Bytes, mut sink| async move {
            let (n, len) = parse_stream_request(&req);
            let msg = Bytes::from(vec![0x5a; len]);
            for _ in 0..n {
                sink.send(msg.clone()).await?;
            }
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
    let peers = ["tonic", "jsonrpsee"];
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
        zrpc_async::ServerConfig {
            max_connections: 20_000,
            max_connections_per_ip: 20_000,
            core: if std::env::var("ZRPC_LOAD_NO_TIMERS").is_ok() {
                zrpc_core::Config::default()
            } else {
                zrpc_async::ServerConfig::default().core
            },
            ..Default::default()
        }
    }
    if system == "zrpc-smol" {
        // Everything, the accept loop included, runs on smol's global
        // executor: one thread (the parent sets SMOL_THREADS=1), which also
        // drives the I/O reactor. This thread only waits, without touching
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
            "zrpc-tokio" => {
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
                        let sent = ws.send(Message::Binary(b)).await;
                        if sent.is_err() {
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
            .env("SMOL_THREADS", "1")
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
    workload: &'static str,
    fields: Vec<(&'static str, f64)>,
}

impl Row {
    fn json(&self) -> String {
        let mut s = format!(
            "{{\"system\":\"{}\",\"workload\":\"{}\"",
            self.system, self.workload
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
        match system {
            "zrpc-tokio" => Conn::Zrpc(zrpc_tokio::connect(&url).await.expect("connect")),
            // The smol client: its driver tasks and the load loop share
            // smol's executor thread (see `spawn`).
            "zrpc-smol" => Conn::Zrpc(zrpc_smol::connect(&url).await.expect("connect")),
            #[cfg(feature = "peers")]
            "tonic" => Conn::Tonic(tonic_peer::connect(addr).await),
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
    for _ in 0..in_flight {
        tx.feed(Message::Binary(payload.clone()))
            .await
            .expect("send");
        sent_at.push_back(Instant::now());
    }
    tx.flush().await.expect("flush");
    while let Some(t) = sent_at.pop_front() {
        match rx.next().await {
            Some(Ok(Message::Binary(b))) => assert_eq!(b.len(), payload.len(), "echo length"),
            other => panic!("unexpected {other:?}"),
        }
        lat.push(t.elapsed().as_nanos() as u64);
        if Instant::now() < deadline && lat.len() < 50_000_000 {
            tx.send(Message::Binary(payload.clone()))
                .await
                .expect("send");
            sent_at.push_back(Instant::now());
        }
    }
    latency_fields(lat.len() as u64, start.elapsed(), lat)
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
    latency_fields(all.len() as u64, start.elapsed(), all)
}

async fn streaming(system: &str, addr: &str, len: u32, secs: f64) -> Vec<(&'static str, f64)> {
    let conn = Conn::open(system, addr).await;
    let per_call: u32 = if len <= 64 { 200_000 } else { 2_000 };
    conn.stream(1000, len).await; // warm-up
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut bytes, mut msgs) = (0u64, 0u64);
    while Instant::now() < deadline && msgs < 1_000_000_000 {
        bytes += conn.stream(per_call, len).await;
        msgs += per_call as u64;
    }
    let el = start.elapsed().as_secs_f64();
    vec![
        ("msgs_per_s", msgs as f64 / el),
        ("mb_per_s", bytes as f64 / el / 1e6),
        ("msgs", msgs as f64),
    ]
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
    let mut tasks = Vec::new();
    for conn in opened {
        let payload = payload.clone();
        tasks.push(spawn(
            system,
            unary_loop(conn, payload, deadline, 1_000_000),
        ));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await);
    }
    latency_fields(all.len() as u64, start.elapsed(), all)
}

async fn idle_connections(
    system: &str,
    addr: &str,
    server_pid: u32,
    conns: usize,
) -> Vec<(&'static str, f64)> {
    let before = rss_kib(server_pid);
    let mut opened = Vec::with_capacity(conns);
    for i in 0..conns {
        let conn = Conn::open(system, addr).await;
        if i == 0 {
            conn.unary(&Bytes::from_static(b"x")).await;
        }
        opened.push(conn);
    }
    // Let the server settle its buffers, then read its memory.
    smol::Timer::after(Duration::from_millis(500)).await;
    let after = rss_kib(server_pid);
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / conns as f64;
    drop(opened);
    vec![
        ("connections", conns as f64),
        ("server_bytes_per_conn", per_conn),
        ("server_rss_mib", after as f64 / 1024.0),
    ]
}

/// The tokio runtime of each process: current-thread by default; with
/// `ZRPC_LOAD_TOKIO=multi` the multi-thread runtime with one worker (what
/// `#[tokio::main(worker_threads = 1)]` gives), the kind most tokio
/// applications run. Child server processes inherit the setting.
fn tokio_runtime() -> tokio::runtime::Runtime {
    let mut b = if std::env::var("ZRPC_LOAD_TOKIO").as_deref() == Ok("multi") {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(1);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().unwrap()
}

fn main() {
    if let Some(system) = arg("--serve") {
        serve(&system);
        return;
    }
    let all = if cfg!(feature = "peers") {
        "zrpc-tokio,zrpc-smol,ws,tonic,jsonrpsee"
    } else {
        "zrpc-tokio,zrpc-smol,ws"
    };
    let systems = arg("--systems").unwrap_or_else(|| all.into());
    let workloads = arg("--workloads")
        .unwrap_or_else(|| "unary1,unary64,stream64,stream64k,conns1000,idle10k".into());
    let secs: f64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(3.0);
    systems.split(',').for_each(check_system);
    let mut rows = Vec::new();
    for system in systems.split(',') {
        for workload in workloads.split(',').map(str::to_owned) {
            // `--addr HOST:PORT`: load a server already running (one started
            // with `--serve zrpc-tokio`, say, that other clients load too).
            let external = arg("--addr");
            assert!(
                external.is_none() || workload != "idle10k",
                "idle10k measures the server's memory: it starts its own server"
            );
            let server = external.is_none().then(|| ServerProcess::start(system));
            let (sys, addr, pid) = match (&server, external) {
                (Some(s), _) => (system.to_owned(), s.addr.clone(), s.child.id()),
                (None, Some(addr)) => (system.to_owned(), addr, 0),
                (None, None) => unreachable!(),
            };
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
                    "conns1000" => (
                        "1,000 connections, 1 call each",
                        many_connections(system, addr, 1000, secs).await,
                    ),
                    "idle10k" => (
                        "10,000 idle connections",
                        idle_connections(system, addr, pid, 10_000).await,
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
                let rt = tokio_runtime();
                rt.block_on(work)
            };
            let row = Row {
                system: system.to_owned(),
                workload: name,
                fields,
            };
            println!("{}", row.json());
            rows.push(row);
        }
    }
    if let Some(path) = arg("--markdown") {
        let mut md = String::from("| system | workload | results |\n|---|---|---|\n");
        for r in &rows {
            let cells: Vec<String> = r
                .fields
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect();
            md.push_str(&format!(
                "| {} | {} | {} |\n",
                r.system,
                r.workload,
                cells.join(", ")
            ));
        }
        std::fs::write(path, md).expect("write markdown");
    }
}
