//! What QEMU's listener calls do to the shim: the console's mode (off, 2D ring, dmabuf), the
//! 2D ring's frames, the dmabuf scanouts and draws, and the cookies that come back.
//!
//! Every call runs under one mutex (`Shared::display`), from the D-Bus side or from the
//! shim's completion thread. The shim is called with it held: `gl_draw` never blocks and never
//! calls back on the calling thread (cookies come back on the shim's completion thread), and
//! `gl_scanout` only takes the shim's own locks.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_channel::oneshot;
use gstspicedmabuf::fourcc::{self, fourcc_name};
use gstspicedmabuf::{Plane, Rect, ScanoutInfo};
use spice_shim_core::log;
use spice_shim_core::proto::CursorShape;
use spice_shim_core::{InputFn, Shim};

use crate::cookies::Cookies;
use crate::cursor::Cursor;
use crate::format;
use crate::memfd::{SealedMemfd, SharedSurface};
use crate::ring::{MAX_DIMENSION, Ring, RingStats, SizeChange};

/// What the front end drives: the shim's host-side calls. [`Shim`] is the real one; tests may
/// put a stand-in here.
pub trait Sink: Send + Sync {
    /// `Shim::gl_scanout`: takes ownership of `fds`; `None` disables the scanout.
    fn gl_scanout(&self, info: Option<ScanoutInfo>, fds: Vec<OwnedFd>) -> Result<(), String>;
    /// `Shim::gl_draw`: never blocks; `cookie` comes back once through the completion callback.
    fn gl_draw(&self, rect: Rect, cookie: u64);
    /// `Shim::set_client_mouse_available`.
    fn set_client_mouse_available(&self, available: bool);
    /// `Shim::set_input_callback`.
    fn set_input_callback(&self, cb: Option<InputFn>);
    /// `Shim::cursor_define`.
    fn cursor_define(&self, shape: CursorShape);
    /// `Shim::mouse_set`.
    fn mouse_set(&self, x: i32, y: i32, visible: bool);
}

impl Sink for Shim {
    fn gl_scanout(&self, info: Option<ScanoutInfo>, fds: Vec<OwnedFd>) -> Result<(), String> {
        Shim::gl_scanout(self, info, fds).map_err(|e| e.to_string())
    }

    fn gl_draw(&self, rect: Rect, cookie: u64) {
        Shim::gl_draw(self, rect, cookie);
    }

    fn set_client_mouse_available(&self, available: bool) {
        Shim::set_client_mouse_available(self, available);
    }

    fn set_input_callback(&self, cb: Option<InputFn>) {
        Shim::set_input_callback(self, cb);
    }

    fn cursor_define(&self, shape: CursorShape) {
        Shim::cursor_define(self, shape);
    }

    fn mouse_set(&self, x: i32, y: i32, visible: bool) {
        Shim::mouse_set(self, x, y, visible);
    }
}

/// Counters of the front end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendStats {
    /// The 2D path (`Scanout`/`Update`/`ScanoutMap`/`UpdateMap`).
    pub ring: RingStats,
    /// `UpdateDMABUF` calls drawn (each reply held until its cookie came back).
    pub dmabuf_draws: u64,
    /// Listener calls whose content was refused (malformed, unknown format, …).
    pub refused: u64,
    /// `UpdateDMABUF` replies held right now.
    pub held_replies: usize,
    /// SPICE input events dropped because QEMU did not keep up.
    pub input_dropped: u64,
    /// `Update` calls received (taken or not) and the bytes of their `ay` pixel data.
    pub updates_received: u64,
    pub update_bytes: u64,
    /// `Scanout` calls received and the bytes of their `ay` pixel data.
    pub scanouts_received: u64,
    pub scanout_bytes: u64,
}

