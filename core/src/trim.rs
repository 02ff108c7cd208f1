//! Giving the memory of departed clients back to the system.
//!
//! Every connection runs on threads of its own (reader, writer), and every pipeline started for
//! a client has streaming threads; glibc's malloc spreads threads over up to 8 arenas per core.
//! What they free stays in those arenas: glibc returns only the top of an arena, and only past
//! a threshold it raises by itself each time it frees a large block (up to 64 MiB). A stream of
//! short hostile connections grew the server by tens of MB a minute although nothing leaked
//! (malloc_stats: 3.0 MB of the heap in use before a storm, 3.4 MB after, 65 MB held).
//!
//! Two measures: the supervisor calls [`release_free_memory`] (`malloc_trim(0)`: every free
//! page of every arena goes back) at most once per [`INTERVAL`] after a connection ended; and
//! a program that owns its process (`spice-shim serve`/`qemu`) calls [`pin_thresholds`] at
//! start, which keeps glibc's default 128 KiB mmap threshold (large blocks are mapped and
//! unmapped, never left in an arena). The C library does not: that setting is process-wide and
//! the host's (QEMU's) to choose. With another allocator both do nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Least time between two trims.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

static WANTED: AtomicBool = AtomicBool::new(false);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn malloc_trim(pad: usize) -> std::ffi::c_int;
    fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
}

/// Pins glibc's mmap threshold at its default (128 KiB): blocks that large are mapped on their
/// own and unmapped when freed, instead of glibc raising the threshold after freeing one and
/// keeping the next ones in its arenas. Process-wide: for programs that own their process.
pub fn pin_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only sets a malloc parameter; any thread may call it at any time.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

/// A connection ended (its memory was freed): trim at the next occasion.
pub(crate) fn wanted() {
    WANTED.store(true, Ordering::Release);
}

/// Whether a trim was asked for since the last call.
pub(crate) fn take_wanted() -> bool {
    WANTED.swap(false, Ordering::AcqRel)
}

/// Returns every free page of the heap to the system.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes glibc's own arena locks; any thread may call it at any time.
    unsafe {
        malloc_trim(0);
    }
}
