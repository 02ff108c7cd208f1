//! Base messages, valid on every channel (types below 100).

use super::error::ProtoError;
use super::framing::ServerMessage;
use super::msg_type::{client, server};
use super::wire::{Put, Reader, len_u32, need};

/// SET_ACK (3): start ACK flow control. 8 bytes.
///
/// The client answers with ACK_SYNC(generation) and then sends an ACK after
/// every `window` messages it receives. A window of 0 disables ACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAck {
    /// Generation the client echoes in ACK_SYNC.
    pub generation: u32,
    /// Messages per ACK.
    pub window: u32,
}

impl ServerMessage for SetAck {
    const MSG_TYPE: u16 = server::base::SET_ACK;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.generation);
        out.put_u32(self.window);
        Ok(())
    }
}

/// PING (4): 12 bytes + optional payload; the client answers PONG(id, timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping<'a> {
    /// Ping id echoed in PONG.
    pub id: u32,
    /// Timestamp echoed in PONG.
    pub timestamp: u64,
    /// Extra bytes (used for bandwidth measurement); may be empty.
    pub payload: &'a [u8],
}

impl ServerMessage for Ping<'_> {
    const MSG_TYPE: u16 = server::base::PING;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u32(self.id);
        out.put_u64(self.timestamp);
        out.extend_from_slice(self.payload);
        Ok(())
    }
}

/// DISCONNECTING (6) from the server: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnecting {
    /// Time stamp.
    pub time_stamp: u64,
    /// Reason, a `SpiceLinkErr` value.
    pub reason: u32,
}

impl ServerMessage for Disconnecting {
    const MSG_TYPE: u16 = server::base::DISCONNECTING;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.put_u64(self.time_stamp);
        out.put_u32(self.reason);
        Ok(())
    }
}

/// NOTIFY (7): 24 bytes + message + a trailing NUL (not counted in
/// `message_len`, as spice-server does). The client only logs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    /// Time stamp.
    pub time_stamp: u64,
    /// See [`super::consts::notify_severity`].
    pub severity: u32,
    /// See [`super::consts::notify_visibility`].
    pub visibility: u32,
    /// Application-defined code.
    pub what: u32,
    /// Text.
    pub message: &'a str,
}

impl ServerMessage for Notify<'_> {
    const MSG_TYPE: u16 = server::base::NOTIFY;
    fn write_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let len = len_u32("NOTIFY message_len", self.message.len())?;
        out.put_u64(self.time_stamp);
        out.put_u32(self.severity);
        out.put_u32(self.visibility);
        out.put_u32(self.what);
        out.put_u32(len);
        out.extend_from_slice(self.message.as_bytes());
        out.put_u8(0);
        Ok(())
    }
}

/// A base message sent by the client on any channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientBaseMsg {
    /// ACK_SYNC (1): reply to SET_ACK.
    AckSync {
        /// Generation from SET_ACK.
        generation: u32,
    },
    /// ACK (2): `window` more messages received.
    Ack,
    /// PONG (3): reply to PING.
    Pong {
        /// Id from PING.
        id: u32,
        /// Timestamp from PING.
        timestamp: u64,
    },
    /// MIGRATE_FLUSH_MARK (4): migration only, ignore.
    MigrateFlushMark,
    /// MIGRATE_DATA (5): migration only, ignore.
    MigrateData {
        /// Body length.
        len: usize,
    },
    /// DISCONNECTING (6).
    Disconnecting {
        /// Time stamp.
        time_stamp: u64,
        /// Reason (`SpiceLinkErr`).
        reason: u32,
    },
}

/// Parses a base message; `Ok(None)` if `msg_type` is not a base type (1..=6).
pub fn parse_client_base(msg_type: u16, body: &[u8]) -> Result<Option<ClientBaseMsg>, ProtoError> {
    use client::base as t;
    let msg = match msg_type {
        t::ACK_SYNC => {
            need("ACK_SYNC body", body, 4)?;
            let mut r = Reader::new("ACK_SYNC body", body);
            ClientBaseMsg::AckSync {
                generation: r.u32()?,
            }
        }
        t::ACK => ClientBaseMsg::Ack,
        t::PONG => {
            need("PONG body", body, 12)?;
            let mut r = Reader::new("PONG body", body);
            ClientBaseMsg::Pong {
                id: r.u32()?,
                timestamp: r.u64()?,
            }
        }
        t::MIGRATE_FLUSH_MARK => ClientBaseMsg::MigrateFlushMark,
        t::MIGRATE_DATA => ClientBaseMsg::MigrateData { len: body.len() },
        t::DISCONNECTING => {
            need("DISCONNECTING body", body, 12)?;
            let mut r = Reader::new("DISCONNECTING body", body);
            ClientBaseMsg::Disconnecting {
                time_stamp: r.u64()?,
                reason: r.u32()?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_base_bodies() {
        let set_ack = SetAck {
            generation: 1,
            window: 20,
        };
        assert_eq!(set_ack.to_body().unwrap(), [1, 0, 0, 0, 20, 0, 0, 0]);
        assert_eq!(SetAck::MSG_TYPE, 3);

        let ping = Ping {
            id: 7,
            timestamp: 0x0102_0304_0506_0708,
            payload: &[0xAB; 3],
        };
        let body = ping.to_body().unwrap();
        assert_eq!(body.len(), 12 + 3);
        assert_eq!(body[..4], [7, 0, 0, 0]);
        assert_eq!(body[4..12], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(Ping::MSG_TYPE, 4);

        let notify = Notify {
            time_stamp: 5,
            severity: 1,
            visibility: 2,
            what: 3,
            message: "hi",
        };
        let body = notify.to_body().unwrap();
        assert_eq!(body.len(), 24 + 2 + 1);
        assert_eq!(body[20..24], [2, 0, 0, 0]);
        assert_eq!(&body[24..], b"hi\0");
        assert_eq!(Notify::MSG_TYPE, 7);

        let disc = Disconnecting {
            time_stamp: 1,
            reason: 7,
        };
        assert_eq!(disc.to_body().unwrap().len(), 12);
    }

    #[test]
    fn client_base_parsing() {
        assert_eq!(
            parse_client_base(1, &[1, 0, 0, 0]).unwrap(),
            Some(ClientBaseMsg::AckSync { generation: 1 })
        );
        assert_eq!(parse_client_base(2, &[]).unwrap(), Some(ClientBaseMsg::Ack));
        let mut pong = vec![9, 0, 0, 0];
        pong.extend_from_slice(&42u64.to_le_bytes());
        assert_eq!(
            parse_client_base(3, &pong).unwrap(),
            Some(ClientBaseMsg::Pong {
                id: 9,
                timestamp: 42
            })
        );
        let err = parse_client_base(3, &pong[..11]).unwrap_err();
        assert_eq!(err.to_string(), "PONG body too short: 11 bytes, need 12");
        assert!(parse_client_base(1, &[1, 0]).is_err());
        assert_eq!(parse_client_base(101, &[]).unwrap(), None);
        assert_eq!(
            parse_client_base(5, &[1, 2]).unwrap(),
            Some(ClientBaseMsg::MigrateData { len: 2 })
        );
    }
}
