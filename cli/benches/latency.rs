//! Glass-to-glass latency with a real spice-gtk client: from the host's `gl_draw` to the
//! picture on the client's primary surface.
//!
//! The host is an in-process `Shim` fed by a ring of three memfd scanouts at 30 or 60 fps.
//! Frame `k` is all black (even `k`) or all white (odd `k`), with the test guest's frame
//! counter (`Pattern::Counter`'s stamp, the value `k`) in a grey band across the top. The
//! client is spice-client-glib 0.42 through python3-gi (`cli/tests/latency_client.py`): on
//! every `display-invalidate` it reads the counter and the centre pixel from its primary
//! surface and prints `time.monotonic()` (CLOCK_MONOTONIC, the clock the host's draw times are
//! taken from here). Latency of frame `k` = when the client first had `k` on its surface −
//! when the host called `gl_draw` for it. A frame drawn in the window that never showed is a
//! missed flip.
//!
//! Every case runs with the automatic display latency (the default), and with
//! `mm-latency` fixed at 150 ms (the old default) and 10 ms.
//!
//! - Part 1: H.264 (x264enc, the default pipeline), 1280x720 and 1920x1080, 30 and 60 fps, on
//!   the loopback.
//! - Part 2: H.264 and MJPEG, 1280x720 at 30 fps, through an in-process TCP proxy whose
//!   server-to-client direction holds everything for 100 ms every second (`JAM`): frames come
//!   late in bursts, which the automatic latency is for.
//!
//! Run with `cargo bench -p spice-shim-cli --bench latency`. It prints tables and asserts
//! nothing about speed; it fails if a cookie did not come back or a client did not run.
//! `SPICE_SHIM_BENCH_QUICK=1` (or running it without `--bench`, as `cargo test --benches`
//! does) runs one short case (720p, 30 fps, automatic) as a smoke test.
//! `SPICE_SHIM_BENCH_CASES=1080,auto` keeps the cases whose label (as printed while running,
//! e.g. "mjpeg 1280x720 @ 30 fps, mm-latency auto, jammed link") contains every word.
//! `SPICE_SHIM_BENCH_DUMP=DIR` writes, per case, what the client printed and the draw times.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gstspicedmabuf::Rect;
use rustix::process::{Pid, Signal};
use spice_shim_core::proto::VideoCodec;
use spice_shim_core::{Config, Shim};
use test_guest::{ChannelOrder, GREY, GuestBuffer, read_counter};

use common::{load_average, mono, nproc, proc_line, summary, utc_now};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench latency";
const PYTHON: &str = "/usr/bin/python3";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/latency_client.py");
/// Buffers in the host's ring (triple buffering).
const RING: usize = 3;
/// After the window: time for the last frames to show.
const DRAIN: Duration = Duration::from_millis(800);
/// The host draws this long after the window: the last frame before the host goes idle
/// shows only when the idle follow-up frame completes it in spice-gtk's H.264 parser (100 ms
/// later), which is not what is measured here.
const TAIL: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    Auto,
    Fixed(u32),
}

impl Setting {
    fn label(self) -> String {
        match self {
            Setting::Auto => "auto".into(),
            Setting::Fixed(ms) => format!("{ms}"),
        }
    }
}

#[derive(Clone, Copy)]
struct Case {
    codec: VideoCodec,
    width: u32,
    height: u32,
    fps: u32,
    setting: Setting,
    /// Through a link that jams (see [`start_proxy`]).
    jam: bool,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} {}x{} @ {} fps, mm-latency {}{}",
            self.codec.name(),
            self.width,
            self.height,
            self.fps,
            self.setting.label(),
            if self.jam { ", jammed link" } else { "" }
        )
    }

    fn picture(&self) -> String {
        format!("{}x{} @ {}", self.width, self.height, self.fps)
    }
}

/// Part 2: the server-to-client direction holds everything that arrives during the first
/// `JAM` of every `JAM_EVERY`, from `JAM_AFTER` after the proxy started, until that jam ends.
const JAM: Duration = Duration::from_millis(100);
const JAM_EVERY: Duration = Duration::from_secs(1);
const JAM_AFTER: Duration = Duration::from_secs(2);