impl FrontendStats {
    /// The 2D path's counters in one line, as `spice-shim qemu` prints it at exit:
    /// `qemu: updates N (B bytes), scanouts S (B bytes), copied B bytes in T ms (picture B bytes
    /// in T ms, buffers B bytes in T ms), frames drawn F, merged M`. Updates and scanouts are
    /// QEMU's calls and the bytes of their `ay` pixels; copies go into the picture (QEMU's pixels)
    /// and from it into the buffers handed to the shim; merged updates were drawn in the same
    /// frame as a later one.
    pub fn summary_line(&self) -> String {
        let r = &self.ring;
        let ms = |ns: u64| ns as f64 / 1e6;
        format!(
            "qemu: updates {} ({} bytes), scanouts {} ({} bytes), copied {} bytes in {:.3} ms \
             (picture {} bytes in {:.3} ms, buffers {} bytes in {:.3} ms), frames drawn {}, \
             merged {}",
            self.updates_received,
            self.update_bytes,
            self.scanouts_received,
            self.scanout_bytes,
            r.copied_bytes(),
            ms(r.copy_ns()),
            r.picture_bytes,
            ms(r.picture_ns),
            r.buffer_bytes,
            ms(r.buffer_ns),
            r.frames,
            r.merged
        )
    }
}

/// The console's scanout as the shim has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    /// The 2D ring feeds the shim.
    Ring,
    /// QEMU's dmabuf, of this size.
    Dmabuf {
        width: u32,
        height: u32,
    },
}

pub(crate) struct Display {
    sink: Option<Arc<dyn Sink>>,
    mode: Mode,
    ring: Ring<SealedMemfd>,
    /// QEMU's shared surface (`ScanoutMap`), read into the ring on `UpdateMap`.
    shared: Option<SharedSurface>,
    /// Rows read from the shared surface.
    scratch: Vec<u8>,
    cursor: Cursor,
    /// Problems already reported (each kind is logged once as a warning, then as debug).
    reported: HashSet<String>,
    dmabuf_draws: u64,
    refused: u64,
    updates_received: u64,
    update_bytes: u64,
    scanouts_received: u64,
    scanout_bytes: u64,
}

/// The display state and the cookies, shared by the listener, the completion callback and the
/// front end.
pub(crate) struct Shared {
    display: Mutex<Display>,
    pub cookies: Cookies,
    /// Counted by the input callback.
    pub input_dropped: Arc<AtomicU64>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            display: Mutex::new(Display {
                sink: None,
                mode: Mode::Off,
                ring: Ring::new(SealedMemfd::new),
                shared: None,
                scratch: Vec::new(),
                cursor: Cursor::default(),
                reported: HashSet::new(),
                dmabuf_draws: 0,
                refused: 0,
                updates_received: 0,
                update_bytes: 0,
                scanouts_received: 0,
                scanout_bytes: 0,
            }),
            cookies: Cookies::new(),
            input_dropped: Arc::default(),
        }
    }

    pub fn display(&self) -> MutexGuard<'_, Display> {
        self.display.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shim's completion callback: a held `UpdateDMABUF` reply goes out, or a 2D buffer is
    /// free again (and the damage merged meanwhile is drawn into it).
    pub fn complete(&self, cookie: u64) {
        if self.cookies.wake(cookie) {
            return;
        }
        let mut d = self.display();
        if d.ring.complete(cookie) && d.mode == Mode::Ring {
            d.flush(&self.cookies);
        }
    }

    /// Starts driving `sink`.
    pub fn attach(&self, sink: Arc<dyn Sink>) {
        self.display().sink = Some(sink);
    }

    /// Stops driving the shim: no call reaches it afterwards, and the front end holds no
    /// reference to it. Held `UpdateDMABUF` replies are released.
    pub fn detach(&self) -> Option<Arc<dyn Sink>> {
        let sink = {
            let mut d = self.display();
            d.mode = Mode::Off;
            d.ring.reset();
            d.shared = None;
            d.sink.take()
        };
        self.cookies.wake_all();
        sink
    }

    pub fn stats(&self) -> FrontendStats {
        let d = self.display();
        FrontendStats {
            ring: d.ring.stats(),
            dmabuf_draws: d.dmabuf_draws,
            refused: d.refused,
            held_replies: self.cookies.waiting(),
            input_dropped: self.input_dropped.load(Ordering::Relaxed),
            updates_received: d.updates_received,
            update_bytes: d.update_bytes,
            scanouts_received: d.scanouts_received,
            scanout_bytes: d.scanout_bytes,
        }
    }
}

