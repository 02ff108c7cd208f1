//! The 2D surface: QEMU's pixels copied into a ring of buffers that the shim shows, with damage
//! merged while every buffer is out.
//!
//! QEMU's 2D path (`Scanout`/`Update`, or `ScanoutMap`/`UpdateMap`) does not wait for the
//! listener, so nothing here may queue per update. Instead:
//! - every update is copied at once into the **picture**, an ordinary heap copy of the latest
//!   surface, and its rectangle is added to the **pending** damage (what changed since the last
//!   draw) and to each buffer's **stale** damage (what that buffer lacks);
//! - a draw needs a free buffer (its cookie is back). [`Ring::flush`] picks one (the buffer on
//!   show first, so a steady trickle of updates needs no new `gl_scanout`), copies its stale
//!   areas from the picture, and hands out one frame: the pending damage's bounding box and a
//!   cookie;
//! - while every buffer is out, updates only touch the picture and the damage: however fast
//!   QEMU draws, the cost is one picture and [`RING_LEN`] buffers, and the next free buffer shows
//!   the latest picture.
//!
//! QEMU 7.2 reports VGA text mode as 640x480 although it draws 720x400 (its `Update`s are 720
//! wide): an update that falls outside the surface grows it to cover both, so text is never
//! clipped.
//!
//! This module does no I/O: buffers come from an [`Allocator`], and frames are returned for the
//! caller to hand to the shim.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Instant;

use gstspicedmabuf::fourcc::DRM_FORMAT_MOD_LINEAR;
use gstspicedmabuf::{Plane, Rect, ScanoutInfo};

use crate::format::{self, PixelFormat};

/// Buffers per surface: one on show, one being encoded, one to write.
pub const RING_LEN: usize = 3;
/// Largest width or height taken from QEMU (as the shim's own limit).
pub const MAX_DIMENSION: u32 = gstspicedmabuf::scanout::MAX_DIMENSION;
/// Damage keeps this many rectangles apart before it merges them into their bounding box.
const MAX_DAMAGE_RECTS: usize = 8;

/// Memory the shim can show: pixels to write, and an fd to share.
pub trait FrameBuffer: Send {
    /// The buffer's bytes.
    fn pixels(&mut self) -> &mut [u8];
    /// A new fd of the buffer, for `gl_scanout`.
    fn share(&self) -> io::Result<OwnedFd>;
}

/// Makes a buffer of the given size in bytes.
pub type Allocator<B> = fn(usize) -> io::Result<B>;

/// Why pixels from QEMU were not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{0} is not a format the shim can show")]
    Format(String),
    #[error("an update before any scanout")]
    NoSurface,
    #[error("size {w}x{h} is out of range (1..={MAX_DIMENSION})")]
    Size { w: i64, h: i64 },
    #[error("rectangle {x},{y} {w}x{h} is out of range")]
    Rect { x: i64, y: i64, w: i64, h: i64 },
    #[error("stride {stride} is smaller than a row ({row} bytes)")]
    Stride { stride: u64, row: u64 },
    #[error("{got} bytes of pixels where {need} are needed")]
    ShortData { got: u64, need: u64 },
    #[error("{update} pixels do not fit a {surface} surface")]
    FormatMismatch { update: String, surface: String },
}

/// A set of damaged rectangles; more than a few are merged into their bounding box.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Damage {
    rects: Vec<Rect>,
}

impl Damage {
    /// Damage covering all of a `width`x`height` surface.
    pub fn full(width: u32, height: u32) -> Self {
        let mut d = Self::default();
        d.add(Rect {
            x: 0,
            y: 0,
            w: width,
            h: height,
        });
        d
    }

    /// Adds `r` (empty rectangles are ignored).
    pub fn add(&mut self, r: Rect) {
        if r.w == 0 || r.h == 0 || self.rects.iter().any(|e| contains(e, &r)) {
            return;
        }
        self.rects.retain(|e| !contains(&r, e));
        self.rects.push(r);
        if self.rects.len() > MAX_DAMAGE_RECTS {
            let b = self.bounds().expect("not empty");
            self.rects = vec![b];
        }
    }

