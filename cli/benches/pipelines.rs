//! Pipeline benchmark: frame ingestion cost of `spicedmabufsrc` against a bare GStreamer source
//! and a copying appsrc, full encode per codec through `pipelines/<codec>.pipeline`, and the
//! push-to-sample latency of H.264.
//!
//! Run with `cargo bench -p spice-shim-cli --bench pipelines`. It prints tables and ratios and never
//! asserts speed. Without the `--bench` argument (for example under `cargo test --benches`) or
//! with `SPICE_SHIM_BENCH_QUICK=1` (or `PIPELINES_BENCH_QUICK=1`) it runs every case briefly, as a smoke test.
//! `PIPELINES_BENCH_PARTS=2` and `PIPELINES_BENCH_CODECS=h264,vp8` select what runs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstspicedmabuf::{DrawRelease, DrawStatus, Rect, Scanout, SpiceDmabufSrc};
use spice_shim_core::encoder::read_pipeline;
use spice_shim_core::proto::codec::VideoCodec;
use test_guest::{GuestBuffer, Pattern, render};

use common::{
    load_average, machine_busy, nproc, pipelines_dir, proc_line, stat_cpu_faults, utc_now,
    wait_until,
};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench pipelines";
const RING: usize = 3;
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long each case runs.
#[derive(Clone, Copy)]
struct Scale {
    /// Runs of every ingestion and of every encode case; the fastest is kept.
    runs: u32,
    encode_runs: u32,
    /// Ingestion: frames discarded before the window, and the window's length.
    ingest_warm: u64,
    ingest_window: Duration,
    /// Encode: samples discarded before the window (the first keyframe, encoder start-up).
    encode_warm: u64,
    /// Encode: samples measured per case (and for the slow codecs at 1080p).
    encode_frames: u64,
    encode_frames_slow: u64,
    /// Latency: frames measured at 30 fps.
    latency_frames: u64,
}

const FULL: Scale = Scale {
    runs: 2,
    encode_runs: 3,
    ingest_warm: 10,
    ingest_window: Duration::from_secs(3),
    encode_warm: 10,
    encode_frames: 200,
    encode_frames_slow: 100,
    latency_frames: 150,
};

const QUICK: Scale = Scale {
    runs: 1,
    encode_runs: 1,
    ingest_warm: 2,
    ingest_window: Duration::from_millis(300),
    encode_warm: 2,
    encode_frames: 8,
    encode_frames_slow: 8,
    latency_frames: 8,
};

// ---------------------------------------------------------------------------------------------
// Machine description and CPU time.