impl Display {
    /// Logs a problem with QEMU's input: a warning the first time for each `kind`, debug after.
    fn refuse(&mut self, kind: &str, msg: &str) {
        self.refused += 1;
        if self.reported.insert(kind.to_owned()) {
            log::warn(&format!(
                "{msg} (ignored; further ones are logged at debug level)"
            ));
        } else {
            log::debug(msg);
        }
    }

    /// Leaves the dmabuf or map path for the 2D ring, or the other way round.
    fn enter(&mut self, mode: Mode) {
        if self.mode == Mode::Ring && mode != Mode::Ring {
            self.ring.reset();
            self.shared = None;
        }
        self.mode = mode;
    }

    fn log_size_change(&self, change: SizeChange, cause: &str) {
        let Some((w, h, f)) = self.ring.surface() else {
            return;
        };
        match change {
            SizeChange::Same => {}
            SizeChange::New => log::info(&format!(
                "QEMU console: {w}x{h} {} (2D, copied into the shim's buffers)",
                f.name
            )),
            SizeChange::Grown { from: (fw, fh) } => log::info(&format!(
                "surface grown from {fw}x{fh} to {w}x{h} to cover {cause} (QEMU does not report \
                 the size of VGA text mode)"
            )),
        }
    }

    /// Hands the ring's next frame to the shim, if a buffer is free.
    fn flush(&mut self, cookies: &Cookies) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let frame = match self.ring.flush(|| cookies.next()) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                self.refuse(
                    "alloc",
                    &format!("cannot make a buffer for the 2D surface: {e}"),
                );
                return;
            }
        };
        if let Some((slot, info)) = &frame.scanout {
            let shown = self
                .ring
                .share(*slot)
                .map_err(|e| e.to_string())
                .and_then(|fd| sink.gl_scanout(Some(info.clone()), vec![fd]));
            if let Err(e) = shown {
                self.ring.abandon(&frame);
                self.refuse(
                    "ring-scanout",
                    &format!("the shim refused the 2D surface: {e}"),
                );
                return;
            }
        }
        sink.gl_draw(frame.rect, frame.cookie);
    }

    /// `Scanout`.
    pub fn scanout(
        &mut self,
        cookies: &Cookies,
        width: u32,
        height: u32,
        stride: u32,
        pixman: u32,
        data: &[u8],
    ) {
        self.scanouts_received += 1;
        self.scanout_bytes += data.len() as u64;
        self.enter(Mode::Ring);
        self.shared = None;
        match self.ring.scanout(width, height, stride, pixman, data) {
            Ok(change) => {
                self.log_size_change(change, "a scanout");
                self.flush(cookies);
            }
            Err(e) => self.refuse(
                &format!("scanout-{}", discriminant(&e)),
                &format!("QEMU's Scanout {width}x{height} refused: {e}"),
            ),
        }
    }

    /// `Update`.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        cookies: &Cookies,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        stride: u32,
        pixman: u32,
        data: &[u8],
    ) {
        self.updates_received += 1;
        self.update_bytes += data.len() as u64;
        if self.mode != Mode::Ring {
            self.refuse("update-mode", "QEMU sent an Update without a 2D Scanout");
            return;
        }
        match self.ring.update(x, y, w, h, stride, pixman, data) {
            Ok(change) => {
                self.log_size_change(change, &format!("an update at {x},{y} {w}x{h}"));
                self.flush(cookies);
            }
            Err(e) => self.refuse(
                &format!("update-{}", discriminant(&e)),
                &format!("QEMU's Update {x},{y} {w}x{h} refused: {e}"),
            ),
        }
    }

    /// `ScanoutMap`: QEMU shares its surface. Refused (an error reply makes QEMU fall back to
    /// `Scanout`/`Update`) when the format or the memfd does not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn scanout_map(
        &mut self,
        cookies: &Cookies,
        fd: OwnedFd,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman: u32,
    ) -> Result<(), String> {
        let Some(f) = format::from_pixman(pixman) else {
            let msg = format!(
                "{} is not a format the shim can show",
                format::pixman_name(pixman)
            );
            self.refuse("map-format", &format!("QEMU's ScanoutMap refused: {msg}"));
            return Err(msg);
        };
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            let msg = format!("size {width}x{height} is out of range");
            self.refuse("map-size", &format!("QEMU's ScanoutMap refused: {msg}"));
            return Err(msg);
        }
        if u64::from(stride) < u64::from(width) * u64::from(f.bytes_per_pixel) {
            let msg = format!("stride {stride} is too small for {width} pixels");
            self.refuse("map-stride", &format!("QEMU's ScanoutMap refused: {msg}"));
            return Err(msg);
        }
        let surface = match SharedSurface::new(fd, offset, width, height, stride, pixman) {
            Ok(s) => s,
            Err(e) => {
                self.refuse("map-fd", &format!("QEMU's ScanoutMap refused: {e}"));
                return Err(e.to_string());
            }
        };
        self.enter(Mode::Ring);
        if let Err(e) = surface.read_rows(0, height, &mut self.scratch) {
            self.refuse(
                "map-read",
                &format!("cannot read QEMU's shared surface: {e}"),
            );
            return Err(e.to_string());
        }
        match self
            .ring
            .scanout(width, height, stride, pixman, &self.scratch)
        {
            Ok(change) => {
                self.log_size_change(change, "a shared scanout");
                self.shared = Some(surface);
                self.flush(cookies);
                Ok(())
            }
            Err(e) => {
                self.refuse("map-scanout", &format!("QEMU's ScanoutMap refused: {e}"));
                Err(e.to_string())
            }
        }
    }

    /// `UpdateMap`: rows of the shared surface are read into the ring.
    pub fn update_map(&mut self, cookies: &Cookies, x: i32, y: i32, w: i32, h: i32) {
        let Some(s) = &self.shared else {
            self.refuse("map-update", "QEMU sent an UpdateMap without a ScanoutMap");
            return;
        };
        // Clip to the shared surface.
        let x0 = i64::from(x).clamp(0, i64::from(s.width));
        let y0 = i64::from(y).clamp(0, i64::from(s.height));
        let x1 = (i64::from(x) + i64::from(w)).clamp(x0, i64::from(s.width));
        let y1 = (i64::from(y) + i64::from(h)).clamp(y0, i64::from(s.height));
        if x1 == x0 || y1 == y0 {
            return;
        }
        let (x0, y0, x1, y1) = (x0 as u32, y0 as u32, x1 as u32, y1 as u32);
        if let Err(e) = s.read_rows(y0, y1 - y0, &mut self.scratch) {
            self.refuse(
                "map-read",
                &format!("cannot read QEMU's shared surface: {e}"),
            );
            return;
        }
        let Some(bpp) = format::from_pixman(s.pixman).map(|f| f.bytes_per_pixel) else {
            return;
        };
        let (stride, pixman) = (s.stride, s.pixman);
        let start = (x0 * bpp) as usize;
        let result = self.ring.update(
            x0 as i32,
            y0 as i32,
            (x1 - x0) as i32,
            (y1 - y0) as i32,
            stride,
            pixman,
            &self.scratch[start..],
        );
        match result {
            Ok(_) => self.flush(cookies),
            Err(e) => self.refuse("map-update", &format!("QEMU's UpdateMap refused: {e}")),
        }
    }

    /// `ScanoutDMABUF`/`ScanoutDMABUF2`: QEMU's dmabuf goes to the shim as is.
    pub fn scanout_dmabuf(&mut self, info: ScanoutInfo, fds: Vec<OwnedFd>) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let (width, height) = (info.width, info.height);
        let described = format!(
            "{width}x{height} dmabuf {} modifier 0x{:x}{}",
            fourcc_name(info.fourcc),
            info.modifier,
            if info.y0_top { "" } else { ", bottom-up" }
        );
        match sink.gl_scanout(Some(info), fds) {
            Ok(()) => {
                let mode = Mode::Dmabuf { width, height };
                if self.mode != mode {
                    log::info(&format!("QEMU console: {described}"));
                } else {
                    log::debug(&format!("QEMU console: {described}"));
                }
                self.enter(mode);
            }
            Err(e) => {
                self.enter(Mode::Off);
                self.refuse(
                    "dmabuf-scanout",
                    &format!("the shim refused QEMU's {described}: {e}"),
                );
            }
        }
    }

    /// `UpdateDMABUF`: draws the rectangle (clipped to the scanout) and returns what to await
    /// before replying, so QEMU renders its next frame only once the shim is done with this one.
    /// `None`: nothing to wait for.
    pub fn update_dmabuf(
        &mut self,
        cookies: &Cookies,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
    ) -> Option<oneshot::Receiver<()>> {
        let sink = self.sink.clone()?;
        let Mode::Dmabuf { width, height } = self.mode else {
            self.refuse(
                "dmabuf-update",
                "QEMU sent an UpdateDMABUF without a dmabuf scanout",
            );
            return None;
        };
        let x0 = i64::from(x).clamp(0, i64::from(width));
        let y0 = i64::from(y).clamp(0, i64::from(height));
        let x1 = (i64::from(x) + i64::from(w)).clamp(x0, i64::from(width));
        let y1 = (i64::from(y) + i64::from(h)).clamp(y0, i64::from(height));
        if x1 == x0 || y1 == y0 {
            return None;
        }
        let rect = Rect {
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0) as u32,
            h: (y1 - y0) as u32,
        };
        let cookie = cookies.next();
        let done = cookies.wait_for(cookie);
        sink.gl_draw(rect, cookie);
        self.dmabuf_draws += 1;
        Some(done)
    }

    /// `Disable`.
    pub fn disable(&mut self) {
        self.enter(Mode::Off);
        self.ring.reset();
        self.shared = None;
        log::info("QEMU disabled the console");
        if let Some(sink) = &self.sink {
            let _ = sink.gl_scanout(None, Vec::new());
        }
    }

    /// `CursorDefine`: kept, and shown to the clients through the shim's cursor channel.
    pub fn cursor_define(&mut self, width: i32, height: i32, hot_x: i32, hot_y: i32, argb: &[u8]) {
        if let Some(shape) = self.cursor.define(width, height, hot_x, hot_y, argb)
            && let Some(sink) = &self.sink
        {
            sink.cursor_define(shape);
        }
    }

    /// `MouseSet`: kept, and passed on to the shim.
    pub fn mouse_set(&mut self, x: i32, y: i32, visible: bool) {
        self.cursor.set(x, y, visible);
        if let Some(sink) = &self.sink {
            sink.mouse_set(x, y, visible);
        }
    }
}

