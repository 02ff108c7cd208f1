// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! GStreamer plugin `spicedmabuf` with the `spicedmabufsrc` element: a live source that turns a
//! host's dmabuf scanouts into GstBuffers without copying a pixel.
//!
//! In-process users (the spice-shim server) downcast the element to [`SpiceDmabufSrc`] and call
//! [`SpiceDmabufSrc::push_scanout`] / [`SpiceDmabufSrc::push_draw`]; `gst-launch-1.0` users set
//! `socket-path` and feed it from another process (see `docs/socket-protocol.md`).

/**
 * plugin-spicedmabuf:
 *
 * Since: 0.1.0
 */
use gst::glib;

pub mod fourcc;
mod frame;
pub mod mapcache;
pub mod scanout;
mod socket;
mod spicedmabufsrc;
pub mod wire;

pub use frame::{DrawRelease, DrawStatus};
pub use scanout::{Plane, Rect, Scanout, ScanoutError, ScanoutInfo};
pub use spicedmabufsrc::{DrawError, SpiceDmabufSrc};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    spicedmabufsrc::register(plugin)
}

gst::plugin_define!(
    spicedmabuf,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
