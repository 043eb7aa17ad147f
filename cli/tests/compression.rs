//! Compression on the wire (PROTOCOL.md 3.4), measured where it matters:
//! `ListPeople` of 10,000 people through the Rust client, counting the
//! bytes its socket reads, from a server that compresses (as `zrpc serve`
//! does, from 1,024 bytes) and from one that does not.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use zrpc_async::Runtime;
use zrpc_cli::proto::people::people_client::PeopleClient;
use zrpc_cli::proto::people::{ListPeopleRequest, Person};
use zrpc_core::Config;
use zrpc_proto::CallOptions;
use zrpc_tokio::{ClientConfig, Server, ServerConfig, TokioRuntime};

/// A stream that counts the bytes read from it.
struct Counting<S> {
    inner: S,
    read: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.read.fetch_add(*n, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A people server on `store` that compresses from `min` bytes (0: never).
async fn serve(store: Arc<dyn zrpc_cli::store::Store>, min: u32) -> (Server<TokioRuntime>, String) {
    let router = zrpc_cli::router(TokioRuntime, store, Duration::ZERO);
    let config = ServerConfig {
        core: Config {
            compress_min_size: min,
            ..Config::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::with_config(router, config, TokioRuntime);
    let listener = TokioRuntime.bind("127.0.0.1:0".into()).await.unwrap();
    let addr = zrpc_async::Listener::local_addr(&listener)
        .unwrap()
        .to_string();
    let s = server.clone();
    tokio::spawn(async move { s.serve(listener).await });
    (server, addr)
}

/// Every person, and the bytes the client's socket read for them.
async fn list_all(addr: &str, config: ClientConfig) -> (Vec<Person>, usize) {
    let read = Arc::new(AtomicUsize::new(0));
    let tcp = TokioRuntime.connect_tcp(addr.to_owned()).await.unwrap();
    let stream = Counting {
        inner: tcp,
        read: read.clone(),
    };
    let client = zrpc_async::connect_stream(stream, &format!("ws://{addr}/"), config, TokioRuntime)
        .await
        .unwrap();
    let people = PeopleClient::new(client.clone());
    let before = read.load(Ordering::Relaxed);
    let mut stream = people
        .list_people(&ListPeopleRequest::default(), CallOptions::default())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        out.push(p);
    }
    let bytes = read.load(Ordering::Relaxed) - before;
    client.close().await;
    (out, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_people_of_ten_thousand_crosses_at_under_thirty_percent() {
    let store = zrpc_cli::store::open(None, 1).unwrap();
    let (server, addr) = serve(store.clone(), 1024).await;
    {
        let client = zrpc_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
        let people = PeopleClient::new(client);
        let mut import = people.import_people(CallOptions::default()).await.unwrap();
        for i in 0..10_000 {
            let p = Person {
                name: format!("Person {i:05}"),
                email: format!("person{i}@example.com"),
                url: format!("https://example.com/people/{i}"),
                ..Person::default()
            };
            import.send(&p).await.unwrap();
        }
        assert_eq!(import.finish().await.unwrap().created, 10_000);
    }
    let (plain_server, plain_addr) = serve(store, 0).await;

    let (compressed, packed) = list_all(&addr, ClientConfig::default()).await;
    let (plain, raw) = list_all(&plain_addr, ClientConfig::default()).await;
    // A client that does not accept gzip gets plain messages from the
    // compressing server.
    let no_gzip = ClientConfig {
        core: Config {
            accept_gzip: false,
            ..Config::default()
        },
        ..ClientConfig::default()
    };
    let (refused, unpacked) = list_all(&addr, no_gzip).await;

    assert_eq!(compressed.len(), 10_000);
    assert_eq!(compressed, plain, "the same people, in the same order");
    assert_eq!(refused, plain);
    eprintln!(
        "ListPeople of 10,000: {raw} bytes plain, {packed} compressed ({:.1}%), {unpacked} to a client without gzip",
        packed as f64 * 100.0 / raw as f64
    );
    assert!(packed * 100 <= raw * 30, "{packed} of {raw} bytes");
    assert!(unpacked * 100 >= raw * 95, "{unpacked} of {raw} bytes");
    server.shutdown().await;
    plain_server.shutdown().await;
}
