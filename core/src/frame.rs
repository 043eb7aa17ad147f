//! The v1 frame codec: one frame per WebSocket binary message.
//!
//! ```text
//! +--------+--------+--------+--------+--------+--------+----------------
//! |  type  | flags  |        stream id (u32, big-endian)|  payload ...
//! +--------+--------+--------+--------+--------+--------+----------------
//! ```
//!
//! All integers are big-endian. The layout of each payload is documented on
//! the [`Frame`] variants and in `docs/PROTOCOL.md`. Decoding never panics and
//! never allocates memory sized by a length field before checking it against
//! the bytes actually present. Payloads are zero-copy slices of the input.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::call::{CallKind, Method, StreamId};
use crate::codec::{Reader, put_str16};
use crate::error::FrameError;
use crate::metadata::Metadata;
use crate::status::{Code, Status};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 6;
pub use crate::call::MAX_METHOD_LEN;

/// Frame type bytes.
pub mod kind {
    /// SETTINGS: connection limits of the sender.
    pub const SETTINGS: u8 = 0x0;
    /// OPEN: starts a call.
    pub const OPEN: u8 = 0x1;
    /// HEADERS: response headers.
    pub const HEADERS: u8 = 0x2;
    /// MESSAGE: one message or fragment.
    pub const MESSAGE: u8 = 0x3;
    /// HALF_CLOSE: the caller sends no more messages.
    pub const HALF_CLOSE: u8 = 0x4;
    /// STATUS: the responder ends the call.
    pub const STATUS: u8 = 0x5;
    /// RESET: either side aborts the call.
    pub const RESET: u8 = 0x6;
    /// CREDIT: grants more messages on a stream.
    pub const CREDIT: u8 = 0x7;
    /// PING: keepalive probe or its ACK.
    pub const PING: u8 = 0x8;
    /// GOAWAY: the sender accepts no new calls above an id.
    pub const GOAWAY: u8 = 0x9;
    /// BATCH: several frames in one WebSocket message; only sent to a peer
    /// that advertised [`setting::MAX_BATCH_SIZE`](super::setting::MAX_BATCH_SIZE).
    pub const BATCH: u8 = 0xA;
    /// COMPRESSED: one whole WebSocket message (a frame or a BATCH),
    /// gzip-compressed; only sent to a peer that advertised gzip in
    /// [`setting::COMPRESSION`](super::setting::COMPRESSION).
    pub const COMPRESSED: u8 = 0xB;
}

/// MESSAGE flag: the sender half-closes after this message.
pub const FLAG_END_STREAM: u8 = 0x1;
/// MESSAGE flag: more fragments of this message follow.
pub const FLAG_MORE: u8 = 0x2;
/// MESSAGE flag: the payload ends with a resume cursor and then its length
/// (`u8`), after the message bytes: the cursor of the message this frame
/// completes. Only on the last (or only) fragment of a response message of
/// a server-streaming call, toward a peer that offered
/// [`setting::MAX_CURSOR_SIZE`]. A trailer, so a message without a cursor
/// costs nothing, and a stamped one is written as one slice.
pub const FLAG_CURSOR: u8 = 0x4;
/// Longest resume cursor the encoding carries (its length is a `u8`).
pub const MAX_CURSOR_LEN: usize = 255;
/// PING flag: this is the answer to a PING.
pub const FLAG_ACK: u8 = 0x1;

/// SETTINGS identifiers.
pub mod setting {
    /// Largest message (after reassembly) the sender accepts, in bytes.
    pub const MAX_MESSAGE_SIZE: u16 = 1;
    /// Most streams the peer may have open toward the sender at once.
    pub const MAX_CONCURRENT_STREAMS: u16 = 2;
    /// Credit the sender grants for request messages on each stream the peer opens.
    pub const INITIAL_CREDIT: u16 = 3;
    /// Largest MESSAGE frame payload the sender accepts, in bytes.
    pub const MAX_FRAGMENT_SIZE: u16 = 4;
    /// Largest metadata block (and status) the sender accepts, in bytes.
    pub const MAX_METADATA_SIZE: u16 = 5;
    /// Largest BATCH payload the sender accepts, in bytes; 0 (the default)
    /// means it accepts no BATCH at all.
    pub const MAX_BATCH_SIZE: u16 = 6;
    /// Longest resume cursor the sender accepts on a response message, in
    /// bytes (0 to 255); 0 (the default) means it accepts none.
    pub const MAX_CURSOR_SIZE: u16 = 7;
    /// The compressions the sender accepts in COMPRESSED messages, a bit
    /// set ([`COMPRESSION_GZIP`](super::COMPRESSION_GZIP)); 0 (the default)
    /// means none.
    pub const COMPRESSION: u16 = 8;
}

