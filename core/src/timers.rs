//! The connection's clocks, all driven by time passed in: call deadlines,
//! keepalive (PING after a quiet interval, a deadline for any answer), the
//! idle timeout of a connection without calls, and the release of an idle
//! connection's buffers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::call::StreamId;

/// `at + d`, or `None` when that is too far in the future to represent (a
/// timer that never fires).
#[inline]
pub(crate) fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

/// What keepalive asks for now.
pub(crate) enum Keepalive {
    Nothing,
    /// Send a PING with this payload.
    Ping([u8; 8]),
    /// The last PING went unanswered too long.
    Expired,
}

#[derive(Debug)]
pub(crate) struct Timers {
    /// Call deadlines; entries of calls that ended early are skipped when
    /// they come up (and pruned when they pile up).
    deadlines: BinaryHeap<Reverse<(Instant, StreamId)>>,
    last_recv: Instant,
    ping_sent: Option<Instant>,
    ping_seq: u64,
    /// Since when the connection has had no call; `None` while calls are
    /// live, or until the next timer notices the last one ended.
    idle_since: Option<Instant>,
    /// The idle connection's buffers were released (see
    /// `Config::release_idle_after`); cleared when a call starts.
    pub(crate) released: bool,
}

impl Timers {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            deadlines: BinaryHeap::new(),
            last_recv: now,
            ping_sent: None,
            ping_seq: 0,
            idle_since: Some(now),
            // Nothing is held before the first call.
            released: true,
        }
    }

    /// Something arrived: the peer is alive.
    #[inline]
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_recv = now;
        self.ping_sent = None;
    }

    /// A call started: the connection is not idle.
    #[inline]
    pub(crate) fn busy(&mut self) {
        self.idle_since = None;
        self.released = false;
    }

    /// True once, when buffers are still held, `quiet` (no call) and
    /// nothing arrived for `limit`: release them now.
    pub(crate) fn release_due(&mut self, now: Instant, limit: Duration, quiet: bool) -> bool {
        if self.released || !quiet || self.release_at(limit).is_none_or(|at| now < at) {
            return false;
        }
        self.released = true;
        true
    }

    /// When the held buffers may be released: `limit` after the last
    /// message received. Reported whether or not calls are live (a timer
    /// that finds a call does nothing), so that a call ending never makes
    /// the deadline earlier and never wakes anyone: the deadline only moves
    /// later, once per message, and the timer fires about once per `limit`.
    fn release_at(&self, limit: Duration) -> Option<Instant> {
        if self.released {
            return None;
        }
        after(self.last_recv, limit)
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

    /// Whether an idle connection's `limit` ran out by `now` (the clock
    /// starts at the first check after the last call ended).
    pub(crate) fn idle_expired(&mut self, now: Instant, limit: Duration) -> bool {
        match self.idle_since {
            None => {
                self.idle_since = Some(now);
                false
            }
            Some(since) => after(since, limit).is_some_and(|at| now >= at),
        }
    }

    /// Keepalive at `now`: PING after `interval` without receiving, fail
    /// after `timeout` without an answer.
    pub(crate) fn keepalive(
        &mut self,
        now: Instant,
        interval: Duration,
        timeout: Duration,
    ) -> Keepalive {
        match self.ping_sent {
            Some(at) if after(at, timeout).is_some_and(|t| now >= t) => Keepalive::Expired,
            None if after(self.last_recv, interval).is_some_and(|t| now >= t) => {
                self.ping_seq += 1;
                self.ping_sent = Some(now);
                Keepalive::Ping(self.ping_seq.to_be_bytes())
            }
            _ => Keepalive::Nothing,
        }
    }

    /// The earliest timer: the next deadline, keepalive's
    /// (`(interval, timeout)` when enabled), the idle timeout's (`idle`:
    /// the limit, when the connection has no call).
    pub(crate) fn next(
        &self,
        keepalive: Option<(Duration, Duration)>,
        idle: Option<Duration>,
        release: Option<Duration>,
    ) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((at, _))| *at);
        let keepalive = keepalive.and_then(|(interval, timeout)| match self.ping_sent {
            Some(at) => after(at, timeout),
            None => after(self.last_recv, interval),
        });
        let idle = idle.and_then(|limit| match self.idle_since {
            Some(since) => after(since, limit),
            // The last call just ended: due now, to start the clock.
            None => Some(self.last_recv),
        });
        let release = release.and_then(|limit| self.release_at(limit));
        [deadline, keepalive, idle, release]
            .into_iter()
            .flatten()
            .min()
    }
}
