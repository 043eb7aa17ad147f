//! zrpc mounted at `/rpc` in an ordinary hyper HTTP server: `GET /health`
//! answers "ok", `GET /` a page, and a WebSocket upgrade on `/rpc` is served
//! by zrpc (v1 when the client offers `zrpc.v1`, legacy otherwise); POSTs
//! are gRPC-Web and Connect calls (`Server::serve_http`), e.g.
//! `curl -H 'content-type: application/proto' --data hi http://127.0.0.1:8080/demo.Echo/Say`.
//!
//! `cargo run -p zrpc-tokio --features hyper --example hyper_mount -- --addr 127.0.0.1:8080`
//! then `cargo run -p zrpc-tokio --example echo_client -- --url ws://127.0.0.1:8080/rpc`

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use zrpc_tokio::{Router, Server, Status, TokioRuntime};

type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync())
        .unwrap()
}

/// The HTTP app: ordinary routes, and zrpc on `/rpc`.
async fn route(
    req: Request<Incoming>,
    zrpc: Server<TokioRuntime>,
    peer: SocketAddr,
) -> Result<Response<Body>, hyper::Error> {
    match req.uri().path() {
        "/health" => Ok(text(StatusCode::OK, "ok")),
        // zrpc answers the upgrade and serves the upgraded connection.
        "/rpc" => {
            let mut req = req;
            Ok(zrpc_tokio::hyper::upgrade(&zrpc, &mut req, Some(peer))
                .map(|text| Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync()))
        }
        // gRPC-Web and Connect calls (and CORS preflights) at
        // /<package.Service>/<Method>.
        _ if req.method() == hyper::Method::POST || req.method() == hyper::Method::OPTIONS => {
            Ok(zrpc
                .serve_http(req, Some(peer))
                .await
                .map(|b| b.boxed_unsync()))
        }
        "/" => Ok(text(StatusCode::OK, "zrpc lives at /rpc")),
        _ => Ok(text(StatusCode::NOT_FOUND, "not found")),
    }
}

/// Serves the app on `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener, zrpc: Server<TokioRuntime>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let zrpc = zrpc.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(req, zrpc.clone(), peer));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// The zrpc side: the seed's echo service (10 replies, 50 ms apart), and
/// `demo.Echo/Say` (the request back).
pub fn zrpc_server() -> Server<TokioRuntime> {
    let echo = Router::new()
        .unary("demo.Echo/Say", |_ctx, req: Bytes| async move {
            Ok::<_, Status>(req)
        })
        .server_streaming("echo", |_ctx, payload: Bytes, mut sink| async move {
            for i in 0..10 {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sink.send(payload.clone()).await?;
            }
            Ok::<(), Status>(())
        });
    Server::new(echo, TokioRuntime)
}

#[allow(dead_code)] // the tests include this file and call serve() themselves
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = match args.iter().position(|a| a == "--addr") {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => "127.0.0.1:8080".to_owned(),
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "http://{0}/health, and zrpc at ws://{0}/rpc",
        listener.local_addr()?
    );
    serve(listener, zrpc_server()).await;
    Ok(())
}
