//! The HTTP side of accepting a connection, before any WebSocket frame: the
//! request head is read (bounded in bytes and time) and parsed here, so the
//! server knows the protocol mode, and so the WebSocket limits, before the
//! WebSocket layer allocates anything; then the Origin policy and the
//! authentication hook decide, and refusals are plain HTTP responses.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::handshake::server::Request;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zrpc_core::SUBPROTOCOL_V1;

/// Largest request head accepted (request line and headers).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted in a request head.
const MAX_HEADERS: usize = 64;

/// The HTTP upgrade request of a connection, as the authentication hook
/// sees it (see [`Server::authenticate`](crate::Server::authenticate)).
#[derive(Debug)]
pub struct UpgradeRequest {
    pub(crate) req: Request,
    pub(crate) peer: Option<SocketAddr>,
}

impl UpgradeRequest {
    /// The first value of a header (case-insensitive name), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// The request path, without the query.
    pub fn path(&self) -> &str {
        self.req.uri().path()
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.req.uri().query()
    }

    /// The value of one cookie from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.req
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The peer's address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

/// Why an upgrade request was refused: an HTTP status and a reason sent as
/// the response body. Nothing of zrpc runs for a refused connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    status: u16,
    reason: String,
}

impl Refusal {
    /// 401 Unauthorized: no or invalid credentials.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::with_status(401, reason)
    }

    /// 403 Forbidden: credentials valid, access denied.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::with_status(403, reason)
    }

    /// Any status from 400 to 599 (others become 403).
    pub fn with_status(status: u16, reason: impl Into<String>) -> Self {
        let status = if (400..600).contains(&status) {
            status
        } else {
            403
        };
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.reason)
    }
}

/// What the request head says, for choosing the WebSocket limits (or
/// answering a plain HTTP request).
pub(crate) struct Head {
    /// The bytes read so far (the head and anything after it).
    pub(crate) bytes: Vec<u8>,
    /// What was parsed from them; `None`: the connection opened with
    /// HTTP/2's preface (h2c with prior knowledge).
    pub(crate) info: Option<HeadInfo>,
}

/// The parsed parts of a request head zrpc looks at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HeadInfo {
    /// The client offered the `zrpc.v1` subprotocol.
    pub(crate) offers_v1: bool,
    /// An `Upgrade: websocket` request (otherwise plain HTTP).
    pub(crate) websocket: bool,
    /// The request method, e.g. `GET`.
    pub(crate) method: String,
    /// The request target.
    pub(crate) path: String,
    /// HTTP/1.0 (WebSocket needs HTTP/1.1).
    pub(crate) http10: bool,
    /// A `Sec-WebSocket-Key` and `Sec-WebSocket-Version: 13` came with it.
    pub(crate) ws_key: bool,
}

