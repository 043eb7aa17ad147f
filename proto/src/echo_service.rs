//! The reference implementation of `echo.Echo` (all four call kinds):
//! served by `zrpc serve`, and used by the generated-code tests.

use crate::echo::{EchoReply, EchoRequest, echo_server};
use crate::{CallContext, Code, Sink, Status, Streaming};

/// Most replies one `Repeat` call streams.
pub const MAX_REPEAT: u32 = 10_000;

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
        let mut words = Vec::new();
        while let Some(r) = reqs.message().await? {
            words.push(r.message);
        }
        Ok(EchoReply {
            message: words.join(" "),
            index: words.len() as u32,
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
}
