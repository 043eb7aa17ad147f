//! The seed's echo client on smol: calls `echo` with `--message` (default
//! `world`) and prints the replies as they stream in; `--legacy` speaks the
//! seed's format.
//!
//! `cargo run -p zrpc-smol --example echo_client -- --url ws://127.0.0.1:8060/`

fn main() -> Result<(), zrpc_smol::Error> {
    smol::block_on(zrpc_smol::echo::client_main(zrpc_smol::SmolRuntime))
}
