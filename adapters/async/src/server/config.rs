//! [`ServerConfig`]: every bound of a server, with its default.

use super::*;

/// Server settings. Every bound has a default fit for a server reachable
/// from the internet; README's "Security" section lists them all.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Protocol limits for every connection. The server's default turns on
    /// keepalive (a PING after 30 s of silence, close 4000 when unanswered
    /// within 20 s) and the idle timeout (drain after 5 minutes without a
    /// call).
    pub core: Config,
    /// Serve clients that do not negotiate `zrpc.v1` in the seed's format.
    /// Default `true`.
    pub legacy: bool,
    /// Connections served at once; beyond it a connection gets HTTP 503
    /// before any upgrade. Default 10,000.
    pub max_connections: usize,
    /// Connections served at once from one IP address; beyond it HTTP 429.
    /// Default 256.
    pub max_connections_per_ip: usize,
    /// Time allowed to read the request head and finish the WebSocket
    /// handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Longest time one write may stay blocked on a peer that does not
    /// read; then the connection is dropped (its calls end `UNAVAILABLE`).
    /// Default 30 s.
    pub write_timeout: Duration,
    /// On shutdown, time in-flight calls get to finish. Default 10 s.
    pub drain_grace: Duration,
    /// Bytes read from the socket at a time, and so the read buffer every
    /// connection keeps, idle or not. Default 1 KiB: about 7.6 KB of server
    /// memory per idle connection in all (after its buffers are released,
    /// see `zrpc_core::Config::release_idle_after`). Larger messages are
    /// still read whole (in more reads); raise it for servers that mostly
    /// receive large messages.
    pub read_buffer_size: usize,
    /// Bound on received bytes held for handlers over all connections
    /// (unread messages and partial messages). When a received message takes
    /// the total past it, the call holding the most bytes on the connection
    /// holding the most ends with `RESOURCE_EXHAUSTED`, until the total is
    /// back under 90% of it. Default 256 MiB.
    pub max_server_receive_buffer: usize,
    /// Browser origins allowed to connect (`https://app.example`, or `*` for
    /// any). A request carrying an `Origin` header that is neither listed
    /// nor same-origin with its `Host` is refused with HTTP 403 before the
    /// upgrade, so a page on another site cannot call this server with its
    /// visitors' cookies or from inside their network. Requests without
    /// `Origin` (non-browser clients) are not concerned. Same-origin means
    /// the same scheme too (`https` pages for a TLS listener, or behind a
    /// proxy that sets `X-Forwarded-Proto: https`). Default: none listed
    /// (same-origin pages only).
    pub allowed_origins: Vec<String>,
    /// Host names (without port; `*` for any) under which a same-origin
    /// page may connect. IP addresses, `localhost` and `*.localhost` are
    /// always answered; a page under any other name is refused with HTTP
    /// 403 unless its origin is in `allowed_origins`. This stops DNS
    /// rebinding: a page on `http://attacker.example:PORT` whose name the
    /// attacker re-points at the server's address sends an `Origin` and a
    /// `Host` that agree, and would otherwise pass as same-origin. Requests
    /// without `Origin` are not concerned. Default: none (IP addresses and
    /// localhost only).
    pub allowed_hosts: Vec<String>,
    /// Serve `wss://`: every accepted connection does its TLS handshake
    /// (within `handshake_timeout`) before the HTTP upgrade. Default `None`
    /// (plain `ws://`, for a server behind a TLS-terminating proxy or on
    /// loopback).
    pub tls: Option<ServerTls>,
    /// Files answered to plain HTTP GET requests on the same port (a web
    /// app beside its endpoint); `None` (the default): such requests are
    /// refused like any failed upgrade.
    pub static_files: Option<StaticFiles>,
    /// What the server says about its health: plain HTTP `GET /healthz` on
    /// the RPC port answers 200 `SERVING` while the whole server (`""`) is
    /// serving and 503 `NOT_SERVING` otherwise (no Origin or authentication
    /// check: load balancers poll it), and shutdown marks it draining. Give
    /// the same handle to `zrpc_proto::health::register` for the
    /// `grpc.health.v1.Health` methods. Default `None`: `/healthz` answers
    /// 200 until shutdown begins.
    pub health: Option<Health>,
    /// The path WebSocket upgrades must ask for (`/rpc`, say); upgrades to
    /// any other path get HTTP 404. Default `None`: any path.
    pub path: Option<String>,
    /// On shutdown, how long the server keeps accepting and serving while
    /// `/healthz` (and the health service) already report `NOT_SERVING`, so
    /// a load balancer stops sending it new connections before it stops
    /// accepting them; then the drain begins. Default 0 (drain at once).
    pub drain_delay: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            core: Config {
                keepalive_interval: Some(Duration::from_secs(30)),
                idle_timeout: Some(Duration::from_secs(300)),
                ..Config::default()
            },
            legacy: true,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            drain_grace: Duration::from_secs(10),
            read_buffer_size: SERVER_READ_BUFFER,
            max_server_receive_buffer: 256 * 1024 * 1024,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            tls: None,
            static_files: None,
            health: None,
            path: None,
            drain_delay: Duration::ZERO,
        }
    }
}
