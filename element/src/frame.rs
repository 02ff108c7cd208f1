//! Frames and their release notification.
//!
//! A draw becomes a [`Frame`]; when the frame is turned into a GstBuffer, a [`MemoryGuard`] is
//! attached to every GstMemory of the buffer (as qdata, whose destroy notify runs when the memory
//! is finalized). When the last memory is freed the guard drops and the draw's [`DrawRelease`]
//! fires with [`DrawStatus::Released`]. A frame that never reaches a buffer fires with
//! [`DrawStatus::Dropped`] or [`DrawStatus::Refused`]. Every `DrawRelease` fires exactly once: the
//! callback is an `FnOnce` called from `Drop`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use glib::translate::IntoGlib;

use crate::scanout::{Rect, Scanout};

/// How a draw ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrawStatus {
    /// The frame went into the pipeline and GStreamer freed every memory wrapping it.
    Released,
    /// The frame never went into the pipeline: superseded by a newer draw, flushing or stopping.
    Dropped,
    /// The draw was invalid (no scanout, rectangle outside the scanout, buffer error).
    Refused,
}

/// Callback run once when a draw is done with.
pub type ReleaseFn = Box<dyn FnOnce(u64, DrawStatus) + Send + 'static>;

/// The release notification of one draw. Fires exactly once, when dropped.
pub struct DrawRelease {
    id: u64,
    status: DrawStatus,
    cb: Option<ReleaseFn>,
}

impl DrawRelease {
    /// A release that calls `cb(id, status)` once.
    pub fn new(id: u64, cb: impl FnOnce(u64, DrawStatus) + Send + 'static) -> Self {
        Self {
            id,
            status: DrawStatus::Dropped,
            cb: Some(Box::new(cb)),
        }
    }

    /// The draw id given by the producer.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Fires now with `status`.
    pub fn complete(mut self, status: DrawStatus) {
        self.status = status;
    }

    pub(crate) fn set_status(&mut self, status: DrawStatus) {
        self.status = status;
    }
}

impl std::fmt::Debug for DrawRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrawRelease")
            .field("id", &self.id)
            .field("status", &self.status)
            .finish()
    }
}

impl Drop for DrawRelease {
    fn drop(&mut self) {
        if let Some(cb) = self.cb.take() {
            cb(self.id, self.status);
        }
    }
}

/// One draw waiting for the streaming thread.
#[derive(Debug)]
pub(crate) struct Frame {
    pub scanout: Arc<Scanout>,
    pub rect: Rect,
    pub release: DrawRelease,
    pub pts: Option<gst::ClockTime>,
}

/// Held by every GstMemory of a buffer; dropping the last one releases the draw and lets go of
/// the scanout (closing its fds if nothing else holds it).
struct MemoryGuard {
    _scanout: Arc<Scanout>,
    // A Mutex only to make the guard Sync: it is touched once, when dropped.
    _release: std::sync::Mutex<DrawRelease>,
    released: Arc<AtomicU64>,
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }
}

static GUARD_QUARK: LazyLock<glib::Quark> =
    LazyLock::new(|| glib::Quark::from_str("spicedmabuf-memory-guard"));

unsafe extern "C" fn drop_guard(data: glib::ffi::gpointer) {
    // SAFETY: `data` is the pointer produced by `Arc::into_raw` in `attach_guard`, and GStreamer
    // calls this destroy notify exactly once, when the memory is finalized.
    drop(unsafe { Arc::from_raw(data as *const MemoryGuard) });
}

fn attach_guard(mem: &gst::Memory, guard: &Arc<MemoryGuard>) {
    let raw = Arc::into_raw(Arc::clone(guard));
    // SAFETY: `mem` is a valid GstMemory (a GstMiniObject). Ownership of one strong count moves
    // into the qdata and is given back by `drop_guard` when the memory is finalized.
    unsafe {
        gst::ffi::gst_mini_object_set_qdata(
            mem.as_ptr() as *mut gst::ffi::GstMiniObject,
            GUARD_QUARK.into_glib(),
            raw as glib::ffi::gpointer,
            Some(drop_guard),
        );
    }
}

/// Wraps a frame into a GstBuffer without copying: one dmabuf memory per plane (DONT_CLOSE; the
/// scanout owns the fds), resized to the plane, and a VideoMeta with the real strides.
pub(crate) fn frame_to_buffer(
    frame: Frame,
    released: &Arc<AtomicU64>,
) -> Result<gst::Buffer, glib::BoolError> {
    let Frame {
        scanout,
        mut release,
        pts,
        ..
    } = frame;
    let nplanes = scanout.info().planes.len();
    let mut memories = Vec::with_capacity(nplanes);
    let mut offsets = Vec::with_capacity(nplanes);
    let mut strides = Vec::with_capacity(nplanes);
    let mut buffer_offset = 0usize;
    for i in 0..nplanes {
        let plane = scanout.info().planes[i];
        let size = scanout.plane_size(i) as usize;
        let mem = scanout.plane_memory(i)?;
        memories.push(mem);
        offsets.push(buffer_offset);
        strides.push(plane.stride as i32);
        buffer_offset += size;
    }

    release.set_status(DrawStatus::Released);
    let guard = Arc::new(MemoryGuard {
        _scanout: Arc::clone(&scanout),
        _release: std::sync::Mutex::new(release),
        released: Arc::clone(released),
    });
    let mut buffer = gst::Buffer::new();
    {
        let b = buffer.get_mut().expect("a new buffer is writable");
        for mem in memories {
            attach_guard(&mem, &guard);
            b.append_memory(mem);
        }
        b.set_pts(pts);
        gst_video::VideoMeta::add_full(
            b,
            gst_video::VideoFrameFlags::empty(),
            scanout.video_format(),
            scanout.width(),
            scanout.height(),
            &offsets,
            &strides,
        )?;
    }
    Ok(buffer)
}
