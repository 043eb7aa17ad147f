//! The connection driver: two tasks per connection over the split
//! WebSocket. The reader feeds received messages to the core and routes the
//! events; the writer drains the core's transmits and runs its timers.
//! Reading and writing proceed independently, so two peers writing to each
//! other with full socket buffers never deadlock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::SinkExt;
use zrpc_core::{Connection, Incoming, Transmit};

use crate::runtime::Runtime;
use crate::server::{Router, dispatch};
use crate::shared::{Shared, now};

/// Bytes of frames the writer takes from the core per round.
const WRITE_CHUNK: usize = 256 * 1024;

/// How long a side that closed waits for the peer's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Starts driving `conn` over `ws`; calls the peer opens go to `router`.
pub(crate) fn start<S, R>(
    ws: WebSocketStream<S>,
    conn: Connection,
    router: Option<Arc<Router>>,
    rt: R,
    peer: Option<SocketAddr>,
) -> Arc<Shared>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let shared = Shared::new(conn, peer);
    let (tx, rx) = ws.split();
    rt.spawn(writer(tx, shared.clone(), rt.clone()));
    rt.spawn(reader(rx, shared.clone(), router, rt.clone()));
    shared
}

fn to_message(t: Transmit) -> Message {
    match t {
        Transmit::Binary(b) => Message::Binary(b),
        Transmit::Text(b) => {
            Message::Text(Utf8Bytes::try_from(b).unwrap_or_else(|_| Utf8Bytes::from_static("")))
        }
        Transmit::Close { code, reason } => Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        })),
    }
}

async fn writer<S, R>(mut tx: WebSocketSender<S>, shared: Arc<Shared>, rt: R)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let mut batch = Vec::new();
    let mut more;
    loop {
        let (deadline, closed) = {
            let mut g = shared.lock();
            let t = now();
            if g.conn.poll_timeout().is_some_and(|d| d <= t) {
                g.conn.handle_timeout(t);
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
            g.pump_events();
            let deadline = g.conn.poll_timeout();
            g.armed = deadline;
            (deadline, g.conn.is_closed())
        };
        // Every pending frame goes into the WebSocket's write buffer, then
        // one flush: one write syscall for a burst, not one per frame.
        let mut sent_close = false;
        let mut result = Ok(());
        for t in batch.drain(..) {
            sent_close |= matches!(t, Transmit::Close { .. });
            result = tx.feed(to_message(t)).await;
            if result.is_err() || sent_close {
                break;
            }
        }
        batch.clear();
        if result.is_ok() {
            result = tx.flush().await;
        }
        if result.is_err() {
            let mut g = shared.lock();
            g.conn.handle_close(None, "write failed");
            g.pump_events();
            return;
        }
        if sent_close {
            return;
        }
        if closed {
            // The peer closed: answer its close (a no-op if already answered).
            let _ = tx.close(None).await;
            return;
        }
        if more {
            continue;
        }
        match deadline {
            Some(d) => shared.writer.wait().or(rt.sleep_until(d)).await,
            None => shared.writer.wait().await,
        }
    }
}

async fn reader<S, R>(
    mut rx: WebSocketReceiver<S>,
    shared: Arc<Shared>,
    router: Option<Arc<Router>>,
    rt: R,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    loop {
        let closing = shared.lock().conn.is_closed();
        let item = if closing {
            // We closed: wait a little for the peer's reply, then give up.
            let linger = async {
                rt.sleep_until(now() + CLOSE_LINGER).await;
                None
            };
            rx.next().or(linger).await
        } else {
            rx.next().await
        };
        let mut done = false;
        let (opened, wake_writer) = {
            let mut g = shared.lock();
            match item {
                Some(Ok(Message::Binary(b))) => {
                    let _ = g.conn.handle_message(now(), Incoming::Binary(b));
                }
                Some(Ok(Message::Text(t))) => {
                    let _ = g.conn.handle_message(now(), Incoming::Text(t.into()));
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
            (g.pump_events(), g.writer_needed())
        };
        if wake_writer {
            shared.writer.notify();
        }
        for call in opened {
            let Some(mut task) = dispatch(call, &shared, router.as_ref()) else {
                continue;
            };
            // Unless the router says otherwise, the first poll runs here, in
            // the reader's task: a handler that completes at once (most unary
            // handlers) costs no task of its own, and its response leaves
            // with the others of this read. One that waits becomes a task;
            // that task's first poll registers its own wakers in place of the
            // reader's (a stale reader wake-up is harmless).
            let inline = router.as_ref().is_some_and(|r| r.inline_first_poll());
            if inline && poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_ready())).await {
                continue;
            }
            rt.spawn(task);
        }
        if done {
            return;
        }
    }
}
