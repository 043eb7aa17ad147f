//! gRPC over HTTP/2 (h2c) on a zrpc server's port, on a tokio and on a smol
//! server: the authentication hook and interceptors apply to HTTP calls as
//! they do to zrpc.v1 ones, a handler sees which protocol carried its call,
//! and the same port still serves zrpc.v1. The outside clients (grpc-js,
//! grpcio, connect-es, buf curl) are in `clients/js/test/http.test.ts`.

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use zrpc_tokio::{CallOptions, Refusal, Router, Server, Status};

fn router() -> Router {
    Router::new()
        .unary("t.S/Who", |ctx, _req: Bytes| async move {
            let who = ctx.identity::<String>().cloned().unwrap_or_default();
            Ok(Bytes::from(format!("{who} over {}", ctx.protocol())))
        })
        .unary("t.S/Forbidden", |_ctx, req: Bytes| async move { Ok(req) })
        // 3,000 messages of 100 bytes from one send_all: more than an HTTP
        // call queues (64 KiB), so the sends wait for the body to drain.
        .server_streaming("t.S/Rows", |_ctx, _req: Bytes, mut sink| async move {
            sink.send_all((0..3000u32).map(|i| {
                let mut m = vec![0u8; 100];
                m[..4].copy_from_slice(&i.to_be_bytes());
                Bytes::from(m)
            }))
            .await
        })
        .intercept(|ctx| {
            if ctx.method() == "t.S/Forbidden" {
                Err(Status::permission_denied("interceptor says no"))
            } else {
                Ok(())
            }
        })
}

fn authenticated<R: zrpc_tokio::Runtime>(rt: R) -> Server<R> {
    Server::new(router(), rt).authenticate(|req| match req.header("x-token") {
        Some("sesame") => Ok("alice".to_owned()),
        _ => Err(Refusal::unauthorized("x-token required")),
    })
}

/// One gRPC unary call over a new h2c connection: status, message, reply.
async fn grpc_call(
    addr: std::net::SocketAddr,
    method: &str,
    token: Option<&str>,
) -> (u32, String, Bytes) {
    grpc_call_with(addr, method, token, b"hi").await
}

