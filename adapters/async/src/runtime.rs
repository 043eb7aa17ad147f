//! What the async layer needs from a runtime: spawning, a timer, and a
//! listener. `zrpc-tokio` and `zrpc-smol` each implement these once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncWrite};

/// Spawning and timers of one async runtime.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// Runs a future in the background; it is not joined.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static;
}

/// A source of incoming byte streams (a TCP listener).
pub trait Listener: Send + 'static {
    /// The stream type accepted.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}
