//! What a handler gets: its [`CallContext`], the [`RequestStream`] of
//! request messages and the [`ResponseSink`] for responses.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::poll_fn;
use zrpc_core::{CallKind, Metadata, Method, Status, StreamId};

use crate::call_io::{poll_end, poll_message, poll_send, poll_send_all};
use crate::client::Client;
use crate::conn::Shared;
use crate::http::call::{HttpCall, HttpRequests};
use crate::options::CallOptions;
use crate::router::Interceptors;
use crate::signal::lock;

/// Where a call's I/O goes: its zrpc connection, or the HTTP request it
/// came as (gRPC, gRPC-Web, Connect).
#[derive(Clone)]
pub(crate) enum CallIo {
    Ws(Arc<Shared>),
    Http(Arc<HttpCall>),
}

/// Everything a handler may want to know about its call, and the response
/// headers and trailers it may set. Cheap to clone: one pointer, shared by
/// every clone (a handler's future holds one pointer for it, not the
/// whole call's description).
#[derive(Clone)]
pub struct CallContext {
    pub(crate) info: Arc<CallInfo>,
}

/// What a [`CallContext`] points to: built by whatever carried the call,
/// completed by the router (interceptors, span), then shared.
pub(crate) struct CallInfo {
    pub(crate) id: StreamId,
    pub(crate) method: Method,
    pub(crate) kind: CallKind,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) io: CallIo,
    pub(crate) out: Mutex<ResponseMeta>,
    /// The router's interceptors (they see each response message).
    pub(crate) interceptors: Option<Interceptors>,
    /// The call's `tracing` span.
    pub(crate) span: tracing::Span,
    /// Bytes each way, counted only while a subscriber wants the span.
    pub(crate) sizes: Option<Arc<Sizes>>,
}

/// The request and response bytes of a call, for its span.
#[derive(Default)]
pub(crate) struct Sizes {
    pub(crate) request: std::sync::atomic::AtomicU64,
    pub(crate) response: std::sync::atomic::AtomicU64,
}

impl Sizes {
    pub(crate) fn count(counter: &std::sync::atomic::AtomicU64, message: &Bytes) {
        counter.fetch_add(message.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Default)]
pub(crate) struct ResponseMeta {
    pub(crate) headers: Option<Metadata>,
    pub(crate) headers_sent: bool,
    pub(crate) trailers: Metadata,
}

impl CallInfo {
    /// A call's description before the router completes it.
    pub(crate) fn new(
        id: StreamId,
        method: Method,
        kind: CallKind,
        metadata: Metadata,
        deadline: Option<Instant>,
        io: CallIo,
    ) -> Self {
        Self {
            id,
            method,
            kind,
            metadata,
            deadline,
            io,
            out: Mutex::default(),
            interceptors: None,
            span: tracing::Span::none(),
            sizes: None,
        }
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.io {
            CallIo::Ws(shared) => shared.peer,
            CallIo::Http(call) => call.peer,
        }
    }
}

impl CallContext {
    /// The method called, as sent (for legacy calls, the full dotted name).
    pub fn method(&self) -> &str {
        self.info.method.as_str()
    }

    /// The call kind the caller declared.
    pub fn kind(&self) -> CallKind {
        self.info.kind
    }

    /// Request headers.
    pub fn metadata(&self) -> &Metadata {
        &self.info.metadata
    }

    /// When the call expires, if the caller set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.info.deadline
    }

    /// The call's `tracing` span (target `zrpc_async::router`, at the
    /// router's [`CallLog`](crate::CallLog) level; disabled when no
    /// subscriber wants it): the handler runs in it, and calls it makes
    /// through a [`Client`](crate::Client) are its children. Its fields
    /// follow OpenTelemetry's names (`otel.name`, `otel.kind`,
    /// `rpc.method`, `rpc.status_code`, `otel.status_code`), so a bridge
    /// such as `tracing-opentelemetry` exports it as a server span; an
    /// interceptor's `start` may give it a remote parent (the caller's
    /// `traceparent`), as the span is entered only after it.
    pub fn span(&self) -> &tracing::Span {
        &self.info.span
    }

