//! memfd-backed scanout buffers, standing in for a guest GPU's dmabufs.

use std::ffi::c_void;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

use crate::error::{Error, Result};

/// DRM fourcc `XR24`: 32 bits per pixel, bytes B, G, R, X in memory.
pub const DRM_FORMAT_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
/// DRM fourcc `NV12`: a Y plane followed by an interleaved U/V plane at half resolution.
pub const DRM_FORMAT_NV12: u32 = u32::from_le_bytes(*b"NV12");

/// Largest accepted width or height, in pixels.
pub const MAX_DIMENSION: u32 = 16384;

/// Pixel format of a [`GuestBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// [`DRM_FORMAT_XRGB8888`], one plane. The X byte is written as 0xff.
    Xrgb8888,
    /// [`DRM_FORMAT_NV12`], two planes, BT.601 limited range.
    Nv12,
}

impl Format {
    /// The DRM fourcc code.
    pub fn fourcc(self) -> u32 {
        match self {
            Format::Xrgb8888 => DRM_FORMAT_XRGB8888,
            Format::Nv12 => DRM_FORMAT_NV12,
        }
    }

    /// Number of planes.
    pub fn num_planes(self) -> usize {
        match self {
            Format::Xrgb8888 => 1,
            Format::Nv12 => 2,
        }
    }
}

/// Where one plane lives inside the buffer's fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Plane {
    /// Byte offset of the plane's first row inside the fd.
    pub offset: u32,
    /// Bytes from the start of one row to the start of the next.
    pub stride: u32,
}

/// A scanout buffer: a memfd of [`size`](Self::size) bytes, mapped read/write and shared.
///
/// The memfd is created with `MFD_CLOEXEC` and sealed against shrinking, so no holder of a
/// duplicate fd can truncate it under the mapping. The mapping is removed on drop; the fd
/// closes on drop (duplicates from [`dup_fd`](Self::dup_fd) stay valid).
///
/// Other processes or pipelines may read the memory through the fd at any time; writers
/// must only draw into a buffer nobody is reading (see [`Guest`](crate::Guest)).
pub struct GuestBuffer {
    fd: OwnedFd,
    map: NonNull<u8>,
    size: usize,
    width: u32,
    height: u32,
    format: Format,
    planes: [Plane; 2],
}

// SAFETY: the mapping is owned by this value alone and is only reached through `&self`
// (read-only slices) or `&mut self` (the one mutable slice), so the usual borrow rules
// make moving it to, or sharing it with, another thread sound.
unsafe impl Send for GuestBuffer {}
// SAFETY: see `Send`; `&GuestBuffer` only hands out shared, read-only access.
unsafe impl Sync for GuestBuffer {}

fn geometry(msg: impl Into<String>) -> Error {
    Error::Geometry(msg.into())
}

fn check_dimensions(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(geometry(format!(
            "{width}x{height}: width and height must be in 1..={MAX_DIMENSION}"
        )));
    }
    Ok(())
}

impl GuestBuffer {
    /// An XRGB8888 buffer with a tight stride (`width * 4`) and the image at offset 0.
    pub fn new(width: u32, height: u32) -> Result<Self> {
        check_dimensions(width, height)?;
        Self::with_layout(width, height, width * 4, 0)
    }

    /// An XRGB8888 buffer whose image starts `offset` bytes into the fd, with rows `stride`
    /// bytes apart (`stride >= width * 4`, e.g. 7936 for 1920 pixels).
    ///
    /// The fd is `offset + stride * height` bytes long.
    pub fn with_layout(width: u32, height: u32, stride: u32, offset: u32) -> Result<Self> {
        check_dimensions(width, height)?;
        if u64::from(stride) < u64::from(width) * 4 {
            return Err(geometry(format!(
                "stride {stride} is smaller than width {width} * 4"
            )));
        }
        let size = u64::from(offset) + u64::from(stride) * u64::from(height);
        let planes = [Plane { offset, stride }, Plane::default()];
        Self::allocate(width, height, Format::Xrgb8888, planes, size)
    }

