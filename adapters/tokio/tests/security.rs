//! What a hostile client gets from a zrpc server, over real sockets on
//! 127.0.0.1, on tokio's multi-thread runtime and on smol: every bound of
//! the "Security" section of the README, and that well-behaved clients are
//! unaffected while it is hit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Bytes as WsBytes, Message};
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt};
use zrpc_core::frame::Open;
use zrpc_core::{Frame, Method};
use zrpc_tokio::*;

mod common;
use common::socket_addr_of;

on_both_runtimes!(
    a_peer_that_grants_credit_and_never_reads_is_bounded_then_dropped,
    the_server_wide_receive_budget_sheds_the_largest_holder,
    a_v1_peer_cannot_send_a_websocket_message_larger_than_a_frame,
    silent_peers_and_idle_connections_are_closed,
    a_peer_stuck_inside_a_message_is_closed,
    connection_limits_answer_with_http_status,
    origin_policy,
    dns_rebinding_is_refused,
    malformed_upgrades_get_an_http_answer,
    authentication_and_interceptors,
    dropping_the_last_client_handle_closes_the_connection,
    a_timeout_too_large_to_represent_is_no_deadline,
    a_client_close_is_answered_with_a_close,
    tls_serves_wss_and_refuses_what_it_should,
    a_server_that_never_answers_cannot_hold_a_client,
    a_server_exceeding_credit_is_caught_at_once,
);

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

async fn serve<R: Runtime>(rt: &R, router: Router, config: ServerConfig) -> (Server<R>, String) {
    let server = Server::with_config(router, config, rt.clone());
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
    });
    (server, url)
}

fn echo_router() -> Router {
    Router::new().unary(
        "t/Echo",
        |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
    )
}

/// A good client on its own connection: still served.
async fn good_call<R: Runtime>(rt: &R, url: &str) {
    let c = zrpc_async::connect(url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    for _ in 0..10 {
        let r = c.unary("t/Echo", b("ok"), CallOptions::default()).await;
        assert_eq!(r.unwrap(), b("ok"));
    }
}

type Raw<R> = WebSocketStream<<R as Runtime>::Tcp>;

/// A raw WebSocket that negotiated zrpc.v1 and speaks whatever the test sends.
async fn raw<R: Runtime>(rt: &R, url: &str) -> Raw<R> {
    let tcp = rt.connect_tcp(socket_addr_of(url)).await.unwrap();
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("zrpc.v1"),
    );
    async_tungstenite::client_async(req, tcp).await.unwrap().0
}

fn open(id: u32, kind: CallKind, credit: u32, method: &str) -> Message {
    Message::Binary(
        Frame::Open(Open {
            stream: StreamId(id),
            kind,
            timeout_ms: 0,
            initial_credit: credit,
            method: Method::new(method).unwrap(),
            metadata: Metadata::new(),
        })
        .to_bytes(),
    )
}

fn message(id: u32, end: bool, more: bool, payload: Bytes) -> Message {
    Message::Binary(
        Frame::Message {
            stream: StreamId(id),
            end_stream: end,
            more,
            cursor: None,
            payload,
        }
        .to_bytes(),
    )
}

/// The frames of one received message (a BATCH or a single frame).
fn frames_of(m: Bytes) -> Vec<Frame> {
    if m.first() == Some(&zrpc_core::frame::kind::BATCH) {
        zrpc_core::frame::split_batch(m)
            .unwrap()
            .map(|f| Frame::decode(f.unwrap()).unwrap())
            .collect()
    } else {
        vec![Frame::decode(m).unwrap()]
    }
}

/// Reads until the server closes; the close code, if one came.
async fn close_code<R: Runtime>(ws: &mut Raw<R>) -> Option<u16> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Sends a raw HTTP upgrade request with extra header lines; the response's
/// status code.
async fn http_status<R: Runtime>(rt: &R, url: &str, extra: &str) -> u16 {
    let addr = socket_addr_of(url);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: zrpc.v1\r\n{extra}\r\n"
    );
    raw_status(rt, url, &req).await
}

