//! SPICE keyboard and mouse events → QEMU's `Keyboard`/`Mouse` calls on the console.
//!
//! The shim calls the input callback on its threads; the callback only queues the event (a
//! bounded queue: a stuck QEMU costs dropped events, never a blocked shim thread or unbounded
//! memory), and `forward` makes the D-Bus calls in order on the front end's side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_channel::mpsc;
use futures_util::StreamExt;
use spice_shim_core::InputFn;
use spice_shim_core::log;
use spice_shim_core::proto::InputEvent;
#[cfg(test)]
use spice_shim_core::proto::inputs::decode_scancodes;

use crate::bus::{KeyboardProxy, MouseProxy};

/// Events queued toward QEMU before new ones are dropped.
pub const INPUT_QUEUE: usize = 256;

/// QEMU's key number ("qnum") for a scancode: `sc & 0x7f`, plus `0x80` for E0-prefixed keys;
/// Pause (`E1 1D 45`) is `0xC6`. `None` for other E1 sequences.
pub fn qnum(scancode: u32) -> Option<u32> {
    match scancode >> 8 {
        0 => Some(scancode & 0x7F),
        0xE0 => Some((scancode & 0x7F) | 0x80),
        _ if scancode == 0xE1_1D45 => Some(0xC6),
        _ => None,
    }
}

/// QEMU's button number for a SPICE one (1 left, 2 middle, 3 right, 4 wheel up, 5 wheel down,
/// 6 side, 7 extra → 0..=6).
pub fn qemu_button(spice: u8) -> Option<u32> {
    (1..=7).contains(&spice).then(|| u32::from(spice) - 1)
}

/// One D-Bus call on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuInput {
    KeyPress(u32),
    KeyRelease(u32),
    ButtonPress(u32),
    ButtonRelease(u32),
    /// `Mouse.SetAbsPosition`.
    Position(u32, u32),
    /// `Mouse.RelMotion`.
    Motion(i32, i32),
}

/// Turns SPICE events into QEMU calls. A position while QEMU's mouse is relative becomes the
/// motion from the previous position, and a motion while it is absolute moves the last
/// position, so a client in the "wrong" mouse mode still moves the pointer.
#[derive(Debug, Default)]
pub struct Translator {
    position: Option<(u32, u32)>,
}

impl Translator {
    pub fn translate(&mut self, ev: &InputEvent, absolute: bool) -> Vec<QemuInput> {
        match ev {
            InputEvent::KeyDown(_) | InputEvent::KeyUp(_) | InputEvent::KeyScancode(_) => ev
                .key_strokes()
                .into_iter()
                .filter_map(|k| {
                    let q = qnum(k.scancode)?;
                    Some(if k.down {
                        QemuInput::KeyPress(q)
                    } else {
                        QemuInput::KeyRelease(q)
                    })
                })
                .collect(),
            InputEvent::KeyModifiers(_) => Vec::new(),
            InputEvent::MousePress { button, .. } => qemu_button(*button)
                .map(QemuInput::ButtonPress)
                .into_iter()
                .collect(),
            InputEvent::MouseRelease { button, .. } => qemu_button(*button)
                .map(QemuInput::ButtonRelease)
                .into_iter()
                .collect(),
            InputEvent::MousePosition { x, y, .. } => {
                let last = self.position.replace((*x, *y));
                if absolute {
                    vec![QemuInput::Position(*x, *y)]
                } else {
                    match last {
                        Some((lx, ly)) if (lx, ly) != (*x, *y) => vec![QemuInput::Motion(
                            (i64::from(*x) - i64::from(lx)) as i32,
                            (i64::from(*y) - i64::from(ly)) as i32,
                        )],
                        _ => Vec::new(),
                    }
                }
            }
            InputEvent::MouseMotion { dx, dy, .. } => {
                if absolute {
                    let (x, y) = self.position.unwrap_or((0, 0));
                    let x = (i64::from(x) + i64::from(*dx)).clamp(0, i64::from(u16::MAX)) as u32;
                    let y = (i64::from(y) + i64::from(*dy)).clamp(0, i64::from(u16::MAX)) as u32;
                    self.position = Some((x, y));
                    vec![QemuInput::Position(x, y)]
                } else {
                    vec![QemuInput::Motion(*dx, *dy)]
                }
            }
        }
    }
}

/// The shim's input callback and the queue it feeds.
pub(crate) struct InputQueue {
    pub callback: InputFn,
    pub events: mpsc::Receiver<InputEvent>,
}

/// A queue whose callback counts the events it drops in `dropped`.
pub(crate) fn queue(dropped: Arc<AtomicU64>) -> InputQueue {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let tx = Mutex::new(tx);
    let d = dropped;
    let callback: InputFn = Arc::new(move |ev: &InputEvent| {
        let full = tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_send(ev.clone())
            .is_err();
        if full && d.fetch_add(1, Ordering::Relaxed) == 0 {
            log::warn("QEMU does not keep up with input events: some are dropped");
        }
    });
    InputQueue {
        callback,
        events: rx,
    }
}

