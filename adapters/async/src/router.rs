//! Handlers and the [`Router`] that names them; how a call the peer opened
//! finds its handler (or is refused), and the task that runs it: cancelled
//! with its call, panic-aware, ending the call with the handler's status.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::FutureExt;
use tracing::Instrument;
use zrpc_core::{CallKind, Code, IncomingCall, Metadata, Mode, Status, UserError, legacy};

use crate::call::{CallContext, CallInfo, CallIo, RequestStream, Requests, ResponseSink};
use crate::conn::Shared;
use crate::metrics::MethodMetrics;
use crate::signal::lock;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type HandlerFn =
    dyn Fn(CallContext, RequestStream, ResponseSink) -> BoxFuture<Result<(), Status>> + Send + Sync;

#[derive(Clone)]
struct Handler {
    kind: CallKind,
    f: Arc<HandlerFn>,
    /// Largest request message the handler is given (see
    /// [`Router::max_request_size`]).
    max_request: usize,
    /// Metric handles under the name it was registered with.
    metrics: Arc<MethodMetrics>,
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
    /// The level of each call's log line.
    call_log: CallLog,
    /// Shared by every call's handler task (no copy per call).
    interceptors: Interceptors,
    /// Those of them that observe messages.
    watchers: Interceptors,
    /// Message types of the methods, for the HTTP protocols' JSON codec.
    descriptors: Option<Arc<prost_reflect::DescriptorPool>>,
}

/// The level of the one log line each served call writes (target
/// `zrpc_async::router`): method, code, status message, duration, peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CallLog {
    /// `DEBUG` (the default: a busy server's calls are not its log).
    #[default]
    Debug,
    /// `INFO`.
    Info,
}

/// A layer around every call of a [`Router`] (added with
/// [`Router::interceptor`]), whatever carried the call (zrpc.v1, legacy,
/// gRPC, gRPC-Web, Connect): it sees the call's context and metadata, may
/// refuse the call, set response headers and trailers, observe each message
/// and the final status, and time the call. Every method has a default that
/// does nothing. [`Router::intercept`] is the common case: a check before
/// the handler.
///
/// Order: `start` runs in the order the interceptors were added (the first
/// refusal ends the call; the later ones and the handler never run), `end`
/// in the reverse order. An interceptor that panics ends its call with
/// `INTERNAL`; the connection and its other calls go on.
pub trait Interceptor: Send + Sync + 'static {
    /// Before the handler: `Err(status)` ends the call with it. It may set
    /// response headers ([`CallContext::set_headers`]) and trailers.
    fn start(&self, ctx: &CallContext) -> Result<(), Status> {
        let _ = ctx;
        Ok(())
    }

    /// True for an interceptor that observes messages: only then are
    /// [`request`](Self::request) and [`response`](Self::response) called,
    /// so the others cost nothing per message. Default `false`.
    fn observes_messages(&self) -> bool {
        false
    }

    /// A request message the handler takes (`method` is the call's), if
    /// [`observes_messages`](Self::observes_messages).
    fn request(&self, method: &str, message: &Bytes) {
        let _ = (method, message);
    }

    /// A response message the handler sends, if
    /// [`observes_messages`](Self::observes_messages).
    fn response(&self, method: &str, message: &Bytes) {
        let _ = (method, message);
    }

    /// The call's end: the status it ends with (for a call that ended under
    /// its handler, the status it ended with: `CANCELLED`,
    /// `DEADLINE_EXCEEDED`, `UNAVAILABLE`), and its time since `start`. It
    /// may still set trailers (a call that ended under its handler sends
    /// none).
    fn end(&self, ctx: &CallContext, status: &Status, elapsed: std::time::Duration) {
        let _ = (ctx, status, elapsed);
    }
}

/// [`Router::intercept`]'s check, as an interceptor.
struct Check<F>(F);

impl<F> Interceptor for Check<F>
where
    F: Fn(&CallContext) -> Result<(), Status> + Send + Sync + 'static,
{
    fn start(&self, ctx: &CallContext) -> Result<(), Status> {
        (self.0)(ctx)
    }
}

