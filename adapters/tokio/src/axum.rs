//! zrpc as a route of an axum app (feature `axum`):
//!
//! ```ignore
//! let zrpc = zrpc_tokio::axum::handler(server);
//! let app = axum::Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     // zrpc.v1 over a WebSocket at /rpc ...
//!     .route("/rpc", get(zrpc.clone()))
//!     // ... and gRPC, gRPC-Web and Connect at /<package.Service>/<Method>.
//!     .fallback(zrpc);
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! ```
//!
//! The same handler answers a WebSocket upgrade (below) and any other
//! request as a gRPC, gRPC-Web or Connect call, or a CORS preflight, with
//! the zrpc server's router, limits, authentication hook and Origin policy
//! (`Server::serve_http`). gRPC needs HTTP/2: with axum's `http2` feature,
//! `axum::serve` speaks h2c beside HTTP/1.1.
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
use axum::response::Response;

use crate::{Server, TokioRuntime};

/// The future an axum handler returns.
type Reply = Pin<Box<dyn Future<Output = Response> + Send>>;

/// An axum handler serving zrpc: WebSocket upgrades (use it with `get` on
/// zrpc.v1's route) and gRPC, gRPC-Web and Connect calls (use it as the
/// fallback, or on `/<package.Service>/{method}` routes with `post`).
pub fn handler(server: Server<TokioRuntime>) -> impl Fn(Request) -> Reply + Clone + Send + Sync {
    move |mut req: Request| -> Reply {
        let server = server.clone();
        Box::pin(async move {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            if req.headers().contains_key(axum::http::header::UPGRADE)
                || req.method() == axum::http::Method::GET
            {
                crate::hyper::upgrade(&server, &mut req, peer).map(Body::from)
            } else {
                server.serve_http(req, peer).await.map(Body::new)
            }
        })
    }
}
