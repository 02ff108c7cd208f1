//! Inputs channel messages: keyboard and mouse events from the client.

use super::base::{ClientBaseMsg, parse_client_base};
use super::error::ProtoError;
use super::framing::ServerMessage;
use super::msg_type::{client, server};
use super::wire::{Put, Reader, need};

/// Send MOUSE_MOTION_ACK after this many MOTION/POSITION messages
/// (`SPICE_INPUT_MOTION_ACK_BUNCH`); the client stops after 8 unacked.
pub const MOTION_ACK_BUNCH: u32 = 4;

/// Inputs INIT (101): u16 keyboard modifiers, sent at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputsInit {
    /// See [`super::consts::keyboard_modifier`].
    pub keyboard_modifiers: u16,
}

impl ServerMessage for InputsInit {
    const MSG_TYPE: u16 = server::inputs::INIT;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u16(self.keyboard_modifiers);
        Ok(())
    }
}

/// KEY_MODIFIERS (102) from the server: u16 modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyModifiers {
    /// See [`super::consts::keyboard_modifier`].
    pub modifiers: u16,
}

impl ServerMessage for KeyModifiers {
    const MSG_TYPE: u16 = server::inputs::KEY_MODIFIERS;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u16(self.modifiers);
        Ok(())
    }
}

/// MOUSE_MOTION_ACK (111): empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MouseMotionAck;

impl ServerMessage for MouseMotionAck {
    const MSG_TYPE: u16 = server::inputs::MOUSE_MOTION_ACK;
    fn write_body(&self, _out: &mut Vec<u8>) -> Result<(), ProtoError> {
        Ok(())
    }
}

/// A keyboard or mouse event sent by the client.
///
/// Key codes are PC XT set 1; release = code | 0x80; extended keys are
/// `0xE0 | sc << 8`. Buttons: 1 L, 2 M, 3 R, 4 up, 5 down, 6 side, 7 extra;
/// button mask bits 1, 2, 4, 8, 16, 32, 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    /// KEY_DOWN (101): scancode pressed.
    KeyDown(u32),
    /// KEY_UP (102): scancode released.
    KeyUp(u32),
    /// KEY_MODIFIERS (103): lock state the client wants.
    KeyModifiers(u16),
    /// KEY_SCANCODE (104): raw scancode bytes (atomic press + release).
    KeyScancode(Vec<u8>),
    /// MOUSE_MOTION (111): relative motion (server mouse mode).
    MouseMotion {
        /// Horizontal delta.
        dx: i32,
        /// Vertical delta.
        dy: i32,
        /// Button mask.
        buttons: u16,
    },
    /// MOUSE_POSITION (112): absolute position (client mouse mode).
    MousePosition {
        /// X in primary-surface pixels.
        x: u32,
        /// Y in primary-surface pixels.
        y: u32,
        /// Button mask.
        buttons: u16,
        /// Display id.
        display_id: u8,
    },
    /// MOUSE_PRESS (113).
    MousePress {
        /// Button number.
        button: u8,
        /// Button mask after the press.
        buttons: u16,
    },
    /// MOUSE_RELEASE (114).
    MouseRelease {
        /// Button number.
        button: u8,
        /// Button mask after the release.
        buttons: u16,
    },
}

impl InputEvent {
    /// The key strokes of a SPICE key event. As spice-server: a KEY_DOWN/KEY_UP code is its bytes,
    /// low first, up to the first zero byte.
    pub fn key_strokes(&self) -> Vec<KeyStroke> {
        match self {
            InputEvent::KeyDown(code) | InputEvent::KeyUp(code) => {
                let bytes = code.to_le_bytes();
                let n = bytes.iter().position(|&b| b == 0).unwrap_or(4);
                decode_scancodes(&bytes[..n])
            }
            InputEvent::KeyScancode(bytes) => decode_scancodes(bytes),
            _ => Vec::new(),
        }
    }

    /// Whether this event counts towards [`MOTION_ACK_BUNCH`].
    pub fn is_motion(&self) -> bool {
        matches!(
            self,
            InputEvent::MouseMotion { .. } | InputEvent::MousePosition { .. }
        )
    }
}

/// One key transition as the guest's keyboard controller would see it: a PC XT set 1 scancode
/// (`0xE0xx` for E0-prefixed keys, `0xE1xxxx` for the E1 sequence of Pause) without its release
/// bit, and whether it is pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStroke {
    pub scancode: u32,
    pub down: bool,
}

