//! zrpc as a route of a real axum app (feature `axum`): ordinary routes
//! answer, and `/rpc` serves v1 and legacy calls with the peer's address.

use std::net::SocketAddr;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zrpc_tokio::{Bytes, CallOptions, Router, Server, Status, TokioRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrpc_at_rpc_in_an_axum_app() {
    let router = Router::new()
        .unary("t.T/Peer", |ctx, _req: Bytes| async move {
            let peer = ctx
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            Ok::<_, Status>(Bytes::from(peer))
        })
        .server_streaming("echo", |_ctx, req: Bytes, mut sink| async move {
            for _ in 0..3 {
                sink.send(req.clone()).await?;
            }
            Ok::<_, Status>(())
        });
    let zrpc = Server::new(router, TokioRuntime);
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/rpc", get(zrpc_tokio::axum::handler(zrpc)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    // An ordinary route, and a plain GET of the zrpc route.
    let get = |path: &'static str| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        tcp.read_to_string(&mut resp).await.unwrap();
        resp
    };
    let health = get("/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
        "{health}"
    );
    let plain = get("/rpc").await;
    assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    // An upgrade whose Upgrade and Connection headers a proxy stripped gets
    // 426, not a 101 followed by a reset.
    let stripped = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = "GET /rpc HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: zrpc.v1\r\n\r\n";
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = [0u8; 12];
        tcp.read_exact(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }
    .await;
    assert_eq!(stripped, "HTTP/1.1 426");

    // zrpc v1 at /rpc, with the peer's address.
    let url = format!("ws://{addr}/rpc");
    let client = zrpc_tokio::connect(&url).await.unwrap();
    let peer = client
        .unary("t.T/Peer", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(&peer[..], b"127.0.0.1");
    let mut call = client
        .server_streaming("echo", Bytes::from_static(b"ax"), CallOptions::default())
        .await
        .unwrap();
    let mut n = 0;
    while let Some(m) = call.message().await.unwrap() {
        assert_eq!(&m[..], b"ax");
        n += 1;
    }
    assert_eq!(n, 3);

    // The seed's format at /rpc too.
    let mut legacy = zrpc_tokio::legacy_call(&url, "echo", Bytes::from_static(b"old"))
        .await
        .unwrap();
    let mut n = 0;
    while legacy.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
}

/// The same handler as an axum app's fallback answers gRPC (h2c, which
/// `axum::serve` speaks) and Connect (HTTP/1.1) calls with the zrpc
/// server's router and authentication hook, beside the app's own routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_connect_through_the_axum_fallback() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let router = Router::new().unary("t.T/Who", |ctx, req: Bytes| async move {
        let who = ctx.identity::<String>().cloned().unwrap_or_default();
        let mut out = format!("{who} over {}: ", ctx.protocol()).into_bytes();
        out.extend_from_slice(&req);
        Ok::<_, Status>(Bytes::from(out))
    });
    let zrpc = Server::new(router, TokioRuntime).authenticate(|req| match req.header("x-token") {
        Some("sesame") => Ok("alice".to_owned()),
        _ => Err(zrpc_tokio::Refusal::unauthorized("x-token required")),
    });
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(zrpc_tokio::axum::handler(zrpc));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let scenario = async {
        // gRPC over h2c, with and without the token.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        for (token, status, reply) in [
            (Some("sesame"), "0", &b"alice over grpc: hi"[..]),
            (None, "16", &b""[..]),
        ] {
            let mut req = hyper::Request::post(format!("http://{addr}/t.T/Who"))
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(t) = token {
                req = req.header("x-token", t);
            }
            let body = Bytes::from_static(b"\0\0\0\0\x02hi");
            let resp = send
                .send_request(req.body(Full::new(body)).unwrap())
                .await
                .unwrap();
            let head = resp.headers().clone();
            let got = resp.into_body().collect().await.unwrap();
            let trailers = got.trailers().cloned().unwrap_or_default();
            let code = trailers.get("grpc-status").or(head.get("grpc-status"));
            assert_eq!(code.unwrap(), status, "{token:?}");
            let data = got.to_bytes();
            assert_eq!(&data[data.len().min(5)..], reply);
        }
        // Connect unary over HTTP/1.1.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{addr}/t.T/Who"))
            .header("content-type", "application/proto")
            .header("x-token", "sesame")
            .body(Full::new(Bytes::from_static(b"yo")))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"alice over connect: yo");
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), scenario)
        .await
        .expect("scenario timed out");
}
