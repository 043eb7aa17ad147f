//! Protocol v1 (`docs/PROTOCOL.md`): many calls multiplexed on one
//! WebSocket. This module routes: application actions and received frames
//! (`recv.rs`) go to the call they name, whose halves (`crate::calls`)
//! own the per-call rules; the connection owns what spans calls — the
//! peer's limits, the byte bounds, control frames, the send scheduler and
//! BATCH packing (`crate::output`), timers (`crate::timers`), drain, and
//! the one teardown.

mod recv;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::call::MAX_METHOD_LEN;
use crate::call::{CallKind, Side, StreamId};
use crate::calls::{Call, CallPiece, CallState, Calls, Queued, Role, SendLimits, WriteBounds};
use crate::config::{Config, PeerLimits};
use crate::error::{ConnectionError, UserError};
use crate::event::{Event, OpenOptions, Transmit};
use crate::frame::{self, BATCH_ENTRY_PREFIX, Frame, HEADER_LEN};
use crate::lifecycle::{State, close_reason};
use crate::metadata::Metadata;
use crate::output::{self, Arena, Outgoing, Piece};
use crate::status::{Code, Status};
use crate::timers::{Keepalive, Timers, after};

/// How a call that ends here tells the peer.
enum Tell {
    /// Nothing: the peer never knew the call, or already ended it.
    Nothing,
    /// RESET with this code (caller).
    Reset(Code),
    /// STATUS with the call's status (responder).
    Status,
}

/// How a connection ends; [`V1Connection::teardown`] is the one path.
enum Ending {
    /// A fault found here, or a local close: every call ends, GOAWAY with
    /// the close code goes out, then the close.
    Fault(ConnectionError),
    /// The peer's GOAWAY with an error code: it sends nothing more; every
    /// call ends, and the close answers with its code.
    PeerFault { error: ConnectionError, code: u16 },
    /// After this side's GOAWAY every call has ended: what is queued goes
    /// out, then the close.
    Drained,
    /// The WebSocket is gone: every call ends; nothing more is written.
    Lost {
        error: ConnectionError,
        status: Status,
        graceful: bool,
    },
}

/// One v1 connection, either side.
#[derive(Debug)]
pub(crate) struct V1Connection {
    side: Side,
    config: Config,
    peer: PeerLimits,
    state: State,
    calls: Calls,
    timers: Timers,
    arena: Arena,
    events: VecDeque<Event>,
    /// Our SETTINGS, not yet written: the first frame of all (kept out of
    /// `control`, so a connection that never sends another control frame
    /// never allocates that queue).
    settings_owed: bool,
    /// Connection frames (PING, GOAWAY) and the CREDIT, RESET and STATUS
    /// frames that jump a call's queue; written before any call's.
    control: VecDeque<Frame>,
    /// A frame taken while packing that did not fit; it goes next.
    stashed: Option<Outgoing>,
    /// The close to write once everything before it is written.
    pending_close: Option<(u16, String)>,
    /// The peer's first frame arrived (only it may be SETTINGS).
    first_frame_received: bool,
    /// Our first frame (SETTINGS) was written: only later frames pack.
    first_frame_written: bool,
    goaway_sent: Option<u32>,
    goaway_received: Option<u32>,
    /// An `open_call` was refused by the stream limit: `CanOpen` is owed.
    can_open_owed: bool,
    /// Received bytes held for the application (unread and partial).
    buffered: usize,
    /// Bytes of messages queued for sending over all calls.
    queued_send: usize,
    /// Calls whose `send` was refused because `queued_send` was at its bound.
    send_waiters: Vec<StreamId>,
    max_ws_message: usize,
    /// Largest content a COMPRESSED message may inflate to: the largest
    /// v1 message this side accepts uncompressed.
    pub(crate) max_inflated: usize,
    /// Messages still to go uncompressed after one that did not shrink.
    compress_skip: u32,
}

/// Messages sent as they are after one that compression did not shrink.
const COMPRESS_BACKOFF: u32 = 32;