    /// The peer's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.info.peer_addr()
    }

    /// The identity the server's authentication hook gave this connection
    /// (see `Server::authenticate`; for an HTTP call, its request), if it
    /// is a `T`.
    pub fn identity<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        let identity = match &self.info.io {
            CallIo::Ws(shared) => shared.identity.as_ref(),
            CallIo::Http(call) => call.identity.as_ref(),
        };
        identity?.downcast_ref::<T>()
    }

    /// The protocol the call came in: `"zrpc.v1"`, `"legacy"`, `"grpc"`,
    /// `"grpc-web"` or `"connect"`.
    pub fn protocol(&self) -> &'static str {
        match &self.info.io {
            CallIo::Ws(shared) => match shared.mode() {
                zrpc_core::Mode::V1 => zrpc_core::SUBPROTOCOL_V1,
                zrpc_core::Mode::Legacy => "legacy",
            },
            CallIo::Http(call) => call.protocol.name(),
        }
    }

    /// The call's id on its connection.
    pub fn id(&self) -> StreamId {
        self.info.id
    }

    /// Sets the response headers, sent before the first response message
    /// (or with the end of the call). Ignored once sent.
    pub fn set_headers(&self, headers: Metadata) {
        let mut o = lock(&self.info.out);
        if !o.headers_sent {
            o.headers = Some(headers);
        }
    }

    /// Sets the trailers sent with the final status.
    pub fn set_trailers(&self, trailers: Metadata) {
        lock(&self.info.out).trailers = trailers;
    }

    /// Resolves when the call ends before the handler finishes it:
    /// cancelled by the caller, deadline exceeded, or connection lost.
    pub async fn cancelled(&self) -> Status {
        match &self.info.io {
            CallIo::Ws(shared) => poll_fn(|cx| poll_end(shared, self.info.id, cx)).await.0,
            CallIo::Http(call) => poll_fn(|cx| call.poll_end(cx)).await,
        }
    }

    /// True once the call has ended (see [`cancelled`](Self::cancelled)).
    pub fn is_cancelled(&self) -> bool {
        match &self.info.io {
            CallIo::Ws(shared) => {
                shared.read(|g| g.slots.get(&self.info.id).is_none_or(|s| s.is_ended()))
            }
            CallIo::Http(call) => call.is_ended(),
        }
    }

    /// The options for a call this handler makes on its caller's behalf (to
    /// another service, or back to the caller with [`client`](Self::client)):
    /// the time left of this call's deadline, so the nested call ends no
    /// later than this one. Its cancellation follows too: when this call is
    /// cancelled, times out or loses its connection, the handler is dropped,
    /// and with it every nested call it is awaiting (they are reset). A
    /// nested call made after the deadline passed fails at once with
    /// `DEADLINE_EXCEEDED` and is never sent.
    ///
    /// ```no_run
    /// # use zrpc_async::{Bytes, CallContext, Client, Status};
    /// # async fn handler(ctx: CallContext, req: Bytes, people: Client) -> Result<Bytes, Status> {
    /// let found = people.unary("people.People/GetPerson", req, ctx.child_options()).await?;
    /// # Ok(found) }
    /// ```
    pub fn child_options(&self) -> CallOptions {
        CallOptions {
            timeout: self
                .info
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now())),
            ..CallOptions::default()
        }
    }

    /// A client on the same connection, to call methods the peer registered
    /// (server-initiated calls). A call that came over HTTP has no such
    /// connection: every call of this client then fails `UNIMPLEMENTED`.
    pub fn client(&self) -> Client {
        match &self.info.io {
            CallIo::Ws(shared) => Client::from_shared(shared.clone()),
            CallIo::Http(_) => Client::detached(Status::unimplemented(
                "server-initiated calls need a zrpc.v1 connection; this call came over HTTP",
            )),
        }
    }

    /// Where the caller resumes this server stream (PROTOCOL.md 5.6): the
    /// cursor of the last message it received, which the handler stamped
    /// with [`ResponseSink::send_with_cursor`]; `None` for a call that
    /// starts afresh. It comes from the caller: check it as any input.
    pub fn resume_cursor(&self) -> Option<&Bytes> {
        self.info.metadata.get(zrpc_core::CURSOR_KEY)
    }

    /// Sends the response headers now if they were set and not yet sent.
    pub(crate) fn flush_headers(&self) {
        let _ = self.flush_headers_checked();
    }

    /// [`flush_headers`](Self::flush_headers), with the error the
    /// connection gave them (a cursor refused).
    pub(crate) fn flush_headers_checked(&self) -> Result<(), Status> {
        let headers = {
            let mut o = lock(&self.info.out);
            if o.headers_sent {
                return Ok(());
            }
            o.headers_sent = true;
            o.headers.take()
        };
        match &self.info.io {
            CallIo::Ws(shared) => {
                if let Some(h) = headers {
                    return shared.act(|g| {
                        g.conn
                            .send_headers(self.info.id, h)
                            .map_err(|e| g.status_of(self.info.id, e))
                    });
                }
            }
            CallIo::Http(call) => {
                let headers = headers.map(|mut h| {
                    h.remove(zrpc_core::CURSOR_KEY);
                    h
                });
                call.flush_headers(headers)
            }
        }
        Ok(())
    }
}

