//! The seed's echo service: method `echo` streams the request payload back
//! `count` times, `interval` apart, then ends the call. Legacy clients reach
//! the same handler and get their echoes and a normal close.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_async::{Router, Runtime, Status};

/// The echo method's name.
pub const METHOD: &str = "echo";

/// Adds `echo` (server-streaming) to `router`.
pub fn register<R: Runtime>(router: Router, rt: R, count: u32, interval: Duration) -> Router {
    router.server_streaming(METHOD, move |_ctx, payload: Bytes, mut sink| {
        let rt = rt.clone();
        async move {
            for i in 0..count {
                if i > 0 && !interval.is_zero() {
                    rt.sleep_until(Instant::now() + interval).await;
                }
                sink.send(payload.clone()).await?;
            }
            Ok::<(), Status>(())
        }
    })
}
