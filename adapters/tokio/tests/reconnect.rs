//! A `Channel` across server restarts, over real sockets on 127.0.0.1, on
//! tokio's multi-thread runtime and on smol: calls go on through a graceful
//! restart with every request processed exactly once, a call cut by a lost
//! connection fails unless it is marked idempotent, and calls wait (within
//! their deadline) for a server that is not up yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt;
use futures_lite::future::zip;
use tokio::sync::{mpsc, oneshot};
use zrpc_tokio::*;

mod common;

on_both_runtimes!(
    calls_go_on_through_a_graceful_restart_each_processed_once,
    a_call_cut_by_a_lost_connection_fails_unless_idempotent,
    calls_wait_within_their_deadline_for_a_server_to_come_up,
    a_lookalike_not_processed_status_is_not_retried,
    a_resumable_stream_goes_on_through_a_restart_without_gap_or_duplicate,
    a_stream_that_never_progresses_is_resumed_a_bounded_number_of_times,
);

/// `t/Count`: the request is a count `n` (`u32`); the stream sends the
/// numbers below it in order, each stamped with the cursor of the next one,
/// and a resumed call starts at its cursor. A server built with `pause_at`
/// stops before that number and waits for the call to end (a live stream
/// the drain must end). `opened` counts the calls.
fn count_router(pause_at: Option<u32>, opened: Arc<std::sync::atomic::AtomicU32>) -> Router {
    Router::new().server_streaming("t/Count", move |ctx: CallContext, req: Bytes, mut sink| {
        let opened = opened.clone();
        async move {
            opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let n = u32::from_be_bytes(req[..4].try_into().unwrap());
            let mut next = ctx
                .resume_cursor()
                .map_or(0, |c| u32::from_be_bytes(c[..4].try_into().unwrap()));
            sink.start_at(Bytes::copy_from_slice(&next.to_be_bytes()))?;
            while next < n {
                if Some(next) == pause_at {
                    ctx.cancelled().await;
                    return Ok(());
                }
                let cursor = Bytes::copy_from_slice(&(next + 1).to_be_bytes());
                sink.send_with_cursor(Bytes::copy_from_slice(&next.to_be_bytes()), cursor)
                    .await?;
                next += 1;
            }
            Ok::<_, Status>(())
        }
    })
}

/// A server on `addr` (port 0: any); returns it, its address, and a
/// receiver that resolves once its accept loop has ended (its listener is
/// closed then, so the port can be bound again).
async fn start<R: Runtime>(
    rt: &R,
    router: Router,
    config: ServerConfig,
    addr: &str,
) -> (Server<R>, String, oneshot::Receiver<()>) {
    let listener = rt.bind(addr.to_owned()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::with_config(router, config, rt.clone());
    let (done, ended) = oneshot::channel();
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
        let _ = done.send(());
    });
    (server, addr, ended)
}

/// Shuts `server` down gracefully and waits until its port is free.
async fn stop<R: Runtime>(server: Server<R>, ended: oneshot::Receiver<()>) {
    server.shutdown().await;
    ended.await.unwrap();
}

/// `t/Once` answers its request after a little work and records it:
/// `seen` counts each request, `events` gets the number of calls so far.
fn once_router<R: Runtime>(
    rt: R,
    seen: Arc<Mutex<HashMap<Bytes, u32>>>,
    events: mpsc::UnboundedSender<usize>,
) -> Router {
    Router::new().unary("t/Once", move |_ctx, req: Bytes| {
        let (rt, seen, events) = (rt.clone(), seen.clone(), events.clone());
        async move {
            // Work that takes a while, so that a drain finds calls in flight.
            rt.sleep_until(Instant::now() + Duration::from_millis(2))
                .await;
            let n = {
                let mut seen = seen.lock().unwrap();
                *seen.entry(req.clone()).or_default() += 1;
                seen.len()
            };
            let _ = events.send(n);
            Ok::<_, Status>(req)
        }
    })
}

