//! The seed format as its own small state machine, behind the same inputs
//! and outputs as v1: one call per connection, no frames. The server reads
//! one request message and streams raw replies; the client sends the
//! request and reads replies until the server closes. There is no status on
//! the wire: a failure is a close with code 1011 and the status as reason.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{CLOSE_TEXT, close_for, decode_request, encode_request};
use crate::call::{CallKind, Method, Side, StreamId};
use crate::calls::{CallPiece, CallState, Role, SendHalf, SendLimits};
use crate::config::{Config, MAX_CREDIT, PeerLimits};
use crate::error::{ConnectionError, UserError};
use crate::event::{Event, Incoming, IncomingCall, OpenOptions, Transmit};
use crate::frame::MAX_METHOD_LEN;
use crate::lifecycle::{State, close_reason};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::timers::{Timers, after};

/// The one call's id on a legacy connection.
const ID: StreamId = StreamId(1);

/// The seed format's one call: one request, then replies.
const KIND: CallKind = CallKind::ServerStreaming;

/// The one call of a legacy connection.
#[derive(Debug)]
struct Call {
    state: CallState,
    /// Set when the server finished: the queued replies go out, then the
    /// close for this status.
    closing: Option<Status>,
    /// The client's method, sent with its one request.
    method: Option<Method>,
    send: SendHalf,
    /// Received bytes and messages not yet consumed.
    unread: usize,
    unread_msgs: u32,
    window: u32,
    deadline: Option<Instant>,
}

/// A legacy connection, either side.
#[derive(Debug)]
pub(crate) struct LegacyConnection {
    side: Side,
    config: Config,
    /// Legacy peers advertise nothing: the defaults bound what is sent.
    peer: PeerLimits,
    state: State,
    call: Option<Call>,
    /// A call was opened (by either side): it was the only one.
    used: bool,
    draining: bool,
    timers: Timers,
    events: VecDeque<Event>,
    /// The close to write once the replies are written.
    pending_close: Option<(u16, String)>,
}

