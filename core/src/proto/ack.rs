//! Server-side bookkeeping for the SET_ACK / ACK_SYNC / ACK flow control.
//!
//! The client acknowledges every `window` received messages once it got
//! SET_ACK. Like spice-server, stop sending while more than `2 × window`
//! messages are unacknowledged.

use super::base::{ClientBaseMsg, SetAck};

/// Counts sent and acknowledged messages for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckWindow {
    generation: u32,
    client_generation: Option<u32>,
    window: u32,
    unacked: u64,
}

impl AckWindow {
    /// Flow control with `window` messages per ACK, generation 1.
    pub fn new(window: u32) -> Self {
        Self {
            generation: 1,
            client_generation: None,
            window,
            unacked: 0,
        }
    }

    /// The SET_ACK message to send to start flow control.
    pub fn set_ack(&self) -> SetAck {
        SetAck {
            generation: self.generation,
            window: self.window,
        }
    }

    /// Records one message sent to the client (every message counts).
    pub fn on_sent(&mut self) {
        self.unacked += 1;
    }

    /// Updates the counters from a client base message.
    pub fn on_client(&mut self, msg: &ClientBaseMsg) {
        match *msg {
            ClientBaseMsg::AckSync { generation } => self.client_generation = Some(generation),
            ClientBaseMsg::Ack if self.client_generation == Some(self.generation) => {
                self.unacked = self.unacked.saturating_sub(u64::from(self.window));
            }
            _ => {}
        }
    }

    /// Messages sent but not acknowledged yet.
    pub fn unacked(&self) -> u64 {
        self.unacked
    }

    /// Whether another message may be sent now (`unacked <= 2 × window`).
    /// Always true with a window of 0.
    pub fn may_send(&self) -> bool {
        self.window == 0 || self.unacked <= 2 * u64::from(self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_blocks_and_releases() {
        let mut ack = AckWindow::new(2);
        assert_eq!(
            ack.set_ack(),
            SetAck {
                generation: 1,
                window: 2
            }
        );
        for _ in 0..5 {
            assert!(ack.may_send());
            ack.on_sent();
        }
        assert!(!ack.may_send());
        // ACK before ACK_SYNC does not count.
        ack.on_client(&ClientBaseMsg::Ack);
        assert_eq!(ack.unacked(), 5);
        ack.on_client(&ClientBaseMsg::AckSync { generation: 1 });
        ack.on_client(&ClientBaseMsg::Ack);
        assert_eq!(ack.unacked(), 3);
        assert!(ack.may_send());
        // A stale generation does not count either.
        ack.on_client(&ClientBaseMsg::AckSync { generation: 0 });
        ack.on_client(&ClientBaseMsg::Ack);
        assert_eq!(ack.unacked(), 3);
    }

    #[test]
    fn zero_window_never_blocks() {
        let mut ack = AckWindow::new(0);
        for _ in 0..100 {
            ack.on_sent();
        }
        assert!(ack.may_send());
    }
}
