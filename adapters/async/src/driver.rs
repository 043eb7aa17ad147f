//! The connection driver: two tasks per connection over the split
//! WebSocket. The reader feeds received messages to the core and routes the
//! events; the writer drains the core's transmits and runs its timers.
//! Reading and writing proceed independently, so two peers writing to each
//! other with full socket buffers never deadlock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::SinkExt;
use zrpc_core::{Connection, Incoming, Transmit};

use crate::call_io::with_inline_budget;
use crate::conn::{PeerInfo, Shared, now};
use crate::life::{CLOSE_LINGER, Life};
use crate::router::{Router, dispatch};
use crate::runtime::Runtime;
use crate::ws::to_message;

/// Default bound on how long one write may wait for a peer that does not read.
pub(crate) const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls the reader dispatches before it lets the writer send their
/// answers. Small slices keep both peers busy: with 64 calls in flight on
/// one connection (tokio, one worker on each side), slices of 4 gave 2.2×
/// the calls per second of answering the whole burst at once, at the same
/// CPU per call (slices of 16: 1.5×). A browser pays about 70 µs per
/// WebSocket message it receives or sends (Chromium: 72k calls/s whole,
/// 31k in slices of 4), so connections that came with an `Origin` header
/// are answered whole.
pub(crate) const DISPATCH_SLICE: usize = 4;

/// Bytes of frames the writer takes from the core per round.
const WRITE_CHUNK: usize = 256 * 1024;

/// Bytes the reader hands on before it lets the tasks it woke run. A reader
/// that always finds data waiting never has to wait, so without this it
/// would hand a stream's whole window to the call before the call's
/// consumer runs and grants credit back, and the sender would stand idle
/// meanwhile (tokio's cooperative budget alone yields every 128 reads: with
/// 16 KiB reads, more than a window of 64 B messages).
const READ_SLICE: usize = 64 * 1024;

/// What the driver needs beyond the connection itself.
pub(crate) struct Driver {
    /// Handlers for calls the peer opens.
    pub(crate) router: Option<Arc<Router>>,
    /// Longest time one write may stay blocked on a peer that does not read
    /// before the connection is dropped.
    pub(crate) write_timeout: Duration,
    /// Called (outside every lock) when the server-wide receive budget is
    /// exceeded after this connection received a message.
    pub(crate) on_budget_exceeded: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Calls dispatched from one burst before the reader lets the writer
    /// send their answers (`None`: a burst is answered whole).
    pub(crate) dispatch_slice: Option<usize>,
}

/// Starts driving `conn` over `ws`: both tasks spawned.
pub(crate) fn start<S, R>(
    ws: WebSocketStream<S>,
    conn: Connection,
    driver: Driver,
    info: PeerInfo,
    rt: R,
) -> Arc<Shared>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let (shared, read) = attach(ws, conn, driver, info, rt.clone());
    rt.spawn(read.run());
    shared
}

/// Starts driving `conn` over `ws`: the writer is spawned, the reader is
/// returned for the caller's own task to run (a server's connection task
/// awaits it, so an idle connection holds two tasks, not three).
pub(crate) fn attach<S, R>(
    ws: WebSocketStream<S>,
    conn: Connection,
    driver: Driver,
    info: PeerInfo,
    rt: R,
) -> (Arc<Shared>, Reader<S, R>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let shared = Shared::new(conn, info);
    let (tx, rx) = ws.split();
    let driver = Arc::new(driver);
    rt.spawn(writer(tx, shared.clone(), driver.write_timeout, rt.clone()));
    let read = Reader {
        rx,
        shared: shared.clone(),
        driver,
        rt,
    };
    (shared, read)
}

/// A connection's reader, not yet started: what its task needs, a few
/// handles. The task calls [`Reader::run`] where it awaits it, so the
/// reader's future is built in place there. A future built here and
/// moved into the task would be kept twice (once as the task's capture,
/// once where it is awaited): about 600 bytes more per connection.
pub(crate) struct Reader<S, R> {
    rx: WebSocketReceiver<S>,
    shared: Arc<Shared>,
    driver: Arc<Driver>,
    rt: R,
}

