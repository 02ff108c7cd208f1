//! Data message framing after the link stage: the 6-byte mini header or the
//! 18-byte full header, an incremental decoder and a serial-keeping encoder.

use super::caps::{Caps, common_cap};
use super::error::ProtoError;
use super::wire::{Put, Reader, len_u32};

/// Size of `SpiceMiniDataHeader`: u16 type, u32 size.
pub const MINI_HEADER_SIZE: usize = 6;
/// Size of `SpiceDataHeader`: u64 serial, u16 type, u32 size, u32 sub_list.
pub const FULL_HEADER_SIZE: usize = 18;
/// Default limit for client → server message bodies (1 MiB).
pub const DEFAULT_MAX_CLIENT_MESSAGE: usize = 1 << 20;

/// Which data header a channel uses (the same in both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    /// 6 bytes: u16 type, u32 size.
    Mini,
    /// 18 bytes: u64 serial, u16 type, u32 size, u32 sub_list.
    Full,
}

impl HeaderKind {
    /// The mini header is used iff both sides advertised `MINI_HEADER`.
    pub fn negotiate(server_advertises_mini: bool, client_common_caps: &Caps) -> Self {
        if server_advertises_mini && client_common_caps.has(common_cap::MINI_HEADER) {
            HeaderKind::Mini
        } else {
            HeaderKind::Full
        }
    }

    /// Header length in bytes.
    pub fn size(self) -> usize {
        match self {
            HeaderKind::Mini => MINI_HEADER_SIZE,
            HeaderKind::Full => FULL_HEADER_SIZE,
        }
    }
}

/// A server → client message that knows its type and body layout.
///
/// Builders in [`super::base`], [`super::main_chan`], [`super::display`] and
/// [`super::inputs`] implement it; frame them with [`FrameEncoder::encode`].
pub trait ServerMessage {
    /// Message type number.
    const MSG_TYPE: u16;

    /// Appends the message body (without header) to `out`.
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError>;

    /// The message body (without header).
    fn to_body(&self) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::new();
        self.write_body(&mut out)?;
        Ok(out)
    }
}

fn put_header(out: &mut Vec<u8>, kind: HeaderKind, serial: u64, msg_type: u16, size: u32) {
    match kind {
        HeaderKind::Mini => {
            out.put_u16(msg_type);
            out.put_u32(size);
        }
        HeaderKind::Full => {
            out.put_u64(serial);
            out.put_u16(msg_type);
            out.put_u32(size);
            out.put_u32(0);
        }
    }
}

/// Frames one message: increments `*serial` (so serials start at 1 when it
/// starts at 0), then returns header + body. The serial is only written with
/// the full header but is counted either way.
pub fn frame_message(
    mini: bool,
    serial: &mut u64,
    msg_type: u16,
    body: &[u8],
) -> Result<Vec<u8>, ProtoError> {
    let kind = if mini {
        HeaderKind::Mini
    } else {
        HeaderKind::Full
    };
    let size = len_u32("message body size", body.len())?;
    *serial += 1;
    let mut out = Vec::with_capacity(kind.size() + body.len());
    put_header(&mut out, kind, *serial, msg_type, size);
    out.extend_from_slice(body);
    Ok(out)
}

/// Frames server → client messages for one channel and keeps its serial.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    kind: HeaderKind,
    serial: u64,
}

impl FrameEncoder {
    /// A new encoder; the first message gets serial 1.
    pub fn new(kind: HeaderKind) -> Self {
        Self { kind, serial: 0 }
    }

    /// Header kind in use.
    pub fn kind(&self) -> HeaderKind {
        self.kind
    }

    /// Serial of the last message framed (0 before the first).
    pub fn last_serial(&self) -> u64 {
        self.serial
    }

    /// Builds only the header for a body of `body_len` bytes and counts the
    /// message. Write exactly `body_len` body bytes after it.
    pub fn header(&mut self, msg_type: u16, body_len: usize) -> Result<Vec<u8>, ProtoError> {
        let size = len_u32("message body size", body_len)?;
        self.serial += 1;
        let mut out = Vec::with_capacity(self.kind.size());
        put_header(&mut out, self.kind, self.serial, msg_type, size);
        Ok(out)
    }

