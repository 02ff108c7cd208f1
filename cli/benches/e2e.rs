//! End-to-end benchmark through the SPICE wire, in one process: a host draws the counter test
//! pattern into a ring of memfd scanouts and calls `gl_scanout`/`gl_draw` on an in-process
//! `Shim`; a minimal SPICE client (`tests/glclient`) connects over TCP, receives STREAM_DATA and
//! decodes every access unit at once with an in-process GStreamer decoder; the frame counter
//! read from each decoded picture gives the `gl_draw` time of that frame.
//!
//! Run with `cargo bench -p spice-shim-cli --bench e2e`. It prints tables and asserts nothing about
//! speed; it fails if a cookie did not come back. Without the `--bench` argument (for example
//! under `cargo test --benches`) or with `SPICE_SHIM_BENCH_QUICK=1` (or `E2E_BENCH_QUICK=1`) it runs one short case as a smoke
//! test. `E2E_BENCH_CASES=vp8,1080` runs only the cases whose label contains one of the words;
//! `E2E_BENCH_DUMP=DIR` writes every frame's latencies to a CSV file per case in DIR.
//!
//! Latency is measured until the decoder hands out the picture. A real client (spice-gtk) then
//! shows the frame at its `mm_time`, and the server starts the client's clock
//! `Config::mm_latency_ms` (automatic by default, from 10 ms; see `benches/latency.rs`) behind
//! its own: that scheduling delay comes on top.

mod common;
#[path = "../tests/glclient/mod.rs"]
mod glclient;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use gst::prelude::*;
use gst_video::prelude::*;
use gstspicedmabuf::Rect;
use spice_shim_core::proto::Caps;
use spice_shim_core::proto::VideoCodec;
use spice_shim_core::proto::caps::display_cap;
use spice_shim_core::proto::msg_type::server::display as msg;
use spice_shim_core::{Config, Shim, ShimStats};
use test_guest::{ChannelOrder, Guest, Pattern, read_counter};

use common::{load_average, machine_busy, nproc, proc_line, stat_cpu_faults, summary, utc_now};
use glclient::{Next, display_channel, main_channel};

const COMMAND: &str = "cargo bench -p spice-shim-cli --bench e2e";
/// Buffers in the host's ring (triple buffering, as `spice-shim serve`).
const RING: usize = 3;
/// Name of the decoder's appsrc: its streaming thread is `decsrc:src`, counted as client CPU.
const DECODER_SRC: &str = "decsrc";
/// Threads of the client side (besides the decoder's streaming thread).
const CLIENT_DISPLAY_THREAD: &str = "e2e-display";
const CLIENT_MAIN_THREAD: &str = "e2e-mainchan";
/// After the last draw: time for the last frames to arrive (and the idle follow-up frame).
const DRAIN: Duration = Duration::from_millis(500);

/// One measured configuration.
#[derive(Clone, Copy)]
struct Case {
    codec: VideoCodec,
    width: u32,
    height: u32,
    fps: u32,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{} {}x{} @ {} fps",
            self.codec.name(),
            self.width,
            self.height,
            self.fps
        )
    }
}

const FULL_CASES: [Case; 5] = [
    Case {
        codec: VideoCodec::H264,
        width: 1280,
        height: 720,
        fps: 30,
    },
    Case {
        codec: VideoCodec::H264,
        width: 1280,
        height: 720,
        fps: 60,
    },
    Case {
        codec: VideoCodec::H264,
        width: 1920,
        height: 1080,
        fps: 30,
    },
    Case {
        codec: VideoCodec::H264,
        width: 1920,
        height: 1080,
        fps: 60,
    },
    Case {
        codec: VideoCodec::Vp8,
        width: 1280,
        height: 720,
        fps: 30,
    },
];

/// Warm-up and measured window of every case.
#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    window: Duration,
}

const FULL: Timing = Timing {
    warmup: Duration::from_secs(1),
    window: Duration::from_secs(10),
};

const QUICK: Timing = Timing {
    warmup: Duration::from_millis(300),
    window: Duration::from_secs(1),
};

// ---------------------------------------------------------------------------------------------
// Machine description and CPU time.

/// utime + stime of a `/proc/.../stat` line.
fn stat_cpu(stat: &str) -> Duration {
    stat_cpu_faults(stat).0
}