    /// The bounding box, `None` when nothing is damaged.
    pub fn bounds(&self) -> Option<Rect> {
        self.rects.iter().copied().reduce(|a, b| union(&a, &b))
    }

    /// The rectangles (they may overlap).
    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    pub fn clear(&mut self) {
        self.rects.clear();
    }
}

fn contains(outer: &Rect, inner: &Rect) -> bool {
    inner.x >= outer.x
        && inner.y >= outer.y
        && inner.x + inner.w <= outer.x + outer.w
        && inner.y + inner.h <= outer.y + outer.h
}

fn union(a: &Rect, b: &Rect) -> Rect {
    let x = a.x.min(b.x);
    let y = a.y.min(b.y);
    Rect {
        x,
        y,
        w: (a.x + a.w).max(b.x + b.w) - x,
        h: (a.y + a.h).max(b.y + b.h) - y,
    }
}

/// What an update did to the surface's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeChange {
    /// Same size and format as before.
    Same,
    /// A new surface (first scanout, or new size or format).
    New,
    /// The update fell outside the surface, which grew from `from` to cover it.
    Grown { from: (u32, u32) },
}

/// One frame for the shim: a `gl_scanout` first when the buffer or size changed, then
/// `gl_draw(rect, cookie)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The buffer to show and its description, when the shim must switch to it.
    pub scanout: Option<(usize, ScanoutInfo)>,
    /// What changed since the previous frame.
    pub rect: Rect,
    pub cookie: u64,
}

/// Counters of the 2D path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// `Scanout`/`Update`/`UpdateMap` calls whose pixels were taken.
    pub updates: u64,
    /// Frames handed to the shim.
    pub frames: u64,
    /// Flushes that found every buffer out (their damage waited for the next free buffer).
    pub waits: u64,
    /// Surfaces grown to cover an update outside them.
    pub grown: u64,
    /// Buffers allocated (at most [`RING_LEN`] per surface size).
    pub buffers_made: u64,
    /// Bytes of QEMU's pixels copied into the picture, and the time those copies took.
    pub picture_bytes: u64,
    pub picture_ns: u64,
    /// Bytes copied from the picture into the buffers handed to the shim, and the time it took.
    pub buffer_bytes: u64,
    pub buffer_ns: u64,
    /// Updates drawn in the same frame as a later update (their damage was merged): the updates
    /// that went into frames minus those frames.
    pub merged: u64,
}

impl RingStats {
    /// Bytes copied into the picture and into the buffers.
    pub fn copied_bytes(&self) -> u64 {
        self.picture_bytes + self.buffer_bytes
    }

    /// Time spent in those copies, in nanoseconds.
    pub fn copy_ns(&self) -> u64 {
        self.picture_ns + self.buffer_ns
    }
}

/// Nanoseconds since `start` (saturating).
fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

struct Slot<B> {
    buf: B,
    /// The cookie of the frame that uses this buffer, `None` when it is free.
    cookie: Option<u64>,
    /// What this buffer lacks from the picture.
    stale: Damage,
}

struct Surface<B> {
    width: u32,
    height: u32,
    format: PixelFormat,
    /// Bytes per row of the picture and of every buffer.
    stride: usize,
    /// The latest picture.
    picture: Vec<u8>,
    slots: Vec<Slot<B>>,
    /// The buffer the shim shows (last `gl_scanout` of this surface).
    shown: Option<usize>,
    /// Changed since the last frame.
    pending: Damage,
    /// Updates in `pending` (for [`RingStats::merged`]).
    pending_updates: u64,
}

impl<B> Surface<B> {
    fn new(width: u32, height: u32, format: PixelFormat) -> Self {
        let stride = width as usize * format.bytes_per_pixel as usize;
        Self {
            width,
            height,
            format,
            stride,
            picture: vec![0; stride * height as usize],
            slots: Vec::new(),
            shown: None,
            pending: Damage::full(width, height),
            pending_updates: 0,
        }
    }

    fn damage(&mut self, r: Rect) {
        self.pending.add(r);
        self.pending_updates += 1;
        for s in &mut self.slots {
            s.stale.add(r);
        }
    }

