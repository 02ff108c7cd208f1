//! The frame counter stamp of [`Pattern::Counter`](crate::Pattern::Counter) and its reader.
//!
//! Layout (it depends only on the picture's width and height): a mid-grey band across the
//! top, `2 * cell` rows high, holding one row of 36 square cells of `cell` pixels, centred
//! horizontally and starting `cell / 2` rows from the top, where
//! `cell = min(width / 40, height / 20)` (48 px at 1920x1080, 16 px at 640x480). The cells
//! are: a white and a black start guard, the 32 bits of the counter (most significant
//! first, white = 1, black = 0), then a black and a white end guard. The band is never
//! taller than the top 10 % of the picture.
//!
//! Blocks of 16 px or more survive H.264 4:2:0 compression: the reader only averages the
//! luma of the central quarter of each cell and compares it with the guards' levels.

/// Number of cells: two guards on each side of 32 data bits.
const CELLS: u32 = 36;
/// Largest counter cell, so the stamp stays small on very large pictures.
const MAX_CELL: u32 = 64;
/// Smallest accepted white-minus-black luma difference of the guards.
const MIN_CONTRAST: u32 = 64;

/// Geometry of the counter stamp for one picture size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterLayout {
    /// Side of one cell, in pixels.
    pub cell: u32,
    /// Left edge of the first cell.
    pub x0: u32,
    /// Top edge of the cells.
    pub y0: u32,
}

impl CounterLayout {
    /// The layout for a `width` x `height` picture, or `None` if it is too small to hold one.
    pub fn new(width: u32, height: u32) -> Option<Self> {
        let cell = (width / 40).min(height / 20).min(MAX_CELL);
        (cell > 0).then(|| Self {
            cell,
            x0: (width - CELLS * cell) / 2,
            y0: cell / 2,
        })
    }

    /// Rows `[0, band_height)` are the counter band.
    pub fn band_height(&self) -> u32 {
        2 * self.cell
    }

    /// The colour of each cell for `value`: `true` = white.
    pub fn cells(value: u32) -> [bool; CELLS as usize] {
        let mut cells = [false; CELLS as usize];
        cells[0] = true;
        cells[CELLS as usize - 1] = true;
        for (bit, cell) in cells[2..34].iter_mut().enumerate() {
            *cell = value & (1 << (31 - bit)) != 0;
        }
        cells
    }
}

/// The value [`Pattern::Counter`](crate::Pattern::Counter) stamps for a frame number: its
/// low 32 bits.
pub fn counter_value(frame_no: u64) -> u32 {
    frame_no as u32
}

/// Byte order of the colour channels in a packed pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelOrder {
    /// R, G, B (then any padding byte): PPM, `RGBx`.
    Rgb,
    /// B, G, R (then any padding byte): XRGB8888 / `BGRx` in memory.
    Bgr,
}

