//! The `desktop` pattern: what a remote desktop mostly shows.
//!
//! - a wallpaper (a vertical gradient) and a task bar along the bottom with a clock that ticks
//!   once a second (at 30 frames per second);
//! - a terminal window whose log scrolls up one line every [`SCROLL_FRAMES`] frames, with
//!   line numbers, coloured log levels, code and prose, and a caret after the newest line
//!   that blinks every [`BLINK_FRAMES`] frames;
//! - a file-manager window being dragged smoothly round the screen, whole pixels at a time,
//!   at most about `width / 300` pixels per frame across and `height / 230` up or down.
//!
//! Everything is a function of the frame number and the picture size only. Text is drawn
//! with the built-in 5x9 font, scaled up by 2 from 1080 rows and by 4 from 2160. Between
//! two frames only the rectangles of [`damage`] change (the dragged window's old and new
//! places, the log when it scrolls, the caret when it blinks, the clock), so
//! [`render_region`] can bring an older frame up to date by redrawing just those.

use std::f64::consts::TAU;

use crate::font::{GLYPH_H, GLYPH_W, glyph};
use crate::pattern::Rect;

/// Frames between two scroll steps of the log (one line each).
pub const SCROLL_FRAMES: u64 = 8;
/// Frames the caret stays on, then off.
pub const BLINK_FRAMES: u64 = 15;
/// Frames per second of the clock in the task bar.
const CLOCK_FPS: u64 = 30;
/// Frames for one horizontal / vertical swing of the dragged window.
const DRAG_PERIOD_X: u64 = 660;
const DRAG_PERIOD_Y: u64 = 450;

const WALL_TOP: [u32; 3] = [24, 58, 104];
const WALL_BOTTOM: [u32; 3] = [104, 150, 186];
const PANEL: u32 = 0x262a33;
const PANEL_BUTTON: u32 = 0x3a404c;
const PANEL_TEXT: u32 = 0xe8e8e8;
const FRAME: u32 = 0x50555e;
const TITLE_ACTIVE: u32 = 0x2f5d9e;
const TITLE_INACTIVE: u32 = 0x6b7280;
const TITLE_TEXT: u32 = 0xffffff;
const TERMINAL_BG: u32 = 0xfbfaf5;
const GUTTER_BG: u32 = 0xeeede6;
const GUTTER_TEXT: u32 = 0x9a9a90;
const TEXT: u32 = 0x202020;
const CARET: u32 = 0x000000;
const DIALOG_BG: u32 = 0xffffff;
const TOOLBAR: u32 = 0xe4e6ea;
const TOOL_BUTTON: u32 = 0xc9cdd4;
const SELECTED: u32 = 0x3d7bd9;
const SIZE_TEXT: u32 = 0x707070;
const CLOSE: u32 = 0xe0524a;
const MINIMISE: u32 = 0xe8b33c;
const MAXIMISE: u32 = 0x4cb85a;

/// An XRGB8888 picture being drawn, with everything outside `clip` left alone.
struct Canvas<'a> {
    data: &'a mut [u8],
    stride: usize,
    clip: Rect,
}

impl Canvas<'_> {
    /// Fills the part of `r` inside the clip with `rgb` (`0xRRGGBB`).
    fn fill(&mut self, r: Rect, rgb: u32) {
        let Some(r) = r.intersection(&self.clip) else {
            return;
        };
        let px = (rgb | 0xff00_0000).to_le_bytes();
        let (x0, x1) = (r.x as usize * 4, (r.x + r.width) as usize * 4);
        for y in r.y..r.y + r.height {
            let row = &mut self.data[y as usize * self.stride..][x0..x1];
            for p in row.chunks_exact_mut(4) {
                p.copy_from_slice(&px);
            }
        }
    }

    /// Draws `text` from `(x, y)` (top-left of the first cell), glyphs scaled by `scale`,
    /// one cell `cell` pixels wide, stopping before `right`.
    #[allow(clippy::too_many_arguments)]
    fn text(&mut self, x: u32, y: u32, text: &[u8], scale: u32, cell: u32, right: u32, rgb: u32) {
        let rows = Rect {
            x: 0,
            y,
            width: u32::MAX,
            height: GLYPH_H * scale,
        };
        if rows.intersection(&self.clip).is_none() {
            return;
        }
        for (i, &c) in text.iter().enumerate() {
            let cx = x + i as u32 * cell;
            if cx + GLYPH_W * scale > right || cx >= self.clip.x + self.clip.width {
                break;
            }
            if cx + cell <= self.clip.x {
                continue;
            }
            for (r, &bits) in glyph(c).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                        let dot = Rect {
                            x: cx + col * scale,
                            y: y + r as u32 * scale,
                            width: scale,
                            height: scale,
                        };
                        self.fill(dot, rgb);
                    }
                }
            }
        }
    }
}

