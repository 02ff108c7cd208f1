//! Logging: everything goes to the GStreamer debug system (category `spice-shim`, e.g.
//! `GST_DEBUG=spice-shim:5`); warnings and errors, and info lines when verbose output is on
//! (the command-line program turns it on), are also printed as one line on stderr.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The `spice-shim` debug category.
pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "spice-shim",
        gst::DebugColorFlags::empty(),
        Some("SPICE dmabuf shim"),
    )
});

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Prints info lines on stderr too.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Logs an info line.
pub fn info(msg: &str) {
    gst::info!(CAT, "{msg}");
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("spice-shim: {msg}");
    }
}

/// Logs a warning.
pub fn warn(msg: &str) {
    gst::warning!(CAT, "{msg}");
    eprintln!("spice-shim: warning: {msg}");
}

/// Logs an error (the process goes on).
pub fn error(msg: &str) {
    gst::error!(CAT, "{msg}");
    eprintln!("spice-shim: error: {msg}");
}

/// Logs a debug line (GStreamer debug system only).
pub fn debug(msg: &str) {
    gst::debug!(CAT, "{msg}");
}
