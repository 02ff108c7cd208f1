//! Workloads benchmark: what realistic guest pictures cost to draw and to encode, against the
//! nearly static `counter` test pattern.
//!
//! Patterns: `counter` (colour bars, a small moving square, a frame counter), `desktop` (a log
//! scrolling one line every 8 frames, a window dragged across the screen, a blinking caret,
//! a ticking clock) and `video` (a camera panning and zooming over a landscape, moving
//! objects). For each pattern and codec (h264, vp8 and mjpeg at 1280x720 and 1920x1080; h265
//! and vp9 at 1280x720), frames go through the real pipeline text (`pipelines/<codec>.pipeline`
//! or the first usable file of `pipelines/<codec>.d/`), fed in-process to spicedmabufsrc from
//! a ring of 3 memfds, as the shim does, with the buffers' timestamps set to k/30 s (a 30 fps
//! timeline, so the encoders' rate control sees 30 fps) and the next draw pushed once the
//! previous one left the source (no frame is dropped, so every run encodes the same pictures).
//! The guest redraws only the damaged part of a buffer that holds an older frame (for the
//! desktop), as `test_guest::Guest` does in `spice-shim serve`, and each draw reports the
//! frame's damage bounds.
//!
//! Reported per case: KiB per frame (mean and p95 of the frames after the first, and the first
//! frame, the keyframe, on its own), kbit/s at 30 fps, pipeline CPU per frame (whole-process
//! CPU time during the frames after the first, minus the time the guest spent drawing:
//! spicedmabufsrc, videoconvert, the encoder and the appsink), draw time per frame (thread CPU
//! time of the guest drawing), and the ratios to the `counter` pattern, which come first.
//! It also measures the drawing alone at 1280x720 and 1920x1080.
//!
//! Run with `cargo bench -p spice-shim-cli --bench workloads` (about a minute). Without the
//! `--bench` argument (for example under `cargo test --benches`) or with
//! `SPICE_SHIM_BENCH_QUICK=1` it runs a short smoke version (15 frames, 1280x720, h264, vp8 and
//! mjpeg) that checks only that every figure was produced and that every draw came back.
//! `WORKLOADS_BENCH_CODECS=h264,vp8` restricts the codecs. Speed is never asserted.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstspicedmabuf::{DrawRelease, DrawStatus, Rect, Scanout, SpiceDmabufSrc};
use rustix::time::{ClockId, clock_gettime};
use spice_shim_core::encoder::probe;
use spice_shim_core::pipeline_files::choose;
use spice_shim_core::proto::codec::VideoCodec;
use test_guest::{Guest, GuestBuffer, Pattern, damage_bounds, render, render_update};

use common::{load_average, machine_busy, nproc, pipelines_dir, proc_line, utc_now, wait_until};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench workloads";
const RING: usize = 3;
const FPS: u64 = 30;
const CASE_TIMEOUT: Duration = Duration::from_secs(180);
const PATTERNS: [Pattern; 3] = [Pattern::Counter, Pattern::Desktop, Pattern::Video];
const HD: (u32, u32) = (1280, 720);
const FULL_HD: (u32, u32) = (1920, 1080);

/// How much runs.
#[derive(Clone, Copy)]
struct Scale {
    quick: bool,
    /// Frames encoded per case, the keyframe included.
    frames: u64,
    /// Frames drawn per case of the drawing table.
    draw_frames: u64,
}

const FULL: Scale = Scale {
    quick: false,
    frames: 150,
    draw_frames: 150,
};

const QUICK: Scale = Scale {
    quick: true,
    frames: 15,
    draw_frames: 15,
};

