//! Test patterns and their renderers.

use std::fmt;
use std::str::FromStr;

use crate::buffer::{Format, GuestBuffer};
use crate::counter::CounterLayout;
use crate::error::{Error, Result};
use crate::{desktop, video};

/// What the test guest draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Pattern {
    /// The eight 100 % colour bars ([`BARS`]) left to right across the full height, plus the
    /// [`moving_square`] in the bottom 10 %.
    #[default]
    Bars,
    /// [`Bars`](Self::Bars) with the frame counter stamped in a grey band across the top
    /// 10 %; see [`read_counter`](crate::read_counter).
    Counter,
    /// One colour everywhere, given as `0xRRGGBB`.
    Solid(u32),
    /// A desktop: wallpaper, task bar with a clock, a terminal whose log scrolls one line
    /// every 8 frames with a blinking caret, and a window dragged smoothly across the
    /// screen. Only a small part of the picture changes per frame; see [`damage`].
    Desktop,
    /// Full-screen video: a camera panning and zooming over a procedural landscape
    /// (smooth water, textured hills with relief, detail at every scale), with moving
    /// objects with sharp, anti-aliased edges in front. Every pixel changes every frame,
    /// but neighbouring pixels are strongly correlated, as in camera footage.
    Video,
}

impl FromStr for Pattern {
    type Err = Error;

    /// Parses `bars`, `counter`, `desktop`, `video` or `solid:RRGGBB` (hex, optionally
    /// `#RRGGBB`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Pattern(s.to_owned());
        for (name, pattern) in [
            ("bars", Pattern::Bars),
            ("counter", Pattern::Counter),
            ("desktop", Pattern::Desktop),
            ("video", Pattern::Video),
        ] {
            if s.eq_ignore_ascii_case(name) {
                return Ok(pattern);
            }
        }
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        if !kind.eq_ignore_ascii_case("solid") {
            return Err(bad());
        }
        let hex = arg.strip_prefix('#').unwrap_or(arg);
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(hex, 16)
            .map(Pattern::Solid)
            .map_err(|_| bad())
    }
}

impl fmt::Display for Pattern {
    /// The form [`FromStr`] accepts: `bars`, `counter`, `desktop`, `video`, `solid:rrggbb`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Bars => f.write_str("bars"),
            Pattern::Counter => f.write_str("counter"),
            Pattern::Desktop => f.write_str("desktop"),
            Pattern::Video => f.write_str("video"),
            Pattern::Solid(rgb) => write!(f, "solid:{:06x}", rgb & 0xff_ffff),
        }
    }
}

/// One colour bar of [`Pattern::Bars`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Name used in messages, e.g. `"yellow"`.
    pub name: &'static str,
    /// Colour as R, G, B.
    pub rgb: [u8; 3],
}

/// The eight bars, left to right. Bar `i` spans the columns [`bar_span`]`(i, width)`.
pub const BARS: [Bar; 8] = [
    Bar {
        name: "white",
        rgb: [255, 255, 255],
    },
    Bar {
        name: "yellow",
        rgb: [255, 255, 0],
    },
    Bar {
        name: "cyan",
        rgb: [0, 255, 255],
    },
    Bar {
        name: "green",
        rgb: [0, 255, 0],
    },
    Bar {
        name: "magenta",
        rgb: [255, 0, 255],
    },
    Bar {
        name: "red",
        rgb: [255, 0, 0],
    },
    Bar {
        name: "blue",
        rgb: [0, 0, 255],
    },
    Bar {
        name: "black",
        rgb: [0, 0, 0],
    },
];

/// Grey level (R = G = B) of the moving square and of the counter band.
pub const GREY: u8 = 128;