/// Where everything is for one picture size.
#[derive(Debug, Clone, Copy)]
struct Layout {
    width: u32,
    /// Font scale, cell width and line height.
    scale: u32,
    cell: u32,
    line: u32,
    panel: Rect,
    clock: Rect,
    terminal: Rect,
    /// The terminal's line numbers and text, which scroll.
    log: Rect,
    /// Where the text starts inside `log`, and how many lines it shows.
    text_x: u32,
    rows: u32,
    /// Size of the dragged window and how far it can go.
    dialog_w: u32,
    dialog_h: u32,
    range_x: u32,
    range_y: u32,
}

impl Layout {
    fn new(width: u32, height: u32) -> Self {
        let scale = (height / 540).clamp(1, 4);
        let cell = (GLYPH_W + 1) * scale;
        let line = (GLYPH_H + 2) * scale;
        let panel_h = (line + 8 * scale).min(height);
        let panel = Rect {
            x: 0,
            y: height - panel_h,
            width,
            height: panel_h,
        };
        let clock_w = (10 * cell).min(width);
        let clock = Rect {
            x: width - clock_w,
            y: panel.y,
            width: clock_w,
            height: panel_h,
        };
        let desk_h = height - panel_h;
        let terminal = Rect {
            x: width / 24,
            y: desk_h / 14,
            width: width * 11 / 20,
            height: desk_h * 4 / 5,
        };
        let title = Self::title_height(line, scale);
        let inner_top = terminal.y + title + scale;
        let log = Rect {
            x: terminal.x + scale,
            y: inner_top,
            width: terminal.width.saturating_sub(2 * scale),
            height: (terminal.y + terminal.height).saturating_sub(inner_top + scale),
        };
        let rows = log.height.saturating_sub(2 * scale) / line;
        let dialog_w = width * 3 / 10;
        let dialog_h = desk_h * 3 / 8;
        Self {
            width,
            scale,
            cell,
            line,
            panel,
            clock,
            terminal,
            log,
            text_x: log.x + 6 * cell,
            rows,
            dialog_w,
            dialog_h,
            range_x: width - dialog_w,
            range_y: desk_h.saturating_sub(dialog_h),
        }
    }

    fn title_height(line: u32, scale: u32) -> u32 {
        line + 6 * scale
    }

    /// The dragged window in frame `frame_no`: a smooth Lissajous path over the desktop.
    fn dialog(&self, frame_no: u64) -> Rect {
        let swing = |period: u64, phase: u64, range: u32| {
            let t = ((frame_no % period + phase) % period) as f64 / period as f64;
            ((0.5 - 0.5 * (t * TAU).cos()) * f64::from(range)).round() as u32
        };
        Rect {
            x: swing(DRAG_PERIOD_X, DRAG_PERIOD_X / 5, self.range_x),
            y: swing(DRAG_PERIOD_Y, DRAG_PERIOD_Y / 3, self.range_y),
            width: self.dialog_w,
            height: self.dialog_h,
        }
    }

    /// Number of the log line at the top of the terminal in frame `frame_no`.
    fn first_line(frame_no: u64) -> u64 {
        frame_no / SCROLL_FRAMES
    }

    fn caret_on(frame_no: u64) -> bool {
        (frame_no / BLINK_FRAMES).is_multiple_of(2)
    }

