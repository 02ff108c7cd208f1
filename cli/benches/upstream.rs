//! `spice-shim qemu` side by side with upstream SPICE (spice-server 0.15.1 built into QEMU 7.2)
//! on the same Linux guest, the same workload and the same client.
//!
//! Run with `cargo bench -p spice-shim-cli --bench upstream`. It prints tables, ratios first,
//! and asserts nothing about speed. `SPICE_SHIM_BENCH_QUICK=1` (or running the binary without
//! the `--bench` argument, e.g. under `cargo test --benches`) is a smoke run (4 + 4 picture
//! changes and a 3 s window per run instead of 40 + 30 and 20 s); it checks only that every
//! figure was produced and that the shim's cookies balanced. `SPICE_SHIM_BENCH_UPSTREAM_H264=1`
//! (not in quick mode) adds the reproduction of upstream's H.264 crash (below); `=only` runs
//! just that.
//!
//! # The runs
//! The guest is the busybox Linux guest of `cli/tests/qemu/mod.rs` (vesafb 800x600x24, four
//! pictures of 4x3 solid 200x200 cells, every cell different between any two pictures), booted
//! with `spice_test=marks`: its init takes commands on a second serial port, a unix socket this
//! program holds (`show <k>`, `run`, `video`, `mark`, `count`, `halt`, see `tests/qemu/init`).
//! Both QEMUs have `-vga qxl` (vesafb then uses the QXL device's VGA mode), TCG,
//! `-name …,debug-threads=on`:
//! - **upstream**: `-display none -spice port=…,addr=127.0.0.1,disable-ticketing=on,
//!   streaming-video=all`. QEMU hands spice-server the VGA-mode screen as drawing commands, one
//!   per dirty 32-pixel-wide column strip; spice-server detects video streams in them and
//!   encodes those itself (MJPEG, its built-in encoder, the default), the rest as images;
//! - **shim h264**, **shim mjpeg**: `-display dbus` on a private bus and
//!   `spice-shim qemu --video-codecs <codec>` (one after the other against the same QEMU).
//!
//! The client is the same for all: `cli/benches/upstream_client.py`, spice-gtk 0.42 through
//! python3-gi, which reads the centre of each of the 12 cells of its surface on every
//! `display-invalidate` and prints `PIC <time> <k>` when the surface shows picture k in full
//! and did not before. It connects through a TCP forwarder in this program that counts the
//! bytes of every connection in each direction and parses the server's SPICE messages (stream
//! frames, draws, stream creations and their codec).
//!
//! # Latency (glass to glass)
//! Two phases, each from picture `a` on the screen:
//! - **interactive**: the host sends `show b`, `show a`, `show b` … 400–700 ms apart (a fixed
//!   pseudo-random sequence, the same for every run); nothing else changes, so neither server
//!   streams;
//! - **during video**: the host sends `video` (the guest writes `a`, `b`, `c` in turn, flat out),
//!   waits 3 s and until the server streams (at most 15 s more), then sends `mark` 900–1200 ms
//!   apart: the guest writes `d` instead of its next picture and keeps it 100 ms.
//!
//! The guest answers `SHOWN <k>` on the serial port right after its write to `/dev/fb0` ended;
//! this program notes CLOCK_MONOTONIC when the answer arrives, and the client notes
//! CLOCK_MONOTONIC when the whole picture is on its surface. Latency is the difference (also
//! given from the moment the command was sent, which adds the guest's copy). A change that the
//! client has not shown before the same picture is asked for again is counted as missed.
//!
//! # Throughput
//! The host sends `run`: the guest writes its four pictures in turn, flat out. After 2 s and
//! once the server streams (at most 15 s more) the window starts: CPU times (/proc, user +
//! system, per process and per thread name), the forwarder's counters and the guest's picture
//! count are read, and again at the end. Frames delivered are the client's `PIC` lines in the
//! window: distinct whole pictures put on its surface (torn frames, the guest caught in the
//! middle of a copy, are not counted; they happen to both). CPU per frame is the display
//! stack's: QEMU without its vCPU thread (QEMU's display code and, for upstream, spice-server
//! and its worker thread) plus the shim; the guest's vCPU is reported apart.
//!
//! # Upstream H.264 (`SPICE_SHIM_BENCH_UPSTREAM_H264=1`)
//! Seven attempts, each a fresh upstream QEMU with the guest redrawing flat out and 20 s from the
//! client's start. What crashes spice-server's worker: the client connects while the video plays
//! and asks for H.264 (`spice_display_channel_change_preferred_video_codec_types`) as its
//! display channel opens; attempts 1–3 with `-vga std`, 6 with `-vga qxl` (the device of the
//! comparison). The others change one thing each: asking 4 s later (the MJPEG streams switch),
//! the video starting after the client, MJPEG (no request). Each attempt's outcome is printed: whether
//! the client asked, the streams spice-server created per codec, QEMU's exit status or signal,
//! the end of its stderr and of the client's, and new `segfault`/`traps:` lines of `dmesg`.

mod common;
#[path = "../tests/qemu/mod.rs"]
mod qemu;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/util/mod.rs"]
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    ProcCpu, fmt, load_average, machine_busy, mono, ms, nproc, proc_cpu, proc_line, ratio,
    stat_cpu_faults, summary, utc_now,
};
use qemu::{
    BOOT_TIMEOUT, DbusDaemon, FB_HEIGHT, FB_WIDTH, Guest, MARKS, PICTURE_KEYS, Qemu, SHIM_TIMEOUT,
    Shim,
};
use support::{CLIENT_TIMEOUT, ServerExit};
use util::{ChildGuard, TempDir, free_port, poll, port_open, tail};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench upstream";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/upstream_client.py");

/// Lengths of one run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Picture changes for the interactive latency.
    flips: usize,
    /// Picture changes for the latency during video.
    video_flips: usize,
    /// Video before those (spice-server starts a stream after 20 frames less than 200 ms
    /// apart).
    video_warmup: Duration,
    /// After the warm-up or settle time, how much longer the video may take to be streamed
    /// (see [`wait_for_stream`]).
    stream_wait: Duration,
    /// The measured throughput window.
    window: Duration,
}

const FULL: Timing = Timing {
    flips: 40,
    video_flips: 30,
    video_warmup: Duration::from_secs(3),
    stream_wait: Duration::from_secs(15),
    window: Duration::from_secs(20),
};
const QUICK: Timing = Timing {
    flips: 4,
    video_flips: 4,
    video_warmup: Duration::from_secs(2),
    stream_wait: Duration::from_secs(3),
    window: Duration::from_secs(3),
};

/// From `run` to the start of the window.
const SETTLE: Duration = Duration::from_secs(2);

/// Time between two interactive picture changes: 400 ms plus up to 300 ms.
const FLIP_GAP: Duration = Duration::from_millis(400);
const FLIP_JITTER_MS: u64 = 300;
/// The same during video: longer than upstream's latency there (spice-gtk shows stream frames
/// at their multimedia time, which spice-server sets 400 ms ahead of the client's clock), so
/// that each change is told apart from the next.
const VIDEO_FLIP_GAP: Duration = Duration::from_millis(900);
/// After the last change: time for it to reach the client.
const FLIP_TAIL: Duration = Duration::from_secs(2);
/// How long a guest command may take to be answered (the guest may be busy redrawing).
const GUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Upstream H.264 crash reproduction: time per attempt, from the client's start.
const H264_WAIT: Duration = Duration::from_secs(20);
/// How long the guest redraws before the client connects, when it does.
const H264_PLAYING: Duration = Duration::from_secs(3);