impl V1Connection {
    pub(crate) fn new(side: Side, config: Config, now: Instant) -> Self {
        let max_ws_message = config.max_websocket_message();
        let max_inflated = config.max_websocket_message_for(crate::Mode::V1);
        let timers = Timers::new(now, &config, true);
        Self {
            timers,
            side,
            config,
            peer: PeerLimits::default(),
            state: State::Open,
            calls: Calls::new(side),
            arena: Arena::default(),
            events: VecDeque::new(),
            settings_owed: true,
            control: VecDeque::new(),
            stashed: None,
            pending_close: None,
            first_frame_received: false,
            first_frame_written: false,
            goaway_sent: None,
            goaway_received: None,
            can_open_owed: false,
            buffered: 0,
            queued_send: 0,
            send_waiters: Vec::new(),
            max_inflated,
            max_ws_message,
            compress_skip: 0,
        }
    }

    // ------------------------------------------------------------------
    // Accessors
    // ------------------------------------------------------------------

    pub(crate) fn side(&self) -> Side {
        self.side
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn live_calls(&self) -> usize {
        self.calls.len()
    }

    pub(crate) fn has_call(&self, id: StreamId) -> bool {
        self.calls.get(id).is_some()
    }

    pub(crate) fn send_credit(&self, id: StreamId) -> Option<u32> {
        self.calls.get(id).map(|s| s.send.credit())
    }

    pub(crate) fn would_block(&self, id: StreamId) -> bool {
        self.calls.get(id).is_some_and(|s| {
            s.send.would_block(
                self.config.max_call_send_buffer,
                self.connection_send_full(),
            )
        })
    }

    pub(crate) fn recv_window(&self, id: StreamId) -> Option<u32> {
        self.calls.get(id).map(|s| s.recv.window())
    }

    pub(crate) fn has_transmit(&self) -> bool {
        self.state != State::Closed
            && (self.stashed.is_some()
                || self.settings_owed
                || !self.control.is_empty()
                || self.calls.has_ready()
                || self.pending_close.is_some())
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    pub(crate) fn queued_send_bytes(&self) -> usize {
        self.queued_send
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.goaway_sent.is_some() || self.goaway_received.is_some()
    }

    fn connection_send_full(&self) -> bool {
        self.queued_send >= self.config.max_connection_send_buffer
    }

    // ------------------------------------------------------------------
    // Inputs (received messages: `recv.rs`)
    // ------------------------------------------------------------------

    pub(crate) fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        let error = ConnectionError::Closed {
            code,
            reason: reason.to_owned(),
        };
        let status = Status::new(Code::Unavailable, error.to_string());
        let graceful = code == Some(1000) && self.calls.iter().all(|(_, s)| !s.is_live());
        self.teardown(Ending::Lost {
            error,
            status,
            graceful,
        });
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        while let Some((at, id)) = self.timers.expired(now) {
            let due = self
                .calls
                .get(id)
                .is_some_and(|s| s.is_live() && s.deadline == Some(at));
            if due {
                self.call_error(id, Status::new(Code::DeadlineExceeded, "deadline exceeded"));
            }
        }
        if self.timers.idle_expired(now) {
            self.pending_close = Some((1000, "idle timeout".into()));
            self.go_away();
            return;
        }
        if self.timers.release_due(now) {
            self.release();
        }
        match self.timers.keepalive(now) {
            Keepalive::Nothing => {}
            Keepalive::Ping(data) => self.control.push_back(Frame::Ping { ack: false, data }),
            Keepalive::Expired => self.teardown(Ending::Fault(ConnectionError::KeepaliveTimeout)),
        }
    }

    // ------------------------------------------------------------------
    // Outputs
    // ------------------------------------------------------------------

    #[inline]
    pub(crate) fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Open {
            return None;
        }
        self.timers.next()
    }

    /// True once the idle connection released its buffers.
    pub(crate) fn released(&self) -> bool {
        self.timers.released
    }