/// [`setting::COMPRESSION`] bit: gzip (RFC 1952).
pub const COMPRESSION_GZIP: u32 = 0x1;

/// The values carried by a SETTINGS frame; absent values keep their defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Settings {
    /// [`setting::MAX_MESSAGE_SIZE`].
    pub max_message_size: Option<u32>,
    /// [`setting::MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: Option<u32>,
    /// [`setting::INITIAL_CREDIT`].
    pub initial_credit: Option<u32>,
    /// [`setting::MAX_FRAGMENT_SIZE`].
    pub max_fragment_size: Option<u32>,
    /// [`setting::MAX_METADATA_SIZE`].
    pub max_metadata_size: Option<u32>,
    /// [`setting::MAX_BATCH_SIZE`].
    pub max_batch_size: Option<u32>,
    /// [`setting::MAX_CURSOR_SIZE`].
    pub max_cursor_size: Option<u32>,
    /// [`setting::COMPRESSION`].
    pub compression: Option<u32>,
}

impl Settings {
    fn entries(&self) -> [(u16, Option<u32>); 8] {
        [
            (setting::MAX_MESSAGE_SIZE, self.max_message_size),
            (setting::MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (setting::INITIAL_CREDIT, self.initial_credit),
            (setting::MAX_FRAGMENT_SIZE, self.max_fragment_size),
            (setting::MAX_METADATA_SIZE, self.max_metadata_size),
            (setting::MAX_BATCH_SIZE, self.max_batch_size),
            (setting::MAX_CURSOR_SIZE, self.max_cursor_size),
            (setting::COMPRESSION, self.compression),
        ]
    }
}

/// The payload of an OPEN frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The new stream's id (odd from the client, even from the server).
    pub stream: StreamId,
    /// The call kind.
    pub kind: CallKind,
    /// Relative deadline in milliseconds; 0 means none.
    pub timeout_ms: u32,
    /// Credit the opener grants for response messages.
    pub initial_credit: u32,
    /// The method called.
    pub method: Method,
    /// Request headers.
    pub metadata: Metadata,
}

/// One decoded v1 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `0x0`, stream 0: `(u16 id, u32 value)*`.
    Settings(Settings),
    /// `0x1`: `kind u8 | timeout_ms u32 | initial_credit u32 | method str16 | metadata`.
    Open(Open),
    /// `0x2`: `metadata` (response headers).
    Headers {
        /// Stream id.
        stream: StreamId,
        /// Response headers.
        metadata: Metadata,
    },
    /// `0x3`: the message bytes, then with flag CURSOR `cursor |
    /// cursor_len u8` (flags END_STREAM, MORE, CURSOR).
    Message {
        /// Stream id.
        stream: StreamId,
        /// The sender half-closes after this message.
        end_stream: bool,
        /// More fragments of this message follow.
        more: bool,
        /// The resume cursor of the message this frame completes.
        cursor: Option<Bytes>,
        /// Message (or fragment) bytes.
        payload: Bytes,
    },
    /// `0x4`: empty payload.
    HalfClose {
        /// Stream id.
        stream: StreamId,
    },
    /// `0x5`: `code u8 | message str16 | details u32-len bytes | trailers metadata`.
    Status {
        /// Stream id.
        stream: StreamId,
        /// Final status.
        status: Status,
        /// Trailers.
        trailers: Metadata,
    },
    /// `0x6`: `code u8`.
    Reset {
        /// Stream id.
        stream: StreamId,
        /// Why the call was aborted.
        code: Code,
    },
    /// `0x7`: `credit u32` (1 or more).
    Credit {
        /// Stream id.
        stream: StreamId,
        /// Additional messages the peer may send.
        credit: u32,
    },
    /// `0x8`, stream 0: 8 opaque bytes (flag ACK).
    Ping {
        /// This answers a PING.
        ack: bool,
        /// Opaque data, echoed in the ACK.
        data: [u8; 8],
    },
    /// `0x9`, stream 0: `last_stream_id u32 | code u16 | reason str16`.
    GoAway {
        /// Highest stream id opened by the receiver that the sender processes.
        last_stream_id: StreamId,
        /// 1000 for a graceful drain; otherwise the WebSocket close code that follows.
        code: u16,
        /// Human-readable reason.
        reason: String,
    },
}
#[inline]
pub(crate) fn header(out: &mut BytesMut, ty: u8, flags: u8, stream: StreamId) {
    out.put_u8(ty);
    out.put_u8(flags);
    out.put_u32(stream.0);
}

