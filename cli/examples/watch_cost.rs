//! What live watchers cost a write: `CreatePerson` latency (p50, p99) with
//! no `WatchPeople` streams open, then with N non-matching ones (over two
//! connections), on one in-process server with an in-memory SQLite store;
//! or, given a PostgreSQL URL, on two instances sharing that database, the
//! writes through the first and the watchers on the second (every creation
//! reaches them through the database's notifications).
//!
//! ```sh
//! cargo run --release -p zrpc-cli --example watch_cost -- 2000 [postgres://...]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use zrpc_cli::proto::people::people_client::PeopleClient;
use zrpc_cli::proto::people::{ListPeopleRequest, Person};
use zrpc_cli::store::{SqliteStore, Store};
use zrpc_proto::CallOptions;
use zrpc_tokio::{ClientConfig, Config, Server, ServerConfig, TokioRuntime};

const CALLS: usize = 400;
const PROBES: usize = 100;

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
    let db = std::env::args().nth(2);
    let store = || async {
        let db = db.clone();
        tokio::task::spawn_blocking(move || -> Arc<dyn Store> {
            match db {
                Some(url) => zrpc_cli::store::open(Some(&url), 8).unwrap(),
                None => Arc::new(SqliteStore::in_memory().unwrap()),
            }
        })
        .await
        .unwrap()
    };
    let limits = Config {
        max_concurrent_streams: 4096,
        ..ServerConfig::default().core
    };
    let serve = |store: Arc<dyn Store>| {
        let limits = limits.clone();
        async move {
            let router = zrpc_cli::router(TokioRuntime, store, Duration::ZERO);
            let config = ServerConfig {
                core: limits,
                ..ServerConfig::default()
            };
            let server = Server::with_config(router, config, TokioRuntime);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/", listener.local_addr().unwrap());
            let s = server.clone();
            tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
            (server, url)
        }
    };
    let (writes, url) = serve(store().await).await;
    // With a shared database, the watchers live on a second instance.
    let (server, watch_url) = match db {
        Some(_) => serve(store().await).await,
        None => (writes.clone(), url.clone()),
    };
    let connect = |url: String| {
        let limits = limits.clone();
        async move {
            let config = ClientConfig {
                core: limits,
                ..ClientConfig::default()
            };
            PeopleClient::new(zrpc_tokio::connect_with(&url, config).await.unwrap())
        }
    };
    let writer = connect(url.clone()).await;
    let (p50, p99) = creates(&writer).await;
    println!("no watchers: CreatePerson p50 {p50:?} p99 {p99:?}");

    let holders = [
        connect(watch_url.clone()).await,
        connect(watch_url.clone()).await,
    ];
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
    // How long a creation takes to reach a watcher of the instance that
    // watches (the other one when the database is shared): from the
    // CreatePerson reply to the watcher's message.
    let probe = ListPeopleRequest {
        name_contains: "probe ".into(),
        limit: 0,
        after_id: 0,
    };
    let mut watcher = holders[0]
        .watch_people(&probe, CallOptions::default())
        .await
        .unwrap();
    while server.live_calls() < watchers + 1 {
        tokio::task::yield_now().await;
    }
    let mut seen = Vec::with_capacity(PROBES);
    for n in 0..PROBES {
        let p = Person {
            name: format!("probe {n}"),
            ..Person::default()
        };
        writer
            .create_person(&p, CallOptions::default())
            .await
            .unwrap();
        let t = Instant::now();
        let got = watcher.message().await.unwrap().unwrap();
        assert_eq!(got.name, p.name);
        seen.push(t.elapsed());
    }
    seen.sort();
    println!(
        "creation to watcher (after the reply): p50 {:?} p99 {:?}",
        seen[PROBES / 2],
        seen[PROBES * 99 / 100]
    );
    drop(watcher);
    drop(streams);
    server.shutdown().await;
    writes.shutdown().await;
}
