//! A ring of scanout buffers that are only redrawn once the host got them back.

use crate::buffer::GuestBuffer;
use crate::error::{Error, Result};
use crate::pattern::{Pattern, render, render_update};

/// The test guest as a host drives it: `N` [`GuestBuffer`]s (double or triple buffering),
/// each either free or busy with one pending draw.
///
/// A frame goes: [`next_free`](Self::next_free) → [`render_into`](Self::render_into) → hand
/// the buffer's fd to the consumer → [`mark_busy`](Self::mark_busy) with the draw's id (the
/// cookie) → when the consumer is done, [`release`](Self::release) with the same id. A busy
/// buffer is never handed out, drawn into, or released twice. Single-threaded: wrap it in a
/// `Mutex` to release from a callback thread.
#[derive(Debug)]
pub struct Guest {
    buffers: Vec<GuestBuffer>,
    busy: Vec<Option<u64>>,
    /// The frame of `pattern` each buffer holds, upright, if known.
    holds: Vec<Option<u64>>,
    pattern: Pattern,
    last: usize,
    bottom_up: bool,
}

impl Guest {
    /// `nbuffers` (1 to 8; 2 or 3 make sense) XRGB8888 buffers of `width` x `height` with row
    /// stride `stride` (`None`: `width * 4`), drawn with `pattern`.
    pub fn new(
        width: u32,
        height: u32,
        stride: Option<u32>,
        pattern: Pattern,
        nbuffers: usize,
    ) -> Result<Self> {
        if !(1..=8).contains(&nbuffers) {
            return Err(Error::Geometry(format!(
                "{nbuffers} buffers, expected 1 to 8"
            )));
        }
        let stride = match stride {
            Some(s) => s,
            None => width
                .checked_mul(4)
                .ok_or_else(|| Error::Geometry(format!("width {width} too large")))?,
        };
        let buffers = (0..nbuffers)
            .map(|_| GuestBuffer::with_layout(width, height, stride, 0))
            .collect::<Result<Vec<_>>>()?;
        Self::with_buffers(buffers, pattern)
    }

    /// A ring over buffers made by the caller, e.g. NV12 ones or ones with an offset.
    pub fn with_buffers(buffers: Vec<GuestBuffer>, pattern: Pattern) -> Result<Self> {
        if buffers.is_empty() {
            return Err(Error::Geometry("a Guest needs at least one buffer".into()));
        }
        Ok(Self {
            busy: vec![None; buffers.len()],
            holds: vec![None; buffers.len()],
            last: buffers.len() - 1,
            buffers,
            pattern,
            bottom_up: false,
        })
    }

    /// Number of buffers.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// The buffer at `index`, e.g. for its fd and geometry.
    pub fn buffer(&self, index: usize) -> Option<&GuestBuffer> {
        self.buffers.get(index)
    }

    /// The pattern drawn by [`render_into`](Self::render_into).
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Changes the pattern for the following frames.
    pub fn set_pattern(&mut self, pattern: Pattern) {
        if pattern != self.pattern {
            self.holds.fill(None);
        }
        self.pattern = pattern;
    }

    /// A free buffer, the first one after the one last marked busy, so free buffers are used
    /// in turn. `None` while every buffer is busy.
    pub fn next_free(&self) -> Option<usize> {
        let n = self.buffers.len();
        (1..=n)
            .map(|k| (self.last + k) % n)
            .find(|&i| self.busy[i].is_none())
    }

    /// The draw holding buffer `index`, if it is busy.
    pub fn draw_id(&self, index: usize) -> Option<u64> {
        self.busy.get(index).copied().flatten()
    }

    /// Number of busy buffers.
    pub fn busy_count(&self) -> usize {
        self.busy.iter().filter(|b| b.is_some()).count()
    }

    fn check_free(&self, index: usize) -> Result<()> {
        match self.busy.get(index) {
            None => Err(Error::NoSuchBuffer(index)),
            Some(Some(draw_id)) => Err(Error::BufferBusy {
                index,
                draw_id: *draw_id,
            }),
            Some(None) => Ok(()),
        }
    }

