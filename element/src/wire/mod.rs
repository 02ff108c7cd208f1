// SPDX-License-Identifier: MPL-2.0
//! Wire format of the `spicedmabufsrc` `socket-path=PATH` socket.
//!
//! The socket is `AF_UNIX` / `SOCK_SEQPACKET`: one message is one packet of at most
//! [`MAX_PACKET`] bytes, and the file descriptors a message needs ride on that packet as
//! `SCM_RIGHTS` ancillary data. The full specification, with tables and an example session, is
//! `docs/socket-protocol.md`; this module is its reference implementation.
//!
//! The module has two layers:
//!
//! - a sans-I/O codec: [`Message`], [`encode`] and [`decode`]. File descriptors travel beside a
//!   message, never inside it: [`decode`] only needs to know how many arrived, so it can check
//!   that count against the message;
//! - thin socket helpers: [`send_packet`] / [`recv_packet`] move one packet plus its fds,
//!   [`send_message`] / [`recv_message`] add the codec on top, and [`socket_pair`] makes a
//!   connected pair (for tests and in-process use).
//!
//! Every packet is an 8-byte header followed by a body, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"SDMB"` ([`MAGIC`]) |
//! | 4 | 2 | protocol version, `1` ([`VERSION`]) |
//! | 6 | 2 | message type ([`TYPE_SCANOUT`] … [`TYPE_HELLO`]) |
//! | 8 | … | body, see [`Message`] |

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// First four bytes of every packet.
pub const MAGIC: [u8; 4] = *b"SDMB";
/// Protocol version carried in every header (and in HELLO).
pub const VERSION: u16 = 1;
/// Size of the packet header (magic, version, type).
pub const HEADER_LEN: usize = 8;
/// Largest packet either side sends or accepts, header included.
pub const MAX_PACKET: usize = 4096;
/// Largest number of planes (and therefore fds) in a SCANOUT.
pub const MAX_PLANES: usize = 4;
/// Longest ERROR or HELLO text that fits in one packet.
pub const MAX_TEXT: usize = MAX_PACKET - HEADER_LEN - 8;

/// DRM format modifier of a linear buffer.
pub const MOD_LINEAR: u64 = 0;
/// `DRM_FORMAT_MOD_INVALID`: the layout is implicit (driver-defined, usually linear).
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// SCANOUT flag bit 0: row 0 of the buffer is the top of the picture.
pub const FLAG_Y0_TOP: u32 = 1;
/// Every SCANOUT flag bit this version defines; the others must be 0.
pub const KNOWN_FLAGS: u32 = FLAG_Y0_TOP;

/// Message type of SCANOUT (producer → element).
pub const TYPE_SCANOUT: u16 = 1;
/// Message type of DRAW (producer → element).
pub const TYPE_DRAW: u16 = 2;
/// Message type of DONE (element → producer).
pub const TYPE_DONE: u16 = 3;
/// Message type of ERROR (element → producer).
pub const TYPE_ERROR: u16 = 4;
/// Message type of HELLO (either direction, optional).
pub const TYPE_HELLO: u16 = 5;

/// Fixed part of a SCANOUT body: width, height, fourcc, flags, modifier, num_planes.
const SCANOUT_FIXED: usize = 4 + 4 + 4 + 4 + 8 + 4;
/// Size of one `{ offset, stride }` entry of a SCANOUT body.
const PLANE_LEN: usize = 8;
/// Body size of DRAW: x, y, w, h, draw_id.
const DRAW_LEN: usize = 4 * 4 + 8;
/// Body size of DONE: draw_id, status.
const DONE_LEN: usize = 8 + 4;
/// Fixed part of an ERROR or HELLO body: two u32 before the text.
const TEXT_FIXED: usize = 8;

