//! Reading framed client messages from a linked channel.

use std::io::Read;

use crate::conn::Conn;
use crate::proto::{FrameDecoder, HeaderKind};

/// Reads messages from `conn` and hands each `(type, body)` to `handle` until the peer closes,
/// a read fails, the framing is broken, or `handle` returns false. Returns why it stopped.
pub fn read_messages(
    conn: &mut Conn,
    header: HeaderKind,
    mut handle: impl FnMut(u16, Vec<u8>) -> bool,
) -> String {
    let mut dec = FrameDecoder::with_default_limit(header);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return "closed by the client".into(),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return format!("read error: {e}"),
        };
        dec.push(&buf[..n]);
        loop {
            match dec.next_message() {
                Ok(Some((t, body))) => {
                    if !handle(t, body) {
                        return "closed by the server".into();
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("malformed message: {e}"),
            }
        }
    }
}
