//! The seed's echo client on tokio: calls `echo` with `--message` (default
//! `world`) and prints the replies as they stream in. `--legacy` speaks the
//! seed's format instead of zrpc v1.
//!
//! `cargo run -p zrpc-tokio --example echo_client -- --url ws://127.0.0.1:8060/`

use zrpc_tokio::{Bytes, echo};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = echo::arg("--url", "ws://127.0.0.1:8060/");
    let payload = Bytes::from(echo::arg("--message", "world"));
    if std::env::args().any(|a| a == "--legacy") {
        echo::run_legacy_client(zrpc_tokio::legacy_call(&url, echo::METHOD, payload).await?)
            .await?;
    } else {
        echo::run_client(&zrpc_tokio::connect(&url).await?, payload).await?;
    }
    Ok(())
}
