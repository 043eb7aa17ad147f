//! The public [`Connection`]: one type for both sides and both wire
//! formats, each format its own state machine behind the same inputs and
//! outputs (`crate::v1`, `crate::legacy`).
//!
//! The order of use follows quinn-proto: after every input
//! ([`handle_message`](Connection::handle_message),
//! [`handle_timeout`](Connection::handle_timeout),
//! [`handle_close`](Connection::handle_close)) or action
//! ([`open_call`](Connection::open_call), [`send`](Connection::send), ...),
//! drain [`poll_event`](Connection::poll_event) and
//! [`poll_transmit`](Connection::poll_transmit), then sleep until
//! [`poll_timeout`](Connection::poll_timeout) or the next message.

use std::time::Instant;

use bytes::Bytes;

use crate::call::{CallKind, Side, StreamId};
use crate::config::Config;
use crate::error::{ConnectionError, UserError};
use crate::event::{Event, Incoming, Mode, OpenOptions, Transmit};
use crate::legacy::LegacyConnection;
use crate::lifecycle::State;
use crate::metadata::Metadata;
use crate::status::Status;
use crate::v1::V1Connection;

#[derive(Debug)]
/// The state machine of the connection's wire format. Both inline: a
/// connection is one allocation, and the hot path has no indirection.
#[allow(clippy::large_enum_variant)]
enum Machine {
    V1(V1Connection),
    Legacy(LegacyConnection),
}

/// One zrpc connection, either side, v1 or legacy. See the module docs for
/// the order of calls.
#[derive(Debug)]
pub struct Connection {
    machine: Machine,
}

/// Calls the same method on whichever machine the connection runs.
macro_rules! on_machine {
    ($self:ident . $($call:tt)+) => {
        match &$self.machine {
            Machine::V1(m) => m.$($call)+,
            Machine::Legacy(m) => m.$($call)+,
        }
    };
}

macro_rules! on_machine_mut {
    ($self:ident . $($call:tt)+) => {
        match &mut $self.machine {
            Machine::V1(m) => m.$($call)+,
            Machine::Legacy(m) => m.$($call)+,
        }
    };
}

impl Connection {
    /// A new connection. In v1 mode a SETTINGS frame with this side's limits
    /// is queued as the first frame to write.
    #[inline]
    pub fn new(side: Side, mode: Mode, config: Config, now: Instant) -> Self {
        let config = config.clamped();
        let machine = match mode {
            Mode::V1 => Machine::V1(V1Connection::new(side, config, now)),
            Mode::Legacy => Machine::Legacy(LegacyConnection::new(side, config, now)),
        };
        Self { machine }
    }

    /// A connecting-side v1 connection with default limits.
    #[inline]
    pub fn client(now: Instant) -> Self {
        Self::new(Side::Client, Mode::V1, Config::default(), now)
    }

    /// An accepting-side v1 connection with default limits.
    #[inline]
    pub fn server(now: Instant) -> Self {
        Self::new(Side::Server, Mode::V1, Config::default(), now)
    }

    /// The wire format.
    #[inline]
    pub fn mode(&self) -> Mode {
        match self.machine {
            Machine::V1(_) => Mode::V1,
            Machine::Legacy(_) => Mode::Legacy,
        }
    }

    #[inline]
    fn state(&self) -> State {
        on_machine!(self.state())
    }

    /// True until the connection starts closing (an error, a close, or the
    /// end of a drain).
    #[inline]
    pub fn is_open(&self) -> bool {
        self.state() == State::Open
    }

