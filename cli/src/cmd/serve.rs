//! `zrpc serve`: the echo and people services, health, reflection and
//! the optional metrics endpoint, on tokio or smol, until a stop signal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::{fail, lower_first, tokio_runtime};
use bytes::Bytes;
use clap::ValueEnum;
use zrpc_async::{CallLog, Config, Health, Runtime, Server, ServerConfig, ServerTls};
use zrpc_cli::store::Store;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RuntimeKind {
    Tokio,
    Smol,
}

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8060")]
    pub(crate) addr: String,
    /// Serve zrpc only at this path (`/rpc`); upgrades elsewhere get HTTP
    /// 404. Default: any path.
    #[arg(long, value_parser = absolute_path)]
    pub(crate) path: Option<String>,
    /// Serve Prometheus metrics (calls by method and code, in flight,
    /// durations, bytes, connections, stalls, shed calls) over HTTP at
    /// this address (`/metrics`, any path answers). Default: off.
    #[arg(long)]
    pub(crate) metrics_addr: Option<String>,
    /// On Ctrl-C or SIGTERM, how long to keep serving while /healthz and
    /// the health service already say NOT_SERVING (so a load balancer moves
    /// new connections elsewhere), before draining.
    #[arg(long, default_value_t = 0)]
    pub(crate) drain_delay_ms: u64,
    /// While draining, how long in-flight calls get to finish before the
    /// remaining connections are closed (1001).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) drain_grace_ms: u64,
    /// What to log, as a tracing filter (`info`, `debug`,
    /// `zrpc_async=debug,info`, ...). Default: `RUST_LOG`, else `info`.
    #[arg(long)]
    pub(crate) log: Option<String>,
    /// Export a trace span for every call to this OpenTelemetry collector,
    /// over OTLP/HTTP (`http://127.0.0.1:4318`: spans go to its
    /// `/v1/traces`), and continue the traces callers send in W3C
    /// `traceparent` headers. Default: off.
    #[arg(long, value_name = "URL")]
    pub(crate) otlp: Option<String>,
    /// The level of each call's log line (method, code, message, duration,
    /// peer; target `zrpc_async::router`).
    #[arg(long, value_enum, default_value = "info")]
    pub(crate) call_log: CallLogLevel,
    /// Where the people live: a SQLite file (created if missing), or a
    /// shared PostgreSQL database as postgres://user:password@host:port/db
    /// (the schema is created or migrated at start); in memory without it.
    #[arg(long)]
    pub(crate) db: Option<String>,
    /// Connections to a PostgreSQL --db at most (store calls beyond them
    /// wait up to 5 s, then fail with UNAVAILABLE).
    #[arg(long, default_value_t = 8)]
    pub(crate) db_pool: u32,
    /// Async runtime to serve on.
    #[arg(long, value_enum, default_value = "tokio")]
    pub(crate) runtime: RuntimeKind,
    /// Interval between echo.Echo/Subscribe messages, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub(crate) echo_interval_ms: u64,
    /// PEM certificate chain: serve wss:// (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// A browser origin allowed to connect (repeat for more; `*` for any).
    /// Pages from other origins get HTTP 403; same-origin pages (see
    /// --allow-host) and non-browser clients are always allowed.
    #[arg(long = "allow-origin")]
    pub(crate) allow_origins: Vec<String>,
    /// A host name under which same-origin pages may connect (repeat for
    /// more; `*` for any). IP addresses and localhost are always allowed;
    /// pages under other names get HTTP 403 (DNS rebinding).
    #[arg(long = "allow-host")]
    pub(crate) allow_hosts: Vec<String>,
    /// Connections served at once (HTTP 503 beyond).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Connections served at once from one IP address (HTTP 429 beyond).
    #[arg(long, default_value_t = 256)]
    pub(crate) max_connections_per_ip: usize,
    /// Drain a connection after this many seconds without a call (0: never).
    #[arg(long, default_value_t = 300)]
    pub(crate) idle_timeout_secs: u64,
    /// PING a silent connection after this many seconds; close it when the
    /// PING is not answered within 20 s (0: no keepalive).
    #[arg(long, default_value_t = 30)]
    pub(crate) keepalive_secs: u64,
    /// Compress (gzip) each WebSocket message of at least this many bytes
    /// to clients that accept it, when that saves a tenth of it or more
    /// (0: never). Clients always accept compressed messages.
    #[arg(long, default_value_t = 1024)]
    pub(crate) compress_min_size: u32,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = zrpc_core::DEFAULT_MAX_MESSAGE_SIZE)]
    pub(crate) max_message_size: u32,
    /// Received bytes held for handlers over all connections; the largest
    /// holder is shed beyond it.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub(crate) max_server_receive_buffer: usize,
    /// Do not serve clients in the seed's legacy format.
    #[arg(long)]
    pub(crate) no_legacy: bool,
    /// Also serve the people web app (built into the binary) to browsers at
    /// http://ADDR/: every call kind from a page, with the TypeScript client.
    #[arg(long)]
    pub(crate) web: bool,
    /// Also serve gRPC's interop test service, `grpc.testing.TestService`
    /// (the server side of gRPC's interop cases, for any gRPC, gRPC-Web,
    /// Connect or zrpc client).
    #[arg(long)]
    pub(crate) interop: bool,
}

/// What `serve_on` serves, besides the server's own configuration.
pub(crate) struct Served {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) echo_interval: Duration,
    pub(crate) call_log: CallLog,
    pub(crate) interop: bool,
    /// Continue callers' traces (`--otlp`).
    pub(crate) trace_context: bool,
}

