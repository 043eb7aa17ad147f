//! The receiving half of a call: the credit this side granted and its
//! window (grown toward a byte budget), reassembly of fragmented messages,
//! and the count of delivered messages the application has not consumed.

use bytes::{Bytes, BytesMut};

use crate::config::MAX_AUTO_WINDOW;
use crate::status::{Code, Status};

/// Where the receiving half is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// Nothing received yet: a caller may still get response headers.
    Start,
    /// Headers or a message arrived.
    Open,
    /// The caller half-closed: no more requests (responder side).
    Closed,
}

/// A fault in what the peer sent on this call.
#[derive(Debug)]
pub(crate) enum RecvFault {
    /// A protocol violation that ends the connection.
    Connection(&'static str),
    /// A fault confined to the call: it ends with this status.
    Call(Status),
}

/// The receiving half of one call.
#[derive(Debug)]
pub(crate) struct RecvHalf {
    pub(crate) state: RecvState,
    /// Messages the peer may still start (credit granted, not yet used).
    credit: u32,
    /// Credit kept granted: consumed messages are granted back.
    window: u32,
    /// Consumed messages not yet granted back (granted in batches).
    to_grant: u32,
    /// Whole messages received.
    received: u32,
    /// The message being reassembled.
    partial: Option<BytesMut>,
    /// Bytes delivered to the application and not yet consumed.
    unread: usize,
    /// Messages delivered and not yet consumed: a `consume` beyond them
    /// grants nothing.
    unread_msgs: u32,
}

impl RecvHalf {
    pub(crate) fn new(window: u32) -> Self {
        Self {
            state: RecvState::Start,
            credit: window,
            window,
            to_grant: 0,
            received: 0,
            partial: None,
            unread: 0,
            unread_msgs: 0,
        }
    }
    #[inline]
    pub(crate) fn window(&self) -> u32 {
        self.window
    }
    #[inline]
    pub(crate) fn received(&self) -> u32 {
        self.received
    }

    /// Bytes this call holds in the connection's receive budget: unread
    /// messages, and the memory a partial message really takes (its
    /// buffer's capacity, which grows ahead of its length).
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.unread + self.partial.as_ref().map_or(0, |p| p.capacity())
    }

    /// Response headers arrived (caller); false when headers or a message
    /// already did.
    #[inline]
    pub(crate) fn headers(&mut self) -> bool {
        if self.state != RecvState::Start {
            return false;
        }
        self.state = RecvState::Open;
        true
    }

    /// One MESSAGE frame's payload. `Ok(Some(message))` when it completes a
    /// message (delivered: counted unread until consumed), `Ok(None)` when
    /// more fragments follow. `single`: the peer may send one message only.
    #[inline]
    pub(crate) fn on_fragment(
        &mut self,
        more: bool,
        payload: Bytes,
        single: bool,
        max_message: usize,
    ) -> Result<Option<Bytes>, RecvFault> {
        if self.state == RecvState::Closed {
            return Err(RecvFault::Call(Status::new(
                Code::Internal,
                "message after half-close",
            )));
        }
        if self.partial.is_none() {
            if self.credit == 0 {
                return Err(RecvFault::Connection("message beyond the granted credit"));
            }
            self.credit -= 1;
            if single && self.received >= 1 {
                return Err(RecvFault::Call(Status::new(
                    Code::Internal,
                    "more than one message for this call kind",
                )));
            }
        }
        let held = self.partial.as_ref().map_or(0, |p| p.len());
        if held + payload.len() > max_message {
            let msg = format!("message larger than the limit of {max_message} bytes");
            return Err(RecvFault::Call(Status::new(Code::ResourceExhausted, msg)));
        }
        if more {
            self.partial
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(&payload);
            return Ok(None);
        }
        let data = match self.partial.take() {
            Some(mut p) => {
                p.extend_from_slice(&payload);
                p.freeze()
            }
            None => payload,
        };
        self.deliver(data.len());
        Ok(Some(data))
    }

    /// A whole message of `len` bytes was handed to the application.
    #[inline]
    pub(crate) fn deliver(&mut self, len: usize) {
        self.received += 1;
        self.state = match self.state {
            RecvState::Start => RecvState::Open,
            s => s,
        };
        self.unread += len;
        self.unread_msgs += 1;
    }

    /// The caller half-closed (responder). `single`: exactly one request
    /// was due.
    pub(crate) fn close(&mut self, single: bool) -> Result<(), Status> {
        let problem = if self.state == RecvState::Closed {
            Some("duplicate half-close")
        } else if self.partial.is_some() {
            Some("half-close inside a fragmented message")
        } else if single && self.received == 0 {
            Some("half-close without the request message")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(Status::new(Code::Internal, p));
        }
        self.state = RecvState::Closed;
        Ok(())
    }

