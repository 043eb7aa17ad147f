//! The calling side: a cheap-to-clone [`Client`] multiplexing calls over one
//! connection, and the [`Call`] handle of one call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_lite::future::poll_fn;
use zrpc_core::{CallKind, Code, Metadata, Status, StreamId, UserError};

use crate::options::CallOptions;
use crate::outgoing::{ClientInterceptor, ClientInterceptors, Watch};

use crate::call_io::{poll_end, poll_message, poll_send, poll_send_all};
use crate::conn::{Shared, now};

/// A connection to a zrpc server. Clones share the connection; calls are
/// multiplexed over it. When the last clone is dropped the connection
/// drains: calls in progress finish, then it closes.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Counts the application's handles (`None` for the client a handler
    /// gets from its context: that one does not own the connection).
    _handle: Option<Arc<Handle>>,
    /// What runs around each call (see [`Client::with_interceptor`]).
    interceptors: Option<ClientInterceptors>,
}

/// Why an attempt at a call failed, as a client that reconnects needs to
/// know it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The call never left this side (the connection was closed or
    /// draining when it was opened): safe to send elsewhere.
    NotSent(Status),
    /// This side refused the call (an invalid method name, metadata too
    /// large): no other connection would take it either.
    Refused(Status),
    /// The call was sent and ended with this status (which may say the peer
    /// never processed it: [`Status::is_not_processed`]).
    Ended(Status),
}

impl Failure {
    /// The status the application sees.
    pub(crate) fn into_status(self) -> Status {
        match self {
            Failure::NotSent(s) | Failure::Refused(s) | Failure::Ended(s) => s,
        }
    }
}

/// The last application handle of a connection drains it when dropped.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.act(|g| g.conn.go_away());
    }
}

