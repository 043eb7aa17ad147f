//! The `grpc.health.v1.Health` service over zrpc: `Check` and `Watch` with
//! the message shapes of gRPC's health protocol, answered from a server's
//! [`Health`].
//!
//! ```no_run
//! use zrpc_proto::{Health, Router};
//!
//! let health = Health::new();
//! let router = zrpc_proto::health::register(Router::new(), &health);
//! // ServerConfig { health: Some(health), .. } also answers GET /healthz,
//! // and the server's shutdown reports NOT_SERVING to every watcher.
//! # let _ = router;
//! ```

use bytes::Bytes;
use zrpc_async::{Code, Health, Router, ServingStatus, Status};

use crate::{decode, encode};

/// The `Check` method's name.
pub const CHECK: &str = "grpc.health.v1.Health/Check";
/// The `Watch` method's name.
pub const WATCH: &str = "grpc.health.v1.Health/Watch";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about; `""` is the whole server.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// A [`ServingStatus`] as its number (the proto's enum).
    #[prost(int32, tag = "1")]
    pub status: i32,
}

impl HealthCheckResponse {
    /// The status, `Unknown` for a number this version does not know.
    pub fn serving_status(&self) -> ServingStatus {
        match self.status {
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            _ => ServingStatus::Unknown,
        }
    }
}

fn reply(status: ServingStatus) -> Bytes {
    encode(&HealthCheckResponse {
        status: status as i32,
    })
}

/// Adds `Check` and `Watch` to `router`, answered from `health`.
///
/// * `Check`: the service's status; `NOT_FOUND` for a service `health`
///   does not know.
/// * `Watch`: the status at once (`SERVICE_UNKNOWN` for an unknown
///   service), then every change. Once the server drains it sends
///   `NOT_SERVING` and ends the stream with `UNAVAILABLE`, so watchers do
///   not hold a drain open.
pub fn register(router: Router, health: &Health) -> Router {
    let h = health.clone();
    let router = router.unary(CHECK, move |_ctx, req: Bytes| {
        let h = h.clone();
        async move {
            let req: HealthCheckRequest = decode(req)?;
            match h.status(&req.service) {
                Some(s) => Ok(reply(s)),
                None => Err(Status::new(
                    Code::NotFound,
                    format!("unknown service {}", crate::quoted(&req.service)),
                )),
            }
        }
    });
    let h = health.clone();
    let router = router.server_streaming(WATCH, move |_ctx, req: Bytes, mut sink| {
        let h = h.clone();
        async move {
            let req: HealthCheckRequest = decode(req)?;
            let mut now = h.status(&req.service);
            loop {
                sink.send(reply(now.unwrap_or(ServingStatus::ServiceUnknown)))
                    .await?;
                if h.is_draining() {
                    return Err(Status::new(Code::Unavailable, "the server is draining"));
                }
                now = h.changed(&req.service, now).await;
            }
        }
    });
    // A watch keeps its request for the stream's life, outside the
    // server's receive budget: service names only.
    router
        .max_request_size(CHECK, crate::MAX_BUILTIN_REQUEST)
        .max_request_size(WATCH, crate::MAX_BUILTIN_REQUEST)
}
