//! `zrpc`: serve, call and demo zrpc services. `zrpc --help` and
//! `zrpc <command> --help` list every option.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use zrpc_async::{
    CallKind, CallLog, CallOptions, Client, ClientConfig, ClientTls, Code, Config, Health,
    Metadata, Runtime, Server, ServerConfig, ServerTls, Status,
};
use zrpc_cli::proto::echo::EchoRequest;
use zrpc_cli::proto::echo::echo_client::EchoClient;
use zrpc_cli::proto::people::people_client::PeopleClient;
use zrpc_cli::proto::people::{
    Department, Edge, EdgeKind, ListPeopleRequest, MembersRequest, Organization, Person,
};
use zrpc_cli::store::{SqliteStore, Store};
use zrpc_proto::Message;

/// Serve, call and demo zrpc services: streaming RPC over WebSocket.
#[derive(Parser)]
#[command(name = "zrpc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the echo and people.People services (zrpc v1 and the legacy
    /// format) until Ctrl-C or SIGTERM, then drain.
    Serve(ServeArgs),
    /// Call METHOD on a server: JSON in and out for known methods
    /// (people.People/*, echo.Echo/*), raw bytes otherwise. Responses print
    /// as they arrive, the status goes to stderr, and the exit code is the
    /// status code (0 for OK).
    Call(CallArgs),
    /// Start a server on an ephemeral port with a temporary database and run
    /// every call kind of the people and echo services against it.
    Demo,
    /// List a server's services (through its reflection service).
    List(ReflectArgs),
    /// Describe a service, method, message or enum of a server (through its
    /// reflection service), as .proto text.
    Describe(DescribeArgs),
}

