//! Display channel messages (types 101+): surfaces, monitors, video streams
//! and GL scanout.

use super::base::{ClientBaseMsg, parse_client_base};
use super::codec::VideoCodec;
use super::consts::{clip_type, stream_flags, surface_flags, surface_format};
use super::error::ProtoError;
use super::framing::{FrameEncoder, ServerMessage};
use super::msg_type::{client, server};
use super::wire::{Put, Reader, len_u16, len_u32, need};

/// `Rect`: i32 top, left, bottom, right (16 bytes). Not x/y/w/h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Top edge.
    pub top: i32,
    /// Left edge.
    pub left: i32,
    /// Bottom edge (exclusive).
    pub bottom: i32,
    /// Right edge (exclusive).
    pub right: i32,
}

impl Rect {
    /// `{0, 0, height, width}`: a full surface of the given size.
    pub fn from_size(width: u32, height: u32) -> Self {
        Self {
            top: 0,
            left: 0,
            bottom: i32::try_from(height).unwrap_or(i32::MAX),
            right: i32::try_from(width).unwrap_or(i32::MAX),
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.put_i32(self.top);
        out.put_i32(self.left);
        out.put_i32(self.bottom);
        out.put_i32(self.right);
    }
}

/// MARK (102): empty. Required after the primary surface for widget clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark;

impl ServerMessage for Mark {
    const MSG_TYPE: u16 = server::display::MARK;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// RESET (103): empty. Clears canvas and palettes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset;

impl ServerMessage for Reset {
    const MSG_TYPE: u16 = server::display::RESET;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// INVAL_ALL_PALETTES (108): empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalAllPalettes;

impl ServerMessage for InvalAllPalettes {
    const MSG_TYPE: u16 = server::display::INVAL_ALL_PALETTES;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// SURFACE_CREATE (314): 20 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurfaceCreate {
    /// 0 for the primary surface.
    pub surface_id: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// See [`super::consts::surface_format`]; use 32 (xRGB).
    pub format: u32,
    /// See [`super::consts::surface_flags`].
    pub flags: u32,
}

impl SurfaceCreate {
    /// Primary surface 0 in 32-bit xRGB; `streaming_mode` adds the
    /// STREAMING_MODE flag (only if the client has MULTI_CODEC).
    pub fn primary(width: u32, height: u32, streaming_mode: bool) -> Self {
        let mut flags = surface_flags::PRIMARY;
        if streaming_mode {
            flags |= surface_flags::STREAMING_MODE;
        }
        Self {
            surface_id: 0,
            width,
            height,
            format: surface_format::FMT_32_XRGB,
            flags,
        }
    }
}

impl ServerMessage for SurfaceCreate {
    const MSG_TYPE: u16 = server::display::SURFACE_CREATE;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.surface_id);
        out.put_u32(self.width);
        out.put_u32(self.height);
        out.put_u32(self.format);
        out.put_u32(self.flags);
        Ok(())
    }
}

/// SURFACE_DESTROY (315): u32 surface_id. Destroy its streams first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurfaceDestroy {
    /// Surface to destroy.
    pub surface_id: u32,
}

impl ServerMessage for SurfaceDestroy {
    const MSG_TYPE: u16 = server::display::SURFACE_DESTROY;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.surface_id);
        Ok(())
    }
}

/// One head of MONITORS_CONFIG: 7 × u32 = 28 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MonitorHead {
    /// Monitor id.
    pub monitor_id: u32,
    /// Surface shown on this monitor.
    pub surface_id: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// X position.
    pub x: u32,
    /// Y position.
    pub y: u32,
    /// Flags (0).
    pub flags: u32,
}

/// Size of one MONITORS_CONFIG head.
pub const MONITOR_HEAD_SIZE: usize = 28;

/// MONITORS_CONFIG (317): u16 count, u16 max_allowed, count × 28-byte heads.
/// Required if the server advertises display cap MONITORS_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorsConfig {
    /// Maximum number of monitors (clamped by the client to 1..=256).
    pub max_allowed: u16,
    /// The heads.
    pub heads: Vec<MonitorHead>,
}

impl MonitorsConfig {
    /// One monitor showing all of `surface_id`, max_allowed 1.
    pub fn single(surface_id: u32, width: u32, height: u32) -> Self {
        Self {
            max_allowed: 1,
            heads: vec![MonitorHead {
                surface_id,
                width,
                height,
                ..MonitorHead::default()
            }],
        }
    }
}

