//! Error types, split by scope and by fault (as in h2 and h11):
//!
//! * [`FrameError`]: a received frame is malformed (a remote fault; it ends the
//!   connection with close code 1002).
//! * [`ConnectionError`]: why a connection ended, with the WebSocket close code
//!   that goes with it.
//! * [`UserError`]: the local application asked for something the protocol or
//!   the call's state does not allow (a local fault; nothing is sent).
//! * [`MetadataError`]: an invalid metadata key or value.
//!
//! Faults confined to one call are not errors here: they end that call with a
//! [`Status`](crate::Status) reported through
//! [`Event::CallEnded`](crate::Event::CallEnded).

use std::fmt;

/// A received frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The message was shorter than the 6-byte frame header.
    Empty,
    /// A field ran past the end of the frame.
    Truncated,
    /// Bytes were left after the last field of the frame.
    TrailingBytes,
    /// The frame type byte is not defined by protocol v1.
    UnknownType(u8),
    /// A connection-level frame (SETTINGS, PING, GOAWAY) named a stream.
    NonZeroStreamId,
    /// A stream-level frame used stream id 0.
    ZeroStreamId,
    /// The call kind byte of an OPEN frame is not 0 to 3.
    InvalidKind(u8),
    /// A text field was not valid UTF-8.
    InvalidUtf8,
    /// A method name was empty or longer than [`MAX_METHOD_LEN`](crate::frame::MAX_METHOD_LEN).
    InvalidMethodLength(usize),
    /// A metadata key was empty, too long, or had characters outside `[0-9a-z-_.]`.
    InvalidMetadataKey,
    /// A non-binary metadata value had bytes outside printable ASCII.
    InvalidMetadataValue,
    /// A CREDIT frame granted zero.
    ZeroCredit,
    /// A SETTINGS payload was not a whole number of 6-byte entries.
    InvalidSettingsLength,
    /// A MESSAGE frame set both END_STREAM and MORE.
    InvalidFlags,
    /// A BATCH where one frame was expected (a BATCH never nests).
    Batch,
    /// A BATCH with no frame in it.
    EmptyBatch,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("frame shorter than its 6-byte header"),
            FrameError::Batch => f.write_str("BATCH where a single frame was expected"),
            FrameError::EmptyBatch => f.write_str("BATCH with no frames"),
            FrameError::Truncated => f.write_str("frame truncated"),
            FrameError::TrailingBytes => f.write_str("trailing bytes after frame"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            FrameError::NonZeroStreamId => f.write_str("connection frame on a non-zero stream id"),
            FrameError::ZeroStreamId => f.write_str("stream frame on stream id 0"),
            FrameError::InvalidKind(k) => write!(f, "invalid call kind {k}"),
            FrameError::InvalidUtf8 => f.write_str("text field is not UTF-8"),
            FrameError::InvalidMethodLength(n) => write!(f, "invalid method name length {n}"),
            FrameError::InvalidMetadataKey => f.write_str("invalid metadata key"),
            FrameError::InvalidMetadataValue => f.write_str("invalid metadata value"),
            FrameError::ZeroCredit => f.write_str("CREDIT of zero"),
            FrameError::InvalidSettingsLength => f.write_str("SETTINGS length not a multiple of 6"),
            FrameError::InvalidFlags => f.write_str("MESSAGE with both END_STREAM and MORE"),
        }
    }
}

impl std::error::Error for FrameError {}

/// An invalid metadata entry or block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// The key is empty, longer than 255 bytes, or not `[0-9a-z-_.]`.
    InvalidKey(String),
    /// The value is longer than 65,535 bytes, or is not printable ASCII while
    /// the key does not end in `-bin`.
    InvalidValue(String),
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::InvalidKey(k) => write!(f, "invalid metadata key {k:?}"),
            MetadataError::InvalidValue(k) => write!(f, "invalid metadata value for key {k:?}"),
        }
    }
}

impl std::error::Error for MetadataError {}

