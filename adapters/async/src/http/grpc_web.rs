//! gRPC-Web: gRPC's messages over HTTP/1.1 or HTTP/2 without HTTP
//! trailers; the status travels in a last message flagged 0x80 whose body
//! is an HTTP/1-style header block; the text mode base64s every frame.

use base64::Engine;
use bytes::Bytes;
use hyper::HeaderMap;
use zrpc_core::{Metadata, Status};

use super::envelope::{self, WEB_TRAILERS};
use super::grpc;

/// The trailers message.
pub(crate) fn trailer_message(status: &Status, trailers: &Metadata, text: bool) -> Bytes {
    let mut map = HeaderMap::new();
    grpc::put_status(&mut map, status, trailers);
    let mut block = Vec::new();
    for (k, v) in &map {
        block.extend_from_slice(k.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(v.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let frame = envelope::encode(WEB_TRAILERS, &block);
    if text {
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(frame))
    } else {
        frame
    }
}
