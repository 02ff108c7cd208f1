//! The link stage of one connection (spice-wire.md §2): link message, reply with the server's
//! public key, auth mechanism, ticket, result.

use std::io::{Read, Write};
use std::time::Duration;

use crate::conn::Conn;
use crate::proto::caps::{display_cap, inputs_cap};
use crate::proto::consts::TICKET_CIPHERTEXT_SIZE;
use crate::proto::consts::{channel_type, link_err};
use crate::proto::link::{AUTH_MECHANISM_SIZE, LINK_HEADER_SIZE};
use crate::proto::{
    AuthMechanism, HeaderKind, LinkHeader, LinkMess, build_link_error, build_link_reply,
    build_link_result, parse_auth_mechanism, server_common_caps_words, words_from_bits,
};
use crate::ticket::{TicketKey, check_ticket};

/// How long a peer may take for each step of the link stage.
const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// A linked channel.
#[derive(Debug)]
pub struct Linked {
    pub mess: LinkMess,
    pub header: HeaderKind,
}

/// What the server decides about a link message: accept, or refuse with a link error.
pub type Admit<'a> = &'a dyn Fn(&LinkMess) -> Result<(), u32>;

/// Display channel caps this server advertises.
pub fn display_caps() -> Vec<u32> {
    words_from_bits(&[
        display_cap::MONITORS_CONFIG,
        display_cap::STREAM_REPORT,
        display_cap::PREF_VIDEO_CODEC_TYPE,
    ])
}

fn channel_caps(channel: u8) -> Vec<u32> {
    match channel {
        channel_type::DISPLAY => display_caps(),
        channel_type::INPUTS => words_from_bits(&[inputs_cap::KEY_SCANCODE]),
        _ => Vec::new(),
    }
}

/// Runs the link stage. On failure the peer has been told why (when it got that far) and the
/// error says what happened, for the log.
pub fn handshake(
    conn: &mut Conn,
    key: &TicketKey,
    password: Option<&str>,
    admit: Admit<'_>,
) -> Result<Linked, String> {
    conn.set_read_timeout(Some(LINK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(LINK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut hdr = [0u8; LINK_HEADER_SIZE];
    conn.read_exact(&mut hdr)
        .map_err(|e| format!("reading the link header: {e}"))?;
    let header = match LinkHeader::parse_client(&hdr) {
        Ok(h) => h,
        Err(e) => {
            let _ = conn.write_all(&build_link_error(e.link_error_code()));
            return Err(format!("bad link header: {e}"));
        }
    };
    let mut body = vec![0u8; header.size as usize];
    conn.read_exact(&mut body)
        .map_err(|e| format!("reading the link message: {e}"))?;
    let mess = match LinkMess::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            let _ = conn.write_all(&build_link_error(e.link_error_code()));
            return Err(format!("bad link message: {e}"));
        }
    };
    if let Err(code) = admit(&mess) {
        let _ = conn.write_all(&build_link_error(code));
        return Err(format!(
            "{} channel {} refused (link error {code})",
            channel_type::name(mess.channel_type),
            mess.channel_id
        ));
    }
    let reply = build_link_reply(
        link_err::OK,
        &key.public_der(),
        &server_common_caps_words(),
        &channel_caps(mess.channel_type),
    );
    conn.write_all(&reply)
        .map_err(|e| format!("writing the link reply: {e}"))?;

    let mut mech = [0u8; AUTH_MECHANISM_SIZE];
    conn.read_exact(&mut mech)
        .map_err(|e| format!("reading the auth mechanism: {e}"))?;
    match parse_auth_mechanism(&mech) {
        Ok(AuthMechanism::Spice) => {}
        Ok(other) => {
            let _ = conn.write_all(&build_link_result(link_err::INVALID_DATA));
            return Err(format!("unsupported auth mechanism {other:?}"));
        }
        Err(e) => {
            let _ = conn.write_all(&build_link_result(link_err::INVALID_DATA));
            return Err(format!("bad auth mechanism: {e}"));
        }
    }
    let mut ticket = [0u8; TICKET_CIPHERTEXT_SIZE];
    conn.read_exact(&mut ticket)
        .map_err(|e| format!("reading the ticket: {e}"))?;
    let ok = match key.decrypt_ticket(&ticket) {
        Ok(plain) => check_ticket(&plain, password),
        Err(_) => false,
    };
    if !ok {
        let _ = conn.write_all(&build_link_result(link_err::PERMISSION_DENIED));
        return Err("wrong password (ticket refused)".into());
    }
    conn.write_all(&build_link_result(link_err::OK))
        .map_err(|e| format!("writing the link result: {e}"))?;
    conn.set_read_timeout(None).map_err(|e| e.to_string())?;
    conn.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(Linked {
        header: HeaderKind::negotiate(true, &mess.common_caps),
        mess,
    })
}