/// One attempt of the crash reproduction: the display device; whether the guest already
/// redraws when the client connects ([`H264_PLAYING`] before) or starts once it has its
/// surface; the codec the client asks for (`None`: none, MJPEG) and when, in seconds after its
/// display channel opened (0: at once; later: running MJPEG streams switch).
#[derive(Debug, Clone, Copy)]
struct CrashCase {
    vga: &'static str,
    playing: bool,
    codec: Option<&'static str>,
    ask_after: f64,
}

const fn crash_case(
    vga: &'static str,
    playing: bool,
    codec: Option<&'static str>,
    ask_after: f64,
) -> CrashCase {
    CrashCase {
        vga,
        playing,
        codec,
        ask_after,
    }
}

/// What crashes, the client joining the playing video and asking for H.264 at once, three times
/// with `-vga std` and (6th) once with `-vga qxl`, the comparison's device; and the controls:
/// the client asks 4 s later, the video starts after the client, MJPEG.
const CRASH_CASES: [CrashCase; 7] = [
    crash_case("std", true, Some("h264"), 0.0),
    crash_case("std", true, Some("h264"), 0.0),
    crash_case("std", true, Some("h264"), 0.0),
    crash_case("std", true, Some("h264"), 4.0),
    crash_case("std", false, Some("h264"), 0.0),
    crash_case("qxl", true, Some("h264"), 0.0),
    crash_case("std", true, None, 0.0),
];

// ---------------------------------------------------------------------------------------------
// The byte-counting TCP forwarder

/// The SPICE messages from server to client, by kind, over all connections.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    /// STREAM_CREATE messages, and how many of them per codec (SpiceVideoCodecType, 1 MJPEG,
    /// 2 VP8, 3 H.264, 4 VP9, 5 H.265).
    stream_creates: u64,
    stream_codecs: [u64; 6],
    /// STREAM_DATA and STREAM_DATA_SIZED: encoded video frames, and their bytes (headers
    /// included).
    stream_frames: u64,
    stream_bytes: u64,
    /// DRAW_* messages (pictures sent as images), and their bytes.
    draws: u64,
    draw_bytes: u64,
    /// Everything else after the link (and its bytes).
    others: u64,
    other_bytes: u64,
}

impl Wire {
    fn record(&mut self, kind: u16, bytes: u64) {
        match kind {
            122 => {
                self.stream_creates += 1;
                self.other_bytes += bytes;
            }
            123 | 316 => {
                self.stream_frames += 1;
                self.stream_bytes += bytes;
            }
            302..=313 | 318 => {
                self.draws += 1;
                self.draw_bytes += bytes;
            }
            _ => {
                self.others += 1;
                self.other_bytes += bytes;
            }
        }
    }

    fn since(&self, a: &Wire) -> Wire {
        Wire {
            stream_creates: self.stream_creates - a.stream_creates,
            stream_codecs: std::array::from_fn(|i| self.stream_codecs[i] - a.stream_codecs[i]),
            stream_frames: self.stream_frames - a.stream_frames,
            stream_bytes: self.stream_bytes - a.stream_bytes,
            draws: self.draws - a.draws,
            draw_bytes: self.draw_bytes - a.draw_bytes,
            others: self.others - a.others,
            other_bytes: self.other_bytes - a.other_bytes,
        }
    }
}

/// Where [`WireParser`] is in the server's side of a SPICE connection.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// `SpiceLinkHeader`: magic `REDQ`, major, minor, size (4 × u32).
    LinkHeader,
    /// `SpiceLinkReply` of that size: error, 162 bytes of public key, the numbers of common
    /// and channel caps, the caps' offset, the caps.
    LinkReply(usize),
    /// The u32 link result after the client's ticket.
    LinkResult,
    /// Message headers: mini (type u16, size u32) if the server has the MINI_HEADER common
    /// cap (spice-gtk always has), else full (serial u64, type, size, sub-list u32).
    Header,
    /// The first 10 bytes of a STREAM_CREATE body of that size (surface id, stream id, flags,
    /// codec type).
    StreamCreate(usize),
    /// Not SPICE: nothing more is parsed.
    Dead,
}

/// Splits the server-to-client bytes of one connection into SPICE messages, without
/// buffering their bodies.
struct WireParser {
    stage: Stage,
    buf: Vec<u8>,
    skip: usize,
    mini: bool,
}

impl WireParser {
    fn new() -> Self {
        Self {
            stage: Stage::LinkHeader,
            buf: Vec::new(),
            skip: 0,
            mini: false,
        }
    }

    fn feed(&mut self, mut data: &[u8], wire: &Mutex<Wire>) {
        let u32_at = |b: &[u8], i: usize| {
            b.get(i..i + 4)
                .map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize)
        };
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let need = match self.stage {
                Stage::LinkHeader => 16,
                Stage::LinkReply(n) => n,
                Stage::LinkResult => 4,
                Stage::Header if self.mini => 6,
                Stage::Header => 18,
                Stage::StreamCreate(_) => 10,
                Stage::Dead => return,
            };
            let n = (need - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() < need {
                return;
            }
            let b = std::mem::take(&mut self.buf);
            self.stage = match self.stage {
                Stage::LinkHeader if &b[..4] == b"REDQ" => Stage::LinkReply(u32_at(&b, 12)),
                Stage::LinkReply(_) => {
                    let (common, offset) = (u32_at(&b, 166), u32_at(&b, 174));
                    self.mini = common > 0 && u32_at(&b, offset) & (1 << 3) != 0;
                    Stage::LinkResult
                }
                Stage::LinkResult => Stage::Header,
                Stage::Header => {
                    let (kind, size) = if self.mini {
                        (u16::from_le_bytes([b[0], b[1]]), u32_at(&b, 2))
                    } else {
                        (u16::from_le_bytes([b[8], b[9]]), u32_at(&b, 10))
                    };
                    wire.lock()
                        .expect("wire lock")
                        .record(kind, (need + size) as u64);
                    if kind == 122 && size >= 10 {
                        Stage::StreamCreate(size)
                    } else {
                        self.skip = size;
                        Stage::Header
                    }
                }
                Stage::StreamCreate(size) => {
                    if let Some(n) = wire
                        .lock()
                        .expect("wire lock")
                        .stream_codecs
                        .get_mut(usize::from(b[9]))
                    {
                        *n += 1;
                    }
                    self.skip = size - 10;
                    Stage::Header
                }
                _ => Stage::Dead,
            };
        }
    }
}

/// Listens on a free loopback port and forwards every connection to `127.0.0.1:<target>`,
/// counting the bytes of each direction and the server's SPICE messages ([`Wire`]). Its
/// connections are shut down on drop.
struct Forwarder {
    port: u16,
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
    wire: Arc<Mutex<Wire>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("forwarder: bind");
        let port = listener.local_addr().expect("forwarder: address").port();
        let fwd = Self {
            port,
            down: Arc::new(AtomicU64::new(0)),
            up: Arc::new(AtomicU64::new(0)),
            wire: Arc::new(Mutex::new(Wire::default())),
            conns: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let counters = Counters {
            down: fwd.down.clone(),
            up: fwd.up.clone(),
            wire: fwd.wire.clone(),
            conns: fwd.conns.clone(),
            stop: fwd.stop.clone(),
        };
        std::thread::spawn(move || accept_loop(listener, target, counters));
        fwd
    }