/// Sends `request` as it is; the response's status code (the connection
/// must answer, not just close).
async fn raw_status<R: Runtime>(rt: &R, url: &str, request: &str) -> u16 {
    let mut tcp = rt.connect_tcp(socket_addr_of(url)).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < 12 {
        let n = tcp.read(&mut buf[got..]).await.unwrap();
        assert!(n > 0, "connection closed without a response to {request:?}");
        got += n;
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    head[9..12].parse().unwrap()
}

// ---------------------------------------------------------------------------

/// One call asks for 10,000 messages of 128 KiB (1.25 GB) granting the most
/// credit the protocol allows, and never reads its socket. Its handler's
/// sends wait once the call's send bound is reached; once the write has been
/// blocked for the write timeout, the connection is dropped and the handler
/// ends with UNAVAILABLE. Meanwhile another client is served.
async fn a_peer_that_grants_credit_and_never_reads_is_bounded_then_dropped<R: Runtime>(rt: R) {
    let (done_tx, done_rx) = smol::channel::bounded(1);
    let router = echo_router().server_streaming("t/Flood", move |_ctx, _req: Bytes, mut sink| {
        let done = done_tx.clone();
        async move {
            let msg = Bytes::from(vec![0u8; 128 * 1024]);
            let mut sent = 0usize;
            let mut outcome = Code::Ok;
            for _ in 0..10_000 {
                if let Err(st) = sink.send(msg.clone()).await {
                    outcome = st.code();
                    break;
                }
                sent += 1;
            }
            let _ = done.send((sent, outcome)).await;
            Ok(())
        }
    });
    let config = ServerConfig {
        write_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let (server, url) = serve(&rt, router, config).await;
    let mut hostile = raw(&rt, &url).await;
    hostile
        .send(open(1, CallKind::ServerStreaming, (1 << 31) - 1, "t/Flood"))
        .await
        .unwrap();
    hostile
        .send(message(1, true, false, b("go")))
        .await
        .unwrap();
    good_call(&rt, &url).await;
    let (sent, outcome) = done_rx.recv().await.unwrap();
    // What left the process is bounded by the send bound (1 MiB), the
    // writer's round (256 KiB) and the kernel's socket buffers (a few MB on
    // loopback); without the bound all 10,000 were accepted at once.
    assert!(sent * 128 * 1024 < 48 << 20, "{sent} messages accepted");
    assert_eq!(outcome, Code::Unavailable);
    assert_eq!(server.live_calls(), 0);
    good_call(&rt, &url).await;
    drop(hostile);
}

/// A hoarder opens calls and sends each an unfinished 64 KiB fragment; the
/// server-wide budget (1 MiB here) sheds its calls with RESOURCE_EXHAUSTED,
/// and what the server holds stays within the bound plus one fragment.
async fn the_server_wide_receive_budget_sheds_the_largest_holder<R: Runtime>(rt: R) {
    let router = echo_router().bidi("t/Hold", |ctx, _reqs, _sink| async move {
        ctx.cancelled().await;
        Ok(())
    });
    let config = ServerConfig {
        max_server_receive_buffer: 1024 * 1024,
        ..ServerConfig::default()
    };
    let (server, url) = serve(&rt, router, config).await;
    let mut hostile = raw(&rt, &url).await;
    let frag = Bytes::from(vec![1u8; 64 * 1024]);
    for i in 0..32u32 {
        let id = 1 + 2 * i;
        hostile
            .send(open(id, CallKind::Bidi, 16, "t/Hold"))
            .await
            .unwrap();
        hostile
            .send(message(id, false, true, frag.clone()))
            .await
            .unwrap();
    }
    // 32 × 64 KiB is 2 MiB against 1 MiB: about half the calls are shed.
    let mut shed = 0;
    while shed < 16 {
        let Some(Ok(Message::Binary(m))) = hostile.next().await else {
            panic!("connection ended");
        };
        for f in frames_of(m) {
            if let Frame::Status { status, .. } = f {
                assert_eq!(status.code(), Code::ResourceExhausted);
                shed += 1;
            }
        }
        assert!(server.received_bytes_held() <= 1024 * 1024 + 64 * 1024);
    }
    assert!(server.received_bytes_held() <= 1024 * 1024);
    good_call(&rt, &url).await;
}

/// v1 frames are at most max_fragment_size + 6 bytes (64 KiB default), so
/// the WebSocket layer refuses anything larger with 1009 before it is read
/// whole; a legacy client may still send a 4 MiB request.
async fn a_v1_peer_cannot_send_a_websocket_message_larger_than_a_frame<R: Runtime>(rt: R) {
    let (_server, url) = serve(&rt, echo_router(), ServerConfig::default()).await;
    let mut ws = raw(&rt, &url).await;
    let _ = ws
        .send(Message::Binary(WsBytes::from(vec![0u8; 80 * 1024])))
        .await;
    assert_eq!(close_code::<R>(&mut ws).await, Some(1009));
    // The largest legal frame is fine.
    let mut ws = raw(&rt, &url).await;
    ws.send(open(1, CallKind::Unary, 1, "t/Echo"))
        .await
        .unwrap();
    ws.send(message(1, true, false, Bytes::from(vec![2u8; 64 * 1024])))
        .await
        .unwrap();
    let mut got_status = false;
    while !got_status {
        let Some(Ok(Message::Binary(m))) = ws.next().await else {
            panic!("connection ended");
        };
        for f in frames_of(m) {
            if let Frame::Status { status, .. } = f {
                assert!(status.is_ok(), "{status}");
                got_status = true;
            }
        }
    }
    let reply = zrpc_async::legacy_call(&url, "t/Echo", Bytes::from(vec![3u8; 1 << 20]), rt)
        .await
        .unwrap()
        .message()
        .await
        .unwrap();
    assert_eq!(reply.map(|r| r.len()), Some(1 << 20));
}

/// A peer that does not answer PINGs is closed with 4000; a client with no
/// call for the idle timeout is drained (GOAWAY, close 1000) and sees its
/// connection end.
async fn silent_peers_and_idle_connections_are_closed<R: Runtime>(rt: R) {
    let config = ServerConfig {
        core: Config {
            keepalive_interval: Some(Duration::from_millis(100)),
            keepalive_timeout: Duration::from_millis(100),
            idle_timeout: Some(Duration::from_millis(300)),
            ..Config::default()
        },
        ..ServerConfig::default()
    };
    let (_server, url) = serve(&rt, echo_router(), config).await;
    // Raw peer: reads (so it sees the close) but never answers the PING.
    let mut ws = raw(&rt, &url).await;
    assert_eq!(close_code::<R>(&mut ws).await, Some(4000));
    // A zrpc client answers PINGs, so only the idle timeout ends it.
    let client = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    let r = client.unary("t/Echo", b("x"), CallOptions::default()).await;
    assert_eq!(r.unwrap(), b("x"));
    let started = Instant::now();
    client.closed().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    let after = client.unary("t/Echo", b("x"), CallOptions::default()).await;
    assert_eq!(after.unwrap_err().code(), Code::Unavailable);
}

/// A peer that declares a WebSocket frame and sends only part of it holds
/// no more than the frame limit, and only until keepalive gives up on it:
/// the server closes the socket.
async fn a_peer_stuck_inside_a_message_is_closed<R: Runtime>(rt: R) {
    let config = ServerConfig {
        core: Config {
            keepalive_interval: Some(Duration::from_millis(100)),
            keepalive_timeout: Duration::from_millis(100),
            ..Config::default()
        },
        ..ServerConfig::default()
    };
    let (server, url) = serve(&rt, echo_router(), config).await;
    let addr = socket_addr_of(&url);
    let mut tcp = rt.connect_tcp(addr.clone()).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: zrpc.v1\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "no upgrade response");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // A masked binary frame declaring 60,000 bytes; 10 are sent.
    let mut frame = vec![0x82, 0xfe, 0xea, 0x60, 1, 2, 3, 4];
    frame.extend_from_slice(&[0u8; 10]);
    tcp.write_all(&frame).await.unwrap();
    // Keepalive gives up on it; the server closes and the socket ends.
    let mut total = 0;
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(total < 1 << 20);
    }
    assert_eq!(server.live_calls(), 0);
}

