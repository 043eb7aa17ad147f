//! The seed's echo client on tokio: calls `echo` with `--message` (default
//! `world`) and prints the replies as they stream in; `--legacy` speaks the
//! seed's format.
//!
//! `cargo run -p zrpc-tokio --example echo_client -- --url ws://127.0.0.1:8060/`

#[tokio::main]
async fn main() -> Result<(), zrpc_tokio::Error> {
    zrpc_tokio::echo::client_main(zrpc_tokio::TokioRuntime).await
}