    fn wire(&self) -> Wire {
        *self.wire.lock().expect("wire lock")
    }

    /// Bytes from the server to the client so far.
    fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    fn connections(&self) -> usize {
        self.conns.lock().expect("forwarder lock").len() / 2
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.conns.lock().expect("forwarder lock").iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// The forwarder's shared state, for its threads.
struct Counters {
    down: Arc<AtomicU64>,
    up: Arc<AtomicU64>,
    wire: Arc<Mutex<Wire>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

fn accept_loop(listener: TcpListener, target: u16, c: Counters) {
    for conn in listener.incoming() {
        if c.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = conn else { continue };
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            continue;
        };
        // As SPICE servers and clients do themselves: no Nagle delay added here.
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
            continue;
        };
        c.conns.lock().expect("forwarder lock").extend([c2, s2]);
        let (d, w) = (c.down.clone(), c.wire.clone());
        std::thread::spawn(move || pump(s1, c1, &d, Some(&w)));
        let u = c.up.clone();
        std::thread::spawn(move || pump(client, server, &u, None));
    }
}

/// Copies `from` to `to` until either side closes, adding the bytes to `counter` and, with
/// `wire`, the SPICE messages to it.
fn pump(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64, wire: Option<&Mutex<Wire>>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = WireParser::new();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if let Some(w) = wire {
                    parser.feed(&buf[..n], w);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// The guest's command port

/// The guest's second serial port (`spice_test=marks`): commands out, answers in, each answer
/// stamped with CLOCK_MONOTONIC by a reader thread as it arrives.
struct Marks {
    writer: UnixStream,
    lines: Arc<Mutex<Vec<(f64, String)>>>,
}

impl Marks {
    fn connect(path: &Path) -> Self {
        let stream = poll(Duration::from_secs(30), || UnixStream::connect(path).ok())
            .unwrap_or_else(|| panic!("cannot connect to {}", path.display()));
        let reader = stream.try_clone().expect("marks: clone");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                let line = line.trim().to_string();
                if !line.is_empty() {
                    sink.lock().expect("marks lock").push((mono(), line));
                }
            }
        });
        Self {
            writer: stream,
            lines,
        }
    }

    /// Sends `cmd` and waits for the first new answer starting with `answer`; returns when
    /// the command was sent, when the answer came, and the answer.
    fn request(&mut self, cmd: &str, answer: &str) -> (f64, f64, String) {
        let from = self.lines.lock().expect("marks lock").len();
        let sent = mono();
        self.writer
            .write_all(format!("{cmd}\n").as_bytes())
            .unwrap_or_else(|e| panic!("sending {cmd:?} to the guest: {e}"));
        let (at, line) = self.wait(from, answer, cmd);
        (sent, at, line)
    }

    /// Sends `cmd` without waiting for an answer (a write error is ignored: QEMU may be gone).
    fn send(&mut self, cmd: &str) {
        let _ = self.writer.write_all(format!("{cmd}\n").as_bytes());
    }

    /// The number of lines the guest sent so far.
    fn received(&self) -> usize {
        self.lines.lock().expect("marks lock").len()
    }

    /// Waits for the first line from the `from`th on that starts with `answer` (to `cmd`).
    fn wait(&self, from: usize, answer: &str, cmd: &str) -> (f64, String) {
        let found = poll(GUEST_TIMEOUT, || {
            let lines = self.lines.lock().expect("marks lock");
            lines[from..]
                .iter()
                .find(|(_, l)| l.starts_with(answer))
                .cloned()
        });
        let (at, line) = found.unwrap_or_else(|| {
            panic!(
                "the guest did not answer {cmd:?} with {answer:?} within {GUEST_TIMEOUT:?}; \
                 it said {:?}",
                self.lines.lock().expect("marks lock")
            )
        });
        (at, line)
    }

    /// Sends `cmd` and parses the number at the end of its answer.
    fn number(&mut self, cmd: &str, answer: &str) -> u64 {
        let (_, _, line) = self.request(cmd, answer);
        line.rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number in the guest's answer {line:?}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The client

/// `k=RRGGBB,…`: the colours at the centres of the 4x3 cells of picture `k`.
fn picture_arg(key: char) -> String {
    let image = qemu::picture(key);
    let (cw, ch) = (FB_WIDTH / 4, FB_HEIGHT / 3);
    let cells: Vec<String> = (0..3)
        .flat_map(|r| (0..4).map(move |c| (c, r)))
        .map(|(c, r)| {
            let [red, g, b] = image.pixel(c * cw + cw / 2, r * ch + ch / 2);
            format!("{red:02x}{g:02x}{b:02x}")
        })
        .collect();
    format!("{key}={}", cells.join(","))
}

/// A running `upstream_client.py`.
struct Client {
    proc: ChildGuard,
}

impl Client {
    /// With `codec`, the client asks for it (`codec.1` seconds after its display channel
    /// opened, or at once).
    fn start(dir: &TempDir, name: &str, port: u16, codec: Option<(&str, f64)>) -> Self {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(CLIENT)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env_remove("SPICE_DEBUG")
            .env_remove("G_MESSAGES_DEBUG");
        for k in PICTURE_KEYS {
            cmd.arg("--picture").arg(picture_arg(k));
        }
        if let Some((c, after)) = codec {
            cmd.args(["--codec", c, "--codec-after", &after.to_string()]);
        }
        Self {
            proc: ChildGuard::spawn(name, cmd, dir).sigterm_on_drop(Duration::from_secs(5)),
        }
    }

    /// Waits for the primary surface; `Err` says why it did not come.
    fn try_wait_primary(&mut self) -> Result<(), String> {
        let ok = poll(CLIENT_TIMEOUT, || {
            if let Some(s) = self.proc.try_wait() {
                return Some(Err(s));
            }
            self.proc
                .stdout()
                .lines()
                .any(|l| l.starts_with("PRIMARY "))
                .then_some(Ok(()))
        });
        match ok {
            Some(Ok(())) => Ok(()),
            Some(Err(s)) => Err(format!("the client exited with {s}\n{}", self.proc.logs())),
            None => Err(format!(
                "the client got no primary surface within {CLIENT_TIMEOUT:?}\n{}",
                self.proc.logs()
            )),
        }
    }

    fn wait_primary(&mut self) {
        if let Err(e) = self.try_wait_primary() {
            panic!("{e}");
        }
    }

    /// Its `PIC T k` lines.
    fn pics(&self) -> Vec<(f64, char)> {
        self.proc
            .stdout()
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("PIC ")?.split(' ');
                let t = w.next()?.parse().ok()?;
                let k = w.next()?.chars().next()?;
                Some((t, k))
            })
            .collect()
    }