async fn grpc_call_with(
    addr: std::net::SocketAddr,
    method: &str,
    token: Option<&str>,
    message: &[u8],
) -> (u32, String, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(message.len() as u32);
    body.put_slice(message);
    let mut req = hyper::Request::post(format!("http://{addr}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("x-token", t);
    }
    let resp = send
        .send_request(req.body(Full::new(body.freeze())).unwrap())
        .await
        .unwrap();
    let head = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let get = |k: &str| {
        trailers
            .get(k)
            .or_else(|| head.get(k))
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = get("grpc-status").expect("grpc-status").parse().unwrap();
    let reply = if data.len() >= 5 {
        data.slice(5..)
    } else {
        Bytes::new()
    };
    (status, get("grpc-message").unwrap_or_default(), reply)
}

async fn check(addr: std::net::SocketAddr) {
    let (status, message, _) = grpc_call(addr, "t.S/Who", None).await;
    assert_eq!((status, message.as_str()), (16, "x-token required"));
    let (status, _, reply) = grpc_call(addr, "t.S/Who", Some("sesame")).await;
    assert_eq!((status, &reply[..]), (0, &b"alice over grpc"[..]));
    let (status, message, _) = grpc_call(addr, "t.S/Forbidden", Some("sesame")).await;
    assert_eq!((status, message.as_str()), (7, "interceptor says no"));
    let (status, _, _) = grpc_call(addr, "t.S/Nope", Some("sesame")).await;
    assert_eq!(status, 12);
    // A stream sent with send_all: every message, in order.
    let (status, _, rest) = grpc_call(addr, "t.S/Rows", Some("sesame")).await;
    assert_eq!(status, 0);
    let mut body = Bytes::from([&[0u8, 0, 0, 0, 100][..], &rest[..]].concat());
    let mut n = 0u32;
    while !body.is_empty() {
        assert_eq!(&body[..5], &[0, 0, 0, 0, 100]);
        assert_eq!(u32::from_be_bytes(body[5..9].try_into().unwrap()), n);
        body = body.slice(105..);
        n += 1;
    }
    assert_eq!(n, 3000);
    // The same port, zrpc.v1 (the upgrade carries the token).
    let url = format!("ws://{addr}/");
    let config = zrpc_tokio::ClientConfig {
        headers: vec![("x-token".into(), "sesame".into())],
        ..Default::default()
    };
    let client = zrpc_tokio::connect_with(&url, config).await.unwrap();
    let reply = client
        .unary("t.S/Who", Bytes::from_static(b"hi"), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(&reply[..], b"alice over zrpc.v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_on_a_tokio_server() {
    let server = authenticated(zrpc_tokio::TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    tokio::time::timeout(std::time::Duration::from_secs(60), check(addr))
        .await
        .expect("scenario timed out");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_on_a_smol_server() {
    let server = authenticated(zrpc_smol::SmolRuntime);
    let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    smol::spawn(async move { zrpc_smol::serve(&s, listener).await }).detach();
    tokio::time::timeout(std::time::Duration::from_secs(60), check(addr))
        .await
        .expect("scenario timed out");
    smol::block_on(server.shutdown());
}

/// HTTP calls count in the server-wide bound on received bytes held, as
/// zrpc.v1 calls do: a message that would take the total past it ends its
/// call RESOURCE_EXHAUSTED; smaller calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_messages_count_in_the_server_receive_budget() {
    let config = zrpc_tokio::ServerConfig {
        max_server_receive_buffer: 256 * 1024,
        ..Default::default()
    };
    let server = Server::with_config(router(), config, zrpc_tokio::TokioRuntime)
        .authenticate(|_req| Ok("anyone".to_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let scenario = async {
        // 1 MiB is under the 4 MiB message limit, over the 256 KiB budget.
        let (status, message, _) =
            grpc_call_with(addr, "t.S/Who", None, &vec![7u8; 1024 * 1024]).await;
        assert_eq!(status, 8, "{message}");
        assert!(message.contains("max_server_receive_buffer"), "{message}");
        assert_eq!(server.received_bytes_held(), 0);
        let (status, _, reply) = grpc_call(addr, "t.S/Who", None).await;
        assert_eq!((status, &reply[..]), (0, &b"anyone over grpc"[..]));
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), scenario)
        .await
        .expect("scenario timed out");
    server.shutdown().await;
}

/// A request refused before its body is read (an unknown method) over
/// HTTP/1.1: a small body is read and dropped, so the keep-alive connection
/// carries the next request (a client still writing it is not reset); a
/// body past 64 KiB ends the connection, and the answer says
/// `connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_http1_body_is_drained_or_the_connection_closes_and_says_so() {
    let server = Server::new(router(), zrpc_tokio::TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let scenario = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let post = |path: &str, body: Bytes| {
            hyper::Request::post(format!("http://{addr}/{path}"))
                .header("content-type", "application/grpc-web+proto")
                .body(Full::new(body))
                .unwrap()
        };
        let small = Bytes::from_static(b"\0\0\0\0\x02hi");
        for path in ["t.S/Who", "t.S/Nope", "t.S/Who"] {
            send.ready().await.expect("the connection is kept");
            let resp = send.send_request(post(path, small.clone())).await.unwrap();
            assert_eq!(resp.headers().get("connection"), None, "{path}");
            resp.into_body().collect().await.unwrap();
        }
        // Past the limit: answered, and the connection ends.
        let mut big = BytesMut::new();
        big.put_u8(0);
        big.put_u32(100_000);
        big.put_slice(&[7; 100_000]);
        send.ready().await.expect("the connection is kept");
        let resp = send
            .send_request(post("t.S/Nope", big.freeze()))
            .await
            .unwrap();
        assert_eq!(resp.headers()["grpc-status"], "12");
        assert_eq!(resp.headers()["connection"], "close");
        resp.into_body().collect().await.unwrap();
        send.ready().await.expect_err("the connection is closed");
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), scenario)
        .await
        .expect("scenario timed out");
    server.shutdown().await;
}
