//! The [`Server`]: accepts connections (limits per address and in all,
//! TLS, the HTTP upgrade with its checks), serves each with a driver and the
//! router, bounds received bytes over all of them, and drains on shutdown.

use std::any::Any;
use std::collections::HashMap;
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

/// Server settings. Every bound has a default fit for a server reachable
/// from the internet; README's "Security" section lists them all.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Protocol limits for every connection. The server's default turns on
    /// keepalive (a PING after 30 s of silence, close 4000 when unanswered
    /// within 20 s) and the idle timeout (drain after 5 minutes without a
    /// call).
    pub core: Config,
    /// Serve clients that do not negotiate `zrpc.v1` in the seed's format.
    /// Default `true`.
    pub legacy: bool,
    /// Connections served at once; beyond it a connection gets HTTP 503
    /// before any upgrade. Default 10,000.
    pub max_connections: usize,
    /// Connections served at once from one IP address; beyond it HTTP 429.
    /// Default 256.
    pub max_connections_per_ip: usize,
    /// Time allowed to read the request head and finish the WebSocket
    /// handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest time one write may stay blocked on a peer that does not
    /// read; then the connection is dropped (its calls end `UNAVAILABLE`).
    /// Default 30 s.
    pub write_timeout: Duration,
    /// On shutdown, time in-flight calls get to finish. Default 10 s.
    pub drain_grace: Duration,
    /// Bytes read from the socket at a time, and so the read buffer every
    /// connection keeps, idle or not. Default 1 KiB: about 7.6 KB of server
    /// memory per idle connection in all (after its buffers are released,
    /// see `zrpc_core::Config::release_idle_after`). Larger messages are
    /// still read whole (in more reads); raise it for servers that mostly
    /// receive large messages.
    pub read_buffer_size: usize,
    /// Bound on received bytes held for handlers over all connections
    /// (unread messages and partial messages). When a received message takes
    /// the total past it, the call holding the most bytes on the connection
    /// holding the most ends with `RESOURCE_EXHAUSTED`, until the total is
    /// back under 90% of it. Default 256 MiB.
    pub max_server_receive_buffer: usize,
    /// Browser origins allowed to connect (`https://app.example`, or `*` for
    /// any). A request carrying an `Origin` header that is neither listed
    /// nor same-origin with its `Host` is refused with HTTP 403 before the
    /// upgrade, so a page on another site cannot call this server with its
    /// visitors' cookies or from inside their network. Requests without
    /// `Origin` (non-browser clients) are not concerned. Same-origin means
    /// the same scheme too (`https` pages for a TLS listener, or behind a
    /// proxy that sets `X-Forwarded-Proto: https`). Default: none listed
    /// (same-origin pages only).
    pub allowed_origins: Vec<String>,
    /// Host names (without port; `*` for any) under which a same-origin
    /// page may connect. IP addresses, `localhost` and `*.localhost` are
    /// always answered; a page under any other name is refused with HTTP
    /// 403 unless its origin is in `allowed_origins`. This stops DNS
    /// rebinding: a page on `http://attacker.example:PORT` whose name the
    /// attacker re-points at the server's address sends an `Origin` and a
    /// `Host` that agree, and would otherwise pass as same-origin. Requests
    /// without `Origin` are not concerned. Default: none (IP addresses and
    /// localhost only).
    pub allowed_hosts: Vec<String>,
    /// Serve `wss://`: every accepted connection does its TLS handshake
    /// (within `handshake_timeout`) before the HTTP upgrade. Default `None`
    /// (plain `ws://`, for a server behind a TLS-terminating proxy or on
    /// loopback).
    pub tls: Option<ServerTls>,
    /// Files answered to plain HTTP GET requests on the same port (a web
    /// app beside its endpoint); `None` (the default): such requests are
    /// refused like any failed upgrade.
    pub static_files: Option<StaticFiles>,
    /// What the server says about its health: plain HTTP `GET /healthz` on
    /// the RPC port answers 200 `SERVING` while the whole server (`""`) is
    /// serving and 503 `NOT_SERVING` otherwise (no Origin or authentication
    /// check: load balancers poll it), and shutdown marks it draining. Give
    /// the same handle to `zrpc_proto::health::register` for the
    /// `grpc.health.v1.Health` methods. Default `None`: `/healthz` answers
    /// 200 until shutdown begins.
    pub health: Option<Health>,
    /// The path WebSocket upgrades must ask for (`/rpc`, say); upgrades to
    /// any other path get HTTP 404. Default `None`: any path.
    pub path: Option<String>,
    /// On shutdown, how long the server keeps accepting and serving while
    /// `/healthz` (and the health service) already report `NOT_SERVING`, so
    /// a load balancer stops sending it new connections before it stops
    /// accepting them; then the drain begins. Default 0 (drain at once).
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            core: Config {
                keepalive_interval: Some(Duration::from_secs(30)),
                idle_timeout: Some(Duration::from_secs(300)),
                ..Config::default()
            },
            legacy: true,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            drain_grace: Duration::from_secs(10),
            read_buffer_size: SERVER_READ_BUFFER,
            max_server_receive_buffer: 256 * 1024 * 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            tls: None,
            static_files: None,
            health: None,
            path: None,
            drain_delay: Duration::ZERO,
        }
    }
}

