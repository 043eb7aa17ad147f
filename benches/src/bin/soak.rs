//! Soak: a zrpc server (its own process, tokio's multi-thread runtime) under
//! 10,000 good connections making calls of all four kinds, with hostile
//! connections interleaved the whole time: peers that grant credit and never
//! read, fragment hoarders, idle holders and PING floods. The server's RSS
//! is sampled every second (one JSON line each) and must flatten; every good
//! call is checked and none may fail. Not part of CI.
//!
//! ```text
//! cargo run --release -p zrpc-benches --bin soak -- [--conns 10000] [--calls 1000000] [--secs 300]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use zrpc_async::{CallKind, CallOptions, Client, ClientConfig, Router, ServerConfig, Status};
use zrpc_core::frame::Open;
use zrpc_core::{Frame, Metadata, Method, StreamId};

const UNARY: &str = "soak.S/Unary";
const DOWN: &str = "soak.S/Down";
const UP: &str = "soak.S/Up";
const BOTH: &str = "soak.S/Both";
const FLOOD: &str = "soak.S/Flood";
const HOLD: &str = "soak.S/Hold";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn router() -> Router {
    Router::new()
        .unary(
            UNARY,
            |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
        )
        .server_streaming(DOWN, |_ctx, req: Bytes, mut sink| async move {
            for _ in 0..8 {
                sink.send(req.clone()).await?;
            }
            Ok(())
        })
        .client_streaming(UP, |_ctx, mut reqs| async move {
            let mut n = 0u64;
            while let Some(m) = reqs.message().await? {
                n += m.len() as u64;
            }
            Ok::<_, Status>(Bytes::copy_from_slice(&n.to_be_bytes()))
        })
        .bidi(BOTH, |_ctx, mut reqs, mut sink| async move {
            while let Some(m) = reqs.message().await? {
                sink.send(m).await?;
            }
            Ok(())
        })
        .server_streaming(FLOOD, |_ctx, _req: Bytes, mut sink| async move {
            let big = Bytes::from(vec![0u8; 128 * 1024]);
            for _ in 0..100_000 {
                sink.send(big.clone()).await?;
            }
            Ok(())
        })
        .bidi(HOLD, |ctx, _reqs, _sink| async move {
            ctx.cancelled().await;
            Ok(())
        })
}

fn serve() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ServerConfig {
            max_connections: 20_000,
            max_connections_per_ip: 20_000,
            write_timeout: Duration::from_secs(2),
            max_server_receive_buffer: 64 * 1024 * 1024,
            core: zrpc_core::Config {
                keepalive_interval: Some(Duration::from_secs(2)),
                keepalive_timeout: Duration::from_secs(2),
                idle_timeout: Some(Duration::from_secs(600)),
                ..zrpc_core::Config::default()
            },
            ..ServerConfig::default()
        };
        let server = zrpc_tokio::Server::with_config(router(), config, zrpc_tokio::TokioRuntime);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap());
        let _ = zrpc_tokio::serve(&server, listener).await;
    });
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One good call of `kind` (0..4), checked.
async fn good_call(c: &Client, kind: usize, payload: &Bytes) -> Result<(), String> {
    let o = CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    };
    match kind {
        0 => {
            let r = c
                .unary(UNARY, payload.clone(), o)
                .await
                .map_err(|s| s.to_string())?;
            (r == *payload)
                .then_some(())
                .ok_or("unary: wrong reply".into())
        }
        1 => {
            let mut call = c
                .server_streaming(DOWN, payload.clone(), o)
                .await
                .map_err(|s| s.to_string())?;
            let mut n = 0;
            while let Some(m) = call.message().await.map_err(|s| s.to_string())? {
                if m != *payload {
                    return Err("down: wrong message".into());
                }
                n += 1;
            }
            (n == 8).then_some(()).ok_or(format!("down: {n} messages"))
        }
        2 => {
            let mut call = c
                .call(UP, CallKind::ClientStreaming, o)
                .await
                .map_err(|s| s.to_string())?;
            for _ in 0..8 {
                call.send(payload.clone())
                    .await
                    .map_err(|s| s.to_string())?;
            }
            call.close_send().map_err(|s| s.to_string())?;
            let r = call.message().await.map_err(|s| s.to_string())?;
            let want = (8 * payload.len() as u64).to_be_bytes();
            (r.as_deref() == Some(&want[..]))
                .then_some(())
                .ok_or("up: wrong sum".into())
        }
        _ => {
            let mut call = c
                .call(BOTH, CallKind::Bidi, o)
                .await
                .map_err(|s| s.to_string())?;
            for _ in 0..4 {
                call.send(payload.clone())
                    .await
                    .map_err(|s| s.to_string())?;
                let m = call.message().await.map_err(|s| s.to_string())?;
                if m.as_ref() != Some(payload) {
                    return Err("both: wrong echo".into());
                }
            }
            call.close_send().map_err(|s| s.to_string())?;
            call.finish().await.map(|_| ()).map_err(|s| s.to_string())
        }
    }
}

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> Option<Raw> {
    let mut req = url.into_client_request().ok()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("zrpc.v1"),
    );
    tokio_tungstenite::connect_async(req)
        .await
        .ok()
        .map(|(ws, _)| ws)
}

fn open(id: u32, kind: zrpc_core::CallKind, credit: u32, method: &str) -> Message {
    Message::Binary(
        Frame::Open(Open {
            stream: StreamId(id),
            kind,
            timeout_ms: 0,
            initial_credit: credit,
            method: Method::new(method).unwrap(),
            metadata: Metadata::new(),
        })
        .to_bytes(),
    )
}

