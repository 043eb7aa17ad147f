//! The reference implementation of `echo.Echo` (all four call kinds):
//! served by `zrpc serve`, and used by the generated-code tests.

use zrpc_proto::{CallContext, CallOptions, Code, Metadata, Sink, Status, Streaming};

use crate::proto::echo::{EchoReply, EchoRequest, echo_server};

/// Most replies one `Repeat` call streams.
pub const MAX_REPEAT: u32 = 10_000;

/// Most bytes of messages one `Collect` call keeps: a handler that keeps
/// what it receives bounds it, whatever the client sends.
pub const MAX_COLLECT_BYTES: usize = 64 * 1024;

/// The echo service.
pub struct EchoService;

/// Details of an invalid request, as gRPC's rich error model has them: a
/// `google.rpc.Status` holding one `google.rpc.BadRequest` (every gRPC and
/// Connect client can read it: `grpc-status-details-bin`, Connect's
/// `details`, zrpc's `Status::details`).
pub fn bad_request(field: &str, description: &str) -> bytes::Bytes {
    use prost::Message;
    let violation = rpc::FieldViolation {
        field: field.into(),
        description: description.into(),
    };
    let detail = rpc::Any {
        type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
        value: rpc::BadRequest {
            field_violations: vec![violation],
        }
        .encode_to_vec(),
    };
    rpc::Status {
        code: Code::InvalidArgument as i32,
        message: format!("{field}: {description}"),
        details: vec![detail],
    }
    .encode_to_vec()
    .into()
}

/// The few messages of `google/rpc/status.proto` and
/// `google/rpc/error_details.proto` the echo service sends.
pub mod rpc {
    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// The status code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// The message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// The details, each a packed message.
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        /// `type.googleapis.com/<full message name>`.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// The message's bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.BadRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BadRequest {
        /// What was wrong, field by field.
        #[prost(message, repeated, tag = "1")]
        pub field_violations: Vec<FieldViolation>,
    }

    /// `google.rpc.BadRequest.FieldViolation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FieldViolation {
        /// The field's path.
        #[prost(string, tag = "1")]
        pub field: String,
        /// What is wrong with it.
        #[prost(string, tag = "2")]
        pub description: String,
    }
}

impl echo_server::Echo for EchoService {
    async fn say(&self, _ctx: CallContext, req: EchoRequest) -> Result<EchoReply, Status> {
        if req.message.is_empty() {
            return Err(
                Status::new(Code::InvalidArgument, "message: must not be empty")
                    .with_details(bad_request("message", "must not be empty")),
            );
        }
        Ok(EchoReply {
            message: req.message,
            index: 0,
        })
    }

    async fn repeat(
        &self,
        _ctx: CallContext,
        req: EchoRequest,
        mut out: Sink<EchoReply>,
    ) -> Result<(), Status> {
        if req.repeat > MAX_REPEAT {
            return Err(Status::new(
                Code::InvalidArgument,
                format!("repeat: at most {MAX_REPEAT}"),
            ));
        }
        let replies = (0..req.repeat).map(|index| EchoReply {
            message: req.message.clone(),
            index,
        });
        out.send_all(replies).await
    }

    async fn collect(
        &self,
        _ctx: CallContext,
        mut reqs: Streaming<EchoRequest>,
    ) -> Result<EchoReply, Status> {
        let mut joined = String::new();
        let mut count = 0u32;
        while let Some(r) = reqs.message().await? {
            if joined.len() + 1 + r.message.len() > MAX_COLLECT_BYTES {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("message: at most {MAX_COLLECT_BYTES} bytes in all per call"),
                ));
            }
            if count > 0 {
                joined.push(' ');
            }
            joined.push_str(&r.message);
            count += 1;
        }
        Ok(EchoReply {
            message: joined,
            index: count,
        })
    }

    async fn chat(
        &self,
        _ctx: CallContext,
        mut reqs: Streaming<EchoRequest>,
        mut out: Sink<EchoReply>,
    ) -> Result<(), Status> {
        let mut index = 0;
        while let Some(r) = reqs.message().await? {
            out.send(&EchoReply {
                message: r.message.to_uppercase(),
                index,
            })
            .await?;
            index += 1;
        }
        Ok(())
    }

    async fn reflect(&self, ctx: CallContext, req: EchoRequest) -> Result<EchoReply, Status> {
        let mut headers = Metadata::new();
        let mut trailers = Metadata::new();
        for (key, value) in ctx.metadata().iter() {
            // Keys and values were valid on the way in; the prefixed key is
            // too unless it grows past 255 bytes, which is then skipped.
            let _ = headers.insert(key, value.clone());
            let _ = trailers.insert(&format!("reflect-{key}"), value.clone());
        }
        ctx.set_headers(headers);
        ctx.set_trailers(trailers);
        Ok(EchoReply {
            message: req.message,
            index: 0,
        })
    }

    async fn callback(&self, ctx: CallContext, req: EchoRequest) -> Result<EchoReply, Status> {
        if req.repeat > MAX_REPEAT {
            return Err(Status::new(
                Code::InvalidArgument,
                format!("repeat: at most {MAX_REPEAT}"),
            ));
        }
        let client = ctx.client();
        let hello = EchoRequest {
            message: "hello from the server".into(),
            repeat: req.repeat,
        };
        let mut joined = Vec::new();
        let mut held = 0;
        if req.repeat == 0 {
            let reply = client
                .unary(
                    &req.message,
                    zrpc_proto::encode(&hello),
                    CallOptions::default(),
                )
                .await?;
            joined.push(zrpc_proto::decode::<EchoReply>(reply)?.message);
        } else {
            let call = client
                .server_streaming(
                    &req.message,
                    zrpc_proto::encode(&hello),
                    CallOptions::default(),
                )
                .await?;
            let mut replies = zrpc_proto::ResponseStream::<EchoReply>::new(call);
            while let Some(r) = replies.message().await? {
                held += r.message.len() + 1;
                if held > MAX_COLLECT_BYTES {
                    return Err(Status::new(
                        Code::ResourceExhausted,
                        format!("replies: at most {MAX_COLLECT_BYTES} bytes in all per call"),
                    ));
                }
                joined.push(r.message);
            }
        }
        Ok(EchoReply {
            index: joined.len() as u32,
            message: joined.join(" "),
        })
    }
}