impl<S, R> Reader<S, R>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    /// Reads until the connection is over.
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        reader(self.rx, self.shared, self.driver, self.rt)
    }
}

async fn writer<S, R>(
    mut tx: WebSocketSender<S>,
    shared: Arc<Shared>,
    write_timeout: Duration,
    rt: R,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let end = write_loop(&mut tx, &shared, write_timeout, &rt).await;
    if let WriterEnd::Failed(reason) = end {
        shared.act(|g| g.conn.handle_close(None, reason));
    }
    // The reader stops too (at once after a failure, after a short linger
    // for the peer's close reply otherwise): a peer that stopped reading,
    // or stopped inside a message, must not keep its socket.
    shared.life.end(match end {
        WriterEnd::Closed => Life::Closed,
        WriterEnd::Failed(_) => Life::Failed,
    });
}

/// A runtime timer, kept armed across writer rounds.
type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How the writer ended.
enum WriterEnd {
    /// The close went out (or answered the peer's).
    Closed,
    /// The socket failed, or a write stayed blocked past its timeout.
    Failed(&'static str),
}

async fn write_loop<S, R>(
    tx: &mut WebSocketSender<S>,
    shared: &Shared,
    write_timeout: Duration,
    rt: &R,
) -> WriterEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let mut batch = Vec::new();
    let sent = crate::metrics::sent_bytes();
    let mut batch_bytes: usize;
    let mut more;
    let mut woken = false;
    let mut gather_next: bool;
    let mut timer: Option<(Instant, Sleep)> = None;
    loop {
        let (deadline, closed) = {
            let mut g = shared.driver_lock();
            // Everything queued so far goes in this round: a wake-up already
            // pending for it would only cost an empty round.
            shared.writer.clear();
            let t = now();
            if g.conn.poll_timeout().is_some_and(|d| d <= t) {
                g.handle_timeout(t);
            }
            // Up to WRITE_CHUNK bytes per round: large messages then reuse
            // the same few buffers instead of holding a window's worth.
            let mut bytes = 0;
            while bytes < WRITE_CHUNK {
                let Some(t) = g.conn.poll_transmit() else {
                    break;
                };
                if let Transmit::Binary(b) | Transmit::Text(b) = &t {
                    bytes += b.len();
                }
                batch.push(t);
            }
            more = bytes >= WRITE_CHUNK;
            batch_bytes = bytes;
            g.pump_events();
            let deadline = g.conn.poll_timeout();
            // The runtime timer that will wake this writer: the one kept
            // from an earlier round when it fires first (see below).
            g.armed = match (deadline, &timer) {
                (Some(d), Some((at, _))) => Some(d.min(*at)),
                (d, t) => d.or(t.as_ref().map(|(at, _)| *at)),
            };
            if g.conn.released() && batch.is_empty() {
                batch = Vec::new(); // idle: no round buffer either
            }
            // Only with other calls live can more frames be on their way
            // when the next one wakes the writer.
            gather_next = g.conn.live_calls() > 1;
            (deadline, g.conn.is_closed())
        };
        let sent_close = batch.iter().any(|t| matches!(t, Transmit::Close { .. }));
        if !batch.is_empty() {
            // Timers (deadlines, keepalive, a close decided meanwhile) keep
            // running while the peer makes this write wait, and the write
            // itself is bounded in time.
            let started = now();
            let written = async { Some(write_batch(tx, &mut batch).await) }
                .or(async {
                    run_timers_while_blocked(shared, started, write_timeout, rt, &mut woken).await;
                    None
                })
                .await;
            batch.clear();
            match written {
                None => return WriterEnd::Failed("peer stopped reading: write timed out"),
                Some(Err(_)) => return WriterEnd::Failed("write failed"),
                Some(Ok(())) => sent.increment(batch_bytes as u64),
            }
        }
        if sent_close {
            return WriterEnd::Closed;
        }
        if closed {
            // The peer closed: answer its close. The WebSocket layer queued
            // the reply when it read the peer's close; the sink's close
            // flushes it (sending a new Close message would be refused as
            // a send after closing, and the peer would see 1006).
            let _ = async { SinkExt::close(tx).await.ok() }
                .or(async {
                    rt.sleep_until(now() + CLOSE_LINGER).await;
                    None
                })
                .await;
            return WriterEnd::Closed;
        }
        // A wake-up taken while the write was blocked means frames may be
        // waiting: go round again instead of sleeping.
        if more || std::mem::take(&mut woken) {
            continue;
        }
        // One armed timer, kept across rounds unless the deadline moves
        // earlier: keepalive moves it later with every message, and arming
        // a runtime timer per round is costly. A timer armed for an earlier
        // instant only fires early (one round that finds nothing due), and
        // is kept while no deadline is reported (calls live without one),
        // so a call's end that reports a deadline again never needs a
        // wake-up to arm it.
        if let Some(d) = deadline
            && timer.as_ref().is_none_or(|(at, _)| *at > d)
        {
            timer = Some((d, Box::pin(rt.sleep_until(d))));
        }
        match timer.as_mut() {
            Some((_, sleep)) => {
                let fired = async {
                    sleep.await;
                    true
                }
                .or(async {
                    shared.writer.wait().await;
                    false
                })
                .await;
                if fired {
                    timer = None;
                } else if gather_next {
                    gather().await;
                }
            }
            None => {
                shared.writer.wait().await;
                if gather_next {
                    gather().await;
                }
            }
        }
    }
}

