//! A remote SPICE client that counts stream frames without decoding them: it links the main
//! channel and display channel 0 (no GL_SCANOUT cap, MULTI_CODEC and exactly one codec cap, so
//! the server streams that codec to it), then reads every message as fast as it comes. It
//! answers what the protocol asks of a well-behaved client (PONG for PING, ACK_SYNC and ACKs
//! after SET_ACK, on both channels), and counts STREAM_DATA messages and bytes in atomics that
//! the benchmark reads at the edges of its measured window.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use spice_shim_core::proto::Caps;
use spice_shim_core::proto::VideoCodec;
use spice_shim_core::proto::caps::display_cap;
use spice_shim_core::proto::msg_type::{client, server};

use crate::glclient::{Channel, Next, Sock, display_channel, main_channel};

/// How long one poll of the two sockets waits before the stop flag is checked again.
const POLL: Duration = Duration::from_millis(100);

/// What one client has seen so far; read by the benchmark while the client runs.
#[derive(Default)]
pub struct Counters {
    /// STREAM_DATA (and STREAM_DATA_SIZED) messages.
    pub frames: AtomicU64,
    /// Bytes of those messages, header included.
    pub bytes: AtomicU64,
    /// Every byte read on the display channel (all messages, headers included).
    pub display_bytes: AtomicU64,
    pub stream_creates: AtomicU64,
    /// Codec byte of the last STREAM_CREATE (0: none yet).
    pub codec: AtomicU8,
    pub pings: AtomicU64,
    /// Why the client stopped before it was asked to, if it did.
    pub error: Mutex<Option<String>>,
}

impl Counters {
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn codec(&self) -> Option<VideoCodec> {
        VideoCodec::from_u8(self.codec.load(Ordering::Acquire))
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }
}

/// A client thread and its counters.
pub struct Client {
    pub codec: VideoCodec,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Starts a client of `addr` that asks for `codec`, on a thread named `name`.
    pub fn start(addr: SocketAddr, codec: VideoCodec, name: &str) -> std::io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    if let Err(e) = run(addr, codec, &counters, &stop) {
                        *counters.error.lock().unwrap() = Some(e.to_string());
                    }
                })?
        };
        Ok(Self {
            codec,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has ended (an error, or the server closed the connection).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the thread to stop (it notices within [`POLL`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Display caps of a remote client that decodes only `codec` (plus MONITORS_CONFIG, as
/// spice-gtk). Without MULTI_CODEC the server would only offer MJPEG.
pub fn remote_caps(codec: VideoCodec) -> Caps {
    Caps::from_bits(&[
        display_cap::MONITORS_CONFIG,
        display_cap::MULTI_CODEC,
        codec.client_cap(),
    ])
}

/// ACK flow control state of one channel (active after SET_ACK).
#[derive(Default)]
struct Acks {
    window: u32,
    received: u32,
}

fn run(
    addr: SocketAddr,
    codec: VideoCodec,
    counters: &Counters,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let main_sock = TcpStream::connect(addr)?;
    main_sock.set_nodelay(true)?;
    let linked = main_channel(main_sock)?;
    let mut main = linked.chan;
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let mut display = display_channel(sock, linked.session_id, remote_caps(codec))?.chan;
    let (mut main_acks, mut display_acks) = (Acks::default(), Acks::default());
    while !stop.load(Ordering::Acquire) {
        let (main_ready, display_ready) = readable2(&main.sock, &display.sock)?;
        if main_ready {
            match main.next_raw(Duration::ZERO)? {
                Next::Msg((t, body)) => answer_base(&mut main, &mut main_acks, t, &body)?,
                Next::Quiet => {}
                Next::Closed => anyhow::bail!("the server closed the main channel"),
            }
        }
        if display_ready {
            match display.next_raw(Duration::ZERO)? {
                Next::Msg((t, body)) => {
                    count(counters, display.mini, t, &body);
                    answer_base(&mut display, &mut display_acks, t, &body)?;
                    if t == server::base::PING {
                        counters.pings.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Next::Quiet => {}
                Next::Closed => anyhow::bail!("the server closed the display channel"),
            }
        }
    }
    Ok(())
}

/// Counts one display message.
fn count(counters: &Counters, mini: bool, t: u16, body: &[u8]) {
    let size = body.len() as u64 + if mini { 6 } else { 18 };
    counters.display_bytes.fetch_add(size, Ordering::Relaxed);
    match t {
        server::display::STREAM_DATA | server::display::STREAM_DATA_SIZED => {
            counters.bytes.fetch_add(size, Ordering::Relaxed);
            counters.frames.fetch_add(1, Ordering::Release);
        }
        server::display::STREAM_CREATE => {
            if let Some(&c) = body.get(9) {
                counters.codec.store(c, Ordering::Release);
            }
            counters.stream_creates.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Answers the base messages that need an answer (PING, SET_ACK) and sends an ACK every
/// `window` messages once SET_ACK has started flow control.
fn answer_base<S: Sock>(
    chan: &mut Channel<S>,
    acks: &mut Acks,
    t: u16,
    body: &[u8],
) -> std::io::Result<()> {
    match t {
        server::base::PING if body.len() >= 12 => {
            chan.send(client::base::PONG, &body[..12])?;
        }
        server::base::SET_ACK if body.len() >= 8 => {
            chan.send(client::base::ACK_SYNC, &body[..4])?;
            acks.window = u32::from_le_bytes(body[4..8].try_into().unwrap());
            acks.received = 0;
            return Ok(());
        }
        _ => {}
    }
    if acks.window > 0 {
        acks.received += 1;
        if acks.received >= acks.window {
            acks.received = 0;
            chan.send(client::base::ACK, &[])?;
        }
    }
    Ok(())
}

/// Waits up to [`POLL`] until one of the two sockets is readable; says which.
fn readable2(a: impl AsFd, b: impl AsFd) -> std::io::Result<(bool, bool)> {
    let ts = Timespec::try_from(POLL).expect("a small timeout");
    let mut fds = [
        PollFd::new(&a, PollFlags::IN),
        PollFd::new(&b, PollFlags::IN),
    ];
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(0) | Err(rustix::io::Errno::INTR) => Ok((false, false)),
        Ok(_) => {
            let ready = |f: &PollFd| !f.revents().is_empty();
            Ok((ready(&fds[0]), ready(&fds[1])))
        }
        Err(e) => Err(e.into()),
    }
}
