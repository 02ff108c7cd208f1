//! Cursor channel (channel type 4) messages, the conversion of QEMU cursor
//! shapes to the wire's `SpiceCursor`, and the client cursor cache
//! bookkeeping.
//!
//! Sources: spice-common `spice.proto` (`CursorHeader`, `Cursor`,
//! `channel CursorChannel`), spice-protocol `spice/enums.h`
//! (`SpiceCursorType`, `SpiceCursorFlags`, `SPICE_MSG_CURSOR_*`), spice-server
//! 0.15 `server/cursor-channel.cpp` / `cursor-channel-client.cpp` /
//! `cache-item.tmpl.cpp`, spice-gtk 0.42 `src/channel-cursor.c` and
//! `src/spice-widget.c`.
//!
//! # Wire layout (little-endian, packed)
//!
//! * `Point16` = i16 x, i16 y.
//! * `SpiceCursor` = u16 flags; **only if `flags & NONE == 0`** the 17-byte
//!   `CursorHeader` (u64 unique, u8 type, u16 width, u16 height,
//!   u16 hot_spot_x, u16 hot_spot_y); then the pixel data **to the end of the
//!   message** (there is no length field: the client takes
//!   `message_end - pos`). A cursor is therefore always the last field.
//! * For type ALPHA the data is `width * height` 32-bit pixels, bytes
//!   B, G, R, A in memory (= ARGB8888 words stored little-endian).
//!
//! # What spice-gtk 0.42 does with it (`channel-cursor.c`)
//!
//! * INIT clears its cache, decodes the cursor, sets `init_done`, emits
//!   `cursor-set` if there is a cursor, and `cursor-hide` if `visible == 0` or
//!   there is no cursor (flags NONE). A second INIT without RESET is refused
//!   (`g_return_if_fail(init_done == FALSE)`).
//! * SET, MOVE, TRAIL and INVAL_ONE are ignored with a critical until INIT was
//!   received (`g_return_if_fail(init_done == TRUE)`). HIDE and INVAL_ALL work
//!   any time.
//! * SET ignores its `position` and `visible` fields; INIT ignores its
//!   `position`. Only MOVE positions the cursor. A SET whose cursor is NONE
//!   (or an unknown FROM_CACHE id) emits `cursor-hide`.
//! * RESET clears the cache, emits `cursor-reset` and clears `init_done`: a new
//!   INIT is needed before the next SET/MOVE.
//! * ALPHA pixels are copied as they are and only bytes 0 and 2 are swapped,
//!   giving R, G, B, A bytes, which are handed to `cursor-set` and to the
//!   `cursor` property, and wrapped by the widget with
//!   `gdk_pixbuf_new_from_data(..., GDK_COLORSPACE_RGB, has_alpha=TRUE, 8, ...)`.
//!   GdkPixbuf holds **straight (non-premultiplied) alpha** and
//!   `gdk_cairo_surface_create_from_pixbuf` premultiplies it when it makes the
//!   cursor surface, so the wire expects straight alpha. QEMU's own SPICE path
//!   (`ui/spice-display.c` `qemu_spice_create_cursor_update`) copies
//!   `QEMUCursor::data` unchanged into an ALPHA cursor, and so does
//!   [`CursorShape::to_alpha_bytes`]. A source known to hold premultiplied
//!   pixels (e.g. a KMS cursor plane) can be converted with
//!   [`CursorShape::unpremultiplied`].
//! * The client cache is an unbounded hash table keyed by `unique`; a
//!   FROM_CACHE cursor is looked up by the header's `unique` and the cached
//!   header is used. The server bounds it ([`CursorCache`]).
//!
//! Checked against the Debian spice-gtk 0.42 client (`cli/tests/cursor_client.py`
//! fed by a scripted server sending this module's test vectors): every point
//! above, including FROM_CACHE hits, a FROM_CACHE miss after INVAL_ONE or
//! INVAL_ALL (critical + `cursor-hide`), SET/MOVE before INIT and after RESET
//! (critical, dropped), a second INIT (critical, dropped), and the 2x2 pixels
//! arriving as R, G, B, A. The INIT layout also matches QEMU 7.2 +
//! spice-server 0.15.1 byte for byte (see the capture test).

use super::base::{ClientBaseMsg, parse_client_base};
use super::error::ProtoError;
use super::framing::ServerMessage;
use super::wire::Put;

/// Cursor channel message types (`SPICE_MSG_CURSOR_*`, server → client).
/// The cursor channel has no client → server messages besides the base ones.
pub mod cursor_msg {
    /// Initial state: position, trail, visible, cursor. Must come first.
    pub const INIT: u16 = 101;
    /// Clears the cache and the init state (empty).
    pub const RESET: u16 = 102;
    /// New shape: position (ignored by spice-gtk), visible (ignored), cursor.
    pub const SET: u16 = 103;
    /// New position: Point16.
    pub const MOVE: u16 = 104;
    /// Hide the cursor (empty).
    pub const HIDE: u16 = 105;
    /// Trail: u16 length, u16 frequency (spice-gtk: "TODO" warning).
    pub const TRAIL: u16 = 106;
    /// Drop one cache entry: u64 id.
    pub const INVAL_ONE: u16 = 107;
    /// Drop every cache entry (empty).
    pub const INVAL_ALL: u16 = 108;
}

