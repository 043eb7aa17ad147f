//! What live watchers cost a write: `CreatePerson` latency (p50, p99) with
//! no `WatchPeople` streams open, then with N non-matching ones (over two
//! connections), on one in-process server with an in-memory SQLite store.
//!
//! ```sh
//! cargo run --release -p zrpc-cli --example watch_cost -- 2000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use zrpc_cli::proto::people::people_client::PeopleClient;
use zrpc_cli::proto::people::{ListPeopleRequest, Person};
use zrpc_cli::store::SqliteStore;
use zrpc_proto::CallOptions;
use zrpc_tokio::{ClientConfig, Config, Server, ServerConfig, TokioRuntime};

const CALLS: usize = 400;

async fn creates(client: &PeopleClient) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(CALLS);
    for n in 0..CALLS {
        let p = Person {
            name: format!("person {n}"),
            ..Person::default()
        };
        let t = Instant::now();
        client
            .create_person(&p, CallOptions::default())
            .await
            .unwrap();
        took.push(t.elapsed());
    }
    took.sort();
    (took[CALLS / 2], took[CALLS * 99 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let watchers: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let router = zrpc_cli::router(TokioRuntime, store, Duration::ZERO);
    let limits = Config {
        max_concurrent_streams: 4096,
        ..ServerConfig::default().core
    };
    let config = ServerConfig {
        core: limits.clone(),
        ..ServerConfig::default()
    };
    let server = Server::with_config(router, config, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let connect = || async {
        let config = ClientConfig {
            core: limits.clone(),
            ..ClientConfig::default()
        };
        PeopleClient::new(zrpc_tokio::connect_with(&url, config).await.unwrap())
    };
    let writer = connect().await;
    let (p50, p99) = creates(&writer).await;
    println!("no watchers: CreatePerson p50 {p50:?} p99 {p99:?}");

    let holders = [connect().await, connect().await];
    let mut streams = Vec::new();
    let req = ListPeopleRequest {
        name_contains: "nobody matches this".into(),
        limit: 0,
        after_id: 0,
    };
    for i in 0..watchers {
        streams.push(
            holders[i % 2]
                .watch_people(&req, CallOptions::default())
                .await
                .unwrap(),
        );
    }
    // Every watcher's first look at the store is done once it is live.
    while server.live_calls() < watchers {
        tokio::task::yield_now().await;
    }
    let (w50, w99) = creates(&writer).await;
    println!("{watchers} watchers: CreatePerson p50 {w50:?} p99 {w99:?}");
    println!("ratio p50 {:.2}x", w50.as_secs_f64() / p50.as_secs_f64());
    drop(streams);
    server.shutdown().await;
}