/// Installs the Prometheus recorder: call durations as histograms with
/// buckets from 0.5 ms to an hour (a summary's quantiles of long streams
/// read 0 once its window passes), rendered by the metrics endpoint.
pub(crate) fn metrics_recorder() -> std::io::Result<metrics_exporter_prometheus::PrometheusHandle> {
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
pub(crate) async fn serve_metrics<R: Runtime>(
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
pub(crate) enum CallLogLevel {
    Debug,
    Info,
}

/// Logs to stderr with `filter` (else `RUST_LOG`, else `info`) and, given
/// a tracer provider, exports call spans through it whatever the filter.
pub(crate) fn init_tracing(
    filter: Option<&str>,
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) {
    use tracing_subscriber::prelude::*;
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let log = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(log)
        .with(provider.map(zrpc_otel::layer))
        .init();
}

/// Resolves once Ctrl-C or SIGTERM arrives (works under either runtime).
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> {
    let (tx, rx) = smol::channel::bounded::<()>(1);
    let _ = ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    });
    async move {
        let _ = rx.recv().await;
    }
}

pub(crate) async fn serve_on<R: Runtime>(
    rt: R,
    addr: String,
    config: ServerConfig,
    served: Served,
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
    let router = zrpc_cli::router(rt.clone(), served.store, served.echo_interval);
    let served_interop = served.interop;
    let router = if served.interop {
        zrpc_cli::proto::grpc_testing::test_service_server::register(
            router,
            Arc::new(zrpc_cli::interop_service::InteropService::new(rt.clone())),
        )
    } else {
        router
    };
    let router = router.log_calls_at(served.call_log);
    let router = if served.trace_context {
        router.interceptor(zrpc_otel::TraceContext)
    } else {
        router
    };
    let router = zrpc_proto::health::register(router, &health);
    let mut descriptors = vec![zrpc_cli::proto::DESCRIPTORS];
    if served_interop {
        descriptors.push(zrpc_cli::proto::INTEROP_DESCRIPTORS);
    }
    let mut router =
        zrpc_proto::reflection::register(router, &descriptors).expect("built-in descriptors");
    // JSON for Connect, gRPC-Web and gRPC clients that send it.
    for set in descriptors {
        router = router.descriptors(set).expect("built-in descriptors");
    }
    let server = Server::with_config(router, config, rt.clone());
    let listener = rt
        .bind(addr.clone())
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {addr}", lower_first(&e))))?;
    let addr = listener.local_addr()?;
    let path = server.config().path.clone().unwrap_or_else(|| "/".into());
    let interop = if served_interop {
        ", grpc.testing.TestService"
    } else {
        ""
    };
    println!(
        "zrpc serving echo, people.People{interop} and grpc.health.v1.Health on {scheme}://{addr}{path}"
    );
    let http = if scheme == "wss" { "https" } else { "http" };
    println!("health for load balancers: GET {http}://{addr}/healthz");
    if server.config().static_files.is_some() {
        println!("the people web app: open {http}://{addr}/ in a browser");
    }
    println!(
        "gRPC (HTTP/2), gRPC-Web and Connect on the same port: {http}://{addr}/<package.Service>/<Method>"
    );
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
pub(crate) fn server_config(a: &ServeArgs) -> Result<ServerConfig, String> {
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
            compress_min_size: a.compress_min_size,
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
pub(crate) fn raise_fd_limit(want: usize) {
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

pub(crate) fn serve(a: ServeArgs) -> ExitCode {
    let provider = match a.otlp.as_deref().map(|url| {
        zrpc_otel::otlp::tracer_provider(url, "zrpc").map_err(|e| format!("--otlp {url}: {e}"))
    }) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return fail(e, 2),
    };
    init_tracing(a.log.as_deref(), provider.as_ref());
    let code = serve_with(a);
    if let Some(p) = provider {
        // Sends the spans still in the batch.
        if let Err(e) = p.shutdown() {
            tracing::warn!("OTLP export at exit: {e}");
        }
    }
    code
}

fn serve_with(a: ServeArgs) -> ExitCode {
    let config = match server_config(&a) {
        Ok(c) => c,
        Err(e) => return fail(e, 2),
    };
    raise_fd_limit(config.max_connections);
    let metrics = match &a.metrics_addr {
        None => None,
        Some(addr) => match metrics_recorder() {
            Ok(handle) => Some((addr.clone(), handle)),
            Err(e) => return fail(format_args!("metrics on {addr}: {e}"), 1),
        },
    };
    let store = match zrpc_cli::store::open(a.db.as_deref(), a.db_pool) {
        Ok(s) => s,
        Err(e) => return fail(format_args!("cannot open the database: {e}"), 1),
    };
    let served = Served {
        store,
        echo_interval: Duration::from_millis(a.echo_interval_ms),
        call_log: match a.call_log {
            CallLogLevel::Debug => CallLog::Debug,
            CallLogLevel::Info => CallLog::Info,
        },
        interop: a.interop,
        trace_context: a.otlp.is_some(),
    };
    let result = match a.runtime {
        RuntimeKind::Tokio => tokio_runtime(true).block_on(serve_on(
            zrpc_tokio::TokioRuntime,
            a.addr,
            config,
            served,
            metrics,
        )),
        RuntimeKind::Smol => smol::block_on(serve_on(
            zrpc_smol::SmolRuntime,
            a.addr,
            config,
            served,
            metrics,
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}

/// A `--path` value: it starts with `/`.
pub(crate) fn absolute_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must start with /"))
    }
}