/// Decodes PC XT set 1 bytes into key strokes.
///
/// Zero bytes are skipped, `E0 xx` is one key, `E1 xx yy` is one key, the release bit of the
/// key's last byte says up or down, and a truncated prefix ends the input.
pub fn decode_scancodes(bytes: &[u8]) -> Vec<KeyStroke> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (scancode, last) = match b {
            0 => {
                i += 1;
                continue;
            }
            0xE0 if i + 1 < bytes.len() => {
                i += 2;
                (0xE000 | u32::from(bytes[i - 1] & 0x7F), bytes[i - 1])
            }
            0xE1 if i + 2 < bytes.len() => {
                i += 3;
                (
                    0xE1_0000
                        | u32::from(bytes[i - 2] & 0x7F) << 8
                        | u32::from(bytes[i - 1] & 0x7F),
                    bytes[i - 2],
                )
            }
            0xE0 | 0xE1 => break,
            _ => {
                i += 1;
                (u32::from(b & 0x7F), b)
            }
        };
        out.push(KeyStroke {
            scancode,
            down: last & 0x80 == 0,
        });
    }
    out
}

/// A message from the client on the inputs channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInputsMsg {
    /// A base message (types 1..=6).
    Base(ClientBaseMsg),
    /// A keyboard or mouse event.
    Input(InputEvent),
    /// A type this parser does not know; not an error.
    Unknown {
        /// Message type.
        msg_type: u16,
    },
}

/// Parses a client inputs-channel message.
pub fn parse_client_inputs(msg_type: u16, body: &[u8]) -> Result<ClientInputsMsg, ProtoError> {
    use client::inputs as t;
    if let Some(base) = parse_client_base(msg_type, body)? {
        return Ok(ClientInputsMsg::Base(base));
    }
    let event = match msg_type {
        t::KEY_DOWN | t::KEY_UP => {
            const WHAT: &str = "inputs KEY_DOWN/KEY_UP body";
            need(WHAT, body, 4)?;
            let code = Reader::new(WHAT, body).u32()?;
            if msg_type == t::KEY_DOWN {
                InputEvent::KeyDown(code)
            } else {
                InputEvent::KeyUp(code)
            }
        }
        t::KEY_MODIFIERS => {
            const WHAT: &str = "inputs KEY_MODIFIERS body";
            need(WHAT, body, 2)?;
            InputEvent::KeyModifiers(Reader::new(WHAT, body).u16()?)
        }
        t::KEY_SCANCODE => InputEvent::KeyScancode(body.to_vec()),
        t::MOUSE_MOTION => {
            const WHAT: &str = "inputs MOUSE_MOTION body";
            need(WHAT, body, 10)?;
            let mut r = Reader::new(WHAT, body);
            InputEvent::MouseMotion {
                dx: r.i32()?,
                dy: r.i32()?,
                buttons: r.u16()?,
            }
        }
        t::MOUSE_POSITION => {
            const WHAT: &str = "inputs MOUSE_POSITION body";
            need(WHAT, body, 11)?;
            let mut r = Reader::new(WHAT, body);
            InputEvent::MousePosition {
                x: r.u32()?,
                y: r.u32()?,
                buttons: r.u16()?,
                display_id: r.u8()?,
            }
        }
        t::MOUSE_PRESS | t::MOUSE_RELEASE => {
            const WHAT: &str = "inputs MOUSE_PRESS/MOUSE_RELEASE body";
            need(WHAT, body, 3)?;
            let mut r = Reader::new(WHAT, body);
            let button = r.u8()?;
            let buttons = r.u16()?;
            if msg_type == t::MOUSE_PRESS {
                InputEvent::MousePress { button, buttons }
            } else {
                InputEvent::MouseRelease { button, buttons }
            }
        }
        _ => return Ok(ClientInputsMsg::Unknown { msg_type }),
    };
    Ok(ClientInputsMsg::Input(event))
}

/// Counts motion events and says when to send MOUSE_MOTION_ACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MotionAckCounter {
    count: u32,
}

