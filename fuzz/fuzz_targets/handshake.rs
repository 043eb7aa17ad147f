//! The server's side of the handshake: arbitrary bytes as an HTTP upgrade
//! request head (zrpc reads and parses it before the WebSocket layer, to
//! choose the limits), and arbitrary `Origin` / `Host` values against the
//! origin policy. Nothing may panic, and a head is only accepted whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &str, Option<&str>, Vec<String>, Vec<String>, bool)| {
    let (head, origin, host, allowed, hosts, https) = input;
    if zrpc_async::__fuzz::parse_upgrade_head(head).is_some() {
        // A complete head ends with an empty line.
        assert!(head.windows(2).any(|w| w == b"\n\n" || w == b"\r\n"));
    }
    let _ = zrpc_async::__fuzz::origin_allowed(origin, host, &allowed, &hosts, https);
});
