// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! The `spicedmabufsrc` element: a live source that turns a host's dmabuf scanouts into
//! GstBuffers without copying a pixel.
//!
//! This crate holds the element and registers it without a plugin ([`register_static`]), for
//! programs and libraries that link it (the spice-shim server). The loadable GStreamer plugin
//! (`libgstspicedmabuf.so`, for `gst-launch-1.0`) is the `gst-plugin-spicedmabuf` crate, which
//! re-exports this one; keeping `plugin_define!` there keeps its `gst_plugin_*` entry points out
//! of libspice_shim.so.
//!
//! In-process users downcast the element to [`SpiceDmabufSrc`] and call
//! [`SpiceDmabufSrc::push_scanout`] / [`SpiceDmabufSrc::push_draw`]; `gst-launch-1.0` users set
//! `socket-path` and feed it from another process (see `docs/socket-protocol.md`).

pub mod fourcc;
mod frame;
pub mod mapcache;
pub mod scanout;
mod socket;
mod spicedmabufsrc;
pub mod wire;

pub use frame::{DrawRelease, DrawStatus};
pub use scanout::{Plane, Rect, Scanout, ScanoutError, ScanoutInfo};
pub use spicedmabufsrc::{DrawError, SpiceDmabufSrc, register};

/// Registers `spicedmabufsrc` for this process without a plugin (idempotent), so that
/// `gst::ElementFactory::make("spicedmabufsrc")` works without `GST_PLUGIN_PATH`.
pub fn register_static() -> Result<(), gst::glib::BoolError> {
    if gst::ElementFactory::find("spicedmabufsrc").is_some() {
        return Ok(());
    }
    register(None)
}
