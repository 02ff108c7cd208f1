//! Link stage: the first bytes exchanged on every new channel connection.
//!
//! Order on the wire:
//! 1. client → server: [`LinkHeader`] + [`LinkMess`] (+ caps words)
//! 2. server → client: [`build_link_reply`] (or [`build_link_error`] and close)
//! 3. client → server: the auth mechanism word ([`parse_auth_mechanism`]),
//!    only when the server advertised `PROTOCOL_AUTH_SELECTION`
//! 4. client → server: the 128-byte encrypted ticket
//! 5. server → client: [`build_link_result`]

use super::caps::Caps;
use super::consts::{LINK_MAGIC, TICKET_PUBKEY_BYTES, VERSION_MAJOR, VERSION_MINOR};
use super::error::ProtoError;
use super::wire::{Put, Reader, need};

/// Size of [`LinkHeader`] on the wire.
pub const LINK_HEADER_SIZE: usize = 16;
/// Size of the fixed part of [`LinkMess`].
pub const LINK_MESS_SIZE: usize = 18;
/// Size of the fixed part of the link reply.
pub const LINK_REPLY_SIZE: usize = 178;
/// Largest client link message (`header.size`) a server accepts.
pub const MAX_CLIENT_LINK_SIZE: u32 = 4096;
/// Size of the auth mechanism word.
pub const AUTH_MECHANISM_SIZE: usize = 4;
/// Size of the final link result word.
pub const LINK_RESULT_SIZE: usize = 4;

/// `SpiceLinkHeader`: 16 bytes, sent in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkHeader {
    /// Protocol major version.
    pub major_version: u32,
    /// Protocol minor version.
    pub minor_version: u32,
    /// Number of bytes that follow the header.
    pub size: u32,
}

impl LinkHeader {
    /// A header for protocol 2.2 announcing `size` following bytes.
    pub fn new(size: u32) -> Self {
        Self {
            major_version: VERSION_MAJOR,
            minor_version: VERSION_MINOR,
            size,
        }
    }

    /// Parses the 16 header bytes, checking only the magic.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        need("link header", bytes, LINK_HEADER_SIZE)?;
        let mut r = Reader::new("link header", bytes);
        let magic = r.u32()?;
        if magic != LINK_MAGIC {
            return Err(ProtoError::BadMagic(magic));
        }
        Ok(Self {
            major_version: r.u32()?,
            minor_version: r.u32()?,
            size: r.u32()?,
        })
    }

    /// Parses a header sent by a client, as a server must: bad magic, a major
    /// version other than 2, or a size outside `18..=4096` are errors.
    /// [`ProtoError::link_error_code`] gives the code to answer with.
    pub fn parse_client(bytes: &[u8]) -> Result<Self, ProtoError> {
        let header = Self::parse(bytes)?;
        if header.major_version != VERSION_MAJOR {
            return Err(ProtoError::VersionMismatch {
                major: header.major_version,
                minor: header.minor_version,
            });
        }
        if header.size < LINK_MESS_SIZE as u32 {
            return Err(ProtoError::LinkSizeTooSmall {
                size: header.size,
                min: LINK_MESS_SIZE as u32,
            });
        }
        if header.size > MAX_CLIENT_LINK_SIZE {
            return Err(ProtoError::LinkSizeTooLarge {
                size: header.size,
                limit: MAX_CLIENT_LINK_SIZE,
            });
        }
        Ok(header)
    }

    /// The 16 wire bytes.
    pub fn to_bytes(&self) -> [u8; LINK_HEADER_SIZE] {
        let mut out = Vec::with_capacity(LINK_HEADER_SIZE);
        out.put_u32(LINK_MAGIC);
        out.put_u32(self.major_version);
        out.put_u32(self.minor_version);
        out.put_u32(self.size);
        let mut arr = [0u8; LINK_HEADER_SIZE];
        arr.copy_from_slice(&out);
        arr
    }
}

/// Reads the common and channel caps words that a link message or reply
/// places at `caps_offset` inside `body`.
fn read_caps(
    what: &'static str,
    body: &[u8],
    fixed_size: usize,
    num_common: u32,
    num_channel: u32,
    caps_offset: u32,
) -> Result<(Caps, Caps), ProtoError> {
    let num_caps = u64::from(num_common) + u64::from(num_channel);
    if num_caps == 0 {
        return Ok((Caps::default(), Caps::default()));
    }
    let end = u64::from(caps_offset) + num_caps * 4;
    if (caps_offset as usize) < fixed_size || end > body.len() as u64 {
        return Err(ProtoError::CapsOutOfBounds {
            what,
            num_caps,
            caps_offset,
            body_len: body.len(),
        });
    }
    let mut r = Reader::new(what, body.get(caps_offset as usize..).unwrap_or(&[]));
    let mut read_words =
        |n: u32| -> Result<Vec<u32>, ProtoError> { (0..n).map(|_| r.u32()).collect() };
    let common = read_words(num_common)?;
    let channel = read_words(num_channel)?;
    Ok((Caps::from_words(common), Caps::from_words(channel)))
}

