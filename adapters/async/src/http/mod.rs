//! gRPC, gRPC-Web and Connect on the server's own port. A connection that
//! opens with HTTP/2's preface (h2c), negotiates `h2` by ALPN, or sends an
//! HTTP/1.1 request that is not a WebSocket upgrade is served by hyper;
//! each request is told apart by its `Content-Type` (`protocol`) and served
//! by the same [`Router`](crate::Router) as zrpc.v1 calls: the same
//! handlers, interceptors, message limits, authentication hook (it sees
//! the HTTP request), Origin policy, metrics and call log.
//!
//! A directory per concern, each protocol a file of its own: `grpc`,
//! `grpc_web`, `connect` (their headers, status and end); `envelope` (the
//! length-prefixed framing all three share); `call` (one call's state
//! between its handler and its response body); `headers` (metadata);
//! `cors`; `rt` (hyper's runtime traits over [`Runtime`]).

pub(crate) mod call;
mod connect;
mod cors;
pub(crate) mod envelope;
mod grpc;
mod grpc_web;
mod headers;
pub(crate) mod json;
pub(crate) mod protocol;
mod rt;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_lite::FutureExt;
use futures_lite::future::poll_fn;
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method as HttpMethod, Request, Response, StatusCode, Version as HttpVersion};
use zrpc_core::{CallKind, Code, Metadata, Method, Status, StreamId};

use self::call::{Body, CallBody, Head, HttpCall, HttpRequests, Running};
use self::envelope::Decoder;
use self::protocol::{Codec, Protocol};
use crate::call::{CallInfo, CallIo, RequestStream, Requests};
use crate::conn::now;
use crate::router;
use crate::runtime::Runtime;
use crate::server::Server;
use crate::upgrade::{self, UpgradeRequest};

/// Which HTTP a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    Http1,
    H2,
}

/// The first bytes of every HTTP/2 connection (RFC 9113 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest header block hyper accepts on an HTTP/2 connection (HPACK
/// decoded, CONTINUATION frames included), and on HTTP/1.1 the read buffer.
const MAX_HEADER_BYTES: u32 = 16 * 1024;

/// Serves one HTTP connection (its bytes so far replayed by `io`) until it
/// ends; on shutdown it gets HTTP/2 GOAWAY (or `Connection: close`) and
/// the drain grace for its calls.
pub(crate) async fn serve_connection<R, S>(
    server: &Server<R>,
    io: S,
    peer: Option<SocketAddr>,
    version: Version,
) where
    R: Runtime,
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + Send + 'static,
{
    let ids = Arc::new(AtomicU32::new(1));
    let this = server.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let server = this.clone();
        let id = StreamId(ids.fetch_add(2, Ordering::Relaxed));
        async move { Ok::<_, Infallible>(answer(&server, peer, id, req.map(in_body)).await) }
    });
    let config = server.config();
    let rt = server.runtime().clone();
    let io = rt::Io::new(io);
    let _open = crate::metrics::ConnectionGauge::open();
    match version {
        Version::H2 => {
            let mut b = hyper::server::conn::http2::Builder::new(rt::Exec(rt.clone()));
            b.timer(rt::Timer(rt.clone()))
                .max_concurrent_streams(config.core.max_concurrent_streams)
                .max_header_list_size(MAX_HEADER_BYTES)
                .keep_alive_interval(config.core.keepalive_interval)
                .keep_alive_timeout(Duration::from_secs(20));
            let conn = b.serve_connection(io, service);
            drive(server, conn, |c| c.graceful_shutdown()).await;
        }
        Version::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(rt::Timer(rt.clone()))
                .header_read_timeout(config.handshake_timeout)
                .max_buf_size(MAX_HEADER_BYTES as usize);
            let conn = b.serve_connection(io, service);
            drive(server, conn, |c| c.graceful_shutdown()).await;
        }
    }
}

