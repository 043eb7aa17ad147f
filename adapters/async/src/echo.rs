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

/// The echo client: calls `echo` with `payload` and prints every reply as
/// it arrives, then the final status. Returns the number of replies.
pub async fn run_client(client: &crate::Client, payload: Bytes) -> Result<usize, Status> {
    let mut call = client
        .server_streaming(METHOD, payload, crate::CallOptions::default())
        .await?;
    let mut n = 0;
    while let Some(reply) = call.message().await? {
        n += 1;
        println!("reply {n}: {}", String::from_utf8_lossy(&reply));
    }
    println!("status: OK ({n} replies)");
    Ok(n)
}

/// The legacy echo client: the seed's format, replies until the close.
pub async fn run_legacy_client(mut call: crate::Call) -> Result<usize, Status> {
    let mut n = 0;
    while let Some(reply) = call.message().await? {
        n += 1;
        println!("reply {n}: {}", String::from_utf8_lossy(&reply));
    }
    println!("closed normally ({n} replies)");
    Ok(n)
}
