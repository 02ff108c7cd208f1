//! Encoder pipelines: one per codec, built from the codec's pipeline file (see
//! [`crate::pipeline_files`]), shared by every remote client that uses the codec. The appsink's
//! access units fan out to subscribers. Also: checking and probing pipeline texts, and the
//! table of encoders' bitrate properties and units.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstspicedmabuf::{DrawError, DrawRelease, Rect, Scanout, SpiceDmabufSrc};

use crate::proto::VideoCodec;

use crate::log::{self, CAT};

/// One encoded frame, as the appsink produced it.
#[derive(Debug)]
pub struct AccessUnit {
    /// The encoded bytes (kept as a GstBuffer: fanning out costs a refcount, not a copy).
    pub data: gst::Buffer,
    /// Whether a decoder can start here.
    pub keyframe: bool,
    /// Picture size.
    pub width: u32,
    pub height: u32,
    /// Sequence number within this pipeline.
    pub seq: u64,
}

/// Receives every access unit of a pipeline; runs on the appsink's streaming thread and must not
/// block.
pub type Subscriber = Arc<dyn Fn(&Arc<AccessUnit>) + Send + Sync>;

/// Strips `#` comment lines so the file can carry documentation.
pub fn pipeline_text(raw: &str) -> String {
    raw.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The description on one line, for logs.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of the pipeline `codec` would use from `dir`: the first of its files (see
/// [`crate::pipeline_files`]) that parses and starts here. GStreamer must be initialised and
/// `spicedmabufsrc` registered.
pub fn read_pipeline(dir: &Path, codec: VideoCodec) -> Result<String, String> {
    crate::pipeline_files::choose(dir, codec, &probe).map(|c| c.text)
}

struct Parsed {
    pipeline: gst::Pipeline,
    src: SpiceDmabufSrc,
    sink: gst_app::AppSink,
    enc: Option<gst::Element>,
}

fn parse(text: &str) -> Result<Parsed, String> {
    let mut ctx = gst::ParseContext::new();
    let element = gst::parse::launch_full(text, Some(&mut ctx), gst::ParseFlags::FATAL_ERRORS)
        .map_err(|e| {
            // (The context also lists the element of an unknown property: only trust it for
            // a missing element.)
            let missing = match e.kind::<gst::ParseError>() {
                Some(gst::ParseError::NoSuchElement) => ctx.missing_elements(),
                _ => Vec::new(),
            };
            match missing.len() {
                0 => format!("does not parse: {e}"),
                1 => format!("missing element {}", missing[0]),
                _ => format!("missing elements {}", missing.join(", ")),
            }
        })?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the description is not a pipeline (one element only?)".to_string())?;
    let src = pipeline
        .by_name("src")
        .ok_or("no element named 'src'")?
        .downcast::<SpiceDmabufSrc>()
        .map_err(|_| "the element named 'src' is not a spicedmabufsrc".to_string())?;
    let sink = pipeline
        .by_name("sink")
        .ok_or("no element named 'sink'")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| "the element named 'sink' is not an appsink".to_string())?;
    let enc = pipeline.by_name("enc");
    Ok(Parsed {
        pipeline,
        src,
        sink,
        enc,
    })
}

/// Checks that `text` parses into a usable pipeline on this machine (every element exists, the
/// `src` and `sink` ends are there); nothing is started.
pub fn check(text: &str) -> Result<(), String> {
    parse(text).map(|p| {
        let _ = p.pipeline.set_state(gst::State::Null);
    })
}

/// How long a probe watches a started pipeline for an error.
const PROBE_GRACE: Duration = Duration::from_millis(50);

/// Checks that `text` parses here ([`check`]) and that the pipeline starts: it is brought to
/// PLAYING with no frame pushed, watched for an error for a moment, and stopped. This finds
/// encoders whose elements exist but whose device does not open (a VA-API or CUDA encoder
/// without its GPU, a V4L2 device gone or busy) and other elements that fail to start (a
/// `filesink` that cannot open its file). A failure that shows only with frames (an encoder that
/// rejects the picture size, an NVENC session limit) is left to the encoder hub, which moves on
/// to the codec's next file when a pipeline keeps failing.
pub fn probe(text: &str) -> Result<(), String> {
    let Parsed { pipeline, .. } = parse(text)?;
    let result = start_briefly(&pipeline);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn start_briefly(pipeline: &gst::Pipeline) -> Result<(), String> {
    let bus = pipeline.bus().ok_or("pipeline without a bus")?;
    // The first error posted within `wait` (those already queued with no wait at all).
    let error = |wait: Duration| -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))?;
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(format!(
                    "{}: {}",
                    e.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    e.error()
                ));
            }
        }
    };
    if pipeline.set_state(gst::State::Playing).is_err() {
        let why = error(Duration::ZERO).unwrap_or_else(|| "the change to PLAYING failed".into());
        return Err(format!("does not start: {why}"));
    }
    // Every element's state change has run (with a live source the sinks stay ASYNC until the
    // first frame, so waiting for the state to settle would wait for nothing); an element that
    // fails on one of its own threads posts an error soon after.
    match error(PROBE_GRACE) {
        Some(why) => Err(format!("does not start: {why}")),
        None => Ok(()),
    }
}