/// A request body of any HTTP server (hyper's own, axum's, ...), its errors
/// made one type (a pinned box is a body itself).
pub(crate) type InBody = Pin<Box<dyn HttpBody<Data = Bytes, Error = BoxError> + Send>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `body` as an [`InBody`].
pub(crate) fn in_body<B>(body: B) -> InBody
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    struct Erased<B>(B);
    impl<B> HttpBody for Erased<B>
    where
        B: HttpBody<Data = Bytes> + Send + Unpin,
        B::Error: Into<BoxError>,
    {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            Pin::new(&mut self.get_mut().0)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into)))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_end_stream()
        }
        fn size_hint(&self) -> http_body::SizeHint {
            self.0.size_hint()
        }
    }
    Box::pin(Erased(body))
}

/// Runs a hyper connection; once the server drains, asks it to finish
/// (`graceful`) and gives it the drain grace.
async fn drive<R: Runtime, C>(
    server: &Server<R>,
    conn: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: std::future::Future,
{
    let mut conn = std::pin::pin!(conn);
    let ended = async {
        (&mut conn).await;
        true
    }
    .or(async {
        server.draining().await;
        false
    })
    .await;
    if ended {
        return;
    }
    graceful(conn.as_mut());
    let deadline = now() + server.config().drain_grace;
    async {
        conn.await;
    }
    .or(server.runtime().sleep_until(deadline))
    .await;
}

fn plain(status: u16, text: &str) -> Response<Body> {
    let mut resp = Response::new(Body::full(format!("{text}\n")));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    resp
}

/// Answers one request.
async fn answer<R: Runtime>(
    server: &Server<R>,
    peer: Option<SocketAddr>,
    id: StreamId,
    req: Request<InBody>,
) -> Response<Body> {
    let origin = req.headers().get("origin").cloned();
    let refusal = origin.as_ref().and_then(|o| {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let origin = o.to_str().unwrap_or("");
        upgrade::origin_refusal(server.config(), origin, host, req.headers())
    });
    let (head, body) = req.into_parts();
    let mut body = Some(body);
    let mut resp = match &refusal {
        Some(why) => plain(403, why),
        None => answer_allowed(server, peer, id, &head, &mut body).await,
    };
    if let Some(body) = body
        && head.version < HttpVersion::HTTP_2
        && !drain(server.runtime(), body).await
    {
        // A body left unread ends an HTTP/1.1 connection (hyper cannot tell
        // where the next request starts): say so.
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
    }
    // A refused origin gets no CORS headers.
    if let Some(o) = &origin
        && refusal.is_none()
        && !resp.headers().contains_key("access-control-allow-origin")
    {
        cors::allow(resp.headers_mut(), o);
    }
    resp
}

async fn answer_allowed<R: Runtime>(
    server: &Server<R>,
    peer: Option<SocketAddr>,
    id: StreamId,
    req: &Parts,
    body: &mut Option<InBody>,
) -> Response<Body> {
    if req.method == HttpMethod::OPTIONS {
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        if let Some(o) = req.headers.get("origin") {
            cors::preflight(resp.headers_mut(), o, &req.headers);
        }
        return resp;
    }
    if req.method == HttpMethod::GET {
        return server.answer_get(req.uri.path());
    }
    let content_type = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some((protocol, codec)) = Protocol::detect(content_type) else {
        return plain(
            415,
            &format!(
                "content-type {content_type:?} is not one zrpc serves: application/grpc, \
                 application/grpc-web(-text), application/connect+proto or application/proto; \
                 zrpc.v1 clients use a WebSocket"
            ),
        );
    };
    if req.method != HttpMethod::POST {
        let mut resp = plain(405, "RPC requests are POST");
        resp.headers_mut()
            .insert("allow", HeaderValue::from_static("POST"));
        return resp;
    }
    let encodings = match check_request(req, protocol) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    let name = req.uri.path().trim_start_matches('/');
    let route = server.router().route(name);
    let method = Method::new(name);
    let (Some(route), Ok(method)) = (route, method) else {
        router::refused_unknown(Code::Unimplemented);
        return early(
            protocol,
            Status::unimplemented(format!("method {name} is not implemented")),
        );
    };
    if let Protocol::Connect { streaming } = protocol
        && streaming == (route.kind() == CallKind::Unary)
    {
        return early(
            protocol,
            Status::unimplemented(format!(
                "method {name} is {:?}: call it with {}",
                route.kind(),
                if streaming {
                    "application/proto (a unary call)"
                } else {
                    "application/connect+proto (a streaming call)"
                }
            )),
        );
    }
    let json = match codec {
        Codec::Proto => None,
        Codec::Json => match server.router().json_codec(name) {
            Some(c) => Some(Arc::new(c)),
            None => {
                let status = Status::unimplemented(format!(
                    "method {name} has no message descriptors on this server (Router::descriptors): \
                     call it with the proto codec (application/proto, application/connect+proto, \
                     application/grpc)"
                ));
                let mut r = early(protocol, status);
                if protocol == (Protocol::Connect { streaming: false }) {
                    *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
                }
                return r;
            }
        },
    };
    let deadline = match protocol.timeout(&req.headers) {
        Ok(t) => t.map(|t| now() + t),
        Err(status) => return early(protocol, status),
    };
    let identity = match server.authenticator() {
        None => None,
        Some(auth) => {
            let mut head = Request::new(());
            *head.method_mut() = req.method.clone();
            *head.uri_mut() = req.uri.clone();
            *head.headers_mut() = req.headers.clone();
            match auth(&UpgradeRequest { req: head, peer }) {
                Ok(identity) => Some(identity),
                Err(refusal) => {
                    let code = match refusal.status() {
                        401 => Code::Unauthenticated,
                        403 => Code::PermissionDenied,
                        429 => Code::ResourceExhausted,
                        _ => Code::Unavailable,
                    };
                    return early(protocol, Status::new(code, refusal.reason()));
                }
            }
        }
    };
    let metadata = headers::to_metadata(&req.headers);
    let max = route
        .max_request()
        .min(server.config().core.max_message_size as usize);
    let call = HttpCall::new(protocol, encodings.gzip_out, json.clone(), peer, identity);
    let info = CallInfo::new(
        id,
        method,
        route.kind(),
        metadata,
        deadline,
        CallIo::Http(call.clone()),
    );
    let Some(body) = body.take() else {
        return plain(500, "the request body was taken twice");
    };
    let mut reqs = RequestStream {
        from: Requests::Http(Box::new(HttpRequests::new(
            body,
            Decoder::new(protocol.framing(), max).gzip(encodings.gzip_in),
            json,
            info.kind.single_request(),
            server.recv_budget(),
        ))),
        max,
        method: info.method.clone(),
        interceptors: None,
        sizes: None,
    };
    let rt = server.runtime().clone();
    let finisher = call.clone();
    let ctx = router::prepare(&route, info, &mut reqs);
    let handler = async move {
        let (status, trailers) = router::run(route, ctx, reqs).await;
        if let Some(status) = status {
            finisher.finish(status, trailers);
        }
    };
    let run: call::HandlerRun = match deadline {
        None => Box::pin(handler),
        Some(deadline) => {
            let timer = call.clone();
            let sleep = rt.sleep_until(deadline);
            Box::pin(handler.or(async move {
                sleep.await;
                timer.finish(
                    Status::deadline_exceeded("the call's deadline passed"),
                    Metadata::new(),
                );
                // The handler sees the end and returns: let it finish.
                std::future::pending::<()>().await
            }))
        }
    };
    let spawn: call::Spawner = Arc::new(move |run| rt.spawn(run));
    // The handler runs here until the head can go out (a unary call is
    // answered whole from here), then inside the response body. A request
    // dropped on the way (the client went away) ends the call.
    let mut running = Running::new(call, run, spawn);
    let head = poll_fn(|cx| running.poll_head(cx)).await;
    match head {
        Head::Streaming(headers) => {
            let mut resp = Response::new(Body::Call(CallBody::new(running)));
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(protocol.content_type(codec)),
            );
            headers::put_metadata(resp.headers_mut(), &headers, "");
            put_encodings(resp.headers_mut(), protocol, encodings.gzip_out);
            resp
        }
        Head::Ended(status, headers, trailers, out) => {
            let answer = Answer {
                status,
                headers,
                trailers,
                out,
            };
            whole(protocol, codec, answer, encodings.gzip_out)
        }
    }
}

