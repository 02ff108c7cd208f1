//! Message type numbers for every channel, split by direction.
//!
//! Base types (below 100) are valid on every channel; channel-specific types
//! start at 101.

/// Server → client message types.
pub mod server {
    /// Base messages, valid on every channel.
    pub mod base {
        /// Migration start (do not send).
        pub const MIGRATE: u16 = 1;
        /// Migration data (do not send).
        pub const MIGRATE_DATA: u16 = 2;
        /// Start ACK flow control: u32 generation, u32 window.
        pub const SET_ACK: u16 = 3;
        /// Ping: u32 id, u64 timestamp, payload.
        pub const PING: u16 = 4;
        /// Wait until other channels reached a serial.
        pub const WAIT_FOR_CHANNELS: u16 = 5;
        /// Disconnect notice: u64 time_stamp, u32 reason.
        pub const DISCONNECTING: u16 = 6;
        /// Notification text.
        pub const NOTIFY: u16 = 7;
        /// Sub-message list.
        pub const LIST: u16 = 8;
    }

    /// Main channel.
    pub mod main {
        /// Migration begin (do not send).
        pub const MIGRATE_BEGIN: u16 = 101;
        /// Migration cancel.
        pub const MIGRATE_CANCEL: u16 = 102;
        /// Session init, 32 bytes; must be the first main message.
        pub const INIT: u16 = 103;
        /// List of channels the client should link.
        pub const CHANNELS_LIST: u16 = 104;
        /// Supported and current mouse mode.
        pub const MOUSE_MODE: u16 = 105;
        /// Multimedia clock update.
        pub const MULTI_MEDIA_TIME: u16 = 106;
        /// Agent connected.
        pub const AGENT_CONNECTED: u16 = 107;
        /// Agent disconnected: u32 error code.
        pub const AGENT_DISCONNECTED: u16 = 108;
        /// Raw VDAgent data.
        pub const AGENT_DATA: u16 = 109;
        /// Agent tokens: u32.
        pub const AGENT_TOKEN: u16 = 110;
        /// Migration switch host (do not send).
        pub const MIGRATE_SWITCH_HOST: u16 = 111;
        /// Migration end.
        pub const MIGRATE_END: u16 = 112;
        /// VM name.
        pub const NAME: u16 = 113;
        /// VM UUID.
        pub const UUID: u16 = 114;
        /// Agent connected with tokens: u32.
        pub const AGENT_CONNECTED_TOKENS: u16 = 115;
        /// Seamless migration begin (do not send).
        pub const MIGRATE_BEGIN_SEAMLESS: u16 = 116;
        /// Seamless migration destination ACK (do not send).
        pub const MIGRATE_DST_SEAMLESS_ACK: u16 = 117;
        /// Seamless migration destination NACK (do not send).
        pub const MIGRATE_DST_SEAMLESS_NACK: u16 = 118;
    }

    /// Display channel.
    pub mod display {
        /// Old mode message (creates primary surface 0).
        pub const MODE: u16 = 101;
        /// Mark: the primary surface is ready to show.
        pub const MARK: u16 = 102;
        /// Reset canvas and palettes.
        pub const RESET: u16 = 103;
        /// Copy bits.
        pub const COPY_BITS: u16 = 104;
        /// Invalidate list.
        pub const INVAL_LIST: u16 = 105;
        /// Invalidate all pixmaps.
        pub const INVAL_ALL_PIXMAPS: u16 = 106;
        /// Invalidate one palette.
        pub const INVAL_PALETTE: u16 = 107;
        /// Invalidate all palettes.
        pub const INVAL_ALL_PALETTES: u16 = 108;
        /// Create a video stream.
        pub const STREAM_CREATE: u16 = 122;
        /// One encoded frame.
        pub const STREAM_DATA: u16 = 123;
        /// Change a stream's clip.
        pub const STREAM_CLIP: u16 = 124;
        /// Destroy one stream.
        pub const STREAM_DESTROY: u16 = 125;
        /// Destroy every stream.
        pub const STREAM_DESTROY_ALL: u16 = 126;
        /// Solid fill draw op.
        pub const DRAW_FILL: u16 = 302;
        /// Opaque draw op.
        pub const DRAW_OPAQUE: u16 = 303;
        /// Copy draw op.
        pub const DRAW_COPY: u16 = 304;
        /// Blend draw op.
        pub const DRAW_BLEND: u16 = 305;
        /// Blackness draw op.
        pub const DRAW_BLACKNESS: u16 = 306;
        /// Whiteness draw op.
        pub const DRAW_WHITENESS: u16 = 307;
        /// Invers draw op.
        pub const DRAW_INVERS: u16 = 308;
        /// ROP3 draw op.
        pub const DRAW_ROP3: u16 = 309;
        /// Stroke draw op.
        pub const DRAW_STROKE: u16 = 310;
        /// Text draw op.
        pub const DRAW_TEXT: u16 = 311;
        /// Transparent draw op.
        pub const DRAW_TRANSPARENT: u16 = 312;
        /// Alpha blend draw op.
        pub const DRAW_ALPHA_BLEND: u16 = 313;
        /// Create a surface, 20 bytes.
        pub const SURFACE_CREATE: u16 = 314;
        /// Destroy a surface.
        pub const SURFACE_DESTROY: u16 = 315;
        /// One encoded frame with its own size and destination.
        pub const STREAM_DATA_SIZED: u16 = 316;
        /// Monitor layout.
        pub const MONITORS_CONFIG: u16 = 317;
        /// Composite draw op.
        pub const DRAW_COMPOSITE: u16 = 318;
        /// Ask the client to send STREAM_REPORT.
        pub const STREAM_ACTIVATE_REPORT: u16 = 319;
        /// dmabuf scanout; the fd travels out of band.
        pub const GL_SCANOUT_UNIX: u16 = 320;
        /// Damaged area of the GL scanout.
        pub const GL_DRAW: u16 = 321;
        /// Quality indicator (no handler in spice-gtk 0.42; do not send).
        pub const QUALITY_INDICATOR: u16 = 322;
    }