/// The request messages of a call, in order.
pub struct RequestStream {
    pub(crate) from: Requests,
    /// The method's bound on one request message.
    pub(crate) max: usize,
    /// The call's method and the router's interceptors (they see each
    /// request message).
    pub(crate) method: Method,
    pub(crate) interceptors: Option<Interceptors>,
    /// The call's byte counts, when its span is wanted.
    pub(crate) sizes: Option<Arc<Sizes>>,
}

/// Where request messages come from.
pub(crate) enum Requests {
    Ws {
        id: StreamId,
        shared: Arc<Shared>,
        /// Messages already taken from the connection, in order.
        local: VecDeque<Bytes>,
    },
    /// Boxed: the request body and its decoder are larger than a
    /// connection's handle.
    Http(Box<HttpRequests>),
}

impl RequestStream {
    /// The next request message; `Ok(None)` once the caller half-closed;
    /// `Err` if the call ended (cancelled, deadline, connection lost), or
    /// `RESOURCE_EXHAUSTED` for a message over the method's
    /// [`max_request_size`](crate::Router::max_request_size).
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        let next = match &mut self.from {
            Requests::Ws { id, shared, local } => {
                poll_fn(|cx| poll_message(shared, *id, local, cx)).await?
            }
            Requests::Http(http) => poll_fn(|cx| http.poll_message(cx)).await?,
        };
        match next {
            Some(m) if m.len() > self.max => Err(Status::resource_exhausted(format!(
                "request message of {} bytes is over this method's limit of {} bytes",
                m.len(),
                self.max
            ))),
            Some(m) => {
                if let Some(sizes) = &self.sizes {
                    Sizes::count(&sizes.request, &m);
                }
                if let Some(list) = &self.interceptors {
                    list.iter()
                        .for_each(|i| i.request(self.method.as_str(), &m));
                }
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }
}

/// Sends response messages; each send waits for the caller's credit, so a
/// slow reader slows the handler instead of filling memory.
pub struct ResponseSink {
    pub(crate) ctx: CallContext,
    /// What each send needs, held here rather than behind the context's
    /// pointer (one indirection less per message).
    id: StreamId,
    io: CallIo,
    watchers: Option<Interceptors>,
    sizes: Option<Arc<Sizes>>,
    /// Headers were flushed (on the first send): later sends skip the check.
    headers_flushed: bool,
}

impl ResponseSink {
    pub(crate) fn new(ctx: CallContext) -> Self {
        let info = &ctx.info;
        Self {
            id: info.id,
            io: info.io.clone(),
            watchers: info.interceptors.clone(),
            sizes: info.sizes.clone(),
            ctx,
            headers_flushed: false,
        }
    }

    /// Sends one response message. Fails with the call's status once it
    /// ended (for example `CANCELLED` when the caller went away).
    pub fn send(&mut self, msg: Bytes) -> impl Future<Output = Result<(), Status>> + '_ {
        self.send_at(msg, None)
    }

