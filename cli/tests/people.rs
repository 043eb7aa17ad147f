//! The people service end to end over real sockets, against both stores
//! (SQLite, and PostgreSQL when `ZRPC_TEST_POSTGRES` names a server:
//! `scripts/with-postgres.sh` starts a throwaway one, and the test command
//! runs these tests under it): create -> list -> import -> link -> members;
//! every bad input answered with INVALID_ARGUMENT or NOT_FOUND naming the
//! field, with nothing written; the data survives a server restart; cut
//! streams resume from the last id; two servers share one PostgreSQL
//! database.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zrpc_cli::proto::people::people_client::PeopleClient;
use zrpc_cli::proto::people::{
    Department, Edge, EdgeKind, ListPeopleRequest, MembersRequest, Organization, Person,
};
use zrpc_cli::store::{SqliteStore, Store};
use zrpc_proto::{CallOptions, Code};
use zrpc_tokio::{Server, TokioRuntime};

fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zrpc-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("people.db")
}

/// Runs a scenario against each store: `sqlite`, and `postgres` (skipped
/// with a note when no server is configured, unless
/// `ZRPC_REQUIRE_POSTGRES` is set, as the test command sets it).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::Db::fresh(super::Backend::Sqlite, stringify!($name)).await;
                super::$name(db.unwrap()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = super::Db::fresh(super::Backend::Postgres, stringify!($name)).await {
                    super::$name(db).await;
                }
            }
        }
    )*};
}

on_both_stores!(
    create_list_import_link_members_and_restart,
    bad_input_is_refused_with_the_field_named_and_nothing_written,
    the_services_bound_what_they_hold,
    watch_people_streams_the_stored_then_the_new,
    streams_resume_after_the_last_id_received,
);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test; [`Db::open`] gives a store on it
/// (again after a "restart": the data is kept).
struct Db {
    /// What `zrpc serve --db` takes: a file path or a postgres:// URL.
    location: String,
}

