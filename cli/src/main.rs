//! `zrpc`: serve, call and demo zrpc services.
//!
//! ```text
//! zrpc serve [--addr 127.0.0.1:8060] [--db PATH] [--runtime tokio|smol] [--echo-interval-ms 500]
//! zrpc call URL METHOD [--json JSON | --hex HEX | --file PATH] [--legacy] [--timeout-ms N]
//! zrpc demo
//! ```

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use zrpc_async::{CallKind, CallOptions, Client, Code, Runtime, Server, Status, echo};
use zrpc_cli::store::{SqliteStore, Store};
use zrpc_proto::Message;
use zrpc_proto::echo::EchoRequest;
use zrpc_proto::echo::echo_client::EchoClient;
use zrpc_proto::people::people_client::PeopleClient;
use zrpc_proto::people::{
    Department, Edge, EdgeKind, ListPeopleRequest, MembersRequest, Organization, Person,
};

const USAGE: &str = "usage:
  zrpc serve [--addr 127.0.0.1:8060] [--db PATH] [--runtime tokio|smol] [--echo-interval-ms 500]
      serves echo and people (zrpc v1 and the legacy format) until Ctrl-C / SIGTERM;
      without --db the database is in memory
  zrpc call URL METHOD [--json JSON | --hex HEX | --file PATH] [--legacy] [--timeout-ms N]
      calls METHOD; JSON in and out for known methods (people.People/*, echo.Echo/*),
      raw bytes otherwise; prints responses as they arrive and the status on stderr;
      the exit code is the status code (0 for OK)
  zrpc demo
      starts a server on an ephemeral port with a temporary database and runs
      every call kind of the people and echo services against it";

fn opt(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("call") => call(&args[1..]),
        Some("demo") => demo(),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves once Ctrl-C or SIGTERM arrives (works under either runtime).
fn stop_signal() -> impl std::future::Future<Output = ()> {
    let (tx, rx) = smol::channel::bounded::<()>(1);
    let _ = ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    });
    async move {
        let _ = rx.recv().await;
    }
}

fn open_store(db: Option<&str>) -> Result<Arc<dyn Store>, String> {
    let store = match db {
        Some(path) => SqliteStore::open(std::path::Path::new(path)),
        None => SqliteStore::in_memory(),
    };
    store
        .map(|s| Arc::new(s) as Arc<dyn Store>)
        .map_err(|e| e.to_string())
}

async fn serve_on<R: Runtime>(
    rt: R,
    addr: String,
    store: Arc<dyn Store>,
    echo_interval: Duration,
) -> std::io::Result<()> {
    use zrpc_async::Listener;
    let server = Server::new(
        zrpc_cli::router(rt.clone(), store, echo_interval),
        rt.clone(),
    );
    let listener = rt.bind(addr).await?;
    println!(
        "zrpc serving echo and people.People on ws://{}/",
        listener.local_addr()?
    );
    let stop = stop_signal();
    let stopped = async {
        stop.await;
        tracing::info!("shutting down: draining calls");
        server.shutdown().await;
        Ok::<(), std::io::Error>(())
    };
    futures_lite::future::zip(server.serve(listener), stopped)
        .await
        .0
}

fn serve(args: &[String]) -> ExitCode {
    init_logging();
    let addr = opt(args, "--addr").unwrap_or_else(|| "127.0.0.1:8060".into());
    let store = match open_store(opt(args, "--db").as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the database: {e}");
            return ExitCode::from(1);
        }
    };
    let interval = Duration::from_millis(
        opt(args, "--echo-interval-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(500),
    );
    let result = match opt(args, "--runtime").as_deref() {
        None | Some("tokio") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(serve_on(zrpc_tokio::TokioRuntime, addr, store, interval)),
        Some("smol") => smol::block_on(serve_on(zrpc_smol::SmolRuntime, addr, store, interval)),
        Some(other) => {
            eprintln!("error: unknown runtime {other:?} (tokio or smol)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(zrpc_proto::DESCRIPTORS).expect("built-in descriptors")
}

/// The schema of `package.Service/Method`, if the CLI knows it.
fn lookup(pool: &DescriptorPool, method: &str) -> Option<MethodDescriptor> {
    let (service, name) = method.split_once('/')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return Err("hex input has an odd number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("invalid hex at {i}")))
        .collect()
}

fn json_messages(desc: &MessageDescriptor, json: &str) -> Result<Vec<Bytes>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    items
        .into_iter()
        .map(|v| {
            DynamicMessage::deserialize(desc.clone(), v)
                .map(|m| Bytes::from(m.encode_to_vec()))
                .map_err(|e| format!("JSON does not fit {}: {e}", desc.full_name()))
        })
        .collect()
}

fn print_reply(desc: Option<&MessageDescriptor>, b: &Bytes) {
    let line = match desc.map(|d| DynamicMessage::decode(d.clone(), b.clone())) {
        Some(Ok(m)) => serde_json::to_string(&m).unwrap_or_else(|e| format!("<{e}>")),
        Some(Err(e)) => format!("<undecodable response: {e}> {}", hex(b)),
        None => match std::str::from_utf8(b) {
            Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n') => s.to_owned(),
            _ => hex(b),
        },
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        // The reader went away (`zrpc call ... | head`): stop quietly.
        std::process::exit(0);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn status_exit(status: &Status) -> ExitCode {
    eprintln!("status: {status}");
    ExitCode::from(status.code() as u8)
}

fn call(args: &[String]) -> ExitCode {
    let (Some(url), Some(method)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let pool = pool();
    let schema = lookup(&pool, method);
    let input = if let Some(json) = opt(args, "--json") {
        match &schema {
            Some(m) => json_messages(&m.input(), &json),
            None => Err(format!("no schema known for {method}: use --hex or --file")),
        }
    } else if let Some(h) = opt(args, "--hex") {
        hex_decode(&h).map(|b| vec![Bytes::from(b)])
    } else if let Some(path) = opt(args, "--file") {
        std::fs::read(&path)
            .map(|b| vec![Bytes::from(b)])
            .map_err(|e| format!("{path}: {e}"))
    } else {
        Ok(vec![Bytes::new()])
    };
    let messages = match input {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = opt(args, "--timeout-ms")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_millis);
    let legacy = args.iter().any(|a| a == "--legacy");
    let out = schema.as_ref().map(|m| m.output());
    let kind = match &schema {
        Some(m) => match (m.is_client_streaming(), m.is_server_streaming()) {
            (false, false) => CallKind::Unary,
            (false, true) => CallKind::ServerStreaming,
            (true, false) => CallKind::ClientStreaming,
            (true, true) => CallKind::Bidi,
        },
        None => CallKind::Bidi, // carries any handler's shape
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: Result<(), Status> = rt.block_on(async {
        let mut call = if legacy {
            let payload = messages.first().cloned().unwrap_or_default();
            zrpc_tokio::legacy_call(url, method, payload)
                .await
                .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?
        } else {
            let client = zrpc_tokio::connect(url)
                .await
                .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
            let opts = CallOptions {
                timeout,
                ..CallOptions::default()
            };
            let mut call = client.call(method, kind, opts).await?;
            for m in &messages {
                call.send(m.clone()).await?;
            }
            call.close_send()?;
            call
        };
        while let Some(reply) = call.message().await? {
            print_reply(out.as_ref(), &reply);
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            eprintln!("status: OK");
            ExitCode::SUCCESS
        }
        Err(status) => status_exit(&status),
    }
}

fn demo() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run_demo()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

async fn run_demo() -> Result<(), Box<dyn std::error::Error>> {
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
        .members(&MembersRequest { vertex_id: org.id }, o())
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
        .server_streaming(echo::METHOD, Bytes::from_static(b"world"), o())
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
