//! What the async layer needs from a runtime: spawning, a timer, and TCP.
//! `zrpc-tokio` and `zrpc-smol` each implement this once; everything else
//! (connecting, serving, the examples' logic) is generic over it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

/// Spawning, timers and TCP of one async runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A connected TCP stream, as futures-io.
    type Tcp: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A TCP listener.
    type Listener: Listener<Stream = Self::Tcp>;

    /// Runs a future in the background; it is not joined.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Runs blocking work (a database call, file I/O) on a thread pool,
    /// off the reactor threads; a panic in `f` resumes in the caller.
    fn spawn_blocking<T, F>(&self, f: F) -> impl Future<Output = T> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;

    /// Connects to `host:port` (with TCP_NODELAY set).
    fn connect_tcp(&self, addr: String) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Listens on `host:port`.
    fn bind(&self, addr: String) -> impl Future<Output = io::Result<Self::Listener>> + Send;
}

/// A source of incoming byte streams (a TCP listener).
pub trait Listener: Send + 'static {
    /// The stream type accepted.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address listened on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}
