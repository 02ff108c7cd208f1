//! Import cache: one kept-mapped dmabuf memory per buffer object, shared by every scanout and
//! every pipeline of the process.
//!
//! Hosts flip between a few buffers and send a new fd (a dup) with every `gl_scanout`. Wrapping
//! each frame's fd anew would mmap the whole buffer and fault every page in again for each frame.
//! Buffers are recognised by their file identity (`st_dev`, `st_ino`), and the first import keeps
//! a private dup of the fd inside a `KEEP_MAPPED` memory; frames are sub-memories of it. The
//! memory owns its dup, so it stays valid for frames in flight even after the cache (or the
//! host) let go. The cache holds at most [`CAPACITY`] buffers and forgets those unused for
//! [`MAX_IDLE`].

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst_allocators::prelude::*;

/// Buffers kept mapped at most.
pub const CAPACITY: usize = 8;
/// A buffer not used for this long is unmapped.
pub const MAX_IDLE: Duration = Duration::from_secs(3);

/// Identity of a buffer object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

impl BufferKey {
    /// The identity of `fd`, whose size is `size`.
    pub fn of(fd: BorrowedFd<'_>, size: u64) -> Result<Self, String> {
        let st = rustix::fs::fstat(fd).map_err(|e| e.to_string())?;
        Ok(Self {
            dev: st.st_dev,
            ino: st.st_ino,
            size,
        })
    }
}

struct Entry {
    key: BufferKey,
    memory: gst::Memory,
    last_used: Instant,
}

static CACHE: LazyLock<Mutex<Vec<Entry>>> = LazyLock::new(Mutex::default);
static ALLOCATOR: LazyLock<gst_allocators::DmaBufAllocator> =
    LazyLock::new(gst_allocators::DmaBufAllocator::new);

/// The kept-mapped memory of the buffer behind `fd` (imported on first use).
pub fn memory_for(fd: BorrowedFd<'_>, key: BufferKey) -> Result<gst::Memory, glib::BoolError> {
    let now = Instant::now();
    let mut cache = CACHE.lock().unwrap();
    cache.retain(|e| now.duration_since(e.last_used) < MAX_IDLE);
    if let Some(e) = cache.iter_mut().find(|e| e.key == key) {
        e.last_used = now;
        return Ok(e.memory.clone());
    }
    let dup = rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 0)
        .map_err(|e| glib::bool_error!("cannot dup the scanout fd: {e}"))?;
    // SAFETY: ownership of the dup moves into the memory, which closes it when freed; the size
    // was checked against the file when the scanout was validated.
    let memory = unsafe {
        ALLOCATOR.alloc_dmabuf_with_flags(
            dup.into_raw_fd(),
            key.size as usize,
            gst_allocators::FdMemoryFlags::KEEP_MAPPED,
        )
    }?;
    if cache.len() >= CAPACITY
        && let Some(oldest) = cache
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(i, _)| i)
    {
        cache.swap_remove(oldest);
    }
    cache.push(Entry {
        key,
        memory: memory.clone(),
        last_used: now,
    });
    Ok(memory)
}

/// Forgets every cached buffer (memories still used by frames stay alive until freed).
pub fn clear() {
    CACHE.lock().unwrap().clear();
}

/// Number of cached buffers.
pub fn len() -> usize {
    CACHE.lock().unwrap().len()
}
