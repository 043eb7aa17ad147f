//! The jsonrpsee peer: JSON-RPC 2.0 over WebSocket. Unary is a method call;
//! streaming is a subscription whose notifications carry the messages. The
//! payload is a JSON string of the same length as the other systems' bytes.

use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::rpc_params;
use jsonrpsee::server::{RpcModule, Server, ServerConfig, SubscriptionMessage};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};

/// Notifications a client subscription may hold before it is dropped as
/// lagging: above any stream the benchmark asks for.
const CLIENT_BUFFER: usize = 300_000;

/// Serves until the process is killed.
pub async fn serve(listener: tokio::net::TcpListener) {
    let mut module = RpcModule::new(());
    module
        .register_method("unary", |params, _, _| {
            params.one::<String>().unwrap_or_default()
        })
        .expect("register unary");
    module
        .register_subscription(
            "stream",
            "stream_item",
            "stream_cancel",
            |params, pending, _, _| async move {
                let (n, len): (u32, usize) = params.parse()?;
                let sink = pending.accept().await?;
                let item = "Z".repeat(len.min(16 << 20));
                for _ in 0..n {
                    let msg = SubscriptionMessage::new(
                        sink.method_name(),
                        sink.subscription_id(),
                        &item,
                    )?;
                    sink.send(msg).await?;
                }
                Ok(())
            },
        )
        .expect("register stream");
    let config = ServerConfig::builder()
        .max_connections(20_000)
        .max_response_body_size(u32::MAX)
        .set_tcp_no_delay(true)
        .build();
    let server = Server::builder()
        .set_config(config)
        .build_from_tcp(listener.into_std().expect("std listener"))
        .expect("jsonrpsee server");
    server.start(module).stopped().await;
}

/// One client connection.
pub async fn connect(addr: &str) -> WsClient {
    WsClientBuilder::default()
        .max_buffer_capacity_per_subscription(CLIENT_BUFFER)
        .max_response_size(u32::MAX)
        .max_concurrent_requests(1024)
        .build(format!("ws://{addr}"))
        .await
        .expect("jsonrpsee connect")
}

/// One unary echo; checks the length.
pub async fn unary(client: &WsClient, payload: &str) {
    let r: String = client
        .request("unary", rpc_params![payload])
        .await
        .expect("jsonrpsee unary");
    assert_eq!(r.len(), payload.len(), "echo length");
}

/// Streams `n` items of `len` bytes; returns (count, bytes).
pub async fn stream(client: &WsClient, n: u32, len: u32) -> (u32, u64) {
    let mut sub = client
        .subscribe::<String, _>("stream", rpc_params![n, len], "stream_cancel")
        .await
        .expect("jsonrpsee subscribe");
    let (mut count, mut bytes) = (0u32, 0u64);
    while count < n {
        let item = sub
            .next()
            .await
            .expect("subscription ended early")
            .expect("subscription item");
        assert_eq!(item.len(), len as usize);
        bytes += item.len() as u64;
        count += 1;
    }
    (count, bytes)
}