/// Past max_connections: HTTP 503 before any upgrade; past the per-address
/// limit: HTTP 429. The connections already served are unaffected.
async fn connection_limits_answer_with_http_status<R: Runtime>(rt: R) {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let (server, url) = serve(&rt, echo_router(), config).await;
    let a = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    let _b = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    assert_eq!(http_status(&rt, &url, "").await, 503);
    let err = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Refused(r) if r.status() == 503),
        "{err}"
    );
    assert_eq!(server.connections(), 2);
    assert_eq!(
        a.unary("t/Echo", b("x"), CallOptions::default())
            .await
            .unwrap(),
        b("x")
    );

    let config = ServerConfig {
        max_connections_per_ip: 1,
        ..ServerConfig::default()
    };
    let (_server, url) = serve(&rt, echo_router(), config).await;
    let first = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    assert_eq!(http_status(&rt, &url, "").await, 429);
    // When the first goes, its slot is free again.
    first.drain();
    first.closed().await;
    drop(first);
    let mut ok = false;
    for _ in 0..100 {
        if zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        rt.sleep_until(Instant::now() + Duration::from_millis(10))
            .await;
    }
    assert!(ok, "the address's slot was not released");
}

/// A page on another site cannot open a connection (403 before the
/// upgrade); same-origin pages, listed origins and non-browser clients can.
async fn origin_policy<R: Runtime>(rt: R) {
    let config = ServerConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..ServerConfig::default()
    };
    let (_server, url) = serve(&rt, echo_router(), config).await;
    let addr = socket_addr_of(&url);
    assert_eq!(
        http_status(&rt, &url, "Origin: https://evil.example\r\n").await,
        403
    );
    assert_eq!(http_status(&rt, &url, "Origin: null\r\n").await, 403);
    assert_eq!(
        http_status(&rt, &url, "Origin: https://app.example\r\n").await,
        101
    );
    assert_eq!(
        http_status(&rt, &url, &format!("Origin: http://{addr}\r\n")).await,
        101
    );
    assert_eq!(http_status(&rt, &url, "").await, 101);
    // Same origin is judged on the scheme too: an https page is not the
    // origin of a plain server (unless a proxy says it terminated TLS).
    assert_eq!(
        http_status(&rt, &url, &format!("Origin: https://{addr}\r\n")).await,
        403
    );
    assert_eq!(
        http_status(
            &rt,
            &url,
            &format!("Origin: https://{addr}\r\nX-Forwarded-Proto: https\r\n")
        )
        .await,
        101
    );
}

