//! The seed's echo server on smol: `echo` streams the request back
//! `--count` times (default 10), `--interval-ms` apart (default 500), for
//! zrpc v1 and the seed's own (legacy) clients, on `/`; Ctrl-C drains and exits.
//!
//! `cargo run -p zrpc-smol --example echo_server -- --addr 127.0.0.1:8060`

fn main() -> std::io::Result<()> {
    let (tx, rx) = smol::channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })
    .expect("Ctrl-C handler");
    let ctrl_c = async move {
        let _ = rx.recv().await;
    };
    smol::block_on(zrpc_smol::echo::server_main(zrpc_smol::SmolRuntime, ctrl_c))
}
