//! `zrpc demo`: a server on an ephemeral port with a temporary database,
//! and every call kind of the people and echo services run against it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zrpc_async::{CallOptions, Client, Server};
use zrpc_cli::proto::echo::EchoRequest;
use zrpc_cli::proto::echo::echo_client::EchoClient;
use zrpc_cli::proto::people::people_client::PeopleClient;
use zrpc_cli::proto::people::{
    Department, Edge, EdgeKind, ListPeopleRequest, MembersRequest, Organization, Person,
};
use zrpc_cli::store::{SqliteStore, Store};

use crate::{fail, tokio_runtime};

pub(crate) fn demo() -> ExitCode {
    let rt = tokio_runtime(true);
    match rt.block_on(run_demo()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("the demo failed: {e}"), 1),
    }
}

pub(crate) fn step(title: &str) {
    println!("\n== {title}");
}

pub(crate) async fn run_demo() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("zrpc-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("people.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
    let rt = zrpc_tokio::TokioRuntime;
    let server = Server::new(zrpc_cli::router(rt, store, Duration::from_millis(100)), rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/", listener.local_addr()?);
    let s = server.clone();
    let serving = tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    println!("zrpc demo: server on {url}, database {}", db.display());

    let client: Client = zrpc_tokio::connect(&url).await?;
    let people = PeopleClient::new(client.clone());
    let o = CallOptions::default;
    let started = Instant::now();

    step("unary people.People/CreatePerson (the seed's Titan call)");
    let jon = Person {
        name: "jon".into(),
        email: "jon@jon.com".into(),
        url: "https://jon.com/".into(),
        ..Default::default()
    };
    let jon = people.create_person(&jon, o()).await?;
    println!(
        "created person #{} {} <{}> label={}",
        jon.id, jon.name, jon.email, jon.label
    );

    step("bidirectional people.People/CreatePeople: each person streamed back once stored");
    let mut bidi = people.create_people(o()).await?;
    for name in ["dave", "leif", "ada"] {
        bidi.send(&Person {
            name: name.into(),
            email: format!("{name}@{name}.com"),
            ..Default::default()
        })
        .await?;
        let p = bidi.message().await?.ok_or("stream ended early")?;
        println!("created person #{} {} <{}>", p.id, p.name, p.email);
    }
    bidi.close_send()?;
    while bidi.message().await?.is_some() {}

    step("client streaming people.People/ImportPeople: 5 people in, one summary out");
    let mut import = people.import_people(o()).await?;
    for i in 1..=5 {
        import
            .send(&Person {
                name: format!("imported {i}"),
                ..Default::default()
            })
            .await?;
    }
    let summary = import.finish().await?;
    println!("imported {} people, ids {:?}", summary.created, summary.ids);

    step("server streaming people.People/ListPeople");
    let mut list = people
        .list_people(&ListPeopleRequest::default(), o())
        .await?;
    while let Some(p) = list.message().await? {
        println!("  #{:<3} {:<12} {}", p.id, p.name, p.email);
    }

    step("graph: an organization, a department, edges, and Members");
    let org = people
        .create_organization(
            &Organization {
                name: "Acme".into(),
                ..Default::default()
            },
            o(),
        )
        .await?;
    let dept = people
        .create_department(
            &Department {
                name: "Research".into(),
                ..Default::default()
            },
            o(),
        )
        .await?;
    println!(
        "created organization #{} {}, department #{} {}",
        org.id, org.name, dept.id, dept.name
    );
    for (kind, from, to) in [
        (EdgeKind::WorksFor, jon.id, org.id),
        (EdgeKind::MemberOf, jon.id, dept.id),
        (EdgeKind::BelongsTo, dept.id, org.id),
    ] {
        let e = people
            .link(
                &Edge {
                    kind: kind as i32,
                    from_id: from,
                    to_id: to,
                    id: 0,
                },
                o(),
            )
            .await?;
        println!(
            "linked {from} -{}-> {to} (edge #{})",
            kind.as_str_name(),
            e.id
        );
    }
    let mut members = people
        .members(
            &MembersRequest {
                vertex_id: org.id,
                after_id: 0,
            },
            o(),
        )
        .await?;
    while let Some(p) = members.message().await? {
        println!("  {} works for {}", p.name, org.name);
    }

    step("a bad input is refused with the field named");
    let err = people
        .create_person(
            &Person {
                name: "x".into(),
                email: "not-an-email".into(),
                ..Default::default()
            },
            o(),
        )
        .await
        .unwrap_err();
    println!("{err}");

    step("typed echo.Echo and the seed's echo (3 of its replies)");
    let typed = EchoClient::new(client.clone());
    let r = typed
        .say(
            &EchoRequest {
                message: "hello".into(),
                repeat: 0,
            },
            o(),
        )
        .await;
    println!(
        "echo.Echo/Say: {}",
        match r {
            Ok(r) => r.message,
            Err(e) => e.to_string(),
        }
    );
    let mut seed = client
        .server_streaming(
            zrpc_cli::seed_echo::METHOD,
            Bytes::from_static(b"world"),
            o(),
        )
        .await?;
    for i in 1..=3 {
        let m = seed.message().await?.ok_or("stream ended early")?;
        println!("echo reply {i}: {}", String::from_utf8_lossy(&m));
    }
    drop(seed); // cancels the rest on the server

    step("legacy: the seed's own format, one connection per call");
    let payload = zrpc_proto::encode(&Person {
        name: "legacy".into(),
        ..Default::default()
    });
    let mut legacy = zrpc_tokio::legacy_call(&url, "dispatch.create_person", payload).await?;
    while let Some(reply) = legacy.message().await? {
        let p: Person = zrpc_proto::decode(reply)?;
        println!(
            "dispatch.create_person stored #{} {} (then a normal close)",
            p.id, p.name
        );
    }

    println!("\ndone in {:?}; shutting down", started.elapsed());
    server.shutdown().await;
    serving.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
