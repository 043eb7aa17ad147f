//! The connection's clocks, all driven by time passed in: call deadlines,
//! keepalive (PING after a quiet interval, a deadline for any answer), the
//! idle timeout of a connection without calls, and the release of an idle
//! connection's buffers.
//!
//! Each clock is one entry of a [`TimerTable`], set or stopped where the
//! event that moves it happens (a message received, a call started, the
//! last call gone, a PING sent, GOAWAY sent); `next` is the minimum of the
//! table and of the call deadlines. Firing a timer always sets it later or
//! stops it, so no instant the connection reports is already due once
//! `handle_timeout` has run for it: an idle connection, or one whose calls
//! wait, never wakes its driver in a loop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::call::StreamId;
use crate::config::Config;

/// `at + d`, or `None` when that is too far in the future to represent (a
/// timer that never fires).
#[inline]
pub(crate) fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

/// The connection-wide clocks (call deadlines live in a heap beside them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// PING after `keepalive_interval` without receiving; while a PING is
    /// unanswered, its `keepalive_timeout`.
    Keepalive = 0,
    /// No call for `idle_timeout`, counted from the last sign of life
    /// while one was live (its start, or a message received): drain.
    Idle = 1,
    /// No call and nothing received for `release_idle_after`: free buffers.
    Release = 2,
}

const TIMERS: usize = 3;

/// One optional instant per [`Timer`].
#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; TIMERS]);

impl TimerTable {
    #[inline]
    fn set(&mut self, t: Timer, at: Option<Instant>) {
        self.0[t as usize] = at;
    }

    #[inline]
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }

    /// True when `t` is due by `now`; it is stopped (the caller sets it
    /// again if it runs on).
    #[inline]
    fn fire(&mut self, t: Timer, now: Instant) -> bool {
        let due = self.0[t as usize].is_some_and(|at| at <= now);
        if due {
            self.stop(t);
        }
        due
    }

    #[inline]
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// What keepalive asks for now.
pub(crate) enum Keepalive {
    Nothing,
    /// Send a PING with this payload.
    Ping([u8; 8]),
    /// The last PING went unanswered too long.
    Expired,
}

/// The clocks' settings, from [`Config`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    keepalive: Option<(Duration, Duration)>,
    idle: Option<Duration>,
    release: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Timers {
    table: TimerTable,
    limits: Limits,
    /// Call deadlines; entries of calls that ended early are skipped when
    /// they come up (and pruned when they pile up).
    deadlines: BinaryHeap<Reverse<(Instant, StreamId)>>,
    last_recv: Instant,
    /// The last sign of life while a call was live: a call started or a
    /// message arrived. The idle timeout counts from here.
    last_busy: Instant,
    ping_sent: bool,
    ping_seq: u64,
    /// No call is live.
    quiet: bool,
    /// The idle connection's buffers were released (see
    /// `Config::release_idle_after`); cleared when a call starts.
    pub(crate) released: bool,
}

impl Timers {
    /// The clocks of a new connection (no call yet). The legacy format
    /// (`v1` false) has no keepalive and nothing to release.
    pub(crate) fn new(now: Instant, config: &Config, v1: bool) -> Self {
        let limits = Limits {
            keepalive: config
                .keepalive_interval
                .filter(|_| v1)
                .map(|i| (i, config.keepalive_timeout)),
            idle: config.idle_timeout,
            release: config.release_idle_after.filter(|_| v1),
        };
        let mut t = Self {
            table: TimerTable::default(),
            limits,
            deadlines: BinaryHeap::new(),
            last_recv: now,
            last_busy: now,
            ping_sent: false,
            ping_seq: 0,
            quiet: true,
            // Nothing is held before the first call.
            released: true,
        };
        t.received(now);
        t.start_quiet_clocks();
        t
    }

    /// Something arrived: the peer is alive. The release clock starts over
    /// (the idle one does not: a PING answered is not a call).
    #[inline]
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_recv = now;
        self.ping_sent = false;
        if let Some((interval, _)) = self.limits.keepalive {
            self.table.set(Timer::Keepalive, after(now, interval));
        }
        if !self.quiet {
            self.last_busy = now;
        } else if let Some(limit) = self.limits.release.filter(|_| !self.released) {
            self.table.set(Timer::Release, after(now, limit));
        }
    }

    /// A call started at `now`: the connection is not idle.
    #[inline]
    pub(crate) fn busy(&mut self, now: Instant) {
        self.last_busy = now;
        self.quiet = false;
        self.released = false;
        self.table.stop(Timer::Idle);
        self.table.stop(Timer::Release);
    }

    /// The last call is gone: the idle clock runs from the last sign of
    /// life while calls were live, the release clock from the last message
    /// received.
    #[inline]
    pub(crate) fn quiet(&mut self) {
        self.quiet = true;
        self.start_quiet_clocks();
    }

    fn start_quiet_clocks(&mut self) {
        if let Some(limit) = self.limits.idle {
            self.table.set(Timer::Idle, after(self.last_busy, limit));
        }
        if let Some(limit) = self.limits.release.filter(|_| !self.released) {
            self.table.set(Timer::Release, after(self.last_recv, limit));
        }
    }

    /// GOAWAY was sent: the idle timeout has nothing left to do.
    pub(crate) fn draining(&mut self) {
        self.limits.idle = None;
        self.table.stop(Timer::Idle);
    }

    /// True once, when the idle timeout ran out by `now`.
    pub(crate) fn idle_expired(&mut self, now: Instant) -> bool {
        self.table.fire(Timer::Idle, now)
    }

    /// True once, when the held buffers are due for release by `now`.
    pub(crate) fn release_due(&mut self, now: Instant) -> bool {
        if !self.table.fire(Timer::Release, now) {
            return false;
        }
        self.released = true;
        true
    }

    /// Frees the deadline heap when no deadline is left in it.
    pub(crate) fn release(&mut self) {
        if self.deadlines.is_empty() {
            self.deadlines = BinaryHeap::new();
        }
    }

    /// Adds a deadline. `still_due(at, id)` tells whether an entry still
    /// belongs to a live call, for pruning; `live` is how many calls there are.
    pub(crate) fn add_deadline(
        &mut self,
        at: Instant,
        id: StreamId,
        live: usize,
        still_due: impl Fn(Instant, StreamId) -> bool,
    ) {
        if self.deadlines.len() > 64 + 2 * live {
            self.deadlines
                .retain(|Reverse((at, id))| still_due(*at, *id));
        }
        self.deadlines.push(Reverse((at, id)));
    }

    /// The next deadline that passed by `now`, removed.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<(Instant, StreamId)> {
        match self.deadlines.peek() {
            Some(&Reverse((at, id))) if at <= now => {
                self.deadlines.pop();
                Some((at, id))
            }
            _ => None,
        }
    }

    /// Keepalive at `now`: PING after `interval` without receiving, fail
    /// after `timeout` without an answer.
    pub(crate) fn keepalive(&mut self, now: Instant) -> Keepalive {
        let Some((_, timeout)) = self.limits.keepalive else {
            return Keepalive::Nothing;
        };
        if !self.table.fire(Timer::Keepalive, now) {
            return Keepalive::Nothing;
        }
        if self.ping_sent {
            return Keepalive::Expired;
        }
        self.ping_seq += 1;
        self.ping_sent = true;
        self.table.set(Timer::Keepalive, after(now, timeout));
        Keepalive::Ping(self.ping_seq.to_be_bytes())
    }

    /// The earliest timer: the next deadline or the table's.
    #[inline]
    pub(crate) fn next(&self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        match (deadline, self.table.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
