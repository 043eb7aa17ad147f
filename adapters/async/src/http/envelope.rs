//! The length-prefixed messages every HTTP protocol here carries (gRPC,
//! gRPC-Web, Connect streaming): one flags byte, a 4-byte big-endian
//! length, the message. The decoder is incremental and bounded: a length
//! past the limit is refused from the prefix, before anything is buffered
//! for it; gRPC-Web's text mode is base64 decoded on the way in, in whole
//! 4-character groups.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use zrpc_core::Status;

/// The flags bit of a compressed message.
pub(crate) const COMPRESSED: u8 = 0x01;
/// gRPC-Web: the frame carries trailers.
pub(crate) const WEB_TRAILERS: u8 = 0x80;
/// Connect: the end-of-stream message.
pub(crate) const END_STREAM: u8 = 0x02;

/// Prefix size.
pub(crate) const PREFIX: usize = 5;

/// Response messages smaller than this go uncompressed even when the
/// client accepts gzip (the flag is per message).
pub(crate) const COMPRESS_MIN: usize = 1024;

/// Inflates a gzip payload, refusing (from the inflated bytes, as they are
/// produced) output past `max`: a bomb costs at most `max` bytes.
pub(crate) fn gunzip(data: &[u8], max: usize) -> Result<Bytes, DecodeError> {
    use std::io::Read;
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(_) => Err(DecodeError::BadGzip),
        Ok(n) if n > max => Err(DecodeError::TooLarge { len: n, max }),
        Ok(_) => Ok(out.into()),
    }
}

/// Deflates `data` as gzip.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Frames `payload` with its prefix (one copy, into one buffer the
/// transport writes whole).
pub(crate) fn encode(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(PREFIX + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// How a request body is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Length-prefixed messages.
    Enveloped,
    /// Length-prefixed messages, the whole body base64 (gRPC-Web text).
    Base64Enveloped,
    /// The whole body is one message (Connect unary).
    Whole,
}

/// Why a body could not be decoded: each is the status the call ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A message (by its prefix, or a whole body) over the limit.
    TooLarge { len: usize, max: usize },
    /// The body ended inside a message.
    Truncated,
    /// Text mode: not base64.
    BadBase64,
    /// A compressed message where no encoding was agreed.
    Compressed,
    /// Flags this protocol does not define for requests.
    BadFlags(u8),
    /// A gzip message that does not inflate.
    BadGzip,
    /// The server-wide bound on received bytes held is reached.
    ServerFull,
}

impl DecodeError {
    pub(crate) fn status(&self) -> Status {
        match self {
            DecodeError::TooLarge { len, max } => Status::resource_exhausted(format!(
                "request message of {len} bytes is over the limit of {max} bytes"
            )),
            DecodeError::Truncated => {
                Status::internal("the request body ended inside a message (truncated)")
            }
            DecodeError::BadBase64 => {
                Status::internal("the grpc-web-text request body is not valid base64")
            }
            DecodeError::Compressed => Status::internal(
                "a compressed message without a negotiated encoding (grpc-encoding)",
            ),
            DecodeError::ServerFull => Status::resource_exhausted(
                "the server holds as many received bytes as it allows (max_server_receive_buffer)",
            ),
            DecodeError::BadGzip => {
                Status::internal("a gzip request message that does not inflate")
            }
            DecodeError::BadFlags(f) => {
                Status::internal(format!("a request message with unknown flags {f:#04x}"))
            }
        }
    }
}

/// Cuts a request body into messages.
pub(crate) struct Decoder {
    framing: Framing,
    max: usize,
    buf: BytesMut,
    /// Text mode: base64 characters not yet decoded (fewer than 4).
    pending: Vec<u8>,
    /// Set once the body is refused: every later call fails the same way.
    failed: Option<DecodeError>,
    /// The request's encoding is gzip (compressed messages are inflated).
    gzip: bool,
}

impl Decoder {
    pub(crate) fn new(framing: Framing, max: usize) -> Self {
        Self {
            framing,
            max,
            buf: BytesMut::new(),
            pending: Vec::new(),
            failed: None,
            gzip: false,
        }
    }