/// `SpiceCursorType` (u8 in the header).
pub mod cursor_type {
    /// 32-bit pixels, bytes B, G, R, A (straight alpha).
    pub const ALPHA: u8 = 0;
    /// AND + XOR 1-bit masks.
    pub const MONO: u8 = 1;
    /// 4-bit palette + mask.
    pub const COLOR4: u8 = 2;
    /// 8-bit palette + mask (not decoded by spice-gtk).
    pub const COLOR8: u8 = 3;
    /// 16-bit 555 + mask.
    pub const COLOR16: u8 = 4;
    /// 24-bit + mask (not decoded by spice-gtk).
    pub const COLOR24: u8 = 5;
    /// 32-bit xRGB + mask.
    pub const COLOR32: u8 = 6;
}

/// `SpiceCursorFlags` (u16, first field of `SpiceCursor`).
pub mod cursor_flags {
    /// No cursor: no header, no data follow.
    pub const NONE: u16 = 1;
    /// The client must store the cursor under the header's `unique`.
    pub const CACHE_ME: u16 = 2;
    /// The client must take the cursor from its cache (header, no data).
    pub const FROM_CACHE: u16 = 4;
}

/// Largest cursor width or height [`CursorShape`] accepts.
pub const MAX_CURSOR_SIZE: u32 = 512;
/// Size of `CursorHeader` on the wire.
pub const CURSOR_HEADER_SIZE: usize = 17;
/// Cache entries the server lets the client hold (spice-server's
/// `CLIENT_CURSOR_CACHE_SIZE`, one unit per cursor).
pub const CURSOR_CACHE_ENTRIES: usize = 256;
/// Pixel bytes the server lets the client cache (not a spice-server limit:
/// it bounds the client's memory, and ours, since entries keep their shape).
pub const CURSOR_CACHE_BYTES: usize = 8 << 20;

/// `Point16`: i16 x, i16 y (4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Point16 {
    /// X in primary-surface pixels.
    pub x: i16,
    /// Y in primary-surface pixels.
    pub y: i16,
}

impl Point16 {
    /// A point from wider coordinates, each clamped to the i16 range.
    pub fn clamped(x: i32, y: i32) -> Self {
        let c = |v: i32| i16::try_from(v).unwrap_or(if v < 0 { i16::MIN } else { i16::MAX });
        Self { x: c(x), y: c(y) }
    }

    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.x.to_le_bytes());
        out.extend_from_slice(&self.y.to_le_bytes());
    }
}

/// `CursorHeader` (17 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorHeader {
    /// Cache key; spice-server never caches unique 0.
    pub unique: u64,
    /// See [`cursor_type`].
    pub cursor_type: u8,
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Hot spot X.
    pub hot_spot_x: u16,
    /// Hot spot Y.
    pub hot_spot_y: u16,
}

impl CursorHeader {
    fn put(&self, out: &mut Vec<u8>) {
        out.put_u64(self.unique);
        out.put_u8(self.cursor_type);
        out.put_u16(self.width);
        out.put_u16(self.height);
        out.put_u16(self.hot_spot_x);
        out.put_u16(self.hot_spot_y);
    }
}

/// The wire's `SpiceCursor`: always the last field of INIT and SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiceCursor {
    /// flags NONE: no header, no data. spice-gtk emits `cursor-hide`.
    None,
    /// A full cursor: header and pixel data; flags CACHE_ME if `cache_me`,
    /// else 0.
    Data {
        /// Header (its `unique` is the cache key when `cache_me`).
        header: CursorHeader,
        /// Ask the client to cache it under `header.unique`.
        cache_me: bool,
        /// Pixel data in the format of `header.cursor_type`.
        data: Vec<u8>,
    },
    /// flags FROM_CACHE: the header (whose `unique` the client looks up), no data.
    FromCache {
        /// Header of the cached cursor.
        header: CursorHeader,
    },
}

impl SpiceCursor {
    /// The `flags` field.
    pub fn flags(&self) -> u16 {
        match self {
            SpiceCursor::None => cursor_flags::NONE,
            SpiceCursor::Data { cache_me: true, .. } => cursor_flags::CACHE_ME,
            SpiceCursor::Data {
                cache_me: false, ..
            } => 0,
            SpiceCursor::FromCache { .. } => cursor_flags::FROM_CACHE,
        }
    }

    /// The header, unless NONE.
    pub fn header(&self) -> Option<&CursorHeader> {
        match self {
            SpiceCursor::None => None,
            SpiceCursor::Data { header, .. } | SpiceCursor::FromCache { header } => Some(header),
        }
    }

