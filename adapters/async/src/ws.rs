//! The WebSocket settings zrpc uses on both sides: read buffers, message
//! limits that fit the wire format, the `zrpc.v1` subprotocol, and how core
//! transmits become WebSocket messages.

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use zrpc_core::{Config, Mode, SUBPROTOCOL_V1, Transmit};

/// The server's default read buffer (see [`ServerConfig::read_buffer_size`]).
pub(crate) const SERVER_READ_BUFFER: usize = 1024;
/// A client's default read buffer (see
/// [`ClientConfig::read_buffer_size`](crate::ClientConfig::read_buffer_size)):
/// a client has few connections and often reads streams, so it reads more
/// at a time than a server. The WebSocket layer reads at most this much per
/// read call, so it sets the system calls per large message: 8 KiB took
/// 15-20% off a client's CPU per 64 KiB message and 30-40% per 1 MiB
/// message against 4 KiB. 32 KiB takes 5-10% more off 64 KiB messages (it
/// ran 64 B streams on tokio at 0.73-0.81x until the reader handed on
/// data in slices, `READ_SLICE` in driver.rs), for 24 KiB more
/// per connection; 64 KiB made 1 MiB messages slower (the buffers it
/// allocates then cross the allocator's mmap threshold, and every message
/// faults its pages in).
pub(crate) const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// The WebSocket limits that go with a protocol configuration and mode: no
/// WebSocket message (or frame) larger than the largest the mode allows is
/// read at all. The read buffer is a few KiB instead of tungstenite's
/// 128 KiB: it is allocated (and filled) for every connection, idle or not,
/// and larger messages are still read whole.
pub(crate) fn ws_config(core: &Config, mode: Mode, read_buffer: usize) -> WebSocketConfig {
    let max = core.max_websocket_message_for(mode);
    WebSocketConfig::default()
        .read_buffer_size(read_buffer.max(256))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// True when a `Sec-WebSocket-Protocol` header value (a comma-separated
/// list) offers `zrpc.v1`.
pub fn offers_v1<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL_V1)
}

/// The `Sec-WebSocket-Accept` value answering a `Sec-WebSocket-Key`, for
/// an HTTP server that performs the upgrade itself (see
/// `Server::serve_upgraded`).
pub fn accept_key(key: &[u8]) -> String {
    async_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// A core transmit as a WebSocket message.
pub(crate) fn to_message(t: Transmit) -> Message {
    match t {
        Transmit::Binary(b) => Message::Binary(b),
        Transmit::Text(b) => {
            Message::Text(Utf8Bytes::try_from(b).unwrap_or_else(|_| Utf8Bytes::from_static("")))
        }
        Transmit::Close { code, reason } => Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        })),
    }
}
