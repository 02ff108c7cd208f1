//! The cost per frame of `spice-shim qemu`'s 2D D-Bus path, with a real QEMU and a Linux guest
//! redrawing its framebuffer flat out as the workload.
//!
//! Run with `cargo bench -p spice-shim-cli --bench qemu_dbus`. It prints tables and asserts
//! nothing about speed. `SPICE_SHIM_BENCH_QUICK=1` (or running the binary without the `--bench`
//! argument, e.g. under `cargo test --benches`) measures 3 s instead of 20 s per codec, as a
//! smoke run; `SPICE_SHIM_BENCH_CODECS=h264` selects the codecs (default `h264,mjpeg`).
//!
//! One QEMU 7.2 (TCG, `-vga std`, `-display dbus` on a private bus) boots the test guest of
//! `cli/tests/qemu/mod.rs` with `spice_test=redraw` on its kernel command line: its init
//! writes four 800x600 pictures into `/dev/fb0` (vesafb, 24 bpp) in turn, forever. The guest
//! is paused (QMP `stop`) as soon as it starts. Then, for each codec:
//! 1. `spice-shim qemu --video-codecs <codec>` starts and registers its listener; remote-viewer
//!    on a private Xvfb connects, chooses the codec, and gets the paused guest's picture;
//! 2. after 2 s of quiet, the CPU times are read from /proc and the guest runs (QMP `cont`)
//!    for the measured window (20 s), then is paused again (QMP `stop`);
//! 3. 1 s later (the last frames are encoded and sent) the CPU times are read again and the
//!    shim is stopped with SIGTERM. Its exit report gives the frames drawn, returned and
//!    encoded, and its `qemu: updates …` line the 2D path's counters: QEMU's `Update` calls and
//!    the bytes of their `ay` pixels, the bytes copied into the picture and into the memfd
//!    buffers and the time those copies took, the frames drawn, the updates merged.
//!
//! The counters cover the shim's whole life, but the guest only drew during the window: before
//! it there is the registration's `Scanout` (counted apart) and one frame. CPU times are those
//! of the window plus the 1 s drain: user + system time of the processes (and per thread, to
//! show where the time goes), and of the whole machine for the share other processes used.

mod common;
#[path = "../tests/qemu/mod.rs"]
mod qemu;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/util/mod.rs"]
mod util;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    ProcCpu, fmt, load_average, machine_busy, ms, nproc, proc_cpu, proc_line, ratio, stat_comm,
    utc_now,
};
use qemu::{DbusDaemon, FB_HEIGHT, FB_WIDTH, Guest, Qemu, REDRAW, SHIM_TIMEOUT, Shim};
use support::{CLIENT_TIMEOUT, Stats, Xvfb};
use util::{ChildGuard, TempDir};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench qemu_dbus";
/// How long the guest redraws per codec.
const WINDOW: Duration = Duration::from_secs(20);
const QUICK_WINDOW: Duration = Duration::from_secs(3);
/// Quiet time after the client chose its codec (the joining keyframe and the idle follow-up
/// frame are encoded), before the window.
const SETTLE: Duration = Duration::from_secs(2);
/// After the guest is paused again: time for the last frames to be encoded and sent.
const DRAIN: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// CPU time from /proc

/// The processes this benchmark started (children of this process): pid and name.
fn children() -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if ppid == Some(me) {
            out.push((pid, stat_comm(&stat)));
        }
    }
    out
}

/// CPU times at one moment.
struct Snapshot {
    at: Instant,
    shim: ProcCpu,
    qemu: ProcCpu,
    /// Every child process (shim, QEMU, remote-viewer, Xvfb, dbus-daemon) by pid.
    children: BTreeMap<u32, (String, Duration)>,
    machine: Duration,
}

impl Snapshot {
    fn take(shim: u32, qemu: u32) -> Self {
        let children = children()
            .into_iter()
            .map(|(pid, name)| (pid, (name, proc_cpu(pid).total)))
            .collect();
        Self {
            at: Instant::now(),
            shim: proc_cpu(shim),
            qemu: proc_cpu(qemu),
            children,
            machine: machine_busy(),
        }
    }
}

