//! SPICE wire protocol: parsing and building without I/O.
//!
//! Bytes in, typed messages out; typed messages in, bytes out. No sockets,
//! threads or clocks live here. All integers are little-endian and all
//! structures packed.
//!
//! * Link stage: [`link`] (header, link message, reply, auth mechanism).
//! * Framing after the link: [`framing`] ([`FrameDecoder`] for client bytes,
//!   [`FrameEncoder`] for server messages).
//! * Messages: [`base`], [`main_chan`], [`display`], [`inputs`]. Server
//!   messages are structs implementing [`ServerMessage`]; their
//!   `write_body`/`to_body` produce the body only, and
//!   [`FrameEncoder::encode`] produces header + body. Client messages are
//!   parsed per channel with [`parse_client_main`], [`parse_client_display`]
//!   and [`parse_client_inputs`]; unknown types are returned as `Unknown`,
//!   a known type with a short body is an error.
//! * Numbers: [`consts`], [`msg_type`], [`caps`], [`codec`].

pub mod ack;
pub mod base;
pub mod caps;
pub mod codec;
pub mod consts;
pub mod cursor;
pub mod display;
pub mod error;
pub mod framing;
pub mod inputs;
pub mod link;
pub mod main_chan;
pub mod msg_type;
mod wire;

#[cfg(test)]
mod fuzz_tests;

pub use ack::AckWindow;
pub use base::{ClientBaseMsg, Disconnecting, Notify, Ping, SetAck, parse_client_base};
pub use caps::{Caps, SERVER_COMMON_CAPS, server_common_caps_words, words_from_bits};
pub use codec::{UnknownCodecName, VideoCodec};
pub use cursor::{
    ClientCursorMsg, CursorCache, CursorHeader, CursorHide, CursorInit, CursorInvalAll,
    CursorInvalOne, CursorMove, CursorPlan, CursorReset, CursorSet, CursorShape, CursorShapeError,
    CursorTrail, Point16, SpiceCursor, parse_client_cursor,
};
pub use display::{
    ClientDisplayMsg, DisplayInit, GlDraw, GlScanoutUnix, InvalAllPalettes, Mark, MonitorHead,
    MonitorsConfig, PreferredVideoCodecs, Rect, Reset, StreamActivateReport, StreamCreate,
    StreamData, StreamDataSized, StreamDestroy, StreamDestroyAll, StreamReport, SurfaceCreate,
    SurfaceDestroy, parse_client_display, stream_data_head, stream_data_sized_head,
};
pub use error::ProtoError;
pub use framing::{
    DEFAULT_MAX_CLIENT_MESSAGE, FrameDecoder, FrameEncoder, HeaderKind, ServerMessage,
    frame_message,
};
pub use inputs::{
    ClientInputsMsg, InputEvent, InputsInit, KeyModifiers, MOTION_ACK_BUNCH, MotionAckCounter,
    MouseMotionAck, parse_client_inputs,
};
pub use link::{
    AuthMechanism, LinkHeader, LinkMess, LinkReply, build_link_error, build_link_reply,
    build_link_result, parse_auth_mechanism,
};
pub use main_chan::{
    ChannelEntry, ChannelsList, ClientMainMsg, MainInit, MouseMode, MultiMediaTime, Name, Uuid,
    parse_client_main,
};
