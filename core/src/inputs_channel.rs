//! The inputs channel: keyboard and mouse events go to the embedder's callback; motion is
//! acknowledged so the client keeps sending.

use std::sync::Arc;

use crate::channel::read_messages;
use crate::conn::Conn;
use crate::log;
use crate::outbox::Outbox;
use crate::proto::{
    ClientInputsMsg, HeaderKind, InputsInit, MotionAckCounter, MouseMotionAck, parse_client_inputs,
};
use crate::shim::Core;

/// Serves one inputs channel until it closes.
pub fn run(core: &Arc<Core>, mut conn: Conn, header: HeaderKind) {
    let peer = conn.peer();
    let Some((outbox, writer)) = Outbox::start(header, &conn, "shim-inputs-writer") else {
        return;
    };
    outbox.send(&InputsInit {
        keyboard_modifiers: 0,
    });
    let mut acks = MotionAckCounter::default();
    let why = read_messages(&mut conn, header, |t, body| {
        match parse_client_inputs(t, &body) {
            Ok(ClientInputsMsg::Input(ev)) => {
                if acks.on_event(&ev) {
                    outbox.send(&MouseMotionAck);
                }
                log::debug(&format!("{peer}: input {ev:?}"));
                let cb = core.input_callback();
                if let Some(cb) = cb {
                    cb(&ev);
                }
            }
            Ok(other) => log::debug(&format!("{peer}: inputs: {other:?}")),
            Err(e) => log::warn(&format!("{peer}: inputs channel: {e}")),
        }
        true
    });
    log::debug(&format!("{peer}: inputs channel: {why}"));
    outbox.close();
    conn.shutdown();
    let _ = writer.join();
}