    /// True once the connection is over and everything was written.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.state() == State::Closed
    }

    /// This side.
    #[inline]
    pub fn side(&self) -> Side {
        on_machine!(self.side())
    }

    /// The local configuration (after clamping).
    #[inline]
    pub fn config(&self) -> &Config {
        on_machine!(self.config())
    }

    /// Number of calls holding state (including responders whose final
    /// frames are still queued).
    #[inline]
    pub fn live_calls(&self) -> usize {
        on_machine!(self.live_calls())
    }

    /// True while `id` holds state.
    #[inline]
    pub fn has_call(&self, id: StreamId) -> bool {
        on_machine!(self.has_call(id))
    }

    /// Messages this side may still send on a live call before
    /// [`send`](Self::send) reports [`UserError::Blocked`].
    #[inline]
    pub fn send_credit(&self, id: StreamId) -> Option<u32> {
        on_machine!(self.send_credit(id))
    }

    /// True when [`send`](Self::send) on `id` would report
    /// [`UserError::Blocked`] now (no credit, or a send bound reached).
    #[inline]
    pub fn would_block(&self, id: StreamId) -> bool {
        on_machine!(self.would_block(id))
    }

    /// The receive window of a live call: how many messages the peer may
    /// have outstanding (delivered and not yet consumed, or in flight).
    #[inline]
    pub fn recv_window(&self, id: StreamId) -> Option<u32> {
        on_machine!(self.recv_window(id))
    }

    /// True when [`poll_transmit`](Self::poll_transmit) may have something
    /// to write: adapters use it to wake their writer only when needed.
    #[inline]
    pub fn has_transmit(&self) -> bool {
        on_machine!(self.has_transmit())
    }

    /// Received bytes held for the application (unread plus partial messages).
    #[inline]
    pub fn buffered_bytes(&self) -> usize {
        on_machine!(self.buffered_bytes())
    }

    /// Bytes of messages queued for sending (accepted by [`send`](Self::send),
    /// not yet completely taken by [`poll_transmit`](Self::poll_transmit)).
    #[inline]
    pub fn queued_send_bytes(&self) -> usize {
        on_machine!(self.queued_send_bytes())
    }

    /// True once GOAWAY was sent or received (legacy: once draining).
    #[inline]
    pub fn is_draining(&self) -> bool {
        on_machine!(self.is_draining())
    }

    /// Feeds one received WebSocket data message.
    ///
    /// A connection error is returned for logging; the connection has already
    /// queued its GOAWAY and close, and ended every call.
    #[inline]
    pub fn handle_message(&mut self, now: Instant, msg: Incoming) -> Result<(), ConnectionError> {
        on_machine_mut!(self.handle_message(now, msg))
    }

    /// The WebSocket was closed by the peer (`code` from its close frame) or
    /// the transport was lost (`code` is `None`). Every live call ends.
    #[inline]
    pub fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        on_machine_mut!(self.handle_close(code, reason))
    }

    /// Processes expired deadlines, keepalive and the idle timeout. Safe to
    /// call early.
    #[inline]
    pub fn handle_timeout(&mut self, now: Instant) {
        on_machine_mut!(self.handle_timeout(now))
    }

    /// True once a quiet connection without calls released the buffers it
    /// keeps for reuse ([`Config::release_idle_after`]); false again once a
    /// call starts. The application may release its own per-call tables then.
    #[inline]
    pub fn released(&self) -> bool {
        match &self.machine {
            Machine::V1(m) => m.released(),
            Machine::Legacy(_) => false,
        }
    }

    /// True when [`poll_event`](Self::poll_event) has an event to give.
    #[inline]
    pub fn has_event(&self) -> bool {
        on_machine!(self.has_event())
    }

    /// The next event, if any.
    #[inline]
    pub fn poll_event(&mut self) -> Option<Event> {
        on_machine_mut!(self.poll_event())
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        on_machine!(self.poll_timeout())
    }

    /// The next WebSocket message to write, if any. Control frames go first;
    /// then calls take turns, one frame (or fragment) each, so a large
    /// message never blocks the other calls.
    ///
    /// Once the peer's SETTINGS offered a batch size, small frames that are
    /// ready together go out packed in one BATCH message: one WebSocket
    /// message (and one header, mask and read) for many frames.
    #[inline]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        on_machine_mut!(self.poll_transmit())
    }

    /// Opens a call. Send its request message(s) with [`send`](Self::send)
    /// and half-close with [`close_send`](Self::close_send).
    #[inline]
    pub fn open_call(
        &mut self,
        now: Instant,
        method: &str,
        kind: CallKind,
        opts: OpenOptions,
    ) -> Result<StreamId, UserError> {
        on_machine_mut!(self.open_call(now, method, kind, opts))
    }

    /// Queues one message on a call. Fails with [`UserError::Blocked`] when
    /// the peer has granted no credit, or when the call's or the
    /// connection's queued bytes are at their bound
    /// ([`Config::max_call_send_buffer`],
    /// [`Config::max_connection_send_buffer`]); [`Event::Writable`] follows
    /// when it may send again.
    #[inline]
    pub fn send(&mut self, id: StreamId, data: Bytes) -> Result<(), UserError> {
        match &mut self.machine {
            Machine::V1(m) => m.send(id, data, None),
            Machine::Legacy(m) => m.send(id, data),
        }
    }

    /// [`send`](Self::send) with a resume cursor (PROTOCOL.md 5.6): where
    /// the caller's stream starts again, after this message, if its
    /// connection is lost. Only a responder's messages on a
    /// server-streaming call carry one ([`UserError::NotResumable`]); the
    /// call becomes resumable, so a drain ([`go_away`](Self::go_away)) ends
    /// it at once with `UNAVAILABLE` for its caller to resume elsewhere. A
    /// peer that offered no cursors (or a legacy one) gets the message
    /// alone; one longer than the peer accepts is
    /// [`UserError::CursorTooLarge`].
    #[inline]
    pub fn send_with_cursor(
        &mut self,
        id: StreamId,
        data: Bytes,
        cursor: Bytes,
    ) -> Result<(), UserError> {
        match &mut self.machine {
            Machine::V1(m) => m.send(id, data, Some(cursor)),
            Machine::Legacy(m) => m.send(id, data),
        }
    }

    /// Half-closes the caller's side: no more request messages. Merges into
    /// the last queued message when it has not been written yet.
    #[inline]
    pub fn close_send(&mut self, id: StreamId) -> Result<(), UserError> {
        on_machine_mut!(self.close_send(id))
    }

    /// Sends response headers (responder side, before any message). Optional:
    /// a call without them has empty response headers.
    #[inline]
    pub fn send_headers(&mut self, id: StreamId, metadata: Metadata) -> Result<(), UserError> {
        on_machine_mut!(self.send_headers(id, metadata))
    }

    /// Ends a call with a status and trailers (responder side). Queued
    /// messages are written first. [`Event::CallEnded`] follows at once.
    #[inline]
    pub fn finish(
        &mut self,
        id: StreamId,
        status: Status,
        trailers: Metadata,
    ) -> Result<(), UserError> {
        on_machine_mut!(self.finish(id, status, trailers))
    }

    /// Aborts a call from either side: the caller sends RESET, the responder
    /// sends a `CANCELLED` status. Queued messages are dropped.
    #[inline]
    pub fn cancel(&mut self, id: StreamId) -> Result<(), UserError> {
        on_machine_mut!(self.cancel(id))
    }

    /// The application took a message of `len` bytes from call `id`: frees
    /// its bytes and grants the peer credit for another message (credit is
    /// batched: one CREDIT frame per half window). Unknown ids are ignored.
    #[inline]
    pub fn consume(&mut self, id: StreamId, len: usize) {
        on_machine_mut!(self.consume(id, len))
    }

    /// Starts a graceful drain: GOAWAY carries the highest call id of the
    /// peer that this side processes; no new calls in either direction; the
    /// connection closes (code 1000) once every call has ended.
    #[inline]
    pub fn go_away(&mut self) {
        on_machine_mut!(self.go_away())
    }

    /// Closes at once: every live call ends with `UNAVAILABLE`, a GOAWAY with
    /// `code` is sent (v1), then the WebSocket close. Use after a drain's
    /// grace period (code 1001) or on shutdown.
    #[inline]
    pub fn close(&mut self, code: u16, reason: &str) {
        on_machine_mut!(self.close(code, reason))
    }

    /// Ends the call holding the most received bytes with
    /// `RESOURCE_EXHAUSTED`; false when no call holds any. For a bound wider
    /// than one connection (a server-wide receive budget), enforced by the
    /// adapter.
    #[inline]
    pub fn shed_largest_call(&mut self) -> bool {
        on_machine_mut!(self.shed_largest_call())
    }
}
