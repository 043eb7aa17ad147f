//! gRPC's interop cases (grpc/grpc `doc/interop-test-descriptions.md`) with
//! zrpc's own Rust client over zrpc.v1, against the same
//! `grpc.testing.TestService` that `zrpc serve --interop` serves to gRPC,
//! gRPC-Web and Connect clients (`clients/js/test/interop.test.ts`), on tokio
//! and on smol: every transport held to the same semantics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zrpc_async::CallKind;
use zrpc_async::Runtime;
use zrpc_cli::interop_service::InteropService;
use zrpc_cli::proto::grpc_testing::{
    EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, StreamingInputCallRequest,
    StreamingOutputCallRequest, test_service_client::TestServiceClient, test_service_server,
    unimplemented_service_client::UnimplementedServiceClient,
};
use zrpc_proto::{CallOptions, Code, Metadata, Router};

const INITIAL: &str = "x-grpc-test-echo-initial";
const TRAILING: &str = "x-grpc-test-echo-trailing-bin";
const SPECIAL: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP \u{263a} and non-BMP \u{1f608}\t\n";

fn zeros(n: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; n],
    })
}

fn out_req(sizes: &[i32], payload: usize) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|&size| ResponseParameters {
                size,
                ..Default::default()
            })
            .collect(),
        payload: zeros(payload),
        ..Default::default()
    }
}

fn size(p: &Option<Payload>) -> usize {
    p.as_ref().map_or(0, |p| p.body.len())
}

fn echo_metadata() -> Metadata {
    Metadata::new()
        .with(INITIAL, "test_initial_metadata_value")
        .unwrap()
        .with(TRAILING, Bytes::from_static(&[0xab, 0xab, 0xab]))
        .unwrap()
}

