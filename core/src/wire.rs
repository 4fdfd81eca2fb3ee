//! Bounded little-endian reading and writing of payload fields.
//!
//! Not a format of its own: the protocol modules describe their layouts and use these helpers.
//! Invariant: a [`Reader`] never reads past its slice and never allocates more than the bytes
//! that remain, so an untrusted length or count cannot make it allocate or panic.

use crate::protocol::ProtocolError;

/// Reads fixed-width little-endian fields from a payload.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the structure in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, what }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(ProtocolError::Truncated {
                what: self.what,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }
    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// An `i32`.
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count of items of at least `item_bytes` each: refused when larger than `max` or than
    /// the remaining bytes could hold, so callers may allocate `count` items.
    pub fn count(&mut self, max: u32, item_bytes: usize) -> Result<usize, ProtocolError> {
        let n = self.u32()?;
        let fits = (n as usize).saturating_mul(item_bytes.max(1)) <= self.buf.len();
        if n > max || !fits {
            return Err(ProtocolError::BadCount {
                what: self.what,
                count: u64::from(n),
                max: u64::from(max),
            });
        }
        Ok(n as usize)
    }

    /// A `u32`-length-prefixed byte string of at most `max` bytes.
    pub fn blob(&mut self, max: u32) -> Result<&'a [u8], ProtocolError> {
        let n = self.count(max, 1)?;
        self.bytes(n)
    }

    /// A `u32`-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: u32) -> Result<String, ProtocolError> {
        let b = self.blob(max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::Invalid {
                what: self.what,
                reason: "string is not UTF-8".into(),
            })
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Invalid {
                what: self.what,
                reason: format!("{} trailing bytes", self.buf.len()),
            })
        }
    }
}

/// Appends fixed-width little-endian fields.
#[derive(Debug, Default)]
pub struct Writer {
    /// Bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }
    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// A `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// An `i32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// A `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// A count (u32; callers keep counts within the decoder's bounds).
    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }
    /// A `u32`-length-prefixed byte string.
    pub fn blob(&mut self, b: &[u8]) -> &mut Self {
        self.count(b.len()).bytes(b)
    }
    /// The bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}
