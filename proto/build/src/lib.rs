//! # zrpc-build
//!
//! Compiles `.proto` files with prost-build and, for every `service`,
//! generates zrpc code: a server trait with one async method per rpc (with
//! the stream types of its call kind and the call context), a function that
//! registers an implementation on a [`Router`](https://docs.rs/zrpc-async),
//! and a typed client. The generated code needs no dependency of its own:
//! include it with `include_proto!` (re-exported by `zrpc-tokio` and
//! `zrpc-smol`), which brings in what it uses, prost included.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no
//! install; set `PROTOC` to use another.
//!
//! ```no_run
//! // build.rs
//! fn main() -> std::io::Result<()> {
//!     zrpc_build::compile_protos(&["proto/people.proto"], &["proto"])
//! }
//! ```
//!
//! Then in the crate: `pub mod people { zrpc_tokio::include_proto!("people"); }`
//! (the proto's package name).
//!
//! For a service `Greeter` in package `hello`, the module gets:
//! * `greeter_server::Greeter`, the trait to implement, and
//!   `greeter_server::register(router, Arc<impl Greeter>) -> Router`;
//! * `greeter_client::GreeterClient`, wrapping a `zrpc_proto::Client`.
//!
//! Method names on the wire are `package.Service/Method` (gRPC's rule), so
//! clients in other languages can call them.

use std::fmt::Write;
use std::io;
use std::path::{Path, PathBuf};

use prost_build::{Method, Service, ServiceGenerator};

/// Compiles `protos` (searching `includes`) into `OUT_DIR` with the zrpc
/// service generator.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> io::Result<()> {
    configure().compile(protos, includes)
}

/// A builder for more options.
pub fn configure() -> Builder {
    Builder::default()
}

/// Options for code generation.
pub struct Builder {
    descriptor_set: Option<PathBuf>,
    codegen_path: String,
}

/// The path generated code names its runtime support by: `include_proto!`
/// binds it in the module the code is included in.
const CODEGEN_PATH: &str = "__zrpc_codegen";

impl Default for Builder {
    fn default() -> Self {
        Self {
            descriptor_set: None,
            codegen_path: CODEGEN_PATH.to_owned(),
        }
    }
}

impl Builder {
    /// Also writes the compiled `FileDescriptorSet` to `path` (for protobuf
    /// reflection, e.g. JSON conversion).
    pub fn file_descriptor_set_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.descriptor_set = Some(path.into());
        self
    }

    /// The path of `zrpc-proto` in the generated code, for code included
    /// with a plain `include!` instead of `include_proto!` (for example
    /// `"::zrpc_proto"`, with `zrpc-proto` and `prost` as dependencies).
    pub fn codegen_path(mut self, path: impl Into<String>) -> Self {
        self.codegen_path = path.into();
        self
    }

    /// Compiles `protos`.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> io::Result<()> {
        let mut config = prost_build::Config::new();
        if std::env::var_os("PROTOC").is_none() {
            let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
            config.protoc_executable(protoc);
        }
        // Always written where include_proto! finds it (FILE_DESCRIPTOR_SET,
        // for reflection); copied to a path of the caller's choice too.
        let out_dir = std::env::var_os("OUT_DIR").map(PathBuf::from);
        let own = out_dir.map(|d| d.join("zrpc_descriptors.bin"));
        if let Some(path) = own.as_ref().or(self.descriptor_set.as_ref()) {
            config.file_descriptor_set_path(path);
        }
        config.prost_path(format!("{}::prost", self.codegen_path));
        config.service_generator(Box::new(ZrpcGenerator {
            path: self.codegen_path,
        }));
        config.compile_protos(protos, includes)?;
        if let (Some(own), Some(wanted)) = (own, self.descriptor_set) {
            std::fs::copy(own, wanted)?;
        }
        Ok(())
    }
}

