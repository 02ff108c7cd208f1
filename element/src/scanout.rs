//! Scanouts: the host's dmabuf planes, validated once and shared by every frame made from them.
//!
//! A [`Scanout`] owns its fds and closes them when the last user lets go: the "current scanout"
//! pointer, every queued frame and every GstMemory made from it hold an `Arc<Scanout>`. Replacing
//! the scanout while an encoder still reads the old one is therefore safe: the old fds stay open
//! until GStreamer frees the last memory that wraps them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use gst_video::VideoFormat;

use crate::fourcc::{self, DRM_FORMAT_MOD_INVALID, DRM_FORMAT_MOD_LINEAR, FourccFormat};
use crate::mapcache::{self, BufferKey};

/// Largest width or height accepted.
pub const MAX_DIMENSION: u32 = 16384;
/// Largest number of planes accepted.
pub const MAX_PLANES: usize = 4;

/// Why a scanout was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScanoutError {
    #[error("unknown DRM fourcc {}: no matching raw video format", fourcc::fourcc_name(*.0))]
    UnknownFourcc(u32),
    #[error(
        "DRM modifier 0x{0:016x} is not linear: the pipeline reads the buffer with the CPU and would show garbage (export it linear)"
    )]
    UnsupportedModifier(u64),
    #[error("invalid scanout size {width}x{height} (must be 1..={MAX_DIMENSION})")]
    BadSize { width: u32, height: u32 },
    #[error("format {format} needs {expected} plane(s), got {got}")]
    PlaneCount {
        format: String,
        expected: usize,
        got: usize,
    },
    #[error("plane {plane}: stride {stride} is smaller than one row ({min} bytes)")]
    StrideTooSmall { plane: usize, stride: u32, min: u64 },
    #[error(
        "plane {plane}: fd is {fd_size} bytes but offset {offset} + stride {stride} x {rows} rows needs {needed}"
    )]
    FdTooSmall {
        plane: usize,
        fd_size: u64,
        offset: u32,
        stride: u32,
        rows: u32,
        needed: u64,
    },
    #[error("fd #{index}: {why}")]
    FdKind { index: usize, why: String },
    #[error("plane {plane}: cannot read the fd size: {err}")]
    FdSize { plane: usize, err: String },
    #[error("plane {plane} refers to fd #{index} but only {nfds} fd(s) were given")]
    MissingFd {
        plane: usize,
        index: usize,
        nfds: usize,
    },
}

/// Layout of one plane: which fd holds it, where, and with what stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane {
    /// Index into [`Scanout::fds`].
    pub fd_index: usize,
    /// Byte offset of the plane inside its fd.
    pub offset: u32,
    /// Bytes per row.
    pub stride: u32,
}

/// Description of a scanout as the host gives it (everything except the fds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanoutInfo {
    pub width: u32,
    pub height: u32,
    pub fourcc: u32,
    pub modifier: u64,
    /// Row 0 of the buffer is the top of the picture. When false the buffer is stored bottom-up
    /// (OpenGL convention) and must be flipped for display.
    pub y0_top: bool,
    pub planes: Vec<Plane>,
}

/// A validated scanout that owns its fds.
#[derive(Debug)]
pub struct Scanout {
    info: ScanoutInfo,
    format: &'static FourccFormat,
    fds: Vec<OwnedFd>,
    /// Bytes each plane occupies inside its fd (`stride * rows`).
    plane_sizes: Vec<u64>,
    /// Identity of each fd's buffer, for the import cache.
    keys: Vec<BufferKey>,
    /// One kept-mapped dmabuf memory per fd (from the import cache): frames are sub-memories
    /// of it, so a frame costs no new mmap and no page faults.
    parents: std::sync::OnceLock<Result<Vec<gst::Memory>, glib::BoolError>>,
}

/// `statfs` magic of the dma-buf pseudo file system (linux/magic.h).
const DMA_BUF_MAGIC: i64 = 0x444d_4142;