impl ServerMessage for MonitorsConfig {
    const MSG_TYPE: u16 = server::display::MONITORS_CONFIG;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u16(len_u16("MONITORS_CONFIG count", self.heads.len())?);
        out.put_u16(self.max_allowed);
        for h in &self.heads {
            for v in [
                h.monitor_id,
                h.surface_id,
                h.width,
                h.height,
                h.x,
                h.y,
                h.flags,
            ] {
                out.put_u32(v);
            }
        }
        Ok(())
    }
}

/// STREAM_CREATE (122) with clip NONE: 51 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCreate {
    /// Surface to draw on; it must exist.
    pub surface_id: u32,
    /// Stream id (< 64); do not reuse a live id.
    pub id: u32,
    /// See [`super::consts::stream_flags`]; TOP_DOWN for ordinary video.
    pub flags: u8,
    /// Codec of the STREAM_DATA payloads.
    pub codec: VideoCodec,
    /// Unused by the client (0).
    pub stamp: u64,
    /// Stream width (informational).
    pub stream_width: u32,
    /// Stream height (informational).
    pub stream_height: u32,
    /// Source width (informational).
    pub src_width: u32,
    /// Source height (informational).
    pub src_height: u32,
    /// Where frames are drawn; frames are scaled to it.
    pub dest: Rect,
}

/// Size of the STREAM_CREATE body with clip NONE.
pub const STREAM_CREATE_SIZE: usize = 51;

impl StreamCreate {
    /// A TOP_DOWN stream covering `width × height` at the origin, with all
    /// sizes equal to the frame size (what spice-server's stream channel sends).
    pub fn top_down(surface_id: u32, id: u32, codec: VideoCodec, width: u32, height: u32) -> Self {
        Self {
            surface_id,
            id,
            flags: stream_flags::TOP_DOWN,
            codec,
            stamp: 0,
            stream_width: width,
            stream_height: height,
            src_width: width,
            src_height: height,
            dest: Rect::from_size(width, height),
        }
    }
}

impl ServerMessage for StreamCreate {
    const MSG_TYPE: u16 = server::display::STREAM_CREATE;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.surface_id);
        out.put_u32(self.id);
        out.put_u8(self.flags);
        out.put_u8(self.codec.to_u8());
        out.put_u64(self.stamp);
        out.put_u32(self.stream_width);
        out.put_u32(self.stream_height);
        out.put_u32(self.src_width);
        out.put_u32(self.src_height);
        self.dest.put(out);
        out.put_u8(clip_type::NONE);
        Ok(())
    }
}

/// Size of the STREAM_DATA fixed prefix (id, multi_media_time, data_size).
pub const STREAM_DATA_PREFIX_SIZE: usize = 12;
/// Size of the STREAM_DATA_SIZED fixed prefix.
pub const STREAM_DATA_SIZED_PREFIX_SIZE: usize = 36;

/// STREAM_DATA (123): u32 id, u32 multi_media_time, u32 data_size, data.
/// One frame / access unit per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamData<'a> {
    /// Stream id.
    pub id: u32,
    /// Presentation time on the client's multimedia clock (never 0).
    pub multi_media_time: u32,
    /// Encoded frame.
    pub data: &'a [u8],
}

fn put_stream_data_prefix(out: &mut Vec<u8>, id: u32, mm_time: u32, data_size: u32) {
    out.put_u32(id);
    out.put_u32(mm_time);
    out.put_u32(data_size);
}

impl ServerMessage for StreamData<'_> {
    const MSG_TYPE: u16 = server::display::STREAM_DATA;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let size = len_u32("STREAM_DATA data_size", self.data.len())?;
        put_stream_data_prefix(out, self.id, self.multi_media_time, size);
        out.extend_from_slice(self.data);
        Ok(())
    }
}

/// Frame header + the 12-byte STREAM_DATA prefix for a frame of `data_len`
/// bytes. Write the frame bytes right after it, without copying them into
/// the same buffer.
pub fn stream_data_head(
    enc: &mut FrameEncoder,
    id: u32,
    multi_media_time: u32,
    data_len: usize,
) -> Result<Vec<u8>, ProtoError> {
    let data_size = len_u32("STREAM_DATA data_size", data_len)?;
    // The header rejects a total above u32::MAX.
    let body_len = data_len.saturating_add(STREAM_DATA_PREFIX_SIZE);
    let mut out = enc.header(server::display::STREAM_DATA, body_len)?;
    put_stream_data_prefix(&mut out, id, multi_media_time, data_size);
    Ok(out)
}