    /// Its `COUNT T invalidates pics frames` lines, as (T, invalidates, frames).
    fn counts(&self) -> Vec<(f64, u64, u64)> {
        self.proc
            .stdout()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.strip_prefix("COUNT ")?.split(' ').collect();
                let [t, inv, _, frames] = w[..] else {
                    return None;
                };
                Some((t.parse().ok()?, inv.parse().ok()?, frames.parse().ok()?))
            })
            .collect()
    }

    /// Waits until the last picture shown in full is `key`.
    fn wait_showing(&mut self, key: char) {
        let ok = poll(CLIENT_TIMEOUT, || {
            self.proc.assert_running("while waiting for a picture");
            (self.pics().last().map(|p| p.1) == Some(key)).then_some(())
        });
        if ok.is_none() {
            panic!(
                "the client did not show picture {key} within {CLIENT_TIMEOUT:?}\n{}",
                self.proc.logs()
            );
        }
    }

    /// Invalidates and distinct frames per second between `t0` and `t1`, from the first and
    /// the last `COUNT` line between them (once a second).
    fn rates(&self, t0: f64, t1: f64) -> (f64, f64) {
        let c = self.counts();
        let first = c.iter().find(|(t, _, _)| *t >= t0);
        let last = c.iter().rev().find(|(t, _, _)| *t <= t1);
        match (first, last) {
            (Some(a), Some(b)) if b.0 > a.0 => (
                (b.1 - a.1) as f64 / (b.0 - a.0),
                (b.2 - a.2) as f64 / (b.0 - a.0),
            ),
            _ => (f64::NAN, f64::NAN),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc

/// CPU time of the processes this benchmark started (its children) together.
fn children_cpu() -> Duration {
    let me = std::process::id();
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(me) {
            total += stat_cpu_faults(&stat).0;
        }
    }
    total + proc_cpu(me).total
}

/// The moment a window starts or ends.
struct Snapshot {
    at: f64,
    qemu: ProcCpu,
    shim: ProcCpu,
    ours: Duration,
    machine: Duration,
    down: u64,
    up: u64,
    wire: Wire,
}

impl Snapshot {
    fn take(qemu: u32, shim: Option<u32>, fwd: &Forwarder) -> Self {
        Self {
            at: mono(),
            qemu: proc_cpu(qemu),
            shim: shim.map(proc_cpu).unwrap_or_default(),
            ours: children_cpu(),
            machine: machine_busy(),
            down: fwd.down(),
            up: fwd.up(),
            wire: fwd.wire(),
        }
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Default)]
struct Usage {
    secs: f64,
    qemu: Duration,
    /// QEMU's vCPU thread (`CPU 0/TCG`): the guest.
    vcpu: Duration,
    shim: Duration,
    /// Share of the machine's cores other processes used, in percent.
    others_pct: f64,
    down: u64,
    up: u64,
    wire: Wire,
    qemu_threads: Vec<(String, Duration)>,
    shim_threads: Vec<(String, Duration)>,
}

impl Usage {
    /// The display stack: QEMU without the guest, plus the shim.
    fn stack(&self) -> Duration {
        self.qemu.saturating_sub(self.vcpu) + self.shim
    }
}

fn threads_delta(a: &ProcCpu, b: &ProcCpu) -> Vec<(String, Duration)> {
    let mut v: Vec<(String, Duration)> = b
        .threads
        .iter()
        .map(|(name, t)| {
            let before = a.threads.get(name).copied().unwrap_or_default();
            (name.clone(), t.saturating_sub(before))
        })
        .filter(|(_, d)| !d.is_zero())
        .collect();
    v.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    v
}

fn usage(a: &Snapshot, b: &Snapshot) -> Usage {
    let secs = b.at - a.at;
    let vcpu = |p: &ProcCpu| {
        p.threads
            .iter()
            .filter(|(n, _)| n.starts_with("CPU ") && n.ends_with("/TCG"))
            .map(|(_, t)| *t)
            .sum::<Duration>()
    };
    let ours = b.ours.saturating_sub(a.ours);
    let others = b.machine.saturating_sub(a.machine).saturating_sub(ours);
    Usage {
        secs,
        qemu: b.qemu.total.saturating_sub(a.qemu.total),
        vcpu: vcpu(&b.qemu).saturating_sub(vcpu(&a.qemu)),
        shim: b.shim.total.saturating_sub(a.shim.total),
        others_pct: 100.0 * others.as_secs_f64() / (secs * nproc() as f64),
        down: b.down - a.down,
        up: b.up - a.up,
        wire: b.wire.since(&a.wire),
        qemu_threads: threads_delta(&a.qemu, &b.qemu),
        shim_threads: threads_delta(&a.shim, &b.shim),
    }
}

// ---------------------------------------------------------------------------------------------
// One run

/// What a run serves the client with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Upstream,
    Shim(&'static str),
}

impl Server {
    fn name(self) -> String {
        match self {
            Server::Upstream => "upstream mjpeg".into(),
            Server::Shim(c) => format!("shim {c}"),
        }
    }
}

/// One picture change of the latency phase.
#[derive(Debug, Clone, Copy)]
struct Flip {
    key: char,
    sent: f64,
    shown: f64,
    /// When the client showed it in full.
    seen: Option<f64>,
}

/// The picture changes of one latency phase.
struct Changes {
    flips: Vec<Flip>,
    /// From the first change to the end of the tail after the last one.
    usage: Usage,
    /// During video: how long after the warm-up the server was seen streaming.
    stream_wait: Option<Option<Duration>>,
}

impl Changes {
    /// Latencies in ms, from the guest's `SHOWN` (or from the command).
    fn latencies(&self, from_command: bool) -> Vec<f64> {
        self.flips
            .iter()
            .filter_map(|f| {
                let start = if from_command { f.sent } else { f.shown };
                f.seen.map(|s| (s - start) * 1e3)
            })
            .collect()
    }

    fn missed(&self) -> usize {
        self.flips.iter().filter(|f| f.seen.is_none()).count()
    }

    fn summary(&self, from_command: bool) -> Option<(f64, f64, f64)> {
        summary(&mut self.latencies(from_command))
    }

    fn kib_per_change(&self) -> f64 {
        self.usage.down as f64 / 1024.0 / self.flips.len() as f64
    }

    fn stack_ms_per_change(&self) -> f64 {
        ms(self.usage.stack()) / self.flips.len() as f64
    }
}

struct RunResult {
    server: Server,
    /// Changes 400–700 ms apart.
    interactive: Changes,
    /// Changes during video (streamed by upstream).
    video: Changes,
    /// Over the throughput window.
    usage: Usage,
    guest_pictures: u64,
    /// Whole guest pictures the client showed in the window (`PIC` lines).
    whole: u64,
    /// Distinct frames (whole or torn) and invalidates per second on the client.
    frame_rate: f64,
    invalidate_rate: f64,
    /// How long after the settle time the server was seen streaming (`None`: not within
    /// `Timing::stream_wait`).
    stream_wait: Option<Duration>,
    connections: usize,
    shim_exit: Option<ServerExit>,
    load_before: String,
}

impl RunResult {
    /// Distinct frames put on the client's surface per second.
    fn fps(&self) -> f64 {
        self.frame_rate
    }

    fn whole_fps(&self) -> f64 {
        self.whole as f64 / self.usage.secs
    }

    fn frames(&self) -> f64 {
        self.frame_rate * self.usage.secs
    }

    fn stack_ms_per_frame(&self) -> f64 {
        ms(self.usage.stack()) / self.frames()
    }

    fn kib_per_frame(&self) -> f64 {
        self.usage.down as f64 / 1024.0 / self.frames()
    }
}

/// How a latency phase changes pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// `b`, `a`, `b` … 400–700 ms apart ([`flip_gaps`]), nothing else changing.
    Interactive,
    /// While the guest writes `a`, `b`, `c` in turn, flat out (video, streamed by upstream):
    /// picture `d` on `mark`, 900–1200 ms apart, after `Timing::video_warmup`.
    DuringVideo,
}

