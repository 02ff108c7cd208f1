//! The guest's cursor as QEMU defines it (`CursorDefine`, `MouseSet`), checked and kept; the
//! display passes it on to the shim's cursor channel.

use spice_shim_core::log;
use spice_shim_core::proto::CursorShape;

/// The latest cursor shape and position.
#[derive(Debug, Default)]
pub struct Cursor {
    shape: Option<CursorShape>,
    position: Option<(i32, i32)>,
    visible: bool,
    refused: u64,
}

impl Cursor {
    /// `CursorDefine` (ARGB8888 native-endian words as bytes, rows of `width`). Returns the
    /// shape to show, or `None` if it was refused (empty, over 512x512, hot spot outside, wrong
    /// byte count; logged once as a warning, then at debug level).
    pub fn define(
        &mut self,
        width: i32,
        height: i32,
        hot_x: i32,
        hot_y: i32,
        argb: &[u8],
    ) -> Option<CursorShape> {
        match CursorShape::from_qemu(width, height, hot_x, hot_y, argb) {
            Ok(shape) => {
                self.shape = Some(shape.clone());
                Some(shape)
            }
            Err(e) => {
                self.refused += 1;
                let msg = format!("QEMU's CursorDefine ignored: {e}");
                if self.refused == 1 {
                    log::warn(&msg);
                } else {
                    log::debug(&msg);
                }
                None
            }
        }
    }

    /// `MouseSet`.
    pub fn set(&mut self, x: i32, y: i32, on: bool) {
        self.position = Some((x, y));
        self.visible = on;
    }

    pub fn shape(&self) -> Option<&CursorShape> {
        self.shape.as_ref()
    }

    /// Position and visibility, once QEMU set them.
    pub fn position(&self) -> Option<(i32, i32, bool)> {
        self.position.map(|(x, y)| (x, y, self.visible))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_valid_shape_and_position() {
        let mut c = Cursor::default();
        let px = [0x11223344u32, 0x55667788];
        let bytes: Vec<u8> = px.iter().flat_map(|p| p.to_ne_bytes()).collect();
        assert!(c.define(2, 1, 1, 0, &bytes).is_some());
        assert!(c.define(2, 1, 2, 0, &[0; 8]).is_none()); // hot spot outside
        assert!(c.define(2, 2, 0, 0, &[0; 8]).is_none()); // too few bytes
        assert!(c.define(1000, 1, 0, 0, &[0; 4000]).is_none()); // too large
        let s = c.shape().unwrap();
        assert_eq!((s.width(), s.height(), s.hot_x(), s.hot_y()), (2, 1, 1, 0));
        assert_eq!(s.pixels(), px);
        assert_eq!(c.position(), None);
        c.set(10, 20, true);
        c.set(11, 21, false);
        assert_eq!(c.position(), Some((11, 21, false)));
    }
}
