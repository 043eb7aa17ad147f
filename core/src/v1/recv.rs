//! The v1 receive path: a WebSocket message is one frame or a BATCH of
//! them; each frame is checked against the connection's rules here and
//! handed to the call it names, whose receiving half checks the rest.

use std::time::Instant;

use bytes::Bytes;

use super::{Ending, Tell, V1Connection, deadline_in, not_processed};
use crate::call::StreamId;
use crate::calls::{CallState, RecvFault, Role};
use crate::config::MAX_CREDIT;
use crate::error::ConnectionError;
use crate::event::{Event, Incoming, IncomingCall};
use crate::frame::{self, FLAG_CURSOR, FLAG_END_STREAM, FLAG_MORE, Frame, HEADER_LEN, Open};
use crate::lifecycle::State;
use crate::metadata::Metadata;
use crate::status::{Code, Status};

impl V1Connection {
    pub(crate) fn handle_message(
        &mut self,
        now: Instant,
        msg: Incoming,
    ) -> Result<(), ConnectionError> {
        if self.state != State::Open {
            return Ok(());
        }
        self.timers.received(now);
        let res = self.on_ws_message(now, msg);
        if let Err(e) = &res {
            self.teardown(Ending::Fault(e.clone()));
        }
        res
    }

    fn on_ws_message(&mut self, now: Instant, msg: Incoming) -> Result<(), ConnectionError> {
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
        if buf.first() == Some(&frame::kind::COMPRESSED) {
            let inner = self.inflate(&buf)?;
            return self.on_ws_message(now, Incoming::Binary(inner));
        }
        let first = !std::mem::replace(&mut self.first_frame_received, true);
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
                self.on_frame(now, f.map_err(ConnectionError::Malformed)?, false)?;
                if self.state != State::Open {
                    break;
                }
            }
            return Ok(());
        }
        self.on_frame(now, buf, first)
    }

    /// The message a COMPRESSED one carries (PROTOCOL.md 3.4), inflated at
    /// most to the largest message this side accepts: never before the
    /// peer's SETTINGS, only when this side offered gzip, never another
    /// COMPRESSED.
    fn inflate(&mut self, buf: &Bytes) -> Result<Bytes, ConnectionError> {
        if !self.config.accept_gzip {
            return Err(ConnectionError::Protocol(
                "COMPRESSED, which this side did not offer",
            ));
        }
        if !self.first_frame_received {
            return Err(ConnectionError::Protocol("first frame is not SETTINGS"));
        }
        if buf.len() < HEADER_LEN || buf[1..HEADER_LEN] != [0; 5] {
            return Err(ConnectionError::Protocol(
                "COMPRESSED with flags or a stream id",
            ));
        }
        let limit = self.max_inflated;
        let inner = crate::compress::gunzip(&buf[HEADER_LEN..], limit).map_err(|e| match e {
            crate::compress::Inflate::TooLarge => ConnectionError::TooLarge {
                what: "decompressed message",
                len: limit + 1,
                limit,
            },
            crate::compress::Inflate::Invalid => {
                ConnectionError::Protocol("COMPRESSED payload is not one gzip member")
            }
        })?;
        match inner.first() {
            Some(&frame::kind::COMPRESSED) => {
                Err(ConnectionError::Protocol("COMPRESSED inside COMPRESSED"))
            }
            Some(&frame::kind::SETTINGS) => Err(ConnectionError::Protocol("SETTINGS compressed")),
            _ => Ok(inner.into()),
        }
    }

    /// One frame, alone in its message or unpacked from a BATCH.
    fn on_frame(&mut self, now: Instant, buf: Bytes, first: bool) -> Result<(), ConnectionError> {
        if buf.first() == Some(&frame::kind::MESSAGE) {
            // The hot path: no Frame value is built.
            let (id, flags, payload) =
                frame::decode_message(buf).map_err(ConnectionError::Malformed)?;
            if self.check_live(id, false)? {
                self.on_message(id, flags, payload)?;
            }
            return Ok(());
        }
        let frame = Frame::decode(buf).map_err(ConnectionError::Malformed)?;
        match frame {
            Frame::Settings(s) if first => self.peer.apply(&s).map_err(ConnectionError::Protocol),
            Frame::Settings(_) => Err(ConnectionError::Protocol("SETTINGS after the first frame")),
            Frame::Ping { ack: false, data } => {
                self.control.push_back(Frame::Ping { ack: true, data });
                self.check_control()
            }
            Frame::Ping { ack: true, .. } => Ok(()),
            Frame::GoAway {
                last_stream_id,
                code,
                reason,
            } => {
                self.on_goaway(last_stream_id, code, reason);
                Ok(())
            }
            Frame::Open(o) => self.on_open(now, o),
            other => self.on_call_frame(other),
        }
    }

    /// A peer that makes this side queue control frames without reading
    /// them is cut off.
    fn check_control(&self) -> Result<(), ConnectionError> {
        if self.control.len() > self.config.max_pending_control {
            return Err(ConnectionError::PeerNotReading);
        }
        Ok(())
    }

    fn on_goaway(&mut self, last: StreamId, code: u16, reason: String) {
        if code != 1000 {
            // The peer is closing because of an error; it sends nothing more.
            let error = ConnectionError::PeerError { code, reason };
            self.teardown(Ending::PeerFault { error, code });
            return;
        }
        let last = self.goaway_received.map_or(last.0, |prev| prev.min(last.0));
        self.goaway_received = Some(last);
        let refused = self
            .calls
            .ids_where(|id, s| s.state.role() == Role::Caller && id.0 > last && s.is_live());
        for id in refused {
            self.end_call(id, not_processed(), Metadata::new(), Tell::Nothing);
        }
        self.events.push_back(Event::GoAway {
            last_stream_id: StreamId(last),
        });
        self.maybe_drained();
    }

    fn on_open(&mut self, now: Instant, o: Open) -> Result<(), ConnectionError> {
        let id = o.stream;
        if id.initiator() == self.side {
            return Err(ConnectionError::Protocol(
                "OPEN with this side's stream id parity",
            ));
        }
        if id.0 <= self.calls.max_remote {
            return Err(ConnectionError::Protocol(
                "OPEN with a stream id not above the last one",
            ));
        }
        self.calls.max_remote = id.0;
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
        if self.calls.responders >= self.config.max_concurrent_streams {
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
            return self.check_control();
        }
        let s = self.calls.new_stream(
            CallState::new(Role::Responder, o.kind),
            o.initial_credit,
            self.config.initial_credit,
        );
        let deadline = deadline_in(now, o.timeout_ms);
        self.add_call(now, id, s, deadline);
        self.events.push_back(Event::CallOpened(IncomingCall {
            id,
            method: o.method,
            kind: o.kind,
            metadata: o.metadata,
            deadline,
        }));
        Ok(())
    }

    /// Whether a frame for `id` concerns a live call. A stream that was
    /// never opened is a connection error; frames for ended calls are
    /// ignored (a RESET also drops what an ended responder still had queued).
    fn check_live(&mut self, id: StreamId, is_reset: bool) -> Result<bool, ConnectionError> {
        match self.calls.get(id) {
            Some(s) if s.is_live() => Ok(true),
            Some(_) => {
                if is_reset {
                    self.remove(id);
                }
                Ok(false)
            }
            None if self.calls.never_opened(id, self.side) => Err(ConnectionError::Protocol(
                "frame for a stream that was never opened",
            )),
            None => Ok(false),
        }
    }

    fn on_call_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        let id = frame.stream();
        if !self.check_live(id, matches!(frame, Frame::Reset { .. }))? {
            return Ok(());
        }
        let max_metadata = self.config.max_metadata_size as usize;
        let Some(s) = self.calls.get_mut(id) else {
            return Ok(());
        };
        match frame {
            Frame::Headers { metadata, .. } => {
                let len = metadata.encoded_len();
                let check = || too_large("response metadata", len, max_metadata);
                if let Err(f) = s.state.recv_headers(check) {
                    return self.fault(id, f);
                }
                if let Some(c) = metadata.get(crate::CURSOR_KEY) {
                    check_cursor(&self.config, c.len())?;
                    if let Err(f) = s.state.recv_cursor() {
                        return self.fault(id, f);
                    }
                }
                self.events.push_back(Event::Headers { id, metadata });
            }
            Frame::HalfClose { .. } => return self.on_half_close(id),
            Frame::Status {
                status, trailers, ..
            } => {
                let len = status.encoded_len() + trailers.encoded_len();
                let check = || too_large("status and trailers", len, max_metadata);
                match s.state.recv_status(status, check) {
                    Ok(status) => self.end_call(id, status, trailers, Tell::Nothing),
                    Err(f) => return self.fault(id, f),
                }
            }
            Frame::Reset { code, .. } => {
                let status = Status::new(code, "call reset by the peer");
                self.end_call(id, status, Metadata::new(), Tell::Nothing);
            }
            Frame::Credit { credit, .. } => {
                if !s.send.grant(credit, MAX_CREDIT) {
                    return Err(ConnectionError::Protocol("stream credit above 2^31-1"));
                }
                let full = self.queued_send >= self.config.max_connection_send_buffer;
                if s.send.writable_due(self.config.max_call_send_buffer, full) {
                    self.events.push_back(Event::Writable { id });
                }
            }
            // MESSAGE frames take the fast path in `on_frame`, never this one.
            Frame::Message { .. }
            | Frame::Settings(_)
            | Frame::Ping { .. }
            | Frame::GoAway { .. }
            | Frame::Open(_) => {}
        }
        Ok(())
    }

    /// One MESSAGE frame: `flags` as received (checked), `payload` with its
    /// cursor trailer, if any.
    fn on_message(
        &mut self,
        id: StreamId,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<(), ConnectionError> {
        if payload.len() > self.config.max_fragment_size as usize {
            return Err(ConnectionError::TooLarge {
                what: "MESSAGE frame",
                len: payload.len(),
                limit: self.config.max_fragment_size as usize,
            });
        }
        let (end, more) = (flags & FLAG_END_STREAM != 0, flags & FLAG_MORE != 0);
        let cursor = match flags & FLAG_CURSOR {
            0 => None,
            _ => Some(frame::split_cursor(&mut payload).map_err(ConnectionError::Malformed)?),
        };
        let max_message = self.config.max_message_size as usize;
        let (budget, buffered) = (self.config.max_connection_buffer, self.buffered);
        let room = || budget.saturating_sub(buffered);
        let Some(s) = self.calls.get_mut(id) else {
            return Ok(());
        };
        if let Some(c) = &cursor {
            check_cursor(&self.config, c.len())?;
            if let Err(f) = s.state.recv_cursor() {
                return self.fault(id, f);
            }
        }
        let recv = &mut s.recv;
        let starts = recv.between_messages();
        // A partial message counts with its buffer's capacity: the memory
        // it really takes.
        let before = recv.held();
        let delivered = s
            .state
            .recv_message(end, starts, || recv.take_credit())
            .and_then(|()| recv.on_fragment(more, payload, max_message, room));
        match delivered {
            Ok(delivered) => {
                self.buffered = self.buffered - before + s.recv.held();
                if let Some(data) = delivered {
                    s.state.delivered();
                    self.events.push_back(Event::Message { id, data, cursor });
                }
            }
            Err(f) => return self.fault(id, f),
        }
        self.enforce_connection_buffer();
        if end {
            return self.on_half_close(id);
        }
        Ok(())
    }

    fn on_half_close(&mut self, id: StreamId) -> Result<(), ConnectionError> {
        let Some(s) = self.calls.get_mut(id) else {
            return Ok(());
        };
        match s.state.recv_half_close(!s.recv.between_messages()) {
            Ok(()) => self.events.push_back(Event::RecvClosed { id }),
            Err(f) => return self.fault(id, f),
        }
        Ok(())
    }

    /// A fault in what the peer sent on call `id`: the connection's, or
    /// the call's alone (it ends with the status).
    fn fault(&mut self, id: StreamId, fault: RecvFault) -> Result<(), ConnectionError> {
        match fault {
            RecvFault::Connection(e) => Err(e),
            RecvFault::Call(status) => {
                self.call_error(id, status);
                Ok(())
            }
        }
    }
}

/// A resume cursor of `len` bytes from the peer: this side must have
/// offered cursors, and one this long.
#[cold]
fn check_cursor(config: &crate::Config, len: usize) -> Result<(), ConnectionError> {
    if config.max_cursor_size == 0 {
        return Err(ConnectionError::Protocol(
            "a resume cursor, which this side did not offer",
        ));
    }
    too_large("resume cursor", len, config.max_cursor_size as usize)
}

/// [`ConnectionError::TooLarge`] when `len` passes `limit`.
fn too_large(what: &'static str, len: usize, limit: usize) -> Result<(), ConnectionError> {
    if len > limit {
        return Err(ConnectionError::TooLarge { what, len, limit });
    }
    Ok(())
}
