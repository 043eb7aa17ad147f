//! The life of a connection's two tasks, in one type: the writer ends it
//! ([`TaskLife::end`]), the reader stops by its rule
//! ([`TaskLife::reader_stop`]), and handles wait for it
//! ([`TaskLife::finished`]). The one place that says how long a close may
//! linger.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::conn::now;
use crate::runtime::Runtime;
use crate::signal::Signal;

/// How long a side that closed waits for the peer's close reply, and how
/// long a close may stay stuck behind a peer that does not read.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Where the connection's tasks are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// The writer runs.
    Running,
    /// The writer ended after its close went out (or answered the peer's):
    /// the reader waits [`CLOSE_LINGER`] for the peer's close reply.
    Closed,
    /// The socket failed, or a write stayed blocked past its bound: the
    /// reader stops at once.
    Failed,
}

impl Life {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Life::Running,
            1 => Life::Closed,
            _ => Life::Failed,
        }
    }
}

/// A connection's [`Life`], shared by its tasks and handles.
pub(crate) struct TaskLife {
    /// A [`Life`] as `u8` (an atomic, read without the connection's lock).
    state: AtomicU8,
    /// Wakes the reader (one waiter, polled on every read: lock-free).
    reader: Signal,
    /// Wakes every [`finished`](Self::finished) waiter.
    waiters: event_listener::Event,
}

impl Default for TaskLife {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(Life::Running as u8),
            reader: Signal::default(),
            waiters: event_listener::Event::new(),
        }
    }
}

impl TaskLife {
    pub(crate) fn get(&self) -> Life {
        Life::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The writer ended (`how`: [`Life::Closed`] or [`Life::Failed`]).
    pub(crate) fn end(&self, how: Life) {
        debug_assert_ne!(how, Life::Running);
        self.state.store(how as u8, Ordering::Release);
        self.reader.signal();
        self.waiters.notify(usize::MAX);
    }

    /// The instant the reader stops waiting for the peer's close once this
    /// side is done (`core_closed`: the connection is closed, whatever
    /// closed it): fixed the first time it is asked for with a reason, so a
    /// peer that keeps sending cannot extend it.
    pub(crate) fn linger(&self, core_closed: impl FnOnce() -> bool, until: &mut Option<Instant>) {
        if until.is_none() && (self.get() != Life::Running || core_closed()) {
            *until = Some(now() + CLOSE_LINGER);
        }
    }

    /// Resolves when the reader must stop: at once when the writer failed,
    /// at `until` once lingering (see [`linger`](Self::linger)), else
    /// [`CLOSE_LINGER`] after the writer ends.
    pub(crate) async fn reader_stop<R: Runtime>(&self, rt: &R, until: Option<Instant>) {
        loop {
            match (self.get(), until) {
                (Life::Failed, _) => return,
                (_, Some(until)) => return rt.sleep_until(until).await,
                (Life::Closed, None) => return rt.sleep_until(now() + CLOSE_LINGER).await,
                (Life::Running, None) => self.reader.wait().await,
            }
        }
    }

    /// Resolves once the writer has ended: the close was written (or the
    /// socket failed). Nothing of the connection goes out after that.
    pub(crate) async fn finished(&self) {
        loop {
            let ended = self.waiters.listen();
            if self.get() != Life::Running {
                return;
            }
            ended.await;
        }
    }
}
