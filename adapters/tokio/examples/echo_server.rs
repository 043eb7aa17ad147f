//! The seed's echo server on tokio: `echo` streams the request back
//! `--count` times (default 10), `--interval-ms` apart (default 500), for
//! zrpc v1 and the seed's own (legacy) clients, on `/`; Ctrl-C drains and exits.
//!
//! `cargo run -p zrpc-tokio --example echo_server -- --addr 127.0.0.1:8060`

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    zrpc_tokio::echo::server_main(zrpc_tokio::TokioRuntime, ctrl_c).await
}
