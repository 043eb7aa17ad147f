//! Interceptors around every call of a router, over real sockets on
//! 127.0.0.1, tokio's multi-thread runtime and smol: their order, a
//! refusal, headers and trailers they add, the messages and final status
//! they observe, and one that panics; and the same on the calling side
//! (client interceptors on a `Client` and a `Channel`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use zrpc_tokio::*;

mod common;

on_both_runtimes!(
    interceptors_run_in_order_and_see_every_message_and_the_status,
    an_interceptor_refuses_a_call_and_adds_headers_and_trailers,
    an_interceptor_that_panics_ends_its_call_internal_and_the_connection_lives,
    client_interceptors_add_metadata_in_order_and_see_every_message_and_the_status,
    a_client_interceptor_refuses_a_call_and_it_is_never_sent,
    a_dropped_call_ends_its_client_interceptors_cancelled,
    a_channel_runs_its_interceptors_on_every_attempt,
);

/// Records what it sees, as `name:event` lines.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl Interceptor for Recorder {
    fn observes_messages(&self) -> bool {
        true
    }
    fn start(&self, ctx: &CallContext) -> Result<(), Status> {
        self.push(format!("start {}", ctx.method()));
        Ok(())
    }
    fn request(&self, _method: &str, message: &Bytes) {
        self.push(format!("request {}", message.len()));
    }
    fn response(&self, _method: &str, message: &Bytes) {
        self.push(format!("response {}", message.len()));
    }
    fn end(&self, _ctx: &CallContext, status: &Status, _elapsed: Duration) {
        self.push(format!("end {:?}", status.code()));
    }
}

impl Recorder {
    fn push(&self, what: String) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{what}", self.name));
    }
}

async fn serve<R: Runtime>(rt: &R, router: Router) -> (Server<R>, Client) {
    let (server, addr) = common::serve_on(rt, router).await;
    let client = common::connect_on(rt, &addr, ClientConfig::default()).await;
    (server, client)
}

/// `t/Three`: a server stream of three messages of 1, 2 and 3 bytes;
/// `t/ThreeAll` the same from one `send_all`.
fn three() -> Router {
    Router::new()
        .server_streaming("t/Three", |_ctx, _req: Bytes, mut sink| async move {
            for n in 1..=3 {
                sink.send(Bytes::from(vec![0; n])).await?;
            }
            Ok::<_, Status>(())
        })
        .server_streaming("t/ThreeAll", |_ctx, _req: Bytes, mut sink| async move {
            sink.send_all((1..=3).map(|n| Bytes::from(vec![0; n])))
                .await
        })
}

async fn interceptors_run_in_order_and_see_every_message_and_the_status<R: Runtime>(rt: R) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let router = three()
        .interceptor(Recorder {
            name: "a",
            log: log.clone(),
        })
        .interceptor(Recorder {
            name: "b",
            log: log.clone(),
        });
    let (server, client) = serve(&rt, router).await;
    for method in ["t/Three", "t/ThreeAll"] {
        let mut call = client
            .server_streaming(method, Bytes::from_static(b"go"), CallOptions::default())
            .await
            .unwrap();
        while call.message().await.unwrap().is_some() {}
        // The server's interceptors end before its status goes out.
        call.finish().await.unwrap();
        let got = std::mem::take(&mut *log.lock().unwrap());
        let expected = [
            format!("a:start {method}"),
            format!("b:start {method}"),
            "a:request 2".into(),
            "b:request 2".into(),
            "a:response 1".into(),
            "b:response 1".into(),
            "a:response 2".into(),
            "b:response 2".into(),
            "a:response 3".into(),
            "b:response 3".into(),
            "b:end Ok".into(),
            "a:end Ok".into(),
        ];
        assert_eq!(got, expected, "{method}");
    }
    server.shutdown().await;
}

/// Refuses calls without `authorization`; stamps a header on the others
/// and a trailer at their end.
struct Gate;

impl Interceptor for Gate {
    fn start(&self, ctx: &CallContext) -> Result<(), Status> {
        if ctx.metadata().get("authorization").is_none() {
            return Err(Status::unauthenticated("no authorization"));
        }
        ctx.set_headers(Metadata::new().with("x-gate", "open").unwrap());
        Ok(())
    }
    fn end(&self, ctx: &CallContext, status: &Status, _elapsed: Duration) {
        let code = format!("{:?}", status.code());
        ctx.set_trailers(Metadata::new().with("x-gate-saw", code).unwrap());
    }
}

