//! # zrpc-otel
//!
//! OpenTelemetry for zrpc. zrpc gives every call a `tracing` span, on the
//! server (`CallContext::span`, target `zrpc_async::router`) and on the
//! client (target `zrpc_async::client`), with OpenTelemetry's field names;
//! `tracing-opentelemetry` turns them into OpenTelemetry spans. This crate
//! adds what crosses a hop:
//!
//! - [`TraceContext`], an interceptor for both sides: a client sends its
//!   call's span context as W3C `traceparent` / `tracestate` request
//!   headers; a server makes the caller's span the parent of its call's
//!   span. So a call through several zrpc services (or any service that
//!   speaks W3C trace context) is one trace.
//! - [`layer`]: the `tracing-opentelemetry` layer for a tracer provider,
//!   taking zrpc's call spans (at `DEBUG`) whatever the rest of the
//!   subscriber logs.
//! - With the `otlp` feature, [`otlp::tracer_provider`]: spans exported
//!   to an OpenTelemetry collector over OTLP/HTTP.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! use zrpc_otel::TraceContext;
//!
//! # fn demo(provider: opentelemetry_sdk::trace::SdkTracerProvider) {
//! tracing_subscriber::registry()
//!     .with(zrpc_otel::layer(&provider))
//!     .init();
//! // Servers take the caller's trace; clients pass theirs on.
//! let router = zrpc_async::Router::new().interceptor(TraceContext);
//! # let _ = router; }
//! # async fn call(client: zrpc_async::Client) {
//! let client = client.with_interceptor(TraceContext);
//! # }
//! ```
//!
//! Bad input: a `traceparent` that does not parse, or is longer than
//! [`MAX_TRACEPARENT`] bytes, is ignored (the call's span starts a new
//! trace); a `tracestate` longer than [`MAX_TRACESTATE`] bytes is dropped.
//! Neither fails the call.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;
use zrpc_async::{CallContext, ClientInterceptor, Interceptor, Metadata, OutgoingCall, Status};

#[cfg(feature = "otlp")]
pub mod otlp;

/// The request header of the caller's span (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";
/// The request header of vendor trace state (W3C Trace Context).
pub const TRACESTATE: &str = "tracestate";
/// The longest `traceparent` taken (a version-00 one is 55 bytes; later
/// versions may append fields).
pub const MAX_TRACEPARENT: usize = 256;
/// The longest `tracestate` taken (what W3C asks vendors to propagate at
/// least).
pub const MAX_TRACESTATE: usize = 512;

/// The W3C trace context interceptor, for both sides: add it to a router
/// ([`Router::interceptor`](zrpc_async::Router::interceptor)) and to
/// clients ([`Client::with_interceptor`](zrpc_async::Client::with_interceptor),
/// [`Channel::with_interceptor`](zrpc_async::Channel::with_interceptor)).
/// It does nothing without an OpenTelemetry layer in the subscriber.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContext;

impl Interceptor for TraceContext {
    fn start(&self, ctx: &CallContext) -> Result<(), Status> {
        if ctx.span().is_disabled() {
            return Ok(());
        }
        if let Some(parent) = extract(ctx.metadata()) {
            // Fails only without an OpenTelemetry layer: nothing to link.
            let _ = ctx.span().set_parent(parent);
        }
        Ok(())
    }
}

impl ClientInterceptor for TraceContext {
    fn start(&self, call: &mut OutgoingCall<'_>) -> Result<(), Status> {
        // The call's own span, or (when zrpc's client spans are filtered
        // out) the application's current one.
        let span = if call.span.is_disabled() {
            tracing::Span::current()
        } else {
            call.span.clone()
        };
        if span.is_disabled() {
            return Ok(());
        }
        inject(&span.context(), &mut call.options.metadata);
        Ok(())
    }
}

/// The remote parent a call's request headers carry, if any is valid.
pub fn extract(metadata: &Metadata) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::TraceContextExt;
    let traceparent = metadata.get_str(TRACEPARENT)?;
    if traceparent.len() > MAX_TRACEPARENT {
        return None;
    }
    let tracestate = metadata
        .get_str(TRACESTATE)
        .filter(|s| s.len() <= MAX_TRACESTATE);
    let carrier = Carrier {
        traceparent,
        tracestate,
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Writes `cx`'s span context into request headers (replacing any there).
pub fn inject(cx: &opentelemetry::Context, metadata: &mut Metadata) {
    TraceContextPropagator::new().inject_context(cx, &mut Headers(metadata));
}

/// The two headers a server reads, bounded before parsing.
struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// A call's request headers, as the propagator writes them.
struct Headers<'a>(&'a mut Metadata);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.remove(key);
        // Both keys are valid; a value over the metadata limit fails the
        // call when it is sent, with the limit named.
        let _ = self.0.insert(key, value);
    }
}

/// The `tracing-opentelemetry` layer exporting through `provider`: zrpc's
/// call spans (`DEBUG`, targets `zrpc_async::*`) and the application's
/// spans at `INFO` and above, whatever level the rest of the subscriber
/// (a log formatter) lets through.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("zrpc"))
        .with_filter(
            Targets::new()
                .with_default(LevelFilter::INFO)
                .with_target("zrpc_async::router", LevelFilter::DEBUG)
                .with_target("zrpc_async::client", LevelFilter::DEBUG),
        )
}
