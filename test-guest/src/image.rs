//! Decoded pictures for checks: a packed RGB image and a binary PPM reader.

use std::fmt;
use std::path::Path;

use crate::buffer::{Format, GuestBuffer};
use crate::counter::{ChannelOrder, read_counter};
use crate::error::{Error, Result};

/// An RGB picture, 3 bytes per pixel, rows packed without padding
/// (`rgb.len() == width * height * 3`).
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixels as R, G, B, row after row.
    pub rgb: Vec<u8>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("rgb.len()", &self.rgb.len())
            .finish()
    }
}

impl Image {
    /// An image from packed RGB bytes; fails unless `rgb.len() == width * height * 3`.
    pub fn new(width: u32, height: u32, rgb: Vec<u8>) -> Result<Self> {
        if rgb.len() as u64 != u64::from(width) * u64::from(height) * 3 {
            return Err(Error::Geometry(format!(
                "{} bytes for a {width}x{height} RGB image",
                rgb.len()
            )));
        }
        Ok(Self { width, height, rgb })
    }

    /// Converts 4-byte-per-pixel B, G, R, X (or B, G, R, A; the fourth byte is ignored)
    /// pixels, rows `stride` bytes apart starting at `data[0]`: GStreamer `BGRx`/`BGRA`,
    /// DRM XRGB8888/ARGB8888.
    pub fn from_bgrx(data: &[u8], width: u32, height: u32, stride: u32) -> Result<Self> {
        let (w, h, stride) = (width as usize, height as usize, stride as usize);
        if stride < w * 4 {
            return Err(Error::Geometry(format!(
                "stride {stride} < width {width} * 4"
            )));
        }
        if h > 0 && data.len() < stride * (h - 1) + w * 4 {
            return Err(Error::Geometry(format!(
                "{} bytes cannot hold {width}x{height} with stride {stride}",
                data.len()
            )));
        }
        let mut rgb = Vec::with_capacity(w * h * 3);
        for row in data.chunks(stride).take(h) {
            for px in row[..w * 4].chunks_exact(4) {
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        }
        Self::new(width, height, rgb)
    }

    /// Copies the picture out of an XRGB8888 [`GuestBuffer`].
    pub fn from_buffer(buf: &GuestBuffer) -> Result<Self> {
        if buf.format() != Format::Xrgb8888 {
            return Err(Error::Unsupported("Image::from_buffer needs XRGB8888"));
        }
        let data = &buf.pixels()[buf.offset() as usize..];
        Self::from_bgrx(data, buf.width(), buf.height(), buf.stride())
    }

    /// The pixel at column `x`, row `y`, as R, G, B. Panics if out of bounds.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside the image"
        );
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The counter stamped by [`Pattern::Counter`](crate::Pattern::Counter); see
    /// [`read_counter`].
    pub fn read_counter(&self) -> Option<u32> {
        read_counter(
            &self.rgb,
            self.width,
            self.height,
            self.width.checked_mul(3)?,
            3,
            ChannelOrder::Rgb,
        )
    }

    /// The image as a binary PPM file (`P6`, maxval 255).
    pub fn to_ppm(&self) -> Vec<u8> {
        let mut out = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.rgb);
        out
    }
}

/// Reads a binary PPM file (`P6`, maxval 255), e.g. a spicy-screenshot.
pub fn read_ppm(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_ppm(&bytes)
}