    /// Header + `body`.
    pub fn frame(&mut self, msg_type: u16, body: &[u8]) -> Result<Vec<u8>, ProtoError> {
        let mut out = self.header(msg_type, body.len())?;
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Header + body of a typed message.
    pub fn encode<M: ServerMessage>(&mut self, msg: &M) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::new();
        self.encode_into(msg, &mut out)?;
        Ok(out)
    }

    /// Appends header + body of a typed message to `out` (for batching
    /// several messages into one write). On error `out` and the serial are
    /// left unchanged.
    pub fn encode_into<M: ServerMessage>(
        &mut self,
        msg: &M,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        let start = out.len();
        let header_size = self.kind.size();
        out.resize(start + header_size, 0);
        let size = msg
            .write_body(out)
            .and_then(|()| len_u32("message body size", out.len() - start - header_size));
        let size = match size {
            Ok(size) => size,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        self.serial += 1;
        let mut header = Vec::with_capacity(header_size);
        put_header(&mut header, self.kind, self.serial, M::MSG_TYPE, size);
        out[start..start + header_size].copy_from_slice(&header);
        Ok(())
    }
}

/// Incremental decoder for client → server messages: feed it bytes as they
/// arrive with [`push`](Self::push), then drain complete messages with
/// [`next_message`](Self::next_message).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    kind: HeaderKind,
    max_size: usize,
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// A decoder for `kind` headers rejecting bodies larger than `max_size`.
    pub fn new(kind: HeaderKind, max_size: usize) -> Self {
        Self {
            kind,
            max_size,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// A decoder with [`DEFAULT_MAX_CLIENT_MESSAGE`] as limit.
    pub fn with_default_limit(kind: HeaderKind) -> Self {
        Self::new(kind, DEFAULT_MAX_CLIENT_MESSAGE)
    }

    /// Header kind in use.
    pub fn kind(&self) -> HeaderKind {
        self.kind
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= 64 * 1024 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message as (type, body), `Ok(None)` if more bytes
    /// are needed. A body larger than the limit is an error as soon as its
    /// header arrives; the connection should then be closed.
    pub fn next_message(&mut self) -> Result<Option<(u16, Vec<u8>)>, ProtoError> {
        let pending = self.buf.get(self.start..).unwrap_or(&[]);
        let header_size = self.kind.size();
        let Some(header) = pending.get(..header_size) else {
            return Ok(None);
        };
        let mut r = Reader::new("data header", header);
        if self.kind == HeaderKind::Full {
            r.u64()?;
        }
        let msg_type = r.u16()?;
        let size = r.u32()?;
        // sub_list (full header) is always 0 from clients and is not used.
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        if size_usize > self.max_size {
            return Err(ProtoError::MessageTooLarge {
                msg_type,
                size: u64::from(size),
                limit: self.max_size,
            });
        }
        let end = header_size.saturating_add(size_usize);
        let Some(body) = pending.get(header_size..end) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.start += end;
        Ok(Some((msg_type, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mini_and_full_headers() {
        let mut serial = 0;
        let mini = frame_message(true, &mut serial, 0x0102, &[9, 8, 7]).unwrap();
        assert_eq!(mini, [0x02, 0x01, 3, 0, 0, 0, 9, 8, 7]);
        assert_eq!(serial, 1);
        let full = frame_message(false, &mut serial, 103, &[1]).unwrap();
        assert_eq!(full.len(), 18 + 1);
        assert_eq!(full[..8], 2u64.to_le_bytes());
        assert_eq!(full[8..10], 103u16.to_le_bytes());
        assert_eq!(full[10..14], 1u32.to_le_bytes());
        assert_eq!(full[14..18], [0, 0, 0, 0]);
        assert_eq!(full[18], 1);
    }

    #[test]
    fn encoder_serials_start_at_one() {
        let mut enc = FrameEncoder::new(HeaderKind::Full);
        let first = enc.frame(102, &[]).unwrap();
        assert_eq!(first[..8], 1u64.to_le_bytes());
        let second = enc.header(123, 40).unwrap();
        assert_eq!(second.len(), 18);
        assert_eq!(second[..8], 2u64.to_le_bytes());
        assert_eq!(second[10..14], 40u32.to_le_bytes());
        assert_eq!(enc.last_serial(), 2);
    }

    struct Fixed;
    impl ServerMessage for Fixed {
        const MSG_TYPE: u16 = 7;
        fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
            out.extend_from_slice(&[1, 2, 3, 4]);
            Ok(())
        }
    }

    struct Failing;
    impl ServerMessage for Failing {
        const MSG_TYPE: u16 = 8;
        fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
            out.push(1);
            Err(ProtoError::FieldOverflow {
                what: "x",
                value: 1,
                max: 0,
            })
        }
    }

    #[test]
    fn encode_into_batches_and_rolls_back() {
        let mut enc = FrameEncoder::new(HeaderKind::Mini);
        let mut out = vec![0xAA];
        enc.encode_into(&Fixed, &mut out).unwrap();
        assert_eq!(out, [0xAA, 7, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
        assert!(enc.encode_into(&Failing, &mut out).is_err());
        assert_eq!(out.len(), 11);
        assert_eq!(enc.last_serial(), 1);
        assert_eq!(enc.encode(&Fixed).unwrap(), out[1..]);
    }

    #[test]
    fn decoder_handles_split_and_coalesced_input() {
        for kind in [HeaderKind::Mini, HeaderKind::Full] {
            let mut enc = FrameEncoder::new(kind);
            let mut stream = enc.frame(101, &[1; 14]).unwrap();
            stream.extend(enc.frame(2, &[]).unwrap());
            stream.extend(enc.frame(3, &[5; 12]).unwrap());
            let mut dec = FrameDecoder::with_default_limit(kind);
            let mut got = Vec::new();
            for byte in &stream {
                dec.push(std::slice::from_ref(byte));
                while let Some(m) = dec.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![(101, vec![1; 14]), (2, vec![]), (3, vec![5; 12])]);
            assert_eq!(dec.buffered(), 0);
            dec.push(&stream);
            assert_eq!(dec.next_message().unwrap().unwrap().0, 101);
            assert_eq!(dec.next_message().unwrap().unwrap().0, 2);
            assert_eq!(dec.next_message().unwrap().unwrap().0, 3);
            assert_eq!(dec.next_message().unwrap(), None);
        }
    }

    #[test]
    fn decoder_rejects_oversize_from_header_alone() {
        let mut dec = FrameDecoder::new(HeaderKind::Mini, 1024);
        dec.push(&[101, 0]);
        dec.push(&2000u32.to_le_bytes());
        let err = dec.next_message().unwrap_err();
        assert_eq!(
            err.to_string(),
            "message type 101 size 2000 exceeds limit 1024"
        );
        let mut dec = FrameDecoder::new(HeaderKind::Mini, usize::MAX);
        dec.push(&[1, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(dec.next_message().unwrap(), None);
    }

    #[test]
    fn decoder_compacts_buffer() {
        let mut dec = FrameDecoder::with_default_limit(HeaderKind::Mini);
        let mut enc = FrameEncoder::new(HeaderKind::Mini);
        let msg = enc.frame(9, &[0; 1000]).unwrap();
        // Keep a partial message buffered so the buffer never drains fully.
        dec.push(&msg[..3]);
        for _ in 0..500 {
            dec.push(&msg[3..]);
            dec.push(&msg[..3]);
            assert_eq!(dec.next_message().unwrap().unwrap().1.len(), 1000);
            assert!(dec.next_message().unwrap().is_none());
            assert_eq!(dec.buffered(), 3);
        }
        assert!(dec.buf.len() < 200 * 1024, "{}", dec.buf.len());
    }

    #[test]
    fn negotiation() {
        let client = Caps::from_words(vec![0x0D]);
        assert_eq!(HeaderKind::negotiate(true, &client), HeaderKind::Mini);
        assert_eq!(HeaderKind::negotiate(false, &client), HeaderKind::Full);
        let old = Caps::from_words(vec![0x01]);
        assert_eq!(HeaderKind::negotiate(true, &old), HeaderKind::Full);
    }
}
