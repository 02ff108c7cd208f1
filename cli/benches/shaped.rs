//! Rate control behind a real bottleneck: `spice-shim serve` and a spice-gtk client in a
//! network namespace whose loopback is shaped live with a token bucket filter.
//!
//! Run with `cargo bench -p spice-shim-cli --bench shaped` (about 6 minutes, as root). One
//! run per scenario, its phases back to back on the same connection, the qdisc changed live:
//! unshaped (20 s), `tbf rate 4mbit` (30 s), `tbf rate 1mbit` (30 s), shaping lifted (20 s).
//! The tbf parameters (burst 5 KiB, latency 100 ms) and the loopback's MTU of 1500 are
//! explained in `tests/netns/mod.rs`.
//!
//! The server is the real program, `spice-shim serve --pattern counter --size 1280x720 --fps 30
//! --video-codecs h264 --cursor none --stats-every 0.5 --draw-log FILE`; the client is
//! spice-client-glib 0.42 through python3-gi (`tests/latency_client.py`). Three scenarios:
//!
//! - `x264`: the project's x264 pipeline. The counter picture (colour bars, a moving square,
//!   the counter) needs well under 1 Mbit/s, so the links bind only on keyframes.
//! - `grain + x264`: the same pipeline with film grain before the encoder
//!   (`netns::write_grain_pipeline`): the stream fills whatever x264 budgets, as busy footage
//!   would. x264 budgets per frame at the caps' nominal 60 fps (spicedmabufsrc's default); the
//!   server scales the bitrate it writes to the encoder by nominal / measured frame rate, so
//!   the stream should still be the target.
//! - `grain + x264, nominal 30 fps`: the source's `framerate` set to the guest's 30, so the
//!   stream is the target without any scaling.
//! - `…, notsent_lowat 32 KiB` (only with `SPICE_SHIM_BENCH_CASES=lowat`): the same with
//!   `net.ipv4.tcp_notsent_lowat` set in the namespace. The server now sets `TCP_NOTSENT_LOWAT`
//!   (32 KiB) on its display sockets itself, so this is the same as the previous scenario; it
//!   was the preview of that fix.
//!
//! Measured from the server's `stats` lines (every 0.5 s): the h264 pipeline's bitrate target,
//! frames sent and dropped, bytes written into the client's socket ("sent"); from the
//! namespace's loopback counters (`/proc/<server pid>/net/dev`), the bytes the shaped link
//! carried, both directions ("carried"); from `ss` in the namespace, the Send-Q of the
//! server's connections (bytes written but not yet acknowledged: the backlog in the kernel);
//! from the client's `FRAME` lines: the
//! frames it showed per second, and glass-to-glass latency = when the client first had counter
//! `k` on its surface − when the server drew frame `k` (`--draw-log`; both CLOCK_MONOTONIC,
//! which every process of the host shares, in any network namespace). Latency is attributed to
//! the phase the frame was drawn in. Settling: when the target first went below the link rate
//! after the shaping began, and how much of the rest of the phase it spent above. Recovery:
//! after the shaping is lifted, from when on the target, the client's frame rate (1 s windows)
//! and latency (median of 1 s windows) stay back at their unshaped level (target ≥ 90 %,
//! fps ≥ 90 %, median ≤ 2 × the unshaped median).
//!
//! It prints tables, ratios first, and asserts nothing about speed; it fails if cookies do not
//! balance or the server or client fails. `SPICE_SHIM_BENCH_QUICK=1` (or running it without
//! `--bench`, as `cargo test --benches` does) runs the last scenario with 6 s phases and checks
//! only that every figure was produced and the cookies balance. `SPICE_SHIM_BENCH_PATTERN`
//! replaces `counter` (the pattern must carry the counter stamp); `SPICE_SHIM_BENCH_CASES=30,lowat`
//! keeps the scenarios whose label contains every word. Needs root, `ip netns` and
//! `tc` with `tbf`: it fails, not skips, without them.

mod common;
#[path = "../tests/netns/mod.rs"]
mod netns;
#[path = "../tests/util/mod.rs"]
mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use netns::{Netns, Sample, TBF_BURST, TBF_LATENCY};
use util::{ChildGuard, TempDir, workspace_root};