    /// Frees what an idle connection keeps for reuse; queues still holding
    /// something keep their memory.
    fn release(&mut self) {
        self.arena.release();
        self.calls.release();
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        if self.control.is_empty() {
            self.control = VecDeque::new();
        }
        if self.send_waiters.is_empty() {
            self.send_waiters = Vec::new();
        }
        self.timers.release();
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.next_ws_message()?;
        if self.config.compress_min_size == 0 || !self.peer.gzip {
            return Some(t);
        }
        Some(self.compressed(t))
    }

    /// `t` as a COMPRESSED message when it is large enough and shrinks by a
    /// tenth at least (PROTOCOL.md 3.4); after one that did not, the next
    /// [`COMPRESS_BACKOFF`] go as they are (incompressible data costs one
    /// try in that many).
    fn compressed(&mut self, t: Transmit) -> Transmit {
        let Transmit::Binary(b) = &t else {
            return t;
        };
        if b.len() < self.config.compress_min_size as usize || b[0] == frame::kind::SETTINGS {
            return t;
        }
        if self.compress_skip > 0 {
            self.compress_skip -= 1;
            return t;
        }
        let header = [frame::kind::COMPRESSED, 0, 0, 0, 0, 0];
        let gz = crate::compress::gzip(&header, b);
        if gz.len() <= b.len() - b.len() / 10 {
            Transmit::Binary(gz.into())
        } else {
            self.compress_skip = COMPRESS_BACKOFF;
            t
        }
    }

    /// The next WebSocket message as it goes uncompressed: one frame, or a
    /// BATCH of those ready.
    fn next_ws_message(&mut self) -> Option<Transmit> {
        let first = match self.stashed.take() {
            Some(n) => n,
            None => self.next_transmit()?,
        };
        let first = match first {
            Outgoing::Piece(p) => p,
            Outgoing::Whole(t) => return Some(t),
        };
        // SETTINGS (our first frame) never packs; two entries must fit, and
        // every entry's length fits its u16 prefix.
        let budget = (self.peer.max_batch_size as usize).min(u16::MAX as usize);
        let a = first.len();
        if !self.first_frame_written || budget < 2 * (BATCH_ENTRY_PREFIX + a) {
            self.first_frame_written = true;
            return Some(self.arena.alone(first));
        }
        let second = match self.next_transmit() {
            Some(Outgoing::Piece(p)) if output::pair_fits(budget, a, p.len()) => p,
            other => {
                self.stashed = other;
                return Some(self.arena.alone(first));
            }
        };
        let mut batch = self.arena.batch(budget, first, second);
        while batch.has_room() {
            match self.next_transmit() {
                Some(Outgoing::Piece(p)) => {
                    if let Err(p) = self.arena.add(&mut batch, p) {
                        self.stashed = Some(Outgoing::Piece(p));
                        break;
                    }
                }
                other => {
                    self.stashed = other;
                    break;
                }
            }
        }
        Some(self.arena.seal(batch))
    }

    /// The next frame (or the close) to write, chosen but not yet encoded:
    /// control frames first, then calls take turns, one frame (or fragment)
    /// each, so a large message never holds up the other calls.
    fn next_transmit(&mut self) -> Option<Outgoing> {
        if self.state == State::Closed {
            return None;
        }
        if std::mem::take(&mut self.settings_owed) {
            let settings = Frame::Settings(self.config.settings());
            return Some(Outgoing::Piece(Piece::Control(settings)));
        }
        if let Some(f) = self.control.pop_front() {
            return Some(Outgoing::Piece(Piece::Control(f)));
        }
        let bounds = WriteBounds {
            max_fragment: self.peer.max_fragment_size as usize,
            call_buffer: self.config.max_call_send_buffer,
            queued_send: self.queued_send,
            connection_buffer: self.config.max_connection_send_buffer,
        };
        if let Some(r) = self.calls.next_turn(&bounds) {
            let id = r.id;
            if r.writable {
                self.events.push_back(Event::Writable { id });
            }
            return Some(Outgoing::Piece(match r.piece {
                CallPiece::Frame { bytes, .. } => {
                    if r.last {
                        self.remove(id);
                    }
                    Piece::Encoded(bytes)
                }
                CallPiece::Message {
                    flags,
                    data,
                    lo,
                    hi,
                    released,
                } => {
                    if let Some(len) = released {
                        self.release_send(len);
                    }
                    Piece::Message {
                        id,
                        flags,
                        data,
                        lo,
                        hi,
                    }
                }
            }));
        }
        if let Some((code, reason)) = self.pending_close.take() {
            self.state = State::Closed;
            return Some(Outgoing::Whole(Transmit::Close { code, reason }));
        }
        None
    }

