//! Main channel messages (types 101+).

use super::base::{ClientBaseMsg, parse_client_base};
use super::error::ProtoError;
use super::framing::ServerMessage;
use super::msg_type::{client, server};
use super::wire::{Put, Reader, len_u32, need};

/// MAIN_INIT (103): 32 bytes; the first message on the main channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MainInit {
    /// Non-zero session id; other channels link with it as connection_id.
    pub session_id: u32,
    /// Number of display channels (1).
    pub display_channels_hint: u32,
    /// Bit set of [`super::consts::mouse_mode`] values.
    pub supported_mouse_modes: u32,
    /// Current [`super::consts::mouse_mode`].
    pub current_mouse_mode: u32,
    /// 1 if a VDAgent is connected; keep 0 without an agent.
    pub agent_connected: u32,
    /// Agent tokens (10; ignored without an agent).
    pub agent_tokens: u32,
    /// Client multimedia clock at receipt, in ms (server clock − latency).
    pub multi_media_time: u32,
    /// RAM hint (0: the client uses its minimum GLZ window).
    pub ram_hint: u32,
}

/// Size of the MAIN_INIT body.
pub const MAIN_INIT_SIZE: usize = 32;

impl ServerMessage for MainInit {
    const MSG_TYPE: u16 = server::main::INIT;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        for v in [
            self.session_id,
            self.display_channels_hint,
            self.supported_mouse_modes,
            self.current_mouse_mode,
            self.agent_connected,
            self.agent_tokens,
            self.multi_media_time,
            self.ram_hint,
        ] {
            out.put_u32(v);
        }
        Ok(())
    }
}

/// One entry of CHANNELS_LIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEntry {
    /// Channel type, see [`super::consts::channel_type`].
    pub channel_type: u8,
    /// Channel instance id.
    pub channel_id: u8,
}

/// CHANNELS_LIST (104): u32 count, count × {u8 type, u8 id}.
/// List only implemented channels, and not the main channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelsList {
    /// Channels the client should link.
    pub channels: Vec<ChannelEntry>,
}

impl ServerMessage for ChannelsList {
    const MSG_TYPE: u16 = server::main::CHANNELS_LIST;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(len_u32(
            "CHANNELS_LIST num_of_channels",
            self.channels.len(),
        )?);
        for c in &self.channels {
            out.put_u8(c.channel_type);
            out.put_u8(c.channel_id);
        }
        Ok(())
    }
}

/// MOUSE_MODE (105): u16 supported, u16 current. 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MouseMode {
    /// Bit set of supported modes (1 SERVER, 2 CLIENT).
    pub supported_modes: u16,
    /// Current mode.
    pub current_mode: u16,
}

impl ServerMessage for MouseMode {
    const MSG_TYPE: u16 = server::main::MOUSE_MODE;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u16(self.supported_modes);
        out.put_u16(self.current_mode);
        Ok(())
    }
}

/// MULTI_MEDIA_TIME (106): u32 time in ms; resets the client's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultiMediaTime {
    /// Client multimedia clock value at receipt, in ms.
    pub time: u32,
}

impl ServerMessage for MultiMediaTime {
    const MSG_TYPE: u16 = server::main::MULTI_MEDIA_TIME;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.time);
        Ok(())
    }
}

/// NAME (113): u32 name_len (including the NUL), name bytes, NUL.
/// Send only if the client has main cap NAME_AND_UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a> {
    /// VM name (without NUL).
    pub name: &'a str,
}

impl ServerMessage for Name<'_> {
    const MSG_TYPE: u16 = server::main::NAME;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let len = len_u32("NAME name_len", self.name.len().saturating_add(1))?;
        out.put_u32(len);
        out.extend_from_slice(self.name.as_bytes());
        out.put_u8(0);
        Ok(())
    }
}

/// UUID (114): 16 bytes. Send only if the client has main cap NAME_AND_UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uuid {
    /// The UUID bytes.
    pub uuid: [u8; 16],
}

