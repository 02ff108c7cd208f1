//! `spice-shim feed`: the test guest as a producer for `spicedmabufsrc socket-path=PATH`.
//!
//! The feed behaves like a VM host towards the element (see `docs/socket-protocol.md`): it
//! renders into a ring of three memfd buffers, announces a buffer with SCANOUT (its fd rides on
//! the packet as `SCM_RIGHTS`) when it differs from the last one announced, and asks for a frame
//! with DRAW. A buffer is drawn into again only after the element answered every draw on it with
//! DONE; when no buffer is free the tick is skipped.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gstspicedmabuf::wire::{self, DoneStatus, Message, PlaneLayout, WireError};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use test_guest::{Guest, Pattern};

/// Number of buffers in the guest's ring (triple buffering).
const BUFFERS: usize = 3;
/// How long to keep trying to connect while the socket does not exist or refuses.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two connection attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// How long to wait, after the last draw, for the DONEs of the draws still out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Without any DONE for this long while draws are out, say so once on stderr.
const STALL_WARNING: Duration = Duration::from_secs(5);
/// Highest accepted `--fps`.
const MAX_FPS: u32 = 1000;
/// Name sent in HELLO.
const HELLO_NAME: &str = "spice-shim feed";

/// Options of `spice-shim feed`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedOptions {
    /// Socket the element listens on (`spicedmabufsrc socket-path=PATH`). If it does not exist
    /// yet or refuses connections, the feed keeps trying for 10 s, so it may be started before
    /// gst-launch-1.0.
    #[arg(long)]
    pub socket: PathBuf,
    /// Frame size, WxH.
    #[arg(long, default_value = "1280x720")]
    pub size: String,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Number of frames to draw (0 = until the element goes away or SIGINT).
    #[arg(long, default_value_t = 0)]
    pub frames: u64,
    /// Test pattern: bars, counter, desktop, video or solid:RRGGBB.
    #[arg(long, default_value = "bars")]
    pub pattern: String,
}

/// What a feed run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedReport {
    /// DRAWs sent.
    pub drawn: u64,
    /// DONEs with status RELEASED.
    pub released: u64,
    /// DONEs with status DROPPED.
    pub dropped: u64,
    /// DONEs with status REFUSED.
    pub refused: u64,
    /// Draws that never got their DONE: the element closed the connection (or the wait for the
    /// last DONEs timed out) while they were out.
    pub unanswered: u64,
    /// SCANOUTs sent.
    pub scanouts: u64,
    /// Ticks without a frame because every buffer was still out.
    pub skipped: u64,
    /// ERROR messages received from the element (their texts go to stderr).
    pub errors: u64,
    /// Violations of the protocol by the element: a DONE for an unknown draw id or a second
    /// DONE for the same draw, a packet that does not decode, a message the element must not
    /// send.
    pub protocol_errors: u64,
    /// The element closed the connection before the feed was done.
    pub closed_by_element: bool,
}

impl FeedReport {
    fn count_done(&mut self, status: DoneStatus) {
        match status {
            DoneStatus::Released => self.released += 1,
            DoneStatus::Dropped => self.dropped += 1,
            DoneStatus::Refused => self.refused += 1,
        }
    }
}

impl std::fmt::Display for FeedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "feed: {} draws, {} released, {} dropped, {} refused, {} unanswered, \
             {} scanouts, {} skipped ticks, {} element errors, {} protocol errors{}",
            self.drawn,
            self.released,
            self.dropped,
            self.refused,
            self.unanswered,
            self.scanouts,
            self.skipped,
            self.errors,
            self.protocol_errors,
            if self.closed_by_element {
                ", closed by the element"
            } else {
                ""
            }
        )
    }
}

/// Parses a frame size `WxH` (e.g. `1280x720`; `X` is accepted too). Both sides must be in
/// `1..=16384`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = |why: &str| format!("invalid size {s:?}: {why}");
    let (w, h) = s
        .trim()
        .split_once(['x', 'X'])
        .ok_or_else(|| bad("expected WxH, e.g. 1280x720"))?;
    let side = |v: &str, name: &str| -> Result<u32, String> {
        let v = v.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!(
                "{name} {v:?} is not a number; expected WxH, e.g. 1280x720"
            )));
        }
        match v.parse::<u32>() {
            Ok(n) if (1..=test_guest::MAX_DIMENSION).contains(&n) => Ok(n),
            _ => Err(bad(&format!(
                "{name} must be 1 to {}",
                test_guest::MAX_DIMENSION
            ))),
        }
    };
    Ok((side(w, "width")?, side(h, "height")?))
}

