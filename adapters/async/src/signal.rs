//! Synchronisation used by a connection's tasks and handles: a one-slot
//! wake-up [`Signal`] and the lock helper.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// A one-slot wake-up signal (a notification is kept until taken).
/// Lock-free: polled on every pending read and every writer wait.
#[derive(Default)]
pub(crate) struct Signal {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    pub(crate) fn signal(&self) {
        // Already pending (the common case while a stream sends): a plain
        // load, no read-modify-write of a line the waiter also writes.
        if self.flag.load(Ordering::Acquire) {
            return;
        }
        if self.flag.swap(true, Ordering::AcqRel) {
            return; // already signalled and not yet taken: the waiter will run
        }
        self.waker.wake();
    }

    /// True when a notification is pending: the waiter will run.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Takes a pending notification, if any, without waiting: the waiter
    /// is about to do what it would have been woken for.
    pub(crate) fn clear(&self) {
        self.flag.store(false, Ordering::Release);
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
