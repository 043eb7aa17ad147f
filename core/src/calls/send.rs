//! The sending half of a call: the peer's credit, the queue of what this
//! side has to write (frames encoded when the application acted, and
//! messages), and fragmentation of messages larger than the peer's fragment
//! size. What this side may send at all is the call's state
//! ([`CallState`](super::state::CallState)).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::UserError;
use crate::frame::{FLAG_CURSOR, FLAG_END_STREAM, FLAG_MORE};

/// Something queued to send on a call, in order. Control frames are encoded
/// when the application acts (carved from the connection's output arena), so
/// the queue holds bytes, not values to encode later.
#[derive(Debug)]
pub(crate) enum Queued {
    /// The call's OPEN: once written, the peer knows the call.
    Open(Bytes),
    /// HEADERS or HALF_CLOSE.
    Frame(Bytes),
    /// The responder's STATUS: the call's last frame.
    Status(Bytes),
    /// A message; `end` sets END_STREAM on its last fragment. A `stamped`
    /// one ends with its resume cursor trailer (the cursor, then its
    /// length), which its last fragment carries whole, with CURSOR.
    Message {
        data: Bytes,
        end: bool,
        stamped: bool,
    },
}

/// One piece of a call's output: what [`SendHalf::take`] took from the
/// queue for the wire (a whole frame, or one fragment of a message).
#[derive(Debug)]
pub(crate) enum CallPiece {
    /// A frame encoded when it was queued.
    Frame {
        bytes: Bytes,
        /// It was the OPEN: the peer knows the call from now on.
        open: bool,
        /// It was the STATUS: nothing follows.
        last: bool,
    },
    /// A MESSAGE frame carrying `data[lo..hi]` with `flags`.
    Message {
        flags: u8,
        data: Bytes,
        lo: usize,
        hi: usize,
        /// The whole message has now been taken: its bytes leave the
        /// send buffers (`Some(len)`), or more fragments follow (`None`).
        released: Option<usize>,
    },
}

/// The bounds a `send` is checked against.
pub(crate) struct SendLimits {
    /// The peer's largest message.
    pub(crate) max_message: usize,
    /// [`Config::max_call_send_buffer`](crate::Config::max_call_send_buffer).
    pub(crate) call_buffer: usize,
    /// The connection's send buffer is at its bound.
    pub(crate) connection_full: bool,
}

/// The sending half of one call.
#[derive(Debug)]
pub(crate) struct SendHalf {
    /// Messages the peer lets this side start.
    credit: u32,
    /// A send was refused with `Blocked`: `Event::Writable` is owed.
    writable_owed: bool,
    queue: VecDeque<Queued>,
    /// Bytes of messages in `queue` not yet completely taken.
    queued: usize,
    /// How much of the message at the queue's front went out as fragments.
    frag_off: usize,
}

impl SendHalf {
    pub(crate) fn new(credit: u32, queue: VecDeque<Queued>) -> Self {
        Self {
            credit,
            writable_owed: false,
            queue,
            queued: 0,
            frag_off: 0,
        }
    }
    #[inline]
    pub(crate) fn credit(&self) -> u32 {
        self.credit
    }