use common::{load_average, machine_busy, nproc, proc_line, stat_cpu_faults, summary, utc_now};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench shaped";
const FPS: u32 = 30;
const SIZE: &str = "1280x720";
const STATS_EVERY: f64 = 0.5;
/// After the last phase: time for the frames still in flight to show.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
struct Phase {
    name: &'static str,
    /// Link rate, kbit/s (`None`: unshaped).
    link: Option<u32>,
    secs: f64,
}

const FULL: [Phase; 4] = [
    Phase {
        name: "unshaped",
        link: None,
        secs: 20.0,
    },
    Phase {
        name: "4 Mbit/s",
        link: Some(4000),
        secs: 30.0,
    },
    Phase {
        name: "1 Mbit/s",
        link: Some(1000),
        secs: 30.0,
    },
    Phase {
        name: "lifted",
        link: None,
        secs: 20.0,
    },
];

fn quick_phases() -> Vec<Phase> {
    FULL.iter().map(|p| Phase { secs: 6.0, ..*p }).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// The project's x264 pipeline on the counter picture.
    Default,
    /// Film grain before x264, the source's nominal frame rate left at 60.
    Grain60,
    /// Film grain before x264, the source's nominal frame rate set to the guest's.
    Grain30,
    /// [`Scenario::Grain30`] with the kernel's unsent bytes per socket bounded
    /// ([`NOTSENT_LOWAT`]).
    Grain30Lowat,
}

