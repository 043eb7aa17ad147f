//! A live call that waits costs (nearly) no CPU: a server stream and a bidi
//! call held open with nothing sent, over real sockets on 127.0.0.1, on
//! tokio's multi-thread runtime and on smol. Client and server share this
//! process, so the process's CPU time covers both; the bound (0.2 s for a
//! 2 s hold) is far above what sleeping costs and far below what a timer
//! loop costs (a core's worth: ~2 s).
//!
//! One test runs both runtimes in turn, so no other test of this binary
//! adds CPU time while one is measured.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_tokio::*;

/// User + system CPU time of this process so far (`/proc/self/stat`).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports these in USER_HZ, 100 per second on every platform it
    // exposes to user space.
    Duration::from_millis(ticks * 10)
}

/// Two methods that wait for their cancellation; each says when it runs.
fn router(started: tokio::sync::mpsc::UnboundedSender<()>) -> Router {
    let started2 = started.clone();
    Router::new()
        .server_streaming("idle.I/Watch", move |ctx, _req: Bytes, _sink| {
            let started = started.clone();
            async move {
                let _ = started.send(());
                ctx.cancelled().await;
                Ok(())
            }
        })
        .bidi("idle.I/Chat", move |ctx, _reqs, _sink| {
            let started = started2.clone();
            async move {
                let _ = started.send(());
                ctx.cancelled().await;
                Ok(())
            }
        })
}

async fn hold_idle_calls<R: Runtime>(rt: R) -> Duration {
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::new(router(tx), rt.clone());
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
    });
    let client = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    let watch = client
        .server_streaming(
            "idle.I/Watch",
            Bytes::from_static(b"{}"),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let chat = client
        .bidi("idle.I/Chat", CallOptions::default())
        .await
        .unwrap();
    // Both handlers run before the clock starts.
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    assert_eq!(server.live_calls(), 2);
    let before = cpu_time();
    rt.sleep_until(Instant::now() + Duration::from_secs(2))
        .await;
    let used = cpu_time() - before;
    assert_eq!(server.live_calls(), 2, "the idle calls are still live");
    drop((watch, chat));
    server.shutdown().await;
    used
}

#[test]
fn idle_live_calls_cost_no_cpu_on_both_runtimes() {
    let tokio_used = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(hold_idle_calls(TokioRuntime));
    let smol_used = smol::block_on(hold_idle_calls(zrpc_smol::SmolRuntime));
    eprintln!("CPU for a 2 s hold: tokio {tokio_used:?}, smol {smol_used:?}");
    assert!(
        tokio_used < Duration::from_millis(200),
        "tokio: {tokio_used:?} of CPU"
    );
    assert!(
        smol_used < Duration::from_millis(200),
        "smol: {smol_used:?} of CPU"
    );
}