    // ------------------------------------------------------------------
    // Actions
    // ------------------------------------------------------------------

    pub(crate) fn open_call(
        &mut self,
        now: Instant,
        method: &str,
        kind: CallKind,
        opts: OpenOptions,
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
        let limit = self.peer.max_metadata_size as usize;
        UserError::check_metadata(opts.metadata.encoded_len(), limit)?;
        if self.calls.callers >= self.peer.max_concurrent_streams {
            self.can_open_owed = true;
            return Err(UserError::StreamLimit);
        }
        let id = self.calls.next_local_id().ok_or(UserError::IdsExhausted)?;
        let timeout_ms = opts
            .timeout
            .map(|t| (t.as_nanos().div_ceil(1_000_000)).clamp(1, u32::MAX as u128) as u32)
            .unwrap_or(0);
        let state = CallState::new(Role::Caller, kind);
        let recv_window = state.first_window(self.config.initial_credit);
        let open = self
            .arena
            .carve(frame::open_len(method.as_bytes(), &opts.metadata), |out| {
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
        let mut s = self
            .calls
            .new_stream(state, self.peer.initial_credit, recv_window);
        s.send.push(Queued::Open(open));
        // A timeout too large to represent is no deadline at all.
        let deadline = opts.timeout.and_then(|t| after(now, t));
        self.add_call(now, id, s, deadline);
        self.calls.schedule(id);
        Ok(id)
    }

    /// Adds a call to the table at `now`, with its deadline.
    fn add_call(&mut self, now: Instant, id: StreamId, mut s: Call, deadline: Option<Instant>) {
        s.deadline = deadline;
        if let Some(at) = deadline {
            let calls = &self.calls;
            self.timers.add_deadline(at, id, calls.len(), |at, id| {
                calls.get(id).is_some_and(|s| s.deadline == Some(at))
            });
        }
        self.calls.insert(id, s);
        self.timers.busy(now);
    }

    #[inline]
    pub(crate) fn send(
        &mut self,
        id: StreamId,
        data: Bytes,
        cursor: Option<Bytes>,
    ) -> Result<(), UserError> {
        let limits = SendLimits {
            max_message: self.peer.max_message_size as usize,
            call_buffer: self.config.max_call_send_buffer,
            connection_full: self.connection_send_full(),
        };
        if self.state != State::Open {
            return Err(UserError::ConnectionClosed);
        }
        let s = self.calls.live_mut(id).ok_or(UserError::UnknownCall)?;
        // A peer that offered no cursor cannot resume: it gets the message
        // alone, and the call is not resumable.
        let cursor = match cursor {
            Some(c) if self.peer.max_cursor_size > 0 => {
                Some(stamp(s, c, self.peer.max_cursor_size as usize)?)
            }
            _ => None,
        };
        let send = &mut s.send;
        if let Err(e) = s.state.send_message(|| send.admit(data.len(), &limits)) {
            if e == UserError::Blocked && limits.connection_full && !self.send_waiters.contains(&id)
            {
                self.send_waiters.push(id);
            }
            return Err(e);
        }
        let (data, stamped) = match cursor {
            None => (data, false),
            Some(c) => (with_trailer(&data, &c), true),
        };
        self.queued_send += data.len();
        s.send.enqueue(data, stamped);
        self.calls.schedule(id);
        Ok(())
    }

    pub(crate) fn close_send(&mut self, id: StreamId) -> Result<(), UserError> {
        let s = self.live(id)?;
        s.state.half_close()?;
        if !s.send.end_stream() {
            let bytes = self.arena.carve(HEADER_LEN, |out| {
                frame::header(out, frame::kind::HALF_CLOSE, 0, id)
            });
            self.queue(id, Queued::Frame(bytes));
        }
        self.calls.schedule(id);
        Ok(())
    }

    pub(crate) fn send_headers(
        &mut self,
        id: StreamId,
        mut metadata: Metadata,
    ) -> Result<(), UserError> {
        let limit = self.peer.max_metadata_size as usize;
        let cursor_limit = self.peer.max_cursor_size as usize;
        let s = self.live(id)?;
        // A resume point before the first message (PROTOCOL.md 5.6): the
        // same rules as a message's cursor; a peer that offered none never
        // sees it.
        if let Some(c) = metadata.get(crate::CURSOR_KEY) {
            if cursor_limit == 0 {
                metadata.remove(crate::CURSOR_KEY);
            } else if c.len() > cursor_limit {
                return Err(UserError::CursorTooLarge {
                    len: c.len(),
                    limit: cursor_limit,
                });
            } else {
                s.state.stamp_cursor()?;
            }
        }
        let len = metadata.encoded_len();
        s.state
            .send_headers(|| UserError::check_metadata(len, limit))?;
        let bytes = self.arena.carve(HEADER_LEN + len, |out| {
            frame::header(out, frame::kind::HEADERS, 0, id);
            metadata.encode(out);
        });
        self.queue(id, Queued::Frame(bytes));
        Ok(())
    }

    pub(crate) fn finish(
        &mut self,
        id: StreamId,
        status: Status,
        trailers: Metadata,
    ) -> Result<(), UserError> {
        let limit = self.peer.max_metadata_size as usize;
        let s = self.live(id)?;
        let status = status.truncated();
        let len = status.encoded_len() + trailers.encoded_len();
        s.state
            .finish(status.is_ok(), || UserError::check_metadata(len, limit))?;
        self.buffered -= s.recv.clear();
        let bytes = self
            .arena
            .carve(frame::status_len(&status, &trailers), |out| {
                frame::encode_status(out, id, &status, &trailers)
            });
        self.queue(id, Queued::Status(bytes));
        self.events.push_back(Event::CallEnded {
            id,
            status,
            trailers,
        });
        Ok(())
    }

    pub(crate) fn cancel(&mut self, id: StreamId) -> Result<(), UserError> {
        let msg = match self.live(id)?.state.role() {
            Role::Caller => "cancelled by the caller",
            Role::Responder => "cancelled by the responder",
        };
        self.call_error(id, Status::new(Code::Cancelled, msg));
        Ok(())
    }

    pub(crate) fn consume(&mut self, id: StreamId, len: usize) {
        let budget = self.config.stream_window_bytes;
        let Some(s) = self.calls.get_mut(id) else {
            return;
        };
        let (freed, credit) = s.recv.consume(len, s.state.grants_credit(), budget);
        self.buffered -= freed;
        if credit > 0 {
            self.control.push_back(Frame::Credit { stream: id, credit });
        }
    }

    pub(crate) fn go_away(&mut self) {
        if self.state != State::Open || self.goaway_sent.is_some() {
            return;
        }
        let last = self.calls.max_remote;
        self.goaway_sent = Some(last);
        self.timers.draining();
        self.control.push_back(Frame::GoAway {
            last_stream_id: StreamId(last),
            code: 1000,
            reason: "draining".into(),
        });
        // Resumable calls would hold the drain open (a live stream may
        // never end): they end now, after what they queued, and their
        // callers resume them on another connection from the last cursor.
        for id in self.calls.ids_where(|_, s| s.state.is_resumable()) {
            let status = Status::new(Code::Unavailable, RESUME_ELSEWHERE);
            let _ = self.finish(id, status, Metadata::new());
        }
        self.maybe_drained();
    }

    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.teardown(Ending::Fault(ConnectionError::LocallyClosed {
            code,
            reason: reason.to_owned(),
        }));
    }

    pub(crate) fn shed_largest_call(&mut self) -> bool {
        self.calls
            .iter()
            .any(|(_, s)| s.is_live() && s.recv.held() > 0)
            && self.shed_largest()
    }

    // ------------------------------------------------------------------
    // Calls and accounting
    // ------------------------------------------------------------------

    /// A call the application still has, on an open connection.
    fn live(&mut self, id: StreamId) -> Result<&mut Call, UserError> {
        if self.state != State::Open {
            return Err(UserError::ConnectionClosed);
        }
        self.calls.live_mut(id).ok_or(UserError::UnknownCall)
    }

    /// Appends to a call's queue and schedules it.
    fn queue(&mut self, id: StreamId, out: Queued) {
        if let Some(s) = self.calls.get_mut(id) {
            s.send.push(out);
        }
        self.calls.schedule(id);
    }

    /// `len` queued bytes left the connection's send buffer; once below its
    /// bound, the calls that waited on it may try again.
    fn release_send(&mut self, len: usize) {
        self.queued_send -= len;
        if self.send_waiters.is_empty() || self.connection_send_full() {
            return;
        }
        let call_buffer = self.config.max_call_send_buffer;
        for id in std::mem::take(&mut self.send_waiters) {
            if let Some(s) = self.calls.get_mut(id)
                && s.send.writable_due(call_buffer, false)
            {
                self.events.push_back(Event::Writable { id });
            }
        }
    }

    /// Forgets a call whose end was already reported.
    fn remove(&mut self, id: StreamId) {
        if let Some(r) = self.calls.remove(id) {
            self.buffered -= r.held;
            if r.queued > 0 {
                self.release_send(r.queued);
            }
            if r.role == Role::Caller && std::mem::take(&mut self.can_open_owed) {
                self.events.push_back(Event::CanOpen);
            }
            if self.calls.is_empty() {
                self.timers.quiet();
            }
        }
        self.maybe_drained();
    }

    /// Ends a call here: reports it, forgets it, tells the peer.
    fn end_call(&mut self, id: StreamId, status: Status, trailers: Metadata, tell: Tell) {
        let Some(s) = self.calls.get(id) else {
            return;
        };
        if !s.is_live() {
            // Already reported; only its queued frames were left.
            self.remove(id);
            return;
        }
        match tell {
            Tell::Nothing => {}
            Tell::Reset(code) => self.control.push_back(Frame::Reset { stream: id, code }),
            Tell::Status => self.control.push_back(Frame::Status {
                stream: id,
                status: status.clone().truncated(),
                trailers: Metadata::new(),
            }),
        }
        self.events.push_back(Event::CallEnded {
            id,
            status,
            trailers,
        });
        self.remove(id);
        if self.control.len() > self.config.max_pending_control {
            self.teardown(Ending::Fault(ConnectionError::PeerNotReading));
        }
    }

    /// Ends one call because of a fault confined to it, telling the peer
    /// when it knows the call.
    fn call_error(&mut self, id: StreamId, status: Status) {
        let Some(s) = self.calls.get(id) else {
            return;
        };
        let tell = match s.state.role() {
            Role::Caller if s.state.is_unsent() => Tell::Nothing,
            Role::Caller => Tell::Reset(status.code()),
            Role::Responder => Tell::Status,
        };
        self.end_call(id, status, Metadata::new(), tell);
    }

    /// Ends the call holding the most received bytes with
    /// `RESOURCE_EXHAUSTED`; false when there is none.
    fn shed_largest(&mut self) -> bool {
        let victim = self
            .calls
            .iter()
            .filter(|(_, s)| s.is_live())
            .max_by_key(|(id, s)| (s.recv.held(), std::cmp::Reverse(*id)))
            .map(|(id, s)| (id, s.recv.held()));
        let Some((id, held)) = victim else {
            return false;
        };
        let msg = format!(
            "connection receive buffer of {} bytes exceeded; this call held {held} unread bytes",
            self.config.max_connection_buffer
        );
        self.call_error(id, Status::new(Code::ResourceExhausted, msg));
        true
    }

    /// While the connection-wide bound is exceeded, ends the call holding
    /// the most received bytes (its reader is the slow one). Bounded: every
    /// round removes a call.
    fn enforce_connection_buffer(&mut self) {
        while self.buffered > self.config.max_connection_buffer && self.shed_largest() {}
    }

    // ------------------------------------------------------------------
    // Drain and teardown
    // ------------------------------------------------------------------

    /// Only a side that sent GOAWAY closes when drained: it alone knows
    /// every call that is still coming (its own, and the peer's up to the
    /// announced id). The receiver waits for that close.
    fn maybe_drained(&mut self) {
        if self.goaway_sent.is_some() && self.calls.is_empty() {
            self.teardown(Ending::Drained);
        }
    }

    /// The one way the connection ends. `Event::Closed` is pushed only on
    /// leaving `Open`, so it comes exactly once.
    fn teardown(&mut self, ending: Ending) {
        let allowed = match ending {
            Ending::Lost { .. } => self.state != State::Closed,
            _ => self.state == State::Open,
        };
        if !allowed {
            return;
        }
        let report = self.state == State::Open;
        // The state changes first, so nothing the calls' ends trigger (a
        // drain completing, a fault) can end the connection a second time.
        self.state = match ending {
            Ending::Lost { .. } => State::Closed,
            _ => State::Closing,
        };
        let error = match ending {
            Ending::Fault(err) => {
                self.end_all(&Status::new(Code::Unavailable, err.to_string()));
                self.clear_control();
                let code = err.close_code();
                let reason = close_reason(&err.to_string());
                self.control.push_back(Frame::GoAway {
                    last_stream_id: StreamId(self.calls.max_remote),
                    code,
                    reason: reason.clone(),
                });
                self.pending_close = Some((code, reason));
                Some(err)
            }
            Ending::PeerFault { error, code } => {
                self.end_all(&Status::new(Code::Unavailable, error.to_string()));
                self.clear_control();
                self.pending_close = Some((code, close_reason(&error.to_string())));
                Some(error)
            }
            Ending::Drained => {
                if self.pending_close.is_none() {
                    self.pending_close = Some((1000, "drained".into()));
                }
                None
            }
            Ending::Lost {
                error,
                status,
                graceful,
            } => {
                self.end_all(&status);
                self.clear_control();
                self.stashed = None;
                self.pending_close = None;
                (!graceful).then_some(error)
            }
        };
        if report {
            self.events.push_back(Event::Closed { error });
        }
    }

    /// Drops every control frame not yet written (SETTINGS included).
    fn clear_control(&mut self) {
        self.settings_owed = false;
        self.control.clear();
    }

    /// Ends every call with `status`, without telling the peer.
    fn end_all(&mut self, status: &Status) {
        for id in self.calls.ids_where(|_, _| true) {
            self.end_call(id, status.clone(), Metadata::new(), Tell::Nothing);
        }
        self.calls.clear_ready();
    }
}

/// Checks a resume cursor on call `s` against the peer's `limit` and the
/// call's state (which becomes resumable); off the hot path.
#[cold]
fn stamp(s: &mut Call, cursor: Bytes, limit: usize) -> Result<Bytes, UserError> {
    if cursor.len() > limit {
        return Err(UserError::CursorTooLarge {
            len: cursor.len(),
            limit,
        });
    }
    s.state.stamp_cursor()?;
    Ok(cursor)
}

/// A stamped message as one slice: the message, then its cursor trailer
/// (one copy, of stamped messages only).
#[cold]
fn with_trailer(data: &[u8], cursor: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + cursor.len() + 1);
    b.extend_from_slice(data);
    frame::put_cursor(&mut b, cursor);
    b.freeze()
}

/// The message of the status a draining responder ends its resumable
/// calls with.
pub(crate) const RESUME_ELSEWHERE: &str = "draining: resume on another connection";

/// The status of calls refused by the peer's GOAWAY.
pub(crate) fn not_processed() -> Status {
    Status::not_processed()
}

/// A deadline `ms` milliseconds from `now` (0: none).
pub(crate) fn deadline_in(now: Instant, ms: u32) -> Option<Instant> {
    (ms > 0)
        .then(|| after(now, Duration::from_millis(ms as u64)))
        .flatten()
}