/// STREAM_DATA_SIZED (316): like STREAM_DATA with its own frame size and
/// destination. Only if the client has SIZED_STREAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDataSized<'a> {
    /// Stream id.
    pub id: u32,
    /// Presentation time on the client's multimedia clock (never 0).
    pub multi_media_time: u32,
    /// Frame width (informational).
    pub width: u32,
    /// Frame height (informational).
    pub height: u32,
    /// Destination used instead of the stream's.
    pub dest: Rect,
    /// Encoded frame.
    pub data: &'a [u8],
}

fn put_stream_data_sized_prefix(out: &mut Vec<u8>, m: &StreamDataSized<'_>, data_size: u32) {
    out.put_u32(m.id);
    out.put_u32(m.multi_media_time);
    out.put_u32(m.width);
    out.put_u32(m.height);
    m.dest.put(out);
    out.put_u32(data_size);
}

impl ServerMessage for StreamDataSized<'_> {
    const MSG_TYPE: u16 = server::display::STREAM_DATA_SIZED;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let size = len_u32("STREAM_DATA_SIZED data_size", self.data.len())?;
        put_stream_data_sized_prefix(out, self, size);
        out.extend_from_slice(self.data);
        Ok(())
    }
}

/// Frame header + the 36-byte STREAM_DATA_SIZED prefix for a frame of
/// `data_len` bytes (`msg.data` is ignored). Write the frame bytes after it.
pub fn stream_data_sized_head(
    enc: &mut FrameEncoder,
    msg: &StreamDataSized<'_>,
    data_len: usize,
) -> Result<Vec<u8>, ProtoError> {
    let data_size = len_u32("STREAM_DATA_SIZED data_size", data_len)?;
    // The header rejects a total above u32::MAX.
    let body_len = data_len.saturating_add(STREAM_DATA_SIZED_PREFIX_SIZE);
    let mut out = enc.header(server::display::STREAM_DATA_SIZED, body_len)?;
    put_stream_data_sized_prefix(&mut out, msg, data_size);
    Ok(out)
}

/// STREAM_DESTROY (125): u32 id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDestroy {
    /// Stream id.
    pub id: u32,
}

impl ServerMessage for StreamDestroy {
    const MSG_TYPE: u16 = server::display::STREAM_DESTROY;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.id);
        Ok(())
    }
}

/// STREAM_DESTROY_ALL (126): empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDestroyAll;

impl ServerMessage for StreamDestroyAll {
    const MSG_TYPE: u16 = server::display::STREAM_DESTROY_ALL;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// STREAM_ACTIVATE_REPORT (319): 16 bytes. Needs display cap STREAM_REPORT
/// on both sides; the client then sends STREAM_REPORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamActivateReport {
    /// Stream id.
    pub stream_id: u32,
    /// Id echoed in reports.
    pub unique_id: u32,
    /// Frames per report (spice-server: 5).
    pub max_window_size: u32,
    /// Report at least this often, in ms (spice-server: 1000).
    pub timeout_ms: u32,
}

impl ServerMessage for StreamActivateReport {
    const MSG_TYPE: u16 = server::display::STREAM_ACTIVATE_REPORT;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.stream_id);
        out.put_u32(self.unique_id);
        out.put_u32(self.max_window_size);
        out.put_u32(self.timeout_ms);
        Ok(())
    }
}

/// GL_SCANOUT_UNIX (320): 20 bytes. Over AF_UNIX only: when
/// `drm_fourcc_format != 0`, follow the complete message with a separate
/// one-byte (`'@'`) `sendmsg` carrying the dmabuf fd as SCM_RIGHTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlScanoutUnix {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
    /// DRM fourcc, e.g. `0x34325258` (XR24); 0 disables the scanout (no fd).
    pub drm_fourcc_format: u32,
    /// See [`super::consts::gl_scanout_flags`].
    pub flags: u32,
}