/// Checks that `fd` is a buffer that cannot shrink under a reader: a dmabuf, or a memfd sealed
/// with `F_SEAL_SHRINK`. The pipeline maps the buffer and reads it with the CPU; if it could be
/// truncated while a frame is read, the process would die of SIGBUS. Costs two syscalls for a
/// dmabuf, three for a memfd, once per scanout.
pub fn check_fd_kind(fd: BorrowedFd<'_>) -> Result<(), String> {
    let fs = rustix::fs::fstatfs(fd).map_err(|e| format!("fstatfs failed: {e}"))?;
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    if fs.f_type as i64 == DMA_BUF_MAGIC {
        return Ok(());
    }
    let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat failed: {e}"))?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if kind != rustix::fs::FileType::RegularFile {
        return Err(format!(
            "not a dmabuf, memfd or regular file (a {}); refused",
            file_type_name(kind)
        ));
    }
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) if seals.contains(rustix::fs::SealFlags::SHRINK) => Ok(()),
        Ok(_) => Err(
            "memfd not sealed against shrinking: add F_SEAL_SHRINK (fcntl F_ADD_SEALS), since truncating it while a frame is read would crash the process (SIGBUS); refused"
                .into(),
        ),
        Err(_) => Err(
            "regular file that cannot be sealed against shrinking: truncating it while a frame is read would crash the process (SIGBUS); pass a dmabuf or a memfd sealed with F_SEAL_SHRINK; refused"
                .into(),
        ),
    }
}

fn file_type_name(kind: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match kind {
        FileType::Directory => "directory",
        FileType::Socket => "socket",
        FileType::Fifo => "pipe",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symbolic link",
        FileType::RegularFile => "regular file",
        _ => "file of unknown type",
    }
}

/// Size of an fd: `fstat`, or `lseek(SEEK_END)` for dmabufs that report 0 there.
fn fd_size(fd: BorrowedFd<'_>) -> Result<u64, String> {
    let st = rustix::fs::fstat(fd).map_err(|e| e.to_string())?;
    if st.st_size > 0 {
        return Ok(st.st_size as u64);
    }
    let end = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).map_err(|e| e.to_string())?;
    // Dmabufs ignore the file position for mmap; rewind anyway for plain files.
    let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
    Ok(end)
}

impl Scanout {
    /// Validates `info` against the fds and takes ownership of them.
    ///
    /// On error the fds are closed (dropped) and the error says which check failed.
    pub fn new(info: ScanoutInfo, fds: Vec<OwnedFd>) -> Result<Self, ScanoutError> {
        let format = fourcc::lookup(info.fourcc).ok_or(ScanoutError::UnknownFourcc(info.fourcc))?;
        if info.modifier != DRM_FORMAT_MOD_LINEAR && info.modifier != DRM_FORMAT_MOD_INVALID {
            return Err(ScanoutError::UnsupportedModifier(info.modifier));
        }
        if info.width == 0
            || info.height == 0
            || info.width > MAX_DIMENSION
            || info.height > MAX_DIMENSION
        {
            return Err(ScanoutError::BadSize {
                width: info.width,
                height: info.height,
            });
        }
        if info.planes.len() != format.planes.len() {
            return Err(ScanoutError::PlaneCount {
                format: format.format.to_str().to_string(),
                expected: format.planes.len(),
                got: info.planes.len(),
            });
        }
        let mut fd_sizes = Vec::with_capacity(fds.len());
        let mut keys = Vec::with_capacity(fds.len());
        for (i, fd) in fds.iter().enumerate() {
            check_fd_kind(fd.as_fd()).map_err(|why| ScanoutError::FdKind { index: i, why })?;
            let size = fd_size(fd.as_fd()).map_err(|err| ScanoutError::FdSize { plane: i, err })?;
            keys.push(
                BufferKey::of(fd.as_fd(), size)
                    .map_err(|err| ScanoutError::FdSize { plane: i, err })?,
            );
            fd_sizes.push(size);
        }
        let mut plane_sizes = Vec::with_capacity(info.planes.len());
        for (i, (plane, shape)) in info.planes.iter().zip(format.planes).enumerate() {
            let min = shape.min_stride(info.width);
            if u64::from(plane.stride) < min {
                return Err(ScanoutError::StrideTooSmall {
                    plane: i,
                    stride: plane.stride,
                    min,
                });
            }
            let Some(&size) = fd_sizes.get(plane.fd_index) else {
                return Err(ScanoutError::MissingFd {
                    plane: i,
                    index: plane.fd_index,
                    nfds: fds.len(),
                });
            };
            let rows = shape.rows(info.height);
            let bytes = u64::from(plane.stride) * u64::from(rows);
            let needed = u64::from(plane.offset) + bytes;
            if needed > size {
                return Err(ScanoutError::FdTooSmall {
                    plane: i,
                    fd_size: size,
                    offset: plane.offset,
                    stride: plane.stride,
                    rows,
                    needed,
                });
            }
            plane_sizes.push(bytes);
        }
        Ok(Self {
            info,
            format,
            fds,
            plane_sizes,
            keys,
            parents: std::sync::OnceLock::new(),
        })
    }

