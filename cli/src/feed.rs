//! The people created through this instance, kept in memory for the
//! `WatchPeople` streams: a creation wakes only the watchers whose filter
//! one of the new people matches, and costs no store query per watcher.
//!
//! Entries are numbered in the order they were stored; a watcher keeps its
//! place (the number of the next entry it has not looked at). The newest
//! [`FEED_LEN`] are kept: a watcher whose place fell further behind (it
//! waited on a slow reader while others were created) reads from the
//! store again.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::proto::people::Person;

/// People kept for watchers.
pub const FEED_LEN: usize = 1024;

/// What a watcher finds when it looks.
pub enum Found {
    /// New people matching its filter, in the order they were stored.
    People(Vec<Arc<Person>>),
    /// Entries it had not looked at are gone: read the store again.
    Behind,
}

#[derive(Default)]
struct State {
    /// The number the next entry gets.
    next: u64,
    recent: VecDeque<Arc<Person>>,
    /// Watchers waiting for a match: their filter and waker.
    waiting: HashMap<u64, (Arc<str>, Waker)>,
    next_watcher: u64,
}

/// See the module docs.
#[derive(Default)]
pub struct Feed {
    state: Mutex<State>,
}

impl Feed {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("feed lock")
    }

    /// Appends people just stored; wakes the watchers one of them matches.
    pub fn push(&self, people: &[Person]) {
        let mut wake = Vec::new();
        {
            let mut g = self.lock();
            for p in people {
                g.recent.push_back(Arc::new(p.clone()));
                g.next += 1;
            }
            while g.recent.len() > FEED_LEN {
                g.recent.pop_front();
            }
            g.waiting.retain(|_, (filter, waker)| {
                let hit = people.iter().any(|p| p.name.contains(&**filter));
                if hit {
                    wake.push(waker.clone());
                }
                !hit
            });
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// The place of a watcher that starts looking now.
    pub fn position(&self) -> u64 {
        self.lock().next
    }

    /// A watcher with `filter`, to wait on the feed from `place`.
    pub fn watcher(&self, filter: &str, place: u64) -> Watcher<'_> {
        let mut g = self.lock();
        let id = g.next_watcher;
        g.next_watcher += 1;
        Watcher {
            feed: self,
            id,
            filter: Arc::from(filter),
            place,
        }
    }
}

/// One stream's view of the feed; unregisters itself when dropped.
pub struct Watcher<'a> {
    feed: &'a Feed,
    id: u64,
    filter: Arc<str>,
    place: u64,
}

impl Watcher<'_> {
    /// Waits until people matching the filter were created since the last
    /// look (or the feed moved past what this watcher had not seen).
    pub async fn next(&mut self) -> Found {
        poll_fn(|cx| {
            let mut g = self.feed.lock();
            let oldest = g.next - g.recent.len() as u64;
            if self.place < oldest {
                self.place = g.next;
                g.waiting.remove(&self.id);
                return Poll::Ready(Found::Behind);
            }
            let skip = (self.place - oldest) as usize;
            let found: Vec<Arc<Person>> = g
                .recent
                .iter()
                .skip(skip)
                .filter(|p| p.name.contains(&*self.filter))
                .cloned()
                .collect();
            self.place = g.next;
            if found.is_empty() {
                g.waiting
                    .insert(self.id, (self.filter.clone(), cx.waker().clone()));
                Poll::Pending
            } else {
                g.waiting.remove(&self.id);
                Poll::Ready(Found::People(found))
            }
        })
        .await
    }
}

impl Drop for Watcher<'_> {
    fn drop(&mut self) {
        self.feed.lock().waiting.remove(&self.id);
    }
}
