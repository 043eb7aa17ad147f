//! Per-call state kept by a [`Connection`](crate::Connection).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::call::CallKind;
use crate::status::Status;

/// What a pre-encoded frame means to the stream that queued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The call's OPEN: once written, the peer knows the call.
    Open,
    /// HEADERS or HALF_CLOSE.
    Plain,
    /// The responder's STATUS: the call's last frame.
    Last,
}

/// Something queued to send on a stream, in order. Control frames are
/// encoded when the application acts (carved from the connection's output
/// arena), so the queue holds bytes, not values to encode later.
#[derive(Debug)]
pub(crate) enum Out {
    Frame {
        bytes: Bytes,
        role: Role,
    },
    Message {
        data: Bytes,
        end: bool,
    },
    /// Legacy: the end of the call, written as a WebSocket close.
    LegacyEnd(Status),
}

/// One live call, seen from this side.
#[derive(Debug)]
pub(crate) struct Stream {
    /// This side opened the call (it is the caller).
    pub(crate) local: bool,
    pub(crate) kind: CallKind,
    /// The call has ended for the application; only queued frames remain
    /// (a responder's final messages and STATUS).
    pub(crate) ended: bool,
    /// The peer knows the call: its OPEN was written (always true for calls
    /// the peer opened). A call that never reached the wire ends silently.
    pub(crate) on_wire: bool,

    // Sending half.
    pub(crate) send_open: bool,
    pub(crate) send_credit: u32,
    pub(crate) sent: u32,
    pub(crate) want_writable: bool,
    pub(crate) headers_sent: bool,
    pub(crate) outq: VecDeque<Out>,
    /// Bytes of messages in `outq` not yet completely written.
    pub(crate) queued: usize,
    pub(crate) frag_off: usize,
    pub(crate) in_ready: bool,

    // Receiving half.
    pub(crate) recv_open: bool,
    /// Messages the peer may still start (credit we granted, not yet used).
    pub(crate) recv_credit: u32,
    /// Credit we keep granted: consumed messages are granted back.
    pub(crate) window: u32,
    pub(crate) to_grant: u32,
    pub(crate) received: u32,
    pub(crate) headers_seen: bool,
    pub(crate) partial: Option<BytesMut>,
    /// Bytes delivered to the application and not yet consumed.
    pub(crate) unread: usize,
    /// Messages delivered to the application and not yet consumed: a
    /// `consume` beyond them grants nothing.
    pub(crate) unread_msgs: u32,

    pub(crate) deadline: Option<Instant>,
}

impl Stream {
    pub(crate) fn new(
        local: bool,
        kind: CallKind,
        send_credit: u32,
        recv_window: u32,
        outq: VecDeque<Out>,
    ) -> Self {
        Self {
            local,
            kind,
            ended: false,
            on_wire: !local,
            send_open: true,
            send_credit,
            sent: 0,
            want_writable: false,
            headers_sent: false,
            outq,
            queued: 0,
            frag_off: 0,
            in_ready: false,
            recv_open: true,
            recv_credit: recv_window,
            window: recv_window,
            to_grant: 0,
            received: 0,
            headers_seen: false,
            partial: None,
            unread: 0,
            unread_msgs: 0,
            deadline: None,
        }
    }

    /// Bytes this stream holds in the connection's receive budget: unread
    /// messages, and the memory a partial message really takes (its buffer's
    /// capacity, which grows ahead of its length).
    pub(crate) fn held(&self) -> usize {
        self.unread + self.partial_capacity()
    }

    /// Memory held by the message being reassembled.
    pub(crate) fn partial_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.capacity())
    }

    /// True when this side may send only one message on the call.
    pub(crate) fn single_send(&self) -> bool {
        if self.local {
            self.kind.single_request()
        } else {
            self.kind.single_response()
        }
    }

    /// True when the peer may send only one message on the call.
    pub(crate) fn single_recv(&self) -> bool {
        if self.local {
            self.kind.single_response()
        } else {
            self.kind.single_request()
        }
    }
}