/// Runs the feed: connects, draws `opts.frames` frames (or until the element goes away or
/// SIGINT), waits for the last DONEs and returns what happened.
///
/// The element going away (end of stream, `EPIPE`, `ECONNRESET`) is not an error: the draws
/// still out are counted as [`FeedReport::unanswered`].
pub fn run(opts: FeedOptions) -> anyhow::Result<FeedReport> {
    let (width, height) = parse_size(&opts.size).map_err(anyhow::Error::msg)?;
    let pattern: Pattern = opts
        .pattern
        .parse()
        .map_err(|e| anyhow::anyhow!("--pattern: {e}"))?;
    if !(1..=MAX_FPS).contains(&opts.fps) {
        bail!("--fps {}: must be 1 to {MAX_FPS}", opts.fps);
    }
    let guest = Guest::new(width, height, None, pattern, BUFFERS)
        .with_context(|| format!("cannot allocate {BUFFERS} buffers of {width}x{height}"))?;
    eprintln!(
        "feed: {width}x{height} pattern {pattern} at {} fps to {}",
        opts.fps,
        opts.socket.display()
    );
    sigint::install();
    let sock = connect(&opts.socket)?;
    let mut feed = Feed {
        sock,
        guest,
        report: FeedReport::default(),
        last_scanout: None,
        next_draw_id: 1,
        answered: HashSet::new(),
        open: true,
        buf: Box::new([0; wire::MAX_PACKET]),
        last_done: Instant::now(),
        stall_warned: false,
    };
    feed.run(opts.fps, opts.frames)?;
    Ok(feed.report)
}

/// Connects to the element's socket, retrying for [`CONNECT_TIMEOUT`] while the socket file is
/// missing or nobody listens yet.
fn connect(path: &Path) -> anyhow::Result<OwnedFd> {
    let addr = SocketAddrUnix::new(path)
        .with_context(|| format!("invalid socket path {}", path.display()))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .context("cannot create a unix SOCK_SEQPACKET socket")?;
        let err = match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) => continue,
            Err(e) => e,
        };
        // The element may not have started yet (no file, or a stale file nobody listens on), or
        // its backlog is full.
        let transient = matches!(err, Errno::NOENT | Errno::CONNREFUSED | Errno::AGAIN);
        if !transient || Instant::now() >= deadline || sigint::interrupted() {
            let hint = if transient {
                format!(
                    " (tried for {} s; is `gst-launch-1.0 spicedmabufsrc socket-path={}` running?)",
                    CONNECT_TIMEOUT.as_secs(),
                    path.display()
                )
            } else {
                String::new()
            };
            bail!(
                "cannot connect to {}: {}{hint}",
                path.display(),
                io::Error::from(err)
            );
        }
        std::thread::sleep(CONNECT_RETRY);
    }
}

/// Whether a send or receive failure means the element closed the connection.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

struct Feed {
    sock: OwnedFd,
    guest: Guest,
    report: FeedReport,
    /// Index of the buffer named by the last SCANOUT sent.
    last_scanout: Option<usize>,
    next_draw_id: u64,
    /// Draw ids that got their DONE, to tell duplicates from unknown ids.
    answered: HashSet<u64>,
    /// False once the element closed the connection.
    open: bool,
    buf: Box<[u8; wire::MAX_PACKET]>,
    /// Last DONE, or the start: for the stall warning.
    last_done: Instant,
    stall_warned: bool,
}

