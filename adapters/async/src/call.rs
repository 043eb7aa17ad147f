//! What a handler gets: its [`CallContext`], the [`RequestStream`] of
//! request messages and the [`ResponseSink`] for responses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::poll_fn;
use zrpc_core::{CallKind, Metadata, Method, Status, StreamId};

use crate::call_io::{poll_end, poll_message, poll_send};
use crate::client::Client;
use crate::conn::{Shared, Slot};
use crate::signal::lock;

/// Everything a handler may want to know about its call, and the response
/// headers and trailers it may set. Cheap to clone.
#[derive(Clone)]
pub struct CallContext {
    pub(crate) id: StreamId,
    pub(crate) method: Method,
    pub(crate) kind: CallKind,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Option<Instant>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) out: Arc<Mutex<ResponseMeta>>,
}

#[derive(Default)]
pub(crate) struct ResponseMeta {
    pub(crate) headers: Option<Metadata>,
    pub(crate) headers_sent: bool,
    pub(crate) trailers: Metadata,
}

impl CallContext {
    /// The method called, as sent (for legacy calls, the full dotted name).
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The call kind the caller declared.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// Request headers.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the call expires, if the caller set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The peer's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.peer
    }

    /// The identity the server's authentication hook gave this connection
    /// (see `Server::authenticate`), if it is a `T`.
    pub fn identity<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.shared.identity.as_ref()?.downcast_ref::<T>()
    }

    /// The call's id on its connection.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Sets the response headers, sent before the first response message
    /// (or with the end of the call). Ignored once sent.
    pub fn set_headers(&self, headers: Metadata) {
        let mut o = lock(&self.out);
        if !o.headers_sent {
            o.headers = Some(headers);
        }
    }

    /// Sets the trailers sent with the final status.
    pub fn set_trailers(&self, trailers: Metadata) {
        lock(&self.out).trailers = trailers;
    }

    /// Resolves when the call ends before the handler finishes it:
    /// cancelled by the caller, deadline exceeded, or connection lost.
    pub async fn cancelled(&self) -> Status {
        poll_fn(|cx| poll_end(&self.shared, self.id, cx)).await.0
    }

    /// True once the call has ended (see [`cancelled`](Self::cancelled)).
    pub fn is_cancelled(&self) -> bool {
        self.shared
            .lock()
            .slots
            .get(&self.id)
            .is_none_or(Slot::is_ended)
    }

    /// A client on the same connection, to call methods the peer registered
    /// (server-initiated calls).
    pub fn client(&self) -> Client {
        Client::from_shared(self.shared.clone())
    }

    /// Sends the response headers now if they were set and not yet sent.
    pub(crate) fn flush_headers(&self) {
        let headers = {
            let mut o = lock(&self.out);
            if o.headers_sent {
                return;
            }
            o.headers_sent = true;
            o.headers.take()
        };
        if let Some(h) = headers {
            let _ = self.shared.lock().conn.send_headers(self.id, h);
        }
    }
}

/// The request messages of a call, in order.
pub struct RequestStream {
    pub(crate) id: StreamId,
    pub(crate) shared: Arc<Shared>,
    /// Messages already taken from the connection, in order.
    pub(crate) local: VecDeque<Bytes>,
    /// The method's bound on one request message.
    pub(crate) max: usize,
}

impl RequestStream {
    /// The next request message; `Ok(None)` once the caller half-closed;
    /// `Err` if the call ended (cancelled, deadline, connection lost), or
    /// `RESOURCE_EXHAUSTED` for a message over the method's
    /// [`max_request_size`](crate::Router::max_request_size).
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        let next = poll_fn(|cx| poll_message(&self.shared, self.id, &mut self.local, cx)).await?;
        match next {
            Some(m) if m.len() > self.max => Err(Status::resource_exhausted(format!(
                "request message of {} bytes is over this method's limit of {} bytes",
                m.len(),
                self.max
            ))),
            other => Ok(other),
        }
    }
}

/// Sends response messages; each send waits for the caller's credit, so a
/// slow reader slows the handler instead of filling memory.
pub struct ResponseSink {
    pub(crate) ctx: CallContext,
    /// Headers were flushed (on the first send): later sends skip the check.
    pub(crate) headers_flushed: bool,
}

impl ResponseSink {
    /// Sends one response message. Fails with the call's status once it
    /// ended (for example `CANCELLED` when the caller went away).
    pub async fn send(&mut self, msg: Bytes) -> Result<(), Status> {
        if !self.headers_flushed {
            self.ctx.flush_headers();
            self.headers_flushed = true;
        }
        let mut msg = Some(msg);
        poll_fn(|cx| poll_send(&self.ctx.shared, self.ctx.id, &mut msg, cx)).await
    }
}
