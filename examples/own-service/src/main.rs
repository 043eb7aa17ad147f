//! A service of one's own: the generated server trait implemented, served on
//! 127.0.0.1, and called with the generated client, all four call kinds.

use std::sync::Arc;

use zrpc_tokio::{CallContext, CallOptions, Router, Server, Sink, Status, Streaming, TokioRuntime};

pub mod hello {
    zrpc_tokio::include_proto!("hello");
}

use hello::greeter_client::GreeterClient;
use hello::greeter_server::{self, Greeter};
use hello::{HelloReply, HelloRequest};

struct Hello;

impl Greeter for Hello {
    async fn say_hello(&self, _ctx: CallContext, req: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply {
            message: format!("hello, {}", req.name),
        })
    }

    async fn greetings(
        &self,
        _ctx: CallContext,
        req: HelloRequest,
        mut out: Sink<hello::Result>,
    ) -> Result<(), Status> {
        let times = req.option.map_or(1, |o| o.times);
        for i in 0..times {
            out.send(&hello::Result {
                text: format!("{i}: hello, {}", req.name),
            })
            .await?;
        }
        Ok(())
    }

    async fn collect(
        &self,
        _ctx: CallContext,
        mut reqs: Streaming<HelloRequest>,
    ) -> Result<hello::Sink, Status> {
        let mut items = vec![];
        while let Some(r) = reqs.message().await? {
            items.push(r.name);
        }
        Ok(hello::Sink { items })
    }

    async fn check(
        &self,
        _ctx: CallContext,
        mut reqs: Streaming<HelloRequest>,
        mut out: Sink<hello::Status>,
    ) -> Result<(), Status> {
        while let Some(r) = reqs.message().await? {
            out.send(&hello::Status {
                ok: !r.name.is_empty(),
            })
            .await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = greeter_server::register(Router::new(), Arc::new(Hello));
    // Reflection, so `zrpc list|describe|call` know the service: one line.
    let router = zrpc_tokio::reflection::register(router, &[hello::FILE_DESCRIPTOR_SET])?;
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    tokio::spawn({
        let server = server.clone();
        async move { zrpc_tokio::serve(&server, listener).await }
    });

    let client = GreeterClient::connect(&url, TokioRuntime).await?;
    let o = CallOptions::default;
    let ann = |name: &str, times| HelloRequest {
        name: name.into(),
        option: Some(hello::Option { times }),
    };

    let reply = client.say_hello(&ann("ann", 0), o()).await?;
    assert_eq!(reply.message, "hello, ann");
    println!("SayHello: {}", reply.message);

    let mut stream = client.greetings(&ann("bob", 3), o()).await?;
    let mut n = 0;
    while let Some(r) = stream.message().await? {
        println!("Greetings: {}", r.text);
        n += 1;
    }
    assert_eq!(n, 3);

    let mut up = client.collect(o()).await?;
    for name in ["a", "b", "c"] {
        up.send(&ann(name, 0)).await?;
    }
    let all = up.finish().await?;
    assert_eq!(all.items, ["a", "b", "c"]);
    println!("Collect: {:?}", all.items);

    let mut both = client.check(o()).await?;
    both.send(&ann("x", 0)).await?;
    both.send(&ann("", 0)).await?;
    both.close_send()?;
    let mut oks = vec![];
    while let Some(s) = both.message().await? {
        oks.push(s.ok);
    }
    assert_eq!(oks, [true, false]);
    println!("Check: {oks:?}");

    use zrpc_tokio::reflection::{Request, Response, ask};
    let listed = ask(client.inner(), Request::ListServices(String::new())).await?;
    let Response::ListServicesResponse(list) = listed else {
        panic!("{listed:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["grpc.reflection.v1.ServerReflection", "hello.Greeter"]
    );
    println!("reflection lists: {names:?}");

    server.shutdown().await;
    println!("own service: all four call kinds OK");
    Ok(())
}