/// Checks what the protocol requires of a request before any call starts.
#[allow(clippy::result_large_err)]
fn check_request(req: &Parts, protocol: Protocol) -> Result<Encodings, Response<Body>> {
    if protocol == Protocol::Grpc {
        if req.version != HttpVersion::HTTP_2 {
            return Err(plain(
                505,
                "gRPC needs HTTP/2 (h2c with prior knowledge, or h2 by ALPN under TLS); \
                 browsers use application/grpc-web",
            ));
        }
        if req.headers.get("te").map(HeaderValue::as_bytes) != Some(b"trailers") {
            let mut r = early(
                protocol,
                Status::internal("a gRPC request must carry \"te: trailers\""),
            );
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return Err(r);
        }
    }
    // Compression: gzip or identity.
    let (sent, accepted) = protocol.encoding_headers();
    let gzip_in = match req.headers.get(sent).map(HeaderValue::as_bytes) {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            let mut r = early(
                protocol,
                Status::unimplemented(format!(
                    "message encoding {:?} is not supported: send gzip or identity",
                    String::from_utf8_lossy(other)
                )),
            );
            r.headers_mut()
                .insert(accepted, HeaderValue::from_static(ACCEPT_ENCODING));
            return Err(r);
        }
    };
    let gzip_out = req
        .headers
        .get_all(accepted)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.trim().eq_ignore_ascii_case("gzip"));
    Ok(Encodings { gzip_in, gzip_out })
}

