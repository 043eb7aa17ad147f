//! # zrpc-async
//!
//! The runtime-agnostic async layer of zrpc, written once against
//! futures-io and async-tungstenite: the connection driver, the [`Router`]
//! and handler types, the [`Server`] and the [`Client`]. `zrpc-tokio` and
//! `zrpc-smol` add only a [`Runtime`] (spawn, timer), a TCP [`Listener`] and
//! `connect`, so both give the same API and the same behaviour.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod call;
mod call_io;
mod channel;
mod client;
mod conn;
mod connect;
mod driver;
mod health;
mod http;
pub use http::ResponseBody;
mod life;
mod metrics;
mod options;
mod outgoing;
mod resume;
mod router;
mod runtime;
mod server;
mod signal;
mod tls;
mod upgrade;
mod web;
mod ws;

use std::fmt;

pub use bytes::Bytes;
pub use call::{CallContext, RequestStream, ResponseSink};
pub use channel::{Channel, ChannelConfig, ServerStream};
pub use client::{Call, Client};
pub use connect::{ClientConfig, connect, connect_stream, legacy_call, legacy_call_stream};
pub use health::{Health, ServingStatus};
pub use options::{CallOptions, RetryPolicy};
pub use outgoing::{ClientInterceptor, OutgoingCall};
/// Why [`Router::descriptors`] refused a descriptor set.
pub use prost_reflect::DescriptorError;
pub use router::{CallLog, Interceptor, Router, Service};
pub use runtime::{Listener, Runtime};
pub use server::{Server, ServerConfig};
pub use tls::{ClientTls, ServerTls, TlsError};
pub use upgrade::{Refusal, UpgradeRequest};
pub use web::StaticFiles;
pub use ws::{accept_key, offers_v1};
pub use zrpc_core::{
    CURSOR_KEY, CallKind, Code, Config, Metadata, Mode, SUBPROTOCOL_V1, Status, StreamId,
};

/// Why a connection could not be set up.
#[derive(Debug)]
pub enum Error {
    /// Connecting or accepting failed.
    Io(std::io::Error),
    /// The WebSocket handshake failed.
    WebSocket(async_tungstenite::tungstenite::Error),
    /// Connecting (TCP, TLS, the WebSocket handshake) did not finish in
    /// time.
    HandshakeTimeout,
    /// The server did not accept the `zrpc.v1` subprotocol.
    NotZrpc,
    /// The URL is not a `ws://` or `wss://` URL.
    InvalidUrl(String),
    /// The first call failed.
    Status(Status),
    /// A header of `ClientConfig::headers` is not a valid HTTP header.
    InvalidHeader(String),
    /// TLS settings or the server name were unusable.
    Tls(TlsError),
    /// The server refused the upgrade request (origin, authentication,
    /// limits), with this HTTP status and reason.
    Refused(Refusal),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::WebSocket(e) => write!(f, "WebSocket error: {e}"),
            Error::HandshakeTimeout => {
                f.write_str("timed out connecting (TCP, TLS or the WebSocket handshake)")
            }
            Error::NotZrpc => f.write_str(
                "not a zrpc server: the WebSocket upgrade did not accept the zrpc.v1 subprotocol",
            ),
            Error::InvalidUrl(u) => {
                write!(
                    f,
                    "invalid URL {u:?}: expected ws://host[:port]/path or wss://..."
                )
            }
            Error::Status(s) => write!(f, "call failed: {s}"),
            Error::Refused(r) => write!(f, "upgrade refused: {r}"),
            Error::InvalidHeader(h) => write!(f, "invalid request header {h:?}"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<async_tungstenite::tungstenite::Error> for Error {
    fn from(e: async_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(e)
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        Error::Status(s)
    }
}

/// Entry points for the fuzz targets only; not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    /// Parses an upgrade request head: `Some(offers zrpc.v1)` when complete
    /// and acceptable.
    pub fn parse_upgrade_head(bytes: &[u8]) -> Option<bool> {
        crate::upgrade::parse_head(bytes)
            .ok()
            .flatten()
            .map(|h| h.offers_v1)
    }

    /// The origin policy (`https`: the request came over TLS).
    pub fn origin_allowed(
        origin: &str,
        host: Option<&str>,
        allowed: &[String],
        hosts: &[String],
        https: bool,
    ) -> bool {
        let policy = crate::upgrade::OriginPolicy {
            allowed_origins: allowed,
            allowed_hosts: hosts,
            scheme: if https { "https" } else { "http" },
        };
        crate::upgrade::origin_allowed(origin, host, &policy).is_ok()
    }

    /// Cuts `chunks` (a request body as it arrives) into messages under the
    /// framing `mode` (0: enveloped, 1: base64 text, 2: whole body) and the
    /// limit `max`: the messages, or `None` once the body is refused. Also
    /// encodes every gRPC-Web and Connect ending for `message`.
    pub fn envelope_decode(mode: u8, max: usize, chunks: &[&[u8]]) -> Option<Vec<bytes::Bytes>> {
        use crate::http::envelope::{Decoder, Framing};
        let framing = match mode % 3 {
            0 => Framing::Enveloped,
            1 => Framing::Base64Enveloped,
            _ => Framing::Whole,
        };
        let mut d = Decoder::new(framing, max);
        let mut out = Vec::new();
        for c in chunks {
            d.push(bytes::Bytes::copy_from_slice(c)).ok()?;
            while let Some(m) = d.next().ok()? {
                assert!(m.len() <= max, "a message over the limit was handed over");
                out.push(m);
            }
        }
        if let Some(m) = d.finish().ok()? {
            assert!(m.len() <= max);
            out.push(m);
        }
        Some(out)
    }

    /// Status endings of every protocol for an arbitrary status message and
    /// metadata (none may panic).
    pub fn endings(message: &str, key: &str, value: &[u8]) -> usize {
        use crate::http::protocol::Protocol;
        let status = zrpc_core::Status::internal(message);
        let mut md = zrpc_core::Metadata::new();
        let _ = md.insert(key, bytes::Bytes::copy_from_slice(value));
        [
            Protocol::Grpc,
            Protocol::GrpcWeb { text: false },
            Protocol::GrpcWeb { text: true },
            Protocol::Connect { streaming: true },
        ]
        .iter()
        .map(|p| {
            let _ = p.end_frame(&status, &md);
            1
        })
        .sum()
    }
}

/// Host and port of a `ws://` URL (port 80 by default) or a `wss://` URL
/// (port 443 by default), for the adapters' TCP connect.
pub fn socket_addr_of(url: &str) -> Result<String, Error> {
    let (host, port, _) = url_parts(url)?;
    Ok(format!("{host}:{port}"))
}

/// Host, port, and whether the URL asks for TLS.
pub(crate) fn url_parts(url: &str) -> Result<(String, u16, bool), Error> {
    let uri: async_tungstenite::tungstenite::http::Uri =
        url.parse().map_err(|_| Error::InvalidUrl(url.into()))?;
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(Error::InvalidUrl(url.into())),
    };
    let host = uri.host().ok_or_else(|| Error::InvalidUrl(url.into()))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host.to_owned(), port, tls))
}
