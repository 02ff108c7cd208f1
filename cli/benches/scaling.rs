//! How `spice-shim serve` scales with the number of remote clients, and with the number of
//! codecs it encodes at once.
//!
//! Run with `cargo bench -p spice-shim-cli --bench scaling` (about 6 minutes). It prints tables,
//! ratios first, and asserts nothing about speed; it fails if a run's cookies do not balance
//! (returned != drawn in the server's exit report), the server does not exit cleanly, or a
//! client gets no frames. Without the `--bench` argument (for example under `cargo test
//! --benches`) or with `SPICE_SHIM_BENCH_QUICK=1` it runs a smoke version of a few seconds per
//! case (720p with 1 and 2 clients, and h264+mjpeg) that checks only that every figure was
//! produced and that the cookies balance. `SPICE_SHIM_BENCH_PATTERN=<p>` chooses the test
//! guest's pattern (default `video`, or `bars` where the program does not know `video`), and
//! `SPICE_SHIM_BENCH_CASES=1080,vp8` keeps only the cases whose label contains one of the words.
//!
//! Each run starts the real program as a child process: `spice-shim serve --cursor none
//! --pattern <p> --fps 30 --size WxH --video-codecs <codecs> --listen 127.0.0.1:<free port>`.
//! Then N SPICE clients, threads of this process built on `tests/glclient`, link the main and
//! display channels as remote clients (no GL_SCANOUT cap; MULTI_CODEC and one codec cap, so the
//! server streams that codec to them). They read every message at once, count STREAM_DATA
//! messages and bytes without decoding, and answer PING and SET_ACK. Once every client has its
//! first frame come a warm-up and the measured window, then SIGTERM; the exit report gives the
//! frames drawn, cookies returned, frames encoded per codec and frames sent/dropped per client,
//! for the whole run.
//!
//! Measured in the window: user + system time of the server process (`/proc/<pid>/stat`) and
//! of each of its threads by name (`/proc/<pid>/task/*/stat` and `schedstat`), grouped into the guest (main
//! thread), the encoder (GStreamer's threads), the network (the connections' reader and writer
//! threads) and the rest; VmRSS and RssAnon sampled every 200 ms (mean) and VmHWM at the end
//! (`/proc/<pid>/status`); the frames and bytes each client received; the CPU time of this
//! process (the clients) and of the whole machine, for the share other processes used. CPU is
//! per frame drawn: the exit report counts whole runs, so the frames drawn in the window are
//! the run's frames drawn × window / run time (the guest draws on a fixed 30 fps clock), or the
//! most frames a client received in the window if that is more (the guest loses a few frames
//! at start-up).

mod common;
#[path = "../tests/glclient/mod.rs"]
mod glclient;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/util/mod.rs"]
mod util;

#[path = "scaling/client.rs"]
mod client;
#[path = "scaling/procfs.rs"]
mod procfs;
#[path = "scaling/report.rs"]
mod report;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rustix::process::Signal;
use spice_shim_core::proto::VideoCodec;

use client::Client;
use common::{load_average, machine_busy, nproc, proc_line, utc_now};
use procfs::{CpuSplit, Memory, ProcCpu, memory, proc_cpu, split, threads_named};
use support::Stats;
use util::{ChildGuard, TempDir, free_port};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench scaling";
/// The guest's frame rate.
const FPS: u32 = 30;
/// How long the server gets to listen, each client to get its first frame, and the server to
/// exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The client threads' names start with this.
const CLIENT_THREAD: &str = "client-";
/// How often VmRSS is sampled in the window.
const RSS_EVERY: Duration = Duration::from_millis(200);

const H264: VideoCodec = VideoCodec::H264;
const VP8: VideoCodec = VideoCodec::Vp8;
const MJPEG: VideoCodec = VideoCodec::Mjpeg;

/// Which table a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// N clients of one codec.
    Clients,
    /// One client per codec.
    Codecs,
}

/// One run of the server.
#[derive(Debug, Clone)]
pub struct Case {
    pub group: Group,
    pub width: u32,
    pub height: u32,
    /// The codec each client asks for, one entry per client.
    pub clients: Vec<VideoCodec>,
}

impl Case {
    fn clients(width: u32, height: u32, n: usize) -> Self {
        Self {
            group: Group::Clients,
            width,
            height,
            clients: vec![H264; n],
        }
    }

