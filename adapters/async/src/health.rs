//! What a server says about its health, in `grpc.health.v1`'s terms: a
//! status for the whole server (the service name `""`) and for each named
//! service. The same [`Health`] answers the `Check`/`Watch` methods (see
//! `zrpc_proto::health::register`) and the plain HTTP `GET /healthz` that
//! load balancers which cannot speak zrpc poll; a server draining for
//! shutdown reports `NOT_SERVING` everywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use event_listener::Event;

use crate::signal::lock;

/// A serving status, numbered as `grpc.health.v1.HealthCheckResponse`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ServingStatus {
    /// Not known.
    Unknown = 0,
    /// Serving.
    Serving = 1,
    /// Not serving (or draining).
    NotServing = 2,
    /// `Watch` only: the service is not known (yet).
    ServiceUnknown = 3,
}

/// A server's health. Cheap to clone; clones share. Created `SERVING` for
/// the whole server (`""`); set named services as they come and go.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Notified on every change (watchers hold a listener each, freed when
    /// they stop watching).
    changed: Event,
}

struct State {
    services: HashMap<String, ServingStatus>,
    draining: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.inner.state);
        f.debug_struct("Health")
            .field("services", &s.services)
            .field("draining", &s.draining)
            .finish()
    }
}

impl Health {
    /// The whole server (`""`) serving, no named service yet.
    pub fn new() -> Self {
        let services = HashMap::from([(String::new(), ServingStatus::Serving)]);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    services,
                    draining: false,
                }),
                changed: Event::new(),
            }),
        }
    }

    /// Sets the status of `service` (`""`: the whole server) and tells the
    /// watchers.
    pub fn set(&self, service: &str, status: ServingStatus) {
        lock(&self.inner.state)
            .services
            .insert(service.to_owned(), status);
        self.inner.changed.notify(usize::MAX);
    }

    /// Forgets a named service: checks of it then fail with `NOT_FOUND`.
    pub fn remove(&self, service: &str) {
        lock(&self.inner.state).services.remove(service);
        self.inner.changed.notify(usize::MAX);
    }

    /// The status of `service`, `None` when it is not known. Once the
    /// server drains, every known service is `NotServing`.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        let s = lock(&self.inner.state);
        let status = *s.services.get(service)?;
        Some(if s.draining {
            ServingStatus::NotServing
        } else {
            status
        })
    }

    /// True once the server began draining.
    pub fn is_draining(&self) -> bool {
        lock(&self.inner.state).draining
    }

    /// Marks the server draining (its shutdown calls this): `NotServing`
    /// everywhere from now on.
    pub fn drain(&self) {
        lock(&self.inner.state).draining = true;
        self.inner.changed.notify(usize::MAX);
    }

    /// Waits until the status of `service` is other than `last`, and
    /// returns it (what `Watch` streams).
    pub async fn changed(
        &self,
        service: &str,
        last: Option<ServingStatus>,
    ) -> Option<ServingStatus> {
        loop {
            // Listen before looking, so a change in between is not missed.
            let listener = self.inner.changed.listen();
            let now = self.status(service);
            if now != last {
                return now;
            }
            listener.await;
        }
    }
}
