//! QEMU's 2D surface formats (pixman codes) and the DRM fourccs the shim takes for them.
//!
//! QEMU sends `Scanout`/`Update`/`ScanoutMap` pixels in the surface's pixman format. The pixels are
//! copied byte for byte, so a format is usable when a DRM fourcc has the same memory layout on a
//! little-endian host: pixman names a packed value from its most significant bits, DRM too
//! (`x8r8g8b8` and `XR24` are both the 32-bit value `0xXXRRGGBB`, i.e. bytes B, G, R, X).

use gstspicedmabuf::fourcc::fourcc_code;

/// `PIXMAN_x8r8g8b8`: what QEMU uses for almost every surface.
pub const PIXMAN_X8R8G8B8: u32 = 0x2002_0888;

/// A surface format the front end takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    /// The pixman code QEMU sends.
    pub pixman: u32,
    /// The DRM fourcc with the same layout.
    pub fourcc: u32,
    /// Bytes per pixel.
    pub bytes_per_pixel: u32,
    /// pixman's name, for log lines.
    pub name: &'static str,
}

const fn format(
    pixman: u32,
    drm: &[u8; 4],
    bytes_per_pixel: u32,
    name: &'static str,
) -> PixelFormat {
    PixelFormat {
        pixman,
        fourcc: fourcc_code(drm),
        bytes_per_pixel,
        name,
    }
}

#[cfg(target_endian = "little")]
const TABLE: &[PixelFormat] = &[
    format(PIXMAN_X8R8G8B8, b"XR24", 4, "x8r8g8b8"),
    format(0x2002_8888, b"AR24", 4, "a8r8g8b8"),
    format(0x2003_0888, b"XB24", 4, "x8b8g8r8"),
    format(0x2003_8888, b"AB24", 4, "a8b8g8r8"),
    format(0x2008_0888, b"BX24", 4, "b8g8r8x8"),
    format(0x2008_8888, b"BA24", 4, "b8g8r8a8"),
    format(0x1802_0888, b"RG24", 3, "r8g8b8"),
    format(0x1803_0888, b"BG24", 3, "b8g8r8"),
    format(0x1002_0565, b"RG16", 2, "r5g6b5"),
];

/// On a big-endian host pixman's packed values are stored the other way round and none of the
/// DRM little-endian fourccs match: every format is refused (with a log line).
#[cfg(target_endian = "big")]
const TABLE: &[PixelFormat] = &[];

/// The format for a pixman code, `None` for codes the shim cannot show.
pub fn from_pixman(pixman: u32) -> Option<PixelFormat> {
    TABLE.iter().copied().find(|f| f.pixman == pixman)
}

/// A pixman code for log lines: its name when known.
pub fn pixman_name(pixman: u32) -> String {
    match from_pixman(pixman) {
        Some(f) => f.name.to_owned(),
        None => format!("pixman format 0x{pixman:08x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x8r8g8b8_is_xr24() {
        let f = from_pixman(PIXMAN_X8R8G8B8).unwrap();
        assert_eq!(f.fourcc, fourcc_code(b"XR24"));
        assert_eq!(f.bytes_per_pixel, 4);
        assert_eq!(pixman_name(PIXMAN_X8R8G8B8), "x8r8g8b8");
    }

    #[test]
    fn every_fourcc_is_known_to_the_element() {
        for f in TABLE {
            let known = gstspicedmabuf::fourcc::lookup(f.fourcc)
                .unwrap_or_else(|| panic!("{} has no element format", f.name));
            assert_eq!(known.planes.len(), 1);
            assert_eq!(
                known.planes[0].bytes_per_pixel, f.bytes_per_pixel,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn unknown_codes_are_refused() {
        assert_eq!(from_pixman(0x0801_0000), None);
        assert_eq!(pixman_name(0x0801_0000), "pixman format 0x08010000");
    }
}
