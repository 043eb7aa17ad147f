//! hyper's runtime traits over the [`Runtime`] trait and futures-io, so
//! tokio and smol servers share one HTTP implementation.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use hyper::rt::ReadBufCursor;

use crate::runtime::Runtime;
use crate::signal::lock;

/// Bytes read from the socket at a time (a buffer on the stack of the read,
/// so an idle connection holds none).
const SCRATCH: usize = 8 * 1024;

/// A futures-io stream as hyper's I/O. Reads go through a stack buffer
/// and hyper's safe `put_slice` (one copy per read, no `unsafe`). Writes
/// are gathered: futures-io cannot say whether a stream's vectored write is
/// real (tokio's stream through its futures-io adapter, and the replaying
/// `Rewind`, write the first buffer only), and HTTP/2 writes each frame as
/// a header and a payload, so hyper's buffers are copied into one of ours
/// (up to [`GATHER`] bytes) and written with one syscall on flush or when
/// full.
pub(crate) struct Io<S> {
    inner: S,
    gathered: Vec<u8>,
}

/// Bytes gathered before a write must go out.
const GATHER: usize = 64 * 1024;

impl<S> Io<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            gathered: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Io<S> {
    /// Writes out everything gathered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut at = 0;
        let result = loop {
            if at == self.gathered.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &self.gathered[at..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.gathered.drain(..at);
        if self.gathered.is_empty() && self.gathered.capacity() > SCRATCH {
            // An idle connection keeps no large write buffer.
            self.gathered = Vec::new();
        }
        result
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for Io<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut scratch = [0u8; SCRATCH];
        let want = buf.remaining().min(SCRATCH);
        let n =
            futures_lite::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut scratch[..want]))?;
        buf.put_slice(&scratch[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for Io<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.gathered.len() >= GATHER {
            futures_lite::ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(GATHER - this.gathered.len());
            this.gathered.extend_from_slice(&b[..take]);
            n += take;
            if take < b.len() {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures_lite::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures_lite::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

/// Spawns hyper's tasks (one per HTTP/2 stream's body) on the runtime.
#[derive(Clone)]
pub(crate) struct Exec<R>(pub(crate) R);

impl<R, F> hyper::rt::Executor<F> for Exec<R>
where
    R: Runtime,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(async move {
            fut.await;
        });
    }
}

/// hyper's timer (header read timeout, HTTP/2 keepalive) on the runtime.
#[derive(Clone)]
pub(crate) struct Timer<R>(pub(crate) R);

type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A runtime sleep behind a mutex: hyper wants `Sync`, the runtimes' sleeps
/// are only `Send`; the lock is only ever taken by the one task polling it.
struct Sleep(Mutex<SleepFuture>);

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        lock(&self.0).as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Sleep {}

impl<R: Runtime> hyper::rt::Timer for Timer<R> {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep(Mutex::new(Box::pin(self.0.sleep_until(deadline)))))
    }
}
