//! End to end over real sockets on 127.0.0.1: every call kind on tokio, on
//! smol, and across the two; cancellation, deadlines, errors, panics,
//! metadata, server-initiated calls, many calls in flight, drain.
//! Scenarios are written once against the shared `Client`; only the setup
//! differs per runtime.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use zrpc_tokio::*;

/// Every call kind, errors, panics and metadata against a connected client.
/// Calls a `Count`-like method for `n` messages: each one, in order, then OK.
async fn count_stream(client: &Client, method: &str, n: u32) {
    let mut call = client
        .server_streaming(
            method,
            Bytes::copy_from_slice(&n.to_be_bytes()),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let mut got = 0u32;
    while let Some(m) = call.message().await.unwrap() {
        assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), got);
        got += 1;
    }
    assert_eq!(got, n, "{method}");
    assert!(call.finish().await.is_ok());
}

async fn all_kinds(client: &Client) {
    // Unary.
    let r = client
        .unary("t.T/Unary", b("hello"), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(r, b("hello"));
    // Server streaming: a send per message, then one send_all (many
    // windows of credit, and more messages than one poll of it queues).
    count_stream(client, "t.T/Count", 100).await;
    count_stream(client, "t.T/CountAll", 5000).await;
    // Client streaming.
    let mut call = client
        .client_streaming("t.T/Sum", CallOptions::default())
        .await
        .unwrap();
    for i in 0..50usize {
        call.send(Bytes::from(vec![0u8; i])).await.unwrap();
    }
    call.close_send().unwrap();
    let sum = call.message().await.unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(sum[..8].try_into().unwrap()),
        (0..50).sum::<u64>()
    );
    // Client streaming with send_all: 3,000 messages, many windows.
    let mut call = client
        .client_streaming("t.T/Sum", CallOptions::default())
        .await
        .unwrap();
    call.send_all((0..3000usize).map(|i| Bytes::from(vec![0u8; i % 100])))
        .await
        .unwrap();
    call.close_send().unwrap();
    let sum = call.message().await.unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(sum[..8].try_into().unwrap()),
        (0..3000u64).map(|i| i % 100).sum::<u64>()
    );
    // Bidi: interleaved.
    let mut call = client
        .bidi("t.T/Chat", CallOptions::default())
        .await
        .unwrap();
    for w in ["a", "bc", "def"] {
        call.send(Bytes::from(w)).await.unwrap();
        let m = call.message().await.unwrap().unwrap();
        assert_eq!(m, Bytes::from(w.to_uppercase()));
    }
    call.close_send().unwrap();
    assert_eq!(call.message().await.unwrap(), None);
    // Errors carry status and trailers.
    let mut call = client
        .call("t.T/Fail", CallKind::Unary, CallOptions::default())
        .await
        .unwrap();
    call.send(b("x")).await.unwrap();
    call.close_send().unwrap();
    let err = call.message().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "no such thing")
    );
    // A panic ends only its call, with INTERNAL.
    let err = client
        .unary("t.T/Panic", b("x"), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    // Unknown method.
    let err = client
        .unary("t.T/Nope", b("x"), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // Metadata both ways.
    let md = Metadata::new().with("x-user", "ada").unwrap();
    let mut call = client
        .call(
            "t.T/Meta",
            CallKind::Unary,
            CallOptions {
                timeout: None,
                metadata: md,
                retry: None,
            },
        )
        .await
        .unwrap();
    call.send(b("x")).await.unwrap();
    call.close_send().unwrap();
    assert_eq!(call.headers().await.get_str("x-seen-user"), Some("ada"));
    assert_eq!(call.message().await.unwrap(), Some(b("ada")));
    // The connection is still fine after all of that.
    assert_eq!(
        client
            .unary("t.T/Unary", b("again"), CallOptions::default())
            .await
            .unwrap(),
        b("again")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_client_tokio_server_all_kinds() {
    let fx = tokio_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(all_kinds(&client)).await;
}

#[test]
fn smol_client_smol_server_all_kinds() {
    smol::block_on(async {
        let fx = smol_server().await;
        let client = zrpc_smol::connect(&fx.url).await.unwrap();
        all_kinds(&client).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_client_smol_server_all_kinds() {
    let fx = smol_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(all_kinds(&client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smol_client_tokio_server_all_kinds() {
    let fx = tokio_server().await;
    let client = zrpc_smol::connect(&fx.url).await.unwrap();
    bounded(all_kinds(&client)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_cancels_the_handler_and_frees_server_state() {
    let mut fx = tokio_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(async {
        let mut call = client
            .server_streaming("t.T/Forever", b("go"), CallOptions::default())
            .await
            .unwrap();
        for _ in 0..3 {
            call.message().await.unwrap().unwrap();
        }
        drop(call);
        assert_eq!(fx.events.recv().await.unwrap(), "forever-dropped");
        assert_eq!(fx.cancelled.load(Ordering::SeqCst), 1);
        assert_eq!(fx.server.live_calls(), 0);
        // The connection still works.
        assert_eq!(
            client
                .unary("t.T/Unary", b("ok"), CallOptions::default())
                .await
                .unwrap(),
            b("ok")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_deadline_ends_the_call_on_both_sides() {
    let mut fx = tokio_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(async {
        let opts = CallOptions {
            timeout: Some(Duration::from_millis(100)),
            metadata: Metadata::new(),
            retry: None,
        };
        let err = client.unary("t.T/Slow", b("x"), opts).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(
            fx.events.recv().await.unwrap(),
            "slow-ended DEADLINE_EXCEEDED"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_256_in_flight_on_one_connection() {
    let fx = tokio_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..256u32 {
            let client = client.clone();
            tasks.spawn(async move {
                let mut ok = 0;
                let mut i = w;
                while i < 10_000 {
                    let req = Bytes::copy_from_slice(&i.to_be_bytes());
                    let resp = client
                        .unary("t.T/Unary", req.clone(), CallOptions::default())
                        .await
                        .unwrap();
                    assert_eq!(resp, req);
                    ok += 1;
                    i += 256;
                }
                ok
            });
        }
        let mut total = 0;
        while let Some(r) = tasks.join_next().await {
            total += r.unwrap();
        }
        assert_eq!(total, 10_000);
    })
    .await;
    assert_eq!(fx.server.live_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_calls_a_method_the_client_registered() {
    let fx = tokio_server().await;
    let config = ClientConfig {
        router: Some(client_router()),
        ..ClientConfig::default()
    };
    let client = zrpc_tokio::connect_with(&fx.url, config).await.unwrap();
    let r = bounded(client.unary("t.T/CallBack", b("ab"), CallOptions::default()))
        .await
        .unwrap();
    assert_eq!(r, b("abab"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_whole_messages_whatever_its_read_buffer() {
    let fx = tokio_server().await;
    // 0 stands for the smallest (256 bytes); the message is larger than
    // every buffer here and than a fragment, so it arrives in many reads.
    let big = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    for size in [0, 256, 8 * 1024, 64 * 1024] {
        let config = ClientConfig {
            read_buffer_size: size,
            ..ClientConfig::default()
        };
        let client = zrpc_tokio::connect_with(&fx.url, config).await.unwrap();
        bounded(async {
            let r = client
                .unary("t.T/Unary", big.clone(), CallOptions::default())
                .await
                .unwrap();
            assert_eq!(r, big, "read buffer {size}");
            let r = client
                .unary("t.T/Unary", b("small"), CallOptions::default())
                .await
                .unwrap();
            assert_eq!(r, b("small"), "read buffer {size}");
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_running_calls_and_refuses_new_ones() {
    let fx = tokio_server().await;
    let client = zrpc_tokio::connect(&fx.url).await.unwrap();
    bounded(async {
        let mut call = client
            .bidi("t.T/Chat", CallOptions::default())
            .await
            .unwrap();
        call.send(b("one")).await.unwrap();
        assert_eq!(call.message().await.unwrap(), Some(b("ONE")));
        let server = fx.server.clone();
        let shutdown = tokio::spawn(async move { server.shutdown().await });
        // The running call continues...
        call.send(b("two")).await.unwrap();
        assert_eq!(call.message().await.unwrap(), Some(b("TWO")));
        // ...new calls fail fast with a retryable status once GOAWAY arrived.
        loop {
            if client.is_draining() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let err = client
            .unary("t.T/Unary", b("x"), CallOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        call.close_send().unwrap();
        assert_eq!(call.message().await.unwrap(), None);
        shutdown.await.unwrap();
        client.closed().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_after_the_grace_period_fails_calls_with_unavailable() {
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (tx, _events) = tokio::sync::mpsc::unbounded_channel();
    let config = ServerConfig {
        drain_grace: Duration::ZERO,
        ..ServerConfig::default()
    };
    let server = Server::with_config(router(TokioRuntime, cancelled, tx), config, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let client = zrpc_tokio::connect(&url).await.unwrap();
    bounded(async {
        let mut call = client
            .server_streaming("t.T/Forever", b("go"), CallOptions::default())
            .await
            .unwrap();
        call.message().await.unwrap();
        server.shutdown().await;
        let err = loop {
            match call.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended OK"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.code(), Code::Unavailable);
        client.closed().await;
        assert_eq!(server.connections(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn spawned_handlers_of_one_connection_compute_in_parallel() {
    // Each handler blocks its thread, before any await, until both have
    // started: that only ends if the two run at the same time.
    let started = Arc::new((std::sync::Mutex::new(0u32), std::sync::Condvar::new()));
    let s = started.clone();
    let router = Router::new()
        .unary("t.T/Meet", move |_ctx, _req: Bytes| {
            let s = s.clone();
            async move {
                let (count, cv) = &*s;
                let mut n = count.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let (n, timeout) = cv
                    .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 2)
                    .unwrap();
                if timeout.timed_out() {
                    return Err(Status::new(Code::DeadlineExceeded, format!("met {}", *n)));
                }
                Ok(b("met"))
            }
        })
        .unary("t.T/Echo", |_ctx, req: Bytes| async move { Ok(req) })
        .spawn_every_handler();
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let srv = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&srv, listener).await });
    let client = zrpc_tokio::connect(&url).await.unwrap();
    // After one call both sides know each other's settings, so the two
    // calls below reach the server together, in one read.
    let echo = client.unary("t.T/Echo", b("warm"), CallOptions::default());
    assert_eq!(bounded(echo).await.unwrap(), b("warm"));
    let (a, b2) = bounded(async {
        tokio::join!(
            client.unary("t.T/Meet", b("a"), CallOptions::default()),
            client.unary("t.T/Meet", b("b"), CallOptions::default()),
        )
    })
    .await;
    assert_eq!((a.unwrap(), b2.unwrap()), (b("met"), b("met")));
}

/// The legacy format carries one request: a client-streaming or bidi
/// method is refused (`UNIMPLEMENTED` in the close, saying why), never run with one
/// message; unary and server-streaming methods still serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_calls_to_streaming_request_methods_are_refused() {
    bounded(async {
        let fx = tokio_server().await;
        for method in ["t.T/Sum", "t.T/Chat"] {
            let mut call = zrpc_tokio::legacy_call(&fx.url, method, b("one"))
                .await
                .unwrap();
            // The legacy format has no status frame: the close's reason
            // carries the server's status.
            let err = call.message().await.unwrap_err();
            assert!(
                err.message().contains("UNIMPLEMENTED") && err.message().contains("legacy format"),
                "{method}: {err}"
            );
        }
        let mut ok = zrpc_tokio::legacy_call(&fx.url, "t.T/Unary", b("x"))
            .await
            .unwrap();
        assert_eq!(ok.message().await.unwrap(), Some(b("x")));
    })
    .await;
}
