//! zrpc for tokio applications.
//!
//! Everything but spawning, timers and TCP lives in `zrpc-async`; this crate
//! adds [`TokioRuntime`] and short entry points ([`serve`], [`connect`],
//! [`legacy_call`], [`serve_io`], [`serve_upgraded`]), and re-exports the rest, so tokio and smol
//! users write the same code.
//!
//! ```no_run
//! use zrpc_tokio::{Bytes, CallOptions, Router, Server, Status, TokioRuntime};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().unary("demo.Echo/Say", |_ctx, req: Bytes| async move { Ok::<_, Status>(req) });
//! let server = Server::new(router, TokioRuntime);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/", listener.local_addr()?);
//! tokio::spawn({ let server = server.clone(); async move { zrpc_tokio::serve(&server, listener).await } });
//!
//! let client = zrpc_tokio::connect(&url).await?;
//! let reply = client.unary("demo.Echo/Say", Bytes::from_static(b"hi"), CallOptions::default()).await?;
//! assert_eq!(&reply[..], b"hi");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use async_tungstenite::tokio::TokioAdapter;
/// The runtime-independent API, re-exported by name (the runtime-generic
/// entry points `connect`, `legacy_call`, ... are this crate's own, bound
/// to its runtime).
pub use zrpc_async::{
    Bytes, Call, CallContext, CallKind, CallOptions, Client, ClientConfig, ClientTls, Code, Config,
    Error, Listener, Metadata, Mode, Refusal, RequestStream, ResponseSink, Router, Runtime,
    SUBPROTOCOL_V1, Server, ServerConfig, ServerTls, Service, StaticFiles, Status, StreamId,
    TlsError, UpgradeRequest, accept_key, offers_v1,
};

/// tokio's spawning, timers and TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioRuntime;

impl Runtime for TokioRuntime {
    type Tcp = TokioAdapter<tokio::net::TcpStream>;
    type Listener = TokioListener;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn spawn_blocking<T, F>(&self, f: F) -> impl Future<Output = T> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let task = tokio::task::spawn_blocking(f);
        async move {
            task.await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(deadline.into())
    }

    async fn connect_tcp(&self, addr: String) -> io::Result<Self::Tcp> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(TokioAdapter::new(tcp))
    }

    async fn bind(&self, addr: String) -> io::Result<Self::Listener> {
        Ok(TokioListener(tokio::net::TcpListener::bind(addr).await?))
    }
}

/// A tokio TCP listener as a zrpc [`Listener`].
pub struct TokioListener(pub tokio::net::TcpListener);

impl Listener for TokioListener {
    type Stream = TokioAdapter<tokio::net::TcpStream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((TokioAdapter::new(stream), peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Accepts on `listener` until `server.shutdown()`.
pub async fn serve(
    server: &Server<TokioRuntime>,
    listener: tokio::net::TcpListener,
) -> io::Result<()> {
    server.serve(TokioListener(listener)).await
}

/// Serves any tokio byte stream (after your own accept, TLS, or an HTTP
/// upgrade): WebSocket handshake, then zrpc until it closes.
pub async fn serve_io<S>(
    server: &Server<TokioRuntime>,
    stream: S,
    peer: Option<SocketAddr>,
) -> Result<(), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    server.serve_stream(TokioAdapter::new(stream), peer).await
}

/// Serves zrpc on a tokio connection your own HTTP server (hyper, axum)
/// has already upgraded to a WebSocket; see [`Server::serve_upgraded`].
pub async fn serve_upgraded<S>(
    server: &Server<TokioRuntime>,
    io: S,
    mode: Mode,
    peer: Option<SocketAddr>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    server
        .serve_upgraded(TokioAdapter::new(io), mode, peer)
        .await
}

/// Connects to `ws://host:port/path`, negotiating `zrpc.v1`.
pub async fn connect(url: &str) -> Result<Client, Error> {
    zrpc_async::connect(url, ClientConfig::default(), TokioRuntime).await
}

/// [`connect`] with settings (limits, handlers the server may call).
pub async fn connect_with(url: &str, config: ClientConfig) -> Result<Client, Error> {
    zrpc_async::connect(url, config, TokioRuntime).await
}

/// Calls an old server in the seed's format (one connection per call).
pub async fn legacy_call(url: &str, method: &str, payload: Bytes) -> Result<Call, Error> {
    zrpc_async::legacy_call(url, method, payload, TokioRuntime).await
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
