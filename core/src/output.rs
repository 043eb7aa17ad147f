//! The output side of a connection in one place: the arena frames are
//! encoded into, the frames chosen but not yet encoded ([`Piece`]), and
//! packing of frames ready together into one BATCH message.

use bytes::{BufMut, Bytes, BytesMut};

use crate::call::StreamId;
use crate::event::Transmit;
use crate::frame::{self, BATCH_ENTRY_PREFIX, Frame, HEADER_LEN};

/// Largest output arena chunk (frames are carved out of it). Chunks start at
/// `MIN_CHUNK` and double with each new one, so an idle connection keeps a
/// small buffer and a busy one soon allocates rarely.
const OUT_CHUNK: usize = 16 * 1024;
const MIN_CHUNK: usize = 128;

/// A v1 frame chosen to go out, not yet encoded (so it can be written alone
/// or straight into a BATCH).
#[derive(Debug)]
pub(crate) enum Piece {
    Control(Frame),
    /// A call's frame encoded when it was queued (OPEN, HEADERS, STATUS...).
    Encoded(Bytes),
    /// A MESSAGE frame carrying `data[lo..hi]`.
    Message {
        id: StreamId,
        flags: u8,
        data: Bytes,
        lo: usize,
        hi: usize,
    },
}

impl Piece {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Piece::Control(f) => f.encoded_len(),
            Piece::Encoded(b) => b.len(),
            Piece::Message { lo, hi, .. } => HEADER_LEN + hi - lo,
        }
    }
    #[inline]
    fn write(self, out: &mut BytesMut) {
        match self {
            Piece::Control(f) => f.encode(out),
            Piece::Encoded(b) => out.put_slice(&b),
            Piece::Message {
                id,
                flags,
                data,
                lo,
                hi,
            } => frame::encode_message(out, id, flags, &data[lo..hi]),
        }
    }
}

/// What goes out next: a frame, or a message that is never packed (legacy
/// messages, the close).
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A frame, which may share a BATCH.
    Piece(Piece),
    /// A message sent alone.
    Whole(Transmit),
}

/// Where outgoing frames are encoded: control frames of calls carved one by
/// one (`carve`), BATCH messages built in a buffer of their own.
#[derive(Debug)]
pub(crate) struct Arena {
    out: BytesMut,
    batch: BytesMut,
    /// Size of the next chunk to reserve.
    chunk: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Self {
            out: BytesMut::new(),
            batch: BytesMut::new(),
            chunk: MIN_CHUNK,
        }
    }
}

/// Makes room for `len` more bytes in `buf`, a chunk at a time.
#[inline]
fn room(buf: &mut BytesMut, len: usize, chunk: &mut usize) {
    if buf.capacity() - buf.len() < len {
        buf.reserve(len.max(*chunk));
        *chunk = (*chunk * 2).min(OUT_CHUNK);
    }
}

impl Arena {
    /// Gives the buffers back (frames already carved keep theirs alive
    /// until they are dropped); the next frame starts a small chunk.
    pub(crate) fn release(&mut self) {
        *self = Arena::default();
    }

    /// Encodes `len` bytes with `f` and cuts them off.
    #[inline]
    pub(crate) fn carve(&mut self, len: usize, f: impl FnOnce(&mut BytesMut)) -> Bytes {
        room(&mut self.out, len, &mut self.chunk);
        f(&mut self.out);
        self.out.split().freeze()
    }

    /// A frame as its own message (a frame encoded when it was queued goes
    /// as it is).
    #[inline]
    pub(crate) fn alone(&mut self, p: Piece) -> Transmit {
        if let Piece::Encoded(b) = p {
            return Transmit::Binary(b);
        }
        let len = p.len();
        Transmit::Binary(self.carve(len, |out| p.write(out)))
    }

    /// Starts a BATCH of at most `budget` payload bytes with its first two
    /// frames (the caller checked they fit). Frames are encoded straight
    /// into it: no copy per frame.
    #[inline]
    pub(crate) fn batch(&mut self, budget: usize, first: Piece, second: Piece) -> Batch {
        let mut out = std::mem::take(&mut self.batch);
        let end = HEADER_LEN + budget;
        let (a, b) = (first.len(), second.len());
        // Room for a whole batch once the connection is busy (the chunk has
        // grown), so entries are not copied to a larger buffer midway.
        let want = (HEADER_LEN + 2 * BATCH_ENTRY_PREFIX + a + b).max(end.min(self.chunk));
        room(&mut out, want, &mut self.chunk);
        out.put_u8(frame::kind::BATCH);
        out.put_bytes(0, HEADER_LEN - 1);
        let mut batch = Batch { out, end };
        batch.entry(first, a);
        batch.entry(second, b);
        batch
    }

    /// The finished BATCH message; its buffer's rest is kept for the next.
    #[inline]
    pub(crate) fn seal(&mut self, mut batch: Batch) -> Transmit {
        let msg = batch.out.split().freeze();
        self.batch = batch.out;
        Transmit::Binary(msg)
    }

    /// Adds `p` to `batch` when it fits; gives it back otherwise.
    #[inline]
    pub(crate) fn add(&mut self, batch: &mut Batch, p: Piece) -> Result<(), Piece> {
        let len = p.len();
        if batch.out.len() + BATCH_ENTRY_PREFIX + len > batch.end {
            return Err(p);
        }
        room(&mut batch.out, BATCH_ENTRY_PREFIX + len, &mut self.chunk);
        batch.entry(p, len);
        Ok(())
    }
}

/// A BATCH message being built.
pub(crate) struct Batch {
    out: BytesMut,
    end: usize,
}

impl Batch {
    /// True while a smallest frame (a bare header) still fits.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.out.len() + BATCH_ENTRY_PREFIX + HEADER_LEN <= self.end
    }

    /// Writes an entry: the length (it fits in a `u16`: the budget is at
    /// most `u16::MAX`), then the frame.
    #[inline]
    fn entry(&mut self, p: Piece, len: usize) {
        self.out.put_u16(len as u16);
        p.write(&mut self.out);
    }
}

/// True when two frames of these lengths fit in one BATCH of `budget`.
#[inline]
pub(crate) fn pair_fits(budget: usize, a: usize, b: usize) -> bool {
    2 * BATCH_ENTRY_PREFIX + a + b <= budget
}
