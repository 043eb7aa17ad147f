//! Configuration and limits, with the protocol defaults.
//!
//! Every buffer the core keeps is bounded by one of these values. The first
//! seven are advertised to the peer in SETTINGS; a peer that sends no SETTINGS
//! is assumed to use the `DEFAULT_*` values.

use std::time::Duration;

use crate::frame::Settings;

/// Default largest message after reassembly: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 4 * 1024 * 1024;
/// Default most concurrent streams the peer may open: 1,024.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default credit for request messages on each stream the peer opens: 16.
pub const DEFAULT_INITIAL_CREDIT: u32 = 16;
/// Default largest MESSAGE frame payload: 64 KiB.
pub const DEFAULT_MAX_FRAGMENT_SIZE: u32 = 64 * 1024;
/// Default largest metadata block or status: 16 KiB.
pub const DEFAULT_MAX_METADATA_SIZE: u32 = 16 * 1024;
/// Default largest BATCH payload this side accepts: 16 KiB.
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 16 * 1024;
/// Default longest resume cursor this side accepts on a response message:
/// 64 bytes (the wire allows up to 255).
pub const DEFAULT_MAX_CURSOR_SIZE: u8 = 64;
/// Default bound on bytes queued for sending on one call: 1 MiB.
pub const DEFAULT_MAX_CALL_SEND_BUFFER: usize = 1024 * 1024;
/// Default bound on bytes queued for sending on one connection: 4 MiB.
pub const DEFAULT_MAX_CONNECTION_SEND_BUFFER: usize = 4 * 1024 * 1024;
/// Smallest non-zero batch size a peer may advertise.
pub const MIN_BATCH_SIZE: u32 = 1024;
/// Smallest fragment size a peer may advertise.
pub const MIN_FRAGMENT_SIZE: u32 = 1024;
/// Smallest metadata size a peer may advertise.
pub const MIN_METADATA_SIZE: u32 = 256;
/// Largest credit a stream may hold (31 bits, as in RSocket and HTTP/2).
pub const MAX_CREDIT: u32 = (1 << 31) - 1;
/// Largest window a receiver grows a call to on its own (see
/// [`Config::stream_window_bytes`]).
pub const MAX_AUTO_WINDOW: u32 = 16 * 1024;

