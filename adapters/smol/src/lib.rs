//! zrpc for smol applications.
//!
//! Everything but spawning, timers and TCP lives in `zrpc-async`; this crate
//! adds [`SmolRuntime`] and short entry points ([`serve`], [`connect`],
//! [`legacy_call`], [`serve_io`]), and re-exports the rest, so smol and tokio
//! users write the same code.
//!
//! ```no_run
//! use zrpc_smol::{Bytes, CallOptions, Router, Server, SmolRuntime, Status};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! let router = Router::new().unary("demo.Echo/Say", |_ctx, req: Bytes| async move { Ok::<_, Status>(req) });
//! let server = Server::new(router, SmolRuntime);
//! let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("ws://{}/", listener.local_addr()?);
//! smol::spawn({ let server = server.clone(); async move { zrpc_smol::serve(&server, listener).await } }).detach();
//!
//! let client = zrpc_smol::connect(&url).await?;
//! let reply = client.unary("demo.Echo/Say", Bytes::from_static(b"hi"), CallOptions::default()).await?;
//! assert_eq!(&reply[..], b"hi");
//! # Ok(()) }) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// The runtime-independent API, re-exported by name (the runtime-generic
/// entry points `connect`, `legacy_call`, ... are this crate's own, bound
/// to its runtime).
pub use zrpc_async::{
    Bytes, Call, CallContext, CallKind, CallOptions, Client, ClientConfig, ClientTls, Code, Config,
    Error, Listener, Metadata, Mode, Refusal, RequestStream, ResponseSink, Router, Runtime,
    SUBPROTOCOL_V1, Server, ServerConfig, ServerTls, Service, StaticFiles, Status, StreamId,
    TlsError, UpgradeRequest, accept_key, offers_v1,
};

/// smol's spawning (global executor), timers and TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

impl Runtime for SmolRuntime {
    type Tcp = smol::net::TcpStream;
    type Listener = SmolListener;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        smol::spawn(future).detach();
    }

    fn spawn_blocking<T, F>(&self, f: F) -> impl Future<Output = T> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        smol::unblock(f)
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let timer = smol::Timer::at(deadline);
        async move {
            timer.await;
        }
    }

    async fn connect_tcp(&self, addr: String) -> io::Result<Self::Tcp> {
        let tcp = smol::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    async fn bind(&self, addr: String) -> io::Result<Self::Listener> {
        Ok(SmolListener(smol::net::TcpListener::bind(addr).await?))
    }
}

/// A smol TCP listener as a zrpc [`Listener`].
pub struct SmolListener(pub smol::net::TcpListener);

impl Listener for SmolListener {
    type Stream = smol::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Accepts on `listener` until `server.shutdown()`.
pub async fn serve(
    server: &Server<SmolRuntime>,
    listener: smol::net::TcpListener,
) -> io::Result<()> {
    server.serve(SmolListener(listener)).await
}

/// Serves any futures-io byte stream: WebSocket handshake, then zrpc.
pub async fn serve_io<S>(
    server: &Server<SmolRuntime>,
    stream: S,
    peer: Option<SocketAddr>,
) -> Result<(), Error>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin + Send + 'static,
{
    server.serve_stream(stream, peer).await
}

/// Connects to `ws://host:port/path`, negotiating `zrpc.v1`.
pub async fn connect(url: &str) -> Result<Client, Error> {
    zrpc_async::connect(url, ClientConfig::default(), SmolRuntime).await
}

/// [`connect`] with settings (limits, handlers the server may call).
pub async fn connect_with(url: &str, config: ClientConfig) -> Result<Client, Error> {
    zrpc_async::connect(url, config, SmolRuntime).await
}

/// Calls an old server in the seed's format (one connection per call).
pub async fn legacy_call(url: &str, method: &str, payload: Bytes) -> Result<Call, Error> {
    zrpc_async::legacy_call(url, method, payload, SmolRuntime).await
}