/// Where an encoder takes its target bitrate, and in which unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitrateProperty {
    /// A numeric property in kbit/s.
    Kbps(&'static str),
    /// A numeric property in bit/s.
    Bps(&'static str),
    /// A field in bit/s of a `GstStructure` property: V4L2 encoders' `extra-controls` (V4L2
    /// control names), field `video_bitrate`.
    ControlBps {
        property: &'static str,
        field: &'static str,
    },
}

/// The bitrate property of an encoder, by element factory name (GStreamer 1.22):
///
/// | encoder | property | unit |
/// |---|---|---|
/// | `x264enc`, `x265enc` | `bitrate` | kbit/s |
/// | `vah264enc`, `vah265enc` (and `va<device>h264enc`, `vah264lpenc`, …), `vaapih264enc` | `bitrate` | kbit/s |
/// | `nvh264enc`, `nvh265enc`, `nvcudah264enc`, `nvautogpuh264enc`, … | `bitrate` | kbit/s |
/// | `qsvh264enc`, `qsvh265enc`, `msdkh264enc`, … | `bitrate` | kbit/s |
/// | `v4l2h264enc`, `v4l2h265enc` (and `v4l2video<N>h264enc`), … | `extra-controls`, field `video_bitrate` | bit/s |
/// | `vp8enc`, `vp9enc` | `target-bitrate` | bit/s |
/// | `openh264enc` | `bitrate` | bit/s |
///
/// JPEG encoders have none (`None`), and so has an encoder not in the table.
pub fn bitrate_property(factory: &str) -> Option<BitrateProperty> {
    const KBPS: BitrateProperty = BitrateProperty::Kbps("bitrate");
    let hw = |prefix: &str| factory.starts_with(prefix) && factory.ends_with("enc");
    if factory.contains("jpeg") {
        return None;
    }
    match factory {
        "x264enc" | "x265enc" => Some(KBPS),
        "vp8enc" | "vp9enc" => Some(BitrateProperty::Bps("target-bitrate")),
        "openh264enc" => Some(BitrateProperty::Bps("bitrate")),
        // VA-API (va, and the older vaapi plugin), NVENC, Quick Sync (qsv, msdk).
        _ if hw("va") || hw("nv") || hw("qsv") || hw("msdk") => Some(KBPS),
        _ if hw("v4l2") => Some(BitrateProperty::ControlBps {
            property: "extra-controls",
            field: "video_bitrate",
        }),
        _ => None,
    }
}

/// What an encoder not in [`bitrate_property`]'s table is assumed to take: `bitrate` in
/// kbit/s, else `target-bitrate` in bit/s, if it has such a property.
fn guess_bitrate_property(enc: &gst::Element) -> Option<BitrateProperty> {
    if enc.find_property("bitrate").is_some() {
        Some(BitrateProperty::Kbps("bitrate"))
    } else if enc.find_property("target-bitrate").is_some() {
        Some(BitrateProperty::Bps("target-bitrate"))
    } else {
        None
    }
}

/// A numeric value as u64 (negative values as 0).
fn value_u64(v: &glib::Value) -> Option<u64> {
    v.get::<u32>()
        .map(u64::from)
        .or_else(|_| v.get::<u64>())
        .or_else(|_| v.get::<i32>().map(|x| x.max(0) as u64))
        .or_else(|_| v.get::<i64>().map(|x| x.max(0) as u64))
        .ok()
}

/// `v` as a value of `pspec`'s numeric type, clamped to its range.
fn numeric_value(pspec: &glib::ParamSpec, v: u64) -> Option<glib::Value> {
    use glib::{ParamSpecInt, ParamSpecInt64, ParamSpecUInt, ParamSpecUInt64};
    if let Some(p) = pspec.downcast_ref::<ParamSpecUInt>() {
        let v = v.clamp(u64::from(p.minimum()), u64::from(p.maximum())) as u32;
        return Some(v.to_value());
    }
    if let Some(p) = pspec.downcast_ref::<ParamSpecInt>() {
        let v = (v.min(i32::MAX as u64) as i32).clamp(p.minimum(), p.maximum());
        return Some(v.to_value());
    }
    if let Some(p) = pspec.downcast_ref::<ParamSpecUInt64>() {
        return Some(v.clamp(p.minimum(), p.maximum()).to_value());
    }
    if let Some(p) = pspec.downcast_ref::<ParamSpecInt64>() {
        let v = (v.min(i64::MAX as u64) as i64).clamp(p.minimum(), p.maximum());
        return Some(v.to_value());
    }
    None
}

/// The value of `field` of a V4L2 controls structure, in kbit/s (`None` if absent or 0).
pub fn control_kbps(controls: &gst::StructureRef, field: &str) -> Option<u32> {
    let v = controls.value(field).ok()?;
    let bps = value_u64(v).or_else(|| v.get::<&str>().ok()?.trim().parse().ok())?;
    u32::try_from(bps / 1000).ok().filter(|k| *k > 0)
}

/// `controls` (or a new `controls` structure) with `field` set to `kbps` in bit/s, as a V4L2
/// integer control.
pub fn with_control_kbps(
    controls: Option<gst::Structure>,
    field: &str,
    kbps: u32,
) -> gst::Structure {
    let mut s = controls.unwrap_or_else(|| gst::Structure::new_empty("controls"));
    let bps = (u64::from(kbps) * 1000).min(i32::MAX as u64) as i32;
    s.set(field, bps);
    s
}

impl BitrateProperty {
    /// The bitrate `enc` is set to, in kbit/s (`None` when unset, 0 or "automatic").
    pub fn read_kbps(self, enc: &gst::Element) -> Option<u32> {
        let numeric = |name: &str| -> Option<u64> {
            enc.find_property(name)?;
            value_u64(&enc.property_value(name))
        };
        let kbps = match self {
            BitrateProperty::Kbps(name) => u32::try_from(numeric(name)?).ok()?,
            BitrateProperty::Bps(name) => u32::try_from(numeric(name)? / 1000).ok()?,
            BitrateProperty::ControlBps { property, field } => {
                enc.find_property(property)?;
                let s = enc
                    .property_value(property)
                    .get::<Option<gst::Structure>>()
                    .ok()??;
                control_kbps(&s, field)?
            }
        };
        (kbps > 0).then_some(kbps)
    }

    /// Sets `enc`'s bitrate to `kbps` kbit/s, in the property's unit (clamped to its range).
    pub fn write_kbps(self, enc: &gst::Element, kbps: u32) -> Result<(), String> {
        let writable = |name: &str| -> Result<glib::ParamSpec, String> {
            let pspec = enc
                .find_property(name)
                .ok_or_else(|| format!("no property '{name}'"))?;
            if !pspec.flags().contains(glib::ParamFlags::WRITABLE)
                || pspec.flags().contains(glib::ParamFlags::CONSTRUCT_ONLY)
            {
                return Err(format!("property '{name}' is not writable"));
            }
            Ok(pspec)
        };
        let numeric = |name: &str, v: u64| -> Result<(), String> {
            let pspec = writable(name)?;
            let value = numeric_value(&pspec, v)
                .ok_or_else(|| format!("property '{name}' is not an integer"))?;
            enc.set_property_from_value(name, &value);
            Ok(())
        };
        match self {
            BitrateProperty::Kbps(name) => numeric(name, u64::from(kbps)),
            BitrateProperty::Bps(name) => numeric(name, u64::from(kbps) * 1000),
            BitrateProperty::ControlBps { property, field } => {
                let pspec = writable(property)?;
                if pspec.value_type() != gst::Structure::static_type() {
                    return Err(format!("property '{property}' is not a GstStructure"));
                }
                let current = enc
                    .property_value(property)
                    .get::<Option<gst::Structure>>()
                    .ok()
                    .flatten();
                let s = with_control_kbps(current, field, kbps);
                enc.set_property_from_value(property, &Some(s).to_value());
                Ok(())
            }
        }
    }
}

/// A running encoder pipeline.
pub struct Encoder {
    codec: VideoCodec,
    pipeline: gst::Pipeline,
    src: SpiceDmabufSrc,
    enc: Option<gst::Element>,
    subscribers: Arc<Mutex<HashMap<u64, Subscriber>>>,
    failed: Arc<AtomicBool>,
    encoded: Arc<AtomicU64>,
    bus_thread: Option<JoinHandle<()>>,
    stop_bus: Arc<AtomicBool>,
    keyframes: KeyframeRequester,
    flush: Arc<Mutex<FlushState>>,
    /// Where `enc` takes its bitrate ([`bitrate_property`]).
    bitrate_prop: Option<BitrateProperty>,
    /// Bitrate configured in the pipeline text, kbit/s (the ceiling for rate control).
    configured_kbps: Option<u32>,
    /// Bitrate set last, kbit/s.
    current_kbps: std::sync::atomic::AtomicU32,
    /// Whether the encoder was seen keeping its bitrate after a change (logged once).
    bitrate_kept: AtomicBool,
    /// The frame rate actually encoded, and the scale last applied to the bitrate property.
    rate_scale: Mutex<RateScale>,
}

/// Encoders budget their bitrate per frame at the nominal frame rate of their caps (the
/// source announces 60 fps by default); a guest drawing 30 frames a second would get half the
/// bitrate asked for. The bitrate written to the encoder is the stream's target × nominal /
/// measured frame rate, so that the bitrate in a pipeline text and rate control's target mean
/// the stream's kbit/s.
#[derive(Debug)]
pub struct RateScale {
    /// (when, frames encoded so far), over the last [`RateScale::WINDOW`].
    samples: std::collections::VecDeque<(Instant, u64)>,
    /// Factor applied to the bitrate property now.
    applied: f64,
}

impl Default for RateScale {
    fn default() -> Self {
        Self {
            samples: Default::default(),
            applied: 1.0,
        }
    }
}

impl RateScale {
    /// Span the frame rate is measured over.
    pub const WINDOW: Duration = Duration::from_secs(2);
    /// Bounds of the factor (a source idle for long does not make one frame huge).
    pub const MIN: f64 = 0.25;
    pub const MAX: f64 = 4.0;
    /// Below this measured rate (frames/s) the factor is left as it is: updates are sporadic.
    pub const MIN_FPS: f64 = 3.0;

    /// Records the frame counter at `now`.
    pub fn sample(&mut self, now: Instant, frames: u64) {
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.duration_since(t) >= Self::WINDOW)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, frames));
    }

    /// Frames per second over the window, once at least half of it is covered.
    pub fn fps(&self) -> Option<f64> {
        let (&(t0, f0), &(t1, f1)) = (self.samples.front()?, self.samples.back()?);
        let span = t1.duration_since(t0).as_secs_f64();
        (span >= Self::WINDOW.as_secs_f64() / 2.0).then(|| f1.saturating_sub(f0) as f64 / span)
    }

    /// The factor for a `nominal` frame rate (frames/s) if it should change: by more than
    /// 10 % from the applied one.
    pub fn update(&mut self, nominal: f64) -> Option<f64> {
        let fps = self.fps().filter(|&f| f >= Self::MIN_FPS)?;
        if nominal <= 0.0 {
            return None;
        }
        let want = (nominal / fps).clamp(Self::MIN, Self::MAX);
        ((want / self.applied - 1.0).abs() > 0.1).then(|| {
            self.applied = want;
            want
        })
    }

    /// `kbps` scaled by the applied factor.
    pub fn scale(&self, kbps: u32) -> u32 {
        (f64::from(kbps) * self.applied)
            .round()
            .min(f64::from(u32::MAX)) as u32
    }
}

