//! One trace across two hops, with an in-memory exporter: a client calls
//! server A, whose handler calls server B; every side has the
//! `TraceContext` interceptor. On tokio's multi-thread runtime and on smol,
//! over real sockets on 127.0.0.1. Also: what a malformed or huge
//! `traceparent` gets (a new trace, the call goes on).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use opentelemetry::trace::{SpanId, SpanKind, Status as OtelStatus, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::prelude::*;
use zrpc_async::Listener as _;
use zrpc_async::{
    Bytes, CallOptions, Client, ClientConfig, Code, Metadata, Router, Runtime, Server, Status,
};
use zrpc_otel::TraceContext;

/// The process's subscriber: zrpc's spans into an in-memory exporter.
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static SETUP: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        tracing_subscriber::registry()
            .with(zrpc_otel::layer(&provider))
            .init();
        (exporter, provider)
    })
}

/// The finished spans `keep` selects, once `count` of them ended (spans end
/// as their tasks finish, which may be just after the caller saw its reply),
/// or what there is after 10 s.
async fn spans<R: Runtime>(
    rt: &R,
    count: usize,
    keep: impl Fn(&SpanData) -> bool,
) -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    let limit = Instant::now() + Duration::from_secs(10);
    loop {
        provider.force_flush().unwrap();
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| keep(s))
            .collect();
        if spans.len() >= count || Instant::now() > limit {
            return spans;
        }
        rt.sleep_until(Instant::now() + Duration::from_millis(5))
            .await;
    }
}

async fn serve<R: Runtime>(rt: &R, router: Router) -> (Server<R>, Client) {
    let listener = rt.bind("127.0.0.1:0".to_owned()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(router, rt.clone());
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
    });
    let client = zrpc_async::connect(
        &format!("ws://{addr}/"),
        ClientConfig::default(),
        rt.clone(),
    )
    .await
    .unwrap();
    (server, client)
}