/// CPU time (user + system) and minor page faults of the whole process, from `/proc/self/stat`.
fn process_stat() -> (Duration, u64) {
    stat_cpu_faults(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

fn print_header(quick: bool) {
    let nproc = nproc();
    let cpu = proc_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = proc_line("/proc/meminfo", "MemTotal").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("command:   {COMMAND}");
    println!("date:      {}", utc_now());
    println!(
        "machine:   nproc={nproc}, {cpu}, MemTotal {mem}, Linux {}",
        kernel.trim()
    );
    println!("gstreamer: {}", gst::version_string());
    println!("load:      {}", load_average());
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Measurement.

/// Frames (and bytes) that reached the sink.
#[derive(Default)]
struct Counter {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Arrival time of every sample, when recording (latency case).
    arrivals: Option<Mutex<Vec<Instant>>>,
}

impl Counter {
    fn recording() -> Self {
        Self {
            arrivals: Some(Mutex::default()),
            ..Self::default()
        }
    }

    fn add(&self, bytes: usize) {
        if let Some(a) = &self.arrivals {
            a.lock().unwrap().push(Instant::now());
        }
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.frames.fetch_add(1, Ordering::Release);
    }

    fn frames(&self) -> u64 {
        self.frames.load(Ordering::Acquire)
    }
}

struct Snapshot {
    t: Instant,
    cpu: Duration,
    faults: u64,
    busy: Duration,
    frames: u64,
    bytes: u64,
    render_ns: u64,
}

fn snapshot(counter: &Counter, render_ns: &AtomicU64) -> Snapshot {
    let (cpu, faults) = process_stat();
    Snapshot {
        t: Instant::now(),
        cpu,
        faults,
        busy: machine_busy(),
        frames: counter.frames(),
        bytes: counter.bytes.load(Ordering::Relaxed),
        render_ns: render_ns.load(Ordering::Relaxed),
    }
}

/// Result of one measurement window.
struct Measurement {
    frames: u64,
    secs: f64,
    cpu: Duration,
    faults: u64,
    /// CPU time other processes used during the window.
    others: Duration,
    bytes: u64,
    render: Duration,
}

impl Measurement {
    fn fps(&self) -> f64 {
        self.frames as f64 / self.secs
    }

    fn cpu_ms_per_frame(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.frames as f64
    }

    fn faults_per_frame(&self) -> f64 {
        self.faults as f64 / self.frames as f64
    }

    /// Share of the machine (all cores) other processes used during the window, in percent.
    fn others_percent(&self) -> f64 {
        100.0 * self.others.as_secs_f64() / (self.secs * nproc() as f64)
    }

    fn render_ms_per_frame(&self) -> f64 {
        self.render.as_secs_f64() * 1000.0 / self.frames as f64
    }

    fn kib_per_frame(&self) -> f64 {
        self.bytes as f64 / 1024.0 / self.frames as f64
    }
}

enum Window {
    Time(Duration),
    Frames(u64),
}

/// Waits for `warm` frames, then measures one window.
fn measure(
    pipeline: &gst::Pipeline,
    counter: &Counter,
    render_ns: &AtomicU64,
    warm: u64,
    window: Window,
) -> Result<Measurement, String> {
    let deadline = Instant::now() + CASE_TIMEOUT;
    wait_until(pipeline, deadline, || counter.frames() >= warm)?;
    let s0 = snapshot(counter, render_ns);
    match window {
        Window::Time(d) => wait_until(pipeline, deadline, || s0.t.elapsed() >= d)?,
        Window::Frames(n) => wait_until(pipeline, deadline, || counter.frames() >= s0.frames + n)?,
    }
    let s1 = snapshot(counter, render_ns);
    if s1.frames == s0.frames {
        return Err("no frame in the window".into());
    }
    let cpu = s1.cpu.saturating_sub(s0.cpu);
    Ok(Measurement {
        frames: s1.frames - s0.frames,
        secs: (s1.t - s0.t).as_secs_f64(),
        cpu,
        faults: s1.faults - s0.faults,
        others: s1.busy.saturating_sub(s0.busy).saturating_sub(cpu),
        bytes: s1.bytes - s0.bytes,
        render: Duration::from_nanos(s1.render_ns - s0.render_ns),
    })
}

fn launch(text: &str) -> Result<gst::Pipeline, String> {
    gst::parse::launch(text)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())
}

/// Counts the buffers reaching the element named `sink` (a fakesink).
fn count_fakesink(pipeline: &gst::Pipeline, counter: &Arc<Counter>) -> Result<(), String> {
    let pad = pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .ok_or("no element named 'sink'")?;
    let counter = counter.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
            counter.add(b.size());
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Counts the samples of the appsink named `sink`, as the shim's encoder does (no sync).
fn count_appsink(pipeline: &gst::Pipeline, counter: &Arc<Counter>) -> Result<(), String> {
    let sink = pipeline
        .by_name("sink")
        .ok_or("no element named 'sink'")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| "'sink' is not an appsink")?;
    sink.set_property("sync", false);
    sink.set_property("max-buffers", 4u32);
    sink.set_property("enable-last-sample", false);
    let counter = counter.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                counter.add(sample.buffer().map_or(0, |b| b.size()));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Producers.

/// A ring of guest buffers shared between the producer thread and the release callbacks.
#[derive(Default)]
struct RingState {
    busy: [bool; RING],
    draws: u64,
    /// Draws the source's streaming thread took (buffers that left the source).
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
    render_ns: AtomicU64,
    push_times: Mutex<Vec<Instant>>,
}

struct ShimFeed {
    /// Render this pattern into the buffer before every draw (otherwise pre-rendered once).
    render: Option<Pattern>,
    /// Push one draw per period (otherwise as fast as buffers come back).
    pace: Option<Duration>,
    /// Record the time of every push_draw.
    record: bool,
    /// Rewrite the timestamps to a 60 fps timeline (buffer k at k/60 s) as they leave the source.
    retime: bool,
}

fn guest_ring(width: u32, height: u32, stride: u32) -> Vec<GuestBuffer> {
    (0..RING)
        .map(|i| {
            let mut b = GuestBuffer::with_layout(width, height, stride, 0).expect("guest buffer");
            render(Pattern::Bars, i as u64, &mut b);
            b
        })
        .collect()
}

/// The host: for every frame it takes a free ring buffer (one whose release fired), optionally
/// renders into it, announces it as the scanout (as `gl_scanout` does on every buffer flip) and
/// pushes a full-frame draw.
///
/// It pushes only while no earlier draw is still waiting for the streaming thread: the source
/// keeps `max-queued=1` frame and a newer draw would supersede (drop) the waiting one, so pushing
/// blindly whenever a buffer is free renders frames that are thrown away. A frame's release fires
/// as soon as videoconvert has read it, i.e. before the encoder is done, so "buffer free" alone
/// does not say that the queue has room.
fn spawn_shim_producer(
    src: SpiceDmabufSrc,
    mut bufs: Vec<GuestBuffer>,
    feed: ShimFeed,
    ring: Arc<Ring>,
) -> JoinHandle<()> {
    let pad = src.static_pad("src").expect("source pad");
    let r = ring.clone();
    let retime = feed.retime;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let k = {
            let mut st = r.state.lock().unwrap();
            st.taken += 1;
            st.taken - 1
        };
        r.cond.notify_all();
        if retime && let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(k * 1_000_000_000 / 60));
            b.set_duration(gst::ClockTime::from_nseconds(1_000_000_000 / 60));
        }
        gst::PadProbeReturn::Ok
    });
    std::thread::spawn(move || {
        let (w, h) = (bufs[0].width(), bufs[0].height());
        let mut next = 0usize;
        let t0 = Instant::now();
        for frame_no in 0u64.. {
            let idx = {
                let mut st = ring.state.lock().unwrap();
                loop {
                    if ring.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let free = (0..RING).map(|k| (next + k) % RING).find(|&i| !st.busy[i]);
                    let waiting = st.draws - st.taken - st.dropped - st.refused;
                    if waiting == 0
                        && let Some(i) = free
                    {
                        st.busy[i] = true;
                        st.draws += 1;
                        break i;
                    }
                    st = ring
                        .cond
                        .wait_timeout(st, Duration::from_millis(50))
                        .unwrap()
                        .0;
                }
            };
            next = (idx + 1) % RING;
            if let Some(pattern) = feed.render {
                let t = Instant::now();
                render(pattern, frame_no, &mut bufs[idx]);
                ring.render_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            if let Some(period) = feed.pace {
                let due = t0 + Duration::from_nanos(period.as_nanos() as u64 * frame_no);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let fd = bufs[idx].dup_fd().expect("dup");
            let scanout = Scanout::new(spice_shim_cli::guest::scanout_info(&bufs[idx]), vec![fd])
                .expect("scanout");
            src.push_scanout(Some(Arc::new(scanout)));
            if feed.record {
                ring.push_times.lock().unwrap().push(Instant::now());
            }
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
            let _ = src.push_draw(Rect { x: 0, y: 0, w, h }, release);
        }
    })
}

/// Figures that could not be produced and draws without a release, reported at the end: any of
/// them makes the run fail (the figures themselves are never judged).
static PROBLEMS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn problem(what: String) {
    PROBLEMS.lock().unwrap().push(what);
}

/// Stops the producer and the pipeline and checks that every draw got its release.
fn stop_shim(pipeline: &gst::Pipeline, ring: &Ring, producer: JoinHandle<()>) -> String {
    ring.stop.store(true, Ordering::Release);
    ring.cond.notify_all();
    let _ = producer.join();
    let _ = pipeline.set_state(gst::State::Null);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let st = ring.state.lock().unwrap();
        let done = st.released + st.dropped + st.refused;
        if done == st.draws || Instant::now() > deadline {
            return format!(
                "draws {} taken {} released {} dropped {} refused {}{}",
                st.draws,
                st.taken,
                st.released,
                st.dropped,
                st.refused,
                if done == st.draws {
                    ""
                } else {
                    problem(format!(
                        "{} of {} draws got no release",
                        st.draws - done,
                        st.draws
                    ));
                    " MISSING RELEASES"
                }
            );
        }
        drop(st);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn shim_src(pipeline: &gst::Pipeline) -> Result<SpiceDmabufSrc, String> {
    pipeline
        .by_name("src")
        .ok_or("no element named 'src'")?
        .downcast::<SpiceDmabufSrc>()
        .map_err(|_| "'src' is not a spicedmabufsrc".to_string())
}

fn bgrx_caps(width: u32, height: u32, fps: i32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "BGRx")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(fps, 1))
        .build()
}