/// The interceptors of a router, shared by every call (no copy per call).
pub(crate) type Interceptors = Arc<Vec<Arc<dyn Interceptor>>>;

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
        let metrics = Arc::new(MethodMetrics::new(name));
        let handler = Handler {
            kind,
            f,
            metrics,
            max_request: usize::MAX,
        };
        self.methods.insert(name.to_owned(), handler);
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
    pub fn intercept<F>(self, f: F) -> Self
    where
        F: Fn(&CallContext) -> Result<(), Status> + Send + Sync + 'static,
    {
        self.interceptor(Check(f))
    }

    /// Adds an [`Interceptor`] around every call of this router, after the
    /// ones added before (its `start` runs after theirs, its `end` before).
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        let interceptor: Arc<dyn Interceptor> = Arc::new(interceptor);
        if interceptor.observes_messages() {
            Arc::make_mut(&mut self.watchers).push(interceptor.clone());
        }
        Arc::make_mut(&mut self.interceptors).push(interceptor);
        self
    }

    /// Bounds the request messages of `method` (registered before) to
    /// `bytes`: a larger one ends the call with `RESOURCE_EXHAUSTED` before
    /// the handler sees it. Received messages count against the server's
    /// receive budget only until a handler reads them, so a method whose
    /// handler keeps its request for a long stream (a watch, a
    /// subscription) should take small requests only. Default: the
    /// connection's `max_message_size` (4 MiB). Methods not registered
    /// are ignored.
    pub fn max_request_size(mut self, method: &str, bytes: usize) -> Self {
        if let Some(h) = self.methods.get_mut(method) {
            h.max_request = bytes;
        }
        self
    }

    /// Registers every method of a service.
    pub fn service(self, service: impl Service) -> Self {
        service.register(self)
    }

    /// Adds the message types of methods from a serialized
    /// `FileDescriptorSet` (what `zrpc-build` compiled: each
    /// `include_proto!` module's `FILE_DESCRIPTOR_SET`, the set the
    /// reflection service serves), so gRPC-Web, Connect and gRPC clients
    /// may call those methods with JSON messages (`application/json`,
    /// `application/connect+json`, `application/grpc+json`); handlers still
    /// see protobuf bytes. Methods without descriptors answer JSON requests
    /// `415` (Connect unary) or `UNIMPLEMENTED`. Can be called more than
    /// once (the sets are merged).
    pub fn descriptors(
        mut self,
        descriptor_set: &[u8],
    ) -> Result<Self, prost_reflect::DescriptorError> {
        let mut pool = self.descriptors.as_deref().cloned().unwrap_or_default();
        pool.decode_file_descriptor_set(descriptor_set)?;
        self.descriptors = Some(Arc::new(pool));
        Ok(self)
    }

    /// The JSON codec of `method` (`pkg.Service/Method`), when its
    /// descriptors were given.
    pub(crate) fn json_codec(&self, method: &str) -> Option<crate::http::json::JsonCodec> {
        let (service, name) = method.split_once('/')?;
        let m = self
            .descriptors
            .as_ref()?
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == name)?;
        Some(crate::http::json::JsonCodec {
            input: m.input(),
            output: m.output(),
        })
    }

    /// Names of the registered methods.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// Sets the level of each call's log line (see [`CallLog`]).
    pub fn log_calls_at(mut self, level: CallLog) -> Self {
        self.call_log = level;
        self
    }

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

    /// The handler for a call: the exact name, or for legacy calls the
    /// first part of a dotted `service.method` name.
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
        // A legacy call is one request and streamed replies (server
        // streaming): a method that reads a stream of requests cannot be
        // expressed, and is refused rather than run with one message.
        Some(h) if !compatible(call.kind, h.kind) => Some(Status::new(
            Code::Unimplemented,
            match mode {
                Mode::V1 => format!(
                    "method {} is {:?}, called as {:?}",
                    call.method, h.kind, call.kind
                ),
                Mode::Legacy => format!(
                    "method {} is {:?}: the legacy format carries one request (use zrpc.v1)",
                    call.method, h.kind
                ),
            },
        )),
        Some(_) => None,
    };
    if let Some(status) = refusal {
        tracing::debug!(method = %call.method, status = %status, "call refused");
        handler
            .as_ref()
            .map_or(MethodMetrics::unknown(), |h| &h.metrics)
            .finished_only(status.code());
        shared.act(|g| {
            let _ = g.conn.finish(call.id, status, Metadata::new());
            g.remove_slot(call.id);
        });
        return None;
    }
    let handler = handler?;
    let route = Route {
        handler,
        interceptors: router
            .filter(|r| !r.interceptors.is_empty())
            .map(|r| r.interceptors.clone()),
        watchers: router
            .filter(|r| !r.watchers.is_empty())
            .map(|r| r.watchers.clone()),
        call_log: router.map_or(CallLog::Debug, |r| r.call_log),
    };
    Some(Box::pin(run_handler(route, call, shared.clone())))
}

