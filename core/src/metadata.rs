//! Call metadata: request headers, response headers and trailers.
//!
//! Keys are 1 to 255 bytes of `[0-9a-z-_.]` (lowercase, as in HTTP/2 and
//! gRPC). Keys ending in `-bin` carry arbitrary bytes; all other values are
//! printable ASCII (0x20..=0x7E). Received metadata is kept as zero-copy
//! slices of the received frame.

use bytes::{BufMut, Bytes};

use crate::codec::{Reader, put_str16};
use crate::error::{FrameError, MetadataError};

/// Longest metadata key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// An ordered multimap of metadata entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(Bytes, Bytes)>,
}

fn valid_key(k: &[u8]) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_LEN
        && k.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
}

fn valid_value(k: &[u8], v: &[u8]) -> bool {
    v.len() <= u16::MAX as usize
        && (k.ends_with(b"-bin") || v.iter().all(|&b| (0x20..=0x7e).contains(&b)))
}

impl Metadata {
    /// An empty map (does not allocate).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry, validating key and value.
    pub fn insert(&mut self, key: &str, value: impl Into<Bytes>) -> Result<(), MetadataError> {
        let value = value.into();
        if !valid_key(key.as_bytes()) {
            return Err(MetadataError::InvalidKey(key.to_owned()));
        }
        if !valid_value(key.as_bytes(), &value) {
            return Err(MetadataError::InvalidValue(key.to_owned()));
        }
        self.entries
            .push((Bytes::copy_from_slice(key.as_bytes()), value));
        Ok(())
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, key: &str, value: impl Into<Bytes>) -> Result<Self, MetadataError> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Removes every entry for `key`; returns how many there were.
    pub fn remove(&mut self, key: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k.as_ref() != key.as_bytes());
        before - self.entries.len()
    }

    /// The first value for `key` as text (`None` for a `-bin` value that is not UTF-8).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All entries in order, keys as text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        // Keys are validated ASCII on every path that builds a Metadata.
        self.entries
            .iter()
            .map(|(k, v)| (std::str::from_utf8(k).unwrap_or(""), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size of the encoded block in bytes (what the metadata limit counts).
    pub fn encoded_len(&self) -> usize {
        2 + self
            .entries
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum::<usize>()
    }

    pub(crate) fn encode(&self, out: &mut impl BufMut) {
        debug_assert!(self.entries.len() <= u16::MAX as usize);
        out.put_u16(self.entries.len() as u16);
        for (k, v) in &self.entries {
            put_str16(out, k);
            put_str16(out, v);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let count = r.u16()? as usize;
        if count == 0 {
            return Ok(Self::new());
        }
        // Every entry takes at least 4 bytes: check before reserving memory.
        if count * 4 > r.remaining() {
            return Err(FrameError::Truncated);
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let klen = r.u16()? as usize;
            let key = r.bytes(klen)?;
            if !valid_key(&key) {
                return Err(FrameError::InvalidMetadataKey);
            }
            let vlen = r.u16()? as usize;
            let value = r.bytes(vlen)?;
            if !valid_value(&key, &value) {
                return Err(FrameError::InvalidMetadataValue);
            }
            entries.push((key, value));
        }
        Ok(Self { entries })
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Metadata {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(0..=4)?;
        let mut m = Metadata::new();
        for i in 0..n {
            let bin = bool::arbitrary(u)?;
            let key = if bin {
                format!("k{i}-bin")
            } else {
                format!("k{i}")
            };
            let raw = Vec::<u8>::arbitrary(u)?;
            let value: Vec<u8> = if bin {
                raw
            } else {
                raw.into_iter().map(|b| 0x20 + b % 0x5f).collect()
            };
            let _ = m.insert(&key, value);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_validated() {
        let mut m = Metadata::new();
        assert!(m.insert("x-request-id", "abc 123").is_ok());
        assert!(m.insert("trace-bin", vec![0u8, 255, 10]).is_ok());
        assert_eq!(
            m.insert("Upper", "v"),
            Err(MetadataError::InvalidKey("Upper".into()))
        );
        assert_eq!(
            m.insert("", "v"),
            Err(MetadataError::InvalidKey(String::new()))
        );
        assert_eq!(
            m.insert("text", "a\nb"),
            Err(MetadataError::InvalidValue("text".into()))
        );
        assert_eq!(m.get_str("x-request-id"), Some("abc 123"));
        assert_eq!(m.get("trace-bin").map(|b| b.len()), Some(3));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn encode_decode_round_trip_and_len() {
        let m = Metadata::new()
            .with("a", "1")
            .unwrap()
            .with("b-bin", vec![0u8; 3])
            .unwrap();
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(buf.len(), m.encoded_len());
        let b = Bytes::from(buf);
        let mut r = Reader::new(&b, 0);
        assert_eq!(Metadata::decode(&mut r).unwrap(), m);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn huge_count_is_rejected_before_allocating() {
        let b = Bytes::from_static(&[0xff, 0xff, 0, 1]);
        let mut r = Reader::new(&b, 0);
        assert_eq!(Metadata::decode(&mut r), Err(FrameError::Truncated));
    }
}