const SETTINGS: [Setting; 3] = [Setting::Auto, Setting::Fixed(150), Setting::Fixed(10)];
const SIZES: [(u32, u32); 2] = [(1280, 720), (1920, 1080)];
const RATES: [u32; 2] = [30, 60];

#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    window: Duration,
}

const FULL: Timing = Timing {
    warmup: Duration::from_secs(3),
    window: Duration::from_secs(10),
};

const QUICK: Timing = Timing {
    warmup: Duration::from_secs(1),
    window: Duration::from_secs(3),
};

// ---------------------------------------------------------------------------------------------
// The picture.

/// Geometry of the test guest's counter stamp (test-guest/src/counter.rs).
struct Stamp {
    cell: u32,
    x0: u32,
    y0: u32,
}

impl Stamp {
    fn new(width: u32, height: u32) -> Self {
        let cell = (width / 40).min(height / 20).min(64);
        Self {
            cell,
            x0: (width - 36 * cell) / 2,
            y0: cell / 2,
        }
    }
}

/// Draws frame `k` into an XRGB8888 buffer: black or white, the counter band on top.
fn draw(buf: &mut GuestBuffer, stamp: &Stamp, k: u64) {
    let (w, h, stride) = (
        buf.width() as usize,
        buf.height() as usize,
        buf.stride() as usize,
    );
    let offset = buf.offset() as usize;
    let px = |rgb: u32| (rgb | 0xff00_0000).to_le_bytes();
    let bg = px(if k.is_multiple_of(2) {
        0x000000
    } else {
        0xffffff
    });
    let g = u32::from(GREY);
    let grey = px(g << 16 | g << 8 | g);
    let white = px(0xffffff);
    let black = px(0x000000);
    let band = 2 * stamp.cell as usize;
    let value = k as u32;
    let mut cells = [false; 36];
    cells[0] = true;
    cells[35] = true;
    for (bit, c) in cells[2..34].iter_mut().enumerate() {
        *c = value & (1 << (31 - bit)) != 0;
    }
    let data = &mut buf.pixels_mut()[offset..];
    for y in 0..h {
        let row = &mut data[y * stride..y * stride + w * 4];
        if y >= band {
            for p in row.chunks_exact_mut(4) {
                p.copy_from_slice(&bg);
            }
            continue;
        }
        for p in row.chunks_exact_mut(4) {
            p.copy_from_slice(&grey);
        }
        let (cy0, cell) = (stamp.y0 as usize, stamp.cell as usize);
        if (cy0..cy0 + cell).contains(&y) {
            for (i, &on) in cells.iter().enumerate() {
                let x = stamp.x0 as usize + i * cell;
                for p in row[x * 4..(x + cell) * 4].chunks_exact_mut(4) {
                    p.copy_from_slice(if on { &white } else { &black });
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client.

/// The Python client and what it printed.
struct ClientProc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl ClientProc {
    fn start(port: u16, duration: Duration) -> anyhow::Result<Self> {
        let mut child = Command::new(PYTHON)
            .arg(CLIENT)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--duration", &format!("{:.1}", duration.as_secs_f64())])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {PYTHON} {CLIENT}"))?;
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr: Arc<Mutex<String>> = Arc::default();
        let out = child.stdout.take().expect("piped stdout");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().expect("piped stderr");
        let e = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = e.lock().unwrap();
                if e.len() < 64 * 1024 {
                    e.push_str(&line);
                    e.push('\n');
                }
            }
        });
        Ok(Self {
            child,
            lines,
            stderr,
        })
    }

    /// Asks the client to stop (SIGTERM: it prints its STATS line and exits).
    fn stop(mut self) -> anyhow::Result<(Vec<String>, String)> {
        if let Ok(None) = self.child.try_wait() {
            let pid = Pid::from_child(&self.child);
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the client did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads see the end of the pipes.
        std::thread::sleep(Duration::from_millis(100));
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let stderr = self.stderr.lock().unwrap().clone();
        if !status.success() {
            bail!("the client exited with {status}: {stderr}");
        }
        Ok((lines, stderr))
    }
}

// ---------------------------------------------------------------------------------------------
// The jammed link.

/// When data that reached the proxy at `t` may go on, if a jam holds it.
fn jam_end(start: Instant, t: Instant) -> Option<Instant> {
    let since = t.checked_duration_since(start + JAM_AFTER)?;
    let phase = since.as_nanos() % JAM_EVERY.as_nanos();
    (phase < JAM.as_nanos()).then(|| t + Duration::from_nanos((JAM.as_nanos() - phase) as u64))
}

/// A TCP proxy on 127.0.0.1 to `upstream` whose server-to-client direction jams (see `JAM`), as
/// a congested link or a burst of Wi-Fi retries would: data is late in bursts, in order, and
/// the server sees no back-pressure. Client to server goes through as is. Returns its port.
/// Its threads end with their connections (the accepting one lives on; this is a benchmark).
fn start_proxy(upstream: SocketAddr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let start = Instant::now();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { break };
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (Ok(mut c_read), Ok(mut s_write)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(Shutdown::Write);
            });
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let mut s_read = server;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            let mut c_write = client;
            std::thread::spawn(move || {
                for (t, data) in rx {
                    if let Some(release) = jam_end(start, t) {
                        std::thread::sleep(release.saturating_duration_since(Instant::now()));
                    }
                    if c_write.write_all(&data).is_err() {
                        break;
                    }
                }
                let _ = c_write.shutdown(Shutdown::Both);
            });
        }
    });
    Ok(port)
}