/// Codes carried by ERROR messages (the `code` field of [`Message::Error`]).
///
/// The code says what kind of problem it was; the text says which one. A producer should log
/// the text and may act on the code.
pub mod error_code {
    /// The packet could not be decoded (any [`WireError`](super::WireError), including a
    /// truncated packet), or it is a well-formed message the element does not take (DONE,
    /// ERROR). The packet was ignored.
    pub const MALFORMED: u32 = 1;
    /// A well-formed SCANOUT the element cannot use: unknown fourcc, unsupported modifier,
    /// planes outside the buffer, fd not mappable. The element has no usable scanout
    /// afterwards, so DRAWs are refused until a usable SCANOUT arrives.
    pub const BAD_SCANOUT: u32 = 2;
    /// A DRAW was refused (no usable scanout, or the rectangle is not inside it). Its DONE
    /// carries status REFUSED.
    pub const DRAW_REFUSED: u32 = 3;
}

/// Outcome of a DRAW, carried by DONE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DoneStatus {
    /// 0: the pipeline used the frame and has freed the memory.
    Released = 0,
    /// 1: the frame was not used: a newer DRAW superseded it before the pipeline took it, or
    /// the element was flushing or stopping.
    Dropped = 1,
    /// 2: the DRAW was invalid: no scanout, rectangle outside the scanout, unusable scanout.
    Refused = 2,
}

impl DoneStatus {
    /// The value on the wire.
    pub const fn to_u32(self) -> u32 {
        self as u32
    }

    /// The status for a wire value, `None` if the value is not defined.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::Released),
            1 => Some(Self::Dropped),
            2 => Some(Self::Refused),
            _ => None,
        }
    }

    /// Upper-case name as used in the documentation (`"RELEASED"` …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Released => "RELEASED",
            Self::Dropped => "DROPPED",
            Self::Refused => "REFUSED",
        }
    }
}

impl fmt::Display for DoneStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Layout of one plane of a scanout inside its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlaneLayout {
    /// Byte offset of the plane's first row in the plane's fd.
    pub offset: u32,
    /// Bytes from the start of one row to the start of the next.
    pub stride: u32,
}

/// One protocol message, without its file descriptors.
///
/// Bodies (after the 8-byte header, little-endian):
///
/// | type | body |
/// |---|---|
/// | 1 SCANOUT | u32 width, u32 height, u32 drm_fourcc, u32 flags, u64 modifier, u32 num_planes, num_planes × { u32 offset, u32 stride }; num_planes fds attached |
/// | 2 DRAW | u32 x, u32 y, u32 w, u32 h, u64 draw_id |
/// | 3 DONE | u64 draw_id, u32 status |
/// | 4 ERROR | u32 code, u32 len, len bytes UTF-8 |
/// | 5 HELLO | u32 protocol_version, u32 len, len bytes UTF-8 |
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Producer → element: the buffer to take frames from from now on. Exactly
    /// `planes.len()` fds travel with it, in plane order. `width == height == 0` with no planes
    /// means "scanout disabled" (see [`Message::scanout_disabled`]).
    Scanout {
        width: u32,
        height: u32,
        /// DRM fourcc (`DRM_FORMAT_*`), e.g. `XR24` = `0x34325258`.
        fourcc: u32,
        /// Flag bit 0: row 0 of the buffer is the top of the picture.
        y0_top: bool,
        /// DRM format modifier; [`MOD_LINEAR`] or [`MOD_INVALID`] for implicit.
        modifier: u64,
        /// 0..=[`MAX_PLANES`] entries.
        planes: Vec<PlaneLayout>,
    },
    /// Producer → element: the rectangle changed, take a frame from the current scanout.
    /// Answered by exactly one [`Message::Done`] with the same `draw_id`.
    Draw {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        draw_id: u64,
    },
    /// Element → producer: the outcome of the DRAW with this `draw_id`.
    Done { draw_id: u64, status: DoneStatus },
    /// Element → producer: a malformed or refused message. `code` is one of [`error_code`].
    Error { code: u32, text: String },
    /// Either direction, optional: who is talking. Receivers only log it.
    Hello { version: u32, name: String },
}