/// Sends queued events to QEMU, one call after the other, until the queue closes.
pub(crate) async fn forward(
    mut events: mpsc::Receiver<InputEvent>,
    keyboard: KeyboardProxy<'_>,
    mouse: MouseProxy<'_>,
    absolute: &AtomicBool,
) {
    let mut tr = Translator::default();
    while let Some(ev) = events.next().await {
        for call in tr.translate(&ev, absolute.load(Ordering::Relaxed)) {
            let r = match call {
                QemuInput::KeyPress(q) => keyboard.press(q).await,
                QemuInput::KeyRelease(q) => keyboard.release(q).await,
                QemuInput::ButtonPress(b) => mouse.press(b).await,
                QemuInput::ButtonRelease(b) => mouse.release(b).await,
                QemuInput::Position(x, y) => mouse.set_abs_position(x, y).await,
                QemuInput::Motion(dx, dy) => mouse.rel_motion(dx, dy).await,
            };
            if let Err(e) = r {
                log::debug(&format!("QEMU refused {call:?}: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strokes(bytes: &[u8]) -> Vec<(u32, bool)> {
        decode_scancodes(bytes)
            .into_iter()
            .map(|k| (k.scancode, k.down))
            .collect()
    }

    #[test]
    fn scancodes_decode_as_the_c_api_does() {
        assert_eq!(strokes(&[0x1E, 0x9E]), [(0x1E, true), (0x1E, false)]);
        assert_eq!(
            strokes(&[0xE0, 0x48, 0xE0, 0xC8]),
            [(0xE048, true), (0xE048, false)]
        );
        assert_eq!(
            strokes(&[0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]),
            [(0xE1_1D45, true), (0xE1_1D45, false)]
        );
        assert_eq!(strokes(&[0, 0x1C, 0]), [(0x1C, true)]);
        assert_eq!(strokes(&[0x1C, 0xE0]), [(0x1C, true)]);
        assert_eq!(strokes(&[0xE1, 0x1D]), []);
    }

    #[test]
    fn spice_key_codes_become_qnums() {
        let mut t = Translator::default();
        // 'a': KEY_DOWN 0x1e, KEY_UP 0x9e.
        assert_eq!(
            t.translate(&InputEvent::KeyDown(0x1E), false),
            [QemuInput::KeyPress(0x1E)]
        );
        assert_eq!(
            t.translate(&InputEvent::KeyUp(0x9E), false),
            [QemuInput::KeyRelease(0x1E)]
        );
        // Up arrow: E0 48, sent as 0x48e0; released as 0xc8e0.
        assert_eq!(
            t.translate(&InputEvent::KeyDown(0x48E0), false),
            [QemuInput::KeyPress(0xC8)]
        );
        assert_eq!(
            t.translate(&InputEvent::KeyUp(0xC8E0), false),
            [QemuInput::KeyRelease(0xC8)]
        );
        // Right Ctrl: E0 1D.
        assert_eq!(
            t.translate(&InputEvent::KeyDown(0x1DE0), true),
            [QemuInput::KeyPress(0x9D)]
        );
        // Pause as one KEY_SCANCODE message.
        assert_eq!(
            t.translate(
                &InputEvent::KeyScancode(vec![0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]),
                false
            ),
            [QemuInput::KeyPress(0xC6), QemuInput::KeyRelease(0xC6)]
        );
        assert_eq!(t.translate(&InputEvent::KeyModifiers(7), false), []);
    }

    #[test]
    fn buttons_and_wheel() {
        let mut t = Translator::default();
        let press = |b| InputEvent::MousePress {
            button: b,
            buttons: 0,
        };
        let release = |b| InputEvent::MouseRelease {
            button: b,
            buttons: 0,
        };
        assert_eq!(t.translate(&press(1), true), [QemuInput::ButtonPress(0)]);
        assert_eq!(
            t.translate(&release(3), true),
            [QemuInput::ButtonRelease(2)]
        );
        assert_eq!(t.translate(&press(4), false), [QemuInput::ButtonPress(3)]);
        assert_eq!(
            t.translate(&release(5), false),
            [QemuInput::ButtonRelease(4)]
        );
        assert_eq!(t.translate(&press(7), false), [QemuInput::ButtonPress(6)]);
        assert_eq!(t.translate(&press(0), false), []);
        assert_eq!(t.translate(&press(8), false), []);
    }

    #[test]
    fn motion_follows_the_mouse_mode() {
        let mut t = Translator::default();
        let pos = |x, y| InputEvent::MousePosition {
            x,
            y,
            buttons: 0,
            display_id: 0,
        };
        let rel = |dx, dy| InputEvent::MouseMotion { dx, dy, buttons: 0 };
        assert_eq!(
            t.translate(&pos(100, 50), true),
            [QemuInput::Position(100, 50)]
        );
        assert_eq!(t.translate(&rel(-5, 3), false), [QemuInput::Motion(-5, 3)]);
        // Absolute mouse, relative motion: moves the last position.
        assert_eq!(
            t.translate(&rel(-5, 3), true),
            [QemuInput::Position(95, 53)]
        );
        assert_eq!(
            t.translate(&rel(-500, -500), true),
            [QemuInput::Position(0, 0)]
        );
        // Relative mouse, positions: the difference.
        assert_eq!(
            t.translate(&pos(10, 10), false),
            [QemuInput::Motion(10, 10)]
        );
        assert_eq!(t.translate(&pos(10, 10), false), []);
        assert_eq!(t.translate(&pos(4, 12), false), [QemuInput::Motion(-6, 2)]);
    }

    #[test]
    fn the_callback_never_blocks_and_drops_beyond_the_queue() {
        let dropped = Arc::new(AtomicU64::new(0));
        let q = queue(dropped.clone());
        for _ in 0..INPUT_QUEUE + 10 {
            (q.callback)(&InputEvent::KeyDown(0x1E));
        }
        assert!(dropped.load(Ordering::Relaxed) >= 9);
    }
}