impl Drop for Db {
    /// A SQLite database's folder goes with it (a PostgreSQL one goes
    /// with its throwaway server).
    fn drop(&mut self) {
        if !self.location.starts_with("postgres")
            && let Some(dir) = std::path::Path::new(&self.location).parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Db {
    async fn fresh(backend: Backend, name: &str) -> Option<Db> {
        match backend {
            Backend::Sqlite => Some(Db {
                location: temp_db(name).to_string_lossy().into_owned(),
            }),
            Backend::Postgres => {
                let Ok(admin) = std::env::var("ZRPC_TEST_POSTGRES") else {
                    assert!(
                        std::env::var_os("ZRPC_REQUIRE_POSTGRES").is_none(),
                        "ZRPC_REQUIRE_POSTGRES is set but ZRPC_TEST_POSTGRES is not"
                    );
                    eprintln!("skipped: no PostgreSQL (run under scripts/with-postgres.sh)");
                    return None;
                };
                let db = format!("people_{name}_{}", std::process::id());
                let base = admin.rsplit_once('/').expect("a URL with a database").0;
                let location = format!("{base}/{db}");
                tokio::task::spawn_blocking(move || {
                    let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
                    // Two statements: neither may run in a transaction.
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
                        .unwrap();
                    c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
                })
                .await
                .unwrap();
                Some(Db { location })
            }
        }
    }

    /// A store on this database (PostgreSQL's client blocks: opened off
    /// the runtime's workers).
    async fn open(&self) -> Arc<dyn Store> {
        let location = self.location.clone();
        tokio::task::spawn_blocking(move || zrpc_cli::store::open(Some(&location), 4).unwrap())
            .await
            .unwrap()
    }

    /// Runs blocking store work off the runtime's workers.
    async fn with(store: &Arc<dyn Store>, f: impl FnOnce(&dyn Store) + Send + 'static) {
        let store = store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .unwrap()
    }
}

async fn serve(store: Arc<dyn Store>) -> (Server<TokioRuntime>, PeopleClient, String) {
    let router = zrpc_cli::router(TokioRuntime, store, Duration::ZERO);
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    let client = PeopleClient::new(zrpc_tokio::connect(&url).await.unwrap());
    (server, client, url)
}

fn person(name: &str, email: &str, url: &str) -> Person {
    Person {
        name: name.into(),
        email: email.into(),
        url: url.into(),
        ..Person::default()
    }
}

async fn list(client: &PeopleClient, filter: &str) -> Vec<Person> {
    let req = ListPeopleRequest {
        name_contains: filter.into(),
        limit: 0,
        after_id: 0,
    };
    let mut stream = client
        .list_people(&req, CallOptions::default())
        .await
        .unwrap();
    let mut out = vec![];
    while let Some(p) = stream.message().await.unwrap() {
        out.push(p);
    }
    out
}

async fn create_list_import_link_members_and_restart(db: Db) {
    let o = CallOptions::default;
    {
        let (server, client, _) = serve(db.open().await).await;
        let jon = client
            .create_person(&person("jon", "jon@jon.com", "https://jon.com/"), o())
            .await
            .unwrap();
        assert!(jon.id > 0);
        assert_eq!(
            (jon.label.as_str(), jon.email.as_str()),
            ("person", "jon@jon.com")
        );

        // Bidirectional: each stored person comes back as it is committed.
        let mut bidi = client.create_people(o()).await.unwrap();
        for name in ["dave", "leif"] {
            bidi.send(&person(name, &format!("{name}@{name}.com"), ""))
                .await
                .unwrap();
            let stored = bidi.message().await.unwrap().unwrap();
            assert_eq!(
                (stored.name.as_str(), stored.label.as_str()),
                (name, "person")
            );
        }
        bidi.close_send().unwrap();
        assert_eq!(bidi.message().await.unwrap(), None);

        // Client streaming: all or nothing, with a summary.
        let mut import = client.import_people(o()).await.unwrap();
        for i in 0..20 {
            import
                .send(&person(&format!("imported {i}"), "", ""))
                .await
                .unwrap();
        }
        let summary = import.finish().await.unwrap();
        assert_eq!((summary.created, summary.ids.len()), (20, 20));

        assert_eq!(list(&client, "").await.len(), 23);
        assert_eq!(list(&client, "imported 1").await.len(), 11); // 1, 10..19
        let limited = client
            .list_people(
                &ListPeopleRequest {
                    name_contains: String::new(),
                    limit: 2,
                    after_id: 0,
                },
                o(),
            )
            .await
            .unwrap();
        drop(limited);

        let org = client
            .create_organization(
                &Organization {
                    name: "Acme".into(),
                    ..Default::default()
                },
                o(),
            )
            .await
            .unwrap();
        let dept = client
            .create_department(
                &Department {
                    name: "R&D".into(),
                    ..Default::default()
                },
                o(),
            )
            .await
            .unwrap();
        let people = list(&client, "").await;
        for p in &people[..3] {
            let e = Edge {
                kind: EdgeKind::WorksFor as i32,
                from_id: p.id,
                to_id: org.id,
                id: 0,
            };
            assert!(client.link(&e, o()).await.unwrap().id > 0);
        }
        let e = Edge {
            kind: EdgeKind::MemberOf as i32,
            from_id: jon.id,
            to_id: dept.id,
            id: 0,
        };
        client.link(&e, o()).await.unwrap();
        let e = Edge {
            kind: EdgeKind::BelongsTo as i32,
            from_id: dept.id,
            to_id: org.id,
            id: 0,
        };
        client.link(&e, o()).await.unwrap();

        let members = |id| {
            let client = client.clone();
            async move {
                let mut s = client
                    .members(
                        &MembersRequest {
                            vertex_id: id,
                            after_id: 0,
                        },
                        CallOptions::default(),
                    )
                    .await
                    .unwrap();
                let mut names = vec![];
                while let Some(p) = s.message().await.unwrap() {
                    names.push(p.name);
                }
                names
            }
        };
        assert_eq!(members(org.id).await, vec!["jon", "dave", "leif"]);
        assert_eq!(members(dept.id).await, vec!["jon"]);
        server.shutdown().await;
    }
    // Restart on the same database: the data is there.
    let (_server, client, _) = serve(db.open().await).await;
    let people = list(&client, "").await;
    assert_eq!(people.len(), 23);
    assert_eq!(people[0].name, "jon");
}

async fn bad_input_is_refused_with_the_field_named_and_nothing_written(db: Db) {
    let (_server, client, _) = serve(db.open().await).await;
    let o = CallOptions::default;
    let cases = [
        (person("", "a@b.com", ""), "name"),
        (person("   ", "", ""), "name"),
        (person("x", "not-an-email", ""), "email"),
        (person("x", "a@@b.com", ""), "email"),
        (person("x", "a@nodot", ""), "email"),
        (person("x", "", "ftp://example.com"), "url"),
        (person("x", "", "https://"), "url"),
        (person("nul\0name", "", ""), "name"),
    ];
    for (p, field) in &cases {
        let err = client.create_person(p, o()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{p:?}");
        assert!(err.message().starts_with(field), "{p:?}: {err}");
    }
    // Import is all or nothing: one bad person, nobody stored.
    let mut import = client.import_people(o()).await.unwrap();
    import.send(&person("fine", "", "")).await.unwrap();
    import.send(&person("", "", "")).await.unwrap();
    let err = import.finish().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "person 1: name: must not be empty")
    );
    assert!(list(&client, "").await.is_empty());

    let org = client
        .create_organization(
            &Organization {
                name: "Acme".into(),
                ..Default::default()
            },
            o(),
        )
        .await
        .unwrap();
    let p = client
        .create_person(&person("ann", "", ""), o())
        .await
        .unwrap();
    let err = client
        .link(
            &Edge {
                kind: EdgeKind::WorksFor as i32,
                from_id: p.id,
                to_id: 9999,
                id: 0,
            },
            o(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "to_id: no vertex 9999")
    );
    let err = client
        .link(
            &Edge {
                kind: EdgeKind::MemberOf as i32,
                from_id: p.id,
                to_id: org.id,
                id: 0,
            },
            o(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("to_id:"), "{err}");
    let err = client
        .link(
            &Edge {
                kind: 7,
                from_id: p.id,
                to_id: org.id,
                id: 0,
            },
            o(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "kind: unknown edge kind 7")
    );
    let err = client
        .create_organization(&Organization::default(), o())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "name: must not be empty")
    );
    let mut s = client
        .members(
            &MembersRequest {
                vertex_id: p.id,
                after_id: 0,
            },
            o(),
        )
        .await
        .unwrap();
    assert_eq!(s.message().await.unwrap_err().code(), Code::InvalidArgument);
    let mut s = client
        .members(
            &MembersRequest {
                vertex_id: 12345,
                after_id: 0,
            },
            o(),
        )
        .await
        .unwrap();
    assert_eq!(s.message().await.unwrap_err().code(), Code::NotFound);
    // Only the one valid person was written.
    assert_eq!(list(&client, "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_titan_call_works_in_legacy_mode() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let router = zrpc_cli::router(TokioRuntime, store, Duration::ZERO);
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    for method in ["dispatch.create_person", "create_person"] {
        let payload = zrpc_proto::encode(&person("jon", "jon@jon.com", "https://jon.com/"));
        let mut call = zrpc_tokio::legacy_call(&url, method, payload)
            .await
            .unwrap();
        let reply = call.message().await.unwrap().unwrap();
        let stored: Person = zrpc_proto::decode(reply).unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.label.as_str()),
            ("jon", "person")
        );
        assert!(stored.id > 0);
        assert_eq!(call.message().await.unwrap(), None, "then a normal close");
    }
}

