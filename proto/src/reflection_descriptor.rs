//! `grpc/reflection/v1/reflection.proto` as a `FileDescriptorProto`, built
//! here so the reflection service can describe itself: tools that list a
//! server's methods (`buf curl --list-methods`) resolve every service
//! listed, this one included.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MethodDescriptorProto,
    OneofDescriptorProto, ServiceDescriptorProto,
};

const PACKAGE: &str = "grpc.reflection.v1";

/// A field: `(name, number, type, message type if any, oneof index if any)`.
type Field = (
    &'static str,
    i32,
    Type,
    Option<&'static str>,
    Option<i32>,
    bool,
);

fn message(name: &str, fields: &[Field], oneofs: &[&str]) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.into()),
        field: fields
            .iter()
            .map(
                |&(name, number, ty, type_name, oneof, repeated)| FieldDescriptorProto {
                    name: Some(name.into()),
                    number: Some(number),
                    label: Some(if repeated {
                        Label::Repeated
                    } else {
                        Label::Optional
                    } as i32),
                    r#type: Some(ty as i32),
                    type_name: type_name.map(|t| format!(".{PACKAGE}.{t}")),
                    oneof_index: oneof,
                    json_name: Some(json_name(name)),
                    ..Default::default()
                },
            )
            .collect(),
        oneof_decl: oneofs
            .iter()
            .map(|n| OneofDescriptorProto {
                name: Some((*n).into()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn json_name(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The file.
pub(crate) fn file() -> FileDescriptorProto {
    use Type::{Bytes, Int32, Message, String};
    let req = [
        ("host", 1, String, None, None, false),
        ("file_by_filename", 3, String, None, Some(0), false),
        ("file_containing_symbol", 4, String, None, Some(0), false),
        (
            "file_containing_extension",
            5,
            Message,
            Some("ExtensionRequest"),
            Some(0),
            false,
        ),
        (
            "all_extension_numbers_of_type",
            6,
            String,
            None,
            Some(0),
            false,
        ),
        ("list_services", 7, String, None, Some(0), false),
    ];
    let resp = [
        ("valid_host", 1, String, None, None, false),
        (
            "original_request",
            2,
            Message,
            Some("ServerReflectionRequest"),
            None,
            false,
        ),
        (
            "file_descriptor_response",
            4,
            Message,
            Some("FileDescriptorResponse"),
            Some(0),
            false,
        ),
        (
            "all_extension_numbers_response",
            5,
            Message,
            Some("ExtensionNumberResponse"),
            Some(0),
            false,
        ),
        (
            "list_services_response",
            6,
            Message,
            Some("ListServiceResponse"),
            Some(0),
            false,
        ),
        (
            "error_response",
            7,
            Message,
            Some("ErrorResponse"),
            Some(0),
            false,
        ),
    ];
    FileDescriptorProto {
        name: Some("grpc/reflection/v1/reflection.proto".into()),
        package: Some(PACKAGE.into()),
        message_type: vec![
            message("ServerReflectionRequest", &req, &["message_request"]),
            message(
                "ExtensionRequest",
                &[
                    ("containing_type", 1, String, None, None, false),
                    ("extension_number", 2, Int32, None, None, false),
                ],
                &[],
            ),
            message("ServerReflectionResponse", &resp, &["message_response"]),
            message(
                "FileDescriptorResponse",
                &[("file_descriptor_proto", 1, Bytes, None, None, true)],
                &[],
            ),
            message(
                "ExtensionNumberResponse",
                &[
                    ("base_type_name", 1, String, None, None, false),
                    ("extension_number", 2, Int32, None, None, true),
                ],
                &[],
            ),
            message(
                "ListServiceResponse",
                &[("service", 1, Message, Some("ServiceResponse"), None, true)],
                &[],
            ),
            message(
                "ServiceResponse",
                &[("name", 1, String, None, None, false)],
                &[],
            ),
            message(
                "ErrorResponse",
                &[
                    ("error_code", 1, Int32, None, None, false),
                    ("error_message", 2, String, None, None, false),
                ],
                &[],
            ),
        ],
        service: vec![ServiceDescriptorProto {
            name: Some("ServerReflection".into()),
            method: vec![MethodDescriptorProto {
                name: Some("ServerReflectionInfo".into()),
                input_type: Some(format!(".{PACKAGE}.ServerReflectionRequest")),
                output_type: Some(format!(".{PACKAGE}.ServerReflectionResponse")),
                client_streaming: Some(true),
                server_streaming: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}