    /// The description given by the host.
    pub fn info(&self) -> &ScanoutInfo {
        &self.info
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.info.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.info.height
    }

    /// The raw video format the fourcc maps to.
    pub fn video_format(&self) -> VideoFormat {
        self.format.format
    }

    /// The fds, in the order given.
    pub fn fds(&self) -> &[OwnedFd] {
        &self.fds
    }

    /// Bytes plane `i` occupies (`stride * rows`).
    pub fn plane_size(&self, i: usize) -> u64 {
        self.plane_sizes[i]
    }

    /// A new dmabuf memory covering plane `i`: a sub-memory of the buffer's kept-mapped memory
    /// from the import cache (see [`crate::mapcache`]).
    pub(crate) fn plane_memory(&self, i: usize) -> Result<gst::Memory, glib::BoolError> {
        let parents = self.parents.get_or_init(|| {
            self.fds
                .iter()
                .zip(&self.keys)
                .map(|(fd, &key)| mapcache::memory_for(fd.as_fd(), key))
                .collect()
        });
        let parents = parents.as_ref().map_err(Clone::clone)?;
        let plane = self.info.planes[i];
        let start = plane.offset as usize;
        Ok(parents[plane.fd_index].share(start..start + self.plane_sizes[i] as usize))
    }

    /// Caps describing frames of this scanout (plain system-memory `video/x-raw`).
    pub fn caps(&self, framerate: gst::Fraction) -> gst::Caps {
        gst_video::VideoCapsBuilder::new()
            .format(self.format.format)
            .width(self.info.width as i32)
            .height(self.info.height as i32)
            .framerate(framerate)
            .pixel_aspect_ratio(gst::Fraction::new(1, 1))
            .build()
    }

    /// Whether `rect` lies inside the scanout.
    pub fn contains(&self, rect: &Rect) -> bool {
        u64::from(rect.x) + u64::from(rect.w) <= u64::from(self.info.width)
            && u64::from(rect.y) + u64::from(rect.h) <= u64::from(self.info.height)
    }
}

