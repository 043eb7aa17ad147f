//! The length-prefixed framing of gRPC, gRPC-Web (binary and base64 text)
//! and Connect: arbitrary request bodies, cut into arbitrary chunks, under
//! an arbitrary message limit. Nothing may panic, no message over the limit
//! is handed over, and the status endings encode any message and metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u16, Vec<&[u8]>, &str, &str, &[u8])| {
    let (mode, max, chunks, message, key, value) = input;
    let _ = zrpc_async::__fuzz::envelope_decode(mode, max as usize, &chunks);
    assert_eq!(zrpc_async::__fuzz::endings(message, key, value), 4);
});
