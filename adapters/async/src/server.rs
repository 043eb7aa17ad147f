//! Handlers, the [`Router`] that names them, and the [`Server`] that accepts
//! connections and runs every call as its own task.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use bytes::Bytes;
use futures_lite::FutureExt;
use futures_lite::future::poll_fn;
use zrpc_core::{
    CallKind, Code, Config, Connection, IncomingCall, Metadata, Mode, SUBPROTOCOL_V1, Side, Status,
    UserError, legacy,
};

use crate::Error;
use crate::call::{CallContext, RequestStream, ResponseMeta, ResponseSink};
use crate::driver::{self, Driver};
use crate::runtime::{Listener, Runtime};
use crate::shared::{Identity, Notify, PeerInfo, RecvBudget, Shared, lock, now};
use crate::tls::ServerTls;
use crate::upgrade::{self, HeadError, Refusal, UpgradeRequest};
use crate::web::StaticFiles;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type HandlerFn =
    dyn Fn(CallContext, RequestStream, ResponseSink) -> BoxFuture<Result<(), Status>> + Send + Sync;

#[derive(Clone)]
struct Handler {
    kind: CallKind,
    f: Arc<HandlerFn>,
}

/// Method names to handlers. Build it with the four registration methods
/// (or [`service`](Self::service)), then give it to a server or a client.
///
/// A handler's first poll (its code up to its first `.await` that waits)
/// runs on the connection's reader task, so a handler that completes at
/// once costs no task of its own; a handler that waits continues as its own
/// task. Handlers that compute for long before they first wait hold up the
/// other calls of their connection meanwhile: give those a task from the
/// start with [`spawn_every_handler`](Self::spawn_every_handler).
#[derive(Clone, Default)]
pub struct Router {
    methods: HashMap<String, Handler>,
    spawn_all: bool,
    /// Shared by every call's handler task (no copy per call).
    interceptors: Arc<Vec<Arc<Interceptor>>>,
}

type Interceptor = dyn Fn(&CallContext) -> Result<(), Status> + Send + Sync;

/// A group of methods registered together.
pub trait Service {
    /// Adds this service's methods to `router`.
    fn register(self, router: Router) -> Router;
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.methods.keys()).finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, name: &str, kind: CallKind, f: Arc<HandlerFn>) -> Self {
        self.methods.insert(name.to_owned(), Handler { kind, f });
        self
    }

    /// Registers a unary handler: one request in, one response out.
    pub fn unary<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(CallContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            CallKind::Unary,
            Arc::new(
                move |ctx, mut reqs: RequestStream, mut sink: ResponseSink| {
                    let f = f.clone();
                    Box::pin(async move {
                        let req = reqs.message().await?.ok_or_else(missing_request)?;
                        let resp = f(ctx, req).await?;
                        sink.send(resp).await
                    })
                },
            ),
        )
    }

    /// Registers a server-streaming handler: one request in, responses sent
    /// through the sink.
    pub fn server_streaming<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(CallContext, Bytes, ResponseSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            CallKind::ServerStreaming,
            Arc::new(move |ctx, mut reqs: RequestStream, sink| {
                let f = f.clone();
                Box::pin(async move {
                    let req = reqs.message().await?.ok_or_else(missing_request)?;
                    f(ctx, req, sink).await
                })
            }),
        )
    }

    /// Registers a client-streaming handler: a stream of requests in, one
    /// response out.
    pub fn client_streaming<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(CallContext, RequestStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            CallKind::ClientStreaming,
            Arc::new(move |ctx, reqs, mut sink: ResponseSink| {
                let f = f.clone();
                Box::pin(async move {
                    let resp = f(ctx, reqs).await?;
                    sink.send(resp).await
                })
            }),
        )
    }

    /// Registers a bidirectional handler.
    pub fn bidi<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(CallContext, RequestStream, ResponseSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            CallKind::Bidi,
            Arc::new(move |ctx, reqs, sink| Box::pin(f.clone()(ctx, reqs, sink))),
        )
    }

    /// Adds a check that runs before every handler of this router, in the
    /// order added: it sees the call's context (method, request metadata
    /// such as a bearer token, the connection's identity) and either lets
    /// the call through or ends it with a status, typically
    /// `UNAUTHENTICATED` or `PERMISSION_DENIED`; the handler then never runs.
    pub fn intercept<F>(mut self, f: F) -> Self
    where
        F: Fn(&CallContext) -> Result<(), Status> + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.interceptors).push(Arc::new(f));
        self
    }

    /// Registers every method of a service.
    pub fn service(self, service: impl Service) -> Self {
        service.register(self)
    }

    /// Names of the registered methods.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// The handler for a call: the exact name, or for legacy calls the
    /// first part of a dotted `service.method` name.
    /// Runs every handler as its own task from its first poll, so calls on
    /// one connection compute in parallel on a multi-threaded runtime. Costs
    /// a task per call even for handlers that complete at once.
    pub fn spawn_every_handler(mut self) -> Self {
        self.spawn_all = true;
        self
    }

    /// Whether handlers get their first poll on the reader task.
    pub(crate) fn inline_first_poll(&self) -> bool {
        !self.spawn_all
    }

    fn lookup(&self, name: &str, mode: Mode) -> Option<&Handler> {
        self.methods.get(name).or_else(|| match mode {
            Mode::Legacy => self.methods.get(legacy::split_dotted(name).0),
            Mode::V1 => None,
        })
    }
}

