//! Checks of decoded [`Pattern::Bars`](crate::Pattern::Bars) pictures.
//!
//! Both checks average boxes of pixels rather than reading single pixels, so they accept
//! pictures that went through H.264 (4:2:0 chroma, BT.601 limited-range conversion and
//! quantisation noise) when given a tolerance of about 48.

use crate::image::Image;
use crate::pattern::{BARS, bar_span};

fn validate(image: &Image) -> Result<(), String> {
    let (w, h) = (image.width, image.height);
    if image.rgb.len() as u64 != u64::from(w) * u64::from(h) * 3 {
        return Err(format!(
            "{w}x{h} image with {} bytes of RGB",
            image.rgb.len()
        ));
    }
    if w < 16 || h < 20 {
        return Err(format!("{w}x{h} is too small to check (at least 16x20)"));
    }
    Ok(())
}

/// Average colour of columns `[x0, x1)` and rows `[y0, y1)` (both non-empty).
fn average(image: &Image, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> [u8; 3] {
    let mut sum = [0u64; 3];
    let w = image.width as usize;
    for y in y0 as usize..y1 as usize {
        let row = &image.rgb[(y * w + x0 as usize) * 3..(y * w + x1 as usize) * 3];
        for px in row.chunks_exact(3) {
            for (s, &v) in sum.iter_mut().zip(px) {
                *s += u64::from(v);
            }
        }
    }
    let n = u64::from(x1 - x0) * u64::from(y1 - y0);
    sum.map(|s| ((s + n / 2) / n) as u8)
}

/// Largest per-channel difference.
fn deviation(a: [u8; 3], b: [u8; 3]) -> u8 {
    (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0)
}

/// `[start, end)` cut into `max((end - start) / cell, 1)` nearly equal parts.
fn split(start: u32, end: u32, cell: u32) -> impl Iterator<Item = (u32, u32)> {
    let len = end - start;
    let n = (len / cell).max(1);
    (0..n).map(move |k| (start + k * len / n, start + (k + 1) * len / n))
}

fn rgb(c: [u8; 3]) -> String {
    format!("({}, {}, {})", c[0], c[1], c[2])
}

/// Checks the eight colour bars of [`Pattern::Bars`](crate::Pattern::Bars) (or
/// [`Pattern::Counter`](crate::Pattern::Counter)).
///
/// For each bar, the pixels of the central 50 % of its width, from 10 % to 80 % of the
/// picture height, are averaged; every channel of the average must be within `tolerance`
/// of the bar's colour ([`BARS`]). This catches wrong channel order, wrong colour
/// conversion and mirrored pictures, not upside-down ones: see [`check_upright_bars`].
/// The error names every bar that failed, with the expected and the measured colour.
pub fn check_bars(image: &Image, tolerance: u8) -> Result<(), String> {
    validate(image)?;
    let (w, h) = (image.width, image.height);
    let rows = (h / 10, (h * 8 / 10).max(h / 10 + 1));
    let failures: Vec<String> = BARS
        .iter()
        .enumerate()
        .filter_map(|(i, bar)| {
            let (x0, x1) = bar_span(i, w);
            let quarter = (x1 - x0) / 4;
            let measured = average(image, (x0 + quarter, x1 - quarter), rows);
            (deviation(measured, bar.rgb) > tolerance).then(|| {
                format!(
                    "bar {i} ({}): expected {}, measured {}",
                    bar.name,
                    rgb(bar.rgb),
                    rgb(measured)
                )
            })
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{w}x{h} picture does not show the colour bars (tolerance {tolerance}): {}",
            failures.join("; ")
        ))
    }
}

