//! Memory shared with the shim and with QEMU.
//!
//! - [`SealedMemfd`]: a ring buffer of the 2D path. A memfd sealed against shrinking and growing
//!   (its size can never change under a mapping, so no reader gets SIGBUS), mapped here to write
//!   QEMU's pixels; the shim gets a dup of the fd with `gl_scanout`.
//! - [`SharedSurface`]: the memfd QEMU shares with `ScanoutMap` (newer QEMU). QEMU creates it
//!   without seals and keeps drawing into it, so it is never mapped here (a truncation would
//!   SIGBUS a mapping) nor shown as is (frames would tear while QEMU draws, and the cookie could
//!   not protect it): damaged rows are read with `pread`, which a short file only makes short,
//!   and copied into the ring like `Update` pixels.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::ring::FrameBuffer;

/// A sealed memfd mapped read-write.
pub struct SealedMemfd {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone (it is unmapped on drop) and is only reached
// through `&mut self`, so moving the value to another thread moves the only access to it.
unsafe impl Send for SealedMemfd {}

impl SealedMemfd {
    /// A new zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let fd = rustix::fs::memfd_create(
            "spice-shim-qemu",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)?;
        // SAFETY: a new shared mapping (no fixed address, so nothing existing is replaced) of
        // `len` bytes of a memfd that is exactly `len` bytes long and sealed against shrinking,
        // so every byte of the mapping stays backed.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::Other)?;
        Ok(Self { fd, ptr, len })
    }
}

impl FrameBuffer for SealedMemfd {
    fn pixels(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes (unmapped only on drop), reached only
        // through `&mut self` in this process. The shim reads the same pages through its own
        // mapping, but only frames whose cookie is out, and the ring writes a buffer only once
        // its cookie came back.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn share(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl Drop for SealedMemfd {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `new`, unmapped only here; no slice of it
        // outlives `self` (`pixels` borrows `self`).
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// QEMU's shared surface (`ScanoutMap`), read with `pread`.
#[derive(Debug)]
pub struct SharedSurface {
    fd: OwnedFd,
    /// Where the surface starts in the file.
    offset: u64,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub pixman: u32,
}

impl SharedSurface {
    /// Takes QEMU's memfd; refuses one too small for `height` rows of `stride` bytes at `offset`.
    pub fn new(
        fd: OwnedFd,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman: u32,
    ) -> io::Result<Self> {
        let size = rustix::fs::fstat(&fd)?.st_size as u64;
        let need = u64::from(offset) + u64::from(stride) * u64::from(height);
        if size < need {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the memfd has {size} bytes, the surface needs {need}"),
            ));
        }
        Ok(Self {
            fd,
            offset: offset.into(),
            width,
            height,
            stride,
            pixman,
        })
    }

    /// Reads rows `y..y + rows` (whole rows, `stride` apart) into `out`.
    pub fn read_rows(&self, y: u32, rows: u32, out: &mut Vec<u8>) -> io::Result<()> {
        let len = u64::from(self.stride) * u64::from(rows);
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        out.clear();
        out.resize(len, 0);
        let mut done = 0;
        let start = self.offset + u64::from(y) * u64::from(self.stride);
        while done < len {
            let n = rustix::io::pread(self.fd.as_fd(), &mut out[done..], start + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "QEMU's memfd shrank under its surface",
                ));
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_buffer_is_sealed_and_shared() {
        let mut b = SealedMemfd::new(4096).unwrap();
        b.pixels()[..4].copy_from_slice(&[1, 2, 3, 4]);
        let fd = b.share().unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW));
        assert!(rustix::fs::ftruncate(&fd, 10).is_err());
        let mut head = [0u8; 4];
        rustix::io::pread(&fd, &mut head, 0).unwrap();
        assert_eq!(head, [1, 2, 3, 4]);
        drop(b);
        // The shim's dup outlives the buffer.
        assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, 4096);
    }

    #[test]
    fn a_shared_surface_is_read_by_rows_and_never_beyond_the_file() {
        let fd = rustix::fs::memfd_create("test", MemfdFlags::CLOEXEC).unwrap();
        let bytes: Vec<u8> = (0..=255).collect();
        rustix::io::pwrite(&fd, &bytes, 0).unwrap();
        // 4 rows of 16 bytes at offset 128 need 192 bytes: fine.
        let s = SharedSurface::new(fd.try_clone().unwrap(), 128, 4, 4, 16, 0).unwrap();
        let mut out = Vec::new();
        s.read_rows(1, 2, &mut out).unwrap();
        assert_eq!(out, (144..176).map(|b| b as u8).collect::<Vec<_>>());
        // Too small for the surface: refused.
        assert!(SharedSurface::new(fd.try_clone().unwrap(), 200, 4, 4, 16, 0).is_err());
        // Shrunk afterwards (QEMU does not seal it): a short read is an error, not a SIGBUS.
        rustix::fs::ftruncate(&fd, 150).unwrap();
        assert!(s.read_rows(1, 2, &mut out).is_err());
    }
}