    /// An NV12 buffer: the Y plane at offset 0, then the interleaved U/V plane with
    /// `ceil(height / 2)` rows. Both planes use the same stride, `width` rounded up to a
    /// multiple of 4.
    pub fn new_nv12(width: u32, height: u32) -> Result<Self> {
        check_dimensions(width, height)?;
        let stride = width.next_multiple_of(4);
        let y_size = u64::from(stride) * u64::from(height);
        let uv_offset = u32::try_from(y_size).map_err(|_| geometry("NV12 Y plane too large"))?;
        let size = y_size + u64::from(stride) * u64::from(height.div_ceil(2));
        let planes = [
            Plane { offset: 0, stride },
            Plane {
                offset: uv_offset,
                stride,
            },
        ];
        Self::allocate(width, height, Format::Nv12, planes, size)
    }

    fn allocate(
        width: u32,
        height: u32,
        format: Format,
        planes: [Plane; 2],
        size: u64,
    ) -> Result<Self> {
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= isize::MAX as usize)
            .ok_or_else(|| geometry(format!("buffer of {size} bytes is too large")))?;
        let fd = rustix::fs::memfd_create(
            "test-guest-scanout",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| Error::os("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, size as u64).map_err(|e| Error::os("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK)
            .map_err(|e| Error::os("fcntl(F_ADD_SEALS)", e))?;
        // SAFETY: a fresh mapping chosen by the kernel (null hint) cannot alias any existing
        // Rust object; `size` is non-zero (width and height are at least 1) and the memfd has
        // just been grown to `size` bytes and sealed against shrinking, so every byte of the
        // mapping stays backed by the file.
        let ptr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(|e| Error::os("mmap", e))?;
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| geometry("mmap returned null"))?;
        Ok(Self {
            fd,
            map,
            size,
            width,
            height,
            format,
            planes,
        })
    }

    /// The memfd. It stays owned by this buffer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new fd for the same memory (`F_DUPFD_CLOEXEC`), e.g. to hand to a host API that
    /// takes ownership of the fd.
    pub fn dup_fd(&self) -> Result<OwnedFd> {
        rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| Error::os("fcntl(F_DUPFD_CLOEXEC)", e))
    }

    /// Image width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Image height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Stride of the first plane, in bytes.
    pub fn stride(&self) -> u32 {
        self.planes[0].stride
    }

    /// Offset of the first plane inside the fd, in bytes.
    pub fn offset(&self) -> u32 {
        self.planes[0].offset
    }

    /// Size of the fd (and of the mapping), in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The pixel format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The DRM fourcc of the pixel format.
    pub fn fourcc(&self) -> u32 {
        self.format.fourcc()
    }

    /// Offset and stride of each plane (one for XRGB8888, two for NV12).
    pub fn planes(&self) -> &[Plane] {
        &self.planes[..self.format.num_planes()]
    }

    /// The whole mapped fd, [`size`](Self::size) bytes; planes start at their offsets.
    pub fn pixels(&self) -> &[u8] {
        // SAFETY: `map` points to a live mapping of `size` readable bytes that lives as long
        // as `self`; no `&mut` slice can exist while `self` is borrowed shared.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.size) }
    }

    /// The whole mapped fd, writable, [`size`](Self::size) bytes; planes start at their
    /// offsets.
    pub fn pixels_mut(&mut self) -> &mut [u8] {
        // SAFETY: `map` points to a live mapping of `size` writable bytes that lives as long
        // as `self`; `&mut self` guarantees this is the only slice into it.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), self.size) }
    }
}

