//! What goes in and out of a [`Connection`](crate::Connection): received
//! WebSocket messages, messages to write, call options, and the events the
//! application handles.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::call::{CallKind, Method, StreamId};
use crate::error::ConnectionError;
use crate::metadata::Metadata;
use crate::status::Status;

/// The wire format spoken on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Protocol v1 (WebSocket subprotocol `zrpc.v1`).
    V1,
    /// The seed format: one call per connection, no framing.
    Legacy,
}

/// A received WebSocket data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A binary message.
    Binary(Bytes),
    /// A text message (its UTF-8 bytes).
    Text(Bytes),
}

/// A WebSocket message the adapter must write, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A binary message.
    Binary(Bytes),
    /// A text message (legacy mode only).
    Text(Bytes),
    /// Close the WebSocket with this code and reason; nothing follows.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason (at most 123 bytes).
        reason: String,
    },
}

/// Per-call options for [`Connection::open_call`](crate::Connection::open_call):
/// what the connection itself acts on.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Relative deadline; the call ends with `DEADLINE_EXCEEDED` on both sides
    /// when it passes.
    pub timeout: Option<Duration>,
    /// Request headers.
    pub metadata: Metadata,
}

impl OpenOptions {
    /// These options with a deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A call the peer opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingCall {
    /// The call's id.
    pub id: StreamId,
    /// The method called.
    pub method: Method,
    /// The call kind.
    pub kind: CallKind,
    /// Request headers.
    pub metadata: Metadata,
    /// When the call expires (the caller's timeout, counted from receipt).
    pub deadline: Option<Instant>,
}

/// Something that happened on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a call; this side responds.
    CallOpened(IncomingCall),
    /// Response headers arrived (caller side). Absent when the responder sent none.
    Headers {
        /// The call.
        id: StreamId,
        /// Response headers.
        metadata: Metadata,
    },
    /// A whole message arrived. Call [`Connection::consume`](crate::Connection::consume) once the
    /// application has taken it, to grant the peer credit for another.
    Message {
        /// The call.
        id: StreamId,
        /// The message, a slice of the received frame when it was not fragmented.
        data: Bytes,
        /// Its resume cursor, when the responder stamped one (a slice of
        /// the frame): where a resumed call starts again after this
        /// message (PROTOCOL.md 5.6).
        cursor: Option<Bytes>,
    },
    /// The caller half-closed: no request messages follow (responder side).
    RecvClosed {
        /// The call.
        id: StreamId,
    },
    /// Credit arrived after [`UserError::Blocked`](crate::UserError::Blocked): the call may send again.
    Writable {
        /// The call.
        id: StreamId,
    },
    /// The call ended, with its final status. Emitted exactly once per call
    /// on each side; the call's state is gone afterwards.
    CallEnded {
        /// The call.
        id: StreamId,
        /// Final status.
        status: Status,
        /// Trailers (empty unless the responder sent some).
        trailers: Metadata,
    },
    /// The peer is draining: calls above `last_stream_id` were not processed
    /// (they ended with `UNAVAILABLE` and are safe to retry); no new calls.
    GoAway {
        /// Highest id of ours the peer processes.
        last_stream_id: StreamId,
    },
    /// A stream slot freed up after [`UserError::StreamLimit`](crate::UserError::StreamLimit).
    CanOpen,
    /// The connection is over; every call has ended. `None` after a graceful
    /// drain or a normal close.
    Closed {
        /// Why, when it was not graceful.
        error: Option<ConnectionError>,
    },
}
