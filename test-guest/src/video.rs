//! The `video` pattern: what a camera flying over a landscape would film.
//!
//! The landscape is a 2048x2048 tileable texture made once per process (a few hundred ms): a
//! fractal height map (cubic B-spline subdivision with noise added at every octave, so it
//! has detail at every scale), coloured as water, beach, grass, forest, rock and snow, with
//! relief shading from a light in the north-west and a little grain. Each frame a camera
//! pans over it at a few texels per frame, with a slow wobble, and zooms in and out by
//! ±20 %. In front move seven objects with sharp, anti-aliased edges: shaded balls bouncing
//! round the picture and boxes crossing it.
//!
//! The result changes nearly every pixel every frame, like real footage, and is not noise:
//! neighbouring pixels are strongly correlated. It is drawn with integer arithmetic: the
//! landscape, averaged over 2x2 texels, is sampled bilinearly (16.16 fixed point) at every
//! other pixel of every other row, the pixels in between are interpolated, then the objects
//! are drawn at full resolution.

use std::f64::consts::TAU;
use std::sync::{Arc, Mutex, OnceLock};

use crate::desktop::mix;

/// Side of the landscape as made (a power of two).
const SIZE: usize = 2048;
/// Side of the texture sampled: the landscape averaged over 2x2 texels, as the picture is
/// sampled at every other pixel (coordinates wrap by masking).
const TEX: usize = SIZE / 2;
const TEX_MASK: i64 = TEX as i64 - 1;
/// Texels per frame the camera pans, in 16.16 fixed point (2.37 and 0.83).
const PAN_X: i64 = 155_320;
const PAN_Y: i64 = 54_395;
/// Frames per zoom cycle and per wobble cycle.
const ZOOM_PERIOD: u64 = 300;
const WOBBLE_PERIOD: u64 = 217;

/// The landscape averaged over 2x2 texels (`TEX` x `TEX`), packed `0x00RRGGBB`.
fn landscape() -> &'static [u32] {
    static TEXTURE: OnceLock<Vec<u32>> = OnceLock::new();
    TEXTURE.get_or_init(|| {
        let full = make_landscape();
        let mut half = vec![0u32; TEX * TEX];
        for (y, row) in half.chunks_exact_mut(TEX).enumerate() {
            let (a, b) = (
                &full[2 * y * SIZE..][..SIZE],
                &full[(2 * y + 1) * SIZE..][..SIZE],
            );
            for (x, px) in row.iter_mut().enumerate() {
                let top = average(a[2 * x], a[2 * x + 1]);
                *px = average(top, average(b[2 * x], b[2 * x + 1]));
            }
        }
        half
    })
}

/// A tileable fractal height map of `SIZE` x `SIZE`: start from an 8x8 grid of random
/// heights; at each octave, subdivide (cubic B-spline, wrapping) and add noise of
/// `persistence` times the previous octave's amplitude.
fn height_map(seed: u64, persistence: f64) -> Vec<i32> {
    let mut n = 8usize;
    let mut amp = 1_000_000f64;
    let noise = |level: usize, i: usize, amp: f64| {
        let h = mix(seed ^ (level as u64) << 48 ^ (i as u64));
        ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
    };
    let mut grid: Vec<i32> = (0..n * n).map(|i| noise(0, i, amp) as i32).collect();
    let mut level = 1;
    while n < SIZE {
        let m = 2 * n;
        // Rows first, then columns: even samples (a + 6b + c) / 8, odd ones (b + c) / 2.
        let mut wide = vec![0i32; m * n];
        for y in 0..n {
            let row = &grid[y * n..][..n];
            for x in 0..n {
                let (a, b, c) = (row[(x + n - 1) % n], row[x], row[(x + 1) % n]);
                wide[y * m + 2 * x] = (a + 6 * b + c) / 8;
                wide[y * m + 2 * x + 1] = (b + c) / 2;
            }
        }
        amp *= persistence;
        let mut next = vec![0i32; m * m];
        for y in 0..n {
            let (up, mid, down) = ((y + n - 1) % n, y, (y + 1) % n);
            for x in 0..m {
                let (a, b, c) = (wide[up * m + x], wide[mid * m + x], wide[down * m + x]);
                next[2 * y * m + x] = (a + 6 * b + c) / 8;
                next[(2 * y + 1) * m + x] = (b + c) / 2;
            }
        }
        for (i, v) in next.iter_mut().enumerate() {
            *v += noise(level, i, amp) as i32;
        }
        grid = next;
        n = m;
        level += 1;
    }
    grid
}