    /// Characters of log text that fit on one terminal line.
    fn columns(&self) -> usize {
        ((self.log.x + self.log.width).saturating_sub(self.text_x + self.scale) / self.cell)
            as usize
    }

    /// The caret after the newest line (the bottom one) in frame `frame_no`.
    fn caret(&self, frame_no: u64) -> Rect {
        let last = Self::first_line(frame_no) + u64::from(self.rows.saturating_sub(1));
        let len = log_line(last).0.len().min(self.columns().saturating_sub(1));
        Rect {
            x: self.text_x + len as u32 * self.cell + self.scale,
            y: self.log.y + self.scale + self.rows.saturating_sub(1) * self.line,
            width: 2 * self.scale,
            height: self.line - self.scale,
        }
    }

    fn draw(&self, c: &mut Canvas<'_>, frame_no: u64) {
        self.wallpaper(c);
        self.task_bar(c, frame_no);
        self.terminal(c, frame_no);
        self.file_manager(c, self.dialog(frame_no));
    }

    fn wallpaper(&self, c: &mut Canvas<'_>) {
        let span = self.panel.y.max(1);
        let rows = c.clip.y..(c.clip.y + c.clip.height).min(self.panel.y);
        for y in rows {
            let rgb = (0..3).fold(0, |acc, i| {
                let (a, b) = (WALL_TOP[i], WALL_BOTTOM[i]);
                let v = (a * (span - y) + b * y) / span;
                acc << 8 | v
            });
            let row = Rect {
                x: 0,
                y,
                width: self.width,
                height: 1,
            };
            c.fill(row, rgb);
        }
    }

    fn task_bar(&self, c: &mut Canvas<'_>, frame_no: u64) {
        let (s, p) = (self.scale, self.panel);
        c.fill(p, PANEL);
        let ty = p.y + (p.height.saturating_sub(GLYPH_H * s)) / 2;
        let mut x = 4 * s;
        for (label, w) in [
            (&b"Menu"[..], 8),
            (b"Terminal - build.log", 24),
            (b"Files - Documents", 24),
        ] {
            let button = Rect {
                x,
                y: p.y + 2 * s,
                width: w * self.cell,
                height: p.height.saturating_sub(4 * s),
            };
            c.fill(button, PANEL_BUTTON);
            let right = (button.x + button.width).min(self.clock.x);
            c.text(x + 2 * s, ty, label, s, self.cell, right, PANEL_TEXT);
            x += button.width + 4 * s;
        }
        let secs = 9 * 3600 + 41 * 60 + frame_no / CLOCK_FPS;
        let clock = format!(
            "{:02}:{:02}:{:02}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60
        );
        let right = self.width;
        c.text(
            self.clock.x + self.cell,
            ty,
            clock.as_bytes(),
            s,
            self.cell,
            right,
            PANEL_TEXT,
        );
    }

    /// A window frame with its title bar; returns the client area.
    fn window(&self, c: &mut Canvas<'_>, r: Rect, title: &[u8], active: bool) -> Rect {
        let s = self.scale;
        c.fill(r, FRAME);
        let th = Self::title_height(self.line, s);
        let bar = Rect {
            x: r.x + s,
            y: r.y + s,
            width: r.width.saturating_sub(2 * s),
            height: th.min(r.height.saturating_sub(2 * s)),
        };
        c.fill(bar, if active { TITLE_ACTIVE } else { TITLE_INACTIVE });
        let ty = bar.y + (th.saturating_sub(GLYPH_H * s)) / 2;
        let buttons_x = (bar.x + bar.width).saturating_sub(3 * (self.line + 2 * s));
        c.text(
            bar.x + 3 * s,
            ty,
            title,
            s,
            self.cell,
            buttons_x,
            TITLE_TEXT,
        );
        for (k, rgb) in [MINIMISE, MAXIMISE, CLOSE].into_iter().enumerate() {
            let b = Rect {
                x: buttons_x + k as u32 * (self.line + 2 * s),
                y: ty,
                width: self.line - 2 * s,
                height: self.line - 2 * s,
            };
            c.fill(b, rgb);
        }
        Rect {
            x: r.x + s,
            y: r.y + th + s,
            width: r.width.saturating_sub(2 * s),
            height: r.height.saturating_sub(th + 2 * s),
        }
    }

