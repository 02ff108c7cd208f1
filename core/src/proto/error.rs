//! The error type shared by every parser and builder of the protocol layer.

use super::consts::link_err;

/// Everything that can go wrong while parsing or building SPICE wire data.
///
/// Parsers never panic; malformed or hostile input always ends up here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The link header does not start with `REDQ`.
    #[error("link header: bad magic {0:#010x} (expected 0x51444552)")]
    BadMagic(u32),

    /// The peer speaks a protocol major version other than 2.
    #[error("link header: unsupported protocol version {major}.{minor} (need major 2)")]
    VersionMismatch {
        /// Major version sent by the peer.
        major: u32,
        /// Minor version sent by the peer.
        minor: u32,
    },

    /// The link message announced in the header is larger than allowed.
    #[error("link message size {size} exceeds limit {limit}")]
    LinkSizeTooLarge {
        /// Size from the link header.
        size: u32,
        /// Largest accepted size.
        limit: u32,
    },

    /// The link message announced in the header is smaller than its fixed part.
    #[error("link message size {size} is below minimum {min}")]
    LinkSizeTooSmall {
        /// Size from the link header.
        size: u32,
        /// Smallest accepted size.
        min: u32,
    },

    /// Capability words of a link message point outside its body.
    #[error(
        "{what}: {num_caps} caps words at offset {caps_offset} do not fit in {body_len} body bytes"
    )]
    CapsOutOfBounds {
        /// Which message carried the capabilities.
        what: &'static str,
        /// Total number of capability words (common + channel).
        num_caps: u64,
        /// `caps_offset` field as sent.
        caps_offset: u32,
        /// Length of the body the caps must fit in.
        body_len: usize,
    },

    /// A fixed-size structure or message body is shorter than its layout.
    #[error("{what} too short: {got} bytes, need {need}")]
    Truncated {
        /// Human-readable name of the structure, e.g. "display INIT body".
        what: &'static str,
        /// Bytes available.
        got: usize,
        /// Bytes required.
        need: usize,
    },

    /// A framed message announces a body larger than the decoder accepts.
    #[error("message type {msg_type} size {size} exceeds limit {limit}")]
    MessageTooLarge {
        /// Message type from the header.
        msg_type: u16,
        /// Body size from the header.
        size: u64,
        /// Largest accepted body size.
        limit: usize,
    },

    /// A value to be encoded does not fit its wire field.
    #[error("{what}: {value} does not fit in the wire field (max {max})")]
    FieldOverflow {
        /// Name of the field.
        what: &'static str,
        /// Value that was requested.
        value: u64,
        /// Largest encodable value.
        max: u64,
    },
}

impl ProtoError {
    /// The `SpiceLinkErr` code a server should send back when this error
    /// happened during the link stage (before the link reply).
    ///
    /// Only meaningful for link-stage errors; framing and message errors map
    /// to [`link_err::INVALID_DATA`].
    pub fn link_error_code(&self) -> u32 {
        match self {
            ProtoError::BadMagic(_) => link_err::INVALID_MAGIC,
            ProtoError::VersionMismatch { .. } => link_err::VERSION_MISMATCH,
            _ => link_err::INVALID_DATA,
        }
    }
}