    fn codecs(width: u32, height: u32, codecs: &[VideoCodec]) -> Self {
        Self {
            group: Group::Codecs,
            width,
            height,
            clients: codecs.to_vec(),
        }
    }

    /// The codecs the clients ask for, each once, in order.
    pub fn codecs_used(&self) -> Vec<VideoCodec> {
        let mut out: Vec<VideoCodec> = Vec::new();
        for c in &self.clients {
            if !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }

    pub fn codecs_label(&self) -> String {
        let names: Vec<&str> = self.codecs_used().iter().map(|c| c.name()).collect();
        names.join("+")
    }

    pub fn size(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }

    pub fn label(&self) -> String {
        match self.group {
            Group::Clients => format!(
                "{} {} x{}",
                self.codecs_label(),
                self.size(),
                self.clients.len()
            ),
            Group::Codecs => format!("{} {} (1 client each)", self.codecs_label(), self.size()),
        }
    }
}

/// The cases of a full run: h264 with 1..32 clients at three sizes, then 1..3 codecs at once.
fn full_cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (w, h) in [(1280, 720), (1920, 1080), (3840, 2160)] {
        for n in [1, 2, 4, 8, 32] {
            out.push(Case::clients(w, h, n));
        }
    }
    for (w, h) in [(1280, 720), (1920, 1080)] {
        for codecs in [&[H264][..], &[H264, VP8], &[H264, VP8, MJPEG]] {
            out.push(Case::codecs(w, h, codecs));
        }
    }
    out
}

/// The smoke run: 720p with 1 and 2 clients, and h264+mjpeg.
fn quick_cases() -> Vec<Case> {
    vec![
        Case::clients(1280, 720, 1),
        Case::clients(1280, 720, 2),
        Case::codecs(1280, 720, &[H264]),
        Case::codecs(1280, 720, &[H264, MJPEG]),
    ]
}

/// Warm-up and measured window of every case.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    warmup: Duration,
    window: Duration,
}

const FULL: Timing = Timing {
    warmup: Duration::from_secs(3),
    window: Duration::from_secs(10),
};

const QUICK: Timing = Timing {
    warmup: Duration::from_secs(1),
    window: Duration::from_secs(2),
};

// ---------------------------------------------------------------------------------------------
// The server

/// The test guest's pattern: chosen by `SPICE_SHIM_BENCH_PATTERN`, or `video` falling back to
/// `bars` when the program does not know it.
struct PatternChoice {
    name: String,
    fallback: Option<&'static str>,
}

impl PatternChoice {
    fn from_env() -> Self {
        match std::env::var("SPICE_SHIM_BENCH_PATTERN") {
            Ok(p) if !p.trim().is_empty() => Self {
                name: p.trim().to_string(),
                fallback: None,
            },
            _ => Self {
                name: "video".into(),
                fallback: Some("bars"),
            },
        }
    }
}

/// A running `spice-shim serve`.
struct Server {
    proc: ChildGuard,
    port: u16,
    /// When it was seen listening (its guest starts drawing then).
    ready: Instant,
}

/// Why a server did not start.
enum StartError {
    /// The port was taken meanwhile.
    InUse,
    /// The program does not know the pattern.
    UnknownPattern,
    Other(anyhow::Error),
}

fn server_binary() -> &'static str {
    env!("CARGO_BIN_EXE_spice-shim")
}