fn find<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name && s.span_kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span {name} in {spans:#?}"))
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

async fn one_trace_crosses_two_hops<R: Runtime>(rt: R) {
    exporter();
    let b = Router::new()
        .unary("b.B/Inner", |_ctx, _req: Bytes| async move {
            Err::<Bytes, _>(Status::not_found("no such person"))
        })
        .interceptor(TraceContext);
    let (server_b, to_b) = serve(&rt, b).await;
    let to_b = to_b.with_interceptor(TraceContext);
    let a = Router::new()
        .unary("a.A/Outer", move |ctx, req: Bytes| {
            let to_b = to_b.clone();
            async move {
                let err = to_b
                    .unary("b.B/Inner", req, ctx.child_options())
                    .await
                    .unwrap_err();
                assert_eq!(err.code(), Code::NotFound);
                Ok::<_, Status>(Bytes::from_static(b"done"))
            }
        })
        .interceptor(TraceContext);
    let (server_a, to_a) = serve(&rt, a).await;
    let to_a = to_a.with_interceptor(TraceContext);

    let root = tracing::info_span!("test root");
    let trace = {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        root.context().span().span_context().trace_id()
    };
    let reply = to_a
        .unary(
            "a.A/Outer",
            Bytes::from_static(b"x"),
            CallOptions::default(),
        )
        .instrument(root)
        .await
        .unwrap();
    assert_eq!(&reply[..], b"done");

    let spans = spans(&rt, 5, |s| s.span_context.trace_id() == trace).await;
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let root = spans.iter().find(|s| s.name == "test root").unwrap();
    let client_a = find(&spans, "a.A/Outer", SpanKind::Client);
    let server_a_span = find(&spans, "a.A/Outer", SpanKind::Server);
    let client_b = find(&spans, "b.B/Inner", SpanKind::Client);
    let server_b_span = find(&spans, "b.B/Inner", SpanKind::Server);
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert_eq!(client_a.parent_span_id, root.span_context.span_id());
    assert_eq!(
        server_a_span.parent_span_id,
        client_a.span_context.span_id()
    );
    assert!(
        server_a_span.parent_span_is_remote,
        "A's parent came by the wire"
    );
    assert_eq!(
        client_b.parent_span_id,
        server_a_span.span_context.span_id()
    );
    assert_eq!(
        server_b_span.parent_span_id,
        client_b.span_context.span_id()
    );
    assert!(server_b_span.parent_span_is_remote);

    // Statuses: B failed NOT_FOUND on both of its spans; A's call is fine.
    for s in [client_b, server_b_span] {
        assert_eq!(s.status, OtelStatus::error("no such person"), "{}", s.name);
        assert_eq!(attr(s, "rpc.status_code").as_deref(), Some("5"));
    }
    for s in [client_a, server_a_span] {
        assert_ne!(s.status, OtelStatus::error(""), "{}", s.name);
        assert!(!matches!(s.status, OtelStatus::Error { .. }), "{}", s.name);
        assert_eq!(attr(s, "rpc.status_code").as_deref(), Some("0"));
        assert_eq!(attr(s, "rpc.method").as_deref(), Some("a.A/Outer"));
    }
    assert!(attr(server_a_span, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")));
    // Sizes: the request "x" and the reply "done", on both of A's spans.
    for s in [client_a, server_a_span] {
        assert_eq!(
            attr(s, "rpc.request.bytes").as_deref(),
            Some("1"),
            "{}",
            s.name
        );
        assert_eq!(
            attr(s, "rpc.response.bytes").as_deref(),
            Some("4"),
            "{}",
            s.name
        );
    }

    server_a.shutdown().await;
    server_b.shutdown().await;
}

async fn a_bad_traceparent_starts_a_new_trace_and_the_call_goes_on<R: Runtime>(rt: R) {
    exporter();
    let router = Router::new()
        .unary("t.T/Echo", |_ctx, req: Bytes| async move {
            Ok::<_, Status>(req)
        })
        .interceptor(TraceContext);
    let (server, client) = serve(&rt, router).await;
    // A client without the interceptor sends the headers as given.
    let plain = client;
    let forged = [
        "00-zzzz-not-hex-01".to_owned(),
        format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16)), // all-zero trace id
        format!(
            "00-{}-{}-01{}",
            "a".repeat(32),
            "b".repeat(16),
            "-x".repeat(1000)
        ),
    ];
    for traceparent in forged {
        let opts = CallOptions {
            metadata: Metadata::new()
                .with("traceparent", traceparent.clone())
                .unwrap()
                .with("tracestate", "k=".to_owned() + &"v".repeat(2000))
                .unwrap(),
            ..CallOptions::default()
        };
        let reply = plain
            .unary("t.T/Echo", Bytes::from_static(b"ok"), opts)
            .await
            .unwrap();
        assert_eq!(&reply[..], b"ok", "the call goes on ({traceparent:.40})");
    }
    // Every server span of those calls (of this test on both runtimes: the
    // tests share the exporter) is the root of its own trace.
    let servers = spans(&rt, 3, |s| {
        s.name == "t.T/Echo" && s.span_kind == SpanKind::Server
    })
    .await;
    assert!(servers.len() >= 3, "only {} server spans", servers.len());
    for s in &servers {
        assert_eq!(s.parent_span_id, SpanId::INVALID, "{s:#?}");
        assert!(s.span_context.trace_id() != TraceId::INVALID);
    }
    server.shutdown().await;
}

macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn tokio() {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(super::bounded(zrpc_tokio::TokioRuntime, super::$name(zrpc_tokio::TokioRuntime)));
            }
            #[test]
            fn smol() {
                smol::block_on(super::bounded(zrpc_smol::SmolRuntime, super::$name(zrpc_smol::SmolRuntime)));
            }
        }
    )*};
}

on_both_runtimes!(
    one_trace_crosses_two_hops,
    a_bad_traceparent_starts_a_new_trace_and_the_call_goes_on,
);

/// A hung scenario fails instead of hanging.
async fn bounded<R: Runtime, F: std::future::Future>(rt: R, f: F) -> F::Output {
    let limit = Instant::now() + Duration::from_secs(60);
    async { Some(f.await) }
        .or(async {
            rt.sleep_until(limit).await;
            None
        })
        .await
        .expect("scenario timed out")
}