/// Parses a binary PPM (`P6`, maxval 255). Comments (`#` to end of line) and any amount of
/// whitespace are accepted between header fields; exactly one whitespace byte separates
/// the maxval from the pixels. Bytes after the pixels are ignored.
pub fn parse_ppm(bytes: &[u8]) -> Result<Image> {
    let bad = |msg: &str| Error::Ppm(msg.to_owned());
    if !bytes.starts_with(b"P6") {
        return Err(bad("missing P6 magic"));
    }
    let mut pos = 2;
    let mut fields = [0u32; 3];
    for (field, name) in fields.iter_mut().zip(["width", "height", "maxval"]) {
        // Whitespace and comments, at least one separator.
        let start = pos;
        loop {
            match bytes.get(pos) {
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                Some(b'#') => {
                    while bytes.get(pos).is_some_and(|&b| b != b'\n' && b != b'\r') {
                        pos += 1;
                    }
                }
                _ => break,
            }
        }
        if pos == start {
            return Err(Error::Ppm(format!("no separator before {name}")));
        }
        let digits = bytes[pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(Error::Ppm(format!("missing {name}")));
        }
        *field = std::str::from_utf8(&bytes[pos..pos + digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Ppm(format!("{name} out of range")))?;
        pos += digits;
    }
    let [width, height, maxval] = fields;
    if maxval != 255 {
        return Err(Error::Ppm(format!(
            "maxval {maxval}, only 255 is supported"
        )));
    }
    if width == 0 || height == 0 {
        return Err(Error::Ppm(format!("empty image {width}x{height}")));
    }
    if !bytes.get(pos).is_some_and(u8::is_ascii_whitespace) {
        return Err(bad("no whitespace after maxval"));
    }
    pos += 1;
    let len = usize::try_from(u64::from(width) * u64::from(height) * 3)
        .map_err(|_| bad("image too large"))?;
    let pixels = bytes
        .get(pos..)
        .and_then(|rest| rest.get(..len))
        .ok_or_else(|| {
            Error::Ppm(format!(
                "{width}x{height} needs {len} bytes of pixels, file has {}",
                bytes.len().saturating_sub(pos)
            ))
        })?;
    Image::new(width, height, pixels.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: u32, h: u32) -> Image {
        let rgb = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
        Image::new(w, h, rgb).unwrap()
    }

    #[test]
    fn ppm_file_round_trip() {
        let image = sample(37, 11);
        let path =
            std::env::temp_dir().join(format!("test-guest-{}-round-trip.ppm", std::process::id()));
        std::fs::write(&path, image.to_ppm()).unwrap();
        let read = read_ppm(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read.unwrap(), image);

        let missing = read_ppm(&path);
        assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
    }

    #[test]
    fn ppm_comments_and_whitespace() {
        let image = sample(3, 2);
        let mut file = b"P6 # made by hand\n# another comment\n  3\t2\r\n#c\n255\n".to_vec();
        file.extend_from_slice(&image.rgb);
        file.extend_from_slice(b"trailing");
        assert_eq!(parse_ppm(&file).unwrap(), image);
        // Pixel data may start with bytes that look like whitespace or '#'.
        let image = Image::new(1, 1, b"#\n ".to_vec()).unwrap();
        assert_eq!(parse_ppm(&image.to_ppm()).unwrap(), image);
    }

    #[test]
    fn ppm_rejects_bad_input() {
        for bad in [
            &b""[..],
            b"P3\n1 1\n255\n000",
            b"P6\n1 1\n65535\n000000",
            b"P6\n1 1\n255\n00",
            b"P6\n1 1\n255",
            b"P61 1\n255\n000",
            b"P6\n0 1\n255\n",
            b"P6\n1 x\n255\n000",
            b"P6\n99999999999 1\n255\n000",
        ] {
            assert!(
                matches!(parse_ppm(bad), Err(Error::Ppm(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn from_bgrx_and_pixel() {
        let data = [
            1, 2, 3, 9, 4, 5, 6, 9, 0xee, 0xee, 7, 8, 9, 9, 10, 11, 12, 9,
        ];
        let image = Image::from_bgrx(&data, 2, 2, 10).unwrap();
        assert_eq!(image.rgb, [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
        assert_eq!(image.pixel(1, 1), [12, 11, 10]);
        assert!(Image::from_bgrx(&data[..17], 2, 2, 10).is_err());
        assert!(Image::from_bgrx(&data, 3, 1, 10).is_err());
        assert!(Image::new(2, 2, vec![0; 11]).is_err());
    }
}