/// When the last frame of a burst went out, for [`Encoder::flush_if_idle`].
#[derive(Debug, Default)]
struct FlushState {
    last_push: Option<Instant>,
    last_au: Option<Instant>,
    pending: bool,
    /// Frames pushed since the pipeline was last silent for [`FLUSH_AFTER`]. A short burst is
    /// a lone change (a key typed, a menu opened; QEMU may send one change as two refreshes),
    /// pushed out after [`FLUSH_ISOLATED_AFTER`].
    burst: u32,
}

impl FlushState {
    /// How long after its access unit the last frame is pushed out.
    fn wait(&self) -> Duration {
        if self.burst <= LONE_BURST {
            FLUSH_ISOLATED_AFTER
        } else {
            FLUSH_AFTER
        }
    }
}

/// How long an H.264/H.265 pipeline stays silent before its last frame is pushed out.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// The same after a lone frame: nothing else is coming soon, so the follow-up goes at once
/// instead of holding the change back from the person waiting for it.
pub const FLUSH_ISOLATED_AFTER: Duration = Duration::from_millis(5);
/// A burst of at most this many frames is a lone change.
const LONE_BURST: u32 = 3;

/// Asks an encoder pipeline for a keyframe. Requests closer than 200 ms to the previous one are
/// merged, so many clients asking at once cost one keyframe.
#[derive(Clone)]
pub struct KeyframeRequester {
    pad: gst::glib::WeakRef<gst::Pad>,
    last: Arc<Mutex<Option<Instant>>>,
    codec: VideoCodec,
}