/// The gaps between picture changes: `base` plus 0–300 ms from a fixed linear congruential
/// sequence, the same for every run.
fn flip_gaps(n: usize, base: Duration) -> Vec<Duration> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            base + Duration::from_millis((x >> 33) % (FLIP_JITTER_MS + 1))
        })
        .collect()
}

/// Matches the changes with the client's pictures: change i is seen at the first `PIC` of its
/// picture after it was asked for and before the same picture was asked for again.
fn match_flips(flips: &mut [Flip], pics: &[(f64, char)], end: f64) {
    for i in 0..flips.len() {
        let until = flips[i + 1..]
            .iter()
            .find(|f| f.key == flips[i].key)
            .map_or(end, |f| f.sent);
        let (key, sent) = (flips[i].key, flips[i].sent);
        flips[i].seen = pics
            .iter()
            .find(|(t, k)| *k == key && *t > sent && *t < until)
            .map(|(t, _)| *t);
    }
}

/// A latency phase: `n` measured picture changes at `pace`, starting from picture `a`.
fn latency_phase(
    marks: &mut Marks,
    client: &mut Client,
    pace: Pace,
    timing: Timing,
    pids: (u32, Option<u32>),
    fwd: &Forwarder,
) -> Changes {
    let n = match pace {
        Pace::Interactive => timing.flips,
        Pace::DuringVideo => timing.video_flips,
    };
    marks.request("show a", "SHOWN a");
    client.wait_showing('a');
    std::thread::sleep(Duration::from_millis(500));
    let mut stream_wait = None;
    if pace == Pace::DuringVideo {
        marks.request("video", "VIDEO");
        std::thread::sleep(timing.video_warmup);
        stream_wait = Some(wait_for_stream(fwd, timing.stream_wait));
    }
    let before = Snapshot::take(pids.0, pids.1, fwd);
    let mut flips = Vec::with_capacity(n);
    let base = match pace {
        Pace::Interactive => FLIP_GAP,
        Pace::DuringVideo => VIDEO_FLIP_GAP,
    };
    for (i, gap) in flip_gaps(n, base).into_iter().enumerate() {
        let (key, sent, shown) = match pace {
            Pace::Interactive => {
                let key = if i % 2 == 0 { 'b' } else { 'a' };
                let (sent, shown, _) =
                    marks.request(&format!("show {key}"), &format!("SHOWN {key}"));
                (key, sent, shown)
            }
            Pace::DuringVideo => {
                let from = marks.received();
                let (sent, _, _) = marks.request("mark", "MARKED");
                let (shown, _) = marks.wait(from, "SHOWN d", "mark");
                ('d', sent, shown)
            }
        };
        flips.push(Flip {
            key,
            sent,
            shown,
            seen: None,
        });
        let next = sent + gap.as_secs_f64();
        let now = mono();
        if next > now {
            std::thread::sleep(Duration::from_secs_f64(next - now));
        }
    }
    std::thread::sleep(FLIP_TAIL);
    let after = Snapshot::take(pids.0, pids.1, fwd);
    if pace == Pace::DuringVideo {
        marks.request("halt", "HALTED");
    }
    let pics = client.pics();
    match_flips(&mut flips, &pics, mono());
    Changes {
        flips,
        usage: usage(&before, &after),
        stream_wait,
    }
}

/// Waits until the server streams (at least 5 STREAM_DATA in half a second), up to `limit`; returns how long that took (`None`: it did not). spice-server decides by
/// itself whether what changes is video; on this guest it gets the screen as 32-pixel-wide
/// column strips whose height depends on where the guest's copy was at QEMU's refresh, and it
/// streams only when the same strips come again and again.
fn wait_for_stream(fwd: &Forwarder, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let a = fwd.wire().stream_frames;
        std::thread::sleep(Duration::from_millis(500));
        if fwd.wire().stream_frames >= a + 5 {
            return Some(started.elapsed());
        }
        if started.elapsed() >= limit {
            return None;
        }
    }
}

/// The throughput phase: the guest redraws flat out; after [`SETTLE`] and once the server
/// streams (or `timing.stream_wait` later), the window.
fn throughput_phase(
    marks: &mut Marks,
    client: &mut Client,
    timing: Timing,
    pids: (u32, Option<u32>),
    fwd: &Forwarder,
) -> Throughput {
    marks.request("run", "RUNNING");
    std::thread::sleep(SETTLE);
    let stream_wait = wait_for_stream(fwd, timing.stream_wait);
    let g0 = marks.number("count", "COUNT");
    let a = Snapshot::take(pids.0, pids.1, fwd);
    std::thread::sleep(timing.window);
    let b = Snapshot::take(pids.0, pids.1, fwd);
    let g1 = marks.number("count", "COUNT");
    marks.request("halt", "HALTED");
    // The client's COUNT lines come once a second: wait for one after the window.
    std::thread::sleep(Duration::from_millis(1100));
    let whole = client
        .pics()
        .iter()
        .filter(|(t, _)| *t >= a.at && *t <= b.at)
        .count() as u64;
    let (invalidate_rate, frame_rate) = client.rates(a.at, b.at);
    Throughput {
        usage: usage(&a, &b),
        guest_pictures: g1.saturating_sub(g0),
        whole,
        frame_rate,
        invalidate_rate,
        stream_wait,
    }
}

/// What [`throughput_phase`] measured.
struct Throughput {
    usage: Usage,
    /// Pictures the guest wrote in the window, and whole ones the client showed.
    guest_pictures: u64,
    whole: u64,
    frame_rate: f64,
    invalidate_rate: f64,
    /// How long after the settle time the server was seen streaming.
    stream_wait: Option<Duration>,
}

/// The QEMU arguments common to both sides: QXL, thread names, the command port.
fn qemu_builder(dir: &TempDir, name: &str) -> qemu::QemuBuilder {
    Qemu::builder(Guest::Linux)
        .vga("qxl")
        .arg("-name")
        .arg(&format!("{name},debug-threads=on"))
        .arg("-serial")
        .arg(&format!(
            "unix:{},server=on,wait=off",
            dir.join("marks.sock").display()
        ))
        .kernel_arg(MARKS)
}

/// `-display none -spice port=<port>,addr=127.0.0.1,disable-ticketing=on,streaming-video=all`
fn spice_display(port: u16) -> Vec<String> {
    vec![
        "-display".into(),
        "none".into(),
        "-spice".into(),
        format!("port={port},addr=127.0.0.1,disable-ticketing=on,streaming-video=all"),
    ]
}