/// Lets the tasks that are ready run before the writer collects frames.
///
/// The writer is woken by the first frame queued; a scheduler may run it at
/// once (tokio's multi-thread runtime runs the task just woken next, in its
/// LIFO slot), and then every round would carry one frame. Yielding once
/// puts the writer behind the tasks already ready on every runtime (a task
/// that wakes itself goes to the back of the queue), so the frames they
/// queue meanwhile leave in the same write: batching does not depend on
/// the scheduler. The cost is one extra poll per round, and on tokio's
/// multi-thread runtime a yielded task may wake another worker to steal
/// it, so the writer gathers only while other calls are live (a lone call
/// has nothing to wait for: its latency comes first).
async fn gather() {
    futures_lite::future::yield_now().await;
}

/// Every pending frame goes into the WebSocket's write buffer, then one
/// flush: one write syscall for a burst, not one per frame.
async fn write_batch<S>(
    tx: &mut WebSocketSender<S>,
    batch: &mut Vec<Transmit>,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    for t in batch.drain(..) {
        let close = matches!(t, Transmit::Close { .. });
        tx.feed(to_message(t)).await?;
        if close {
            break;
        }
    }
    tx.flush().await
}

/// Runs the core's timers while a write is blocked; returns when the write
/// has been blocked too long: `write_timeout`, or `CLOSE_LINGER` once the
/// connection is closing (its close cannot reach a peer that does not read).
async fn run_timers_while_blocked<R: Runtime>(
    shared: &Shared,
    started: Instant,
    write_timeout: Duration,
    rt: &R,
    woken: &mut bool,
) {
    let give_up = started.checked_add(write_timeout);
    let mut closing_since = None;
    loop {
        let next = {
            let mut g = shared.driver_lock();
            let t = now();
            if g.conn.poll_timeout().is_some_and(|d| d <= t) {
                g.handle_timeout(t);
                g.pump_events();
            }
            if !g.conn.is_open() {
                closing_since.get_or_insert(t);
            }
            let limit = [
                give_up,
                closing_since.and_then(|c| c.checked_add(CLOSE_LINGER)),
            ]
            .into_iter()
            .flatten()
            .min();
            if limit.is_some_and(|l| t >= l) {
                return;
            }
            // Woken by the writer signal too: a close decided elsewhere
            // (shutdown, an error) shortens the wait.
            [limit, g.conn.poll_timeout()].into_iter().flatten().min()
        };
        let signal = async {
            shared.writer.wait().await;
            true
        };
        *woken |= match next {
            Some(d) => {
                signal
                    .or(async {
                        rt.sleep_until(d).await;
                        false
                    })
                    .await
            }
            None => signal.await,
        };
    }
}

