//! What a hostile client gets from the built-in services (reflection,
//! health), over real sockets on 127.0.0.1: an answer never much larger
//! than the request, and no large request held for a stream's life.

use prost::Message;
use zrpc_proto::health::{self, HealthCheckRequest};
use zrpc_proto::reflection::{self, Request, ServerReflectionResponse};
use zrpc_proto::{Code, Health, MAX_BUILTIN_REQUEST, Router, encode};
use zrpc_tokio::{Bytes, CallOptions, Client, Server, TokioRuntime};

async fn serve() -> (Server<TokioRuntime>, Client) {
    let health = Health::new();
    let router = health::register(Router::new(), &health);
    let router = reflection::register(router, &[]).unwrap();
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { zrpc_tokio::serve(&server, listener).await }
    });
    let client = zrpc_tokio::connect(&url).await.unwrap();
    (server, client)
}

/// Sends one reflection request; the raw answer's size, or the status.
async fn reflect(client: &Client, request: Bytes) -> Result<usize, zrpc_proto::Status> {
    let mut call = client
        .bidi(reflection::METHOD, CallOptions::default())
        .await?;
    call.send(request).await?;
    call.close_send()?;
    let reply = call.message().await?.expect("an answer");
    let len = reply.len();
    ServerReflectionResponse::decode(reply).expect("a response");
    Ok(len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_are_bounded_by_the_request() {
    let (server, client) = serve().await;
    // An unknown symbol of control characters just under the bound: the
    // error quotes at most 64 characters of it (escaped, that was 6x the
    // name: 25 MB for a 4 MiB name).
    let name = "\u{1}".repeat(MAX_BUILTIN_REQUEST - 16);
    let request = reflection::encode_request(Request::FileContainingSymbol(name.clone()));
    let answer = reflect(&client, request.clone()).await.unwrap();
    assert!(
        answer < request.len() + 1024,
        "{answer} bytes answered a {} byte request",
        request.len()
    );
    // A larger request is refused before it is decoded.
    let big = reflection::encode_request(Request::FileContainingSymbol("\u{1}".repeat(4 << 20)));
    let err = reflect(&client, big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().len() < 200, "{err}");
    // The connection serves on.
    assert!(
        reflect(
            &client,
            reflection::encode_request(Request::ListServices(String::new()))
        )
        .await
        .is_ok()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_takes_small_requests_only() {
    let (server, client) = serve().await;
    // A 1 MiB service name would be kept for the watch's life, outside the
    // receive budget: refused instead.
    let req = encode(&HealthCheckRequest {
        service: "x".repeat(1 << 20),
    });
    let mut watch = client
        .server_streaming(health::WATCH, req.clone(), CallOptions::default())
        .await
        .unwrap();
    let err = watch.message().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let err = client
        .unary(health::CHECK, req, CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(server.live_calls(), 0);
    // An unknown name within the bound: NOT_FOUND, quoting a prefix only.
    let req = encode(&HealthCheckRequest {
        service: "y".repeat(3000),
    });
    let err = client
        .unary(health::CHECK, req, CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 200, "{err}");
    server.shutdown().await;
}