/// The seed's Titan client, in Python with `protobuf` and `websockets`
/// (scripts/seed_titan_client.py; scripts/setup-python.sh installs the
/// packages into target/pydeps): the stored Person comes back, then a
/// normal close; the person is in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_seed_titan_client_stores_a_person_in_legacy_mode() {
    let (_server, client, url) = serve(Arc::new(SqliteStore::in_memory().unwrap())).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = move |method: &'static str| {
        let root = root.clone();
        let url = url.clone();
        move || {
            let setup = std::process::Command::new("bash")
                .arg(root.join("scripts/setup-python.sh"))
                .status()
                .unwrap();
            assert!(setup.success(), "installing the Python packages failed");
            std::process::Command::new("python3")
                .arg(root.join("scripts/seed_titan_client.py"))
                .args([
                    url.as_str(),
                    method,
                    "jon",
                    "jon@jon.com",
                    "https://jon.com/",
                ])
                .env("PYTHONPATH", root.join("target/pydeps"))
                .output()
                .unwrap()
        }
    };
    for method in ["dispatch.create_person", "create_person"] {
        let out = tokio::task::spawn_blocking(run(method)).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{method}: {text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("person ")
                && lines[0].ends_with(" jon jon@jon.com https://jon.com/ person"),
            "{text}"
        );
        assert_eq!(lines[1], "closed 1000", "{text}");
    }
    assert_eq!(list(&client, "jon").await.len(), 2);
}

