//! The link stage of one connection (spice-wire.md §2): link message, reply with the server's
//! public key, auth mechanism, ticket, result.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::conn::Conn;
use crate::log;
use crate::proto::caps::{display_cap, inputs_cap};
use crate::proto::consts::TICKET_CIPHERTEXT_SIZE;
use crate::proto::consts::{channel_type, link_err};
use crate::proto::link::{AUTH_MECHANISM_SIZE, LINK_HEADER_SIZE};
use crate::proto::{
    AuthMechanism, HeaderKind, LinkHeader, LinkMess, build_link_error, build_link_reply,
    build_link_result, parse_auth_mechanism, server_common_caps_words, words_from_bits,
};
use crate::throttle::Throttle;
use crate::ticket::{TicketKey, check_ticket};

/// A linked channel.
#[derive(Debug)]
pub struct Linked {
    pub mess: LinkMess,
    pub header: HeaderKind,
}

/// What the server decides about a link message: accept, or refuse with a link error.
pub type Admit<'a> = &'a dyn Fn(&LinkMess) -> Result<(), u32>;

/// What a link must satisfy.
pub struct Policy<'a> {
    pub key: &'a TicketKey,
    /// `None`: any ticket is accepted.
    pub password: Option<&'a str>,
    pub admit: Admit<'a>,
    /// Wrong tickets per address (see [`crate::throttle`]).
    pub throttle: &'a Mutex<Throttle>,
    /// The whole link stage must be over by then (a peer that sends a byte now and then
    /// cannot hold a connection slot for longer).
    pub deadline: Instant,
}

fn remaining(deadline: Instant) -> io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "link stage deadline passed",
        ))
    } else {
        Ok(left)
    }
}

/// `read_exact` that gives up at `deadline`, however the bytes trickle in.
fn read_by(conn: &mut Conn, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        conn.set_read_timeout(Some(remaining(deadline)?))?;
        match conn.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "link stage deadline passed",
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `write_all` that gives up at `deadline`.
fn write_by(conn: &mut Conn, buf: &[u8], deadline: Instant) -> io::Result<()> {
    conn.set_write_timeout(Some(remaining(deadline)?))?;
    conn.write_all(buf)
}

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
    peer_ip: Option<IpAddr>,
    p: &Policy<'_>,
) -> Result<Linked, String> {
    let deadline = p.deadline;
    let mut hdr = [0u8; LINK_HEADER_SIZE];
    read_by(conn, &mut hdr, deadline).map_err(|e| format!("reading the link header: {e}"))?;
    let header = match LinkHeader::parse_client(&hdr) {
        Ok(h) => h,
        Err(e) => {
            let _ = write_by(conn, &build_link_error(e.link_error_code()), deadline);
            return Err(format!("bad link header: {e}"));
        }
    };
    let mut body = vec![0u8; header.size as usize];
    read_by(conn, &mut body, deadline).map_err(|e| format!("reading the link message: {e}"))?;
    let mess = match LinkMess::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            let _ = write_by(conn, &build_link_error(e.link_error_code()), deadline);
            return Err(format!("bad link message: {e}"));
        }
    };
    if let Err(code) = (p.admit)(&mess) {
        let _ = write_by(conn, &build_link_error(code), deadline);
        return Err(format!(
            "{} channel {} refused (link error {code})",
            channel_type::name(mess.channel_type),
            mess.channel_id
        ));
    }
    let reply = build_link_reply(
        link_err::OK,
        &p.key.public_der(),
        &server_common_caps_words(),
        &channel_caps(mess.channel_type),
    );
    write_by(conn, &reply, deadline).map_err(|e| format!("writing the link reply: {e}"))?;

    let mut mech = [0u8; AUTH_MECHANISM_SIZE];
    read_by(conn, &mut mech, deadline).map_err(|e| format!("reading the auth mechanism: {e}"))?;
    match parse_auth_mechanism(&mech) {
        Ok(AuthMechanism::Spice) => {}
        Ok(other) => {
            let _ = write_by(conn, &build_link_result(link_err::INVALID_DATA), deadline);
            return Err(format!("unsupported auth mechanism {other:?}"));
        }
        Err(e) => {
            let _ = write_by(conn, &build_link_result(link_err::INVALID_DATA), deadline);
            return Err(format!("bad auth mechanism: {e}"));
        }
    }
    let mut ticket = [0u8; TICKET_CIPHERTEXT_SIZE];
    read_by(conn, &mut ticket, deadline).map_err(|e| format!("reading the ticket: {e}"))?;
    // A locked-out address gets the same answer as a wrong ticket, without the check.
    let now = Instant::now();
    let guarded = p.password.is_some();
    let locked = guarded && peer_ip.is_some_and(|ip| p.throttle.lock().unwrap().is_locked(ip, now));
    let ok = !locked
        && match p.key.decrypt_ticket(&ticket) {
            Ok(plain) => check_ticket(&plain, p.password),
            Err(_) => false,
        };
    if !ok {
        if guarded
            && let Some(ip) = peer_ip
            && let Some(line) = p.throttle.lock().unwrap().wrong(ip, now)
        {
            log::warn(&line);
        }
        let _ = write_by(
            conn,
            &build_link_result(link_err::PERMISSION_DENIED),
            deadline,
        );
        return Err(if locked {
            "refused: too many wrong passwords from this address (ticket not checked)".into()
        } else {
            "wrong password (ticket refused)".into()
        });
    }
    write_by(conn, &build_link_result(link_err::OK), deadline)
        .map_err(|e| format!("writing the link result: {e}"))?;
    conn.set_read_timeout(None).map_err(|e| e.to_string())?;
    conn.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(Linked {
        header: HeaderKind::negotiate(true, &mess.common_caps),
        mess,
    })
}
