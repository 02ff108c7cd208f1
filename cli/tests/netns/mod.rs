//! A real bottleneck for rate control: a network namespace whose loopback is shaped with a token
//! bucket (`tc qdisc … tbf`), with `spice-shim serve` and the spice-gtk client
//! (`latency_client.py`) both inside it, so everything between them crosses the shaper.
//!
//! The loopback's MTU is set to 1500: with its default of 65536 TCP sends 64 KiB segments,
//! which a token bucket smaller than that drops whole (a larger bucket would let 64 KiB bursts
//! through at once); at 1500 the shaper sees Ethernet-sized packets, as on a real link. Both
//! directions cross the same shaper, so the client's ACKs and reports (a few % of the
//! server's bytes) share the rate.
//!
//! Needs root and iproute2 (`ip netns`, `tc` with the `tbf` qdisc); without them [`Netns::new`]
//! fails with a message that says so. Used by `tests/shaped_link.rs` and `benches/shaped.rs`,
//! which include `util` too.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::util::{ChildGuard, TempDir};

/// The token bucket: at most this many bytes go out at once above the rate (about three
/// 1514-byte frames: 10 ms at 4 Mbit/s, 40 ms at 1 Mbit/s).
pub const TBF_BURST: &str = "5kb";
/// The bottleneck's queue: packets that would wait longer than this are dropped (tail drop),
/// as in a modem or router buffer.
pub const TBF_LATENCY: &str = "100ms";
/// Where the server listens inside the namespace (its own port space).
pub const PORT: u16 = 5930;
/// The real spice-gtk client: python3-gi with SpiceClientGLib.
pub const PYTHON: &str = "/usr/bin/python3";
pub const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/latency_client.py");