/// DNS rebinding: a page on a name the attacker re-pointed at the server
/// sends an `Origin` and a `Host` that agree. The server answers same-origin
/// pages only under IP addresses, localhost and the names it was given.
async fn dns_rebinding_is_refused<R: Runtime>(rt: R) {
    let port = |url: &str| socket_addr_of(url).rsplit_once(':').unwrap().1.to_owned();
    let upgrade = |host: &str, origin: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: zrpc.v1\r\n\r\n"
        )
    };
    let (_server, url) = serve(&rt, echo_router(), ServerConfig::default()).await;
    let p = port(&url);
    let rebind = format!("rebind.attacker.example:{p}");
    assert_eq!(
        raw_status(&rt, &url, &upgrade(&rebind, &format!("http://{rebind}"))).await,
        403
    );
    let local = format!("localhost:{p}");
    assert_eq!(
        raw_status(&rt, &url, &upgrade(&local, &format!("http://{local}"))).await,
        101
    );
    // A name the server was configured for.
    let config = ServerConfig {
        allowed_hosts: vec!["app.internal".into()],
        ..ServerConfig::default()
    };
    let (_server, url) = serve(&rt, echo_router(), config).await;
    let named = format!("app.internal:{}", port(&url));
    assert_eq!(
        raw_status(&rt, &url, &upgrade(&named, &format!("http://{named}"))).await,
        101
    );
    let other = format!("rebind.attacker.example:{}", port(&url));
    assert_eq!(
        raw_status(&rt, &url, &upgrade(&other, &format!("http://{other}"))).await,
        403
    );
    // Clients without Origin are not concerned.
    assert_eq!(
        raw_status(&rt, &url, &upgrade(&other, "").replace("Origin: \r\n", "")).await,
        101
    );
}

