//! Typed protobuf services for zrpc.
//!
//! A placeholder in the workspace: prost messages and the service code generator
//! land with the codegen work. See `docs/ARCHITECTURE.md` for the crate map.