// ---------------------------------------------------------------------------------------------
// One case.

struct CaseResult {
    case: Case,
    /// CLOCK_MONOTONIC of every gl_draw (index = frame number = counter).
    draws: Vec<f64>,
    window: (f64, f64),
    skipped: u64,
    /// (time, counter, centre luma) of every new picture the client saw.
    frames: Vec<(f64, u32, u32)>,
    unreadable: usize,
    /// Pictures put on the client's surface (its `display-invalidate`s).
    invalidates: u64,
    /// The server's display-latency log lines.
    latency_log: Vec<String>,
    cookies_ok: bool,
    sent: u64,
    dropped: u64,
}

/// The server's "display latency" log lines, collected from the GStreamer debug log.
static LATENCY_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn capture_latency_log() {
    spice_shim_core::log::CAT.set_threshold(gst::DebugLevel::Info);
    gst::log::remove_default_log_function();
    gst::log::add_log_function(|cat, _level, _file, _func, _line, _obj, msg| {
        if cat.name() != "spice-shim" {
            return;
        }
        if let Some(m) = msg.get()
            && m.contains("display latency")
        {
            LATENCY_LOG.lock().unwrap().push(m.to_string());
        }
    });
}

fn run_case(case: Case, timing: Timing) -> anyhow::Result<CaseResult> {
    LATENCY_LOG.lock().unwrap().clear();
    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let shim = Shim::start(
        Config {
            tcp: Some("127.0.0.1:0".into()),
            codecs: vec![case.codec],
            mm_latency_ms: match case.setting {
                Setting::Auto => None,
                Setting::Fixed(ms) => Some(ms),
            },
            ..Config::default()
        },
        Box::new(move |cookie| {
            let _ = done_tx.send(cookie);
        }),
    )
    .context("starting the shim")?;
    let addr = shim.tcp_addr().ok_or_else(|| anyhow!("no TCP address"))?;
    let port = if case.jam {
        start_proxy(addr)?
    } else {
        addr.port()
    };
    // It is stopped with SIGTERM after the drain; its own limit is only a safety net.
    let client = ClientProc::start(
        port,
        timing.warmup + timing.window + Duration::from_secs(60),
    )?;
    let attached = Instant::now() + Duration::from_secs(20);
    while !shim
        .stats()
        .clients
        .iter()
        .any(|c| c.connected && c.codec == Some(case.codec))
    {
        if Instant::now() > attached {
            let e = client
                .stop()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            bail!("the client did not attach to the stream {e}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let (w, h) = (case.width, case.height);
    let stamp = Stamp::new(w, h);
    let mut ring: Vec<GuestBuffer> = (0..RING)
        .map(|_| GuestBuffer::new(w, h))
        .collect::<Result<_, _>>()?;
    // The picture is the test guest's: its own reader finds the counter.
    draw(&mut ring[0], &stamp, 0x5a5a_1234);
    let b = &ring[0];
    let read = read_counter(
        &b.pixels()[b.offset() as usize..],
        w,
        h,
        b.stride(),
        4,
        ChannelOrder::Bgr,
    );
    if read != Some(0x5a5a_1234) {
        bail!("the counter stamp does not read back ({read:?})");
    }
    let mut busy: Vec<Option<u64>> = vec![None; RING];
    let mut last = RING - 1;
    let mut current: Option<usize> = None;
    let period = Duration::from_secs_f64(1.0 / f64::from(case.fps));
    let mut draws = Vec::new();
    let mut skipped = 0u64;
    let start = Instant::now();
    let win0 = mono() + timing.warmup.as_secs_f64();
    let win1 = win0 + timing.window.as_secs_f64();
    let mut next_tick = start;
    loop {
        while let Ok(cookie) = done_rx.try_recv() {
            if let Some(slot) = busy.iter_mut().find(|b| **b == Some(cookie)) {
                *slot = None;
            }
        }
        let now = Instant::now();
        if mono() >= win1 + TAIL.as_secs_f64() {
            break;
        }
        if now < next_tick {
            std::thread::sleep((next_tick - now).min(Duration::from_millis(5)));
            continue;
        }
        next_tick += period;
        if next_tick + period < Instant::now() {
            next_tick = Instant::now() + period;
        }
        let Some(idx) = (1..=RING)
            .map(|k| (last + k) % RING)
            .find(|&i| busy[i].is_none())
        else {
            skipped += 1;
            continue;
        };
        let k = draws.len() as u64;
        draw(&mut ring[idx], &stamp, k);
        if current != Some(idx) {
            let buf = &ring[idx];
            shim.gl_scanout(
                Some(spice_shim_cli::guest::scanout_info(buf)),
                vec![buf.dup_fd()?],
            )?;
            current = Some(idx);
        }
        let cookie = k + 1;
        busy[idx] = Some(cookie);
        last = idx;
        draws.push(mono());
        shim.gl_draw(Rect { x: 0, y: 0, w, h }, cookie);
    }
    std::thread::sleep(DRAIN);
    let stats = shim.stats();
    let (sent, dropped) = stats
        .clients
        .iter()
        .find(|c| c.codec == Some(case.codec))
        .map_or((0, 0), |c| (c.sent, c.dropped));
    let client_out = client.stop();
    let final_stats = shim.shutdown();
    let cookies_ok = final_stats.ledger.drawn == final_stats.ledger.returned
        && final_stats.ledger.drawn == draws.len() as u64;
    let (lines, stderr) = client_out?;
    if let Some(dir) = std::env::var_os("SPICE_SHIM_BENCH_DUMP") {
        let base = std::path::Path::new(&dir).join(
            case.label()
                .replace([' ', ',', '@'], "_")
                .replace("__", "_"),
        );
        let draws: String = draws.iter().map(|t| format!("{t:.6}\n")).collect();
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(base.with_extension("client.txt"), lines.join("\n"));
        let _ = std::fs::write(base.with_extension("client-stderr.txt"), &stderr);
        let _ = std::fs::write(base.with_extension("draws.txt"), draws);
    }
    let mut frames = Vec::new();
    let mut unreadable = 0;
    let mut invalidates = 0;
    for line in &lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["FRAME", t, c, centre] => {
                if let (Ok(t), Ok(c), Ok(centre)) = (t.parse(), c.parse(), centre.parse()) {
                    frames.push((t, c, centre));
                }
            }
            ["UNREADABLE", ..] => unreadable += 1,
            ["STATS", inv, ..] => invalidates = inv.parse().unwrap_or(0),
            _ => {}
        }
    }
    if frames.is_empty() {
        bail!("the client saw no frame: {}", lines.join("\n"));
    }
    Ok(CaseResult {
        case,
        draws,
        window: (win0, win1),
        skipped,
        frames,
        unreadable,
        invalidates,
        latency_log: std::mem::take(&mut *LATENCY_LOG.lock().unwrap()),
        cookies_ok,
        sent,
        dropped,
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis.

struct Analysis {
    case: Case,
    drawn: usize,
    missed: usize,
    /// Frames drawn before the window (from the first) that never showed.
    missed_start: usize,
    /// Frames the server sent that never showed (sent − invalidates).
    not_shown: i64,
    /// Pictures whose centre did not match their counter's colour.
    wrong_centre: usize,
    unreadable: usize,
    lat: Option<(f64, f64, f64)>,
    skipped: u64,
    sent: u64,
    dropped: u64,
    /// The automatic latency at the end, and how often it changed.
    latency: String,
    cookies_ok: bool,
}

fn analyse(r: &CaseResult) -> Analysis {
    let mut first: HashMap<u32, f64> = HashMap::new();
    let mut wrong_centre = 0;
    for &(t, c, centre) in &r.frames {
        first.entry(c).or_insert(t);
        let white = c % 2 == 1;
        if white != (centre >= 128) {
            wrong_centre += 1;
        }
    }
    let (w0, w1) = r.window;
    let mut lat = Vec::new();
    let mut drawn = 0;
    let mut missed = 0;
    let mut missed_start = 0;
    for (k, &t) in r.draws.iter().enumerate() {
        if t < w0 && !first.contains_key(&(k as u32)) {
            missed_start += 1;
        }
        if t < w0 || t >= w1 {
            continue;
        }
        drawn += 1;
        match first.get(&(k as u32)) {
            Some(&seen) => lat.push((seen - t) * 1000.0),
            None => missed += 1,
        }
    }
    let latency = match r.case.setting {
        Setting::Fixed(ms) => format!("{ms} (fixed)"),
        Setting::Auto => {
            let end = r
                .latency_log
                .iter()
                .rev()
                .find_map(|l| {
                    let rest = l.split("display latency at the end ").nth(1)?;
                    Some(rest.split(" ms").next()?.to_string())
                })
                .unwrap_or_else(|| "?".into());
            let raised = r.latency_log.iter().filter(|l| l.contains(" -> ")).count();
            format!("{end} (raised {raised}x)")
        }
    };
    Analysis {
        case: r.case,
        drawn,
        missed,
        missed_start,
        not_shown: r.sent as i64 - r.invalidates as i64,
        wrong_centre,
        unreadable: r.unreadable,
        lat: summary(&mut lat),
        skipped: r.skipped,
        sent: r.sent,
        dropped: r.dropped,
        latency,
        cookies_ok: r.cookies_ok,
    }
}

fn print_header(quick: bool, timing: Timing) {
    let cpu = proc_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = proc_line("/proc/meminfo", "MemTotal").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("command:   {COMMAND}");
    println!("date:      {}", utc_now());
    println!(
        "machine:   nproc={}, {cpu}, MemTotal {mem}, Linux {}",
        nproc(),
        kernel.trim()
    );
    println!("gstreamer: {}", gst::version_string());
    println!("client:    spice-client-glib 0.42 via {PYTHON} (python3-gi), {CLIENT}");
    println!("load:      {}", load_average());
    println!(
        "per case:  {:.1} s warm-up, {:.1} s measured; H.264 is x264enc (the default pipeline)",
        timing.warmup.as_secs_f64(),
        timing.window.as_secs_f64()
    );
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

fn fmt3(v: Option<(f64, f64, f64)>) -> String {
    v.map_or("| - | - | - ".into(), |(a, b, c)| {
        format!("| {a:.0} | {b:.0} | {c:.0} ")
    })
}

fn print_tables(all: &[Analysis]) {
    let part1: Vec<&Analysis> = all.iter().filter(|a| !a.case.jam).collect();
    let part2: Vec<&Analysis> = all.iter().filter(|a| a.case.jam).collect();
    if !part1.is_empty() {
        // Ratios first: automatic against the best fixed setting of the same picture.
        println!("## Part 1: automatic vs the best fixed setting (p50 ratio; missed flips)");
        println!();
        println!(
            "| picture | auto p50 ms | best fixed | its p50 ms | ratio | missed auto / 150 / 10 | sent, not shown auto / 150 / 10 |"
        );
        println!("|---|---|---|---|---|---|---|");
        for &(w, h) in &SIZES {
            for &fps in &RATES {
                let of = |s: Setting| {
                    part1.iter().copied().find(|a| {
                        (a.case.width, a.case.height, a.case.fps) == (w, h, fps)
                            && a.case.setting == s
                    })
                };
                let Some(auto) = of(Setting::Auto) else {
                    continue;
                };
                let best = [150, 10]
                    .iter()
                    .filter_map(|&ms| of(Setting::Fixed(ms)))
                    .filter_map(|a| Some((a, a.lat?.0)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                let col = |f: &dyn Fn(&Analysis) -> String| {
                    [Setting::Auto, Setting::Fixed(150), Setting::Fixed(10)]
                        .map(|s| of(s).map_or("-".into(), f))
                        .join(" / ")
                };
                let (best_label, best_p50, ratio) = match (auto.lat, best) {
                    (Some(al), Some((b, bp))) => (
                        b.case.setting.label(),
                        format!("{bp:.0}"),
                        format!("{:.2}", al.0 / bp),
                    ),
                    _ => ("-".into(), "-".into(), "-".into()),
                };
                println!(
                    "| {w}x{h} @ {fps} | {} | {best_label} | {best_p50} | {ratio} | {} | {} |",
                    auto.lat.map_or("-".into(), |l| format!("{:.0}", l.0)),
                    col(&|a| a.missed.to_string()),
                    col(&|a| a.not_shown.to_string()),
                );
            }
        }
        println!();
        println!("## Part 1, every case: gl_draw to pixels on the client's surface (ms)");
        println!();
        print_cases(&part1);
    }
    if !part2.is_empty() {
        println!(
            "## Part 2: through a link that holds the server's data {} ms every {} s",
            JAM.as_millis(),
            JAM_EVERY.as_secs()
        );
        println!();
        print_cases(&part2);
    }
}

fn print_cases(cases: &[&Analysis]) {
    println!(
        "| codec | picture | mm-latency (ms) | p50 | p95 | max | drawn | missed | missed in warm-up | sent, not shown | wrong centre | unreadable | host skips | sent / dropped by server |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for a in cases {
        println!(
            "| {} | {} | {} {}| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            a.case.codec.name(),
            a.case.picture(),
            a.latency,
            fmt3(a.lat),
            a.drawn,
            a.missed,
            a.missed_start,
            a.not_shown,
            a.wrong_centre,
            a.unreadable,
            a.skipped,
            a.sent,
            a.dropped
        );
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || common::quick_env("SPICE_SHIM_BENCH_QUICK");
    let mut cases = Vec::new();
    for &(width, height) in &SIZES {
        for &fps in &RATES {
            for &setting in &SETTINGS {
                cases.push(Case {
                    codec: VideoCodec::H264,
                    width,
                    height,
                    fps,
                    setting,
                    jam: false,
                });
            }
        }
    }
    for codec in [VideoCodec::H264, VideoCodec::Mjpeg] {
        for &setting in &SETTINGS {
            cases.push(Case {
                codec,
                width: 1280,
                height: 720,
                fps: 30,
                setting,
                jam: true,
            });
        }
    }
    let timing = if quick {
        cases.truncate(1);
        QUICK
    } else {
        FULL
    };
    if let Ok(words) = std::env::var("SPICE_SHIM_BENCH_CASES") {
        cases.retain(|c| {
            let label = c.label();
            words
                .split(',')
                .filter(|w| !w.trim().is_empty())
                .all(|w| label.contains(w.trim()))
        });
    }
    if !std::path::Path::new(PYTHON).exists() {
        println!("{PYTHON} is missing: this benchmark needs python3-gi and spice-client-glib");
        std::process::exit(1);
    }

    gst::init().expect("gst::init");
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::None);
    }
    capture_latency_log();
    let started = Instant::now();
    print_header(quick, timing);

    let mut all = Vec::new();
    let mut failed = false;
    for &case in &cases {
        eprintln!("running {} ({}) …", case.label(), load_average());
        match run_case(case, timing) {
            Ok(r) => {
                let a = analyse(&r);
                if !a.cookies_ok {
                    println!("{}: a cookie did not come back", case.label());
                    failed = true;
                }
                if a.lat.is_none() {
                    println!("{}: no latency figure (no frame was matched)", case.label());
                    failed = true;
                }
                eprintln!(
                    "  p50 {} missed {} of {} (+{} in warm-up), {} sent not shown; {}",
                    a.lat.map_or("-".into(), |l| format!("{:.1} ms", l.0)),
                    a.missed,
                    a.drawn,
                    a.missed_start,
                    a.not_shown,
                    r.latency_log.join(" | ")
                );
                all.push(a);
            }
            Err(e) => {
                println!("{}: FAILED: {e:#}", case.label());
                failed = true;
            }
        }
    }
    print_tables(&all);
    println!(
        "load after: {}; took {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
    if failed {
        std::process::exit(1);
    }
}