/// Length of an OPEN frame with these variable parts.
pub(crate) fn open_len(method: &[u8], metadata: &Metadata) -> usize {
    HEADER_LEN + 1 + 4 + 4 + 2 + method.len() + metadata.encoded_len()
}

/// Encodes an OPEN frame from its parts (no `Open` value needed).
pub(crate) fn encode_open(
    out: &mut BytesMut,
    stream: StreamId,
    kind: CallKind,
    timeout_ms: u32,
    initial_credit: u32,
    method: &[u8],
    metadata: &Metadata,
) {
    header(out, kind::OPEN, 0, stream);
    out.put_u8(kind as u8);
    out.put_u32(timeout_ms);
    out.put_u32(initial_credit);
    put_str16(out, method);
    metadata.encode(out);
}

/// Bytes a cursor adds to a MESSAGE frame's payload: itself and its
/// length byte.
#[inline]
pub(crate) fn cursor_len(cursor: Option<&Bytes>) -> usize {
    cursor.map_or(0, |c| c.len() + 1)
}

/// Appends a cursor trailer (the cursor, then its length) to `out`. A cursor
/// is at most [`MAX_CURSOR_LEN`] bytes (the send path checked it).
#[inline]
pub(crate) fn put_cursor(out: &mut BytesMut, cursor: &[u8]) {
    let c = &cursor[..cursor.len().min(MAX_CURSOR_LEN)];
    out.put_slice(c);
    out.put_u8(c.len() as u8);
}

/// Encodes a MESSAGE frame: the header, then the payload (which, with
/// CURSOR in `flags`, already ends with its cursor trailer). The one MESSAGE
/// encoder, used by [`Frame::encode`] and by the connection's send path
/// (which writes fragments straight into a BATCH).
#[inline]
pub(crate) fn encode_message(out: &mut BytesMut, stream: StreamId, flags: u8, payload: &[u8]) {
    header(out, kind::MESSAGE, flags, stream);
    out.put_slice(payload);
}

/// Length of a STATUS frame.
pub(crate) fn status_len(status: &Status, trailers: &Metadata) -> usize {
    HEADER_LEN + status.encoded_len() + trailers.encoded_len()
}

/// Encodes a STATUS frame.
pub(crate) fn encode_status(
    out: &mut BytesMut,
    stream: StreamId,
    status: &Status,
    trailers: &Metadata,
) {
    header(out, kind::STATUS, 0, stream);
    out.put_u8(status.code() as u8);
    let msg = status.message().as_bytes();
    put_str16(out, &msg[..msg.len().min(u16::MAX as usize)]);
    out.put_u32(status.details().len() as u32);
    out.put_slice(status.details());
    trailers.encode(out);
}

/// Decodes a MESSAGE frame's header (type byte already known to be MESSAGE)
/// into `(stream, flags, payload)`: the receive fast path, which never
/// builds a [`Frame`]. The payload is `buf` advanced past the header, a
/// cursor trailer still on it (see [`split_cursor`]).
#[inline]
pub(crate) fn decode_message(mut buf: Bytes) -> Result<(StreamId, u8, Bytes), FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Empty);
    }
    let flags = buf[1];
    let stream = StreamId(u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]));
    if stream.0 == 0 {
        return Err(FrameError::ZeroStreamId);
    }
    if flags & FLAG_MORE != 0 && flags & (FLAG_END_STREAM | FLAG_CURSOR) != 0 {
        return Err(FrameError::InvalidFlags);
    }
    buf.advance(HEADER_LEN);
    Ok((stream, flags, buf))
}

