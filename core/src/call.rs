//! Small value types that name calls: [`StreamId`], [`Side`], [`CallKind`], [`Method`].

use std::fmt;

use bytes::Bytes;

use crate::error::FrameError;

/// Longest method name in bytes.
pub const MAX_METHOD_LEN: usize = 1024;

/// Which end of the WebSocket this connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The connecting side (WebSocket client). Opens odd stream ids.
    Client,
    /// The accepting side (WebSocket server). Opens even stream ids.
    Server,
}

impl Side {
    /// The first stream id this side opens.
    pub(crate) fn first_id(self) -> u32 {
        match self {
            Side::Client => 1,
            Side::Server => 2,
        }
    }
}

/// Identifies one call on a connection. 0 is the connection itself; odd ids
/// are opened by the client, even ids by the server. Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StreamId(pub u32);

impl StreamId {
    /// The connection-level id, 0.
    pub const CONNECTION: StreamId = StreamId(0);

    /// The side that opened this stream.
    pub fn initiator(self) -> Side {
        if self.0 % 2 == 1 {
            Side::Client
        } else {
            Side::Server
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The four call kinds. The kind fixes how many messages each direction
/// carries: "one" means exactly one for the request, and exactly one for a
/// response that ends with `OK` (none for an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(u8)]
pub enum CallKind {
    /// One request, one response.
    Unary = 0,
    /// One request, a stream of responses.
    ServerStreaming = 1,
    /// A stream of requests, one response.
    ClientStreaming = 2,
    /// Streams both ways.
    Bidi = 3,
}

impl CallKind {
    pub(crate) fn from_u8(v: u8) -> Result<Self, FrameError> {
        Ok(match v {
            0 => CallKind::Unary,
            1 => CallKind::ServerStreaming,
            2 => CallKind::ClientStreaming,
            3 => CallKind::Bidi,
            k => return Err(FrameError::InvalidKind(k)),
        })
    }

    /// True when the caller sends exactly one request message.
    pub fn single_request(self) -> bool {
        matches!(self, CallKind::Unary | CallKind::ServerStreaming)
    }

    /// True when the responder sends exactly one message (on success).
    pub fn single_response(self) -> bool {
        matches!(self, CallKind::Unary | CallKind::ClientStreaming)
    }
}

/// A method name: 1 to 1,024 bytes of UTF-8 (by convention
/// `package.Service/Method`, or a legacy `service.method` / `method`).
/// Received names are zero-copy slices of the received frame.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Method(Bytes);

impl Method {
    /// Validates and wraps a received or owned name.
    pub fn from_bytes(b: Bytes) -> Result<Self, FrameError> {
        if b.is_empty() || b.len() > MAX_METHOD_LEN {
            return Err(FrameError::InvalidMethodLength(b.len()));
        }
        std::str::from_utf8(&b).map_err(|_| FrameError::InvalidUtf8)?;
        Ok(Method(b))
    }

    /// Builds a method name from text.
    pub fn new(s: &str) -> Result<Self, FrameError> {
        Self::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Validated as UTF-8 on construction.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Method {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let s = String::arbitrary(u)?;
        let s = if s.is_empty() || s.len() > MAX_METHOD_LEN {
            "m".to_string()
        } else {
            s
        };
        Method::new(&s).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}