    /// Draws frame `frame_no` of the pattern into free buffer `index` (upside down if
    /// [`set_bottom_up`](Self::set_bottom_up) is on).
    ///
    /// A buffer that still holds an earlier frame of the same pattern (upright) is only
    /// brought up to date ([`render_update`]): for the desktop that redraws just what
    /// changed since, a small part of the picture.
    pub fn render_into(&mut self, index: usize, frame_no: u64) -> Result<()> {
        self.check_free(index)?;
        let buf = &mut self.buffers[index];
        match self.holds[index] {
            Some(from) if !self.bottom_up => render_update(self.pattern, from, frame_no, buf),
            _ => render(self.pattern, frame_no, buf),
        }
        if self.bottom_up {
            buf.flip_rows();
            self.holds[index] = None;
        } else {
            self.holds[index] = Some(frame_no);
        }
        Ok(())
    }

    /// Stores frames bottom-up (row 0 is the bottom of the picture), as a GL renderer does;
    /// the host must then announce its scanouts with `y0_top` false.
    pub fn set_bottom_up(&mut self, on: bool) {
        self.bottom_up = on;
    }

    /// Whether frames are stored bottom-up.
    pub fn bottom_up(&self) -> bool {
        self.bottom_up
    }

    /// Marks free buffer `index` as in use by draw `draw_id` until [`release`](Self::release).
    ///
    /// Fails if the buffer is busy or if `draw_id` is already pending on another buffer.
    pub fn mark_busy(&mut self, index: usize, draw_id: u64) -> Result<()> {
        self.check_free(index)?;
        if let Some(other) = self.busy.iter().position(|&b| b == Some(draw_id)) {
            return Err(Error::DuplicateDrawId {
                draw_id,
                index: other,
            });
        }
        self.busy[index] = Some(draw_id);
        self.last = index;
        Ok(())
    }

    /// Frees the buffer held by draw `draw_id`. Returns `false`, and changes nothing, if no
    /// buffer is busy with that draw (unknown id, or already released).
    pub fn release(&mut self, draw_id: u64) -> bool {
        match self.busy.iter_mut().find(|b| **b == Some(draw_id)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bottom_up_frames_are_the_upright_ones_flipped() {
        let mut up = super::Guest::new(64, 48, Some(320), super::Pattern::Bars, 1).unwrap();
        let mut down = super::Guest::new(64, 48, Some(320), super::Pattern::Bars, 1).unwrap();
        down.set_bottom_up(true);
        up.render_into(0, 5).unwrap();
        down.render_into(0, 5).unwrap();
        let (a, b) = (up.buffer(0).unwrap(), down.buffer(0).unwrap());
        for y in 0..48usize {
            let row =
                |buf: &crate::GuestBuffer, y: usize| buf.pixels()[y * 320..y * 320 + 256].to_vec();
            assert_eq!(row(a, y), row(b, 47 - y), "row {y}");
        }
    }

    use super::*;

    #[test]
    fn buffers_are_used_in_turn() {
        let mut guest = Guest::new(64, 48, None, Pattern::Bars, 3).unwrap();
        assert_eq!(guest.buffer_count(), 3);
        assert_eq!(guest.buffer(0).unwrap().stride(), 256);
        for draw in 0..9u64 {
            let i = guest.next_free().unwrap();
            assert_eq!(i, draw as usize % 3);
            guest.render_into(i, draw).unwrap();
            guest.mark_busy(i, draw).unwrap();
            assert!(guest.release(draw));
        }
        assert_eq!(guest.busy_count(), 0);
    }

    #[test]
    fn never_hands_out_a_busy_buffer() {
        let mut guest = Guest::new(32, 20, Some(160), Pattern::Counter, 3).unwrap();
        let mut pending: Vec<(u64, usize)> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for draw in 0..2000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) && !pending.is_empty() {
                // Draws come back in any order.
                let (id, _) = pending.swap_remove(seed as usize / 3 % pending.len());
                assert!(guest.release(id));
                assert!(!guest.release(id), "released twice");
                continue;
            }
            match guest.next_free() {
                Some(i) => {
                    assert!(
                        pending.iter().all(|&(_, b)| b != i),
                        "busy buffer {i} handed out"
                    );
                    guest.render_into(i, draw).unwrap();
                    guest.mark_busy(i, draw).unwrap();
                    pending.push((draw, i));
                }
                None => assert_eq!(pending.len(), 3),
            }
            assert_eq!(guest.busy_count(), pending.len());
            for &(id, i) in &pending {
                assert_eq!(guest.draw_id(i), Some(id));
            }
        }
    }

