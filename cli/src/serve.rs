//! `spice-shim serve`: a SPICE server fed by the built-in animated test guest.
//!
//! The guest behaves as a real host must: it renders into a ring of three memfd scanouts, calls
//! `gl_scanout` when it switches buffers and `gl_draw` with a cookie per frame, and reuses a
//! buffer only after that buffer's cookie came back.
//!
//! `--stats-every` prints the counters periodically on stdout ([`StatsPrinter`], one
//! `stats key=value …` line per interval) and `--draw-log` records when each frame was drawn,
//! so that a client reading the counter pattern can measure glass-to-glass latency.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use gstspicedmabuf::Rect;
use spice_shim_core::proto::CursorShape;
use test_guest::{ARROW_SIZE, Guest, Pattern, arrow, pointer_path};

use crate::feed::parse_size;
use spice_shim_core::log;
use spice_shim_core::{Shim, ShimStats};

use crate::server_args::ServerArgs;

/// Options of `spice-shim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Test pattern: bars, counter, desktop, video or solid:RRGGBB.
    #[arg(long, default_value = "bars")]
    pub pattern: String,
    /// Guest size, WxH.
    #[arg(long, default_value = "1280x720")]
    pub size: String,
    /// Guest frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Stop drawing after this many frames (0 = never); the last picture stays on show.
    #[arg(long, default_value_t = 0)]
    pub frames: u64,
    /// Store frames bottom-up, as a GL renderer does (scanouts announced with y0_top false);
    /// clients must still show them upright.
    #[arg(long)]
    pub bottom_up: bool,
    /// The guest's pointer: `arrow` (a 32x32 arrow moving round the screen, drawn by the
    /// clients over the video) or `none`.
    #[arg(long, default_value = "arrow", value_parser = ["arrow", "none"])]
    pub cursor: String,
    /// Exit after this many seconds (0 = run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Print the counters on stdout every this many seconds (0 = never), one line each:
    /// `stats t=S mono=S drawn=N returned=N`, then per codec `CODEC.kbps=K` (the bitrate rate
    /// control set on its running pipeline, kbit/s) and `CODEC.encoded=N` (frames), then per
    /// client `clientID.codec=C clientID.sent=N clientID.dropped=N clientID.bytes=N
    /// clientID.kbps=K clientID.connected=0|1` (frames; bytes written to its display channel;
    /// its own bitrate target). `t` is seconds since the start, `mono` CLOCK_MONOTONIC seconds.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS", value_parser = parse_interval)]
    pub stats_every: f64,
    /// Write one line per frame drawn to FILE: `FRAME_NO MONO`, the frame's number (the value
    /// `--pattern counter` stamps) and when it was drawn (CLOCK_MONOTONIC, seconds).
    #[arg(long, value_name = "FILE")]
    pub draw_log: Option<PathBuf>,
}

/// `--stats-every`: 0 (off) or 0.05..=3600 seconds.
pub fn parse_interval(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| *v == 0.0 || (0.05..=3600.0).contains(v))
        .ok_or_else(|| format!("expected 0 or 0.05..=3600 seconds, got '{s}'"))
}

/// CLOCK_MONOTONIC in seconds (the clock of `Instant`, shared by every process of the host).
pub fn monotonic_secs() -> f64 {
    gst::glib::monotonic_time() as f64 * 1e-6
}

/// One `stats …` line (see `--stats-every`), `elapsed` seconds after the start.
pub fn stats_line(elapsed: Duration, stats: &ShimStats) -> String {
    use std::fmt::Write as _;
    let mut line = format!(
        "stats t={:.3} mono={:.6} drawn={} returned={}",
        elapsed.as_secs_f64(),
        monotonic_secs(),
        stats.ledger.drawn,
        stats.ledger.returned
    );
    for (codec, kbps) in &stats.bitrates {
        let _ = write!(line, " {}.kbps={kbps}", codec.name());
    }
    for (codec, n) in &stats.encoded {
        let _ = write!(line, " {}.encoded={n}", codec.name());
    }
    for c in &stats.clients {
        let id = c.id;
        let _ = write!(
            line,
            " client{id}.codec={} client{id}.sent={} client{id}.dropped={} client{id}.bytes={}",
            c.codec.map_or("none", |c| c.name()),
            c.sent,
            c.dropped,
            c.bytes
        );
        if let Some(kbps) = c.target_kbps {
            let _ = write!(line, " client{id}.kbps={kbps}");
        }
        let _ = write!(line, " client{id}.connected={}", u8::from(c.connected));
    }
    line
}

/// Prints a [`stats_line`] on stdout every interval (`--stats-every`).
pub struct StatsPrinter {
    every: Option<Duration>,
    started: Instant,
    next: Instant,
}

impl StatsPrinter {
    /// Every `seconds` from now (0: never).
    pub fn new(seconds: f64) -> Self {
        let every = (seconds > 0.0).then(|| Duration::from_secs_f64(seconds));
        let started = Instant::now();
        Self {
            every,
            started,
            next: started + every.unwrap_or_default(),
        }
    }

