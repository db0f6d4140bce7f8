//! The compact binary encoding shared by transactions, blocks and stored state.
//!
//! Integers are little-endian and fixed-width; variable fields carry a length
//! prefix that is checked against a named limit before anything is allocated.
//! Decoding untrusted bytes returns `DecodeError`; it never panics.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends before the value does.
    #[error("input ends early: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Where the missing bytes were wanted.
        offset: usize,
        /// How many were missing.
        needed: usize,
    },
    /// A length prefix is over its named limit (checked before allocating).
    #[error("{field} is {length} long, over its limit of {limit}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The length it declared.
        length: usize,
        /// Its limit.
        limit: usize,
    },
    /// A tag names no known variant.
    #[error("unknown {field} tag {tag}")]
    UnknownTag {
        /// The field.
        field: &'static str,
        /// The tag read.
        tag: u8,
    },
    /// A version byte this build does not read.
    #[error("unsupported encoding version {0}")]
    Version(u8),
    /// A text field that is not UTF-8.
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    /// Bytes left after a whole value: encodings are canonical, so this is refused.
    #[error("{count} bytes left over after the value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A field whose value is out of its range.
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

/// Why a value could not be encoded: a field over its limit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field over its named limit.
    #[error("{field} is {length} long, over its limit of {limit}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        length: usize,
        /// Its limit.
        limit: usize,
    },
}

/// Appends fields to a byte buffer.
#[derive(Default)]
pub struct Encoder {
    /// What has been encoded so far.
    pub bytes: Vec<u8>,
}

impl Encoder {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// One byte.
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// Sixteen bytes, little-endian.
    pub fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    /// One byte, 0 or 1.
    pub fn bool(&mut self, value: bool) {
        self.bytes.push(u8::from(value));
    }
    /// Fixed-size bytes, as they are (no length prefix).
    pub fn array(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
    }
    /// A length-prefixed (u16) byte string of at most `limit` bytes.
    pub fn bytes(&mut self, field: &'static str, value: &[u8], limit: usize) -> Result<(), EncodeError> {
        if value.len() > limit || value.len() > usize::from(u16::MAX) {
            return Err(EncodeError::TooLong { field, length: value.len(), limit });
        }
        self.u16(value.len() as u16);
        self.array(value);
        Ok(())
    }
    /// A length-prefixed UTF-8 string, refused over `limit` bytes.
    pub fn text(&mut self, field: &'static str, value: &str, limit: usize) -> Result<(), EncodeError> {
        self.bytes(field, value.as_bytes(), limit)
    }
    /// A count prefix (u16) for a list of at most `limit` items.
    pub fn count(&mut self, field: &'static str, count: usize, limit: usize) -> Result<(), EncodeError> {
        if count > limit || count > usize::from(u16::MAX) {
            return Err(EncodeError::TooLong { field, length: count, limit });
        }
        self.u16(count as u16);
        Ok(())
    }
}

/// Reads fields from a byte slice, checking every length.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Decoder<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }
    /// Bytes read so far.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }
    /// The next `count` bytes.
    pub fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < count {
            return Err(DecodeError::Truncated { offset: self.offset, needed: count - self.remaining() });
        }
        let slice = &self.bytes[self.offset..self.offset + count];
        self.offset += count;
        Ok(slice)
    }
    /// The next `N` bytes, as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Sixteen bytes, little-endian.
    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array()?))
    }
    /// Reads the encoding version byte and refuses any other version than this build's.
    pub fn version(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            crate::model::ENCODING_VERSION => Ok(()),
            other => Err(DecodeError::Version(other)),
        }
    }
    /// One byte, which must be 0 or 1.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(field)),
        }
    }
    /// Length-prefixed bytes, refused over `limit` before anything is allocated.
    pub fn bytes(&mut self, field: &'static str, limit: usize) -> Result<&'a [u8], DecodeError> {
        let length = usize::from(self.u16()?);
        if length > limit {
            return Err(DecodeError::TooLong { field, length, limit });
        }
        self.take(length)
    }
    /// A length-prefixed UTF-8 string, refused over `limit` bytes.
    pub fn text(&mut self, field: &'static str, limit: usize) -> Result<String, DecodeError> {
        let raw = self.bytes(field, limit)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| DecodeError::Utf8(field))
    }
    /// A count of items that follow, refused over `limit`.
    pub fn count(&mut self, field: &'static str, limit: usize) -> Result<usize, DecodeError> {
        let count = usize::from(self.u16()?);
        if count > limit {
            return Err(DecodeError::TooLong { field, length: count, limit });
        }
        Ok(count)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// A value with a canonical encoding.
pub trait Codec: Sized {
    /// Appends the value's encoding.
    fn encode_into(&self, encoder: &mut Encoder) -> Result<(), EncodeError>;
    /// Reads one value, leaving the decoder after it.
    fn decode_from(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError>;

    /// Bytes to reserve before encoding: most values (state entries, index entries,
    /// headers) fit in the default, so encoding them allocates once instead of growing
    /// the buffer push by push; large values give their own estimate.
    fn encoded_size_hint(&self) -> usize {
        128
    }

    /// The value's whole encoding.
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut encoder = Encoder { bytes: Vec::with_capacity(self.encoded_size_hint()) };
        self.encode_into(&mut encoder)?;
        Ok(encoder.bytes)
    }
    /// Decodes a whole byte string: leftover bytes are an error.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut decoder = Decoder::new(bytes);
        let value = Self::decode_from(&mut decoder)?;
        decoder.finish()?;
        Ok(value)
    }
}