/// A system-memory buffer holding `stride * height` bytes, with a VideoMeta for the stride.
fn system_buffer(data: Vec<u8>, width: u32, height: u32, stride: u32) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(data);
    gst_video::VideoMeta::add_full(
        buffer.get_mut().unwrap(),
        gst_video::VideoFrameFlags::empty(),
        gst_video::VideoFormat::Bgrx,
        width,
        height,
        &[0],
        &[stride as i32],
    )
    .expect("video meta");
    buffer
}

// ---------------------------------------------------------------------------------------------
// Part 1: ingestion.

const INGEST_W: u32 = 1920;
const INGEST_H: u32 = 1080;
const CONVERT: &str = "videoconvert ! video/x-raw,format=I420 ! fakesink name=sink sync=false";

/// A measurement and a note (the release bookkeeping of spicedmabufsrc cases).
type CaseResult = Result<(Measurement, String), String>;

/// Runs a case `runs` times and keeps the fastest run: other processes on the machine slow some
/// runs down. Any failed run fails the case.
fn best_of(runs: u32, mut case: impl FnMut() -> CaseResult) -> CaseResult {
    let mut best: Option<(Measurement, String)> = None;
    for _ in 0..runs.max(1) {
        let r = case()?;
        if best.as_ref().is_none_or(|b| r.0.fps() > b.0.fps()) {
            best = Some(r);
        }
    }
    best.ok_or_else(|| "no run".into())
}