impl LegacyConnection {
    pub(crate) fn new(side: Side, config: Config, now: Instant) -> Self {
        let timers = Timers::new(now, &config, false);
        Self {
            timers,
            side,
            config,
            peer: PeerLimits::default(),
            state: State::Open,
            call: None,
            used: false,
            draining: false,
            events: VecDeque::new(),
            pending_close: None,
        }
    }

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
        self.call.is_some() as usize
    }

    pub(crate) fn has_call(&self, id: StreamId) -> bool {
        id == ID && self.call.is_some()
    }

    fn call(&self, id: StreamId) -> Option<&Call> {
        self.call.as_ref().filter(|_| id == ID)
    }

    pub(crate) fn send_credit(&self, id: StreamId) -> Option<u32> {
        self.call(id).map(|c| c.send.credit())
    }

    pub(crate) fn would_block(&self, id: StreamId) -> bool {
        self.call(id).is_some_and(|c| {
            c.send.would_block(
                self.config.max_call_send_buffer,
                c.send.queued() >= self.config.max_connection_send_buffer,
            )
        })
    }

    pub(crate) fn recv_window(&self, id: StreamId) -> Option<u32> {
        self.call(id).map(|c| c.window)
    }

    pub(crate) fn has_transmit(&self) -> bool {
        self.state != State::Closed
            && (self
                .call
                .as_ref()
                .is_some_and(|c| c.send.has_queued() || c.closing.is_some())
                || self.pending_close.is_some())
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.call.as_ref().map_or(0, |c| c.unread)
    }

    pub(crate) fn queued_send_bytes(&self) -> usize {
        self.call.as_ref().map_or(0, |c| c.send.queued())
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining
    }

    // ------------------------------------------------------------------
    // Inputs
    // ------------------------------------------------------------------

    pub(crate) fn handle_message(
        &mut self,
        now: Instant,
        msg: Incoming,
    ) -> Result<(), ConnectionError> {
        if self.state != State::Open {
            return Ok(());
        }
        self.timers.received(now);
        let res = match self.side {
            Side::Server => self.on_request(now, msg),
            Side::Client => self.on_reply(msg),
        };
        if let Err(e) = &res {
            self.teardown(Ending::Fault(e.clone()));
        }
        res
    }

    /// Server: the one request.
    fn on_request(&mut self, now: Instant, msg: Incoming) -> Result<(), ConnectionError> {
        if self.used {
            return Err(ConnectionError::Legacy(
                "a legacy connection carries one request",
            ));
        }
        let Incoming::Binary(buf) = msg else {
            return Err(ConnectionError::Legacy(
                "the request must be a binary message",
            ));
        };
        let limit = self.config.max_message_size as usize + MAX_METHOD_LEN + 4;
        if buf.len() > limit {
            return Err(ConnectionError::TooLarge {
                what: "legacy request",
                len: buf.len(),
                limit,
            });
        }
        let (method, payload) = decode_request(buf)?;
        self.used = true;
        self.call = Some(Call {
            state: CallState::known(Role::Responder, KIND),
            closing: None,
            method: None,
            send: SendHalf::new(self.config.legacy_send_queue, VecDeque::new()),
            unread: payload.len(),
            unread_msgs: 1,
            window: 1,
            deadline: None,
        });
        self.timers.busy(now);
        self.events.push_back(Event::CallOpened(IncomingCall {
            id: ID,
            method,
            kind: KIND,
            metadata: Metadata::new(),
            deadline: None,
        }));
        self.events.push_back(Event::Message {
            id: ID,
            data: payload,
            cursor: None,
        });
        self.events.push_back(Event::RecvClosed { id: ID });
        Ok(())
    }

    /// Client: a reply, or the text `CLOSE` that ends the call.
    fn on_reply(&mut self, msg: Incoming) -> Result<(), ConnectionError> {
        if self.call.is_none() {
            return Ok(()); // no call (yet, or any more): nothing to deliver to
        }
        let (data, text) = match msg {
            Incoming::Binary(b) => (b, false),
            Incoming::Text(b) => (b, true),
        };
        if text && data.as_ref() == CLOSE_TEXT {
            self.pending_close = Some((1000, String::new()));
            self.end_call(Status::ok());
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
        if let Some(c) = &mut self.call {
            c.unread += data.len();
            c.unread_msgs += 1;
        }
        self.events.push_back(Event::Message {
            id: ID,
            data,
            cursor: None,
        });
        if self.buffered_bytes() > self.config.max_connection_buffer {
            self.shed();
        }
        Ok(())
    }

    pub(crate) fn handle_close(&mut self, code: Option<u16>, reason: &str) {
        let normal = code == Some(1000);
        let error = ConnectionError::Closed {
            code,
            reason: reason.to_owned(),
        };
        // A normal close is how a legacy server ends a call well.
        let (status, graceful) = match self.side {
            Side::Client if normal => (Status::ok(), true),
            Side::Client => (Status::new(Code::Unavailable, error.to_string()), false),
            Side::Server => (
                Status::new(Code::Cancelled, "legacy client went away"),
                normal,
            ),
        };
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
        while let Some((at, _)) = self.timers.expired(now) {
            if self
                .call
                .as_ref()
                .is_some_and(|c| c.state.is_live() && c.deadline == Some(at))
            {
                self.call_error(Status::new(Code::DeadlineExceeded, "deadline exceeded"));
            }
        }
        if self.timers.idle_expired(now) {
            self.pending_close = Some((1000, "idle timeout".into()));
            self.go_away();
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

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.state == State::Closed {
            return None;
        }
        if let Some(c) = &mut self.call {
            if let Some(CallPiece::Message { data, .. }) = c.send.take(usize::MAX) {
                // A written reply makes room for another.
                c.send.grant(1, u32::MAX);
                let full = c.send.queued() >= self.config.max_connection_send_buffer;
                if c.send.writable_due(self.config.max_call_send_buffer, full) {
                    self.events.push_back(Event::Writable { id: ID });
                }
                return Some(Transmit::Binary(data));
            }
            if let Some(status) = &c.closing {
                // The replies are out: the close carries the status.
                let (close, text) = (
                    close_for(status),
                    status.is_ok() && self.config.legacy_close_text,
                );
                self.pending_close = Some(close);
                self.end_call(Status::ok());
                if text {
                    return Some(Transmit::Text(Bytes::from_static(CLOSE_TEXT)));
                }
            }
        }
        let (code, reason) = self.pending_close.take()?;
        self.state = State::Closed;
        Some(Transmit::Close { code, reason })
    }

    // ------------------------------------------------------------------
    // Actions
    // ------------------------------------------------------------------

    pub(crate) fn open_call(
        &mut self,
        now: Instant,
        method: &str,
        _kind: CallKind,
        opts: OpenOptions,
    ) -> Result<StreamId, UserError> {
        if self.state != State::Open {
            return Err(UserError::ConnectionClosed);
        }
        if self.draining {
            return Err(UserError::Draining);
        }
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            return Err(UserError::InvalidMethod);
        }
        if self.side != Side::Client || self.used {
            return Err(UserError::LegacyOneCall);
        }
        let method = Method::new(method).map_err(|_| UserError::InvalidMethod)?;
        self.used = true;
        // A timeout too large to represent is no deadline at all.
        let deadline = opts.timeout.and_then(|t| after(now, t));
        if let Some(at) = deadline {
            self.timers.add_deadline(at, ID, 0, |_, _| true);
        }
        self.call = Some(Call {
            state: CallState::known(Role::Caller, KIND),
            closing: None,
            method: Some(method),
            send: SendHalf::new(1, VecDeque::new()),
            unread: 0,
            unread_msgs: 0,
            window: MAX_CREDIT,
            deadline,
        });
        self.timers.busy(now);
        Ok(ID)
    }

    /// The one call, while the application has it.
    fn live(&mut self, id: StreamId) -> Result<&mut Call, UserError> {
        if self.state != State::Open {
            return Err(UserError::ConnectionClosed);
        }
        match &mut self.call {
            Some(c) if id == ID && c.state.is_live() => Ok(c),
            _ => Err(UserError::UnknownCall),
        }
    }

    pub(crate) fn send(&mut self, id: StreamId, data: Bytes) -> Result<(), UserError> {
        let max_message = self.peer.max_message_size as usize;
        let call_buffer = self.config.max_call_send_buffer;
        let connection_buffer = self.config.max_connection_send_buffer;
        let c = self.live(id)?;
        let limits = SendLimits {
            max_message,
            call_buffer,
            connection_full: c.send.queued() >= connection_buffer,
        };
        // The client's one request; the server's replies are many.
        let send = &mut c.send;
        c.state.send_message(|| send.admit(data.len(), &limits))?;
        match &c.method {
            Some(m) => {
                c.send.enqueue(encode_request(m.as_str(), &data), false);
                // The request is the whole of the client's side.
                c.state.half_close()?;
            }
            None => c.send.enqueue(data, false),
        }
        Ok(())
    }

    pub(crate) fn close_send(&mut self, id: StreamId) -> Result<(), UserError> {
        let c = self.live(id)?;
        if c.state.role() != Role::Caller {
            return Err(UserError::NotCaller);
        }
        // The request half-closed the call already: closing it is a no-op.
        if c.state.sent() == 1 {
            Ok(())
        } else {
            Err(UserError::Cardinality)
        }
    }

    pub(crate) fn send_headers(
        &mut self,
        id: StreamId,
        metadata: Metadata,
    ) -> Result<(), UserError> {
        let limit = self.peer.max_metadata_size as usize;
        let c = self.live(id)?;
        let len = metadata.encoded_len();
        // The seed format has no headers: they are accepted and dropped.
        c.state
            .send_headers(|| UserError::check_metadata(len, limit))?;
        Ok(())
    }

    pub(crate) fn finish(
        &mut self,
        id: StreamId,
        status: Status,
        trailers: Metadata,
    ) -> Result<(), UserError> {
        let limit = self.peer.max_metadata_size as usize;
        let c = self.live(id)?;
        let status = status.truncated();
        let len = status.encoded_len() + trailers.encoded_len();
        c.state
            .finish(status.is_ok(), || UserError::check_metadata(len, limit))?;
        c.unread = 0;
        c.unread_msgs = 0;
        c.closing = Some(status.clone());
        self.events.push_back(Event::CallEnded {
            id,
            status,
            trailers,
        });
        Ok(())
    }

    pub(crate) fn cancel(&mut self, id: StreamId) -> Result<(), UserError> {
        let msg = match self.live(id)?.method {
            Some(_) => "cancelled by the caller",
            None => "cancelled by the responder",
        };
        self.call_error(Status::new(Code::Cancelled, msg));
        Ok(())
    }

    pub(crate) fn consume(&mut self, id: StreamId, len: usize) {
        if let Some(c) = &mut self.call
            && id == ID
            && c.unread_msgs > 0
        {
            c.unread_msgs -= 1;
            c.unread -= len.min(c.unread);
        }
    }

    pub(crate) fn go_away(&mut self) {
        if self.state != State::Open || self.draining {
            return;
        }
        self.draining = true;
        self.timers.draining();
        self.teardown(Ending::Settled);
    }

    pub(crate) fn close(&mut self, code: u16, reason: &str) {
        self.teardown(Ending::Fault(ConnectionError::LocallyClosed {
            code,
            reason: reason.to_owned(),
        }));
    }

    pub(crate) fn shed_largest_call(&mut self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|c| c.state.is_live() && c.unread > 0)
            && self.shed()
    }

    // ------------------------------------------------------------------
    // Ending the call and the connection
    // ------------------------------------------------------------------

    /// Ends the call for its receive buffer's bound.
    fn shed(&mut self) -> bool {
        let Some(held) = self
            .call
            .as_ref()
            .filter(|c| c.state.is_live())
            .map(|c| c.unread)
        else {
            return false;
        };
        let msg = format!(
            "connection receive buffer of {} bytes exceeded; this call held {held} unread bytes",
            self.config.max_connection_buffer
        );
        self.call_error(Status::new(Code::ResourceExhausted, msg));
        true
    }

    /// Ends the call because of a fault confined to it. The server tells
    /// the client with its close; a client can tell the server nothing but
    /// by closing, which its application does.
    fn call_error(&mut self, status: Status) {
        if self.side == Side::Server {
            self.pending_close = Some(close_for(&status));
        }
        self.end_call(status);
    }

    /// Reports the call's end (unless it was reported when the server
    /// finished), forgets it, and settles the connection.
    fn end_call(&mut self, status: Status) {
        if let Some(c) = self.call.take()
            && c.state.is_live()
        {
            self.events.push_back(Event::CallEnded {
                id: ID,
                status,
                trailers: Metadata::new(),
            });
        }
        self.teardown(Ending::Settled);
    }

    /// The one way the connection ends. `Event::Closed` is pushed only on
    /// leaving `Open`, so it comes exactly once.
    fn teardown(&mut self, ending: Ending) {
        let allowed = match ending {
            Ending::Lost { .. } => self.state != State::Closed,
            Ending::Fault(_) => self.state == State::Open,
            // Without the call, a drain or a decided close ends the connection.
            Ending::Settled => {
                self.state == State::Open
                    && self.call.is_none()
                    && (self.draining || self.pending_close.is_some())
            }
        };
        if !allowed {
            return;
        }
        let report = self.state == State::Open;
        self.state = match ending {
            Ending::Lost { .. } => State::Closed,
            _ => State::Closing,
        };
        let error = match ending {
            Ending::Fault(err) => {
                self.end_call(Status::new(Code::Unavailable, err.to_string()));
                self.pending_close = Some((err.close_code(), close_reason(&err.to_string())));
                Some(err)
            }
            Ending::Settled if self.draining => {
                self.pending_close
                    .get_or_insert_with(|| (1000, "drained".into()));
                None
            }
            Ending::Settled => match &self.pending_close {
                Some((code, reason)) if *code != 1000 => Some(ConnectionError::LocallyClosed {
                    code: *code,
                    reason: reason.clone(),
                }),
                _ => None,
            },
            Ending::Lost {
                error,
                status,
                graceful,
            } => {
                self.end_call(status);
                self.pending_close = None;
                (!graceful).then_some(error)
            }
        };
        if report {
            self.events.push_back(Event::Closed { error });
        }
    }
}

/// How a legacy connection ends.
enum Ending {
    /// A fault found here, or a local close: the call ends, the close follows.
    Fault(ConnectionError),
    /// The call is gone and the connection drains, or a close was decided
    /// (the server's status, the client's `CLOSE`, a refused call).
    Settled,
    /// The WebSocket is gone.
    Lost {
        error: ConnectionError,
        status: Status,
        graceful: bool,
    },
}