async fn an_interceptor_refuses_a_call_and_adds_headers_and_trailers<R: Runtime>(rt: R) {
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = ran.clone();
    let router = Router::new()
        .unary("t/Echo", move |_ctx, req: Bytes| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok::<_, Status>(req) }
        })
        .interceptor(Gate);
    let (server, client) = serve(&rt, router).await;
    let err = client
        .unary("t/Echo", Bytes::from_static(b"x"), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the handler never ran"
    );

    let opts = CallOptions {
        metadata: Metadata::new().with("authorization", "Bearer t").unwrap(),
        ..CallOptions::default()
    };
    let mut call = client.call("t/Echo", CallKind::Unary, opts).await.unwrap();
    call.send(Bytes::from_static(b"x")).await.unwrap();
    call.close_send().unwrap();
    assert_eq!(call.headers().await.get_str("x-gate"), Some("open"));
    assert_eq!(call.message().await.unwrap().as_deref(), Some(&b"x"[..]));
    let trailers = call.finish().await.unwrap();
    assert_eq!(trailers.get_str("x-gate-saw"), Some("Ok"));
    server.shutdown().await;
}

struct Panics;

impl Interceptor for Panics {
    fn start(&self, ctx: &CallContext) -> Result<(), Status> {
        if ctx.method() == "t/Boom" {
            panic!("an interceptor's bug");
        }
        Ok(())
    }
}