/// The prost-build hook that writes zrpc services.
pub struct ZrpcGenerator {
    /// Where the generated code finds `zrpc-proto` (see
    /// [`Builder::codegen_path`]).
    pub path: String,
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn docs(out: &mut String, indent: &str, lines: &[String]) {
    for l in lines {
        let _ = writeln!(out, "{indent}///{l}");
    }
}

fn wire_name(service: &Service, m: &Method) -> String {
    if service.package.is_empty() {
        format!("{}/{}", service.proto_name, m.proto_name)
    } else {
        format!(
            "{}.{}/{}",
            service.package, service.proto_name, m.proto_name
        )
    }
}

impl ServiceGenerator for ZrpcGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let svc = &service.name;
        let module = snake(svc);
        // Every name is a full path: a proto may define `Result`, `Option`,
        // `Status` or `Sink` messages, which `use super::*` brings in.
        let p = self.path.as_str();
        let fut = "impl ::core::future::Future<Output = ::core::result::Result";
        let res = "::core::result::Result";
        let ok = "::core::result::Result::Ok";

        // Server trait and registration.
        let _ = writeln!(
            buf,
            "/// Server side of `{}.{}`.",
            service.package, service.proto_name
        );
        let _ = writeln!(buf, "pub mod {module}_server {{");
        let _ = writeln!(buf, "    #[allow(unused_imports)]\n    use super::*;");
        docs(buf, "    ", &service.comments.leading);
        let _ = writeln!(
            buf,
            "    pub trait {svc}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
        );
        for m in &service.methods {
            let (i, o) = (
                format!("super::{}", m.input_type),
                format!("super::{}", m.output_type),
            );
            docs(buf, "        ", &m.comments.leading);
            let _ = writeln!(buf, "        #[doc = \"`{}`\"]", wire_name(&service, m));
            let sig = match (m.client_streaming, m.server_streaming) {
                (false, false) => {
                    format!("request: {i}) -> {fut}<{o}, {p}::Status>> + ::core::marker::Send")
                }
                (false, true) => format!(
                    "request: {i}, responses: {p}::Sink<{o}>) -> {fut}<(), {p}::Status>> + ::core::marker::Send"
                ),
                (true, false) => format!(
                    "requests: {p}::Streaming<{i}>) -> {fut}<{o}, {p}::Status>> + ::core::marker::Send"
                ),
                (true, true) => format!(
                    "requests: {p}::Streaming<{i}>, responses: {p}::Sink<{o}>) -> {fut}<(), {p}::Status>> + ::core::marker::Send"
                ),
            };
            let _ = writeln!(
                buf,
                "        fn {}(&self, ctx: {p}::CallContext, {sig};",
                m.name
            );
        }
        let _ = writeln!(buf, "    }}");
        let _ = writeln!(
            buf,
            "    /// Registers every method of `{svc}` on `router`."
        );
        let _ = writeln!(
            buf,
            "    pub fn register<T: {svc}>(router: {p}::Router, service: ::std::sync::Arc<T>) -> {p}::Router {{"
        );
        let _ = writeln!(buf, "        let router = router;");
        for m in &service.methods {
            let name = wire_name(&service, m);
            let f = &m.name;
            let i = format!("super::{}", m.input_type);
            let body = match (m.client_streaming, m.server_streaming) {
                (false, false) => format!(
                    ".unary(\"{name}\", move |ctx, req| {{ let s = s.clone(); async move {{ let req: {i} = {p}::decode(req)?; {ok}({p}::encode(&s.{f}(ctx, req).await?)) }} }})"
                ),
                (false, true) => format!(
                    ".server_streaming(\"{name}\", move |ctx, req, sink| {{ let s = s.clone(); async move {{ let req: {i} = {p}::decode(req)?; s.{f}(ctx, req, {p}::Sink::new(sink)).await }} }})"
                ),
                (true, false) => format!(
                    ".client_streaming(\"{name}\", move |ctx, reqs| {{ let s = s.clone(); async move {{ {ok}({p}::encode(&s.{f}(ctx, {p}::Streaming::new(reqs)).await?)) }} }})"
                ),
                (true, true) => format!(
                    ".bidi(\"{name}\", move |ctx, reqs, sink| {{ let s = s.clone(); async move {{ s.{f}(ctx, {p}::Streaming::new(reqs), {p}::Sink::new(sink)).await }} }})"
                ),
            };
            let _ = writeln!(
                buf,
                "        let s = service.clone();\n        let router = router{body};"
            );
        }
        let _ = writeln!(buf, "        let _ = service;\n        router\n    }}\n}}");

