//! Calls the echo server's `echo` at `--url` (default ws://127.0.0.1:8060/)
//! with `--message` (default `world`), printing the replies as they stream
//! in; `--legacy` speaks the seed's format.
//!
//! `cargo run -p zrpc-smol --example smol_echo_client -- --url ws://127.0.0.1:8060/`

use zrpc_smol::{Bytes, CallOptions};

/// `--name value` from the command line, or `default`.
fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name);
    at.and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let url = arg("--url", "ws://127.0.0.1:8060/");
        let payload = Bytes::from(arg("--message", "world"));
        let legacy = std::env::args().any(|a| a == "--legacy");
        let mut call = if legacy {
            zrpc_smol::legacy_call(&url, "echo", payload).await?
        } else {
            let client = zrpc_smol::connect(&url).await?;
            client
                .server_streaming("echo", payload, CallOptions::default())
                .await?
        };
        let mut n = 0;
        while let Some(reply) = call.message().await? {
            n += 1;
            println!("reply {n}: {}", String::from_utf8_lossy(&reply));
        }
        match legacy {
            true => println!("closed normally ({n} replies)"),
            false => println!("status: OK ({n} replies)"),
        }
        Ok(())
    })
}
