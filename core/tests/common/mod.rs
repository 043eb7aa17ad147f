//! A client/server pair of connections wired together in memory.
#![allow(dead_code)]

pub mod json;

use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_core::*;

pub struct Pair {
    pub now: Instant,
    pub client: Connection,
    pub server: Connection,
    pub client_events: Vec<Event>,
    pub server_events: Vec<Event>,
    pub client_closes: Vec<(u16, String)>,
    pub server_closes: Vec<(u16, String)>,
}

pub fn deliver(
    from: &mut Connection,
    to: &mut Connection,
    now: Instant,
    closes: &mut Vec<(u16, String)>,
) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit() {
        n += 1;
        match t {
            Transmit::Binary(b) => {
                let _ = to.handle_message(now, Incoming::Binary(b));
            }
            Transmit::Text(b) => {
                let _ = to.handle_message(now, Incoming::Text(b));
            }
            Transmit::Close { code, reason } => {
                to.handle_close(Some(code), &reason);
                closes.push((code, reason));
            }
        }
    }
    n
}

impl Pair {
    pub fn with(client_cfg: Config, server_cfg: Config) -> Self {
        let now = Instant::now();
        let mut p = Pair {
            now,
            client: Connection::new(Side::Client, Mode::V1, client_cfg, now),
            server: Connection::new(Side::Server, Mode::V1, server_cfg, now),
            client_events: vec![],
            server_events: vec![],
            client_closes: vec![],
            server_closes: vec![],
        };
        p.run();
        p
    }

    pub fn new() -> Self {
        Self::with(Config::default(), Config::default())
    }

    /// Delivers everything both ways until quiet; collects events. Bounded.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            let a = deliver(
                &mut self.client,
                &mut self.server,
                self.now,
                &mut self.client_closes,
            );
            let b = deliver(
                &mut self.server,
                &mut self.client,
                self.now,
                &mut self.server_closes,
            );
            self.collect();
            if a + b == 0 {
                return;
            }
        }
        panic!("pair did not go quiet (livelock)");
    }

    pub fn collect(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.run();
    }

    pub fn take_client(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.client_events)
    }

    pub fn take_server(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.server_events)
    }

    pub fn open(&mut self, method: &str, kind: CallKind) -> StreamId {
        self.client
            .open_call(self.now, method, kind, OpenOptions::default())
            .unwrap()
    }
}

pub fn messages(events: &[Event], call: StreamId) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { id, data, .. } if *id == call => Some(data.clone()),
            _ => None,
        })
        .collect()
}

pub fn ended(events: &[Event], call: StreamId) -> Vec<Status> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CallEnded { id, status, .. } if *id == call => Some(status.clone()),
            _ => None,
        })
        .collect()
}

pub fn opened(events: &[Event]) -> Vec<IncomingCall> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CallOpened(c) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

pub fn closed(events: &[Event]) -> Vec<Option<ConnectionError>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Closed { error } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

pub fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}