/// A damaged rectangle in scanout pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourcc::fourcc_code;

    fn unsealed_memfd(size: u64) -> OwnedFd {
        use rustix::fs::MemfdFlags;
        let fd = rustix::fs::memfd_create(
            "scanout-test",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        fd
    }

    fn memfd(size: u64) -> OwnedFd {
        let fd = unsealed_memfd(size);
        rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
        fd
    }

    fn xr24(w: u32, h: u32) -> ScanoutInfo {
        info(w, h, b"XR24", vec![plane(0, 0, w * 4)])
    }

    #[test]
    fn only_buffers_that_cannot_shrink_are_accepted() {
        // A memfd that could be truncated under a reader: refused, naming the seal.
        let err = Scanout::new(xr24(16, 16), vec![unsealed_memfd(1024)]).unwrap_err();
        assert!(
            matches!(&err, ScanoutError::FdKind { index: 0, why } if why.contains("F_SEAL_SHRINK")),
            "{err}"
        );
        // A directory, a pipe, a plain file on a file system without seals: refused.
        let dir = OwnedFd::from(std::fs::File::open("/").unwrap());
        let err = Scanout::new(xr24(16, 16), vec![dir]).unwrap_err();
        assert!(err.to_string().contains("(a directory)"), "{err}");
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let err = Scanout::new(xr24(1, 1), vec![r]).unwrap_err();
        assert!(err.to_string().contains("(a pipe)"), "{err}");
        // Sealed against shrinking: accepted.
        Scanout::new(xr24(16, 16), vec![memfd(1024)]).unwrap();
        // Only shrinking matters: a memfd sealed against growing too is fine.
        let fd = memfd(1024);
        rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::GROW).unwrap();
        Scanout::new(xr24(16, 16), vec![fd]).unwrap();
    }

    fn info(w: u32, h: u32, fourcc: &[u8; 4], planes: Vec<Plane>) -> ScanoutInfo {
        ScanoutInfo {
            width: w,
            height: h,
            fourcc: fourcc_code(fourcc),
            modifier: 0,
            y0_top: true,
            planes,
        }
    }

    fn plane(fd_index: usize, offset: u32, stride: u32) -> Plane {
        Plane {
            fd_index,
            offset,
            stride,
        }
    }

    #[test]
    fn accepts_a_padded_stride() {
        let s = Scanout::new(
            info(1920, 1080, b"XR24", vec![plane(0, 0, 7936)]),
            vec![memfd(7936 * 1080)],
        )
        .unwrap();
        assert_eq!(s.plane_size(0), 7936 * 1080);
        assert_eq!(s.video_format(), VideoFormat::Bgrx);
    }

    #[test]
    fn refuses_a_too_small_fd() {
        let err = Scanout::new(
            info(64, 64, b"XR24", vec![plane(0, 256, 256)]),
            vec![memfd(256 * 64)],
        )
        .unwrap_err();
        assert!(
            matches!(err, ScanoutError::FdTooSmall { needed: 16640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("fd is 16384 bytes"), "{err}");
    }

    #[test]
    fn refuses_unknown_fourcc_and_tiled_modifier() {
        let err = Scanout::new(
            info(64, 64, b"Y8  ", vec![plane(0, 0, 64)]),
            vec![memfd(64 * 64)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown DRM fourcc 'Y8  ' (0x20203859): no matching raw video format"
        );
        let mut i = info(64, 64, b"XR24", vec![plane(0, 0, 256)]);
        i.modifier = 0x0100_0000_0000_0002;
        let err = Scanout::new(i, vec![memfd(256 * 64)]).unwrap_err();
        assert!(matches!(err, ScanoutError::UnsupportedModifier(_)));
    }

    #[test]
    fn nv12_in_one_fd() {
        let (w, h) = (640u32, 480u32);
        let s = Scanout::new(
            info(
                w,
                h,
                b"NV12",
                vec![plane(0, 0, 640), plane(0, 640 * 480, 640)],
            ),
            vec![memfd(640 * 480 * 3 / 2)],
        )
        .unwrap();
        assert_eq!(s.plane_size(1), 640 * 240);
        assert!(
            Scanout::new(
                info(w, h, b"NV12", vec![plane(0, 0, 640)]),
                vec![memfd(640 * 480 * 3 / 2)]
            )
            .is_err()
        );
        assert!(matches!(
            Scanout::new(
                info(w, h, b"NV12", vec![plane(0, 0, 640), plane(1, 0, 640)]),
                vec![memfd(640 * 480 * 3 / 2)]
            ),
            Err(ScanoutError::MissingFd { .. })
        ));
    }

    #[test]
    fn stride_smaller_than_a_row() {
        assert!(matches!(
            Scanout::new(
                info(64, 64, b"XR24", vec![plane(0, 0, 200)]),
                vec![memfd(256 * 64)]
            ),
            Err(ScanoutError::StrideTooSmall { min: 256, .. })
        ));
    }
}
