//! The calling side: a cheap-to-clone [`Client`] multiplexing calls over one
//! connection, and the [`Call`] handle of one call.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use futures_lite::future::poll_fn;
use futures_lite::{AsyncRead, AsyncWrite};
use zrpc_core::{
    CallKind, CallOptions, Code, Config, Connection, Metadata, Mode, SUBPROTOCOL_V1, Side, Status,
    StreamId, UserError,
};

use crate::Error;
use crate::driver::{self, Driver};
use crate::runtime::Runtime;
use crate::server::{CLIENT_READ_BUFFER, Router, wait_closed, ws_config};
use crate::shared::{PeerInfo, Shared, Slot, now, poll_end, poll_message, poll_send};
use crate::tls::ClientTls;
use crate::upgrade::Refusal;
use async_tungstenite::tungstenite::Error as WsError;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Protocol limits.
    pub core: Config,
    /// Handlers the server may call on this connection (server-initiated calls).
    pub router: Option<Router>,
    /// Longest time one write may stay blocked on a server that does not
    /// read; then the connection is dropped and its calls end with
    /// `UNAVAILABLE`. Default 30 s.
    pub write_timeout: Duration,
    /// Extra headers on the upgrade request (credentials such as
    /// `authorization`, or a cookie), for the server's authentication hook.
    pub headers: Vec<(String, String)>,
    /// Which servers `wss://` URLs trust. Default (`None`): Mozilla's root
    /// certificates, as browsers.
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            core: Config::default(),
            router: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            headers: Vec::new(),
            tls: None,
        }
    }
}

/// Default bound on how long one write may wait for a peer that does not read.
pub(crate) const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to a zrpc server. Clones share the connection; calls are
/// multiplexed over it. When the last clone is dropped the connection
/// drains: calls in progress finish, then it closes.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Counts the application's handles (`None` for the client a handler
    /// gets from its context: that one does not own the connection).
    _handle: Option<Arc<Handle>>,
}

/// The last application handle of a connection drains it when dropped.
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        drain(&self.0);
    }
}

fn drain(shared: &Shared) {
    let mut g = shared.lock();
    g.conn.go_away();
    g.pump_events();
    drop(g);
    shared.writer.notify();
}