/// Every case, in the descriptions' order; a failing case panics naming itself.
async fn run_cases(c: TestServiceClient, none: UnimplementedServiceClient) {
    let o = CallOptions::default;

    // empty_unary
    assert_eq!(c.empty_call(&Empty {}, o()).await.unwrap(), Empty {});

    // large_unary
    let req = SimpleRequest {
        response_size: 314159,
        payload: zeros(271828),
        ..Default::default()
    };
    assert_eq!(
        size(&c.unary_call(&req, o()).await.unwrap().payload),
        314159
    );

    // client_streaming
    let mut up = c.streaming_input_call(o()).await.unwrap();
    for n in [27182, 8, 1828, 45904] {
        up.send(&StreamingInputCallRequest {
            payload: zeros(n),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert_eq!(up.finish().await.unwrap().aggregated_payload_size, 74922);

    // server_streaming
    let sizes = [31415, 9, 2653, 58979];
    let mut down = c
        .streaming_output_call(&out_req(&sizes, 0), o())
        .await
        .unwrap();
    let mut got = vec![];
    while let Some(m) = down.message().await.unwrap() {
        got.push(size(&m.payload) as i32);
    }
    assert_eq!(got, sizes);

    // ping_pong
    let mut duplex = c.full_duplex_call(o()).await.unwrap();
    for (resp, req) in [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)] {
        duplex.send(&out_req(&[resp], req)).await.unwrap();
        let m = duplex.message().await.unwrap().unwrap();
        assert_eq!(size(&m.payload), resp as usize, "ping_pong");
    }
    duplex.close_send().unwrap();
    assert_eq!(duplex.message().await.unwrap(), None);

    // empty_stream
    let mut duplex = c.full_duplex_call(o()).await.unwrap();
    duplex.close_send().unwrap();
    assert_eq!(duplex.message().await.unwrap(), None, "empty_stream");

    // custom_metadata: unary, then full duplex (the untyped call shows the
    // headers and trailers).
    let raw = c.inner();
    for (method, kind, req) in [
        (
            "grpc.testing.TestService/UnaryCall",
            CallKind::Unary,
            zrpc_proto::encode(&req),
        ),
        (
            "grpc.testing.TestService/FullDuplexCall",
            CallKind::Bidi,
            zrpc_proto::encode(&out_req(&[314159], 271828)),
        ),
    ] {
        let opts = CallOptions {
            metadata: echo_metadata(),
            ..Default::default()
        };
        let mut call = raw.call(method, kind, opts).await.unwrap();
        call.send(req).await.unwrap();
        call.close_send().unwrap();
        let reply = call.message().await.unwrap().unwrap();
        assert!(reply.len() > 314159, "custom_metadata: {method}");
        let headers = call.headers().await;
        assert_eq!(
            headers.get_str(INITIAL),
            Some("test_initial_metadata_value"),
            "custom_metadata: {method}"
        );
        let trailers = call.finish().await.unwrap();
        assert_eq!(
            trailers.get(TRAILING).map(|b| &b[..]),
            Some(&[0xab, 0xab, 0xab][..]),
            "custom_metadata: {method}"
        );
    }

    // status_code_and_message
    let status = Some(EchoStatus {
        code: 2,
        message: "test status message".into(),
    });
    let err = c
        .unary_call(
            &SimpleRequest {
                response_status: status.clone(),
                ..Default::default()
            },
            o(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "test status message")
    );
    let mut duplex = c.full_duplex_call(o()).await.unwrap();
    duplex
        .send(&StreamingOutputCallRequest {
            response_status: status,
            ..Default::default()
        })
        .await
        .unwrap();
    duplex.close_send().unwrap();
    let err = duplex.message().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "test status message")
    );

    // special_status_message
    let err = c
        .unary_call(
            &SimpleRequest {
                response_status: Some(EchoStatus {
                    code: 2,
                    message: SPECIAL.into(),
                }),
                ..Default::default()
            },
            o(),
        )
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Unknown, SPECIAL));

    // unimplemented_method, unimplemented_service
    let err = c.unimplemented_call(&Empty {}, o()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = none.unimplemented_call(&Empty {}, o()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // cancel_after_begin: a call cancelled before any request (dropping it
    // is the Rust API's cancel; the status is the caller's own), and the
    // connection serves on.
    let up = c.streaming_input_call(o()).await.unwrap();
    drop(up);
    assert_eq!(c.empty_call(&Empty {}, o()).await.unwrap(), Empty {});

    // cancel_after_first_response
    let mut duplex = c.full_duplex_call(o()).await.unwrap();
    duplex.send(&out_req(&[31415], 27182)).await.unwrap();
    let m = duplex.message().await.unwrap().unwrap();
    assert_eq!(size(&m.payload), 31415);
    drop(duplex);
    assert_eq!(c.empty_call(&Empty {}, o()).await.unwrap(), Empty {});

    // timeout_on_sleeping_server
    let mut duplex = c
        .full_duplex_call(CallOptions::default().with_timeout(Duration::from_millis(1)))
        .await
        .unwrap();
    let _ = duplex.send(&out_req(&[], 27182)).await;
    let err = duplex.message().await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
}

fn router<R: Runtime>(rt: R) -> Router {
    test_service_server::register(Router::new(), Arc::new(InteropService::new(rt)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_cases_on_tokio() {
    let rt = zrpc_tokio::TokioRuntime;
    let server = zrpc_tokio::Server::new(router(rt), rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let client = zrpc_tokio::connect(&url).await.unwrap();
    let cases = run_cases(
        TestServiceClient::new(client.clone()),
        UnimplementedServiceClient::new(client),
    );
    tokio::time::timeout(Duration::from_secs(60), cases)
        .await
        .expect("the cases timed out");
}

#[test]
fn interop_cases_on_smol() {
    smol::block_on(async {
        let rt = zrpc_smol::SmolRuntime;
        let server = zrpc_smol::Server::new(router(rt), rt);
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let s = server.clone();
        smol::spawn(async move { zrpc_smol::serve(&s, listener).await }).detach();
        let client = zrpc_smol::connect(&url).await.unwrap();
        let cases = run_cases(
            TestServiceClient::new(client.clone()),
            UnimplementedServiceClient::new(client),
        );
        let limit = async {
            smol::Timer::after(Duration::from_secs(60)).await;
            panic!("the cases timed out");
        };
        futures_lite::future::or(cases, limit).await;
    });
}

/// HalfDuplexCall holds its requests until the client half-closes: past
/// MAX_HELD_BYTES it ends RESOURCE_EXHAUSTED instead of holding more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_duplex_holds_a_bounded_number_of_bytes() {
    let rt = zrpc_tokio::TokioRuntime;
    let server = zrpc_tokio::Server::new(router(rt), rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let c = TestServiceClient::new(zrpc_tokio::connect(&url).await.unwrap());
    let scenario = async {
        let mut call = c.half_duplex_call(CallOptions::default()).await.unwrap();
        let mut err = None;
        // 2 MiB in 64 KiB requests: past the 1 MiB held.
        for _ in 0..32 {
            if let Err(e) = call.send(&out_req(&[1], 64 * 1024)).await {
                err = Some(e);
                break;
            }
        }
        let err = match err {
            Some(e) => e,
            None => {
                let _ = call.close_send();
                call.message().await.unwrap_err()
            }
        };
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    };
    tokio::time::timeout(Duration::from_secs(60), scenario)
        .await
        .expect("timed out");
}
