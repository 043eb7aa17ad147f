//! The router and server fixtures the end-to-end tests share.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use zrpc_smol::SmolRuntime;
use zrpc_tokio::*;

/// Messages the `t.T/Big` handler has sent so far.
pub static BIG_SENT: AtomicUsize = AtomicUsize::new(0);

/// The seed's echo: `echo` sends the request back `count` times,
/// `interval` apart.
pub fn seed_echo<R: Runtime>(rt: R, count: u32, interval: Duration) -> Router {
    Router::new().server_streaming("echo", move |_ctx, payload: Bytes, mut sink| {
        let rt = rt.clone();
        async move {
            for i in 0..count {
                if i > 0 && !interval.is_zero() {
                    rt.sleep_until(std::time::Instant::now() + interval).await;
                }
                sink.send(payload.clone()).await?;
            }
            Ok::<(), Status>(())
        }
    })
}

/// `host:port` of a `ws://host:port/...` URL.
pub fn socket_addr_of(url: &str) -> String {
    let rest = url.trim_start_matches("ws://");
    rest.split('/').next().unwrap_or(rest).to_owned()
}

pub fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Methods used by the scenarios; `events` receives what handlers observe.
pub fn router<R: Runtime>(
    rt: R,
    cancelled: Arc<AtomicUsize>,
    events: tokio::sync::mpsc::UnboundedSender<String>,
) -> Router {
    let ev = events.clone();
    let ev2 = events.clone();
    let rt2 = rt.clone();
    Router::new()
        .unary("t.T/Unary", |_ctx, req: Bytes| async move {
            Ok::<_, Status>(req)
        })
        .server_streaming("t.T/Count", |_ctx, req: Bytes, mut sink| async move {
            let n = u32::from_be_bytes(req[..4].try_into().unwrap());
            for i in 0..n {
                sink.send(Bytes::copy_from_slice(&i.to_be_bytes())).await?;
            }
            Ok(())
        })
        .server_streaming("t.T/CountAll", |_ctx, req: Bytes, mut sink| async move {
            let n = u32::from_be_bytes(req[..4].try_into().unwrap());
            sink.send_all((0..n).map(|i| Bytes::copy_from_slice(&i.to_be_bytes())))
                .await
        })
        .client_streaming("t.T/Sum", |_ctx, mut reqs| async move {
            let mut total = 0u64;
            while let Some(m) = reqs.message().await? {
                total += m.len() as u64;
            }
            Ok::<_, Status>(Bytes::copy_from_slice(&total.to_be_bytes()))
        })
        .bidi("t.T/Chat", |_ctx, mut reqs, mut sink| async move {
            while let Some(m) = reqs.message().await? {
                sink.send(Bytes::from(String::from_utf8_lossy(&m).to_uppercase()))
                    .await?;
            }
            Ok(())
        })
        .unary("t.T/Fail", |ctx, _req: Bytes| async move {
            ctx.set_trailers(Metadata::new().with("why", "testing").unwrap());
            Err::<Bytes, _>(Status::new(Code::NotFound, "no such thing"))
        })
        .unary("t.T/Panic", |_ctx, _req: Bytes| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<Bytes, Status>(Bytes::new())
        })
        .unary("t.T/Meta", |ctx, _req: Bytes| async move {
            let user = ctx.metadata().get_str("x-user").unwrap_or("?").to_owned();
            ctx.set_headers(Metadata::new().with("x-seen-user", user.clone()).unwrap());
            Ok::<_, Status>(Bytes::from(user))
        })
        .server_streaming("t.T/Forever", move |ctx, _req: Bytes, mut sink| {
            let cancelled = cancelled.clone();
            let ev = ev.clone();
            async move {
                struct Guard(Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedSender<String>);
                impl Drop for Guard {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                        let _ = self.1.send("forever-dropped".into());
                    }
                }
                let _g = Guard(cancelled, ev);
                let mut i = 0u64;
                loop {
                    if ctx.is_cancelled() {
                        return Err(Status::new(Code::Cancelled, "seen"));
                    }
                    sink.send(Bytes::copy_from_slice(&i.to_be_bytes())).await?;
                    i += 1;
                }
            }
        })
        .unary("t.T/Slow", move |ctx, _req: Bytes| {
            let ev = ev2.clone();
            let rt = rt2.clone();
            async move {
                let status = ctx.cancelled().await;
                let _ = ev.send(format!("slow-ended {}", status.code()));
                rt.sleep_until(std::time::Instant::now()).await;
                Ok::<_, Status>(Bytes::new())
            }
        })
        .server_streaming("t.T/Big", |_ctx, _req: Bytes, mut sink| async move {
            // 100 MB in 64 KiB messages, as fast as credit allows.
            let chunk = Bytes::from(vec![0x42u8; 64 * 1024]);
            for _ in 0..1600 {
                sink.send(chunk.clone()).await?;
                BIG_SENT.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
        .unary("t.T/CallBack", |ctx, req: Bytes| async move {
            // A server-initiated call to a method the client registered.
            ctx.client()
                .unary("client.C/Double", req, CallOptions::default())
                .await
        })
}

pub fn client_router() -> Router {
    Router::new().unary("client.C/Double", |_ctx, req: Bytes| async move {
        let mut v = req.to_vec();
        v.extend_from_slice(&req);
        Ok::<_, Status>(Bytes::from(v))
    })
}

pub struct Fixture<R: Runtime> {
    pub server: Server<R>,
    pub url: String,
    pub cancelled: Arc<AtomicUsize>,
    pub events: tokio::sync::mpsc::UnboundedReceiver<String>,
}

pub async fn tokio_server() -> Fixture<TokioRuntime> {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::new(router(TokioRuntime, cancelled.clone(), tx), TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    Fixture {
        server,
        url,
        cancelled,
        events,
    }
}

pub async fn smol_server() -> Fixture<SmolRuntime> {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::new(router(SmolRuntime, cancelled.clone(), tx), SmolRuntime);
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    smol::spawn(async move { zrpc_smol::serve(&s, listener).await }).detach();
    Fixture {
        server,
        url,
        cancelled,
        events,
    }
}

/// Bounds every scenario: a hung test fails instead of hanging CI.
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("scenario timed out")
}

/// Runs a scenario on tokio's multi-thread runtime and on smol.
#[macro_export]
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
                    .block_on($crate::common::bounded_on(zrpc_tokio::TokioRuntime, super::$name(zrpc_tokio::TokioRuntime)));
            }
            #[test]
            fn smol() {
                smol::block_on($crate::common::bounded_on(zrpc_smol::SmolRuntime, super::$name(zrpc_smol::SmolRuntime)));
            }
        }
    )*};
}

/// [`bounded`] on any runtime (its own timer): a hang fails the test.
pub async fn bounded_on<R: Runtime, F: std::future::Future>(rt: R, f: F) -> F::Output {
    let limit = std::time::Instant::now() + Duration::from_secs(60);
    async { Some(f.await) }
        .or(async {
            rt.sleep_until(limit).await;
            None
        })
        .await
        .expect("scenario timed out")
}

/// A server for `router` on 127.0.0.1 (an OS-chosen port), on any runtime;
/// returns it and its address.
pub async fn serve_on<R: Runtime>(rt: &R, router: Router) -> (Server<R>, String) {
    let listener = rt.bind("127.0.0.1:0".to_owned()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(router, rt.clone());
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
    });
    (server, addr)
}

/// A client of the server at `addr` (`host:port`), on any runtime.
pub async fn connect_on<R: Runtime>(rt: &R, addr: &str, config: ClientConfig) -> Client {
    zrpc_async::connect(&format!("ws://{addr}/"), config, rt.clone())
        .await
        .unwrap()
}