/// Upgrade requests HTTP does not allow get an HTTP answer saying why, not a
/// closed socket.
async fn malformed_upgrades_get_an_http_answer<R: Runtime>(rt: R) {
    let (_server, url) = serve(&rt, echo_router(), ServerConfig::default()).await;
    let addr = socket_addr_of(&url);
    let ws_headers = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    for method in ["POST", "PUT", "OPTIONS", "DELETE"] {
        let req = format!("{method} / HTTP/1.1\r\nHost: {addr}\r\n{ws_headers}\r\n");
        assert_eq!(raw_status(&rt, &url, &req).await, 405, "{method}");
    }
    let req = format!("GET / HTTP/1.0\r\nHost: {addr}\r\n{ws_headers}\r\n");
    assert_eq!(raw_status(&rt, &url, &req).await, 505);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    );
    assert_eq!(raw_status(&rt, &url, &req).await, 400);
    // A proxy that stripped Connection: the upgrade is not passed on.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(raw_status(&rt, &url, &req).await, 426);
    good_call(&rt, &url).await;
}

#[derive(Debug)]
struct User(String);

/// The authentication hook refuses a request without a valid token (401)
/// and names the user for every call of an accepted connection; an
/// interceptor refuses calls whose metadata lacks a role.
async fn authentication_and_interceptors<R: Runtime>(rt: R) {
    let router = Router::new()
        .unary("t/WhoAmI", |ctx, _req: Bytes| async move {
            let user = ctx
                .identity::<User>()
                .map(|u| u.0.clone())
                .unwrap_or_default();
            Ok::<_, Status>(Bytes::from(user))
        })
        .intercept(|ctx| match ctx.metadata().get_str("x-role") {
            Some("reader") => Ok(()),
            _ => Err(Status::new(Code::PermissionDenied, "role reader required")),
        });
    let server = Server::with_config(router, ServerConfig::default(), rt.clone()).authenticate(
        |req: &UpgradeRequest| {
            let token = req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .or_else(|| req.cookie("token"))
                .or_else(|| req.query().and_then(|q| q.strip_prefix("token=")));
            match token {
                Some("s3cret") => Ok(User("ann".into())),
                Some(_) => Err(Refusal::forbidden("bad token")),
                None => Err(Refusal::unauthorized("token required")),
            }
        },
    );
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
    });

    let err = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Refused(r) if r.status() == 401 && r.reason() == "token required"),
        "{err}"
    );
    let bad = ClientConfig {
        headers: vec![("authorization".into(), "Bearer nope".into())],
        ..ClientConfig::default()
    };
    let err = zrpc_async::connect(&url, bad, rt.clone())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Refused(r) if r.status() == 403),
        "{err}"
    );

    let role = CallOptions {
        metadata: Metadata::new().with("x-role", "reader").unwrap(),
        ..CallOptions::default()
    };
    for config in [
        ClientConfig {
            headers: vec![("authorization".into(), "Bearer s3cret".into())],
            ..ClientConfig::default()
        },
        ClientConfig {
            headers: vec![("cookie".into(), "theme=dark; token=s3cret".into())],
            ..ClientConfig::default()
        },
    ] {
        let c = zrpc_async::connect(&url, config, rt.clone()).await.unwrap();
        let who = c.unary("t/WhoAmI", b(""), role.clone()).await.unwrap();
        assert_eq!(who, b("ann"));
        let denied = c.unary("t/WhoAmI", b(""), CallOptions::default()).await;
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    }
    let c = zrpc_async::connect(
        &format!("{url}?token=s3cret"),
        ClientConfig::default(),
        rt.clone(),
    )
    .await
    .unwrap();
    assert_eq!(c.unary("t/WhoAmI", b(""), role).await.unwrap(), b("ann"));
}

/// Dropping every clone of a `Client` drains its connection: the server
/// sees it close.
async fn dropping_the_last_client_handle_closes_the_connection<R: Runtime>(rt: R) {
    let (server, url) = serve(&rt, echo_router(), ServerConfig::default()).await;
    let client = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    let clone = client.clone();
    assert_eq!(
        client
            .unary("t/Echo", b("x"), CallOptions::default())
            .await
            .unwrap(),
        b("x")
    );
    drop(client);
    assert!(!clone.is_draining(), "a clone still holds the connection");
    let watcher = Client::clone(&clone);
    drop(clone);
    assert!(!watcher.is_draining());
    drop(watcher);
    // Nothing observable is left on the client side: watch the server.
    let mut closed = false;
    for _ in 0..200 {
        if server.connections() == 0 {
            closed = true;
            break;
        }
        rt.sleep_until(Instant::now() + Duration::from_millis(10))
            .await;
    }
    assert!(closed, "the server still holds the connection");
}