fn lerp_rgb(a: [i32; 3], b: [i32; 3], t: i32, span: i32) -> [i32; 3] {
    let t = t.clamp(0, span);
    [0, 1, 2].map(|i| a[i] + (b[i] - a[i]) * t / span)
}

/// Colour of a height (0..1024) before shading, and whether it is water.
fn terrain(h: i32, moisture: i32) -> ([i32; 3], bool) {
    const DEEP: [i32; 3] = [16, 44, 86];
    const SHALLOW: [i32; 3] = [38, 104, 142];
    const SAND: [i32; 3] = [196, 182, 134];
    const GRASS: [i32; 3] = [92, 142, 58];
    const FOREST: [i32; 3] = [34, 84, 40];
    const ROCK: [i32; 3] = [118, 108, 98];
    const SNOW: [i32; 3] = [236, 238, 244];
    match h {
        ..400 => (lerp_rgb(DEEP, SHALLOW, h - 250, 150), true),
        400..425 => (SAND, false),
        425..660 => {
            let green = lerp_rgb(GRASS, FOREST, moisture, 1024);
            (lerp_rgb(green, FOREST, h - 425, 400), false)
        }
        660..800 => (lerp_rgb(FOREST, ROCK, h - 660, 60), false),
        _ => (lerp_rgb(ROCK, SNOW, h - 800, 60), false),
    }
}