fn missing_request() -> Status {
    Status::new(Code::Internal, "the call carried no request message")
}

/// True when a caller of kind `caller` can carry what a handler of kind
/// `handler` needs (streams where the handler streams).
fn compatible(caller: CallKind, handler: CallKind) -> bool {
    (handler.single_request() || !caller.single_request())
        && (handler.single_response() || !caller.single_response())
}

/// A call's handler, ready to run.
pub(crate) type HandlerTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The handler for a call the peer opened, or `None` after refusing it.
pub(crate) fn dispatch(
    call: IncomingCall,
    shared: &Arc<Shared>,
    router: Option<&Arc<Router>>,
) -> Option<HandlerTask> {
    let mode = shared.mode();
    let handler = router
        .and_then(|r| r.lookup(call.method.as_str(), mode))
        .cloned();
    let refusal = match &handler {
        None => Some(Status::new(
            Code::Unimplemented,
            format!("method {} is not implemented", call.method),
        )),
        Some(h) if mode == Mode::V1 && !compatible(call.kind, h.kind) => Some(Status::new(
            Code::Unimplemented,
            format!(
                "method {} is {:?}, called as {:?}",
                call.method, h.kind, call.kind
            ),
        )),
        Some(_) => None,
    };
    if let Some(status) = refusal {
        let mut g = shared.lock();
        let _ = g.conn.finish(call.id, status, Metadata::new());
        g.pump_events();
        g.slots.remove(&call.id);
        drop(g);
        shared.writer.notify();
        return None;
    }
    let handler = handler?;
    let interceptors = router
        .filter(|r| !r.interceptors.is_empty())
        .map(|r| r.interceptors.clone());
    Some(Box::pin(run_handler(
        handler,
        interceptors,
        call,
        shared.clone(),
    )))
}

