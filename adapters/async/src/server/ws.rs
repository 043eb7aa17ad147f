//! The WebSocket entry: the request head (health, static files, HTTP
//! protocols handed on), the upgrade's policy (origin, authentication,
//! subprotocol), and serving an upgraded connection with a driver.

use super::*;

/// Answers a plain HTTP request from the static files.
pub(super) async fn upgrade_web<S: futures_lite::AsyncWrite + Unpin>(
    stream: &mut S,
    files: &StaticFiles,
    head: &upgrade::HeadInfo,
) {
    crate::web::respond(stream, files, &head.method, &head.path).await;
}

/// An accepted upgrade: the WebSocket, its mode, who the peer is, and
/// whether it came with an `Origin` header (a browser's).
pub(super) type Upgraded<S> = (
    WebSocketStream<upgrade::Rewind<S>>,
    Mode,
    Option<Identity>,
    bool,
);

impl<R: Runtime> Server<R> {
    /// Reads the request head, applies the Origin policy and the
    /// authentication hook, runs the WebSocket handshake (negotiating
    /// `zrpc.v1`, or legacy when allowed) on any byte stream, then serves it
    /// until it closes. Refusals are HTTP responses: 400 (not a request),
    /// 431 (head over 16 KiB or 64 headers), 403 (origin), the hook's
    /// status, 400 (legacy not allowed).
    ///
    /// The returned future owns what it needs (it does not borrow the
    /// server), so it can be spawned as it is.
    // The handshake callback's error type is fixed by tungstenite.
    #[allow(clippy::result_large_err)]
    pub fn serve_stream<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_counted(stream, peer, None, |r| r)
    }

    /// [`serve_stream`](Self::serve_stream), holding the connection's
    /// place in the server's counts (`slot`) until it is over, its result
    /// turned into `T` by `out`. To be spawned as it is: a future awaited
    /// inside another task's future is kept twice there (as a capture and
    /// where it is awaited).
    #[allow(clippy::result_large_err)]
    pub(super) fn serve_counted<S, T>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
        slot: Option<ConnSlot>,
        out: fn(Result<(), Error>) -> T,
    ) -> impl Future<Output = T> + Send + 'static
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
        T: Send + 'static,
    {
        // The upgrade is boxed and takes the stream at once, so neither its
        // futures nor the stream's own room stay in the connection's task
        // once it is done (a task is sized for its largest state, for its
        // whole life).
        let this = self.clone();
        let upgrade = Box::pin(async move { this.upgrade(stream, peer).await });
        let this = self.clone();
        async move {
            let _slot = slot;
            let served = async {
                let Some((ws, mode, identity, browser)) = upgrade.await? else {
                    return Ok(()); // a plain HTTP request, answered from the static files
                };
                this.serve_connection(ws, mode, peer, identity, browser)
                    .await;
                Ok(())
            };
            out(served.await)
        }
    }

    /// The upgrade of [`serve_stream`](Self::serve_stream): head, checks,
    /// WebSocket handshake.
    #[allow(clippy::result_large_err)]
    pub(super) async fn upgrade<S>(
        &self,
        stream: S,
        peer: Option<SocketAddr>,
    ) -> Result<Option<Upgraded<S>>, Error>
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let deadline = now() + self.config.handshake_timeout;
        let timeout = async {
            self.rt.sleep_until(deadline).await;
            None
        };
        let mut stream = stream;
        let head = async { Some(upgrade::read_head(&mut stream).await) }
            .or(timeout)
            .await
            .ok_or(Error::HandshakeTimeout)?;
        let mut head = match head {
            Ok(h) => h,
            Err(HeadError::Io(e)) => return Err(Error::Io(e)),
            Err(HeadError::Malformed) => {
                upgrade::respond(&mut stream, 400, "malformed HTTP request").await;
                return Err(Error::Refused(Refusal::with_status(
                    400,
                    "malformed request",
                )));
            }
            Err(HeadError::TooLarge) => {
                upgrade::respond(&mut stream, 431, "request head too large").await;
                return Err(Error::Refused(Refusal::with_status(
                    431,
                    "request head too large",
                )));
            }
        };
        let Some(info) = head.info.take() else {
            // HTTP/2 with prior knowledge: gRPC, gRPC-Web or Connect.
            let io = upgrade::Rewind::new(head.bytes, stream);
            crate::http::serve_connection(self, io, peer, crate::http::Version::H2).await;
            return Ok(None);
        };
        // An HTTP/1.1 RPC (gRPC-Web, Connect) or a CORS preflight.
        if !info.websocket && (info.method == "POST" || info.method == "OPTIONS") {
            let io = upgrade::Rewind::new(head.bytes, stream);
            crate::http::serve_connection(self, io, peer, crate::http::Version::Http1).await;
            return Ok(None);
        }
        let info = &info;
        if !info.websocket && info.path.split('?').next() == Some(HEALTH_PATH) {
            let (status, text) = if self.serving() {
                (200, "SERVING")
            } else {
                (503, "NOT_SERVING")
            };
            upgrade::respond(&mut stream, status, text).await;
            return Ok(None);
        }
        if let Some((status, reason)) = info.upgrade_error() {
            upgrade::respond(&mut stream, status, reason).await;
            return Err(Error::Refused(Refusal::with_status(status, reason)));
        }
        if let Some(path) = &self.config.path
            && info.websocket
            && info.path.split('?').next() != Some(path.as_str())
        {
            let reason = format!("no zrpc endpoint at this path (it is at {path})");
            upgrade::respond(&mut stream, 404, &reason).await;
            return Err(Error::Refused(Refusal::with_status(404, reason)));
        }
        // The mode is known before the WebSocket layer starts: its message
        // limit is the mode's (v1: a frame; legacy: a whole request).
        if !info.websocket {
            if let Some(files) = &self.config.static_files {
                upgrade_web(&mut stream, files, info).await;
                return Ok(None);
            }
            // A browser or curl pointed at the endpoint: say what it is.
            let reason =
                "this is a zrpc endpoint: connect with a WebSocket client (subprotocol zrpc.v1)";
            upgrade::respond(&mut stream, 426, reason).await;
            return Err(Error::Refused(Refusal::with_status(426, reason)));
        }
        let ws_mode = if info.offers_v1 {
            Mode::V1
        } else {
            Mode::Legacy
        };
        let stream = upgrade::Rewind::new(head.bytes, stream);
        let mut mode = Mode::Legacy;
        let mut identity = None;
        let mut refused = None;
        let mut browser = false;
        let legacy_ok = self.config.legacy;
        let config = &self.config;
        let auth = self.auth.as_deref();
        let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
            let refuse = |r: Refusal, refused: &mut Option<Refusal>| {
                let mut err = ErrorResponse::new(Some(r.reason().to_owned()));
                *err.status_mut() =
                    StatusCode::from_u16(r.status()).unwrap_or(StatusCode::FORBIDDEN);
                *refused = Some(r);
                err
            };
            if let Some(origin) = req.headers().get("origin") {
                browser = true;
                let origin = origin.to_str().unwrap_or("");
                let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                if let Some(text) = upgrade::origin_refusal(config, origin, host, req.headers()) {
                    return Err(refuse(Refusal::forbidden(text), &mut refused));
                }
            }
            let offered = offers_v1(
                req.headers()
                    .get_all("sec-websocket-protocol")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            if !offered && !legacy_ok {
                let r = Refusal::with_status(400, "this server requires the zrpc.v1 subprotocol");
                return Err(refuse(r, &mut refused));
            }
            if let Some(auth) = auth {
                let up = UpgradeRequest {
                    req: req.clone(),
                    peer,
                };
                match auth(&up) {
                    Ok(id) => identity = Some(id),
                    Err(r) => return Err(refuse(r, &mut refused)),
                }
            }
            if offered {
                resp.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(SUBPROTOCOL_V1),
                );
                mode = Mode::V1;
            }
            Ok(resp)
        };
        let handshake = async_tungstenite::accept_hdr_async_with_config(
            stream,
            callback,
            Some(ws_config(
                &self.config.core,
                ws_mode,
                self.config.read_buffer_size,
            )),
        );
        let timeout = async {
            self.rt.sleep_until(deadline).await;
            None
        };
        let ws = match async { Some(handshake.await) }.or(timeout).await {
            None => return Err(Error::HandshakeTimeout),
            Some(Ok(ws)) => ws,
            Some(Err(e)) => return Err(refused.map_or(Error::WebSocket(e), Error::Refused)),
        };
        Ok(Some((ws, mode, identity, browser)))
    }

    /// Serves zrpc on a connection your own HTTP server has already
    /// upgraded to a WebSocket (it answered 101 with
    /// [`accept_key`](crate::accept_key), and with `zrpc.v1` as the
    /// subprotocol when [`offers_v1`](crate::offers_v1) said the client
    /// offered it), until it closes. `mode` is [`Mode::V1`] when `zrpc.v1`
    /// was negotiated, else [`Mode::Legacy`]. The WebSocket limits are the
    /// server's, as for connections it accepts itself; your HTTP server
    /// applies its own Origin and authentication checks.
    pub async fn serve_upgraded<S>(&self, io: S, mode: Mode, peer: Option<SocketAddr>)
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let config = ws_config(&self.config.core, mode, self.config.read_buffer_size);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        self.serve_connection(ws, mode, peer, None, false).await
    }

    /// Starts driving an upgraded connection (its writer spawned) and
    /// returns what the connection's task runs until it is over: the
    /// reader, then the bookkeeping of its end. Not an `async fn`: the
    /// WebSocket, the core connection and the driver's settings are moved
    /// into the driver here, so the returned future holds only the reader
    /// and a few handles (an `async fn` would keep room for its arguments
    /// for the connection's whole life, about 1 KB per idle connection).
    pub(super) fn serve_connection<S>(
        &self,
        ws: WebSocketStream<S>,
        mode: Mode,
        peer: Option<SocketAddr>,
        identity: Option<Identity>,
        browser: bool,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = Connection::new(Side::Server, mode, self.config.core.clone(), now());
        let state = Arc::downgrade(&self.state);
        let driver = Driver {
            router: Some(self.router.clone()),
            write_timeout: self.config.write_timeout,
            on_budget_exceeded: Some(Arc::new(move || {
                if let Some(s) = state.upgrade() {
                    s.shed_largest();
                }
            })),
            // A browser (it sent `Origin`) gets a burst's answers whole.
            dispatch_slice: (!browser).then_some(driver::DISPATCH_SLICE),
        };
        let info = PeerInfo {
            addr: peer,
            identity,
            budget: Some(self.state.budget.clone()),
        };
        let (shared, read) = driver::attach(ws, conn, driver, info, self.rt.clone());
        let _open = crate::metrics::ConnectionGauge::open();
        let peer_text = peer.map_or_else(|| "-".to_owned(), |a| a.to_string());
        tracing::info!(peer = %peer_text, ?mode, "connection opened");
        let id = self.state.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.state.conns).insert(id, Arc::downgrade(&shared));
        if self.state.stopping.load(Ordering::Acquire) {
            shared.act(|g| g.conn.go_away());
        }
        shared.writer.signal();
        let state = self.state.clone();
        async move {
            let _open = _open;
            // This task reads; the connection is over once reading has
            // stopped and the close has been recorded.
            read.run().await;
            shared.closed().await;
            let reason = shared.read(|g| {
                g.closed
                    .as_ref()
                    .map_or_else(|| "closed".to_owned(), |s| s.message().to_owned())
            });
            tracing::info!(peer = %peer_text, %reason, "connection closed");
            lock(&state.conns).remove(&id);
            state.ended.notify(usize::MAX);
        }
    }
}