/// What the shipped services keep per call is bounded: streaming reads go
/// page by page (a result larger than a page streams whole, and a limit
/// stops it exactly), oversized fields are refused naming the field, and
/// echo.Echo/Collect refuses to keep more than its bound.
async fn the_services_bound_what_they_hold(db: Db) {
    use zrpc_cli::people::{MAX_EMAIL, MAX_NAME, PAGE};
    let store = db.open().await;
    let n = PAGE as usize * 2 + 10;
    let people: Vec<Person> = (0..n).map(|i| person(&format!("p{i}"), "", "")).collect();
    Db::with(&store, move |s| {
        s.create_people(&people).unwrap();
    })
    .await;
    let (_server, client, url) = serve(store).await;
    assert_eq!(list(&client, "").await.len(), n);
    // p1, p10..p19, p100..p199: a filtered result that also spans pages.
    assert_eq!(list(&client, "p1").await.len(), 111);
    let req = ListPeopleRequest {
        name_contains: String::new(),
        limit: PAGE + 3,
        after_id: 0,
    };
    let mut stream = client
        .list_people(&req, CallOptions::default())
        .await
        .unwrap();
    let mut got = 0;
    while stream.message().await.unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, PAGE as usize + 3);

    let long = "x".repeat(MAX_NAME + 1);
    let err = client
        .create_person(&person(&long, "", ""), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("name: at most 256 bytes"),
        "{err}"
    );
    let email = format!("{}@example.org", "a".repeat(MAX_EMAIL));
    let err = client
        .create_person(&person("ann", &email, ""), CallOptions::default())
        .await
        .unwrap_err();
    assert!(err.message().starts_with("email: at most"), "{err}");
    let org = Organization {
        name: long,
        ..Organization::default()
    };
    let err = client
        .create_organization(&org, CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    use zrpc_cli::proto::echo::EchoRequest;
    use zrpc_cli::proto::echo::echo_client::EchoClient;
    let echo = EchoClient::new(zrpc_tokio::connect(&url).await.unwrap());
    let mut call = echo.collect(CallOptions::default()).await.unwrap();
    let chunk = EchoRequest {
        message: "y".repeat(16 * 1024),
        repeat: 0,
    };
    let mut refused = None;
    for _ in 0..64 {
        if let Err(st) = call.send(&chunk).await {
            refused = Some(st);
            break;
        }
    }
    let status = match refused {
        Some(st) => st,
        None => call.finish().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
}

/// WatchPeople streams who is stored, then each person as they are
/// created (by any call kind), until the caller cancels.
async fn watch_people_streams_the_stored_then_the_new(db: Db) {
    let (_server, client, _url) = serve(db.open().await).await;
    client
        .create_person(&person("Early", "", ""), CallOptions::default())
        .await
        .unwrap();
    let req = ListPeopleRequest {
        name_contains: String::new(),
        limit: 0,
        after_id: 0,
    };
    let mut watch = client
        .watch_people(&req, CallOptions::default())
        .await
        .unwrap();
    assert_eq!(watch.message().await.unwrap().unwrap().name, "Early");
    client
        .create_person(&person("Later", "", ""), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(watch.message().await.unwrap().unwrap().name, "Later");
    let mut import = client.import_people(CallOptions::default()).await.unwrap();
    import.send(&person("Imported", "", "")).await.unwrap();
    import.finish().await.unwrap();
    assert_eq!(watch.message().await.unwrap().unwrap().name, "Imported");
    // `limit` ends the stream.
    let limited = ListPeopleRequest {
        name_contains: String::new(),
        limit: 2,
        after_id: 0,
    };
    let mut two = client
        .watch_people(&limited, CallOptions::default())
        .await
        .unwrap();
    assert_eq!(two.message().await.unwrap().unwrap().name, "Early");
    assert_eq!(two.message().await.unwrap().unwrap().name, "Later");
    assert!(two.message().await.unwrap().is_none());
}

/// A stream cut part way (a server restart) resumes with `after_id`: the
/// rest, in id order, nothing twice; Members the same.
async fn streams_resume_after_the_last_id_received(db: Db) {
    use zrpc_cli::people::PAGE;
    let o = CallOptions::default;
    let (server, client, _) = serve(db.open().await).await;
    let n = PAGE as usize + 40;
    let mut import = client.import_people(o()).await.unwrap();
    for i in 0..n {
        import
            .send(&person(&format!("r{i}"), "", ""))
            .await
            .unwrap();
    }
    let ids = import.finish().await.unwrap().ids;
    let org = client
        .create_organization(
            &Organization {
                name: "Org".into(),
                ..Default::default()
            },
            o(),
        )
        .await
        .unwrap();
    for id in &ids[..5] {
        let e = Edge {
            kind: EdgeKind::WorksFor as i32,
            from_id: *id,
            to_id: org.id,
            id: 0,
        };
        client.link(&e, o()).await.unwrap();
    }
    // Read some, then the server goes away mid-stream.
    let req = ListPeopleRequest {
        name_contains: "r".into(),
        limit: 0,
        after_id: 0,
    };
    let mut stream = client.list_people(&req, o()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(stream.message().await.unwrap().unwrap().id);
    }
    drop(stream);
    server.shutdown().await;

    let (_server, client, _) = serve(db.open().await).await;
    let resume = ListPeopleRequest {
        after_id: *got.last().unwrap(),
        ..req
    };
    let mut stream = client.list_people(&resume, o()).await.unwrap();
    while let Some(p) = stream.message().await.unwrap() {
        got.push(p.id);
    }
    assert_eq!(got, ids, "every person once, in id order");

    let members = MembersRequest {
        vertex_id: org.id,
        after_id: ids[1],
    };
    let mut stream = client.members(&members, o()).await.unwrap();
    let mut rest = Vec::new();
    while let Some(p) = stream.message().await.unwrap() {
        rest.push(p.id);
    }
    assert_eq!(rest, ids[2..5]);
}

/// A store that counts the people listings it answers.
struct Counting {
    inner: SqliteStore,
    listings: std::sync::atomic::AtomicUsize,
}

impl Store for Counting {
    fn create_people(&self, people: &[Person]) -> Result<Vec<Person>, zrpc_cli::store::StoreError> {
        self.inner.create_people(people)
    }
    fn create_vertex(&self, label: &str, name: &str) -> Result<i32, zrpc_cli::store::StoreError> {
        self.inner.create_vertex(label, name)
    }
    fn label_of(&self, id: i32) -> Result<Option<String>, zrpc_cli::store::StoreError> {
        self.inner.label_of(id)
    }
    fn link(&self, kind: EdgeKind, from: i32, to: i32) -> Result<i32, zrpc_cli::store::StoreError> {
        self.inner.link(kind, from, to)
    }
    fn list_people(
        &self,
        name_contains: &str,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, zrpc_cli::store::StoreError> {
        self.listings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list_people(name_contains, after_id, limit)
    }
    fn people_linked_to(
        &self,
        kind: EdgeKind,
        to: i32,
        after_id: i32,
        limit: u32,
    ) -> Result<Vec<Person>, zrpc_cli::store::StoreError> {
        self.inner.people_linked_to(kind, to, after_id, limit)
    }
}

/// Watchers cost no store query per creation: each reads the store once
/// to catch up, then every new person reaches every watcher from memory
/// (filtered there). With 200 watchers and 20 creations, the store answers
/// 200 listings, not 4,200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_cost_no_store_query_per_creation() {
    const WATCHERS: usize = 200;
    const CREATED: usize = 20;
    let store = Arc::new(Counting {
        inner: SqliteStore::in_memory().unwrap(),
        listings: Default::default(),
    });
    let (_server, client, _url) = serve(store.clone()).await;
    let req = |filter: &str| ListPeopleRequest {
        name_contains: filter.into(),
        limit: 0,
        after_id: 0,
    };
    let mut watches = Vec::new();
    for i in 0..WATCHERS {
        // Half match every name, half match none.
        let filter = if i % 2 == 0 { "" } else { "nobody" };
        watches.push(
            client
                .watch_people(&req(filter), CallOptions::default())
                .await
                .unwrap(),
        );
    }
    // Each watcher's first look at the store, then the creations.
    let mut marker = client
        .watch_people(&req("marker"), CallOptions::default())
        .await
        .unwrap();
    for n in 0..CREATED {
        client
            .create_person(&person(&format!("P{n}"), "", ""), CallOptions::default())
            .await
            .unwrap();
    }
    for w in watches.iter_mut().step_by(2) {
        for n in 0..CREATED {
            assert_eq!(w.message().await.unwrap().unwrap().name, format!("P{n}"));
        }
    }
    // A last creation every watcher has seen once the marker watcher has
    // (they wake in one notification), so all of them went through every
    // creation before the count is read.
    client
        .create_person(&person("marker", "", ""), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(marker.message().await.unwrap().unwrap().name, "marker");
    for w in watches.iter_mut().step_by(2) {
        assert_eq!(w.message().await.unwrap().unwrap().name, "marker");
    }
    let listings = store.listings.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        listings,
        WATCHERS + 1,
        "store listings for {WATCHERS} watchers"
    );
}

/// Where the test proxy cuts a store connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cut {
    /// When the client sends its INSERT: nothing was written.
    AtInsert,
    /// When the client sends COMMIT, before it reaches the server: the
    /// transaction is rolled back, nothing was written.
    BeforeCommit,
    /// After the server committed, before its answer reaches the client:
    /// the row is written, but the client cannot know.
    AfterCommit,
}

/// A TCP proxy to PostgreSQL that cuts the first connection whose client
/// sends `trigger` (once armed), at `cut`. Returns the URL through it and
/// the arming switch.
async fn cutting_proxy(url: &str, cut: Cut) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (prefix, rest) = url.split_once('@').expect("user@host in the URL");
    let (hostport, db) = rest.split_once('/').unwrap();
    let upstream = hostport.to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxied = format!("{prefix}@{}/{db}", listener.local_addr().unwrap());
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let armed = armed.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let cut_now = Arc::new(tokio::sync::Notify::new());
                // AfterCommit: the server's next answer (to the COMMIT) is
                // swallowed, then the connection cut.
                let swallow = Arc::new(AtomicBool::new(false));
                let swallow_up = swallow.clone();
                let trigger: &[u8] = if cut == Cut::AtInsert {
                    b"INSERT"
                } else {
                    b"COMMIT"
                };
                let up = {
                    let cut_now = cut_now.clone();
                    async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = cr.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            let hit = buf[..n].windows(trigger.len()).any(|w| w == trigger)
                                && armed.swap(false, Ordering::SeqCst);
                            if hit && cut != Cut::AfterCommit {
                                cut_now.notify_one();
                                return;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            if hit {
                                // The server commits; its answer is dropped.
                                swallow_up.store(true, Ordering::SeqCst);
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                };
                let down = {
                    let cut_now = cut_now.clone();
                    async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = sr.read(&mut buf).await.unwrap_or(0);
                            if n > 0 && swallow.load(Ordering::SeqCst) {
                                cut_now.notify_one();
                                return;
                            }
                            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                let cut_wait = cut_now.notified();
                tokio::select! {
                    _ = async { tokio::join!(up, down) } => {}
                    _ = cut_wait => {}
                }
                // Dropping both halves of both sockets cuts the connection.
            });
        }
    });
    (proxied, arm)
}

