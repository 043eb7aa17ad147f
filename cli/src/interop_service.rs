//! `grpc.testing.TestService`, the server side of gRPC's interop cases
//! (grpc/grpc `doc/interop-test-descriptions.md`), served by
//! `zrpc serve --interop` so that gRPC, gRPC-Web and Connect clients and
//! zrpc's own clients are all held to the same semantics.
//!
//! What the descriptions ask of a server: payloads of the requested size
//! (zeros), the requested status, `x-grpc-test-echo-initial` echoed as a
//! header and `x-grpc-test-echo-trailing-bin` as a trailer, each response's
//! `interval_us` waited, `UnimplementedCall` left unimplemented.

use std::time::{Duration, Instant};

use zrpc_async::Runtime;
use zrpc_proto::{CallContext, Code, Metadata, Sink, Status, Streaming};

use crate::proto::grpc_testing::{
    EchoStatus, Empty, Payload, SimpleRequest, SimpleResponse, StreamingInputCallRequest,
    StreamingInputCallResponse, StreamingOutputCallRequest, StreamingOutputCallResponse,
    test_service_server,
};

/// Largest payload one response may ask for (the cases ask for at most
/// 314,159 bytes); larger asks are refused with `INVALID_ARGUMENT`.
pub const MAX_RESPONSE_SIZE: i32 = 4 * 1024 * 1024;

/// Longest `interval_us` honoured (the cases use none); longer asks are
/// refused with `INVALID_ARGUMENT`.
pub const MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Most responses one streaming request may ask for, and most requests one
/// `HalfDuplexCall` holds.
pub const MAX_RESPONSES: usize = 1_000;

/// Most request bytes one `HalfDuplexCall` holds before it answers (what a
/// handler keeps is outside the server's receive budget, so it bounds it).
pub const MAX_HELD_BYTES: usize = 1024 * 1024;

/// The interop test service.
pub struct InteropService<R> {
    rt: R,
}

impl<R: Runtime> InteropService<R> {
    /// The service, waiting out `interval_us` on `rt`'s timer.
    pub fn new(rt: R) -> Self {
        Self { rt }
    }

    /// Streams the responses `req` asks for, then its status if it asks one.
    async fn respond(
        &self,
        req: &StreamingOutputCallRequest,
        out: &mut Sink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        if req.response_parameters.len() > MAX_RESPONSES {
            return Err(Status::new(
                Code::InvalidArgument,
                format!("response_parameters: at most {MAX_RESPONSES}"),
            ));
        }
        for p in &req.response_parameters {
            let wait = Duration::from_micros(p.interval_us.max(0) as u64);
            if wait > MAX_INTERVAL {
                return Err(Status::new(
                    Code::InvalidArgument,
                    format!("interval_us: at most {} s", MAX_INTERVAL.as_secs()),
                ));
            }
            if !wait.is_zero() {
                self.rt.sleep_until(Instant::now() + wait).await;
            }
            out.send(&StreamingOutputCallResponse {
                payload: Some(payload(p.size)?),
            })
            .await?;
        }
        requested_status(req.response_status.as_ref())
    }
}

/// A payload of `size` zeros.
fn payload(size: i32) -> Result<Payload, Status> {
    if !(0..=MAX_RESPONSE_SIZE).contains(&size) {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("size: 0 to {MAX_RESPONSE_SIZE}"),
        ));
    }
    Ok(Payload {
        r#type: 0,
        body: vec![0; size as usize],
    })
}

/// The status a request asks the call to end with (OK when none).
fn requested_status(s: Option<&EchoStatus>) -> Result<(), Status> {
    match s {
        Some(s) if s.code != 0 => {
            let code = u8::try_from(s.code).map_or(Code::Unknown, Code::from_u8);
            Err(Status::new(code, s.message.clone()))
        }
        _ => Ok(()),
    }
}

/// Echoes the two test keys: the initial one as a header, the trailing one
/// as a trailer.
fn echo_metadata(ctx: &CallContext) {
    if let Some(v) = ctx.metadata().get("x-grpc-test-echo-initial") {
        let mut headers = Metadata::new();
        // The key is valid and the value came as valid metadata.
        let _ = headers.insert("x-grpc-test-echo-initial", v.clone());
        ctx.set_headers(headers);
    }
    if let Some(v) = ctx.metadata().get("x-grpc-test-echo-trailing-bin") {
        let mut trailers = Metadata::new();
        let _ = trailers.insert("x-grpc-test-echo-trailing-bin", v.clone());
        ctx.set_trailers(trailers);
    }
}

impl<R: Runtime> test_service_server::TestService for InteropService<R> {
    async fn empty_call(&self, ctx: CallContext, _req: Empty) -> Result<Empty, Status> {
        echo_metadata(&ctx);
        Ok(Empty {})
    }

    async fn unary_call(
        &self,
        ctx: CallContext,
        req: SimpleRequest,
    ) -> Result<SimpleResponse, Status> {
        echo_metadata(&ctx);
        requested_status(req.response_status.as_ref())?;
        Ok(SimpleResponse {
            payload: Some(payload(req.response_size)?),
            ..Default::default()
        })
    }

    async fn streaming_output_call(
        &self,
        ctx: CallContext,
        req: StreamingOutputCallRequest,
        mut out: Sink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_metadata(&ctx);
        self.respond(&req, &mut out).await
    }

    async fn streaming_input_call(
        &self,
        ctx: CallContext,
        mut reqs: Streaming<StreamingInputCallRequest>,
    ) -> Result<StreamingInputCallResponse, Status> {
        echo_metadata(&ctx);
        let mut size = 0i32;
        while let Some(r) = reqs.message().await? {
            let n = r.payload.map_or(0, |p| p.body.len());
            size = size.saturating_add(i32::try_from(n).unwrap_or(i32::MAX));
        }
        Ok(StreamingInputCallResponse {
            aggregated_payload_size: size,
        })
    }

    async fn full_duplex_call(
        &self,
        ctx: CallContext,
        mut reqs: Streaming<StreamingOutputCallRequest>,
        mut out: Sink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_metadata(&ctx);
        while let Some(r) = reqs.message().await? {
            self.respond(&r, &mut out).await?;
        }
        Ok(())
    }

    async fn half_duplex_call(
        &self,
        ctx: CallContext,
        mut reqs: Streaming<StreamingOutputCallRequest>,
        mut out: Sink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        echo_metadata(&ctx);
        // Every request first (bounded in number and bytes), then the
        // responses.
        let mut all = Vec::new();
        let mut held = 0usize;
        while let Some(r) = reqs.message().await? {
            held += prost::Message::encoded_len(&r);
            if all.len() == MAX_RESPONSES || held > MAX_HELD_BYTES {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("at most {MAX_RESPONSES} requests and {MAX_HELD_BYTES} bytes held"),
                ));
            }
            all.push(r);
        }
        for r in &all {
            self.respond(r, &mut out).await?;
        }
        Ok(())
    }

    async fn unimplemented_call(&self, _ctx: CallContext, _req: Empty) -> Result<Empty, Status> {
        Err(Status::new(
            Code::Unimplemented,
            "grpc.testing.TestService/UnimplementedCall is not implemented",
        ))
    }
}
