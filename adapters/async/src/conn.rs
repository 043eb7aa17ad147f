//! One connection's state shared by its driver tasks and its call handles:
//! the core state machine behind one mutex (never held across an await),
//! each call's application-side [`CallSlot`], the connection's share of the
//! server-wide receive budget, and the signals that wake its tasks.

use std::any::Any;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use zrpc_core::{
    Code, Connection, Event, IncomingCall, Metadata, Mode, Status, StreamId, UserError,
};

use crate::life::TaskLife;
use crate::signal::{Signal, lock};

/// The server-wide bound on received bytes held for applications, shared by
/// every connection of one server (see `ServerConfig::max_server_receive_buffer`).
#[derive(Debug)]
pub(crate) struct RecvBudget {
    pub(crate) used: AtomicUsize,
    pub(crate) limit: usize,
}

impl RecvBudget {
    pub(crate) fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

pub(crate) use zrpc_core::StreamIdMap;

/// How the stream of messages a call's handle reads ends.
#[derive(Debug, Default)]
pub(crate) enum Reading {
    /// Messages may still come.
    #[default]
    Open,
    /// The peer half-closed: the inbox holds the last messages.
    Closed,
    /// The call ended, with this status and these trailers (the core has
    /// forgotten it; this is the only record).
    Ended(Status, Metadata),
}

/// The application's side of one call, the one owner of what the core has
/// handed over: delivered messages nobody has read yet (the core only
/// counts their bytes against its bounds, and grants credit when they are
/// read), the response headers, and how the message stream ends.
#[derive(Default)]
pub(crate) struct CallSlot {
    pub(crate) inbox: VecDeque<Bytes>,
    pub(crate) headers: Option<Metadata>,
    /// Caller side: where the stream starts again if it is resumed (the
    /// cursor of the last message received, or of the response headers
    /// before any); `None` once a message came without one.
    pub(crate) cursor: Option<Bytes>,
    pub(crate) reading: Reading,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) send_waker: Option<Waker>,
    pub(crate) end_wakers: Vec<Waker>,
}

impl CallSlot {
    /// The call's final status and trailers, once it ended.
    pub(crate) fn end(&self) -> Option<(&Status, &Metadata)> {
        match &self.reading {
            Reading::Ended(s, t) => Some((s, t)),
            _ => None,
        }
    }

    /// True once the call ended.
    pub(crate) fn is_ended(&self) -> bool {
        matches!(self.reading, Reading::Ended(..))
    }

    fn wake_all(&mut self) {
        for w in [self.recv_waker.take(), self.send_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
        for w in self.end_wakers.drain(..) {
            w.wake();
        }
    }
}

/// Emptied call slots a connection keeps for its next calls.
const SPARE_SLOTS: usize = 16;

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    /// Boxed: a connection with one live call holds a table of four
    /// buckets, 4 x 16 bytes instead of 4 x 240.
    pub(crate) slots: StreamIdMap<Box<CallSlot>>,
    /// Slots of ended calls, emptied, for the next calls: the boxes
    /// themselves are what is kept (no allocation per call).
    #[allow(clippy::vec_box)]
    spare_slots: Vec<Box<CallSlot>>,
    /// Set once the connection is over: the status new calls get.
    pub(crate) closed: Option<Status>,
    pub(crate) draining: bool,
    pub(crate) open_wakers: Vec<Waker>,
    pub(crate) closed_wakers: Vec<Waker>,
    /// Woken when the peer drains (GOAWAY) or the connection closes.
    pub(crate) drain_wakers: Vec<Waker>,
    /// The deadline the writer sleeps toward (`None`: no timer armed).
    pub(crate) armed: Option<Instant>,
    /// The server-wide receive budget and this connection's share of it.
    budget: Option<Arc<RecvBudget>>,
    budget_reported: usize,
}

/// Who the peer is, as the server's authentication hook decided.
pub(crate) type Identity = Arc<dyn Any + Send + Sync>;

/// What a connection knows about its peer and its server.
#[derive(Default)]
pub(crate) struct PeerInfo {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) identity: Option<Identity>,
    pub(crate) budget: Option<Arc<RecvBudget>>,
}