async fn calls_go_on_through_a_graceful_restart_each_processed_once<R: Runtime>(rt: R) {
    const WORKERS: usize = 4;
    const CALLS: usize = 60;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let (events, mut progress) = mpsc::unbounded_channel();
    let router = once_router(rt.clone(), seen.clone(), events.clone());
    let (a, addr, a_ended) = start(&rt, router, ServerConfig::default(), "127.0.0.1:0").await;
    let channel = Channel::new(
        &format!("ws://{addr}/"),
        ChannelConfig::default(),
        rt.clone(),
    )
    .unwrap();

    let worker = |w: usize| {
        let channel = channel.clone();
        async move {
            let mut failed = Vec::new();
            for i in 0..CALLS {
                let req = Bytes::from(format!("w{w}-{i}"));
                let opts = CallOptions::default().with_timeout(Duration::from_secs(20));
                match channel.unary("t/Once", req.clone(), opts).await {
                    Ok(resp) => assert_eq!(resp, req),
                    Err(st) => failed.push(format!("{req:?}: {st}")),
                }
            }
            failed
        }
    };
    let restart = async {
        // Restart once a third of the calls are done, with calls in flight.
        while progress.recv().await.unwrap() < WORKERS * CALLS / 3 {}
        let at_a = seen.lock().unwrap().len();
        stop(a, a_ended).await;
        let router = once_router(rt.clone(), seen.clone(), events.clone());
        let (b, _, b_ended) = start(&rt, router, ServerConfig::default(), &addr).await;
        (at_a, b, b_ended)
    };
    let (((f0, f1), (f2, f3)), (at_a, b, b_ended)) = zip(
        zip(zip(worker(0), worker(1)), zip(worker(2), worker(3))),
        restart,
    )
    .await;
    let failed: Vec<String> = [f0, f1, f2, f3].concat();
    assert!(failed.is_empty(), "failed calls: {failed:?}");

    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            WORKERS * CALLS,
            "every request reached a server"
        );
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "processed more than once: {twice:?}");
    }
    // Calls crossed the restart: some served by each server.
    assert!(
        (WORKERS * CALLS / 3..WORKERS * CALLS).contains(&at_a),
        "{at_a}"
    );
    stop(b, b_ended).await;
}

async fn a_call_cut_by_a_lost_connection_fails_unless_idempotent<R: Runtime>(rt: R) {
    // The first server never answers `t/Hang`, and closes what is left
    // 50 ms into its drain.
    let (entered, mut inside) = mpsc::unbounded_channel();
    let hang = Router::new().unary("t/Hang", move |ctx, _req: Bytes| {
        let entered = entered.clone();
        async move {
            let _ = entered.send(());
            Err::<Bytes, _>(ctx.cancelled().await)
        }
    });
    let config = ServerConfig {
        drain_grace: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let (a, addr, a_ended) = start(&rt, hang, config, "127.0.0.1:0").await;
    let channel = Channel::new(
        &format!("ws://{addr}/"),
        ChannelConfig::default(),
        rt.clone(),
    )
    .unwrap();
    let timeout = Duration::from_secs(20);
    let plain = channel.unary("t/Hang", Bytes::from_static(b"plain"), {
        CallOptions::default().with_timeout(timeout)
    });
    let idempotent = channel.unary("t/Hang", Bytes::from_static(b"again"), {
        CallOptions::default()
            .with_timeout(timeout)
            .with_retry(RetryPolicy::idempotent())
    });
    let restart = async {
        inside.recv().await.unwrap();
        inside.recv().await.unwrap();
        stop(a, a_ended).await;
        let answer =
            Router::new().unary(
                "t/Hang",
                |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
            );
        start(&rt, answer, ServerConfig::default(), &addr).await
    };
    let ((plain, idempotent), (b, _, b_ended)) = zip(zip(plain, idempotent), restart).await;
    let err = plain.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(!err.is_not_processed(), "{err}");
    assert_eq!(idempotent.unwrap(), Bytes::from_static(b"again"));
    stop(b, b_ended).await;
}

async fn calls_wait_within_their_deadline_for_a_server_to_come_up<R: Runtime>(rt: R) {
    // A free port: bound, then let go.
    let addr = rt
        .bind("127.0.0.1:0".into())
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let channel = Channel::new(
        &format!("ws://{addr}/"),
        ChannelConfig::default(),
        rt.clone(),
    )
    .unwrap();
    let echo = || {
        Router::new().unary(
            "t/Echo",
            |_ctx, req: Bytes| async move { Ok::<_, Status>(req) },
        )
    };

    let short = CallOptions::default().with_timeout(Duration::from_millis(300));
    let err = channel
        .unary("t/Echo", Bytes::from_static(b"x"), short)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(err.message().starts_with("no connection to ws://"), "{err}");

    // A call without a deadline waits while the server comes up.
    let call = channel.unary("t/Echo", Bytes::from_static(b"y"), CallOptions::default());
    let up = start(&rt, echo(), ServerConfig::default(), &addr);
    let (resp, (server, _, ended)) = zip(call, up).await;
    assert_eq!(resp.unwrap(), Bytes::from_static(b"y"));

    // An invalid URL is refused at once.
    assert!(matches!(
        Channel::new("http://x/", ChannelConfig::default(), rt.clone()),
        Err(Error::InvalidUrl(_))
    ));
    stop(server, ended).await;
}

/// "Never processed" is a fact this side records (a call beyond the
/// server's GOAWAY), never read from a status: a server (or a proxying
/// handler) that answers UNAVAILABLE with the very message the connection
/// uses for such calls gets its call once, not twice.
async fn a_lookalike_not_processed_status_is_not_retried<R: Runtime>(rt: R) {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    let router = Router::new().unary("t/Mimic", move |_ctx, _req: Bytes| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<Bytes, _>(Status::new(
                Code::Unavailable,
                "not processed: the peer is draining (GOAWAY); safe to retry",
            ))
        }
    });
    let (server, addr, ended) = start(&rt, router, ServerConfig::default(), "127.0.0.1:0").await;
    let channel = Channel::new(
        &format!("ws://{addr}/"),
        ChannelConfig::default(),
        rt.clone(),
    )
    .unwrap();
    let err = channel
        .unary("t/Mimic", Bytes::from_static(b"x"), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(!err.is_not_processed());
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    stop(server, ended).await;
}