/// What the processes used between two snapshots.
struct CpuUse {
    span: Duration,
    shim: Duration,
    qemu: Duration,
    /// QEMU's vCPU thread (`CPU 0/TCG`): the guest itself.
    qemu_vcpu: Duration,
    /// remote-viewer and Xvfb.
    client: Duration,
    dbus_daemon: Duration,
    /// Share of the machine's cores other processes used, in percent.
    others_pct: f64,
    /// Per thread name, largest first.
    shim_threads: Vec<(String, Duration)>,
    qemu_threads: Vec<(String, Duration)>,
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

fn cpu_use(a: &Snapshot, b: &Snapshot, shim: u32, qemu: u32) -> CpuUse {
    let span = b.at - a.at;
    let mut client = Duration::ZERO;
    let mut dbus_daemon = Duration::ZERO;
    let mut ours = Duration::ZERO;
    for (pid, (name, after)) in &b.children {
        let before = a.children.get(pid).map(|(_, t)| *t).unwrap_or_default();
        let d = after.saturating_sub(before);
        ours += d;
        if *pid == shim || *pid == qemu {
            continue;
        }
        if name.starts_with("remote-viewer") || name == "Xvfb" {
            client += d;
        } else if name.starts_with("dbus-daemon") {
            dbus_daemon += d;
        }
    }
    let shim_cpu = b.shim.total.saturating_sub(a.shim.total);
    let qemu_cpu = b.qemu.total.saturating_sub(a.qemu.total);
    let vcpu = |p: &ProcCpu| {
        p.threads
            .iter()
            .filter(|(n, _)| n.starts_with("CPU ") && n.ends_with("/TCG"))
            .map(|(_, t)| *t)
            .sum::<Duration>()
    };
    let others = b.machine.saturating_sub(a.machine).saturating_sub(ours);
    CpuUse {
        span,
        shim: shim_cpu,
        qemu: qemu_cpu,
        qemu_vcpu: vcpu(&b.qemu).saturating_sub(vcpu(&a.qemu)),
        client,
        dbus_daemon,
        others_pct: 100.0 * others.as_secs_f64() / (span.as_secs_f64() * nproc() as f64),
        shim_threads: threads_delta(&a.shim, &b.shim),
        qemu_threads: threads_delta(&a.qemu, &b.qemu),
    }
}

// ---------------------------------------------------------------------------------------------
// The shim's `qemu: …` line

/// The numbers of `qemu: updates N (B bytes), scanouts S (B bytes), copied B bytes in T ms
/// (picture B bytes in T ms, buffers B bytes in T ms), frames drawn F, merged M`.
#[derive(Debug, Clone, Copy, Default)]
struct QemuLine {
    updates: u64,
    update_bytes: u64,
    scanouts: u64,
    scanout_bytes: u64,
    copied_bytes: u64,
    copy_ms: f64,
    picture_bytes: u64,
    picture_ms: f64,
    buffer_bytes: u64,
    buffer_ms: f64,
    frames: u64,
    merged: u64,
}

impl QemuLine {
    /// QEMU's calls with pixels: QEMU 7.2 sends a damaged rectangle that covers the whole
    /// surface as a `Scanout`, the others as `Update`.
    fn calls(&self) -> u64 {
        self.updates + self.scanouts
    }

    /// The bytes of their `ay` pixel data.
    fn ay_bytes(&self) -> u64 {
        self.update_bytes + self.scanout_bytes
    }