    /// The buffer on show if it is free, else any free buffer.
    fn free_slot(&self) -> Option<usize> {
        if let Some(i) = self.shown.filter(|&i| self.slots[i].cookie.is_none()) {
            return Some(i);
        }
        self.slots.iter().position(|s| s.cookie.is_none())
    }
}

/// Copies `rows` rows of `row_bytes` bytes.
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    dst: &mut [u8],
    dst_stride: usize,
    dst_offset: usize,
    src: &[u8],
    src_stride: usize,
    src_offset: usize,
    row_bytes: usize,
    rows: usize,
) {
    for r in 0..rows {
        let d = dst_offset + r * dst_stride;
        let s = src_offset + r * src_stride;
        dst[d..d + row_bytes].copy_from_slice(&src[s..s + row_bytes]);
    }
}

/// The 2D surface and its ring of buffers.
pub struct Ring<B> {
    alloc: Allocator<B>,
    surface: Option<Surface<B>>,
    stats: RingStats,
}

impl<B: FrameBuffer> Ring<B> {
    pub fn new(alloc: Allocator<B>) -> Self {
        Self {
            alloc,
            surface: None,
            stats: RingStats::default(),
        }
    }

    /// Drops the surface (display disabled, or another path took over). Frames still out
    /// complete as usual; their cookies are then unknown here.
    pub fn reset(&mut self) {
        self.surface = None;
    }

    /// Size and format of the surface.
    pub fn surface(&self) -> Option<(u32, u32, PixelFormat)> {
        self.surface.as_ref().map(|s| (s.width, s.height, s.format))
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// A full picture (`Scanout`): a new surface when the size or format changed.
    pub fn scanout(
        &mut self,
        width: u32,
        height: u32,
        stride: u32,
        pixman: u32,
        data: &[u8],
    ) -> Result<SizeChange, FrameError> {
        let format = format::from_pixman(pixman)
            .ok_or_else(|| FrameError::Format(format::pixman_name(pixman)))?;
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(FrameError::Size {
                w: width.into(),
                h: height.into(),
            });
        }
        check_data(width, height, stride, format, data)?;
        let change = match &self.surface {
            Some(s) if (s.width, s.height, s.format) == (width, height, format) => SizeChange::Same,
            _ => {
                self.surface = Some(Surface::new(width, height, format));
                SizeChange::New
            }
        };
        let s = self.surface.as_mut().expect("set above");
        let start = Instant::now();
        copy_rows(
            &mut s.picture,
            s.stride,
            0,
            data,
            stride as usize,
            0,
            s.stride,
            height as usize,
        );
        self.stats.picture_ns += ns_since(start);
        self.stats.picture_bytes += (s.stride * height as usize) as u64;
        s.damage(Rect {
            x: 0,
            y: 0,
            w: width,
            h: height,
        });
        self.stats.updates += 1;
        Ok(change)
    }

