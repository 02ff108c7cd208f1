//! `spice-shim serve`: a SPICE server fed by the built-in animated test guest.
//!
//! The guest behaves as a real host must: it renders into a ring of three memfd scanouts, calls
//! `gl_scanout` when it switches buffers and `gl_draw` with a cookie per frame, and reuses a
//! buffer only after that buffer's cookie came back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use gstspicedmabuf::Rect;
use spice_shim_core::proto::CursorShape;
use test_guest::{ARROW_SIZE, Guest, Pattern, arrow, pointer_path};

use crate::feed::parse_size;
use spice_shim_core::Shim;
use spice_shim_core::log;

use crate::server_args::ServerArgs;

/// Options of `spice-shim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Test pattern: bars, counter or solid:RRGGBB.
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
        let now = Instant::now();
        if now < next_tick {
            std::thread::sleep((next_tick - now).min(Duration::from_millis(20)));
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
    if stats.ledger.returned != stats.ledger.drawn {
        anyhow::bail!(
            "cookie mismatch: {} drawn, {} returned",
            stats.ledger.drawn,
            stats.ledger.returned
        );
    }
    Ok(())
}