impl HeadInfo {
    /// Why a WebSocket upgrade request cannot be served, as the HTTP status
    /// and text to answer (RFC 6455 4.2.1; RFC 9110 for 405 and 505).
    pub(crate) fn upgrade_error(&self) -> Option<(u16, &'static str)> {
        if !self.websocket {
            None
        } else if self.method != "GET" {
            Some((405, "a WebSocket upgrade must be a GET request"))
        } else if self.http10 {
            Some((505, "a WebSocket upgrade needs HTTP/1.1"))
        } else if !self.ws_key {
            Some((
                400,
                "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            ))
        } else {
            None
        }
    }
}

/// Why a request head was not read.
pub(crate) enum HeadError {
    Io(io::Error),
    /// Not HTTP, or malformed (answered 400).
    Malformed,
    /// Larger than [`MAX_HEAD`] or more than 64 headers (answered 431).
    TooLarge,
}

/// Parses a request head; `Ok(None)` while it is incomplete.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<HeadInfo>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(_)) => {
            let has = |name: &str, token: &str| {
                req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case(name)
                        && std::str::from_utf8(h.value).is_ok_and(|v| {
                            v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token))
                        })
                })
            };
            let key = req
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-key") && !h.value.is_empty());
            Ok(Some(HeadInfo {
                offers_v1: has("sec-websocket-protocol", SUBPROTOCOL_V1),
                // Upgrade: websocket with Connection: upgrade (a proxy that
                // strips either has not passed an upgrade on).
                websocket: has("upgrade", "websocket") && has("connection", "upgrade"),
                method: req.method.unwrap_or("").to_owned(),
                path: req.path.unwrap_or("/").to_owned(),
                http10: req.version == Some(0),
                ws_key: key && has("sec-websocket-version", "13"),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Reads the request head from `stream` (at most [`MAX_HEAD`] bytes).
pub(crate) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Head, HeadError> {
    // Read straight into the Vec: no buffer in the future, which lives as
    // long as the connection's task.
    let mut bytes = Vec::new();
    loop {
        let len = bytes.len();
        bytes.resize(len + 1024, 0);
        let n = stream
            .read(&mut bytes[len..])
            .await
            .map_err(HeadError::Io)?;
        bytes.truncate(len + n);
        if n == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let preface = crate::http::H2_PREFACE;
        if preface.starts_with(&bytes[..bytes.len().min(preface.len())]) {
            if bytes.len() >= preface.len() {
                return Ok(Head { bytes, info: None });
            }
            continue; // a part of the preface: read on
        }
        if let Some(info) = parse_head(&bytes)? {
            return Ok(Head {
                bytes,
                info: Some(info),
            });
        }
    }
}

/// Writes a short plain-text HTTP response (a refusal, or the health answer) and
/// closes the write side.
pub(crate) async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, reason: &str) {
    let text = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };
    let extra = match status {
        405 => "Allow: GET\r\n",
        426 => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        _ => "",
    };
    let body = format!("{reason}\n");
    let resp = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.close().await;
}

/// The browser rules of [`ServerConfig`](crate::ServerConfig): which
/// origins may connect, and which host names a same-origin page may have.
pub(crate) struct OriginPolicy<'a> {
    pub(crate) allowed_origins: &'a [String],
    pub(crate) allowed_hosts: &'a [String],
    /// The scheme the request came over (`http` or `https`): a TLS
    /// listener's, or the `X-Forwarded-Proto` a TLS-terminating proxy set
    /// (a browser cannot set that header on a WebSocket upgrade).
    pub(crate) scheme: &'a str,
}

/// Why a browser's request was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OriginRefusal {
    /// The origin is neither listed nor same-origin.
    Origin,
    /// Same-origin, but under a host name the server does not answer for:
    /// what a DNS-rebinding page looks like.
    Host,
}

/// Whether a browser's `Origin` may open a connection: allowed when listed
/// (or `*` is listed), or same-origin — scheme and authority equal to the
/// request's own, under a host name the server answers for ([`host_trusted`]).
/// Requests without `Origin` (non-browser clients) are not concerned.
pub(crate) fn origin_allowed(
    origin: &str,
    host: Option<&str>,
    policy: &OriginPolicy<'_>,
) -> Result<(), OriginRefusal> {
    if policy
        .allowed_origins
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(OriginRefusal::Origin);
    };
    let authority = authority.trim_end_matches('/');
    let same = host.is_some_and(|h| !authority.is_empty() && h.eq_ignore_ascii_case(authority))
        && scheme.eq_ignore_ascii_case(policy.scheme);
    if !same {
        return Err(OriginRefusal::Origin);
    }
    if host_trusted(authority, policy.allowed_hosts) {
        Ok(())
    } else {
        Err(OriginRefusal::Host)
    }
}

/// The server's Origin policy applied to a browser's request (WebSocket
/// upgrade or HTTP call): `None` when allowed, else the reason to answer
/// 403 with. The scheme is the first `X-Forwarded-Proto` value in
/// `headers`, else the listener's.
pub(crate) fn origin_refusal(
    config: &crate::ServerConfig,
    origin: &str,
    host: Option<&str>,
    headers: &hyper::HeaderMap,
) -> Option<String> {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    let policy = OriginPolicy {
        allowed_origins: &config.allowed_origins,
        allowed_hosts: &config.allowed_hosts,
        scheme: forwarded_proto.unwrap_or(if config.tls.is_some() {
            "https"
        } else {
            "http"
        }),
    };
    match origin_allowed(origin, host, &policy) {
        Ok(()) => None,
        Err(OriginRefusal::Origin) => Some(format!("origin {origin:?} is not allowed")),
        Err(OriginRefusal::Host) => Some(format!(
            "host {:?} is not a name this server answers for (allowed_hosts / --allow-host)",
            host.unwrap_or("")
        )),
    }
}

/// Whether a `Host` value (`name[:port]`) names this server: an IP address
/// (a DNS-rebinding page needs a name its attacker controls), `localhost`
/// and its subdomains (browsers resolve them to loopback themselves), or a
/// name in `allowed` (`*`: any).
pub(crate) fn host_trusted(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        })
    };
    let name = name.trim_end_matches('.');
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.len().checked_sub(".localhost".len()).is_some_and(|i| {
            name.is_char_boundary(i) && name[i..].eq_ignore_ascii_case(".localhost")
        })
        || allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('.').eq_ignore_ascii_case(name))
}

