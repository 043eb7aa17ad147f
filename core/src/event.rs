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

/// Per-call options for [`Connection::open_call`](crate::Connection::open_call).
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Relative deadline; the call ends with `DEADLINE_EXCEEDED` on both sides
    /// when it passes.
    pub timeout: Option<Duration>,
    /// Request headers.
    pub metadata: Metadata,
    /// When a failed call may be sent again. The core does not act on it:
    /// a client that reconnects does (`zrpc_async::Channel`). `None`: only
    /// calls the peer never processed are sent again.
    pub retry: Option<RetryPolicy>,
}

impl CallOptions {
    /// These options with a deadline `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// These options with a retry policy (for calls that are safe to
    /// repeat: the method is idempotent).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// When a call that failed is sent again, for methods that are safe to
/// repeat (idempotent). A call the peer never processed (see
/// [`Status::is_not_processed`]) is always sent again, policy or not, and
/// does not count as an attempt; a call that was in progress when its
/// connection was lost is sent again only under a policy whose `codes` hold
/// its status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (1: never again).
    pub max_attempts: u32,
    /// Wait before the second attempt; it doubles for each further one,
    /// with random jitter (0.5× to 1×).
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// The status codes worth another attempt.
    pub codes: Vec<crate::status::Code>,
}

impl RetryPolicy {
    /// For idempotent methods: 3 attempts, 50 ms then 100 ms apart (at
    /// most 1 s), on `UNAVAILABLE` (the connection was lost).
    pub fn idempotent() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            codes: vec![crate::status::Code::Unavailable],
        }
    }

    /// Whether a call that failed with `status` after `attempts` attempts
    /// may be sent once more.
    pub fn allows(&self, attempts: u32, status: &Status) -> bool {
        attempts < self.max_attempts && self.codes.contains(&status.code())
    }

    /// The wait (before jitter) ahead of attempt `attempt` (2 = the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(16);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
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