fn ingest_shim(scale: Scale, stride: u32) -> CaseResult {
    let pipeline = launch(&format!("spicedmabufsrc name=src max-queued=1 ! {CONVERT}"))?;
    let counter = Arc::new(Counter::default());
    count_fakesink(&pipeline, &counter)?;
    let src = shim_src(&pipeline)?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let ring = Arc::new(Ring::default());
    let feed = ShimFeed {
        render: None,
        pace: None,
        record: false,
        retime: false,
    };
    let producer = spawn_shim_producer(
        src,
        guest_ring(INGEST_W, INGEST_H, stride),
        feed,
        ring.clone(),
    );
    let m = measure(
        &pipeline,
        &counter,
        &ring.render_ns,
        scale.ingest_warm,
        Window::Time(scale.ingest_window),
    );
    let note = stop_shim(&pipeline, &ring, producer);
    m.map(|m| (m, note))
}

fn ingest_videotestsrc(scale: Scale, queue: bool) -> CaseResult {
    let pipeline = launch(&format!(
        "videotestsrc num-buffers=1000000 pattern=solid-color ! \
         video/x-raw,format=BGRx,width={INGEST_W},height={INGEST_H},framerate=0/1 ! {}{CONVERT}",
        if queue { "queue ! " } else { "" }
    ))?;
    let counter = Arc::new(Counter::default());
    count_fakesink(&pipeline, &counter)?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let m = measure(
        &pipeline,
        &counter,
        &AtomicU64::new(0),
        scale.ingest_warm,
        Window::Time(scale.ingest_window),
    );
    let _ = pipeline.set_state(gst::State::Null);
    m.map(|m| (m, String::new()))
}