impl Client {
    /// A client on a connection a handler is serving (it does not own it).
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            _handle: None,
        }
    }

    /// The application's client of a connection it opened.
    fn owning(shared: Arc<Shared>) -> Self {
        Self {
            _handle: Some(Arc::new(Handle(shared.clone()))),
            shared,
        }
    }

    /// Opens a call of any kind. Waits for a stream slot when the server's
    /// concurrent call limit is reached.
    pub async fn call(
        &self,
        method: &str,
        kind: CallKind,
        opts: CallOptions,
    ) -> Result<Call, Status> {
        self.start(method, kind, opts, None).await
    }

    /// Opens a call and, given a request, sends it and half-closes, all
    /// under one lock and with one wake-up of the writer.
    async fn start(
        &self,
        method: &str,
        kind: CallKind,
        opts: CallOptions,
        mut request: Option<Bytes>,
    ) -> Result<Call, Status> {
        let (id, sent) = poll_fn(|cx| {
            let mut g = self.shared.lock();
            if let Some(st) = &g.closed {
                return Poll::Ready(Err(st.clone()));
            }
            match g.conn.open_call(now(), method, kind, opts.clone()) {
                Ok(id) => {
                    g.slots.insert(id, Slot::default());
                    let sent = match request.take() {
                        None => Ok(()),
                        // A new call always has credit for its first message.
                        Some(req) => g.conn.send(id, req).and_then(|()| g.conn.close_send(id)),
                    };
                    Poll::Ready(Ok((id, sent.map_err(|e| g.status_of(id, e)))))
                }
                Err(UserError::StreamLimit) => {
                    g.open_wakers.push(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(g.status_of(StreamId(0), e))),
            }
        })
        .await?;
        self.shared.writer.notify();
        let call = Call {
            id,
            shared: self.shared.clone(),
            local: VecDeque::new(),
        };
        sent?; // on failure, dropping the call cancels it
        Ok(call)
    }

    /// A unary call: one request, one response.
    pub async fn unary(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Bytes, Status> {
        let mut call = self
            .start(method, CallKind::Unary, opts, Some(request))
            .await?;
        let resp = call
            .message()
            .await?
            .ok_or_else(|| Status::new(Code::Internal, "the call ended without a response"))?;
        call.finish().await?;
        Ok(resp)
    }

    /// A server-streaming call: sends the request; read the responses with
    /// [`Call::message`].
    pub async fn server_streaming(
        &self,
        method: &str,
        request: Bytes,
        opts: CallOptions,
    ) -> Result<Call, Status> {
        self.start(method, CallKind::ServerStreaming, opts, Some(request))
            .await
    }

    /// A client-streaming call: send requests, then [`Call::close_send`] and
    /// read the one response with [`Call::message`].
    pub async fn client_streaming(&self, method: &str, opts: CallOptions) -> Result<Call, Status> {
        self.call(method, CallKind::ClientStreaming, opts).await
    }

    /// A bidirectional call.
    pub async fn bidi(&self, method: &str, opts: CallOptions) -> Result<Call, Status> {
        self.call(method, CallKind::Bidi, opts).await
    }

    /// Drains the connection: no new calls; it closes once running calls end.
    pub fn close(&self) {
        drain(&self.shared);
    }

    /// Resolves once the connection is over.
    pub async fn closed(&self) {
        wait_closed(&self.shared).await
    }

    /// True once the connection is over.
    pub fn is_closed(&self) -> bool {
        let g = self.shared.lock();
        g.closed.is_some() || g.conn.is_closed()
    }

    /// True once either side started draining (new calls fail).
    pub fn is_draining(&self) -> bool {
        self.shared.lock().conn.is_draining()
    }
}

/// One call in progress. Dropping it before the call ended cancels the call
/// (the responder sees `CANCELLED`).
pub struct Call {
    id: StreamId,
    shared: Arc<Shared>,
    /// Messages already taken from the connection, in order.
    local: VecDeque<Bytes>,
}

impl Call {
    /// The call's id on its connection.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Sends one request message, waiting for the server's credit.
    pub async fn send(&mut self, msg: Bytes) -> Result<(), Status> {
        let mut msg = Some(msg);
        poll_fn(|cx| poll_send(&self.shared, self.id, &mut msg, cx)).await
    }

    /// Half-closes: no more request messages. A no-op on a call that has
    /// already ended (the server may answer before the half-close is sent).
    pub fn close_send(&mut self) -> Result<(), Status> {
        let mut g = self.shared.lock();
        match g.conn.close_send(self.id) {
            Ok(()) => {
                drop(g);
                self.shared.writer.notify();
                Ok(())
            }
            Err(UserError::UnknownCall)
                if g.slots.get(&self.id).is_some_and(|s| s.end.is_some()) =>
            {
                Ok(())
            }
            Err(e) => Err(g.status_of(self.id, e)),
        }
    }

    /// The next response message; `Ok(None)` after the last one of a call
    /// that ended OK; `Err(status)` for a call that failed.
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        poll_fn(|cx| poll_message(&self.shared, self.id, &mut self.local, cx)).await
    }

    /// The response headers (empty if the server sent none), once known.
    pub async fn headers(&mut self) -> Metadata {
        poll_fn(|cx| {
            let mut g = self.shared.lock();
            match g.slots.get_mut(&self.id) {
                None => Poll::Ready(Metadata::new()),
                Some(s) => match &s.headers {
                    Some(h) => Poll::Ready(h.clone()),
                    None if !s.inbox.is_empty() || s.end.is_some() => Poll::Ready(Metadata::new()),
                    None => {
                        s.recv_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                },
            }
        })
        .await
    }

    /// Waits for the end of the call; returns the trailers when it ended
    /// OK. Unread messages are discarded.
    pub async fn finish(self) -> Result<Metadata, Status> {
        let (status, trailers) = poll_fn(|cx| poll_end(&self.shared, self.id, cx)).await;
        if status.is_ok() {
            Ok(trailers)
        } else {
            Err(status)
        }
    }

    /// Cancels the call (same as dropping it).
    pub fn cancel(self) {}
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        let ended = g.slots.get(&self.id).is_none_or(|s| s.end.is_some());
        if !ended {
            let _ = g.conn.cancel(self.id);
            g.pump_events();
        }
        if let Some(slot) = g.slots.remove(&self.id) {
            // Return the credit of messages nobody will read.
            for m in slot.inbox {
                g.conn.consume(self.id, m.len());
            }
        }
        let wake = g.writer_needed();
        drop(g);
        if wake {
            self.shared.writer.notify();
        }
    }
}