/// A short name of an error's kind, to report each kind once.
fn discriminant(e: &crate::ring::FrameError) -> String {
    let s = format!("{e:?}");
    s.split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The scanout of `ScanoutDMABUF2`: `width`x`height` at `x`,`y` of a `backing_width`x
/// `backing_height` buffer, plane `i` in `fds[i]`. A sub-rectangle is shown by moving the
/// plane's start (single-plane formats only; rows count from the bottom when `y0_top` is false).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dmabuf2_info(
    nfds: usize,
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    offsets: &[u32],
    strides: &[u32],
    n_planes: u32,
    fourcc: u32,
    backing_width: u32,
    backing_height: u32,
    modifier: u64,
    y0_top: bool,
) -> Result<ScanoutInfo, String> {
    let n = n_planes as usize;
    if !(1..=gstspicedmabuf::scanout::MAX_PLANES).contains(&n) {
        return Err(format!("{n_planes} planes (1..=4 taken)"));
    }
    if offsets.len() < n || strides.len() < n || nfds < n {
        return Err(format!(
            "{n_planes} planes but {} offsets, {} strides and {nfds} fds",
            offsets.len(),
            strides.len()
        ));
    }
    let right = u64::from(x) + u64::from(width);
    let bottom = u64::from(y) + u64::from(height);
    if right > u64::from(backing_width) || bottom > u64::from(backing_height) {
        return Err(format!(
            "{width}x{height} at {x},{y} lies outside the {backing_width}x{backing_height} buffer"
        ));
    }
    let mut planes: Vec<Plane> = (0..n)
        .map(|i| Plane {
            fd_index: i,
            offset: offsets[i],
            stride: strides[i],
        })
        .collect();
    if x != 0 || y != 0 {
        let shape = fourcc::lookup(fourcc)
            .ok_or_else(|| format!("unknown fourcc {}", fourcc_name(fourcc)))?;
        if shape.planes.len() != 1 || n != 1 {
            return Err(format!(
                "a sub-rectangle ({x},{y}) of a multi-plane {} buffer",
                fourcc_name(fourcc)
            ));
        }
        let row = if y0_top {
            u64::from(y)
        } else {
            u64::from(backing_height) - bottom
        };
        let start = u64::from(planes[0].offset)
            + row * u64::from(planes[0].stride)
            + u64::from(x) * u64::from(shape.planes[0].bytes_per_pixel);
        planes[0].offset = u32::try_from(start).map_err(|_| "plane offset overflows".to_owned())?;
    }
    Ok(ScanoutInfo {
        width,
        height,
        fourcc,
        modifier,
        y0_top,
        planes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstspicedmabuf::fourcc::fourcc_code;

    #[test]
    fn dmabuf2_whole_buffer() {
        let xr24 = fourcc_code(b"XR24");
        let info =
            dmabuf2_info(1, 0, 0, 640, 480, &[0], &[2560], 1, xr24, 640, 480, 0, true).unwrap();
        assert_eq!((info.width, info.height), (640, 480));
        assert_eq!(
            info.planes,
            vec![Plane {
                fd_index: 0,
                offset: 0,
                stride: 2560
            }]
        );
    }

    #[test]
    fn dmabuf2_sub_rectangle_moves_the_plane_start() {
        let xr24 = fourcc_code(b"XR24");
        let top = dmabuf2_info(
            1,
            8,
            2,
            100,
            50,
            &[64],
            &[4096],
            1,
            xr24,
            1024,
            768,
            0,
            true,
        )
        .unwrap();
        assert_eq!(top.planes[0].offset, 64 + 2 * 4096 + 8 * 4);
        // Bottom-up: the rectangle's rows start (768 - 2 - 50) rows into the buffer.
        let up = dmabuf2_info(
            1,
            8,
            2,
            100,
            50,
            &[0],
            &[4096],
            1,
            xr24,
            1024,
            768,
            0,
            false,
        )
        .unwrap();
        assert_eq!(up.planes[0].offset, 716 * 4096 + 32);
    }

    #[test]
    fn dmabuf2_nv12_planes() {
        let nv12 = fourcc_code(b"NV12");
        let info = dmabuf2_info(
            2,
            0,
            0,
            64,
            32,
            &[0, 2048],
            &[64, 64],
            2,
            nv12,
            64,
            32,
            0,
            true,
        )
        .unwrap();
        assert_eq!(info.planes.len(), 2);
        assert_eq!(info.planes[1].fd_index, 1);
        assert_eq!(info.planes[1].offset, 2048);
    }

    #[test]
    fn dmabuf2_bad_descriptions_are_refused() {
        let xr24 = fourcc_code(b"XR24");
        let nv12 = fourcc_code(b"NV12");
        for (nfds, x, y, w, h, off, str_, n, fcc, bw, bh) in [
            (1, 0, 0, 10, 10, vec![0], vec![40], 0, xr24, 10, 10),
            (1, 0, 0, 10, 10, vec![0], vec![40], 5, xr24, 10, 10),
            (0, 0, 0, 10, 10, vec![0], vec![40], 1, xr24, 10, 10),
            (1, 0, 0, 10, 10, vec![], vec![40], 1, xr24, 10, 10),
            (1, 1, 0, 10, 10, vec![0], vec![40], 1, xr24, 10, 10),
            (1, 0, u32::MAX, 10, 10, vec![0], vec![40], 1, xr24, 10, 10),
            (2, 2, 2, 4, 4, vec![0, 100], vec![16, 16], 2, nv12, 16, 16),
            (1, 2, 2, 4, 4, vec![0], vec![16], 1, 0x1234_5678, 16, 16),
            (1, 0, 1, 4, 1, vec![u32::MAX], vec![16], 1, xr24, 16, 16),
        ] {
            assert!(
                dmabuf2_info(nfds, x, y, w, h, &off, &str_, n, fcc, bw, bh, 0, true).is_err(),
                "{nfds} {x},{y} {w}x{h} {off:?} {str_:?} {n}"
            );
        }
    }
}
