//! Slow consumers, bad peers and killed clients, over real sockets.

mod common;

use std::sync::atomic::Ordering;

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::{Bytes as WsBytes, Message};
use bytes::Bytes;
use common::*;
use futures_lite::StreamExt;
use zrpc_core::frame::Open;
use zrpc_core::{Frame, Method};
use zrpc_tokio::*;

type RawWs = async_tungstenite::WebSocketStream<TokioAdapter<tokio::net::TcpStream>>;

/// A raw WebSocket that negotiated zrpc.v1 but speaks whatever the test sends.
async fn raw(url: &str) -> RawWs {
    let tcp = tokio::net::TcpStream::connect(socket_addr_of(url))
        .await
        .unwrap();
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("zrpc.v1"),
    );
    let (ws, resp) = async_tungstenite::client_async(req, TokioAdapter::new(tcp))
        .await
        .unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "zrpc.v1"
    );
    ws
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut RawWs) -> Option<u16> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_stays_within_its_credit_while_another_stream_flows() {
    let fx = tokio_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(async {
        // 100 MB offered; the client reads one message and stops.
        let mut big = client
            .server_streaming("t.T/Big", b("go"), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(big.message().await.unwrap().unwrap().len(), 64 * 1024);
        // Meanwhile 2,000 messages flow on another call of the same connection.
        let mut other = client
            .server_streaming(
                "t.T/Count",
                Bytes::copy_from_slice(&2000u32.to_be_bytes()),
                CallOptions::default(),
            )
            .await
            .unwrap();
        let mut n = 0;
        while other.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2000);
        // The stalled handler sent at most what the client's credit allows:
        // one read, 16 of credit (so about 1 MiB in memory, not 100 MB).
        let sent = BIG_SENT.load(Ordering::SeqCst);
        assert!(
            sent <= 1 + 16 + 1,
            "handler sent {sent} messages past the credit"
        );
        drop(big);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_get_their_close_codes_and_others_are_unaffected() {
    let fx = tokio_server().await;
    let good = zrpc_tokio::connect(&fx.url).await.unwrap();
    let open_bad_utf8 = {
        let mut f = Frame::Open(Open {
            stream: StreamId(1),
            kind: CallKind::Unary,
            timeout_ms: 0,
            initial_credit: 1,
            method: Method::new("ab").unwrap(),
            metadata: Metadata::new(),
        })
        .to_bytes()
        .to_vec();
        let at = f.len() - 4; // the method's two bytes, before the empty metadata
        f[at] = 0xff;
        f[at + 1] = 0xfe;
        f
    };
    let cases: Vec<(&str, Message, u16)> = vec![
        (
            "garbage",
            Message::Binary(WsBytes::from_static(b"\xde\xad\xbe\xef\x00\x01\x02")),
            1002,
        ),
        (
            "truncated CREDIT",
            Message::Binary(WsBytes::from_static(b"\x07\x00\x00\x00\x00\x01\x00")),
            1002,
        ),
        (
            "unknown frame type",
            Message::Binary(WsBytes::from_static(b"\x2a\x00\x00\x00\x00\x01")),
            1002,
        ),
        (
            "method not UTF-8",
            Message::Binary(WsBytes::from(open_bad_utf8)),
            1002,
        ),
        ("text in v1", Message::text("hello"), 1003),
        (
            "oversized",
            Message::Binary(WsBytes::from(vec![3u8; 5 * 1024 * 1024])),
            1009,
        ),
    ];
    bounded(async {
        for (name, msg, code) in cases {
            let mut ws = raw(&fx.url).await;
            let _ = ws.send(msg).await;
            assert_eq!(close_code(&mut ws).await, Some(code), "{name}");
            // The well-behaved connection keeps working.
            let r = good
                .unary("t.T/Unary", b("still here"), CallOptions::default())
                .await
                .unwrap();
            assert_eq!(r, b("still here"), "after {name}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_stream_leaves_nothing_behind() {
    let mut fx = tokio_server().await;
    bounded(async {
        let mut ws = raw(&fx.url).await;
        let open = Frame::Open(Open {
            stream: StreamId(1),
            kind: CallKind::ServerStreaming,
            timeout_ms: 0,
            initial_credit: 4,
            method: Method::new("t.T/Forever").unwrap(),
            metadata: Metadata::new(),
        });
        let req = Frame::Message {
            stream: StreamId(1),
            end_stream: true,
            more: false,
            cursor: None,
            payload: Bytes::from_static(b"go"),
        };
        ws.send(Message::Binary(open.to_bytes())).await.unwrap();
        ws.send(Message::Binary(req.to_bytes())).await.unwrap();
        // Wait until the stream runs (a MESSAGE arrives), then kill the socket.
        loop {
            if let Some(Ok(Message::Binary(b))) = ws.next().await
                && b[0] == 3
            {
                break;
            }
        }
        drop(ws);
        assert_eq!(fx.events.recv().await.unwrap(), "forever-dropped");
        assert_eq!(fx.server.live_calls(), 0);
        assert_eq!(fx.server.connections(), 0);
    })
    .await;
}

async fn server_with(config: ServerConfig) -> (Server<TokioRuntime>, String) {
    let router = seed_echo(TokioRuntime, 1, std::time::Duration::ZERO);
    let server = Server::with_config(router, config, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_limits_connections_handshake_time_and_legacy() {
    use tokio::io::AsyncReadExt;
    bounded(async {
        // Over max_connections: the extra connection is closed at once.
        let (server, url) = server_with(ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        })
        .await;
        let first = zrpc_tokio::connect(&url).await.unwrap();
        assert!(
            first
                .unary("echo", b("x"), CallOptions::default())
                .await
                .is_err_and(|s| s.code() == Code::Unimplemented)
        );
        assert!(zrpc_tokio::connect(&url).await.is_err());
        assert_eq!(server.connections(), 1);
        // The first connection is unaffected.
        let mut call = first
            .server_streaming("echo", b("y"), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(call.message().await.unwrap(), Some(b("y")));

        // A peer that never finishes its handshake is dropped after the timeout.
        let config = ServerConfig {
            handshake_timeout: std::time::Duration::from_millis(100),
            ..ServerConfig::default()
        };
        let (_server, url) = server_with(config).await;
        let mut tcp = tokio::net::TcpStream::connect(socket_addr_of(&url))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            tcp.read(&mut buf).await.unwrap(),
            0,
            "the server closes the idle socket"
        );

        // Legacy switched off: a client without zrpc.v1 is refused at the handshake.
        let (_server, url) = server_with(ServerConfig {
            legacy: false,
            ..ServerConfig::default()
        })
        .await;
        assert!(matches!(
            zrpc_tokio::legacy_call(&url, "echo", b("x")).await,
            Err(Error::WebSocket(_))
        ));
        let v1 = zrpc_tokio::connect(&url).await.unwrap();
        let mut call = v1
            .server_streaming("echo", b("z"), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(call.message().await.unwrap(), Some(b("z")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_read_buffer_still_reads_large_messages_whole() {
    bounded(async {
        let (_server, url) = server_with(ServerConfig {
            read_buffer_size: 256,
            ..ServerConfig::default()
        })
        .await;
        let client = zrpc_tokio::connect(&url).await.unwrap();
        let big: Bytes = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut call = client
            .server_streaming("echo", big.clone(), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(call.message().await.unwrap(), Some(big));
        assert_eq!(call.message().await.unwrap(), None);
    })
    .await;
}