impl KeyframeRequester {
    const MIN_INTERVAL: Duration = Duration::from_millis(200);

    /// Sends an upstream force-key-unit event (with SPS/PPS). `force` skips the rate limit.
    pub fn request(&self, force: bool) {
        {
            let mut last = self.last.lock().unwrap();
            if !force && last.is_some_and(|t| t.elapsed() < Self::MIN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Some(pad) = self.pad.upgrade() else {
            return;
        };
        let ev = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        // Pushed from the appsink's sink pad: it travels upstream to the encoder.
        if !pad.push_event(ev) {
            gst::debug!(CAT, "{}: force-key-unit not handled", self.codec.name());
        }
    }
}

impl Encoder {
    /// Builds and starts the pipeline for `codec` from `text`.
    pub fn start(codec: VideoCodec, text: &str) -> Result<Self, String> {
        let Parsed {
            pipeline,
            src,
            sink,
            enc,
        } = parse(text)?;
        let subscribers: Arc<Mutex<HashMap<u64, Subscriber>>> = Arc::default();
        let flush: Arc<Mutex<FlushState>> = Arc::default();
        let encoded = Arc::new(AtomicU64::new(0));
        sink.set_property("sync", false);
        sink.set_property("max-buffers", 4u32);
        sink.set_property("drop", false);
        sink.set_property("enable-last-sample", false);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample({
                    let subscribers = subscribers.clone();
                    let flush = flush.clone();
                    let encoded = encoded.clone();
                    move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let Some(buffer) = sample.buffer_owned() else {
                            return Ok(gst::FlowSuccess::Ok);
                        };
                        let (width, height) = sample
                            .caps()
                            .and_then(|c| c.structure(0))
                            .map(|s| {
                                (
                                    s.get::<i32>("width").unwrap_or(0) as u32,
                                    s.get::<i32>("height").unwrap_or(0) as u32,
                                )
                            })
                            .unwrap_or((0, 0));
                        let seq = encoded.fetch_add(1, Ordering::Relaxed);
                        flush.lock().unwrap().last_au = Some(Instant::now());
                        let au = Arc::new(AccessUnit {
                            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                            data: buffer,
                            width,
                            height,
                            seq,
                        });
                        let subs: Vec<Subscriber> =
                            subscribers.lock().unwrap().values().cloned().collect();
                        for s in subs {
                            s(&au);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    }
                })
                .build(),
        );

        let failed = Arc::new(AtomicBool::new(false));
        let stop_bus = Arc::new(AtomicBool::new(false));
        let bus = pipeline.bus().ok_or("pipeline without a bus")?;
        let bus_thread = std::thread::Builder::new()
            .name(format!("shim-bus-{}", codec.name()))
            .spawn({
                let failed = failed.clone();
                let stop_bus = stop_bus.clone();
                let weak = pipeline.downgrade();
                move || {
                    while !stop_bus.load(Ordering::Acquire) {
                        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
                            continue;
                        };
                        match msg.view() {
                            gst::MessageView::Error(e) => {
                                log::error(&format!(
                                    "{} pipeline error from {}: {} ({}); stopping it, its frames are released",
                                    codec.name(),
                                    e.src().map(|s| s.path_string()).unwrap_or_default(),
                                    e.error(),
                                    e.debug()
                                        .map(|d| d.replace('\n', " "))
                                        .unwrap_or_default()
                                ));
                                failed.store(true, Ordering::Release);
                                // Frees every frame in flight: their cookies return now.
                                if let Some(p) = weak.upgrade() {
                                    let _ = p.set_state(gst::State::Null);
                                }
                            }
                            gst::MessageView::Warning(w) => {
                                log::warn(&format!("{} pipeline: {}", codec.name(), w.error()));
                            }
                            _ => {}
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?;

        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            stop_bus.store(true, Ordering::Release);
            let _ = bus_thread.join();
            let _ = pipeline.set_state(gst::State::Null);
            return Err(format!("cannot start the {} pipeline: {e}", codec.name()));
        }
        log::info(&format!(
            "started the {} encoder pipeline: {}",
            codec.name(),
            one_line(text)
        ));
        let keyframes = KeyframeRequester {
            pad: sink
                .static_pad("sink")
                .ok_or("appsink without a sink pad")?
                .downgrade(),
            last: Arc::default(),
            codec,
        };
        let bitrate_prop = enc.as_ref().and_then(|e| {
            let factory = e
                .factory()
                .map(|f| f.name().to_string())
                .unwrap_or_default();
            bitrate_property(&factory).or_else(|| {
                let guess = guess_bitrate_property(e);
                if let Some(g) = guess {
                    log::info(&format!(
                        "{}: {factory} is not in the bitrate table; assuming {g:?}",
                        codec.name()
                    ));
                }
                guess
            })
        });
        let configured_kbps = enc
            .as_ref()
            .zip(bitrate_prop)
            .and_then(|(e, p)| p.read_kbps(e));
        if let Some(k) = configured_kbps {
            log::debug(&format!(
                "{}: configured bitrate {k} kbit/s ({bitrate_prop:?})",
                codec.name()
            ));
        }
        Ok(Self {
            keyframes,
            flush,
            bitrate_prop,
            configured_kbps,
            bitrate_kept: AtomicBool::new(false),
            current_kbps: std::sync::atomic::AtomicU32::new(configured_kbps.unwrap_or(0)),
            rate_scale: Mutex::default(),
            codec,
            pipeline,
            src,
            enc,
            subscribers,
            failed,
            encoded,
            bus_thread: Some(bus_thread),
            stop_bus,
        })
    }

    /// The codec.
    pub fn codec(&self) -> VideoCodec {
        self.codec
    }

    /// Whether the pipeline hit an error (it is stopped then; make a new one).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The frame counter itself (still counting until the pipeline stopped).
    pub fn encoded_counter(&self) -> Arc<AtomicU64> {
        self.encoded.clone()
    }

    /// Frames encoded so far.
    pub fn encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// Adds a subscriber under `id`.
    pub fn subscribe(&self, id: u64, s: Subscriber) {
        self.subscribers.lock().unwrap().insert(id, s);
    }

    /// Removes subscriber `id`; returns how many are left.
    pub fn unsubscribe(&self, id: u64) -> usize {
        let mut subs = self.subscribers.lock().unwrap();
        subs.remove(&id);
        subs.len()
    }

    /// Number of subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers.lock().unwrap().len()
    }

    /// Sets the scanout frames are drawn from.
    pub fn push_scanout(&self, scanout: Option<Arc<Scanout>>) {
        self.src.push_scanout(scanout);
    }

    /// Queues a frame; `release` fires when the pipeline is done with it.
    pub fn push_draw(&self, rect: Rect, release: DrawRelease) -> Result<(), DrawError> {
        {
            let mut f = self.flush.lock().unwrap();
            let now = Instant::now();
            f.burst = if f.last_push.is_none_or(|p| now - p >= FLUSH_AFTER) {
                1
            } else {
                f.burst.saturating_add(1)
            };
            f.pending = true;
            f.last_push = Some(now);
        }
        self.src.push_draw(rect, release)
    }

    /// Pushes the last frame of a burst out to the clients.
    ///
    /// A client's H.264/H.265 parser (spice-gtk gives it no alignment) only knows a frame ended
    /// when the next start code arrives, so the last frame before the guest goes idle, or the
    /// only frame a joining client gets, would stay undecoded. When the pipeline has been silent
    /// for 100 ms after such a frame (5 ms after a lone change, [`FLUSH_ISOLATED_AFTER`]), the
    /// current scanout is encoded once more (no cookie; a near-empty P-frame) and that
    /// follow-up completes the previous frame at the client.
    pub fn flush_if_idle(&self, scanout: Option<&Arc<Scanout>>) {
        if !matches!(self.codec, VideoCodec::H264 | VideoCodec::H265) {
            return;
        }
        let Some(s) = scanout else { return };
        {
            let mut f = self.flush.lock().unwrap();
            let idle = match (f.last_push, f.last_au) {
                (Some(push), Some(au)) => au >= push && au.elapsed() >= f.wait(),
                _ => false,
            };
            if !f.pending || !idle {
                return;
            }
            f.pending = false;
        }
        log::debug(&format!(
            "{}: idle, pushing the last frame out",
            self.codec.name()
        ));
        let full = Rect {
            x: 0,
            y: 0,
            w: s.width(),
            h: s.height(),
        };
        let _ = self.src.push_draw(full, DrawRelease::new(0, |_, _| {}));
    }

    /// Asks the encoder for a keyframe with headers, as soon as possible.
    pub fn force_keyframe(&self) {
        self.keyframes.request(true);
    }

    /// A handle that asks this pipeline for keyframes (rate-limited), usable from any thread.
    pub fn keyframe_requester(&self) -> KeyframeRequester {
        self.keyframes.clone()
    }

    /// The bitrate configured in the pipeline text (kbit/s), if the encoder has one.
    pub fn configured_kbps(&self) -> Option<u32> {
        self.configured_kbps
    }

    /// The bitrate set last (the configured one until rate control changed it), kbit/s.
    pub fn current_kbps(&self) -> Option<u32> {
        self.configured_kbps
            .map(|_| self.current_kbps.load(Ordering::Relaxed))
    }

    /// Sets the stream's target bitrate in kbit/s: the encoder's bitrate property gets it in its
    /// unit ([`bitrate_property`]), scaled by nominal / measured frame rate ([`RateScale`]);
    /// nothing if it has none or the pipeline text sets none.
    pub fn set_bitrate_kbps(&self, kbps: u32) {
        if self.current_kbps.swap(kbps, Ordering::Relaxed) == kbps {
            return;
        }
        let scaled = self.rate_scale.lock().unwrap().scale(kbps);
        if scaled == kbps {
            log::info(&format!("{}: bitrate {kbps} kbit/s", self.codec.name()));
        } else {
            log::info(&format!(
                "{}: bitrate {kbps} kbit/s (encoder set to {scaled} for the frame rate)",
                self.codec.name()
            ));
        }
        self.write_bitrate(scaled);
    }

    /// Periodic care (every 50 ms or so): measures the frame rate and rescales the encoder's
    /// bitrate property when it moved ([`RateScale`]).
    pub fn rescale_bitrate(&self) {
        if self.enc.is_none() || self.bitrate_prop.is_none() || self.configured_kbps.is_none() {
            return;
        }
        let scaled = {
            let mut rs = self.rate_scale.lock().unwrap();
            rs.sample(Instant::now(), self.encoded.load(Ordering::Relaxed));
            let Some(nominal) = self.nominal_fps() else {
                return;
            };
            let Some(factor) = rs.update(nominal) else {
                return;
            };
            let kbps = self.current_kbps.load(Ordering::Relaxed);
            log::debug(&format!(
                "{}: {:.1} frames/s encoded, {nominal:.0} nominal: bitrate property ×{factor:.2}",
                self.codec.name(),
                rs.fps().unwrap_or(0.0)
            ));
            rs.scale(kbps)
        };
        self.write_bitrate(scaled);
    }

    /// The frame rate of the encoder's input caps (`None` if unknown or variable).
    fn nominal_fps(&self) -> Option<f64> {
        let caps = self.enc.as_ref()?.static_pad("sink")?.current_caps()?;
        let f = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
        (f.numer() > 0 && f.denom() > 0).then(|| f64::from(f.numer()) / f64::from(f.denom()))
    }

    /// Writes `kbps` to the encoder's bitrate property.
    fn write_bitrate(&self, kbps: u32) {
        let (Some(enc), Some(prop), Some(_)) = (&self.enc, self.bitrate_prop, self.configured_kbps)
        else {
            return;
        };
        if let Err(e) = prop.write_kbps(enc, kbps) {
            log::warn(&format!(
                "{}: cannot set the bitrate: {e}",
                self.codec.name()
            ));
            return;
        }
        // Some encoders keep the bitrate they started with (GStreamer 1.22's VA encoders).
        if let Some(now) = prop.read_kbps(enc)
            && now != kbps
            && !self.bitrate_kept.swap(true, Ordering::Relaxed)
        {
            log::info(&format!(
                "{}: the encoder keeps {now} kbit/s while encoding; rate control has no effect on it",
                self.codec.name()
            ));
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.subscribers.lock().unwrap().clear();
        // Going to NULL frees every frame still in the pipeline, which returns their cookies.
        let _ = self.pipeline.set_state(gst::State::Null);
        self.stop_bus.store(true, Ordering::Release);
        if let Some(t) = self.bus_thread.take() {
            let _ = t.join();
        }
        log::info(&format!(
            "stopped the {} encoder pipeline after {} frames",
            self.codec.name(),
            self.encoded()
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lone_change_is_pushed_out_sooner_than_a_burst() {
        let mut f = super::FlushState::default();
        for burst in 1..=super::LONE_BURST {
            f.burst = burst;
            assert_eq!(f.wait(), super::FLUSH_ISOLATED_AFTER);
        }
        f.burst = super::LONE_BURST + 1;
        assert_eq!(f.wait(), super::FLUSH_AFTER);
    }

    use super::*;

    fn init() {
        gst::init().unwrap();
        gstspicedmabuf::register_static().unwrap();
    }

    fn shipped(rel: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../pipelines")
            .join(rel);
        pipeline_text(&std::fs::read_to_string(path).unwrap())
    }

    #[test]
    fn the_bitrate_table_names_each_encoders_property_and_unit() {
        use BitrateProperty::*;
        let v4l2 = ControlBps {
            property: "extra-controls",
            field: "video_bitrate",
        };
        for (factory, expected) in [
            ("x264enc", Some(Kbps("bitrate"))),
            ("x265enc", Some(Kbps("bitrate"))),
            ("vah264enc", Some(Kbps("bitrate"))),
            ("vah265enc", Some(Kbps("bitrate"))),
            ("vah264lpenc", Some(Kbps("bitrate"))),
            ("varenderD129h264enc", Some(Kbps("bitrate"))),
            ("vaapih264enc", Some(Kbps("bitrate"))),
            ("nvh264enc", Some(Kbps("bitrate"))),
            ("nvh265enc", Some(Kbps("bitrate"))),
            ("nvcudah264enc", Some(Kbps("bitrate"))),
            ("nvautogpuh264enc", Some(Kbps("bitrate"))),
            ("nvh264device1enc", Some(Kbps("bitrate"))),
            ("qsvh264enc", Some(Kbps("bitrate"))),
            ("qsvh265enc", Some(Kbps("bitrate"))),
            ("msdkh264enc", Some(Kbps("bitrate"))),
            ("v4l2h264enc", Some(v4l2)),
            ("v4l2h265enc", Some(v4l2)),
            ("v4l2video11h264enc", Some(v4l2)),
            ("vp8enc", Some(Bps("target-bitrate"))),
            ("vp9enc", Some(Bps("target-bitrate"))),
            ("openh264enc", Some(Bps("bitrate"))),
            ("jpegenc", None),
            ("vajpegenc", None),
            ("nvjpegenc", None),
            ("v4l2jpegenc", None),
            ("vapostproc", None),
            ("identity", None),
        ] {
            assert_eq!(bitrate_property(factory), expected, "{factory}");
        }
    }

    #[test]
    fn v4l2_controls_carry_the_bitrate_in_bit_per_second() {
        init();
        let s: gst::Structure = "controls,video_bitrate=8000000,video_b_frames=0"
            .parse()
            .unwrap();
        assert_eq!(control_kbps(&s, "video_bitrate"), Some(8000));
        let s = with_control_kbps(Some(s), "video_bitrate", 2500);
        assert_eq!(s.get::<i32>("video_bitrate").unwrap(), 2_500_000);
        assert_eq!(s.get::<i32>("video_b_frames").unwrap(), 0);
        assert_eq!(control_kbps(&s, "video_bitrate"), Some(2500));
        let s = with_control_kbps(None, "video_bitrate", 1000);
        assert_eq!(s.name(), "controls");
        assert_eq!(s.get::<i32>("video_bitrate").unwrap(), 1_000_000);
        assert_eq!(control_kbps(&s, "h264_i_frame_period"), None);
        // The extra-controls line of the shipped V4L2 pipeline parses to 8000 kbit/s.
        let text = shipped("h264.d/40-v4l2.pipeline");
        let controls = text
            .split('"')
            .nth(1)
            .expect("quoted extra-controls")
            .parse::<gst::Structure>()
            .unwrap();
        assert_eq!(control_kbps(&controls, "video_bitrate"), Some(8000));
    }

    /// Reads and writes the bitrate through real elements, in their units.
    #[test]
    fn bitrates_are_read_and_written_in_each_elements_unit() {
        init();
        for (factory, props, kbps_prop, unit) in [
            ("x264enc", "bitrate=8000", "bitrate", 1u64),
            ("x265enc", "bitrate=8000", "bitrate", 1),
            ("vp8enc", "target-bitrate=8000000", "target-bitrate", 1000),
            ("vp9enc", "target-bitrate=8000000", "target-bitrate", 1000),
            ("openh264enc", "bitrate=8000000", "bitrate", 1000),
        ] {
            if gst::ElementFactory::find(factory).is_none() {
                panic!("{factory} is needed for this test (scripts/install-deps.sh)");
            }
            let bin = gst::parse::launch(&format!("{factory} name=enc {props}")).unwrap();
            let enc = bin.downcast::<gst::Element>().unwrap();
            let prop = bitrate_property(factory).unwrap();
            assert_eq!(prop.read_kbps(&enc), Some(8000), "{factory}");
            prop.write_kbps(&enc, 2500).unwrap();
            assert_eq!(prop.read_kbps(&enc), Some(2500), "{factory}");
            let raw = value_u64(&enc.property_value(kbps_prop)).unwrap();
            assert_eq!(raw, 2500 * unit, "{factory} {kbps_prop}");
        }
        // Clamped to the property's range (x265enc: at most 102400 kbit/s).
        let enc = gst::ElementFactory::make("x265enc").build().unwrap();
        let prop = bitrate_property("x265enc").unwrap();
        prop.write_kbps(&enc, 500_000).unwrap();
        assert_eq!(prop.read_kbps(&enc), Some(102_400));
        // An encoder without such a property is refused, not a panic.
        let enc = gst::ElementFactory::make("jpegenc").build().unwrap();
        assert!(
            BitrateProperty::Kbps("bitrate")
                .write_kbps(&enc, 1)
                .is_err()
        );
        assert_eq!(BitrateProperty::Kbps("bitrate").read_kbps(&enc), None);
        assert!(
            BitrateProperty::ControlBps {
                property: "quality",
                field: "video_bitrate"
            }
            .write_kbps(&enc, 1)
            .is_err()
        );
    }

    #[test]
    fn a_pipeline_with_a_missing_element_is_named_so() {
        init();
        // The shipped hardware pipelines, on a machine without that hardware, name what is
        // missing (all of it: the encoder and its upload/convert elements).
        for (file, elements) in [
            ("h264.d/10-va.pipeline", &["vapostproc", "vah264enc"][..]),
            (
                "h264.d/20-nvcodec.pipeline",
                &["cudaupload", "cudaconvert", "nvh264enc"][..],
            ),
            ("h264.d/30-qsv.pipeline", &["qsvh264enc"][..]),
            ("h264.d/40-v4l2.pipeline", &["v4l2h264enc"][..]),
            ("h265.d/10-va.pipeline", &["vapostproc", "vah265enc"][..]),
        ] {
            let missing: Vec<&str> = elements
                .iter()
                .copied()
                .filter(|e| gst::ElementFactory::find(e).is_none())
                .collect();
            let text = shipped(file);
            match missing.as_slice() {
                [] => {
                    // This machine has the hardware: the file must at least parse.
                    check(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
                }
                [one] => assert_eq!(check(&text).unwrap_err(), format!("missing element {one}")),
                many => assert_eq!(
                    check(&text).unwrap_err(),
                    format!("missing elements {}", many.join(", "))
                ),
            }
        }
        let e = check("spicedmabufsrc name=src ! nosuchelement ! appsink name=sink").unwrap_err();
        assert_eq!(e, "missing element nosuchelement");
        let e = check("spicedmabufsrc name=src ! x264enc nosuchprop=1 ! appsink name=sink")
            .unwrap_err();
        assert!(e.starts_with("does not parse: "), "{e}");
    }

    #[test]
    fn a_pipeline_that_fails_to_start_is_refused_and_a_good_one_starts() {
        init();
        // Every element exists, but filesink cannot open its file on the way to PLAYING.
        let broken = "spicedmabufsrc name=src ! videoconvert ! video/x-raw,format=I420 \
                      ! tee name=t ! queue ! x264enc name=enc ! appsink name=sink \
                      t. ! queue ! filesink location=/nonexistent/dir/x";
        check(broken).unwrap();
        let e = probe(broken).unwrap_err();
        assert!(e.starts_with("does not start: "), "{e}");
        assert!(e.contains("/nonexistent/dir/x"), "{e}");
        for file in [
            "h264.d/90-x264.pipeline",
            "h265.d/90-x265.pipeline",
            "vp8.pipeline",
            "vp9.pipeline",
            "mjpeg.pipeline",
        ] {
            let started = Instant::now();
            probe(&shipped(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{file}: probe took {:?}",
                started.elapsed()
            );
        }
    }
}

#[cfg(test)]
mod rate_scale_tests {
    use super::RateScale;
    use std::time::{Duration, Instant};

    fn run(rs: &mut RateScale, t0: Instant, fps: u64, secs: u64) {
        for i in 0..=fps * secs {
            rs.sample(t0 + Duration::from_secs_f64(i as f64 / fps as f64), i);
        }
    }

    #[test]
    fn a_30_fps_stream_behind_60_fps_caps_gets_twice_the_bitrate() {
        let t0 = Instant::now();
        let mut rs = RateScale::default();
        assert_eq!(rs.update(60.0), None, "nothing measured yet");
        run(&mut rs, t0, 30, 3);
        assert!((rs.fps().unwrap() - 30.0).abs() < 0.5);
        assert_eq!(rs.update(60.0), Some(2.0));
        assert_eq!(rs.scale(4000), 8000);
        // Unchanged rate: nothing to rewrite.
        assert_eq!(rs.update(60.0), None);
        // Caps at the real rate: the factor goes back to 1.
        assert_eq!(rs.update(30.0), Some(1.0));
    }

    #[test]
    fn sporadic_frames_leave_the_factor_alone_and_it_is_bounded() {
        let t0 = Instant::now();
        let mut rs = RateScale::default();
        run(&mut rs, t0, 1, 5);
        assert_eq!(rs.update(60.0), None);
        let mut rs = RateScale::default();
        run(&mut rs, t0, 5, 5);
        assert_eq!(rs.update(60.0), Some(RateScale::MAX));
    }
}
