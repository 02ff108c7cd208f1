//! The session's mouse mode, as spice-server keeps it: server mode (relative motion, the client
//! grabs the pointer) is always possible; client mode (absolute positions) only while the host
//! can take absolute positions (QEMU: a tablet device). Every main channel is told of a change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::outbox::Outbox;
use crate::proto::MouseMode;
use crate::proto::consts::mouse_mode;

struct State {
    client_available: bool,
    current: u32,
    mains: HashMap<u64, Arc<Outbox>>,
}

/// Supported and current mouse modes, and the main channels that announce them.
pub(crate) struct MouseModes {
    state: Mutex<State>,
}

impl MouseModes {
    /// Client mode available and current (the default of a host with absolute input).
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                client_available: true,
                current: mouse_mode::CLIENT,
                mains: HashMap::new(),
            }),
        }
    }

    fn supported(st: &State) -> u32 {
        mouse_mode::SERVER
            | if st.client_available {
                mouse_mode::CLIENT
            } else {
                0
            }
    }

    /// `(supported, current)`.
    pub fn modes(&self) -> (u32, u32) {
        let st = self.state.lock().unwrap();
        (Self::supported(&st), st.current)
    }

    /// A main channel to tell of changes, until [`Self::remove_main`].
    pub fn add_main(&self, id: u64, outbox: Arc<Outbox>) {
        self.state.lock().unwrap().mains.insert(id, outbox);
    }

    pub fn remove_main(&self, id: u64) {
        self.state.lock().unwrap().mains.remove(&id);
    }

    /// A client asks for `mode`: granted if supported. Every main channel hears the result.
    pub fn request(&self, mode: u32) {
        let mut st = self.state.lock().unwrap();
        if mode & Self::supported(&st) != 0 && mode.is_power_of_two() {
            st.current = mode;
        }
        Self::announce(&st);
    }

    /// Whether the host takes absolute positions. Client mode becomes current when it becomes
    /// available (spice-gtk's preference) and server mode when it goes away.
    pub fn set_client_available(&self, available: bool) {
        let mut st = self.state.lock().unwrap();
        if st.client_available == available {
            return;
        }
        st.client_available = available;
        st.current = if available {
            mouse_mode::CLIENT
        } else {
            mouse_mode::SERVER
        };
        Self::announce(&st);
    }

    fn announce(st: &State) {
        let msg = MouseMode {
            supported_modes: Self::supported(st) as u16,
            current_mode: st.current as u16,
        };
        for o in st.mains.values() {
            o.send(&msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mode_follows_availability() {
        let m = MouseModes::new();
        assert_eq!(m.modes(), (3, mouse_mode::CLIENT));
        m.set_client_available(false);
        assert_eq!(m.modes(), (1, mouse_mode::SERVER));
        m.request(mouse_mode::CLIENT);
        assert_eq!(m.modes(), (1, mouse_mode::SERVER), "client mode refused");
        m.set_client_available(true);
        assert_eq!(m.modes(), (3, mouse_mode::CLIENT));
        m.request(mouse_mode::SERVER);
        assert_eq!(m.modes(), (3, mouse_mode::SERVER));
        m.request(3);
        assert_eq!(
            m.modes(),
            (3, mouse_mode::SERVER),
            "two modes at once refused"
        );
    }
}