#[derive(clap::Args)]
struct ReflectArgs {
    /// Server URL: ws://host:port/ or wss://host:port/.
    url: String,
    /// PEM CA certificate(s) to trust for wss:// instead of the public roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Upgrade-request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Bound on connecting and asking, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(clap::Args)]
struct DescribeArgs {
    #[command(flatten)]
    server: ReflectArgs,
    /// Fully qualified symbol: `pkg.Service`, `pkg.Service.Method`,
    /// `pkg.Message`.
    symbol: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum RuntimeKind {
    Tokio,
    Smol,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8060")]
    addr: String,
    /// Serve zrpc only at this path (`/rpc`); upgrades elsewhere get HTTP
    /// 404. Default: any path.
    #[arg(long, value_parser = absolute_path)]
    path: Option<String>,
    /// Serve Prometheus metrics (calls by method and code, in flight,
    /// durations, bytes, connections, stalls, shed calls) over HTTP at
    /// this address (`/metrics`, any path answers). Default: off.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// On Ctrl-C or SIGTERM, how long to keep serving while /healthz and
    /// the health service already say NOT_SERVING (so a load balancer moves
    /// new connections elsewhere), before draining.
    #[arg(long, default_value_t = 0)]
    drain_delay_ms: u64,
    /// While draining, how long in-flight calls get to finish before the
    /// remaining connections are closed (1001).
    #[arg(long, default_value_t = 10_000)]
    drain_grace_ms: u64,
    /// What to log, as a tracing filter (`info`, `debug`,
    /// `zrpc_async=debug,info`, ...). Default: `RUST_LOG`, else `info`.
    #[arg(long)]
    log: Option<String>,
    /// The level of each call's log line (method, code, message, duration,
    /// peer; target `zrpc_async::router`).
    #[arg(long, value_enum, default_value = "info")]
    call_log: CallLogLevel,
    /// Where the people live: a SQLite file (created if missing), or a
    /// shared PostgreSQL database as postgres://user:password@host:port/db
    /// (the schema is created or migrated at start); in memory without it.
    #[arg(long)]
    db: Option<String>,
    /// Connections to a PostgreSQL --db at most (store calls beyond them
    /// wait up to 5 s, then fail with UNAVAILABLE).
    #[arg(long, default_value_t = 8)]
    db_pool: u32,
    /// Async runtime to serve on.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: RuntimeKind,
    /// Interval between echo.Echo/Subscribe messages, in milliseconds.
    #[arg(long, default_value_t = 500)]
    echo_interval_ms: u64,
    /// PEM certificate chain: serve wss:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A browser origin allowed to connect (repeat for more; `*` for any).
    /// Pages from other origins get HTTP 403; same-origin pages (see
    /// --allow-host) and non-browser clients are always allowed.
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// A host name under which same-origin pages may connect (repeat for
    /// more; `*` for any). IP addresses and localhost are always allowed;
    /// pages under other names get HTTP 403 (DNS rebinding).
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Connections served at once (HTTP 503 beyond).
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Connections served at once from one IP address (HTTP 429 beyond).
    #[arg(long, default_value_t = 256)]
    max_connections_per_ip: usize,
    /// Drain a connection after this many seconds without a call (0: never).
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// PING a silent connection after this many seconds; close it when the
    /// PING is not answered within 20 s (0: no keepalive).
    #[arg(long, default_value_t = 30)]
    keepalive_secs: u64,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = zrpc_core::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: u32,
    /// Received bytes held for handlers over all connections; the largest
    /// holder is shed beyond it.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_server_receive_buffer: usize,
    /// Do not serve clients in the seed's legacy format.
    #[arg(long)]
    no_legacy: bool,
    /// Also serve the people web app (built into the binary) to browsers at
    /// http://ADDR/: every call kind from a page, with the TypeScript client.
    #[arg(long)]
    web: bool,
}

#[derive(clap::Args)]
struct CallArgs {
    /// Server URL: ws://host:port/ or wss://host:port/.
    url: String,
    /// Method, as package.Service/Method (or a legacy name with --legacy).
    method: String,
    /// Request message(s) as JSON; an array sends one message per element.
    /// `@FILE` reads the JSON from a file; `@-` from stdin, where a
    /// streaming call sends each line as one message as it is typed.
    #[arg(long, short = 'd', alias = "data", group = "input")]
    json: Option<String>,
    /// Request message as hex digits.
    #[arg(long, group = "input")]
    hex: Option<String>,
    /// Request message from a file, as raw protobuf bytes (JSON: `-d @FILE`).
    #[arg(long, group = "input")]
    file: Option<PathBuf>,
    /// Call in the seed's legacy format (one connection per call).
    #[arg(long)]
    legacy: bool,
    /// Deadline of the call in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// PEM CA certificate(s) to trust for wss:// instead of the public roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Request metadata, `name: value` (repeatable): sent as the call's
    /// metadata, and as a header of the upgrade request (where the server's
    /// authentication hook sees credentials).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Print the response headers and trailers (to stderr).
    #[arg(long, short = 'v')]
    verbose: bool,
    /// .proto file(s) describing the method (repeatable), for JSON with a
    /// server's own services.
    #[arg(long = "proto")]
    protos: Vec<PathBuf>,
    /// Where imports of the --proto files are found (repeatable; default:
    /// each file's directory).
    #[arg(long = "import-path", short = 'I')]
    import_paths: Vec<PathBuf>,
    /// A compiled FileDescriptorSet (`protoc -o FILE --include_imports`)
    /// describing the method (repeatable).
    #[arg(long = "protoset")]
    protosets: Vec<PathBuf>,
}

/// The built-in schemas, plus those of `--protoset` and `--proto`.
fn schema_pool(a: &CallArgs) -> Result<DescriptorPool, String> {
    let mut pool = pool();
    for set in &a.protosets {
        let bytes = std::fs::read(set).map_err(|e| format!("{}: {e}", set.display()))?;
        pool.decode_file_descriptor_set(&bytes[..])
            .map_err(|e| format!("{}: {e}", set.display()))?;
    }
    if !a.protos.is_empty() {
        let bytes = compile_protos(&a.protos, &a.import_paths)?;
        pool.decode_file_descriptor_set(&bytes[..])
            .map_err(|e| format!("--proto: {e}"))?;
    }
    Ok(pool)
}

/// Runs the vendored protoc on `protos` and returns the descriptor set.
fn compile_protos(protos: &[PathBuf], imports: &[PathBuf]) -> Result<Vec<u8>, String> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!("zrpc-call-{}.protoset", std::process::id()));
    let mut cmd = std::process::Command::new(protoc);
    cmd.arg("--include_imports").arg("-o").arg(&out);
    let mut dirs: Vec<PathBuf> = imports.to_vec();
    if dirs.is_empty() {
        for p in protos {
            let dir = p.parent().map(PathBuf::from).unwrap_or_default();
            dirs.push(if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            });
        }
    }
    for dir in dirs {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(protos);
    let result = cmd.output().map_err(|e| format!("protoc: {e}"))?;
    if !result.status.success() {
        return Err(format!(
            "protoc: {}",
            String::from_utf8_lossy(&result.stderr).trim()
        ));
    }
    let bytes = std::fs::read(&out).map_err(|e| format!("protoc output: {e}"))?;
    let _ = std::fs::remove_file(&out);
    Ok(bytes)
}

