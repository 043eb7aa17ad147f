//! The seed's echo server on smol: `echo` streams the request back
//! `--count` times (default 10), `--interval-ms` apart (default 500), for
//! zrpc v1 and the seed's own (legacy) clients, on `/`; Ctrl-C drains and exits.
//!
//! `cargo run -p zrpc-smol --example smol_echo_server -- --addr 127.0.0.1:8060`

use std::time::Duration;

use zrpc_smol::{Bytes, Router, Server, SmolRuntime, Status};

/// `--name value` from the command line, or `default`.
fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name);
    at.and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// `echo`: the request back `count` times, `interval` apart.
fn echo(count: u32, interval: Duration) -> Router {
    Router::new().server_streaming("echo", move |_ctx, payload: Bytes, mut sink| async move {
        for i in 0..count {
            if i > 0 {
                smol::Timer::after(interval).await;
            }
            sink.send(payload.clone()).await?;
        }
        Ok::<(), Status>(())
    })
}

fn main() -> std::io::Result<()> {
    let count = arg("--count", "10")
        .parse()
        .expect("--count takes a number");
    let interval_ms = arg("--interval-ms", "500")
        .parse()
        .expect("--interval-ms takes a number");
    // smol has no signal handling of its own.
    let (tx, rx) = smol::channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .expect("Ctrl-C handler");
    smol::block_on(async {
        let server = Server::new(echo(count, Duration::from_millis(interval_ms)), SmolRuntime);
        let listener = smol::net::TcpListener::bind(arg("--addr", "127.0.0.1:8060")).await?;
        println!(
            "echo server on ws://{}/ (zrpc.v1 and legacy); Ctrl-C stops it",
            listener.local_addr()?
        );
        let serving = smol::spawn({
            let server = server.clone();
            async move { zrpc_smol::serve(&server, listener).await }
        });
        let _ = rx.recv().await;
        println!("shutting down: draining calls");
        server.shutdown().await;
        serving.await
    })
}
