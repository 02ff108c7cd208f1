// SPDX-License-Identifier: MPL-2.0

/**
 * SECTION:element-spicedmabufsrc
 *
 * A live source whose buffers wrap a host's scanout dmabufs without copying: each buffer has one
 * dmabuf GstMemory per plane (the scanout's own fd) and a GstVideoMeta with the real offsets and
 * strides. Caps are plain `video/x-raw` with the format mapped from the DRM fourcc; a change of
 * size or format renegotiates.
 *
 * Frames come from a draw: "this rectangle of the current scanout changed". Each draw gets exactly
 * one release notification, when GStreamer frees the memory (or at once if the frame is dropped or
 * refused). At most `max-queued` frames wait for the streaming thread; when a newer draw arrives
 * the oldest waiting one is dropped and released at once (newest wins).
 *
 * Bottom-up scanouts (`y0_top` false) are not flipped in memory: the element stores an
 * `image-orientation=flip-rotate-180` tag; add `videoflip video-direction=auto` to flip on the CPU
 * (spice-shim instead tells the client, which flips for free).
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 spicedmabufsrc socket-path=/tmp/s.sock num-buffers=300 ! videoconvert ! \
 *   video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast ! h264parse ! \
 *   mp4mux ! filesink location=out.mp4
 * ]| and in another terminal `spice-shim feed --socket /tmp/s.sock`.
 */
use std::sync::Arc;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::frame::DrawRelease;
use crate::scanout::{Rect, Scanout};

pub(crate) mod imp;

pub use imp::DrawError;

glib::wrapper! {
    pub struct SpiceDmabufSrc(ObjectSubclass<imp::SpiceDmabufSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

impl SpiceDmabufSrc {
    /// Makes `scanout` the current scanout (`None`: scanout disabled). Frames already queued or
    /// in the pipeline keep the scanout they were drawn from.
    pub fn push_scanout(&self, scanout: Option<Arc<Scanout>>) {
        self.imp().push_scanout(scanout);
    }

    /// Queues a frame of the current scanout. `release` fires exactly once: `Released` when
    /// GStreamer freed the frame's memory, `Dropped` if a newer draw replaced it or the element
    /// was flushing or stopped, `Refused` (with an error returned here) for an invalid draw.
    pub fn push_draw(&self, rect: Rect, release: DrawRelease) -> Result<(), DrawError> {
        self.imp().push_draw(rect, release)
    }

    /// The current scanout.
    pub fn current_scanout(&self) -> Option<Arc<Scanout>> {
        self.imp().current_scanout()
    }
}

pub fn register(plugin: Option<&gst::Plugin>) -> Result<(), glib::BoolError> {
    gst::Element::register(
        plugin,
        "spicedmabufsrc",
        gst::Rank::NONE,
        SpiceDmabufSrc::static_type(),
    )
}