/// A store connection cut while a person is written: the status says what
/// is known. `UNAVAILABLE` (safe to retry) only when the row surely was not
/// written (cut before COMMIT was sent); `UNKNOWN` once COMMIT was sent
/// (written or not); never `INTERNAL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_store_connection_reports_what_is_known() {
    let Some(db) = Db::fresh(Backend::Postgres, "cut_connection").await else {
        return;
    };
    let direct = db.open().await;
    for cut in [Cut::AtInsert, Cut::BeforeCommit, Cut::AfterCommit] {
        let (url, arm) = cutting_proxy(&db.location, cut).await;
        let store =
            tokio::task::spawn_blocking(move || zrpc_cli::store::open(Some(&url), 1).unwrap())
                .await
                .unwrap();
        let (server, client, _url) = serve(store).await;
        arm.store(true, std::sync::atomic::Ordering::SeqCst);
        let name = format!("cut {cut:?}");
        let err = client
            .create_person(&person(&name, "", ""), CallOptions::default())
            .await
            .unwrap_err();
        let written = {
            let name = name.clone();
            let store = direct.clone();
            tokio::task::spawn_blocking(move || store.list_people(&name, 0, 10).unwrap().len())
                .await
                .unwrap()
        };
        match cut {
            Cut::AtInsert => {
                assert_eq!(err.code(), Code::Unavailable, "{cut:?}: {err}");
                assert_eq!(written, 0, "{cut:?}: UNAVAILABLE, yet the row was written");
            }
            // A COMMIT sent and never answered may or may not have been
            // carried out: the client cannot tell these two apart.
            Cut::BeforeCommit | Cut::AfterCommit => {
                assert_eq!(written, usize::from(cut == Cut::AfterCommit), "{cut:?}");
                assert_eq!(err.code(), Code::Unknown, "{cut:?}: {err}");
                assert!(err.message().contains("outcome is unknown"), "{err}");
            }
        }
        server.shutdown().await;
    }
}

