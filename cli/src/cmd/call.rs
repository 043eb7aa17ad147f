//! `zrpc call`: one call of any kind, JSON in and out for methods whose
//! schema is known (built in, `--proto`/`--protoset`, or the server's
//! reflection), raw bytes otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cmd::reflect::reflect_pool;
use crate::{client_settings, close_client, fail, status_exit, tokio_runtime};
use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use zrpc_async::{CallKind, CallOptions, ClientConfig, Code, Metadata, Status};
use zrpc_proto::Message;

#[derive(clap::Args)]
pub(crate) struct CallArgs {
    /// Server URL: ws://host:port/ or wss://host:port/.
    pub(crate) url: String,
    /// Method, as package.Service/Method (or a legacy name with --legacy).
    pub(crate) method: String,
    /// Request message(s) as JSON; an array sends one message per element.
    /// `@FILE` reads the JSON from a file; `@-` from stdin, where a
    /// streaming call sends each line as one message as it is typed.
    #[arg(long, short = 'd', alias = "data", group = "input")]
    pub(crate) json: Option<String>,
    /// Request message as hex digits.
    #[arg(long, group = "input")]
    pub(crate) hex: Option<String>,
    /// Request message from a file, as raw protobuf bytes (JSON: `-d @FILE`).
    #[arg(long, group = "input")]
    pub(crate) file: Option<PathBuf>,
    /// Call in the seed's legacy format (one connection per call).
    #[arg(long)]
    pub(crate) legacy: bool,
    /// Deadline of the call in milliseconds.
    #[arg(long)]
    pub(crate) timeout_ms: Option<u64>,
    /// PEM CA certificate(s) to trust for wss:// instead of the public roots.
    #[arg(long)]
    pub(crate) ca: Option<PathBuf>,
    /// Request metadata, `name: value` (repeatable): sent as the call's
    /// metadata, and as a header of the upgrade request (where the server's
    /// authentication hook sees credentials).
    #[arg(long = "header", short = 'H')]
    pub(crate) headers: Vec<String>,
    /// Print the response headers and trailers (to stderr).
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
    /// .proto file(s) describing the method (repeatable), for JSON with a
    /// server's own services.
    #[arg(long = "proto")]
    pub(crate) protos: Vec<PathBuf>,
    /// Where imports of the --proto files are found (repeatable; default:
    /// each file's directory).
    #[arg(long = "import-path", short = 'I')]
    pub(crate) import_paths: Vec<PathBuf>,
    /// A compiled FileDescriptorSet (`protoc -o FILE --include_imports`)
    /// describing the method (repeatable).
    #[arg(long = "protoset")]
    pub(crate) protosets: Vec<PathBuf>,
}

/// The built-in schemas, plus those of `--protoset` and `--proto`.
pub(crate) fn schema_pool(a: &CallArgs) -> Result<DescriptorPool, String> {
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
pub(crate) fn compile_protos(protos: &[PathBuf], imports: &[PathBuf]) -> Result<Vec<u8>, String> {
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
pub(crate) enum JsonInput {
    /// All of it, known before the call (text, a file, or stdin for a call
    /// that sends one message).
    Whole(String),
    /// stdin, one message per line as it comes (streaming calls).
    Lines,
}

pub(crate) fn pool() -> DescriptorPool {
    DescriptorPool::decode(zrpc_cli::proto::DESCRIPTORS).expect("built-in descriptors")
}

/// The schema of `package.Service/Method`, if the CLI knows it.
pub(crate) fn lookup(pool: &DescriptorPool, method: &str) -> Option<MethodDescriptor> {
    let (service, name) = method.split_once('/')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)
}

pub(crate) fn hex_decode(s: &str) -> Result<Vec<u8>, String> {
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

pub(crate) fn json_messages(desc: &MessageDescriptor, json: &str) -> Result<Vec<Bytes>, String> {
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
pub(crate) fn request_metadata(headers: &[String]) -> Result<Metadata, String> {
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
pub(crate) fn print_metadata(kind: &str, md: &Metadata) {
    for (name, value) in md.iter() {
        eprintln!("{kind}: {name}: {}", String::from_utf8_lossy(value));
    }
}

/// Sends each stdin line as one JSON message while printing replies as they
/// arrive; half-closes at the end of stdin.
pub(crate) async fn stream_stdin(
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

pub(crate) fn print_reply(desc: Option<&MessageDescriptor>, b: &Bytes) {
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

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The client settings `zrpc call`'s flags ask for.
pub(crate) fn client_config(a: &CallArgs) -> Result<ClientConfig, String> {
    let mut config = client_settings(&a.headers, a.ca.as_ref())?;
    // --timeout-ms bounds the connect too: a server that accepts TCP and
    // never answers does not hold the tool.
    if let Some(ms) = a.timeout_ms {
        config.connect_timeout = Duration::from_millis(ms);
    }
    Ok(config)
}

pub(crate) fn call(a: CallArgs) -> ExitCode {
    let (url, method) = (&a.url, &a.method);
    let mut pool = match schema_pool(&a) {
        Ok(p) => p,
        Err(e) => return fail(e, 2),
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
        return status_exit(&status);
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
        Err(e) => return fail(e, 2),
    };
    let messages = match input {
        Ok(m) => m,
        Err(e) => return fail(e, 2),
    };
    let metadata = match request_metadata(&a.headers) {
        Ok(m) => m,
        Err(e) => return fail(e, 2),
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
    let rt = tokio_runtime(true);
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
pub(crate) fn reflect_schema(
    a: &CallArgs,
    service: &str,
) -> Result<Option<DescriptorPool>, Status> {
    let Ok(config) = client_config(a) else {
        return Ok(None);
    };
    let rt = tokio_runtime(false);
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

/// How long reflection may take for `zrpc call`: its --timeout-ms, else 10 s.
pub(crate) fn config_timeout(a: &CallArgs) -> Duration {
    Duration::from_millis(a.timeout_ms.unwrap_or(10_000))
}
