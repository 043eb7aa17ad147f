//! The `grpc.reflection.v1.ServerReflection` service over zrpc, with gRPC's
//! message shapes: a client (such as `zrpc list`, `zrpc describe` and
//! `zrpc call`) asks which services a server has and gets the `.proto`
//! descriptors of any symbol, so it can call any zrpc server with JSON.
//!
//! ```no_run
//! # mod hello { pub const FILE_DESCRIPTOR_SET: &[u8] = &[]; }
//! use zrpc_proto::Router;
//!
//! // `hello` included with `include_proto!("hello")`, which defines
//! // FILE_DESCRIPTOR_SET (the descriptors zrpc-build compiled).
//! let router = zrpc_proto::reflection::register(Router::new(), &[hello::FILE_DESCRIPTOR_SET])
//!     .expect("descriptors compiled by zrpc-build");
//! # let _ = router;
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use zrpc_async::{Code, Router, Status};

use crate::{decode, encode};

/// The method's name.
pub const METHOD: &str = "grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
/// The service's name, as listed.
pub const SERVICE: &str = "grpc.reflection.v1.ServerReflection";

/// `grpc.reflection.v1.ServerReflectionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionRequest {
    /// Unused by zrpc.
    #[prost(string, tag = "1")]
    pub host: String,
    /// What is asked.
    #[prost(oneof = "Request", tags = "3, 4, 5, 6, 7")]
    pub message_request: Option<Request>,
}

/// What a [`ServerReflectionRequest`] asks.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Request {
    /// The file of this name, and its dependencies.
    #[prost(string, tag = "3")]
    FileByFilename(String),
    /// The file defining this fully qualified symbol (service, method,
    /// message, enum), and its dependencies.
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    /// Not supported (answered `UNIMPLEMENTED`).
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    /// Not supported (answered `UNIMPLEMENTED`).
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    /// The services (the value is ignored).
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `grpc.reflection.v1.ExtensionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionRequest {
    /// The extended message.
    #[prost(string, tag = "1")]
    pub containing_type: String,
    /// The extension's field number.
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

/// `grpc.reflection.v1.ServerReflectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionResponse {
    /// Unused by zrpc.
    #[prost(string, tag = "1")]
    pub valid_host: String,
    /// The request answered.
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ServerReflectionRequest>,
    /// The answer.
    #[prost(oneof = "Response", tags = "4, 5, 6, 7")]
    pub message_response: Option<Response>,
}

/// What a [`ServerReflectionResponse`] answers.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Response {
    /// Serialized `FileDescriptorProto`s: the file asked for and the files
    /// it depends on.
    #[prost(message, tag = "4")]
    FileDescriptorResponse(FileDescriptorResponse),
    /// Never sent by zrpc.
    #[prost(message, tag = "5")]
    AllExtensionNumbersResponse(ExtensionNumberResponse),
    /// The services.
    #[prost(message, tag = "6")]
    ListServicesResponse(ListServiceResponse),
    /// The request failed.
    #[prost(message, tag = "7")]
    ErrorResponse(ErrorResponse),
}

/// `grpc.reflection.v1.FileDescriptorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    /// Serialized `FileDescriptorProto`s, dependencies first.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

/// `grpc.reflection.v1.ExtensionNumberResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionNumberResponse {
    /// The extended message.
    #[prost(string, tag = "1")]
    pub base_type_name: String,
    /// Its extension numbers.
    #[prost(int32, repeated, tag = "2")]
    pub extension_number: Vec<i32>,
}

/// `grpc.reflection.v1.ListServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    /// The services.
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

/// `grpc.reflection.v1.ServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    /// Fully qualified service name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `grpc.reflection.v1.ErrorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    /// A status code number.
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    /// Why.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// What the service answers from: files by name, symbols to their file.
#[derive(Default)]
struct Index {
    files: HashMap<String, (FileDescriptorProto, Vec<u8>)>,
    symbols: HashMap<String, String>,
    services: Vec<String>,
}

impl Index {
    fn add(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_owned();
        if self.files.contains_key(&name) {
            return;
        }
        let prefix = match file.package() {
            "" => String::new(),
            p => format!("{p}."),
        };
        for s in &file.service {
            let service = format!("{prefix}{}", s.name());
            for m in &s.method {
                self.symbols
                    .insert(format!("{service}.{}", m.name()), name.clone());
            }
            self.symbols.insert(service.clone(), name.clone());
            self.services.push(service);
        }
        for m in &file.message_type {
            self.add_message(&prefix, m, &name);
        }
        for e in &file.enum_type {
            self.add_enum(&prefix, e, &name);
        }
        let bytes = file.encode_to_vec();
        self.files.insert(name, (file, bytes));
    }

    fn add_message(&mut self, prefix: &str, m: &DescriptorProto, file: &str) {
        let full = format!("{prefix}{}", m.name());
        let nested = format!("{full}.");
        for n in &m.nested_type {
            self.add_message(&nested, n, file);
        }
        for e in &m.enum_type {
            self.add_enum(&nested, e, file);
        }
        self.symbols.insert(full, file.to_owned());
    }

    fn add_enum(&mut self, prefix: &str, e: &EnumDescriptorProto, file: &str) {
        self.symbols
            .insert(format!("{prefix}{}", e.name()), file.to_owned());
    }