    fn terminal(&self, c: &mut Canvas<'_>, frame_no: u64) {
        let (s, cell) = (self.scale, self.cell);
        let body = self.window(c, self.terminal, b"Terminal - tail -f build.log", false);
        if body.intersection(&c.clip).is_none() {
            return;
        }
        c.fill(body, TERMINAL_BG);
        let gutter = Rect {
            width: self.text_x - body.x - cell / 2,
            ..body
        };
        c.fill(gutter, GUTTER_BG);
        let right = body.x + body.width;
        let first = Self::first_line(frame_no);
        for row in 0..self.rows {
            let y = self.log.y + s + row * self.line;
            let n = first + u64::from(row);
            let number = format!("{:>5}", (n + 1) % 100_000);
            c.text(
                body.x + s,
                y,
                number.as_bytes(),
                s,
                cell,
                right,
                GUTTER_TEXT,
            );
            let (text, rgb) = log_line(n);
            c.text(self.text_x, y, &text, s, cell, right, rgb);
        }
        if Self::caret_on(frame_no) {
            c.fill(self.caret(frame_no), CARET);
        }
    }

    fn file_manager(&self, c: &mut Canvas<'_>, r: Rect) {
        if r.intersection(&c.clip).is_none() {
            return;
        }
        let (s, cell) = (self.scale, self.cell);
        let body = self.window(c, r, b"Files - /home/user/Documents", true);
        c.fill(body, DIALOG_BG);
        let toolbar = Rect {
            height: (self.line + 6 * s).min(body.height),
            ..body
        };
        c.fill(toolbar, TOOLBAR);
        for k in 0..5 {
            let b = Rect {
                x: body.x + 3 * s + k * (self.line + 6 * s),
                y: toolbar.y + 2 * s,
                width: self.line + 2 * s,
                height: self.line + 2 * s,
            };
            if b.x + b.width <= body.x + body.width {
                c.fill(b, TOOL_BUTTON);
            }
        }
        let right = body.x + body.width;
        let row_h = self.line + 3 * s;
        let top = toolbar.y + toolbar.height + s;
        let rows = (body.y + body.height).saturating_sub(top) / row_h;
        for k in 0..rows {
            let y = top + k * row_h;
            let selected = k == 2;
            let (name, size, icon) = file_entry(u64::from(k));
            if selected {
                let bar = Rect {
                    x: body.x,
                    y,
                    width: body.width,
                    height: row_h,
                };
                c.fill(bar, SELECTED);
            }
            let icon_r = Rect {
                x: body.x + 3 * s,
                y: y + 2 * s,
                width: GLYPH_H * s,
                height: GLYPH_H * s,
            };
            c.fill(icon_r, icon);
            let ty = y + s + s / 2;
            let (text_rgb, size_rgb) = if selected {
                (TITLE_TEXT, TITLE_TEXT)
            } else {
                (TEXT, SIZE_TEXT)
            };
            let size_x = right.saturating_sub((size.len() as u32 + 1) * cell);
            c.text(
                icon_r.x + icon_r.width + 2 * s,
                ty,
                &name,
                s,
                cell,
                size_x,
                text_rgb,
            );
            c.text(size_x, ty, size.as_bytes(), s, cell, right, size_rgb);
        }
    }
}

/// Draws the part of frame `frame_no` of the desktop inside `clip` into XRGB8888 `data`
/// (first byte = top-left pixel, rows `stride` bytes apart). The caller checks the geometry.
pub(crate) fn render_region(
    frame_no: u64,
    data: &mut [u8],
    width: u32,
    height: u32,
    stride: usize,
    clip: Rect,
) {
    let full = Rect {
        x: 0,
        y: 0,
        width,
        height,
    };
    let Some(clip) = clip.intersection(&full) else {
        return;
    };
    let mut canvas = Canvas { data, stride, clip };
    Layout::new(width, height).draw(&mut canvas, frame_no);
}

