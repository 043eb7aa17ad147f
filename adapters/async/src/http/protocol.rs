//! Which HTTP protocol a request speaks, told from its `Content-Type`, and
//! what each does differently: framing of requests, how a message and the
//! end go out, the timeout header. Each protocol's own rules are in its
//! file (`grpc`, `grpc_web`, `connect`); this is the one place that
//! chooses between them.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body::Frame;
use hyper::HeaderMap;
use zrpc_core::{Metadata, Status};

use super::envelope::{self, Framing};
use super::{connect, grpc, grpc_web};

/// An HTTP protocol zrpc answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// gRPC over HTTP/2.
    Grpc,
    /// gRPC-Web; `text`: the body is base64 (`application/grpc-web-text`).
    GrpcWeb { text: bool },
    /// Connect; `streaming`: enveloped messages (`application/connect+*`),
    /// else a unary call whose body is the message.
    Connect { streaming: bool },
}

/// How messages are serialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Proto,
    Json,
}

impl Protocol {
    /// The protocol and codec of a `Content-Type`, if it is one of ours.
    pub(crate) fn detect(content_type: &str) -> Option<(Protocol, Codec)> {
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let (protocol, codec) = match ct.as_str() {
            "application/grpc" | "application/grpc+proto" => (Protocol::Grpc, "proto"),
            "application/grpc+json" => (Protocol::Grpc, "json"),
            "application/grpc-web" | "application/grpc-web+proto" => {
                (Protocol::GrpcWeb { text: false }, "proto")
            }
            "application/grpc-web+json" => (Protocol::GrpcWeb { text: false }, "json"),
            "application/grpc-web-text" | "application/grpc-web-text+proto" => {
                (Protocol::GrpcWeb { text: true }, "proto")
            }
            "application/grpc-web-text+json" => (Protocol::GrpcWeb { text: true }, "json"),
            "application/connect+proto" => (Protocol::Connect { streaming: true }, "proto"),
            "application/connect+json" => (Protocol::Connect { streaming: true }, "json"),
            "application/proto" => (Protocol::Connect { streaming: false }, "proto"),
            "application/json" => (Protocol::Connect { streaming: false }, "json"),
            _ => return None,
        };
        Some((
            protocol,
            if codec == "json" {
                Codec::Json
            } else {
                Codec::Proto
            },
        ))
    }

