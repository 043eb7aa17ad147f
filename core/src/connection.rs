//! The connection state machine: received WebSocket messages in, call events
//! out; application actions in, WebSocket messages to write out.
//!
//! The order of use follows quinn-proto: after every input
//! ([`handle_message`](Connection::handle_message),
//! [`handle_timeout`](Connection::handle_timeout),
//! [`handle_close`](Connection::handle_close)) or action
//! ([`open_call`](Connection::open_call), [`send`](Connection::send), ...),
//! drain [`poll_event`](Connection::poll_event) and
//! [`poll_transmit`](Connection::poll_transmit), then sleep until
//! [`poll_timeout`](Connection::poll_timeout) or the next message.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::call::{CallKind, Method, Side, StreamId, StreamIdMap};
use crate::error::{ConnectionError, UserError};
use crate::frame::{
    self, BATCH_ENTRY_PREFIX, FLAG_END_STREAM, FLAG_MORE, Frame, HEADER_LEN, MAX_METHOD_LEN, Open,
};
use crate::legacy;
use crate::limits::{Config, MAX_AUTO_WINDOW, MAX_CREDIT, PeerLimits};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::stream::{Out, Role, Stream};

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

/// Per-call options for [`Connection::open_call`].
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Relative deadline; the call ends with `DEADLINE_EXCEEDED` on both sides
    /// when it passes.
    pub timeout: Option<Duration>,
    /// Request headers.
    pub metadata: Metadata,
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
    /// A whole message arrived. Call [`Connection::consume`] once the
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
    /// Credit arrived after [`UserError::Blocked`]: the call may send again.
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
    /// A stream slot freed up after [`UserError::StreamLimit`].
    CanOpen,
    /// The connection is over; every call has ended. `None` after a graceful
    /// drain or a normal close.
    Closed {
        /// Why, when it was not graceful.
        error: Option<ConnectionError>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// Only queued output (GOAWAY, close) remains.
    Closing,
    Closed,
}

type StreamMap = StreamIdMap<Stream>;

/// What goes out next: a frame chosen but not yet encoded (so it can be
/// written alone or straight into a BATCH), or a message written as it is.
#[derive(Debug)]
enum Next {
    Frame(Piece),
    /// Never packed: legacy messages, close.
    Other(Transmit),
}

/// A v1 frame waiting to be encoded.
#[derive(Debug)]
enum Piece {
    Control(Frame),
    /// A stream frame encoded when it was queued (OPEN, HEADERS, STATUS...).
    Encoded(Bytes),
    /// A MESSAGE frame carrying `data[lo..hi]`.
    Message {
        id: StreamId,
        flags: u8,
        data: Bytes,
        lo: usize,
        hi: usize,
    },
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Control(f) => f.encoded_len(),
            Piece::Encoded(b) => b.len(),
            Piece::Message { lo, hi, .. } => HEADER_LEN + hi - lo,
        }
    }

    /// Writes a BATCH entry: the length (which fits in a `u16`: checked by
    /// the caller against the batch budget), then the frame.
    fn write_entry(self, out: &mut BytesMut, len: usize) {
        out.put_u16(len as u16);
        self.write(out);
    }

    /// Writes the frame.
    fn write(self, out: &mut BytesMut) {
        match self {
            Piece::Control(f) => f.encode(out),
            Piece::Encoded(b) => out.put_slice(&b),
            Piece::Message {
                id,
                flags,
                data,
                lo,
                hi,
            } => put_message(out, id, flags, &data[lo..hi]),
        }
    }
}

/// Writes a MESSAGE frame: the header, then the payload.
fn put_message(out: &mut BytesMut, id: StreamId, flags: u8, payload: &[u8]) {
    out.put_u8(frame::kind::MESSAGE);
    out.put_u8(flags);
    out.put_u32(id.0);
    out.put_slice(payload);
}

/// How a locally ended call tells the peer.
enum Notify {
    Nothing,
    Reset(Code),
    Status,
}

/// Largest output arena chunk (frames are carved out of it). Chunks start at
/// `MIN_CHUNK` and double with each new one, so an idle connection keeps a
/// small buffer and a busy one soon allocates rarely.
const OUT_CHUNK: usize = 16 * 1024;
const MIN_CHUNK: usize = 512;

/// A queued message of `len` bytes of stream `id` was completely taken for
/// writing (`conn_queued`: the connection's queued bytes after it): the
/// call may be writable again. The connection's own count and its waiters
/// are the caller's (`release_send`).
fn took_message(
    s: &mut Stream,
    id: StreamId,
    len: usize,
    config: &Config,
    conn_queued: usize,
    events: &mut VecDeque<Event>,
) {
    s.queued -= len;
    if s.want_writable
        && s.send_credit > 0
        && s.queued < config.max_call_send_buffer
        && conn_queued < config.max_connection_send_buffer
    {
        s.want_writable = false;
        events.push_back(Event::Writable { id });
    }
}

/// `at + d`, or `None` when that is too far in the future to represent (a
/// timer that never fires).
fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

/// Makes room for `len` more bytes in `buf`, a chunk at a time.
fn room(buf: &mut BytesMut, len: usize, chunk: &mut usize) {
    if buf.capacity() - buf.len() < len {
        buf.reserve(len.max(*chunk));
        *chunk = (*chunk * 2).min(OUT_CHUNK);
    }
}
/// Send queues of ended calls kept for reuse.
const SPARE_QUEUES: usize = 64;

/// One zrpc connection, either side, v1 or legacy. See the module docs for
/// the order of calls.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    mode: Mode,
    config: Config,
    peer: PeerLimits,
    state: State,
    streams: StreamMap,
    next_local_id: u64,
    max_remote_id: u32,
    local_open: u32,
    remote_open: u32,
    got_first_frame: bool,
    goaway_sent: Option<u32>,
    goaway_received: Option<u32>,
    want_can_open: bool,
    buffered: usize,
    /// Bytes of messages queued for sending over all calls.
    queued_send: usize,
    /// Calls whose `send` was refused because `queued_send` was at its bound.
    send_waiters: Vec<StreamId>,
    /// Since when the connection has had no live call (for `idle_timeout`);
    /// `None` while calls are live, or until the next timer notices.
    idle_since: Option<Instant>,
    events: VecDeque<Event>,
    control: VecDeque<Frame>,
    ready: VecDeque<StreamId>,
    pending_close: Option<(u16, String)>,
    deadlines: BinaryHeap<Reverse<(Instant, StreamId)>>,
    last_recv: Instant,
    ping_sent: Option<Instant>,
    ping_seq: u64,
    legacy_method: Option<Method>,
    out: BytesMut,
    /// Arena for BATCH messages.
    batch_out: BytesMut,
    /// Size of the next arena chunk (see [`room`]).
    chunk: usize,
    /// A frame taken while packing that did not fit; it goes next.
    stashed: Option<Next>,
    /// Our first frame (SETTINGS in v1) went out; only later frames pack.
    settings_sent: bool,
    spare_queues: Vec<VecDeque<Out>>,
    max_ws_message: usize,
}