impl Client {
    /// A client on a connection a handler is serving (it does not own it).
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            _handle: None,
            interceptors: None,
        }
    }

    /// A client with no connection: every call fails with `why`.
    pub(crate) fn detached(why: Status) -> Self {
        let conn = zrpc_core::Connection::new(
            zrpc_core::Side::Server,
            zrpc_core::Mode::V1,
            zrpc_core::Config::default(),
            crate::conn::now(),
        );
        let shared = Shared::new(conn, crate::conn::PeerInfo::default());
        shared.act(|g| g.closed = Some(why));
        Self::from_shared(shared)
    }

    /// The application's client of a connection it opened.
    pub(crate) fn owning(shared: Arc<Shared>) -> Self {
        Self {
            _handle: Some(Arc::new(Handle(shared.clone()))),
            shared,
            interceptors: None,
        }
    }

    /// This client with `interceptor` around each of its calls, after the
    /// ones added before (see [`ClientInterceptor`]). Other clones of the
    /// connection keep theirs.
    pub fn with_interceptor(mut self, interceptor: impl ClientInterceptor) -> Self {
        let list = self.interceptors.get_or_insert_with(Default::default);
        Arc::make_mut(list).push(Arc::new(interceptor));
        self
    }

    /// This client with `list` as its interceptors (a channel's, given to
    /// each of its connections).
    pub(crate) fn with_interceptors(mut self, list: Option<ClientInterceptors>) -> Self {
        self.interceptors = list;
        self
    }

    /// Opens a call of any kind. Waits for a stream slot when the server's
    /// concurrent call limit is reached.
    pub async fn call(
        &self,
        method: &str,
        kind: CallKind,
        opts: CallOptions,
    ) -> Result<Call, Status> {
        self.start(method, kind, opts, None)
            .await
            .map_err(Failure::into_status)
    }

    /// Opens a call and, given a request, sends it and half-closes, all
    /// under one lock and with one wake-up of the writer.
    pub(crate) async fn start(
        &self,
        method: &str,
        kind: CallKind,
        mut opts: CallOptions,
        mut request: Option<Bytes>,
    ) -> Result<Call, Failure> {
        let watch = Watch::start(self.interceptors.as_ref(), method, kind, &mut opts)
            .map_err(Failure::Refused)?;
        if let (Some(w), Some(req)) = (&watch, &request) {
            w.request(req);
        }
        // A call that is never sent ends its watch at once.
        let refused = |watch: Option<Box<Watch>>, st: Status| {
            if let Some(w) = watch {
                w.end(&st);
            }
            st
        };
        // A deadline already passed (a nested call of a call out of time):
        // nothing is sent.
        if opts.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Failure::Refused(refused(
                watch,
                Status::new(
                    Code::DeadlineExceeded,
                    "deadline exceeded before the call was sent",
                ),
            )));
        }
        let opened = poll_fn(|cx| {
            self.shared.act(|g| {
                if let Some(st) = &g.closed {
                    return Poll::Ready(Err(Failure::NotSent(st.clone())));
                }
                match g.conn.open_call(now(), method, kind, opts.open_options()) {
                    Ok(id) => {
                        g.add_slot(id);
                        let sent = match request.take() {
                            None => Ok(()),
                            // A new call always has credit for its first message.
                            Some(req) => g.conn.send(id, req).and_then(|()| g.conn.close_send(id)),
                        };
                        Poll::Ready(Ok((id, sent.map_err(|e| g.status_of(id, e)))))
                    }
                    Err(UserError::StreamLimit) => {
                        g.open_wakers.push(cx.waker().clone());
                        Poll::Pending
                    }
                    Err(e @ (UserError::Draining | UserError::ConnectionClosed)) => {
                        Poll::Ready(Err(Failure::NotSent(g.status_of(StreamId(0), e))))
                    }
                    Err(e) => Poll::Ready(Err(Failure::Refused(g.status_of(StreamId(0), e)))),
                }
            })
        })
        .await;
        let (id, sent) = match opened {
            Ok(opened) => opened,
            Err(Failure::NotSent(st)) => return Err(Failure::NotSent(refused(watch, st))),
            Err(f) => return Err(Failure::Refused(refused(watch, f.into_status()))),
        };
        let call = Call {
            id,
            shared: self.shared.clone(),
            local: VecDeque::new(),
            watch,
        };
        sent.map_err(Failure::Ended)?; // on failure, dropping the call cancels it
        Ok(call)
    }

    /// A unary call: one request, one response.
    pub async fn unary(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Status> {
        self.unary_attempt(method, request, opts)
            .await
            .map_err(Failure::into_status)
    }

    /// One attempt at a unary call, saying whether it left this side.
    pub(crate) async fn unary_attempt(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Failure> {
        let mut call = self
            .start(method, CallKind::Unary, opts, Some(request))
            .await?;
        let resp = call
            .message()
            .await
            .map_err(Failure::Ended)?
            .ok_or_else(|| {
                Failure::Ended(Status::new(
                    Code::Internal,
                    "the call ended without a response",
                ))
            })?;
        call.finish().await.map_err(Failure::Ended)?;
        Ok(resp)
    }

    /// A server-streaming call: sends the request; read the responses with
    /// [`Call::message`].
    pub async fn server_streaming(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Call, Status> {
        self.server_streaming_attempt(method, request, opts)
            .await
            .map_err(Failure::into_status)
    }

    /// Opens a server-streaming call, saying whether it left this side.
    pub(crate) async fn server_streaming_attempt(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Call, Failure> {
        self.start(method, CallKind::ServerStreaming, opts, Some(request))
            .await
    }

    /// A client-streaming call: send requests, then [`Call::close_send`] and
    /// read the one response with [`Call::message`].
    pub async fn client_streaming(&self, method: &str, opts: CallOptions) -> Result<Call, Status> {
        self.call(method, CallKind::ClientStreaming, opts).await
    }

    /// A bidirectional call.
    pub async fn bidi(&self, method: &str, opts: CallOptions) -> Result<Call, Status> {
        self.call(method, CallKind::Bidi, opts).await
    }

    /// Drains the connection: no new calls (in either direction); it
    /// closes once the running calls have ended. Dropping the last clone
    /// does the same.
    pub fn drain(&self) {
        self.shared.act(|g| g.conn.go_away());
    }

    /// Resolves once the connection is over.
    pub async fn closed(&self) {
        self.shared.closed().await
    }

    /// Drains the connection and resolves once it is over and its close has
    /// been written: the server sees an ordinary close, not a reset, even
    /// when the program exits next. Running calls finish first; bound the
    /// wait with a timeout of your own if they may not.
    pub async fn close(&self) {
        self.drain();
        self.shared.finished().await
    }

    /// True once the connection is over.
    pub fn is_closed(&self) -> bool {
        self.shared
            .read(|g| g.closed.is_some() || g.conn.is_closed())
    }

    /// True once either side started draining (new calls fail).
    pub fn is_draining(&self) -> bool {
        self.shared.read(|g| g.conn.is_draining())
    }

    /// Resolves once no new call can be opened on this connection: the
    /// server began draining (GOAWAY) or the connection is over. A client
    /// that keeps a connection open for its application
    /// ([`Channel`](crate::Channel)) waits on this to open the next one.
    pub async fn draining(&self) {
        poll_fn(|cx| {
            self.shared.act(|g| {
                if g.closed.is_some() || g.conn.is_closed() || g.conn.is_draining() {
                    return Poll::Ready(());
                }
                if !g.drain_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    g.drain_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            })
        })
        .await
    }

    /// A handle on the same connection that does not keep it open (the
    /// connection drains when the application's handles are gone).
    pub(crate) fn weak(&self) -> Client {
        Client::from_shared(self.shared.clone())
    }

    /// True when both handles are on one connection.
    pub(crate) fn same_connection(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// One call in progress. Dropping it before the call ended cancels the call
/// (the responder sees `CANCELLED`).
pub struct Call {
    id: StreamId,
    shared: Arc<Shared>,
    /// Messages already taken from the connection, in order.
    local: VecDeque<Bytes>,
    /// Interceptors and span, when the call has any.
    watch: Option<Box<Watch>>,
}

impl Call {
    /// The call's id on its connection.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Sends one request message, waiting for the server's credit.
    pub async fn send(&mut self, msg: Bytes) -> Result<(), Status> {
        if let Some(w) = &self.watch {
            w.request(&msg);
        }
        let mut msg = Some(msg);
        poll_fn(|cx| poll_send(&self.shared, self.id, &mut msg, None, cx)).await
    }

    /// Sends every request message of `msgs`, in order, as the server's
    /// credit allows: what a loop of [`send`](Self::send) does, with many
    /// messages queued under one lock of the connection (see
    /// `ResponseSink::send_all`). Does not half-close.
    pub async fn send_all<I>(&mut self, msgs: I) -> Result<(), Status>
    where
        I: IntoIterator<Item = Bytes>,
    {
        let mut msgs = msgs.into_iter();
        let watch = self.watch.as_deref();
        let mut next = || {
            let m = msgs.next()?;
            if let Some(w) = watch {
                w.request(&m);
            }
            Some(m)
        };
        let mut held = None;
        let (shared, id) = (&self.shared, self.id);
        poll_fn(|cx| poll_send_all(shared, id, &mut held, &mut next, cx)).await
    }

    /// Half-closes: no more request messages. A no-op on a call that has
    /// already ended (the server may answer before the half-close is sent).
    pub fn close_send(&mut self) -> Result<(), Status> {
        let id = self.id;
        self.shared.act(|g| match g.conn.close_send(id) {
            Ok(()) => Ok(()),
            Err(UserError::UnknownCall) if g.slots.get(&id).is_some_and(|s| s.is_ended()) => Ok(()),
            Err(e) => Err(g.status_of(id, e)),
        })
    }

    /// The next response message; `Ok(None)` after the last one of a call
    /// that ended OK; `Err(status)` for a call that failed.
    pub fn message(&mut self) -> impl Future<Output = Result<Option<Bytes>, Status>> + '_ {
        // One future, the watch (interceptors, span) out of line: a plain
        // call's receive loop is what it was without them.
        poll_fn(move |cx| {
            let next = std::task::ready!(poll_message(&self.shared, self.id, &mut self.local, cx));
            if self.watch.is_some() {
                self.observe(&next);
            }
            Poll::Ready(next)
        })
    }

    /// What the watch sees of a receive: a message, or the call's end.
    #[cold]
    #[inline(never)]
    fn observe(&mut self, next: &Result<Option<Bytes>, Status>) {
        match next {
            Ok(Some(m)) => {
                if let Some(w) = &self.watch {
                    w.response(m);
                }
            }
            Ok(None) => {
                if let Some(st) = self.ended_with() {
                    self.end_watch(&st);
                }
            }
            Err(st) => self.end_watch(st),
        }
    }

    /// The call's status once it ended.
    fn ended_with(&self) -> Option<Status> {
        self.shared.read(|g| {
            g.slots
                .get(&self.id)
                .and_then(|s| s.end().map(|(st, _)| st.clone()))
        })
    }

    /// Ends the watch of the call (interceptors, span) with `status`, once.
    fn end_watch(&mut self, status: &Status) {
        if let Some(w) = self.watch.take() {
            w.end(status);
        }
    }

    /// The response headers (empty if the server sent none), once known.
    pub async fn headers(&mut self) -> Metadata {
        poll_fn(|cx| {
            self.shared.act(|g| match g.slots.get_mut(&self.id) {
                None => Poll::Ready(Metadata::new()),
                Some(s) => match &s.headers {
                    Some(h) => Poll::Ready(h.clone()),
                    None if !s.inbox.is_empty() || s.is_ended() => Poll::Ready(Metadata::new()),
                    None => {
                        s.recv_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                },
            })
        })
        .await
    }

    /// Response headers arrived.
    pub(crate) fn has_headers(&self) -> bool {
        self.shared
            .read(|g| g.slots.get(&self.id).is_some_and(|s| s.headers.is_some()))
    }

    /// Where this server stream starts again if it is resumed
    /// (PROTOCOL.md 5.6): the resume cursor of the last message received,
    /// or, before any, the one of the response headers. `None` when the
    /// server stamps no cursors (the call cannot be resumed), or once a
    /// message came without one. Every message received is delivered
    /// before the call's error, so after an error this is the cursor of
    /// the last message [`message`](Self::message) returned.
    pub fn resume_cursor(&self) -> Option<Bytes> {
        self.shared
            .read(|g| g.slots.get(&self.id).and_then(|s| s.cursor.clone()))
    }

    /// Waits for the end of the call; returns the trailers when it ended
    /// OK. Unread messages are discarded.
    pub async fn finish(mut self) -> Result<Metadata, Status> {
        let (status, trailers) = poll_fn(|cx| poll_end(&self.shared, self.id, cx)).await;
        self.end_watch(&status);
        if status.is_ok() {
            Ok(trailers)
        } else {
            Err(status)
        }
    }

    /// Cancels the call (same as dropping it).
    pub fn cancel(self) {}
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.watch.is_some() {
            let status = self
                .ended_with()
                .unwrap_or_else(|| Status::new(Code::Cancelled, "cancelled by the caller"));
            self.end_watch(&status);
        }
        let id = self.id;
        self.shared.act(|g| {
            if !g.slots.get(&id).is_none_or(|s| s.is_ended()) {
                let _ = g.conn.cancel(id);
            }
            if let Some(mut slot) = g.slots.remove(&id) {
                // Return the credit of messages nobody will read.
                for m in slot.inbox.drain(..) {
                    g.conn.consume(id, m.len());
                }
                g.recycle(slot);
            }
        });
    }
}