async fn an_interceptor_that_panics_ends_its_call_internal_and_the_connection_lives<R: Runtime>(
    rt: R,
) {
    let router = Router::new()
        .unary(
            "t/Boom",
            |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
        )
        .unary(
            "t/Fine",
            |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
        )
        .interceptor(Panics);
    let (server, client) = serve(&rt, router).await;
    let err = client
        .unary("t/Boom", Bytes::new(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "an interceptor panicked");
    let ok = client
        .unary("t/Fine", Bytes::from_static(b"y"), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(&ok[..], b"y");
    assert!(!client.is_closed());
    server.shutdown().await;
}

/// Records what it sees on the calling side, as `name:event` lines, and
/// adds a request header `x-via` naming itself.
struct Outgoing {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl ClientInterceptor for Outgoing {
    fn start(&self, call: &mut OutgoingCall<'_>) -> Result<(), Status> {
        let via = match call.options.metadata.get_str("x-via") {
            Some(before) => format!("{before},{}", self.name),
            None => self.name.to_owned(),
        };
        call.options.metadata.remove("x-via");
        call.options.metadata.insert("x-via", via).unwrap();
        self.push(format!("start {} {:?}", call.method, call.kind));
        Ok(())
    }
    fn observes_messages(&self) -> bool {
        true
    }
    fn request(&self, _method: &str, message: &Bytes) {
        self.push(format!("request {}", message.len()));
    }
    fn response(&self, _method: &str, message: &Bytes) {
        self.push(format!("response {}", message.len()));
    }
    fn end(&self, _method: &str, status: &Status, _elapsed: Duration) {
        self.push(format!("end {:?}", status.code()));
    }
}

impl Outgoing {
    fn push(&self, what: String) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{what}", self.name));
    }
}

/// `t/Three` answering with the request's `x-via` header in its first
/// response's place (its length is what the interceptors log); `t/Hang`
/// sends one message and never ends.
fn three_via() -> Router {
    Router::new()
        .server_streaming("t/Three", |ctx, _req: Bytes, mut sink| async move {
            let via = ctx.metadata().get_str("x-via").unwrap_or("").to_owned();
            sink.send(Bytes::from(via)).await?;
            for n in 2..=3 {
                sink.send(Bytes::from(vec![0; n])).await?;
            }
            Ok::<_, Status>(())
        })
        .server_streaming("t/Hang", |_ctx, _req: Bytes, mut sink| async move {
            sink.send(Bytes::from_static(b"1")).await?;
            std::future::pending::<()>().await;
            Ok::<_, Status>(())
        })
        .client_streaming("t/Count", |_ctx, mut reqs| async move {
            let mut n = 0u8;
            while reqs.message().await?.is_some() {
                n += 1;
            }
            Ok::<_, Status>(Bytes::from(vec![0; n as usize]))
        })
}

async fn client_interceptors_add_metadata_in_order_and_see_every_message_and_the_status<
    R: Runtime,
>(
    rt: R,
) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (server, client) = serve(&rt, three_via()).await;
    let client = client
        .with_interceptor(Outgoing {
            name: "a",
            log: log.clone(),
        })
        .with_interceptor(Outgoing {
            name: "b",
            log: log.clone(),
        });
    let mut call = client
        .server_streaming("t/Three", Bytes::from_static(b"go"), CallOptions::default())
        .await
        .unwrap();
    let first = call.message().await.unwrap().unwrap();
    assert_eq!(&first[..], b"a,b", "both added their header, in order");
    while call.message().await.unwrap().is_some() {}
    call.finish().await.unwrap();
    let expected = [
        "a:start t/Three ServerStreaming",
        "b:start t/Three ServerStreaming",
        "a:request 2",
        "b:request 2",
        "a:response 3",
        "b:response 3",
        "a:response 2",
        "b:response 2",
        "a:response 3",
        "b:response 3",
        "b:end Ok",
        "a:end Ok",
    ];
    assert_eq!(log.lock().unwrap().clone(), expected);

    // A client stream sent with send_all: every request message, in order.
    log.lock().unwrap().clear();
    let mut call = client
        .client_streaming("t/Count", CallOptions::default())
        .await
        .unwrap();
    call.send_all((1..=3).map(|n| Bytes::from(vec![0; n])))
        .await
        .unwrap();
    call.close_send().unwrap();
    assert_eq!(call.message().await.unwrap().unwrap().len(), 3);
    call.finish().await.unwrap();
    let expected = [
        "a:start t/Count ClientStreaming",
        "b:start t/Count ClientStreaming",
        "a:request 1",
        "b:request 1",
        "a:request 2",
        "b:request 2",
        "a:request 3",
        "b:request 3",
        "a:response 3",
        "b:response 3",
        "b:end Ok",
        "a:end Ok",
    ];
    assert_eq!(log.lock().unwrap().clone(), expected);

    // A failed call: its status, once.
    log.lock().unwrap().clear();
    let err = client
        .unary("t/Missing", Bytes::new(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let ends: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("end"))
        .cloned()
        .collect();
    assert_eq!(ends, ["b:end Unimplemented", "a:end Unimplemented"]);
    server.shutdown().await;
}

/// Refuses calls to methods under `t/Secret`; panics on `t/Boom`.
struct Deny;

impl ClientInterceptor for Deny {
    fn start(&self, call: &mut OutgoingCall<'_>) -> Result<(), Status> {
        match call.method {
            "t/Boom" => panic!("a client interceptor's bug"),
            m if m.starts_with("t/Secret") => Err(Status::permission_denied("not from here")),
            _ => Ok(()),
        }
    }
}

async fn a_client_interceptor_refuses_a_call_and_it_is_never_sent<R: Runtime>(rt: R) {
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = ran.clone();
    let router = Router::new().unary("t/Secret", move |_ctx, req: Bytes| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok::<_, Status>(req) }
    });
    let (server, client) = serve(&rt, router).await;
    let client = client.with_interceptor(Deny);
    let err = client
        .unary("t/Secret", Bytes::new(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = client
        .unary("t/Boom", Bytes::new(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "an interceptor panicked");
    // The connection lives; the handler never ran.
    let err = client
        .unary("t/Other", Bytes::new(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    server.shutdown().await;
}

async fn a_dropped_call_ends_its_client_interceptors_cancelled<R: Runtime>(rt: R) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (server, client) = serve(&rt, three_via()).await;
    let client = client.with_interceptor(Outgoing {
        name: "a",
        log: log.clone(),
    });
    let mut call = client
        .server_streaming("t/Hang", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    call.message().await.unwrap().unwrap();
    drop(call);
    assert_eq!(log.lock().unwrap().last().unwrap(), "a:end Cancelled");
    server.shutdown().await;
}

async fn a_channel_runs_its_interceptors_on_every_attempt<R: Runtime>(rt: R) {
    let (server, addr) = common::serve_on(&rt, three_via()).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let channel = Channel::new(
        &format!("ws://{addr}/"),
        ChannelConfig::default(),
        rt.clone(),
    )
    .unwrap()
    .with_interceptor(Outgoing {
        name: "a",
        log: log.clone(),
    });
    let mut stream = channel
        .server_streaming("t/Three", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(&stream.message().await.unwrap().unwrap()[..], b"a");
    while stream.message().await.unwrap().is_some() {}
    drop(stream);
    // The connection's client handed out by the channel carries them too.
    let client = channel.client().await.unwrap();
    let err = client
        .unary("t/Missing", Bytes::new(), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let log = log.lock().unwrap().clone();
    let starts = log.iter().filter(|l| l.contains("start")).count();
    assert_eq!(starts, 2, "{log:?}");
    assert_eq!(log.last().unwrap(), "a:end Unimplemented");
    server.shutdown().await;
}