async fn run_handler(
    handler: Handler,
    interceptors: Option<Arc<Vec<Arc<Interceptor>>>>,
    call: IncomingCall,
    shared: Arc<Shared>,
) {
    let ctx = CallContext {
        id: call.id,
        method: call.method,
        kind: call.kind,
        metadata: call.metadata,
        deadline: call.deadline,
        shared: shared.clone(),
        out: Arc::new(Mutex::new(ResponseMeta::default())),
    };
    let reqs = RequestStream {
        id: call.id,
        shared: shared.clone(),
        local: VecDeque::new(),
    };
    let sink = ResponseSink {
        ctx: ctx.clone(),
        headers_flushed: false,
    };
    let started = std::time::Instant::now();
    let checked = interceptors.map_or(Ok(()), |list| list.iter().try_for_each(|i| i(&ctx)));
    let fut = match checked {
        Ok(()) => (handler.f)(ctx.clone(), reqs, sink),
        Err(status) => Box::pin(std::future::ready(Err(status))),
    };
    // The handler runs until it returns, panics, or the call ends under it
    // (cancel, deadline, connection loss): then it is dropped.
    let outcome = async { Some(AssertUnwindSafe(fut).catch_unwind().await) }
        .or(async {
            ctx.cancelled().await;
            None
        })
        .await;
    let status = match outcome {
        None => None,
        Some(Ok(Ok(()))) => Some(Status::ok()),
        Some(Ok(Err(status))) => Some(status),
        Some(Err(_)) => Some(Status::new(Code::Internal, "the handler panicked")),
    };
    ctx.flush_headers();
    let trailers = std::mem::take(&mut lock(&ctx.out).trailers);
    let code = status.as_ref().map_or(Code::Cancelled, Status::code);
    tracing::info!(
        method = ctx.method(),
        status = %code,
        duration_us = started.elapsed().as_micros() as u64,
        peer = ?ctx.peer_addr(),
        "call"
    );
    let mut g = shared.lock();
    if let Some(status) = status {
        // A status the call cannot carry still ends it: INTERNAL, saying why.
        let fallback = match g.conn.finish(call.id, status, trailers) {
            Err(UserError::Cardinality) => {
                Some("the handler ended OK without its response message")
            }
            Err(UserError::MetadataTooLarge { .. }) => {
                Some("the handler's status and trailers exceed the caller's metadata limit")
            }
            _ => None,
        };
        if let Some(why) = fallback {
            let _ = g
                .conn
                .finish(call.id, Status::new(Code::Internal, why), Metadata::new());
        }
    }
    g.pump_events();
    g.slots.remove(&call.id);
    drop(g);
    shared.writer.notify();
}

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
    /// connection keeps, idle or not. Default 2 KiB: about 9.5 KB of server
    /// memory per idle connection in all. Larger messages are still read
    /// whole (in more reads); raise it for servers that mostly receive large
    /// messages.
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
    /// `Origin` (non-browser clients) are not concerned. Default: none
    /// listed (same-origin pages only).
    pub allowed_origins: Vec<String>,
    /// Serve `wss://`: every accepted connection does its TLS handshake
    /// (within `handshake_timeout`) before the HTTP upgrade. Default `None`
    /// (plain `ws://`, for a server behind a TLS-terminating proxy or on
    /// loopback).
    pub tls: Option<ServerTls>,
    /// Files answered to plain HTTP GET requests on the same port (a web
    /// app beside its endpoint); `None` (the default): such requests are
    /// refused like any failed upgrade.
    pub static_files: Option<StaticFiles>,
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
            write_timeout: crate::client::DEFAULT_WRITE_TIMEOUT,
            drain_grace: Duration::from_secs(10),
            read_buffer_size: SERVER_READ_BUFFER,
            max_server_receive_buffer: 256 * 1024 * 1024,
            allowed_origins: Vec::new(),
            tls: None,
            static_files: None,
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