/// A stream that first replays bytes already read from it (the request
/// head read before the WebSocket layer took over).
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = buf.len().min(this.prefix.len() - this.pos);
            buf[..n].copy_from_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new(); // free it: the connection lives on
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let listed = vec!["https://app.example".to_string()];
        let policy = |scheme, hosts: &'static [String]| OriginPolicy {
            allowed_origins: &listed,
            allowed_hosts: hosts,
            scheme,
        };
        let plain = policy("http", &[]);
        assert_eq!(origin_allowed("https://app.example", None, &plain), Ok(()));
        assert_eq!(
            origin_allowed("http://127.0.0.1:8060", Some("127.0.0.1:8060"), &plain),
            Ok(())
        );
        assert_eq!(
            origin_allowed("http://localhost:8060", Some("localhost:8060"), &plain),
            Ok(())
        );
        assert_eq!(
            origin_allowed("http://[::1]:8060", Some("[::1]:8060"), &plain),
            Ok(())
        );
        assert_eq!(
            origin_allowed("https://evil.example", Some("127.0.0.1:8060"), &plain),
            Err(OriginRefusal::Origin)
        );
        assert_eq!(
            origin_allowed("null", Some("127.0.0.1:8060"), &plain),
            Err(OriginRefusal::Origin)
        );
        // DNS rebinding: Origin and Host agree, on a name nobody configured.
        assert_eq!(
            origin_allowed(
                "http://rebind.attacker.example:8060",
                Some("rebind.attacker.example:8060"),
                &plain
            ),
            Err(OriginRefusal::Host)
        );
        static HOSTS: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| vec!["app.internal".to_string()]);
        assert_eq!(
            origin_allowed(
                "http://app.internal:8060",
                Some("APP.internal:8060"),
                &policy("http", &HOSTS)
            ),
            Ok(())
        );
        // Scheme: an https page is not same-origin with a plain server.
        assert_eq!(
            origin_allowed("https://127.0.0.1:8060", Some("127.0.0.1:8060"), &plain),
            Err(OriginRefusal::Origin)
        );
        assert_eq!(
            origin_allowed(
                "https://127.0.0.1:8060",
                Some("127.0.0.1:8060"),
                &policy("https", &[])
            ),
            Ok(())
        );
        let any = vec!["*".to_string()];
        let star = OriginPolicy {
            allowed_origins: &any,
            allowed_hosts: &[],
            scheme: "http",
        };
        assert_eq!(origin_allowed("https://x", None, &star), Ok(()));
    }

    #[test]
    fn hosts() {
        assert!(host_trusted("127.0.0.1", &[]));
        assert!(host_trusted("10.1.2.3:99", &[]));
        assert!(host_trusted("[::1]:8060", &[]));
        assert!(host_trusted("app.localhost:3000", &[]));
        assert!(!host_trusted("localhost.attacker.example", &[]));
        assert!(!host_trusted("example.com", &[]));
        assert!(host_trusted("example.com:443", &["example.com".into()]));
        assert!(host_trusted("example.com.", &["example.com".into()]));
        assert!(host_trusted("anything", &["*".into()]));
        assert!(!host_trusted("[zz]:1", &[]));
    }

    #[test]
    fn heads() {
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Protocol: x, zrpc.v1\r\n\r\n";
        assert!(matches!(
            parse_head(ok),
            Ok(Some(HeadInfo {
                offers_v1: true,
                ..
            }))
        ));
        assert!(matches!(parse_head(&ok[..20]), Ok(None)));
        assert_eq!(
            parse_head(b"GET /app.js?v=1 HTTP/1.1\r\nHost: a\r\n\r\n").ok(),
            Some(Some(HeadInfo {
                offers_v1: false,
                websocket: false,
                method: "GET".into(),
                path: "/app.js?v=1".into(),
                http10: false,
                ws_key: false,
            }))
        );
        let up = b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(matches!(
            parse_head(up),
            Ok(Some(HeadInfo {
                websocket: true,
                offers_v1: false,
                ..
            }))
        ));
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        let long = vec![b'a'; MAX_HEAD + 1];
        assert!(parse_head(&long).is_err());
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&many), Err(HeadError::TooLarge)));
    }
}