impl Message {
    /// The "scanout disabled" SCANOUT: no size, no planes, no fds.
    pub fn scanout_disabled() -> Self {
        Self::Scanout {
            width: 0,
            height: 0,
            fourcc: 0,
            y0_top: false,
            modifier: MOD_LINEAR,
            planes: Vec::new(),
        }
    }

    /// True for a SCANOUT that disables the scanout (no planes, zero size).
    pub fn is_scanout_disabled(&self) -> bool {
        matches!(self, Self::Scanout { width: 0, height: 0, planes, .. } if planes.is_empty())
    }

    /// An ERROR message; `text` is cut (at a character boundary) to [`MAX_TEXT`] bytes so the
    /// packet always fits.
    pub fn error(code: u32, text: impl Into<String>) -> Self {
        Self::Error {
            code,
            text: truncate_text(text.into()),
        }
    }

    /// A HELLO message for this protocol version; `name` is cut to [`MAX_TEXT`] bytes.
    pub fn hello(name: impl Into<String>) -> Self {
        Self::Hello {
            version: u32::from(VERSION),
            name: truncate_text(name.into()),
        }
    }

    /// The header type of this message ([`TYPE_SCANOUT`] …).
    pub fn type_id(&self) -> u16 {
        match self {
            Self::Scanout { .. } => TYPE_SCANOUT,
            Self::Draw { .. } => TYPE_DRAW,
            Self::Done { .. } => TYPE_DONE,
            Self::Error { .. } => TYPE_ERROR,
            Self::Hello { .. } => TYPE_HELLO,
        }
    }

    /// Upper-case name of the message type (`"SCANOUT"` …).
    pub fn name(&self) -> &'static str {
        type_name(self.type_id()).unwrap_or("?")
    }

    /// How many fds must travel with this message (planes of a SCANOUT, 0 otherwise).
    pub fn fd_count(&self) -> usize {
        match self {
            Self::Scanout { planes, .. } => planes.len(),
            _ => 0,
        }
    }
}

/// Upper-case name of a message type, `None` if the type is unknown.
pub fn type_name(type_id: u16) -> Option<&'static str> {
    Some(match type_id {
        TYPE_SCANOUT => "SCANOUT",
        TYPE_DRAW => "DRAW",
        TYPE_DONE => "DONE",
        TYPE_ERROR => "ERROR",
        TYPE_HELLO => "HELLO",
        _ => return None,
    })
}

/// True if the rectangle `x, y, w, h` is non-empty and lies inside a `width × height` scanout
/// (no overflow). A DRAW that fails this check is answered with DONE REFUSED.
pub fn rect_in_bounds(x: u32, y: u32, w: u32, h: u32, width: u32, height: u32) -> bool {
    w > 0
        && h > 0
        && x.checked_add(w).is_some_and(|r| r <= width)
        && y.checked_add(h).is_some_and(|b| b <= height)
}

/// Readable form of a DRM fourcc for logs and ERROR texts: `"XR24 (0x34325258)"`, or only the
/// hex value when the four bytes are not printable ASCII.
pub fn fourcc_name(fourcc: u32) -> String {
    let bytes = fourcc.to_le_bytes();
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        format!("{text} (0x{fourcc:08x})")
    } else {
        format!("0x{fourcc:08x}")
    }
}