/// The rectangles (they may overlap) outside which frames `from` and `to` of a
/// `width` x `height` desktop are identical; empty when nothing changed.
pub(crate) fn damage(from: u64, to: u64, width: u32, height: u32) -> Vec<Rect> {
    if from == to {
        return Vec::new();
    }
    let l = Layout::new(width, height);
    let mut out = Vec::new();
    let (a, b) = (l.dialog(from), l.dialog(to));
    if a != b {
        if a.intersection(&b).is_some() {
            out.push(a.bounding(&b));
        } else {
            out.extend([a, b]);
        }
    }
    if Layout::first_line(from) != Layout::first_line(to) {
        out.push(l.log);
    } else if Layout::caret_on(from) != Layout::caret_on(to) {
        out.push(l.caret(to));
    }
    if from / CLOCK_FPS != to / CLOCK_FPS {
        out.push(l.clock);
    }
    let full = Rect {
        x: 0,
        y: 0,
        width,
        height,
    };
    out.iter().filter_map(|r| r.intersection(&full)).collect()
}

/// SplitMix64: a well-mixed 64-bit hash of `x`.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const WORDS: [&str; 96] = [
    "frame", "buffer", "stream", "client", "display", "channel", "encoder", "pipeline", "cookie",
    "scanout", "render", "queue", "latency", "packet", "surface", "cursor", "monitor", "window",
    "region", "damage", "texture", "sample", "bitrate", "keyframe", "session", "socket", "server",
    "device", "memory", "thread", "timer", "config", "update", "commit", "layer", "pixel",
    "format", "stride", "offset", "plane", "source", "sink", "codec", "audio", "input", "mouse",
    "keyboard", "event", "signal", "report", "status", "network", "timeout", "retry", "release",
    "request", "reply", "header", "payload", "message", "context", "handle", "the", "of", "and",
    "to", "in", "is", "was", "with", "for", "on", "that", "by", "from", "at", "as", "this",
    "after", "before", "each", "every", "new", "old", "first", "last", "slow", "fast", "remote",
    "local", "guest", "host", "vector", "index", "state", "value",
];

fn word(h: u64) -> &'static str {
    WORDS[(h % WORDS.len() as u64) as usize]
}