    /// How long until the next line is due (`None` when off).
    pub fn until_due(&self) -> Option<Duration> {
        self.every
            .map(|_| self.next.saturating_duration_since(Instant::now()))
    }

    /// Prints a line if one is due.
    pub fn poll(&mut self, shim: &Shim) {
        let Some(every) = self.every else { return };
        let now = Instant::now();
        if now < self.next {
            return;
        }
        println!("{}", stats_line(now - self.started, &shim.stats()));
        self.next += every;
        if self.next <= now {
            self.next = now + every;
        }
    }
}

/// `--draw-log`: when each frame was drawn.
struct DrawLog {
    out: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl DrawLog {
    fn create(path: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&path)
            .with_context(|| format!("--draw-log {}", path.display()))?;
        Ok(Self {
            out: std::io::BufWriter::new(file),
            path,
        })
    }

    fn record(&mut self, frame_no: u64) -> anyhow::Result<()> {
        writeln!(self.out, "{frame_no} {:.6}", monotonic_secs())
            .with_context(|| format!("writing {}", self.path.display()))
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Runs the server and the guest until interrupted or `--duration` elapsed; prints the counters.
pub fn run(opts: ServeOptions) -> anyhow::Result<()> {
    log::set_verbose(true);
    let (width, height) = parse_size(&opts.size).map_err(anyhow::Error::msg)?;
    let pattern: Pattern = opts
        .pattern
        .parse()
        .map_err(|e| anyhow::anyhow!("--pattern: {e}"))?;
    if opts.fps == 0 || opts.fps > 240 {
        anyhow::bail!("--fps must be 1..=240");
    }
    let config = opts.server.to_config()?;
    let mut draw_log = opts.draw_log.clone().map(DrawLog::create).transpose()?;

    let (done_tx, done_rx) = mpsc::channel::<u64>();
    let shim = Shim::start(
        config,
        Box::new(move |cookie| {
            let _ = done_tx.send(cookie);
        }),
    )
    .context("starting the server")?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    log::info(&format!(
        "test guest: {width}x{height} {pattern} at {} fps{}",
        opts.fps,
        if opts.frames > 0 {
            format!(", {} frames then idle", opts.frames)
        } else {
            String::new()
        }
    ));

    let cursor = opts.cursor == "arrow";
    if cursor {
        let shape = CursorShape::new(ARROW_SIZE, ARROW_SIZE, 0, 0, arrow())
            .context("the test guest's arrow")?;
        shim.cursor_define(shape);
    }
    let mut ring =
        Guest::new(width, height, None, pattern, 3).context("creating the guest buffers")?;
    ring.set_bottom_up(opts.bottom_up);
    let guest = Arc::new(Mutex::new(ring));
    let started = Instant::now();
    let mut printer = StatsPrinter::new(opts.stats_every);
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.fps));
    let mut next_tick = Instant::now();
    let mut frame_no = 0u64;
    let mut current: Option<usize> = None;
    let mut cookie = 1u64;
    while !stop.load(Ordering::Relaxed) {
        if opts.duration > 0 && started.elapsed() >= Duration::from_secs(opts.duration) {
            break;
        }
        // Returned cookies free their buffers.
        while let Ok(c) = done_rx.try_recv() {
            guest.lock().unwrap().release(c);
        }
        printer.poll(&shim);
        let now = Instant::now();
        if now < next_tick {
            let nap = (next_tick - now).min(Duration::from_millis(20));
            std::thread::sleep(printer.until_due().map_or(nap, |d| d.min(nap)));
            continue;
        }
        next_tick += period;
        if next_tick + period < Instant::now() {
            next_tick = Instant::now() + period;
        }
        if opts.frames > 0 && frame_no >= opts.frames {
            continue;
        }
        let mut g = guest.lock().unwrap();
        let Some(idx) = g.next_free() else {
            // Every buffer is still in use: skip this tick, as a host would.
            continue;
        };
        g.render_into(idx, frame_no)?;
        if current != Some(idx) {
            let buf = g.buffer(idx).expect("index from next_free");
            let mut info = crate::guest::scanout_info(buf);
            info.y0_top = !opts.bottom_up;
            shim.gl_scanout(Some(info), vec![buf.dup_fd()?])?;
            current = Some(idx);
        }
        g.mark_busy(idx, cookie)?;
        drop(g);
        if cursor {
            let (x, y) = pointer_path(frame_no, width, height);
            shim.mouse_set(x, y, true);
        }
        if let Some(l) = draw_log.as_mut() {
            l.record(frame_no)?;
        }
        shim.gl_draw(
            Rect {
                x: 0,
                y: 0,
                w: width,
                h: height,
            },
            cookie,
        );
        cookie += 1;
        frame_no += 1;
    }
    log::info("stopping");
    let stats = shim.shutdown();
    print!("{stats}");
    if let Some(l) = draw_log {
        l.finish()?;
    }
    if stats.ledger.returned != stats.ledger.drawn {
        anyhow::bail!(
            "cookie mismatch: {} drawn, {} returned",
            stats.ledger.drawn,
            stats.ledger.returned
        );
    }
    Ok(())
}