/// The columns `[start, end)` of bar `index` (0..8) in a picture `width` pixels wide:
/// `[index * width / 8, (index + 1) * width / 8)`.
pub fn bar_span(index: usize, width: u32) -> (u32, u32) {
    let w = u64::from(width);
    let i = index as u64;
    ((i * w / 8) as u32, ((i + 1) * w / 8) as u32)
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// The whole `width` x `height` picture.
    pub fn full(width: u32, height: u32) -> Self {
        Self {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    /// Whether the pixel at column `x`, row `y` is inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        let (x, y) = (u64::from(x), u64::from(y));
        x >= u64::from(self.x)
            && y >= u64::from(self.y)
            && x < u64::from(self.x) + u64::from(self.width)
            && y < u64::from(self.y) + u64::from(self.height)
    }

    /// The pixels in both, or `None` if they do not overlap (or either is empty).
    pub fn intersection(&self, other: &Rect) -> Option<Rect> {
        let end = |r: &Rect| {
            (
                u64::from(r.x) + u64::from(r.width),
                u64::from(r.y) + u64::from(r.height),
            )
        };
        let ((ax, ay), (bx, by)) = (end(self), end(other));
        let (x, y) = (self.x.max(other.x), self.y.max(other.y));
        let (x1, y1) = (ax.min(bx), ay.min(by));
        (x1 > u64::from(x) && y1 > u64::from(y)).then(|| Rect {
            x,
            y,
            width: (x1 - u64::from(x)) as u32,
            height: (y1 - u64::from(y)) as u32,
        })
    }

    /// The smallest rectangle holding both (saturating at `u32::MAX`).
    pub fn bounding(&self, other: &Rect) -> Rect {
        let (x, y) = (self.x.min(other.x), self.y.min(other.y));
        let x1 = (self.x.saturating_add(self.width)).max(other.x.saturating_add(other.width));
        let y1 = (self.y.saturating_add(self.height)).max(other.y.saturating_add(other.height));
        Rect {
            x,
            y,
            width: x1 - x,
            height: y1 - y,
        }
    }

    /// Number of pixels.
    pub fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// Where the grey square of [`Pattern::Bars`] is in frame `frame_no`.
///
/// Its side is `height / 20` (at least 1); it is centred vertically in the bottom `height /
/// 10` rows and moves right by `max(width / 120, 1)` pixels each frame, wrapping around.
pub fn moving_square(width: u32, height: u32, frame_no: u64) -> Rect {
    let side = (height / 20).max(1).min(width).min(height);
    let band = height / 10;
    let y = (height - band + band.saturating_sub(side) / 2).min(height - side);
    let positions = u64::from(width - side) + 1;
    let step = u64::from((width / 120).max(1));
    let x = ((frame_no % positions) * step % positions) as u32;
    Rect {
        x,
        y,
        width: side,
        height: side,
    }
}

fn xrgb(rgb: [u8; 3]) -> [u8; 4] {
    [rgb[2], rgb[1], rgb[0], 0xff]
}

fn fill(row: &mut [u8], x0: u32, x1: u32, rgb: [u8; 3]) {
    let px = xrgb(rgb);
    for chunk in row[x0 as usize * 4..x1 as usize * 4].chunks_exact_mut(4) {
        chunk.copy_from_slice(&px);
    }
}

/// A picture made of a few distinct XRGB rows: `rows[row_of[y]]` is row `y`.
struct Scene {
    rows: Vec<Vec<u8>>,
    row_of: Vec<u8>,
}

impl Scene {
    fn new(pattern: Pattern, frame_no: u64, width: u32, height: u32) -> Self {
        let row_len = width as usize * 4;
        if let Pattern::Solid(rgb) = pattern {
            let [_, r, g, b] = rgb.to_be_bytes();
            let mut row = vec![0; row_len];
            fill(&mut row, 0, width, [r, g, b]);
            return Scene {
                rows: vec![row],
                row_of: vec![0; height as usize],
            };
        }

        let mut bars = vec![0; row_len];
        for (i, bar) in BARS.iter().enumerate() {
            let (x0, x1) = bar_span(i, width);
            fill(&mut bars, x0, x1, bar.rgb);
        }
        let sq = moving_square(width, height, frame_no);
        let mut square = bars.clone();
        fill(&mut square, sq.x, sq.x + sq.width, [GREY; 3]);

        let mut row_of = vec![0u8; height as usize];
        row_of[sq.y as usize..(sq.y + sq.height) as usize].fill(1);
        let mut rows = vec![bars, square];

        if pattern == Pattern::Counter
            && let Some(layout) = CounterLayout::new(width, height)
        {
            let mut band = vec![0; row_len];
            fill(&mut band, 0, width, [GREY; 3]);
            let mut cells = band.clone();
            for (k, white) in CounterLayout::cells(crate::counter_value(frame_no))
                .into_iter()
                .enumerate()
            {
                let x0 = layout.x0 + k as u32 * layout.cell;
                fill(
                    &mut cells,
                    x0,
                    x0 + layout.cell,
                    [if white { 255 } else { 0 }; 3],
                );
            }
            let band_end = (layout.band_height() as usize).min(row_of.len());
            row_of[..band_end].fill(2);
            row_of[layout.y0 as usize..(layout.y0 + layout.cell) as usize].fill(3);
            rows.push(band);
            rows.push(cells);
        }
        Scene { rows, row_of }
    }
}

/// Draws frame `frame_no` of `pattern` into `buf`, whatever its format.
///
/// Only the image area is written: the bytes before the first plane's offset, the padding at
/// the end of each row and anything past the last row keep their contents.
pub fn render(pattern: Pattern, frame_no: u64, buf: &mut GuestBuffer) {
    let (width, height) = (buf.width(), buf.height());
    match buf.format() {
        Format::Xrgb8888 => {
            let (offset, stride) = (buf.offset() as usize, buf.stride());
            render_xrgb(
                pattern,
                frame_no,
                &mut buf.pixels_mut()[offset..],
                width,
                height,
                stride,
            )
            .expect("GuestBuffer geometry is validated at construction");
        }
        Format::Nv12 => {
            let [y_plane, uv_plane] = [buf.planes()[0], buf.planes()[1]];
            let (head, uv) = buf.pixels_mut().split_at_mut(uv_plane.offset as usize);
            render_nv12(
                pattern,
                frame_no,
                &mut head[y_plane.offset as usize..],
                y_plane.stride as usize,
                uv,
                uv_plane.stride as usize,
                width,
                height,
            );
        }
    }
}

/// Draws frame `frame_no` of `pattern` as XRGB8888 (bytes B, G, R, 0xff) into `data`, whose
/// first byte is the top-left pixel and whose rows are `stride` bytes apart.
///
/// Fails if `stride < width * 4` or `data` is shorter than
/// `stride * (height - 1) + width * 4`. Row padding is left untouched.
pub fn render_xrgb(
    pattern: Pattern,
    frame_no: u64,
    data: &mut [u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<()> {
    let (row_len, stride) = (width as usize * 4, stride as usize);
    if width == 0 || height == 0 {
        return Ok(());
    }
    if stride < row_len {
        return Err(Error::Geometry(format!(
            "stride {stride} < width {width} * 4"
        )));
    }
    let needed = stride * (height as usize - 1) + row_len;
    if data.len() < needed {
        return Err(Error::Geometry(format!(
            "{} bytes cannot hold {width}x{height} with stride {stride} ({needed} needed)",
            data.len()
        )));
    }
    match pattern {
        Pattern::Desktop => {
            desktop::render_region(
                frame_no,
                data,
                width,
                height,
                stride,
                Rect::full(width, height),
            );
        }
        Pattern::Video => video::render(frame_no, data, width, height, stride),
        _ => {
            let scene = Scene::new(pattern, frame_no, width, height);
            for (dst, &kind) in data.chunks_mut(stride).zip(&scene.row_of) {
                dst[..row_len].copy_from_slice(&scene.rows[kind as usize]);
            }
        }
    }
    Ok(())
}

/// The rectangles (possibly overlapping) outside which frames `from` and `to` of `pattern`
/// are identical in a `width` x `height` picture: what changed between them, for a host's
/// damage report or to redraw only that ([`render_update`]). Empty if nothing changed.
///
/// [`Pattern::Desktop`] reports its real damage (the dragged window's old and new places,
/// the log when it scrolls, the caret, the clock); [`Pattern::Solid`] never changes; the
/// other patterns report the whole picture.
pub fn damage(pattern: Pattern, from: u64, to: u64, width: u32, height: u32) -> Vec<Rect> {
    if from == to || width == 0 || height == 0 {
        return Vec::new();
    }
    match pattern {
        Pattern::Desktop => desktop::damage(from, to, width, height),
        Pattern::Solid(_) => Vec::new(),
        _ => vec![Rect::full(width, height)],
    }
}

/// The bounding box of [`damage`], or `None` if nothing changed: the single rectangle a
/// host reports with a draw (`gl_draw`) of frame `to` after frame `from`.
pub fn damage_bounds(
    pattern: Pattern,
    from: u64,
    to: u64,
    width: u32,
    height: u32,
) -> Option<Rect> {
    damage(pattern, from, to, width, height)
        .into_iter()
        .reduce(|a, b| a.bounding(&b))
}

/// Turns `buf`, which holds frame `from` of `pattern`, into frame `to`, redrawing only the
/// [`damage`] between them when the pattern can draw part of a picture (the desktop, in
/// XRGB8888 buffers); otherwise the whole frame is drawn, as by [`render`]. The result is
/// the same as `render(pattern, to, buf)`.
pub fn render_update(pattern: Pattern, from: u64, to: u64, buf: &mut GuestBuffer) {
    if pattern != Pattern::Desktop || buf.format() != Format::Xrgb8888 {
        return render(pattern, to, buf);
    }
    let (width, height) = (buf.width(), buf.height());
    let (offset, stride) = (buf.offset() as usize, buf.stride() as usize);
    let data = &mut buf.pixels_mut()[offset..];
    for r in damage(pattern, from, to, width, height) {
        desktop::render_region(to, data, width, height, stride, r);
    }
}

/// BT.601 limited range, as GStreamer and H.264 encoders assume by default.
fn yuv(b: u8, g: u8, r: u8) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (y as u8, u as u8, v as u8)
}

/// One XRGB8888 row as NV12: its luma row and its chroma (U, V of each pixel pair).
fn nv12_row(row: &[u8], uv_len: usize) -> (Vec<u8>, Vec<u8>) {
    let yuvs: Vec<_> = row.chunks_exact(4).map(|p| yuv(p[0], p[1], p[2])).collect();
    let luma = yuvs.iter().map(|p| p.0).collect();
    let mut uv = Vec::with_capacity(uv_len);
    for pair in yuvs.chunks(2) {
        let n = pair.len() as u32;
        let u = pair.iter().map(|p| u32::from(p.1)).sum::<u32>() / n;
        let v = pair.iter().map(|p| u32::from(p.2)).sum::<u32>() / n;
        uv.extend_from_slice(&[u as u8, v as u8]);
    }
    (luma, uv)
}

/// NV12 version of [`render_xrgb`]: luma at full resolution, chroma from the even rows
/// and the average of each horizontal pixel pair. The planes are sized by [`GuestBuffer`].
#[allow(clippy::too_many_arguments)]
fn render_nv12(
    pattern: Pattern,
    frame_no: u64,
    y_plane: &mut [u8],
    y_stride: usize,
    uv_plane: &mut [u8],
    uv_stride: usize,
    width: u32,
    height: u32,
) {
    let w = width as usize;
    let uv_len = w.div_ceil(2) * 2;
    if matches!(pattern, Pattern::Desktop | Pattern::Video) {
        // Every row is different: draw XRGB8888 and convert row by row.
        let mut xrgb = vec![0u8; w * 4 * height as usize];
        render_xrgb(pattern, frame_no, &mut xrgb, width, height, width * 4)
            .expect("a tight buffer fits");
        let rows = y_plane.chunks_mut(y_stride).zip(xrgb.chunks_exact(w * 4));
        for (y, (dst, src)) in rows.enumerate() {
            let (luma, chroma) = nv12_row(src, uv_len);
            dst[..w].copy_from_slice(&luma);
            if y % 2 == 0 {
                uv_plane[y / 2 * uv_stride..][..uv_len].copy_from_slice(&chroma);
            }
        }
        return;
    }
    let scene = Scene::new(pattern, frame_no, width, height);
    let (y_rows, uv_rows): (Vec<_>, Vec<_>) =
        scene.rows.iter().map(|row| nv12_row(row, uv_len)).unzip();
    for (dst, &kind) in y_plane.chunks_mut(y_stride).zip(&scene.row_of) {
        dst[..w].copy_from_slice(&y_rows[kind as usize]);
    }
    let chroma_kinds = scene.row_of.iter().step_by(2);
    for (dst, &kind) in uv_plane.chunks_mut(uv_stride).zip(chroma_kinds) {
        dst[..uv_len].copy_from_slice(&uv_rows[kind as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_vec(pattern: Pattern, frame_no: u64, w: u32, h: u32) -> Vec<u8> {
        let mut data = vec![0u8; (w * h * 4) as usize];
        render_xrgb(pattern, frame_no, &mut data, w, h, w * 4).unwrap();
        data
    }

    fn rgb_at(data: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
        let p = &data[((y * w + x) * 4) as usize..][..4];
        assert_eq!(p[3], 0xff);
        [p[2], p[1], p[0]]
    }

    #[test]
    fn parse_and_display() {
        for (s, p) in [
            ("bars", Pattern::Bars),
            ("counter", Pattern::Counter),
            ("solid:ff8000", Pattern::Solid(0xff8000)),
            ("solid:000000", Pattern::Solid(0)),
            ("desktop", Pattern::Desktop),
            ("video", Pattern::Video),
        ] {
            assert_eq!(s.parse::<Pattern>().unwrap(), p);
            assert_eq!(p.to_string(), s);
        }
        assert_eq!("BARS".parse::<Pattern>().unwrap(), Pattern::Bars);
        assert_eq!("Desktop".parse::<Pattern>().unwrap(), Pattern::Desktop);
        assert_eq!("VIDEO".parse::<Pattern>().unwrap(), Pattern::Video);
        assert_eq!(
            "solid:#A0b0C0".parse::<Pattern>().unwrap(),
            Pattern::Solid(0xa0b0c0)
        );
        for bad in [
            "",
            "bar",
            "solid",
            "solid:",
            "solid:12345",
            "solid:1234567",
            "solid:+12345",
            "solid:gg0000",
            "plain:ffffff",
            "desktops",
            "video:1",
        ] {
            assert!(
                matches!(bad.parse::<Pattern>(), Err(Error::Pattern(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bar_colours_at_centres() {
        for (w, h) in [(1920, 1080), (1366, 768), (641, 479), (64, 40)] {
            for pattern in [Pattern::Bars, Pattern::Counter] {
                let data = render_vec(pattern, 17, w, h);
                for (i, bar) in BARS.iter().enumerate() {
                    let (x0, x1) = bar_span(i, w);
                    for y in [h / 2, h / 10 + 1, h * 8 / 10] {
                        assert_eq!(
                            rgb_at(&data, w, (x0 + x1) / 2, y),
                            bar.rgb,
                            "{w}x{h} bar {i} y {y}"
                        );
                    }
                    // Full height: the first and last row are bars too, away from the
                    // square and the counter band.
                    if pattern == Pattern::Bars && !(x0..x1).contains(&moving_square(w, h, 17).x) {
                        assert_eq!(rgb_at(&data, w, x0, 0), bar.rgb);
                        assert_eq!(rgb_at(&data, w, x1 - 1, h - 1), bar.rgb);
                    }
                }
            }
        }
    }

    #[test]
    fn solid_fills_everything() {
        let data = render_vec(Pattern::Solid(0x123456), 3, 33, 7);
        assert!(data.chunks_exact(4).all(|p| p == [0x56, 0x34, 0x12, 0xff]));
    }

    #[test]
    fn square_stays_in_bottom_band_and_moves() {
        for (w, h) in [
            (1920, 1080),
            (1280, 720),
            (640, 480),
            (1366, 767),
            (200, 30),
        ] {
            let bars = render_vec(Pattern::Bars, 0, w, h);
            let band_top = h - h / 10;
            let mut previous = None;
            for frame in (0..600).chain([u64::MAX - 1, u64::MAX]) {
                let sq = moving_square(w, h, frame);
                assert!(
                    sq.y >= band_top && sq.y + sq.height <= h,
                    "{w}x{h} frame {frame}: {sq:?}"
                );
                assert!(sq.x + sq.width <= w, "{w}x{h} frame {frame}: {sq:?}");
                if frame < 600 {
                    assert_ne!(
                        previous,
                        Some(sq.x),
                        "{w}x{h} frame {frame}: square did not move"
                    );
                    previous = Some(sq.x);
                }
                let data = render_vec(Pattern::Bars, frame, w, h);
                let row = (w * 4) as usize;
                // The upper 90 % is pure bars.
                assert_eq!(
                    data[..band_top as usize * row],
                    bars[..band_top as usize * row]
                );
                // The square is where moving_square says.
                assert_eq!(rgb_at(&data, w, sq.x, sq.y), [GREY; 3]);
                assert_eq!(
                    rgb_at(&data, w, sq.x + sq.width - 1, sq.y + sq.height - 1),
                    [GREY; 3]
                );
            }
        }
        assert_eq!(
            moving_square(1920, 1080, 0),
            Rect {
                x: 0,
                y: 999,
                width: 54,
                height: 54
            }
        );
        assert_eq!(moving_square(1920, 1080, 1).x, 16);
    }

    #[test]
    fn render_checks_slice_size() {
        let mut data = vec![0u8; 100];
        assert!(render_xrgb(Pattern::Bars, 0, &mut data, 10, 3, 40).is_err());
        assert!(render_xrgb(Pattern::Bars, 0, &mut data, 10, 2, 39).is_err());
        // The last row needs no padding.
        let mut data = vec![0u8; 40 + 42];
        render_xrgb(Pattern::Bars, 0, &mut data, 10, 2, 42).unwrap();
        assert_eq!(&data[40..42], &[0, 0]);
    }

    #[test]
    fn padded_stride_renders_only_the_image() {
        const SENTINEL: u8 = 0xa5;
        let (w, h, stride, offset) = (1920u32, 1080u32, 7936usize, 4096usize);
        let mut buf = GuestBuffer::with_layout(w, h, stride as u32, offset as u32).unwrap();
        buf.pixels_mut().fill(SENTINEL);
        render(Pattern::Bars, 5, &mut buf);
        let px = buf.pixels();
        assert!(
            px[..offset].iter().all(|&b| b == SENTINEL),
            "bytes before the offset changed"
        );
        let row_len = w as usize * 4;
        for y in 0..h as usize {
            let row = &px[offset + y * stride..][..stride];
            assert!(
                row[row_len..].iter().all(|&b| b == SENTINEL),
                "padding of row {y} changed"
            );
            assert!(
                row[..row_len].chunks_exact(4).all(|p| p[3] == 0xff),
                "row {y} not drawn"
            );
        }
        let image = crate::Image::from_buffer(&buf).unwrap();
        crate::check_bars(&image, 0).unwrap();
        crate::check_upright_bars(&image, 0).unwrap();
    }

    #[test]
    fn nv12_render() {
        let (w, h) = (640u32, 480u32);
        let mut buf = GuestBuffer::new_nv12(w, h).unwrap();
        buf.pixels_mut().fill(0);
        render(Pattern::Bars, 0, &mut buf);
        let (y_plane, uv_plane) = (buf.planes()[0], buf.planes()[1]);
        let px = buf.pixels();
        let luma = |x: u32, y: u32| px[y_plane.offset as usize + (y * y_plane.stride + x) as usize];
        let chroma = |x: u32, y: u32| {
            let at = uv_plane.offset as usize + ((y / 2) * uv_plane.stride + x / 2 * 2) as usize;
            (px[at], px[at + 1])
        };
        let expect = [
            (235, 128, 128), // white
            (210, 16, 146),  // yellow
            (170, 166, 16),  // cyan
            (145, 54, 34),   // green
            (106, 202, 222), // magenta
            (81, 90, 240),   // red
            (41, 240, 110),  // blue
            (16, 128, 128),  // black
        ];
        for (i, (ey, eu, ev)) in expect.into_iter().enumerate() {
            let (x0, x1) = bar_span(i, w);
            let (x, y) = ((x0 + x1) / 2, h / 2);
            let (u, v) = chroma(x, y);
            for (got, want) in [(luma(x, y), ey), (u, eu), (v, ev)] {
                assert!(got.abs_diff(want) <= 1, "bar {i}: got {got}, want {want}");
            }
        }
        let sq = moving_square(w, h, 0);
        assert_eq!(luma(sq.x + 1, sq.y + 1), 126);
        // The whole fd is written: both planes end exactly at its end.
        assert_ne!(px[uv_plane.offset as usize - 1], 0);
        assert_ne!(*px.last().unwrap(), 0);
    }

    #[test]
    fn updates_equal_full_renders() {
        // A padded stride and an offset: the update must touch the same bytes as a render.
        let (w, h, stride, offset) = (700u32, 400u32, 700 * 4 + 64, 4096u32);
        for pattern in [
            Pattern::Desktop,
            Pattern::Video,
            Pattern::Counter,
            Pattern::Solid(0x102030),
        ] {
            let mut full = GuestBuffer::with_layout(w, h, stride, offset).unwrap();
            let mut updated = GuestBuffer::with_layout(w, h, stride, offset).unwrap();
            render(pattern, 3, &mut updated);
            for (from, to) in [(3u64, 4u64), (4, 7), (7, 7), (7, 40), (40, 39)] {
                render_update(pattern, from, to, &mut updated);
                full.pixels_mut().fill(0);
                render(pattern, to, &mut full);
                assert!(
                    full.pixels()[offset as usize..] == updated.pixels()[offset as usize..],
                    "{pattern} {from}->{to}"
                );
            }
        }
    }

    #[test]
    fn damage_of_each_pattern() {
        let (w, h) = (1280, 720);
        let full = Rect::full(w, h);
        assert_eq!(damage(Pattern::Video, 1, 2, w, h), vec![full]);
        assert_eq!(damage(Pattern::Bars, 1, 2, w, h), vec![full]);
        assert!(damage(Pattern::Solid(7), 1, 2, w, h).is_empty());
        assert!(damage(Pattern::Video, 5, 5, w, h).is_empty());
        assert_eq!(damage_bounds(Pattern::Video, 1, 2, w, h), Some(full));
        assert_eq!(damage_bounds(Pattern::Solid(7), 1, 2, w, h), None);
        // The desktop changes a small part per frame: the dragged window, plus the log when
        // it scrolls.
        let mut total = 0;
        for f in 1..=64u64 {
            let b = damage_bounds(Pattern::Desktop, f - 1, f, w, h).unwrap_or(full);
            assert!(full.intersection(&b) == Some(b), "frame {f}: {b:?}");
            total += b.area();
        }
        assert!(total < full.area() * 64 / 4, "{total}");
    }

    #[test]
    fn rect_helpers() {
        let a = Rect {
            x: 10,
            y: 10,
            width: 20,
            height: 10,
        };
        let b = Rect {
            x: 25,
            y: 0,
            width: 10,
            height: 15,
        };
        assert_eq!(
            a.intersection(&b),
            Some(Rect {
                x: 25,
                y: 10,
                width: 5,
                height: 5
            })
        );
        assert_eq!(
            a.bounding(&b),
            Rect {
                x: 10,
                y: 0,
                width: 25,
                height: 20
            }
        );
        assert!(a.contains(10, 19) && !a.contains(30, 10) && !a.contains(9, 10));
        assert_eq!(a.area(), 200);
        let far = Rect { x: 30, ..a };
        assert_eq!(a.intersection(&far), None);
        let empty = Rect { width: 0, ..a };
        assert_eq!(a.intersection(&empty), None);
    }

    #[test]
    fn nv12_desktop_and_video() {
        for pattern in [Pattern::Desktop, Pattern::Video] {
            let (w, h) = (321u32, 241u32);
            let mut nv12 = GuestBuffer::new_nv12(w, h).unwrap();
            render(pattern, 9, &mut nv12);
            let xrgb = render_vec(pattern, 9, w, h);
            let (y_plane, uv_plane) = (nv12.planes()[0], nv12.planes()[1]);
            let px = nv12.pixels();
            for (x, y) in [(0, 0), (160, 120), (320, 240), (17, 201)] {
                let p = &xrgb[((y * w + x) * 4) as usize..][..4];
                let (ey, eu, ev) = yuv(p[0], p[1], p[2]);
                let luma = px[(y_plane.offset + y * y_plane.stride + x) as usize];
                assert_eq!(luma, ey, "{pattern} ({x}, {y})");
                if x % 2 == 0 && y % 2 == 0 && x + 1 < w {
                    let q = &xrgb[((y * w + x + 1) * 4) as usize..][..4];
                    let (_, u1, v1) = yuv(q[0], q[1], q[2]);
                    let at = (uv_plane.offset + y / 2 * uv_plane.stride + x) as usize;
                    assert_eq!(px[at], ((u32::from(eu) + u32::from(u1)) / 2) as u8);
                    assert_eq!(px[at + 1], ((u32::from(ev) + u32::from(v1)) / 2) as u8);
                }
            }
        }
    }
}