    /// Encoded size in bytes.
    pub fn wire_len(&self) -> usize {
        match self {
            SpiceCursor::None => 2,
            SpiceCursor::Data { data, .. } => 2 + CURSOR_HEADER_SIZE + data.len(),
            SpiceCursor::FromCache { .. } => 2 + CURSOR_HEADER_SIZE,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.put_u16(self.flags());
        if let Some(header) = self.header() {
            header.put(out);
        }
        if let SpiceCursor::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
    }
}

/// Why a cursor shape was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorShapeError {
    /// Width or height is 0 (or negative).
    #[error("cursor size {width}x{height} is empty")]
    ZeroSize {
        /// Width as given.
        width: i64,
        /// Height as given.
        height: i64,
    },
    /// Width or height is above [`MAX_CURSOR_SIZE`].
    #[error("cursor size {width}x{height} exceeds {max}x{max}")]
    TooLarge {
        /// Width as given.
        width: i64,
        /// Height as given.
        height: i64,
        /// Largest side accepted.
        max: u32,
    },
    /// The hot spot is not a pixel of the cursor (`0 <= hot < size`).
    #[error("cursor hot spot ({hot_x}, {hot_y}) is outside {width}x{height}")]
    HotSpotOutside {
        /// Hot spot X as given.
        hot_x: i64,
        /// Hot spot Y as given.
        hot_y: i64,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// `pixels.len() != width * height`.
    #[error("cursor has {got} pixels, {width}x{height} needs {expected}")]
    PixelCountMismatch {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// `width * height`.
        expected: usize,
        /// Pixels given.
        got: usize,
    },
    /// The byte buffer is not `width * height * 4` bytes.
    #[error("cursor data has {got} bytes, {width}x{height} needs {expected}")]
    DataLengthMismatch {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// `width * height * 4`.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// A validated ARGB cursor as QEMU's `QEMUCursor` holds it: one u32 per
/// pixel, value `0xAARRGGBB` (straight alpha as far as QEMU's UIs are
/// concerned), rows top to bottom, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    width: u16,
    height: u16,
    hot_x: u16,
    hot_y: u16,
    pixels: Vec<u32>,
}

fn check_geometry(
    width: i64,
    height: i64,
    hot_x: i64,
    hot_y: i64,
) -> Result<(u16, u16, u16, u16), CursorShapeError> {
    if width <= 0 || height <= 0 {
        return Err(CursorShapeError::ZeroSize { width, height });
    }
    let max = i64::from(MAX_CURSOR_SIZE);
    if width > max || height > max {
        return Err(CursorShapeError::TooLarge {
            width,
            height,
            max: MAX_CURSOR_SIZE,
        });
    }
    if !(0..width).contains(&hot_x) || !(0..height).contains(&hot_y) {
        return Err(CursorShapeError::HotSpotOutside {
            hot_x,
            hot_y,
            width: width as u32,
            height: height as u32,
        });
    }
    // All four are now within 0..=512.
    Ok((width as u16, height as u16, hot_x as u16, hot_y as u16))
}

impl CursorShape {
    /// Validates a cursor: `1..=512` wide and high, hot spot on one of its
    /// pixels, exactly `width * height` pixels (`0xAARRGGBB` values).
    pub fn new(
        width: u32,
        height: u32,
        hot_x: u32,
        hot_y: u32,
        pixels: Vec<u32>,
    ) -> Result<Self, CursorShapeError> {
        let (w, h, hx, hy) = check_geometry(
            i64::from(width),
            i64::from(height),
            i64::from(hot_x),
            i64::from(hot_y),
        )?;
        let expected = usize::from(w) * usize::from(h);
        if pixels.len() != expected {
            return Err(CursorShapeError::PixelCountMismatch {
                width,
                height,
                expected,
                got: pixels.len(),
            });
        }
        Ok(Self {
            width: w,
            height: h,
            hot_x: hx,
            hot_y: hy,
            pixels,
        })
    }

    /// A cursor from QEMU's D-Bus `CursorDefine(i width, i height, i hot_x,
    /// i hot_y, ay data)`: `data` is `QEMUCursor::data` as it lies in QEMU's
    /// memory, i.e. native-endian `0xAARRGGBB` words (bytes B, G, R, A on
    /// x86).
    pub fn from_qemu(
        width: i32,
        height: i32,
        hot_x: i32,
        hot_y: i32,
        data: &[u8],
    ) -> Result<Self, CursorShapeError> {
        let (w, h, _, _) = check_geometry(
            i64::from(width),
            i64::from(height),
            i64::from(hot_x),
            i64::from(hot_y),
        )?;
        let expected = usize::from(w) * usize::from(h) * 4;
        if data.len() != expected {
            return Err(CursorShapeError::DataLengthMismatch {
                width: u32::from(w),
                height: u32::from(h),
                expected,
                got: data.len(),
            });
        }
        let pixels = data
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::new(
            u32::from(w),
            u32::from(h),
            hot_x as u32,
            hot_y as u32,
            pixels,
        )
    }

    /// Width in pixels.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// Hot spot X.
    pub fn hot_x(&self) -> u16 {
        self.hot_x
    }

    /// Hot spot Y.
    pub fn hot_y(&self) -> u16 {
        self.hot_y
    }

    /// The `0xAARRGGBB` pixels, row-major.
    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }

    /// Size of the ALPHA pixel data (`width * height * 4`).
    pub fn byte_len(&self) -> usize {
        self.pixels.len() * 4
    }

    /// The ALPHA header for cache key `unique`.
    pub fn header(&self, unique: u64) -> CursorHeader {
        CursorHeader {
            unique,
            cursor_type: cursor_type::ALPHA,
            width: self.width,
            height: self.height,
            hot_spot_x: self.hot_x,
            hot_spot_y: self.hot_y,
        }
    }

    /// The SPICE ALPHA pixel data: each `0xAARRGGBB` word little-endian,
    /// i.e. bytes B, G, R, A. Alpha is passed through unchanged (spice-gtk
    /// expects straight alpha; see the module documentation).
    pub fn to_alpha_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        for p in &self.pixels {
            out.extend_from_slice(&p.to_le_bytes());
        }
        out
    }

    /// A full ALPHA `SpiceCursor` that the client does not cache (flags 0).
    pub fn to_uncached_cursor(&self, unique: u64) -> SpiceCursor {
        SpiceCursor::Data {
            header: self.header(unique),
            cache_me: false,
            data: self.to_alpha_bytes(),
        }
    }

