//! The receiving half of a call: the credit this side granted and its
//! window (grown toward a byte budget), reassembly of fragmented messages,
//! and the count of delivered messages the application has not consumed.
//! What the peer may send at all is the call's state
//! ([`CallState`](super::state::CallState)).

use bytes::{Bytes, BytesMut};

use crate::config::MAX_AUTO_WINDOW;
use crate::error::ConnectionError;
use crate::status::{Code, Status};

/// A fault in what the peer sent on this call.
#[derive(Debug)]
pub(crate) enum RecvFault {
    /// A fault that ends the connection.
    Connection(ConnectionError),
    /// A fault confined to the call: it ends with this status.
    Call(Status),
}

/// The call fault of a message over the limit.
#[cold]
fn too_large(max_message: usize) -> RecvFault {
    let msg = format!("message larger than the limit of {max_message} bytes");
    RecvFault::Call(Status::new(Code::ResourceExhausted, msg))
}

impl RecvFault {
    /// A protocol violation that ends the connection.
    pub(crate) fn protocol(why: &'static str) -> Self {
        Self::Connection(ConnectionError::Protocol(why))
    }
    /// A call fault: the call ends `INTERNAL`.
    pub(crate) fn internal(why: &'static str) -> Self {
        Self::Call(Status::new(Code::Internal, why))
    }
}

/// The receiving half of one call.
#[derive(Debug)]
pub(crate) struct RecvHalf {
    /// Messages the peer may still start (credit granted, not yet used).
    credit: u32,
    /// Credit kept granted: consumed messages are granted back.
    window: u32,
    /// Consumed messages not yet granted back (granted in batches).
    to_grant: u32,
    /// The message being reassembled.
    partial: Option<BytesMut>,
    /// Bytes delivered to the application and not yet consumed.
    unread: usize,
    /// Messages delivered and not yet consumed: a `consume` beyond them
    /// grants nothing.
    unread_msgs: u32,
    /// Length of the last message reassembled from fragments. The next one
    /// reserves that much at its first fragment (a call's messages tend to
    /// be alike): one allocation and one copy per message instead of a
    /// buffer grown by doubling, whose freed steps make the allocator hand
    /// memory back to the system and fault it in again for every message.
    last_len: u32,
}

impl RecvHalf {
    pub(crate) fn new(window: u32) -> Self {
        Self {
            credit: window,
            window,
            to_grant: 0,
            partial: None,
            unread: 0,
            unread_msgs: 0,
            last_len: 0,
        }
    }
    #[inline]
    pub(crate) fn window(&self) -> u32 {
        self.window
    }
    /// True when no message is being reassembled: the next fragment
    /// starts a message.
    #[inline]
    pub(crate) fn between_messages(&self) -> bool {
        self.partial.is_none()
    }