/// A network namespace, deleted (with its qdiscs and addresses) on drop. Processes started in
/// it must be stopped before (declare their guards after the namespace's).
pub struct Netns {
    name: String,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// A new namespace named `<tag>-<pid>-<n>` with its loopback up at MTU 1500.
    pub fn new(tag: &str) -> Result<Self, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let need = "a shaped link needs root and iproute2 (`ip netns add`, `tc qdisc … tbf`)";
        run(Command::new("ip").args(["netns", "add", &name]))
            .map_err(|e| format!("{need}: {e}"))?;
        let ns = Self { name };
        run(&mut ns.exec_cmd("ip", &["link", "set", "lo", "mtu", "1500", "up"]))
            .map_err(|e| format!("{need}: {e}"))?;
        // The shaper must work here too, or the test would measure an unshaped link.
        ns.shape(Some(1000)).map_err(|e| format!("{need}: {e}"))?;
        ns.shape(None).map_err(|e| format!("{need}: {e}"))?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args…` run inside the namespace.
    pub fn exec_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Shapes the loopback to `kbit` kbit/s (tbf, [`TBF_BURST`], [`TBF_LATENCY`]), or lifts the
    /// shaping (`None`). Takes effect at once, on a running connection too.
    pub fn shape(&self, kbit: Option<u32>) -> Result<(), String> {
        match kbit {
            Some(k) => {
                let rate = format!("{k}kbit");
                run(&mut self.exec_cmd(
                    "tc",
                    &[
                        "qdisc",
                        "replace",
                        "dev",
                        "lo",
                        "root",
                        "tbf",
                        "rate",
                        &rate,
                        "burst",
                        TBF_BURST,
                        "latency",
                        TBF_LATENCY,
                    ],
                ))?;
            }
            None => {
                if self.qdisc()?.contains("tbf") {
                    run(&mut self.exec_cmd("tc", &["qdisc", "del", "dev", "lo", "root"]))?;
                }
            }
        }
        Ok(())
    }

    /// Sets a sysctl of the namespace (`net.*` ones are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        run(&mut self.exec_cmd("sysctl", &["-q", "-w", &format!("{key}={value}")])).map(|_| ())
    }

    /// `tc -s qdisc show dev lo`.
    pub fn qdisc(&self) -> Result<String, String> {
        run(&mut self.exec_cmd("tc", &["-s", "qdisc", "show", "dev", "lo"]))
    }

    /// Packets the shaper dropped so far (0 when unshaped).
    pub fn qdisc_drops(&self) -> u64 {
        let s = self.qdisc().unwrap_or_default();
        s.split("dropped ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("cannot remove network namespace {}: {e}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server and the client

/// `spice-shim serve` inside `ns` on [`PORT`], with `--stats-every` and `--draw-log`; `extra`
/// adds options (pattern, pipelines…). Waits until it listens.
pub fn start_serve(ns: &Netns, dir: &TempDir, stats_every: f64, extra: &[&str]) -> ChildGuard {
    let draws = draw_log_path(dir);
    let mut cmd = ns.exec_cmd(env!("CARGO_BIN_EXE_spice-shim"), &["serve"]);
    cmd.args(["--listen", &format!("127.0.0.1:{PORT}")])
        .args(["--stats-every", &stats_every.to_string()])
        .arg("--draw-log")
        .arg(&draws)
        .args(extra);
    let mut serve = ChildGuard::spawn("serve", cmd, dir).sigterm_on_drop(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serve.stderr().contains("listening on spice://") {
        serve.assert_running("before listening");
        assert!(
            Instant::now() < deadline,
            "the server did not listen within 30 s\n{}",
            serve.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    serve
}

/// The spice-gtk client inside `ns`, for at most `duration` (stop it with SIGTERM sooner).
pub fn start_client(ns: &Netns, dir: &TempDir, duration: Duration) -> ChildGuard {
    let port = PORT.to_string();
    let secs = format!("{:.1}", duration.as_secs_f64());
    let cmd = ns.exec_cmd(
        PYTHON,
        &[
            CLIENT,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--duration",
            &secs,
        ],
    );
    ChildGuard::spawn("client", cmd, dir).sigterm_on_drop(Duration::from_secs(5))
}

pub fn draw_log_path(dir: &TempDir) -> PathBuf {
    dir.join("draws.txt")
}

/// Stops a child with SIGTERM; its exit status (`None` if it had to be killed).
pub fn stop(child: &mut ChildGuard, grace: Duration) -> Option<std::process::ExitStatus> {
    child.signal(Signal::TERM);
    let status = child.wait_timeout(grace);
    if status.is_none() {
        child.kill();
    }
    status
}

/// The project's x264 pipeline with film grain added before the encoder (effectv's `agingtv`,
/// colour ageing only: every pixel gets fresh noise every frame). The encoder then never has
/// bits to spare: at any bitrate its stream fills what it budgets, as busy footage would, and
/// follows every change rate control makes.
///
/// x264 budgets the bitrate per frame at the nominal frame rate of its caps, which
/// spicedmabufsrc sets to 60 by default: a 30 fps guest then gets half the target.
/// `nominal_fps` sets the source's `framerate` (the guest's rate) so that the stream is the
/// target; `None` keeps the project's pipeline as it is. Written as `h264.pipeline` in a new
/// directory under `dir`, which is returned for `--pipelines`.
pub fn write_grain_pipeline(dir: &Path, workspace: &Path, nominal_fps: Option<u32>) -> PathBuf {
    let x264 = workspace.join("pipelines/h264.d/90-x264.pipeline");
    let mut text = std::fs::read_to_string(&x264)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", x264.display()));
    let (anchor, src) = ("! videoconvert n-threads=2", "spicedmabufsrc name=src");
    assert!(
        text.contains(anchor) && text.contains(src),
        "unexpected x264 pipeline text in {}",
        x264.display()
    );
    text = text.replacen(
        anchor,
        &format!(
            "! videoconvert ! video/x-raw,format=BGRx\n  \
             ! agingtv scratch-lines=0 dusts=false pits=false\n  {anchor}"
        ),
        1,
    );
    if let Some(fps) = nominal_fps {
        text = text.replacen(src, &format!("{src} framerate={fps}/1"), 1);
    }
    let pipelines = dir.join(match nominal_fps {
        Some(fps) => format!("grain-{fps}"),
        None => "grain".into(),
    });
    std::fs::create_dir_all(&pipelines).expect("pipelines directory");
    std::fs::write(pipelines.join("h264.pipeline"), text).expect("h264.pipeline");
    pipelines
}

// ---------------------------------------------------------------------------------------------
// What they print

/// One `stats …` line of `spice-shim serve --stats-every`.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the server started; CLOCK_MONOTONIC seconds.
    pub t: f64,
    pub mono: f64,
    pub drawn: u64,
    pub returned: u64,
    /// The h264 pipeline's bitrate (rate control's target), kbit/s.
    pub kbps: Option<u32>,
    pub encoded: u64,
    /// The newest h264 client's counters.
    pub client: Option<ClientSample>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ClientSample {
    pub sent: u64,
    pub dropped: u64,
    pub bytes: u64,
    pub kbps: Option<u32>,
}

/// Parses a `stats key=value …` line.
pub fn parse_stats(line: &str) -> Option<Sample> {
    let rest = line.strip_prefix("stats ")?;
    let kv: HashMap<&str, &str> = rest
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect();
    let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
    let mut s = Sample {
        t: num("t")?,
        mono: num("mono")?,
        drawn: num("drawn")? as u64,
        returned: num("returned")? as u64,
        kbps: num("h264.kbps").map(|v| v as u32),
        encoded: num("h264.encoded").unwrap_or(0.0) as u64,
        client: None,
    };
    let newest = kv
        .iter()
        .filter(|(k, v)| k.ends_with(".codec") && **v == "h264")
        .filter_map(|(k, _)| k.strip_prefix("client")?.strip_suffix(".codec"))
        .filter_map(|id| id.parse::<u64>().ok())
        .max();
    if let Some(id) = newest {
        let c = |f: &str| num(&format!("client{id}.{f}"));
        s.client = Some(ClientSample {
            sent: c("sent").unwrap_or(0.0) as u64,
            dropped: c("dropped").unwrap_or(0.0) as u64,
            bytes: c("bytes").unwrap_or(0.0) as u64,
            kbps: c("kbps").map(|v| v as u32),
        });
    }
    Some(s)
}

/// Every stats line the server printed so far.
pub fn samples(serve: &ChildGuard) -> Vec<Sample> {
    serve.stdout().lines().filter_map(parse_stats).collect()
}

/// `frames drawn: N, cookies returned: M` from the server's exit report.
pub fn cookies(serve: &ChildGuard) -> Option<(u64, u64)> {
    let out = serve.stdout();
    let line = out.lines().find(|l| l.starts_with("frames drawn: "))?;
    let (d, r) = line
        .strip_prefix("frames drawn: ")?
        .split_once(", cookies returned: ")?;
    Some((d.trim().parse().ok()?, r.trim().parse().ok()?))
}

/// The client's `FRAME T counter centre` lines as (CLOCK_MONOTONIC seconds, counter).
pub fn frames(client: &ChildGuard) -> Vec<(f64, u32)> {
    client
        .stdout()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                ["FRAME", t, c, _] => Some((t.parse().ok()?, c.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// The server's `--draw-log`: when each frame number was drawn (CLOCK_MONOTONIC seconds).
pub fn draw_times(dir: &TempDir) -> Vec<(u64, f64)> {
    std::fs::read_to_string(draw_log_path(dir))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, t) = l.split_once(' ')?;
            Some((k.parse().ok()?, t.trim().parse().ok()?))
        })
        .collect()
}

/// CLOCK_MONOTONIC in seconds, the clock of the client's and the server's time stamps.
pub fn mono() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