    /// The same cursor with premultiplied colour channels converted to
    /// straight alpha (`c * 255 / a`, rounded, clamped to 255; pixels with
    /// alpha 0 or 255 unchanged). Use it for sources that hold premultiplied
    /// ARGB, since spice-gtk treats ALPHA pixels as straight.
    pub fn unpremultiplied(&self) -> Self {
        let pixels = self
            .pixels
            .iter()
            .map(|&p| {
                let a = p >> 24;
                if a == 0 || a == 255 {
                    return p;
                }
                let un = |shift: u32| {
                    let c = (p >> shift) & 0xFF;
                    ((c * 255 + a / 2) / a).min(255) << shift
                };
                (a << 24) | un(16) | un(8) | un(0)
            })
            .collect();
        Self {
            pixels,
            ..self.clone()
        }
    }

    /// FNV-1a over size, hot spot and pixels: a quick filter before the exact
    /// comparison in [`CursorCache`].
    fn content_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(&self.width.to_le_bytes());
        eat(&self.height.to_le_bytes());
        eat(&self.hot_x.to_le_bytes());
        eat(&self.hot_y.to_le_bytes());
        for p in &self.pixels {
            eat(&p.to_le_bytes());
        }
        h
    }
}

/// What to send for one cursor shape: the `SpiceCursor` for SET (or INIT),
/// plus cache ids to drop with INVAL_ONE (entries evicted to make room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorPlan {
    /// The cursor field of SET/INIT.
    pub cursor: SpiceCursor,
    /// Send one [`CursorInvalOne`] per id (before or after the SET: the ids
    /// differ from the new one; spice-server sends them after).
    pub inval_ids: Vec<u64>,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    unique: u64,
    hash: u64,
    last_used: u64,
    shape: CursorShape,
}

/// Server-side bookkeeping of the client's cursor cache, as spice-server's
/// `CursorChannelClient` does it: a unique id per distinct shape, CACHE_ME
/// the first time, FROM_CACHE (header only) while the client still has it,
/// least-recently-used eviction with INVAL_ONE when the cache is full.
///
/// Shapes are matched by content (size, hot spot, pixels), so a guest that
/// switches between a few cursors sends each one's pixels once.
///
/// The client empties its cache on INIT, RESET, INVAL_ALL and on reconnect:
/// call [`CursorCache::reset`] whenever one of those happens (the lead's
/// channel does it for INIT via [`CursorCache::init_cursor`]). Ids are never
/// reused, even across resets.
#[derive(Debug, Clone)]
pub struct CursorCache {
    entries: Vec<CacheEntry>,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    next_unique: u64,
    clock: u64,
}

impl Default for CursorCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CursorCache {
    /// [`CURSOR_CACHE_ENTRIES`] entries, [`CURSOR_CACHE_BYTES`] pixel bytes.
    pub fn new() -> Self {
        Self::with_limits(CURSOR_CACHE_ENTRIES, CURSOR_CACHE_BYTES)
    }

    /// A cache of at most `max_entries` shapes and `max_bytes` pixel bytes.
    /// A shape larger than `max_bytes` (or any shape if `max_entries` is 0) is
    /// sent without CACHE_ME.
    pub fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            max_entries,
            max_bytes,
            bytes: 0,
            next_unique: 1,
            clock: 0,
        }
    }

    /// Forgets every entry: the client's cache is empty (after INIT, RESET,
    /// INVAL_ALL or a new connection).
    pub fn reset(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Number of shapes the client holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the client holds no shape.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pixel bytes the client holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the client holds cache id `unique`.
    pub fn contains(&self, unique: u64) -> bool {
        self.entries.iter().any(|e| e.unique == unique)
    }

    fn take_unique(&mut self) -> u64 {
        let unique = self.next_unique;
        self.next_unique = self.next_unique.wrapping_add(1).max(1);
        unique
    }

    /// Decides how to send `shape` in a SET: FROM_CACHE if the client has it,
    /// else the pixels with a new unique id and CACHE_ME (evicting the least
    /// recently used entries if needed), or without CACHE_ME if it can never
    /// fit.
    pub fn plan(&mut self, shape: &CursorShape) -> CursorPlan {
        self.clock += 1;
        let hash = shape.content_hash();
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.hash == hash && e.shape == *shape)
        {
            e.last_used = self.clock;
            return CursorPlan {
                cursor: SpiceCursor::FromCache {
                    header: shape.header(e.unique),
                },
                inval_ids: Vec::new(),
            };
        }
        let unique = self.take_unique();
        let size = shape.byte_len();
        if self.max_entries == 0 || size > self.max_bytes {
            return CursorPlan {
                cursor: shape.to_uncached_cursor(unique),
                inval_ids: Vec::new(),
            };
        }
        let mut inval_ids = Vec::new();
        while self.entries.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some((i, _)) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
            else {
                break;
            };
            let old = self.entries.swap_remove(i);
            self.bytes -= old.shape.byte_len();
            inval_ids.push(old.unique);
        }
        self.bytes += size;
        self.entries.push(CacheEntry {
            unique,
            hash,
            last_used: self.clock,
            shape: shape.clone(),
        });
        CursorPlan {
            cursor: SpiceCursor::Data {
                header: shape.header(unique),
                cache_me: true,
                data: shape.to_alpha_bytes(),
            },
            inval_ids,
        }
    }

    /// The cursor field of INIT: resets the cache (the client clears its own
    /// before decoding INIT), then `shape` with CACHE_ME, or NONE.
    pub fn init_cursor(&mut self, shape: Option<&CursorShape>) -> SpiceCursor {
        self.reset();
        match shape {
            Some(shape) => self.plan(shape).cursor,
            None => SpiceCursor::None,
        }
    }
}