impl GuestBuffer {
    /// Turns the image upside down in place (XRGB8888 only): row 0 becomes the bottom row, as a
    /// GL renderer stores frames (`y0_top` false).
    pub fn flip_rows(&mut self) {
        if self.format() != Format::Xrgb8888 {
            return;
        }
        let (h, stride, offset) = (
            self.height() as usize,
            self.stride() as usize,
            self.offset() as usize,
        );
        let row = self.width() as usize * 4;
        let pixels = &mut self.pixels_mut()[offset..];
        for y in 0..h / 2 {
            let (top, bottom) = pixels.split_at_mut((h - 1 - y) * stride);
            top[y * stride..y * stride + row].swap_with_slice(&mut bottom[..row]);
        }
    }
}

impl Drop for GuestBuffer {
    fn drop(&mut self) {
        // SAFETY: `map`/`size` describe the mapping created in `allocate`, which nothing else
        // unmaps; no slice into it can outlive `self`. A failure cannot be acted upon here.
        let _ = unsafe { rustix::mm::munmap(self.map.as_ptr().cast::<c_void>(), self.size) };
    }
}

impl fmt::Debug for GuestBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestBuffer")
            .field("fd", &self.fd)
            .field("size", &self.size)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("planes", &self.planes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xrgb_sizes_and_fd() {
        let mut buf = GuestBuffer::new(64, 32).unwrap();
        assert_eq!((buf.width(), buf.height()), (64, 32));
        assert_eq!((buf.stride(), buf.offset()), (256, 0));
        assert_eq!(buf.size(), 256 * 32);
        assert_eq!(buf.fourcc(), 0x3432_5258);
        assert_eq!(buf.planes().len(), 1);
        assert_eq!(rustix::fs::fstat(buf.fd()).unwrap().st_size, 256 * 32);

        buf.pixels_mut()[100] = 0x5a;
        let dup = buf.dup_fd().unwrap();
        assert!(
            rustix::io::fcntl_getfd(&dup)
                .unwrap()
                .contains(rustix::io::FdFlags::CLOEXEC)
        );
        let mut byte = [0u8; 1];
        assert_eq!(rustix::io::pread(&dup, &mut byte, 100).unwrap(), 1);
        assert_eq!(byte[0], 0x5a);
        // The seal keeps holders of the fd from shrinking it under the mapping.
        assert!(rustix::fs::ftruncate(&dup, 0).is_err());
        drop(buf);
        // The duplicate outlives the buffer.
        assert_eq!(rustix::io::pread(&dup, &mut byte, 100).unwrap(), 1);
    }

    #[test]
    fn padded_layout_size() {
        let buf = GuestBuffer::with_layout(1920, 1080, 7936, 4096).unwrap();
        assert_eq!(buf.size(), 4096 + 7936 * 1080);
        assert_eq!(
            buf.planes(),
            &[Plane {
                offset: 4096,
                stride: 7936
            }]
        );
    }

    #[test]
    fn nv12_sizes() {
        let buf = GuestBuffer::new_nv12(1920, 1080).unwrap();
        assert_eq!(buf.format(), Format::Nv12);
        assert_eq!(buf.fourcc(), 0x3231_564e);
        assert_eq!(
            buf.planes(),
            &[
                Plane {
                    offset: 0,
                    stride: 1920
                },
                Plane {
                    offset: 1920 * 1080,
                    stride: 1920
                },
            ]
        );
        assert_eq!(buf.size(), 1920 * 1080 * 3 / 2);

        let odd = GuestBuffer::new_nv12(641, 481).unwrap();
        assert_eq!(odd.stride(), 644);
        assert_eq!(odd.planes()[1].offset, 644 * 481);
        assert_eq!(odd.size(), 644 * 481 + 644 * 241);
    }

    #[test]
    fn bad_geometry() {
        assert!(matches!(GuestBuffer::new(0, 10), Err(Error::Geometry(_))));
        assert!(matches!(
            GuestBuffer::new(10, MAX_DIMENSION + 1),
            Err(Error::Geometry(_))
        ));
        assert!(matches!(
            GuestBuffer::with_layout(1920, 1080, 7679, 0),
            Err(Error::Geometry(_))
        ));
    }
}
