//! A call's I/O as handles poll it: receiving the next message (in batches
//! per lock, giving credit back as messages are taken), sending one
//! (waiting for credit), and waiting for the end. Shared by the calling
//! side's [`Call`](crate::Call) and the handler side's streams.

use std::cell::Cell;
use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::Bytes;
use zrpc_core::{Code, Metadata, Status, StreamId, UserError};

use crate::conn::{Reading, Shared};

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
    shared.act(|inner| {
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
            return Poll::Ready(Ok(Some(first)));
        }
        match &slot.reading {
            Reading::Ended(status, _) if !status.is_ok() => Poll::Ready(Err(status.clone())),
            Reading::Ended(..) | Reading::Closed => Poll::Ready(Ok(None)),
            Reading::Open => {
                slot.recv_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
}

/// Sends one message (with its resume cursor, if any), waiting for credit.
/// `msg` is taken when it is sent (and kept while the call waits, so no
/// copy of the handle is made then).
pub(crate) fn poll_send(
    shared: &Shared,
    id: StreamId,
    msg: &mut Option<Bytes>,
    cursor: Option<&Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Status>> {
    if msg.is_some() && !inline_budget_allows(cx) {
        return Poll::Pending;
    }
    shared.act(|g| {
        let data = match msg {
            Some(m) if g.conn.would_block(id) => m.clone(),
            Some(_) => msg.take().unwrap_or_default(),
            None => return Poll::Ready(Ok(())),
        };
        let sent = match cursor {
            None => g.conn.send(id, data),
            Some(c) => g.conn.send_with_cursor(id, data, c.clone()),
        };
        match sent {
            Ok(()) => {
                *msg = None;
                Poll::Ready(Ok(()))
            }
            Err(UserError::Blocked) => {
                crate::metrics::send_stalled();
                if let Some(s) = g.slots.get_mut(&id) {
                    s.send_waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(g.status_of(id, e))),
        }
    })
}

/// Messages [`poll_send_all`] queues under one lock, and per poll before
/// it yields: the writer (and every other task of the connection) gets the
/// lock between rounds, and a handler with a large window still lets its
/// runtime run others.
const SEND_ALL_PER_LOCK: usize = 64;
const SEND_ALL_PER_POLL: usize = 1024;

/// Sends messages from `next` as the call's credit allows, many under one
/// lock. `held` is a message taken from `next` that waits for credit;
/// `taken` runs once for each message as it is taken from `next`.
pub(crate) fn poll_send_all(
    shared: &Shared,
    id: StreamId,
    held: &mut Option<Bytes>,
    next: &mut dyn FnMut() -> Option<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Status>> {
    if !inline_budget_allows(cx) {
        return Poll::Pending;
    }
    // In a handler's inline first poll (on its connection's reader task),
    // one round at most: the rest goes on in the handler's own task.
    let per_poll = if INLINE_BUDGET.with(|b| b.get().is_some()) {
        SEND_ALL_PER_LOCK
    } else {
        SEND_ALL_PER_POLL
    };
    let mut sent = 0;
    loop {
        let round = shared.act(|g| {
            for _ in 0..SEND_ALL_PER_LOCK {
                let Some(data) = held.take().or_else(&mut *next) else {
                    return Some(Poll::Ready(Ok(())));
                };
                // A send that would block is still made (with a copy of
                // the handle): its refusal is what makes the connection owe
                // the call a `Writable` event.
                let blocked = g.conn.would_block(id);
                let sent = if blocked {
                    let sent = g.conn.send(id, data.clone());
                    *held = Some(data);
                    sent
                } else {
                    g.conn.send(id, data)
                };
                match sent {
                    Ok(()) if blocked => *held = None,
                    Ok(()) => {}
                    Err(UserError::Blocked) => {
                        crate::metrics::send_stalled();
                        if let Some(s) = g.slots.get_mut(&id) {
                            s.send_waker = Some(cx.waker().clone());
                        }
                        return Some(Poll::Pending);
                    }
                    Err(e) => return Some(Poll::Ready(Err(g.status_of(id, e)))),
                }
            }
            None
        });
        if let Some(done) = round {
            return done;
        }
        sent += SEND_ALL_PER_LOCK;
        if sent >= per_poll {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
    }
}

/// Resolves once the call has ended (for any reason), with its status.
pub(crate) fn poll_end(
    shared: &Shared,
    id: StreamId,
    cx: &mut Context<'_>,
) -> Poll<(Status, Metadata)> {
    shared.act(|g| match g.slots.get_mut(&id) {
        None => Poll::Ready((
            Status::new(Code::Cancelled, "call is gone"),
            Metadata::new(),
        )),
        Some(s) => match s.end() {
            Some((status, trailers)) => Poll::Ready((status.clone(), trailers.clone())),
            None => {
                if !s.end_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.end_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        },
    })
}
