//! zrpc as a route of an axum app (feature `axum`):
//!
//! ```ignore
//! let app = axum::Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route("/rpc", get(zrpc_tokio::axum::handler(server)));
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! ```
//!
//! The handler answers the WebSocket upgrade itself (`zrpc.v1` when the
//! client offers it, the seed's format otherwise when the server allows
//! legacy) and hands the upgraded connection to the server with its
//! limits. axum's own `WebSocketUpgrade` extractor yields axum's WebSocket
//! type, which zrpc cannot drive; this handler takes the request instead.
//! Origin and authentication rules are the axum app's (its middleware): the
//! server's `allowed_origins` and `authenticate` hook apply to connections
//! it accepts itself. With `into_make_service_with_connect_info`, calls see
//! the peer's address.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::Request;
use axum::extract::connect_info::ConnectInfo;
use axum::http::StatusCode;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use crate::{Mode, SUBPROTOCOL_V1, Server, TokioRuntime, accept_key, offers_v1};

/// The future an axum handler returns.
type Reply = Pin<Box<dyn Future<Output = Response> + Send>>;

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp
}

/// An axum handler serving zrpc on its route (use it with `get`).
pub fn handler(server: Server<TokioRuntime>) -> impl Fn(Request) -> Reply + Clone + Send + Sync {
    move |mut req: Request| -> Reply {
        let server = server.clone();
        Box::pin(async move {
            let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
                return plain(
                    StatusCode::UPGRADE_REQUIRED,
                    "this is a zrpc endpoint: connect with a WebSocket client (subprotocol zrpc.v1)",
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
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    crate::serve_upgraded(&server, TokioIo::new(upgraded), mode, peer).await;
                }
            });
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
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
        })
    }
}