/// Boots QEMU until the guest takes commands; returns the boot time.
fn boot(vm: &mut Qemu) -> Duration {
    let t = vm.wait_serial("MARKS READY", BOOT_TIMEOUT);
    let want = format!("FB 24 {} {FB_WIDTH},{FB_HEIGHT}", FB_WIDTH * 3);
    assert!(
        vm.serial_log().lines().any(|l| l.trim() == want),
        "the guest's framebuffer is not {want:?}\n{}",
        vm.logs()
    );
    t
}

/// Measures one server: client through the forwarder, latency, throughput.
fn measure(
    server: Server,
    vm: &mut Qemu,
    marks: &mut Marks,
    target: u16,
    shim_pid: Option<u32>,
    dir: &TempDir,
    timing: Timing,
) -> RunResult {
    let fwd = Forwarder::start(target);
    let name = server.name().replace(' ', "-");
    let mut client = Client::start(dir, &format!("client-{name}"), fwd.port, None);
    client.wait_primary();
    let pids = (vm.pid(), shim_pid);
    let load_before = load_average();
    eprintln!(
        "{}: latency, {} interactive picture changes and {} during video (after {:?}) …",
        server.name(),
        timing.flips,
        timing.video_flips,
        timing.video_warmup
    );
    let interactive = latency_phase(marks, &mut client, Pace::Interactive, timing, pids, &fwd);
    let video = latency_phase(marks, &mut client, Pace::DuringVideo, timing, pids, &fwd);
    eprintln!(
        "{}: throughput, {:.0} s window …",
        server.name(),
        timing.window.as_secs_f64()
    );
    let Throughput {
        usage,
        guest_pictures,
        whole,
        frame_rate,
        invalidate_rate,
        stream_wait,
    } = throughput_phase(marks, &mut client, timing, pids, &fwd);
    client.proc.assert_running("at the end of the run");
    vm.assert_running("at the end of the run");
    let connections = fwd.connections();
    drop(client);
    drop(fwd);
    RunResult {
        server,
        interactive,
        video,
        usage,
        guest_pictures,
        whole,
        frame_rate,
        invalidate_rate,
        stream_wait,
        connections,
        shim_exit: None,
        load_before,
    }
}

fn run_upstream(timing: Timing) -> (RunResult, Duration) {
    let dir = TempDir::new("upstream-bench-spice");
    let port = free_port();
    let mut vm =
        qemu_builder(&dir, "upstream-spice").start_with_display(&dir, &spice_display(port));
    let booted = boot(&mut vm);
    assert!(
        poll(Duration::from_secs(30), || port_open(port).then_some(())).is_some(),
        "QEMU does not listen on SPICE port {port}\n{}",
        vm.logs()
    );
    let mut marks = Marks::connect(&dir.join("marks.sock"));
    let result = measure(
        Server::Upstream,
        &mut vm,
        &mut marks,
        port,
        None,
        &dir,
        timing,
    );
    vm.quit();
    (result, booted)
}