impl MotionAckCounter {
    /// Records an event; true when a MOUSE_MOTION_ACK must be sent now
    /// (after every [`MOTION_ACK_BUNCH`] motion or position events).
    pub fn on_event(&mut self, event: &InputEvent) -> bool {
        if !event.is_motion() {
            return false;
        }
        self.count += 1;
        if self.count >= MOTION_ACK_BUNCH {
            self.count = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_inputs_messages() {
        assert_eq!(
            InputsInit {
                keyboard_modifiers: 2
            }
            .to_body()
            .unwrap(),
            [2, 0]
        );
        assert_eq!(InputsInit::MSG_TYPE, 101);
        assert_eq!(KeyModifiers { modifiers: 5 }.to_body().unwrap(), [5, 0]);
        assert_eq!(KeyModifiers::MSG_TYPE, 102);
        assert!(MouseMotionAck.to_body().unwrap().is_empty());
        assert_eq!(MouseMotionAck::MSG_TYPE, 111);
    }

    #[test]
    fn parses_keys() {
        let ext = 0xE0u32 | (0x48 << 8);
        assert_eq!(
            parse_client_inputs(101, &ext.to_le_bytes()).unwrap(),
            ClientInputsMsg::Input(InputEvent::KeyDown(ext))
        );
        assert_eq!(
            parse_client_inputs(102, &0x9Eu32.to_le_bytes()).unwrap(),
            ClientInputsMsg::Input(InputEvent::KeyUp(0x9E))
        );
        assert_eq!(
            parse_client_inputs(103, &[4, 0]).unwrap(),
            ClientInputsMsg::Input(InputEvent::KeyModifiers(4))
        );
        assert_eq!(
            parse_client_inputs(104, &[0x1E, 0x9E]).unwrap(),
            ClientInputsMsg::Input(InputEvent::KeyScancode(vec![0x1E, 0x9E]))
        );
        assert!(parse_client_inputs(101, &[1, 2, 3]).is_err());
    }

    #[test]
    fn parses_mouse() {
        let mut motion = (-3i32).to_le_bytes().to_vec();
        motion.extend_from_slice(&7i32.to_le_bytes());
        motion.extend_from_slice(&[1, 0]);
        assert_eq!(motion.len(), 10);
        assert_eq!(
            parse_client_inputs(111, &motion).unwrap(),
            ClientInputsMsg::Input(InputEvent::MouseMotion {
                dx: -3,
                dy: 7,
                buttons: 1
            })
        );
        assert!(parse_client_inputs(111, &motion[..9]).is_err());

        let mut pos = 100u32.to_le_bytes().to_vec();
        pos.extend_from_slice(&200u32.to_le_bytes());
        pos.extend_from_slice(&[4, 0, 0]);
        assert_eq!(pos.len(), 11);
        assert_eq!(
            parse_client_inputs(112, &pos).unwrap(),
            ClientInputsMsg::Input(InputEvent::MousePosition {
                x: 100,
                y: 200,
                buttons: 4,
                display_id: 0
            })
        );
        assert_eq!(
            parse_client_inputs(112, &pos[..10])
                .unwrap_err()
                .to_string(),
            "inputs MOUSE_POSITION body too short: 10 bytes, need 11"
        );
        assert_eq!(
            parse_client_inputs(113, &[1, 1, 0]).unwrap(),
            ClientInputsMsg::Input(InputEvent::MousePress {
                button: 1,
                buttons: 1
            })
        );
        assert_eq!(
            parse_client_inputs(114, &[3, 0, 0]).unwrap(),
            ClientInputsMsg::Input(InputEvent::MouseRelease {
                button: 3,
                buttons: 0
            })
        );
        assert!(parse_client_inputs(114, &[3, 0]).is_err());
        assert_eq!(
            parse_client_inputs(150, &[]).unwrap(),
            ClientInputsMsg::Unknown { msg_type: 150 }
        );
    }

    #[test]
    fn motion_ack_every_four() {
        let mut counter = MotionAckCounter::default();
        let motion = InputEvent::MouseMotion {
            dx: 1,
            dy: 1,
            buttons: 0,
        };
        let press = InputEvent::MousePress {
            button: 1,
            buttons: 1,
        };
        let acks: Vec<bool> = (0..8).map(|_| counter.on_event(&motion)).collect();
        assert_eq!(acks, [false, false, false, true, false, false, false, true]);
        assert!(!counter.on_event(&press));
        assert_eq!(MOTION_ACK_BUNCH, 4);
    }
}
