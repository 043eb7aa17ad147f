//! zrpc over WebSockets for tokio applications.
//!
//! This crate is a placeholder in the workspace: the async driver that runs
//! [`zrpc_core::Connection`] over real sockets lands with the adapters work.
//! Until then it re-exports the core so the crate map stays stable.

pub use zrpc_core as core;
