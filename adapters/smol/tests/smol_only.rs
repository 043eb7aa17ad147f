//! zrpc-smol on its own (no tokio in this crate's build): a server and a
//! client on 127.0.0.1, the echo service over v1 and legacy, and a drain.

use std::time::Duration;

use bytes::Bytes;
use zrpc_smol::*;

/// The seed's echo: `echo` sends the request back `count` times,
/// `interval` apart.
fn seed_echo(count: u32, interval: Duration) -> Router {
    Router::new().server_streaming("echo", move |_ctx, payload: Bytes, mut sink| async move {
        for i in 0..count {
            if i > 0 {
                smol::Timer::after(interval).await;
            }
            sink.send(payload.clone()).await?;
        }
        Ok::<(), Status>(())
    })
}

#[test]
fn echo_over_v1_and_legacy_then_drain() {
    smol::block_on(async {
        let server = Server::new(seed_echo(10, Duration::from_millis(1)), SmolRuntime);
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let serving = smol::spawn({
            let server = server.clone();
            async move { zrpc_smol::serve(&server, listener).await }
        });

        let client = zrpc_smol::connect(&url).await.unwrap();
        let mut call = client
            .server_streaming("echo", Bytes::from_static(b"world"), CallOptions::default())
            .await
            .unwrap();
        let mut n = 0;
        while let Some(m) = call.message().await.unwrap() {
            assert_eq!(&m[..], b"world");
            n += 1;
        }
        assert_eq!(n, 10);

        let mut legacy = zrpc_smol::legacy_call(&url, "echo", Bytes::from_static(b"old"))
            .await
            .unwrap();
        let mut n = 0;
        while let Some(m) = legacy.message().await.unwrap() {
            assert_eq!(&m[..], b"old");
            n += 1;
        }
        assert_eq!(n, 10);

        server.shutdown().await;
        serving.await.unwrap();
        client.closed().await;
        assert_eq!(server.connections(), 0);
    });
}