fn truncate_text(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn hex_bytes(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Why a packet could not be decoded, sent or received.
///
/// The `Display` form is a one-line description suitable for an ERROR text.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the 8-byte header.
    #[error("packet is {len} bytes, shorter than the 8-byte header")]
    ShortHeader { len: usize },
    /// More bytes than [`MAX_PACKET`].
    #[error("packet is {len} bytes, more than the {MAX_PACKET}-byte maximum")]
    PacketTooLong { len: usize },
    /// The first four bytes are not `b"SDMB"`.
    #[error("bad magic {}, expected 0x53444d42 (\"SDMB\")", hex_bytes(.found))]
    BadMagic { found: [u8; 4] },
    /// The header carries another protocol version.
    #[error("unsupported protocol version {found}, expected {VERSION}")]
    BadVersion { found: u16 },
    /// The header carries a type this version does not define.
    #[error("unknown message type {type_id}")]
    UnknownType { type_id: u16 },
    /// The body has the wrong size for a fixed-size message or for the declared plane count.
    #[error("{kind}: body is {len} bytes, expected {expected}")]
    BodyLength {
        kind: &'static str,
        len: usize,
        expected: usize,
    },
    /// The body is too short to hold the fixed fields of a variable-size message.
    #[error("{kind}: body is {len} bytes, expected at least {min}")]
    BodyTooShort {
        kind: &'static str,
        len: usize,
        min: usize,
    },
    /// ERROR/HELLO: the declared text length does not match the bytes that follow it.
    #[error("{kind}: text length {declared} declared but {available} bytes follow")]
    TextLength {
        kind: &'static str,
        declared: u32,
        available: usize,
    },
    /// ERROR/HELLO: the text is not UTF-8.
    #[error("{kind}: text is not valid UTF-8 (bad byte at offset {offset})")]
    BadUtf8 { kind: &'static str, offset: usize },
    /// SCANOUT: `num_planes` is more than [`MAX_PLANES`].
    #[error("SCANOUT: {planes} planes declared, at most {MAX_PLANES} allowed")]
    TooManyPlanes { planes: u32 },
    /// SCANOUT: flag bits other than [`KNOWN_FLAGS`] are set.
    #[error("SCANOUT: unknown flag bits 0x{unknown:08x} set (flags 0x{flags:08x})", unknown = .flags & !KNOWN_FLAGS)]
    BadFlags { flags: u32 },
    /// SCANOUT: no planes but a non-zero size, or planes but a zero width or height.
    #[error(
        "SCANOUT: {planes} {} with size {width}x{height}; a disabled scanout has 0 planes and size 0x0, an enabled one at least 1 plane and a non-zero size",
        plural(*.planes, "plane", "planes")
    )]
    BadDisabled {
        width: u32,
        height: u32,
        planes: usize,
    },
    /// SCANOUT: the number of attached fds differs from `num_planes`.
    #[error(
        "SCANOUT: {planes} {} declared but {nfds} {} attached",
        plural(*.planes, "plane", "planes"),
        plural(*.nfds, "fd", "fds")
    )]
    FdCount { planes: usize, nfds: usize },
    /// A message other than SCANOUT arrived with fds.
    #[error("{kind}: {nfds} {} attached, expected none", plural(*.nfds, "fd", "fds"))]
    UnexpectedFds { kind: &'static str, nfds: usize },
    /// DONE: the status is not 0, 1 or 2.
    #[error("DONE: unknown status {status}")]
    BadStatus { status: u32 },
    /// The received packet was longer than [`MAX_PACKET`]; the kernel discarded the excess.
    #[error("packet truncated: longer than the {MAX_PACKET}-byte maximum")]
    PacketTruncated,
    /// More than [`MAX_PLANES`] fds came with one packet. Any the kernel could not deliver
    /// were closed by it, the others are closed on drop.
    #[error("more than {MAX_PLANES} fds attached to one packet")]
    TooManyFds,
    /// The socket call failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl WireError {
    /// True if the connection should be closed after this error: the peer speaks another
    /// protocol or version (bad magic, bad version), or the socket itself failed.
    ///
    /// Every other error concerns one packet only: packet boundaries are preserved by
    /// `SOCK_SEQPACKET`, so the receiver answers ERROR ([`error_code::MALFORMED`]) and reads
    /// the next packet. A would-block or interrupted socket call is not fatal either.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::BadMagic { .. } | Self::BadVersion { .. } => true,
            Self::Io(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
            _ => false,
        }
    }

    /// The ERROR code to report this error with.
    pub fn error_code(&self) -> u32 {
        error_code::MALFORMED
    }
}

