//! Deadlines and cancellation cross a hop: a handler on server A calls
//! server B with `ctx.child_options()`; B's call gets what is left of A's
//! deadline, and it is reset when A's call ends early (the caller cancels,
//! or A's deadline passes). A nested call made out of time is never sent.
//! Real sockets on 127.0.0.1, tokio's multi-thread runtime and smol.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use zrpc_tokio::*;

mod common;

on_both_runtimes!(
    a_nested_call_gets_the_deadline_left_and_ends_with_it,
    cancelling_the_outer_call_resets_the_nested_one,
    a_nested_call_out_of_time_is_never_sent,
    a_call_back_to_the_caller_gets_the_deadline_left_too,
);

/// What server B's `t/Wait` saw: its deadline (time left when it started)
/// and the status its call ended with (it never answers: it waits for the
/// end of its call).
#[derive(Debug)]
enum Seen {
    Started(Option<Duration>),
    Ended(Code),
}

use common::{connect_on, serve_on as serve};

/// The nested call `seen` reports started with at most `limit` left of the
/// deadline, then ended with it (its own deadline, or the reset that came
/// with the outer call's end): it did not outlive the outer call.
async fn ends_within(seen: &mut mpsc::UnboundedReceiver<Seen>, limit: Duration) {
    match seen.recv().await.unwrap() {
        Seen::Started(Some(left)) => assert!(left <= limit, "{left:?}"),
        other => panic!("the nested call had no deadline: {other:?}"),
    }
    match seen.recv().await.unwrap() {
        Seen::Ended(code) => assert!(
            matches!(code, Code::DeadlineExceeded | Code::Cancelled),
            "{code:?}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Server B: `t/Wait` reports to `seen` and waits for its call to end.
fn server_b(seen: mpsc::UnboundedSender<Seen>, calls: Arc<AtomicUsize>) -> Router {
    waiter("t/Wait", seen, calls)
}

/// `method` reports to `seen` and waits for its call to end.
fn waiter(method: &str, seen: mpsc::UnboundedSender<Seen>, calls: Arc<AtomicUsize>) -> Router {
    Router::new().unary(method, move |ctx: CallContext, _req: Bytes| {
        let (seen, calls) = (seen.clone(), calls.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let left = ctx
                .deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            let _ = seen.send(Seen::Started(left));
            let ended = ctx.cancelled().await;
            let _ = seen.send(Seen::Ended(ended.code()));
            Err::<Bytes, _>(ended)
        }
    })
}

/// Server A: `t/Outer` calls B's `t/Wait` with its child options.
fn server_a(b: Client) -> Router {
    Router::new().unary("t/Outer", move |ctx: CallContext, req: Bytes| {
        let b = b.clone();
        async move { b.unary("t/Wait", req, ctx.child_options()).await }
    })
}

async fn two_servers<R: Runtime>(
    rt: &R,
) -> (
    Client,
    mpsc::UnboundedReceiver<Seen>,
    Arc<AtomicUsize>,
    Server<R>,
    Server<R>,
) {
    let (tx, seen) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, b_addr) = serve(rt, server_b(tx, calls.clone())).await;
    let to_b = connect_on(rt, &b_addr, ClientConfig::default()).await;
    let (a, a_addr) = serve(rt, server_a(to_b)).await;
    let client = connect_on(rt, &a_addr, ClientConfig::default()).await;
    (client, seen, calls, a, b)
}

async fn a_nested_call_gets_the_deadline_left_and_ends_with_it<R: Runtime>(rt: R) {
    let (client, mut seen, _, a, b) = two_servers(&rt).await;
    let opts = CallOptions::default().with_timeout(Duration::from_millis(500));
    let err = client
        .unary("t/Outer", Bytes::new(), opts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    ends_within(&mut seen, Duration::from_millis(500)).await;
    a.shutdown().await;
    b.shutdown().await;
}

async fn cancelling_the_outer_call_resets_the_nested_one<R: Runtime>(rt: R) {
    let (client, mut seen, _, a, b) = two_servers(&rt).await;
    // No deadline anywhere: only the cancellation can end B's call.
    let mut call = client
        .call("t/Outer", CallKind::Unary, CallOptions::default())
        .await
        .unwrap();
    call.send(Bytes::new()).await.unwrap();
    call.close_send().unwrap();
    match seen.recv().await.unwrap() {
        Seen::Started(None) => {}
        other => panic!("{other:?}"),
    }
    call.cancel();
    match seen.recv().await.unwrap() {
        Seen::Ended(code) => assert_eq!(code, Code::Cancelled),
        other => panic!("{other:?}"),
    }
    a.shutdown().await;
    b.shutdown().await;
}

async fn a_nested_call_out_of_time_is_never_sent<R: Runtime>(rt: R) {
    let (tx, _seen) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let (b, b_addr) = serve(&rt, server_b(tx, calls.clone())).await;
    let to_b = connect_on(&rt, &b_addr, ClientConfig::default()).await;
    // What child_options gives once the deadline has passed.
    let late = CallOptions::default().with_timeout(Duration::ZERO);
    let err = to_b.unary("t/Wait", Bytes::new(), late).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    // The server answers the next call: the first never reached it.
    let opts = CallOptions::default().with_timeout(Duration::from_millis(50));
    let _ = to_b.unary("t/Wait", Bytes::new(), opts).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the call in time reached the server"
    );
    b.shutdown().await;
}

async fn a_call_back_to_the_caller_gets_the_deadline_left_too<R: Runtime>(rt: R) {
    // A's handler calls back the client that called it (ctx.client()), on
    // the same connection, with its child options.
    let router = Router::new().unary("t/Ask", |ctx: CallContext, req: Bytes| async move {
        ctx.client().unary("c/Wait", req, ctx.child_options()).await
    });
    let (a, a_addr) = serve(&rt, router).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let config = ClientConfig {
        router: Some(waiter("c/Wait", tx, Arc::new(AtomicUsize::new(0)))),
        ..ClientConfig::default()
    };
    let client = connect_on(&rt, &a_addr, config).await;
    let opts = CallOptions::default().with_timeout(Duration::from_millis(500));
    let err = client.unary("t/Ask", Bytes::new(), opts).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    ends_within(&mut seen, Duration::from_millis(500)).await;
    a.shutdown().await;
}
