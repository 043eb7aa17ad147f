//! The seed's own client format, spoken by a Python client written from the
//! seed's wire description (scripts/seed_echo_client.py, with the
//! `websockets` package that scripts/setup-python.sh installs locally),
//! against the echo server: 10 echoes and a normal close, for a plain name
//! and for a dotted `service.method` name.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

mod common;

use zrpc_tokio::{Server, TokioRuntime};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn seed_client(url: &str, method: &str) -> (bool, String) {
    let root = root();
    let setup = Command::new("bash")
        .arg(root.join("scripts/setup-python.sh"))
        .status()
        .expect("bash");
    assert!(
        setup.success(),
        "installing the Python websockets package failed"
    );
    let out = Command::new("python3")
        .arg(root.join("scripts/seed_echo_client.py"))
        .args([url, method, "world"])
        .env("PYTHONPATH", root.join("target/pydeps"))
        .output()
        .expect("python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_seed_client_gets_ten_echoes_and_a_normal_close() {
    let server = Server::new(
        common::seed_echo(TokioRuntime, 10, Duration::from_millis(5)),
        TokioRuntime,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let s = server.clone();
    tokio::spawn(async move { zrpc_tokio::serve(&s, listener).await });
    for method in ["echo", "echo.say"] {
        let url = url.clone();
        let (ok, out) = tokio::task::spawn_blocking(move || seed_client(&url, method))
            .await
            .unwrap();
        assert!(ok, "seed client failed for {method}:\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.iter().filter(|l| **l == "world").count(), 10, "{out}");
        assert_eq!(lines.last(), Some(&"closed 1000"), "{out}");
    }
    assert_eq!(server.live_calls(), 0);
}