    fn parse(stdout: &str) -> Result<Self, String> {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("qemu: updates "))
            .ok_or("the shim printed no `qemu: updates …` line")?;
        let n: Vec<f64> = line
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|s| !s.is_empty() && *s != ".")
            .map(|s| {
                s.parse::<f64>()
                    .map_err(|e| format!("{s:?} in {line:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let [u, ub, s, sb, c, ct, pb, pt, bb, bt, f, m] = n[..] else {
            return Err(format!("12 numbers expected in {line:?}"));
        };
        Ok(Self {
            updates: u as u64,
            update_bytes: ub as u64,
            scanouts: s as u64,
            scanout_bytes: sb as u64,
            copied_bytes: c as u64,
            copy_ms: ct,
            picture_bytes: pb as u64,
            picture_ms: pt,
            buffer_bytes: bb as u64,
            buffer_ms: bt,
            frames: f as u64,
            merged: m as u64,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// One codec

struct Phase {
    codec: String,
    /// The guest ran (QMP `cont` to `stop`).
    window: Duration,
    cpu: CpuUse,
    /// Pictures the guest wrote in the window (counted in 16s).
    guest_pictures: Option<u64>,
    line: QemuLine,
    stats: Stats,
    load_before: String,
    report: String,
}

impl Phase {
    fn encoded(&self) -> u64 {
        self.stats
            .encoded
            .iter()
            .find(|(c, _)| *c == self.codec)
            .map_or(0, |(_, n)| *n)
    }
}

fn run_phase(vm: &mut Qemu, bus: &DbusDaemon, codec: &str, window: Duration) -> Phase {
    let dir = TempDir::new(&format!("qemu-bench-{codec}"));
    let mut shim = Shim::start(&dir, bus, &["--video-codecs", codec]);
    shim.wait_listening();
    assert!(
        shim.wait_stderr("registered listener on console", SHIM_TIMEOUT),
        "the shim registered no listener with QEMU\n{}",
        shim.logs()
    );

    let xvfb = Xvfb::start(&dir);
    let mut cmd = xvfb.command("remote-viewer", &dir);
    cmd.arg(shim.uri()).env("DISABLE_GSTVIDEOOVERLAY", "1");
    let mut viewer = ChildGuard::spawn("remote-viewer", cmd, &dir);
    let chosen = format!(": using {codec}");
    if !shim.wait_stderr(&chosen, CLIENT_TIMEOUT) {
        panic!(
            "remote-viewer did not start a {codec} stream within {CLIENT_TIMEOUT:?}\n{}\n{}",
            viewer.logs(),
            shim.logs()
        );
    }
    std::thread::sleep(SETTLE);
    viewer.assert_running("before the window");

    let (shim_pid, qemu_pid) = (shim.pid(), vm.pid());
    let load_before = load_average();
    let pictures_before = vm.redraw_count();
    let t0 = Snapshot::take(shim_pid, qemu_pid);
    vm.execute("cont", None);
    let started = Instant::now();
    std::thread::sleep(window);
    vm.execute("stop", None);
    let window = started.elapsed();
    std::thread::sleep(DRAIN);
    let t1 = Snapshot::take(shim_pid, qemu_pid);
    let pictures_after = vm.redraw_count();
    viewer.assert_running("at the end of the window");
    vm.assert_running("at the end of the window");

    let exit = shim.stop(SHIM_TIMEOUT);
    viewer.kill();
    drop(xvfb);
    let line = QemuLine::parse(&exit.stdout).unwrap_or_else(|e| panic!("{e}\n{}", exit.report()));
    if !exit.status.success() || exit.stats.drawn != exit.stats.returned {
        panic!(
            "the shim exited with {} ({} frames drawn, {} cookies returned)\n{}",
            exit.status,
            exit.stats.drawn,
            exit.stats.returned,
            exit.report()
        );
    }
    Phase {
        codec: codec.to_string(),
        window,
        cpu: cpu_use(&t0, &t1, shim_pid, qemu_pid),
        guest_pictures: pictures_before
            .zip(pictures_after)
            .map(|(a, b)| b.saturating_sub(a)),
        line,
        stats: exit.stats,
        load_before,
        report: exit.stdout.trim_end().to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn print_header(quick: bool, window: Duration) {
    let cpu = proc_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = proc_line("/proc/meminfo", "MemTotal").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|e| format!("qemu-system-x86_64: {e}"));
    println!("command:   {COMMAND}");
    println!("date:      {}", utc_now());
    println!(
        "machine:   nproc={}, {cpu}, MemTotal {mem}, Linux {}",
        nproc(),
        kernel.trim()
    );
    println!("qemu:      {qemu}, TCG, -vga std, -display dbus");
    println!(
        "guest:     {} ({}), vesafb {FB_WIDTH}x{FB_HEIGHT}x24, redrawing 4 pictures in turn",
        qemu::kernel().display(),
        REDRAW
    );
    println!("load:      {}", load_average());
    println!(
        "per codec: {:.0} s measured (guest running), then {:.0} s drain; client: remote-viewer on \
         Xvfb",
        window.as_secs_f64(),
        DRAIN.as_secs_f64()
    );
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

fn print_report(phases: &[Phase]) {
    println!("### Ratios\n");
    println!(
        "| codec | copy / shim CPU | shim CPU / QEMU CPU | shim CPU / QEMU CPU without the guest \
         (vCPU) | frames drawn / QEMU call | QEMU calls / guest picture | encoded / drawn |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for p in phases {
        let l = &p.line;
        let c = &p.cpu;
        let per_picture = p
            .guest_pictures
            .map_or(f64::NAN, |g| ratio(l.calls() as f64, g as f64));
        println!(
            "| {} | {} % | {} | {} | {} | {} | {} |",
            p.codec,
            fmt(100.0 * ratio(l.copy_ms, ms(c.shim)), 1),
            fmt(ratio(ms(c.shim), ms(c.qemu)), 2),
            fmt(ratio(ms(c.shim), ms(c.qemu.saturating_sub(c.qemu_vcpu))), 2),
            fmt(ratio(l.frames as f64, l.calls() as f64), 2),
            fmt(per_picture, 2),
            fmt(ratio(p.encoded() as f64, l.frames as f64), 2),
        );
    }

    println!("\n### Throughput (per second of the window)\n");
    println!(
        "| codec | window s | guest pictures/s | QEMU calls/s (Scanout + Update) | MB/s of `ay` | \
         frames drawn/s | encoded/s | frames sent/dropped (client) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for p in phases {
        let l = &p.line;
        let s = p.window.as_secs_f64();
        let client = p
            .stats
            .clients
            .iter()
            .map(|c| format!("{}/{}", c.sent, c.dropped))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {} | {} | {} ({} + {}) | {} | {} | {} | {} |",
            p.codec,
            fmt(s, 1),
            p.guest_pictures
                .map_or("-".into(), |g| fmt(g as f64 / s, 1)),
            fmt(l.calls() as f64 / s, 1),
            fmt(l.scanouts as f64 / s, 1),
            fmt(l.updates as f64 / s, 1),
            fmt(l.ay_bytes() as f64 / 1e6 / s, 1),
            fmt(l.frames as f64 / s, 1),
            fmt(p.encoded() as f64 / s, 1),
            client
        );
    }

    println!("\n### Cost per frame drawn (CPU over the window and the drain)\n");
    println!(
        "| codec | copy µs/frame | copy µs/MB (picture, buffers) | shim CPU ms/frame | shim CPU − \
         copy, ms/encoded frame | QEMU CPU ms/frame (guest vCPU + rest) | QEMU rest µs/MB of `ay` | \
         client CPU ms/frame | others % |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in phases {
        let l = &p.line;
        let c = &p.cpu;
        let f = l.frames as f64;
        let per_mb = |t_ms: f64, b: u64| fmt(ratio(t_ms * 1e3, b as f64 / 1e6), 0);
        let rest = ms(c.qemu.saturating_sub(c.qemu_vcpu));
        println!(
            "| {} | {} | {} ({}, {}) | {} | {} | {} ({} + {}) | {} | {} | {} |",
            p.codec,
            fmt(ratio(l.copy_ms * 1e3, f), 0),
            per_mb(l.copy_ms, l.copied_bytes),
            per_mb(l.picture_ms, l.picture_bytes),
            per_mb(l.buffer_ms, l.buffer_bytes),
            fmt(ratio(ms(c.shim), f), 2),
            fmt(ratio(ms(c.shim) - l.copy_ms, p.encoded() as f64), 2),
            fmt(ratio(ms(c.qemu), f), 2),
            fmt(ratio(ms(c.qemu_vcpu), f), 2),
            fmt(ratio(rest, f), 2),
            per_mb(rest, l.ay_bytes()),
            fmt(ratio(ms(c.client), f), 2),
            fmt(c.others_pct, 0),
        );
    }

    println!("\n### Counters and CPU per codec\n");
    for p in phases {
        let l = &p.line;
        let c = &p.cpu;
        println!("{}, {} before the window:", p.codec, p.load_before);
        println!("```");
        println!("{}", p.report);
        println!(
            "window {:.2} s, CPU over {:.2} s: shim {:.0} ms, QEMU {:.0} ms (vCPU {:.0} ms), \
             remote-viewer + Xvfb {:.0} ms, dbus-daemon {:.0} ms, others {:.0} % of the machine",
            p.window.as_secs_f64(),
            c.span.as_secs_f64(),
            ms(c.shim),
            ms(c.qemu),
            ms(c.qemu_vcpu),
            ms(c.client),
            ms(c.dbus_daemon),
            c.others_pct
        );
        println!(
            "guest pictures {}; QEMU calls {} ({:.2} MB of ay each); copies {:.1} MB in {:.1} ms \
             = {:.2} GB/s (picture {:.2} GB/s, buffers {:.2} GB/s); updates merged {}",
            p.guest_pictures.map_or("-".into(), |g| g.to_string()),
            l.calls(),
            ratio(l.ay_bytes() as f64 / 1e6, l.calls() as f64),
            l.copied_bytes as f64 / 1e6,
            l.copy_ms,
            ratio(l.copied_bytes as f64, l.copy_ms * 1e6),
            ratio(l.picture_bytes as f64, l.picture_ms * 1e6),
            ratio(l.buffer_bytes as f64, l.buffer_ms * 1e6),
            l.merged,
        );
        let f = l.frames.max(1) as f64;
        let top = |v: &[(String, Duration)]| {
            v.iter()
                .take(8)
                .map(|(n, d)| format!("{n} {:.2}", ms(*d) / f))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("shim threads, CPU ms/frame: {}", top(&c.shim_threads));
        println!("QEMU threads, CPU ms/frame: {}", top(&c.qemu_threads));
        println!("```");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || common::quick_env("SPICE_SHIM_BENCH_QUICK");
    let window = if quick { QUICK_WINDOW } else { WINDOW };
    let codecs: Vec<String> = std::env::var("SPICE_SHIM_BENCH_CODECS")
        .unwrap_or_else(|_| "h264,mjpeg".into())
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let started = Instant::now();
    print_header(quick, window);

    let dir = TempDir::new("qemu-bench");
    let bus = DbusDaemon::start(&dir);
    // Named threads (`CPU 0/TCG` for the guest), so that the guest's time can be told apart.
    let mut vm = Qemu::builder(Guest::Linux)
        .arg("-name")
        .arg("qemu-dbus-bench,debug-threads=on")
        .kernel_arg(REDRAW)
        .start(&dir, &bus);
    let boot = vm.wait_redrawing();
    vm.execute("stop", None);
    eprintln!(
        "the guest started redrawing {:.1} s after QEMU started; paused",
        boot.as_secs_f64()
    );

    let mut phases = Vec::new();
    for codec in &codecs {
        eprintln!("measuring {codec} for {:.0} s …", window.as_secs_f64());
        phases.push(run_phase(&mut vm, &bus, codec, window));
    }
    vm.quit();
    print_report(&phases);
    println!(
        "\ntotal benchmark time: {:.0} s; at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    let missing: Vec<String> = phases.iter().flat_map(missing_figures).collect();
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("error: {m}");
        }
        std::process::exit(1);
    }
}

/// The figures of a phase that were not produced (the cookies were checked when the shim
/// exited). Their size is never judged.
fn missing_figures(p: &Phase) -> Vec<String> {
    let mut out = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            out.push(format!("{}: no {what}", p.codec));
        }
    };
    need(
        p.line.updates + p.line.scanouts > 0,
        "QEMU Scanout or Update call counted",
    );
    need(p.line.frames > 0, "frame drawn");
    need(p.encoded() > 0, "frame encoded");
    need(
        p.guest_pictures.is_some_and(|g| g > 0),
        "guest picture counted",
    );
    need(p.cpu.shim > Duration::ZERO, "shim CPU time");
    need(p.cpu.qemu > Duration::ZERO, "QEMU CPU time");
    need(!p.stats.clients.is_empty(), "client counters");
    out
}