fn make_landscape() -> Vec<u32> {
    let height = height_map(0x1a4d_5ca9e, 0.56);
    let moisture = height_map(0x0357_11fe, 0.62);
    let normalise = |v: &[i32]| {
        let (lo, hi) = v
            .iter()
            .fold((i32::MAX, i32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let span = i64::from(hi - lo).max(1);
        v.iter()
            .map(|&x| (i64::from(x - lo) * 1023 / span) as i32)
            .collect::<Vec<i32>>()
    };
    let (height, moisture) = (normalise(&height), normalise(&moisture));
    let at = |x: usize, y: usize| height[(y & (SIZE - 1)) * SIZE + (x & (SIZE - 1))];
    let mut out = vec![0u32; SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let h = at(x, y);
            let (rgb, water) = terrain(h, moisture[y * SIZE + x]);
            let grain = (mix((y * SIZE + x) as u64) % 9) as i32 - 4;
            // Relief: slope towards the light (north-west), water stays flat but ripples.
            let light = if water {
                256 + grain * 3
            } else {
                let slope = at(x + SIZE - 1, y + SIZE - 1) - at(x + 1, y + 1);
                (256 + slope * 24).clamp(110, 420) + grain * 4
            };
            let [r, g, b] = rgb.map(|c| (c * light / 256).clamp(0, 255) as u32);
            out[y * SIZE + x] = r << 16 | g << 8 | b;
        }
    }
    out
}

/// `a` blended towards `b` by `t`/256 (`t` in 0..=256), per channel of packed `0x00RRGGBB`.
#[inline(always)]
fn blend(a: u32, b: u32, t: u32) -> u32 {
    let s = 256 - t;
    let rb = ((a & 0xff00ff) * s + (b & 0xff00ff) * t) >> 8;
    let g = ((a & 0xff00) * s + (b & 0xff00) * t) >> 8;
    (rb & 0xff00ff) | (g & 0xff00)
}

/// An object's picture: packed `0xAARRGGBB` with coverage in the alpha byte.
struct Sprite {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
    /// Pixels per frame it moves (16.16) and where its path starts.
    speed: (i64, i64),
    phase: (i64, i64),
    /// Bounces off the picture's edges, or crosses it and comes back from the other side.
    bounces: bool,
}

/// A shaded ball of radius `r`: lit from the upper left, with a highlight.
fn ball(r: u32, rgb: [f64; 3]) -> (u32, u32, Vec<u32>) {
    let side = 2 * r + 2;
    let c = f64::from(side) / 2.0;
    let r = f64::from(r);
    let light = [-0.45f64, -0.55, 0.70];
    let norm = light.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut px = Vec::with_capacity((side * side) as usize);
    for y in 0..side {
        for x in 0..side {
            let (dx, dy) = (f64::from(x) + 0.5 - c, f64::from(y) + 0.5 - c);
            let d = (dx * dx + dy * dy).sqrt();
            let cover = (r - d + 0.5).clamp(0.0, 1.0);
            let (nx, ny) = (dx / r, dy / r);
            let nz = (1.0 - nx * nx - ny * ny).max(0.0).sqrt();
            let lambert = ((nx * light[0] + ny * light[1] + nz * light[2]) / norm).max(0.0);
            let spec = lambert.powi(24) * 0.8;
            let shade = 0.25 + 0.85 * lambert;
            let ch = |k: usize| ((rgb[k] * shade + 255.0 * spec).min(255.0)) as u32;
            let a = (cover * 255.0).round() as u32;
            px.push(a << 24 | ch(0) << 16 | ch(1) << 8 | ch(2));
        }
    }
    (side, side, px)
}

/// A box seen from above, like a vehicle: body, darker roof, lighter windows, outline.
fn vehicle(w: u32, h: u32, body: u32) -> (u32, u32, Vec<u32>) {
    let dark = blend(body, 0, 90);
    let glass = 0x9fc4d8;
    let mut px = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let edge = x < 2 || y < 2 || x + 2 >= w || y + 2 >= h;
            let (fx, fy) = (x * 16 / w.max(1), y * 16 / h.max(1));
            let rgb = if edge {
                0x181818
            } else if (3..5).contains(&fx) || (11..13).contains(&fx) {
                if (3..13).contains(&fy) { glass } else { body }
            } else if (5..11).contains(&fx) && (3..13).contains(&fy) {
                dark
            } else {
                // A little gradient on the paint.
                blend(body, 0xffffff, fy * 3)
            };
            px.push(0xff00_0000 | rgb);
        }
    }
    (w, h, px)
}

/// The objects for one picture size.
struct Scene {
    width: u32,
    height: u32,
    sprites: Vec<Sprite>,
}

fn scene(width: u32, height: u32) -> Arc<Scene> {
    static CACHE: Mutex<Option<Arc<Scene>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = cache
        .as_ref()
        .filter(|s| (s.width, s.height) == (width, height))
    {
        return s.clone();
    }
    let s = Arc::new(make_scene(width, height));
    *cache = Some(s.clone());
    s
}