impl Connection {
    /// A new connection. In v1 mode a SETTINGS frame with this side's limits
    /// is queued as the first frame to write.
    pub fn new(side: Side, mode: Mode, config: Config, now: Instant) -> Self {
        let config = config.clamped();
        let max_ws_message = config.max_websocket_message();
        let mut control = VecDeque::new();
        if mode == Mode::V1 {
            control.push_back(Frame::Settings(config.settings()));
        }
        Self {
            side,
            mode,
            config,
            peer: PeerLimits::default(),
            state: State::Open,
            streams: StreamMap::default(),
            next_local_id: side.first_id() as u64,
            max_remote_id: 0,
            local_open: 0,
            remote_open: 0,
            got_first_frame: false,
            goaway_sent: None,
            goaway_received: None,
            want_can_open: false,
            buffered: 0,
            queued_send: 0,
            send_waiters: Vec::new(),
            idle_since: Some(now),
            events: VecDeque::new(),
            control,
            ready: VecDeque::new(),
            pending_close: None,
            deadlines: BinaryHeap::new(),
            last_recv: now,
            ping_sent: None,
            ping_seq: 0,
            legacy_method: None,
            out: BytesMut::new(),
            batch_out: BytesMut::new(),
            chunk: MIN_CHUNK,
            stashed: None,
            settings_sent: false,
            spare_queues: Vec::new(),
            max_ws_message,
        }
    }

    /// A connecting-side v1 connection with default limits.
    pub fn client(now: Instant) -> Self {
        Self::new(Side::Client, Mode::V1, Config::default(), now)
    }

    /// An accepting-side v1 connection with default limits.
    pub fn server(now: Instant) -> Self {
        Self::new(Side::Server, Mode::V1, Config::default(), now)
    }

    /// This side.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The wire format.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The local configuration (after clamping).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of calls holding state (including responders whose final
    /// frames are still queued).
    pub fn live_calls(&self) -> usize {
        self.streams.len()
    }

    /// True while `id` holds state.
    pub fn has_call(&self, id: StreamId) -> bool {
        self.streams.contains_key(&id)
    }

    /// Messages this side may still send on a live call before
    /// [`send`](Self::send) reports [`UserError::Blocked`].
    pub fn send_credit(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(|s| s.send_credit)
    }

    /// True when [`send`](Self::send) on `id` would report
    /// [`UserError::Blocked`] now (no credit, or a send bound reached).
    pub fn would_block(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_some_and(|s| {
            s.send_credit == 0
                || s.queued >= self.config.max_call_send_buffer
                || self.queued_send >= self.config.max_connection_send_buffer
        })
    }

    /// The receive window of a live call: how many messages the peer may
    /// have outstanding (delivered and not yet consumed, or in flight).
    pub fn recv_window(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(|s| s.window)
    }

    /// True when [`poll_transmit`](Self::poll_transmit) may have something
    /// to write: adapters use it to wake their writer only when needed.
    pub fn has_transmit(&self) -> bool {
        self.state != State::Closed
            && (self.stashed.is_some()
                || !self.control.is_empty()
                || !self.ready.is_empty()
                || self.pending_close.is_some())
    }

    /// Received bytes held for the application (unread plus partial messages).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Bytes of messages queued for sending (accepted by [`send`](Self::send),
    /// not yet completely taken by [`poll_transmit`](Self::poll_transmit)).
    pub fn queued_send_bytes(&self) -> usize {
        self.queued_send
    }

    /// True until the connection starts closing (an error, a close, or the
    /// end of a drain).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True once the connection is over and everything was written.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// True once GOAWAY was sent or received.
    pub fn is_draining(&self) -> bool {
        self.goaway_sent.is_some() || self.goaway_received.is_some()
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    /// Feeds one received WebSocket data message.
    ///
    /// A connection error is returned for logging; the connection has already
    /// queued its GOAWAY and close, and ended every call.
    pub fn handle_message(&mut self, now: Instant, msg: Incoming) -> Result<(), ConnectionError> {
        if self.state != State::Open {
            return Ok(());
        }
        self.last_recv = now;
        self.ping_sent = None;
        let res = match self.mode {
            Mode::V1 => self.v1_message(now, msg),
            Mode::Legacy => self.legacy_message(msg),
        };
        if let Err(e) = &res {
            self.fail(e.clone());
        }
        res
    }

    /// The WebSocket was closed by the peer (`code` from its close frame) or
    /// the transport was lost (`code` is `None`). Every live call ends.
    pub fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        if self.state == State::Closed {
            return;
        }
        let normal = matches!(code, Some(1000));
        let error = ConnectionError::Closed {
            code,
            reason: reason.to_owned(),
        };
        let (status, graceful) = if self.mode == Mode::Legacy && self.side == Side::Client && normal
        {
            (Status::ok(), true)
        } else if self.mode == Mode::Legacy && self.side == Side::Server {
            (
                Status::new(Code::Cancelled, "legacy client went away"),
                normal,
            )
        } else {
            (
                Status::new(Code::Unavailable, error.to_string()),
                normal && self.streams.values().all(|s| s.ended),
            )
        };
        let already_reported = self.state == State::Closing;
        self.end_all(&status);
        self.state = State::Closed;
        self.control.clear();
        self.stashed = None;
        self.pending_close = None;
        if !already_reported {
            self.events.push_back(Event::Closed {
                error: (!graceful).then_some(error),
            });
        }
    }