/// Takes the cursor trailer (the cursor, then its length) off the end of a
/// CURSOR frame's payload: the cursor, a slice of it.
#[cold]
pub(crate) fn split_cursor(payload: &mut Bytes) -> Result<Bytes, FrameError> {
    let len = *payload.last().ok_or(FrameError::Truncated)? as usize;
    if payload.len() < 1 + len {
        return Err(FrameError::Truncated);
    }
    let at = payload.len() - 1 - len;
    let cursor = payload.slice(at..payload.len() - 1);
    payload.truncate(at);
    Ok(cursor)
}

/// Length of each entry's prefix in a BATCH payload.
pub const BATCH_ENTRY_PREFIX: usize = 2;

/// The frames packed in a BATCH message, in order: each entry is a `u16`
/// length and then one whole frame (at least a header, never a BATCH).
/// Yields zero-copy slices of the message; a malformed entry yields an error
/// and ends the iteration.
///
/// ```
/// use bytes::Bytes;
/// use zrpc_core::frame::{kind, split_batch, Frame};
/// use zrpc_core::StreamId;
///
/// let ping = Frame::Ping { ack: false, data: [7; 8] }.to_bytes();
/// let mut msg = vec![kind::BATCH, 0, 0, 0, 0, 0];
/// for _ in 0..2 {
///     msg.extend_from_slice(&(ping.len() as u16).to_be_bytes());
///     msg.extend_from_slice(&ping);
/// }
/// let frames: Vec<_> = split_batch(Bytes::from(msg)).unwrap().collect();
/// assert_eq!(frames.len(), 2);
/// assert_eq!(Frame::decode(frames[1].clone().unwrap()).unwrap().stream(), StreamId(0));
/// ```
pub fn split_batch(msg: Bytes) -> Result<BatchFrames, FrameError> {
    if msg.len() < HEADER_LEN {
        return Err(FrameError::Empty);
    }
    if msg[0] != kind::BATCH {
        return Err(FrameError::UnknownType(msg[0]));
    }
    if msg[2..HEADER_LEN] != [0, 0, 0, 0] {
        return Err(FrameError::NonZeroStreamId);
    }
    if msg.len() == HEADER_LEN {
        return Err(FrameError::EmptyBatch);
    }
    Ok(BatchFrames {
        msg,
        pos: HEADER_LEN,
    })
}

/// Iterator over the frames of a BATCH; see [`split_batch`].
#[derive(Debug)]
pub struct BatchFrames {
    msg: Bytes,
    pos: usize,
}

impl Iterator for BatchFrames {
    type Item = Result<Bytes, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.msg.len() - self.pos;
        if rest == 0 {
            return None;
        }
        let fail = |it: &mut Self, e| {
            it.pos = it.msg.len();
            Some(Err(e))
        };
        if rest < BATCH_ENTRY_PREFIX {
            return fail(self, FrameError::Truncated);
        }
        let len = u16::from_be_bytes([self.msg[self.pos], self.msg[self.pos + 1]]) as usize;
        let start = self.pos + BATCH_ENTRY_PREFIX;
        if len < HEADER_LEN {
            return fail(self, FrameError::Empty);
        }
        if len > self.msg.len() - start {
            return fail(self, FrameError::Truncated);
        }
        if self.msg[start] == kind::BATCH {
            return fail(self, FrameError::Batch);
        }
        self.pos = start + len;
        Some(Ok(self.msg.slice(start..start + len)))
    }
}

fn utf8(b: Bytes) -> Result<String, FrameError> {
    String::from_utf8(b.to_vec()).map_err(|_| FrameError::InvalidUtf8)
}

impl Frame {
    /// The stream this frame belongs to (0 for connection frames).
    pub fn stream(&self) -> StreamId {
        match self {
            Frame::Settings(_) | Frame::Ping { .. } | Frame::GoAway { .. } => StreamId::CONNECTION,
            Frame::Open(o) => o.stream,
            Frame::Headers { stream, .. }
            | Frame::Message { stream, .. }
            | Frame::HalfClose { stream }
            | Frame::Status { stream, .. }
            | Frame::Reset { stream, .. }
            | Frame::Credit { stream, .. } => *stream,
        }
    }