impl ServerMessage for GlScanoutUnix {
    const MSG_TYPE: u16 = server::display::GL_SCANOUT_UNIX;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.width);
        out.put_u32(self.height);
        out.put_u32(self.stride);
        out.put_u32(self.drm_fourcc_format);
        out.put_u32(self.flags);
        Ok(())
    }
}

/// GL_DRAW (321): u32 x, y, w, h of the damaged area. Wait for GL_DRAW_DONE
/// before the next draw or scanout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlDraw {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl ServerMessage for GlDraw {
    const MSG_TYPE: u16 = server::display::GL_DRAW;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.x);
        out.put_u32(self.y);
        out.put_u32(self.w);
        out.put_u32(self.h);
        Ok(())
    }
}

/// Display INIT (101) from the client: 14 bytes of cache setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayInit {
    /// Pixmap cache id.
    pub pixmap_cache_id: u8,
    /// Pixmap cache size in pixels.
    pub pixmap_cache_size: i64,
    /// GLZ dictionary id.
    pub glz_dictionary_id: u8,
    /// GLZ dictionary window size in pixels.
    pub glz_dictionary_window_size: i32,
}

/// Size of the display INIT body.
pub const DISPLAY_INIT_SIZE: usize = 14;

/// STREAM_REPORT (102) from the client: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamReport {
    /// Stream id.
    pub stream_id: u32,
    /// Id from STREAM_ACTIVATE_REPORT.
    pub unique_id: u32,
    /// mm_time of the first frame in the window.
    pub start_frame_mm_time: u32,
    /// mm_time of the last frame in the window.
    pub end_frame_mm_time: u32,
    /// Frames in the window.
    pub num_frames: u32,
    /// Dropped frames; 0xFFFFFFFF with num_frames 0 means decoder failure.
    pub num_drops: u32,
    /// Delay of the last frame (ms; negative = late).
    pub last_frame_delay: i32,
    /// Audio delay; 0xFFFFFFFF = no audio.
    pub audio_delay: u32,
}

/// Size of the STREAM_REPORT body.
pub const STREAM_REPORT_SIZE: usize = 32;

impl StreamReport {
    /// The "stream unknown or decoder failed" report
    /// (`num_frames == 0 && num_drops == 0xFFFFFFFF`): recreate the stream or
    /// fall back to another codec.
    pub fn is_decoder_failure(&self) -> bool {
        self.num_frames == 0 && self.num_drops == u32::MAX
    }
}

/// PREFERRED_VIDEO_CODEC_TYPE (105) from the client: codecs by preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredVideoCodecs {
    /// Raw codec values in preference order (may contain unknown values).
    pub codecs: Vec<u8>,
}

impl PreferredVideoCodecs {
    /// The known codecs, in preference order.
    pub fn known(&self) -> Vec<VideoCodec> {
        self.codecs
            .iter()
            .filter_map(|&c| VideoCodec::from_u8(c))
            .collect()
    }
}

/// A message from the client on the display channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientDisplayMsg {
    /// A base message (types 1..=6).
    Base(ClientBaseMsg),
    /// INIT (101).
    Init(DisplayInit),
    /// STREAM_REPORT (102).
    StreamReport(StreamReport),
    /// PREFERRED_COMPRESSION (103): see [`super::consts::image_compression`].
    PreferredCompression {
        /// Image compression value.
        compression: u8,
    },
    /// GL_DRAW_DONE (104).
    GlDrawDone,
    /// PREFERRED_VIDEO_CODEC_TYPE (105).
    PreferredVideoCodecs(PreferredVideoCodecs),
    /// A type this parser does not know; not an error.
    Unknown {
        /// Message type.
        msg_type: u16,
    },
}