/// The server's default read buffer (see [`ServerConfig::read_buffer_size`]).
pub(crate) const SERVER_READ_BUFFER: usize = 2 * 1024;
/// A client's read buffer: a client has few connections and often reads
/// streams, so it reads more at a time than a server.
pub(crate) const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// The WebSocket limits that go with a protocol configuration and mode: no
/// WebSocket message (or frame) larger than the largest the mode allows is
/// read at all. The read buffer is a few KiB instead of tungstenite's
/// 128 KiB: it is allocated (and filled) for every connection, idle or not,
/// and larger messages are still read whole.
pub(crate) fn ws_config(core: &Config, mode: Mode, read_buffer: usize) -> WebSocketConfig {
    let max = core.max_websocket_message_for(mode);
    WebSocketConfig::default()
        .read_buffer_size(read_buffer.max(256))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Refusals (503, 429) being written at once; beyond it a connection over a
/// limit is closed without an answer.
const MAX_REFUSALS: usize = 64;
/// Time a refused client gets to send its request head.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (EMFILE, say), doubling up to a second.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

type AuthFn = dyn Fn(&UpgradeRequest) -> Result<Identity, Refusal> + Send + Sync;

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
    stop: Notify,
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
            let mut g = v.lock();
            if !g.conn.shed_largest_call() {
                return;
            }
            g.pump_events();
            drop(g);
            v.writer.notify();
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
                stop: Notify::default(),
                budget,
            }),
        }
    }

    /// Sets the authentication hook: it sees every upgrade request (headers,
    /// cookies, query, peer address) before the WebSocket is accepted, and
    /// either refuses it (the client gets the [`Refusal`]'s HTTP status) or
    /// returns the identity every call on the connection then sees through
    /// [`CallContext::identity`]. Runs on the accepting task: keep it quick
    /// (a token check, not a database round trip).
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
                        if let Some(stream) = accepted {
                            let _ = this.serve_stream(stream, Some(peer)).await;
                        }
                    })
                    .await
                }
            }
            this.state.open.fetch_sub(1, Ordering::AcqRel);
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
        let Some((ws, mode, identity)) = Box::pin(self.upgrade(stream, peer)).await? else {
            return Ok(()); // a plain HTTP request, answered from the static files
        };
        self.serve_connection(ws, mode, peer, identity).await;
        Ok(())
    }

    /// The upgrade of [`serve_stream`](Self::serve_stream): head, checks,
    /// WebSocket handshake.
    #[allow(clippy::result_large_err)]
    async fn upgrade<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
    ) -> Result<Option<(WebSocketStream<upgrade::Rewind<S>>, Mode, Option<Identity>)>, Error>
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
        let head = match head {
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
        // The mode is known before the WebSocket layer starts: its message
        // limit is the mode's (v1: a frame; legacy: a whole request).
        if !head.info.websocket {
            if let Some(files) = &self.config.static_files {
                upgrade_web(&mut stream, files, &head.info).await;
                return Ok(None);
            }
            // A browser or curl pointed at the endpoint: say what it is.
            let reason =
                "this is a zrpc endpoint: connect with a WebSocket client (subprotocol zrpc.v1)";
            upgrade::respond(&mut stream, 426, reason).await;
            return Err(Error::Refused(Refusal::with_status(426, reason)));
        }
        let ws_mode = if head.info.offers_v1 {
            Mode::V1
        } else {
            Mode::Legacy
        };
        let stream = upgrade::Rewind::new(head.bytes, stream);
        let mut mode = Mode::Legacy;
        let mut identity = None;
        let mut refused = None;
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
                let origin = origin.to_str().unwrap_or("");
                let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                if !upgrade::origin_allowed(origin, host, &config.allowed_origins) {
                    let r = Refusal::forbidden(format!("origin {origin:?} is not allowed"));
                    return Err(refuse(r, &mut refused));
                }
            }
            let offered = req
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == SUBPROTOCOL_V1);
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
        Ok(Some((ws, mode, identity)))
    }

    /// Serves zrpc on a WebSocket that is already open (for example one your
    /// own HTTP server upgraded) until it closes. `mode` is [`Mode::V1`] when
    /// the `zrpc.v1` subprotocol was negotiated, else [`Mode::Legacy`]. Your
    /// HTTP server applies its own Origin and authentication checks.
    pub async fn serve_websocket<S>(
        &self,
        ws: WebSocketStream<S>,
        mode: Mode,
        peer: Option<SocketAddr>,
    ) where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_connection(ws, mode, peer, None).await
    }

    async fn serve_connection<S>(
        &self,
        ws: WebSocketStream<S>,
        mode: Mode,
        peer: Option<SocketAddr>,
        identity: Option<Identity>,
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
        };
        let info = PeerInfo {
            addr: peer,
            identity,
            budget: Some(self.state.budget.clone()),
        };
        let shared = driver::start(ws, conn, driver, info, self.rt.clone());
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.state.conns).insert(id, Arc::downgrade(&shared));
        if self.state.stopping.load(Ordering::Acquire) {
            let mut g = shared.lock();
            g.conn.go_away();
            g.pump_events();
        }
        shared.writer.notify();
        wait_closed(&shared).await;
        lock(&self.state.conns).remove(&id);
    }

    /// Graceful shutdown: stop accepting, send GOAWAY on every connection,
    /// let in-flight calls finish within the drain grace period, then close
    /// what is left (code 1001; those calls end with `UNAVAILABLE`).
    pub async fn shutdown(&self) {
        self.state.stopping.store(true, Ordering::Release);
        self.state.stop.notify();
        let conns: Vec<Arc<Shared>> = lock(&self.state.conns)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for s in &conns {
            let mut g = s.lock();
            g.conn.go_away();
            g.pump_events();
            drop(g);
            s.writer.notify();
        }
        let deadline = now() + self.config.drain_grace;
        for s in &conns {
            let drained = async {
                wait_closed(s).await;
                true
            }
            .or(async {
                self.rt.sleep_until(deadline).await;
                false
            })
            .await;
            if !drained {
                let mut g = s.lock();
                g.conn.close(1001, "server shutting down");
                g.pump_events();
                drop(g);
                s.writer.notify();
            }
        }
    }
}

/// Resolves once the connection is over.
pub(crate) async fn wait_closed(shared: &Shared) {
    poll_fn(|cx| {
        let mut g = shared.lock();
        if g.closed.is_some() || g.conn.is_closed() {
            return std::task::Poll::Ready(());
        }
        if !g.closed_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            g.closed_wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    })
    .await
}
