//! Numeric constants of the SPICE protocol (`spice/enums.h`, `spice/protocol.h`).

/// Link header magic, the bytes `REDQ` read as a little-endian u32.
pub const LINK_MAGIC: u32 = 0x5144_4552;
/// Protocol major version; peers with any other major are rejected.
pub const VERSION_MAJOR: u32 = 2;
/// Protocol minor version.
pub const VERSION_MINOR: u32 = 2;
/// Size of the encrypted ticket sent by the client (RSA-1024 ciphertext).
pub const TICKET_CIPHERTEXT_SIZE: usize = 128;
/// Size of the DER public key carried in the link reply.
pub const TICKET_PUBKEY_BYTES: usize = 162;
/// Longest password the client accepts (`SPICE_MAX_PASSWORD_LENGTH`).
pub const MAX_PASSWORD_LENGTH: usize = 60;

/// Channel types (`SpiceChannelType`, one byte in link messages and CHANNELS_LIST).
pub mod channel_type {
    /// Main channel.
    pub const MAIN: u8 = 1;
    /// Display channel.
    pub const DISPLAY: u8 = 2;
    /// Inputs channel.
    pub const INPUTS: u8 = 3;
    /// Cursor channel.
    pub const CURSOR: u8 = 4;
    /// Audio playback channel.
    pub const PLAYBACK: u8 = 5;
    /// Audio record channel.
    pub const RECORD: u8 = 6;
    /// Tunnel channel (obsolete).
    pub const TUNNEL: u8 = 7;
    /// Smartcard channel.
    pub const SMARTCARD: u8 = 8;
    /// USB redirection channel.
    pub const USBREDIR: u8 = 9;
    /// Port channel.
    pub const PORT: u8 = 10;
    /// WebDAV channel.
    pub const WEBDAV: u8 = 11;

    /// Lower-case name of a channel type, or `"unknown"`.
    pub fn name(channel_type: u8) -> &'static str {
        match channel_type {
            MAIN => "main",
            DISPLAY => "display",
            INPUTS => "inputs",
            CURSOR => "cursor",
            PLAYBACK => "playback",
            RECORD => "record",
            TUNNEL => "tunnel",
            SMARTCARD => "smartcard",
            USBREDIR => "usbredir",
            PORT => "port",
            WEBDAV => "webdav",
            _ => "unknown",
        }
    }
}

/// Link result codes (`SpiceLinkErr`, u32).
pub mod link_err {
    /// Success.
    pub const OK: u32 = 0;
    /// Generic error.
    pub const ERROR: u32 = 1;
    /// Bad link header magic.
    pub const INVALID_MAGIC: u32 = 2;
    /// Bad size, caps or auth mechanism.
    pub const INVALID_DATA: u32 = 3;
    /// Major version is not 2.
    pub const VERSION_MISMATCH: u32 = 4;
    /// Channel requires TLS; the client retries on the TLS port.
    pub const NEED_SECURED: u32 = 5;
    /// TLS used where it is not allowed.
    pub const NEED_UNSECURED: u32 = 6;
    /// Bad or expired ticket.
    pub const PERMISSION_DENIED: u32 = 7;
    /// Non-main link whose connection id matches no session.
    pub const BAD_CONNECTION_ID: u32 = 8;
    /// No such (type, id) channel.
    pub const CHANNEL_NOT_AVAILABLE: u32 = 9;
}

/// Mouse modes (main channel, u16 in MOUSE_MODE, u32 in MAIN_INIT).
pub mod mouse_mode {
    /// Relative motion; the client grabs the pointer.
    pub const SERVER: u32 = 1;
    /// Absolute positions in surface pixels.
    pub const CLIENT: u32 = 2;
}

/// Keyboard modifier bits (inputs INIT and KEY_MODIFIERS).
pub mod keyboard_modifier {
    /// Scroll lock.
    pub const SCROLL_LOCK: u16 = 1;
    /// Num lock.
    pub const NUM_LOCK: u16 = 2;
    /// Caps lock.
    pub const CAPS_LOCK: u16 = 4;
}

/// NOTIFY severities.
pub mod notify_severity {
    /// Informational.
    pub const INFO: u32 = 0;
    /// Warning.
    pub const WARN: u32 = 1;
    /// Error.
    pub const ERROR: u32 = 2;
}

/// NOTIFY visibilities.
pub mod notify_visibility {
    /// Low.
    pub const LOW: u32 = 0;
    /// Medium.
    pub const MEDIUM: u32 = 1;
    /// High.
    pub const HIGH: u32 = 2;
}

/// Surface pixel formats (u32, SURFACE_CREATE).
pub mod surface_format {
    /// Invalid.
    pub const INVALID: u32 = 0;
    /// 1-bit alpha.
    pub const FMT_1_A: u32 = 1;
    /// 8-bit alpha.
    pub const FMT_8_A: u32 = 8;
    /// 16-bit 555.
    pub const FMT_16_555: u32 = 16;
    /// 32-bit xRGB (bytes B, G, R, X); the only format spicy-screenshot supports.
    pub const FMT_32_XRGB: u32 = 32;
    /// 16-bit 565.
    pub const FMT_16_565: u32 = 80;
    /// 32-bit ARGB.
    pub const FMT_32_ARGB: u32 = 96;
}

/// Surface flags (u32, SURFACE_CREATE).
pub mod surface_flags {
    /// The surface is the primary surface.
    pub const PRIMARY: u32 = 1;
    /// Video-only surface; only safe if the client has MULTI_CODEC.
    pub const STREAMING_MODE: u32 = 2;
}

/// Stream flags (u8, STREAM_CREATE).
pub mod stream_flags {
    /// Frames are top-down; set it for ordinary video.
    pub const TOP_DOWN: u8 = 1;
}

/// GL scanout flags (u32, GL_SCANOUT_UNIX).
pub mod gl_scanout_flags {
    /// Row 0 is the top row.
    pub const Y0TOP: u32 = 1;
}

/// Image compression values (PREFERRED_COMPRESSION).
pub mod image_compression {
    /// Invalid.
    pub const INVALID: u8 = 0;
    /// No compression.
    pub const OFF: u8 = 1;
    /// Automatic GLZ.
    pub const AUTO_GLZ: u8 = 2;
    /// Automatic LZ.
    pub const AUTO_LZ: u8 = 3;
    /// QUIC.
    pub const QUIC: u8 = 4;
    /// GLZ.
    pub const GLZ: u8 = 5;
    /// LZ.
    pub const LZ: u8 = 6;
    /// LZ4.
    pub const LZ4: u8 = 7;
}

/// Clip types (u8).
pub mod clip_type {
    /// No clipping.
    pub const NONE: u8 = 0;
    /// A list of rectangles follows inline.
    pub const RECTS: u8 = 1;
}
