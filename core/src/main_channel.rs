//! The main channel: MAIN_INIT (which starts the client's multimedia clock, see
//! [`crate::latency`]), CHANNELS_LIST on ATTACH_CHANNELS, mouse mode (see [`crate::mouse`]).

use std::sync::Arc;

use crate::channel::read_messages;
use crate::conn::Conn;
use crate::latency;
use crate::log;
use crate::outbox::Outbox;
use crate::proto::consts::channel_type;
use crate::proto::{
    ChannelEntry, ChannelsList, ClientMainMsg, HeaderKind, MainInit, parse_client_main,
};
use crate::shim::Core;

/// Serves one main channel until it closes.
pub fn run(core: &Arc<Core>, id: u64, mut conn: Conn, header: HeaderKind, session: u32) {
    let peer = conn.peer();
    let Some((outbox, writer)) = Outbox::start(header, &conn, "shim-main-writer") else {
        return;
    };
    let (supported, current) = core.mouse().modes();
    core.mouse().add_main(id, outbox.clone());
    outbox.send(&MainInit {
        session_id: session,
        display_channels_hint: 1,
        supported_mouse_modes: supported,
        current_mouse_mode: current,
        agent_connected: 0,
        agent_tokens: 10,
        // The client's clock starts the fixed latency, or the automatic mode's start value,
        // behind ours; the display channel then adapts each frame's stamp (see
        // `crate::latency`), so this clock is never moved again.
        multi_media_time: core
            .mm_now()
            .wrapping_sub(latency::initial_ms(core.config().mm_latency_ms)),
        ram_hint: 0,
    });
    let why = read_messages(&mut conn, header, |t, body| {
        match parse_client_main(t, &body) {
            Ok(ClientMainMsg::AttachChannels) => {
                outbox.send(&ChannelsList {
                    channels: vec![
                        ChannelEntry {
                            channel_type: channel_type::DISPLAY,
                            channel_id: 0,
                        },
                        ChannelEntry {
                            channel_type: channel_type::INPUTS,
                            channel_id: 0,
                        },
                        ChannelEntry {
                            channel_type: channel_type::CURSOR,
                            channel_id: 0,
                        },
                    ],
                });
            }
            Ok(ClientMainMsg::MouseModeRequest { mode }) => core.mouse().request(u32::from(mode)),
            Ok(other) => log::debug(&format!("{peer}: main: {other:?}")),
            Err(e) => log::warn(&format!("{peer}: main channel: {e}")),
        }
        true
    });
    core.mouse().remove_main(id);
    log::debug(&format!("{peer}: main channel: {why}"));
    outbox.close();
    conn.shutdown();
    let _ = writer.join();
}
