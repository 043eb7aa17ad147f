//! The seed's echo server on smol: `echo` streams the request back
//! `--count` times (default 10), `--interval-ms` apart (default 500), over
//! zrpc v1 and, for the seed's own clients, the legacy format, on `/`.
//!
//! `cargo run -p zrpc-smol --example echo_server -- --addr 127.0.0.1:8060`

use std::time::Duration;

use zrpc_smol::{Server, SmolRuntime, echo};

fn main() -> std::io::Result<()> {
    let addr = echo::arg("--addr", "127.0.0.1:8060");
    let count = echo::arg("--count", "10")
        .parse()
        .expect("--count takes a number");
    let interval = Duration::from_millis(
        echo::arg("--interval-ms", "500")
            .parse()
            .expect("--interval-ms takes a number"),
    );
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .expect("Ctrl-C handler");
    smol::block_on(async {
        let server = Server::new(echo::router(SmolRuntime, count, interval), SmolRuntime);
        let listener = smol::net::TcpListener::bind(&addr).await?;
        println!(
            "echo server on ws://{}/ (zrpc.v1 and legacy); Ctrl-C stops it",
            listener.local_addr()?
        );
        let serving = smol::spawn({
            let server = server.clone();
            async move { zrpc_smol::serve(&server, listener).await }
        });
        let _ = stop_rx.recv().await;
        println!("shutting down: draining calls");
        server.shutdown().await;
        serving.await
    })
}