    /// A damaged rectangle (`Update`): `data` holds only the rectangle, rows `stride` apart.
    /// An update outside the surface grows it.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        stride: u32,
        pixman: u32,
        data: &[u8],
    ) -> Result<SizeChange, FrameError> {
        let format = format::from_pixman(pixman)
            .ok_or_else(|| FrameError::Format(format::pixman_name(pixman)))?;
        let Some(s) = self.surface.as_ref() else {
            return Err(FrameError::NoSurface);
        };
        if format.bytes_per_pixel != s.format.bytes_per_pixel {
            return Err(FrameError::FormatMismatch {
                update: format.name.into(),
                surface: s.format.name.into(),
            });
        }
        let (x64, y64, w64, h64) = (i64::from(x), i64::from(y), i64::from(w), i64::from(h));
        let max = i64::from(MAX_DIMENSION);
        if x < 0 || y < 0 || w < 1 || h < 1 || x64 + w64 > max || y64 + h64 > max {
            return Err(FrameError::Rect {
                x: x64,
                y: y64,
                w: w64,
                h: h64,
            });
        }
        let rect = Rect {
            x: x as u32,
            y: y as u32,
            w: w as u32,
            h: h as u32,
        };
        check_data(rect.w, rect.h, stride, format, data)?;
        let change = self.cover(rect);
        let s = self.surface.as_mut().expect("checked above");
        let bpp = s.format.bytes_per_pixel as usize;
        let start = Instant::now();
        copy_rows(
            &mut s.picture,
            s.stride,
            rect.y as usize * s.stride + rect.x as usize * bpp,
            data,
            stride as usize,
            0,
            rect.w as usize * bpp,
            rect.h as usize,
        );
        self.stats.picture_ns += ns_since(start);
        self.stats.picture_bytes += (rect.w as usize * bpp * rect.h as usize) as u64;
        s.damage(rect);
        self.stats.updates += 1;
        Ok(change)
    }

    /// Grows the surface to cover `r` (a new surface of the larger size, with the old picture in
    /// its top-left corner).
    fn cover(&mut self, r: Rect) -> SizeChange {
        let s = self.surface.as_ref().expect("caller checked");
        let (w, h) = ((r.x + r.w).max(s.width), (r.y + r.h).max(s.height));
        if (w, h) == (s.width, s.height) {
            return SizeChange::Same;
        }
        let from = (s.width, s.height);
        let mut grown = Surface::new(w, h, s.format);
        copy_rows(
            &mut grown.picture,
            grown.stride,
            0,
            &s.picture,
            s.stride,
            0,
            s.stride,
            s.height as usize,
        );
        self.surface = Some(grown);
        self.stats.grown += 1;
        SizeChange::Grown { from }
    }

    /// Hands out the next frame when something changed and a buffer is free; `cookie` is asked
    /// for only then. `Ok(None)`: nothing to draw, or every buffer is out (the damage waits).
    pub fn flush(&mut self, cookie: impl FnOnce() -> u64) -> io::Result<Option<Frame>> {
        let Some(s) = self.surface.as_mut() else {
            return Ok(None);
        };
        let Some(rect) = s.pending.bounds() else {
            return Ok(None);
        };
        let i = match s.free_slot() {
            Some(i) => i,
            None if s.slots.len() < RING_LEN => {
                let buf = (self.alloc)(s.stride * s.height as usize)?;
                self.stats.buffers_made += 1;
                s.slots.push(Slot {
                    buf,
                    cookie: None,
                    stale: Damage::full(s.width, s.height),
                });
                s.slots.len() - 1
            }
            None => {
                self.stats.waits += 1;
                return Ok(None);
            }
        };
        let slot = &mut s.slots[i];
        let bpp = s.format.bytes_per_pixel as usize;
        let pixels = slot.buf.pixels();
        let start = Instant::now();
        let mut copied = 0;
        for r in slot.stale.rects() {
            let offset = r.y as usize * s.stride + r.x as usize * bpp;
            copy_rows(
                pixels,
                s.stride,
                offset,
                &s.picture,
                s.stride,
                offset,
                r.w as usize * bpp,
                r.h as usize,
            );
            copied += (r.w as usize * bpp * r.h as usize) as u64;
        }
        self.stats.buffer_ns += ns_since(start);
        self.stats.buffer_bytes += copied;
        slot.stale.clear();
        let cookie = cookie();
        slot.cookie = Some(cookie);
        s.pending.clear();
        self.stats.merged += s.pending_updates.saturating_sub(1);
        s.pending_updates = 0;
        let scanout = (s.shown != Some(i)).then(|| {
            s.shown = Some(i);
            (
                i,
                ScanoutInfo {
                    width: s.width,
                    height: s.height,
                    fourcc: s.format.fourcc,
                    modifier: DRM_FORMAT_MOD_LINEAR,
                    y0_top: true,
                    planes: vec![Plane {
                        fd_index: 0,
                        offset: 0,
                        stride: s.stride as u32,
                    }],
                },
            )
        });
        self.stats.frames += 1;
        Ok(Some(Frame {
            scanout,
            rect,
            cookie,
        }))
    }

    /// A cookie came back: its buffer is free. False for cookies this surface does not know
    /// (e.g. of a surface replaced since).
    pub fn complete(&mut self, cookie: u64) -> bool {
        let Some(s) = self.surface.as_mut() else {
            return false;
        };
        match s.slots.iter_mut().find(|sl| sl.cookie == Some(cookie)) {
            Some(sl) => {
                sl.cookie = None;
                true
            }
            None => false,
        }
    }

    /// Takes back a frame the shim did not get (its `gl_scanout` failed): the buffer is free
    /// again, nothing is on show, and its damage is pending again.
    pub fn abandon(&mut self, frame: &Frame) {
        if let Some(s) = self.surface.as_mut() {
            if let Some(sl) = s
                .slots
                .iter_mut()
                .find(|sl| sl.cookie == Some(frame.cookie))
            {
                sl.cookie = None;
            }
            s.shown = None;
            s.pending.add(frame.rect);
        }
    }

    /// A new fd of buffer `slot`.
    pub fn share(&self, slot: usize) -> io::Result<OwnedFd> {
        let s = self.surface.as_ref().ok_or(io::ErrorKind::NotFound)?;
        s.slots
            .get(slot)
            .ok_or(io::ErrorKind::NotFound)?
            .buf
            .share()
    }

    /// The latest picture (tests).
    pub fn picture(&self) -> Option<&[u8]> {
        self.surface.as_ref().map(|s| s.picture.as_slice())
    }

    /// Buffer `slot`'s bytes (tests).
    pub fn buffer(&mut self, slot: usize) -> Option<&mut [u8]> {
        let s = self.surface.as_mut()?;
        Some(s.slots.get_mut(slot)?.buf.pixels())
    }
}

