//! The [`Server`]: accepts connections (limits per address and in all,
//! TLS, the HTTP upgrade with its checks), serves each with a driver and the
//! router, bounds received bytes over all of them, and drains on shutdown.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::Role;
use bytes::Bytes;
use futures_lite::FutureExt;
use zrpc_core::{Config, Connection, Mode, SUBPROTOCOL_V1, Side};

use crate::Error;
use crate::conn::{Identity, PeerInfo, RecvBudget, Shared, now};
use crate::driver::{self, DEFAULT_WRITE_TIMEOUT, Driver};
use crate::health::{Health, ServingStatus};
use crate::router::Router;
use crate::runtime::{Listener, Runtime};
use crate::signal::{Signal, lock};
use crate::tls::ServerTls;
use crate::upgrade::{self, HeadError, Refusal, UpgradeRequest};
use crate::web::StaticFiles;
use crate::ws::{SERVER_READ_BUFFER, offers_v1, ws_config};

mod accept;
mod config;
mod ws;

pub use config::ServerConfig;

/// Where plain HTTP health checks are answered.
const HEALTH_PATH: &str = "/healthz";

/// After the drain grace, how long shutdown waits for the closes it sent to
/// be written and answered.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub(crate) type AuthFn = dyn Fn(&UpgradeRequest) -> Result<Identity, Refusal> + Send + Sync;

struct ServerState {
    conns: Mutex<HashMap<u64, Weak<Shared>>>,
    /// Connections being served (counted by serve_stream, so that the accept
    /// loop's limit check is O(1)).
    open: AtomicUsize,
    /// Connections being served per peer IP.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refusing: AtomicUsize,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Shutdown began: health reports NOT_SERVING (accepting may go on for
    /// `drain_delay`).
    unhealthy: AtomicBool,
    stop: Signal,
    /// Notified whenever a connection ends (or an accepted one fails its
    /// handshake): a shutdown waits on it until none is left.
    ended: event_listener::Event,
    /// Notified when shutdown begins (HTTP connections start their drain).
    drain: event_listener::Event,
    budget: Arc<RecvBudget>,
}

impl ServerState {
    /// Sheds calls once the server-wide receive budget is exceeded: each
    /// round ends the call holding the most bytes on the connection holding
    /// the most, down to 90% of the bound (bounded rounds; the next received
    /// message continues). The margin makes every scan of the connections
    /// cost a peer a tenth of the budget in new data, so trickling bytes at
    /// the bound cannot make the server scan per message.
    fn shed_largest(&self) {
        let low_water = self.budget.limit / 10 * 9;
        for _ in 0..64 {
            if self.budget.used.load(Ordering::Relaxed) <= low_water {
                return;
            }
            let victim = lock(&self.conns)
                .values()
                .filter_map(Weak::upgrade)
                .max_by_key(|s| s.read(|g| g.conn.buffered_bytes()));
            let Some(v) = victim else { return };
            if !v.act(|g| g.conn.shed_largest_call()) {
                return;
            }
            crate::metrics::call_shed();
        }
    }
}

/// An admitted connection's place in the server's counts (in all and
/// per address): given back, and waiters on connections ending woken,
/// when the connection's task ends.
pub(super) struct ConnSlot(Arc<ServerState>, IpAddr);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        {
            let mut m = lock(&self.0.per_ip);
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify(usize::MAX);
    }
}

/// A zrpc server: a router, settings, and the connections it serves.
/// Cheap to clone; clones share connections and shutdown.
pub struct Server<R: Runtime> {
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    auth: Option<Arc<AuthFn>>,
    rt: R,
    state: Arc<ServerState>,
}

impl<R: Runtime> Clone for Server<R> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            config: self.config.clone(),
            auth: self.auth.clone(),
            rt: self.rt.clone(),
            state: self.state.clone(),
        }
    }
}

impl<R: Runtime> Server<R> {
    pub(crate) fn runtime(&self) -> &R {
        &self.rt
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    /// The server-wide bound on received bytes held (HTTP calls count in it
    /// as zrpc.v1 connections do).
    pub(crate) fn recv_budget(&self) -> Arc<RecvBudget> {
        self.state.budget.clone()
    }

    pub(crate) fn authenticator(&self) -> Option<&AuthFn> {
        self.auth.as_deref()
    }

    /// Resolves once shutdown has begun (accepting stopped, drain began).
    pub(crate) async fn draining(&self) {
        loop {
            let l = self.state.drain.listen();
            if self.state.stopping.load(Ordering::Acquire) {
                return;
            }
            l.await;
        }
    }

    /// A plain GET on the port: `/healthz`, the static files, or 404.
    pub(crate) fn answer_get(&self, path: &str) -> hyper::Response<crate::http::call::Body> {
        let (status, ctype, body) = if path == HEALTH_PATH {
            if self.serving() {
                (200, "text/plain", Bytes::from_static(b"SERVING\n"))
            } else {
                (503, "text/plain", Bytes::from_static(b"NOT_SERVING\n"))
            }
        } else if let Some((ctype, body)) =
            self.config.static_files.as_ref().and_then(|f| f.get(path))
        {
            (200, ctype, body)
        } else {
            (404, "text/plain", Bytes::from_static(b"not found\n"))
        };
        let mut resp = hyper::Response::new(crate::http::call::Body::full(body));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert("content-type", v);
        }
        resp
    }

