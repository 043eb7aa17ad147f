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
use axum::response::Response;

use crate::{Server, TokioRuntime};

/// The future an axum handler returns.
type Reply = Pin<Box<dyn Future<Output = Response> + Send>>;

/// An axum handler serving zrpc on its route (use it with `get`).
pub fn handler(server: Server<TokioRuntime>) -> impl Fn(Request) -> Reply + Clone + Send + Sync {
    move |mut req: Request| -> Reply {
        let server = server.clone();
        Box::pin(async move {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            crate::hyper::upgrade(&server, &mut req, peer).map(Body::from)
        })
    }
}