/// A client that closes the WebSocket (1000, as a draining client does)
/// gets the server's close reply, not a dropped socket (which browsers
/// report as 1006).
async fn a_client_close_is_answered_with_a_close<R: Runtime>(rt: R) {
    let (_server, url) = serve(&rt, echo_router(), ServerConfig::default()).await;
    let mut ws = raw(&rt, &url).await;
    ws.send(Message::Binary(Bytes::from_static(&[0, 0, 0, 0, 0, 0])))
        .await
        .unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert_eq!(close_code::<R>(&mut ws).await, Some(1000));
}

/// `CallOptions { timeout: Some(Duration::MAX) }` is no panic: the call
/// runs with the longest deadline the wire can carry.
async fn a_timeout_too_large_to_represent_is_no_deadline<R: Runtime>(rt: R) {
    let (_server, url) = serve(&rt, echo_router(), ServerConfig::default()).await;
    let client = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
        .await
        .unwrap();
    let opts = CallOptions {
        timeout: Some(Duration::MAX),
        ..CallOptions::default()
    };
    assert_eq!(client.unary("t/Echo", b("x"), opts).await.unwrap(), b("x"));
}

/// A listener whose accept keeps failing (as at the file-descriptor limit)
/// is retried with a growing pause, not in a busy loop.
#[test]
fn accept_errors_back_off() {
    struct Failing(
        Arc<std::sync::Mutex<Vec<Instant>>>,
        Arc<AtomicUsize>,
        Arc<tokio::sync::Notify>,
    );
    impl Listener for Failing {
        type Stream = <TokioRuntime as Runtime>::Tcp;
        async fn accept(&mut self) -> std::io::Result<(Self::Stream, SocketAddr)> {
            self.0.lock().unwrap().push(Instant::now());
            if self.1.fetch_add(1, Ordering::SeqCst) >= 6 {
                self.2.notify_one();
                std::future::pending::<()>().await;
            }
            Err(std::io::Error::other("Too many open files"))
        }
        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            Ok("127.0.0.1:1".parse().unwrap())
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let server = Server::new(Router::new(), TokioRuntime);
        let s = server.clone();
        let seventh = Arc::new(tokio::sync::Notify::new());
        let l = Failing(times.clone(), calls, seventh.clone());
        let serving = tokio::spawn(async move { s.serve(l).await });
        seventh.notified().await;
        server.shutdown().await;
        serving.await.unwrap().unwrap();
        let t = times.lock().unwrap().clone();
        assert_eq!(t.len(), 7);
        // Pauses of 5, 10, 20, 40, 80, 160 ms: each at least the last.
        for (i, w) in t.windows(2).enumerate() {
            let pause = w[1] - w[0];
            assert!(
                pause >= Duration::from_millis(5 << i),
                "pause {i}: {pause:?}"
            );
        }
    });
}

/// A `wss://` server with a certificate made at run time: a client that
/// trusts it calls; one that trusts only the public roots, and a plain
/// `ws://` client, are refused.
async fn tls_serves_wss_and_refuses_what_it_should<R: Runtime>(rt: R) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let config = ServerConfig {
        tls: Some(ServerTls::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap()),
        ..ServerConfig::default()
    };
    let (_server, url) = serve(&rt, echo_router(), config).await;
    let wss = url.replacen("ws://", "wss://", 1);
    let trusting = ClientConfig {
        tls: Some(ClientTls::from_ca_pem(cert_pem.as_bytes()).unwrap()),
        ..ClientConfig::default()
    };
    let c = zrpc_async::connect(&wss, trusting.clone(), rt.clone())
        .await
        .unwrap();
    assert_eq!(
        c.unary("t/Echo", b("secret"), CallOptions::default())
            .await
            .unwrap(),
        b("secret")
    );
    let localhost = wss.replacen("127.0.0.1", "localhost", 1);
    let c = zrpc_async::connect(&localhost, trusting, rt.clone())
        .await
        .unwrap();
    assert_eq!(
        c.unary("t/Echo", b("x"), CallOptions::default())
            .await
            .unwrap(),
        b("x")
    );
    let untrusting = zrpc_async::connect(&wss, ClientConfig::default(), rt.clone()).await;
    assert!(
        matches!(untrusting, Err(Error::Io(_))),
        "{:?}",
        untrusting.err()
    );
    assert!(
        zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
            .await
            .is_err()
    );
    assert!(ServerTls::from_pem(b"not pem", key_pem.as_bytes()).is_err());
}