        // Client.
        let _ = writeln!(
            buf,
            "/// Client side of `{}.{}`.",
            service.package, service.proto_name
        );
        let _ = writeln!(buf, "pub mod {module}_client {{");
        let _ = writeln!(buf, "    #[allow(unused_imports)]\n    use super::*;");
        let _ = writeln!(
            buf,
            "    /// Typed client for `{}.{}`; cheap to clone.",
            service.package, service.proto_name
        );
        let _ = writeln!(
            buf,
            "    #[derive(::core::clone::Clone)]\n    pub struct {svc}Client {{\n        inner: {p}::Client,\n    }}"
        );
        let _ = writeln!(buf, "    impl {svc}Client {{");
        let _ = writeln!(
            buf,
            "        /// Wraps a connected client.\n        pub fn new(inner: {p}::Client) -> Self {{\n            Self {{ inner }}\n        }}"
        );
        let _ = writeln!(
            buf,
            "        /// The untyped client.\n        pub fn inner(&self) -> &{p}::Client {{\n            &self.inner\n        }}"
        );
        let _ = writeln!(
            buf,
            "        /// Connects to `url` (`ws://` or `wss://`) on the runtime `rt`\n        /// (`zrpc_tokio::TokioRuntime`, `zrpc_smol::SmolRuntime`).\n        pub async fn connect(url: &str, rt: impl {p}::Runtime) -> {res}<Self, {p}::Error> {{\n            {ok}(Self::new({p}::connect(url, {p}::ClientConfig::default(), rt).await?))\n        }}"
        );
        for m in &service.methods {
            let name = wire_name(&service, m);
            let f = &m.name;
            let (i, o) = (
                format!("super::{}", m.input_type),
                format!("super::{}", m.output_type),
            );
            docs(buf, "        ", &m.comments.leading);
            let _ = writeln!(buf, "        #[doc = \"`{name}`\"]");
            let text = match (m.client_streaming, m.server_streaming) {
                (false, false) => format!(
                    "pub async fn {f}(&self, request: &{i}, opts: {p}::CallOptions) -> {res}<{o}, {p}::Status> {{ {p}::decode_response(self.inner.unary(\"{name}\", {p}::encode(request), opts).await?) }}"
                ),
                (false, true) => format!(
                    "pub async fn {f}(&self, request: &{i}, opts: {p}::CallOptions) -> {res}<{p}::ResponseStream<{o}>, {p}::Status> {{ {ok}({p}::ResponseStream::new(self.inner.server_streaming(\"{name}\", {p}::encode(request), opts).await?)) }}"
                ),
                (true, false) => format!(
                    "pub async fn {f}(&self, opts: {p}::CallOptions) -> {res}<{p}::ClientStreamingCall<{i}, {o}>, {p}::Status> {{ {ok}({p}::ClientStreamingCall::new(self.inner.client_streaming(\"{name}\", opts).await?)) }}"
                ),
                (true, true) => format!(
                    "pub async fn {f}(&self, opts: {p}::CallOptions) -> {res}<{p}::BidiCall<{i}, {o}>, {p}::Status> {{ {ok}({p}::BidiCall::new(self.inner.bidi(\"{name}\", opts).await?)) }}"
                ),
            };
            let _ = writeln!(buf, "        {text}");
        }
        let _ = writeln!(buf, "    }}\n}}");
    }
}
