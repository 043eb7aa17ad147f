//! The seed's echo client on smol: calls `echo` with `--message` (default
//! `world`) and prints the replies as they stream in. `--legacy` speaks the
//! seed's format instead of zrpc v1.
//!
//! `cargo run -p zrpc-smol --example echo_client -- --url ws://127.0.0.1:8060/`

use zrpc_smol::{Bytes, echo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let url = echo::arg("--url", "ws://127.0.0.1:8060/");
        let payload = Bytes::from(echo::arg("--message", "world"));
        if std::env::args().any(|a| a == "--legacy") {
            echo::run_legacy_client(zrpc_smol::legacy_call(&url, echo::METHOD, payload).await?)
                .await?;
        } else {
            echo::run_client(&zrpc_smol::connect(&url).await?, payload).await?;
        }
        Ok(())
    })
}
