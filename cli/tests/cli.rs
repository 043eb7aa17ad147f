//! The real `zrpc` binary: `demo` exits 0 and prints what it created;
//! `call` against a running `serve` takes and prints JSON; a failing call
//! exits non-zero with the status on stderr; SIGTERM stops `serve` cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

const ZRPC: &str = env!("CARGO_BIN_EXE_zrpc");

/// Starts `zrpc serve --addr 127.0.0.1:0 ARGS`; the child, the rest of its
/// stdout, and the URL its first line names.
fn start_serve(args: &[&str], stderr: Stdio) -> (Child, BufReader<ChildStdout>, String) {
    let mut serve = Command::new(ZRPC)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(serve.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.contains("://127.0.0.1:"), "{first}");
    (serve, out, url)
}

/// SIGTERM to `serve`, which must drain and exit 0.
fn terminate(serve: &mut Child) {
    let term = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status:?}");
}

#[test]
fn demo_runs_every_call_kind_and_exits_zero() {
    let out = Command::new(ZRPC).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("created person #1 jon <jon@jon.com> label=person"),
        "{stdout}"
    );
    assert!(stdout.contains("imported 5 people"), "{stdout}");
    assert!(stdout.contains("jon works for Acme"), "{stdout}");
    assert!(stdout.contains("dispatch.create_person stored"), "{stdout}");
}