/// Checks that `data` holds `height` rows of `width` pixels, `stride` apart.
fn check_data(
    width: u32,
    height: u32,
    stride: u32,
    format: PixelFormat,
    data: &[u8],
) -> Result<(), FrameError> {
    let row = u64::from(width) * u64::from(format.bytes_per_pixel);
    if u64::from(stride) < row {
        return Err(FrameError::Stride {
            stride: stride.into(),
            row,
        });
    }
    let need = u64::from(stride) * (u64::from(height) - 1) + row;
    if (data.len() as u64) < need {
        return Err(FrameError::ShortData {
            got: data.len() as u64,
            need,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::PIXMAN_X8R8G8B8;

    /// A heap buffer: no fd to share.
    struct Heap(Vec<u8>);

    impl FrameBuffer for Heap {
        fn pixels(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn share(&self) -> io::Result<OwnedFd> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    fn heap(len: usize) -> io::Result<Heap> {
        Ok(Heap(vec![0xEE; len]))
    }

    fn ring() -> Ring<Heap> {
        Ring::new(heap)
    }

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    /// `w`x`h` pixels of one 32-bit value.
    fn solid(w: u32, h: u32, px: u32) -> Vec<u8> {
        px.to_le_bytes().repeat((w * h) as usize)
    }

    fn pixel(buf: &[u8], width: u32, x: u32, y: u32) -> u32 {
        let o = ((y * width + x) * 4) as usize;
        u32::from_le_bytes(buf[o..o + 4].try_into().unwrap())
    }

    struct Cookies(u64);
    impl Cookies {
        fn next(&mut self) -> impl FnOnce() -> u64 + '_ {
            || {
                self.0 += 1;
                self.0
            }
        }
    }

    #[test]
    fn damage_merges_beyond_a_few_rectangles() {
        let mut d = Damage::default();
        d.add(rect(0, 0, 10, 10));
        d.add(rect(2, 2, 3, 3)); // inside: nothing new
        assert_eq!(d.rects(), &[rect(0, 0, 10, 10)]);
        d.add(rect(0, 0, 20, 20)); // covers the first
        assert_eq!(d.rects(), &[rect(0, 0, 20, 20)]);
        for i in 0..MAX_DAMAGE_RECTS as u32 {
            d.add(rect(100 + i * 10, 0, 5, 5));
        }
        assert_eq!(d.rects(), &[rect(0, 0, 175, 20)]);
        d.add(rect(0, 0, 0, 7));
        assert_eq!(d.bounds(), Some(rect(0, 0, 175, 20)));
    }

    #[test]
    fn first_scanout_draws_the_whole_surface() {
        let mut r = ring();
        let mut c = Cookies(0);
        let change = r
            .scanout(4, 2, 16, PIXMAN_X8R8G8B8, &solid(4, 2, 0x00112233))
            .unwrap();
        assert_eq!(change, SizeChange::New);
        let f = r.flush(c.next()).unwrap().unwrap();
        assert_eq!(f.cookie, 1);
        assert_eq!(f.rect, rect(0, 0, 4, 2));
        let (slot, info) = f.scanout.expect("a first frame switches the scanout");
        assert_eq!((info.width, info.height, info.planes[0].stride), (4, 2, 16));
        assert_eq!(info.fourcc, gstspicedmabuf::fourcc::fourcc_code(b"XR24"));
        assert_eq!(pixel(r.buffer(slot).unwrap(), 4, 3, 1), 0x00112233);
        // Nothing changed since: nothing to draw.
        assert_eq!(r.flush(c.next()).unwrap(), None);
    }

    #[test]
    fn a_free_buffer_on_show_is_reused_without_a_new_scanout() {
        let mut r = ring();
        let mut c = Cookies(0);
        r.scanout(8, 8, 32, PIXMAN_X8R8G8B8, &solid(8, 8, 1))
            .unwrap();
        let f1 = r.flush(c.next()).unwrap().unwrap();
        assert!(r.complete(f1.cookie));
        r.update(1, 1, 2, 2, 8, PIXMAN_X8R8G8B8, &solid(2, 2, 7))
            .unwrap();
        let f2 = r.flush(c.next()).unwrap().unwrap();
        assert_eq!(f2.scanout, None);
        assert_eq!(f2.rect, rect(1, 1, 2, 2));
        let slot = f1.scanout.unwrap().0;
        assert_eq!(pixel(r.buffer(slot).unwrap(), 8, 2, 2), 7);
        assert_eq!(pixel(r.buffer(slot).unwrap(), 8, 3, 3), 1);
    }

    #[test]
    fn updates_merge_while_every_buffer_is_out() {
        let mut r = ring();
        let mut c = Cookies(0);
        r.scanout(16, 16, 64, PIXMAN_X8R8G8B8, &solid(16, 16, 0))
            .unwrap();
        // Three frames take the three buffers; their cookies stay out.
        let mut out = Vec::new();
        for i in 0..RING_LEN as u32 {
            r.update(i as i32, 0, 1, 1, 4, PIXMAN_X8R8G8B8, &solid(1, 1, 10 + i))
                .unwrap();
            out.push(r.flush(c.next()).unwrap().unwrap());
        }
        // A flood of updates: no frame, no new buffer.
        for i in 0..1000u32 {
            r.update(
                (i % 16) as i32,
                5,
                1,
                1,
                4,
                PIXMAN_X8R8G8B8,
                &solid(1, 1, i),
            )
            .unwrap();
            r.update(3, 9, 2, 1, 8, PIXMAN_X8R8G8B8, &solid(2, 1, 0xAB))
                .unwrap();
            assert_eq!(r.flush(c.next()).unwrap(), None);
        }
        let stats = r.stats();
        assert_eq!(stats.frames, 3);
        assert_eq!(stats.updates, 1 + 3 + 2000);
        assert_eq!(stats.waits, 1000);
        assert_eq!(stats.buffers_made, RING_LEN as u64);
        // One cookie back: one frame with the latest picture and the merged damage.
        assert!(r.complete(out[1].cookie));
        let f = r.flush(c.next()).unwrap().unwrap();
        assert_eq!(f.rect, rect(0, 5, 16, 5));
        let (slot, _) = f.scanout.expect("another buffer than the one on show");
        let buf = r.buffer(slot).unwrap().to_vec();
        assert_eq!(pixel(&buf, 16, 7, 5), 999);
        assert_eq!(pixel(&buf, 16, 15, 5), 991);
        assert_eq!(pixel(&buf, 16, 4, 9), 0xAB);
        // Older content reached this buffer too (it lacked the updates of the other frames).
        assert_eq!(pixel(&buf, 16, 0, 0), 10);
        assert_eq!(pixel(&buf, 16, 2, 0), 12);
        assert_eq!(buf, r.picture().unwrap());
    }

    #[test]
    fn copies_and_merges_are_counted() {
        let mut r = ring();
        let mut c = Cookies(0);
        r.scanout(4, 4, 16, PIXMAN_X8R8G8B8, &solid(4, 4, 1))
            .unwrap();
        let f = r.flush(c.next()).unwrap().unwrap();
        let s = r.stats();
        assert_eq!((s.picture_bytes, s.buffer_bytes, s.merged), (64, 64, 0));
        // Two updates while the only frame is out (a new buffer is made for them): one frame,
        // one update merged; that buffer lacked the whole picture.
        r.update(0, 0, 2, 1, 8, PIXMAN_X8R8G8B8, &solid(2, 1, 2))
            .unwrap();
        r.update(1, 2, 1, 2, 4, PIXMAN_X8R8G8B8, &solid(1, 2, 3))
            .unwrap();
        r.flush(c.next()).unwrap().unwrap();
        let s = r.stats();
        assert_eq!(s.picture_bytes, 64 + 8 + 8);
        assert_eq!(s.buffer_bytes, 64 + 64);
        assert_eq!(s.merged, 1);
        assert_eq!(s.copied_bytes(), s.picture_bytes + s.buffer_bytes);
        assert_eq!(s.copy_ns(), s.picture_ns + s.buffer_ns);
        // The first buffer, free again, gets only what it lacks.
        assert!(r.complete(f.cookie));
        r.update(3, 3, 1, 1, 4, PIXMAN_X8R8G8B8, &solid(1, 1, 4))
            .unwrap();
        r.flush(c.next()).unwrap().unwrap();
        let s = r.stats();
        assert_eq!(s.picture_bytes, 64 + 8 + 8 + 4);
        assert_eq!(s.buffer_bytes, 64 + 64 + 8 + 8 + 4);
        assert_eq!(s.merged, 1);
    }

    #[test]
    fn an_update_outside_the_surface_grows_it() {
        // QEMU 7.2 text mode: Scanout says 640x480, updates are 720 wide.
        let mut r = ring();
        let mut c = Cookies(0);
        r.scanout(640, 480, 2560, PIXMAN_X8R8G8B8, &solid(640, 480, 0x10))
            .unwrap();
        let old = r.flush(c.next()).unwrap().unwrap();
        let change = r
            .update(0, 0, 720, 16, 2880, PIXMAN_X8R8G8B8, &solid(720, 16, 0x20))
            .unwrap();
        assert_eq!(change, SizeChange::Grown { from: (640, 480) });
        assert_eq!(r.surface().unwrap().0, 720);
        assert_eq!(r.surface().unwrap().1, 480);
        let f = r.flush(c.next()).unwrap().unwrap();
        let (slot, info) = f.scanout.expect("a grown surface is a new scanout");
        assert_eq!((info.width, info.height), (720, 480));
        assert_eq!(f.rect, rect(0, 0, 720, 480));
        let buf = r.buffer(slot).unwrap().to_vec();
        assert_eq!(pixel(&buf, 720, 719, 15), 0x20);
        assert_eq!(pixel(&buf, 720, 639, 16), 0x10);
        assert_eq!(pixel(&buf, 720, 700, 100), 0);
        // The old surface's frame comes back later: its cookie is unknown now.
        assert!(!r.complete(old.cookie));
        assert!(r.complete(f.cookie));
        // An update inside: same size.
        assert_eq!(
            r.update(0, 160, 9, 16, 36, PIXMAN_X8R8G8B8, &solid(9, 16, 1))
                .unwrap(),
            SizeChange::Same
        );
    }

    #[test]
    fn a_scanout_of_another_size_is_a_new_surface() {
        let mut r = ring();
        let mut c = Cookies(0);
        r.scanout(4, 4, 16, PIXMAN_X8R8G8B8, &solid(4, 4, 1))
            .unwrap();
        let f = r.flush(c.next()).unwrap().unwrap();
        assert_eq!(
            r.scanout(4, 4, 16, PIXMAN_X8R8G8B8, &solid(4, 4, 2))
                .unwrap(),
            SizeChange::Same
        );
        assert_eq!(
            r.scanout(8, 2, 32, PIXMAN_X8R8G8B8, &solid(8, 2, 3))
                .unwrap(),
            SizeChange::New
        );
        assert!(!r.complete(f.cookie));
        let f = r.flush(c.next()).unwrap().unwrap();
        assert_eq!(f.scanout.unwrap().1.width, 8);
    }

    #[test]
    fn padded_strides_are_copied_row_by_row() {
        let mut r = ring();
        let mut c = Cookies(0);
        // 2x2, stride 12 (4 bytes of padding per row).
        let data = [1, 0, 0, 0, 2, 0, 0, 0, 9, 9, 9, 9, 3, 0, 0, 0, 4, 0, 0, 0];
        r.scanout(2, 2, 12, PIXMAN_X8R8G8B8, &data).unwrap();
        let f = r.flush(c.next()).unwrap().unwrap();
        let buf = r.buffer(f.scanout.unwrap().0).unwrap().to_vec();
        assert_eq!(buf, [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]);
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut r = ring();
        assert_eq!(
            r.update(0, 0, 1, 1, 4, PIXMAN_X8R8G8B8, &[0; 4]),
            Err(FrameError::NoSurface)
        );
        assert!(matches!(
            r.scanout(2, 2, 8, 0x1234, &[0; 16]),
            Err(FrameError::Format(_))
        ));
        assert!(matches!(
            r.scanout(0, 2, 8, PIXMAN_X8R8G8B8, &[]),
            Err(FrameError::Size { .. })
        ));
        assert!(matches!(
            r.scanout(MAX_DIMENSION + 1, 1, u32::MAX, PIXMAN_X8R8G8B8, &[]),
            Err(FrameError::Size { .. })
        ));
        assert!(matches!(
            r.scanout(2, 2, 4, PIXMAN_X8R8G8B8, &[0; 16]),
            Err(FrameError::Stride { .. })
        ));
        assert!(matches!(
            r.scanout(2, 2, 8, PIXMAN_X8R8G8B8, &[0; 15]),
            Err(FrameError::ShortData { got: 15, need: 16 })
        ));
        r.scanout(2, 2, 8, PIXMAN_X8R8G8B8, &solid(2, 2, 5))
            .unwrap();
        for (x, y, w, h) in [
            (-1, 0, 1, 1),
            (0, -1, 1, 1),
            (0, 0, 0, 1),
            (0, 0, 1, -4),
            (i32::MAX, 0, 1, 1),
            (0, 16384, 1, 1),
        ] {
            assert!(
                matches!(
                    r.update(x, y, w, h, 4, PIXMAN_X8R8G8B8, &[0; 4]),
                    Err(FrameError::Rect { .. })
                ),
                "{x},{y} {w}x{h}"
            );
        }
        assert!(matches!(
            r.update(0, 0, 2, 2, 8, PIXMAN_X8R8G8B8, &[0; 12]),
            Err(FrameError::ShortData { .. })
        ));
        assert!(matches!(
            r.update(0, 0, 1, 1, 2, 0x1002_0565, &[0; 2]),
            Err(FrameError::FormatMismatch { .. })
        ));
        // An update far outside would grow past the limit: refused, the surface stays.
        assert!(matches!(
            r.update(16380, 0, 10, 1, 40, PIXMAN_X8R8G8B8, &[0; 40]),
            Err(FrameError::Rect { .. })
        ));
        assert_eq!(r.surface().unwrap().0, 2);
        assert_eq!(r.stats().updates, 1);
    }

    #[test]
    fn an_abandoned_frame_is_drawn_again() {
        let mut r = ring();
        let mut c = Cookies(0);
        r.scanout(2, 2, 8, PIXMAN_X8R8G8B8, &solid(2, 2, 5))
            .unwrap();
        let f = r.flush(c.next()).unwrap().unwrap();
        r.abandon(&f);
        let g = r.flush(c.next()).unwrap().unwrap();
        assert!(g.scanout.is_some());
        assert_eq!(g.rect, f.rect);
    }

    #[test]
    fn an_allocation_failure_keeps_the_damage() {
        fn broken(_: usize) -> io::Result<Heap> {
            Err(io::ErrorKind::OutOfMemory.into())
        }
        let mut r = Ring::new(broken);
        let mut c = Cookies(0);
        r.scanout(2, 2, 8, PIXMAN_X8R8G8B8, &solid(2, 2, 5))
            .unwrap();
        assert!(r.flush(c.next()).is_err());
        assert_eq!(c.0, 0, "no cookie taken");
    }
}
