//! `zrpc list` and `zrpc describe`: a server's services and their
//! `.proto` text, through its reflection service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::{client_settings, close_client, fail, status_exit, tokio_runtime};
use prost_reflect::{DescriptorPool, MethodDescriptor};
use zrpc_async::{Client, ClientConfig, Code, Status};
use zrpc_proto::Message;

#[derive(clap::Args)]
pub(crate) struct ReflectArgs {
    /// Server URL: ws://host:port/ or wss://host:port/.
    pub(crate) url: String,
    /// PEM CA certificate(s) to trust for wss:// instead of the public roots.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Upgrade-request header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    pub(crate) headers: Vec<String>,
    /// Bound on connecting and asking, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) timeout_ms: u64,
}

#[derive(clap::Args)]
pub(crate) struct DescribeArgs {
    #[command(flatten)]
    pub(crate) server: ReflectArgs,
    /// Fully qualified symbol: `pkg.Service`, `pkg.Service.Method`,
    /// `pkg.Message`.
    pub(crate) symbol: String,
}

/// Connects for reflection with the flags' settings.
pub(crate) fn reflect_config(a: &ReflectArgs) -> Result<ClientConfig, String> {
    let mut config = client_settings(&a.headers, a.ca.as_ref())?;
    config.connect_timeout = Duration::from_millis(a.timeout_ms);
    Ok(config)
}

/// Runs `f` with a client of `a.url`, bounded by `a.timeout_ms`; the exit
/// code is the status code.
pub(crate) fn with_reflection<F, Fut>(a: &ReflectArgs, f: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let config = match reflect_config(a) {
        Ok(c) => c,
        Err(e) => return fail(e, 2),
    };
    let rt = tokio_runtime(false);
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

pub(crate) fn list(a: ReflectArgs) -> ExitCode {
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
pub(crate) async fn reflect_pool(client: &Client, symbol: &str) -> Result<DescriptorPool, Status> {
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

pub(crate) fn describe(a: DescribeArgs) -> ExitCode {
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
pub(crate) fn describe_symbol(pool: &DescriptorPool, symbol: &str) -> Option<String> {
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