/// Appends the wire form of caps words.
fn put_words(out: &mut Vec<u8>, words: &[u32]) {
    for &w in words {
        out.put_u32(w);
    }
}

/// Number of words as a u32 field (caps lists are a handful of words).
fn word_count(words: &[u32]) -> u32 {
    u32::try_from(words.len()).unwrap_or(u32::MAX)
}

/// `SpiceLinkMess`: what a client sends after the link header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMess {
    /// 0 for a new main channel; the session id from MAIN_INIT for others.
    pub connection_id: u32,
    /// Channel type, see [`super::consts::channel_type`].
    pub channel_type: u8,
    /// Channel instance id (0 for the first display).
    pub channel_id: u8,
    /// Common capabilities of the client.
    pub common_caps: Caps,
    /// Channel capabilities of the client.
    pub channel_caps: Caps,
}

impl LinkMess {
    /// Parses the `header.size` bytes that follow the link header.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        need("link message", body, LINK_MESS_SIZE)?;
        let mut r = Reader::new("link message", body);
        let connection_id = r.u32()?;
        let channel_type = r.u8()?;
        let channel_id = r.u8()?;
        let num_common = r.u32()?;
        let num_channel = r.u32()?;
        let caps_offset = r.u32()?;
        let (common_caps, channel_caps) = read_caps(
            "link message",
            body,
            LINK_MESS_SIZE,
            num_common,
            num_channel,
            caps_offset,
        )?;
        Ok(Self {
            connection_id,
            channel_type,
            channel_id,
            common_caps,
            channel_caps,
        })
    }

    /// Link header + message + caps, as a client sends them (caps_offset 18).
    pub fn to_bytes(&self) -> Vec<u8> {
        let common = self.common_caps.words();
        let channel = self.channel_caps.words();
        let body_len = LINK_MESS_SIZE + 4 * (common.len() + channel.len());
        let mut out = Vec::with_capacity(LINK_HEADER_SIZE + body_len);
        out.extend_from_slice(
            &LinkHeader::new(u32::try_from(body_len).unwrap_or(u32::MAX)).to_bytes(),
        );
        out.put_u32(self.connection_id);
        out.put_u8(self.channel_type);
        out.put_u8(self.channel_id);
        out.put_u32(word_count(common));
        out.put_u32(word_count(channel));
        out.put_u32(LINK_MESS_SIZE as u32);
        put_words(&mut out, common);
        put_words(&mut out, channel);
        out
    }
}

/// `SpiceLinkReply` as parsed by a client (useful for test clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkReply {
    /// `SpiceLinkErr`; 0 is OK.
    pub error: u32,
    /// DER SubjectPublicKeyInfo of the server's RSA-1024 key.
    pub pub_key: [u8; TICKET_PUBKEY_BYTES],
    /// Common capabilities of the server.
    pub common_caps: Caps,
    /// Channel capabilities of the server.
    pub channel_caps: Caps,
}

impl LinkReply {
    /// Parses the `header.size` bytes that follow the reply's link header.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        need("link reply", body, LINK_REPLY_SIZE)?;
        let mut r = Reader::new("link reply", body);
        let error = r.u32()?;
        let pub_key = r.array::<TICKET_PUBKEY_BYTES>()?;
        let num_common = r.u32()?;
        let num_channel = r.u32()?;
        let caps_offset = r.u32()?;
        let (common_caps, channel_caps) = read_caps(
            "link reply",
            body,
            LINK_REPLY_SIZE,
            num_common,
            num_channel,
            caps_offset,
        )?;
        Ok(Self {
            error,
            pub_key,
            common_caps,
            channel_caps,
        })
    }
}

/// Builds the server's link reply: link header + 178-byte `SpiceLinkReply`
/// + caps words (caps_offset 178).
pub fn build_link_reply(
    error: u32,
    pubkey_der: &[u8; TICKET_PUBKEY_BYTES],
    common_caps: &[u32],
    channel_caps: &[u32],
) -> Vec<u8> {
    let body_len = LINK_REPLY_SIZE + 4 * (common_caps.len() + channel_caps.len());
    let mut out = Vec::with_capacity(LINK_HEADER_SIZE + body_len);
    out.extend_from_slice(&LinkHeader::new(u32::try_from(body_len).unwrap_or(u32::MAX)).to_bytes());
    out.put_u32(error);
    out.extend_from_slice(pubkey_der);
    out.put_u32(word_count(common_caps));
    out.put_u32(word_count(channel_caps));
    out.put_u32(LINK_REPLY_SIZE as u32);
    put_words(&mut out, common_caps);
    put_words(&mut out, channel_caps);
    out
}