/// Why a connection ended. [`close_code`](Self::close_code) gives the
/// WebSocket close code the adapter uses (see `docs/PROTOCOL.md`, section 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionError {
    /// The peer sent a frame that does not decode (close code 1002).
    Malformed(FrameError),
    /// The peer broke a connection-level rule of the protocol (close code 1002).
    Protocol(&'static str),
    /// The peer sent a frame larger than our advertised limit (close code 1009).
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A text WebSocket message arrived on a v1 connection (close code 1003).
    TextMessage,
    /// The legacy peer broke the seed format's rules (close code 1008).
    Legacy(&'static str),
    /// The peer kept sending while not reading our control replies (close code 1008).
    PeerNotReading,
    /// No frame arrived within the keepalive timeout (close code 4000).
    KeepaliveTimeout,
    /// The peer sent GOAWAY with an error code and closed.
    PeerError {
        /// The code the peer sent.
        code: u16,
        /// The reason the peer sent.
        reason: String,
    },
    /// The WebSocket was closed by the peer (`code` is `None` when the
    /// transport was lost without a close frame).
    Closed {
        /// The close code received, if any.
        code: Option<u16>,
        /// The close reason received.
        reason: String,
    },
    /// The local application closed the connection.
    LocallyClosed {
        /// The close code it chose.
        code: u16,
        /// The reason it gave.
        reason: String,
    },
}

impl ConnectionError {
    /// The WebSocket close code for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            ConnectionError::Malformed(_) | ConnectionError::Protocol(_) => 1002,
            ConnectionError::TooLarge { .. } => 1009,
            ConnectionError::TextMessage => 1003,
            ConnectionError::Legacy(_) | ConnectionError::PeerNotReading => 1008,
            ConnectionError::KeepaliveTimeout => 4000,
            ConnectionError::PeerError { code, .. } => *code,
            ConnectionError::Closed { code, .. } => code.unwrap_or(1006),
            ConnectionError::LocallyClosed { code, .. } => *code,
        }
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Malformed(e) => write!(f, "malformed frame: {e}"),
            ConnectionError::Protocol(why) => write!(f, "protocol violation: {why}"),
            ConnectionError::TooLarge { what, len, limit } => {
                write!(f, "{what} of {len} bytes exceeds the limit of {limit}")
            }
            ConnectionError::TextMessage => f.write_str("text message on a zrpc.v1 connection"),
            ConnectionError::Legacy(why) => write!(f, "legacy protocol violation: {why}"),
            ConnectionError::PeerNotReading => {
                f.write_str("peer is not reading its control replies")
            }
            ConnectionError::KeepaliveTimeout => f.write_str("keepalive timeout"),
            ConnectionError::PeerError { code, reason } => {
                write!(f, "peer closed the connection with error {code}: {reason}")
            }
            ConnectionError::Closed {
                code: Some(c),
                reason,
            } => {
                write!(f, "connection closed by peer ({c}) {reason}")
            }
            ConnectionError::Closed { code: None, .. } => f.write_str("connection lost"),
            ConnectionError::LocallyClosed { code, reason } => {
                write!(f, "connection closed locally ({code}) {reason}")
            }
        }
    }
}

impl std::error::Error for ConnectionError {}

impl UserError {
    /// [`MetadataTooLarge`](Self::MetadataTooLarge) when `len` encoded
    /// bytes of metadata pass the peer's `limit`.
    pub(crate) fn check_metadata(len: usize, limit: usize) -> Result<(), Self> {
        if len > limit {
            return Err(Self::MetadataTooLarge { len, limit });
        }
        Ok(())
    }
}

/// A local request the connection cannot carry out. Nothing is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserError {
    /// No live call has this id (it never existed, or it has ended).
    UnknownCall,
    /// The call's sending side is closed (half-closed, finished or cancelled).
    SendClosed,
    /// No credit: wait for [`Event::Writable`](crate::Event::Writable) and retry.
    Blocked,
    /// The message exceeds the peer's maximum message size.
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// The call kind allows only one message in this direction.
    Cardinality,
    /// Only the side that accepted a call may do this (send headers, finish).
    NotResponder,
    /// Only the side that opened a call may do this (half-close).
    NotCaller,
    /// Response headers were already sent (or a message went first).
    HeadersAlreadySent,
    /// The metadata block exceeds the peer's maximum metadata size.
    MetadataTooLarge {
        /// Encoded length.
        len: usize,
        /// The peer's limit.
        limit: usize,
    },
    /// The method name is empty or longer than 1,024 bytes.
    InvalidMethod,
    /// The peer's concurrent stream limit is reached: wait for
    /// [`Event::CanOpen`](crate::Event::CanOpen) and retry.
    StreamLimit,
    /// This side has used every stream id of the connection.
    IdsExhausted,
    /// The connection is draining (GOAWAY sent or received): open a new one.
    Draining,
    /// The connection has ended.
    ConnectionClosed,
    /// A legacy connection carries exactly one call, opened by the client.
    LegacyOneCall,
    /// Only a responder's messages on a server-streaming call carry a
    /// resume cursor.
    NotResumable,
    /// The resume cursor exceeds the peer's maximum cursor size.
    CursorTooLarge {
        /// Cursor length.
        len: usize,
        /// The peer's limit.
        limit: usize,
    },
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::UnknownCall => f.write_str("no live call with this id"),
            UserError::SendClosed => f.write_str("the call's sending side is closed"),
            UserError::Blocked => f.write_str("no send credit; wait for Writable"),
            UserError::MessageTooLarge { len, limit } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the peer's limit of {limit}"
                )
            }
            UserError::Cardinality => {
                f.write_str("this call kind allows one message in this direction")
            }
            UserError::NotResponder => f.write_str("only the responding side may do this"),
            UserError::NotCaller => f.write_str("only the calling side may do this"),
            UserError::HeadersAlreadySent => f.write_str("response headers already sent"),
            UserError::MetadataTooLarge { len, limit } => {
                write!(
                    f,
                    "metadata of {len} bytes exceeds the peer's limit of {limit}"
                )
            }
            UserError::InvalidMethod => f.write_str("method name must be 1 to 1024 bytes"),
            UserError::StreamLimit => f.write_str("peer's concurrent stream limit reached"),
            UserError::IdsExhausted => f.write_str("stream ids exhausted on this connection"),
            UserError::Draining => f.write_str("connection is draining"),
            UserError::ConnectionClosed => f.write_str("connection closed"),
            UserError::LegacyOneCall => f.write_str("a legacy connection carries one client call"),
            UserError::NotResumable => {
                f.write_str("only the responses of a server-streaming call carry a resume cursor")
            }
            UserError::CursorTooLarge { len, limit } => {
                write!(
                    f,
                    "resume cursor of {len} bytes exceeds the peer's limit of {limit}"
                )
            }
        }
    }
}

impl std::error::Error for UserError {}
