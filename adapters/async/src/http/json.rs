//! The JSON codec (`application/json`, `application/connect+json`,
//! `application/grpc+json`, `application/grpc-web+json`): each message is
//! converted at the edge, JSON → protobuf on the way in and back on the
//! way out, through the method's message descriptors
//! ([`Router::descriptors`](crate::Router::descriptors)), so handlers only
//! ever see protobuf bytes.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use zrpc_core::Status;

/// A method's request and response types.
pub(crate) struct JsonCodec {
    pub(crate) input: MessageDescriptor,
    pub(crate) output: MessageDescriptor,
}

impl JsonCodec {
    /// A request message in JSON, as protobuf bytes.
    pub(crate) fn request(&self, json: &[u8]) -> Result<Bytes, Status> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let msg = DynamicMessage::deserialize(self.input.clone(), &mut de)
            .and_then(|m| de.end().map(|()| m))
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "the request is not a JSON {}: {e}",
                    self.input.full_name()
                ))
            })?;
        Ok(msg.encode_to_vec().into())
    }

    /// A response message (protobuf bytes from the handler) in JSON.
    pub(crate) fn response(&self, proto: &[u8]) -> Result<Bytes, Status> {
        let msg = DynamicMessage::decode(self.output.clone(), proto).map_err(|e| {
            Status::internal(format!(
                "the handler's response is not a {}: {e}",
                self.output.full_name()
            ))
        })?;
        serde_json::to_vec(&msg)
            .map(Bytes::from)
            .map_err(|e| Status::internal(format!("the response does not encode as JSON: {e}")))
    }
}