/// CPU time (user + system) of the whole process.
fn process_cpu() -> Duration {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU time of every live thread of the process, from `schedstat`: tid → (name, CPU).
fn thread_cpu() -> HashMap<u32, (String, Duration)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // The first field of schedstat is the time spent on a CPU, in ns (finer than ticks).
        let Some(ns) = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        out.insert(tid, (comm.trim().to_string(), Duration::from_nanos(ns)));
    }
    out
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
    println!("load:      {}", load_average());
    println!(
        "per case:  {:.1} s warm-up, {:.1} s measured",
        timing.warmup.as_secs_f64(),
        timing.window.as_secs_f64()
    );
    if quick {
        println!("mode:      QUICK (smoke run, numbers are not meaningful)");
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// The client: SPICE over TCP and an in-process decoder.

/// One picture out of the client's decoder.
struct Decoded {
    at: Instant,
    /// Index of the STREAM_DATA it came from (carried in the buffer's PTS).
    data_index: Option<u64>,
    /// The counter read from the picture (`None`: unreadable).
    counter: Option<u32>,
}

/// The client's decoder: `appsrc ! parse/decode ! videoconvert ! RGB appsink`.
struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    decoded: Arc<Mutex<Vec<Decoded>>>,
}

fn decoder_description(codec: VideoCodec) -> anyhow::Result<String> {
    let (caps, decode) = match codec {
        VideoCodec::H264 => (
            "video/x-h264,stream-format=byte-stream,alignment=au",
            "h264parse ! avdec_h264 max-threads=1",
        ),
        VideoCodec::Vp8 => ("video/x-vp8", "vp8dec threads=1"),
        other => bail!("no decoder for {other} in this benchmark"),
    };
    Ok(format!(
        "appsrc name={DECODER_SRC} is-live=true format=time max-bytes=0 caps={caps} ! {decode} \
         ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false"
    ))
}