impl Feed {
    fn run(&mut self, fps: u32, frames: u64) -> anyhow::Result<()> {
        self.send(&Message::hello(HELLO_NAME))?;
        let period = Duration::from_secs(1) / fps;
        let mut next_tick = Instant::now();
        let mut frame_no = 0u64;
        while self.open && !sigint::interrupted() && (frames == 0 || frame_no < frames) {
            let now = Instant::now();
            if now >= next_tick {
                if self.draw_frame(frame_no)? {
                    frame_no += 1;
                } else {
                    self.report.skipped += 1;
                }
                next_tick += period;
                // After a long stall (slow machine, suspended process) do not burst to catch
                // up: start counting ticks from now.
                if next_tick + period < now {
                    next_tick = now + period;
                }
                continue;
            }
            self.receive_until(next_tick)?;
            self.warn_if_stalled();
        }
        // The last draws: wait (bounded) for their DONEs.
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.open && self.guest.busy_count() > 0 && Instant::now() < deadline {
            self.receive_until(deadline.min(Instant::now() + Duration::from_millis(50)))?;
        }
        let out = self.guest.busy_count() as u64;
        if out > 0 {
            if self.open {
                eprintln!(
                    "feed: gave up waiting after {} s: {out} draw(s) still without DONE",
                    DRAIN_TIMEOUT.as_secs()
                );
            }
            self.report.unanswered = out;
        }
        if self.open {
            // Polite end of session: the element lets go of the last buffer.
            let _ = self.send(&Message::scanout_disabled());
        }
        Ok(())
    }

