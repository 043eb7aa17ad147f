//! Accepting: the accept loop with its backoff, and each connection's
//! admission (limits per address and in all, refusals, TLS, then the
//! protocol by its first bytes).

use super::*;

/// Refusals (503, 429) being written at once; beyond it a connection over a
/// limit is closed without an answer.
pub(super) const MAX_REFUSALS: usize = 64;

/// Time a refused client gets to send its request head.
pub(super) const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed accept (EMFILE, say), doubling up to a second.
pub(super) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
pub(super) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl<R: Runtime> Server<R> {
    /// Accepts connections until [`shutdown`](Self::shutdown); each is
    /// served in its own tasks. Returns once shutdown has begun.
    ///
    /// A connection over [`ServerConfig::max_connections`] gets HTTP 503,
    /// one over [`ServerConfig::max_connections_per_ip`] HTTP 429. A failed
    /// accept (out of file descriptors, say) pauses accepting, from 5 ms
    /// doubling to 1 s while it keeps failing, and is logged once per run of
    /// failures.
    pub async fn serve<L: Listener>(&self, mut listener: L) -> io::Result<()> {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut failing = false;
        loop {
            if self.state.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            let next = async { Some(listener.accept().await) }
                .or(async {
                    self.state.stop.wait().await;
                    None
                })
                .await;
            match next {
                None => return Ok(()),
                Some(Ok((stream, peer))) => {
                    if failing {
                        tracing::info!("accepting connections again");
                    }
                    failing = false;
                    backoff = ACCEPT_BACKOFF_MIN;
                    self.admit(stream, peer);
                }
                // Per-connection accept errors (reset before accept, fd
                // limits) must not stop the server, nor spin it.
                Some(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "accept failed; backing off");
                    }
                    failing = true;
                    let resume = now() + backoff;
                    let stopped = async {
                        self.rt.sleep_until(resume).await;
                        false
                    }
                    .or(async {
                        self.state.stop.wait().await;
                        true
                    })
                    .await;
                    if stopped {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Serves an accepted connection in its own task, or refuses it.
    pub(super) fn admit<S>(&self, stream: S, peer: SocketAddr)
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let refusal = if self.state.open.load(Ordering::Acquire) >= self.config.max_connections {
            Some((503, "server at its connection limit"))
        } else {
            let mut m = lock(&self.state.per_ip);
            let n = m.entry(peer.ip()).or_insert(0);
            if *n >= self.config.max_connections_per_ip {
                Some((429, "too many connections from this address"))
            } else {
                *n += 1;
                None
            }
        };
        if let Some((status, reason)) = refusal {
            if self.state.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS {
                self.state.refusing.fetch_sub(1, Ordering::AcqRel);
                return; // dropped: too many refusals already in progress
            }
            let this = self.clone();
            self.rt.spawn(async move {
                let mut stream = stream;
                let deadline = now() + REFUSAL_TIMEOUT;
                let read = async { upgrade::read_head(&mut stream).await.is_ok() }.or(async {
                    this.rt.sleep_until(deadline).await;
                    false
                });
                if read.await {
                    upgrade::respond(&mut stream, status, reason).await;
                }
                this.state.refusing.fetch_sub(1, Ordering::AcqRel);
            });
            return;
        }
        // Counted from accept (handshakes included) until the connection
        // is over.
        self.state.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnSlot(self.state.clone(), peer.ip());
        match &self.config.tls {
            // Built here, not in the task: the task then holds the
            // connection's future alone, not room for the stream as well.
            None => {
                let ignore = |_| (); // the connection's own end says why it ended
                self.rt
                    .spawn(self.serve_counted(stream, Some(peer), Some(slot), ignore));
            }
            // A task of its own type: the TLS handshake and the TLS stream
            // make its future several times larger than a plain
            // connection's, and only TLS connections pay for that.
            Some(tls) => {
                let this = self.clone();
                let acceptor = tls.acceptor().clone();
                self.rt.spawn(async move {
                    let _slot = slot;
                    let deadline = now() + this.config.handshake_timeout;
                    let accepted = async { acceptor.accept(stream).await.ok() }
                        .or(async {
                            this.rt.sleep_until(deadline).await;
                            None
                        })
                        .await;
                    match accepted {
                        Some(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            crate::http::serve_connection(
                                &this,
                                stream,
                                Some(peer),
                                crate::http::Version::H2,
                            )
                            .await
                        }
                        Some(stream) => {
                            let _ = this.serve_stream(stream, Some(peer)).await;
                        }
                        None => {}
                    }
                });
            }
        }
    }
}