/// Reads the counter stamped by [`Pattern::Counter`](crate::Pattern::Counter) from a packed
/// RGB picture, e.g. a decoded and lossy one.
///
/// `data` starts with the first pixel; rows are `stride` bytes apart and pixels
/// `bytes_per_pixel` (3 or more) bytes apart, with the channels in `order`. The layout is
/// computed from `width` and `height`, so the picture must have the size it was rendered
/// at (scaling is not supported). Returns `None` if the guards are not found or if any
/// cell is neither clearly black nor clearly white.
pub fn read_counter(
    data: &[u8],
    width: u32,
    height: u32,
    stride: u32,
    bytes_per_pixel: usize,
    order: ChannelOrder,
) -> Option<u32> {
    if bytes_per_pixel < 3 || width == 0 || height == 0 {
        return None;
    }
    let (w, stride) = (width as usize, stride as usize);
    let needed = stride
        .checked_mul(height as usize - 1)?
        .checked_add(w.checked_mul(bytes_per_pixel)?)?;
    if stride < w * bytes_per_pixel || data.len() < needed {
        return None;
    }
    let layout = CounterLayout::new(width, height)?;
    let (r, b) = match order {
        ChannelOrder::Rgb => (0, 2),
        ChannelOrder::Bgr => (2, 0),
    };
    // Average luma (BT.601 weights, full range) of the central quarter of a cell.
    let inner = (layout.cell / 2).max(1) as usize;
    let margin = (layout.cell as usize - inner) / 2;
    let cell_luma = |k: u32| -> u32 {
        let x0 = (layout.x0 + k * layout.cell) as usize + margin;
        let y0 = layout.y0 as usize + margin;
        let mut sum = 0u64;
        for y in y0..y0 + inner {
            let row = &data[y * stride + x0 * bytes_per_pixel..][..inner * bytes_per_pixel];
            for px in row.chunks_exact(bytes_per_pixel) {
                sum += 77 * u64::from(px[r]) + 150 * u64::from(px[1]) + 29 * u64::from(px[b]);
            }
        }
        (sum / (256 * (inner * inner) as u64)) as u32
    };
    let luma: Vec<u32> = (0..CELLS).map(cell_luma).collect();
    let white = luma[0].min(luma[CELLS as usize - 1]);
    let black = luma[1].max(luma[CELLS as usize - 2]);
    if white < black + MIN_CONTRAST {
        return None;
    }
    let mid = (white + black) / 2;
    let doubt = (white - black) / 4;
    luma[2..34].iter().try_fold(0u32, |value, &l| {
        if l >= mid + doubt {
            Some(value << 1 | 1)
        } else if l + doubt <= mid {
            Some(value << 1)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{Pattern, render_xrgb};

    const VALUES: [u32; 6] = [0, 1, 0xdead_beef, u32::MAX, 0x8000_0001, 0x5555_aaaa];

    fn rendered(value: u32, w: u32, h: u32) -> Vec<u8> {
        let mut data = vec![0u8; (w * h * 4) as usize];
        render_xrgb(Pattern::Counter, u64::from(value), &mut data, w, h, w * 4).unwrap();
        data
    }

    /// Deterministic xorshift noise in [-amp, amp].
    fn add_noise(data: &mut [u8], amp: i32, mut seed: u64) {
        for byte in data {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % (2 * amp as u64 + 1)) as i32 - amp;
            *byte = (i32::from(*byte) + n).clamp(0, 255) as u8;
        }
    }

    /// 2x2 box blur of a tightly packed 4-byte-per-pixel picture.
    fn blur(data: &[u8], w: u32, h: u32) -> Vec<u8> {
        let (w, h) = (w as usize, h as usize);
        let mut out = data.to_vec();
        for y in 0..h - 1 {
            for x in 0..w - 1 {
                for c in 0..4 {
                    let at = |xx: usize, yy: usize| u32::from(data[(yy * w + xx) * 4 + c]);
                    let sum = at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1);
                    out[(y * w + x) * 4 + c] = ((sum + 2) / 4) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn layout_fits_top_band() {
        for (w, h) in [
            (1920, 1080),
            (1280, 720),
            (640, 480),
            (1024, 768),
            (3840, 2160),
            (800, 100),
        ] {
            let l = CounterLayout::new(w, h).unwrap();
            assert!(l.band_height() <= h / 10, "{w}x{h}");
            assert!(l.x0 + CELLS * l.cell <= w, "{w}x{h}");
            assert!(l.y0 + l.cell <= l.band_height());
        }
        assert_eq!(CounterLayout::new(1920, 1080).unwrap().cell, 48);
        assert_eq!(CounterLayout::new(640, 480).unwrap().cell, 16);
        assert_eq!(CounterLayout::new(39, 1000), None);
    }

    #[test]
    fn round_trip_raw() {
        for (w, h) in [(1920, 1080), (640, 480), (1366, 768)] {
            for v in VALUES {
                let data = rendered(v, w, h);
                assert_eq!(
                    read_counter(&data, w, h, w * 4, 4, ChannelOrder::Bgr),
                    Some(v)
                );
            }
        }
    }

    #[test]
    fn frame_number_is_truncated() {
        let (w, h) = (640, 480);
        let mut data = vec![0u8; (w * h * 4) as usize];
        let frame = (7u64 << 32) | 42;
        render_xrgb(Pattern::Counter, frame, &mut data, w, h, w * 4).unwrap();
        assert_eq!(
            read_counter(&data, w, h, w * 4, 4, ChannelOrder::Bgr),
            Some(counter_value(frame))
        );
        assert_eq!(counter_value(frame), 42);
    }

    #[test]
    fn round_trip_noise_and_blur() {
        for (w, h) in [(1280, 720), (640, 480)] {
            for (i, v) in VALUES.into_iter().enumerate() {
                let mut noisy = rendered(v, w, h);
                add_noise(&mut noisy, 25, 0x1234_5678 + i as u64);
                assert_eq!(
                    read_counter(&noisy, w, h, w * 4, 4, ChannelOrder::Bgr),
                    Some(v)
                );

                let blurred = blur(&rendered(v, w, h), w, h);
                assert_eq!(
                    read_counter(&blurred, w, h, w * 4, 4, ChannelOrder::Bgr),
                    Some(v)
                );

                let both = blur(&noisy, w, h);
                assert_eq!(
                    read_counter(&both, w, h, w * 4, 4, ChannelOrder::Bgr),
                    Some(v)
                );
            }
        }
    }

    #[test]
    fn rgb_order_and_padded_stride() {
        let (w, h) = (640, 480);
        let bgrx = rendered(0xdead_beef, w, h);
        let stride = w * 3 + 7;
        let mut rgb = vec![0u8; (stride * h) as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let s = &bgrx[(y * w as usize + x) * 4..][..3];
                rgb[y * stride as usize + x * 3..][..3].copy_from_slice(&[s[2], s[1], s[0]]);
            }
        }
        assert_eq!(
            read_counter(&rgb, w, h, stride, 3, ChannelOrder::Rgb),
            Some(0xdead_beef)
        );
        // Wrong sizes are rejected rather than read out of bounds.
        assert_eq!(
            read_counter(&rgb[..100], w, h, stride, 3, ChannelOrder::Rgb),
            None
        );
        assert_eq!(read_counter(&rgb, w, h, w, 3, ChannelOrder::Rgb), None);
    }

    #[test]
    fn no_counter_in_other_patterns() {
        let (w, h) = (640, 480);
        for p in [
            Pattern::Bars,
            Pattern::Solid(0x808080),
            Pattern::Solid(0xffffff),
        ] {
            let mut data = vec![0u8; (w * h * 4) as usize];
            render_xrgb(p, 5, &mut data, w, h, w * 4).unwrap();
            assert_eq!(
                read_counter(&data, w, h, w * 4, 4, ChannelOrder::Bgr),
                None,
                "{p}"
            );
        }
    }
}
