//! Calls as the connection keeps them: each [`Call`] has its state (what
//! may happen next on it: [`state`]) and a sending and a receiving half
//! that own credit, queues and reassembly ([`send`], [`recv`]); the [`Calls`]
//! table owns the calls, the ids, the counts the concurrency limits look at,
//! the connection-wide byte counts, and the queue of calls with something
//! to write.

pub(crate) mod recv;
pub(crate) mod send;
pub(crate) mod state;

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::call::{Side, StreamId};

pub(crate) use recv::{RecvFault, RecvHalf};
pub(crate) use send::{CallPiece, Queued, SendHalf, SendLimits};
pub(crate) use state::{CallState, Role};

/// Fibonacci hashing for stream ids: cheap, and ids are bounded in number by
/// the concurrent stream limit, so collisions cannot be amplified.
#[derive(Default, Clone, Copy, Debug)]
pub struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by stream id, with [`StreamIdHasher`]: the core's call table,
/// and the adapters' per-call state.
pub type StreamIdMap<V> = HashMap<StreamId, V, BuildHasherDefault<StreamIdHasher>>;

/// Send queues of ended calls kept for reuse.
const SPARE_QUEUES: usize = 64;
/// Boxes of ended calls kept for the next calls (each holds what its call
/// left until it is reused or the connection goes idle).
const SPARE_BOXES: usize = 16;

/// One call, seen from this side.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) state: CallState,
    pub(crate) send: SendHalf,
    pub(crate) recv: RecvHalf,
    pub(crate) deadline: Option<Instant>,
    /// In the ready queue.
    scheduled: bool,
}

impl Call {
    /// True while the application still has the call.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        self.state.is_live()
    }
}

/// The bounds a write is taken under.
pub(crate) struct WriteBounds {
    /// The peer's fragment size.
    pub(crate) max_fragment: usize,
    /// [`Config::max_call_send_buffer`](crate::Config::max_call_send_buffer).
    pub(crate) call_buffer: usize,
    /// The connection's queued send bytes, and their bound.
    pub(crate) queued_send: usize,
    pub(crate) connection_buffer: usize,
}

/// A ready call's turn at the wire: the piece it gave, and what that
/// means to the connection.
pub(crate) struct Turn {
    pub(crate) id: StreamId,
    pub(crate) piece: CallPiece,
    /// It was the call's STATUS: the call is over.
    pub(crate) last: bool,
    /// A message completed and the call may send again: `Writable` is due.
    pub(crate) writable: bool,
}

/// What a removed call held, for the connection's accounting.
pub(crate) struct Removed {
    /// Received bytes it held.
    pub(crate) held: usize,
    /// Queued send bytes it held.
    pub(crate) queued: usize,
    pub(crate) role: Role,
}

/// The table of live calls.
#[derive(Debug)]
pub(crate) struct Calls {
    /// Boxed: a connection with one live call holds a table of four
    /// buckets, 4 x 16 bytes instead of 4 x 160.
    map: StreamIdMap<Box<Call>>,
    /// Calls with something queued to write, in turn.
    ready: VecDeque<StreamId>,
    spare: Vec<VecDeque<Queued>>,
    /// Boxes of ended calls, for the next ones (no allocation per call):
    /// the boxes themselves are what is kept.
    #[allow(clippy::vec_box)]
    spare_boxes: Vec<Box<Call>>,
    /// The next id this side opens a call with.
    next_local: u64,
    /// The highest id the peer opened a call with.
    pub(crate) max_remote: u32,
    /// Calls this side opened (the peer's concurrency limit counts them).
    pub(crate) callers: u32,
    /// Calls the peer opened (this side's limit counts them).
    pub(crate) responders: u32,
}