    /// Sends every message of `msgs`, in order, as the caller's credit
    /// allows: what a loop of [`send`](Self::send) does, with many
    /// messages queued under one lock of the connection instead of one
    /// each (a stream of small messages costs the server less per
    /// message). The iterator is pulled only as credit comes, so a slow
    /// reader still slows it. Fails with the call's status once it ended;
    /// the messages not yet taken are left in the iterator.
    ///
    /// ```no_run
    /// # use zrpc_async::{Bytes, ResponseSink, Status};
    /// # async fn handler(rows: Vec<Bytes>, mut sink: ResponseSink) -> Result<(), Status> {
    /// sink.send_all(rows).await
    /// # }
    /// ```
    pub async fn send_all<I>(&mut self, msgs: I) -> Result<(), Status>
    where
        I: IntoIterator<Item = Bytes>,
    {
        if !self.headers_flushed {
            self.ctx.flush_headers();
            self.headers_flushed = true;
        }
        let mut msgs = msgs.into_iter();
        let (sizes, watchers, method) = (&self.sizes, &self.watchers, self.ctx.method());
        // Byte counts and interceptors see each message as it is taken.
        let mut next = || {
            let m = msgs.next()?;
            if let Some(sizes) = sizes {
                Sizes::count(&sizes.response, &m);
            }
            if let Some(list) = watchers {
                list.iter().for_each(|i| i.response(method, &m));
            }
            Some(m)
        };
        let mut held = None;
        let (io, id) = (&self.io, self.id);
        poll_fn(|cx| match io {
            CallIo::Ws(shared) => poll_send_all(shared, id, &mut held, &mut next, cx),
            CallIo::Http(call) => loop {
                if held.is_none() {
                    held = next();
                    if held.is_none() {
                        return std::task::Poll::Ready(Ok(()));
                    }
                }
                std::task::ready!(call.poll_send(&mut held, cx))?;
            },
        })
        .await
    }

    /// Sends one response message of a server-streaming call with its
    /// resume cursor (at most 64 bytes by default, see
    /// `Config::max_cursor_size`): where the stream starts again after
    /// this message when the caller's connection is lost or drained. The
    /// caller's `Channel` then opens the call again on its next connection
    /// with the same request and this cursor in
    /// [`CallContext::resume_cursor`], so the handler continues after this
    /// message: no gap, no duplicate. A call that stamps cursors ends at
    /// once when the server drains, for its caller to resume it elsewhere.
    /// Callers that cannot resume (HTTP, legacy, peers that offered no
    /// cursors) get the message alone. Fails `FAILED_PRECONDITION` on a
    /// call that is not server-streaming, `RESOURCE_EXHAUSTED` for a cursor
    /// longer than the caller accepts.
    pub fn send_with_cursor(
        &mut self,
        msg: Bytes,
        cursor: Bytes,
    ) -> impl Future<Output = Result<(), Status>> + '_ {
        self.send_at(msg, Some(cursor))
    }

    /// Sends the response headers now with the stream's resume point
    /// before its first message (see
    /// [`send_with_cursor`](Self::send_with_cursor)): a stream that may
    /// wait long for its first message (a live feed) can be resumed from
    /// its start. Does nothing once the headers went out.
    pub fn start_at(&mut self, cursor: Bytes) -> Result<(), Status> {
        {
            let mut o = lock(&self.ctx.info.out);
            if o.headers_sent {
                return Ok(());
            }
            let mut headers = o.headers.take().unwrap_or_default();
            headers.remove(zrpc_core::CURSOR_KEY);
            headers
                .insert(zrpc_core::CURSOR_KEY, cursor)
                .map_err(|e| Status::internal(e.to_string()))?;
            o.headers = Some(headers);
        }
        self.headers_flushed = true;
        self.ctx.flush_headers_checked()
    }

    /// One send: the headers flushed first, then the message (and cursor)
    /// as the call's credit allows; one future, no async layer between.
    fn send_at(
        &mut self,
        msg: Bytes,
        cursor: Option<Bytes>,
    ) -> impl Future<Output = Result<(), Status>> + '_ {
        if !self.headers_flushed {
            self.ctx.flush_headers();
            self.headers_flushed = true;
        }
        if let Some(sizes) = &self.sizes {
            Sizes::count(&sizes.response, &msg);
        }
        if let Some(list) = &self.watchers {
            list.iter()
                .for_each(|i| i.response(self.ctx.method(), &msg));
        }
        let mut msg = Some(msg);
        let (io, id) = (&self.io, self.id);
        poll_fn(move |cx| match io {
            CallIo::Ws(shared) => poll_send(shared, id, &mut msg, cursor.as_ref(), cx),
            CallIo::Http(call) => call.poll_send(&mut msg, cx),
        })
    }
}