fn message(id: u32, end: bool, more: bool, payload: Bytes) -> Message {
    Message::Binary(
        Frame::Message {
            stream: StreamId(id),
            end_stream: end,
            more,
            cursor: None,
            payload,
        }
        .to_bytes(),
    )
}

/// One hostile connection of kind `k`, held for at most `hold`.
async fn hostile(url: String, k: usize, hold: Duration) {
    let Some(mut ws) = raw(&url).await else {
        return;
    };
    match k % 4 {
        // Grants the most credit, asks for 100,000 × 128 KiB, never reads.
        0 => {
            let _ = ws
                .send(open(
                    1,
                    zrpc_core::CallKind::ServerStreaming,
                    (1 << 31) - 1,
                    FLOOD,
                ))
                .await;
            let _ = ws
                .send(message(1, true, false, Bytes::from_static(b"go")))
                .await;
            tokio::time::sleep(hold).await;
        }
        // Hoards unfinished 64 KiB fragments on 64 calls.
        1 => {
            let frag = Bytes::from(vec![1u8; 64 * 1024]);
            for i in 0..64u32 {
                let id = 1 + 2 * i;
                if ws
                    .send(open(id, zrpc_core::CallKind::Bidi, 16, HOLD))
                    .await
                    .is_err()
                    || ws
                        .send(message(id, false, true, frag.clone()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
            tokio::time::sleep(hold).await;
        }
        // Upgrades, then sends nothing and reads nothing.
        2 => tokio::time::sleep(hold).await,
        // PING flood without reading the answers.
        _ => {
            let ping = Frame::Ping {
                ack: false,
                data: [7; 8],
            }
            .to_bytes();
            for _ in 0..20_000 {
                if ws.feed(Message::Binary(ping.clone())).await.is_err() {
                    break;
                }
            }
            let _ = ws.flush().await;
            tokio::time::sleep(hold).await;
        }
    }
}

fn main() {
    if arg("--serve").is_some() {
        serve();
        return;
    }
    let conns: usize = arg("--conns")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let target: u64 = arg("--calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let secs: u64 = arg("--secs").and_then(|v| v.parse().ok()).unwrap_or(300);
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = format!("ws://{}/", line.trim());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(run(url, pid, conns, target, Duration::from_secs(secs)));
    let _ = child.kill();
    let _ = child.wait();
    println!("{report}");
    if report.contains("\"failed\":0,") {
        return;
    }
    std::process::exit(1);
}

async fn run(url: String, pid: u32, conns: usize, target: u64, limit: Duration) -> String {
    let started = Instant::now();
    let idle_rss = rss_kb(pid);
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns {
        match zrpc_async::connect(&url, ClientConfig::default(), zrpc_tokio::TokioRuntime).await {
            Ok(c) => clients.push(c),
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    let connected_rss = rss_kb(pid);
    eprintln!(
        "{conns} connections in {:.1} s; server RSS {} MB idle, {} MB connected",
        started.elapsed().as_secs_f64(),
        idle_rss / 1024,
        connected_rss / 1024
    );
    let clients = Arc::new(clients);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hostile_started = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    // Good traffic: 256 callers over all connections, round robin.
    let mut workers = Vec::new();
    for w in 0..256usize {
        let (clients, done, failed) = (clients.clone(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let payload = Bytes::from(vec![b'x'; 64]);
            let mut i = w;
            while done.load(Ordering::Relaxed) < target && Instant::now() < deadline {
                let c = &clients[i % clients.len()];
                if let Err(e) = good_call(c, i % 4, &payload).await
                    && failed.fetch_add(1, Ordering::Relaxed) < 10
                {
                    eprintln!("good call failed: {e}");
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 256;
            }
        }));
    }
    // Hostile connections: a new one every 100 ms, each held 5 s.
    let hostile_task = {
        let (url, done, started_n) = (url.clone(), done.clone(), hostile_started.clone());
        tokio::spawn(async move {
            let mut k = 0;
            while done.load(Ordering::Relaxed) < target && Instant::now() < deadline {
                tokio::spawn(hostile(url.clone(), k, Duration::from_secs(5)));
                started_n.fetch_add(1, Ordering::Relaxed);
                k += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // RSS, once a second.
    let mut samples = Vec::new();
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kb(pid);
        let n = done.load(Ordering::Relaxed);
        samples.push(rss);
        println!(
            "{{\"t\":{},\"server_rss_mb\":{},\"calls\":{n},\"hostile\":{}}}",
            t0.elapsed().as_secs(),
            rss / 1024,
            hostile_started.load(Ordering::Relaxed)
        );
        if n >= target || Instant::now() >= deadline {
            break;
        }
    }
    for w in workers {
        let _ = w.await;
    }
    let _ = hostile_task.await;
    let secs = t0.elapsed().as_secs_f64();
    let third = samples.len() / 3;
    let mean = |s: &[u64]| s.iter().sum::<u64>() / s.len().max(1) as u64;
    let (mid, last) = if third > 0 {
        (
            mean(&samples[third..2 * third]),
            mean(&samples[2 * third..]),
        )
    } else {
        (0, 0)
    };
    format!(
        "{{\"calls\":{},\"failed\":{},\"calls_per_s\":{:.0},\"hostile_connections\":{},\"server_rss_mb\":{{\"idle\":{},\"connected\":{},\"max\":{},\"middle_third_mean\":{},\"last_third_mean\":{}}}}}",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        done.load(Ordering::Relaxed) as f64 / secs,
        hostile_started.load(Ordering::Relaxed),
        idle_rss / 1024,
        connected_rss / 1024,
        samples.iter().max().copied().unwrap_or(0) / 1024,
        mid / 1024,
        last / 1024
    )
}
