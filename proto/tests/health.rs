//! The health service and `GET /healthz`, over real sockets on 127.0.0.1:
//! Check and Watch follow the server's `Health`; a drain reports
//! NOT_SERVING to watchers and ends their streams; `/healthz` answers 200
//! or 503 with the whole server's status, on the RPC port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zrpc_proto::health::{self, HealthCheckRequest, HealthCheckResponse};
use zrpc_proto::{Code, Health, Router, ServingStatus, decode, encode};
use zrpc_tokio::{CallOptions, Client, Server, ServerConfig, TokioRuntime};

async fn check(client: &Client, service: &str) -> Result<ServingStatus, zrpc_proto::Status> {
    let req = encode(&HealthCheckRequest {
        service: service.into(),
    });
    let reply = client
        .unary(health::CHECK, req, CallOptions::default())
        .await?;
    Ok(decode::<HealthCheckResponse>(reply)?.serving_status())
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).await.unwrap();
    resp
}

/// A server with the health service and `health` in its config, on
/// 127.0.0.1; its address and its accept loop.
async fn serve(
    health: &Health,
    config: ServerConfig,
) -> (
    Server<TokioRuntime>,
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let router = health::register(Router::new(), health);
    let config = ServerConfig {
        health: Some(health.clone()),
        ..config
    };
    let server = Server::with_config(router, config, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let server = server.clone();
        async move { zrpc_tokio::serve(&server, listener).await }
    });
    (server, addr, serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_watch_healthz_and_drain() {
    let health = Health::new();
    let (server, addr, serving) = serve(
        &health,
        ServerConfig {
            // Long: the drain must end because the watcher's stream ends,
            // not because the grace period ran out.
            drain_grace: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    )
    .await;
    let client = zrpc_tokio::connect(&format!("ws://{addr}/")).await.unwrap();

    // Check: the whole server, a named service, an unknown one.
    assert_eq!(check(&client, "").await.unwrap(), ServingStatus::Serving);
    health.set("people.People", ServingStatus::NotServing);
    assert_eq!(
        check(&client, "people.People").await.unwrap(),
        ServingStatus::NotServing
    );
    let err = check(&client, "nope.Nope").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Watch: the status at once, then each change; an unknown service is
    // SERVICE_UNKNOWN until it appears.
    let watch = |service: &str| {
        let req = encode(&HealthCheckRequest {
            service: service.into(),
        });
        client.server_streaming(health::WATCH, req, CallOptions::default())
    };
    let next = |m: Option<zrpc_tokio::Bytes>| decode::<HealthCheckResponse>(m.unwrap()).unwrap();
    let mut people = watch("people.People").await.unwrap();
    assert_eq!(
        next(people.message().await.unwrap()).serving_status(),
        ServingStatus::NotServing
    );
    health.set("people.People", ServingStatus::Serving);
    assert_eq!(
        next(people.message().await.unwrap()).serving_status(),
        ServingStatus::Serving
    );
    let mut later = watch("later.Later").await.unwrap();
    assert_eq!(
        next(later.message().await.unwrap()).serving_status(),
        ServingStatus::ServiceUnknown
    );
    health.set("later.Later", ServingStatus::Serving);
    assert_eq!(
        next(later.message().await.unwrap()).serving_status(),
        ServingStatus::Serving
    );
    drop(later); // cancels: its listener goes with it

    // GET /healthz follows the whole server's status.
    let ok = healthz(addr).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("SERVING\n"), "{ok}");
    health.set("", ServingStatus::NotServing);
    let down = healthz(addr).await;
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    assert!(down.ends_with("NOT_SERVING\n"), "{down}");
    health.set("", ServingStatus::Serving);

    // Shutdown: the watcher hears NOT_SERVING, then its stream ends, so the
    // drain completes without waiting for the grace period.
    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    assert_eq!(
        next(people.message().await.unwrap()).serving_status(),
        ServingStatus::NotServing
    );
    let end = people.message().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    drop(people);
    drop(client);
    shutdown.await.unwrap();
    serving.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the drain waited for its grace period"
    );
    assert!(health.is_draining());
    assert_eq!(
        health.status("people.People"),
        Some(ServingStatus::NotServing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_delay_reports_not_serving_while_still_serving() {
    let health = Health::new();
    let (server, addr, serving) = serve(
        &health,
        ServerConfig {
            // Long enough for the checks below to run inside it; they wait
            // for events, not for time.
            drain_delay: Duration::from_secs(3),
            ..ServerConfig::default()
        },
    )
    .await;
    assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
    let shutdown = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    // Health says NOT_SERVING as soon as shutdown begins ...
    let mut down = String::new();
    for _ in 0..1000 {
        down = healthz(addr).await;
        if down.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    // ... while new connections are still accepted and served.
    let client = zrpc_tokio::connect(&format!("ws://{addr}/")).await.unwrap();
    let status = check(&client, "").await.unwrap();
    assert_eq!(status, ServingStatus::NotServing);
    drop(client);
    shutdown.await.unwrap();
    serving.await.unwrap().unwrap();
}