// ---------------------------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------------------------

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn text(&mut self, s: &str) {
        // A text longer than u32::MAX cannot be described; `Message::error`/`hello` keep it
        // far below that, and `decode` rejects any packet over MAX_PACKET anyway.
        self.u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Encodes `msg` as one packet (header + body).
///
/// Encoding does not validate: a message that breaks the rules (more than [`MAX_PLANES`]
/// planes, a text that does not fit in [`MAX_PACKET`]) is written as given and rejected by the
/// receiver's [`decode`]. Use [`Message::error`] and [`Message::hello`] to build texts that fit.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.0.extend_from_slice(&MAGIC);
    w.u16(VERSION);
    w.u16(msg.type_id());
    match msg {
        Message::Scanout {
            width,
            height,
            fourcc,
            y0_top,
            modifier,
            planes,
        } => {
            w.u32(*width);
            w.u32(*height);
            w.u32(*fourcc);
            w.u32(if *y0_top { FLAG_Y0_TOP } else { 0 });
            w.u64(*modifier);
            w.u32(u32::try_from(planes.len()).unwrap_or(u32::MAX));
            for p in planes {
                w.u32(p.offset);
                w.u32(p.stride);
            }
        }
        Message::Draw {
            x,
            y,
            w: width,
            h,
            draw_id,
        } => {
            w.u32(*x);
            w.u32(*y);
            w.u32(*width);
            w.u32(*h);
            w.u64(*draw_id);
        }
        Message::Done { draw_id, status } => {
            w.u64(*draw_id);
            w.u32(status.to_u32());
        }
        Message::Error { code, text } => {
            w.u32(*code);
            w.text(text);
        }
        Message::Hello { version, name } => {
            w.u32(*version);
            w.text(name);
        }
    }
    w.0
}

/// Reads little-endian fields from a body whose length was checked beforehand. Running short
/// still yields an error rather than a panic.
struct Reader<'a> {
    kind: &'static str,
    body_len: usize,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(kind: &'static str, body: &'a [u8]) -> Self {
        Self {
            kind,
            body_len: body.len(),
            rest: body,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(WireError::BodyTooShort {
                kind: self.kind,
                len: self.body_len,
                min: self.body_len - self.rest.len() + N,
            })?;
        self.rest = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    /// `u32 len` + that many UTF-8 bytes, which must be exactly the rest of the body.
    fn text(&mut self) -> Result<String, WireError> {
        let declared = self.u32()?;
        let available = self.rest.len();
        if usize::try_from(declared).ok() != Some(available) {
            return Err(WireError::TextLength {
                kind: self.kind,
                declared,
                available,
            });
        }
        let bytes = std::mem::take(&mut self.rest);
        String::from_utf8(bytes.to_vec()).map_err(|e| WireError::BadUtf8 {
            kind: self.kind,
            offset: e.utf8_error().valid_up_to(),
        })
    }
}

fn exact_len(kind: &'static str, body: &[u8], expected: usize) -> Result<(), WireError> {
    if body.len() == expected {
        Ok(())
    } else {
        Err(WireError::BodyLength {
            kind,
            len: body.len(),
            expected,
        })
    }
}

fn min_len(kind: &'static str, body: &[u8], min: usize) -> Result<(), WireError> {
    if body.len() >= min {
        Ok(())
    } else {
        Err(WireError::BodyTooShort {
            kind,
            len: body.len(),
            min,
        })
    }
}

/// Decodes one packet that arrived with `nfds` file descriptors.
///
/// Checks, in this order: packet size (header present, at most [`MAX_PACKET`]), magic, version,
/// type, body length (exact: a short body and trailing bytes are both errors), the per-type
/// rules (SCANOUT: `num_planes <= MAX_PLANES`, no unknown flags, the disabled form
/// 0 planes ⇔ size 0x0; DONE: status defined; ERROR/HELLO: text length and UTF-8), and last
/// the fds: `nfds == num_planes` for SCANOUT, `nfds == 0` for every other type.
///
/// A decoded message re-encodes to exactly the same bytes.
pub fn decode(packet: &[u8], nfds: usize) -> Result<Message, WireError> {
    if packet.len() < HEADER_LEN {
        return Err(WireError::ShortHeader { len: packet.len() });
    }
    if packet.len() > MAX_PACKET {
        return Err(WireError::PacketTooLong { len: packet.len() });
    }
    let (header, body) = packet.split_at(HEADER_LEN);
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(WireError::BadMagic { found: magic });
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(WireError::BadVersion { found: version });
    }
    let type_id = u16::from_le_bytes([header[6], header[7]]);
    let kind = type_name(type_id).ok_or(WireError::UnknownType { type_id })?;
    let msg = decode_body(type_id, kind, body)?;
    // Fds last: a packet that is wrong as bytes is reported as such, whatever came with it.
    let expected = msg.fd_count();
    if nfds != expected {
        return Err(match msg {
            Message::Scanout { .. } => WireError::FdCount {
                planes: expected,
                nfds,
            },
            _ => WireError::UnexpectedFds { kind, nfds },
        });
    }
    Ok(msg)
}