fn make_scene(width: u32, height: u32) -> Scene {
    let unit = height.min(width).max(8);
    let fx = |px_per_frame: f64| (px_per_frame * f64::from(unit) / 1080.0 * 65536.0) as i64;
    let mut sprites = Vec::new();
    for (k, (r, rgb, speed)) in [
        (0.085, [220.0, 40.0, 40.0], (5.1, 3.3)),
        (0.060, [240.0, 200.0, 30.0], (-3.7, 4.6)),
        (0.110, [60.0, 120.0, 230.0], (2.3, -2.1)),
        (0.045, [240.0, 240.0, 240.0], (-6.2, -5.4)),
    ]
    .into_iter()
    .enumerate()
    {
        let (w, h, pixels) = ball((r * f64::from(unit)) as u32, rgb);
        sprites.push(Sprite {
            width: w,
            height: h,
            pixels,
            speed: (fx(speed.0), fx(speed.1)),
            phase: (
                (i64::from(width) * (k as i64 * 3 + 1)) << 13,
                (i64::from(height) * (k as i64 + 1)) << 14,
            ),
            bounces: true,
        });
    }
    for (k, (body, speed)) in [(0xd04a1c, 7.5), (0x2c6e3f, -4.8), (0xe8e4da, 10.2)]
        .into_iter()
        .enumerate()
    {
        let (w, h, pixels) = vehicle(unit * 2 / 9, unit / 10, body);
        sprites.push(Sprite {
            width: w,
            height: h,
            pixels,
            speed: (fx(speed), 0),
            phase: (
                (i64::from(width) * (k as i64 * 5 + 2)) << 13,
                (i64::from(height) * (k as i64 * 2 + 3)) << 13,
            ),
            bounces: false,
        });
    }
    Scene {
        width,
        height,
        sprites,
    }
}

/// Where the top-left corner of `s` is in frame `frame_no` (may be partly off-picture for
/// objects that cross it).
fn sprite_position(s: &Sprite, frame_no: u64, width: u32, height: u32) -> (i64, i64) {
    let axis = |speed: i64, phase: i64, size: u32, extent: u32| {
        let travelled = (frame_no as i128 * i128::from(speed) + i128::from(phase)) >> 16;
        if s.bounces {
            let range = i128::from(extent.saturating_sub(size).max(1));
            let p = travelled.rem_euclid(2 * range);
            (if p < range { p } else { 2 * range - p }) as i64
        } else {
            let range = i128::from(extent) + i128::from(size);
            (travelled.rem_euclid(range) - i128::from(size)) as i64
        }
    };
    (
        axis(s.speed.0, s.phase.0, s.width, width),
        axis(s.speed.1, s.phase.1, s.height, height),
    )
}

/// Camera for frame `frame_no`: texture position of pixel (0, 0) and texels per pixel, all
/// in 16.16 fixed point.
fn camera(frame_no: u64, width: u32, height: u32) -> (i64, i64, i64) {
    let cycle = |period: u64| (frame_no % period) as f64 / period as f64 * TAU;
    let zoom = 1.0 + 0.2 * cycle(ZOOM_PERIOD).sin();
    // One texel per pixel at 1080 rows; smaller pictures see more of the landscape, but at
    // most 1.5 texels per pixel, so that bilinear sampling does not alias.
    let base = (1080.0 / f64::from(height.max(1))).min(1.5);
    let step = (base * zoom * 65536.0) as i64;
    let wobble = (40.0 * 65536.0 * cycle(WOBBLE_PERIOD).sin()) as i64;
    let period = (SIZE as u64) << 16;
    let pan = |speed: i64| (frame_no.wrapping_mul(speed as u64) % period) as i64;
    let cx = pan(PAN_X) + wobble;
    let cy = pan(PAN_Y) + wobble / 3;
    (
        cx - i64::from(width / 2) * step,
        cy - i64::from(height / 2) * step,
        step,
    )
}