    /// Bytes this call holds in the connection's receive budget: unread
    /// messages, and the memory a partial message really takes (its
    /// buffer's capacity, which grows ahead of its length).
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.unread + self.partial.as_ref().map_or(0, |p| p.capacity())
    }

    /// Takes a credit for a message the peer starts; none left is a
    /// connection fault.
    #[inline]
    pub(crate) fn take_credit(&mut self) -> Result<(), RecvFault> {
        if self.credit == 0 {
            return Err(RecvFault::protocol("message beyond the granted credit"));
        }
        self.credit -= 1;
        Ok(())
    }

    /// One MESSAGE frame's payload, once the call's state allowed it.
    /// `Ok(Some(message))` when it completes a message (delivered: counted
    /// unread until consumed), `Ok(None)` when more fragments follow.
    /// `room`: the most a message's first fragment may reserve ahead of
    /// what it carries (what is left of the connection's receive budget),
    /// so the reserve alone never makes the connection shed a call.
    #[inline]
    pub(crate) fn on_fragment(
        &mut self,
        more: bool,
        payload: Bytes,
        max_message: usize,
        room: impl FnOnce() -> usize,
    ) -> Result<Option<Bytes>, RecvFault> {
        if more || self.partial.is_some() {
            return self.reassemble(more, payload, max_message, room);
        }
        if payload.len() > max_message {
            return Err(too_large(max_message));
        }
        Ok(Some(self.deliver(payload)))
    }

    /// A fragment of a message sent in several: kept out of the path of
    /// whole messages.
    #[inline(never)]
    fn reassemble(
        &mut self,
        more: bool,
        payload: Bytes,
        max_message: usize,
        room: impl FnOnce() -> usize,
    ) -> Result<Option<Bytes>, RecvFault> {
        let held = self.partial.as_ref().map_or(0, |p| p.len());
        if held + payload.len() > max_message {
            return Err(too_large(max_message));
        }
        if more {
            let last = self.last_len as usize;
            self.partial
                .get_or_insert_with(|| {
                    let hint = last.min(max_message).min(room());
                    BytesMut::with_capacity(hint.max(payload.len()))
                })
                .extend_from_slice(&payload);
            return Ok(None);
        }
        let Some(mut p) = self.partial.take() else {
            return Ok(Some(self.deliver(payload)));
        };
        p.extend_from_slice(&payload);
        self.last_len = u32::try_from(p.len()).unwrap_or(u32::MAX);
        let data = if p.len() < p.capacity() / 2 {
            // Far smaller than the last message: the application may keep
            // it, so it gets a buffer of its own size.
            Bytes::copy_from_slice(&p)
        } else {
            p.freeze()
        };
        Ok(Some(self.deliver(data)))
    }

    /// A whole message, delivered: unread until consumed.
    #[inline]
    fn deliver(&mut self, data: Bytes) -> Bytes {
        self.unread += data.len();
        self.unread_msgs += 1;
        data
    }

    /// The application took a message of `len` bytes: returns the bytes it
    /// frees, and the credit to grant the peer now (`grants`: this call
    /// still grants credit, see
    /// [`CallState::grants_credit`](super::state::CallState::grants_credit); `budget`: the window's byte budget, see
    /// [`Config::stream_window_bytes`](crate::Config::stream_window_bytes)).
    #[inline]
    pub(crate) fn consume(&mut self, len: usize, grants: bool, budget: u32) -> (usize, u32) {
        if self.unread_msgs == 0 {
            return (0, 0); // nothing delivered is unread: nothing to grant
        }
        self.unread_msgs -= 1;
        let n = len.min(self.unread);
        self.unread -= n;
        if !grants {
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
        assert!(r.between_messages());
        assert!(
            r.on_fragment(true, b(1000), 4096, || usize::MAX)
                .unwrap()
                .is_none()
        );
        assert!(!r.between_messages());
        assert!(r.held() >= 1000, "a partial message counts its buffer");
        let whole = r
            .on_fragment(false, b(24), 4096, || usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(whole.len(), 1024);
        assert_eq!(r.held(), 1024, "delivered, unread");
        assert!(r.between_messages());
    }

    #[test]
    fn a_fragmented_message_reserves_the_last_ones_size_and_never_pins_twice_its_own() {
        let mut r = RecvHalf::new(8);
        r.on_fragment(true, b(1000), 1 << 20, || usize::MAX)
            .unwrap();
        let first = r
            .on_fragment(false, b(3000), 1 << 20, || usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(first.len(), 4000);
        // The next message starts with room for the last one's size: its
        // fragments are copied once, into one buffer.
        r.on_fragment(true, b(1000), 1 << 20, || usize::MAX)
            .unwrap();
        assert!(r.held() >= 4000 + first.len(), "{}", r.held());
        let second = r
            .on_fragment(false, b(3000), 1 << 20, || usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(second.len(), 4000);
        // A much smaller message does not keep the larger reserve.
        r.on_fragment(true, b(100), 1 << 20, || usize::MAX).unwrap();
        let small = r
            .on_fragment(false, b(100), 1 << 20, || usize::MAX)
            .unwrap()
            .unwrap();
        assert_eq!(&small[..], &[1u8; 200][..]);
        assert_eq!(r.held(), 8200, "delivered, unread: their lengths");
        // The reserve is capped by the message limit...
        r.on_fragment(true, b(10), 64, || usize::MAX).unwrap();
        assert!(r.held() <= 8200 + 64, "{}", r.held());
        // ...and by what is left of the connection's receive budget.
        let mut r = RecvHalf::new(8);
        r.on_fragment(true, b(1000), 1 << 20, || usize::MAX)
            .unwrap();
        let m = r
            .on_fragment(false, b(99_000), 1 << 20, || usize::MAX)
            .unwrap();
        assert_eq!(m.map(|m| m.len()), Some(100_000));
        r.on_fragment(true, b(1000), 1 << 20, || 5000).unwrap();
        assert!(r.held() <= 100_000 + 5000, "{}", r.held());
    }

    #[test]
    fn a_message_past_the_granted_credit_is_a_connection_fault() {
        let mut r = RecvHalf::new(1);
        r.take_credit().unwrap();
        match r.take_credit() {
            Err(RecvFault::Connection(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_message_over_the_limit_ends_only_the_call() {
        let mut r = RecvHalf::new(4);
        r.on_fragment(true, b(40), 64, || usize::MAX).unwrap();
        match r.on_fragment(true, b(40), 64, || usize::MAX) {
            Err(RecvFault::Call(s)) => assert_eq!(s.code(), Code::ResourceExhausted),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn consuming_grants_credit_back_in_half_windows_and_grows_the_window() {
        let mut r = RecvHalf::new(4);
        for _ in 0..4 {
            r.take_credit().unwrap();
            r.on_fragment(false, b(64), 1024, || usize::MAX).unwrap();
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