async fn a_resumable_stream_goes_on_through_a_restart_without_gap_or_duplicate<R: Runtime>(rt: R) {
    let opened = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let router = count_router(Some(5), opened.clone());
    // A grace period no test waits for: only the drain's ending of
    // resumable calls lets A stop in time.
    let config = ServerConfig {
        drain_grace: Duration::from_secs(600),
        ..ServerConfig::default()
    };
    let (a, addr, a_ended) = start(&rt, router, config, "127.0.0.1:0").await;
    let channel = Channel::new(
        &format!("ws://{addr}/"),
        ChannelConfig::default(),
        rt.clone(),
    )
    .unwrap();
    let opts = CallOptions::default().with_timeout(Duration::from_secs(20));
    let mut stream = channel
        .server_streaming(
            "t/Count",
            Bytes::copy_from_slice(&10u32.to_be_bytes()),
            opts,
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = stream.message().await.unwrap().unwrap();
        got.push(u32::from_be_bytes(m[..].try_into().unwrap()));
    }
    // A drains with the stream live (its handler waits for ever): the
    // drain ends it at once, not after the grace period, and the stream
    // goes on with server B on the same port.
    let stopped = async {
        stop(a, a_ended).await;
        true
    }
    .or(async {
        rt.sleep_until(Instant::now() + Duration::from_secs(60))
            .await;
        false
    })
    .await;
    assert!(stopped, "the drain ended the resumable stream");
    let (b, _, b_ended) = start(
        &rt,
        count_router(None, opened.clone()),
        ServerConfig::default(),
        &addr,
    )
    .await;
    while let Some(m) = stream.message().await.unwrap() {
        got.push(u32::from_be_bytes(m[..].try_into().unwrap()));
    }
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "every number once, in order"
    );
    assert_eq!(stream.resumes(), 1);
    assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 2);
    stop(b, b_ended).await;
}

async fn a_stream_that_never_progresses_is_resumed_a_bounded_number_of_times<R: Runtime>(rt: R) {
    let opened = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = opened.clone();
    // Each call is answered (headers with a resume point), then fails.
    let router = Router::new().server_streaming("t/Flaky", move |_ctx, _req: Bytes, mut sink| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            sink.start_at(Bytes::from_static(b"here"))?;
            Err::<(), _>(Status::new(Code::Unavailable, "store unavailable"))
        }
    });
    let (server, addr, ended) = start(&rt, router, ServerConfig::default(), "127.0.0.1:0").await;
    let config = ChannelConfig {
        max_resumes: 3,
        initial_backoff: Duration::from_millis(1),
        ..ChannelConfig::default()
    };
    let channel = Channel::new(&format!("ws://{addr}/"), config, rt.clone()).unwrap();
    let mut stream = channel
        .server_streaming("t/Flaky", Bytes::new(), CallOptions::default())
        .await
        .unwrap();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "store unavailable", "the last error");
    assert_eq!(stream.resumes(), 3);
    assert_eq!(
        opened.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "the first call and 3 resumes"
    );
    stop(server, ended).await;
}
