//! Handlers, the [`Router`] that names them, and the [`Server`] that accepts
//! connections and runs every call as its own task.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
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
use crate::driver;
use crate::runtime::{Listener, Runtime};
use crate::shared::{Notify, Shared, lock, now};

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
}

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
    Some(Box::pin(run_handler(handler, call, shared.clone())))
}

async fn run_handler(handler: Handler, call: IncomingCall, shared: Arc<Shared>) {
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
    let fut = (handler.f)(ctx.clone(), reqs, sink);
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
    if let Some(status) = status
        && let Err(UserError::Cardinality) = g.conn.finish(call.id, status, trailers.clone())
    {
        let st = Status::new(
            Code::Internal,
            "the handler ended OK without its response message",
        );
        let _ = g.conn.finish(call.id, st, trailers);
    }
    g.pump_events();
    g.slots.remove(&call.id);
    drop(g);
    shared.writer.notify();
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Protocol limits for every connection.
    pub core: Config,
    /// Serve clients that do not negotiate `zrpc.v1` in the seed's format.
    /// Default `true`.
    pub legacy: bool,
    /// Connections beyond this are closed right after accept. Default 10,000.
    pub max_connections: usize,
    /// Time allowed for the WebSocket handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// On shutdown, time in-flight calls get to finish. Default 10 s.
    pub drain_grace: Duration,
    /// Bytes read from the socket at a time, and so the read buffer every
    /// connection keeps, idle or not. Default 2 KiB: about 9.5 KB of server
    /// memory per idle connection in all. Larger messages are still read
    /// whole (in more reads); raise it for servers that mostly receive large
    /// messages.
    pub read_buffer_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            core: Config::default(),
            legacy: true,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            drain_grace: Duration::from_secs(10),
            read_buffer_size: SERVER_READ_BUFFER,
        }
    }
}

/// The server's default read buffer (see [`ServerConfig::read_buffer_size`]).
pub(crate) const SERVER_READ_BUFFER: usize = 2 * 1024;
/// A client's read buffer: a client has few connections and often reads
/// streams, so it reads more at a time than a server.
pub(crate) const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// The WebSocket limits that go with a protocol configuration. The read
/// buffer is a few KiB instead of tungstenite's 128 KiB: it is allocated
/// (and filled) for every connection, idle or not, and larger messages are
/// still read whole.
pub(crate) fn ws_config(core: &Config, read_buffer: usize) -> WebSocketConfig {
    let max = core.max_websocket_message();
    WebSocketConfig::default()
        .read_buffer_size(read_buffer.max(256))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

struct ServerState {
    conns: Mutex<HashMap<u64, Weak<Shared>>>,
    /// Connections being served (counted by serve_stream, so that the accept
    /// loop's limit check is O(1)).
    open: AtomicUsize,
    next_id: AtomicU64,
    stopping: AtomicBool,
    stop: Notify,
}

/// A zrpc server: a router, settings, and the connections it serves.
/// Cheap to clone; clones share connections and shutdown.
pub struct Server<R: Runtime> {
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    rt: R,
    state: Arc<ServerState>,
}

impl<R: Runtime> Clone for Server<R> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            config: self.config.clone(),
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
        Self {
            router: Arc::new(router),
            config: Arc::new(config),
            rt,
            state: Arc::new(ServerState {
                conns: Mutex::new(HashMap::new()),
                open: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
                stop: Notify::default(),
            }),
        }
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

    /// Accepts connections until [`shutdown`](Self::shutdown); each is
    /// served in its own tasks. Returns once shutdown has begun.
    pub async fn serve<L: Listener>(&self, mut listener: L) -> io::Result<()> {
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
                    if self.state.open.load(Ordering::Acquire) >= self.config.max_connections {
                        drop(stream); // over the limit: refused at once
                        continue;
                    }
                    // Counted from accept (handshakes included) until the
                    // connection is over.
                    self.state.open.fetch_add(1, Ordering::AcqRel);
                    let this = self.clone();
                    self.rt.spawn(async move {
                        let _ = this.serve_stream(stream, Some(peer)).await;
                        this.state.open.fetch_sub(1, Ordering::AcqRel);
                    });
                }
                // Per-connection accept errors (reset before accept, fd
                // limits) must not stop the server.
                Some(Err(_)) => continue,
            }
        }
    }

    /// Runs the WebSocket handshake on any byte stream (negotiating
    /// `zrpc.v1`, or legacy when allowed), then serves it until it closes.
    // The handshake callback's error type is fixed by tungstenite.
    #[allow(clippy::result_large_err)]
    pub async fn serve_stream<S>(&self, stream: S, peer: Option<SocketAddr>) -> Result<(), Error>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let mut mode = Mode::Legacy;
        let legacy_ok = self.config.legacy;
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let offered = req
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == SUBPROTOCOL_V1);
            if offered {
                resp.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(SUBPROTOCOL_V1),
                );
                mode = Mode::V1;
            } else if !legacy_ok {
                let mut err =
                    ErrorResponse::new(Some("this server requires the zrpc.v1 subprotocol".into()));
                *err.status_mut() = StatusCode::BAD_REQUEST;
                return Err(err);
            }
            Ok(resp)
        };
        let handshake = async_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(ws_config(&self.config.core, self.config.read_buffer_size)),
        );
        let deadline = now() + self.config.handshake_timeout;
        let ws = async { Some(handshake.await) }
            .or(async {
                self.rt.sleep_until(deadline).await;
                None
            })
            .await
            .ok_or(Error::HandshakeTimeout)??;
        self.serve_websocket(ws, mode, peer).await;
        Ok(())
    }

    /// Serves zrpc on a WebSocket that is already open (for example one your
    /// own HTTP server upgraded) until it closes. `mode` is [`Mode::V1`] when
    /// the `zrpc.v1` subprotocol was negotiated, else [`Mode::Legacy`].
    pub async fn serve_websocket<S>(
        &self,
        ws: WebSocketStream<S>,
        mode: Mode,
        peer: Option<SocketAddr>,
    ) where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Connection::new(Side::Server, mode, self.config.core.clone(), now());
        let shared = driver::start(ws, conn, Some(self.router.clone()), self.rt.clone(), peer);
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