/// Most request-body bytes an early answer over HTTP/1.1 reads and drops so
/// that the connection can carry the next request.
pub(crate) const DRAIN_LIMIT: usize = 64 * 1024;

/// Longest an early answer over HTTP/1.1 waits for the rest of the body.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and drops the body of a request answered without it (a refusal):
/// true if it ended within [`DRAIN_LIMIT`] bytes and [`DRAIN_TIMEOUT`], so the
/// HTTP/1.1 connection can go on. Reading it also spares a client still
/// writing a small body a reset before it reads the answer.
async fn drain<R: Runtime>(rt: &R, mut body: InBody) -> bool {
    use http_body::Body as _;
    let read = async {
        let mut seen = 0usize;
        loop {
            if body.is_end_stream() {
                return true;
            }
            match poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, |d| d.len());
                    if seen > DRAIN_LIMIT {
                        return false;
                    }
                }
            }
        }
    };
    let sleep = rt.sleep_until(now() + DRAIN_TIMEOUT);
    read.or(async {
        sleep.await;
        false
    })
    .await
}

/// The encodings a request's messages come in and go back in.
#[derive(Clone, Copy)]
struct Encodings {
    gzip_in: bool,
    gzip_out: bool,
}

/// What zrpc accepts, as the accept-encoding headers say it.
const ACCEPT_ENCODING: &str = "gzip,identity";

/// Adds the encoding headers of a streamed answer.
fn put_encodings(map: &mut HeaderMap, protocol: Protocol, gzip_out: bool) {
    let (sent, accepted) = protocol.encoding_headers();
    if protocol != (Protocol::Connect { streaming: false }) {
        map.insert(accepted, HeaderValue::from_static(ACCEPT_ENCODING));
        if gzip_out {
            map.insert(sent, HeaderValue::from_static("gzip"));
        }
    }
}