/// Two instances on one PostgreSQL: a watcher on either sees every person
/// created through both (from tasks racing each other), once each, in id
/// order; and the store connection that listens for creations comes back
/// when the database drops it, losing nothing created meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_creations_through_every_instance() {
    let Some(db) = Db::fresh(Backend::Postgres, "two_instances").await else {
        return;
    };
    let (_a, client_a, _) = serve(db.open().await).await;
    let (_b, client_b, _) = serve(db.open().await).await;
    let req = ListPeopleRequest {
        name_contains: String::new(),
        limit: 0,
        after_id: 0,
    };
    let o = CallOptions::default;
    let mut on_a = client_a.watch_people(&req, o()).await.unwrap();
    let mut on_b = client_b.watch_people(&req, o()).await.unwrap();
    // Creations through both instances at once: ids are drawn on one
    // sequence while commits race.
    async fn create(clients: [PeopleClient; 2], tag: &str) -> Vec<i32> {
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let tag = format!("{tag}-{i}");
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for n in 0..25 {
                        let p = person(&format!("{tag}-{n}"), "", "");
                        ids.push(
                            c.create_person(&p, CallOptions::default())
                                .await
                                .unwrap()
                                .id,
                        );
                    }
                    ids
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        ids.sort_unstable();
        ids
    }
    // Every watcher gets exactly `ids`, in order: each message is awaited
    // with a bound, so a lost person fails rather than hangs.
    async fn expect(watch: &mut zrpc_proto::ResponseStream<Person>, ids: &[i32]) {
        for id in ids {
            let p = tokio::time::timeout(Duration::from_secs(20), watch.message())
                .await
                .expect("delivered within 20 s")
                .unwrap()
                .unwrap();
            assert_eq!(p.id, *id);
        }
    }
    let clients = || [client_a.clone(), client_b.clone()];
    let first = create(clients(), "first").await;
    expect(&mut on_a, &first).await;
    expect(&mut on_b, &first).await;

    // The database drops every listening connection; what is created
    // meanwhile still arrives, once.
    let admin = std::env::var("ZRPC_TEST_POSTGRES").unwrap();
    let location = db.location.clone();
    let dropped: i64 = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        let db_name = location.rsplit_once('/').unwrap().1.to_owned();
        c.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = $2",
            &[&db_name, &zrpc_cli::store::LISTENER_NAME],
        )
        .unwrap()
        .len() as i64
    })
    .await
    .unwrap();
    assert_eq!(dropped, 2, "one listening connection per instance");
    let second = create(clients(), "second").await;
    expect(&mut on_a, &second).await;
    expect(&mut on_b, &second).await;

    // Nothing twice: the next message is the next creation.
    let last = client_b
        .create_person(&person("last", "", ""), o())
        .await
        .unwrap();
    expect(&mut on_a, &[last.id]).await;
    expect(&mut on_b, &[last.id]).await;
}