    /// The application took a message of `len` bytes: returns the bytes it
    /// frees, and the credit to grant the peer now (`grants`: this call
    /// still grants credit; `budget`: the window's byte budget, see
    /// [`Config::stream_window_bytes`](crate::Config::stream_window_bytes)).
    #[inline]
    pub(crate) fn consume(&mut self, len: usize, grants: bool, budget: u32) -> (usize, u32) {
        if self.unread_msgs == 0 {
            return (0, 0); // nothing delivered is unread: nothing to grant
        }
        self.unread_msgs -= 1;
        let n = len.min(self.unread);
        self.unread -= n;
        if !grants || self.state == RecvState::Closed {
            return (n, 0);
        }
        self.to_grant += 1;
        // Small messages: grow the window toward the byte budget, so the
        // sender is not stalled by round trips (the receiver's own policy;
        // the protocol only sees larger CREDIT frames).
        if budget > 0 && self.window < MAX_AUTO_WINDOW {
            let target = (budget as usize / len.max(1)).min(MAX_AUTO_WINDOW as usize) as u32;
            if target > self.window {
                self.to_grant += target - self.window;
                self.window = target;
            }
        }
        if self.to_grant < (self.window / 2).max(1) {
            return (n, 0);
        }
        let credit = std::mem::take(&mut self.to_grant);
        self.credit += credit;
        (n, credit)
    }

    /// Forgets everything delivered or partial (the call ended for the
    /// application); returns the bytes that frees.
    pub(crate) fn clear(&mut self) -> usize {
        let held = self.held();
        self.unread = 0;
        self.unread_msgs = 0;
        self.partial = None;
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![1; n])
    }

    #[test]
    fn fragments_reassemble_and_count_by_capacity_until_whole() {
        let mut r = RecvHalf::new(4);
        assert!(r.on_fragment(true, b(1000), false, 4096).unwrap().is_none());
        assert!(r.held() >= 1000, "a partial message counts its buffer");
        let whole = r.on_fragment(false, b(24), false, 4096).unwrap().unwrap();
        assert_eq!(whole.len(), 1024);
        assert_eq!(r.held(), 1024, "delivered, unread");
        assert_eq!(r.received(), 1);
        assert_eq!(r.state, RecvState::Open);
    }

    #[test]
    fn a_message_past_the_granted_credit_is_a_connection_fault() {
        let mut r = RecvHalf::new(1);
        r.on_fragment(false, b(1), false, 64).unwrap();
        match r.on_fragment(false, b(1), false, 64) {
            Err(RecvFault::Connection(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn call_faults_end_only_the_call() {
        let mut r = RecvHalf::new(4);
        match r.on_fragment(true, b(100), false, 64) {
            Err(RecvFault::Call(s)) => assert_eq!(s.code(), Code::ResourceExhausted),
            other => panic!("{other:?}"),
        }
        let mut r = RecvHalf::new(4);
        r.on_fragment(false, b(1), true, 64).unwrap();
        match r.on_fragment(false, b(1), true, 64) {
            Err(RecvFault::Call(s)) => assert_eq!(s.code(), Code::Internal),
            other => panic!("{other:?}"),
        }
        let mut r = RecvHalf::new(4);
        r.close(false).unwrap();
        assert!(r.close(false).is_err(), "duplicate half-close");
        match r.on_fragment(false, b(1), false, 64) {
            Err(RecvFault::Call(s)) => assert_eq!(s.code(), Code::Internal),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn half_close_needs_the_one_request_and_no_partial_message() {
        let mut r = RecvHalf::new(4);
        assert!(r.close(true).is_err(), "no request yet");
        let mut r = RecvHalf::new(4);
        r.on_fragment(true, b(10), false, 64).unwrap();
        assert!(r.close(false).is_err(), "inside a fragmented message");
    }

    #[test]
    fn consuming_grants_credit_back_in_half_windows_and_grows_the_window() {
        let mut r = RecvHalf::new(4);
        for _ in 0..4 {
            r.on_fragment(false, b(64), false, 1024).unwrap();
        }
        // Without a byte budget: credit back once half the window is read.
        assert_eq!(r.consume(64, true, 0), (64, 0));
        assert_eq!(r.consume(64, true, 0), (64, 2));
        // A byte budget grows the window toward budget / message size.
        assert_eq!(r.consume(64, true, 64 * 100), (64, 97));
        assert_eq!(r.window(), 100);
        // Nothing granted when the call no longer grants; nothing freed
        // beyond what was delivered.
        assert_eq!(r.consume(64, false, 0), (64, 0));
        assert_eq!(r.consume(64, true, 0), (0, 0));
        assert_eq!(r.held(), 0);
    }
}