impl Calls {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            map: StreamIdMap::default(),
            ready: VecDeque::new(),
            spare: Vec::new(),
            spare_boxes: Vec::new(),
            next_local: side.first_id() as u64,
            max_remote: 0,
            callers: 0,
            responders: 0,
        }
    }
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// With no call left: frees the table, the ready queue and the send
    /// queues kept for reuse.
    pub(crate) fn release(&mut self) {
        debug_assert!(self.map.is_empty());
        self.map.shrink_to_fit();
        self.ready.shrink_to_fit();
        self.spare = Vec::new();
        self.spare_boxes = Vec::new();
    }
    #[inline]
    pub(crate) fn get(&self, id: StreamId) -> Option<&Call> {
        self.map.get(&id).map(|s| &**s)
    }
    #[inline]
    pub(crate) fn get_mut(&mut self, id: StreamId) -> Option<&mut Call> {
        self.map.get_mut(&id).map(|s| &mut **s)
    }

    /// A call the application still has.
    #[inline]
    pub(crate) fn live_mut(&mut self, id: StreamId) -> Option<&mut Call> {
        self.map
            .get_mut(&id)
            .map(|s| &mut **s)
            .filter(|s| s.is_live())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (StreamId, &Call)> {
        self.map.iter().map(|(id, s)| (*id, &**s))
    }

    /// Ids of the calls matching `f`, in id order (so what follows from
    /// them is deterministic).
    pub(crate) fn ids_where(&self, f: impl Fn(StreamId, &Call) -> bool) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self
            .iter()
            .filter(|(id, s)| f(*id, s))
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The id the next call this side opens gets, if ids are left.
    pub(crate) fn next_local_id(&self) -> Option<StreamId> {
        (self.next_local <= u32::MAX as u64).then_some(StreamId(self.next_local as u32))
    }

    /// True when `id` names a call that was never opened (by either side).
    pub(crate) fn never_opened(&self, id: StreamId, side: Side) -> bool {
        if id.initiator() == side {
            id.0 as u64 >= self.next_local
        } else {
            id.0 > self.max_remote
        }
    }

    /// A new call's state, reusing the send queue of an ended one.
    pub(crate) fn new_stream(
        &mut self,
        state: CallState,
        send_credit: u32,
        recv_window: u32,
    ) -> Call {
        let queue = self.spare.pop().unwrap_or_default();
        Call {
            state,
            send: SendHalf::new(send_credit, queue),
            recv: RecvHalf::new(recv_window),
            deadline: None,
            scheduled: false,
        }
    }

    /// Adds a call: a caller's takes the next local id.
    pub(crate) fn insert(&mut self, id: StreamId, s: Call) {
        match s.state.role() {
            Role::Caller => {
                self.next_local = id.0 as u64 + 2;
                self.callers += 1;
            }
            Role::Responder => self.responders += 1,
        }
        let boxed = match self.spare_boxes.pop() {
            Some(mut b) => {
                *b = s;
                b
            }
            None => Box::new(s),
        };
        self.map.insert(id, boxed);
    }

    /// Forgets a call, keeping its queue for reuse.
    pub(crate) fn remove(&mut self, id: StreamId) -> Option<Removed> {
        let mut s = self.map.remove(&id)?;
        let (queue, queued) = s.send.discard();
        if queue.capacity() > 0 && self.spare.len() < SPARE_QUEUES {
            self.spare.push(queue);
        }
        let role = s.state.role();
        match role {
            Role::Caller => self.callers -= 1,
            Role::Responder => self.responders -= 1,
        }
        let held = s.recv.held();
        if self.spare_boxes.len() < SPARE_BOXES {
            self.spare_boxes.push(s);
        }
        Some(Removed { held, queued, role })
    }

    /// Puts `id` in the ready queue when it has something to write.
    #[inline]
    pub(crate) fn schedule(&mut self, id: StreamId) {
        if let Some(s) = self.map.get_mut(&id)
            && !s.scheduled
            && s.send.has_queued()
        {
            s.scheduled = true;
            self.ready.push_back(id);
        }
    }

    /// Takes the next frame or fragment to write from the calls in the
    /// ready queue, in turn: one item per call, then the call goes to the
    /// back of the queue if it has more. A taken OPEN makes the call known
    /// to the peer; a taken STATUS ends it (the caller removes it).
    #[inline]
    pub(crate) fn next_turn(&mut self, w: &WriteBounds) -> Option<Turn> {
        while let Some(id) = self.ready.pop_front() {
            let Some(s) = self.map.get_mut(&id) else {
                continue;
            };
            s.scheduled = false;
            let Some(piece) = s.send.take(w.max_fragment) else {
                continue;
            };
            let mut writable = false;
            let last = match &piece {
                CallPiece::Frame { open, last, .. } => {
                    if *open {
                        s.state.opened();
                    }
                    *last
                }
                CallPiece::Message { released, .. } => {
                    if let Some(len) = released {
                        let full = w.queued_send - len >= w.connection_buffer;
                        writable = s.send.writable_due(w.call_buffer, full);
                    }
                    false
                }
            };
            if !last && s.send.has_queued() {
                s.scheduled = true;
                self.ready.push_back(id);
            }
            return Some(Turn {
                id,
                piece,
                last,
                writable,
            });
        }
        None
    }

    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub(crate) fn clear_ready(&mut self) {
        self.ready.clear();
    }
}