    /// The file `name` and every file it depends on (known ones),
    /// dependencies first.
    fn with_dependencies(&self, name: &str) -> Vec<Vec<u8>> {
        fn visit(index: &Index, name: &str, seen: &mut HashSet<String>, out: &mut Vec<Vec<u8>>) {
            if !seen.insert(name.to_owned()) {
                return;
            }
            let Some((file, bytes)) = index.files.get(name) else {
                return;
            };
            for dep in &file.dependency {
                visit(index, dep, seen, out);
            }
            out.push(bytes.clone());
        }
        let mut out = Vec::new();
        visit(self, name, &mut HashSet::new(), &mut out);
        out
    }

    fn answer(&self, request: &ServerReflectionRequest) -> Response {
        let not_found = |what: &str| {
            Response::ErrorResponse(ErrorResponse {
                error_code: Code::NotFound as i32,
                error_message: format!("{what} not found"),
            })
        };
        let files = |name: &str| {
            Response::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: self.with_dependencies(name),
            })
        };
        match &request.message_request {
            Some(Request::ListServices(_)) => {
                let mut names = self.services.clone();
                names.sort();
                names.dedup();
                Response::ListServicesResponse(ListServiceResponse {
                    service: names
                        .into_iter()
                        .map(|name| ServiceResponse { name })
                        .collect(),
                })
            }
            Some(Request::FileByFilename(name)) if self.files.contains_key(name) => files(name),
            Some(Request::FileByFilename(name)) => {
                not_found(&format!("file {}", crate::quoted(name)))
            }
            Some(Request::FileContainingSymbol(symbol)) => {
                match self.symbols.get(symbol.trim_start_matches('.')) {
                    Some(file) => files(file),
                    None => not_found(&format!("symbol {}", crate::quoted(symbol))),
                }
            }
            Some(Request::FileContainingExtension(_) | Request::AllExtensionNumbersOfType(_)) => {
                Response::ErrorResponse(ErrorResponse {
                    error_code: Code::Unimplemented as i32,
                    error_message: "extensions are not supported".into(),
                })
            }
            None => Response::ErrorResponse(ErrorResponse {
                error_code: Code::InvalidArgument as i32,
                error_message: "empty request".into(),
            }),
        }
    }
}

/// Adds the reflection service to `router`, answering from these
/// serialized `FileDescriptorSet`s (what `zrpc-build` compiled: each
/// `include_proto!` module's `FILE_DESCRIPTOR_SET`). Each request on the
/// stream gets one response.
pub fn register(router: Router, descriptor_sets: &[&[u8]]) -> Result<Router, prost::DecodeError> {
    let mut index = Index::default();
    // This service describes itself, as it lists itself.
    index.add(crate::reflection_descriptor::file());
    for set in descriptor_sets {
        for file in FileDescriptorSet::decode(*set)?.file {
            index.add(file);
        }
    }
    let index = Arc::new(index);
    let router = router.bidi(METHOD, move |_ctx, mut reqs, mut sink| {
        let index = index.clone();
        async move {
            while let Some(req) = reqs.message().await? {
                let request: ServerReflectionRequest = decode(req)?;
                let response = ServerReflectionResponse {
                    valid_host: String::new(),
                    message_response: Some(index.answer(&request)),
                    original_request: Some(request),
                };
                sink.send(encode(&response)).await?;
            }
            Ok::<(), Status>(())
        }
    });
    // Names only: an answer echoes its request and quotes a name it does
    // not know (cut to 64 characters), so it is never much larger than the
    // descriptors registered or the request.
    Ok(router.max_request_size(METHOD, crate::MAX_BUILTIN_REQUEST))
}

/// Asks a server's reflection service once: opens the stream, sends
/// `request`, returns the answer.
pub async fn ask(client: &zrpc_async::Client, request: Request) -> Result<Response, Status> {
    let mut call = client
        .bidi(METHOD, zrpc_async::CallOptions::default())
        .await?;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    call.send(encode(&req)).await?;
    call.close_send()?;
    let reply = call.message().await?.ok_or_else(|| {
        Status::new(
            Code::Internal,
            "the reflection stream ended without an answer",
        )
    })?;
    // The call ends with the server's status (it answered our half-close),
    // not with a reset from dropping it first.
    call.finish().await?;
    let response: ServerReflectionResponse = decode(reply)?;
    response
        .message_response
        .ok_or_else(|| Status::new(Code::Internal, "an empty reflection response"))
}

/// The serialized `FileDescriptorProto`s of a [`Response`], or the error it
/// carries as a status.
pub fn files_of(response: Response) -> Result<Vec<Vec<u8>>, Status> {
    match response {
        Response::FileDescriptorResponse(f) => Ok(f.file_descriptor_proto),
        Response::ErrorResponse(e) => Err(Status::new(code_of(e.error_code), e.error_message)),
        _ => Err(Status::new(
            Code::Internal,
            "an unexpected reflection response",
        )),
    }
}

fn code_of(n: i32) -> Code {
    match n {
        5 => Code::NotFound,
        12 => Code::Unimplemented,
        3 => Code::InvalidArgument,
        _ => Code::Unknown,
    }
}

/// Bytes of a request, for clients that build their own.
pub fn encode_request(request: Request) -> Bytes {
    encode(&ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    })
}