/// Draws frame `frame_no` into XRGB8888 `data` (first byte = top-left pixel, rows `stride`
/// bytes apart). The caller checks the geometry.
///
/// The landscape is sampled bilinearly at every other pixel of every other row, and the
/// pixels in between are the averages of their neighbours (which is what sampling them
/// would give on that coarser grid): a quarter of the bilinear work. The objects are drawn
/// at full resolution.
pub(crate) fn render(frame_no: u64, data: &mut [u8], width: u32, height: u32, stride: usize) {
    thread_local! {
        static HALF: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (w, h) = (width as usize, height as usize);
    let (hw, hh) = (w / 2 + 2, h / 2 + 2);
    HALF.with_borrow_mut(|half| {
        half.resize(hw * hh, 0);
        sample_landscape(frame_no, width, height, half, hw, hh);
        upscale(half, hw, data, w, h, stride);
    });
    let scene = scene(width, height);
    for s in &scene.sprites {
        let (x, y) = sprite_position(s, frame_no, width, height);
        draw_sprite(s, x, y, data, width, height, stride);
    }
}

/// The landscape under pixels (2i, 2j) of frame `frame_no`, into `half` (`hw` x `hh`).
fn sample_landscape(
    frame_no: u64,
    width: u32,
    height: u32,
    half: &mut [u32],
    hw: usize,
    hh: usize,
) {
    let tex = landscape();
    // Pixel (2i, 2j) is at (u0 + 2i * step, v0 + 2j * step) in landscape texels, half that
    // in the averaged texture.
    let (u0, v0, step) = camera(frame_no, width, height);
    let (u0, v0) = (u0 >> 1, v0 >> 1);
    // Texel columns one row spans, plus one for the right neighbour.
    let span = (((hw as i64 - 1) * step + 0xffff) >> 16) as usize + 2;
    let mut column = vec![0u32; span];
    let (u_texel, u_frac) = (u0 >> 16, u0 & 0xffff);
    for (j, dst) in half.chunks_exact_mut(hw).take(hh).enumerate() {
        let v = v0 + j as i64 * step;
        let (r0, r1) = ((v >> 16) & TEX_MASK, ((v >> 16) + 1) & TEX_MASK);
        let fy = ((v >> 8) & 0xff) as u32;
        let (row0, row1) = (
            &tex[r0 as usize * TEX..][..TEX],
            &tex[r1 as usize * TEX..][..TEX],
        );
        for (k, c) in column.iter_mut().enumerate() {
            let t = ((u_texel + k as i64) & TEX_MASK) as usize;
            *c = blend(row0[t], row1[t], fy);
        }
        let mut u = u_frac;
        for px in dst.iter_mut() {
            let k = (u >> 16) as usize;
            *px = blend(column[k], column[k + 1], ((u >> 8) & 0xff) as u32);
            u += step;
        }
    }
}

/// Mean of two packed `0x00RRGGBB` pixels, per channel (rounded down).
#[inline(always)]
fn average(a: u32, b: u32) -> u32 {
    (a & b) + (((a ^ b) >> 1) & 0x7f7f7f)
}

/// Doubles `half` (`hw` pixels a row) into the `w` x `h` XRGB8888 picture `data`.
fn upscale(half: &[u32], hw: usize, data: &mut [u8], w: usize, h: usize, stride: usize) {
    let mut mid = vec![0u32; hw];
    for (y, dst) in data.chunks_mut(stride).take(h).enumerate() {
        let top = &half[y / 2 * hw..][..hw];
        let src = if y % 2 == 0 {
            top
        } else {
            let below = &half[(y / 2 + 1) * hw..][..hw];
            for ((m, &a), &b) in mid.iter_mut().zip(top).zip(below) {
                *m = average(a, b);
            }
            &mid[..]
        };
        let mut pairs = dst[..w * 4].chunks_exact_mut(8);
        for (pair, s) in pairs.by_ref().zip(src.windows(2)) {
            let (a, b) = (0xff00_0000 | s[0], 0xff00_0000 | average(s[0], s[1]));
            pair[..4].copy_from_slice(&a.to_le_bytes());
            pair[4..].copy_from_slice(&b.to_le_bytes());
        }
        let rest = pairs.into_remainder();
        if !rest.is_empty() {
            rest.copy_from_slice(&(0xff00_0000 | src[w / 2]).to_le_bytes());
        }
    }
}

fn draw_sprite(
    s: &Sprite,
    x: i64,
    y: i64,
    data: &mut [u8],
    width: u32,
    height: u32,
    stride: usize,
) {
    let x0 = x.max(0);
    let x1 = (x + i64::from(s.width)).min(i64::from(width));
    let y0 = y.max(0);
    let y1 = (y + i64::from(s.height)).min(i64::from(height));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    for py in y0..y1 {
        let src = &s.pixels[((py - y) as usize) * s.width as usize..][..s.width as usize];
        let row = &mut data[py as usize * stride..];
        let src = &src[(x0 - x) as usize..(x1 - x) as usize];
        let dst = &mut row[x0 as usize * 4..x1 as usize * 4];
        for (p, &spx) in dst.chunks_exact_mut(4).zip(src) {
            let a = spx >> 24;
            if a == 0 {
                continue;
            }
            let out = if a == 255 {
                spx
            } else {
                let under = u32::from_le_bytes([p[0], p[1], p[2], 0]);
                blend(under, spx & 0xff_ffff, a + (a >> 7))
            };
            p.copy_from_slice(&(0xff00_0000 | out).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64, w: u32, h: u32) -> Vec<u8> {
        let mut data = vec![0u8; (w * h * 4) as usize];
        render(n, &mut data, w, h, w as usize * 4);
        data
    }

    fn luma(p: &[u8]) -> f64 {
        0.114 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.299 * f64::from(p[2])
    }

    /// Correlation of the luma of each pixel with its right-hand neighbour.
    fn neighbour_correlation(data: &[u8], w: u32) -> f64 {
        let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for row in data.chunks_exact(w as usize * 4) {
            for pair in row.chunks_exact(4).collect::<Vec<_>>().windows(2) {
                let (a, b) = (luma(pair[0]), luma(pair[1]));
                sa += a;
                sb += b;
                saa += a * a;
                sbb += b * b;
                sab += a * b;
                n += 1.0;
            }
        }
        let cov = sab / n - sa / n * sb / n;
        cov / ((saa / n - (sa / n).powi(2)) * (sbb / n - (sb / n).powi(2))).sqrt()
    }

    #[test]
    fn most_pixels_change_but_it_is_not_noise() {
        for (w, h) in [(320, 240), (1280, 720)] {
            let mut prev = frame(10, w, h);
            for n in 11..14 {
                let cur = frame(n, w, h);
                let changed = prev
                    .chunks_exact(4)
                    .zip(cur.chunks_exact(4))
                    .filter(|(a, b)| a != b)
                    .count();
                let share = changed as f64 / f64::from(w * h);
                assert!(
                    share > 0.7,
                    "{w}x{h} frame {n}: only {:.0} % changed",
                    share * 100.0
                );
                let corr = neighbour_correlation(&cur, w);
                assert!(
                    corr > 0.8,
                    "{w}x{h} frame {n}: neighbour correlation {corr:.3}"
                );
                // Not flat either: a real spread of brightness.
                let lumas: Vec<f64> = cur.chunks_exact(4).map(luma).collect();
                let mean = lumas.iter().sum::<f64>() / lumas.len() as f64;
                let sd = (lumas.iter().map(|l| (l - mean).powi(2)).sum::<f64>()
                    / lumas.len() as f64)
                    .sqrt();
                assert!(sd > 20.0, "{w}x{h} frame {n}: luma spread {sd:.1}");
                prev = cur;
            }
        }
    }

    #[test]
    fn deterministic_and_fully_drawn() {
        let a = frame(1234, 640, 480);
        assert_eq!(a, frame(1234, 640, 480));
        assert!(a.chunks_exact(4).all(|p| p[3] == 0xff));
        assert_ne!(a, frame(1235, 640, 480));
        // A frame far along the timeline is still drawn (no overflow in the camera path).
        let _ = frame(u64::MAX, 320, 240);
    }

    #[test]
    fn objects_stay_near_the_picture() {
        let s = scene(1280, 720);
        for n in (0..5000).step_by(7) {
            for sp in &s.sprites {
                let (x, y) = sprite_position(sp, n, 1280, 720);
                assert!(x >= -i64::from(sp.width) && x <= 1280, "{x}");
                assert!(y >= -i64::from(sp.height) && y <= 720, "{y}");
            }
        }
    }
}