/// appsrc fed from a thread: `copy` memcpy's each frame out of the memfd mapping of the ring
/// buffers into a new system-memory buffer; otherwise one pre-made buffer is pushed again and
/// again (a producer that costs nothing).
fn ingest_appsrc(scale: Scale, stride: u32, copy: bool) -> CaseResult {
    let pipeline = launch(&format!("appsrc name=src ! {CONVERT}"))?;
    let counter = Arc::new(Counter::default());
    count_fakesink(&pipeline, &counter)?;
    let appsrc = pipeline
        .by_name("src")
        .ok_or("no src")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| "not an appsrc")?;
    appsrc.set_caps(Some(&bgrx_caps(INGEST_W, INGEST_H, 0)));
    appsrc.set_format(gst::Format::Time);
    appsrc.set_is_live(false);
    appsrc.set_block(true);
    appsrc.set_max_bytes(0);
    appsrc.set_max_buffers(2);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = std::thread::spawn({
        let stop = stop.clone();
        let appsrc = appsrc.clone();
        move || {
            let size = (stride * INGEST_H) as usize;
            let ring = guest_ring(INGEST_W, INGEST_H, stride);
            if copy {
                for k in 0usize.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let buffer = system_buffer(
                        ring[k % RING].pixels()[..size].to_vec(),
                        INGEST_W,
                        INGEST_H,
                        stride,
                    );
                    if appsrc.push_buffer(buffer).is_err() {
                        break;
                    }
                }
            } else {
                let buffer = system_buffer(
                    ring[0].pixels()[..size].to_vec(),
                    INGEST_W,
                    INGEST_H,
                    stride,
                );
                while !stop.load(Ordering::Acquire) {
                    if appsrc.push_buffer(buffer.clone()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let m = measure(
        &pipeline,
        &counter,
        &AtomicU64::new(0),
        scale.ingest_warm,
        Window::Time(scale.ingest_window),
    );
    stop.store(true, Ordering::Release);
    let _ = pipeline.set_state(gst::State::Null);
    let _ = producer.join();
    m.map(|m| (m, String::new()))
}

struct IngestRow {
    label: &'static str,
    stride: u32,
    result: CaseResult,
}

const SHIM_ROW: &str = "spicedmabufsrc, ring of 3 memfds (zero-copy)";
const BARE_ROW: &str = "appsrc, one pre-made buffer (zero-cost producer)";
const COPY_ROW: &str = "appsrc, memcpy from the memfd each frame";
const VTS_ROW: &str = "videotestsrc pattern=solid-color";
const VTSQ_ROW: &str = "videotestsrc pattern=solid-color ! queue";

fn part1(scale: Scale) {
    println!(
        "== 1. Frame ingestion, no encoder: {INGEST_W}x{INGEST_H} BGRx (DRM XR24) ! videoconvert ! \
         I420 ! fakesink sync=false"
    );
    println!(
        "   best of {} runs of {:.1} s after {} warm-up frames; CPU = user+system time of the whole \
         process per frame; faults = minor page faults per frame; others = CPU share of the \
         machine used by other processes meanwhile",
        scale.runs,
        scale.ingest_window.as_secs_f64(),
        scale.ingest_warm
    );
    let mut rows = Vec::new();
    for stride in [7680, 7936] {
        rows.push(IngestRow {
            label: SHIM_ROW,
            stride,
            result: best_of(scale.runs, || ingest_shim(scale, stride)),
        });
    }
    for stride in [7680, 7936] {
        rows.push(IngestRow {
            label: BARE_ROW,
            stride,
            result: best_of(scale.runs, || ingest_appsrc(scale, stride, false)),
        });
    }
    for stride in [7680, 7936] {
        rows.push(IngestRow {
            label: COPY_ROW,
            stride,
            result: best_of(scale.runs, || ingest_appsrc(scale, stride, true)),
        });
    }
    for (label, queue) in [(VTS_ROW, false), (VTSQ_ROW, true)] {
        rows.push(IngestRow {
            label,
            stride: 7680,
            result: best_of(scale.runs, || ingest_videotestsrc(scale, queue)),
        });
    }

    println!();
    println!(
        "| {:<48} | {:>6} | {:>6} | {:>6} | {:>12} | {:>12} | {:>8} |",
        "source", "stride", "frames", "fps", "CPU ms/frame", "faults/frame", "others %"
    );
    println!(
        "|{:-<50}|{:->8}|{:->8}|{:->8}|{:->14}|{:->14}|{:->10}|",
        "", "", "", "", "", "", ""
    );
    for r in &rows {
        match &r.result {
            Ok((m, _)) => println!(
                "| {:<48} | {:>6} | {:>6} | {:>6.1} | {:>12.2} | {:>12.0} | {:>8.0} |",
                r.label,
                r.stride,
                m.frames,
                m.fps(),
                m.cpu_ms_per_frame(),
                m.faults_per_frame(),
                m.others_percent()
            ),
            Err(e) => {
                problem(format!("ingestion {} stride {}: {e}", r.label, r.stride));
                println!("| {:<48} | {:>6} | failed: {e}", r.label, r.stride)
            }
        }
    }
    println!();
    for r in &rows {
        if let Ok((_, note)) = &r.result
            && !note.is_empty()
        {
            println!("   {} stride {}: {note}", r.label, r.stride);
        }
    }
    let find = |label: &str, stride: u32| {
        rows.iter()
            .find(|r| r.label == label && r.stride == stride)
            .and_then(|r| r.result.as_ref().ok())
            .map(|(m, _)| m)
    };
    for stride in [7680, 7936] {
        if let (Some(shim), Some(bare), Some(copy)) = (
            find(SHIM_ROW, stride),
            find(BARE_ROW, stride),
            find(COPY_ROW, stride),
        ) {
            println!(
                "   stride {stride}: fps shim/bare {:.2}, shim/copy {:.2}; CPU per frame \
                 shim/bare {:.2}, shim/copy {:.2}",
                shim.fps() / bare.fps(),
                shim.fps() / copy.fps(),
                shim.cpu_ms_per_frame() / bare.cpu_ms_per_frame(),
                shim.cpu_ms_per_frame() / copy.cpu_ms_per_frame()
            );
        }
    }
    if let (Some(shim), Some(vts), Some(vtsq)) = (
        find(SHIM_ROW, 7680),
        find(VTS_ROW, 7680),
        find(VTSQ_ROW, 7680),
    ) {
        println!(
            "   stride 7680: fps shim/videotestsrc {:.2}, shim/(videotestsrc ! queue) {:.2}",
            shim.fps() / vts.fps(),
            shim.fps() / vtsq.fps()
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Part 2: encode per codec.

const CODECS: [VideoCodec; 5] = [
    VideoCodec::H264,
    VideoCodec::Vp8,
    VideoCodec::Vp9,
    VideoCodec::H265,
    VideoCodec::Mjpeg,
];
const SIZES: [(u32, u32); 2] = [(1280, 720), (1920, 1080)];

fn encode_shim(text: &str, width: u32, height: u32, warm: u64, frames: u64) -> CaseResult {
    let pipeline = launch(text)?;
    let counter = Arc::new(Counter::default());
    count_appsink(&pipeline, &counter)?;
    let src = shim_src(&pipeline)?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let ring = Arc::new(Ring::default());
    let feed = ShimFeed {
        render: Some(Pattern::Bars),
        pace: None,
        record: false,
        retime: true,
    };
    let producer = spawn_shim_producer(
        src,
        guest_ring(width, height, width * 4),
        feed,
        ring.clone(),
    );
    let m = measure(
        &pipeline,
        &counter,
        &ring.render_ns,
        warm,
        Window::Frames(frames),
    );
    let note = stop_shim(&pipeline, &ring, producer);
    m.map(|m| (m, note))
}

fn encode_bare(text: &str, width: u32, height: u32, warm: u64, frames: u64) -> CaseResult {
    let source = format!(
        "videotestsrc num-buffers={} is-live=false pattern=smpte100 ! \
         video/x-raw,format=BGRx,width={width},height={height},framerate=60/1",
        warm + frames + 30
    );
    if !text.contains("spicedmabufsrc name=src") {
        return Err("no 'spicedmabufsrc name=src' in the pipeline".into());
    }
    let pipeline = launch(&text.replacen("spicedmabufsrc name=src", &source, 1))?;
    let counter = Arc::new(Counter::default());
    count_appsink(&pipeline, &counter)?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let m = measure(
        &pipeline,
        &counter,
        &AtomicU64::new(0),
        warm,
        Window::Frames(frames),
    );
    let _ = pipeline.set_state(gst::State::Null);
    m.map(|m| (m, String::new()))
}

fn part2(scale: Scale) {
    println!(
        "== 2. Full encode through pipelines/<codec>.pipeline (appsink sync=false), as fast as \
         the pipeline takes frames"
    );
    println!(
        "   shim: spicedmabufsrc (max-queued=1, ring of 3 memfds, next draw pushed once the \
         previous one left the source), a new bars+moving-square frame rendered per draw, \
         timestamps set to k/60 s as they leave the source"
    );
    println!(
        "   bare: the same text with the source replaced by videotestsrc is-live=false \
         pattern=smpte100 ! video/x-raw,format=BGRx,...,framerate=60/1"
    );
    println!(
        "   best of {} runs of {} samples (h265/vp9 at 1080p: {}) after {} warm-up samples; CPU = \
         whole process per frame; render = wall time of the guest drawing into the memfd (part \
         of CPU); others = CPU share of the machine used by other processes meanwhile",
        scale.encode_runs, scale.encode_frames, scale.encode_frames_slow, scale.encode_warm
    );
    println!();
    println!(
        "| {:<5} | {:<9} | {:<6} | {:>6} | {:>6} | {:>12} | {:>15} | {:>13} | {:>8} | {:>13} | \
         {:>13} |",
        "codec",
        "size",
        "source",
        "frames",
        "fps",
        "CPU ms/frame",
        "render ms/frame",
        "avg KiB/frame",
        "others %",
        "fps shim/bare",
        "CPU shim/bare"
    );
    println!(
        "|{:-<7}|{:-<11}|{:-<8}|{:->8}|{:->8}|{:->14}|{:->17}|{:->15}|{:->10}|{:->15}|{:->15}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    let mut notes = Vec::new();
    // PIPELINES_BENCH_CODECS=h264,vp8 restricts part 2 to those codecs.
    let only = std::env::var("PIPELINES_BENCH_CODECS").ok();
    for codec in CODECS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|c| c.trim() == codec.name()))
        {
            continue;
        }
        let text = match read_pipeline(&pipelines_dir(), codec) {
            Ok(t) => t,
            Err(e) => {
                problem(format!("{}: {e}", codec.name()));
                println!("| {:<5} | skipped: {e}", codec.name());
                continue;
            }
        };
        for (w, h) in SIZES {
            let slow = h >= 1080 && matches!(codec, VideoCodec::H265 | VideoCodec::Vp9);
            let frames = if slow {
                scale.encode_frames_slow
            } else {
                scale.encode_frames
            };
            let size = format!("{w}x{h}");
            let warm = scale.encode_warm;
            let shim = best_of(scale.encode_runs, || encode_shim(&text, w, h, warm, frames));
            let bare = best_of(scale.encode_runs, || encode_bare(&text, w, h, warm, frames));
            let (fps_ratio, cpu_ratio) = match (&shim, &bare) {
                (Ok((s, _)), Ok((b, _))) => (
                    format!("{:.2}", s.fps() / b.fps()),
                    format!("{:.2}", s.cpu_ms_per_frame() / b.cpu_ms_per_frame()),
                ),
                _ => ("-".into(), "-".into()),
            };
            for (source, result) in [("shim", &shim), ("bare", &bare)] {
                match result {
                    Ok((m, note)) => {
                        let is_shim = source == "shim";
                        println!(
                            "| {:<5} | {:<9} | {:<6} | {:>6} | {:>6.1} | {:>12.2} | {:>15} | \
                             {:>13.1} | {:>8.0} | {:>13} | {:>13} |",
                            codec.name(),
                            size,
                            source,
                            m.frames,
                            m.fps(),
                            m.cpu_ms_per_frame(),
                            if is_shim {
                                format!("{:.2}", m.render_ms_per_frame())
                            } else {
                                "-".into()
                            },
                            m.kib_per_frame(),
                            m.others_percent(),
                            if is_shim { fps_ratio.as_str() } else { "" },
                            if is_shim { cpu_ratio.as_str() } else { "" }
                        );
                        if !note.is_empty() {
                            notes.push(format!("{} {size} {source}: {note}", codec.name()));
                        }
                    }
                    Err(e) => {
                        problem(format!("{} {size} {source}: {e}", codec.name()));
                        println!(
                            "| {:<5} | {:<9} | {:<6} | failed: {e}",
                            codec.name(),
                            size,
                            source
                        )
                    }
                }
            }
        }
    }
    println!();
    for n in notes {
        println!("   {n}");
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Part 3: latency.

fn part3(scale: Scale) {
    let (w, h) = (1280, 720);
    println!(
        "== 3. Latency: h264 {w}x{h}, counter pattern, one draw every 1/30 s, time from push_draw \
         to the appsink sample of that frame"
    );
    let run = || -> Result<(Vec<f64>, String), String> {
        let text = read_pipeline(&pipelines_dir(), VideoCodec::H264)?;
        let pipeline = launch(&text)?;
        let counter = Arc::new(Counter::recording());
        count_appsink(&pipeline, &counter)?;
        let src = shim_src(&pipeline)?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| e.to_string())?;
        let ring = Arc::new(Ring::default());
        let feed = ShimFeed {
            render: Some(Pattern::Counter),
            pace: Some(Duration::from_nanos(1_000_000_000 / 30)),
            record: true,
            retime: false,
        };
        let producer = spawn_shim_producer(src, guest_ring(w, h, w * 4), feed, ring.clone());
        let warm = scale.encode_warm;
        let m = measure(
            &pipeline,
            &counter,
            &ring.render_ns,
            warm,
            Window::Frames(scale.latency_frames),
        );
        let note = stop_shim(&pipeline, &ring, producer);
        m?;
        let st = ring.state.lock().unwrap();
        if st.dropped != 0 || st.refused != 0 {
            return Err(format!(
                "frames were dropped, samples cannot be matched to draws ({note})"
            ));
        }
        drop(st);
        // Without drops and with a 1-in-1-out encoder, sample k is draw k.
        let pushes = ring.push_times.lock().unwrap();
        let arrivals = counter.arrivals.as_ref().unwrap().lock().unwrap();
        let lat: Vec<f64> = pushes
            .iter()
            .zip(arrivals.iter())
            .skip(warm as usize)
            .map(|(p, a)| a.saturating_duration_since(*p).as_secs_f64() * 1000.0)
            .collect();
        Ok((lat, note))
    };
    match run() {
        Ok((mut lat, note)) if !lat.is_empty() => {
            lat.sort_by(f64::total_cmp);
            let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
            println!();
            println!(
                "| {:<32} | {:>6} | {:>10} | {:>8} | {:>8} |",
                "case", "frames", "median ms", "p95 ms", "max ms"
            );
            println!(
                "|{:-<34}|{:->8}|{:->12}|{:->10}|{:->10}|",
                "", "", "", "", ""
            );
            println!(
                "| {:<32} | {:>6} | {:>10.2} | {:>8.2} | {:>8.2} |",
                format!("h264 {w}x{h} @ 30 fps"),
                lat.len(),
                pct(0.5),
                pct(0.95),
                lat[lat.len() - 1]
            );
            println!();
            println!("   {note}");
        }
        Ok(_) => {
            problem("latency: no sample".into());
            println!("   failed: no sample")
        }
        Err(e) => {
            problem(format!("latency: {e}"));
            println!("   failed: {e}")
        }
    }
    println!();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || common::quick_env("PIPELINES_BENCH_QUICK");
    let scale = if quick { QUICK } else { FULL };

    gst::init().expect("gst::init");
    // The dmabuf allocator warns once per map of a memfd ("Failed to synchronize DMABuf"); that
    // is expected here, so GStreamer's own log stays quiet unless GST_DEBUG asks for it.
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::None);
    }
    gstspicedmabuf::register_static().expect("register spicedmabufsrc");

    let started = Instant::now();
    print_header(quick);
    // PIPELINES_BENCH_PARTS=2,3 runs only those parts (all by default).
    let parts = std::env::var("PIPELINES_BENCH_PARTS").unwrap_or_else(|_| "1,2,3".into());
    let wanted = |p: &str| parts.split(',').any(|x| x.trim() == p);
    if wanted("1") {
        part1(scale);
    }
    if wanted("2") {
        part2(scale);
    }
    if wanted("3") {
        part3(scale);
    }
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