/// Parses a client display-channel message.
pub fn parse_client_display(msg_type: u16, body: &[u8]) -> Result<ClientDisplayMsg, ProtoError> {
    use client::display as t;
    if let Some(base) = parse_client_base(msg_type, body)? {
        return Ok(ClientDisplayMsg::Base(base));
    }
    Ok(match msg_type {
        t::INIT => {
            const WHAT: &str = "display INIT body";
            need(WHAT, body, DISPLAY_INIT_SIZE)?;
            let mut r = Reader::new(WHAT, body);
            ClientDisplayMsg::Init(DisplayInit {
                pixmap_cache_id: r.u8()?,
                pixmap_cache_size: r.i64()?,
                glz_dictionary_id: r.u8()?,
                glz_dictionary_window_size: r.i32()?,
            })
        }
        t::STREAM_REPORT => {
            const WHAT: &str = "display STREAM_REPORT body";
            need(WHAT, body, STREAM_REPORT_SIZE)?;
            let mut r = Reader::new(WHAT, body);
            ClientDisplayMsg::StreamReport(StreamReport {
                stream_id: r.u32()?,
                unique_id: r.u32()?,
                start_frame_mm_time: r.u32()?,
                end_frame_mm_time: r.u32()?,
                num_frames: r.u32()?,
                num_drops: r.u32()?,
                last_frame_delay: r.i32()?,
                audio_delay: r.u32()?,
            })
        }
        t::PREFERRED_COMPRESSION => {
            const WHAT: &str = "display PREFERRED_COMPRESSION body";
            need(WHAT, body, 1)?;
            ClientDisplayMsg::PreferredCompression {
                compression: Reader::new(WHAT, body).u8()?,
            }
        }
        t::GL_DRAW_DONE => ClientDisplayMsg::GlDrawDone,
        t::PREFERRED_VIDEO_CODEC_TYPE => {
            const WHAT: &str = "display PREFERRED_VIDEO_CODEC_TYPE body";
            need(WHAT, body, 1)?;
            let mut r = Reader::new(WHAT, body);
            let n = usize::from(r.u8()?);
            need(WHAT, body, 1 + n)?;
            ClientDisplayMsg::PreferredVideoCodecs(PreferredVideoCodecs {
                codecs: r.bytes(n)?.to_vec(),
            })
        }
        _ => ClientDisplayMsg::Unknown { msg_type },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::framing::HeaderKind;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn i32_at(b: &[u8], off: usize) -> i32 {
        i32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn surface_create_is_20_bytes() {
        let body = SurfaceCreate::primary(1920, 1080, true).to_body().unwrap();
        assert_eq!(body.len(), 20);
        assert_eq!(u32_at(&body, 0), 0);
        assert_eq!(u32_at(&body, 4), 1920);
        assert_eq!(u32_at(&body, 8), 1080);
        assert_eq!(u32_at(&body, 12), 32);
        assert_eq!(u32_at(&body, 16), 3);
        assert_eq!(SurfaceCreate::primary(1, 1, false).flags, 1);
        assert_eq!(SurfaceCreate::MSG_TYPE, 314);
        let destroy = SurfaceDestroy { surface_id: 0 }.to_body().unwrap();
        assert_eq!(destroy, [0, 0, 0, 0]);
        assert_eq!(SurfaceDestroy::MSG_TYPE, 315);
    }

    #[test]
    fn monitors_config_is_4_plus_28n() {
        let body = MonitorsConfig::single(0, 640, 480).to_body().unwrap();
        assert_eq!(body.len(), 4 + 28);
        let mut expected = vec![1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&640u32.to_le_bytes());
        expected.extend_from_slice(&480u32.to_le_bytes());
        expected.extend_from_slice(&[0; 12]);
        assert_eq!(body, expected);
        let three = MonitorsConfig {
            max_allowed: 4,
            heads: vec![MonitorHead::default(); 3],
        };
        let body = three.to_body().unwrap();
        assert_eq!(body.len(), 4 + 28 * 3);
        assert_eq!(body[..4], [3, 0, 4, 0]);
        let too_many = MonitorsConfig {
            max_allowed: 1,
            heads: vec![MonitorHead::default(); 70_000],
        };
        assert!(too_many.to_body().is_err());
        assert_eq!(MonitorsConfig::MSG_TYPE, 317);
    }

    #[test]
    fn empty_display_messages() {
        assert!(Mark.to_body().unwrap().is_empty());
        assert!(Reset.to_body().unwrap().is_empty());
        assert!(InvalAllPalettes.to_body().unwrap().is_empty());
        assert!(StreamDestroyAll.to_body().unwrap().is_empty());
        assert_eq!(
            (
                Mark::MSG_TYPE,
                Reset::MSG_TYPE,
                InvalAllPalettes::MSG_TYPE,
                StreamDestroyAll::MSG_TYPE
            ),
            (102, 103, 108, 126)
        );
    }

    #[test]
    fn stream_create_is_51_bytes_at_documented_offsets() {
        let msg = StreamCreate {
            stamp: 0x0102_0304_0506_0708,
            stream_width: 11,
            stream_height: 12,
            src_width: 13,
            src_height: 14,
            dest: Rect {
                top: 1,
                left: 2,
                bottom: 3,
                right: 4,
            },
            ..StreamCreate::top_down(0, 7, VideoCodec::H264, 640, 480)
        };
        let body = msg.to_body().unwrap();
        assert_eq!(body.len(), STREAM_CREATE_SIZE);
        assert_eq!(u32_at(&body, 0), 0);
        assert_eq!(u32_at(&body, 4), 7);
        assert_eq!(body[8], 1);
        assert_eq!(body[9], 3);
        assert_eq!(body[10..18], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(u32_at(&body, 18), 11);
        assert_eq!(u32_at(&body, 22), 12);
        assert_eq!(u32_at(&body, 26), 13);
        assert_eq!(u32_at(&body, 30), 14);
        assert_eq!(
            [
                i32_at(&body, 34),
                i32_at(&body, 38),
                i32_at(&body, 42),
                i32_at(&body, 46)
            ],
            [1, 2, 3, 4]
        );
        assert_eq!(body[50], 0);
        assert_eq!(StreamCreate::MSG_TYPE, 122);

        let plain = StreamCreate::top_down(0, 1, VideoCodec::Mjpeg, 640, 480)
            .to_body()
            .unwrap();
        assert_eq!(plain[9], 1);
        assert_eq!(plain[10..18], [0; 8]);
        assert_eq!(u32_at(&plain, 18), 640);
        assert_eq!(u32_at(&plain, 30), 480);
        // dest = {top 0, left 0, bottom 480, right 640}
        assert_eq!(
            [
                i32_at(&plain, 34),
                i32_at(&plain, 38),
                i32_at(&plain, 42),
                i32_at(&plain, 46)
            ],
            [0, 0, 480, 640]
        );
    }

    #[test]
    fn stream_data_and_head_agree() {
        let data = [0xAB; 100];
        let msg = StreamData {
            id: 3,
            multi_media_time: 1234,
            data: &data,
        };
        let body = msg.to_body().unwrap();
        assert_eq!(body.len(), 12 + 100);
        assert_eq!(u32_at(&body, 0), 3);
        assert_eq!(u32_at(&body, 4), 1234);
        assert_eq!(u32_at(&body, 8), 100);
        assert_eq!(StreamData::MSG_TYPE, 123);

        for kind in [HeaderKind::Mini, HeaderKind::Full] {
            let mut a = FrameEncoder::new(kind);
            let mut b = FrameEncoder::new(kind);
            let whole = a.encode(&msg).unwrap();
            let mut split = stream_data_head(&mut b, 3, 1234, data.len()).unwrap();
            assert_eq!(split.len(), kind.size() + 12);
            split.extend_from_slice(&data);
            assert_eq!(whole, split);
        }
        // A body that cannot be described by the u32 size field is refused
        // without consuming a serial.
        let mut enc = FrameEncoder::new(HeaderKind::Full);
        assert!(stream_data_head(&mut enc, 0, 1, u32::MAX as usize).is_err());
        assert!(stream_data_head(&mut enc, 0, 1, usize::MAX).is_err());
        assert_eq!(enc.last_serial(), 0);
    }

    #[test]
    fn stream_data_sized_and_head_agree() {
        let data = [1, 2, 3];
        let msg = StreamDataSized {
            id: 1,
            multi_media_time: 99,
            width: 320,
            height: 200,
            dest: Rect::from_size(320, 200),
            data: &data,
        };
        let body = msg.to_body().unwrap();
        assert_eq!(body.len(), 36 + 3);
        assert_eq!(u32_at(&body, 8), 320);
        assert_eq!(u32_at(&body, 12), 200);
        assert_eq!(i32_at(&body, 24), 200);
        assert_eq!(i32_at(&body, 28), 320);
        assert_eq!(u32_at(&body, 32), 3);
        assert_eq!(StreamDataSized::MSG_TYPE, 316);
        let mut a = FrameEncoder::new(HeaderKind::Mini);
        let mut b = FrameEncoder::new(HeaderKind::Mini);
        let mut split = stream_data_sized_head(&mut b, &msg, data.len()).unwrap();
        split.extend_from_slice(&data);
        assert_eq!(a.encode(&msg).unwrap(), split);
    }

    #[test]
    fn small_stream_and_gl_messages() {
        assert_eq!(StreamDestroy { id: 5 }.to_body().unwrap(), [5, 0, 0, 0]);
        assert_eq!(StreamDestroy::MSG_TYPE, 125);
        let report = StreamActivateReport {
            stream_id: 1,
            unique_id: 2,
            max_window_size: 5,
            timeout_ms: 1000,
        }
        .to_body()
        .unwrap();
        assert_eq!(report.len(), 16);
        assert_eq!(u32_at(&report, 12), 1000);
        assert_eq!(StreamActivateReport::MSG_TYPE, 319);
        let scanout = GlScanoutUnix {
            width: 1024,
            height: 768,
            stride: 4096,
            drm_fourcc_format: 0x3432_5258,
            flags: 1,
        }
        .to_body()
        .unwrap();
        assert_eq!(scanout.len(), 20);
        assert_eq!(scanout[12..16], *b"XR24");
        assert_eq!(u32_at(&scanout, 8), 4096);
        assert_eq!(u32_at(&scanout, 16), 1);
        assert_eq!(GlScanoutUnix::MSG_TYPE, 320);
        let draw = GlDraw {
            x: 1,
            y: 2,
            w: 3,
            h: 4,
        }
        .to_body()
        .unwrap();
        assert_eq!(draw.len(), 16);
        assert_eq!(u32_at(&draw, 12), 4);
        assert_eq!(GlDraw::MSG_TYPE, 321);
    }

    #[test]
    fn parses_observed_display_init() {
        let mut body = vec![1];
        body.extend_from_slice(&20_971_520i64.to_le_bytes());
        body.push(1);
        body.extend_from_slice(&3_145_728i32.to_le_bytes());
        assert_eq!(body.len(), 14);
        assert_eq!(
            parse_client_display(101, &body).unwrap(),
            ClientDisplayMsg::Init(DisplayInit {
                pixmap_cache_id: 1,
                pixmap_cache_size: 20_971_520,
                glz_dictionary_id: 1,
                glz_dictionary_window_size: 3_145_728,
            })
        );
        assert_eq!(
            parse_client_display(101, &body[..3])
                .unwrap_err()
                .to_string(),
            "display INIT body too short: 3 bytes, need 14"
        );
    }

    #[test]
    fn parses_stream_report() {
        let mut body = Vec::new();
        for v in [7u32, 8, 100, 200, 0, u32::MAX] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&(-5i32).to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(body.len(), 32);
        let ClientDisplayMsg::StreamReport(report) = parse_client_display(102, &body).unwrap()
        else {
            panic!("not a report");
        };
        assert_eq!(report.stream_id, 7);
        assert_eq!(report.unique_id, 8);
        assert_eq!(report.start_frame_mm_time, 100);
        assert_eq!(report.end_frame_mm_time, 200);
        assert_eq!(report.last_frame_delay, -5);
        assert_eq!(report.audio_delay, u32::MAX);
        assert!(report.is_decoder_failure());
        assert!(parse_client_display(102, &body[..31]).is_err());
    }

    #[test]
    fn parses_other_client_display_messages() {
        assert_eq!(
            parse_client_display(103, &[7]).unwrap(),
            ClientDisplayMsg::PreferredCompression { compression: 7 }
        );
        assert!(parse_client_display(103, &[]).is_err());
        assert_eq!(
            parse_client_display(104, &[]).unwrap(),
            ClientDisplayMsg::GlDrawDone
        );
        let ClientDisplayMsg::PreferredVideoCodecs(pref) =
            parse_client_display(105, &[3, 3, 9, 1]).unwrap()
        else {
            panic!("not codecs");
        };
        assert_eq!(pref.codecs, [3, 9, 1]);
        assert_eq!(pref.known(), [VideoCodec::H264, VideoCodec::Mjpeg]);
        assert_eq!(
            parse_client_display(105, &[3, 3]).unwrap_err().to_string(),
            "display PREFERRED_VIDEO_CODEC_TYPE body too short: 2 bytes, need 4"
        );
        assert_eq!(
            parse_client_display(322, &[]).unwrap(),
            ClientDisplayMsg::Unknown { msg_type: 322 }
        );
        assert_eq!(
            parse_client_display(1, &[1, 0, 0, 0]).unwrap(),
            ClientDisplayMsg::Base(ClientBaseMsg::AckSync { generation: 1 })
        );
    }
}