/// Ids restarted under a running instance (`TRUNCATE ... RESTART
/// IDENTITY`, as an operator empties a database): the instance's store
/// listener had handed on people up to id 3, and the people created after
/// the restart (ids 1, 2, ...) still reach its watchers, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_new_people_after_ids_restart() {
    let Some(db) = Db::fresh(Backend::Postgres, "ids_restart").await else {
        return;
    };
    let (_server, client, _) = serve(db.open().await).await;
    let req = ListPeopleRequest {
        name_contains: String::new(),
        limit: 0,
        after_id: 0,
    };
    let o = CallOptions::default;
    async fn next(watch: &mut zrpc_proto::ResponseStream<Person>) -> Person {
        tokio::time::timeout(Duration::from_secs(20), watch.message())
            .await
            .expect("delivered within 20 s")
            .unwrap()
            .unwrap()
    }
    // Through the feed: the listener has seen ids 1 to 3.
    let mut before = client.watch_people(&req, o()).await.unwrap();
    for n in 1..=3 {
        client
            .create_person(&person(&format!("before-{n}"), "", ""), o())
            .await
            .unwrap();
        assert_eq!(next(&mut before).await.id, n);
    }
    drop(before);

    let location = db.location.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&location, postgres::NoTls).unwrap();
        c.batch_execute("TRUNCATE edges, vertices RESTART IDENTITY")
            .unwrap();
    })
    .await
    .unwrap();

    // A watcher of the emptied database: it finds nothing stored, then
    // the new people come through the feed.
    let mut after = client.watch_people(&req, o()).await.unwrap();
    for n in 1..=2 {
        let p = client
            .create_person(&person(&format!("after-{n}"), "", ""), o())
            .await
            .unwrap();
        assert_eq!(p.id, n, "ids start again at 1");
        let seen = next(&mut after).await;
        assert_eq!(
            (seen.id, seen.name.as_str()),
            (n, format!("after-{n}").as_str())
        );
    }
}
