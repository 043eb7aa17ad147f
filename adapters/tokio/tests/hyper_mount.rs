//! The hyper_mount example, run: ordinary HTTP routes answer, and zrpc
//! served at /rpc on the same port handles v1 and legacy calls.

#[path = "../examples/hyper_mount.rs"]
#[allow(dead_code)]
mod example;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zrpc_tokio::{Bytes, CallOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zrpc_at_rpc_beside_http_routes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener, example::zrpc_server()));

    // An ordinary route.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("ok"), "{resp}");

    // A Connect call on the same port, through Server::serve_http.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /demo.Echo/Say HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\n\
          Content-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("hello"), "{resp}");

    // zrpc v1 at /rpc.
    let url = format!("ws://{addr}/rpc");
    let client = zrpc_tokio::connect(&url).await.unwrap();
    let mut call = client
        .server_streaming(
            "echo",
            Bytes::from_static(b"mounted"),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let mut n = 0;
    while let Some(m) = call.message().await.unwrap() {
        assert_eq!(&m[..], b"mounted");
        n += 1;
    }
    assert_eq!(n, 10);

    // The seed's format at /rpc too.
    let mut legacy = zrpc_tokio::legacy_call(&url, "echo", Bytes::from_static(b"old"))
        .await
        .unwrap();
    let mut n = 0;
    while legacy.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
}
