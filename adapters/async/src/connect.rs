//! Opening a connection from the calling side: [`ClientConfig`], the
//! WebSocket client handshake offering `zrpc.v1`, `ws://` and `wss://`
//! URLs, and calls to servers that speak the seed's format.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use zrpc_core::{CallKind, Config, Connection, Mode, SUBPROTOCOL_V1, Side};

use crate::options::CallOptions;

use crate::Error;
use crate::client::{Call, Client};
use crate::conn::{PeerInfo, now};
use crate::driver::{self, DEFAULT_WRITE_TIMEOUT, Driver};
use crate::router::Router;
use crate::runtime::Runtime;
use crate::tls::ClientTls;
use crate::upgrade::Refusal;
use crate::ws::{CLIENT_READ_BUFFER, ws_config};

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
    /// Longest time [`connect`] may take: TCP connect, TLS, and the
    /// WebSocket handshake; then [`Error::HandshakeTimeout`]. A server that
    /// accepts TCP and never answers cannot hold a client. Default 10 s.
    pub connect_timeout: Duration,
    /// Bytes the connection reads from its socket at a time (at least 256),
    /// allocated when it connects. Default 8 KiB. Large messages are read
    /// whole whatever this is, in reads of this size: a client that
    /// receives messages of 64 KiB spends 5-10% less CPU on each with
    /// 32 KiB, at the same rate for small-message streams (1 MiB messages:
    /// no steady effect, the allocator's page faults decide those rows),
    /// for 24 KiB more per connection. The most a server can make a
    /// connection hold is set by the message limits in [`core`](Self::core),
    /// not by this.
    pub read_buffer_size: usize,
}

/// Default bound on a whole connect (TCP, TLS, WebSocket handshake).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            core: Config::default(),
            router: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            headers: Vec::new(),
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_buffer_size: CLIENT_READ_BUFFER,
        }
    }
}

/// An HTTP error answer to the upgrade becomes [`Error::Refused`] with the
/// status and the body's first line; an upgrade without the `zrpc.v1`
/// subprotocol, [`Error::NotZrpc`].
fn refusal_of(e: WsError) -> Error {
    match e {
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => Error::NotZrpc,
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
        Some(ws_config(&config.core, Mode::V1, config.read_buffer_size)),
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
        dispatch_slice: Some(driver::DISPATCH_SLICE),
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
        dispatch_slice: Some(driver::DISPATCH_SLICE),
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
/// negotiating `zrpc.v1`, within [`ClientConfig::connect_timeout`].
pub async fn connect<R: Runtime>(url: &str, config: ClientConfig, rt: R) -> Result<Client, Error> {
    let deadline = now().checked_add(config.connect_timeout);
    let timer = rt.clone();
    let timeout = async move {
        match deadline {
            Some(d) => timer.sleep_until(d).await,
            None => std::future::pending().await,
        }
        Err(Error::HandshakeTimeout)
    };
    connect_within(url, config, rt).or(timeout).await
}

async fn connect_within<R: Runtime>(
    url: &str,
    config: ClientConfig,
    rt: R,
) -> Result<Client, Error> {
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