/// Checks that a [`Pattern::Bars`](crate::Pattern::Bars) picture is the right way up, using
/// the grey [`moving_square`](crate::moving_square), which is only ever in the bottom 10 %.
///
/// The top and the bottom 10 % bands are cut, bar by bar, into cells about a quarter of the
/// square's side (`height / 80`), so that wherever the square is, at least one cell lies
/// entirely inside it. Each cell is averaged and compared with its bar's colour:
/// - bottom band: at least one cell must differ by more than `tolerance` in some channel
///   (the grey square differs from every bar by at least 127);
/// - top band: no cell may differ by more than `tolerance`; the cells along bar edges are
///   skipped there, so that colour bleeding across edges is not mistaken for a square.
///
/// An upside-down picture has the square at the top and fails both. Use it together with
/// [`check_bars`]; `tolerance` must stay well below 127 (about 48 for H.264).
pub fn check_upright_bars(image: &Image, tolerance: u8) -> Result<(), String> {
    validate(image)?;
    let (w, h) = (image.width, image.height);
    let band = h / 10;
    let cell = ((h / 20) / 4).max(1);

    // Top band: pure bars.
    for (i, bar) in BARS.iter().enumerate() {
        let (x0, x1) = bar_span(i, w);
        let columns: Vec<_> = split(x0, x1, cell).collect();
        let inner = if columns.len() >= 3 {
            &columns[1..columns.len() - 1]
        } else {
            &columns[..]
        };
        for &xs in inner {
            for ys in split(0, band, cell) {
                let measured = average(image, xs, ys);
                if deviation(measured, bar.rgb) > tolerance {
                    return Err(format!(
                        "{w}x{h} picture: the top 10 % should be pure bars, but columns {}..{}, \
                         rows {}..{} in bar {i} ({}) measure {}, expected {} (tolerance \
                         {tolerance}); upside down?",
                        xs.0,
                        xs.1,
                        ys.0,
                        ys.1,
                        bar.name,
                        rgb(measured),
                        rgb(bar.rgb)
                    ));
                }
            }
        }
    }

    // Bottom band: somewhere the square.
    let mut largest = 0;
    for (i, bar) in BARS.iter().enumerate() {
        let (x0, x1) = bar_span(i, w);
        for xs in split(x0, x1, cell) {
            for ys in split(h - band, h, cell) {
                let d = deviation(average(image, xs, ys), bar.rgb);
                if d > tolerance {
                    return Ok(());
                }
                largest = largest.max(d);
            }
        }
    }
    Err(format!(
        "{w}x{h} picture: no moving square in the bottom 10 % (largest difference from the \
         bars {largest}, tolerance {tolerance}); upside down, or not the bars pattern?"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{Pattern, moving_square, render_xrgb};

    fn render(pattern: Pattern, frame: u64, w: u32, h: u32) -> Image {
        let mut data = vec![0u8; (w * h * 4) as usize];
        render_xrgb(pattern, frame, &mut data, w, h, w * 4).unwrap();
        Image::from_bgrx(&data, w, h, w * 4).unwrap()
    }

    fn flipped(image: &Image) -> Image {
        let row = image.width as usize * 3;
        let rgb = image.rgb.chunks(row).rev().flatten().copied().collect();
        Image::new(image.width, image.height, rgb).unwrap()
    }

    fn mirrored(image: &Image) -> Image {
        let row = image.width as usize * 3;
        let rgb = image
            .rgb
            .chunks(row)
            .flat_map(|r| r.chunks(3).rev().flatten().copied())
            .collect();
        Image::new(image.width, image.height, rgb).unwrap()
    }

    /// Something like what H.264 does to the picture: noise, blur, a colour shift.
    fn degrade(image: &Image, shift: i32) -> Image {
        let (w, h) = (image.width as usize, image.height as usize);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rgb = image.rgb.clone();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let at = |xx: usize, yy: usize| {
                        i32::from(image.rgb[(yy.min(h - 1) * w + xx.min(w - 1)) * 3 + c])
                    };
                    let blurred = (at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1)) / 4;
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let noise = (seed % 41) as i32 - 20;
                    rgb[(y * w + x) * 3 + c] = (blurred + noise + shift).clamp(0, 255) as u8;
                }
            }
        }
        Image::new(image.width, image.height, rgb).unwrap()
    }

    #[test]
    fn raw_bars_pass() {
        for (w, h) in [(1920, 1080), (640, 480), (1366, 768), (100, 40)] {
            for frame in [0, 1, 57, 1000, 123_456] {
                let image = render(Pattern::Bars, frame, w, h);
                check_bars(&image, 0).unwrap();
                check_upright_bars(&image, 0).unwrap();
                check_upright_bars(&image, 48).unwrap();
            }
            check_bars(&render(Pattern::Counter, 99, w, h), 0).unwrap();
        }
    }

    #[test]
    fn square_found_at_every_position() {
        let (w, h) = (320, 240);
        let positions = u64::from(w - moving_square(w, h, 0).width) + 1;
        for frame in 0..positions {
            let sq = moving_square(w, h, frame);
            let on_edge = (1..8).any(|i| (sq.x..sq.x + sq.width).contains(&bar_span(i, w).0));
            if !on_edge && frame % 4 != 0 {
                continue;
            }
            let image = degrade(&render(Pattern::Bars, frame, w, h), 0);
            check_upright_bars(&image, 48).unwrap_or_else(|e| panic!("{w}x{h} frame {frame}: {e}"));
        }
        // Full HD, with the square straddling each bar edge (raw: degrading is slow in debug
        // builds; the loop above covers degraded edges).
        let (w, h) = (1920, 1080);
        let step = u64::from(w / 120);
        for i in 1..8 {
            let edge = u64::from(bar_span(i, w).0);
            for x in [edge - 27, edge - 20, edge - 34] {
                let frame = x / step;
                let sq = moving_square(w, h, frame);
                assert!(
                    sq.x < edge as u32 && sq.x + sq.width > edge as u32,
                    "{sq:?}"
                );
                let image = render(Pattern::Bars, frame, w, h);
                check_upright_bars(&image, 48)
                    .unwrap_or_else(|e| panic!("{w}x{h} frame {frame}: {e}"));
            }
        }
    }

    #[test]
    fn degraded_bars_pass() {
        for shift in [-20, 0, 20] {
            let image = degrade(&render(Pattern::Bars, 33, 1280, 720), shift);
            check_bars(&image, 48).unwrap();
            check_upright_bars(&image, 48).unwrap();
        }
    }

    #[test]
    fn upside_down_fails() {
        for frame in [0, 40, 77] {
            let image = flipped(&render(Pattern::Bars, frame, 1280, 720));
            // The bars alone cannot tell.
            check_bars(&image, 48).unwrap();
            let err = check_upright_bars(&image, 48).unwrap_err();
            assert!(err.contains("upside down"), "{err}");
            assert!(check_upright_bars(&degrade(&image, 0), 48).is_err());
        }
    }

    #[test]
    fn wrong_pictures_fail() {
        let good = render(Pattern::Bars, 3, 640, 480);
        let err = check_bars(&mirrored(&good), 48).unwrap_err();
        assert!(
            err.contains("bar 0 (white): expected (255, 255, 255), measured (0, 0, 0)"),
            "{err}"
        );

        // Red and blue swapped, as with a BGRx/RGBx mix-up.
        let swapped = Image::new(
            good.width,
            good.height,
            good.rgb
                .chunks(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect(),
        )
        .unwrap();
        let err = check_bars(&swapped, 48).unwrap_err();
        assert!(
            err.contains("bar 1 (yellow)") && err.contains("bar 2 (cyan)"),
            "{err}"
        );
        assert!(!err.contains("white") && !err.contains("green"), "{err}");

        let grey = render(Pattern::Solid(0x808080), 0, 640, 480);
        assert!(check_bars(&grey, 48).is_err());
        assert!(check_upright_bars(&grey, 48).is_err());
        assert!(check_upright_bars(&render(Pattern::Counter, 0, 640, 480), 48).is_err());

        assert!(
            check_bars(
                &Image {
                    width: 8,
                    height: 8,
                    rgb: vec![0; 192]
                },
                48
            )
            .is_err()
        );
        assert!(
            check_bars(
                &Image {
                    width: 64,
                    height: 64,
                    rgb: vec![0; 5]
                },
                48
            )
            .is_err()
        );
    }
}
