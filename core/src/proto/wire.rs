//! Little-endian, packed encoding helpers: a bounds-checked reader and
//! append-only writers. Nothing here can panic on short input.

use super::error::ProtoError;

/// Fails with [`ProtoError::Truncated`] unless `bytes` holds at least `need` bytes.
pub(crate) fn need(what: &'static str, bytes: &[u8], need: usize) -> Result<(), ProtoError> {
    if bytes.len() < need {
        Err(ProtoError::Truncated {
            what,
            got: bytes.len(),
            need,
        })
    } else {
        Ok(())
    }
}

/// Converts a length to a `u32` wire field.
pub(crate) fn len_u32(what: &'static str, len: usize) -> Result<u32, ProtoError> {
    u32::try_from(len).map_err(|_| ProtoError::FieldOverflow {
        what,
        value: len as u64,
        max: u64::from(u32::MAX),
    })
}

/// Converts a length to a `u16` wire field.
pub(crate) fn len_u16(what: &'static str, len: usize) -> Result<u16, ProtoError> {
    u16::try_from(len).map_err(|_| ProtoError::FieldOverflow {
        what,
        value: len as u64,
        max: u64::from(u16::MAX),
    })
}

/// A cursor over untrusted bytes. Every read is bounds-checked.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`; `what` names the structure in error messages.
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Self { what, buf, pos: 0 }
    }

    /// Takes the next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated {
            what: self.what,
            got: self.buf.len(),
            need: usize::MAX,
        })?;
        let out = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated {
            what: self.what,
            got: self.buf.len(),
            need: end,
        })?;
        self.pos = end;
        Ok(out)
    }

    /// Takes the next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtoError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ProtoError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

/// Little-endian append helpers for `Vec<u8>`.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_i32(&mut self, v: i32);
    fn put_u64(&mut self, v: u64);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i32(&mut self, v: i32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}