/// A peer broke the protocol: the core has ended the connection; say why.
fn protocol_error(shared: &Shared, e: &zrpc_core::ConnectionError) {
    let peer = shared
        .peer
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    tracing::warn!(%peer, error = %e, code = e.close_code(), "protocol error: closing the connection");
}

async fn reader<S, R>(mut rx: WebSocketReceiver<S>, shared: Arc<Shared>, driver: Arc<Driver>, rt: R)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let router = driver.router.as_ref();
    let received = crate::metrics::received_bytes();
    // Once this side is done: when the reader gives up waiting for the
    // peer's close reply.
    let mut linger_until: Option<Instant> = None;
    let mut since_yield = 0;
    loop {
        if since_yield >= READ_SLICE {
            since_yield = 0;
            futures_lite::future::yield_now().await;
        }
        let core_closed = || shared.driver_lock().conn.is_closed();
        shared.life.linger(core_closed, &mut linger_until);
        let stop = async {
            shared.life.reader_stop(&rt, linger_until).await;
            None
        };
        let item = rx.next().or(stop).await;
        let mut done = false;
        let (opened, wake_writer, over_budget) = {
            let mut g = shared.driver_lock();
            match item {
                Some(Ok(Message::Binary(b))) => {
                    received.increment(b.len() as u64);
                    since_yield += b.len();
                    if let Err(e) = g.conn.handle_message(now(), Incoming::Binary(b)) {
                        protocol_error(&shared, &e);
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    received.increment(t.len() as u64);
                    since_yield += t.len();
                    if let Err(e) = g.conn.handle_message(now(), Incoming::Text(t.into())) {
                        protocol_error(&shared, &e);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // A close without a status is an ordinary end (RFC 6455 1005).
                    let (code, reason) = frame.map_or((1000, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                    g.conn.handle_close(Some(code), &reason);
                    done = true;
                }
                Some(Ok(_)) => {} // ping, pong: answered by the WebSocket layer
                // Violations the WebSocket layer caught before the core saw
                // them still get their documented close codes.
                Some(Err(WsError::Capacity(e))) => {
                    g.conn.close(1009, &format!("message too big: {e}"));
                    done = true;
                }
                Some(Err(WsError::Protocol(e))) => {
                    g.conn
                        .close(1002, &format!("WebSocket protocol error: {e}"));
                    done = true;
                }
                Some(Err(_)) | None => {
                    g.conn.handle_close(None, "connection lost");
                    done = true;
                }
            }
            let opened = g.pump_events();
            (opened, g.writer_needed(), g.sync_budget())
        };
        if wake_writer {
            shared.writer.signal();
        }
        if over_budget && let Some(shed) = &driver.on_budget_exceeded {
            shed();
        }
        let calls = opened.len();
        for (n, call) in opened.into_iter().enumerate() {
            // A burst of calls read at once is answered in slices: the
            // writer sends what is done while the rest is handled, so the
            // peer works on the first answers meanwhile.
            if driver
                .dispatch_slice
                .is_some_and(|slice| n > 0 && n % slice == 0 && n < calls)
            {
                futures_lite::future::yield_now().await;
            }
            let Some(mut task) = dispatch(call, &shared, router) else {
                continue;
            };
            // Unless the router says otherwise, the first poll runs here, in
            // the reader's task: a handler that completes at once (most unary
            // handlers) costs no task of its own, and its response leaves
            // with the others of this read. One that waits becomes a task;
            // that task's first poll registers its own wakers in place of the
            // reader's (a stale reader wake-up is harmless).
            // The first poll has a budget of sends and receives: a handler
            // that streams much at once yields and continues as its task.
            let inline = router.is_some_and(|r| r.inline_first_poll());
            if inline
                && poll_fn(|cx| {
                    Poll::Ready(with_inline_budget(|| task.as_mut().poll(cx).is_ready()))
                })
                .await
            {
                continue;
            }
            rt.spawn(task);
        }
        if done {
            return;
        }
    }
}