/// Local configuration of a [`Connection`](crate::Connection).
///
/// Out-of-range values are clamped when the connection is built: the
/// fragment size to 1 KiB..=16 MiB, the metadata size to at least 256 bytes,
/// credit to 1..=2^31-1, the message size to at least 1 byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Largest message this side accepts after reassembly. Default 4 MiB.
    /// A larger message ends its call with `RESOURCE_EXHAUSTED`.
    pub max_message_size: u32,
    /// Most calls the peer may have open toward this side. Default 1,024.
    /// An OPEN beyond it ends that call with `RESOURCE_EXHAUSTED`.
    pub max_concurrent_streams: u32,
    /// Messages the peer may send on a stream before waiting for more credit.
    /// Default 16. Unread data per stream is at most this many messages.
    pub initial_credit: u32,
    /// Largest MESSAGE frame payload this side accepts; larger messages are
    /// fragmented by the sender. Default 64 KiB.
    pub max_fragment_size: u32,
    /// Largest metadata block (request headers, response headers, or status
    /// with trailers) this side accepts. Default 16 KiB.
    pub max_metadata_size: u32,
    /// Largest BATCH payload (several small frames in one WebSocket message)
    /// this side accepts. Default 16 KiB; 0 refuses batches, and the peer
    /// then sends one frame per message. This side packs only when the peer
    /// advertised a size, up to that size.
    pub max_batch_size: u32,
    /// Longest resume cursor this side accepts on the response messages of
    /// the server-streaming calls it opens (PROTOCOL.md 5.6), offered in
    /// SETTINGS. Default 64 bytes; 0 accepts none, and the peer then sends
    /// its messages without cursors (such calls cannot be resumed). A longer
    /// cursor is a connection error (1009).
    pub max_cursor_size: u8,
    /// Accept gzip-compressed messages (PROTOCOL.md 3.4), offered in
    /// SETTINGS. Default `true`. A compressed message is inflated at most
    /// to the largest message this side accepts uncompressed (its
    /// [`max_websocket_message_for`](Self::max_websocket_message_for)): a
    /// larger content (a decompression bomb) closes the connection with
    /// 1009 once that many bytes came out, before any more is allocated.
    pub accept_gzip: bool,
    /// Compress each WebSocket message of at least this many bytes (one
    /// frame, or a BATCH of them) with gzip toward a peer that accepts it,
    /// when that saves at least a tenth of it (after a message that did
    /// not shrink so, the next 32 go as they are). Default 0: never (as
    /// gRPC and HTTP servers, compression costs CPU per byte; turn it on
    /// where bandwidth costs more, as `zrpc serve` does at 1,024 bytes).
    pub compress_min_size: u32,
    /// Receive window growth: when a call's messages are small, this side
    /// grants more credit, up to this many bytes' worth of messages (at most
    /// [`MAX_AUTO_WINDOW`] messages), so small-message streams are not held
    /// back by round trips. Default 1 MiB (64 B messages: a 16,384-message
    /// window, which keeps a stream at full speed across a loopback round
    /// trip); 0 keeps every window at
    /// `initial_credit`. The connection-wide bound still applies.
    pub stream_window_bytes: u32,
    /// Connection-wide bound on received bytes held for the application
    /// (delivered but not yet consumed, plus partial messages). Default 64 MiB.
    /// When exceeded, the call holding the most unread bytes ends with
    /// `RESOURCE_EXHAUSTED`; the other calls are unaffected.
    pub max_connection_buffer: usize,
    /// Bytes of messages one call may have queued for sending (accepted by
    /// [`send`](crate::Connection::send) and not yet written). Once reached,
    /// `send` reports [`UserError::Blocked`](crate::UserError::Blocked)
    /// whatever credit the peer granted, until the writer catches up: a peer
    /// that grants much credit and does not read cannot make this side queue
    /// without bound. One message is always accepted on a call with nothing
    /// queued, so a call holds at most this plus one message. Default 1 MiB.
    pub max_call_send_buffer: usize,
    /// Bytes of messages all calls of the connection together may have
    /// queued for sending; beyond it every call's `send` waits. Default 4 MiB.
    pub max_connection_send_buffer: usize,
    /// Drain (GOAWAY, then close with 1000) a connection that has had no
    /// live call for this long, counted from the last sign of life while a
    /// call was live (a call starting, or a message received: a PING
    /// answered on a connection without calls does not count). Default
    /// `None` (off); servers turn it on (`zrpc_async::ServerConfig` sets 5
    /// minutes).
    pub idle_timeout: Option<Duration>,
    /// Release the buffers a connection keeps for reuse (the output arena,
    /// the call table, send, event and control queues) once it has no call
    /// and has received nothing for this long: an idle connection then
    /// holds little more than its socket's buffers. They are allocated
    /// again by the next call. Default 1 s; `None` keeps them.
    pub release_idle_after: Option<Duration>,
    /// Send a PING when nothing was received for this long. Default `None`
    /// (off); servers turn it on (`zrpc_async::ServerConfig` sets 30 s).
    pub keepalive_interval: Option<Duration>,
    /// Close the connection (code 4000) when a PING gets no answer and
    /// nothing else arrives within this time. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Bound on queued control frames (PING answers, refusals) the peer makes
    /// us write without reading them. Default 4,096. Exceeding it closes the
    /// connection with code 1008.
    pub max_pending_control: usize,
    /// Legacy server: send the text message `CLOSE` before the normal close
    /// at the end of a call (the seed README's variant). Default `false`.
    pub legacy_close_text: bool,
    /// Legacy: responses queued but not yet written before `send` reports
    /// [`UserError::Blocked`](crate::UserError::Blocked). Default 16.
    pub legacy_send_queue: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            initial_credit: DEFAULT_INITIAL_CREDIT,
            max_fragment_size: DEFAULT_MAX_FRAGMENT_SIZE,
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_cursor_size: DEFAULT_MAX_CURSOR_SIZE,
            accept_gzip: true,
            compress_min_size: 0,
            stream_window_bytes: 1024 * 1024,
            max_connection_buffer: 64 * 1024 * 1024,
            max_call_send_buffer: DEFAULT_MAX_CALL_SEND_BUFFER,
            max_connection_send_buffer: DEFAULT_MAX_CONNECTION_SEND_BUFFER,
            idle_timeout: None,
            release_idle_after: Some(Duration::from_secs(1)),
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            max_pending_control: 4096,
            legacy_close_text: false,
            legacy_send_queue: 16,
        }
    }
}

impl Config {
    pub(crate) fn clamped(mut self) -> Self {
        self.max_message_size = self.max_message_size.max(1);
        self.initial_credit = self.initial_credit.clamp(1, MAX_CREDIT);
        self.max_fragment_size = self
            .max_fragment_size
            .clamp(MIN_FRAGMENT_SIZE, 16 * 1024 * 1024);
        self.max_metadata_size = self.max_metadata_size.clamp(MIN_METADATA_SIZE, 1 << 20);
        if self.max_batch_size != 0 {
            self.max_batch_size = self.max_batch_size.clamp(MIN_BATCH_SIZE, 16 * 1024 * 1024);
        }
        self.legacy_send_queue = self.legacy_send_queue.max(1);
        self.max_pending_control = self.max_pending_control.max(16);
        self.max_call_send_buffer = self.max_call_send_buffer.max(1);
        self.max_connection_send_buffer = self.max_connection_send_buffer.max(1);
        self
    }