/// Where `-d` takes its JSON from.
enum JsonInput {
    /// All of it, known before the call (text, a file, or stdin for a call
    /// that sends one message).
    Whole(String),
    /// stdin, one message per line as it comes (streaming calls).
    Lines,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(a) => serve(a),
        Command::Call(a) => call(a),
        Command::Demo => demo(),
        Command::List(a) => list(a),
        Command::Describe(a) => describe(a),
    }
}

/// Installs the Prometheus recorder: call durations as histograms with
/// buckets from 0.5 ms to an hour (a summary's quantiles of long streams
/// read 0 once its window passes), rendered by the metrics endpoint.
fn metrics_recorder() -> std::io::Result<metrics_exporter_prometheus::PrometheusHandle> {
    const BUCKETS: &[f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 300.0, 1800.0, 3600.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .map_err(std::io::Error::other)?
        .install_recorder()
        .map_err(std::io::Error::other)
}

/// The metrics endpoint: a zrpc server of its own on `addr` with no
/// methods, answering `GET /metrics` (Prometheus text) with the same
/// accept bounds as the RPC port: connections served concurrently, each
/// request head within 2 s and 16 KiB, 64 connections at once, 16 per
/// address. A slow or silent client cannot hold up a scrape.
async fn serve_metrics<R: Runtime>(
    rt: R,
    addr: &str,
    handle: metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<Server<R>> {
    use zrpc_async::Listener;
    let files = zrpc_async::StaticFiles::new().with_made(
        "/metrics",
        "text/plain; version=0.0.4",
        move || {
            handle.run_upkeep();
            Bytes::from(handle.render())
        },
    );
    let config = ServerConfig {
        static_files: Some(files),
        legacy: false,
        path: Some("/metrics".into()),
        handshake_timeout: Duration::from_secs(2),
        max_connections: 64,
        max_connections_per_ip: 16,
        ..ServerConfig::default()
    };
    let server = Server::with_config(zrpc_async::Router::new(), config, rt.clone());
    let listener = rt
        .bind(addr.to_owned())
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {addr}", lower_first(&e))))?;
    println!(
        "metrics (Prometheus text) at http://{}/metrics",
        listener.local_addr()?
    );
    let s = server.clone();
    rt.spawn(async move {
        let _ = s.serve(listener).await;
    });
    Ok(server)
}

/// `--call-log`.
#[derive(Clone, Copy, ValueEnum)]
enum CallLogLevel {
    Debug,
    Info,
}

/// Logs to stderr with `filter` (else `RUST_LOG`, else `info`).
fn init_logging(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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

async fn serve_on<R: Runtime>(
    rt: R,
    addr: String,
    config: ServerConfig,
    store: Arc<dyn Store>,
    echo_interval: Duration,
    call_log: CallLog,
    metrics: Option<(String, metrics_exporter_prometheus::PrometheusHandle)>,
) -> std::io::Result<()> {
    use zrpc_async::Listener;
    let metrics = match metrics {
        Some((addr, handle)) => Some(serve_metrics(rt.clone(), &addr, handle).await?),
        None => None,
    };
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let mut config = config;
    let health = config.health.get_or_insert_with(Health::new).clone();
    let router = zrpc_cli::router(rt.clone(), store, echo_interval).log_calls_at(call_log);
    let router = zrpc_proto::health::register(router, &health);
    let router = zrpc_proto::reflection::register(router, &[zrpc_cli::proto::DESCRIPTORS])
        .expect("built-in descriptors");
    let server = Server::with_config(router, config, rt.clone());
    let listener = rt
        .bind(addr.clone())
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {addr}", lower_first(&e))))?;
    let addr = listener.local_addr()?;
    let path = server.config().path.clone().unwrap_or_else(|| "/".into());
    println!(
        "zrpc serving echo, people.People and grpc.health.v1.Health on {scheme}://{addr}{path}"
    );
    let http = if scheme == "wss" { "https" } else { "http" };
    println!("health for load balancers: GET {http}://{addr}/healthz");
    if server.config().static_files.is_some() {
        println!("the people web app: open {http}://{addr}/ in a browser");
    }
    let stop = stop_signal();
    let stopped = async {
        stop.await;
        tracing::info!("shutting down: draining calls");
        server.shutdown().await;
        if let Some(m) = &metrics {
            m.shutdown().await;
        }
        Ok::<(), std::io::Error>(())
    };
    futures_lite::future::zip(server.serve(listener), stopped)
        .await
        .0
}

/// The server settings the flags ask for.
fn server_config(a: &ServeArgs) -> Result<ServerConfig, String> {
    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            Some(ServerTls::from_pem(&read(cert)?, &read(key)?).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    Ok(ServerConfig {
        core: Config {
            max_message_size: a.max_message_size,
            keepalive_interval: secs(a.keepalive_secs),
            idle_timeout: secs(a.idle_timeout_secs),
            ..Config::default()
        },
        legacy: !a.no_legacy,
        max_connections: a.max_connections,
        max_connections_per_ip: a.max_connections_per_ip,
        max_server_receive_buffer: a.max_server_receive_buffer,
        allowed_origins: a.allow_origins.clone(),
        allowed_hosts: a.allow_hosts.clone(),
        tls,
        static_files: a.web.then(zrpc_cli::web::files),
        path: a.path.clone(),
        drain_delay: Duration::from_millis(a.drain_delay_ms),
        drain_grace: Duration::from_millis(a.drain_grace_ms),
        ..ServerConfig::default()
    })
}

/// Raises the soft limit on open files to the hard limit, so the server can
/// hold the connections it is configured for; says when it cannot.
fn raise_fd_limit(want: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if (n as usize) < want + 64 => tracing::warn!(
            open_files = n,
            max_connections = want,
            "the open-file limit is below --max-connections: accepts will fail (and back off) before the connection limit is reached"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

fn serve(a: ServeArgs) -> ExitCode {
    init_logging(a.log.as_deref());
    let config = match server_config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit(config.max_connections);
    let metrics = match &a.metrics_addr {
        None => None,
        Some(addr) => match metrics_recorder() {
            Ok(handle) => Some((addr.clone(), handle)),
            Err(e) => {
                eprintln!("error: metrics on {addr}: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let store = match zrpc_cli::store::open(a.db.as_deref(), a.db_pool) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the database: {e}");
            return ExitCode::from(1);
        }
    };
    let interval = Duration::from_millis(a.echo_interval_ms);
    let call_log = match a.call_log {
        CallLogLevel::Debug => CallLog::Debug,
        CallLogLevel::Info => CallLog::Info,
    };
    let result = match a.runtime {
        RuntimeKind::Tokio => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(serve_on(
                zrpc_tokio::TokioRuntime,
                a.addr,
                config,
                store,
                interval,
                call_log,
                metrics,
            )),
        RuntimeKind::Smol => smol::block_on(serve_on(
            zrpc_smol::SmolRuntime,
            a.addr,
            config,
            store,
            interval,
            call_log,
            metrics,
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A `--path` value: it starts with `/`.
fn absolute_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must start with /"))
    }
}

/// An I/O error's text starting lower-case, as the tool's messages do
/// ("address already in use", not "Address already in use (os error 98)").
fn lower_first(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(zrpc_cli::proto::DESCRIPTORS).expect("built-in descriptors")
}

/// The schema of `package.Service/Method`, if the CLI knows it.
fn lookup(pool: &DescriptorPool, method: &str) -> Option<MethodDescriptor> {
    let (service, name) = method.split_once('/')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<(usize, char)> = s
        .chars()
        .filter(|c| !c.is_whitespace())
        .enumerate()
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("hex input has an odd number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let digit = |(i, c): (usize, char)| {
                c.to_digit(16)
                    .ok_or_else(|| format!("invalid hex digit {c:?} at position {i}"))
            };
            Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
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

/// `-H` values as call metadata (names lower-cased).
fn request_metadata(headers: &[String]) -> Result<Metadata, String> {
    let mut md = Metadata::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not `name: value`"))?;
        md = md
            .with(&name.trim().to_ascii_lowercase(), value.trim().to_owned())
            .map_err(|e| format!("header {h:?}: {e}"))?;
    }
    Ok(md)
}

/// Prints metadata to stderr, one `kind: name: value` line per entry.
fn print_metadata(kind: &str, md: &Metadata) {
    for (name, value) in md.iter() {
        eprintln!("{kind}: {name}: {}", String::from_utf8_lossy(value));
    }
}

/// Sends each stdin line as one JSON message while printing replies as they
/// arrive; half-closes at the end of stdin.
async fn stream_stdin(
    call: &mut zrpc_async::Call,
    input: &MessageDescriptor,
    out: Option<&MessageDescriptor>,
) -> Result<(), Status> {
    use futures_lite::FutureExt;
    use tokio::io::AsyncBufReadExt;
    enum Next {
        Line(std::io::Result<Option<String>>),
        Reply(Result<Option<Bytes>, Status>),
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut replies_open = true;
    loop {
        // Both futures may be dropped unfinished: a line read is
        // cancel-safe, and an unfinished receive loses nothing.
        let next = async { Next::Line(lines.next_line().await) };
        let next = if replies_open {
            next.or(async { Next::Reply(call.message().await) }).await
        } else {
            next.await
        };
        match next {
            Next::Line(Ok(Some(line))) if line.trim().is_empty() => {}
            Next::Line(Ok(Some(line))) => {
                let msg = json_messages(input, &line)
                    .map_err(|e| Status::new(Code::InvalidArgument, e))?;
                for m in msg {
                    call.send(m).await?;
                }
            }
            Next::Line(Ok(None)) => return call.close_send(),
            Next::Line(Err(e)) => {
                return Err(Status::new(Code::Cancelled, format!("stdin: {e}")));
            }
            Next::Reply(Ok(Some(reply))) => print_reply(out, &reply),
            // The server is done sending; keep sending until stdin ends.
            Next::Reply(Ok(None)) => replies_open = false,
            Next::Reply(Err(status)) => return Err(status),
        }
    }
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

/// The client settings of the shared flags: upgrade headers and the CA.
fn client_settings(headers: &[String], ca: Option<&PathBuf>) -> Result<ClientConfig, String> {
    let mut parsed = Vec::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} is not `name: value`"))?;
        parsed.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let tls = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(ClientTls::from_ca_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    Ok(ClientConfig {
        headers: parsed,
        tls,
        ..ClientConfig::default()
    })
}

/// The client settings `zrpc call`'s flags ask for.
fn client_config(a: &CallArgs) -> Result<ClientConfig, String> {
    let mut config = client_settings(&a.headers, a.ca.as_ref())?;
    // --timeout-ms bounds the connect too: a server that accepts TCP and
    // never answers does not hold the tool.
    if let Some(ms) = a.timeout_ms {
        config.connect_timeout = Duration::from_millis(ms);
    }
    Ok(config)
}

fn call(a: CallArgs) -> ExitCode {
    let (url, method) = (&a.url, &a.method);
    let mut pool = match schema_pool(&a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut schema = lookup(&pool, method);
    if schema.is_none()
        && a.json.is_some()
        && !a.legacy
        && let Some((service, _)) = method.split_once('/')
        && pool.get_service_by_name(service).is_none()
    {
        match reflect_schema(&a, service) {
            // The server's own reflection service knows it.
            Ok(Some(reflected)) => {
                pool = reflected;
                schema = lookup(&pool, method);
            }
            Ok(None) => {}
            // Not reachable: that is the error, not the missing schema.
            Err(status) => return status_exit(&status),
        }
    }
    if schema.is_none()
        && let Some(service) = method
            .split_once('/')
            .and_then(|(s, _)| pool.get_service_by_name(s))
    {
        // The service is known and has no such method: what the server
        // would answer, without asking it.
        let names: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        let status = Status::new(
            Code::Unimplemented,
            format!(
                "method {method} is not implemented ({} has {})",
                service.full_name(),
                names.join(", ")
            ),
        );
        eprintln!("status: {status}");
        return ExitCode::from(status.code() as u8);
    }
    let streams_requests = schema.as_ref().is_some_and(|m| m.is_client_streaming());
    let json_input = match a.json.as_deref() {
        Some("@-") if streams_requests => Some(Ok(JsonInput::Lines)),
        Some("@-") => Some(
            std::io::read_to_string(std::io::stdin())
                .map(JsonInput::Whole)
                .map_err(|e| format!("stdin: {e}")),
        ),
        Some(at) if at.starts_with('@') => Some(
            std::fs::read_to_string(&at[1..])
                .map(JsonInput::Whole)
                .map_err(|e| format!("{}: {e}", &at[1..])),
        ),
        Some(text) => Some(Ok(JsonInput::Whole(text.to_owned()))),
        None => None,
    };
    let live_stdin = matches!(json_input, Some(Ok(JsonInput::Lines)));
    let input = if let Some(json) = json_input {
        match (&schema, json) {
            (_, Err(e)) => Err(e),
            (Some(_), Ok(JsonInput::Lines)) => Ok(vec![]),
            (Some(m), Ok(JsonInput::Whole(text))) => json_messages(&m.input(), &text),
            (None, _) => Err(format!(
                "no schema known for {method}: give --proto FILE or --protoset FILE, or use --hex or --file"
            )),
        }
    } else if let Some(h) = &a.hex {
        hex_decode(h).map(|b| vec![Bytes::from(b)])
    } else if let Some(path) = &a.file {
        std::fs::read(path)
            .map(|b| vec![Bytes::from(b)])
            .map_err(|e| format!("{}: {e}", path.display()))
    } else {
        Ok(vec![Bytes::new()])
    };
    let config = match client_config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let messages = match input {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let metadata = match request_metadata(&a.headers) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let timeout = a.timeout_ms.map(Duration::from_millis);
    let legacy = a.legacy;
    let verbose = a.verbose;
    let input_desc = schema.as_ref().map(|m| m.input());
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
    let run = async {
        let mut client = None;
        let mut call = if legacy {
            let payload = messages.first().cloned().unwrap_or_default();
            zrpc_tokio::legacy_call(url, method, payload)
                .await
                .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?
        } else {
            let client = client.insert(
                zrpc_tokio::connect_with(url, config)
                    .await
                    .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?,
            );
            let opts = CallOptions {
                timeout,
                metadata,
                retry: None,
            };
            let mut call = client.call(method, kind, opts).await?;
            for m in &messages {
                call.send(m.clone()).await?;
            }
            if live_stdin && let Some(desc) = &input_desc {
                // Each line typed is a message, sent at once; replies print
                // as they come meanwhile; end of input half-closes.
                stream_stdin(&mut call, desc, out.as_ref()).await?;
            } else {
                call.close_send()?;
            }
            call
        };
        if verbose && !legacy {
            print_metadata("header", &call.headers().await);
        }
        while let Some(reply) = call.message().await? {
            print_reply(out.as_ref(), &reply);
        }
        if verbose && !legacy {
            print_metadata("trailer", &call.finish().await?);
        }
        if let Some(client) = &client {
            close_client(client).await;
        }
        Ok(())
    };
    let result: Result<(), Status> = rt.block_on(async {
        match timeout.filter(|_| legacy) {
            // The legacy format carries no deadline: the whole call (connect
            // included) is bounded here, so a server that says nothing
            // cannot hold the tool.
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                Err(Status::new(
                    Code::DeadlineExceeded,
                    "deadline exceeded (legacy call)",
                ))
            }),
            None => run.await,
        }
    });
    match result {
        Ok(()) => {
            eprintln!("status: OK");
            ExitCode::SUCCESS
        }
        Err(status) => status_exit(&status),
    }
}

/// The server's descriptors of `service`, from its reflection service
/// (`None` when it has none, or does not know the service); `Err` when the
/// server cannot be reached.
fn reflect_schema(a: &CallArgs, service: &str) -> Result<Option<DescriptorPool>, Status> {
    let Ok(config) = client_config(a) else {
        return Ok(None);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = zrpc_tokio::connect_with(&a.url, config)
            .await
            .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
        let limit = config_timeout(a);
        let pool = tokio::time::timeout(limit, reflect_pool(&client, service))
            .await
            .ok()
            .and_then(Result::ok);
        close_client(&client).await;
        Ok(pool)
    })
}

/// Closes a client's connection with the closing handshake (bounded), so
/// the server logs an ordinary close, not a reset.
async fn close_client(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
}

/// How long reflection may take for `zrpc call`: its --timeout-ms, else 10 s.
fn config_timeout(a: &CallArgs) -> Duration {
    Duration::from_millis(a.timeout_ms.unwrap_or(10_000))
}

/// Connects for reflection with the flags' settings.
fn reflect_config(a: &ReflectArgs) -> Result<ClientConfig, String> {
    let mut config = client_settings(&a.headers, a.ca.as_ref())?;
    config.connect_timeout = Duration::from_millis(a.timeout_ms);
    Ok(config)
}

/// Runs `f` with a client of `a.url`, bounded by `a.timeout_ms`; the exit
/// code is the status code.
fn with_reflection<F, Fut>(a: &ReflectArgs, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let config = match reflect_config(a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let limit = Duration::from_millis(a.timeout_ms);
    let result = rt.block_on(async {
        let client = zrpc_tokio::connect_with(&a.url, config)
            .await
            .map_err(|e| Status::new(Code::Unavailable, e.to_string()))?;
        let result = tokio::time::timeout(limit, f(client.clone()))
            .await
            .unwrap_or_else(|_| Err(Status::new(Code::DeadlineExceeded, "reflection timed out")));
        close_client(&client).await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(status) => status_exit(&status),
    }
}

fn list(a: ReflectArgs) -> ExitCode {
    with_reflection(&a, |client| async move {
        use zrpc_proto::reflection::{Request, Response, ask};
        match ask(&client, Request::ListServices(String::new())).await? {
            Response::ListServicesResponse(l) => {
                for s in l.service {
                    println!("{}", s.name);
                }
                Ok(())
            }
            other => zrpc_proto::reflection::files_of(other).map(|_| ()),
        }
    })
}

/// The files defining `symbol` on the server, in a pool with the built-ins.
async fn reflect_pool(client: &Client, symbol: &str) -> Result<DescriptorPool, Status> {
    use zrpc_proto::reflection::{Request, ask, files_of};
    let files = files_of(ask(client, Request::FileContainingSymbol(symbol.to_owned())).await?)?;
    let protos = files
        .iter()
        .map(|b| prost_reflect::prost_types::FileDescriptorProto::decode(&b[..]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::new(Code::Internal, format!("the server's descriptors: {e}")))?;
    let mut pool = DescriptorPool::new();
    // In any order: the pool resolves references among them.
    pool.add_file_descriptor_protos(protos)
        .map_err(|e| Status::new(Code::Internal, format!("the server's descriptors: {e}")))?;
    Ok(pool)
}

fn describe(a: DescribeArgs) -> ExitCode {
    let symbol = a.symbol.clone();
    with_reflection(&a.server, |client| async move {
        let pool = reflect_pool(&client, &symbol).await?;
        let text = describe_symbol(&pool, &symbol)
            .ok_or_else(|| Status::new(Code::NotFound, format!("symbol {symbol} not found")))?;
        print!("{text}");
        Ok(())
    })
}

/// `.proto`-like text for a service, method, message or enum.
fn describe_symbol(pool: &DescriptorPool, symbol: &str) -> Option<String> {
    let rpc = |m: &MethodDescriptor| {
        let s = |on: bool| if on { "stream " } else { "" };
        format!(
            "  rpc {}({}{}) returns ({}{});\n",
            m.name(),
            s(m.is_client_streaming()),
            m.input().full_name(),
            s(m.is_server_streaming()),
            m.output().full_name()
        )
    };
    if let Some(svc) = pool.get_service_by_name(symbol) {
        let mut out = format!("service {} {{\n", svc.full_name());
        for m in svc.methods() {
            out.push_str(&rpc(&m));
        }
        out.push_str("}\n");
        return Some(out);
    }
    if let Some((svc, method)) = symbol.rsplit_once('.')
        && let Some(m) = pool
            .get_service_by_name(svc)
            .and_then(|s| s.methods().find(|m| m.name() == method))
    {
        return Some(rpc(&m).trim_start().to_owned());
    }
    if let Some(msg) = pool.get_message_by_name(symbol) {
        let mut out = format!("message {} {{\n", msg.full_name());
        for f in msg.fields() {
            let label = if f.is_list() { "repeated " } else { "" };
            let kind = match f.kind() {
                prost_reflect::Kind::Message(m) => m.full_name().to_owned(),
                prost_reflect::Kind::Enum(e) => e.full_name().to_owned(),
                k => format!("{k:?}").to_lowercase(),
            };
            out.push_str(&format!("  {label}{kind} {} = {};\n", f.name(), f.number()));
        }
        out.push_str("}\n");
        return Some(out);
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        let mut out = format!("enum {} {{\n", e.full_name());
        for v in e.values() {
            out.push_str(&format!("  {} = {};\n", v.name(), v.number()));
        }
        out.push_str("}\n");
        return Some(out);
    }
    None
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