fn try_start(dir: &TempDir, case: &Case, pattern: &str, name: &str) -> Result<Server, StartError> {
    let port = free_port();
    let codecs: Vec<&str> = case.codecs_used().iter().map(|c| c.name()).collect();
    let mut cmd = Command::new(server_binary());
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--cursor", "none", "--pattern", pattern])
        .args(["--fps", &FPS.to_string(), "--size", &case.size()])
        .args(["--video-codecs", &codecs.join(",")])
        .env_remove("SPICE_PASSWORD");
    let mut proc = ChildGuard::spawn(name, cmd, dir);
    let listening = format!("listening on spice://127.0.0.1:{port}");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = proc.try_wait() {
            let logs = proc.logs();
            return Err(if logs.contains("unknown pattern") {
                StartError::UnknownPattern
            } else if logs.contains("in use") || logs.contains("AddrInUse") {
                StartError::InUse
            } else {
                StartError::Other(anyhow!("the server exited with {status}\n{logs}"))
            });
        }
        if proc.stderr().contains(&listening) {
            return Ok(Server {
                proc,
                port,
                ready: Instant::now(),
            });
        }
        if Instant::now() > deadline {
            return Err(StartError::Other(anyhow!(
                "the server does not listen after {START_TIMEOUT:?}\n{}",
                proc.logs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the server for `case`, retrying on a taken port and falling back to the other
/// pattern once if the program does not know the chosen one.
fn start_server(dir: &TempDir, case: &Case, pattern: &mut PatternChoice) -> anyhow::Result<Server> {
    for attempt in 0..5 {
        match try_start(dir, case, &pattern.name, &format!("server-{attempt}")) {
            Ok(s) => return Ok(s),
            Err(StartError::InUse) => continue,
            Err(StartError::UnknownPattern) => match pattern.fallback.take() {
                Some(other) => {
                    eprintln!(
                        "the program does not know --pattern {}: using {other}",
                        pattern.name
                    );
                    pattern.name = other.into();
                }
                None => bail!("the program does not know --pattern {}", pattern.name),
            },
            Err(StartError::Other(e)) => return Err(e),
        }
    }
    bail!("the server could not bind a free port in 5 attempts")
}

// ---------------------------------------------------------------------------------------------
// One case

/// CPU times, memory and the clients' counters at one moment.
struct Snapshot {
    at: Instant,
    shim: ProcCpu,
    /// This process (the clients, and the benchmark's own thread).
    bench: ProcCpu,
    machine: Duration,
    /// (frames, bytes) of every client.
    clients: Vec<(u64, u64)>,
}

impl Snapshot {
    fn take(pid: u32, clients: &[Client]) -> Self {
        Self {
            at: Instant::now(),
            shim: proc_cpu(&pid.to_string()),
            bench: proc_cpu("self"),
            machine: machine_busy(),
            clients: clients
                .iter()
                .map(|c| (c.counters.frames(), c.counters.bytes()))
                .collect(),
        }
    }
}

/// Everything measured in one run.
pub struct Outcome {
    pub case: Case,
    pub pattern: String,
    pub window_secs: f64,
    /// Seconds from the server listening to SIGTERM.
    pub run_secs: f64,
    /// Frames drawn in the window (estimated from the run's count, see the top of the file).
    pub drawn_window: f64,
    pub cpu: CpuSplit,
    /// CPU of the client threads in the window.
    pub clients_cpu: Duration,
    /// Share of all cores other processes used in the window (%).
    pub others_pct: f64,
    /// Mean of the samples in the window, and VmHWM at its end.
    pub rss_kb: f64,
    pub anon_kb: f64,
    pub hwm_kb: u64,
    /// (codec, frames, bytes) each client received in the window.
    pub received: Vec<(VideoCodec, u64, u64)>,
    /// The exit report (whole run).
    pub stats: Stats,
    /// What went wrong; a run with problems fails the benchmark.
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn cpu_ms_per_frame(&self) -> f64 {
        ms(self.cpu.total) / self.drawn_window.max(1.0)
    }

    /// CPU per frame drawn of everything but the guest: the server's own cost.
    pub fn server_ms_per_frame(&self) -> f64 {
        self.cpu_ms_per_frame() - self.part_ms_per_frame(procfs::Part::Guest)
    }

    pub fn part_ms_per_frame(&self, part: procfs::Part) -> f64 {
        self.cpu
            .parts
            .get(&part)
            .map_or(0.0, |d| ms(*d) / self.drawn_window.max(1.0))
    }

    /// Encoder CPU per frame encoded in the window (all codecs together).
    pub fn encoder_ms_per_encoded(&self) -> f64 {
        let encoded: u64 = self
            .case
            .codecs_used()
            .iter()
            .map(|&c| self.encoded_window(c))
            .sum();
        self.cpu
            .parts
            .get(&procfs::Part::Encoder)
            .map_or(0.0, |d| ms(*d) / encoded.max(1) as f64)
    }

    /// Network CPU per frame sent to a client in the window (µs).
    pub fn network_us_per_frame_sent(&self) -> f64 {
        let sent: u64 = self.received.iter().map(|(_, f, _)| *f).sum();
        self.cpu
            .parts
            .get(&procfs::Part::Network)
            .map_or(0.0, |d| 1000.0 * ms(*d) / sent.max(1) as f64)
    }

    /// Cores the server kept busy in the window (CPU time ÷ wall time).
    pub fn cores(&self) -> f64 {
        self.cpu.total.as_secs_f64() / self.window_secs
    }

    /// Frames encoded with `codec` over the whole run (exit report).
    pub fn encoded(&self, codec: VideoCodec) -> u64 {
        self.stats
            .encoded
            .iter()
            .find(|(c, _)| c == codec.name())
            .map_or(0, |(_, n)| *n)
    }

    /// Frames encoded with `codec` in the window: the most any of its clients received.
    pub fn encoded_window(&self, codec: VideoCodec) -> u64 {
        self.received
            .iter()
            .filter(|(c, _, _)| *c == codec)
            .map(|(_, f, _)| *f)
            .max()
            .unwrap_or(0)
    }

    /// Frames dropped for the clients over the whole run (sum).
    pub fn dropped(&self) -> u64 {
        self.stats.clients.iter().map(|c| c.dropped).sum()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run_case(
    case: &Case,
    timing: Timing,
    pattern: &mut PatternChoice,
    dir: &TempDir,
) -> anyhow::Result<Outcome> {
    let mut server = start_server(dir, case, pattern)?;
    let pid = server.proc.id();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    let clients = case
        .clients
        .iter()
        .enumerate()
        .map(|(i, &codec)| Client::start(addr, codec, &format!("{CLIENT_THREAD}{i}")))
        .collect::<std::io::Result<Vec<_>>>()
        .context("starting the client threads")?;
    wait_first_frames(&mut server, &clients)?;
    std::thread::sleep(timing.warmup);

    let a = Snapshot::take(pid, &clients);
    let end = a.at + timing.window;
    let mut samples: Vec<Memory> = Vec::new();
    while Instant::now() < end {
        samples.push(memory(pid));
        std::thread::sleep(RSS_EVERY.min(end.saturating_duration_since(Instant::now())));
    }
    let b = Snapshot::take(pid, &clients);
    let hwm_kb = memory(pid).hwm_kb;
    let mut problems: Vec<String> = clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.finished())
        .map(|(i, c)| {
            format!(
                "client {i} stopped during the window: {}",
                c.counters.error().unwrap_or_else(|| "no error".into())
            )
        })
        .collect();

    let term = Instant::now();
    if !server.proc.signal(Signal::TERM) {
        bail!("cannot send SIGTERM to the server\n{}", server.proc.logs());
    }
    let Some(status) = server.proc.wait_timeout(EXIT_TIMEOUT) else {
        bail!(
            "the server is still running {EXIT_TIMEOUT:?} after SIGTERM\n{}",
            server.proc.logs()
        );
    };
    drop(clients);
    let stats = Stats::parse(&server.proc.stdout())
        .map_err(|e| anyhow!("the exit report: {e}\n{}", server.proc.logs()))?;
    if stats.returned != stats.drawn {
        problems.push(format!(
            "COOKIE MISMATCH: {} drawn, {} returned",
            stats.drawn, stats.returned
        ));
    }
    if !status.success() {
        problems.push(format!("the server exited with {status}"));
    }

    let window = b.at - a.at;
    let run_secs = (term - server.ready).as_secs_f64();
    let cpu = split(pid, &a.shim, &b.shim);
    let clients_cpu = threads_named(CLIENT_THREAD, &a.bench, &b.bench);
    let others = (b.machine.saturating_sub(a.machine))
        .saturating_sub(cpu.total)
        .saturating_sub(b.bench.total.saturating_sub(a.bench.total));
    let received: Vec<(VideoCodec, u64, u64)> = case
        .clients
        .iter()
        .zip(a.clients.iter().zip(&b.clients))
        .map(|(&codec, (x, y))| (codec, y.0 - x.0, y.1 - x.1))
        .collect();
    let drawn_window = drawn_in_window(&stats, window, run_secs, &received);
    let mean = |f: fn(&Memory) -> u64| {
        samples.iter().map(|m| f(m) as f64).sum::<f64>() / samples.len().max(1) as f64
    };
    let outcome = Outcome {
        case: case.clone(),
        pattern: pattern.name.clone(),
        window_secs: window.as_secs_f64(),
        run_secs,
        drawn_window,
        cpu,
        clients_cpu,
        others_pct: 100.0 * others.as_secs_f64() / (window.as_secs_f64() * nproc() as f64),
        rss_kb: mean(|m| m.rss_kb),
        anon_kb: mean(|m| m.anon_kb),
        hwm_kb,
        received,
        stats,
        problems,
    };
    Ok(check_figures(outcome))
}

/// Frames drawn in the window: the run's count × window ÷ run time, or the most frames a client
/// received in the window if that is more. The guest loses a few frames at start-up (about
/// 2 % of a run), and in a steady state no frame is encoded that was not drawn.
fn drawn_in_window(
    stats: &Stats,
    window: Duration,
    run_secs: f64,
    received: &[(VideoCodec, u64, u64)],
) -> f64 {
    let by_time = stats.drawn as f64 * window.as_secs_f64() / run_secs;
    let most_received = received.iter().map(|(_, f, _)| *f).max().unwrap_or(0);
    by_time.max(most_received as f64)
}

/// Waits until every client has received its first frame in the codec it asked for.
fn wait_first_frames(server: &mut Server, clients: &[Client]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = server.proc.try_wait() {
            bail!("the server exited with {status}\n{}", server.proc.logs());
        }
        if let Some((i, c)) = clients.iter().enumerate().find(|(_, c)| c.finished()) {
            bail!(
                "client {i} stopped before its first frame: {}\n{}",
                c.counters.error().unwrap_or_default(),
                server.proc.logs()
            );
        }
        if clients
            .iter()
            .all(|c| c.counters.frames() > 0 && c.counters.codec() == Some(c.codec))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let got: Vec<String> = clients
                .iter()
                .map(|c| format!("{}:{:?}", c.counters.frames(), c.counters.codec()))
                .collect();
            bail!(
                "not every client got a frame in its codec within {START_TIMEOUT:?} \
                 (frames:codec {})\n{}",
                got.join(" "),
                server.proc.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Adds a problem for every figure that was not produced.
fn check_figures(mut o: Outcome) -> Outcome {
    let mut missing = Vec::new();
    if o.stats.drawn == 0 {
        missing.push("frames drawn".to_string());
    }
    if o.cpu.total.is_zero() {
        missing.push("server CPU".into());
    }
    if o.rss_kb <= 0.0 || o.hwm_kb == 0 {
        missing.push("server memory".into());
    }
    for codec in o.case.codecs_used() {
        if o.encoded(codec) == 0 {
            missing.push(format!("frames encoded ({codec})"));
        }
    }
    for (i, (codec, frames, bytes)) in o.received.iter().enumerate() {
        if *frames == 0 || *bytes == 0 {
            missing.push(format!("frames received by client {i} ({codec})"));
        }
    }
    if o.stats.clients.len() != o.case.clients.len() {
        missing.push(format!(
            "client lines in the exit report ({} for {} clients)",
            o.stats.clients.len(),
            o.case.clients.len()
        ));
    }
    if !missing.is_empty() {
        o.problems
            .push(format!("figures not produced: {}", missing.join(", ")));
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Main

fn print_header(quick: bool, timing: Timing, cases: usize) {
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
    println!("load:      {} at the start", load_average());
    println!(
        "per case:  {:.0} s warm-up after every client's first frame, {:.0} s measured, {FPS} fps guest; {cases} cases",
        timing.warmup.as_secs_f64(),
        timing.window.as_secs_f64()
    );
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench")
        || std::env::var_os("SPICE_SHIM_BENCH_QUICK").is_some_and(|v| v != "0");
    let (timing, mut cases) = if quick {
        (QUICK, quick_cases())
    } else {
        (FULL, full_cases())
    };
    if let Ok(words) = std::env::var("SPICE_SHIM_BENCH_CASES") {
        cases.retain(|c| {
            let label = c.label();
            words
                .split(',')
                .any(|w| !w.trim().is_empty() && label.contains(w.trim()))
        });
    }
    print_header(quick, timing, cases.len());

    let started = Instant::now();
    let dir = TempDir::new("scaling");
    let mut pattern = PatternChoice::from_env();
    let mut all = Vec::new();
    let mut failed = false;
    for case in &cases {
        eprintln!("running {} …", case.label());
        match run_case(case, timing, &mut pattern, &dir) {
            Ok(o) => {
                for p in &o.problems {
                    eprintln!("{}: {p}", case.label());
                }
                failed |= !o.problems.is_empty();
                all.push(o);
            }
            Err(e) => {
                println!("{}: FAILED: {e:#}\n", case.label());
                failed = true;
            }
        }
    }
    report::print(&all, &pattern.name);
    println!(
        "\ntotal benchmark time: {:.0} s; at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if failed {
        eprintln!("error: a case failed, a figure is missing or a cookie did not come back");
        eprintln!("the servers' output is kept in {}", dir.path().display());
        std::process::exit(1);
    }
}