    /// Bytes of messages queued and not yet completely taken.
    #[inline]
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }
    #[inline]
    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// True when a send would be refused with `Blocked`.
    #[inline]
    pub(crate) fn would_block(&self, call_buffer: usize, connection_full: bool) -> bool {
        self.credit == 0 || self.queued >= call_buffer || connection_full
    }

    /// Checks one message of `len` bytes against the bounds and takes a
    /// credit for it (the call's state allowed it first); the caller then
    /// [`enqueue`](Self::enqueue)s it.
    #[inline]
    pub(crate) fn admit(&mut self, len: usize, limits: &SendLimits) -> Result<(), UserError> {
        if len > limits.max_message {
            return Err(UserError::MessageTooLarge {
                len,
                limit: limits.max_message,
            });
        }
        if self.would_block(limits.call_buffer, limits.connection_full) {
            self.writable_owed = true;
            return Err(UserError::Blocked);
        }
        self.credit -= 1;
        Ok(())
    }

    /// Queues an admitted message (`stamped`: it ends with its cursor
    /// trailer).
    #[inline]
    pub(crate) fn enqueue(&mut self, data: Bytes, stamped: bool) {
        self.queued += data.len();
        self.queue.push_back(Queued::Message {
            data,
            end: false,
            stamped,
        });
    }

    /// Queues a frame encoded by the connection.
    #[inline]
    pub(crate) fn push(&mut self, out: Queued) {
        self.queue.push_back(out);
    }

    /// The caller half-closed (the call's state allowed it): true when
    /// END_STREAM was merged into the last queued message, false when a
    /// HALF_CLOSE frame must be queued.
    pub(crate) fn end_stream(&mut self) -> bool {
        if let Some(Queued::Message { end, .. }) = self.queue.back_mut() {
            *end = true;
            return true;
        }
        false
    }

    /// Credit granted by the peer (a CREDIT frame, or a legacy message
    /// written); false when the total would pass `max`.
    #[inline]
    pub(crate) fn grant(&mut self, credit: u32, max: u32) -> bool {
        let total = self.credit as u64 + credit as u64;
        if total > max as u64 {
            return false;
        }
        self.credit = total as u32;
        true
    }

    /// Whether the owed `Writable` is due now (credit, and room in both
    /// send buffers); clears the debt when it is.
    #[inline]
    pub(crate) fn writable_due(&mut self, call_buffer: usize, connection_full: bool) -> bool {
        if self.writable_owed && !self.would_block(call_buffer, connection_full) {
            self.writable_owed = false;
            return true;
        }
        false
    }

    /// Takes the next item for the wire: a whole frame, or one fragment of
    /// at most `max_fragment` bytes of the message at the front (a cursor
    /// trailer whole in the last).
    #[inline]
    pub(crate) fn take(&mut self, max_fragment: usize) -> Option<CallPiece> {
        let item = self.queue.pop_front()?;
        Some(match item {
            Queued::Open(bytes) => CallPiece::Frame {
                bytes,
                open: true,
                last: false,
            },
            Queued::Frame(bytes) => CallPiece::Frame {
                bytes,
                open: false,
                last: false,
            },
            Queued::Status(bytes) => CallPiece::Frame {
                bytes,
                open: false,
                last: true,
            },
            Queued::Message { data, end, stamped } => {
                let lo = self.frag_off;
                let rest = data.len() - lo;
                if rest > max_fragment {
                    // The last fragment holds the cursor trailer whole (a
                    // fragment size is at least 1,024 bytes, a trailer at
                    // most 256).
                    let trailer = if stamped { trailer_len(&data) } else { 0 };
                    let hi = lo + max_fragment.min(rest - trailer);
                    self.frag_off = hi;
                    self.queue.push_front(Queued::Message {
                        data: data.clone(),
                        end,
                        stamped,
                    });
                    CallPiece::Message {
                        flags: FLAG_MORE,
                        data,
                        lo,
                        hi,
                        released: None,
                    }
                } else {
                    self.frag_off = 0;
                    let len = data.len();
                    self.queued -= len;
                    CallPiece::Message {
                        flags: if end { FLAG_END_STREAM } else { 0 }
                            | if stamped { FLAG_CURSOR } else { 0 },
                        hi: len,
                        data,
                        lo,
                        released: Some(len),
                    }
                }
            }
        })
    }

    /// Drops everything queued; returns the queue (empty, for reuse) and the
    /// message bytes it held.
    pub(crate) fn discard(&mut self) -> (VecDeque<Queued>, usize) {
        self.queue.clear();
        self.frag_off = 0;
        (
            std::mem::take(&mut self.queue),
            std::mem::take(&mut self.queued),
        )
    }
}