    /// A server with default settings.
    pub fn new(router: Router, rt: R) -> Self {
        Self::with_config(router, ServerConfig::default(), rt)
    }

    /// A server with the given settings.
    pub fn with_config(router: Router, config: ServerConfig, rt: R) -> Self {
        let budget = Arc::new(RecvBudget {
            used: AtomicUsize::new(0),
            limit: config.max_server_receive_buffer,
        });
        Self {
            router: Arc::new(router),
            config: Arc::new(config),
            auth: None,
            rt,
            state: Arc::new(ServerState {
                conns: Mutex::new(HashMap::new()),
                open: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
                refusing: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                unhealthy: AtomicBool::new(false),
                stop: Signal::default(),
                ended: event_listener::Event::new(),
                drain: event_listener::Event::new(),
                budget,
            }),
        }
    }

    /// Sets the authentication hook: it sees every upgrade request (headers,
    /// cookies, query, peer address) before the WebSocket is accepted, and
    /// either refuses it (the client gets the [`Refusal`]'s HTTP status) or
    /// returns the identity every call on the connection then sees through
    /// [`CallContext::identity`](crate::CallContext::identity). Runs on the accepting task: keep it quick
    /// (a token check, not a database round trip).
    ///
    /// A gRPC, gRPC-Web or Connect call is checked the same way, once per
    /// request (its method, path and headers): a refusal ends that call
    /// with `UNAUTHENTICATED` (401), `PERMISSION_DENIED` (403),
    /// `RESOURCE_EXHAUSTED` (429) or `UNAVAILABLE`, and the identity is that
    /// call's.
    pub fn authenticate<T, F>(mut self, f: F) -> Self
    where
        T: Any + Send + Sync,
        F: Fn(&UpgradeRequest) -> Result<T, Refusal> + Send + Sync + 'static,
    {
        self.auth = Some(Arc::new(move |req: &UpgradeRequest| {
            f(req).map(|id| Arc::new(id) as Identity)
        }));
        self
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        let mut conns = lock(&self.state.conns);
        conns.retain(|_, w| w.upgrade().is_some_and(|s| !s.read(|g| g.conn.is_closed())));
        conns.len()
    }

    /// Number of live calls over all connections (state the server holds).
    pub fn live_calls(&self) -> usize {
        let conns = lock(&self.state.conns);
        conns
            .values()
            .filter_map(Weak::upgrade)
            .map(|s| s.read(|g| g.conn.live_calls()))
            .sum()
    }

    /// Received bytes held for handlers over all connections (what
    /// [`ServerConfig::max_server_receive_buffer`] bounds).
    pub fn received_bytes_held(&self) -> usize {
        self.state.budget.used.load(Ordering::Relaxed)
    }

    /// True while the server serves: not shutting down, and the whole
    /// server (`""`) `SERVING` in its [`ServerConfig::health`].
    fn serving(&self) -> bool {
        !self.state.unhealthy.load(Ordering::Acquire)
            && self
                .config
                .health
                .as_ref()
                .is_none_or(|h| h.status("") == Some(ServingStatus::Serving))
    }

    /// Graceful shutdown: health reports `NOT_SERVING` at once; after
    /// [`ServerConfig::drain_delay`] (accepting and serving meanwhile), stop
    /// accepting, send GOAWAY on every connection, let in-flight calls
    /// finish within the drain grace period, then close what is left (code
    /// 1001; those calls end with `UNAVAILABLE`).
    pub async fn shutdown(&self) {
        self.state.unhealthy.store(true, Ordering::Release);
        if let Some(h) = &self.config.health {
            h.drain();
        }
        // Load balancers polling /healthz see 503 and take this instance
        // out of rotation while it still accepts and serves.
        if !self.config.drain_delay.is_zero() {
            self.rt.sleep_until(now() + self.config.drain_delay).await;
        }
        self.state.stopping.store(true, Ordering::Release);
        self.state.stop.signal();
        self.state.drain.notify(usize::MAX);
        // Every connection gets GOAWAY: the open ones now, one whose
        // handshake is still under way as it registers (`serve_stream`
        // checks `stopping`). The shutdown is over when all of them, late
        // ones included, have ended: a connection left behind would lose
        // its calls when the process exits.
        for s in self.live_connections() {
            s.act(|g| g.conn.go_away());
        }
        if !self.all_ended(now() + self.config.drain_grace).await {
            for s in self.live_connections() {
                s.act(|g| g.conn.close(1001, "server shutting down"));
            }
            // The closes go out before this returns (a process that exits
            // next would cut them: peers would see 1006, not 1001), within
            // a bound: a peer that does not read cannot hold the shutdown.
            self.all_ended(now() + CLOSE_WAIT).await;
        }
    }

    /// Waits until every accepted connection has ended, or `deadline`;
    /// true when they all ended.
    async fn all_ended(&self, deadline: std::time::Instant) -> bool {
        async {
            loop {
                let ended = self.state.ended.listen();
                if self.state.open.load(Ordering::Acquire) == 0
                    && self.live_connections().is_empty()
                {
                    return true;
                }
                ended.await;
            }
        }
        .or(async {
            self.rt.sleep_until(deadline).await;
            false
        })
        .await
    }

    /// The connections being served (registered, not yet over).
    fn live_connections(&self) -> Vec<Arc<Shared>> {
        lock(&self.state.conns)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|s| !s.read(|g| g.conn.is_closed()))
            .collect()
    }
}