    #[test]
    fn busy_buffers_are_protected() {
        let mut guest = Guest::new(16, 20, None, Pattern::Bars, 2).unwrap();
        guest.mark_busy(0, 7).unwrap();
        assert!(matches!(
            guest.mark_busy(0, 8),
            Err(Error::BufferBusy {
                index: 0,
                draw_id: 7
            })
        ));
        assert!(matches!(
            guest.render_into(0, 1),
            Err(Error::BufferBusy { .. })
        ));
        assert!(matches!(
            guest.mark_busy(1, 7),
            Err(Error::DuplicateDrawId {
                draw_id: 7,
                index: 0
            })
        ));
        assert!(matches!(guest.mark_busy(2, 9), Err(Error::NoSuchBuffer(2))));
        assert!(matches!(
            guest.render_into(5, 0),
            Err(Error::NoSuchBuffer(5))
        ));
        assert_eq!(guest.next_free(), Some(1));
        guest.mark_busy(1, 8).unwrap();
        assert_eq!(guest.next_free(), None);
        assert!(!guest.release(9));
        assert!(guest.release(7));
        assert!(!guest.release(7));
        assert_eq!(guest.draw_id(1), Some(8));
        assert_eq!(guest.next_free(), Some(0));
        guest.render_into(0, 3).unwrap();
    }

    #[test]
    fn renders_the_pattern() {
        let mut guest = Guest::new(640, 480, Some(640 * 4 + 64), Pattern::Counter, 2).unwrap();
        guest.render_into(1, 1234).unwrap();
        let image = crate::Image::from_buffer(guest.buffer(1).unwrap()).unwrap();
        assert_eq!(image.read_counter(), Some(1234));
        guest.set_pattern(Pattern::Bars);
        assert_eq!(guest.pattern(), Pattern::Bars);
        guest.render_into(1, 1).unwrap();
        crate::check_bars(
            &crate::Image::from_buffer(guest.buffer(1).unwrap()).unwrap(),
            0,
        )
        .unwrap();
    }

    #[test]
    fn nv12_ring_and_bad_counts() {
        let buffers = vec![
            GuestBuffer::new_nv12(64, 48).unwrap(),
            GuestBuffer::new_nv12(64, 48).unwrap(),
        ];
        let mut guest = Guest::with_buffers(buffers, Pattern::Bars).unwrap();
        guest.render_into(0, 0).unwrap();
        assert!(Guest::with_buffers(Vec::new(), Pattern::Bars).is_err());
        assert!(Guest::new(64, 48, None, Pattern::Bars, 0).is_err());
        assert!(Guest::new(64, 48, None, Pattern::Bars, 9).is_err());
        assert!(Guest::new(64, 48, Some(100), Pattern::Bars, 2).is_err());
    }

    #[test]
    fn desktop_ring_redraws_only_damage_and_matches_full_frames() {
        let (w, h) = (640, 400);
        let mut guest = Guest::new(w, h, None, Pattern::Desktop, 3).unwrap();
        let mut reference = GuestBuffer::new(w, h).unwrap();
        for frame in 0..40u64 {
            let i = guest.next_free().unwrap();
            guest.render_into(i, frame).unwrap();
            render(Pattern::Desktop, frame, &mut reference);
            assert!(
                guest.buffer(i).unwrap().pixels() == reference.pixels(),
                "frame {frame}"
            );
            guest.mark_busy(i, frame).unwrap();
            assert!(guest.release(frame));
        }
        // Switching pattern or orientation forgets what the buffers hold.
        guest.set_pattern(Pattern::Video);
        guest.set_pattern(Pattern::Desktop);
        guest.set_bottom_up(true);
        let i = guest.next_free().unwrap();
        guest.render_into(i, 50).unwrap();
        render(Pattern::Desktop, 50, &mut reference);
        reference.flip_rows();
        assert!(guest.buffer(i).unwrap().pixels() == reference.pixels());
        guest.set_bottom_up(false);
        guest.render_into(i, 51).unwrap();
        render(Pattern::Desktop, 51, &mut reference);
        assert!(guest.buffer(i).unwrap().pixels() == reference.pixels());
    }
}