/// Answers a plain HTTP request from the static files.
async fn upgrade_web<S: futures_lite::AsyncWrite + Unpin>(
    stream: &mut S,
    files: &StaticFiles,
    head: &upgrade::HeadInfo,
) {
    crate::web::respond(stream, files, &head.method, &head.path).await;
}

/// Where plain HTTP health checks are answered.
const HEALTH_PATH: &str = "/healthz";

/// Refusals (503, 429) being written at once; beyond it a connection over a
/// limit is closed without an answer.
const MAX_REFUSALS: usize = 64;
/// Time a refused client gets to send its request head.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// After the drain grace, how long shutdown waits for the closes it sent to
/// be written and answered.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (EMFILE, say), doubling up to a second.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) type AuthFn = dyn Fn(&UpgradeRequest) -> Result<Identity, Refusal> + Send + Sync;

/// An accepted upgrade: the WebSocket, its mode, who the peer is, and
/// whether it came with an `Origin` header (a browser's).
type Upgraded<S> = (
    WebSocketStream<upgrade::Rewind<S>>,
    Mode,
    Option<Identity>,
    bool,
);

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
                .max_by_key(|s| s.lock().conn.buffered_bytes());
            let Some(v) = victim else { return };
            if !v.act(|g| g.conn.shed_largest_call()) {
                return;
            }
            crate::metrics::call_shed();
        }
    }
}

/// Decrements a per-IP count when a connection ends.
struct IpSlot<'a>(&'a ServerState, IpAddr);

