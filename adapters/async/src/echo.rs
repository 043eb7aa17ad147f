//! The seed's echo service, shared by the examples of both adapters:
//! method `echo` streams the request payload back `count` times,
//! `interval` apart, then ends the call. Legacy clients reach the same
//! handler and get their echoes and a normal close.

use std::time::Duration;

use bytes::Bytes;

use crate::runtime::Runtime;
use crate::shared::now;
use crate::{Router, Status};

/// The echo method's name.
pub const METHOD: &str = "echo";

/// A router serving `echo` (server-streaming).
pub fn router<R: Runtime>(rt: R, count: u32, interval: Duration) -> Router {
    Router::new().server_streaming(METHOD, move |_ctx, payload: Bytes, mut sink| {
        let rt = rt.clone();
        async move {
            for i in 0..count {
                if i > 0 && !interval.is_zero() {
                    rt.sleep_until(now() + interval).await;
                }
                sink.send(payload.clone()).await?;
            }
            Ok::<(), Status>(())
        }
    })
}

/// Parses `--name value` from the command line, with a default.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// The echo server example: serves `echo` on `--addr` (default
/// 127.0.0.1:8060) for zrpc v1 and legacy clients, streaming each request
/// back `--count` times (default 10) `--interval-ms` apart (default 500),
/// until `stop` resolves; then drains and returns.
pub async fn server_main<R: Runtime>(
    rt: R,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use crate::runtime::Listener;
    let count = arg("--count", "10")
        .parse()
        .expect("--count takes a number");
    let interval = Duration::from_millis(
        arg("--interval-ms", "500")
            .parse()
            .expect("--interval-ms takes a number"),
    );
    let server = crate::Server::new(router(rt.clone(), count, interval), rt.clone());
    let listener = rt.bind(arg("--addr", "127.0.0.1:8060")).await?;
    println!(
        "echo server on ws://{}/ (zrpc.v1 and legacy); Ctrl-C stops it",
        listener.local_addr()?
    );
    let serving = server.serve(listener);
    let stopped = async {
        stop.await;
        println!("shutting down: draining calls");
        server.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    futures_lite::future::zip(serving, stopped).await.0
}

/// The echo client example: calls `echo` at `--url` (default
/// ws://127.0.0.1:8060/) with `--message` (default `world`), printing the
/// replies as they stream in; `--legacy` speaks the seed's format.
pub async fn client_main<R: Runtime>(rt: R) -> Result<(), crate::Error> {
    let url = arg("--url", "ws://127.0.0.1:8060/");
    let payload = Bytes::from(arg("--message", "world"));
    if std::env::args().any(|a| a == "--legacy") {
        run_legacy_client(crate::legacy_call(&url, METHOD, payload, rt).await?).await?;
    } else {
        run_client(
            &crate::connect(&url, crate::ClientConfig::default(), rt).await?,
            payload,
        )
        .await?;
    }
    Ok(())
}

/// The echo client: calls `echo` with `payload` and prints every reply as
/// it arrives, then the final status. Returns the number of replies.
pub async fn run_client(client: &crate::Client, payload: Bytes) -> Result<usize, Status> {
    let mut call = client
        .server_streaming(METHOD, payload, crate::CallOptions::default())
        .await?;
    let mut n = 0;
    while let Some(reply) = call.message().await? {
        n += 1;
        println!("reply {n}: {}", String::from_utf8_lossy(&reply));
    }
    println!("status: OK ({n} replies)");
    Ok(n)
}

/// The legacy echo client: the seed's format, replies until the close.
pub async fn run_legacy_client(mut call: crate::Call) -> Result<usize, Status> {
    let mut n = 0;
    while let Some(reply) = call.message().await? {
        n += 1;
        println!("reply {n}: {}", String::from_utf8_lossy(&reply));
    }
    println!("closed normally ({n} replies)");
    Ok(n)
}