/// An HTTP error answer to the upgrade becomes [`Error::Refused`] with the
/// status and the body's first line.
fn refusal_of(e: WsError) -> Error {
    match e {
        WsError::Http(resp) => {
            let reason = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .and_then(|b| b.lines().next().map(str::to_owned))
                .unwrap_or_default();
            Error::Refused(Refusal::with_status(resp.status().as_u16(), reason))
        }
        e => Error::WebSocket(e),
    }
}

/// Runs the WebSocket client handshake on `stream`, offering `zrpc.v1`, and
/// starts the connection. `url` gives the host and path of the request.
pub async fn connect_stream<S, R>(
    stream: S,
    url: &str,
    config: ClientConfig,
    rt: R,
) -> Result<Client, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let mut request = url.into_client_request()?;
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::InvalidHeader(name.clone()))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| Error::InvalidHeader(name.to_string()))?;
        request.headers_mut().append(name, value);
    }
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(SUBPROTOCOL_V1),
    );
    let (ws, resp) = async_tungstenite::client_async_with_config(
        request,
        stream,
        Some(ws_config(&config.core, Mode::V1, CLIENT_READ_BUFFER)),
    )
    .await
    .map_err(refusal_of)?;
    let accepted = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == SUBPROTOCOL_V1);
    if !accepted {
        return Err(Error::NotZrpc);
    }
    let conn = Connection::new(Side::Client, Mode::V1, config.core, now());
    let driver = Driver {
        router: config.router.map(Arc::new),
        write_timeout: config.write_timeout,
        on_budget_exceeded: None,
    };
    let shared = driver::start(ws, conn, driver, PeerInfo::default(), rt);
    Ok(Client::owning(shared))
}

/// Calls an old server in the seed's format: one connection for the call,
/// the request as `u32 LE length | name | payload`, replies until the
/// server closes. Read the replies with [`Call::message`].
pub async fn legacy_call_stream<S, R>(
    stream: S,
    url: &str,
    method: &str,
    payload: Bytes,
    rt: R,
) -> Result<Call, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let config = Config::default();
    let (ws, _) = async_tungstenite::client_async_with_config(
        url,
        stream,
        Some(ws_config(&config, Mode::Legacy, CLIENT_READ_BUFFER)),
    )
    .await?;
    let conn = Connection::new(Side::Client, Mode::Legacy, config, now());
    let driver = Driver {
        router: None,
        write_timeout: DEFAULT_WRITE_TIMEOUT,
        on_budget_exceeded: None,
    };
    let shared = driver::start(ws, conn, driver, PeerInfo::default(), rt);
    let client = Client::from_shared(shared);
    let mut call = client
        .call(method, CallKind::ServerStreaming, CallOptions::default())
        .await?;
    call.send(payload).await?;
    Ok(call)
}

/// Connects to `ws://host:port/path` over TCP, or to `wss://...` over TLS,
/// negotiating `zrpc.v1`.
pub async fn connect<R: Runtime>(url: &str, config: ClientConfig, rt: R) -> Result<Client, Error> {
    let (host, port, tls) = crate::url_parts(url)?;
    let tcp = rt.connect_tcp(format!("{host}:{port}")).await?;
    if !tls {
        return connect_stream(tcp, url, config, rt).await;
    }
    let name = crate::tls::server_name(&host).map_err(Error::Tls)?;
    let trust = config.tls.clone().unwrap_or_else(ClientTls::webpki_roots);
    let stream = trust.connector().connect(name, tcp).await?;
    connect_stream(stream, url, config, rt).await
}

/// Calls an old server in the seed's format over a new TCP connection.
pub async fn legacy_call<R: Runtime>(
    url: &str,
    method: &str,
    payload: Bytes,
    rt: R,
) -> Result<Call, Error> {
    let tcp = rt.connect_tcp(crate::socket_addr_of(url)?).await?;
    legacy_call_stream(tcp, url, method, payload, rt).await
}