impl Decoder {
    fn start(codec: VideoCodec) -> anyhow::Result<Self> {
        let text = decoder_description(codec)?;
        let pipeline = gst::parse::launch(&text)
            .with_context(|| format!("decoder pipeline {text}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("the decoder is not a pipeline"))?;
        let src = pipeline
            .by_name(DECODER_SRC)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| anyhow!("decoder without its appsrc"))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| anyhow!("decoder without its appsink"))?;
        let decoded: Arc<Mutex<Vec<Decoded>>> = Arc::default();
        let out = decoded.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let at = Instant::now();
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let data_index = buffer.pts().map(|p| p.mseconds());
                    let counter = sample
                        .caps()
                        .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                        .and_then(|info| {
                            let frame =
                                gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
                                    .ok()?;
                            read_counter(
                                frame.plane_data(0).ok()?,
                                info.width(),
                                info.height(),
                                u32::try_from(frame.plane_stride()[0]).ok()?,
                                3,
                                ChannelOrder::Rgb,
                            )
                        });
                    out.lock().unwrap().push(Decoded {
                        at,
                        data_index,
                        counter,
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .context("starting the decoder")?;
        Ok(Self {
            pipeline,
            src,
            decoded,
        })
    }

    /// Stops the pipeline; returns its decoded pictures and the errors and warnings it posted.
    fn finish(self) -> (Vec<Decoded>, Vec<String>) {
        let _ = self.pipeline.set_state(gst::State::Null);
        let mut problems = Vec::new();
        if let Some(bus) = self.pipeline.bus() {
            while let Some(m) = bus.pop() {
                match m.view() {
                    gst::MessageView::Error(e) => problems.push(format!(
                        "decoder error from {}: {}",
                        e.src().map(|s| s.path_string()).unwrap_or_default(),
                        e.error()
                    )),
                    gst::MessageView::Warning(w) => problems.push(format!(
                        "decoder warning from {}: {}",
                        w.src().map(|s| s.path_string()).unwrap_or_default(),
                        w.error()
                    )),
                    _ => {}
                }
            }
        }
        let decoded = std::mem::take(&mut *self.decoded.lock().unwrap());
        (decoded, problems)
    }
}

/// What the client's display channel saw.
#[derive(Default)]
struct ClientOut {
    /// Arrival time of every STREAM_DATA (fully read from the socket), in order.
    arrivals: Vec<Instant>,
    /// Payload size of every STREAM_DATA, in order.
    sizes: Vec<usize>,
    stream_creates: u32,
    /// Codec byte of the last STREAM_CREATE.
    codec: Option<u8>,
    /// STREAM_DATA_SIZED messages (not expected: the client does not announce SIZED_STREAM).
    sized: u64,
    push_errors: u64,
    error: Option<String>,
}

/// Display caps of a remote client decoding `codec` (plus MJPEG, as spice-gtk announces it).
fn remote_caps(codec: VideoCodec) -> Caps {
    let mut bits = vec![
        display_cap::MONITORS_CONFIG,
        display_cap::MULTI_CODEC,
        display_cap::CODEC_MJPEG,
    ];
    bits.push(match codec {
        VideoCodec::Vp8 => display_cap::CODEC_VP8,
        _ => display_cap::CODEC_H264,
    });
    Caps::from_bits(&bits)
}

/// Links the main and display channels, then reads STREAM_DATA and feeds the decoder until
/// `stop`. The main channel is drained on its own thread.
fn run_client(
    addr: SocketAddr,
    codec: VideoCodec,
    src: gst_app::AppSrc,
    stop: Arc<AtomicBool>,
) -> ClientOut {
    let mut out = ClientOut::default();
    if let Err(e) = client_loop(addr, codec, &src, &stop, &mut out) {
        out.error = Some(e.to_string());
    }
    let _ = src.end_of_stream();
    out
}

fn client_loop(
    addr: SocketAddr,
    codec: VideoCodec,
    src: &gst_app::AppSrc,
    stop: &Arc<AtomicBool>,
    out: &mut ClientOut,
) -> anyhow::Result<()> {
    let main = main_channel(TcpStream::connect(addr)?).context("main channel")?;
    let session_id = main.session_id;
    let stop_main = stop.clone();
    let main_thread = std::thread::Builder::new()
        .name(CLIENT_MAIN_THREAD.into())
        .spawn(move || {
            let mut chan = main.chan;
            while !stop_main.load(Ordering::Acquire) {
                match chan.next_raw(Duration::from_millis(100)) {
                    Ok(Next::Msg(_) | Next::Quiet) => {}
                    Ok(Next::Closed) | Err(_) => break,
                }
            }
        })?;
    let result = (|| -> anyhow::Result<()> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        let mut display =
            display_channel(sock, session_id, remote_caps(codec)).context("display channel")?;
        while !stop.load(Ordering::Acquire) {
            let (t, body) = match display.chan.next_raw(Duration::from_millis(50))? {
                Next::Msg(m) => m,
                Next::Quiet => continue,
                Next::Closed => bail!("the server closed the display channel"),
            };
            match t {
                msg::STREAM_DATA => {
                    let at = Instant::now();
                    if body.len() < 12 {
                        bail!("STREAM_DATA of {} bytes", body.len());
                    }
                    let size = u32::from_le_bytes(body[8..12].try_into().unwrap()) as usize;
                    if size != body.len() - 12 {
                        bail!("STREAM_DATA data_size {size}, body {} bytes", body.len());
                    }
                    let k = out.arrivals.len() as u64;
                    out.arrivals.push(at);
                    out.sizes.push(size);
                    let mut buffer = gst::Buffer::from_slice(body.split_at(12).1.to_vec());
                    {
                        let b = buffer.get_mut().expect("a new buffer is writable");
                        // The PTS carries the STREAM_DATA index through the decoder.
                        b.set_pts(gst::ClockTime::from_mseconds(k));
                        b.set_duration(gst::ClockTime::from_mseconds(1));
                    }
                    if src.push_buffer(buffer).is_err() {
                        out.push_errors += 1;
                    }
                }
                msg::STREAM_DATA_SIZED => out.sized += 1,
                msg::STREAM_CREATE => {
                    out.stream_creates += 1;
                    out.codec = body.get(9).copied();
                }
                _ => {}
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Release);
    let _ = main_thread.join();
    result
}

// ---------------------------------------------------------------------------------------------
// One case.

/// Everything measured in one case.
struct CaseResult {
    case: Case,
    /// Host: gl_draw time of every frame (index = frame number = counter).
    draws: Vec<Instant>,
    /// Ticks skipped because every buffer was still in use.
    skipped: u64,
    /// Cookie return time of every frame (index = frame number).
    cookie_back: Vec<Option<Instant>>,
    window: (Instant, Instant),
    /// Process CPU in the window, and its parts.
    cpu: Duration,
    cpu_host: Duration,
    cpu_client: Duration,
    /// CPU other processes used in the window.
    others: Duration,
    client: ClientOut,
    decoded: Vec<Decoded>,
    decoder_problems: Vec<String>,
    /// Shim counters just before shutdown, and the ledger after it.
    stats: ShimStats,
    final_stats: ShimStats,
}

/// CPU of the host thread (the main thread) and of the client's threads in a thread snapshot.
fn split_cpu(
    before: &HashMap<u32, (String, Duration)>,
    after: &HashMap<u32, (String, Duration)>,
) -> (Duration, Duration) {
    let pid = std::process::id();
    let client_names = [
        CLIENT_DISPLAY_THREAD.to_string(),
        CLIENT_MAIN_THREAD.to_string(),
        format!("{DECODER_SRC}:src"),
    ];
    let (mut host, mut client) = (Duration::ZERO, Duration::ZERO);
    for (tid, (name, cpu)) in after {
        let start = before.get(tid).map(|(_, c)| *c).unwrap_or_default();
        let d = cpu.saturating_sub(start);
        if *tid == pid {
            host += d;
        } else if client_names.iter().any(|n| n == name) {
            client += d;
        }
    }
    (host, client)
}

fn run_case(case: Case, timing: Timing) -> anyhow::Result<CaseResult> {
    let (done_tx, done_rx) = mpsc::channel::<(u64, Instant)>();
    let shim = Shim::start(
        Config {
            tcp: Some("127.0.0.1:0".into()),
            codecs: vec![case.codec],
            ..Config::default()
        },
        Box::new(move |cookie| {
            let _ = done_tx.send((cookie, Instant::now()));
        }),
    )
    .context("starting the shim")?;
    let addr = shim.tcp_addr().ok_or_else(|| anyhow!("no TCP address"))?;

    // The client links before the first scanout, so its first frame is the host's first.
    let decoder = Decoder::start(case.codec)?;
    let stop = Arc::new(AtomicBool::new(false));
    let client: JoinHandle<ClientOut> = {
        let src = decoder.src.clone();
        let stop = stop.clone();
        let codec = case.codec;
        std::thread::Builder::new()
            .name(CLIENT_DISPLAY_THREAD.into())
            .spawn(move || run_client(addr, codec, src, stop))?
    };
    let attached = Instant::now() + Duration::from_secs(10);
    while !shim
        .stats()
        .clients
        .iter()
        .any(|c| c.connected && c.codec == Some(case.codec))
    {
        if Instant::now() > attached || client.is_finished() {
            stop.store(true, Ordering::Release);
            let out = client.join().unwrap_or_default();
            bail!(
                "the client did not attach to the {} stream: {}",
                case.codec,
                out.error.unwrap_or_else(|| "timed out".into())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // The host, as `spice-shim serve` drives it.
    let (w, h) = (case.width, case.height);
    let mut guest = Guest::new(w, h, None, Pattern::Counter, RING)?;
    let period = Duration::from_secs_f64(1.0 / f64::from(case.fps));
    let mut draws: Vec<Instant> = Vec::new();
    let mut cookie_back: Vec<Option<Instant>> = Vec::new();
    let mut skipped = 0u64;
    let mut current: Option<usize> = None;
    let take_back = |guest: &mut Guest, cookie_back: &mut Vec<Option<Instant>>| {
        while let Ok((cookie, at)) = done_rx.try_recv() {
            guest.release(cookie);
            if let Some(slot) = cookie
                .checked_sub(1)
                .and_then(|i| cookie_back.get_mut(i as usize))
            {
                *slot = Some(at);
            }
        }
    };
    let start = Instant::now();
    let (win0, win1) = (start + timing.warmup, start + timing.warmup + timing.window);
    let mut at_win0 = None;
    let mut next_tick = start;
    loop {
        take_back(&mut guest, &mut cookie_back);
        let now = Instant::now();
        if now >= win1 {
            break;
        }
        if at_win0.is_none() && now >= win0 {
            at_win0 = Some((process_cpu(), thread_cpu(), machine_busy(), now));
        }
        if now < next_tick {
            std::thread::sleep((next_tick - now).min(Duration::from_millis(20)));
            continue;
        }
        next_tick += period;
        if next_tick + period < Instant::now() {
            next_tick = Instant::now() + period;
        }
        let Some(idx) = guest.next_free() else {
            skipped += 1;
            continue;
        };
        let frame_no = draws.len() as u64;
        guest.render_into(idx, frame_no)?;
        if current != Some(idx) {
            let buf = guest.buffer(idx).expect("index from next_free");
            shim.gl_scanout(
                Some(spice_shim_cli::guest::scanout_info(buf)),
                vec![buf.dup_fd()?],
            )?;
            current = Some(idx);
        }
        let cookie = frame_no + 1;
        guest.mark_busy(idx, cookie)?;
        cookie_back.push(None);
        draws.push(Instant::now());
        shim.gl_draw(Rect { x: 0, y: 0, w, h }, cookie);
    }
    let (cpu0, threads0, busy0, t0) = at_win0.ok_or_else(|| anyhow!("the window never started"))?;
    let (cpu1, threads1, busy1, t1) = (process_cpu(), thread_cpu(), machine_busy(), Instant::now());
    let cpu = cpu1.saturating_sub(cpu0);
    let (cpu_host, cpu_client) = split_cpu(&threads0, &threads1);
    let others = busy1.saturating_sub(busy0).saturating_sub(cpu);

    // Let the last frames through, then stop the client and the server.
    let drain_end = Instant::now() + DRAIN;
    while Instant::now() < drain_end {
        take_back(&mut guest, &mut cookie_back);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The client's counters while it is still connected (its encoder is counted until it is
    // retired after the client leaves).
    let stats = shim.stats();
    stop.store(true, Ordering::Release);
    let client = client
        .join()
        .map_err(|_| anyhow!("the client thread panicked"))?;
    let (decoded, decoder_problems) = decoder.finish();
    let final_stats = shim.shutdown();
    take_back(&mut guest, &mut cookie_back);

    Ok(CaseResult {
        case,
        draws,
        skipped,
        cookie_back,
        window: (t0, t1),
        cpu,
        cpu_host,
        cpu_client,
        others,
        client,
        decoded,
        decoder_problems,
        stats,
        final_stats,
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis and tables.

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `later - earlier` in ms, negative if `later` is earlier.
fn diff_ms(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        ms(later - earlier)
    } else {
        -ms(earlier - later)
    }
}

struct Analysis {
    label: String,
    // Latency over the frames drawn in the window.
    measured: usize,
    e2e: Option<(f64, f64, f64)>,
    server: Option<(f64, f64, f64)>,
    decode: Option<(f64, f64, f64)>,
    cookie: Option<(f64, f64, f64)>,
    // Frames over the whole run.
    drawn: usize,
    skipped: u64,
    returned: u64,
    encoded: u64,
    sent: u64,
    dropped: u64,
    data: usize,
    decoded: usize,
    unreadable: usize,
    distinct: usize,
    first_last: Option<(u32, u32)>,
    gaps: Vec<u32>,
    repeats: usize,
    /// Decoded pictures whose STREAM_DATA index is missing, repeated or out of order.
    mapping_errors: usize,
    /// STREAM_DATA messages that produced no picture.
    never_decoded: usize,
    // CPU in the window.
    window_drawn: usize,
    window_secs: f64,
    cpu_ms: f64,
    host_ms: f64,
    client_ms: f64,
    server_ms: f64,
    others_pct: f64,
    problems: Vec<String>,
}

fn analyse(r: &CaseResult) -> Analysis {
    let (win0, win1) = r.window;
    let in_window = |n: usize| r.draws[n] >= win0 && r.draws[n] < win1;

    // First picture of every counter; the STREAM_DATA index it came from.
    let mut first: HashMap<u32, (Instant, Option<u64>)> = HashMap::new();
    let mut unreadable = 0;
    let mut repeats = 0;
    let mut mapping_errors = 0;
    let mut last_index: Option<u64> = None;
    let mut decoded_indices = BTreeSet::new();
    for d in &r.decoded {
        match d.data_index {
            Some(k)
                if last_index.is_none_or(|l| k > l) && (k as usize) < r.client.arrivals.len() =>
            {
                last_index = Some(k);
                decoded_indices.insert(k);
            }
            _ => mapping_errors += 1,
        }
        match d.counter {
            Some(n) if (n as usize) < r.draws.len() => {
                if let std::collections::hash_map::Entry::Vacant(e) = first.entry(n) {
                    e.insert((d.at, d.data_index));
                } else {
                    repeats += 1;
                }
            }
            _ => unreadable += 1,
        }
    }
    let never_decoded = r.client.arrivals.len() - decoded_indices.len();

    let (mut e2e, mut server, mut decode, mut cookie) = (vec![], vec![], vec![], vec![]);
    let mut measured = 0;
    let mut problems = Vec::new();
    let mut negative = 0;
    for (&n, &(at, k)) in &first {
        if !in_window(n as usize) {
            continue;
        }
        measured += 1;
        let drawn = r.draws[n as usize];
        e2e.push(diff_ms(at, drawn));
        if let Some(arrival) = k.and_then(|k| r.client.arrivals.get(k as usize)) {
            let s = diff_ms(*arrival, drawn);
            if s < 0.0 {
                negative += 1;
            }
            server.push(s);
            decode.push(diff_ms(at, *arrival));
        }
    }
    if negative > 0 {
        problems.push(format!(
            "{negative} frames whose STREAM_DATA arrived before their gl_draw: the PTS mapping is wrong"
        ));
    }
    for (n, back) in r.cookie_back.iter().enumerate() {
        if let (true, Some(b)) = (in_window(n), back) {
            cookie.push(diff_ms(*b, r.draws[n]));
        }
    }

    if let Some(dir) = std::env::var_os("E2E_BENCH_DUMP") {
        dump_frames(std::path::Path::new(&dir), r, &first);
    }

    let seen: BTreeSet<u32> = first.keys().copied().collect();
    let first_last = seen.first().copied().zip(seen.last().copied());
    let gaps: Vec<u32> = match first_last {
        Some((a, b)) => (a..=b).filter(|n| !seen.contains(n)).collect(),
        None => Vec::new(),
    };

    let codec = r.case.codec;
    let encoded = r
        .stats
        .encoded
        .iter()
        .filter(|(c, _)| *c == codec)
        .map(|(_, n)| n)
        .sum();
    let (sent, dropped) = r
        .stats
        .clients
        .iter()
        .fold((0, 0), |(s, d), c| (s + c.sent, d + c.dropped));
    if r.stats.clients.len() != 1 {
        problems.push(format!(
            "{} clients in the shim's stats, expected 1",
            r.stats.clients.len()
        ));
    }
    let ledger = &r.final_stats.ledger;
    if ledger.drawn != ledger.returned || ledger.drawn != r.draws.len() as u64 {
        problems.push(format!(
            "COOKIE MISMATCH: host drew {}, ledger drawn {}, returned {}",
            r.draws.len(),
            ledger.drawn,
            ledger.returned
        ));
    }
    let host_back = r.cookie_back.iter().filter(|b| b.is_some()).count();
    if host_back != r.draws.len() {
        problems.push(format!(
            "COOKIE MISMATCH: the host got {host_back} of its {} cookies back",
            r.draws.len()
        ));
    }
    if let Some(e) = &r.client.error {
        problems.push(format!("client: {e}"));
    }
    if r.client.push_errors > 0 {
        problems.push(format!(
            "{} buffers refused by the decoder's appsrc",
            r.client.push_errors
        ));
    }
    if r.client.sized > 0 {
        problems.push(format!(
            "{} STREAM_DATA_SIZED messages (not counted)",
            r.client.sized
        ));
    }
    if r.client.stream_creates != 1 {
        problems.push(format!(
            "{} STREAM_CREATE messages",
            r.client.stream_creates
        ));
    }
    if r.client.codec != Some(codec.to_u8()) {
        problems.push(format!(
            "stream codec {:?}, expected {}",
            r.client.codec,
            codec.to_u8()
        ));
    }
    problems.extend(r.decoder_problems.iter().cloned());

    let window_drawn = (0..r.draws.len()).filter(|&n| in_window(n)).count();
    let per_frame = |d: Duration| ms(d) / window_drawn.max(1) as f64;
    let window_secs = (win1 - win0).as_secs_f64();
    Analysis {
        label: r.case.label(),
        measured,
        e2e: summary(&mut e2e),
        server: summary(&mut server),
        decode: summary(&mut decode),
        cookie: summary(&mut cookie),
        drawn: r.draws.len(),
        skipped: r.skipped,
        returned: ledger.returned,
        encoded,
        sent,
        dropped,
        data: r.client.arrivals.len(),
        decoded: r.decoded.len(),
        unreadable,
        distinct: seen.len(),
        first_last,
        gaps,
        repeats,
        mapping_errors,
        never_decoded,
        window_drawn,
        window_secs,
        cpu_ms: per_frame(r.cpu),
        host_ms: per_frame(r.cpu_host),
        client_ms: per_frame(r.cpu_client),
        server_ms: per_frame(r.cpu.saturating_sub(r.cpu_host + r.cpu_client)),
        others_pct: 100.0 * r.others.as_secs_f64() / (window_secs * nproc() as f64),
        problems,
    }
}

/// Writes one CSV line per drawn frame to `<dir>/<codec>-<w>x<h>-<fps>.csv`: draw time from the
/// start, wire, e2e and cookie latency (ms, empty when unknown) and the STREAM_DATA size.
fn dump_frames(
    dir: &std::path::Path,
    r: &CaseResult,
    first: &HashMap<u32, (Instant, Option<u64>)>,
) {
    let c = r.case;
    let path = dir.join(format!(
        "{}-{}x{}-{}.csv",
        c.codec.name(),
        c.width,
        c.height,
        c.fps
    ));
    let Some(&t0) = r.draws.first() else { return };
    let mut csv = String::from("frame,draw_ms,wire_ms,e2e_ms,cookie_ms,bytes\n");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
    for (n, &drawn) in r.draws.iter().enumerate() {
        let pic = first.get(&(n as u32));
        let k = pic.and_then(|(_, k)| *k).map(|k| k as usize);
        let wire = k
            .and_then(|k| r.client.arrivals.get(k))
            .map(|a| diff_ms(*a, drawn));
        let bytes = k.and_then(|k| r.client.sizes.get(k)).map(|b| b.to_string());
        csv.push_str(&format!(
            "{n},{:.2},{},{},{},{}\n",
            diff_ms(drawn, t0),
            opt(wire),
            opt(pic.map(|(at, _)| diff_ms(*at, drawn))),
            opt(r.cookie_back[n].map(|b| diff_ms(b, drawn))),
            bytes.unwrap_or_default()
        ));
    }
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, csv)) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// A markdown table with right-aligned numbers and padded columns.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push_str(&format!(
        "|{}|\n",
        widths
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            })
            .collect::<Vec<_>>()
            .join("|")
    ));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn three(s: Option<(f64, f64, f64)>) -> [String; 3] {
    match s {
        Some((a, b, c)) => [format!("{a:.1}"), format!("{b:.1}"), format!("{c:.1}")],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

fn print_tables(all: &[Analysis]) {
    println!("### Latency (ms), frames drawn in the measured window\n");
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            let [e1, e2, e3] = three(a.e2e);
            let [s1, s2, s3] = three(a.server);
            let [d1, _, _] = three(a.decode);
            let [c1, _, _] = three(a.cookie);
            vec![
                a.label.clone(),
                a.measured.to_string(),
                e1,
                e2,
                e3,
                s1,
                s2,
                s3,
                d1,
                c1,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "case",
                "frames",
                "e2e median",
                "e2e p95",
                "e2e max",
                "wire median",
                "wire p95",
                "wire max",
                "decode median",
                "cookie median",
            ],
            &rows
        )
    );
    println!(
        "\ne2e: gl_draw → picture out of the client's decoder. wire: gl_draw → STREAM_DATA fully \
         read by the client.\ndecode: STREAM_DATA read → picture out of the decoder. cookie: \
         gl_draw → cookie back at the host.\n"
    );

    println!("### Frames, whole run (warm-up, window and drain)\n");
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            vec![
                a.label.clone(),
                a.drawn.to_string(),
                a.skipped.to_string(),
                a.returned.to_string(),
                a.encoded.to_string(),
                format!("{}/{}", a.sent, a.dropped),
                a.data.to_string(),
                a.decoded.to_string(),
                a.unreadable.to_string(),
                a.distinct.to_string(),
                a.first_last
                    .map(|(f, l)| format!("{f}..{l}"))
                    .unwrap_or_else(|| "-".into()),
                a.gaps.len().to_string(),
                a.repeats.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "case",
                "drawn",
                "skipped ticks",
                "cookies back",
                "encoded",
                "sent/dropped",
                "STREAM_DATA",
                "decoded",
                "unreadable",
                "distinct",
                "counters",
                "gaps",
                "repeats",
            ],
            &rows
        )
    );
    println!(
        "\nskipped ticks: host ticks with every buffer still in use. sent/dropped: the shim's \
         counters for the client.\ngaps: counters missing between the first and the last seen. \
         repeats: pictures of a counter already seen.\n"
    );

    println!("### CPU in the measured window (ms per drawn frame, whole process)\n");
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|a| {
            vec![
                a.label.clone(),
                a.window_drawn.to_string(),
                format!("{:.1}", a.window_drawn as f64 / a.window_secs),
                format!("{:.2}", a.cpu_ms),
                format!("{:.2}", a.host_ms),
                format!("{:.2}", a.server_ms),
                format!("{:.2}", a.client_ms),
                format!("{:.0}", a.others_pct),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "case",
                "drawn",
                "fps",
                "CPU total",
                "host",
                "server",
                "client",
                "others %",
            ],
            &rows
        )
    );
    println!(
        "\nhost: the drawing thread (render + gl_scanout + gl_draw). client: the SPICE reader and \
         the decoder's thread.\nserver: everything else (encoder pipeline, shim threads). others \
         %: share of all cores used by other processes.\n"
    );

    for a in all {
        let mut notes = Vec::new();
        if !a.gaps.is_empty() {
            let shown: Vec<String> = a.gaps.iter().take(12).map(|n| n.to_string()).collect();
            notes.push(format!(
                "missing counters: {}{}",
                shown.join(", "),
                if a.gaps.len() > 12 { ", …" } else { "" }
            ));
        }
        if a.never_decoded > 0 {
            notes.push(format!(
                "{} STREAM_DATA produced no picture",
                a.never_decoded
            ));
        }
        if a.mapping_errors > 0 {
            notes.push(format!(
                "{} pictures not mapped one-to-one to a STREAM_DATA",
                a.mapping_errors
            ));
        }
        notes.extend(a.problems.iter().cloned());
        if !notes.is_empty() {
            println!("{}: {}", a.label, notes.join("; "));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || common::quick_env("E2E_BENCH_QUICK");
    let (timing, mut cases): (Timing, Vec<Case>) = if quick {
        (QUICK, FULL_CASES[..1].to_vec())
    } else {
        (FULL, FULL_CASES.to_vec())
    };
    // E2E_BENCH_CASES=vp8,1080 keeps the cases whose label contains one of the words.
    if let Ok(words) = std::env::var("E2E_BENCH_CASES") {
        cases.retain(|c| {
            let label = c.label();
            words
                .split(',')
                .any(|w| !w.trim().is_empty() && label.contains(w.trim()))
        });
    }

    gst::init().expect("gst::init");
    // The dmabuf allocator warns once per map of a memfd ("Failed to synchronize DMABuf"); that
    // is expected here, so GStreamer's own log stays quiet unless GST_DEBUG asks for it.
    if std::env::var_os("GST_DEBUG").is_none() {
        gst::log::set_default_threshold(gst::DebugLevel::None);
    }
    let started = Instant::now();
    print_header(quick, timing);

    let mut all = Vec::new();
    let mut failed = false;
    for &case in &cases {
        eprintln!("running {} …", case.label());
        match run_case(case, timing) {
            Ok(r) => {
                let a = analyse(&r);
                failed |= a.problems.iter().any(|p| p.starts_with("COOKIE"));
                // Every figure must exist; their size is never judged.
                for (figure, ok) in [
                    ("end-to-end latency", a.e2e.is_some()),
                    ("server latency", a.server.is_some()),
                    ("decode latency", a.decode.is_some()),
                    ("cookie latency", a.cookie.is_some()),
                    ("decoded frame", a.decoded > 0),
                    ("CPU time", a.cpu_ms > 0.0),
                ] {
                    if !ok {
                        println!("{}: FAILED: no {figure}", case.label());
                        failed = true;
                    }
                }
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
        "\ntotal benchmark time: {:.0} s; at the end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if failed {
        eprintln!("error: a case failed or a cookie did not come back (see above)");
        std::process::exit(1);
    }
}
