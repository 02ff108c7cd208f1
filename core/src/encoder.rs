//! Encoder pipelines: one per codec, built from `pipelines/<codec>.pipeline`, shared by every
//! remote client that uses the codec. The appsink's access units fan out to subscribers.

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

/// Reads the encoder's bitrate property in kbit/s: `bitrate` (kbit/s, x264enc, x265enc, VA
/// encoders) or `target-bitrate` (bit/s, vpxenc).
fn bitrate_kbps(enc: &gst::Element) -> Option<u32> {
    let as_u64 = |name: &str| -> Option<u64> {
        enc.find_property(name)?;
        let v = enc.property_value(name);
        v.get::<u32>()
            .map(u64::from)
            .or_else(|_| v.get::<i32>().map(|x| x.max(0) as u64))
            .or_else(|_| v.get::<u64>())
            .ok()
    };
    if let Some(k) = as_u64("bitrate") {
        return u32::try_from(k).ok();
    }
    as_u64("target-bitrate").and_then(|b| u32::try_from(b / 1000).ok())
}

/// The description on one line, for logs.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `<dir>/<codec>.pipeline`.
pub fn read_pipeline(dir: &Path, codec: VideoCodec) -> Result<String, String> {
    let path = dir.join(format!("{}.pipeline", codec.name()));
    std::fs::read_to_string(&path)
        .map(|t| pipeline_text(&t))
        .map_err(|e| format!("{}: {e}", path.display()))
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
            let missing = ctx.missing_elements();
            if missing.is_empty() {
                e.to_string()
            } else {
                format!("missing element(s) {}: {e}", missing.join(", "))
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

/// Checks that `text` parses into a usable pipeline on this machine.
pub fn check(text: &str) -> Result<(), String> {
    parse(text).map(|p| {
        let _ = p.pipeline.set_state(gst::State::Null);
    })
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
    /// Bitrate configured in the pipeline text, kbit/s (the ceiling for rate control).
    configured_kbps: Option<u32>,
    /// Bitrate set last, kbit/s.
    current_kbps: std::sync::atomic::AtomicU32,
}

/// When the last frame of a burst went out, for [`Encoder::flush_if_idle`].
#[derive(Debug, Default)]
struct FlushState {
    last_push: Option<Instant>,
    last_au: Option<Instant>,
    pending: bool,
}

/// How long an H.264/H.265 pipeline stays silent before its last frame is pushed out.
const FLUSH_AFTER: Duration = Duration::from_millis(100);

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
        let configured_kbps = enc.as_ref().and_then(bitrate_kbps);
        if let Some(k) = configured_kbps {
            log::debug(&format!("{}: configured bitrate {k} kbit/s", codec.name()));
        }
        Ok(Self {
            keyframes,
            flush,
            configured_kbps,
            current_kbps: std::sync::atomic::AtomicU32::new(configured_kbps.unwrap_or(0)),
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
            f.pending = true;
            f.last_push = Some(Instant::now());
        }
        self.src.push_draw(rect, release)
    }

    /// Pushes the last frame of a burst out to the clients.
    ///
    /// A client's H.264/H.265 parser (spice-gtk gives it no alignment) only knows a frame ended
    /// when the next start code arrives, so the last frame before the guest goes idle, or the
    /// only frame a joining client gets, would stay undecoded. When the pipeline has been silent
    /// for 100 ms after such a frame, the current scanout is encoded once more (no cookie; a
    /// near-empty P-frame) and that follow-up completes the previous frame at the client.
    pub fn flush_if_idle(&self, scanout: Option<&Arc<Scanout>>) {
        if !matches!(self.codec, VideoCodec::H264 | VideoCodec::H265) {
            return;
        }
        let Some(s) = scanout else { return };
        {
            let mut f = self.flush.lock().unwrap();
            let idle = match (f.last_push, f.last_au) {
                (Some(push), Some(au)) => au >= push && au.elapsed() >= FLUSH_AFTER,
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

    /// Sets the encoder's target bitrate in kbit/s, if it has a known bitrate property.
    pub fn set_bitrate_kbps(&self, kbps: u32) {
        let Some(enc) = &self.enc else { return };
        if self.current_kbps.swap(kbps, Ordering::Relaxed) == kbps {
            return;
        }
        log::info(&format!("{}: bitrate {kbps} kbit/s", self.codec.name()));
        if enc.find_property("bitrate").is_some() {
            enc.set_property_from_str("bitrate", &kbps.to_string());
        } else if enc.find_property("target-bitrate").is_some() {
            enc.set_property_from_str("target-bitrate", &(u64::from(kbps) * 1000).to_string());
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