/// The codecs and sizes measured: h264, vp8 and mjpeg at both sizes, h265 and vp9 at 720p
/// (in quick mode: h264, vp8 and mjpeg at 720p).
fn cases(scale: Scale) -> Vec<(VideoCodec, (u32, u32))> {
    let only = std::env::var("WORKLOADS_BENCH_CODECS").ok();
    let wanted = |c: VideoCodec| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x.trim() == c.name()))
    };
    let mut out = Vec::new();
    for codec in [VideoCodec::H264, VideoCodec::Vp8, VideoCodec::Mjpeg] {
        out.push((codec, HD));
        if !scale.quick {
            out.push((codec, FULL_HD));
        }
    }
    if !scale.quick {
        out.push((VideoCodec::H265, HD));
        out.push((VideoCodec::Vp9, HD));
    }
    out.retain(|(c, _)| wanted(*c));
    out
}

// ---------------------------------------------------------------------------------------------
// Clocks and problems.

fn cpu_time(clock: ClockId) -> Duration {
    let t = clock_gettime(clock);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Figures that could not be produced and draws without a release, reported at the end: any of
/// them makes the run fail (the figures themselves are never judged).
static PROBLEMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn problem(what: String) {
    PROBLEMS.lock().unwrap().push(what);
}

fn size_name((w, h): (u32, u32)) -> String {
    format!("{w}x{h}")
}

fn print_header(scale: Scale) {
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
    println!("load:      {}", load_average());
    if scale.quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Part 1: drawing alone.

/// Drawing cost of one pattern at one size.
struct DrawCost {
    /// The first frame, which for `video` builds the landscape texture.
    first: Duration,
    /// Thread CPU per frame drawing every pixel.
    full: Duration,
    /// Thread CPU per frame through a `Guest` ring of 3, as `spice-shim serve` draws.
    ring: Duration,
    /// Mean share of the picture inside each frame's damage bounds, in percent.
    damage_percent: f64,
    /// Mean share of the pixels that differ from the frame before, in percent.
    changed_percent: f64,
}

/// Number of XRGB8888 pixels that differ between two pictures of the same layout.
fn changed_pixels(a: &[u8], b: &[u8]) -> u64 {
    a.chunks_exact(4)
        .zip(b.chunks_exact(4))
        .filter(|(p, q)| p != q)
        .count() as u64
}

fn draw_cost(pattern: Pattern, (w, h): (u32, u32), frames: u64) -> Result<DrawCost, String> {
    let e = |e: test_guest::Error| e.to_string();
    let mut buf = GuestBuffer::new(w, h).map_err(e)?;
    let t = cpu_time(ClockId::ThreadCPUTime);
    render(pattern, 0, &mut buf);
    let first = cpu_time(ClockId::ThreadCPUTime) - t;
    let mut full = Duration::ZERO;
    let mut changed = 0u64;
    let mut previous = buf.pixels().to_vec();
    for f in 1..=frames {
        let t = cpu_time(ClockId::ThreadCPUTime);
        render(pattern, f, &mut buf);
        full += cpu_time(ClockId::ThreadCPUTime) - t;
        changed += changed_pixels(&previous, buf.pixels());
        previous.copy_from_slice(buf.pixels());
    }
    let full = full / frames as u32;
    let changed_percent = 100.0 * changed as f64 / (frames as f64 * f64::from(w) * f64::from(h));
    let mut guest = Guest::new(w, h, None, pattern, RING).map_err(e)?;
    // The first lap fills the ring; the steady state is measured.
    for f in 0..RING as u64 {
        guest.render_into(f as usize % RING, f).map_err(e)?;
    }
    let t = cpu_time(ClockId::ThreadCPUTime);
    for f in RING as u64..RING as u64 + frames {
        guest.render_into(f as usize % RING, f).map_err(e)?;
    }
    let ring = (cpu_time(ClockId::ThreadCPUTime) - t) / frames as u32;
    let area: u64 = (1..=frames)
        .filter_map(|f| damage_bounds(pattern, f - 1, f, w, h))
        .map(|r| r.area())
        .sum();
    let damage_percent = 100.0 * area as f64 / (frames as f64 * f64::from(w) * f64::from(h));
    Ok(DrawCost {
        first,
        full,
        ring,
        damage_percent,
        changed_percent,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn part1(scale: Scale) {
    println!("== 1. Drawing the patterns (no encoder), thread CPU time per frame");
    println!(
        "   full: every pixel drawn; ring: through a test_guest::Guest ring of 3 memfds, which \
         redraws only what changed since the buffer's last frame (the desktop's damage), as \
         `spice-shim serve` does; damage: each frame's damage bounding box against the frame \
         before, mean share of the picture; changed: mean share of the pixels that differ from \
         the frame before; {} frames per case",
        scale.draw_frames
    );
    println!();
    println!(
        "| {:<8} | {:<9} | {:>14} | {:>13} | {:>13} | {:>9} | {:>10} | {:>10} |",
        "pattern",
        "size",
        "first frame ms",
        "full ms/frame",
        "ring ms/frame",
        "damage %",
        "changed %",
        "full fps"
    );
    println!(
        "|{:-<10}|{:-<11}|{:->16}|{:->15}|{:->15}|{:->11}|{:->12}|{:->12}|",
        "", "", "", "", "", "", "", ""
    );
    for pattern in PATTERNS {
        for size in [HD, FULL_HD] {
            match draw_cost(pattern, size, scale.draw_frames) {
                Ok(c) => println!(
                    "| {:<8} | {:<9} | {:>14.1} | {:>13.2} | {:>13.2} | {:>9.1} | {:>10.1} | \
                     {:>10.0} |",
                    pattern.to_string(),
                    size_name(size),
                    ms(c.first),
                    ms(c.full),
                    ms(c.ring),
                    c.damage_percent,
                    c.changed_percent,
                    1000.0 / ms(c.full).max(1e-3)
                ),
                Err(e) => {
                    problem(format!("drawing {pattern} {}: {e}", size_name(size)));
                    println!("| {pattern:<8} | {:<9} | failed: {e}", size_name(size));
                }
            }
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Part 2: encoding.

/// Encoded samples as they reach the appsink: size and whether it is a keyframe.
#[derive(Default)]
struct Samples {
    list: Mutex<Vec<(usize, bool)>>,
    count: AtomicU64,
}

impl Samples {
    fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// The ring shared by the guest thread and the release callbacks.
#[derive(Default)]
struct RingState {
    busy: [bool; RING],
    draws: u64,
    /// Draws the source's streaming thread took.
    taken: u64,
    released: u64,
    dropped: u64,
    refused: u64,
}

#[derive(Default)]
struct Ring {
    state: Mutex<RingState>,
    cond: Condvar,
    stop: AtomicBool,
    /// Thread CPU time the guest spent drawing, and the number of frames drawn.
    draw_ns: AtomicU64,
    drawn: AtomicU64,
}

/// Counts the samples of the appsink named `sink`, as the shim's encoder does (no sync).
fn record_appsink(pipeline: &gst::Pipeline, samples: &Arc<Samples>) -> Result<(), String> {
    let sink = pipeline
        .by_name("sink")
        .ok_or("no element named 'sink'")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| "'sink' is not an appsink")?;
    sink.set_property("sync", false);
    sink.set_property("max-buffers", 4u32);
    sink.set_property("enable-last-sample", false);
    let samples = samples.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let (size, key) = sample.buffer().map_or((0, false), |b| {
                    (b.size(), !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
                });
                samples.list.lock().unwrap().push((size, key));
                samples.count.fetch_add(1, Ordering::Release);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}

/// Sets buffer k's timestamp to k/30 s as it leaves the source, and counts it as taken.
fn retime_and_count(src: &SpiceDmabufSrc, ring: &Arc<Ring>) {
    let pad = src.static_pad("src").expect("source pad");
    let ring = ring.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let k = {
            let mut st = ring.state.lock().unwrap();
            st.taken += 1;
            st.taken - 1
        };
        ring.cond.notify_all();
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(k * 1_000_000_000 / FPS));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / FPS));
        }
        gst::PadProbeReturn::Ok
    });
}

/// Waits for a free ring buffer while no earlier draw is still waiting for the streaming
/// thread (the source keeps one; a newer draw would drop it). `None` once stopped.
fn next_buffer(ring: &Ring, next: usize) -> Option<usize> {
    let mut st = ring.state.lock().unwrap();
    loop {
        if ring.stop.load(Ordering::Acquire) {
            return None;
        }
        let free = (0..RING).map(|k| (next + k) % RING).find(|&i| !st.busy[i]);
        let waiting = st.draws - st.taken - st.dropped - st.refused;
        if waiting == 0
            && let Some(i) = free
        {
            st.busy[i] = true;
            st.draws += 1;
            return Some(i);
        }
        st = ring
            .cond
            .wait_timeout(st, Duration::from_millis(50))
            .unwrap()
            .0;
    }
}

/// The guest: draws frame after frame of `pattern` into the ring (only the damage when the
/// buffer holds an older frame), announces the buffer as the scanout and pushes a draw with
/// the frame's damage bounds, until stopped.
fn spawn_guest(
    src: SpiceDmabufSrc,
    mut bufs: Vec<GuestBuffer>,
    pattern: Pattern,
    ring: Arc<Ring>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let (w, h) = (bufs[0].width(), bufs[0].height());
        let mut holds: [Option<u64>; RING] = [None; RING];
        let mut next = 0usize;
        for frame_no in 0u64.. {
            let Some(idx) = next_buffer(&ring, next) else {
                return;
            };
            next = (idx + 1) % RING;
            let t = cpu_time(ClockId::ThreadCPUTime);
            match holds[idx] {
                Some(from) => render_update(pattern, from, frame_no, &mut bufs[idx]),
                None => render(pattern, frame_no, &mut bufs[idx]),
            }
            holds[idx] = Some(frame_no);
            let spent = cpu_time(ClockId::ThreadCPUTime) - t;
            ring.draw_ns
                .fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
            ring.drawn.fetch_add(1, Ordering::Relaxed);
            let fd = bufs[idx].dup_fd().expect("dup");
            let scanout = Scanout::new(spice_shim_cli::guest::scanout_info(&bufs[idx]), vec![fd])
                .expect("scanout");
            src.push_scanout(Some(Arc::new(scanout)));
            let damage = frame_no
                .checked_sub(1)
                .and_then(|prev| damage_bounds(pattern, prev, frame_no, w, h))
                .unwrap_or(test_guest::Rect::full(w, h));
            let r = ring.clone();
            let release = DrawRelease::new(frame_no, move |_, status| {
                let mut st = r.state.lock().unwrap();
                st.busy[idx] = false;
                match status {
                    DrawStatus::Released => st.released += 1,
                    DrawStatus::Dropped => st.dropped += 1,
                    DrawStatus::Refused => st.refused += 1,
                }
                drop(st);
                r.cond.notify_all();
            });
            let rect = Rect {
                x: damage.x,
                y: damage.y,
                w: damage.width,
                h: damage.height,
            };
            let _ = src.push_draw(rect, release);
        }
    })
}

/// Stops the guest and the pipeline; returns the release bookkeeping and whether every draw
/// came back exactly once (released, dropped or refused).
fn stop_case(pipeline: &gst::Pipeline, ring: &Ring, guest: JoinHandle<()>) -> (String, bool) {
    ring.stop.store(true, Ordering::Release);
    ring.cond.notify_all();
    let _ = guest.join();
    let _ = pipeline.set_state(gst::State::Null);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = ring.state.lock().unwrap();
        let done = st.released + st.dropped + st.refused;
        if done == st.draws || Instant::now() > deadline {
            let note = format!(
                "draws {} released {} dropped {} refused {}",
                st.draws, st.released, st.dropped, st.refused
            );
            return (note, done == st.draws);
        }
        drop(st);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// CPU and time figures at one instant of a case.
struct Snapshot {
    t: Instant,
    process: Duration,
    busy: Duration,
    draw: Duration,
}

fn snapshot(ring: &Ring) -> Snapshot {
    Snapshot {
        t: Instant::now(),
        process: cpu_time(ClockId::ProcessCPUTime),
        busy: machine_busy(),
        draw: Duration::from_nanos(ring.draw_ns.load(Ordering::Relaxed)),
    }
}

/// Figures of one pattern x codec x size.
struct Encoded {
    /// The first frame and whether the encoder marked it as a keyframe.
    key_bytes: usize,
    first_is_key: bool,
    /// Sizes of the frames after the first, and how many of them were keyframes.
    rest: Vec<usize>,
    rest_keys: usize,
    /// Pipeline CPU (process minus drawing) per frame after the first.
    pipeline_cpu: Duration,
    /// Guest drawing per frame (thread CPU), over the whole case.
    draw: Duration,
    /// Frames per second encoded (wall clock) after the first.
    fps: f64,
    /// Share of the machine other processes used meanwhile, in percent.
    others_percent: f64,
    note: String,
}

impl Encoded {
    fn mean_kib(&self) -> f64 {
        self.rest.iter().sum::<usize>() as f64 / 1024.0 / self.rest.len().max(1) as f64
    }

    fn p95_kib(&self) -> f64 {
        let mut v: Vec<f64> = self.rest.iter().map(|&b| b as f64 / 1024.0).collect();
        common::summary(&mut v).map_or(0.0, |(_, p95, _)| p95)
    }

    fn key_kib(&self) -> f64 {
        self.key_bytes as f64 / 1024.0
    }

    fn kbit_per_s(&self) -> f64 {
        self.mean_kib() * 1024.0 * 8.0 * FPS as f64 / 1000.0
    }
}

fn encode(
    text: &str,
    pattern: Pattern,
    (w, h): (u32, u32),
    frames: u64,
) -> Result<Encoded, String> {
    let pipeline = gst::parse::launch(text)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    let samples = Arc::new(Samples::default());
    record_appsink(&pipeline, &samples)?;
    let src = pipeline
        .by_name("src")
        .ok_or("no element named 'src'")?
        .downcast::<SpiceDmabufSrc>()
        .map_err(|_| "'src' is not a spicedmabufsrc".to_string())?;
    src.set_property("framerate", gst::Fraction::new(FPS as i32, 1));
    let ring = Arc::new(Ring::default());
    retime_and_count(&src, &ring);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let bufs = (0..RING)
        .map(|_| GuestBuffer::new(w, h).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let guest = spawn_guest(src, bufs, pattern, ring.clone());
    let deadline = Instant::now() + CASE_TIMEOUT;
    let measured = (|| {
        wait_until(&pipeline, deadline, || samples.count() >= 1)?;
        let s0 = snapshot(&ring);
        wait_until(&pipeline, deadline, || samples.count() >= frames)?;
        let s1 = snapshot(&ring);
        Ok::<_, String>((s0, s1))
    })();
    let (note, balanced) = stop_case(&pipeline, &ring, guest);
    if !balanced {
        problem(format!(
            "{pattern} {}: a draw got no release ({note})",
            size_name((w, h))
        ));
    }
    let (s0, s1) = measured?;
    let list = samples.list.lock().unwrap();
    let (first, rest) = list[..frames as usize].split_first().ok_or("no sample")?;
    let n = (frames - 1).max(1) as u32;
    let secs = (s1.t - s0.t).as_secs_f64();
    let process = s1.process.saturating_sub(s0.process);
    let draw_in_window = s1.draw.saturating_sub(s0.draw);
    let others = s1.busy.saturating_sub(s0.busy).saturating_sub(process);
    let drawn = ring.drawn.load(Ordering::Relaxed).max(1);
    Ok(Encoded {
        key_bytes: first.0,
        first_is_key: first.1,
        rest: rest.iter().map(|s| s.0).collect(),
        rest_keys: rest.iter().filter(|s| s.1).count(),
        pipeline_cpu: process.saturating_sub(draw_in_window) / n,
        draw: Duration::from_nanos(ring.draw_ns.load(Ordering::Relaxed) / drawn),
        fps: f64::from(n) / secs.max(1e-9),
        others_percent: 100.0 * others.as_secs_f64() / (secs.max(1e-9) * nproc() as f64),
        note,
    })
}

/// The encoder settings that set the output size, read from the pipeline text.
fn rate_settings(text: &str) -> String {
    let keys = [
        "bitrate=",
        "target-bitrate=",
        "quality=",
        "end-usage=",
        "rate-control=",
        "rc-mode=",
        "video_bitrate=",
        "pass=",
    ];
    let found: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
        .filter(|t| keys.iter().any(|k| t.starts_with(k)))
        .collect();
    if found.is_empty() {
        "encoder defaults".into()
    } else {
        found.join(" ")
    }
}

/// The text of the first usable pipeline file of `codec`, after printing which file it is and
/// its rate settings.
fn pipeline_text(codec: VideoCodec) -> Option<String> {
    match choose(&pipelines_dir(), codec, &probe) {
        Ok(choice) => {
            println!(
                "   {:<5} pipelines/{}: {}",
                codec.name(),
                choice.chosen.label,
                rate_settings(&choice.text)
            );
            Some(choice.text)
        }
        Err(e) => {
            problem(format!("{}: no usable pipeline: {e}", codec.name()));
            println!("   {:<5} no usable pipeline: {e}", codec.name());
            None
        }
    }
}

/// A pattern x codec x size result.
struct Row {
    codec: VideoCodec,
    size: (u32, u32),
    pattern: Pattern,
    result: Result<Encoded, String>,
}

fn part2(scale: Scale) -> Vec<Row> {
    println!(
        "== 2. Encoding through the real pipeline text, {} frames per case on a 30 fps timeline",
        scale.frames
    );
    println!(
        "   spicedmabufsrc (max-queued=1, framerate=30/1) fed from a ring of 3 memfds; the next \
         draw is pushed once the previous one left the source, timestamps k/30 s"
    );
    println!();
    let mut rows = Vec::new();
    let mut chosen: Vec<(VideoCodec, Option<String>)> = Vec::new();
    for (codec, size) in cases(scale) {
        if !chosen.iter().any(|(c, _)| *c == codec) {
            chosen.push((codec, pipeline_text(codec)));
        }
        let Some((_, Some(text))) = chosen.iter().find(|(c, _)| *c == codec) else {
            continue;
        };
        for pattern in PATTERNS {
            let result = encode(text, pattern, size, scale.frames);
            if let Err(e) = &result {
                problem(format!(
                    "{} {} {pattern}: {e}",
                    codec.name(),
                    size_name(size)
                ));
            }
            rows.push(Row {
                codec,
                size,
                pattern,
                result,
            });
        }
    }
    println!();
    rows
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}", a / b)
    } else {
        "-".into()
    }
}

fn print_ratios(rows: &[Row]) {
    println!("== 3. Ratios to the counter pattern (same codec, size and pipeline)");
    println!();
    println!(
        "| {:<5} | {:<9} | {:<8} | {:>14} | {:>15} | {:>16} | {:>20} |",
        "codec",
        "size",
        "pattern",
        "KiB/frame ×",
        "p95 KiB/frame ×",
        "keyframe KiB ×",
        "pipeline CPU/frame ×"
    );
    println!(
        "|{:-<7}|{:-<11}|{:-<10}|{:->16}|{:->17}|{:->18}|{:->22}|",
        "", "", "", "", "", "", ""
    );
    for row in rows.iter().filter(|r| r.pattern != Pattern::Counter) {
        let base = rows
            .iter()
            .find(|b| b.codec == row.codec && b.size == row.size && b.pattern == Pattern::Counter);
        let (Ok(m), Some(Row { result: Ok(b), .. })) = (&row.result, base) else {
            continue;
        };
        println!(
            "| {:<5} | {:<9} | {:<8} | {:>14} | {:>15} | {:>16} | {:>20} |",
            row.codec.name(),
            size_name(row.size),
            row.pattern.to_string(),
            ratio(m.mean_kib(), b.mean_kib()),
            ratio(m.p95_kib(), b.p95_kib()),
            ratio(m.key_kib(), b.key_kib()),
            ratio(ms(m.pipeline_cpu), ms(b.pipeline_cpu)),
        );
    }
    println!();
}

fn print_absolute(rows: &[Row]) {
    println!("== 4. Absolute figures");
    println!(
        "   KiB/frame and p95 over the frames after the first; keyframe = the first frame; \
         kbit/s = mean x 30 fps; pipeline CPU = process CPU minus drawing, per frame after the \
         first; draw = guest thread CPU per frame; fps = encoding rate (frames are fed as fast as \
         the pipeline takes them); others = CPU share of the machine other processes used"
    );
    println!();
    println!(
        "| {:<5} | {:<9} | {:<8} | {:>9} | {:>7} | {:>8} | {:>7} | {:>12} | {:>7} | {:>6} | {:>8} |",
        "codec",
        "size",
        "pattern",
        "KiB/frame",
        "p95 KiB",
        "key KiB",
        "kbit/s",
        "pipe CPU ms",
        "draw ms",
        "fps",
        "others %"
    );
    println!(
        "|{:-<7}|{:-<11}|{:-<10}|{:->11}|{:->9}|{:->10}|{:->9}|{:->14}|{:->9}|{:->8}|{:->10}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    let mut notes = Vec::new();
    for row in rows {
        let label = format!(
            "{} {} {}",
            row.codec.name(),
            size_name(row.size),
            row.pattern
        );
        match &row.result {
            Ok(m) => {
                println!(
                    "| {:<5} | {:<9} | {:<8} | {:>9.2} | {:>7.2} | {:>8.1} | {:>7.0} | {:>12.2} | \
                     {:>7.2} | {:>6.0} | {:>8.0} |",
                    row.codec.name(),
                    size_name(row.size),
                    row.pattern.to_string(),
                    m.mean_kib(),
                    m.p95_kib(),
                    m.key_kib(),
                    m.kbit_per_s(),
                    ms(m.pipeline_cpu),
                    ms(m.draw),
                    m.fps,
                    m.others_percent
                );
                let keys = if m.first_is_key {
                    format!("{} more keyframes", m.rest_keys)
                } else {
                    "first frame NOT marked as a keyframe".into()
                };
                notes.push(format!("{label}: {}; {keys}", m.note));
            }
            Err(e) => println!(
                "| {:<5} | {:<9} | {:<8} | failed: {e}",
                row.codec.name(),
                size_name(row.size),
                row.pattern.to_string()
            ),
        }
    }
    println!();
    for n in notes {
        println!("   {n}");
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || common::quick_env("WORKLOADS_BENCH_QUICK");
    let scale = if quick { QUICK } else { FULL };

    gst::init().expect("gst::init");
    // The dmabuf allocator warns once per map of a memfd; GStreamer's own log stays quiet
    // unless GST_DEBUG asks for it.
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::None);
    }
    gstspicedmabuf::register_static().expect("register spicedmabufsrc");

    let started = Instant::now();
    print_header(scale);
    part1(scale);
    let rows = part2(scale);
    print_ratios(&rows);
    print_absolute(&rows);
    println!(
        "total benchmark time: {:.0} s; at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    let problems = PROBLEMS.lock().unwrap();
    if !problems.is_empty() {
        for p in problems.iter() {
            eprintln!("error: {p}");
        }
        std::process::exit(1);
    }
}