fn run_shim(codecs: &[&'static str], timing: Timing) -> (Vec<RunResult>, Duration) {
    let dir = TempDir::new("upstream-bench-shim");
    let bus = DbusDaemon::start(&dir);
    let mut vm = qemu_builder(&dir, "upstream-shim").start(&dir, &bus);
    let booted = boot(&mut vm);
    let mut marks = Marks::connect(&dir.join("marks.sock"));
    let mut results = Vec::new();
    for &codec in codecs {
        let mut shim = Shim::start(&dir, &bus, &["--video-codecs", codec]);
        shim.wait_listening();
        assert!(
            shim.wait_stderr("registered listener on console", SHIM_TIMEOUT),
            "the shim registered no listener with QEMU\n{}",
            shim.logs()
        );
        let mut r = measure(
            Server::Shim(codec),
            &mut vm,
            &mut marks,
            shim.port(),
            Some(shim.pid()),
            &dir,
            timing,
        );
        let exit = shim.stop(SHIM_TIMEOUT);
        if !exit.status.success() || exit.stats.drawn != exit.stats.returned {
            panic!(
                "the shim exited with {} ({} frames drawn, {} cookies returned)\n{}",
                exit.status,
                exit.stats.drawn,
                exit.stats.returned,
                exit.report()
            );
        }
        r.shim_exit = Some(exit);
        results.push(r);
    }
    vm.quit();
    (results, booted)
}

// ---------------------------------------------------------------------------------------------
// Upstream H.264

/// One attempt's outcome.
struct CrashAttempt {
    case: CrashCase,
    crashed: bool,
    status: String,
    seconds: f64,
    client_pictures: usize,
    bytes_down: u64,
    /// Streams the server created, per codec.
    stream_codecs: [u64; 6],
    /// The client sent its codec preference.
    asked: bool,
    qemu_tail: String,
    client_tail: String,
    dmesg: Vec<String>,
}

/// `dmesg` lines mentioning a segfault of QEMU or its threads.
fn dmesg_segfaults() -> Vec<String> {
    Command::new("dmesg")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("segfault") || l.contains("traps:"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Attempt `i` of the crash reproduction, as `case` says.
fn h264_attempt(i: usize, case: CrashCase) -> CrashAttempt {
    let dir = TempDir::new(&format!("upstream-bench-h264-{i}"));
    let port = free_port();
    let mut vm = qemu_builder(&dir, "upstream-h264")
        .vga(case.vga)
        .start_with_display(&dir, &spice_display(port));
    boot(&mut vm);
    assert!(
        poll(Duration::from_secs(30), || port_open(port).then_some(())).is_some(),
        "QEMU does not listen on SPICE port {port}\n{}",
        vm.logs()
    );
    let mut marks = Marks::connect(&dir.join("marks.sock"));
    let dmesg_before = dmesg_segfaults();
    if case.playing {
        marks.request("run", "RUNNING");
        std::thread::sleep(H264_PLAYING);
    }
    let fwd = Forwarder::start(port);
    let codec = case.codec.map(|c| (c, case.ask_after));
    let started = Instant::now();
    let mut client = Client::start(&dir, "client-h264", fwd.port, codec);
    if let Err(e) = client.try_wait_primary() {
        eprintln!("attempt {}: {e}", i + 1);
    }
    if !case.playing {
        // No waiting for the answer: QEMU may be gone before it comes.
        marks.send("run");
    }
    let status = vm.wait_exit(H264_WAIT.saturating_sub(started.elapsed()));
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let logs = vm.logs();
    let qemu_part = logs
        .split("--- guest serial console ---")
        .next()
        .unwrap_or("")
        .to_string();
    let attempt = CrashAttempt {
        crashed: status.is_some_and(|s| !s.success()),
        status: match status {
            None => format!("still running after {:.0} s", H264_WAIT.as_secs_f64()),
            Some(s) => match s.signal() {
                Some(sig) => format!(
                    "killed by signal {sig}{}",
                    if s.core_dumped() {
                        " (core dumped)"
                    } else {
                        ""
                    }
                ),
                None => format!("exited with {s}"),
            },
        },
        seconds,
        client_pictures: client.pics().len(),
        bytes_down: fwd.down(),
        stream_codecs: fwd.wire().stream_codecs,
        asked: client
            .proc
            .stdout()
            .lines()
            .any(|l| l.starts_with("CODEC ")),
        case,
        qemu_tail: tail(&qemu_part, 1500),
        client_tail: tail(&client.proc.stderr(), 800),
        dmesg: dmesg_segfaults()
            .into_iter()
            .filter(|l| !dmesg_before.contains(l))
            .collect(),
    };
    if status.is_none() {
        vm.kill();
    }
    attempt
}

fn print_h264(attempts: &[CrashAttempt]) {
    let crashed = attempts.iter().filter(|a| a.crashed).count();
    println!("\n### Upstream H.264 (client prefers H.264)\n");
    println!(
        "QEMU crashed in {crashed} of {} attempts (each {:.0} s from the client's start).\n",
        attempts.len(),
        H264_WAIT.as_secs_f64(),
    );
    println!(
        "| attempt | -vga | client joins | client asked for | streams created | outcome | after s \
         | client pictures | KiB to client |"
    );
    println!("|---:|---|---|---|---|---|---:|---:|---:|");
    for (i, a) in attempts.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.0} |",
            i + 1,
            a.case.vga,
            if a.case.playing {
                "video playing"
            } else {
                "before the video"
            },
            match (a.case.codec, a.asked, a.case.ask_after > 0.0) {
                (None, _, _) => "nothing (MJPEG)".to_string(),
                (Some(c), false, _) => format!("{c}: not sent"),
                (Some(c), true, false) => format!("{c}, as the display channel opened"),
                (Some(c), true, true) => format!("{c}, {:.0} s after it opened", a.case.ask_after),
            },
            codec_list(&a.stream_codecs),
            a.status,
            a.seconds,
            a.client_pictures,
            a.bytes_down as f64 / 1024.0
        );
    }
    for (i, a) in attempts.iter().enumerate() {
        println!("\nattempt {}: {}", i + 1, a.status);
        println!("```");
        println!("{}", a.qemu_tail.trim_end());
        println!("--- client stderr (end) ---");
        println!("{}", a.client_tail.trim_end());
        for l in &a.dmesg {
            println!("dmesg: {l}");
        }
        println!("```");
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn fmt_summary(s: Option<(f64, f64, f64)>) -> String {
    s.map_or("- / - / -".into(), |(a, b, c)| {
        format!("{a:.0} / {b:.0} / {c:.0}")
    })
}

fn print_header(quick: bool, timing: Timing) {
    let cpu = proc_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = proc_line("/proc/meminfo", "MemTotal").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_else(|e| format!("{program}: {e}"))
    };
    println!("command:   {COMMAND}");
    println!("date:      {}", utc_now());
    println!(
        "machine:   nproc={}, {cpu}, MemTotal {mem}, Linux {}",
        nproc(),
        kernel.trim()
    );
    println!(
        "qemu:      {}, TCG, -vga qxl; upstream: -spice …,streaming-video=all (spice-server {}); \
         shim: -display dbus",
        version("qemu-system-x86_64", "--version"),
        spice_server_version()
    );
    println!(
        "guest:     {} ({MARKS}), vesafb {FB_WIDTH}x{FB_HEIGHT}x24",
        qemu::kernel().display()
    );
    println!("client:    {CLIENT} (spice-gtk via python3-gi), through a byte-counting forwarder");
    println!("load:      {}", load_average());
    println!(
        "per run:   {} picture changes 400–700 ms apart; {:.0} s of video, then {} changes \
         900–1200 ms apart during it; then {:.0} s settle + {:.0} s window of the guest \
         redrawing (both wait up to {:.0} s more for the server to stream)",
        timing.flips,
        timing.video_warmup.as_secs_f64(),
        timing.video_flips,
        SETTLE.as_secs_f64(),
        timing.window.as_secs_f64(),
        timing.stream_wait.as_secs_f64()
    );
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

/// The installed spice-server package version (Debian's `libspice-server1`).
fn spice_server_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "libspice-server1"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("?".into(), |o| {
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
}

fn print_report(runs: &[RunResult], boots: &[(String, Duration)]) {
    let Some(up) = runs.iter().find(|r| r.server == Server::Upstream) else {
        return;
    };
    let pick = |c: &Changes, i: usize| c.summary(false).map_or(f64::NAN, |s| [s.0, s.1, s.2][i]);

    println!("### Ratios shim / upstream\n");
    println!(
        "| run | fps delivered | whole pictures/s | display-stack CPU per frame | bytes per frame | interactive \
         latency p50 / p95 / max | latency during video p50 / p95 / max | bytes per interactive \
         change | CPU per interactive change |"
    );
    println!("|---|---:|---:|---:|---:|---|---|---:|---:|");
    for r in runs.iter().filter(|r| r.server != Server::Upstream) {
        let lat = |c: &Changes, u: &Changes| {
            (0..3)
                .map(|i| fmt(ratio(pick(c, i), pick(u, i)), 2))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.server.name(),
            fmt(ratio(r.fps(), up.fps()), 2),
            fmt(ratio(r.whole_fps(), up.whole_fps()), 2),
            fmt(ratio(r.stack_ms_per_frame(), up.stack_ms_per_frame()), 2),
            fmt(ratio(r.kib_per_frame(), up.kib_per_frame()), 2),
            lat(&r.interactive, &up.interactive),
            lat(&r.video, &up.video),
            fmt(
                ratio(
                    r.interactive.kib_per_change(),
                    up.interactive.kib_per_change()
                ),
                2
            ),
            fmt(
                ratio(
                    r.interactive.stack_ms_per_change(),
                    up.interactive.stack_ms_per_change()
                ),
                2
            ),
        );
    }

    println!("\n### Throughput: the guest redrawing flat out\n");
    println!(
        "| run | window s | guest pictures/s | frames delivered/s | whole pictures/s | client \
         invalidates/s | \
         QEMU CPU % (vCPU + rest) | shim CPU % | stack CPU ms/frame | KiB/s to client | \
         KiB/frame | sent as (per s) | others % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in runs {
        let u = &r.usage;
        let pct = |d: Duration| fmt(100.0 * d.as_secs_f64() / u.secs, 0);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({} + {}) | {} | {} | {} | {} | {} | {} |",
            r.server.name(),
            fmt(u.secs, 1),
            fmt(r.guest_pictures as f64 / u.secs, 1),
            fmt(r.fps(), 1),
            fmt(r.whole_fps(), 1),
            fmt(r.invalidate_rate, 0),
            pct(u.qemu),
            pct(u.vcpu),
            pct(u.qemu.saturating_sub(u.vcpu)),
            pct(u.shim),
            fmt(r.stack_ms_per_frame(), 2),
            fmt(u.down as f64 / 1024.0 / u.secs, 0),
            fmt(r.kib_per_frame(), 1),
            sent_as(&u.wire, u.secs),
            fmt(u.others_pct, 0),
        );
    }

    println!("\n### Latency of a picture change (ms, p50 / p95 / max)\n");
    println!(
        "| run | pace | changes | missed | guest done → client shows | command → client shows | \
         KiB per change | stack CPU ms per change | sent as (per change) | others % |"
    );
    println!("|---|---|---:|---:|---|---|---:|---:|---|---:|");
    for r in runs {
        for (pace, c) in [("interactive", &r.interactive), ("during video", &r.video)] {
            println!(
                "| {} | {pace} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.server.name(),
                c.flips.len(),
                c.missed(),
                fmt_summary(c.summary(false)),
                fmt_summary(c.summary(true)),
                fmt(c.kib_per_change(), 1),
                fmt(c.stack_ms_per_change(), 2),
                sent_as(&c.usage.wire, c.flips.len() as f64),
                fmt(c.usage.others_pct, 0),
            );
        }
    }

    println!("\n### Per run\n");
    for r in runs {
        print_run(r);
    }
    for (name, t) in boots {
        println!(
            "{name}: the guest took commands {:.1} s after QEMU started",
            t.as_secs_f64()
        );
    }
}

/// The server's messages per `per` (seconds or changes): video-stream frames and draws (images),
/// with their KiB, and stream creations.
fn sent_as(w: &Wire, per: f64) -> String {
    let mut parts = Vec::new();
    if w.stream_frames > 0 {
        parts.push(format!(
            "{} stream frames ({} KiB)",
            fmt(w.stream_frames as f64 / per, 1),
            fmt(w.stream_bytes as f64 / 1024.0 / per, 1)
        ));
    }
    if w.draws > 0 {
        parts.push(format!(
            "{} draws ({} KiB)",
            fmt(w.draws as f64 / per, 1),
            fmt(w.draw_bytes as f64 / 1024.0 / per, 1)
        ));
    }
    if w.stream_creates > 0 {
        parts.push(format!(
            "{} streams created ({})",
            w.stream_creates,
            codec_list(&w.stream_codecs)
        ));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// `25 mjpeg, 1 h264` from counts per SpiceVideoCodecType.
fn codec_list(counts: &[u64; 6]) -> String {
    const NAMES: [&str; 6] = ["?", "mjpeg", "vp8", "h264", "vp9", "h265"];
    counts
        .iter()
        .zip(NAMES)
        .filter(|(n, _)| **n > 0)
        .map(|(n, name)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_run(r: &RunResult) {
    let u = &r.usage;
    let f = r.frames().max(1.0);
    let top = |v: &[(String, Duration)]| {
        v.iter()
            .take(8)
            .map(|(n, d)| format!("{n} {:.2}", ms(*d) / f))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list = |c: &Changes| {
        c.latencies(false)
            .iter()
            .map(|l| format!("{l:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("{}, {} before the run:", r.server.name(), r.load_before);
    println!("```");
    println!(
        "window {:.2} s: {:.0} frames delivered ({} whole pictures), {} guest pictures; {:.0} KiB \
         down, {:.0} KiB up; {} TCP connections",
        u.secs,
        r.frames(),
        r.whole,
        r.guest_pictures,
        u.down as f64 / 1024.0,
        u.up as f64 / 1024.0,
        r.connections
    );
    println!(
        "CPU: QEMU {:.0} ms (vCPU {:.0} ms), shim {:.0} ms; others {:.0} % of the machine",
        ms(u.qemu),
        ms(u.vcpu),
        ms(u.shim),
        u.others_pct
    );
    println!(
        "messages in the window: {} stream creates, {} stream frames ({:.0} KiB), {} draws \
         ({:.0} KiB), {} others ({:.0} KiB)",
        u.wire.stream_creates,
        u.wire.stream_frames,
        u.wire.stream_bytes as f64 / 1024.0,
        u.wire.draws,
        u.wire.draw_bytes as f64 / 1024.0,
        u.wire.others,
        u.wire.other_bytes as f64 / 1024.0
    );
    println!("QEMU threads, CPU ms/frame: {}", top(&u.qemu_threads));
    if !u.shim_threads.is_empty() {
        println!("shim threads, CPU ms/frame: {}", top(&u.shim_threads));
    }
    println!(
        "interactive latencies (ms, guest done → client): {}",
        list(&r.interactive)
    );
    println!(
        "latencies during video (ms, guest done → client): {}",
        list(&r.video)
    );
    let waited = |w: Option<Duration>| {
        w.map_or("not seen".to_string(), |d| {
            format!("after {:.1} s", d.as_secs_f64())
        })
    };
    println!(
        "streaming seen: before the changes during video {}; before the window {}",
        waited(r.video.stream_wait.flatten()),
        waited(r.stream_wait)
    );
    if let Some(exit) = &r.shim_exit {
        println!("{}", exit.stdout.trim_end());
        // The shim's multimedia-clock latency for the client (spice-gtk shows a frame at its
        // time): where it settled and how it moved.
        for line in exit
            .stderr
            .lines()
            .filter(|l| l.contains("display latency"))
        {
            println!("{}", line.trim());
        }
    }
    println!("```");
}

/// Quick mode's check: every figure was produced (the shim's cookies were checked when it
/// stopped).
fn check_figures(runs: &[RunResult]) {
    for r in runs {
        let name = r.server.name();
        assert!(r.fps() > 0.0, "{name}: no frames delivered in the window");
        assert!(
            r.whole > 0,
            "{name}: no whole picture delivered in the window"
        );
        assert!(r.usage.down > 0, "{name}: no bytes counted in the window");
        assert!(r.guest_pictures > 0, "{name}: the guest drew nothing");
        assert!(
            r.usage.qemu > Duration::ZERO,
            "{name}: no QEMU CPU time measured"
        );
        assert!(
            r.invalidate_rate.is_finite(),
            "{name}: no client invalidate rate"
        );
        for (pace, c) in [("interactive", &r.interactive), ("during-video", &r.video)] {
            assert!(
                !c.latencies(false).is_empty(),
                "{name}: no {pace} latency measured (all {} changes missed)",
                c.flips.len()
            );
            assert!(c.usage.down > 0, "{name}: no {pace} bytes counted");
        }
        if let Server::Shim(_) = r.server {
            assert!(r.usage.shim > Duration::ZERO, "{name}: no shim CPU time");
            let exit = r.shim_exit.as_ref().expect("the shim's exit report");
            assert_eq!(exit.stats.drawn, exit.stats.returned, "{name}: cookies");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench")
        || std::env::var_os("SPICE_SHIM_BENCH_QUICK").is_some_and(|v| v != "0");
    let h264_env = std::env::var("SPICE_SHIM_BENCH_UPSTREAM_H264").unwrap_or_default();
    let h264 = !quick && !h264_env.is_empty() && h264_env != "0";
    let h264_only = h264 && h264_env == "only";
    let timing = if quick { QUICK } else { FULL };
    let started = Instant::now();
    print_header(quick, timing);

    let mut runs = Vec::new();
    let mut boots = Vec::new();
    if !h264_only {
        eprintln!("booting the upstream QEMU …");
        let (r, t) = run_upstream(timing);
        runs.push(r);
        boots.push(("upstream QEMU".to_string(), t));
        eprintln!("booting the shim's QEMU …");
        let (rs, t) = run_shim(&["h264", "mjpeg"], timing);
        runs.extend(rs);
        boots.push(("shim's QEMU".to_string(), t));
        print_report(&runs, &boots);
    }
    if h264 {
        let attempts: Vec<CrashAttempt> = CRASH_CASES
            .iter()
            .enumerate()
            .map(|(i, &case)| {
                eprintln!("upstream H.264, attempt {} ({case:?}) …", i + 1);
                h264_attempt(i, case)
            })
            .collect();
        print_h264(&attempts);
    }
    if quick {
        check_figures(&runs);
    }
    println!(
        "\ntotal benchmark time: {:.0} s; at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
