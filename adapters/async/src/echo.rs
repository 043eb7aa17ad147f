//! The seed's echo service, shared by the examples of both adapters:
//! method `echo` streams the request payload back `count` times,
//! `interval` apart, then ends the call. Legacy clients reach the same
//! handler and get their echoes and a normal close.

use std::time::Duration;

use bytes::Bytes;

use crate::runtime::Runtime;
use crate::shared::now;
use crate::{Router, Status};

/// The echo method's name.
pub const METHOD: &str = "echo";

/// A router serving `echo` (server-streaming).
pub fn router<R: Runtime>(rt: R, count: u32, interval: Duration) -> Router {
    Router::new().server_streaming(METHOD, move |_ctx, payload: Bytes, mut sink| {
        let rt = rt.clone();
        async move {
            for i in 0..count {
                if i > 0 && !interval.is_zero() {
                    rt.sleep_until(now() + interval).await;
                }
                sink.send(payload.clone()).await?;
            }
            Ok::<(), Status>(())
        }
    })
}

/// Parses `--name value` from the command line, with a default.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}
