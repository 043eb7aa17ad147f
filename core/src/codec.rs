//! Small, checked big-endian read/write primitives shared by the frame codecs.
//!
//! Every read checks the remaining length first, so a truncated frame is a
//! typed error and never a panic; no read allocates.

use bytes::{BufMut, Bytes};

use crate::error::FrameError;

/// A cursor over a received frame. Byte strings are handed out as zero-copy
/// slices of the underlying [`Bytes`].
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes, pos: usize) -> Self {
        Self { buf, pos }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.remaining() < n {
            return Err(FrameError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(crate) fn array8(&mut self) -> Result<[u8; 8], FrameError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// `n` bytes as a zero-copy slice.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, FrameError> {
        if self.remaining() < n {
            return Err(FrameError::Truncated);
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn end(&self) -> Result<(), FrameError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes)
        }
    }
}

/// Writes a `u16` length-prefixed byte string. The caller guarantees the
/// length fits (checked when the value was built).
pub(crate) fn put_str16(out: &mut impl BufMut, s: &[u8]) {
    debug_assert!(s.len() <= u16::MAX as usize);
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}