impl Drop for IpSlot<'_> {
    fn drop(&mut self) {
        let mut m = lock(&self.0.per_ip);
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
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
        conns.retain(|_, w| w.upgrade().is_some_and(|s| !s.lock().conn.is_closed()));
        conns.len()
    }

    /// Number of live calls over all connections (state the server holds).
    pub fn live_calls(&self) -> usize {
        let conns = lock(&self.state.conns);
        conns
            .values()
            .filter_map(Weak::upgrade)
            .map(|s| s.lock().conn.live_calls())
            .sum()
    }

    /// Received bytes held for handlers over all connections (what
    /// [`ServerConfig::max_server_receive_buffer`] bounds).
    pub fn received_bytes_held(&self) -> usize {
        self.state.budget.used.load(Ordering::Relaxed)
    }

    /// Accepts connections until [`shutdown`](Self::shutdown); each is
    /// served in its own tasks. Returns once shutdown has begun.
    ///
    /// A connection over [`ServerConfig::max_connections`] gets HTTP 503,
    /// one over [`ServerConfig::max_connections_per_ip`] HTTP 429. A failed
    /// accept (out of file descriptors, say) pauses accepting, from 5 ms
    /// doubling to 1 s while it keeps failing, and is logged once per run of
    /// failures.
    pub async fn serve<L: Listener>(&self, mut listener: L) -> io::Result<()> {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut failing = false;
        loop {
            if self.state.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            let next = async { Some(listener.accept().await) }
                .or(async {
                    self.state.stop.wait().await;
                    None
                })
                .await;
            match next {
                None => return Ok(()),
                Some(Ok((stream, peer))) => {
                    if failing {
                        tracing::info!("accepting connections again");
                    }
                    failing = false;
                    backoff = ACCEPT_BACKOFF_MIN;
                    self.admit(stream, peer);
                }
                // Per-connection accept errors (reset before accept, fd
                // limits) must not stop the server, nor spin it.
                Some(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "accept failed; backing off");
                    }
                    failing = true;
                    let resume = now() + backoff;
                    let stopped = async {
                        self.rt.sleep_until(resume).await;
                        false
                    }
                    .or(async {
                        self.state.stop.wait().await;
                        true
                    })
                    .await;
                    if stopped {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Serves an accepted connection in its own task, or refuses it.
    fn admit<S>(&self, stream: S, peer: SocketAddr)
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let refusal = if self.state.open.load(Ordering::Acquire) >= self.config.max_connections {
            Some((503, "server at its connection limit"))
        } else {
            let mut m = lock(&self.state.per_ip);
            let n = m.entry(peer.ip()).or_insert(0);
            if *n >= self.config.max_connections_per_ip {
                Some((429, "too many connections from this address"))
            } else {
                *n += 1;
                None
            }
        };
        if let Some((status, reason)) = refusal {
            if self.state.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS {
                self.state.refusing.fetch_sub(1, Ordering::AcqRel);
                return; // dropped: too many refusals already in progress
            }
            let this = self.clone();
            self.rt.spawn(async move {
                let mut stream = stream;
                let deadline = now() + REFUSAL_TIMEOUT;
                let read = async { upgrade::read_head(&mut stream).await.is_ok() }.or(async {
                    this.rt.sleep_until(deadline).await;
                    false
                });
                if read.await {
                    upgrade::respond(&mut stream, status, reason).await;
                }
                this.state.refusing.fetch_sub(1, Ordering::AcqRel);
            });
            return;
        }
        // Counted from accept (handshakes included) until the connection
        // is over.
        self.state.open.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        self.rt.spawn(async move {
            let _slot = IpSlot(&this.state, peer.ip());
            match &this.config.tls {
                None => {
                    let _ = this.serve_stream(stream, Some(peer)).await;
                }
                // Boxed: a plain connection's task stays as small as it was
                // (the TLS branch's futures are large), which is most of
                // the memory an idle connection holds.
                Some(tls) => {
                    Box::pin(async {
                        let deadline = now() + this.config.handshake_timeout;
                        let accepted = async { tls.acceptor().accept(stream).await.ok() }
                            .or(async {
                                this.rt.sleep_until(deadline).await;
                                None
                            })
                            .await;
                        match accepted {
                            Some(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                                crate::http::serve_connection(
                                    &this,
                                    stream,
                                    Some(peer),
                                    crate::http::Version::H2,
                                )
                                .await
                            }
                            Some(stream) => {
                                let _ = this.serve_stream(stream, Some(peer)).await;
                            }
                            None => {}
                        }
                    })
                    .await
                }
            }
            this.state.open.fetch_sub(1, Ordering::AcqRel);
            this.state.ended.notify(usize::MAX);
        });
    }

    /// Reads the request head, applies the Origin policy and the
    /// authentication hook, runs the WebSocket handshake (negotiating
    /// `zrpc.v1`, or legacy when allowed) on any byte stream, then serves it
    /// until it closes. Refusals are HTTP responses: 400 (not a request),
    /// 431 (head over 16 KiB or 64 headers), 403 (origin), the hook's
    /// status, 400 (legacy not allowed).
    // The handshake callback's error type is fixed by tungstenite.
    #[allow(clippy::result_large_err)]
    pub async fn serve_stream<S>(&self, stream: S, peer: Option<SocketAddr>) -> Result<(), Error>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        // Boxed, so its futures are freed once the upgrade is done instead
        // of sizing the connection's task for its whole life.
        let Some((ws, mode, identity, browser)) = Box::pin(self.upgrade(stream, peer)).await?
        else {
            return Ok(()); // a plain HTTP request, answered from the static files
        };
        self.serve_connection(ws, mode, peer, identity, browser)
            .await;
        Ok(())
    }

    /// The upgrade of [`serve_stream`](Self::serve_stream): head, checks,
    /// WebSocket handshake.
    #[allow(clippy::result_large_err)]
    async fn upgrade<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
    ) -> Result<Option<Upgraded<S>>, Error>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let deadline = now() + self.config.handshake_timeout;
        let timeout = async {
            self.rt.sleep_until(deadline).await;
            None
        };
        let mut stream = stream;
        let head = async { Some(upgrade::read_head(&mut stream).await) }
            .or(timeout)
            .await
            .ok_or(Error::HandshakeTimeout)?;
        let mut head = match head {
            Ok(h) => h,
            Err(HeadError::Io(e)) => return Err(Error::Io(e)),
            Err(HeadError::Malformed) => {
                upgrade::respond(&mut stream, 400, "malformed HTTP request").await;
                return Err(Error::Refused(Refusal::with_status(
                    400,
                    "malformed request",
                )));
            }
            Err(HeadError::TooLarge) => {
                upgrade::respond(&mut stream, 431, "request head too large").await;
                return Err(Error::Refused(Refusal::with_status(
                    431,
                    "request head too large",
                )));
            }
        };
        let Some(info) = head.info.take() else {
            // HTTP/2 with prior knowledge: gRPC, gRPC-Web or Connect.
            let io = upgrade::Rewind::new(head.bytes, stream);
            crate::http::serve_connection(self, io, peer, crate::http::Version::H2).await;
            return Ok(None);
        };
        // An HTTP/1.1 RPC (gRPC-Web, Connect) or a CORS preflight.
        if !info.websocket && (info.method == "POST" || info.method == "OPTIONS") {
            let io = upgrade::Rewind::new(head.bytes, stream);
            crate::http::serve_connection(self, io, peer, crate::http::Version::Http1).await;
            return Ok(None);
        }
        let info = &info;
        if !info.websocket && info.path.split('?').next() == Some(HEALTH_PATH) {
            let (status, text) = if self.serving() {
                (200, "SERVING")
            } else {
                (503, "NOT_SERVING")
            };
            upgrade::respond(&mut stream, status, text).await;
            return Ok(None);
        }
        if let Some((status, reason)) = info.upgrade_error() {
            upgrade::respond(&mut stream, status, reason).await;
            return Err(Error::Refused(Refusal::with_status(status, reason)));
        }
        if let Some(path) = &self.config.path
            && info.websocket
            && info.path.split('?').next() != Some(path.as_str())
        {
            let reason = format!("no zrpc endpoint at this path (it is at {path})");
            upgrade::respond(&mut stream, 404, &reason).await;
            return Err(Error::Refused(Refusal::with_status(404, reason)));
        }
        // The mode is known before the WebSocket layer starts: its message
        // limit is the mode's (v1: a frame; legacy: a whole request).
        if !info.websocket {
            if let Some(files) = &self.config.static_files {
                upgrade_web(&mut stream, files, info).await;
                return Ok(None);
            }
            // A browser or curl pointed at the endpoint: say what it is.
            let reason =
                "this is a zrpc endpoint: connect with a WebSocket client (subprotocol zrpc.v1)";
            upgrade::respond(&mut stream, 426, reason).await;
            return Err(Error::Refused(Refusal::with_status(426, reason)));
        }
        let ws_mode = if info.offers_v1 {
            Mode::V1
        } else {
            Mode::Legacy
        };
        let stream = upgrade::Rewind::new(head.bytes, stream);
        let mut mode = Mode::Legacy;
        let mut identity = None;
        let mut refused = None;
        let mut browser = false;
        let legacy_ok = self.config.legacy;
        let config = &self.config;
        let auth = self.auth.as_deref();
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let refuse = |r: Refusal, refused: &mut Option<Refusal>| {
                let mut err = ErrorResponse::new(Some(r.reason().to_owned()));
                *err.status_mut() =
                    StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN);
                *refused = Some(r);
                err
            };
            if let Some(origin) = req.headers().get("origin") {
                browser = true;
                let origin = origin.to_str().unwrap_or("");
                let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                if let Some(text) = upgrade::origin_refusal(config, origin, host, req.headers()) {
                    return Err(refuse(Refusal::forbidden(text), &mut refused));
                }
            }
            let offered = offers_v1(
                req.headers()
                    .get_all("sec-websocket-protocol")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            if !offered && !legacy_ok {
                let r = Refusal::with_status(400, "this server requires the zrpc.v1 subprotocol");
                return Err(refuse(r, &mut refused));
            }
            if let Some(auth) = auth {
                let up = UpgradeRequest {
                    req: req.clone(),
                    peer,
                };
                match auth(&up) {
                    Ok(id) => identity = Some(id),
                    Err(r) => return Err(refuse(r, &mut refused)),
                }
            }
            if offered {
                resp.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(SUBPROTOCOL_V1),
                );
                mode = Mode::V1;
            }
            Ok(resp)
        };
        let handshake = async_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(ws_config(
                &self.config.core,
                ws_mode,
                self.config.read_buffer_size,
            )),
        );
        let timeout = async {
            self.rt.sleep_until(deadline).await;
            None
        };
        let ws = match async { Some(handshake.await) }.or(timeout).await {
            None => return Err(Error::HandshakeTimeout),
            Some(Ok(ws)) => ws,
            Some(Err(e)) => return Err(refused.map_or(Error::WebSocket(e), Error::Refused)),
        };
        Ok(Some((ws, mode, identity, browser)))
    }

    /// Serves zrpc on a connection your own HTTP server has already
    /// upgraded to a WebSocket (it answered 101 with
    /// [`accept_key`](crate::accept_key), and with `zrpc.v1` as the
    /// subprotocol when [`offers_v1`](crate::offers_v1) said the client
    /// offered it), until it closes. `mode` is [`Mode::V1`] when `zrpc.v1`
    /// was negotiated, else [`Mode::Legacy`]. The WebSocket limits are the
    /// server's, as for connections it accepts itself; your HTTP server
    /// applies its own Origin and authentication checks.
    pub async fn serve_upgraded<S>(&self, io: S, mode: Mode, peer: Option<SocketAddr>)
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let config = ws_config(&self.config.core, mode, self.config.read_buffer_size);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        self.serve_connection(ws, mode, peer, None, false).await
    }

    async fn serve_connection<S>(
        &self,
        ws: WebSocketStream<S>,
        mode: Mode,
        peer: Option<SocketAddr>,
        identity: Option<Identity>,
        browser: bool,
    ) where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Connection::new(Side::Server, mode, self.config.core.clone(), now());
        let state = Arc::downgrade(&self.state);
        let driver = Driver {
            router: Some(self.router.clone()),
            write_timeout: self.config.write_timeout,
            on_budget_exceeded: Some(Arc::new(move || {
                if let Some(s) = state.upgrade() {
                    s.shed_largest();
                }
            })),
            // A browser (it sent `Origin`) gets a burst's answers whole.
            dispatch_slice: (!browser).then_some(driver::DISPATCH_SLICE),
        };
        let info = PeerInfo {
            addr: peer,
            identity,
            budget: Some(self.state.budget.clone()),
        };
        let (shared, read) = driver::attach(ws, conn, driver, info, self.rt.clone());
        let _open = crate::metrics::ConnectionGauge::open();
        let peer_text = peer.map_or_else(|| "-".to_owned(), |a| a.to_string());
        tracing::info!(peer = %peer_text, ?mode, "connection opened");
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.state.conns).insert(id, Arc::downgrade(&shared));
        if self.state.stopping.load(Ordering::Acquire) {
            shared.act(|g| g.conn.go_away());
        }
        shared.writer.signal();
        // This task reads; the connection is over once reading has stopped
        // and the close has been recorded.
        read.await;
        shared.closed().await;
        let reason = shared
            .lock()
            .closed
            .as_ref()
            .map_or_else(|| "closed".to_owned(), |s| s.message().to_owned());
        tracing::info!(peer = %peer_text, %reason, "connection closed");
        lock(&self.state.conns).remove(&id);
        self.state.ended.notify(usize::MAX);
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
            .filter(|s| !s.lock().conn.is_closed())
            .collect()
    }
}