    /// Inputs channel.
    pub mod inputs {
        /// Initial keyboard modifiers: u16.
        pub const INIT: u16 = 101;
        /// Keyboard modifiers changed: u16.
        pub const KEY_MODIFIERS: u16 = 102;
        /// Acknowledges a bunch of motion messages; empty.
        pub const MOUSE_MOTION_ACK: u16 = 111;
    }
}

/// Client → server message types.
pub mod client {
    /// Base messages, valid on every channel.
    pub mod base {
        /// Reply to SET_ACK: u32 generation.
        pub const ACK_SYNC: u16 = 1;
        /// Sent every `window` messages after SET_ACK; empty.
        pub const ACK: u16 = 2;
        /// Reply to PING: u32 id, u64 timestamp.
        pub const PONG: u16 = 3;
        /// Migration flush mark; empty.
        pub const MIGRATE_FLUSH_MARK: u16 = 4;
        /// Migration data.
        pub const MIGRATE_DATA: u16 = 5;
        /// Disconnect notice: u64 time_stamp, u32 reason.
        pub const DISCONNECTING: u16 = 6;
    }

    /// Main channel.
    pub mod main {
        /// Client info: u64 cache_size.
        pub const CLIENT_INFO: u16 = 101;
        /// Migration connected.
        pub const MIGRATE_CONNECTED: u16 = 102;
        /// Migration connect error.
        pub const MIGRATE_CONNECT_ERROR: u16 = 103;
        /// Client wants CHANNELS_LIST; empty.
        pub const ATTACH_CHANNELS: u16 = 104;
        /// Mouse mode request: u16 mode.
        pub const MOUSE_MODE_REQUEST: u16 = 105;
        /// Agent start: u32 num_tokens.
        pub const AGENT_START: u16 = 106;
        /// Raw VDAgent data.
        pub const AGENT_DATA: u16 = 107;
        /// Agent tokens: u32.
        pub const AGENT_TOKEN: u16 = 108;
        /// Migration end.
        pub const MIGRATE_END: u16 = 109;
        /// Seamless migration: u32 src_version.
        pub const MIGRATE_DST_DO_SEAMLESS: u16 = 110;
        /// Seamless migration connected.
        pub const MIGRATE_CONNECTED_SEAMLESS: u16 = 111;
        /// Quality indicator.
        pub const QUALITY_INDICATOR: u16 = 112;
    }

    /// Display channel.
    pub mod display {
        /// Cache setup, 14 bytes; sent right after the link.
        pub const INIT: u16 = 101;
        /// Stream playback statistics, 32 bytes.
        pub const STREAM_REPORT: u16 = 102;
        /// Preferred image compression: u8.
        pub const PREFERRED_COMPRESSION: u16 = 103;
        /// The last GL_DRAW has been rendered; empty.
        pub const GL_DRAW_DONE: u16 = 104;
        /// Preferred video codecs: u8 count, count × u8.
        pub const PREFERRED_VIDEO_CODEC_TYPE: u16 = 105;
    }

    /// Inputs channel.
    pub mod inputs {
        /// Key press: u32 scancode.
        pub const KEY_DOWN: u16 = 101;
        /// Key release: u32 scancode.
        pub const KEY_UP: u16 = 102;
        /// Keyboard modifiers: u16.
        pub const KEY_MODIFIERS: u16 = 103;
        /// Raw scancode bytes.
        pub const KEY_SCANCODE: u16 = 104;
        /// Relative motion: i32 dx, i32 dy, u16 buttons.
        pub const MOUSE_MOTION: u16 = 111;
        /// Absolute position: u32 x, u32 y, u16 buttons, u8 display_id.
        pub const MOUSE_POSITION: u16 = 112;
        /// Button press: u8 button, u16 buttons.
        pub const MOUSE_PRESS: u16 = 113;
        /// Button release: u8 button, u16 buttons.
        pub const MOUSE_RELEASE: u16 = 114;
    }
}
