//! DRM fourcc → GStreamer video format table.
//!
//! GStreamer 1.22 has no public DRM fourcc mapper (`gst_video_format_from_fourcc`
//! is not one), so the table is kept here. It follows `format_map[]` of
//! `video-info-dma.c` in GStreamer 1.24.

use gst_video::VideoFormat;

/// Layout of one plane relative to the frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneShape {
    /// Bytes per pixel of the plane (after horizontal subsampling).
    pub bytes_per_pixel: u32,
    /// log2 of the horizontal subsampling.
    pub x_sub: u32,
    /// log2 of the vertical subsampling.
    pub y_sub: u32,
}

impl PlaneShape {
    const fn new(bytes_per_pixel: u32, x_sub: u32, y_sub: u32) -> Self {
        Self {
            bytes_per_pixel,
            x_sub,
            y_sub,
        }
    }

    /// Minimum stride in bytes of this plane for a frame `width` pixels wide.
    pub fn min_stride(&self, width: u32) -> u64 {
        u64::from(width.div_ceil(1 << self.x_sub)) * u64::from(self.bytes_per_pixel)
    }

    /// Number of rows of this plane for a frame `height` pixels high.
    pub fn rows(&self, height: u32) -> u32 {
        height.div_ceil(1 << self.y_sub)
    }
}

/// One entry of the fourcc table.
#[derive(Debug, Clone, Copy)]
pub struct FourccFormat {
    /// The DRM fourcc code, e.g. `XR24`.
    pub fourcc: u32,
    /// The matching raw video format.
    pub format: VideoFormat,
    /// Shape of each plane.
    pub planes: &'static [PlaneShape],
}

/// Builds a DRM fourcc from its four characters.
pub const fn fourcc_code(c: &[u8; 4]) -> u32 {
    (c[0] as u32) | (c[1] as u32) << 8 | (c[2] as u32) << 16 | (c[3] as u32) << 24
}

/// Linear (untiled) DRM format modifier.
pub const DRM_FORMAT_MOD_LINEAR: u64 = 0;
/// "No explicit modifier": the driver's implicit layout (linear for shared buffers).
pub const DRM_FORMAT_MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

const PACKED4: &[PlaneShape] = &[PlaneShape::new(4, 0, 0)];
const PACKED3: &[PlaneShape] = &[PlaneShape::new(3, 0, 0)];
const PACKED2: &[PlaneShape] = &[PlaneShape::new(2, 0, 0)];
const NV12: &[PlaneShape] = &[PlaneShape::new(1, 0, 0), PlaneShape::new(2, 1, 1)];
const I420: &[PlaneShape] = &[
    PlaneShape::new(1, 0, 0),
    PlaneShape::new(1, 1, 1),
    PlaneShape::new(1, 1, 1),
];

const TABLE: &[FourccFormat] = &[
    entry(b"XR24", VideoFormat::Bgrx, PACKED4),
    entry(b"AR24", VideoFormat::Bgra, PACKED4),
    entry(b"XB24", VideoFormat::Rgbx, PACKED4),
    entry(b"AB24", VideoFormat::Rgba, PACKED4),
    entry(b"BX24", VideoFormat::Xrgb, PACKED4),
    entry(b"BA24", VideoFormat::Argb, PACKED4),
    entry(b"RX24", VideoFormat::Xbgr, PACKED4),
    entry(b"RA24", VideoFormat::Abgr, PACKED4),
    entry(b"AR30", VideoFormat::Bgr10a2Le, PACKED4),
    entry(b"AYUV", VideoFormat::Vuya, PACKED4),
    entry(b"RG24", VideoFormat::Bgr, PACKED3),
    entry(b"BG24", VideoFormat::Rgb, PACKED3),
    entry(b"RG16", VideoFormat::Rgb16, PACKED2),
    entry(b"NV12", VideoFormat::Nv12, NV12),
    entry(b"YU12", VideoFormat::I420, I420),
];

const fn entry(c: &[u8; 4], format: VideoFormat, planes: &'static [PlaneShape]) -> FourccFormat {
    FourccFormat {
        fourcc: fourcc_code(c),
        format,
        planes,
    }
}

/// Looks up a DRM fourcc. `None` for fourccs the element does not handle.
pub fn lookup(fourcc: u32) -> Option<&'static FourccFormat> {
    TABLE.iter().find(|e| e.fourcc == fourcc)
}

/// Every video format the element can output, for the pad template.
pub fn all_formats() -> impl Iterator<Item = VideoFormat> {
    TABLE.iter().map(|e| e.format)
}

/// Formats a fourcc for messages: `'XR24' (0x34325258)`, with unprintable bytes escaped.
pub fn fourcc_name(fourcc: u32) -> String {
    let chars: String = fourcc
        .to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    format!("'{chars}' (0x{fourcc:08x})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_maps_the_common_fourccs() {
        assert_eq!(
            lookup(fourcc_code(b"XR24")).unwrap().format,
            VideoFormat::Bgrx
        );
        assert_eq!(
            lookup(fourcc_code(b"AB24")).unwrap().format,
            VideoFormat::Rgba
        );
        assert_eq!(
            lookup(fourcc_code(b"RG24")).unwrap().format,
            VideoFormat::Bgr
        );
        assert_eq!(lookup(fourcc_code(b"NV12")).unwrap().planes.len(), 2);
        assert_eq!(lookup(fourcc_code(b"YU12")).unwrap().planes.len(), 3);
        assert!(lookup(fourcc_code(b"Y8  ")).is_none());
    }

    #[test]
    fn plane_shapes() {
        let nv12 = lookup(fourcc_code(b"NV12")).unwrap();
        assert_eq!(nv12.planes[0].min_stride(1921), 1921);
        assert_eq!(nv12.planes[1].min_stride(1921), 1922);
        assert_eq!(nv12.planes[1].rows(1081), 541);
        assert_eq!(PACKED4[0].min_stride(1920), 7680);
    }

    #[test]
    fn fourcc_names_are_readable() {
        assert_eq!(fourcc_name(fourcc_code(b"XR24")), "'XR24' (0x34325258)");
        assert_eq!(fourcc_name(0x01), "'????' (0x00000001)");
    }
}