/// A server that accepts TCP and never answers the upgrade: the client's
/// connect gives up after `connect_timeout` with `HandshakeTimeout`.
async fn a_server_that_never_answers_cannot_hold_a_client<R: Runtime>(rt: R) {
    let mut silent = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let url = format!("ws://{}/", silent.local_addr().unwrap());
    // Accept (and keep) the connection, and say nothing.
    let held = async { silent.accept().await.ok() };
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let (_held, result) =
        futures_lite::future::zip(held, zrpc_async::connect(&url, config, rt.clone())).await;
    match result {
        Err(Error::HandshakeTimeout) => {}
        Err(e) => panic!("expected HandshakeTimeout, got {e}"),
        Ok(_) => panic!("connected to a server that never answered"),
    }
}

/// A hostile server sends far more messages than the call's credit allows,
/// without waiting for CREDIT: the client refuses the connection (close
/// 1002) once the credit it granted is exceeded, having delivered at most
/// what it granted. (A server that stays under the credit the client keeps
/// granting as it reads is no violation; the BATCH makes the excess certain.)
async fn a_server_exceeding_credit_is_caught_at_once<R: Runtime>(rt: R) {
    use async_tungstenite::tungstenite::handshake::server::{Request, Response};
    let mut listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let hostile = async {
        let (tcp, _) = listener.accept().await.unwrap();
        #[allow(clippy::result_large_err)] // the callback's type is tungstenite's
        let negotiate = |_: &Request, mut resp: Response| {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("zrpc.v1"),
            );
            Ok(resp)
        };
        let mut ws = async_tungstenite::accept_hdr_async(tcp, negotiate)
            .await
            .unwrap();
        ws.send(Message::Binary(
            Frame::Settings(Default::default()).to_bytes(),
        ))
        .await
        .unwrap();
        // Wait for the call, then flood it.
        let mut stream = None;
        while stream.is_none() {
            let Some(Ok(Message::Binary(m))) = ws.next().await else {
                return ws;
            };
            stream = frames_of(m).into_iter().find_map(|f| match f {
                Frame::Open(o) => Some(o.stream.0),
                _ => None,
            });
        }
        // First 100 messages in one BATCH: the client handles a WebSocket
        // message whole, so however fast it reads, the credit it grants can
        // not grow inside it; 84 of them are beyond the credit of 16.
        let stream = stream.unwrap();
        let mut batch = vec![zrpc_core::frame::kind::BATCH, 0, 0, 0, 0, 0];
        for _ in 0..100 {
            let Message::Binary(frame) = message(stream, false, false, b("flood")) else {
                unreachable!()
            };
            batch.extend_from_slice(&(frame.len() as u16).to_be_bytes());
            batch.extend_from_slice(&frame);
        }
        if ws.send(Message::Binary(batch.into())).await.is_err() {
            return ws;
        }
        // Then one message at a time, while the client reads.
        for _ in 0..2_000 {
            if ws
                .send(message(stream, false, false, b("flood")))
                .await
                .is_err()
            {
                break;
            }
        }
        ws
    };
    let client = async {
        let client = zrpc_async::connect(&url, ClientConfig::default(), rt.clone())
            .await
            .unwrap();
        let mut call = client
            .server_streaming("t/Flood", b("x"), CallOptions::default())
            .await
            .unwrap();
        let started = Instant::now();
        let mut got = 0u32;
        let err = loop {
            match call.message().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("the stream ended normally"),
                Err(e) => break e,
            }
        };
        (got, err, started.elapsed())
    };
    let (_ws, (got, err, took)) = futures_lite::future::zip(hostile, client).await;
    eprintln!("credit violation caught after {got} messages, {took:?}: {err}");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        err.message().contains("1002") || err.message().contains("credit"),
        "{err}"
    );
    assert!(got <= 16, "delivered {got} messages on a credit of 16");
}