/// INIT (101): Point16 position, u16 trail_length, u16 trail_frequency,
/// u8 visible, cursor. Must be the first cursor message (spice-gtk drops
/// SET/MOVE before it); spice-server sends it right after SET_ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorInit {
    /// Position (ignored by spice-gtk; send a MOVE for server mouse mode).
    pub position: Point16,
    /// Trail length (0).
    pub trail_length: u16,
    /// Trail frequency (0).
    pub trail_frequency: u16,
    /// 0 makes spice-gtk emit `cursor-hide` after `cursor-set`.
    pub visible: bool,
    /// The current cursor, or [`SpiceCursor::None`] if none was defined yet.
    pub cursor: SpiceCursor,
}

impl CursorInit {
    /// INIT with no trail.
    pub fn new(position: Point16, visible: bool, cursor: SpiceCursor) -> Self {
        Self {
            position,
            trail_length: 0,
            trail_frequency: 0,
            visible,
            cursor,
        }
    }
}

impl ServerMessage for CursorInit {
    const MSG_TYPE: u16 = cursor_msg::INIT;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.position.put(out);
        out.put_u16(self.trail_length);
        out.put_u16(self.trail_frequency);
        out.put_u8(u8::from(self.visible));
        self.cursor.put(out);
        Ok(())
    }
}

/// RESET (102): empty. spice-gtk clears its cache and waits for a new INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorReset;

impl ServerMessage for CursorReset {
    const MSG_TYPE: u16 = cursor_msg::RESET;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// SET (103): Point16 position, u8 visible, cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorSet {
    /// Position (ignored by spice-gtk).
    pub position: Point16,
    /// Visible (ignored by spice-gtk; spice-server sends its current state).
    pub visible: bool,
    /// The shape; [`SpiceCursor::None`] makes spice-gtk hide the cursor.
    pub cursor: SpiceCursor,
}

impl ServerMessage for CursorSet {
    const MSG_TYPE: u16 = cursor_msg::SET;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.position.put(out);
        out.put_u8(u8::from(self.visible));
        self.cursor.put(out);
        Ok(())
    }
}

/// MOVE (104): Point16 position of the pointer, i.e. of the hot spot (the
/// widget draws the image at `position - hot spot`; QEMU's MouseSet gives
/// this point). Also shows a cursor hidden by HIDE in spice-gtk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorMove {
    /// Position in primary-surface pixels.
    pub position: Point16,
}

impl ServerMessage for CursorMove {
    const MSG_TYPE: u16 = cursor_msg::MOVE;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.position.put(out);
        Ok(())
    }
}

/// HIDE (105): empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorHide;

impl ServerMessage for CursorHide {
    const MSG_TYPE: u16 = cursor_msg::HIDE;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// TRAIL (106): u16 length, u16 frequency. spice-gtk only logs a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorTrail {
    /// Trail length.
    pub length: u16,
    /// Trail frequency.
    pub frequency: u16,
}

impl ServerMessage for CursorTrail {
    const MSG_TYPE: u16 = cursor_msg::TRAIL;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u16(self.length);
        out.put_u16(self.frequency);
        Ok(())
    }
}

/// INVAL_ONE (107): u64 id (`SpiceMsgDisplayInvalOne`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorInvalOne {
    /// Cache id (`CursorHeader::unique`).
    pub id: u64,
}

impl ServerMessage for CursorInvalOne {
    const MSG_TYPE: u16 = cursor_msg::INVAL_ONE;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u64(self.id);
        Ok(())
    }
}

/// INVAL_ALL (108): empty. Call [`CursorCache::reset`] when sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorInvalAll;

impl ServerMessage for CursorInvalAll {
    const MSG_TYPE: u16 = cursor_msg::INVAL_ALL;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// A message from the client on the cursor channel. `spice.proto`'s
/// `CursorChannel` has no client section: only base messages (ACK_SYNC, ACK,
/// PONG, ...) arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCursorMsg {
    /// A base message (types 1..=6).
    Base(ClientBaseMsg),
    /// Anything else; not an error.
    Unknown {
        /// Message type.
        msg_type: u16,
    },
}