    /// Compressed messages (or, for a whole-body call, the body) are gzip.
    pub(crate) fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// Bytes held for messages not yet handed over.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() + self.pending.len()
    }

    /// Drops what is held and refuses the rest of the body with `e`.
    pub(crate) fn refuse(&mut self, e: DecodeError) {
        self.failed = Some(e);
        self.buf = BytesMut::new();
        self.pending = Vec::new();
    }

    /// Adds received body bytes; fails when they cannot be part of a valid
    /// body (then nothing more is buffered).
    pub(crate) fn push(&mut self, data: Bytes) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = match self.framing {
            Framing::Base64Enveloped => self.push_base64(&data),
            Framing::Whole if self.buf.len() + data.len() > self.max => {
                Err(DecodeError::TooLarge {
                    len: self.buf.len() + data.len(),
                    max: self.max,
                })
            }
            _ => {
                self.buf.extend_from_slice(&data);
                Ok(())
            }
        };
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.buf = BytesMut::new();
        }
        r
    }

    fn push_base64(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut data = data;
        // Complete the group left over from the last chunk.
        while !self.pending.is_empty() && !data.is_empty() {
            self.pending.push(data[0]);
            data = &data[1..];
            if self.pending.len() == 4 {
                let mut out = [0u8; 3];
                let n = engine
                    .decode_slice(&self.pending, &mut out)
                    .map_err(|_| DecodeError::BadBase64)?;
                self.buf.extend_from_slice(&out[..n]);
                self.pending.clear();
            }
        }
        let whole = data.len() / 4 * 4;
        // Each group stands alone (padded chunks may be concatenated), so
        // decode group runs up to and including any padded group.
        let mut rest = &data[..whole];
        while !rest.is_empty() {
            let end = rest
                .chunks(4)
                .position(|g| g.contains(&b'='))
                .map_or(rest.len(), |i| (i + 1) * 4);
            let decoded = engine
                .decode(&rest[..end])
                .map_err(|_| DecodeError::BadBase64)?;
            self.buf.extend_from_slice(&decoded);
            rest = &rest[end..];
        }
        self.pending.extend_from_slice(&data[whole..]);
        Ok(())
    }

    /// The next whole message, if one is buffered.
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.framing == Framing::Whole || self.buf.len() < PREFIX {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let fail = |this: &mut Self, e: DecodeError| {
            this.failed = Some(e.clone());
            this.buf = BytesMut::new();
            Err(e)
        };
        if flags & COMPRESSED != 0 && !self.gzip {
            return fail(self, DecodeError::Compressed);
        }
        if flags & !COMPRESSED != 0 {
            return fail(self, DecodeError::BadFlags(flags));
        }
        if len > self.max {
            return fail(self, DecodeError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < PREFIX + len {
            // Nothing reserved for the announced length: the buffer grows
            // with the bytes that actually came (a prefix alone costs a
            // peer nothing on each of its streams).
            return Ok(None);
        }
        let _ = self.buf.split_to(PREFIX);
        let payload = self.buf.split_to(len).freeze();
        if flags & COMPRESSED != 0 {
            return match gunzip(&payload, self.max) {
                Ok(m) => Ok(Some(m)),
                Err(e) => fail(self, e),
            };
        }
        Ok(Some(payload))
    }

    /// The body ended: the last message (whole-body framing), or a check
    /// that nothing is left half-received.
    pub(crate) fn finish(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.framing {
            Framing::Whole => {
                // Handed over once: an empty enveloped body is what is left.
                self.framing = Framing::Enveloped;
                let body = std::mem::take(&mut self.buf).freeze();
                if self.gzip {
                    return gunzip(&body, self.max).map(Some);
                }
                Ok(Some(body))
            }
            _ if self.buf.is_empty() && self.pending.is_empty() => Ok(None),
            _ => Err(DecodeError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Decoder) -> Vec<Bytes> {
        let mut v = Vec::new();
        while let Some(m) = d.next().unwrap() {
            v.push(m);
        }
        v
    }

    #[test]
    fn messages_across_chunks() {
        let mut wire = encode(0, b"hello").to_vec();
        wire.extend_from_slice(&encode(0, b""));
        wire.extend_from_slice(&encode(0, b"world!"));
        for cut in 0..wire.len() {
            let mut d = Decoder::new(Framing::Enveloped, 100);
            d.push(Bytes::copy_from_slice(&wire[..cut])).unwrap();
            let mut got = all(&mut d);
            d.push(Bytes::copy_from_slice(&wire[cut..])).unwrap();
            got.extend(all(&mut d));
            assert_eq!(got, vec!["hello", "", "world!"]);
            assert_eq!(d.finish().unwrap(), None);
        }
    }

    #[test]
    fn bounds_and_faults() {
        let mut d = Decoder::new(Framing::Enveloped, 4);
        d.push(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff]))
            .unwrap();
        assert_eq!(
            d.next(),
            Err(DecodeError::TooLarge {
                len: u32::MAX as usize,
                max: 4
            })
        );
        let mut d = Decoder::new(Framing::Enveloped, 4);
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9])).unwrap();
        assert_eq!(d.next(), Err(DecodeError::Compressed));
        let mut d = Decoder::new(Framing::Enveloped, 4);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 3, 9])).unwrap();
        assert_eq!(d.next(), Ok(None));
        assert_eq!(d.finish(), Err(DecodeError::Truncated));
        let mut d = Decoder::new(Framing::Whole, 4);
        assert!(d.push(Bytes::from_static(b"12345")).is_err());
        let mut d = Decoder::new(Framing::Base64Enveloped, 4);
        assert_eq!(
            d.push(Bytes::from_static(b"!!!!")),
            Err(DecodeError::BadBase64)
        );
    }

    #[test]
    fn gzip_messages_and_bombs() {
        let packed = gzip(b"hello hello hello");
        let mut wire = vec![COMPRESSED];
        wire.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        wire.extend_from_slice(&packed);
        let mut d = Decoder::new(Framing::Enveloped, 100).gzip(true);
        d.push(Bytes::from(wire.clone())).unwrap();
        assert_eq!(d.next().unwrap().unwrap(), "hello hello hello");
        // Without gzip negotiated, the flag is refused.
        let mut d = Decoder::new(Framing::Enveloped, 100);
        d.push(Bytes::from(wire)).unwrap();
        assert_eq!(d.next(), Err(DecodeError::Compressed));
        // 1 MiB of zeros in a few KiB: refused at the limit, not inflated whole.
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 16 * 1024, "{}", bomb.len());
        let mut wire = vec![COMPRESSED];
        wire.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
        wire.extend_from_slice(&bomb);
        let mut d = Decoder::new(Framing::Enveloped, 64 * 1024).gzip(true);
        d.push(Bytes::from(wire)).unwrap();
        assert!(matches!(d.next(), Err(DecodeError::TooLarge { .. })));
        assert_eq!(gunzip(b"not gzip", 10), Err(DecodeError::BadGzip));
    }

    #[test]
    fn text_mode_groups_and_padded_chunks() {
        let engine = &base64::engine::general_purpose::STANDARD;
        // Each message base64'd on its own (padded), then concatenated.
        let text = format!(
            "{}{}",
            engine.encode(encode(0, b"ab")),
            engine.encode(encode(0, b"xyz1"))
        );
        for cut in 0..text.len() {
            let mut d = Decoder::new(Framing::Base64Enveloped, 100);
            d.push(Bytes::copy_from_slice(&text.as_bytes()[..cut]))
                .unwrap();
            let mut got = all(&mut d);
            d.push(Bytes::copy_from_slice(&text.as_bytes()[cut..]))
                .unwrap();
            got.extend(all(&mut d));
            assert_eq!(got, vec!["ab", "xyz1"], "cut at {cut}");
            assert_eq!(d.finish().unwrap(), None);
        }
    }
}