impl ServerMessage for Uuid {
    const MSG_TYPE: u16 = server::main::UUID;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.extend_from_slice(&self.uuid);
        Ok(())
    }
}

/// A message from the client on the main channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMainMsg {
    /// A base message (types 1..=6).
    Base(ClientBaseMsg),
    /// CLIENT_INFO (101): u64 cache_size.
    ClientInfo {
        /// Cache size.
        cache_size: u64,
    },
    /// ATTACH_CHANNELS (104): answer with CHANNELS_LIST.
    AttachChannels,
    /// MOUSE_MODE_REQUEST (105): answer with MOUSE_MODE.
    MouseModeRequest {
        /// Requested mode (1 SERVER, 2 CLIENT).
        mode: u16,
    },
    /// AGENT_START (106): u32 num_tokens.
    AgentStart {
        /// Tokens granted to the server.
        num_tokens: u32,
    },
    /// AGENT_DATA (107): raw VDAgent chunk (ignored without an agent).
    AgentData {
        /// Body length.
        len: usize,
    },
    /// AGENT_TOKEN (108): u32 num_tokens.
    AgentToken {
        /// Additional tokens.
        num_tokens: u32,
    },
    /// A known migration or quality type this server does not handle
    /// (102, 103, 109..=112).
    Ignored {
        /// Message type.
        msg_type: u16,
    },
    /// A type this parser does not know; not an error.
    Unknown {
        /// Message type.
        msg_type: u16,
    },
}

