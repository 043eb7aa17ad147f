//! zrpc in a hyper server (feature `hyper`): [`upgrade`] answers a
//! WebSocket upgrade request and serves zrpc on the upgraded connection.
//!
//! ```ignore
//! // in a hyper service_fn, for the route zrpc lives at:
//! "/rpc" => Ok(zrpc_tokio::hyper::upgrade(&zrpc, &mut req, Some(peer))
//!     .map(|text| Full::new(Bytes::from_static(text.as_bytes())))),
//! ```
//!
//! gRPC, gRPC-Web and Connect calls in the same hyper service go to
//! `Server::serve_http`, which answers them with the zrpc server's router,
//! limits, authentication hook and Origin policy:
//!
//! ```ignore
//! _ if req.method() == Method::POST || req.method() == Method::OPTIONS => {
//!     Ok(zrpc.serve_http(req, Some(peer)).await.map(|b| b.boxed_unsync()))
//! }
//! ```
//!
//! (`adapters/tokio/examples/hyper_mount.rs` is a whole app.) For upgrades, Origin and
//! authentication rules are the HTTP server's: the zrpc server's
//! `allowed_origins` and `authenticate` hook apply to connections it
//! accepts itself.

use std::net::SocketAddr;

use hyper::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{Mode, SUBPROTOCOL_V1, Server, TokioRuntime, accept_key, offers_v1};

fn plain(status: StatusCode, text: &'static str) -> Response<&'static str> {
    let mut resp = Response::new(text);
    *resp.status_mut() = status;
    resp
}

/// Answers `req`, a request for zrpc's route: for a WebSocket upgrade,
/// `101 Switching Protocols` (with `zrpc.v1` when the client offered it;
/// the seed's format otherwise, when the server allows it), and zrpc then
/// serves the upgraded connection in a task of its own; for anything else
/// 426 (no `Upgrade: websocket` with `Connection: upgrade`), 405 (not GET),
/// 505 (not HTTP/1.1), 400 (no `Sec-WebSocket-Key` or version 13, or
/// legacy refused). The body is text; map it
/// to the server's body type. The HTTP server must serve with upgrades on.
pub fn upgrade<B>(
    server: &Server<TokioRuntime>,
    req: &mut Request<B>,
    peer: Option<SocketAddr>,
) -> Response<&'static str> {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
        })
    };
    // The same checks as a connection the server accepts itself: a request
    // whose Upgrade or Connection header a proxy stripped is not an upgrade
    // (answering 101 would leave the client with a reset).
    if !(has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")) {
        let mut resp = plain(
            StatusCode::UPGRADE_REQUIRED,
            "this is a zrpc endpoint: connect with a WebSocket client (subprotocol zrpc.v1)",
        );
        resp.headers_mut()
            .insert(UPGRADE, "websocket".parse().expect("a valid header"));
        return resp;
    }
    if req.method() != hyper::Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade must be a GET request",
        );
    }
    if req.version() != hyper::Version::HTTP_11 {
        return plain(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "a WebSocket upgrade needs HTTP/1.1",
        );
    }
    let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
    let Some(key) = key.filter(|_| has(SEC_WEBSOCKET_VERSION, "13")) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        );
    };
    let offered = req.headers().get_all(SEC_WEBSOCKET_PROTOCOL);
    let v1 = offers_v1(offered.iter().filter_map(|v| v.to_str().ok()));
    if !v1 && !server.config().legacy {
        return plain(
            StatusCode::BAD_REQUEST,
            "this server requires the zrpc.v1 subprotocol",
        );
    }
    let mode = if v1 { Mode::V1 } else { Mode::Legacy };
    let on_upgrade = hyper::upgrade::on(req);
    let server = server.clone();
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            crate::serve_upgraded(&server, TokioIo::new(upgraded), mode, peer).await;
        }
    });
    let mut resp = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = resp.headers_mut();
    headers.insert(CONNECTION, "upgrade".parse().expect("a valid header"));
    headers.insert(UPGRADE, "websocket".parse().expect("a valid header"));
    if let Ok(accept) = accept_key(key.as_bytes()).parse() {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if v1 {
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            SUBPROTOCOL_V1.parse().expect("a valid header"),
        );
    }
    resp
}