/// A handler found for a call, with what runs around it (interceptors, the
/// log line): the same for every transport.
pub(crate) struct Route {
    handler: Handler,
    interceptors: Option<Interceptors>,
    /// The interceptors that observe messages (they go with the call's I/O).
    watchers: Option<Interceptors>,
    call_log: CallLog,
}

impl Route {
    /// The handler's call kind.
    pub(crate) fn kind(&self) -> CallKind {
        self.handler.kind
    }

    /// The handler's bound on one request message.
    pub(crate) fn max_request(&self) -> usize {
        self.handler.max_request
    }
}

impl Router {
    /// The route of a zrpc.v1-style method name (`pkg.Service/Method`).
    pub(crate) fn route(&self, method: &str) -> Option<Route> {
        let handler = self.methods.get(method)?.clone();
        Some(Route {
            handler,
            interceptors: (!self.interceptors.is_empty()).then(|| self.interceptors.clone()),
            watchers: (!self.watchers.is_empty()).then(|| self.watchers.clone()),
            call_log: self.call_log,
        })
    }
}

/// Counts a call refused before any handler (unknown method).
pub(crate) fn refused_unknown(code: Code) {
    MethodMetrics::unknown().finished_only(code);
}

async fn run_handler(route: Route, call: IncomingCall, shared: Arc<Shared>) {
    let info = CallInfo::new(
        call.id,
        call.method,
        call.kind,
        call.metadata,
        call.deadline,
        CallIo::Ws(shared.clone()),
    );
    let mut reqs = RequestStream {
        from: Requests::Ws {
            id: call.id,
            shared: shared.clone(),
            local: VecDeque::new(),
        },
        max: route.handler.max_request,
        method: info.method.clone(),
        interceptors: None,
        sizes: None,
    };
    let ctx = prepare(&route, info, &mut reqs);
    let (status, trailers) = run(route, ctx, reqs).await;
    shared.act(|g| {
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
        // Routed before the slot goes: the end wakes anyone still waiting
        // on it (a clone of the context in a task of the handler's own).
        g.pump_events();
        g.remove_slot(call.id);
    });
}

/// The span of one served call, at the level of its log line, a root
/// (an interceptor may give it a remote parent before it is entered).
fn call_span(level: CallLog, ctx: &CallInfo) -> tracing::Span {
    macro_rules! span {
        ($level:ident) => {
            tracing::$level!(
                parent: None,
                "call",
                otel.name = ctx.method.as_str(),
                otel.kind = "server",
                rpc.system = "zrpc",
                rpc.method = ctx.method.as_str(),
                rpc.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
                rpc.request.bytes = tracing::field::Empty,
                rpc.response.bytes = tracing::field::Empty,
                peer = tracing::field::Empty,
            )
        };
    }
    let span = match level {
        CallLog::Debug => span!(debug_span),
        CallLog::Info => span!(info_span),
    };
    if !span.is_disabled()
        && let Some(peer) = ctx.peer_addr()
    {
        span.record("peer", tracing::field::display(peer));
    }
    span
}