/// Parses a client cursor-channel message.
pub fn parse_client_cursor(msg_type: u16, body: &[u8]) -> Result<ClientCursorMsg, ProtoError> {
    Ok(match parse_client_base(msg_type, body)? {
        Some(base) => ClientCursorMsg::Base(base),
        None => ClientCursorMsg::Unknown { msg_type },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::framing::{FrameEncoder, HeaderKind};

    /// 2x2, hot spot (1, 0): opaque 0x112233, half-transparent red,
    /// transparent, opaque white.
    fn shape_2x2() -> CursorShape {
        CursorShape::new(2, 2, 1, 0, vec![0xFF11_2233, 0x80FF_0000, 0, 0xFFFF_FFFF]).unwrap()
    }

    const PIXELS_2X2: [u8; 16] = [
        0x33, 0x22, 0x11, 0xFF, // B G R A
        0x00, 0x00, 0xFF, 0x80, //
        0x00, 0x00, 0x00, 0x00, //
        0xFF, 0xFF, 0xFF, 0xFF,
    ];

    /// CursorHeader for [`shape_2x2`] with unique 1.
    const HEADER_2X2_U1: [u8; 17] = [
        1, 0, 0, 0, 0, 0, 0, 0, // unique
        0, // type ALPHA
        2, 0, 2, 0, // width, height
        1, 0, 0, 0, // hot spot
    ];

    #[test]
    fn message_numbers_and_flags() {
        assert_eq!(
            [
                CursorInit::MSG_TYPE,
                CursorReset::MSG_TYPE,
                CursorSet::MSG_TYPE,
                CursorMove::MSG_TYPE,
                CursorHide::MSG_TYPE,
                CursorTrail::MSG_TYPE,
                CursorInvalOne::MSG_TYPE,
                CursorInvalAll::MSG_TYPE,
            ],
            [101, 102, 103, 104, 105, 106, 107, 108]
        );
        assert_eq!(SpiceCursor::None.flags(), 1);
        assert_eq!(shape_2x2().to_uncached_cursor(9).flags(), 0);
        assert_eq!(
            SpiceCursor::FromCache {
                header: shape_2x2().header(1)
            }
            .flags(),
            4
        );
    }

    #[test]
    fn alpha_bytes_are_bgra() {
        let s = shape_2x2();
        assert_eq!(s.to_alpha_bytes(), PIXELS_2X2);
        assert_eq!(s.byte_len(), 16);
        // QEMU's buffer (native-endian words) gives the same shape.
        let mut qemu = Vec::new();
        for p in s.pixels() {
            qemu.extend_from_slice(&p.to_ne_bytes());
        }
        assert_eq!(CursorShape::from_qemu(2, 2, 1, 0, &qemu).unwrap(), s);
    }

    #[test]
    fn init_without_cursor_is_11_bytes() {
        let body = CursorInit::new(Point16::default(), true, SpiceCursor::None)
            .to_body()
            .unwrap();
        assert_eq!(body, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]);
        let hidden = CursorInit {
            position: Point16 { x: 3, y: -1 },
            trail_length: 0x0102,
            trail_frequency: 0x0304,
            visible: false,
            cursor: SpiceCursor::None,
        }
        .to_body()
        .unwrap();
        assert_eq!(hidden, [3, 0, 0xFF, 0xFF, 2, 1, 4, 3, 0, 1, 0]);
    }

    #[test]
    fn init_with_cached_2x2() {
        let mut cache = CursorCache::new();
        let cursor = cache.init_cursor(Some(&shape_2x2()));
        let body = CursorInit::new(Point16 { x: 100, y: 50 }, true, cursor)
            .to_body()
            .unwrap();
        let mut want = vec![100, 0, 50, 0, 0, 0, 0, 0, 1, 2, 0];
        want.extend_from_slice(&HEADER_2X2_U1);
        want.extend_from_slice(&PIXELS_2X2);
        assert_eq!(body, want);
        assert_eq!(body.len(), 9 + 2 + 17 + 16);
        assert!(cache.contains(1));
    }

    #[test]
    fn set_2x2_exact_frame() {
        let msg = CursorSet {
            position: Point16 { x: 10, y: -2 },
            visible: true,
            cursor: SpiceCursor::Data {
                header: shape_2x2().header(1),
                cache_me: true,
                data: shape_2x2().to_alpha_bytes(),
            },
        };
        let body = msg.to_body().unwrap();
        let mut want = vec![10, 0, 0xFE, 0xFF, 1, 2, 0];
        want.extend_from_slice(&HEADER_2X2_U1);
        want.extend_from_slice(&PIXELS_2X2);
        assert_eq!(body, want);
        assert_eq!(body.len(), 40);

        let frame = FrameEncoder::new(HeaderKind::Mini).encode(&msg).unwrap();
        assert_eq!(frame[..6], [103, 0, 40, 0, 0, 0]);
        assert_eq!(frame[6..], want[..]);

        let from_cache = CursorSet {
            position: Point16::default(),
            visible: false,
            cursor: SpiceCursor::FromCache {
                header: shape_2x2().header(1),
            },
        }
        .to_body()
        .unwrap();
        let mut want = vec![0, 0, 0, 0, 0, 4, 0];
        want.extend_from_slice(&HEADER_2X2_U1);
        assert_eq!(from_cache, want);

        let none = CursorSet {
            position: Point16 { x: 1, y: 2 },
            visible: false,
            cursor: SpiceCursor::None,
        }
        .to_body()
        .unwrap();
        assert_eq!(none, [1, 0, 2, 0, 0, 1, 0]);
    }

    /// QEMU 7.2 + spice-server 0.15.1, `-device virtio-vga`, a Linux guest
    /// setting a 64x64 ARGB8888 cursor (hot spot 5, 7) through
    /// DRM_IOCTL_MODE_CURSOR2: the cursor channel's INIT, captured on the
    /// wire. Its first pixel was the word 0x80FF4020 in the guest, and
    /// spice-gtk 0.42 reported it as R, G, B, A = 255, 64, 32, 128.
    #[test]
    fn init_matches_qemu_spice_server_capture() {
        let pixels = (0..64u32)
            .flat_map(|y| (0..64u32).map(move |x| (x, y)))
            .map(|(x, y)| {
                if x == 0 && y == 0 {
                    0x80FF_4020
                } else {
                    let a = if (x + y) % 2 == 0 { 0xFF } else { 0x40 };
                    (a << 24) | ((x * 4) & 0xFF) << 16 | ((y * 4) & 0xFF) << 8 | ((x ^ y) & 0xFF)
                }
            })
            .collect();
        let shape = CursorShape::new(64, 64, 5, 7, pixels).unwrap();
        let body = CursorInit::new(
            Point16 { x: 289, y: 119 },
            true,
            SpiceCursor::Data {
                header: shape.header(0x84),
                cache_me: true,
                data: shape.to_alpha_bytes(),
            },
        )
        .to_body()
        .unwrap();
        let captured: [u8; 64] = [
            0x21, 0x01, 0x77, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x84, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x40, 0x00, 0x05, 0x00, 0x07, 0x00,
            0x20, 0x40, 0xff, 0x80, 0x01, 0x00, 0x04, 0x40, 0x02, 0x00, 0x08, 0xff, 0x03, 0x00,
            0x0c, 0x40, 0x04, 0x00, 0x10, 0xff, 0x05, 0x00, 0x14, 0x40, 0x06, 0x00, 0x18, 0xff,
            0x07, 0x00, 0x1c, 0x40, 0x08, 0x00, 0x20, 0xff,
        ];
        assert_eq!(body.len(), 16412);
        assert_eq!(body[..64], captured);
    }

    #[test]
    fn small_messages() {
        let mv = CursorMove {
            position: Point16 { x: 640, y: -1 },
        };
        assert_eq!(mv.to_body().unwrap(), [0x80, 0x02, 0xFF, 0xFF]);
        assert!(CursorHide.to_body().unwrap().is_empty());
        assert!(CursorReset.to_body().unwrap().is_empty());
        assert!(CursorInvalAll.to_body().unwrap().is_empty());
        assert_eq!(
            CursorTrail {
                length: 5,
                frequency: 0x0100
            }
            .to_body()
            .unwrap(),
            [5, 0, 0, 1]
        );
        assert_eq!(
            CursorInvalOne {
                id: 0x0102_0304_0506_0708
            }
            .to_body()
            .unwrap(),
            [8, 7, 6, 5, 4, 3, 2, 1]
        );
        let frame = FrameEncoder::new(HeaderKind::Mini)
            .encode(&CursorHide)
            .unwrap();
        assert_eq!(frame, [105, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn point16_clamps() {
        assert_eq!(Point16::clamped(5, -7), Point16 { x: 5, y: -7 });
        assert_eq!(
            Point16::clamped(100_000, -100_000),
            Point16 {
                x: i16::MAX,
                y: i16::MIN
            }
        );
    }

    #[test]
    fn cache_me_then_from_cache_then_inval_all() {
        let mut cache = CursorCache::new();
        let a = shape_2x2();
        let b = CursorShape::new(1, 1, 0, 0, vec![0xFF00_0000]).unwrap();

        let p = cache.plan(&a);
        assert!(p.inval_ids.is_empty());
        let SpiceCursor::Data {
            header,
            cache_me: true,
            data,
        } = &p.cursor
        else {
            panic!("{p:?}");
        };
        assert_eq!(header.unique, 1);
        assert_eq!(data[..], PIXELS_2X2);

        let p = cache.plan(&b);
        assert_eq!(p.cursor.flags(), cursor_flags::CACHE_ME);
        assert_eq!(p.cursor.header().unwrap().unique, 2);

        // Same content again, even as a new value: FROM_CACHE, no data.
        let p = cache.plan(&shape_2x2());
        assert_eq!(
            p.cursor,
            SpiceCursor::FromCache {
                header: a.header(1)
            }
        );
        assert_eq!(p.cursor.wire_len(), 19);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.bytes(), 20);

        // A different hot spot is a different shape.
        let moved = CursorShape::new(2, 2, 0, 1, a.pixels().to_vec()).unwrap();
        assert_eq!(cache.plan(&moved).cursor.flags(), cursor_flags::CACHE_ME);

        // After INVAL_ALL (or RESET) the client has nothing: pixels again,
        // with a fresh id.
        cache.reset();
        assert!(cache.is_empty());
        let p = cache.plan(&a);
        assert_eq!(p.cursor.flags(), cursor_flags::CACHE_ME);
        assert_eq!(p.cursor.header().unwrap().unique, 4);

        // INIT never uses FROM_CACHE: the client clears its cache first.
        let c = cache.init_cursor(Some(&a));
        assert_eq!(c.flags(), cursor_flags::CACHE_ME);
        assert_eq!(c.header().unwrap().unique, 5);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.init_cursor(None), SpiceCursor::None);
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_evicts_least_recently_used_with_inval_one() {
        let mut cache = CursorCache::with_limits(2, 1 << 20);
        let s = |v: u32| CursorShape::new(1, 1, 0, 0, vec![v]).unwrap();
        assert_eq!(cache.plan(&s(1)).cursor.header().unwrap().unique, 1);
        assert_eq!(cache.plan(&s(2)).cursor.header().unwrap().unique, 2);
        // Touch 1, so 2 is the least recently used.
        assert_eq!(cache.plan(&s(1)).cursor.flags(), cursor_flags::FROM_CACHE);
        let p = cache.plan(&s(3));
        assert_eq!(p.cursor.header().unwrap().unique, 3);
        assert_eq!(p.cursor.flags(), cursor_flags::CACHE_ME);
        assert_eq!(p.inval_ids, [2]);
        assert!(cache.contains(1) && cache.contains(3) && !cache.contains(2));
        assert_eq!(cache.plan(&s(2)).inval_ids, [1]);
    }

    #[test]
    fn cache_byte_budget() {
        // 8 + 8 bytes fit in 16; a third 2-pixel shape evicts one; a shape
        // above the whole budget is sent uncached and evicts nothing.
        let mut cache = CursorCache::with_limits(100, 16);
        let s = |v: u32| CursorShape::new(2, 1, 0, 0, vec![v, v]).unwrap();
        cache.plan(&s(1));
        cache.plan(&s(2));
        assert_eq!(cache.bytes(), 16);
        assert_eq!(cache.plan(&s(3)).inval_ids, [1]);
        let big = CursorShape::new(5, 1, 0, 0, vec![7; 5]).unwrap();
        let p = cache.plan(&big);
        assert_eq!(p.cursor.flags(), 0);
        assert!(p.inval_ids.is_empty());
        assert_eq!(p.cursor.header().unwrap().unique, 4);
        assert_eq!(cache.len(), 2);
        // Sent uncached, so still not FROM_CACHE next time.
        assert_eq!(cache.plan(&big).cursor.flags(), 0);

        let mut off = CursorCache::with_limits(0, 1 << 20);
        assert_eq!(off.plan(&s(1)).cursor.flags(), 0);
        assert!(off.is_empty());
    }

    #[test]
    fn refuses_bad_shapes() {
        use CursorShapeError as E;
        assert!(matches!(
            CursorShape::new(0, 2, 0, 0, vec![]),
            Err(E::ZeroSize { .. })
        ));
        assert!(matches!(
            CursorShape::new(2, 0, 0, 0, vec![]),
            Err(E::ZeroSize { .. })
        ));
        assert!(matches!(
            CursorShape::new(513, 1, 0, 0, vec![0; 513]),
            Err(E::TooLarge { .. })
        ));
        assert!(matches!(
            CursorShape::new(1, 513, 0, 0, vec![0; 513]),
            Err(E::TooLarge { .. })
        ));
        assert!(CursorShape::new(512, 512, 511, 511, vec![0; 512 * 512]).is_ok());
        assert!(matches!(
            CursorShape::new(2, 2, 2, 0, vec![0; 4]),
            Err(E::HotSpotOutside { .. })
        ));
        assert!(matches!(
            CursorShape::new(2, 2, 0, 2, vec![0; 4]),
            Err(E::HotSpotOutside { .. })
        ));
        assert_eq!(
            CursorShape::new(2, 2, 0, 0, vec![0; 3]),
            Err(E::PixelCountMismatch {
                width: 2,
                height: 2,
                expected: 4,
                got: 3
            })
        );
        assert!(matches!(
            CursorShape::new(2, 2, 0, 0, vec![0; 5]),
            Err(E::PixelCountMismatch { .. })
        ));
        assert!(matches!(
            CursorShape::from_qemu(-1, 2, 0, 0, &[]),
            Err(E::ZeroSize { .. })
        ));
        assert!(matches!(
            CursorShape::from_qemu(2, 2, -1, 0, &[0; 16]),
            Err(E::HotSpotOutside { .. })
        ));
        assert!(matches!(
            CursorShape::from_qemu(i32::MAX, 2, 0, 0, &[]),
            Err(E::TooLarge { .. })
        ));
        assert_eq!(
            CursorShape::from_qemu(2, 2, 0, 0, &[0; 15]),
            Err(E::DataLengthMismatch {
                width: 2,
                height: 2,
                expected: 16,
                got: 15
            })
        );
        assert_eq!(
            CursorShape::new(2, 2, 2, 0, vec![0; 4])
                .unwrap_err()
                .to_string(),
            "cursor hot spot (2, 0) is outside 2x2"
        );
    }

    #[test]
    fn unpremultiply() {
        let s = CursorShape::new(
            4,
            1,
            0,
            0,
            vec![0x8040_2010, 0xFF12_3456, 0x0000_0000, 0x10FF_FFFF],
        )
        .unwrap();
        let u = s.unpremultiplied();
        // 0x40 * 255 / 0x80 = 127.5 -> 128 (0x80); 0x20 -> 64; 0x10 -> 32.
        assert_eq!(u.pixels()[0], 0x8080_4020);
        assert_eq!(u.pixels()[1], 0xFF12_3456);
        assert_eq!(u.pixels()[2], 0);
        // Colour above alpha (invalid premultiplied) clamps to 255.
        assert_eq!(u.pixels()[3], 0x10FF_FFFF);
        assert_eq!((u.width(), u.height(), u.hot_x(), u.hot_y()), (4, 1, 0, 0));
    }

    #[test]
    fn client_messages_are_base_only() {
        assert_eq!(
            parse_client_cursor(1, &[1, 0, 0, 0]).unwrap(),
            ClientCursorMsg::Base(ClientBaseMsg::AckSync { generation: 1 })
        );
        assert_eq!(
            parse_client_cursor(2, &[]).unwrap(),
            ClientCursorMsg::Base(ClientBaseMsg::Ack)
        );
        assert!(parse_client_cursor(3, &[0; 11]).is_err());
        assert_eq!(
            parse_client_cursor(101, &[1, 2, 3]).unwrap(),
            ClientCursorMsg::Unknown { msg_type: 101 }
        );
    }
}