fn decode_body(type_id: u16, kind: &'static str, body: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader::new(kind, body);
    match type_id {
        TYPE_SCANOUT => {
            min_len(kind, body, SCANOUT_FIXED)?;
            let width = r.u32()?;
            let height = r.u32()?;
            let fourcc = r.u32()?;
            let flags = r.u32()?;
            let modifier = r.u64()?;
            let num_planes = r.u32()?;
            let planes_len = usize::try_from(num_planes)
                .ok()
                .filter(|&n| n <= MAX_PLANES)
                .ok_or(WireError::TooManyPlanes { planes: num_planes })?;
            exact_len(kind, body, SCANOUT_FIXED + planes_len * PLANE_LEN)?;
            if flags & !KNOWN_FLAGS != 0 {
                return Err(WireError::BadFlags { flags });
            }
            let disabled_size = width == 0 && height == 0;
            let zero_side = width == 0 || height == 0;
            if (planes_len == 0 && !disabled_size) || (planes_len > 0 && zero_side) {
                return Err(WireError::BadDisabled {
                    width,
                    height,
                    planes: planes_len,
                });
            }
            let mut planes = Vec::with_capacity(planes_len);
            for _ in 0..planes_len {
                let offset = r.u32()?;
                let stride = r.u32()?;
                planes.push(PlaneLayout { offset, stride });
            }
            Ok(Message::Scanout {
                width,
                height,
                fourcc,
                y0_top: flags & FLAG_Y0_TOP != 0,
                modifier,
                planes,
            })
        }
        TYPE_DRAW => {
            exact_len(kind, body, DRAW_LEN)?;
            Ok(Message::Draw {
                x: r.u32()?,
                y: r.u32()?,
                w: r.u32()?,
                h: r.u32()?,
                draw_id: r.u64()?,
            })
        }
        TYPE_DONE => {
            exact_len(kind, body, DONE_LEN)?;
            let draw_id = r.u64()?;
            let status = r.u32()?;
            let status = DoneStatus::from_u32(status).ok_or(WireError::BadStatus { status })?;
            Ok(Message::Done { draw_id, status })
        }
        TYPE_ERROR => {
            min_len(kind, body, TEXT_FIXED)?;
            let code = r.u32()?;
            let text = r.text()?;
            Ok(Message::Error { code, text })
        }
        TYPE_HELLO => {
            min_len(kind, body, TEXT_FIXED)?;
            let version = r.u32()?;
            let name = r.text()?;
            Ok(Message::Hello { version, name })
        }
        _ => Err(WireError::UnknownType { type_id }),
    }
}

