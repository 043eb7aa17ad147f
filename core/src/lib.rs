//! # zrpc-core
//!
//! The sans-IO heart of zrpc: a pure state machine for the zrpc streaming RPC
//! protocol over WebSocket. No async, no sockets, no clock, no threads: the
//! caller feeds received WebSocket messages and the current time in, and
//! drains call events and WebSocket messages to write out.
//!
//! * [`Connection`] serves both sides (the connecting [`Side::Client`] and
//!   the accepting [`Side::Server`]); both sides may open calls.
//! * [`Mode::V1`] is protocol v1 (`docs/PROTOCOL.md`): many concurrent calls
//!   multiplexed on one WebSocket, all four call kinds, per-stream credit,
//!   fragmentation, cancellation, deadlines, status, metadata and drain.
//! * [`Mode::Legacy`] speaks the seed format, one call per connection.
//! * [`frame`] is the v1 codec on its own.
//!
//! ## A streamed call between two in-memory state machines
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use zrpc_core::{CallKind, OpenOptions, Connection, Event, Incoming, Metadata, Status, Transmit};
//!
//! // Moves every pending WebSocket message from one side to the other.
//! fn pump(from: &mut Connection, to: &mut Connection, now: Instant) {
//!     while let Some(t) = from.poll_transmit() {
//!         if let Transmit::Binary(b) = t {
//!             to.handle_message(now, Incoming::Binary(b)).unwrap();
//!         }
//!     }
//! }
//!
//! let now = Instant::now();
//! let mut client = Connection::client(now);
//! let mut server = Connection::server(now);
//!
//! let id = client.open_call(now, "demo.Echo/Repeat", CallKind::ServerStreaming, OpenOptions::default()).unwrap();
//! client.send(id, Bytes::from_static(b"hello")).unwrap();
//! client.close_send(id).unwrap();
//! pump(&mut client, &mut server, now);
//!
//! // The server sees the call and its request, and streams three replies.
//! let mut request = None;
//! while let Some(ev) = server.poll_event() {
//!     match ev {
//!         Event::CallOpened(call) => assert_eq!(call.method.as_str(), "demo.Echo/Repeat"),
//!         Event::Message { id, data, .. } => { server.consume(id, data.len()); request = Some((id, data)); }
//!         _ => {}
//!     }
//! }
//! let (sid, data) = request.unwrap();
//! for _ in 0..3 {
//!     server.send(sid, data.clone()).unwrap();
//! }
//! server.finish(sid, Status::ok(), Metadata::new()).unwrap();
//! pump(&mut server, &mut client, now);
//!
//! let mut replies = 0;
//! let mut status = None;
//! while let Some(ev) = client.poll_event() {
//!     match ev {
//!         Event::Message { id, data, .. } => { assert_eq!(&data[..], b"hello"); client.consume(id, data.len()); replies += 1; }
//!         Event::CallEnded { status: s, .. } => status = Some(s),
//!         _ => {}
//!     }
//! }
//! assert_eq!(replies, 3);
//! assert!(status.unwrap().is_ok());
//! assert_eq!(client.live_calls(), 0);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod call;
mod calls;
mod codec;
mod compress;
mod config;
mod connection;
mod error;
mod event;
pub mod frame;
pub mod legacy;
mod lifecycle;
mod metadata;
mod output;
mod status;
mod timers;
mod v1;

pub use call::{CallKind, Method, Side, StreamId};
pub use calls::{StreamIdHasher, StreamIdMap};
pub use config::{
    Config, DEFAULT_INITIAL_CREDIT, DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_CALL_SEND_BUFFER,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTION_SEND_BUFFER, DEFAULT_MAX_FRAGMENT_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_METADATA_SIZE, MAX_AUTO_WINDOW, MAX_CREDIT,
    MIN_BATCH_SIZE, MIN_FRAGMENT_SIZE, MIN_METADATA_SIZE,
};
pub use connection::Connection;
pub use error::{ConnectionError, FrameError, MetadataError, UserError};
pub use event::{Event, Incoming, IncomingCall, Mode, OpenOptions, Transmit};
pub use frame::{Frame, Settings};
pub use metadata::{MAX_KEY_LEN, Metadata};
pub use status::{Code, Status};

/// The WebSocket subprotocol token of protocol v1.
pub const SUBPROTOCOL_V1: &str = "zrpc.v1";

/// The metadata key of a resume cursor (PROTOCOL.md 5.6): in a resumed
/// call's OPEN, where the stream starts again; in a server-streaming call's
/// response headers, where it stands before its first message.
pub const CURSOR_KEY: &str = "zrpc-cursor-bin";