    /// Renders frame `frame_no` into a free buffer and sends SCANOUT (if needed) and DRAW.
    /// Returns false, drawing nothing, when every buffer is still out.
    fn draw_frame(&mut self, frame_no: u64) -> anyhow::Result<bool> {
        let Some(idx) = self.guest.next_free() else {
            return Ok(false);
        };
        self.guest
            .render_into(idx, frame_no)
            .context("render into a free buffer")?;
        if self.last_scanout != Some(idx) {
            let buffer = self.guest.buffer(idx).expect("index from next_free");
            let msg = Message::Scanout {
                width: buffer.width(),
                height: buffer.height(),
                fourcc: buffer.fourcc(),
                y0_top: true,
                modifier: wire::MOD_LINEAR,
                planes: buffer
                    .planes()
                    .iter()
                    .map(|p| PlaneLayout {
                        offset: p.offset,
                        stride: p.stride,
                    })
                    .collect(),
            };
            // One fd per plane, in plane order (all the same memfd here). The element gets its
            // own copies; ours close when the packet is sent.
            let fds = buffer
                .planes()
                .iter()
                .map(|_| buffer.dup_fd())
                .collect::<Result<Vec<OwnedFd>, _>>()
                .context("cannot duplicate the buffer's fd")?;
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|fd| fd.as_fd()).collect();
            if !self.send_with_fds(&msg, &borrowed)? {
                return Ok(true);
            }
            self.report.scanouts += 1;
            self.last_scanout = Some(idx);
        }
        let draw_id = self.next_draw_id;
        self.next_draw_id += 1;
        let buffer = self.guest.buffer(idx).expect("index from next_free");
        let msg = Message::Draw {
            x: 0,
            y: 0,
            w: buffer.width(),
            h: buffer.height(),
            draw_id,
        };
        if self.send(&msg)? {
            self.guest
                .mark_busy(idx, draw_id)
                .context("mark the buffer busy")?;
            self.report.drawn += 1;
        }
        Ok(true)
    }

    /// Sends a message without fds. Returns false if the element has gone away.
    fn send(&mut self, msg: &Message) -> anyhow::Result<bool> {
        self.send_with_fds(msg, &[])
    }

    /// Sends a message with its fds. Returns false if the element has gone away.
    fn send_with_fds(&mut self, msg: &Message, fds: &[BorrowedFd<'_>]) -> anyhow::Result<bool> {
        if !self.open {
            return Ok(false);
        }
        match wire::send_message(self.sock.as_fd(), msg, fds) {
            Ok(()) => Ok(true),
            Err(e) if is_disconnect(&e) => {
                self.closed();
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("cannot send {}", msg.name())),
        }
    }

    fn closed(&mut self) {
        if self.open {
            self.open = false;
            self.report.closed_by_element = true;
            eprintln!("feed: the element closed the connection");
        }
    }

    /// Handles every packet that arrives before `deadline` (at least one poll).
    fn receive_until(&mut self, deadline: Instant) -> anyhow::Result<()> {
        while self.open {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec::try_from(timeout).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let mut pfd = [PollFd::new(&self.sock, PollFlags::IN)];
            match rustix::event::poll(&mut pfd, Some(&ts)) {
                Ok(0) => return Ok(()),
                Ok(_) => self.receive_one()?,
                Err(Errno::INTR) => {
                    if sigint::interrupted() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(io::Error::from(e)).context("poll on the socket"),
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Reads and handles one packet (the socket is readable).
    fn receive_one(&mut self) -> anyhow::Result<()> {
        let msg = match wire::recv_message(self.sock.as_fd(), &mut self.buf) {
            Ok(Some((msg, _fds))) => msg,
            Ok(None) => {
                self.closed();
                return Ok(());
            }
            Err(WireError::Io(e)) if is_disconnect(&e) => {
                self.closed();
                return Ok(());
            }
            Err(WireError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(WireError::Io(e)) => return Err(e).context("cannot receive from the element"),
            Err(e) => {
                self.report.protocol_errors += 1;
                eprintln!("feed: bad packet from the element: {e}");
                if e.is_fatal() {
                    // The peer does not speak this protocol.
                    eprintln!("feed: closing the connection");
                    self.open = false;
                }
                return Ok(());
            }
        };
        match msg {
            Message::Done { draw_id, status } => {
                if self.guest.release(draw_id) {
                    self.answered.insert(draw_id);
                    self.report.count_done(status);
                    self.last_done = Instant::now();
                    self.stall_warned = false;
                } else {
                    self.report.protocol_errors += 1;
                    let why = if self.answered.contains(&draw_id) {
                        "a second DONE for"
                    } else {
                        "DONE for unknown"
                    };
                    eprintln!("feed: protocol error: {why} draw {draw_id} ({status})");
                }
            }
            Message::Error { code, text } => {
                self.report.errors += 1;
                eprintln!("feed: element error {code}: {text}");
            }
            Message::Hello { version, name } => {
                eprintln!("feed: element says hello: {name:?} (version {version})");
            }
            other @ (Message::Scanout { .. } | Message::Draw { .. }) => {
                self.report.protocol_errors += 1;
                eprintln!(
                    "feed: protocol error: the element sent a {} message",
                    other.name()
                );
            }
        }
        Ok(())
    }

    fn warn_if_stalled(&mut self) {
        if !self.stall_warned
            && self.guest.busy_count() == BUFFERS
            && self.last_done.elapsed() >= STALL_WARNING
        {
            self.stall_warned = true;
            eprintln!(
                "feed: no DONE for {} s with every buffer out; is the pipeline running, and is \
                 no other producer connected?",
                STALL_WARNING.as_secs()
            );
        }
    }
}

/// SIGINT/SIGTERM: the first one ends the feed cleanly (stop drawing, wait for the DONEs,
/// print the report), a second one exits at once (signal-hook's conditional shutdown).
mod sigint {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, LazyLock, Once};

    static FLAG: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

    /// Installs the handlers (once per process).
    pub(super) fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                // A second signal while the flag is set exits with status 130.
                let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, FLAG.clone());
                let _ = signal_hook::flag::register(sig, FLAG.clone());
            }
        });
    }

    /// A signal arrived.
    pub(super) fn interrupted() -> bool {
        FLAG.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1280x720"), Ok((1280, 720)));
        assert_eq!(parse_size("320X240"), Ok((320, 240)));
        assert_eq!(parse_size(" 1x1 "), Ok((1, 1)));
        assert_eq!(parse_size("16384x16384"), Ok((16384, 16384)));
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in [
            "",
            "1280",
            "x720",
            "1280x",
            "0x720",
            "1280x0",
            "16385x10",
            "-1x10",
            "+1x10",
            "12.5x10",
            "axb",
            "1280x720x3",
            "99999999999x1",
        ] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
        assert!(
            parse_size("0x10")
                .unwrap_err()
                .contains("width must be 1 to 16384")
        );
        assert!(
            parse_size("10x0")
                .unwrap_err()
                .contains("height must be 1 to 16384")
        );
        assert!(parse_size("wide").unwrap_err().contains("expected WxH"));
    }

    fn opts(socket: &Path) -> FeedOptions {
        FeedOptions {
            socket: socket.to_path_buf(),
            size: "64x48".into(),
            fps: 200,
            frames: 5,
            pattern: "counter".into(),
        }
    }

    #[test]
    fn bad_options_are_clear_errors() {
        let path = Path::new("/nonexistent/feed.sock");
        let mut o = opts(path);
        o.size = "64by48".into();
        assert!(format!("{:#}", run(o).unwrap_err()).contains("invalid size"));
        let mut o = opts(path);
        o.pattern = "stripes".into();
        assert!(format!("{:#}", run(o).unwrap_err()).contains("unknown pattern"));
        let mut o = opts(path);
        o.fps = 0;
        assert!(format!("{:#}", run(o).unwrap_err()).contains("--fps 0"));
    }

    #[test]
    fn report_line() {
        let r = FeedReport {
            drawn: 10,
            released: 7,
            dropped: 2,
            refused: 1,
            ..FeedReport::default()
        };
        assert_eq!(
            r.to_string(),
            "feed: 10 draws, 7 released, 2 dropped, 1 refused, 0 unanswered, 0 scanouts, \
             0 skipped ticks, 0 element errors, 0 protocol errors"
        );
    }

    /// A fake element on a listening socket: answers every DRAW with the status chosen by
    /// `answer`, checks that no buffer is announced while it is out, then closes.
    fn fake_element(
        path: &Path,
        answer: impl Fn(u64) -> Vec<DoneStatus> + Send + 'static,
        close_after_draws: Option<u64>,
    ) -> std::thread::JoinHandle<(u64, u64)> {
        let listen = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&listen, &SocketAddrUnix::new(path).unwrap()).unwrap();
        rustix::net::listen(&listen, 1).unwrap();
        std::thread::spawn(move || {
            let conn = rustix::net::accept_with(&listen, SocketFlags::CLOEXEC).unwrap();
            let mut buf = [0u8; wire::MAX_PACKET];
            let (mut scanouts, mut draws) = (0u64, 0u64);
            while let Ok(Some((msg, fds))) = wire::recv_message(conn.as_fd(), &mut buf) {
                match msg {
                    Message::Scanout { planes, .. } => {
                        assert_eq!(fds.len(), planes.len());
                        scanouts += u64::from(!planes.is_empty());
                    }
                    Message::Draw { draw_id, .. } => {
                        draws += 1;
                        if close_after_draws == Some(draws) {
                            return (scanouts, draws);
                        }
                        for status in answer(draw_id) {
                            let done = Message::Done { draw_id, status };
                            wire::send_message(conn.as_fd(), &done, &[]).unwrap();
                        }
                    }
                    Message::Hello { name, .. } => assert_eq!(name, HELLO_NAME),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (scanouts, draws)
        })
    }

    fn temp_socket(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "spice-shim-feed-{}-{name}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn feeds_a_fake_element() {
        let path = temp_socket("fake");
        let element = fake_element(
            &path,
            |id| {
                vec![if id % 2 == 0 {
                    DoneStatus::Dropped
                } else {
                    DoneStatus::Released
                }]
            },
            None,
        );
        let report = run(opts(&path)).unwrap();
        let (scanouts, draws) = element.join().unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(report.drawn, 5);
        assert_eq!(draws, 5);
        assert_eq!((report.released, report.dropped, report.refused), (3, 2, 0));
        assert_eq!(report.unanswered, 0);
        assert_eq!(report.protocol_errors, 0);
        assert!(!report.closed_by_element);
        // Buffers are used in turn, so each draw needs its SCANOUT.
        assert_eq!(report.scanouts, scanouts);
        assert!(scanouts >= 1);
    }

    #[test]
    fn counts_duplicate_and_unknown_dones() {
        let path = temp_socket("dup");
        let element = fake_element(
            &path,
            |id| {
                let mut v = vec![DoneStatus::Released];
                if id == 2 {
                    v.push(DoneStatus::Released);
                }
                v
            },
            None,
        );
        let report = run(opts(&path)).unwrap();
        element.join().unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(report.released, 5);
        assert_eq!(report.protocol_errors, 1);
    }

    #[test]
    fn element_going_away_is_not_an_error() {
        let path = temp_socket("gone");
        // Never answers; closes at the third draw.
        let element = fake_element(&path, |_| Vec::new(), Some(3));
        let mut o = opts(&path);
        o.frames = 0;
        let report = run(o).unwrap();
        element.join().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(report.closed_by_element);
        assert_eq!(report.drawn, 3);
        assert_eq!(report.unanswered, 3);
        assert_eq!(report.released, 0);
    }

    #[test]
    fn connect_waits_for_the_socket() {
        let path = temp_socket("late");
        let late = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                fake_element(&path, |_| vec![DoneStatus::Released], None)
                    .join()
                    .unwrap()
            })
        };
        let report = run(opts(&path)).unwrap();
        late.join().unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(report.released, 5);
    }
}