/// `n` words from the hash stream starting at `h`, separated by `sep`.
fn words(h: u64, n: u64, sep: &str) -> String {
    (0..n)
        .map(|k| word(mix(h ^ k)))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Log line `n` and its colour: log records, code and prose, all made up from `n`.
fn log_line(n: u64) -> (Vec<u8>, u32) {
    let h = mix(n);
    let r = |k: u64| mix(h.wrapping_add(k));
    let secs = 8 * 3600 + n / 3;
    let stamp = format!(
        "[{:02}:{:02}:{:02}.{:03}]",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        r(1) % 1000
    );
    let (text, rgb) = match h % 16 {
        0..=5 => (
            format!(
                "{stamp} INFO  {}: {} {} ms",
                words(r(2), 1, ""),
                words(r(3), 3 + r(4) % 6, " "),
                r(5) % 900 + 1
            ),
            TEXT,
        ),
        6 => (
            format!(
                "{stamp} WARN  {}: {} ({} retries)",
                words(r(2), 1, ""),
                words(r(3), 3 + r(4) % 4, " "),
                r(5) % 9 + 1
            ),
            0xb06000,
        ),
        7 => (
            format!(
                "{stamp} ERROR {}: {} failed: {}",
                words(r(2), 1, ""),
                words(r(3), 2, "_"),
                words(r(4), 2 + r(5) % 4, " ")
            ),
            0xc0281e,
        ),
        8..=10 => {
            let indent = " ".repeat((r(2) % 4 * 4) as usize);
            let code = match r(3) % 4 {
                0 => format!(
                    "let {} = {}.{}({}, {});",
                    words(r(4), 2, "_"),
                    word(r(5)),
                    words(r(6), 2, "_"),
                    word(r(7)),
                    r(8) % 4096
                ),
                1 => format!(
                    "fn {}(&mut self, {}: u32) -> Result<{}> {{",
                    words(r(4), 2, "_"),
                    word(r(5)),
                    word(r(6))
                ),
                2 => format!("// {}.", words(r(4), 4 + r(5) % 6, " ")),
                _ => format!("}} else if {} > {} {{", word(r(4)), r(5) % 100),
            };
            (format!("{indent}{code}"), 0x1c4f8c)
        }
        11..=14 => {
            let mut s = words(r(2), 5 + r(3) % 9, " ");
            if let Some(first) = s.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            (format!("{s}."), 0x3a3a3a)
        }
        _ => (String::new(), TEXT),
    };
    (text.into_bytes(), rgb)
}

/// Name, size and icon colour of row `k` of the file manager.
fn file_entry(k: u64) -> (Vec<u8>, String, u32) {
    let h = mix(k.wrapping_add(0x51ce));
    let ext = ["txt", "png", "pdf", "rs", "ods", "mp4", "tar.gz"][(h % 7) as usize];
    let name = format!("{}.{ext}", words(h >> 8, 1 + (h >> 4) % 2, "_"));
    let size = format!("{} KiB", (h >> 16) % 9000 + 1);
    let icon = [0x4a90d9, 0xe0a030, 0x58b368, 0xc05050, 0x8a6cc8][((h >> 24) % 5) as usize];
    (name.into_bytes(), size, icon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64, w: u32, h: u32) -> Vec<u8> {
        let mut data = vec![0u8; (w * h * 4) as usize];
        let full = Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        };
        render_region(n, &mut data, w, h, w as usize * 4, full);
        data
    }

    fn changed_pixels(a: &[u8], b: &[u8]) -> usize {
        a.chunks_exact(4)
            .zip(b.chunks_exact(4))
            .filter(|(p, q)| p != q)
            .count()
    }

    #[test]
    fn deterministic_and_fully_drawn() {
        for (w, h) in [(320, 240), (1280, 720), (1920, 1080)] {
            let a = frame(77, w, h);
            assert_eq!(a, frame(77, w, h));
            assert!(a.chunks_exact(4).all(|p| p[3] == 0xff), "{w}x{h}");
        }
    }

    #[test]
    fn small_fraction_changes_per_frame() {
        for (w, h) in [(320, 240), (1280, 720), (1920, 1080)] {
            let total = (w * h) as usize;
            let mut prev = frame(0, w, h);
            let (mut sum, mut max) = (0usize, 0usize);
            // Three scroll steps and a blink.
            let frames = 2 * BLINK_FRAMES;
            for n in 1..=frames {
                // Redrawing the damage gives the whole frame (`damage_covers_every_change`).
                // Only pixels inside the damage can differ, so only those are compared.
                let mut cur = prev.clone();
                let rects = damage(n - 1, n, w, h);
                for r in &rects {
                    render_region(n, &mut cur, w, h, w as usize * 4, *r);
                }
                let bounds = rects.iter().copied().reduce(|a, b| a.bounding(&b));
                let changed = bounds.map_or(0, |b| {
                    (b.y..b.y + b.height)
                        .map(|y| {
                            let at =
                                (y * w + b.x) as usize * 4..((y * w + b.x + b.width) * 4) as usize;
                            changed_pixels(&prev[at.clone()], &cur[at])
                        })
                        .sum()
                });
                assert!(changed > 0, "{w}x{h}: frame {n} equals frame {}", n - 1);
                sum += changed;
                max = max.max(changed);
                prev = cur;
            }
            let mean = sum as f64 / frames as f64 / total as f64;
            let max = max as f64 / total as f64;
            assert!(
                mean < 0.08,
                "{w}x{h}: {:.1} % of pixels change per frame",
                mean * 100.0
            );
            assert!(max < 0.20, "{w}x{h}: up to {:.1} % change", max * 100.0);
        }
    }

    #[test]
    fn text_scrolls_by_one_line() {
        let (w, h) = (1280, 720);
        let l = Layout::new(w, h);
        let (a, b) = (frame(0, w, h), frame(SCROLL_FRAMES, w, h));
        // A column of the log with no dialog over it: row k + 1 of frame 0 is row k of the
        // scrolled frame.
        let x0 = l.text_x as usize;
        let d0 = l.dialog(0);
        let d1 = l.dialog(SCROLL_FRAMES);
        assert!(d0.x.min(d1.x) > l.text_x + 20 * l.cell, "{d0:?} {d1:?}");
        let row = |data: &[u8], y: u32| data[(y * w) as usize * 4 + x0 * 4..][..80 * 4].to_vec();
        let top = l.log.y + l.scale;
        let mut inked = 0;
        for y in top + l.line..top + l.rows.min(8) * l.line {
            assert_eq!(row(&a, y), row(&b, y - l.line), "row {y}");
            inked += usize::from(row(&a, y).chunks_exact(4).any(|p| p[0] < 0x80));
        }
        assert!(inked > 10, "too little text: {inked} rows with ink");
    }

    #[test]
    fn caret_blinks_and_clock_ticks() {
        let (w, h) = (640, 480);
        let l = Layout::new(w, h);
        let at = |data: &[u8], r: Rect| data[((r.y + 2) * w + r.x) as usize * 4];
        // A blink that is not a scroll step (those redraw the whole log), with the dragged
        // window away from the caret.
        let n = (1..40)
            .map(|k| k * BLINK_FRAMES)
            .find(|&n| {
                let caret = l.caret(n);
                n % SCROLL_FRAMES != 0
                    && l.dialog(n).intersection(&caret).is_none()
                    && l.dialog(n - 1).intersection(&caret).is_none()
            })
            .expect("a visible blink");
        let caret = l.caret(n);
        assert_eq!(caret, l.caret(n - 1));
        let (before, after) = (frame(n - 1, w, h), frame(n, w, h));
        let on = Layout::caret_on(n);
        assert_eq!(at(&after, caret) == 0, on, "frame {n}");
        assert_eq!(at(&before, caret) == 0, !on, "frame {}", n - 1);
        assert!(damage(n - 1, n, w, h).contains(&caret));
        assert!(damage(CLOCK_FPS - 1, CLOCK_FPS, w, h).contains(&l.clock));
        assert!(!damage(0, 1, w, h).contains(&l.clock));
    }

    #[test]
    fn the_dialog_moves_smoothly() {
        let l = Layout::new(1920, 1080);
        let mut prev = l.dialog(0);
        let mut moved = 0;
        for n in 1..2000 {
            let d = l.dialog(n);
            let (dx, dy) = (d.x.abs_diff(prev.x), d.y.abs_diff(prev.y));
            assert!(
                dx <= 1920 / 300 + 1 && dy <= 1080 / 230 + 1,
                "frame {n}: {dx}, {dy}"
            );
            assert!(d.x + d.width <= 1920 && d.y + d.height <= l.panel.y);
            moved += usize::from(dx + dy > 0);
            prev = d;
        }
        assert!(moved > 1800, "moved in only {moved} frames");
    }

    #[test]
    fn damage_covers_every_change() {
        for (w, h) in [(320, 240), (800, 600)] {
            for (from, to) in [
                (0, 1),
                (5, 8),
                (7, 8),
                (29, 30),
                (100, 103),
                (15, 16),
                (3, 3),
            ] {
                let (a, b) = (frame(from, w, h), frame(to, w, h));
                let rects = damage(from, to, w, h);
                for (i, (p, q)) in a.chunks_exact(4).zip(b.chunks_exact(4)).enumerate() {
                    if p != q {
                        let (x, y) = (i as u32 % w, i as u32 / w);
                        assert!(
                            rects.iter().any(|r| r.contains(x, y)),
                            "{w}x{h} {from}->{to}: ({x}, {y}) changed outside {rects:?}"
                        );
                    }
                }
                // Redrawing only the damage turns frame `from` into frame `to`.
                let mut updated = a.clone();
                for r in &rects {
                    render_region(to, &mut updated, w, h, w as usize * 4, *r);
                }
                assert!(updated == b, "{w}x{h} {from}->{to}: update differs");
            }
        }
    }

    #[test]
    fn tiny_pictures_do_not_panic() {
        for (w, h) in [(1, 1), (7, 3), (64, 40), (200, 30), (319, 239)] {
            let _ = frame(9, w, h);
            let _ = damage(0, 40, w, h);
        }
    }
}
