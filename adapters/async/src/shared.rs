//! State shared by a connection's driver tasks and its call handles: the
//! core state machine behind one mutex (never held across an await), plus
//! per-call inboxes and wakers.

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use std::time::Instant;

use bytes::Bytes;
use zrpc_core::{
    Code, Connection, Event, IncomingCall, Metadata, Mode, Status, StreamId, UserError,
};

/// A one-slot wake-up signal (a notification is kept until taken).
/// Lock-free: polled on every pending read and every writer wait.
#[derive(Default)]
pub(crate) struct Notify {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Notify {
    pub(crate) fn notify(&self) {
        if self.flag.swap(true, Ordering::AcqRel) {
            return; // already signalled and not yet taken: the waiter will run
        }
        self.waker.wake();
    }

    pub(crate) fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.flag.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    pub(crate) async fn wait(&self) {
        futures_lite::future::poll_fn(|cx| self.poll_wait(cx)).await
    }
}

/// Locks a mutex. No user code runs under these locks (handlers are polled
/// outside them), so a poisoned lock means zrpc itself panicked while
/// holding it: that is surfaced, not hidden.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("zrpc: a connection lock was poisoned by an earlier panic inside zrpc (a bug)")
}

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

thread_local! {
    /// Sends and receives left to a handler's first poll while it runs on
    /// its connection's reader task (`None` outside such a poll).
    static INLINE_BUDGET: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Operations a handler may complete during its inline first poll before it
/// is made to yield (and continue as its own task).
pub(crate) const INLINE_OPS: u32 = 64;

/// Runs `f` as an inline first poll with a fresh operation budget.
pub(crate) fn with_inline_budget<T>(f: impl FnOnce() -> T) -> T {
    INLINE_BUDGET.with(|b| b.set(Some(INLINE_OPS)));
    let out = f();
    INLINE_BUDGET.with(|b| b.set(None));
    out
}

/// Takes one operation from the inline budget; false (after scheduling a
/// wake-up) when it is spent, so the caller returns `Pending` and the reader
/// hands the handler to a task of its own.
fn inline_budget_allows(cx: &mut Context<'_>) -> bool {
    INLINE_BUDGET.with(|b| match b.get() {
        None => true,
        Some(0) => {
            cx.waker().wake_by_ref();
            false
        }
        Some(n) => {
            b.set(Some(n - 1));
            true
        }
    })
}

/// Fibonacci hashing for stream ids: cheap, and the ids of one connection
/// are bounded in number by its concurrent call limit.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
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

/// Per-call state keyed by stream id.
pub(crate) type StreamIdMap<V> =
    std::collections::HashMap<StreamId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// What the application side knows about one live call.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) inbox: VecDeque<Bytes>,
    pub(crate) headers: Option<Metadata>,
    pub(crate) recv_closed: bool,
    pub(crate) end: Option<(Status, Metadata)>,
    pub(crate) recv_waker: Option<Waker>,
    pub(crate) send_waker: Option<Waker>,
    pub(crate) end_wakers: Vec<Waker>,
}

impl Slot {
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

pub(crate) struct Inner {
    pub(crate) conn: Connection,
    pub(crate) slots: StreamIdMap<Slot>,
    /// Set once the connection is over: the status new calls get.
    pub(crate) closed: Option<Status>,
    pub(crate) draining: bool,
    pub(crate) open_wakers: Vec<Waker>,
    pub(crate) closed_wakers: Vec<Waker>,
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
    pub(crate) writer: Notify,
    /// Signalled when the writer has ended: the reader stops too.
    pub(crate) writer_done: Notify,
    /// How the writer ended (`driver::WRITER_*`).
    pub(crate) writer_end: AtomicU8,
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
                closed: None,
                draining: false,
                open_wakers: Vec::new(),
                closed_wakers: Vec::new(),
                armed: None,
                budget: info.budget,
                budget_reported: 0,
            }),
            writer: Notify::default(),
            writer_done: Notify::default(),
            writer_end: AtomicU8::new(crate::driver::WRITER_RUNNING),
            peer: info.addr,
            identity: info.identity,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }
}