/// Bytes of a stamped message's cursor trailer: the cursor and its length,
/// the last byte.
#[inline]
fn trailer_len(data: &[u8]) -> usize {
    data.last().map_or(0, |&n| n as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SendLimits = SendLimits {
        max_message: 1 << 20,
        call_buffer: 1 << 20,
        connection_full: false,
    };

    fn half(credit: u32) -> SendHalf {
        SendHalf::new(credit, VecDeque::new())
    }

    fn message(s: &mut SendHalf, len: usize) {
        s.admit(len, &LIMITS).unwrap();
        s.enqueue(Bytes::from(vec![7; len]), false);
    }

    #[test]
    fn a_large_message_goes_in_fragments_and_is_released_with_the_last() {
        let mut s = half(4);
        message(&mut s, 2500);
        assert_eq!(s.queued(), 2500);
        let mut pieces = vec![];
        while let Some(CallPiece::Message {
            flags,
            lo,
            hi,
            released,
            ..
        }) = s.take(1024)
        {
            pieces.push((flags, hi - lo, released));
        }
        assert_eq!(
            pieces,
            vec![
                (FLAG_MORE, 1024, None),
                (FLAG_MORE, 1024, None),
                (0, 452, Some(2500)),
            ]
        );
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn a_cursor_trailer_rides_whole_on_the_last_fragment() {
        // 2,047 message bytes and a 2-byte cursor: 2,050 bytes with the trailer.
        let mut data = vec![7u8; 2047];
        data.extend_from_slice(b"c8\x02");
        let mut s = half(4);
        s.admit(2047, &LIMITS).unwrap();
        s.enqueue(Bytes::from(data), true);
        let mut pieces = vec![];
        while let Some(CallPiece::Message { flags, lo, hi, .. }) = s.take(1024) {
            pieces.push((flags, hi - lo));
        }
        // 1,024 + 1,024 would cut the trailer: the second fragment stops
        // before it, and the last carries it whole.
        assert_eq!(
            pieces,
            vec![(FLAG_MORE, 1024), (FLAG_MORE, 1023), (FLAG_CURSOR, 3)]
        );
        let mut s = half(4);
        s.admit(10, &LIMITS).unwrap();
        s.enqueue(Bytes::from_static(b"0123456789c\x01"), true);
        match s.take(1024) {
            Some(CallPiece::Message { flags, lo, hi, .. }) => {
                assert_eq!((flags, hi - lo), (FLAG_CURSOR, 12))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn half_close_merges_into_the_last_queued_message_or_asks_for_a_frame() {
        let mut s = half(4);
        message(&mut s, 10);
        assert!(s.end_stream());
        match s.take(1024) {
            Some(CallPiece::Message { flags, .. }) => assert_eq!(flags, FLAG_END_STREAM),
            other => panic!("{other:?}"),
        }
        assert!(!half(4).end_stream(), "nothing queued: HALF_CLOSE");
    }

    #[test]
    fn without_credit_a_send_blocks_and_writable_is_owed_once() {
        let mut s = half(1);
        message(&mut s, 8);
        assert!(
            !s.writable_due(LIMITS.call_buffer, false),
            "nothing owed yet"
        );
        assert_eq!(s.admit(8, &LIMITS), Err(UserError::Blocked));
        assert!(
            !s.writable_due(LIMITS.call_buffer, false),
            "still no credit"
        );
        assert!(s.grant(3, u32::MAX));
        assert!(s.writable_due(LIMITS.call_buffer, false));
        assert!(!s.writable_due(LIMITS.call_buffer, false), "owed once");
        assert!(!s.grant(u32::MAX, 1 << 31), "credit past the maximum");
    }

    #[test]
    fn the_call_buffer_bounds_queued_bytes_whatever_the_credit() {
        let mut s = half(100);
        let limits = SendLimits {
            call_buffer: 100,
            ..LIMITS
        };
        s.admit(100, &limits).unwrap();
        s.enqueue(Bytes::from(vec![0; 100]), false);
        assert_eq!(s.admit(1, &limits), Err(UserError::Blocked));
        let connection_full = SendLimits {
            connection_full: true,
            ..LIMITS
        };
        assert_eq!(s.admit(1, &connection_full), Err(UserError::Blocked));
        s.take(usize::MAX);
        assert!(s.writable_due(limits.call_buffer, false));
    }
}