/// Builds a link error reply: link header + a zeroed 178-byte reply carrying
/// only `error`, no caps. The server closes the connection after sending it.
pub fn build_link_error(error: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(LINK_HEADER_SIZE + LINK_REPLY_SIZE);
    out.extend_from_slice(&LinkHeader::new(LINK_REPLY_SIZE as u32).to_bytes());
    out.put_u32(error);
    out.resize(LINK_HEADER_SIZE + LINK_REPLY_SIZE, 0);
    out
}

/// The final link result word sent after the ticket (`SpiceLinkErr`, 0 = OK).
pub fn build_link_result(error: u32) -> [u8; LINK_RESULT_SIZE] {
    error.to_le_bytes()
}

/// Auth mechanism chosen by the client (the common-cap number of the mechanism).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMechanism {
    /// SPICE ticket (1); a 128-byte encrypted ticket follows.
    Spice,
    /// SASL (2); not supported by this server.
    Sasl,
    /// Anything else; answer with `INVALID_DATA`.
    Other(u32),
}

/// Parses the 4-byte auth mechanism word.
pub fn parse_auth_mechanism(bytes: &[u8]) -> Result<AuthMechanism, ProtoError> {
    need("auth mechanism", bytes, AUTH_MECHANISM_SIZE)?;
    let word = Reader::new("auth mechanism", bytes).u32()?;
    Ok(match word {
        1 => AuthMechanism::Spice,
        2 => AuthMechanism::Sasl,
        other => AuthMechanism::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::caps::{common_cap, main_cap, server_common_caps_words};
    use crate::proto::consts::{channel_type, link_err};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The 42 bytes spice-gtk 0.42 sends to link the main channel (§2.9).
    const CLIENT_MAIN_LINK: &str = "52454451 02000000 02000000 1A000000 \
         00000000 01 00 01000000 01000000 12000000 0D000000 0F000000";

    #[test]
    fn parses_spice_gtk_main_link() {
        let bytes = hex(CLIENT_MAIN_LINK);
        assert_eq!(bytes.len(), 42);
        let header = LinkHeader::parse_client(&bytes[..16]).unwrap();
        assert_eq!(header, LinkHeader::new(26));
        let body = &bytes[16..16 + header.size as usize];
        let mess = LinkMess::parse(body).unwrap();
        assert_eq!(mess.connection_id, 0);
        assert_eq!(mess.channel_type, channel_type::MAIN);
        assert_eq!(mess.channel_id, 0);
        assert_eq!(mess.common_caps.words(), &[0x0D]);
        assert_eq!(mess.channel_caps.words(), &[0x0F]);
        assert!(mess.common_caps.has(common_cap::PROTOCOL_AUTH_SELECTION));
        assert!(mess.common_caps.has(common_cap::AUTH_SASL));
        assert!(mess.common_caps.has(common_cap::MINI_HEADER));
        assert!(!mess.common_caps.has(common_cap::AUTH_SPICE));
        assert!(mess.channel_caps.has(main_cap::SEAMLESS_MIGRATE));
        // Round trip through the client-side builder.
        assert_eq!(mess.to_bytes(), bytes);
    }

    #[test]
    fn builds_reply_like_spice_server() {
        let mut key = [0u8; 162];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        let reply = build_link_reply(link_err::OK, &key, &server_common_caps_words(), &[]);
        assert_eq!(reply.len(), 16 + 182);
        assert_eq!(reply[..16], hex("52454451 02000000 02000000 B6000000")[..]);
        assert_eq!(reply[16..20], [0, 0, 0, 0]);
        assert_eq!(reply[20..182], key[..]);
        assert_eq!(reply[182..], hex("01000000 00000000 B2000000 0B000000")[..]);
        let parsed = LinkReply::parse(&reply[16..]).unwrap();
        assert_eq!(parsed.error, 0);
        assert_eq!(parsed.pub_key, key);
        assert_eq!(parsed.common_caps.words(), &[0x0B]);
        assert!(parsed.channel_caps.is_empty());
    }

    #[test]
    fn reply_with_channel_caps() {
        let reply = build_link_reply(0, &[0; 162], &[0x0B], &[0x12, 0x34]);
        assert_eq!(reply.len(), 16 + 178 + 12);
        assert_eq!(LinkHeader::parse(&reply).unwrap().size, 190);
        let parsed = LinkReply::parse(&reply[16..]).unwrap();
        assert_eq!(parsed.channel_caps.words(), &[0x12, 0x34]);
    }

    #[test]
    fn link_error_is_zeroed_reply() {
        let out = build_link_error(link_err::VERSION_MISMATCH);
        assert_eq!(out.len(), 16 + 178);
        assert_eq!(LinkHeader::parse(&out).unwrap().size, 178);
        assert_eq!(out[16..20], [4, 0, 0, 0]);
        assert!(out[20..].iter().all(|&b| b == 0));
        let parsed = LinkReply::parse(&out[16..]).unwrap();
        assert_eq!(parsed.error, 4);
        assert!(parsed.common_caps.is_empty() && parsed.channel_caps.is_empty());
    }

    #[test]
    fn header_rejections_map_to_link_errors() {
        let mut bad_magic = hex(CLIENT_MAIN_LINK);
        bad_magic[0] = 0x53;
        let err = LinkHeader::parse_client(&bad_magic).unwrap_err();
        assert_eq!(err, ProtoError::BadMagic(0x5144_4553));
        assert_eq!(
            err.to_string(),
            "link header: bad magic 0x51444553 (expected 0x51444552)"
        );
        assert_eq!(err.link_error_code(), link_err::INVALID_MAGIC);

        let mut v3 = hex(CLIENT_MAIN_LINK);
        v3[4] = 3;
        let err = LinkHeader::parse_client(&v3).unwrap_err();
        assert_eq!(err.link_error_code(), link_err::VERSION_MISMATCH);

        let big = [
            &hex("52454451 02000000 02000000")[..],
            &9000u32.to_le_bytes(),
        ]
        .concat();
        let err = LinkHeader::parse_client(&big).unwrap_err();
        assert_eq!(err.to_string(), "link message size 9000 exceeds limit 4096");
        assert_eq!(err.link_error_code(), link_err::INVALID_DATA);

        let small = [&hex("52454451 02000000 02000000")[..], &17u32.to_le_bytes()].concat();
        assert!(matches!(
            LinkHeader::parse_client(&small),
            Err(ProtoError::LinkSizeTooSmall { size: 17, min: 18 })
        ));
        assert!(LinkHeader::parse_client(&small[..15]).is_err());
        // Minor version is not checked.
        let mut minor = hex(CLIENT_MAIN_LINK);
        minor[8] = 1;
        assert!(LinkHeader::parse_client(&minor).is_ok());
    }

    #[test]
    fn link_mess_caps_bounds() {
        let bytes = hex(CLIENT_MAIN_LINK);
        let body = &bytes[16..];
        // Drop the last caps word: out of bounds.
        let err = LinkMess::parse(&body[..22]).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::CapsOutOfBounds { num_caps: 2, .. }
        ));
        // Huge counts must not overflow or allocate.
        let mut huge = body.to_vec();
        huge[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LinkMess::parse(&huge).is_err());
        // caps_offset pointing into the fixed part is rejected.
        let mut overlap = body.to_vec();
        overlap[14..18].copy_from_slice(&2u32.to_le_bytes());
        assert!(LinkMess::parse(&overlap).is_err());
        // No caps: caps_offset is irrelevant.
        let mut none = body[..18].to_vec();
        none[6..18].fill(0);
        let mess = LinkMess::parse(&none).unwrap();
        assert!(mess.common_caps.is_empty());
        // A larger caps_offset with padding is accepted.
        let mut padded = body[..18].to_vec();
        padded[14..18].copy_from_slice(&22u32.to_le_bytes());
        padded.extend_from_slice(&[0xEE; 4]);
        padded.extend_from_slice(&hex("0D000000 0F000000"));
        let mess = LinkMess::parse(&padded).unwrap();
        assert_eq!(mess.common_caps.words(), &[0x0D]);
        assert_eq!(mess.channel_caps.words(), &[0x0F]);
    }

    #[test]
    fn auth_mechanism_and_result() {
        assert_eq!(
            parse_auth_mechanism(&hex("01000000")).unwrap(),
            AuthMechanism::Spice
        );
        assert_eq!(
            parse_auth_mechanism(&hex("02000000")).unwrap(),
            AuthMechanism::Sasl
        );
        assert_eq!(
            parse_auth_mechanism(&hex("07000000")).unwrap(),
            AuthMechanism::Other(7)
        );
        assert!(parse_auth_mechanism(&[1, 0, 0]).is_err());
        assert_eq!(build_link_result(link_err::OK), [0, 0, 0, 0]);
        assert_eq!(build_link_result(link_err::PERMISSION_DENIED), [7, 0, 0, 0]);
    }
}