impl Inner {
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
                    self.slots.insert(call.id, Slot::default());
                    opened.push(call);
                }
                Event::Headers { id, metadata } => {
                    if let Some(s) = self.slots.get_mut(&id) {
                        s.headers = Some(metadata);
                        if let Some(w) = s.recv_waker.take() {
                            w.wake();
                        }
                    }
                }
                Event::Message { id, data } => match self.slots.get_mut(&id) {
                    Some(s) => {
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
                        s.recv_closed = true;
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
                        s.recv_closed = true;
                        if s.headers.is_none() {
                            s.headers = Some(Metadata::new());
                        }
                        s.end = Some((status, trailers));
                        s.wake_all();
                    }
                }
                Event::GoAway { .. } => self.draining = true,
                Event::CanOpen => self.wake_openers(),
                Event::Closed { error } => {
                    let status = match error {
                        None => Status::new(Code::Unavailable, "connection closed"),
                        Some(e) => Status::new(Code::Unavailable, e.to_string()),
                    };
                    self.closed = Some(status);
                    self.wake_openers();
                    for w in self.closed_wakers.drain(..) {
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
            UserError::UnknownCall => match self.slots.get(&id).and_then(|s| s.end.as_ref()) {
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
            UserError::MessageTooLarge { .. } | UserError::MetadataTooLarge { .. } => {
                Status::new(Code::ResourceExhausted, e.to_string())
            }
            UserError::InvalidMethod => Status::new(Code::InvalidArgument, e.to_string()),
            _ => Status::new(Code::FailedPrecondition, e.to_string()),
        }
    }
}

/// Messages (and bytes) a reader takes from its call's inbox per lock.
const TAKE_MESSAGES: usize = 64;
const TAKE_BYTES: usize = 64 * 1024;

/// Receives the next message of a call: `Ok(Some)` while messages come,
/// `Ok(None)` after the last one when the call is still fine (peer
/// half-closed, or ended OK), `Err(status)` when the call failed.
///
/// Messages move from the call's inbox to the reader's own `local` queue up
/// to 64 messages or 64 KiB at a time, under one lock; they count as read
/// (their credit goes back to the peer) when they move, so a reader holds
/// at most that much beyond its call's window.
pub(crate) fn poll_message(
    shared: &Shared,
    id: StreamId,
    local: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Bytes>, Status>> {
    if let Some(m) = local.pop_front() {
        return Poll::Ready(Ok(Some(m)));
    }
    if !inline_budget_allows(cx) {
        return Poll::Pending;
    }
    let mut g = shared.lock();
    let inner = &mut *g;
    let Some(slot) = inner.slots.get_mut(&id) else {
        return Poll::Ready(Ok(None));
    };
    if let Some(first) = slot.inbox.pop_front() {
        inner.conn.consume(id, first.len());
        let mut bytes = first.len();
        while local.len() < TAKE_MESSAGES - 1 && bytes < TAKE_BYTES {
            let Some(m) = slot.inbox.pop_front() else {
                break;
            };
            inner.conn.consume(id, m.len());
            bytes += m.len();
            local.push_back(m);
        }
        inner.sync_budget();
        let wake = inner.writer_needed();
        drop(g);
        if wake {
            shared.writer.notify();
        }
        return Poll::Ready(Ok(Some(first)));
    }
    if let Some((status, _)) = &slot.end {
        return Poll::Ready(if status.is_ok() {
            Ok(None)
        } else {
            Err(status.clone())
        });
    }
    if slot.recv_closed {
        return Poll::Ready(Ok(None));
    }
    slot.recv_waker = Some(cx.waker().clone());
    Poll::Pending
}

/// Sends one message, waiting for credit. `msg` is taken when it is sent
/// (and kept while the call waits, so no copy of the handle is made then).
pub(crate) fn poll_send(
    shared: &Shared,
    id: StreamId,
    msg: &mut Option<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Status>> {
    if msg.is_some() && !inline_budget_allows(cx) {
        return Poll::Pending;
    }
    let mut g = shared.lock();
    let data = match msg {
        Some(m) if g.conn.would_block(id) => m.clone(),
        Some(_) => msg.take().unwrap_or_default(),
        None => return Poll::Ready(Ok(())),
    };
    match g.conn.send(id, data) {
        Ok(()) => {
            *msg = None;
            drop(g);
            shared.writer.notify();
            Poll::Ready(Ok(()))
        }
        Err(UserError::Blocked) => {
            if let Some(s) = g.slots.get_mut(&id) {
                s.send_waker = Some(cx.waker().clone());
            }
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(g.status_of(id, e))),
    }
}

/// Resolves once the call has ended (for any reason), with its status.
pub(crate) fn poll_end(
    shared: &Shared,
    id: StreamId,
    cx: &mut Context<'_>,
) -> Poll<(Status, Metadata)> {
    let mut g = shared.lock();
    match g.slots.get_mut(&id) {
        None => Poll::Ready((
            Status::new(Code::Cancelled, "call is gone"),
            Metadata::new(),
        )),
        Some(s) => match &s.end {
            Some(end) => Poll::Ready(end.clone()),
            None => {
                if !s.end_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.end_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        },
    }
}

/// Current time for the core (the adapters' only clock).
pub(crate) fn now() -> Instant {
    Instant::now()
}
