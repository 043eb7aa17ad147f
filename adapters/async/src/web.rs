//! Plain HTTP GET on the RPC port: files held in memory (a web app served
//! beside the endpoint it calls, so the page and its WebSocket share one
//! origin). Requests that are not WebSocket upgrades are answered from
//! here and the connection is closed; nothing else of zrpc runs for them.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::{AsyncWrite, AsyncWriteExt};

/// Files served to plain HTTP GET requests, by path (see
/// [`ServerConfig::static_files`](crate::ServerConfig::static_files)).
///
/// ```
/// use zrpc_async::StaticFiles;
/// let files = StaticFiles::new()
///     .with("/", "text/html; charset=utf-8", "<h1>hello</h1>")
///     .with("/app.js", "text/javascript", "console.log(1)");
/// assert!(files.get("/").is_some());
/// assert!(files.get("/missing").is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct StaticFiles {
    files: Arc<HashMap<String, (String, Body)>>,
}

/// A body made for each request (a metrics page, say).
pub type MakeBody = dyn Fn() -> Bytes + Send + Sync;

/// What a path answers.
#[derive(Clone)]
enum Body {
    Fixed(Bytes),
    Made(Arc<MakeBody>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Fixed(b) => write!(f, "{} bytes", b.len()),
            Body::Made(_) => f.write_str("made per request"),
        }
    }
}

impl StaticFiles {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the file at `path` (starting with `/`).
    pub fn with(
        mut self,
        path: impl Into<String>,
        content_type: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Self {
        let body = Body::Fixed(body.into());
        Arc::make_mut(&mut self.files).insert(path.into(), (content_type.into(), body));
        self
    }

    /// Adds (or replaces) a path whose body `make` builds for each request
    /// (it runs on the connection's task: keep it quick).
    pub fn with_made(
        mut self,
        path: impl Into<String>,
        content_type: impl Into<String>,
        make: impl Fn() -> Bytes + Send + Sync + 'static,
    ) -> Self {
        let body = Body::Made(Arc::new(make));
        Arc::make_mut(&mut self.files).insert(path.into(), (content_type.into(), body));
        self
    }

    /// The content type and body at `path` (the query is ignored).
    pub fn get(&self, path: &str) -> Option<(&str, Bytes)> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.files.get(path).map(|(t, b)| {
            let body = match b {
                Body::Fixed(b) => b.clone(),
                Body::Made(make) => make(),
            };
            (t.as_str(), body)
        })
    }
}

/// Answers one GET (or HEAD) request from `files` and closes the write side.
pub(crate) async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    files: &StaticFiles,
    method: &str,
    path: &str,
) {
    let (status, content_type, body) = match (method, files.get(path)) {
        ("GET" | "HEAD", Some((t, b))) => ("200 OK", t, b),
        ("GET" | "HEAD", None) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found\n"),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            Bytes::from_static(b"only GET, and WebSocket upgrades\n"),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = stream.write_all(&body).await;
    }
    let _ = stream.flush().await;
    let _ = stream.close().await;
}