#[test]
fn call_against_serve_json_in_and_out_and_exit_codes() {
    let (mut serve, _out, url) = start_serve(
        &["--runtime", "smol", "--echo-interval-ms", "1"],
        Stdio::piped(),
    );
    assert!(url.starts_with("ws://"), "{url}");

    let call = |args: &[&str]| {
        Command::new(ZRPC)
            .arg("call")
            .arg(&url)
            .args(args)
            .output()
            .unwrap()
    };
    let ok = call(&[
        "people.People/CreatePerson",
        "--json",
        r#"{"name":"ann","email":"ann@example.org"}"#,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let person: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(person["name"], "ann");
    assert_eq!(person["label"], "person");
    assert!(person["id"].as_i64().unwrap() > 0);

    let list = call(&["people.People/ListPeople", "--json", "{}"]);
    assert!(list.status.success());
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 1);

    let bad = call(&["people.People/CreatePerson", "--json", r#"{"name":""}"#]);
    assert_eq!(
        bad.status.code(),
        Some(3),
        "INVALID_ARGUMENT is exit code 3"
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("INVALID_ARGUMENT: name: must not be empty")
    );

    let unknown = call(&["nope.Nope/Nope"]);
    assert_eq!(unknown.status.code(), Some(12));

    let raw = call(&["echo", "--hex", "6869"]);
    assert!(raw.status.success());
    assert_eq!(
        String::from_utf8_lossy(&raw.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["hi"; 10]
    );

    let legacy = call(&["echo", "--hex", "6869", "--legacy"]);
    assert!(legacy.status.success());
    assert_eq!(String::from_utf8_lossy(&legacy.stdout).lines().count(), 10);

    terminate(&mut serve);
    let mut log = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains(
            "method=\"people.People/CreatePerson\" status=INVALID_ARGUMENT status_message=\"name: must not be empty\""
        ),
        "{log}"
    );
    assert!(
        !log.contains("method=\"nope.Nope/Nope\""),
        "an unknown method is a DEBUG line (\"call refused\"), not an INFO call line"
    );
    assert!(log.contains("connection opened"), "{log}");
    assert!(log.contains("connection closed"), "{log}");
    assert!(log.contains("peer=127.0.0.1:"), "{log}");
}

#[test]
fn serve_logs_calls_at_the_chosen_level() {
    for (args, shown) in [
        (&["--call-log", "debug"][..], false),
        (&["--call-log", "debug", "--log", "debug"][..], true),
    ] {
        let (mut serve, _out, url) = start_serve(args, Stdio::piped());
        let call = Command::new(ZRPC)
            .args([
                "call",
                &url,
                "echo.Echo/Say",
                "--json",
                r#"{"message":"hi"}"#,
            ])
            .output()
            .unwrap();
        assert!(call.status.success());
        serve.kill().unwrap();
        serve.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut log).unwrap();
        assert_eq!(
            log.contains("method=\"echo.Echo/Say\" status=OK"),
            shown,
            "{args:?}: {log}"
        );
        assert!(log.contains("connection opened"), "{log}");
    }
}

#[test]
fn help_prints_help_and_bad_input_is_an_error_not_a_panic() {
    let help = Command::new(ZRPC)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--tls-cert", "--allow-origin", "--max-connections-per-ip"] {
        assert!(text.contains(flag), "{text}");
    }
    let hex = Command::new(ZRPC)
        .args(["call", "ws://127.0.0.1:9/", "echo", "--hex", "aéab"])
        .output()
        .unwrap();
    assert_eq!(hex.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&hex.stderr).contains("invalid hex digit 'é'"));
    let half = Command::new(ZRPC)
        .args(["serve", "--tls-cert", "cert.pem"])
        .output()
        .unwrap();
    assert_eq!(half.status.code(), Some(2), "--tls-cert needs --tls-key");
    let version = Command::new(ZRPC).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("zrpc "));
    for (args, flag) in [
        (
            &["call", "ws://127.0.0.1:9/", "echo", "--jsn", "{}"][..],
            "--jsn",
        ),
        (&["serve", "--adr", "127.0.0.1:0"][..], "--adr"),
    ] {
        let typo = Command::new(ZRPC).args(args).output().unwrap();
        assert_eq!(typo.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&typo.stderr).contains(flag));
    }
    let call_help = Command::new(ZRPC)
        .args(["call", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&call_help.stdout);
    for flag in [
        "--proto",
        "--protoset",
        "--import-path",
        "-d, --json",
        "-H, --header",
        "-v, --verbose",
    ] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    let serve_help = String::from_utf8_lossy(
        &Command::new(ZRPC)
            .args(["serve", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        serve_help.contains("[default: 127.0.0.1:8060]"),
        "{serve_help}"
    );
}

#[test]
fn serve_over_tls_and_call_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("zrpc-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (mut serve, _out, url) = start_serve(
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    assert!(url.starts_with("wss://"), "{url}");
    let url = url.replacen("127.0.0.1", "localhost", 1);
    let say = |extra: &[&str]| {
        Command::new(ZRPC)
            .args([
                "call",
                &url,
                "echo.Echo/Say",
                "--json",
                r#"{"message":"over tls"}"#,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = say(&["--ca", cert_path.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("over tls"));
    // Without the CA, the public roots do not vouch for it: UNAVAILABLE (14).
    let untrusted = say(&[]);
    assert_eq!(untrusted.status.code(), Some(14));
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The recipe most people run (README, "TLS"): `openssl req -x509` makes a
/// self-signed certificate marked as a CA, which `--ca` pins: the server
/// presenting exactly that certificate is trusted.
#[test]
fn a_self_signed_openssl_certificate_works_with_ca() {
    let dir = std::env::temp_dir().join(format!("zrpc-cli-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (mut serve, _out, url) = start_serve(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let out = Command::new(ZRPC)
        .args([
            "call",
            &url,
            "echo.Echo/Say",
            "-d",
            r#"{"message":"pinned"}"#,
        ])
        .args(["--ca", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pinned"));
    // Another self-signed certificate is not that one: refused.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_path = dir.join("other.pem");
    std::fs::write(&other_path, other.cert.pem()).unwrap();
    let out = Command::new(ZRPC)
        .args(["call", &url, "echo.Echo/Say", "-d", r#"{"message":"x"}"#])
        .args(["--ca", other_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(14),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = serve.kill();
    let _ = serve.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `zrpc serve --web` answers plain HTTP GETs with the built-in web app on
/// the RPC port (one origin for page and WebSocket); unknown paths are 404,
/// and zrpc calls on the same port still work. Without `--web` a plain GET
/// is answered 426 Upgrade Required, saying what the endpoint is.
#[test]
fn serve_answers_healthz_and_web_serves_the_app_beside_the_endpoint() {
    use std::io::{Read, Write};
    let get = |addr: &str, path: &str| {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut resp = String::new();
        tcp.read_to_string(&mut resp).unwrap();
        resp
    };
    for web in [true, false] {
        let args: &[&str] = if web { &["--web"] } else { &[] };
        let (mut serve, mut out, url) = start_serve(args, Stdio::null());
        let addr = url
            .trim_start_matches("ws://")
            .trim_end_matches('/')
            .to_owned();
        let page = get(&addr, "/");
        let mut second = String::new();
        out.read_line(&mut second).unwrap();
        assert!(
            second.contains(&format!("GET http://{addr}/healthz")),
            "{second}"
        );
        let listed = Command::new(ZRPC).args(["list", &url]).output().unwrap();
        assert!(listed.status.success(), "{listed:?}");
        assert_eq!(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .collect::<Vec<_>>(),
            [
                "echo.Echo",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "people.People"
            ]
        );
        let check = Command::new(ZRPC)
            .args(["call", &url, "grpc.health.v1.Health/Check", "--json", "{}"])
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
        let status: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
        assert_eq!(status["status"], "SERVING");
        let health = get(&addr, "/healthz");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("\r\n\r\nSERVING\n"), "{health}");
        if web {
            let mut third = String::new();
            out.read_line(&mut third).unwrap();
            assert!(
                third.contains(&format!("http://{addr}/ in a browser")),
                "{third}"
            );
            assert!(page.starts_with("HTTP/1.1 200"), "{page}");
            assert!(
                page.contains("text/html") && page.contains("/app.js"),
                "{page}"
            );
            let js = get(&addr, "/app.js?v=1");
            assert!(js.starts_with("HTTP/1.1 200") && js.contains("text/javascript"));
            assert!(get(&addr, "/nope").starts_with("HTTP/1.1 404"));
        } else {
            assert!(page.starts_with("HTTP/1.1 426"), "{page}");
            assert!(page.contains("zrpc endpoint"), "{page}");
        }
        let call = Command::new(ZRPC)
            .args([
                "call",
                &url,
                "echo.Echo/Say",
                "--json",
                r#"{"message":"hi"}"#,
            ])
            .output()
            .unwrap();
        assert!(call.status.success(), "{call:?}");
        serve.kill().unwrap();
        serve.wait().unwrap();
    }
}

/// Runs `zrpc ARGS` to its end, killing it if it runs past `limit` (so a
/// hang fails the test instead of stalling it); the output, and whether it
/// finished by itself.
fn run_bounded(args: &[&str], limit: std::time::Duration) -> (std::process::Output, bool) {
    let child = Command::new(ZRPC)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => (out.unwrap(), true),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            (rx.recv().unwrap().unwrap(), false)
        }
    }
}

#[test]
fn call_errors_say_what_went_wrong() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    // A server that accepts TCP and never answers: --timeout-ms bounds the
    // connect too.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", silent.local_addr().unwrap());
    let (out, finished) = run_bounded(
        &[
            "call",
            &url,
            "echo.Echo/Say",
            "--json",
            "{}",
            "--timeout-ms",
            "300",
        ],
        Duration::from_secs(60),
    );
    assert!(finished, "zrpc call hung on a silent server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "UNAVAILABLE: {stderr}");
    assert!(stderr.contains("timed out connecting"), "{stderr}");

    // A WebSocket server that is not zrpc (no subprotocol in its answer).
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", plain.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = plain.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if tcp.read(&mut byte).unwrap() == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .unwrap();
        let accept = zrpc_async::accept_key(key.as_bytes());
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        tcp.write_all(resp.as_bytes()).unwrap();
    });
    let (out, finished) = run_bounded(
        &["call", &url, "echo.Echo/Say", "--json", "{}"],
        Duration::from_secs(60),
    );
    server.join().unwrap();
    assert!(finished);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a zrpc server"), "{stderr}");

    // A method the schema's service does not have: UNIMPLEMENTED, even
    // with --json (nothing is sent).
    let (out, _) = run_bounded(
        &["call", &url, "echo.Echo/Nope", "--json", "{}"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "{stderr}");
    assert!(stderr.contains("UNIMPLEMENTED") && stderr.contains("echo.Echo has Say"));
}

/// A method whose schema the tool must ask the server for: when the server
/// cannot be reached, the connection error is the answer (exit 14), not
/// "no schema known". And `--legacy --timeout-ms` bounds a legacy call
/// against a server that accepts and says nothing.
#[test]
fn unreachable_servers_are_named_and_legacy_calls_are_bounded() {
    use std::net::TcpListener;
    use std::time::Duration;

    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", free.local_addr().unwrap());
    drop(free);
    let (out, finished) = run_bounded(
        &["call", &url, "people.People/CreatePerson", "-d", "{}"],
        Duration::from_secs(60),
    );
    assert!(finished);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "{stderr}");
    assert!(
        stderr.contains("UNAVAILABLE") && !stderr.contains("no schema"),
        "{stderr}"
    );

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", silent.local_addr().unwrap());
    let (out, finished) = run_bounded(
        &["call", "--legacy", "--timeout-ms", "300", &url, "echo"],
        Duration::from_secs(30),
    );
    assert!(finished, "a legacy call hung on a silent server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "DEADLINE_EXCEEDED: {stderr}");
}

/// `call`, `list` and `describe` close their connections with the closing
/// handshake: the server logs ordinary closes, never a reset.
#[test]
fn the_cli_closes_its_connections_cleanly() {
    let (mut serve, _out, url) = start_serve(&["--log", "info"], Stdio::piped());
    let mut log = BufReader::new(serve.stderr.take().unwrap());
    let runs: [&[&str]; 3] = [
        &[
            "call",
            &url,
            "people.People/CreatePerson",
            "-d",
            r#"{"name":"a"}"#,
        ],
        &["list", &url],
        &["describe", &url, "people.People"],
    ];
    for args in runs {
        let out = Command::new(ZRPC).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One connection each (the tool knows the people schema itself): read
    // the server's log until it has logged the three closes (within 30 s:
    // then the server is killed, its log ends, and the test fails).
    let pid = serve.id().to_string();
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_err()
        {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let mut text = String::new();
    let mut closes = 0;
    while closes < 3 {
        let mut line = String::new();
        if log.read_line(&mut line).unwrap() == 0 {
            break;
        }
        closes += usize::from(line.contains("INFO connection closed"));
        text.push_str(&line);
    }
    let _ = done.send(());
    let _ = serve.kill();
    serve.wait().unwrap();
    assert_eq!(closes, 3, "{text}");
    assert!(!text.contains("1002") && !text.contains("reset"), "{text}");
}

#[test]
fn serve_names_a_busy_address_and_serves_only_its_path() {
    use std::io::{Read, Write};
    use std::time::Duration;

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (out, finished) = run_bounded(&["serve", "--addr", &addr], Duration::from_secs(60));
    assert!(finished);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("address already in use: {addr}")),
        "{stderr}"
    );

    let (mut serve, _out, url) = start_serve(&["--path", "/rpc"], Stdio::null());
    assert!(url.ends_with("/rpc"), "{url}");
    let host = url.trim_start_matches("ws://").trim_end_matches("/rpc");
    let mut tcp = std::net::TcpStream::connect(host).unwrap();
    tcp.write_all(
        b"GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Protocol: zrpc.v1\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.contains("it is at /rpc"), "{resp}");
    let call = Command::new(ZRPC)
        .args([
            "call",
            &url,
            "echo.Echo/Say",
            "--json",
            r#"{"message":"hi"}"#,
        ])
        .output()
        .unwrap();
    assert!(call.status.success(), "{call:?}");
    assert!(
        Command::new(ZRPC)
            .args(["serve", "--path", "rpc"])
            .output()
            .unwrap()
            .status
            .code()
            == Some(2),
        "a path without / is a usage error"
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn serve_exports_metrics_that_count_real_calls() {
    use std::io::{Read, Write};

    let mut serve = Command::new(ZRPC)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(serve.stdout.take().unwrap());
    let (mut metrics, mut url) = (None, None);
    for _ in 0..4 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let last = line.trim().rsplit(' ').next().unwrap_or("").to_owned();
        if line.starts_with("metrics") {
            metrics = Some(last);
        } else if line.starts_with("zrpc serving") {
            url = Some(last);
        }
        if metrics.is_some() && url.is_some() {
            break;
        }
    }
    let (metrics, url) = (metrics.unwrap(), url.unwrap());
    let call = |method: &str, args: &[&str]| {
        let out = Command::new(ZRPC)
            .args(["call", &url, method])
            .args(args)
            .output()
            .unwrap();
        out.status.code()
    };
    for _ in 0..3 {
        assert_eq!(
            call("echo.Echo/Say", &["--json", r#"{"message":"hi"}"#]),
            Some(0)
        );
    }
    assert_eq!(
        call("people.People/CreatePerson", &["--json", r#"{"name":""}"#]),
        Some(3)
    );
    assert_eq!(call("nope.Nope/X", &["--hex", "00"]), Some(12));

    let host = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    // Clients that send nothing, or trickle their request, do not hold up
    // a scrape: connections are served concurrently.
    let silent: Vec<std::net::TcpStream> = (0..12)
        .map(|_| std::net::TcpStream::connect(host).unwrap())
        .collect();
    let mut trickle = std::net::TcpStream::connect(host).unwrap();
    trickle.write_all(b"GET /met").unwrap();
    let mut tcp = std::net::TcpStream::connect(host).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value(r#"zrpc_server_calls_finished_total{method="echo.Echo/Say",code="OK"}"#),
        3.0
    );
    assert_eq!(
        value(r#"zrpc_server_calls_started_total{method="echo.Echo/Say"}"#),
        3.0
    );
    assert_eq!(
        value(
            r#"zrpc_server_calls_finished_total{method="people.People/CreatePerson",code="INVALID_ARGUMENT"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"zrpc_server_calls_finished_total{method="(unknown)",code="UNIMPLEMENTED"}"#),
        1.0
    );
    assert_eq!(value("zrpc_connections_opened_total"), 5.0);
    assert_eq!(value("zrpc_server_calls_in_flight"), 0.0);
    assert!(value("zrpc_received_bytes_total") > 0.0);
    assert!(value("zrpc_sent_bytes_total") > 0.0);
    // Durations are histograms with buckets (a summary's quantiles of long
    // streams read 0 once its window passed).
    assert!(
        text.contains(
            r#"zrpc_server_call_duration_seconds_bucket{method="echo.Echo/Say",le="3600"} 3"#
        ),
        "{text}"
    );
    drop((silent, trickle));
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn call_takes_json_from_files_and_stdin_metadata_and_prints_headers() {
    use std::io::Write;

    let (mut serve, _out, url) = start_serve(&[], Stdio::null());
    // -d @-: a bidi call sends each stdin line as it comes.
    let mut chat = Command::new(ZRPC)
        .args(["call", &url, "echo.Echo/Chat", "-d", "@-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    stdin
        .write_all(b"{\"message\":\"one\"}\n\n{\"message\":\"two\"}\n")
        .unwrap();
    drop(stdin); // end of input: half-close
    let out = chat.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let replies: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["message"], "ONE");
    assert_eq!(replies[1]["message"], "TWO");

    // -d @FILE, -H as call metadata, -v prints the response headers.
    let dir = std::env::temp_dir().join(format!("zrpc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("req.json");
    std::fs::write(&file, r#"{"message":"from a file"}"#).unwrap();
    let at = format!("@{}", file.display());
    let out = Command::new(ZRPC)
        .args(["call", &url, "echo.Echo/Reflect", "-d", &at])
        .args(["-H", "X-User: ann", "-v"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["message"], "from a file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("header: x-user: ann"), "{stderr}");

    // -d @- for a unary call: the whole of stdin is the request.
    let mut say = Command::new(ZRPC)
        .args(["call", &url, "echo.Echo/Say", "-d", "@-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    say.stdin
        .take()
        .unwrap()
        .write_all(b"{\"message\":\n \"multi-line\"}")
        .unwrap();
    let out = say.wait_with_output().unwrap();
    assert!(out.status.success());
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["message"], "multi-line");
    let _ = std::fs::remove_dir_all(&dir);
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_any_server_with_its_proto_or_protoset() {
    use zrpc_tokio::{Bytes, Router, Server, Status, TokioRuntime};

    // A server of its own that the tool has no schema for: SayHello echoes
    // the request's bytes (HelloRequest.name and HelloReply.message are
    // both field 1).
    let router = Router::new().unary("hello.Greeter/SayHello", |_ctx, req: Bytes| async move {
        Ok::<_, Status>(req)
    });
    let server = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { zrpc_tokio::serve(&server, listener).await }
    });
    let proto = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/own-service/protos/hello.proto"
    );
    let json = r#"{"name":"ann"}"#;

    let call = |extra: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(ZRPC)
                .args(["call", &url, "hello.Greeter/SayHello", "--json", json])
                .args(extra)
                .output()
                .unwrap()
        })
    };
    // Without a schema, JSON cannot be sent.
    let none = call(vec![]).await.unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("--proto FILE"));

    // --proto: compiled with the vendored protoc.
    let with_proto = call(vec!["--proto".into(), proto.into()]).await.unwrap();
    assert!(with_proto.status.success(), "{with_proto:?}");
    let reply: serde_json::Value = serde_json::from_slice(&with_proto.stdout).unwrap();
    assert_eq!(reply["message"], "ann");

    // --protoset: a descriptor set compiled beforehand.
    let dir = std::env::temp_dir().join(format!("zrpc-protoset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = dir.join("hello.protoset");
    let protoc = protoc_bin_vendored::protoc_bin_path().unwrap();
    let compiled = Command::new(protoc)
        .args(["--include_imports", "-o"])
        .arg(&set)
        .arg("-I")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/own-service/protos"
        ))
        .arg(proto)
        .status()
        .unwrap();
    assert!(compiled.success());
    let with_set = call(vec!["--protoset".into(), set.display().to_string()])
        .await
        .unwrap();
    assert!(with_set.status.success(), "{with_set:?}");
    let reply: serde_json::Value = serde_json::from_slice(&with_set.stdout).unwrap();
    assert_eq!(reply["message"], "ann");

    // The same server with reflection: list, describe and call with no
    // schema given.
    let descriptors = std::fs::read(&set).unwrap();
    let router = Router::new().unary("hello.Greeter/SayHello", |_ctx, req: Bytes| async move {
        Ok::<_, Status>(req)
    });
    let router = zrpc_proto::reflection::register(router, &[&descriptors]).unwrap();
    let reflecting = Server::new(router, TokioRuntime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refl_url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn({
        let server = reflecting.clone();
        async move { zrpc_tokio::serve(&server, listener).await }
    });
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || Command::new(ZRPC).args(args).output().unwrap())
    };
    let listed = run(vec!["list".into(), refl_url.clone()]).await.unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let names = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["grpc.reflection.v1.ServerReflection", "hello.Greeter"]
    );
    let described = run(vec![
        "describe".into(),
        refl_url.clone(),
        "hello.Greeter".into(),
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&described.stdout).to_string();
    assert!(described.status.success(), "{described:?}");
    assert!(
        text.contains("rpc SayHello(hello.HelloRequest) returns (hello.HelloReply);")
            && text.contains("rpc Check(stream hello.HelloRequest) returns (stream hello.Status);"),
        "{text}"
    );
    let message = run(vec![
        "describe".into(),
        refl_url.clone(),
        "hello.HelloRequest".into(),
    ])
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&message.stdout).to_string();
    assert!(
        text.contains("string name = 1;") && text.contains("hello.Option option = 2;"),
        "{text}"
    );
    let unknown = run(vec![
        "describe".into(),
        refl_url.clone(),
        "nope.Nope".into(),
    ])
    .await
    .unwrap();
    assert_eq!(unknown.status.code(), Some(5), "NOT_FOUND");
    let reflected = run(vec![
        "call".into(),
        refl_url.clone(),
        "hello.Greeter/SayHello".into(),
        "--json".into(),
        json.into(),
    ])
    .await
    .unwrap();
    assert!(reflected.status.success(), "{reflected:?}");
    let reply: serde_json::Value = serde_json::from_slice(&reflected.stdout).unwrap();
    assert_eq!(reply["message"], "ann");
    reflecting.shutdown().await;

    // A method the given proto's service lacks: UNIMPLEMENTED at once.
    let missing = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            Command::new(ZRPC)
                .args([
                    "call",
                    &url,
                    "hello.Greeter/Nope",
                    "--json",
                    "{}",
                    "--proto",
                    proto,
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(missing.status.code(), Some(12));
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

/// A stand-in OpenTelemetry collector: answers every OTLP/HTTP export 200
/// and hands over (path, body) of each.
fn fake_collector() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                // Requests on this connection, one after the other.
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length.min(16 << 20)];
                    reader.read_exact(&mut body).unwrap();
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    )
                    .unwrap();
                    if tx.send((path, body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn serve_exports_call_spans_over_otlp_continuing_the_callers_trace() {
    let (collector, exports) = fake_collector();
    let (mut serve, _out, url) =
        start_serve(&["--otlp", &format!("http://{collector}")], Stdio::null());
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let call = Command::new(ZRPC)
        .args([
            "call",
            &url,
            "echo.Echo/Say",
            "--json",
            r#"{"message":"hi"}"#,
        ])
        .args([
            "-H",
            &format!("traceparent: 00-{trace_hex}-00f067aa0ba902b7-01"),
        ])
        .output()
        .unwrap();
    assert!(call.status.success(), "{call:?}");
    // SIGTERM: serve drains, then sends the spans still batched.
    terminate(&mut serve);
    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut bodies = Vec::new();
    while let Ok((path, body)) = exports.recv_timeout(std::time::Duration::from_secs(30)) {
        assert_eq!(path, "/v1/traces");
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        if has(b"echo.Echo/Say") && has(&trace_id) {
            return;
        }
        bodies.push(body.len());
    }
    panic!("no export held the call's span in the caller's trace (bodies: {bodies:?})");
}