    /// The SETTINGS this side advertises.
    pub fn settings(&self) -> Settings {
        Settings {
            max_message_size: Some(self.max_message_size),
            max_concurrent_streams: Some(self.max_concurrent_streams),
            initial_credit: Some(self.initial_credit),
            max_fragment_size: Some(self.max_fragment_size),
            max_metadata_size: Some(self.max_metadata_size),
            max_batch_size: (self.max_batch_size > 0).then_some(self.max_batch_size),
            max_cursor_size: (self.max_cursor_size > 0).then_some(self.max_cursor_size as u32),
            compression: self.accept_gzip.then_some(crate::frame::COMPRESSION_GZIP),
        }
    }

    /// Largest WebSocket message a peer respecting these limits can send in
    /// either mode (v1: one frame or BATCH; legacy: a whole request of up to
    /// `max_message_size` plus the method name).
    pub fn max_websocket_message(&self) -> usize {
        self.max_websocket_message_for(crate::Mode::V1)
            .max(self.max_websocket_message_for(crate::Mode::Legacy))
    }

    /// Largest WebSocket message a peer respecting these limits can send in
    /// `mode`: the WebSocket layer's own limit once the mode is known, so a
    /// v1 peer cannot make this side buffer a message larger than a frame.
    pub fn max_websocket_message_for(&self, mode: crate::Mode) -> usize {
        let c = self.clone().clamped();
        match mode {
            crate::Mode::V1 => {
                crate::frame::HEADER_LEN
                    + (c.max_fragment_size as usize)
                        .max(c.max_metadata_size as usize + crate::frame::MAX_METHOD_LEN + 16)
                        .max(c.max_batch_size as usize)
            }
            crate::Mode::Legacy => c.max_message_size as usize + crate::frame::MAX_METHOD_LEN + 4,
        }
    }
}

/// The limits the peer advertised (or the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerLimits {
    pub(crate) max_message_size: u32,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) initial_credit: u32,
    pub(crate) max_fragment_size: u32,
    pub(crate) max_metadata_size: u32,
    /// 0: the peer accepts no BATCH.
    pub(crate) max_batch_size: u32,
    /// 0: the peer accepts no resume cursor.
    pub(crate) max_cursor_size: u8,
    /// The peer accepts gzip-compressed messages.
    pub(crate) gzip: bool,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            initial_credit: DEFAULT_INITIAL_CREDIT,
            max_fragment_size: DEFAULT_MAX_FRAGMENT_SIZE,
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
            max_batch_size: 0,
            max_cursor_size: 0,
            gzip: false,
        }
    }
}

impl PeerLimits {
    /// Applies received SETTINGS, rejecting values no conforming peer sends.
    pub(crate) fn apply(&mut self, s: &Settings) -> Result<(), &'static str> {
        if let Some(v) = s.max_message_size {
            if v == 0 {
                return Err("SETTINGS max_message_size of 0");
            }
            self.max_message_size = v;
        }
        if let Some(v) = s.max_concurrent_streams {
            self.max_concurrent_streams = v;
        }
        if let Some(v) = s.initial_credit {
            if v == 0 || v > MAX_CREDIT {
                return Err("SETTINGS initial_credit outside 1..=2^31-1");
            }
            self.initial_credit = v;
        }
        if let Some(v) = s.max_fragment_size {
            if v < MIN_FRAGMENT_SIZE {
                return Err("SETTINGS max_fragment_size below 1024");
            }
            self.max_fragment_size = v;
        }
        if let Some(v) = s.max_metadata_size {
            if v < MIN_METADATA_SIZE {
                return Err("SETTINGS max_metadata_size below 256");
            }
            self.max_metadata_size = v;
        }
        if let Some(v) = s.max_batch_size {
            if v != 0 && v < MIN_BATCH_SIZE {
                return Err("SETTINGS max_batch_size between 1 and 1023");
            }
            self.max_batch_size = v;
        }
        if let Some(v) = s.max_cursor_size {
            self.max_cursor_size =
                u8::try_from(v).map_err(|_| "SETTINGS max_cursor_size above 255")?;
        }
        if let Some(v) = s.compression {
            // Unknown bits name compressions this side does not know.
            self.gzip = v & crate::frame::COMPRESSION_GZIP != 0;
        }
        Ok(())
    }
}
