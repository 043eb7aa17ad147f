//! The seed's echo server on tokio: `echo` streams the request back
//! `--count` times (default 10), `--interval-ms` apart (default 500), over
//! zrpc v1 and, for the seed's own clients, the legacy format, on `/`.
//!
//! `cargo run -p zrpc-tokio --example echo_server -- --addr 127.0.0.1:8060`

use std::time::Duration;

use zrpc_tokio::{Server, TokioRuntime, echo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = echo::arg("--addr", "127.0.0.1:8060");
    let count = echo::arg("--count", "10")
        .parse()
        .expect("--count takes a number");
    let interval = Duration::from_millis(
        echo::arg("--interval-ms", "500")
            .parse()
            .expect("--interval-ms takes a number"),
    );
    let server = Server::new(echo::router(TokioRuntime, count, interval), TokioRuntime);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "echo server on ws://{}/ (zrpc.v1 and legacy); Ctrl-C stops it",
        listener.local_addr()?
    );
    let serving = tokio::spawn({
        let server = server.clone();
        async move { zrpc_tokio::serve(&server, listener).await }
    });
    tokio::signal::ctrl_c().await?;
    println!("shutting down: draining calls");
    server.shutdown().await;
    serving.await.expect("accept loop")?;
    Ok(())
}