/// `net.ipv4.tcp_notsent_lowat` of the last scenario: a socket takes no more data while this
/// many bytes wait unsent (about 0.26 s at 1 Mbit/s, 65 ms at 4 Mbit/s), so a full link shows
/// up in the server's own queue at once instead of in megabytes of kernel buffer.
const NOTSENT_LOWAT: u32 = 32 * 1024;

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Default => "x264",
            Scenario::Grain60 => "grain + x264",
            Scenario::Grain30 => "grain + x264, nominal 30 fps",
            Scenario::Grain30Lowat => "grain + x264, nominal 30 fps, notsent_lowat 32 KiB",
        }
    }

    /// `write_grain_pipeline`'s arguments, `None` for the project's pipelines.
    fn grain(self) -> Option<Option<u32>> {
        match self {
            Scenario::Default => None,
            Scenario::Grain60 => Some(None),
            Scenario::Grain30 | Scenario::Grain30Lowat => Some(Some(FPS)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One run.

/// What one run produced.
struct Run {
    scenario: Scenario,
    phases: Vec<Phase>,
    /// CLOCK_MONOTONIC when each phase began, and when the last one ended.
    starts: Vec<f64>,
    end: f64,
    samples: Vec<Sample>,
    /// (CLOCK_MONOTONIC, bytes the shaped loopback carried so far).
    link: Vec<(f64, u64)>,
    /// (CLOCK_MONOTONIC, the server socket's Send-Q in bytes).
    send_q: Vec<(f64, u64)>,
    /// Frame number → CLOCK_MONOTONIC of its gl_draw.
    draws: Vec<(u64, f64)>,
    /// (time, counter) of every new picture the client showed.
    frames: Vec<(f64, u32)>,
    /// Packets the shaper dropped in each phase.
    qdisc_drops: Vec<u64>,
    cookies: (u64, u64),
    /// Server and client CPU time, the machine's busy time and the wall time of the phases.
    cpu: Duration,
    busy: Duration,
    wall: Duration,
}

fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_faults(&stat).0
}

/// Sleeps `secs`, failing at once if interrupted or a child exited.
/// Bytes the namespace's loopback has carried (`/proc/<pid>/net/dev` shows the network
/// namespace of `pid`): what left the shaper, both directions.
fn link_bytes(pid: u32) -> Option<u64> {
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let line = dev.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit bytes.
    line.split_once(':')?
        .1
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()
}

/// The largest Send-Q (bytes written but not yet acknowledged: the kernel's backlog) of the
/// server's connections.
fn send_queue(ns: &Netns) -> Option<u64> {
    let port = format!("( sport = :{} )", netns::PORT);
    let out = ns
        .exec_cmd("ss", &["-tnH", "state", "established", &port])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
        .or(Some(0))
}

/// The server and the client while the phases run, and the link's byte counter sampled
/// every [`STATS_EVERY`].
struct Running<'a> {
    serve: ChildGuard,
    client: ChildGuard,
    stop: &'a AtomicBool,
    ns: &'a Netns,
    link: Vec<(f64, u64)>,
    send_q: Vec<(f64, u64)>,
    next_link: Instant,
}

impl Running<'_> {
    /// Sleeps `secs`, sampling the link; fails at once if interrupted or a child exited.
    fn hold(&mut self, secs: f64) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            for c in [&mut self.serve, &mut self.client] {
                if let Some(status) = c.try_wait() {
                    bail!("{} exited with {status}\n{}", c.name(), c.logs());
                }
            }
            if Instant::now() >= self.next_link {
                self.next_link += Duration::from_secs_f64(STATS_EVERY);
                if let Some(b) = link_bytes(self.serve.id()) {
                    self.link.push((netns::mono(), b));
                }
                if let Some(q) = send_queue(self.ns) {
                    self.send_q.push((netns::mono(), q));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

fn run(scenario: Scenario, phases: &[Phase], stop: &AtomicBool) -> anyhow::Result<Run> {
    let ns = Netns::new("ss-bench").map_err(anyhow::Error::msg)?;
    if scenario == Scenario::Grain30Lowat {
        ns.sysctl("net.ipv4.tcp_notsent_lowat", &NOTSENT_LOWAT.to_string())
            .map_err(anyhow::Error::msg)?;
    }
    let dir = TempDir::new("shaped-bench");
    let pattern = std::env::var("SPICE_SHIM_BENCH_PATTERN").unwrap_or_else(|_| "counter".into());
    let fps = FPS.to_string();
    let total: f64 = phases.iter().map(|p| p.secs).sum();
    let limit = format!("{:.0}", total + 120.0);
    let mut args = vec![
        "--pattern",
        &pattern,
        "--size",
        SIZE,
        "--fps",
        &fps,
        "--video-codecs",
        "h264",
        "--cursor",
        "none",
        "--duration",
        &limit,
    ];
    let pipelines;
    if let Some(nominal) = scenario.grain() {
        pipelines = netns::write_grain_pipeline(dir.path(), &workspace_root(), nominal)
            .to_string_lossy()
            .into_owned();
        args.extend(["--pipelines", &pipelines]);
    }
    let serve = netns::start_serve(&ns, &dir, STATS_EVERY, &args);
    let client = netns::start_client(&ns, &dir, Duration::from_secs_f64(total + 90.0));
    let mut r = Running {
        serve,
        client,
        stop,
        ns: &ns,
        link: Vec::new(),
        send_q: Vec::new(),
        next_link: Instant::now(),
    };
    let first = Instant::now() + Duration::from_secs(30);
    while netns::frames(&r.client).is_empty() {
        r.hold(0.1)?;
        if Instant::now() > first {
            bail!("no frame on the client within 30 s\n{}", r.client.logs());
        }
    }
    // A second for the stream to run at full rate before the first phase.
    r.hold(1.0)?;

    let (serve_pid, client_pid) = (r.serve.id(), r.client.id());
    let cpu0 = cpu_of(serve_pid) + cpu_of(client_pid);
    let busy0 = machine_busy();
    let wall0 = Instant::now();
    let mut starts = Vec::new();
    let mut qdisc_drops = Vec::new();
    for p in phases {
        ns.shape(p.link).map_err(anyhow::Error::msg)?;
        starts.push(netns::mono());
        eprintln!(
            "  {}: {} for {:.0} s ({})",
            scenario.label(),
            p.name,
            p.secs,
            load_average()
        );
        r.hold(p.secs)?;
        qdisc_drops.push(ns.qdisc_drops());
    }
    let end = netns::mono();
    let cpu = cpu_of(serve_pid) + cpu_of(client_pid) - cpu0;
    let busy = machine_busy().saturating_sub(busy0);
    let wall = wall0.elapsed();
    r.hold(DRAIN.as_secs_f64())?;

    let Running {
        mut serve,
        mut client,
        link,
        send_q,
        ..
    } = r;
    let client_status = netns::stop(&mut client, Duration::from_secs(10));
    let serve_status = netns::stop(&mut serve, Duration::from_secs(30));
    if !client_status.is_some_and(|s| s.success()) {
        bail!("client: {client_status:?}\n{}", client.logs());
    }
    let cookies = netns::cookies(&serve)
        .with_context(|| format!("no exit report from the server\n{}", serve.logs()))?;
    if !serve_status.is_some_and(|s| s.success()) {
        bail!("server: {serve_status:?}\n{}", serve.logs());
    }
    Ok(Run {
        scenario,
        phases: phases.to_vec(),
        starts,
        end,
        samples: netns::samples(&serve),
        link,
        send_q,
        draws: netns::draw_times(&dir),
        frames: netns::frames(&client),
        qdisc_drops,
        cookies,
        cpu,
        busy,
        wall,
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis.

/// Figures of one phase.
struct PhaseFigures {
    phase: Phase,
    /// Target at the end of the phase, its lowest, its mean over the second half.
    target_end: Option<u32>,
    target_min: Option<u32>,
    target_mean2: Option<f64>,
    /// Shaped phases: seconds until the target first went below the link rate, and the share
    /// of the phase after that it spent above.
    settle: Option<f64>,
    above_after: Option<f64>,
    /// Over the second half of the phase, kbit/s: what the server wrote into the client's
    /// socket, and what the link carried (both directions).
    sent_kbit: Option<f64>,
    link_kbit: Option<f64>,
    /// The server socket's Send-Q: largest, and at the end of the phase (KiB).
    send_q_max: Option<f64>,
    send_q_end: Option<f64>,
    sent: u64,
    dropped: u64,
    qdisc_drops: u64,
    /// New pictures the client showed per second.
    fps: f64,
    /// Glass-to-glass p50, p95, max (ms) of the frames drawn in the phase; drawn, never shown.
    lat: Option<(f64, f64, f64)>,
    drawn: usize,
    missed: usize,
}

/// The last sample at or before `t`, else the first one.
fn sample_at(samples: &[Sample], t: f64) -> Option<&Sample> {
    samples
        .iter()
        .rev()
        .find(|s| s.mono <= t)
        .or(samples.first())
}

fn in_window(samples: &[Sample], a: f64, b: f64) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.mono >= a && s.mono < b)
        .collect()
}

/// Counter → when the client first showed it.
fn first_seen(frames: &[(f64, u32)]) -> HashMap<u32, f64> {
    let mut first = HashMap::new();
    for &(t, c) in frames {
        first.entry(c).or_insert(t);
    }
    first
}

/// Latencies (ms) of the frames drawn in [a, b), and how many of them never showed.
fn latencies(run: &Run, seen: &HashMap<u32, f64>, a: f64, b: f64) -> (Vec<f64>, usize, usize) {
    let mut lat = Vec::new();
    let (mut drawn, mut missed) = (0, 0);
    for &(k, t) in &run.draws {
        if t < a || t >= b {
            continue;
        }
        drawn += 1;
        match seen.get(&(k as u32)) {
            Some(&s) => lat.push((s - t) * 1000.0),
            None => missed += 1,
        }
    }
    (lat, drawn, missed)
}

/// kbit/s the link carried between the samples nearest `a` and `b`.
fn link_rate(link: &[(f64, u64)], a: f64, b: f64) -> Option<f64> {
    let at = |t: f64| link.iter().rev().find(|(m, _)| *m <= t).or(link.first());
    let ((ta, xa), (tb, xb)) = (at(a)?, at(b)?);
    (tb > ta).then(|| xb.saturating_sub(*xa) as f64 * 8.0 / 1000.0 / (tb - ta))
}

fn bytes_of(s: &Sample) -> u64 {
    s.client.map_or(0, |c| c.bytes)
}

fn phase_figures(run: &Run, i: usize, seen: &HashMap<u32, f64>) -> PhaseFigures {
    let phase = run.phases[i];
    let a = run.starts[i];
    let b = run.starts.get(i + 1).copied().unwrap_or(run.end);
    let mid = (a + b) / 2.0;
    let win = in_window(&run.samples, a, b);
    let kbps: Vec<(f64, u32)> = win.iter().filter_map(|s| Some((s.mono, s.kbps?))).collect();
    let second: Vec<f64> = kbps
        .iter()
        .filter(|(t, _)| *t >= mid)
        .map(|&(_, k)| f64::from(k))
        .collect();
    let (mut settle, mut above_after) = (None, None);
    if let Some(link) = phase.link
        && let Some(pos) = kbps.iter().position(|&(_, k)| k < link)
    {
        settle = Some(kbps[pos].0 - a);
        let rest = &kbps[pos..];
        let above = rest.iter().filter(|&&(_, k)| k >= link).count();
        above_after = Some(above as f64 / rest.len() as f64);
    }
    let (s_a, s_mid, s_b) = (
        sample_at(&run.samples, a),
        sample_at(&run.samples, mid),
        sample_at(&run.samples, b),
    );
    let sent_kbit = match (s_mid, s_b) {
        (Some(m), Some(e)) if e.mono > m.mono => {
            Some((bytes_of(e) - bytes_of(m)) as f64 * 8.0 / 1000.0 / (e.mono - m.mono))
        }
        _ => None,
    };
    let link_kbit = link_rate(&run.link, mid, b);
    let q: Vec<(f64, u64)> = run
        .send_q
        .iter()
        .copied()
        .filter(|&(t, _)| t >= a && t < b)
        .collect();
    let kib = |v: u64| v as f64 / 1024.0;
    let send_q_max = q.iter().map(|&(_, v)| v).max().map(kib);
    let send_q_end = q.last().map(|&(_, v)| kib(v));
    let client = |s: Option<&Sample>| s.and_then(|s| s.client).unwrap_or_default();
    let (c_a, c_b) = (client(s_a), client(s_b));
    let shown = seen.values().filter(|&&t| t >= a && t < b).count();
    let (mut lat, drawn, missed) = latencies(run, seen, a, b);
    PhaseFigures {
        phase,
        target_end: kbps.last().map(|&(_, k)| k),
        target_min: kbps.iter().map(|&(_, k)| k).min(),
        target_mean2: (!second.is_empty())
            .then(|| second.iter().sum::<f64>() / second.len() as f64),
        settle,
        above_after,
        sent_kbit,
        link_kbit,
        send_q_max,
        send_q_end,
        sent: c_b.sent.saturating_sub(c_a.sent),
        dropped: c_b.dropped.saturating_sub(c_a.dropped),
        qdisc_drops: run.qdisc_drops[i],
        fps: shown as f64 / (b - a),
        lat: summary(&mut lat),
        drawn,
        missed,
    }
}

/// After the shaping is lifted: from when on (s after the lift) each figure stays back.
struct Recovery {
    target: Option<f64>,
    fps: Option<f64>,
    latency: Option<f64>,
    target_end: Option<u32>,
}

/// The first of `points` (time, ok) from which every later point is ok, as time − `a`.
fn back_from(points: &[(f64, bool)], a: f64) -> Option<f64> {
    let last_bad = points.iter().rposition(|&(_, ok)| !ok);
    match last_bad {
        None => points.first().map(|&(t, _)| t - a),
        Some(i) => points.get(i + 1).map(|&(t, _)| t - a),
    }
}

fn recovery(run: &Run, seen: &HashMap<u32, f64>, base: &PhaseFigures) -> Recovery {
    let i = run.phases.len() - 1;
    let a = run.starts[i];
    let b = run.end;
    let win = in_window(&run.samples, a, b);
    let base_target = f64::from(base.target_end.unwrap_or(0));
    let target: Vec<(f64, bool)> = win
        .iter()
        .filter_map(|s| Some((s.mono, f64::from(s.kbps?) >= 0.9 * base_target)))
        .collect();
    let base_p50 = base.lat.map_or(0.0, |l| l.0);
    let (mut fps, mut latency) = (Vec::new(), Vec::new());
    let mut t = a;
    while t + 1.0 <= b + 1e-9 {
        let shown = seen.values().filter(|&&s| s >= t && s < t + 1.0).count();
        fps.push((t, shown as f64 >= 0.9 * base.fps));
        let (mut lat, _, _) = latencies(run, seen, t, t + 1.0);
        if let Some((p50, _, _)) = summary(&mut lat) {
            latency.push((t, p50 <= 2.0 * base_p50));
        } else {
            latency.push((t, false));
        }
        t += 1.0;
    }
    Recovery {
        target: back_from(&target, a),
        fps: back_from(&fps, a),
        latency: back_from(&latency, a),
        target_end: win.last().and_then(|s| s.kbps),
    }
}

/// One row of the timeline: a 2 s window.
struct Tick {
    t: f64,
    phase: &'static str,
    target: Option<u32>,
    sent_kbit: f64,
    link_kbit: Option<f64>,
    /// The server socket's largest Send-Q in the window, KiB.
    send_q: Option<f64>,
    sent: u64,
    dropped: u64,
    fps: f64,
    p50: Option<f64>,
}

const TICK: f64 = 2.0;

fn timeline(run: &Run, seen: &HashMap<u32, f64>) -> Vec<Tick> {
    let t0 = run.starts[0];
    let mut out = Vec::new();
    let mut t = t0;
    while t + TICK <= run.end + 1e-9 {
        let phase = run
            .starts
            .iter()
            .rposition(|&s| s <= t + TICK / 2.0)
            .map_or("", |i| run.phases[i].name);
        let (s_a, s_b) = (
            sample_at(&run.samples, t),
            sample_at(&run.samples, t + TICK),
        );
        let client = |s: Option<&Sample>| s.and_then(|s| s.client).unwrap_or_default();
        let (c_a, c_b) = (client(s_a), client(s_b));
        let dt = match (s_a, s_b) {
            (Some(x), Some(y)) if y.mono > x.mono => y.mono - x.mono,
            _ => TICK,
        };
        let shown = seen.values().filter(|&&s| s >= t && s < t + TICK).count();
        let (mut lat, _, _) = latencies(run, seen, t, t + TICK);
        out.push(Tick {
            t: t - t0,
            phase,
            target: s_b.and_then(|s| s.kbps),
            sent_kbit: c_b.bytes.saturating_sub(c_a.bytes) as f64 * 8.0 / 1000.0 / dt,
            link_kbit: link_rate(&run.link, t, t + TICK),
            send_q: run
                .send_q
                .iter()
                .filter(|&&(m, _)| m >= t && m < t + TICK)
                .map(|&(_, v)| v)
                .max()
                .map(|v| v as f64 / 1024.0),
            sent: c_b.sent.saturating_sub(c_a.sent),
            dropped: c_b.dropped.saturating_sub(c_a.dropped),
            fps: shown as f64 / TICK,
            p50: summary(&mut lat).map(|l| l.0),
        });
        t += TICK;
    }
    out
}

struct Analysis {
    scenario: Scenario,
    phases: Vec<PhaseFigures>,
    recovery: Recovery,
    timeline: Vec<Tick>,
    cookies: (u64, u64),
    others_pct: f64,
    cpu_pct: f64,
}

fn analyse(run: &Run) -> Analysis {
    let seen = first_seen(&run.frames);
    let phases: Vec<PhaseFigures> = (0..run.phases.len())
        .map(|i| phase_figures(run, i, &seen))
        .collect();
    let recovery = recovery(run, &seen, &phases[0]);
    let secs = run.wall.as_secs_f64().max(1e-3);
    let others = run.busy.saturating_sub(run.cpu);
    Analysis {
        scenario: run.scenario,
        recovery,
        timeline: timeline(run, &seen),
        cookies: run.cookies,
        others_pct: 100.0 * others.as_secs_f64() / (secs * nproc() as f64),
        cpu_pct: 100.0 * run.cpu.as_secs_f64() / secs,
        phases,
    }
}

/// What is missing from `a` (quick mode's check), empty if every figure was produced.
fn missing(a: &Analysis) -> Vec<String> {
    let mut out = Vec::new();
    for p in &a.phases {
        let name = p.phase.name;
        if p.target_end.is_none() {
            out.push(format!("{name}: no bitrate target"));
        }
        if p.sent_kbit.is_none() || p.link_kbit.is_none() || p.send_q_max.is_none() {
            out.push(format!("{name}: no sent or carried rate or send queue"));
        }
        if p.lat.is_none() {
            out.push(format!("{name}: no latency"));
        }
        if p.drawn == 0 {
            out.push(format!("{name}: no frame drawn"));
        }
        if p.phase.link.is_some() && p.target_min.is_none() {
            out.push(format!("{name}: no settling figure"));
        }
    }
    if a.timeline.is_empty() {
        out.push("no timeline".into());
    }
    if a.cookies.0 == 0 || a.cookies.0 != a.cookies.1 {
        out.push(format!(
            "cookies: {} drawn, {} returned",
            a.cookies.0, a.cookies.1
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Report.

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn link_label(p: &Phase) -> String {
    p.link.map_or("-".into(), |k| format!("{k}"))
}

fn print_header(quick: bool, phases: &[Phase]) {
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
    println!("load:      {}", load_average());
    println!(
        "server:    spice-shim serve --pattern counter --size {SIZE} --fps {FPS} \
         --video-codecs h264 --cursor none --stats-every {STATS_EVERY}"
    );
    println!(
        "client:    spice-client-glib 0.42 via {} (python3-gi), {}",
        netns::PYTHON,
        netns::CLIENT
    );
    println!(
        "link:      network namespace loopback, MTU 1500, tbf burst {TBF_BURST} latency \
         {TBF_LATENCY}, changed live"
    );
    let plan: Vec<String> = phases
        .iter()
        .map(|p| format!("{} {:.0} s", p.name, p.secs))
        .collect();
    println!("phases:    {}", plan.join(", "));
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

fn print_ratios(all: &[Analysis]) {
    println!("## Against the unshaped phase (ratios)");
    println!();
    println!(
        "| scenario | phase | link kbit/s | target at end / link | sent / link | carried / link | fps ratio | p50 ratio | p95 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for a in all {
        let base = &a.phases[0];
        for p in &a.phases[1..] {
            let link = p.phase.link.map(f64::from);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                a.scenario.label(),
                p.phase.name,
                link_label(&p.phase),
                ratio(p.target_end.map(f64::from), link),
                ratio(p.sent_kbit, link),
                ratio(p.link_kbit, link),
                ratio(Some(p.fps), Some(base.fps)),
                ratio(p.lat.map(|l| l.0), base.lat.map(|l| l.0)),
                ratio(p.lat.map(|l| l.1), base.lat.map(|l| l.1)),
            );
        }
    }
    println!();
}

fn print_settling(all: &[Analysis]) {
    println!("## Settling and recovery (seconds)");
    println!();
    println!(
        "| scenario | phase | first below link after | above link after that | target min / end / mean of 2nd half kbit/s |"
    );
    println!("|---|---|---|---|---|");
    for a in all {
        for p in a.phases.iter().filter(|p| p.phase.link.is_some()) {
            println!(
                "| {} | {} | {} | {} | {} / {} / {} |",
                a.scenario.label(),
                p.phase.name,
                p.settle
                    .map_or_else(|| "never".into(), |s| format!("{s:.1} s")),
                p.above_after
                    .map_or("-".into(), |f| format!("{:.0} %", 100.0 * f)),
                opt(p.target_min),
                opt(p.target_end),
                p.target_mean2.map_or("-".into(), |m| format!("{m:.0}")),
            );
        }
    }
    println!();
    println!(
        "| scenario | target back (≥ 90 % of unshaped) | fps back (≥ 90 %) | latency back (p50 ≤ 2× unshaped) | target at the end kbit/s |"
    );
    println!("|---|---|---|---|---|");
    for a in all {
        let r = &a.recovery;
        let lifted = a.phases.last().map_or(0.0, |p| p.phase.secs);
        let back = |v: Option<f64>| {
            v.map_or_else(
                || format!("not within {lifted:.0} s"),
                |s| format!("{s:.1} s"),
            )
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            a.scenario.label(),
            back(r.target),
            back(r.fps),
            back(r.latency),
            opt(r.target_end)
        );
    }
    println!();
}

fn print_phases(all: &[Analysis]) {
    println!("## Per phase (absolute)");
    println!();
    println!(
        "| scenario | phase | link kbit/s | target end kbit/s | sent kbit/s | carried kbit/s | Send-Q max / end KiB | frames sent | dropped | qdisc drops | client fps | p50 ms | p95 ms | max ms | drawn | never shown |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for a in all {
        for p in &a.phases {
            let (p50, p95, max) = p.lat.map_or(("-".into(), "-".into(), "-".into()), |l| {
                (
                    format!("{:.0}", l.0),
                    format!("{:.0}", l.1),
                    format!("{:.0}", l.2),
                )
            });
            println!(
                "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {:.1} | {p50} | {p95} | {max} | {} | {} |",
                a.scenario.label(),
                p.phase.name,
                link_label(&p.phase),
                opt(p.target_end),
                p.sent_kbit.map_or("-".into(), |w| format!("{w:.0}")),
                p.link_kbit.map_or("-".into(), |w| format!("{w:.0}")),
                p.send_q_max.map_or("-".into(), |w| format!("{w:.0}")),
                p.send_q_end.map_or("-".into(), |w| format!("{w:.0}")),
                p.sent,
                p.dropped,
                p.qdisc_drops,
                p.fps,
                p.drawn,
                p.missed,
            );
        }
    }
    println!();
    for a in all {
        println!(
            "{}: cookies {} drawn, {} returned; server + client CPU {:.0} % of one core; others {:.0} % of the machine",
            a.scenario.label(),
            a.cookies.0,
            a.cookies.1,
            a.cpu_pct,
            a.others_pct
        );
    }
    println!();
}

fn print_timeline(a: &Analysis) {
    println!(
        "## Timeline, {} ({TICK:.0} s windows; latency by draw time)",
        a.scenario.label()
    );
    println!();
    println!(
        "| t s | phase | target kbit/s | sent kbit/s | carried kbit/s | Send-Q KiB | frames sent | dropped | client fps | p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for k in &a.timeline {
        println!(
            "| {:.0} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {} |",
            k.t,
            k.phase,
            opt(k.target),
            k.sent_kbit,
            k.link_kbit.map_or("-".into(), |v| format!("{v:.0}")),
            k.send_q.map_or("-".into(), |v| format!("{v:.0}")),
            k.sent,
            k.dropped,
            k.fps,
            k.p50.map_or("-".into(), |v| format!("{v:.0}"))
        );
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench")
        || std::env::var_os("SPICE_SHIM_BENCH_QUICK").is_some_and(|v| v != "0");
    let (phases, scenarios) = if quick {
        (quick_phases(), vec![Scenario::Grain30])
    } else {
        (
            FULL.to_vec(),
            vec![
                Scenario::Default,
                Scenario::Grain60,
                Scenario::Grain30,
                Scenario::Grain30Lowat,
            ],
        )
    };
    let mut scenarios = scenarios;
    match std::env::var("SPICE_SHIM_BENCH_CASES") {
        Ok(words) => scenarios.retain(|s| {
            words
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .all(|w| s.label().contains(w))
        }),
        // The server bounds its display sockets' unsent bytes itself now: the namespace-wide
        // setting changes nothing and runs only when asked for.
        Err(_) => scenarios.retain(|s| *s != Scenario::Grain30Lowat),
    }
    // Ctrl-C or SIGTERM ends the run through its guards (processes, namespace).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("signal handler");
    }
    let started = Instant::now();
    print_header(quick, &phases);
    let mut all = Vec::new();
    let mut failed = false;
    for &s in &scenarios {
        eprintln!("running {} ({}) …", s.label(), load_average());
        match run(s, &phases, &stop) {
            Ok(r) => {
                let a = analyse(&r);
                if a.cookies.0 != a.cookies.1 {
                    println!("{}: a cookie did not come back", s.label());
                    failed = true;
                }
                if quick {
                    let m = missing(&a);
                    if !m.is_empty() {
                        println!("{}: figures missing: {}", s.label(), m.join("; "));
                        failed = true;
                    }
                }
                all.push(a);
            }
            Err(e) => {
                println!("{}: FAILED: {e:#}", s.label());
                failed = true;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    if !all.is_empty() {
        print_ratios(&all);
        print_settling(&all);
        print_phases(&all);
        for a in &all {
            print_timeline(a);
        }
    }
    println!(
        "load after: {}; took {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
    if failed {
        std::process::exit(1);
    }
}