/// The answer to a call refused before its handler ran.
fn early(protocol: Protocol, status: Status) -> Response<Body> {
    let answer = Answer {
        status,
        headers: Metadata::new(),
        trailers: Metadata::new(),
        out: Vec::new(),
    };
    whole(protocol, Codec::Proto, answer, false)
}

/// A call's whole answer.
struct Answer {
    status: Status,
    headers: Metadata,
    trailers: Metadata,
    out: Vec<Bytes>,
}

/// A call answered whole: gRPC's Trailers-Only, or Connect's unary answer
/// (or a streaming one that ended before its head).
fn whole(protocol: Protocol, codec: Codec, answer: Answer, gzip_out: bool) -> Response<Body> {
    let Answer {
        status,
        headers,
        trailers,
        out,
    } = answer;
    let (headers, trailers) = (&headers, &trailers);
    let mut map = HeaderMap::new();
    map.insert(
        "content-type",
        HeaderValue::from_static(protocol.content_type(codec)),
    );
    let (code, body) = match protocol {
        Protocol::Grpc | Protocol::GrpcWeb { .. } => {
            headers::put_metadata(&mut map, headers, "");
            grpc::put_status(&mut map, &status, trailers);
            (200, Body::Empty)
        }
        Protocol::Connect { streaming: true } => {
            headers::put_metadata(&mut map, headers, "");
            put_encodings(&mut map, protocol, gzip_out);
            let mut b = Vec::new();
            for m in &out {
                b.extend_from_slice(&protocol.message(m, gzip_out));
            }
            b.extend_from_slice(&connect::end_stream(&status, trailers));
            (200, Body::full(b))
        }
        Protocol::Connect { streaming: false } => {
            headers::put_metadata(&mut map, headers, "");
            headers::put_metadata(&mut map, trailers, "trailer-");
            map.insert("accept-encoding", HeaderValue::from_static(ACCEPT_ENCODING));
            if status.is_ok() {
                let msg = out.into_iter().next().unwrap_or_default();
                if gzip_out && msg.len() >= envelope::COMPRESS_MIN {
                    map.insert("content-encoding", HeaderValue::from_static("gzip"));
                    (200, Body::full(envelope::gzip(&msg)))
                } else {
                    (200, Body::full(msg))
                }
            } else {
                map.insert("content-type", HeaderValue::from_static("application/json"));
                (
                    connect::http_status(status.code()),
                    Body::full(connect::error_json(&status)),
                )
            }
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *resp.headers_mut() = map;
    resp
}

use bytes::Bytes;

/// The body of a response from [`Server::serve_http`]: a whole answer, or a
/// call's messages as its handler sends them.
pub struct ResponseBody(Body);

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// Call ids of requests served through [`Server::serve_http`] (for logs;
/// each HTTP request is a call of its own).
static MOUNTED_IDS: AtomicU32 = AtomicU32::new(1);

impl<R: Runtime> Server<R> {
    /// Answers one request that another HTTP server received (a hyper
    /// service, an axum handler or fallback): a gRPC, gRPC-Web or Connect
    /// call to this server's router, with its limits, authentication hook,
    /// Origin policy and CORS preflights, exactly as on a connection the
    /// server accepts itself (docs/HTTP.md). gRPC needs the HTTP server to
    /// speak HTTP/2 (h2c or ALPN `h2`); the others work on HTTP/1.1 too.
    /// WebSocket upgrades go to the adapters' `upgrade` instead.
    ///
    /// `peer` is the client's address, when the HTTP server knows it.
    pub async fn serve_http<B>(
        &self,
        req: Request<B>,
        peer: Option<SocketAddr>,
    ) -> Response<ResponseBody>
    where
        B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = StreamId(MOUNTED_IDS.fetch_add(2, Ordering::Relaxed) | 1);
        answer(self, peer, id, req.map(in_body))
            .await
            .map(ResponseBody)
    }
}
