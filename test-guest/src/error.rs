//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Width, height, stride, offset or plane layout is not usable.
    #[error("invalid geometry: {0}")]
    Geometry(String),
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// The call that failed, e.g. `"mmap"`.
        op: &'static str,
        /// The error number it returned.
        #[source]
        source: rustix::io::Errno,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that are not a supported PPM image.
    #[error("not a binary PPM (P6, maxval 255): {0}")]
    Ppm(String),
    /// A pattern name that [`Pattern::from_str`](crate::Pattern) does not know.
    #[error(
        "unknown pattern {0:?} (expected \"bars\", \"counter\", \"desktop\", \"video\" or \"solid:RRGGBB\")"
    )]
    Pattern(String),
    /// A buffer index that the [`Guest`](crate::Guest) does not have.
    #[error("no buffer with index {0}")]
    NoSuchBuffer(usize),
    /// The buffer is still in use by a draw that has not been released.
    #[error("buffer {index} is busy with draw {draw_id}")]
    BufferBusy {
        /// Buffer index.
        index: usize,
        /// The draw that holds it.
        draw_id: u64,
    },
    /// The draw id is already pending on another buffer.
    #[error("draw {draw_id} is already pending on buffer {index}")]
    DuplicateDrawId {
        /// The draw id.
        draw_id: u64,
        /// The buffer it is pending on.
        index: usize,
    },
    /// The operation needs a different pixel format.
    #[error("unsupported pixel format: {0}")]
    Unsupported(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn os(op: &'static str, source: rustix::io::Errno) -> Self {
        Error::Os { op, source }
    }
}