/// Parses a client main-channel message.
pub fn parse_client_main(msg_type: u16, body: &[u8]) -> Result<ClientMainMsg, ProtoError> {
    use client::main as t;
    if let Some(base) = parse_client_base(msg_type, body)? {
        return Ok(ClientMainMsg::Base(base));
    }
    Ok(match msg_type {
        t::CLIENT_INFO => {
            need("main CLIENT_INFO body", body, 8)?;
            ClientMainMsg::ClientInfo {
                cache_size: Reader::new("main CLIENT_INFO body", body).u64()?,
            }
        }
        t::ATTACH_CHANNELS => ClientMainMsg::AttachChannels,
        t::MOUSE_MODE_REQUEST => {
            need("main MOUSE_MODE_REQUEST body", body, 2)?;
            ClientMainMsg::MouseModeRequest {
                mode: Reader::new("main MOUSE_MODE_REQUEST body", body).u16()?,
            }
        }
        t::AGENT_START => {
            need("main AGENT_START body", body, 4)?;
            ClientMainMsg::AgentStart {
                num_tokens: Reader::new("main AGENT_START body", body).u32()?,
            }
        }
        t::AGENT_DATA => ClientMainMsg::AgentData { len: body.len() },
        t::AGENT_TOKEN => {
            need("main AGENT_TOKEN body", body, 4)?;
            ClientMainMsg::AgentToken {
                num_tokens: Reader::new("main AGENT_TOKEN body", body).u32()?,
            }
        }
        t::MIGRATE_CONNECTED
        | t::MIGRATE_CONNECT_ERROR
        | t::MIGRATE_END
        | t::MIGRATE_DST_DO_SEAMLESS
        | t::MIGRATE_CONNECTED_SEAMLESS
        | t::QUALITY_INDICATOR => ClientMainMsg::Ignored { msg_type },
        _ => ClientMainMsg::Unknown { msg_type },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::{channel_type, mouse_mode};

    #[test]
    fn main_init_is_32_bytes_in_field_order() {
        let init = MainInit {
            session_id: 0x1122_3344,
            display_channels_hint: 1,
            supported_mouse_modes: mouse_mode::SERVER | mouse_mode::CLIENT,
            current_mouse_mode: mouse_mode::CLIENT,
            agent_connected: 0,
            agent_tokens: 10,
            multi_media_time: 0xAABB_CCDD,
            ram_hint: 0,
        };
        let body = init.to_body().unwrap();
        assert_eq!(body.len(), MAIN_INIT_SIZE);
        assert_eq!(body[0..4], [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(body[4..8], [1, 0, 0, 0]);
        assert_eq!(body[8..12], [3, 0, 0, 0]);
        assert_eq!(body[12..16], [2, 0, 0, 0]);
        assert_eq!(body[16..20], [0, 0, 0, 0]);
        assert_eq!(body[20..24], [10, 0, 0, 0]);
        assert_eq!(body[24..28], [0xDD, 0xCC, 0xBB, 0xAA]);
        assert_eq!(body[28..32], [0, 0, 0, 0]);
        assert_eq!(MainInit::MSG_TYPE, 103);
    }

    #[test]
    fn channels_list_example() {
        let list = ChannelsList {
            channels: vec![ChannelEntry {
                channel_type: channel_type::DISPLAY,
                channel_id: 0,
            }],
        };
        assert_eq!(list.to_body().unwrap(), [1, 0, 0, 0, 2, 0]);
        assert_eq!(ChannelsList::MSG_TYPE, 104);
        let two = ChannelsList {
            channels: vec![
                ChannelEntry {
                    channel_type: 2,
                    channel_id: 0,
                },
                ChannelEntry {
                    channel_type: 3,
                    channel_id: 0,
                },
            ],
        };
        assert_eq!(two.to_body().unwrap(), [2, 0, 0, 0, 2, 0, 3, 0]);
    }

    #[test]
    fn small_main_messages() {
        let mm = MouseMode {
            supported_modes: 3,
            current_mode: 2,
        };
        assert_eq!(mm.to_body().unwrap(), [3, 0, 2, 0]);
        assert_eq!(MouseMode::MSG_TYPE, 105);
        assert_eq!(
            MultiMediaTime { time: 0x0102_0304 }.to_body().unwrap(),
            [4, 3, 2, 1]
        );
        assert_eq!(MultiMediaTime::MSG_TYPE, 106);
        assert_eq!(
            Name { name: "vm" }.to_body().unwrap(),
            [3, 0, 0, 0, b'v', b'm', 0]
        );
        assert_eq!(Name::MSG_TYPE, 113);
        let uuid = Uuid { uuid: [7; 16] };
        assert_eq!(uuid.to_body().unwrap(), [7; 16]);
        assert_eq!(Uuid::MSG_TYPE, 114);
    }

    #[test]
    fn client_main_parsing() {
        assert_eq!(
            parse_client_main(104, &[]).unwrap(),
            ClientMainMsg::AttachChannels
        );
        assert_eq!(
            parse_client_main(105, &[2, 0]).unwrap(),
            ClientMainMsg::MouseModeRequest { mode: 2 }
        );
        assert_eq!(
            parse_client_main(105, &[2]).unwrap_err().to_string(),
            "main MOUSE_MODE_REQUEST body too short: 1 bytes, need 2"
        );
        assert_eq!(
            parse_client_main(101, &5u64.to_le_bytes()).unwrap(),
            ClientMainMsg::ClientInfo { cache_size: 5 }
        );
        assert_eq!(
            parse_client_main(106, &[0xFF; 4]).unwrap(),
            ClientMainMsg::AgentStart {
                num_tokens: u32::MAX
            }
        );
        assert_eq!(
            parse_client_main(107, &[1, 2, 3]).unwrap(),
            ClientMainMsg::AgentData { len: 3 }
        );
        assert_eq!(
            parse_client_main(108, &[1, 0, 0, 0]).unwrap(),
            ClientMainMsg::AgentToken { num_tokens: 1 }
        );
        assert_eq!(
            parse_client_main(110, &[]).unwrap(),
            ClientMainMsg::Ignored { msg_type: 110 }
        );
        assert_eq!(
            parse_client_main(999, &[]).unwrap(),
            ClientMainMsg::Unknown { msg_type: 999 }
        );
        assert_eq!(
            parse_client_main(2, &[]).unwrap(),
            ClientMainMsg::Base(ClientBaseMsg::Ack)
        );
    }
}