    /// Processes expired deadlines and keepalive. Safe to call early.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        while let Some(&Reverse((at, id))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let live = self
                .streams
                .get(&id)
                .is_some_and(|s| !s.ended && s.deadline == Some(at));
            if live {
                self.stream_error(id, Status::new(Code::DeadlineExceeded, "deadline exceeded"));
            }
        }
        if let Some(limit) = self.config.idle_timeout
            && self.streams.is_empty()
            && self.goaway_sent.is_none()
        {
            match self.idle_since {
                None => self.idle_since = Some(now),
                Some(since) if after(since, limit).is_some_and(|at| now >= at) => {
                    self.pending_close = Some((1000, "idle timeout".into()));
                    self.go_away();
                    return;
                }
                Some(_) => {}
            }
        }
        if let (Some(interval), Mode::V1) = (self.config.keepalive_interval, self.mode) {
            match self.ping_sent {
                Some(at) if after(at, self.config.keepalive_timeout).is_some_and(|t| now >= t) => {
                    self.fail(ConnectionError::KeepaliveTimeout);
                }
                None if after(self.last_recv, interval).is_some_and(|t| now >= t) => {
                    self.ping_seq += 1;
                    self.control.push_back(Frame::Ping {
                        ack: false,
                        data: self.ping_seq.to_be_bytes(),
                    });
                    self.ping_sent = Some(now);
                }
                _ => {}
            }
        }
    }

    // ------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Open {
            return None;
        }
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        let keepalive = match (self.config.keepalive_interval, self.mode) {
            (Some(interval), Mode::V1) => match self.ping_sent {
                Some(at) => after(at, self.config.keepalive_timeout),
                None => after(self.last_recv, interval),
            },
            _ => None,
        };
        let idle = match self.config.idle_timeout {
            Some(limit) if self.streams.is_empty() && self.goaway_sent.is_none() => {
                match self.idle_since {
                    Some(since) => after(since, limit),
                    // The last call just ended: due now, to start the clock.
                    None => Some(self.last_recv),
                }
            }
            _ => None,
        };
        [deadline, keepalive, idle].into_iter().flatten().min()
    }

    /// The next WebSocket message to write, if any. Control frames go first;
    /// then streams take turns, one frame (or fragment) each, so a large
    /// message never blocks the other calls.
    ///
    /// Once the peer's SETTINGS offered a batch size, small frames that are
    /// ready together go out packed in one BATCH message: one WebSocket
    /// message (and one header, mask and read) for many frames.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let first = match self.stashed.take() {
            Some(n) => n,
            None => self.next_transmit()?,
        };
        let first = match first {
            Next::Frame(p) => p,
            Next::Other(t) => return Some(t),
        };
        // SETTINGS (our first frame) never packs; two entries must fit, and
        // every entry's length fits its u16 prefix.
        let budget = (self.peer.max_batch_size as usize).min(u16::MAX as usize);
        let a_len = first.len();
        if !self.settings_sent || budget < 2 * (BATCH_ENTRY_PREFIX + a_len) {
            self.settings_sent = true;
            return Some(self.alone(first));
        }
        let second = match self.next_transmit() {
            Some(Next::Frame(p)) if 2 * BATCH_ENTRY_PREFIX + a_len + p.len() <= budget => p,
            other => {
                self.stashed = other;
                return Some(self.alone(first));
            }
        };
        // Frames are encoded straight into the BATCH: no copy per frame.
        let mut out = std::mem::take(&mut self.batch_out);
        let end = HEADER_LEN + budget;
        let b_len = second.len();
        // Room for a whole batch once the connection is busy (the chunk has
        // grown), so entries are not copied to a larger buffer midway.
        let want = (HEADER_LEN + 2 * BATCH_ENTRY_PREFIX + a_len + b_len).max(end.min(self.chunk));
        room(&mut out, want, &mut self.chunk);
        out.put_u8(frame::kind::BATCH);
        out.put_bytes(0, HEADER_LEN - 1);
        first.write_entry(&mut out, a_len);
        second.write_entry(&mut out, b_len);
        while out.len() + BATCH_ENTRY_PREFIX + HEADER_LEN <= end {
            match self.next_transmit() {
                Some(Next::Frame(p)) if out.len() + BATCH_ENTRY_PREFIX + p.len() <= end => {
                    let len = p.len();
                    room(&mut out, BATCH_ENTRY_PREFIX + len, &mut self.chunk);
                    p.write_entry(&mut out, len);
                }
                other => {
                    self.stashed = other;
                    break;
                }
            }
        }
        let msg = out.split().freeze();
        self.batch_out = out;
        Some(Transmit::Binary(msg))
    }

    /// A chosen frame as its own message, carved from the output arena
    /// (a frame encoded when it was queued goes as it is).
    fn alone(&mut self, p: Piece) -> Transmit {
        if let Piece::Encoded(b) = p {
            return Transmit::Binary(b);
        }
        let len = p.len();
        Transmit::Binary(self.carve(len, |out| p.write(out)))
    }

    /// The next frame (or close) to write, chosen but not yet encoded.
    fn next_transmit(&mut self) -> Option<Next> {
        if self.state == State::Closed {
            return None;
        }
        if let Some(f) = self.control.pop_front() {
            return Some(Next::Frame(Piece::Control(f)));
        }
        while let Some(id) = self.ready.pop_front() {
            if let Some(t) = self.transmit_stream(id) {
                return Some(t);
            }
        }
        if let Some((code, reason)) = self.pending_close.take() {
            self.state = State::Closed;
            return Some(Next::Other(Transmit::Close { code, reason }));
        }
        None
    }

    // ------------------------------------------------------------------
    // Actions
    // ------------------------------------------------------------------

    /// Opens a call. Send its request message(s) with [`send`](Self::send)
    /// and half-close with [`close_send`](Self::close_send).
    pub fn open_call(
        &mut self,
        now: Instant,
        method: &str,
        kind: CallKind,
        opts: CallOptions,
    ) -> Result<StreamId, UserError> {
        if self.state != State::Open {
            return Err(UserError::ConnectionClosed);
        }
        if self.is_draining() {
            return Err(UserError::Draining);
        }
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            return Err(UserError::InvalidMethod);
        }
        if self.mode == Mode::Legacy {
            if self.side != Side::Client || self.legacy_method.is_some() {
                return Err(UserError::LegacyOneCall);
            }
        } else {
            let len = opts.metadata.encoded_len();
            if len > self.peer.max_metadata_size as usize {
                return Err(UserError::MetadataTooLarge {
                    len,
                    limit: self.peer.max_metadata_size as usize,
                });
            }
            if self.local_open >= self.peer.max_concurrent_streams {
                self.want_can_open = true;
                return Err(UserError::StreamLimit);
            }
        }
        if self.next_local_id > u32::MAX as u64 {
            return Err(UserError::IdsExhausted);
        }
        let id = StreamId(self.next_local_id as u32);
        self.next_local_id += 2;
        let timeout_ms = opts
            .timeout
            .map(|t| (t.as_nanos().div_ceil(1_000_000)).clamp(1, u32::MAX as u128) as u32)
            .unwrap_or(0);
        let recv_window = if kind.single_response() {
            1
        } else {
            self.config.initial_credit
        };
        let mut s = if self.mode == Mode::Legacy {
            self.legacy_method = Some(Method::new(method).map_err(|_| UserError::InvalidMethod)?);
            self.new_stream(true, CallKind::ServerStreaming, 1, MAX_CREDIT)
        } else {
            let bytes = self.carve(frame::open_len(method.as_bytes(), &opts.metadata), |out| {
                frame::encode_open(
                    out,
                    id,
                    kind,
                    timeout_ms,
                    recv_window,
                    method.as_bytes(),
                    &opts.metadata,
                )
            });
            let mut s = self.new_stream(true, kind, self.peer.initial_credit, recv_window);
            s.outq.push_back(Out::Frame {
                bytes,
                role: Role::Open,
            });
            s
        };
        // A timeout too large to represent is no deadline at all.
        if let Some(at) = opts.timeout.and_then(|t| after(now, t)) {
            s.deadline = Some(at);
            self.push_deadline(at, id);
        }
        self.streams.insert(id, s);
        self.idle_since = None;
        self.local_open += 1;
        self.mark_ready(id);
        Ok(id)
    }

    /// Queues one message on a call. Fails with [`UserError::Blocked`] when
    /// the peer has granted no credit, or when the call's or the
    /// connection's queued bytes are at their bound
    /// ([`Config::max_call_send_buffer`],
    /// [`Config::max_connection_send_buffer`]); [`Event::Writable`] follows
    /// when it may send again.
    pub fn send(&mut self, id: StreamId, data: Bytes) -> Result<(), UserError> {
        let limit = self.peer.max_message_size as usize;
        let call_limit = self.config.max_call_send_buffer;
        let conn_full = self.queued_send >= self.config.max_connection_send_buffer;
        let legacy_method = match self.mode {
            Mode::Legacy => self.legacy_method.clone(),
            Mode::V1 => None,
        };
        let s = self.live_stream(id)?;
        if !s.send_open {
            return Err(UserError::SendClosed);
        }
        if s.single_send() && s.sent >= 1 {
            return Err(UserError::Cardinality);
        }
        if data.len() > limit {
            return Err(UserError::MessageTooLarge {
                len: data.len(),
                limit,
            });
        }
        if s.send_credit == 0 || s.queued >= call_limit || conn_full {
            s.want_writable = true;
            if conn_full && !self.send_waiters.contains(&id) {
                self.send_waiters.push(id);
            }
            return Err(UserError::Blocked);
        }
        s.send_credit -= 1;
        s.sent += 1;
        s.headers_sent = true;
        let data = match legacy_method {
            Some(m) => {
                s.send_open = false;
                legacy::encode_request(m.as_str(), &data)
            }
            None => data,
        };
        s.queued += data.len();
        let len = data.len();
        s.outq.push_back(Out::Message { data, end: false });
        self.queued_send += len;
        self.mark_ready(id);
        Ok(())
    }

    /// Half-closes the caller's side: no more request messages. Merges into
    /// the last queued message when it has not been written yet.
    pub fn close_send(&mut self, id: StreamId) -> Result<(), UserError> {
        let mode = self.mode;
        let s = self.live_stream(id)?;
        if !s.local {
            return Err(UserError::NotCaller);
        }
        if mode == Mode::Legacy {
            return if s.sent == 1 {
                Ok(())
            } else {
                Err(UserError::Cardinality)
            };
        }
        if !s.send_open {
            return Err(UserError::SendClosed);
        }
        if s.single_send() && s.sent == 0 {
            return Err(UserError::Cardinality);
        }
        s.send_open = false;
        if let Some(Out::Message { end, .. }) = s.outq.back_mut() {
            *end = true;
        } else {
            let bytes = self.carve(HEADER_LEN, |out| {
                frame::header(out, frame::kind::HALF_CLOSE, 0, id)
            });
            self.queue(
                id,
                Out::Frame {
                    bytes,
                    role: Role::Plain,
                },
            );
        }
        self.mark_ready(id);
        Ok(())
    }

    /// Sends response headers (responder side, before any message). Optional:
    /// a call without them has empty response headers.
    pub fn send_headers(&mut self, id: StreamId, metadata: Metadata) -> Result<(), UserError> {
        let limit = self.peer.max_metadata_size as usize;
        let mode = self.mode;
        let s = self.live_stream(id)?;
        if s.local {
            return Err(UserError::NotResponder);
        }
        if s.headers_sent {
            return Err(UserError::HeadersAlreadySent);
        }
        let len = metadata.encoded_len();
        if len > limit {
            return Err(UserError::MetadataTooLarge { len, limit });
        }
        s.headers_sent = true;
        if mode == Mode::V1 {
            let bytes = self.carve(HEADER_LEN + len, |out| {
                frame::header(out, frame::kind::HEADERS, 0, id);
                metadata.encode(out);
            });
            self.queue(
                id,
                Out::Frame {
                    bytes,
                    role: Role::Plain,
                },
            );
        }
        Ok(())
    }

    /// Ends a call with a status and trailers (responder side). Queued
    /// messages are written first. [`Event::CallEnded`] follows at once.
    pub fn finish(
        &mut self,
        id: StreamId,
        status: Status,
        trailers: Metadata,
    ) -> Result<(), UserError> {
        let limit = self.peer.max_metadata_size as usize;
        let s = self.live_stream(id)?;
        if s.local {
            return Err(UserError::NotResponder);
        }
        if status.is_ok() && s.single_send() && s.sent == 0 {
            return Err(UserError::Cardinality);
        }
        let status = status.truncated();
        let len = status.encoded_len() + trailers.encoded_len();
        if len > limit {
            return Err(UserError::MetadataTooLarge { len, limit });
        }
        s.send_open = false;
        s.ended = true;
        let held = s.held();
        s.unread = 0;
        s.unread_msgs = 0;
        s.partial = None;
        self.buffered -= held;
        let out = match self.mode {
            Mode::V1 => Out::Frame {
                bytes: self.carve(frame::status_len(&status, &trailers), |out| {
                    frame::encode_status(out, id, &status, &trailers)
                }),
                role: Role::Last,
            },
            Mode::Legacy => Out::LegacyEnd(status.clone()),
        };
        self.queue(id, out);
        self.events.push_back(Event::CallEnded {
            id,
            status,
            trailers,
        });
        Ok(())
    }

    /// Aborts a call from either side: the caller sends RESET, the responder
    /// sends a `CANCELLED` status. Queued messages are dropped.
    pub fn cancel(&mut self, id: StreamId) -> Result<(), UserError> {
        let local = self.live_stream(id)?.local;
        let msg = if local {
            "cancelled by the caller"
        } else {
            "cancelled by the responder"
        };
        self.stream_error(id, Status::new(Code::Cancelled, msg));
        Ok(())
    }

    /// The application took a message of `len` bytes from call `id`: frees
    /// its bytes and grants the peer credit for another message (credit is
    /// batched: one CREDIT frame per half window). Unknown ids are ignored.
    pub fn consume(&mut self, id: StreamId, len: usize) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.unread_msgs == 0 {
            return; // nothing delivered is unread: nothing to grant
        }
        s.unread_msgs -= 1;
        let n = len.min(s.unread);
        s.unread -= n;
        self.buffered -= n;
        if self.mode == Mode::Legacy || s.ended || !s.recv_open || s.single_recv() {
            return;
        }
        s.to_grant += 1;
        // Small messages: grow the window toward the byte budget, so the
        // sender is not stalled by round trips (the receiver's own policy;
        // the protocol only sees larger CREDIT frames).
        let budget = self.config.stream_window_bytes;
        if budget > 0 && s.window < MAX_AUTO_WINDOW {
            let target = (budget as usize / len.max(1)).min(MAX_AUTO_WINDOW as usize) as u32;
            if target > s.window {
                s.to_grant += target - s.window;
                s.window = target;
            }
        }
        if s.to_grant >= (s.window / 2).max(1) {
            let credit = s.to_grant;
            s.to_grant = 0;
            s.recv_credit += credit;
            self.control.push_back(Frame::Credit { stream: id, credit });
        }
    }

    /// Starts a graceful drain: GOAWAY carries the highest call id of the
    /// peer that this side processes; no new calls in either direction; the
    /// connection closes (code 1000) once every call has ended.
    pub fn go_away(&mut self) {
        if self.state != State::Open || self.goaway_sent.is_some() {
            return;
        }
        self.goaway_sent = Some(self.max_remote_id);
        if self.mode == Mode::V1 {
            self.control.push_back(Frame::GoAway {
                last_stream_id: StreamId(self.max_remote_id),
                code: 1000,
                reason: "draining".into(),
            });
        }
        self.maybe_drained();
    }

    /// Closes at once: every live call ends with `UNAVAILABLE`, a GOAWAY with
    /// `code` is sent (v1), then the WebSocket close. Use after a drain's
    /// grace period (code 1001) or on shutdown.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state != State::Open {
            return;
        }
        self.fail(ConnectionError::LocallyClosed {
            code,
            reason: reason.to_owned(),
        });
    }

    /// Ends the call holding the most received bytes with
    /// `RESOURCE_EXHAUSTED`; false when no call holds any. For a bound wider
    /// than one connection (a server-wide receive budget), enforced by the
    /// adapter.
    pub fn shed_largest_call(&mut self) -> bool {
        self.streams.values().any(|s| !s.ended && s.held() > 0) && self.shed_largest()
    }

    // ------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------

    fn live_stream(&mut self, id: StreamId) -> Result<&mut Stream, UserError> {
        if self.state != State::Open {
            return Err(UserError::ConnectionClosed);
        }
        match self.streams.get_mut(&id) {
            Some(s) if !s.ended => Ok(s),
            _ => Err(UserError::UnknownCall),
        }
    }

    fn mark_ready(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.in_ready
            && !s.outq.is_empty()
        {
            s.in_ready = true;
            self.ready.push_back(id);
        }
    }

    /// Encodes `len` bytes with `f` into the output arena and cuts them off.
    fn carve(&mut self, len: usize, f: impl FnOnce(&mut BytesMut)) -> Bytes {
        room(&mut self.out, len, &mut self.chunk);
        f(&mut self.out);
        self.out.split().freeze()
    }

    /// Appends to a live stream's queue and schedules it.
    fn queue(&mut self, id: StreamId, out: Out) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.outq.push_back(out);
        }
        self.mark_ready(id);
    }

    /// A new stream, reusing the queue of an ended one when there is one.
    fn new_stream(&mut self, local: bool, kind: CallKind, send_credit: u32, window: u32) -> Stream {
        let outq = self.spare_queues.pop().unwrap_or_default();
        Stream::new(local, kind, send_credit, window, outq)
    }

    /// Writes the next item of stream `id`, if it has one.
    fn transmit_stream(&mut self, id: StreamId) -> Option<Next> {
        let max_frag = self.peer.max_fragment_size as usize;
        let legacy = self.mode == Mode::Legacy;
        let s = self.streams.get_mut(&id)?;
        s.in_ready = false;
        let item = s.outq.pop_front()?;
        let mut released = 0;
        let (next, finished) = match item {
            Out::Frame { bytes, role } => {
                if role == Role::Open {
                    s.on_wire = true;
                }
                (Next::Frame(Piece::Encoded(bytes)), role == Role::Last)
            }
            Out::LegacyEnd(status) => {
                s.outq.clear();
                self.pending_close = Some(legacy::close_for(&status));
                self.remove_stream(id);
                if status.is_ok() && self.config.legacy_close_text {
                    return Some(Next::Other(Transmit::Text(Bytes::from_static(
                        legacy::CLOSE_TEXT,
                    ))));
                }
                return self.next_transmit();
            }
            Out::Message { data, end } => {
                if legacy {
                    s.send_credit += 1;
                    let room = self.queued_send - data.len();
                    took_message(s, id, data.len(), &self.config, room, &mut self.events);
                    self.release_send(data.len());
                    self.mark_ready(id);
                    return Some(Next::Other(Transmit::Binary(data)));
                }
                let rest = data.len() - s.frag_off;
                let (lo, hi, flags) = if rest > max_frag {
                    (s.frag_off, s.frag_off + max_frag, FLAG_MORE)
                } else {
                    (
                        s.frag_off,
                        data.len(),
                        if end { FLAG_END_STREAM } else { 0 },
                    )
                };
                if flags == FLAG_MORE {
                    s.frag_off = hi;
                    s.outq.push_front(Out::Message {
                        data: data.clone(),
                        end,
                    });
                } else {
                    s.frag_off = 0;
                    let room = self.queued_send - data.len();
                    took_message(s, id, data.len(), &self.config, room, &mut self.events);
                    released = data.len();
                }
                (
                    Next::Frame(Piece::Message {
                        id,
                        flags,
                        data,
                        lo,
                        hi,
                    }),
                    false,
                )
            }
        };
        if released > 0 {
            self.release_send(released);
        }
        if finished {
            self.remove_stream(id);
        } else {
            self.mark_ready(id);
        }
        Some(next)
    }

    /// `len` queued bytes left the connection's send buffer; once below its
    /// bound, the calls that waited on it may try again.
    fn release_send(&mut self, len: usize) {
        self.queued_send -= len;
        if self.send_waiters.is_empty()
            || self.queued_send >= self.config.max_connection_send_buffer
        {
            return;
        }
        let call_limit = self.config.max_call_send_buffer;
        for id in std::mem::take(&mut self.send_waiters) {
            if let Some(s) = self.streams.get_mut(&id)
                && s.want_writable
                && s.send_credit > 0
                && s.queued < call_limit
            {
                s.want_writable = false;
                self.events.push_back(Event::Writable { id });
            }
        }
    }

    /// Forgets a stream whose end was already reported.
    fn remove_stream(&mut self, id: StreamId) {
        if let Some(mut s) = self.streams.remove(&id) {
            self.buffered -= s.held();
            if s.queued > 0 {
                self.release_send(s.queued);
            }
            if s.outq.capacity() > 0 && self.spare_queues.len() < SPARE_QUEUES {
                s.outq.clear();
                self.spare_queues.push(std::mem::take(&mut s.outq));
            }
            if s.local {
                self.local_open -= 1;
                if std::mem::take(&mut self.want_can_open) {
                    self.events.push_back(Event::CanOpen);
                }
            } else {
                self.remote_open -= 1;
            }
        }
        self.maybe_drained();
    }

    /// Ends a live call locally: reports it, forgets it, tells the peer.
    fn end_call(&mut self, id: StreamId, status: Status, trailers: Metadata, notify: Notify) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.ended {
            // Already reported; only its queued frames were left.
            self.remove_stream(id);
            return;
        }
        let legacy = self.mode == Mode::Legacy;
        match notify {
            Notify::Nothing => {}
            Notify::Reset(code) if !legacy => {
                self.control.push_back(Frame::Reset { stream: id, code })
            }
            Notify::Status if !legacy => self.control.push_back(Frame::Status {
                stream: id,
                status: status.clone().truncated(),
                trailers: Metadata::new(),
            }),
            _ => self.pending_close = Some(legacy::close_for(&status)),
        }
        self.events.push_back(Event::CallEnded {
            id,
            status,
            trailers,
        });
        self.remove_stream(id);
        if self.control.len() > self.config.max_pending_control {
            self.fail(ConnectionError::PeerNotReading);
        }
    }

    /// Ends one call because of a fault confined to it, telling the peer.
    fn stream_error(&mut self, id: StreamId, status: Status) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let notify = match (s.local, s.on_wire) {
            (true, true) => Notify::Reset(status.code()),
            (true, false) => Notify::Nothing,
            (false, _) => Notify::Status,
        };
        self.end_call(id, status, Metadata::new(), notify);
    }

    /// Ends every live call with `status`, without telling the peer.
    fn end_all(&mut self, status: &Status) {
        let mut ids: Vec<StreamId> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.end_call(id, status.clone(), Metadata::new(), Notify::Nothing);
        }
        self.ready.clear();
    }

    /// A connection error: end every call, queue GOAWAY (v1) and the close.
    fn fail(&mut self, err: ConnectionError) {
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing;
        let status = Status::new(Code::Unavailable, err.to_string());
        self.end_all(&status);
        self.control.clear();
        let code = err.close_code();
        let reason = legacy::close_reason(&err.to_string());
        if self.mode == Mode::V1 {
            self.control.push_back(Frame::GoAway {
                last_stream_id: StreamId(self.max_remote_id),
                code,
                reason: reason.clone(),
            });
        }
        self.pending_close = Some((code, reason));
        self.events.push_back(Event::Closed { error: Some(err) });
    }

    fn maybe_drained(&mut self) {
        // Only a side that sent GOAWAY closes when drained: it alone knows
        // every call that is still coming (its own, and the peer's up to the
        // announced id). The receiver waits for that close.
        if self.state == State::Open && self.goaway_sent.is_some() && self.streams.is_empty() {
            self.state = State::Closing;
            if self.pending_close.is_none() {
                self.pending_close = Some((1000, "drained".into()));
            }
            self.events.push_back(Event::Closed { error: None });
        } else if self.state == State::Open
            && self.mode == Mode::Legacy
            && self.pending_close.is_some()
            && self.streams.is_empty()
        {
            self.state = State::Closing;
            let error = match &self.pending_close {
                Some((1000, _)) => None,
                Some((code, reason)) => Some(ConnectionError::LocallyClosed {
                    code: *code,
                    reason: reason.clone(),
                }),
                None => None,
            };
            self.events.push_back(Event::Closed { error });
        }
    }

    // ------------------------------------------------------------------
    // v1 receive path
    // ------------------------------------------------------------------

    fn v1_message(&mut self, now: Instant, msg: Incoming) -> Result<(), ConnectionError> {
        let buf = match msg {
            Incoming::Binary(b) => b,
            Incoming::Text(_) => return Err(ConnectionError::TextMessage),
        };
        let limit = self.max_ws_message;
        if buf.len() > limit {
            return Err(ConnectionError::TooLarge {
                what: "frame",
                len: buf.len(),
                limit,
            });
        }
        let first = !std::mem::replace(&mut self.got_first_frame, true);
        if buf.first() == Some(&frame::kind::BATCH) {
            if self.config.max_batch_size == 0 {
                return Err(ConnectionError::Protocol(
                    "BATCH, which this side did not offer",
                ));
            }
            let limit = HEADER_LEN + self.config.max_batch_size as usize;
            if buf.len() > limit {
                return Err(ConnectionError::TooLarge {
                    what: "BATCH",
                    len: buf.len(),
                    limit,
                });
            }
            for f in frame::split_batch(buf).map_err(ConnectionError::Malformed)? {
                self.v1_frame(now, f.map_err(ConnectionError::Malformed)?, false)?;
                if self.state != State::Open {
                    break;
                }
            }
            return Ok(());
        }
        self.v1_frame(now, buf, first)
    }

    /// One frame, alone in its message or unpacked from a BATCH.
    fn v1_frame(&mut self, now: Instant, buf: Bytes, first: bool) -> Result<(), ConnectionError> {
        if buf.first() == Some(&frame::kind::MESSAGE) {
            // The hot path: no Frame value is built.
            let (id, end, more, payload) =
                frame::decode_message(buf).map_err(ConnectionError::Malformed)?;
            if self.check_live(id, false)? {
                self.on_message(id, end, more, payload)?;
            }
            return Ok(());
        }
        let frame = Frame::decode(buf).map_err(ConnectionError::Malformed)?;
        match frame {
            Frame::Settings(s) if first => self.peer.apply(&s).map_err(ConnectionError::Protocol),
            Frame::Settings(_) => Err(ConnectionError::Protocol("SETTINGS after the first frame")),
            Frame::Ping { ack: false, data } => {
                self.control.push_back(Frame::Ping { ack: true, data });
                if self.control.len() > self.config.max_pending_control {
                    return Err(ConnectionError::PeerNotReading);
                }
                Ok(())
            }
            Frame::Ping { ack: true, .. } => Ok(()),
            Frame::GoAway {
                last_stream_id,
                code,
                reason,
            } => self.on_goaway(last_stream_id, code, reason),
            Frame::Open(o) => self.on_open(now, o),
            other => self.on_stream_frame(other),
        }
    }

    fn on_goaway(
        &mut self,
        last: StreamId,
        code: u16,
        reason: String,
    ) -> Result<(), ConnectionError> {
        if code != 1000 {
            // The peer is closing because of an error; it sends nothing more.
            let err = ConnectionError::PeerError { code, reason };
            self.state = State::Closing;
            self.end_all(&Status::new(Code::Unavailable, err.to_string()));
            self.control.clear();
            self.pending_close = Some((code, legacy::close_reason(&err.to_string())));
            self.events.push_back(Event::Closed { error: Some(err) });
            return Ok(());
        }
        let last = self.goaway_received.map_or(last.0, |prev| prev.min(last.0));
        self.goaway_received = Some(last);
        let mut refused: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(id, s)| s.local && id.0 > last && !s.ended)
            .map(|(id, _)| *id)
            .collect();
        refused.sort_unstable();
        for id in refused {
            let status = Status::new(
                Code::Unavailable,
                "not processed: the peer is draining (GOAWAY); safe to retry",
            );
            self.end_call(id, status, Metadata::new(), Notify::Nothing);
        }
        self.events.push_back(Event::GoAway {
            last_stream_id: StreamId(last),
        });
        self.maybe_drained();
        Ok(())
    }

    fn on_open(&mut self, now: Instant, o: Open) -> Result<(), ConnectionError> {
        let id = o.stream;
        if id.initiator() == self.side {
            return Err(ConnectionError::Protocol(
                "OPEN with this side's stream id parity",
            ));
        }
        if id.0 <= self.max_remote_id {
            return Err(ConnectionError::Protocol(
                "OPEN with a stream id not above the last one",
            ));
        }
        self.max_remote_id = id.0;
        let md_len = o.metadata.encoded_len();
        if md_len > self.config.max_metadata_size as usize {
            return Err(ConnectionError::TooLarge {
                what: "request metadata",
                len: md_len,
                limit: self.config.max_metadata_size as usize,
            });
        }
        if o.initial_credit > MAX_CREDIT {
            return Err(ConnectionError::Protocol(
                "OPEN initial credit above 2^31-1",
            ));
        }
        if self.goaway_sent.is_some_and(|last| id.0 > last) {
            // Announced as not processed by our GOAWAY: the peer retries elsewhere.
            return Ok(());
        }
        if self.remote_open >= self.config.max_concurrent_streams {
            self.control.push_back(Frame::Status {
                stream: id,
                status: Status::new(
                    Code::ResourceExhausted,
                    format!(
                        "concurrent call limit ({}) reached",
                        self.config.max_concurrent_streams
                    ),
                ),
                trailers: Metadata::new(),
            });
            if self.control.len() > self.config.max_pending_control {
                return Err(ConnectionError::PeerNotReading);
            }
            return Ok(());
        }
        let mut s = self.new_stream(false, o.kind, o.initial_credit, self.config.initial_credit);
        let deadline = (o.timeout_ms > 0)
            .then(|| after(now, Duration::from_millis(o.timeout_ms as u64)))
            .flatten();
        if let Some(at) = deadline {
            s.deadline = Some(at);
            self.push_deadline(at, id);
        }
        self.streams.insert(id, s);
        self.idle_since = None;
        self.remote_open += 1;
        self.events.push_back(Event::CallOpened(IncomingCall {
            id,
            method: o.method,
            kind: o.kind,
            metadata: o.metadata,
            deadline,
        }));
        Ok(())
    }

    fn push_deadline(&mut self, at: Instant, id: StreamId) {
        if self.deadlines.len() > 64 + 2 * self.streams.len() {
            // Drop entries of calls that ended long before their deadline.
            let streams = &self.streams;
            self.deadlines.retain(|Reverse((at, id))| {
                streams.get(id).is_some_and(|s| s.deadline == Some(*at))
            });
        }
        self.deadlines.push(Reverse((at, id)));
    }

    /// Whether a frame for `id` concerns a live call. A stream that was
    /// never opened is a connection error; frames for ended calls are
    /// ignored (a RESET also drops what an ended responder still had queued).
    fn check_live(&mut self, id: StreamId, is_reset: bool) -> Result<bool, ConnectionError> {
        match self.streams.get(&id) {
            Some(s) if !s.ended => Ok(true),
            Some(_) => {
                if is_reset {
                    self.remove_stream(id);
                }
                Ok(false)
            }
            None => {
                let never_opened = if id.initiator() == self.side {
                    id.0 as u64 >= self.next_local_id
                } else {
                    id.0 > self.max_remote_id
                };
                if never_opened {
                    return Err(ConnectionError::Protocol(
                        "frame for a stream that was never opened",
                    ));
                }
                Ok(false)
            }
        }
    }

    fn on_stream_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let id = frame.stream();
        if !self.check_live(id, matches!(frame, Frame::Reset { .. }))? {
            return Ok(());
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        match frame {
            Frame::Headers { metadata, .. } => {
                if !s.local {
                    return Err(ConnectionError::Protocol("HEADERS from the caller"));
                }
                let len = metadata.encoded_len();
                if len > self.config.max_metadata_size as usize {
                    return Err(ConnectionError::TooLarge {
                        what: "response metadata",
                        len,
                        limit: self.config.max_metadata_size as usize,
                    });
                }
                if s.headers_seen {
                    self.stream_error(
                        id,
                        Status::new(
                            Code::Internal,
                            "response headers after headers or a message",
                        ),
                    );
                    return Ok(());
                }
                s.headers_seen = true;
                self.events.push_back(Event::Headers { id, metadata });
            }
            Frame::Message {
                end_stream,
                more,
                payload,
                ..
            } => return self.on_message(id, end_stream, more, payload),
            Frame::HalfClose { .. } => return self.on_half_close(id),
            Frame::Status {
                status, trailers, ..
            } => {
                if !s.local {
                    return Err(ConnectionError::Protocol("STATUS from the caller"));
                }
                let len = status.encoded_len() + trailers.encoded_len();
                if len > self.config.max_metadata_size as usize {
                    return Err(ConnectionError::TooLarge {
                        what: "status and trailers",
                        len,
                        limit: self.config.max_metadata_size as usize,
                    });
                }
                let status = if status.is_ok() && s.single_recv() && s.received != 1 {
                    Status::new(Code::Internal, "OK status without the one response message")
                } else {
                    status
                };
                self.end_call(id, status, trailers, Notify::Nothing);
            }
            Frame::Reset { code, .. } => {
                let status = Status::new(code, "call reset by the peer");
                self.end_call(id, status, Metadata::new(), Notify::Nothing);
            }
            Frame::Credit { credit, .. } => {
                let total = s.send_credit as u64 + credit as u64;
                if total > MAX_CREDIT as u64 {
                    return Err(ConnectionError::Protocol("stream credit above 2^31-1"));
                }
                s.send_credit = total as u32;
                let room = s.queued < self.config.max_call_send_buffer
                    && self.queued_send < self.config.max_connection_send_buffer;
                if room && std::mem::take(&mut s.want_writable) {
                    self.events.push_back(Event::Writable { id });
                }
            }
            Frame::Settings(_) | Frame::Ping { .. } | Frame::GoAway { .. } | Frame::Open(_) => {}
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        id: StreamId,
        end: bool,
        more: bool,
        payload: Bytes,
    ) -> Result<(), ConnectionError> {
        if payload.len() > self.config.max_fragment_size as usize {
            return Err(ConnectionError::TooLarge {
                what: "MESSAGE frame",
                len: payload.len(),
                limit: self.config.max_fragment_size as usize,
            });
        }
        let max_message = self.config.max_message_size as usize;
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if end && s.local {
            return Err(ConnectionError::Protocol("END_STREAM from the responder"));
        }
        if !s.recv_open {
            self.stream_error(id, Status::new(Code::Internal, "message after half-close"));
            return Ok(());
        }
        if s.partial.is_none() {
            if s.recv_credit == 0 {
                return Err(ConnectionError::Protocol(
                    "message beyond the granted credit",
                ));
            }
            s.recv_credit -= 1;
            if s.single_recv() && s.received >= 1 {
                self.stream_error(
                    id,
                    Status::new(Code::Internal, "more than one message for this call kind"),
                );
                return Ok(());
            }
        }
        let held = s.partial.as_ref().map_or(0, |p| p.len());
        if held + payload.len() > max_message {
            let msg = format!("message larger than the limit of {max_message} bytes");
            self.stream_error(id, Status::new(Code::ResourceExhausted, msg));
            return Ok(());
        }
        // A partial message counts with its buffer's capacity: the memory
        // it really takes.
        let before = s.partial_capacity();
        if more {
            s.partial
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(&payload);
            self.buffered = self.buffered - before + s.partial_capacity();
        } else {
            let data = match s.partial.take() {
                Some(mut p) => {
                    p.extend_from_slice(&payload);
                    p.freeze()
                }
                None => payload,
            };
            self.buffered = self.buffered - before + data.len();
            s.received += 1;
            s.headers_seen = true;
            s.unread += data.len();
            s.unread_msgs += 1;
            self.events.push_back(Event::Message { id, data });
        }
        self.enforce_connection_buffer();
        if end {
            return self.on_half_close(id);
        }
        Ok(())
    }

    /// While the connection-wide bound is exceeded, ends the call holding the
    /// most received bytes (its reader is the slow one). Bounded: every round
    /// removes a call.
    fn enforce_connection_buffer(&mut self) {
        while self.buffered > self.config.max_connection_buffer {
            if !self.shed_largest() {
                break;
            }
        }
    }

    fn shed_largest(&mut self) -> bool {
        let victim = self
            .streams
            .iter()
            .filter(|(_, s)| !s.ended)
            .max_by_key(|(id, s)| (s.held(), Reverse(**id)))
            .map(|(id, s)| (*id, s.held()));
        if let Some((id, held)) = victim {
            let msg = format!(
                "connection receive buffer of {} bytes exceeded; this call held {held} unread bytes",
                self.config.max_connection_buffer
            );
            self.stream_error(id, Status::new(Code::ResourceExhausted, msg));
            return true;
        }
        false
    }

    fn on_half_close(&mut self, id: StreamId) -> Result<(), ConnectionError> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if s.local {
            return Err(ConnectionError::Protocol("HALF_CLOSE from the responder"));
        }
        let problem = if !s.recv_open {
            Some("duplicate half-close")
        } else if s.partial.is_some() {
            Some("half-close inside a fragmented message")
        } else if s.single_recv() && s.received == 0 {
            Some("half-close without the request message")
        } else {
            None
        };
        if let Some(p) = problem {
            self.stream_error(id, Status::new(Code::Internal, p));
            return Ok(());
        }
        s.recv_open = false;
        self.events.push_back(Event::RecvClosed { id });
        Ok(())
    }

    // ------------------------------------------------------------------
    // Legacy receive path
    // ------------------------------------------------------------------

    fn legacy_message(&mut self, msg: Incoming) -> Result<(), ConnectionError> {
        match self.side {
            Side::Server => {
                if self.max_remote_id != 0 {
                    return Err(ConnectionError::Legacy(
                        "a legacy connection carries one request",
                    ));
                }
                let buf = match msg {
                    Incoming::Binary(b) => b,
                    Incoming::Text(_) => {
                        return Err(ConnectionError::Legacy(
                            "the request must be a binary message",
                        ));
                    }
                };
                let limit = self.config.max_message_size as usize + MAX_METHOD_LEN + 4;
                if buf.len() > limit {
                    return Err(ConnectionError::TooLarge {
                        what: "legacy request",
                        len: buf.len(),
                        limit,
                    });
                }
                let (method, payload) = legacy::decode_request(buf)?;
                let id = StreamId(1);
                self.max_remote_id = 1;
                let mut s = self.new_stream(
                    false,
                    CallKind::ServerStreaming,
                    self.config.legacy_send_queue,
                    1,
                );
                s.recv_open = false;
                s.received = 1;
                s.unread = payload.len();
                s.unread_msgs = 1;
                self.buffered += payload.len();
                self.streams.insert(id, s);
                self.idle_since = None;
                self.remote_open = 1;
                self.events.push_back(Event::CallOpened(IncomingCall {
                    id,
                    method,
                    kind: CallKind::ServerStreaming,
                    metadata: Metadata::new(),
                    deadline: None,
                }));
                self.events.push_back(Event::Message { id, data: payload });
                self.events.push_back(Event::RecvClosed { id });
                Ok(())
            }
            Side::Client => {
                let id = StreamId(1);
                let Some(s) = self.streams.get_mut(&id) else {
                    return Ok(()); // no call (yet, or any more): nothing to deliver to
                };
                let (data, text) = match msg {
                    Incoming::Binary(b) => (b, false),
                    Incoming::Text(b) => (b, true),
                };
                if text && data.as_ref() == legacy::CLOSE_TEXT {
                    self.end_call(id, Status::ok(), Metadata::new(), Notify::Nothing);
                    self.pending_close = Some((1000, String::new()));
                    self.maybe_drained();
                    return Ok(());
                }
                let limit = self.config.max_message_size as usize;
                if data.len() > limit {
                    return Err(ConnectionError::TooLarge {
                        what: "legacy response",
                        len: data.len(),
                        limit,
                    });
                }
                s.received += 1;
                s.unread += data.len();
                s.unread_msgs += 1;
                self.buffered += data.len();
                self.events.push_back(Event::Message { id, data });
                self.enforce_connection_buffer();
                Ok(())
            }
        }
    }
}