    /// Exact encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::Settings(s) => 6 * s.entries().iter().filter(|(_, v)| v.is_some()).count(),
                Frame::Open(o) => {
                    1 + 4 + 4 + 2 + o.method.as_bytes().len() + o.metadata.encoded_len()
                }
                Frame::Headers { metadata, .. } => metadata.encoded_len(),
                Frame::Message {
                    payload, cursor, ..
                } => cursor_len(cursor.as_ref()) + payload.len(),
                Frame::HalfClose { .. } => 0,
                Frame::Status {
                    status, trailers, ..
                } => status.encoded_len() + trailers.encoded_len(),
                Frame::Reset { .. } => 1,
                Frame::Credit { .. } => 4,
                Frame::Ping { .. } => 8,
                Frame::GoAway { reason, .. } => 4 + 2 + 2 + reason.len(),
            }
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Values built through this crate's constructors always fit their
    /// length fields; text longer than a `u16` length allows is cut.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        match self {
            Frame::Settings(s) => {
                header(out, kind::SETTINGS, 0, StreamId::CONNECTION);
                for (id, v) in s.entries() {
                    if let Some(v) = v {
                        out.put_u16(id);
                        out.put_u32(v);
                    }
                }
            }
            Frame::Open(o) => encode_open(
                out,
                o.stream,
                o.kind,
                o.timeout_ms,
                o.initial_credit,
                o.method.as_bytes(),
                &o.metadata,
            ),
            Frame::Headers { stream, metadata } => {
                header(out, kind::HEADERS, 0, *stream);
                metadata.encode(out);
            }
            Frame::Message {
                stream,
                end_stream,
                more,
                cursor,
                payload,
            } => {
                let flags = if *end_stream { FLAG_END_STREAM } else { 0 }
                    | if *more { FLAG_MORE } else { 0 }
                    | if cursor.is_some() { FLAG_CURSOR } else { 0 };
                encode_message(out, *stream, flags, payload);
                if let Some(c) = cursor {
                    put_cursor(out, c);
                }
            }
            Frame::HalfClose { stream } => header(out, kind::HALF_CLOSE, 0, *stream),
            Frame::Status {
                stream,
                status,
                trailers,
            } => encode_status(out, *stream, status, trailers),
            Frame::Reset { stream, code } => {
                header(out, kind::RESET, 0, *stream);
                out.put_u8(*code as u8);
            }
            Frame::Credit { stream, credit } => {
                header(out, kind::CREDIT, 0, *stream);
                out.put_u32(*credit);
            }
            Frame::Ping { ack, data } => {
                header(
                    out,
                    kind::PING,
                    if *ack { FLAG_ACK } else { 0 },
                    StreamId::CONNECTION,
                );
                out.put_slice(data);
            }
            Frame::GoAway {
                last_stream_id,
                code,
                reason,
            } => {
                header(out, kind::GOAWAY, 0, StreamId::CONNECTION);
                out.put_u32(last_stream_id.0);
                out.put_u16(*code);
                put_str16(
                    out,
                    &reason.as_bytes()[..reason.len().min(u16::MAX as usize)],
                );
            }
        }
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes one frame from a whole WebSocket message.
    ///
    /// MESSAGE frames, the hot path, decode without touching a reference
    /// count: the payload is `buf` itself with the header advanced past.
    pub fn decode(buf: Bytes) -> Result<Frame, FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Empty);
        }
        let ty = buf[0];
        let flags = buf[1];
        let stream = StreamId(u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]));
        let conn_frame = matches!(ty, kind::SETTINGS | kind::PING | kind::GOAWAY);
        if ty == kind::BATCH {
            return Err(FrameError::Batch);
        }
        if ty > kind::GOAWAY {
            return Err(FrameError::UnknownType(ty));
        }
        if conn_frame && stream.0 != 0 {
            return Err(FrameError::NonZeroStreamId);
        }
        if !conn_frame && stream.0 == 0 {
            return Err(FrameError::ZeroStreamId);
        }
        if ty == kind::MESSAGE {
            let (stream, flags, mut payload) = decode_message(buf)?;
            let cursor = match flags & FLAG_CURSOR {
                0 => None,
                _ => Some(split_cursor(&mut payload)?),
            };
            return Ok(Frame::Message {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                more: flags & FLAG_MORE != 0,
                cursor,
                payload,
            });
        }
        let mut r = Reader::new(&buf, HEADER_LEN);
        let frame = match ty {
            kind::SETTINGS => {
                if !r.remaining().is_multiple_of(6) {
                    return Err(FrameError::InvalidSettingsLength);
                }
                let mut s = Settings::default();
                while r.remaining() > 0 {
                    let id = r.u16()?;
                    let v = Some(r.u32()?);
                    match id {
                        setting::MAX_MESSAGE_SIZE => s.max_message_size = v,
                        setting::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = v,
                        setting::INITIAL_CREDIT => s.initial_credit = v,
                        setting::MAX_FRAGMENT_SIZE => s.max_fragment_size = v,
                        setting::MAX_METADATA_SIZE => s.max_metadata_size = v,
                        setting::MAX_BATCH_SIZE => s.max_batch_size = v,
                        setting::MAX_CURSOR_SIZE => s.max_cursor_size = v,
                        setting::COMPRESSION => s.compression = v,
                        _ => {} // unknown settings are ignored
                    }
                }
                Frame::Settings(s)
            }
            kind::OPEN => {
                let kind = CallKind::from_u8(r.u8()?)?;
                let timeout_ms = r.u32()?;
                let initial_credit = r.u32()?;
                let mlen = r.u16()? as usize;
                let method = Method::from_bytes(r.bytes(mlen)?)?;
                let metadata = Metadata::decode(&mut r)?;
                Frame::Open(Open {
                    stream,
                    kind,
                    timeout_ms,
                    initial_credit,
                    method,
                    metadata,
                })
            }
            kind::HEADERS => Frame::Headers {
                stream,
                metadata: Metadata::decode(&mut r)?,
            },
            kind::HALF_CLOSE => Frame::HalfClose { stream },
            kind::STATUS => {
                let code = Code::from_u8(r.u8()?);
                let mlen = r.u16()? as usize;
                let message = utf8(r.bytes(mlen)?)?;
                let dlen = r.u32()? as usize;
                let details = r.bytes(dlen)?;
                let trailers = Metadata::decode(&mut r)?;
                Frame::Status {
                    stream,
                    status: Status::new(code, message).with_details(details),
                    trailers,
                }
            }
            kind::RESET => Frame::Reset {
                stream,
                code: Code::from_u8(r.u8()?),
            },
            kind::CREDIT => {
                let credit = r.u32()?;
                if credit == 0 {
                    return Err(FrameError::ZeroCredit);
                }
                Frame::Credit { stream, credit }
            }
            kind::PING => Frame::Ping {
                ack: flags & FLAG_ACK != 0,
                data: r.array8()?,
            },
            kind::GOAWAY => {
                let last_stream_id = StreamId(r.u32()?);
                let code = r.u16()?;
                let rlen = r.u16()? as usize;
                let reason = utf8(r.bytes(rlen)?)?;
                Frame::GoAway {
                    last_stream_id,
                    code,
                    reason,
                }
            }
            _ => return Err(FrameError::UnknownType(ty)),
        };
        r.end()?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(f: Frame) {
        let b = f.to_bytes();
        assert_eq!(b.len(), f.encoded_len(), "{f:?}");
        assert_eq!(Frame::decode(b).unwrap(), f);
    }

    #[test]
    fn every_frame_type_round_trips() {
        let s = StreamId(7);
        rt(Frame::Settings(Settings {
            max_message_size: Some(1 << 20),
            initial_credit: Some(8),
            ..Default::default()
        }));
        rt(Frame::Open(Open {
            stream: s,
            kind: CallKind::Bidi,
            timeout_ms: 1500,
            initial_credit: 16,
            method: Method::new("pkg.Svc/Do").unwrap(),
            metadata: Metadata::new().with("a", "b").unwrap(),
        }));
        rt(Frame::Headers {
            stream: s,
            metadata: Metadata::new(),
        });
        rt(Frame::Message {
            stream: s,
            end_stream: true,
            more: false,
            cursor: None,
            payload: Bytes::from_static(b"hi"),
        });
        rt(Frame::Message {
            stream: s,
            end_stream: false,
            more: true,
            cursor: None,
            payload: Bytes::new(),
        });
        rt(Frame::Message {
            stream: s,
            end_stream: false,
            more: false,
            cursor: Some(Bytes::from_static(b"\0\0\0\x2a")),
            payload: Bytes::from_static(b"hi"),
        });
        rt(Frame::Message {
            stream: s,
            end_stream: false,
            more: false,
            cursor: Some(Bytes::new()),
            payload: Bytes::new(),
        });
        rt(Frame::HalfClose { stream: s });
        rt(Frame::Status {
            stream: s,
            status: Status::new(Code::NotFound, "no such person")
                .with_details(Bytes::from_static(b"\x01")),
            trailers: Metadata::new().with("t", "v").unwrap(),
        });
        rt(Frame::Reset {
            stream: s,
            code: Code::Cancelled,
        });
        rt(Frame::Credit {
            stream: s,
            credit: 5,
        });
        rt(Frame::Ping {
            ack: true,
            data: *b"12345678",
        });
        rt(Frame::GoAway {
            last_stream_id: StreamId(9),
            code: 1000,
            reason: "shutdown".into(),
        });
    }

    #[test]
    fn structural_errors_are_typed() {
        let d = |b: &'static [u8]| Frame::decode(Bytes::from_static(b));
        assert_eq!(d(b"\x03\x00\x00"), Err(FrameError::Empty));
        assert_eq!(
            d(b"\x0c\x00\x00\x00\x00\x01"),
            Err(FrameError::UnknownType(0x0c))
        );
        // A COMPRESSED message is unwrapped before frames are decoded: as a
        // frame (inside a BATCH, or inside another COMPRESSED) it is unknown.
        assert_eq!(
            d(b"\x0b\x00\x00\x00\x00\x00"),
            Err(FrameError::UnknownType(0x0b))
        );
        assert_eq!(d(b"\x0a\x00\x00\x00\x00\x00"), Err(FrameError::Batch));
        assert_eq!(
            d(b"\x03\x00\x00\x00\x00\x00"),
            Err(FrameError::ZeroStreamId)
        );
        assert_eq!(
            d(b"\x08\x00\x00\x00\x00\x01abcdefgh"),
            Err(FrameError::NonZeroStreamId)
        );
        assert_eq!(
            d(b"\x03\x03\x00\x00\x00\x01"),
            Err(FrameError::InvalidFlags)
        );
        assert_eq!(
            d(b"\x03\x06\x00\x00\x00\x01\x00"),
            Err(FrameError::InvalidFlags),
            "a cursor belongs on the last fragment"
        );
        assert_eq!(
            d(b"\x03\x04\x00\x00\x00\x01"),
            Err(FrameError::Truncated),
            "CURSOR without its length"
        );
        assert_eq!(
            d(b"\x03\x04\x00\x00\x00\x01abcd\x05"),
            Err(FrameError::Truncated),
            "a cursor longer than the frame"
        );
        assert_eq!(
            d(b"\x07\x00\x00\x00\x00\x01\x00\x00\x00\x00"),
            Err(FrameError::ZeroCredit)
        );
        assert_eq!(
            d(b"\x07\x00\x00\x00\x00\x01\x00\x00\x00"),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            d(b"\x04\x00\x00\x00\x00\x01x"),
            Err(FrameError::TrailingBytes)
        );
        assert_eq!(
            d(b"\x00\x00\x00\x00\x00\x00\x00\x01"),
            Err(FrameError::InvalidSettingsLength)
        );
        assert_eq!(
            d(b"\x01\x00\x00\x00\x00\x01\x07"),
            Err(FrameError::InvalidKind(7))
        );
        assert_eq!(
            d(b"\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x01\xff\x00\x00"),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn unknown_settings_are_ignored() {
        let f = Frame::decode(Bytes::from_static(
            b"\x00\x00\x00\x00\x00\x00\x00\x63\x00\x00\x00\x01",
        ))
        .unwrap();
        assert_eq!(f, Frame::Settings(Settings::default()));
    }

    #[test]
    fn message_payload_is_a_slice_of_the_input() {
        let input = Frame::Message {
            stream: StreamId(1),
            end_stream: false,
            more: false,
            cursor: None,
            payload: Bytes::from(vec![7u8; 100]),
        }
        .to_bytes();
        let base = input.as_ptr() as usize;
        let Frame::Message { payload, .. } = Frame::decode(input).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(payload.as_ptr() as usize, base + HEADER_LEN);
    }
}
