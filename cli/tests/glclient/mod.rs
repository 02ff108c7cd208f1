//! A minimal SPICE client for the local-client tests: the link stage (with an RSA-OAEP ticket),
//! message framing with exact-size reads, the main channel up to CHANNELS_LIST, a local display
//! channel that receives GL_SCANOUT_UNIX with its dmabuf fd, and a remote display channel that
//! counts stream frames. Plus a read-only mapping of a received fd. The generic plumbing
//! (temporary directories, child processes) is in `util`.
#![allow(dead_code)]

use std::ffi::c_void;
use std::io::{self, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rsa::pkcs8::DecodePublicKey;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use spice_shim_core::proto::caps::{common_cap, display_cap};
use spice_shim_core::proto::consts::channel_type;
use spice_shim_core::proto::link::{LINK_HEADER_SIZE, LINK_RESULT_SIZE};
use spice_shim_core::proto::msg_type::{client, server};
use spice_shim_core::proto::{Caps, LinkHeader, LinkMess, LinkReply, frame_message};

/// Upper bound for one step the server should take at once (a message, a link answer).
pub const STEP: Duration = Duration::from_secs(10);

/// DRM fourcc XR24.
pub const XR24: u32 = u32::from_le_bytes(*b"XR24");

/// Common caps spice-gtk 0.42 sends, minus SASL: AUTH_SELECTION, AUTH_SPICE, MINI_HEADER.
pub fn client_common_caps() -> Caps {
    Caps::from_bits(&[
        common_cap::PROTOCOL_AUTH_SELECTION,
        common_cap::AUTH_SPICE,
        common_cap::MINI_HEADER,
    ])
}

/// Display caps of a local client that imports dmabufs: GL_SCANOUT, MULTI_CODEC, CODEC_H264
/// (and MONITORS_CONFIG, as spice-gtk).
pub fn local_display_caps() -> Caps {
    Caps::from_bits(&[
        display_cap::MONITORS_CONFIG,
        display_cap::GL_SCANOUT,
        display_cap::MULTI_CODEC,
        display_cap::CODEC_H264,
    ])
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Link stage and framing
// ---------------------------------------------------------------------------------------------

/// A socket a SPICE channel runs on.
pub trait Sock: Read + Write + AsFd + Send {
    /// Sets the read timeout of the socket.
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Sock for UnixStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

impl Sock for TcpStream {
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

/// What [`Channel::next`] found.
#[derive(Debug)]
pub enum Next<T> {
    /// A message.
    Msg(T),
    /// Nothing arrived within the wait.
    Quiet,
    /// The server closed the connection.
    Closed,
}

impl<T: std::fmt::Debug> Next<T> {
    /// The message; panics on silence or EOF, naming `what` was expected.
    pub fn expect_msg(self, what: &str) -> T {
        match self {
            Next::Msg(m) => m,
            other => panic!("expected {what}, got {other:?}"),
        }
    }
}

/// A linked channel: one socket and its framing.
pub struct Channel<S: Sock> {
    pub sock: S,
    /// Mini (6-byte) headers in both directions.
    pub mini: bool,
    serial: u64,
}

/// Runs the link stage on `sock`: link message, reply, auth mechanism word, RSA-OAEP ticket,
/// result. Fails on any non-zero link error.
pub fn link<S: Sock>(
    sock: S,
    connection_id: u32,
    channel: u8,
    channel_id: u8,
    channel_caps: Caps,
    password: &str,
) -> io::Result<Channel<S>> {
    let mut sock = sock;
    sock.set_timeout(Some(STEP))?;
    let mess = LinkMess {
        connection_id,
        channel_type: channel,
        channel_id,
        common_caps: client_common_caps(),
        channel_caps,
    };
    sock.write_all(&mess.to_bytes())?;
    let mut hdr = [0u8; LINK_HEADER_SIZE];
    sock.read_exact(&mut hdr)?;
    let hdr = LinkHeader::parse(&hdr).map_err(|e| err(format!("link reply header: {e}")))?;
    if hdr.major_version != 2 {
        return Err(err(format!("server protocol {}", hdr.major_version)));
    }
    let mut body = vec![0u8; hdr.size as usize];
    sock.read_exact(&mut body)?;
    let reply = LinkReply::parse(&body).map_err(|e| err(format!("link reply: {e}")))?;
    if reply.error != 0 {
        return Err(err(format!(
            "{} channel {channel_id}: link error {}",
            channel_type::name(channel),
            reply.error
        )));
    }
    if !reply.common_caps.has(common_cap::AUTH_SPICE) {
        return Err(err("the server does not offer SPICE ticket auth"));
    }
    if reply.common_caps.has(common_cap::PROTOCOL_AUTH_SELECTION) {
        sock.write_all(&common_cap::AUTH_SPICE.to_le_bytes())?;
    }
    sock.write_all(&encrypt_ticket(&reply.pub_key, password)?)?;
    let mut result = [0u8; LINK_RESULT_SIZE];
    sock.read_exact(&mut result)?;
    let result = u32::from_le_bytes(result);
    if result != 0 {
        return Err(err(format!(
            "{} channel {channel_id}: link result {result}",
            channel_type::name(channel)
        )));
    }
    Ok(Channel {
        sock,
        mini: reply.common_caps.has(common_cap::MINI_HEADER),
        serial: 0,
    })
}

/// The 128-byte ticket: `password` + NUL, RSA-OAEP (SHA-1, MGF1-SHA-1, empty label) under the
/// server's SubjectPublicKeyInfo DER.
pub fn encrypt_ticket(spki_der: &[u8], password: &str) -> io::Result<Vec<u8>> {
    let key = rsa::PublicKey::from_public_key_der(spki_der)
        .map_err(|e| err(format!("the server's public key does not parse: {e}")))?;
    let mut plain = password.as_bytes().to_vec();
    plain.push(0);
    let ct = key
        .encrypt(
            &mut getrandom::SysRng,
            rsa::Oaep::<sha1::Sha1>::new(),
            &plain,
        )
        .map_err(|e| err(format!("ticket encryption: {e}")))?;
    if ct.len() != 128 {
        return Err(err(format!("{}-byte ticket", ct.len())));
    }
    Ok(ct)
}

/// Waits until `fd` is readable (data or EOF), at most `timeout`.
fn readable(fd: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec::try_from(left).map_err(|_| err("timeout out of range"))?;
        let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut pfd, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_eof(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

impl<S: Sock> Channel<S> {
    /// Sends one framed message.
    pub fn send(&mut self, msg_type: u16, body: &[u8]) -> io::Result<()> {
        let bytes = frame_message(self.mini, &mut self.serial, msg_type, body)
            .map_err(|e| err(e.to_string()))?;
        self.sock.write_all(&bytes)
    }

    /// The next message as (type, body), read with exact-size reads (header, then body), so
    /// nothing after it is consumed. Waits at most `wait` for its first byte.
    pub fn next_raw(&mut self, wait: Duration) -> io::Result<Next<(u16, Vec<u8>)>> {
        if !readable(&self.sock, wait)? {
            return Ok(Next::Quiet);
        }
        let mut hdr = [0u8; 18];
        let hdr = if self.mini {
            &mut hdr[..6]
        } else {
            &mut hdr[..]
        };
        match self.sock.read_exact(hdr) {
            Ok(()) => {}
            Err(e) if is_eof(&e) => return Ok(Next::Closed),
            Err(e) => return Err(e),
        }
        let at = if self.mini { 0 } else { 8 };
        let msg_type = u16::from_le_bytes([hdr[at], hdr[at + 1]]);
        let size = u32::from_le_bytes([hdr[at + 2], hdr[at + 3], hdr[at + 4], hdr[at + 5]]);
        if size > 64 << 20 {
            return Err(err(format!("message {msg_type} of {size} bytes")));
        }
        let mut body = vec![0u8; size as usize];
        self.sock.read_exact(&mut body)?;
        Ok(Next::Msg((msg_type, body)))
    }

    /// Waits up to `wait` for the server to close the connection, skipping messages.
    pub fn wait_closed(&mut self, wait: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_raw(left)? {
                Next::Closed => return Ok(true),
                Next::Quiet => return Ok(false),
                Next::Msg(_) => {}
            }
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn need(what: &str, body: &[u8], n: usize) -> io::Result<()> {
    if body.len() < n {
        return Err(err(format!("{what}: {} bytes, expected {n}", body.len())));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Main channel
// ---------------------------------------------------------------------------------------------

/// A linked main channel after MAIN_INIT and CHANNELS_LIST.
pub struct Main<S: Sock> {
    pub chan: Channel<S>,
    pub session_id: u32,
    /// (type, id) of every listed channel.
    pub channels: Vec<(u8, u8)>,
}

/// Links the main channel (connection id 0), reads MAIN_INIT, sends ATTACH_CHANNELS and reads
/// CHANNELS_LIST.
pub fn main_channel<S: Sock>(sock: S) -> io::Result<Main<S>> {
    let mut chan = link(sock, 0, channel_type::MAIN, 0, Caps::default(), "")?;
    let (t, body) = chan.next_raw(STEP)?.expect_msg("MAIN_INIT");
    if t != server::main::INIT {
        return Err(err(format!("first main message is {t}, not MAIN_INIT")));
    }
    need("MAIN_INIT", &body, 32)?;
    let session_id = u32_at(&body, 0);
    if session_id == 0 {
        return Err(err("MAIN_INIT with session id 0"));
    }
    chan.send(client::main::ATTACH_CHANNELS, &[])?;
    loop {
        let (t, body) = chan.next_raw(STEP)?.expect_msg("CHANNELS_LIST");
        if t != server::main::CHANNELS_LIST {
            continue;
        }
        need("CHANNELS_LIST", &body, 4)?;
        let n = u32_at(&body, 0) as usize;
        need("CHANNELS_LIST", &body, 4 + 2 * n)?;
        let channels = body[4..4 + 2 * n]
            .chunks_exact(2)
            .map(|c| (c[0], c[1]))
            .collect();
        return Ok(Main {
            chan,
            session_id,
            channels,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Display channel
// ---------------------------------------------------------------------------------------------

/// A display message a local client cares about.
#[derive(Debug)]
pub enum DisplayMsg {
    SurfaceCreate {
        surface_id: u32,
        width: u32,
        height: u32,
        format: u32,
        flags: u32,
    },
    MonitorsConfig {
        count: u16,
        heads: Vec<[u32; 7]>,
    },
    Mark,
    /// GL_SCANOUT_UNIX; `fd` is the one that came in the following `'@'` packet (none when
    /// the fourcc is 0).
    GlScanout(GlScanout),
    GlDraw(DrawRect),
    Other(u16, Vec<u8>),
}

impl DisplayMsg {
    /// The wire type.
    pub fn msg_type(&self) -> u16 {
        use server::display as t;
        match self {
            DisplayMsg::SurfaceCreate { .. } => t::SURFACE_CREATE,
            DisplayMsg::MonitorsConfig { .. } => t::MONITORS_CONFIG,
            DisplayMsg::Mark => t::MARK,
            DisplayMsg::GlScanout(_) => t::GL_SCANOUT_UNIX,
            DisplayMsg::GlDraw(_) => t::GL_DRAW,
            DisplayMsg::Other(t, _) => *t,
        }
    }
}

/// GL_SCANOUT_UNIX and its fd.
#[derive(Debug)]
pub struct GlScanout {
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub fourcc: u32,
    pub flags: u32,
    pub fd: Option<OwnedFd>,
}

/// GL_DRAW's rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// A linked display channel.
pub struct Display<S: Sock> {
    pub chan: Channel<S>,
}

/// Links display channel 0 with `caps` and sends the 14-byte display INIT (the values spice-gtk
/// sends).
pub fn display_channel<S: Sock>(sock: S, session_id: u32, caps: Caps) -> io::Result<Display<S>> {
    let mut chan = link(sock, session_id, channel_type::DISPLAY, 0, caps, "")?;
    let mut init = Vec::with_capacity(14);
    init.push(1u8);
    init.extend_from_slice(&20_971_520i64.to_le_bytes());
    init.push(1u8);
    init.extend_from_slice(&3_145_728i32.to_le_bytes());
    chan.send(client::display::INIT, &init)?;
    Ok(Display { chan })
}

/// Receives the one-byte `'@'` packet carrying one fd (SCM_RIGHTS).
fn recv_fd(sock: impl AsFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match rustix::net::recvmsg(&sock, &mut iov, &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => break r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if got.bytes != 1 {
        return Err(err(format!("fd packet of {} bytes", got.bytes)));
    }
    if byte[0] != b'@' {
        return Err(err(format!(
            "fd packet byte {:#04x}, expected '@'",
            byte[0]
        )));
    }
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            fds.extend(it);
        }
    }
    if fds.len() != 1 {
        return Err(err(format!(
            "{} fds with the '@' byte, expected 1",
            fds.len()
        )));
    }
    Ok(fds.pop().unwrap())
}

impl<S: Sock> Display<S> {
    /// The next display message. After GL_SCANOUT_UNIX with a non-zero fourcc it also reads
    /// the `'@'` packet with the fd, as spice-gtk does.
    pub fn next(&mut self, wait: Duration) -> io::Result<Next<DisplayMsg>> {
        use server::display as t;
        let (ty, body) = match self.chan.next_raw(wait)? {
            Next::Msg(m) => m,
            Next::Quiet => return Ok(Next::Quiet),
            Next::Closed => return Ok(Next::Closed),
        };
        let msg = match ty {
            t::SURFACE_CREATE => {
                need("SURFACE_CREATE", &body, 20)?;
                DisplayMsg::SurfaceCreate {
                    surface_id: u32_at(&body, 0),
                    width: u32_at(&body, 4),
                    height: u32_at(&body, 8),
                    format: u32_at(&body, 12),
                    flags: u32_at(&body, 16),
                }
            }
            t::MONITORS_CONFIG => {
                need("MONITORS_CONFIG", &body, 4)?;
                let count = u16::from_le_bytes([body[0], body[1]]);
                need("MONITORS_CONFIG", &body, 4 + 28 * count as usize)?;
                let heads = body[4..4 + 28 * count as usize]
                    .chunks_exact(28)
                    .map(|h| std::array::from_fn(|i| u32_at(h, 4 * i)))
                    .collect();
                DisplayMsg::MonitorsConfig { count, heads }
            }
            t::MARK => DisplayMsg::Mark,
            t::GL_SCANOUT_UNIX => {
                if body.len() != 20 {
                    return Err(err(format!("GL_SCANOUT_UNIX of {} bytes", body.len())));
                }
                let fourcc = u32_at(&body, 12);
                let fd = if fourcc != 0 {
                    Some(recv_fd(&self.chan.sock)?)
                } else {
                    None
                };
                DisplayMsg::GlScanout(GlScanout {
                    width: u32_at(&body, 0),
                    height: u32_at(&body, 4),
                    stride: u32_at(&body, 8),
                    fourcc,
                    flags: u32_at(&body, 16),
                    fd,
                })
            }
            t::GL_DRAW => {
                if body.len() != 16 {
                    return Err(err(format!("GL_DRAW of {} bytes", body.len())));
                }
                DisplayMsg::GlDraw(DrawRect {
                    x: u32_at(&body, 0),
                    y: u32_at(&body, 4),
                    w: u32_at(&body, 8),
                    h: u32_at(&body, 12),
                })
            }
            other => DisplayMsg::Other(other, body),
        };
        Ok(Next::Msg(msg))
    }

    /// Sends GL_DRAW_DONE.
    pub fn gl_draw_done(&mut self) -> io::Result<()> {
        self.chan.send(client::display::GL_DRAW_DONE, &[])
    }
}

// ---------------------------------------------------------------------------------------------
// A read-only mapping of a received fd
// ---------------------------------------------------------------------------------------------

/// `len` bytes of an fd mapped read-only and shared.
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is only read, through copies made by `snapshot`; it can be used and
// dropped from any thread.
unsafe impl Send for Mapping {}
// SAFETY: `snapshot` only reads the mapping (copying it out); no `&mut` access exists.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` (PROT_READ, MAP_SHARED).
    pub fn new(fd: impl AsFd, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(err("empty mapping"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) does not overlap any
        // existing Rust object; it is unmapped exactly once, in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or_else(|| err("mmap returned null"))?,
            len,
        })
    }

    /// A copy of the mapped bytes as they are now.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        // SAFETY: `ptr` is valid for `len` readable bytes until Drop; `out` is a distinct
        // allocation of the same length. The bytes are plain memory of a memfd/dmabuf.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().cast::<u8>(),
                out.as_mut_ptr(),
                self.len,
            )
        };
        out
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing borrows the mapping
        // (`snapshot` returns copies).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// (st_dev, st_ino) of an fd: two fds with the same pair refer to the same file (the same
/// memfd, not a copy).
pub fn file_identity(fd: impl AsFd) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).expect("fstat");
    (st.st_dev as u64, st.st_ino as u64)
}
