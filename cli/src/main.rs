//! `zrpc`: serve, call and demo zrpc services. `zrpc --help` and
//! `zrpc <command> --help` list every option.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zrpc_async::{Client, ClientConfig, ClientTls, Status};

use cmd::call::CallArgs;
use cmd::reflect::{DescribeArgs, ReflectArgs};
use cmd::serve::ServeArgs;

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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(a) => cmd::serve::serve(a),
        Command::Call(a) => cmd::call::call(a),
        Command::Demo => cmd::demo::demo(),
        Command::List(a) => cmd::reflect::list(a),
        Command::Describe(a) => cmd::reflect::describe(a),
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

/// Closes a client's connection with the closing handshake (bounded), so
/// the server logs an ordinary close, not a reset.
async fn close_client(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
}

/// The one way a command fails before or beside a call: the message on
/// stderr, and the exit code (2: bad input; 1: could not run).
fn fail(message: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The tokio runtime a command runs on: multi-thread for calls and
/// serving, current-thread for one quick exchange.
fn tokio_runtime(multi: bool) -> tokio::runtime::Runtime {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().expect("tokio runtime")
}
