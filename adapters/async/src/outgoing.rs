//! What runs around every call a [`Client`](crate::Client) opens: the
//! [`ClientInterceptor`]s it was given and the call's `tracing` span, from
//! the call's start to its status.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_core::{CallKind, Code, Status};

use crate::options::CallOptions;

/// A layer around every call a [`Client`](crate::Client) (or a
/// [`Channel`](crate::Channel)'s connections) opens, added with
/// [`Client::with_interceptor`](crate::Client::with_interceptor) or
/// [`Channel::with_interceptor`](crate::Channel::with_interceptor): it may
/// add request headers, change the call's timeout or retry policy, or
/// refuse the call before it is sent; observe each message; and see the
/// call's status and duration. Every method has a default that does
/// nothing.
///
/// Order: `start` in the order the interceptors were added (the first
/// refusal ends the call, which is never sent), `end` in reverse. Through a
/// `Channel` they run once per attempt: a call sent again on another
/// connection runs them again. An interceptor that panics in `start` fails
/// the call with `INTERNAL`.
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Before the call is sent: `Err(status)` fails it with that status.
    fn start(&self, call: &mut OutgoingCall<'_>) -> Result<(), Status> {
        let _ = call;
        Ok(())
    }

    /// True for an interceptor that observes messages: only then are
    /// [`request`](Self::request) and [`response`](Self::response) called.
    /// Default `false`.
    fn observes_messages(&self) -> bool {
        false
    }

    /// A request message the call sends.
    fn request(&self, method: &str, message: &Bytes) {
        let _ = (method, message);
    }

    /// A response message the call received.
    fn response(&self, method: &str, message: &Bytes) {
        let _ = (method, message);
    }

    /// The call's end: its status (`CANCELLED` when the application
    /// dropped it before its end) and its time since `start`.
    fn end(&self, method: &str, status: &Status, elapsed: Duration) {
        let _ = (method, status, elapsed);
    }
}

/// A call about to be sent, as a [`ClientInterceptor`] sees it.
pub struct OutgoingCall<'a> {
    /// The method called (`pkg.Service/Method`).
    pub method: &'a str,
    /// The call's kind.
    pub kind: CallKind,
    /// The call's options: add request headers to `options.metadata`.
    pub options: &'a mut CallOptions,
    /// The call's `tracing` span (disabled when no subscriber wants it):
    /// what a tracing interceptor propagates in the request headers.
    pub span: &'a tracing::Span,
}

/// The interceptors of a client, shared by its clones and calls.
pub(crate) type ClientInterceptors = Arc<Vec<Arc<dyn ClientInterceptor>>>;

/// The span of one outgoing call (target `zrpc_async::client`, level
/// `DEBUG`), with the fields OpenTelemetry bridges read.
fn call_span(method: &str) -> tracing::Span {
    tracing::debug_span!(
        target: "zrpc_async::client",
        "call",
        otel.name = method,
        otel.kind = "client",
        rpc.system = "zrpc",
        rpc.method = method,
        rpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        rpc.request.bytes = tracing::field::Empty,
        rpc.response.bytes = tracing::field::Empty,
    )
}

/// Records a call's status on its span (server or client): the code, and
/// for a failure the OpenTelemetry error status and message.
pub(crate) fn record_status(span: &tracing::Span, status: &Status) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.status_code", status.code() as u32);
    if !status.is_ok() {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", status.message());
    }
}

/// What watches one outgoing call: present only when the client has
/// interceptors or a subscriber wants the call's span, so a plain call
/// pays nothing for it.
pub(crate) struct Watch {
    method: Box<str>,
    interceptors: Option<ClientInterceptors>,
    /// Some interceptor observes messages.
    observes: bool,
    span: tracing::Span,
    started: Instant,
    /// Bytes sent and received, for the span.
    sent: Cell<u64>,
    received: Cell<u64>,
}

impl Watch {
    /// Runs the interceptors' `start` for a call of `method` and opens its
    /// span; `None` when nothing watches it. `Err`: the call is refused.
    pub(crate) fn start(
        interceptors: Option<&ClientInterceptors>,
        method: &str,
        kind: CallKind,
        options: &mut CallOptions,
    ) -> Result<Option<Box<Watch>>, Status> {
        let span = call_span(method);
        if interceptors.is_none() && span.is_disabled() {
            return Ok(None);
        }
        if let Some(list) = interceptors {
            let mut call = OutgoingCall {
                method,
                kind,
                options,
                span: &span,
            };
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                list.iter().try_for_each(|i| i.start(&mut call))
            }))
            .unwrap_or_else(|_| Err(Status::new(Code::Internal, "an interceptor panicked")))
            .inspect_err(|st| record_status(&span, st))?;
        }
        Ok(Some(Box::new(Watch {
            method: method.into(),
            observes: interceptors.is_some_and(|l| l.iter().any(|i| i.observes_messages())),
            interceptors: interceptors.cloned(),
            span,
            started: Instant::now(),
            sent: Cell::new(0),
            received: Cell::new(0),
        })))
    }

    /// A request message the call sends.
    pub(crate) fn request(&self, message: &Bytes) {
        self.sent.set(self.sent.get() + message.len() as u64);
        if let (true, Some(list)) = (self.observes, &self.interceptors) {
            list.iter().for_each(|i| i.request(&self.method, message));
        }
    }

    /// A response message the call received.
    pub(crate) fn response(&self, message: &Bytes) {
        self.received
            .set(self.received.get() + message.len() as u64);
        if let (true, Some(list)) = (self.observes, &self.interceptors) {
            list.iter().for_each(|i| i.response(&self.method, message));
        }
    }

    /// The call ended with `status`: the span records it and closes, the
    /// interceptors' `end` run in reverse order.
    pub(crate) fn end(self, status: &Status) {
        let elapsed = self.started.elapsed();
        record_status(&self.span, status);
        if !self.span.is_disabled() {
            self.span.record("rpc.request.bytes", self.sent.get());
            self.span.record("rpc.response.bytes", self.received.get());
        }
        let _entered = self.span.enter();
        tracing::debug!(
            target: "zrpc_async::client",
            status = %status.code(),
            status_message = status.message(),
            duration_us = elapsed.as_micros() as u64,
            "call"
        );
        if let Some(list) = &self.interceptors {
            for i in list.iter().rev() {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    i.end(&self.method, status, elapsed)
                }));
            }
        }
    }
}