/// Completes a call's description for its route (the interceptors that
/// watch messages, the span, byte counts when the span is wanted) and
/// shares it. Done before [`run`], so the call's task holds one pointer
/// for it rather than the whole description.
pub(crate) fn prepare(route: &Route, mut info: CallInfo, reqs: &mut RequestStream) -> CallContext {
    // Only the interceptors that observe messages go with the call's I/O.
    info.interceptors = route.watchers.clone();
    reqs.interceptors = route.watchers.clone();
    info.span = call_span(route.call_log, &info);
    if !info.span.is_disabled() {
        info.sizes = Some(Arc::default());
        reqs.sizes = info.sizes.clone();
    }
    CallContext {
        info: Arc::new(info),
    }
}

/// Runs a call's handler to its end, whatever carried the call:
/// interceptors, the handler raced against the call's end (cancel,
/// deadline, connection lost), panics caught, metrics, the log line.
/// Returns the status to end the call with (`None`: it ended under the
/// handler) and the trailers.
pub(crate) async fn run(
    route: Route,
    ctx: CallContext,
    reqs: RequestStream,
) -> (Option<Status>, Metadata) {
    let sink = ResponseSink::new(ctx.clone());
    let started = std::time::Instant::now();
    let metrics = route.handler.metrics.clone();
    metrics.started();
    // Interceptors start in order; one that panics ends the call INTERNAL.
    let checked = route.interceptors.as_ref().map_or(Ok(()), |list| {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            list.iter().try_for_each(|i| i.start(&ctx))
        }))
        .unwrap_or_else(|_| Err(Status::new(Code::Internal, "an interceptor panicked")))
    });
    let fut = match checked {
        Ok(()) => (route.handler.f)(ctx.clone(), reqs, sink),
        Err(status) => Box::pin(std::future::ready(Err(status))),
    };
    // The handler runs until it returns, panics, or the call ends under it
    // (cancel, deadline, connection loss): then it is dropped.
    let outcome = async { Some(AssertUnwindSafe(fut).catch_unwind().await) }
        .or(async {
            ctx.cancelled().await;
            None
        })
        .instrument(ctx.info.span.clone())
        .await;
    let status = match outcome {
        None => None,
        Some(Ok(Ok(()))) => Some(Status::ok()),
        Some(Ok(Err(status))) => Some(status),
        Some(Err(_)) => Some(Status::new(Code::Internal, "the handler panicked")),
    };
    let elapsed = started.elapsed();
    let ended = match (&route.interceptors, &status) {
        (None, _) => None,
        (Some(_), Some(s)) => Some(s.clone()),
        (Some(_), None) => Some(ctx.cancelled().await),
    };
    // The end runs in the call's span (no await from here on).
    let _entered = ctx.info.span.enter();
    if let (Some(list), Some(ended)) = (&route.interceptors, &ended) {
        // In reverse order; a panic here is the interceptor's alone.
        for i in list.iter().rev() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| i.end(&ctx, ended, elapsed)));
        }
    }
    ctx.flush_headers();
    let trailers = std::mem::take(&mut lock(&ctx.info.out).trailers);
    let code = status.as_ref().map_or(Code::Cancelled, Status::code);
    metrics.finished(code, elapsed.as_secs_f64());
    let message = status
        .as_ref()
        .map_or("the call ended before its handler", |s| s.message());
    let span = &ctx.info.span;
    if !span.is_disabled() {
        crate::outgoing::record_status(span, &Status::new(code, message));
        if let Some(sizes) = &ctx.info.sizes {
            use std::sync::atomic::Ordering::Relaxed;
            span.record("rpc.request.bytes", sizes.request.load(Relaxed));
            span.record("rpc.response.bytes", sizes.response.load(Relaxed));
        }
    }
    macro_rules! log_call {
        ($level:ident) => {
            tracing::$level!(
                method = ctx.method(),
                status = %code,
                status_message = message,
                duration_us = elapsed.as_micros() as u64,
                // Only formatted when the line is written.
                peer = %ctx.peer_addr().map_or_else(|| "-".to_owned(), |a| a.to_string()),
                "call"
            )
        };
    }
    match route.call_log {
        CallLog::Debug => log_call!(debug),
        CallLog::Info => log_call!(info),
    }
    (status, trailers)
}