    /// The name used in logs and docs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb { .. } => "grpc-web",
            Protocol::Connect { .. } => "connect",
        }
    }

    /// The response `Content-Type`.
    pub(crate) fn content_type(self, codec: Codec) -> &'static str {
        match (self, codec) {
            (Protocol::Grpc, Codec::Proto) => "application/grpc",
            (Protocol::Grpc, Codec::Json) => "application/grpc+json",
            (Protocol::GrpcWeb { text: false }, Codec::Proto) => "application/grpc-web+proto",
            (Protocol::GrpcWeb { text: false }, Codec::Json) => "application/grpc-web+json",
            (Protocol::GrpcWeb { text: true }, Codec::Proto) => "application/grpc-web-text+proto",
            (Protocol::GrpcWeb { text: true }, Codec::Json) => "application/grpc-web-text+json",
            (Protocol::Connect { streaming: true }, Codec::Proto) => "application/connect+proto",
            (Protocol::Connect { streaming: true }, Codec::Json) => "application/connect+json",
            (Protocol::Connect { streaming: false }, Codec::Proto) => "application/proto",
            (Protocol::Connect { streaming: false }, Codec::Json) => "application/json",
        }
    }

    /// How the request body is cut into messages.
    pub(crate) fn framing(self) -> Framing {
        match self {
            Protocol::GrpcWeb { text: true } => Framing::Base64Enveloped,
            Protocol::Connect { streaming: false } => Framing::Whole,
            _ => Framing::Enveloped,
        }
    }

    /// True when a call that ended before its head went out is answered
    /// whole (gRPC's Trailers-Only when nothing was sent; every Connect
    /// unary answer).
    pub(crate) fn whole_answer(self, nothing_queued: bool) -> bool {
        match self {
            Protocol::Connect { streaming } => !streaming,
            _ => nothing_queued,
        }
    }

    /// One response message as it goes out.
    /// `gzip`: the client accepts gzip, and messages of
    /// [`COMPRESS_MIN`](envelope::COMPRESS_MIN) bytes or more are sent
    /// compressed (flagged; a Connect unary body is compressed whole
    /// elsewhere).
    pub(crate) fn message(self, m: &Bytes, gzip: bool) -> Bytes {
        let framed = |m: &Bytes| {
            if gzip && m.len() >= envelope::COMPRESS_MIN {
                envelope::encode(envelope::COMPRESSED, &envelope::gzip(m))
            } else {
                envelope::encode(0, m)
            }
        };
        match self {
            Protocol::Connect { streaming: false } => m.clone(),
            Protocol::GrpcWeb { text: true } => {
                Bytes::from(base64::engine::general_purpose::STANDARD.encode(framed(m)))
            }
            _ => framed(m),
        }
    }

    /// Appends one response message as it goes out to `out`.
    pub(crate) fn write_message(self, m: &Bytes, gzip: bool, out: &mut bytes::BytesMut) {
        match self {
            Protocol::Grpc
            | Protocol::GrpcWeb { text: false }
            | Protocol::Connect { streaming: true }
                if !gzip || m.len() < envelope::COMPRESS_MIN =>
            {
                use bytes::BufMut;
                out.put_u8(0);
                out.put_u32(m.len() as u32);
                out.put_slice(m);
            }
            _ => out.extend_from_slice(&self.message(m, gzip)),
        }
    }

    /// The end of a streamed answer.
    pub(crate) fn end_frame(self, status: &Status, trailers: &Metadata) -> Frame<Bytes> {
        match self {
            Protocol::Grpc => {
                let mut map = HeaderMap::new();
                grpc::put_status(&mut map, status, trailers);
                Frame::trailers(map)
            }
            Protocol::GrpcWeb { text } => {
                Frame::data(grpc_web::trailer_message(status, trailers, text))
            }
            Protocol::Connect { .. } => Frame::data(connect::end_stream(status, trailers)),
        }
    }

    /// The request header naming its messages' encoding, and the one
    /// listing what the client accepts back.
    pub(crate) fn encoding_headers(self) -> (&'static str, &'static str) {
        match self {
            Protocol::Grpc | Protocol::GrpcWeb { .. } => ("grpc-encoding", "grpc-accept-encoding"),
            Protocol::Connect { streaming: true } => {
                ("connect-content-encoding", "connect-accept-encoding")
            }
            Protocol::Connect { streaming: false } => ("content-encoding", "accept-encoding"),
        }
    }

    /// The call's timeout from the request headers; `Err` for a malformed
    /// one.
    pub(crate) fn timeout(self, headers: &HeaderMap) -> Result<Option<Duration>, Status> {
        match self {
            Protocol::Grpc | Protocol::GrpcWeb { .. } => match headers.get("grpc-timeout") {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(grpc::parse_timeout)
                    .map(Some)
                    .ok_or_else(|| Status::invalid_argument("malformed grpc-timeout")),
            },
            Protocol::Connect { .. } => match headers.get("connect-timeout-ms") {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .ok()
                    .and_then(connect::parse_timeout)
                    .map(Some)
                    .ok_or_else(|| Status::invalid_argument("malformed connect-timeout-ms")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            Protocol::detect("application/grpc"),
            Some((Protocol::Grpc, Codec::Proto))
        );
        assert_eq!(
            Protocol::detect("application/grpc-web-text+proto"),
            Some((Protocol::GrpcWeb { text: true }, Codec::Proto))
        );
        assert_eq!(
            Protocol::detect("Application/JSON; charset=utf-8"),
            Some((Protocol::Connect { streaming: false }, Codec::Json))
        );
        assert_eq!(Protocol::detect("text/plain"), None);
    }
}
