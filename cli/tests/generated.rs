//! Generated client <-> generated server (the reference `EchoService`), all
//! four call kinds, on tokio and on smol, over real sockets on 127.0.0.1.

use std::sync::Arc;

use zrpc_cli::echo_service::EchoService;
use zrpc_cli::proto::echo::{EchoRequest, echo_client::EchoClient, echo_server};
use zrpc_proto::{CallOptions, Code, Router};

fn req(m: &str, repeat: u32) -> EchoRequest {
    EchoRequest {
        message: m.into(),
        repeat,
    }
}

async fn exercise(client: EchoClient) {
    let o = CallOptions::default;
    assert_eq!(client.say(&req("hi", 0), o()).await.unwrap().message, "hi");
    let err = client.say(&req("", 0), o()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut stream = client.repeat(&req("again", 5), o()).await.unwrap();
    let mut seen = vec![];
    while let Some(r) = stream.message().await.unwrap() {
        seen.push(r.index);
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);

    let mut up = client.collect(o()).await.unwrap();
    for w in ["a", "typed", "stream"] {
        up.send(&req(w, 0)).await.unwrap();
    }
    let r = up.finish().await.unwrap();
    assert_eq!((r.message.as_str(), r.index), ("a typed stream", 3));

    let mut chat = client.chat(o()).await.unwrap();
    for (i, w) in ["x", "y"].into_iter().enumerate() {
        chat.send(&req(w, 0)).await.unwrap();
        let r = chat.message().await.unwrap().unwrap();
        assert_eq!(
            (r.message.as_str(), r.index),
            (w.to_uppercase().as_str(), i as u32)
        );
    }
    chat.close_send().unwrap();
    assert_eq!(chat.message().await.unwrap(), None);
}

fn router() -> Router {
    echo_server::register(Router::new(), Arc::new(EchoService))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_stubs_on_tokio() {
    let server = zrpc_tokio::Server::new(router(), zrpc_tokio::TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    exercise(EchoClient::new(zrpc_tokio::connect(&url).await.unwrap())).await;
}

#[test]
fn generated_stubs_on_smol() {
    smol::block_on(async {
        let server = zrpc_smol::Server::new(router(), zrpc_smol::SmolRuntime);
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let s = server.clone();
        smol::spawn(async move { zrpc_smol::serve(&s, listener).await }).detach();
        exercise(EchoClient::new(zrpc_smol::connect(&url).await.unwrap())).await;
    });
}