// ---------------------------------------------------------------------------------------------
// Socket helpers
// ---------------------------------------------------------------------------------------------

/// A connected, close-on-exec `AF_UNIX` / `SOCK_SEQPACKET` pair.
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends `bytes` as one packet with `fds` attached as `SCM_RIGHTS` (`MSG_NOSIGNAL`: a closed
/// peer gives `EPIPE`, not `SIGPIPE`). Retries on `EINTR`.
///
/// The receiver gets its own copies of the fds; the caller keeps (and still owns) `fds`.
/// Fails with `InvalidInput` if `bytes` is empty or longer than [`MAX_PACKET`] or if more than
/// [`MAX_PLANES`] fds are given. On a non-blocking socket a full buffer gives `WouldBlock`
/// and nothing is sent.
pub fn send_packet(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.is_empty() || bytes.len() > MAX_PACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("packet of {} bytes, must be 1..={MAX_PACKET}", bytes.len()),
        ));
    }
    if fds.len() > MAX_PLANES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} fds, at most {MAX_PLANES} per packet", fds.len()),
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_PLANES))];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other(
                "SCM_RIGHTS does not fit the control buffer",
            ));
        }
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short send: {n} of {} bytes", bytes.len()),
                ));
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one packet into `buf` and the fds attached to it (close-on-exec, owned by the
/// caller). Retries on `EINTR`.
///
/// Returns `Ok(None)` at end of stream: the peer closed (0 bytes and no fds), or reset the
/// connection (`ECONNRESET`). Producers never send empty packets, so an empty packet cannot be
/// confused with the end. A packet longer than [`MAX_PACKET`] gives
/// [`WireError::PacketTruncated`], more than [`MAX_PLANES`] fds [`WireError::TooManyFds`];
/// the fds that did arrive with such a packet are closed, and the connection can go on with
/// the next packet. Other failures are [`WireError::Io`] (`WouldBlock` on a non-blocking socket
/// with nothing to read).
pub fn recv_packet(
    sock: BorrowedFd<'_>,
    buf: &mut [u8; MAX_PACKET],
) -> Result<Option<(usize, Vec<OwnedFd>)>, WireError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_PLANES))];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let res = rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        );
        let msg = match res {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(Errno::CONNRESET) => return Ok(None),
            Err(e) => return Err(WireError::Io(e.into())),
        };
        // Take ownership of every fd first, so that each one is closed on every path below.
        let mut fds = Vec::new();
        for cmsg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_PLANES {
            return Err(WireError::TooManyFds);
        }
        if msg.flags.contains(ReturnFlags::TRUNC) || msg.bytes > MAX_PACKET {
            return Err(WireError::PacketTruncated);
        }
        if msg.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        return Ok(Some((msg.bytes, fds)));
    }
}

/// Encodes `msg` and sends it with `fds` (which must be exactly [`Message::fd_count`]).
pub fn send_message(sock: BorrowedFd<'_>, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() != msg.fd_count() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} needs {} fds, {} given",
                msg.name(),
                msg.fd_count(),
                fds.len()
            ),
        ));
    }
    send_packet(sock, &encode(msg), fds)
}

/// Receives and decodes one message. `Ok(None)` at end of stream; the fds are returned beside
/// the message in plane order (empty for anything but SCANOUT). If decoding fails, the fds
/// that came with the packet are closed.
pub fn recv_message(
    sock: BorrowedFd<'_>,
    buf: &mut [u8; MAX_PACKET],
) -> Result<Option<(Message, Vec<OwnedFd>)>, WireError> {
    match recv_packet(sock, buf)? {
        None => Ok(None),
        Some((len, fds)) => {
            let msg = decode(&buf[..len], fds.len())?;
            Ok(Some((msg, fds)))
        }
    }
}

#[cfg(test)]
mod tests;
