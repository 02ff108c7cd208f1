// SPDX-License-Identifier: MPL-2.0
#![allow(unused_doc_comments)]

//! GStreamer plugin `spicedmabuf` with the `spicedmabufsrc` element: a live source that turns a
//! host's dmabuf scanouts into GstBuffers without copying a pixel.
//!
//! The element itself is the `spicedmabuf-element` crate, re-exported here; this crate adds the
//! plugin entry points (`plugin_define!`) for `gst-launch-1.0` and `gst-inspect-1.0`.

/**
 * plugin-spicedmabuf:
 *
 * Since: 0.1.0
 */
use gst::glib;

pub use spicedmabuf_element::*;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    spicedmabuf_element::register(Some(plugin))
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