/// One connection's shared state.
pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) writer: Signal,
    /// Where the connection's tasks are in their life.
    pub(crate) life: TaskLife,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) identity: Option<Identity>,
    /// The connection's wire format (fixed for its life).
    mode: Mode,
}

impl Shared {
    pub(crate) fn new(conn: Connection, info: PeerInfo) -> Arc<Self> {
        let mode = conn.mode();
        Arc::new(Shared {
            mode,
            inner: Mutex::new(Inner {
                conn,
                slots: StreamIdMap::default(),
                spare_slots: Vec::new(),
                closed: None,
                draining: false,
                open_wakers: Vec::new(),
                closed_wakers: Vec::new(),
                drain_wakers: Vec::new(),
                armed: None,
                budget: info.budget,
                budget_reported: 0,
            }),
            writer: Signal::default(),
            life: TaskLife::default(),
            peer: info.addr,
            identity: info.identity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The lock for the connection's own tasks only: the driver's reader
    /// (which routes the events of what it received, and dispatches the
    /// calls the peer opens) and writer (which is what `act` wakes).
    pub(crate) fn driver_lock(&self) -> MutexGuard<'_, Inner> {
        self.lock()
    }

    /// Looks at the connection without changing it.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.lock())
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Acts on the connection: runs `f` under the lock, routes the events
    /// it caused to the calls' slots (and brings the receive budget up to
    /// date), and wakes the writer when it has something to do. The one way
    /// handles, calls and the server change a connection, so no queuing
    /// operation can forget the writer; only the driver's own tasks take
    /// the lock otherwise ([`driver_lock`](Self::driver_lock)).
    pub(crate) fn act<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.lock();
        let out = f(&mut g);
        // Most actions cause no event (a message queued, one consumed):
        // then only the budget needs bringing up to date.
        if g.conn.has_event() {
            g.pump_events();
        } else {
            g.sync_budget();
        }
        // A writer already signalled takes the lock after this and sees
        // everything done under it (it clears the signal under the lock).
        let wake = !self.writer.is_pending() && g.writer_needed();
        drop(g);
        if wake {
            self.writer.signal();
        }
        out
    }

    /// Resolves once the writer has ended: the close was written (or the
    /// socket failed). Nothing of the connection goes out after that.
    pub(crate) async fn finished(&self) {
        self.life.finished().await
    }

    /// Resolves once the connection is over.
    pub(crate) async fn closed(&self) {
        futures_lite::future::poll_fn(|cx| {
            let mut g = self.lock();
            if g.closed.is_some() || g.conn.is_closed() {
                return std::task::Poll::Ready(());
            }
            if !g.closed_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                g.closed_wakers.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }
}

impl Inner {
    /// Runs the core's timers; when that released the idle connection's
    /// buffers, the call table goes too.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let held = !self.conn.released();
        self.conn.handle_timeout(now);
        if held && self.conn.released() && self.slots.is_empty() {
            self.slots = StreamIdMap::default();
            self.spare_slots = Vec::new();
        }
    }

    /// A slot for a new call (an emptied one of an ended call if any).
    pub(crate) fn add_slot(&mut self, id: StreamId) {
        let slot = self.spare_slots.pop().unwrap_or_default();
        self.slots.insert(id, slot);
    }

    /// Forgets a call's slot; what it held is dropped, its box kept for
    /// the next call.
    pub(crate) fn remove_slot(&mut self, id: StreamId) {
        if let Some(slot) = self.slots.remove(&id) {
            self.recycle(slot);
        }
    }

    /// Keeps an ended call's slot box, emptied, for the next call.
    pub(crate) fn recycle(&mut self, mut slot: Box<CallSlot>) {
        if self.spare_slots.len() < SPARE_SLOTS {
            *slot = CallSlot::default();
            self.spare_slots.push(slot);
        }
    }

    /// Whether the writer must run: something to write, the connection
    /// over, or a timer due before the one it sleeps toward. Waking it only
    /// then saves a task switch per received or consumed message.
    pub(crate) fn writer_needed(&self) -> bool {
        self.conn.has_transmit()
            || self.conn.is_closed()
            || match (self.conn.poll_timeout(), self.armed) {
                (Some(d), Some(a)) => d < a,
                (Some(_), None) => true,
                (None, _) => false,
            }
    }

    /// Routes every pending core event to the call slots; returns the calls
    /// the peer opened, for the caller to dispatch outside the lock.
    pub(crate) fn pump_events(&mut self) -> Vec<IncomingCall> {
        let mut opened = Vec::new();
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::CallOpened(call) => {
                    self.add_slot(call.id);
                    opened.push(call);
                }
                Event::Headers { id, metadata } => {
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.cursor = metadata.get(zrpc_core::CURSOR_KEY).cloned();
                        s.headers = Some(metadata);
                        if let Some(w) = s.recv_waker.take() {
                            w.wake();
                        }
                    }
                }
                Event::Message { id, data, cursor } => match self.slots.get_mut(&id) {
                    Some(s) => {
                        s.cursor = cursor;
                        s.inbox.push_back(data);
                        if let Some(w) = s.recv_waker.take() {
                            w.wake();
                        }
                    }
                    // Nobody will read it: give the credit back at once.
                    None => self.conn.consume(id, data.len()),
                },
                Event::RecvClosed { id } => {
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.reading = Reading::Closed;
                        if let Some(w) = s.recv_waker.take() {
                            w.wake();
                        }
                    }
                }
                Event::Writable { id } => {
                    if let Some(w) = self.slots.get_mut(&id).and_then(|s| s.send_waker.take()) {
                        w.wake();
                    }
                }
                Event::CallEnded {
                    id,
                    status,
                    trailers,
                } => {
                    if let Some(s) = self.slots.get_mut(&id) {
                        if s.headers.is_none() {
                            s.headers = Some(Metadata::new());
                        }
                        s.reading = Reading::Ended(status, trailers);
                        s.wake_all();
                    }
                }
                Event::GoAway { .. } => {
                    self.draining = true;
                    self.drain_wakers.drain(..).for_each(Waker::wake);
                }
                Event::CanOpen => self.wake_openers(),
                Event::Closed { error } => {
                    let status = match error {
                        None => Status::new(Code::Unavailable, "connection closed"),
                        Some(e) => Status::new(Code::Unavailable, e.to_string()),
                    };
                    self.closed = Some(status);
                    self.wake_openers();
                    for w in self
                        .closed_wakers
                        .drain(..)
                        .chain(self.drain_wakers.drain(..))
                    {
                        w.wake();
                    }
                    for s in self.slots.values_mut() {
                        s.wake_all();
                    }
                }
            }
        }
        self.sync_budget();
        opened
    }

    /// Brings this connection's share of the server-wide receive budget up
    /// to date; true when the budget is exceeded.
    pub(crate) fn sync_budget(&mut self) -> bool {
        let Some(b) = &self.budget else {
            return false;
        };
        let now = self.conn.buffered_bytes();
        if now > self.budget_reported {
            b.used
                .fetch_add(now - self.budget_reported, Ordering::Relaxed);
        } else if now < self.budget_reported {
            b.used
                .fetch_sub(self.budget_reported - now, Ordering::Relaxed);
        }
        self.budget_reported = now;
        b.exceeded()
    }

    fn wake_openers(&mut self) {
        for w in self.open_wakers.drain(..) {
            w.wake();
        }
    }

    /// The status a failed local action stands for.
    pub(crate) fn status_of(&self, id: StreamId, e: UserError) -> Status {
        match e {
            UserError::UnknownCall => match self.slots.get(&id).and_then(|s| s.end()) {
                Some((st, _)) if !st.is_ok() => st.clone(),
                _ => Status::new(Code::FailedPrecondition, "the call has ended"),
            },
            UserError::ConnectionClosed => self
                .closed
                .clone()
                .unwrap_or_else(|| Status::new(Code::Unavailable, "connection closed")),
            UserError::Draining => Status::new(
                Code::Unavailable,
                "connection is draining; retry on a new connection",
            ),
            UserError::MessageTooLarge { .. }
            | UserError::MetadataTooLarge { .. }
            | UserError::CursorTooLarge { .. } => {
                Status::new(Code::ResourceExhausted, e.to_string())
            }
            UserError::InvalidMethod => Status::new(Code::InvalidArgument, e.to_string()),
            _ => Status::new(Code::FailedPrecondition, e.to_string()),
        }
    }
}

/// Current time for the core (the adapters' only clock).
pub(crate) fn now() -> Instant {
    Instant::now()
}
