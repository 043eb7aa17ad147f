//! A client-streaming call whose response message arrives but whose final
//! status is an error: `ClientStreamingCall::finish` reports the error (it
//! waits for the status, not only the message), and the server ends the call
//! even when the handler's trailers are too large for the caller.

use zrpc_cli::proto::echo::{EchoReply, EchoRequest};
use zrpc_proto::{CallOptions, ClientStreamingCall, Code, Metadata, Router, Status};
use zrpc_tokio::{Bytes, CallKind, Server, TokioRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_reports_an_error_status_after_the_response() {
    let router = Router::new().client_streaming("t.T/Up", |ctx, mut reqs| async move {
        while reqs.message().await?.is_some() {}
        // 20 KiB of trailers against the caller's 16 KiB metadata limit:
        // the response goes out, the status cannot.
        let big = "x".repeat(20 * 1024);
        ctx.set_trailers(Metadata::new().with("x-big", big).unwrap());
        let reply = EchoReply {
            message: "done".into(),
            index: 1,
        };
        Ok::<_, Status>(Bytes::from(zrpc_proto::Message::encode_to_vec(&reply)))
    });
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let client = zrpc_tokio::connect(&url).await.unwrap();
    let call = client
        .call("t.T/Up", CallKind::ClientStreaming, CallOptions::default())
        .await
        .unwrap();
    let mut typed = ClientStreamingCall::<EchoRequest, EchoReply>::new(call);
    typed
        .send(&EchoRequest {
            message: "a".into(),
            repeat: 0,
        })
        .await
        .unwrap();
    let err = typed.finish().await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.message().contains("metadata limit"), "{err}");
    assert_eq!(server.live_calls(), 0);
}
