//! The guest's cursor as QEMU defines it (`CursorDefine`, `MouseSet`). There is no SPICE cursor
//! channel yet: the latest shape and position are kept for it, and the first cursor event says
//! once that clients do not see it.

use spice_shim_core::log;

/// Largest cursor side taken (as spice-server's limit).
pub const MAX_CURSOR_SIDE: i32 = 512;

/// A cursor shape: ARGB8888 pixels, native-endian words, rows of `width`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorShape {
    pub width: u32,
    pub height: u32,
    pub hot_x: u32,
    pub hot_y: u32,
    pub argb: Vec<u8>,
}

/// The latest cursor shape and position.
#[derive(Debug, Default)]
pub struct Cursor {
    shape: Option<CursorShape>,
    position: Option<(i32, i32)>,
    visible: bool,
    told: bool,
}

impl Cursor {
    /// `CursorDefine`. A shape that is empty, too large, has its hot spot outside, or has the
    /// wrong number of bytes is ignored (and said so).
    pub fn define(&mut self, width: i32, height: i32, hot_x: i32, hot_y: i32, argb: &[u8]) {
        let ok = (1..=MAX_CURSOR_SIDE).contains(&width)
            && (1..=MAX_CURSOR_SIDE).contains(&height)
            && (0..width).contains(&hot_x)
            && (0..height).contains(&hot_y)
            && argb.len() == width as usize * height as usize * 4;
        if !ok {
            log::warn(&format!(
                "QEMU's CursorDefine ignored: {width}x{height}, hot spot {hot_x},{hot_y}, {} bytes",
                argb.len()
            ));
            return;
        }
        self.shape = Some(CursorShape {
            width: width as u32,
            height: height as u32,
            hot_x: hot_x as u32,
            hot_y: hot_y as u32,
            argb: argb.to_vec(),
        });
        self.tell_once();
    }

    /// `MouseSet`.
    pub fn set(&mut self, x: i32, y: i32, on: bool) {
        self.position = Some((x, y));
        self.visible = on;
        self.tell_once();
    }

    pub fn shape(&self) -> Option<&CursorShape> {
        self.shape.as_ref()
    }

    /// Position and visibility, once QEMU set them.
    pub fn position(&self) -> Option<(i32, i32, bool)> {
        self.position.map(|(x, y)| (x, y, self.visible))
    }

    fn tell_once(&mut self) {
        if !self.told {
            self.told = true;
            log::info(
                "QEMU draws the guest's cursor apart from the picture; SPICE clients do not see it \
                 yet (no cursor channel)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_valid_shape_and_position() {
        let mut c = Cursor::default();
        c.define(2, 1, 1, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        c.define(2, 1, 2, 0, &[0; 8]); // hot spot outside: ignored
        c.define(2, 2, 0, 0, &[0; 8]); // too few bytes: ignored
        c.define(1000, 1, 0, 0, &[0; 4000]); // too large: ignored
        let s = c.shape().unwrap();
        assert_eq!((s.width, s.height, s.hot_x, s.hot_y), (2, 1, 1, 0));
        assert_eq!(s.argb, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(c.position(), None);
        c.set(10, 20, true);
        c.set(11, 21, false);
        assert_eq!(c.position(), Some((11, 21, false)));
    }
}
