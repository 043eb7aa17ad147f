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

impl echo_server::Echo for EchoService {
    async fn say(&self, _ctx: CallContext, req: EchoRequest) -> Result<EchoReply, Status> {
        if req.message.is_empty() {
            return Err(Status::new(
                Code::InvalidArgument,
                "message: must not be empty",
            ));
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
        for index in 0..req.repeat {
            out.send(&EchoReply {
                message: req.message.clone(),
                index,
            })
            .await?;
        }
        Ok(())
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
