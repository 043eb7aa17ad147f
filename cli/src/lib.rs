//! # zrpc-cli
//!
//! The `zrpc` command-line tool, and what it serves: the echo service and
//! the people service (the seed's Titan graph model) on an embedded SQLite
//! store.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod echo_service;
pub mod feed;
pub mod interop_service;
pub mod people;
pub mod seed_echo;
pub mod store;

/// The people web app served by `zrpc serve --web`, built into the binary:
/// the page and style from `clients/js/web/`, and `cli/web/app.js`, the
/// bundle `npm run build:web` makes of its script.
pub mod web {
    use zrpc_async::StaticFiles;

    /// The app's page, script and style, at `/`, `/app.js` and `/style.css`.
    pub fn files() -> StaticFiles {
        let html: &'static [u8] = include_bytes!("../../clients/js/web/index.html");
        StaticFiles::new()
            .with("/", "text/html; charset=utf-8", html)
            .with("/index.html", "text/html; charset=utf-8", html)
            .with(
                "/app.js",
                "text/javascript; charset=utf-8",
                &include_bytes!("../web/app.js")[..],
            )
            .with(
                "/style.css",
                "text/css; charset=utf-8",
                &include_bytes!("../../clients/js/web/style.css")[..],
            )
    }
}

/// The generated code of the demo's protos (`cli/protos/`).
pub mod proto {
    /// The people service: the seed's Titan graph model (`people.proto`).
    #[allow(missing_docs, clippy::all)]
    pub mod people {
        zrpc_proto::include_proto!("people");
    }

    /// A typed echo service (`echo.proto`).
    #[allow(missing_docs, clippy::all)]
    pub mod echo {
        zrpc_proto::include_proto!("echo");
    }

    /// gRPC's interop test service (`grpc/testing/test.proto`), served by
    /// `zrpc serve --interop`.
    #[allow(missing_docs, clippy::all)]
    pub mod grpc_testing {
        zrpc_proto::include_proto!("grpc.testing");
    }

    /// The compiled `FileDescriptorSet` of `grpc_testing` (served with
    /// `zrpc serve --interop` only).
    pub const INTEROP_DESCRIPTORS: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/interop_descriptors.bin"));

    /// The compiled `FileDescriptorSet` of the demo protos (not `grpc_testing`) (for
    /// reflection: JSON in and out in `zrpc call`).
    pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
}

use std::sync::Arc;
use std::time::Duration;

use crate::proto::echo::echo_server;
use crate::proto::people::people_server;
use zrpc_async::{Router, Runtime};

/// Everything `zrpc serve` serves: `echo` (the seed's, v1 and legacy),
/// `echo.Echo/*` (typed), `people.People/*`, and the legacy Titan call
/// `create_person` / `dispatch.create_person`.
pub fn router<R: Runtime>(rt: R, store: Arc<dyn store::Store>, echo_interval: Duration) -> Router {
    let service = Arc::new(people::PeopleService::new(store, rt.clone()));
    let router = seed_echo::register(Router::new(), rt, 10, echo_interval);
    let router = echo_server::register(router, Arc::new(crate::echo_service::EchoService));
    let router = people_server::register(router, service.clone());
    // Streams that keep their request for their life (a watch can last
    // hours) take small requests only: what they hold stays outside the
    // server's receive budget.
    let router = ["ListPeople", "Members", "WatchPeople"]
        .into_iter()
        .fold(router, |r, m| {
            r.max_request_size(&format!("people.People/{m}"), STREAM_REQUEST_LIMIT)
        });
    people::register_legacy(router, service)
}

/// Largest request of a people stream (`ListPeople`, `Members`,
/// `WatchPeople`): filters and a cursor.
pub const STREAM_REQUEST_LIMIT: usize = 4 * 1024;
