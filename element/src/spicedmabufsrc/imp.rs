// SPDX-License-Identifier: MPL-2.0

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use crate::fourcc;
use crate::frame::{self, DrawRelease, DrawStatus, Frame};
use crate::scanout::{Rect, Scanout};
use crate::socket::SocketListener;

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "spicedmabufsrc",
        gst::DebugColorFlags::empty(),
        Some("Host dmabuf scanout source"),
    )
});

const PROP_SOCKET_PATH: &str = "socket-path";
const PROP_IS_LIVE: &str = "is-live";
const PROP_MAX_QUEUED: &str = "max-queued";
const PROP_STATS: &str = "stats";
const PROP_FRAMERATE: &str = "framerate";

const DEFAULT_IS_LIVE: bool = true;
const DEFAULT_MAX_QUEUED: u32 = 1;
const DEFAULT_FRAMERATE: gst::Fraction = gst::Fraction::from_integer(60);

/// Why a draw was refused. The draw's release has already fired when this is returned.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DrawError {
    #[error("draw {0}: no scanout (gl_scanout missing or disabled)")]
    NoScanout(u64),
    #[error("draw {id}: rectangle {x},{y} {w}x{h} lies outside the {sw}x{sh} scanout")]
    OutsideScanout {
        id: u64,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        sw: u32,
        sh: u32,
    },
    #[error("draw {0}: the element is not running; frame dropped")]
    NotRunning(u64),
}

#[derive(Debug, Clone)]
struct Settings {
    socket_path: Option<String>,
    is_live: bool,
    max_queued: u32,
    framerate: gst::Fraction,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            socket_path: None,
            is_live: DEFAULT_IS_LIVE,
            max_queued: DEFAULT_MAX_QUEUED,
            framerate: DEFAULT_FRAMERATE,
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    draws: u64,
    pushed: u64,
    dropped: u64,
    refused: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Between `start()` and `stop()`.
    started: bool,
    /// Between `unlock()` and `unlock_stop()`.
    flushing: bool,
    scanout: Option<Arc<Scanout>>,
    queue: VecDeque<Frame>,
    /// Caps of the last frame pushed downstream.
    caps: Option<gst::Caps>,
    /// Orientation announced downstream.
    y0_top: Option<bool>,
    stats: Stats,
}

/// Lock order: `settings` before `listener` before `state`. Release callbacks run without any of
/// these locks held (frames are dropped after unlocking).
pub struct SpiceDmabufSrc {
    settings: Mutex<Settings>,
    listener: Mutex<Option<SocketListener>>,
    state: Mutex<State>,
    cond: Condvar,
    released: Arc<AtomicU64>,
}

impl Default for SpiceDmabufSrc {
    fn default() -> Self {
        Self {
            settings: Mutex::default(),
            listener: Mutex::default(),
            state: Mutex::default(),
            cond: Condvar::new(),
            released: Arc::default(),
        }
    }
}

impl SpiceDmabufSrc {
    pub(super) fn push_scanout(&self, scanout: Option<Arc<Scanout>>) {
        match &scanout {
            Some(s) => gst::debug!(
                CAT,
                imp = self,
                "scanout {}x{} {} ({:?}), {} plane(s), y0_top {}",
                s.width(),
                s.height(),
                fourcc::fourcc_name(s.info().fourcc),
                s.video_format(),
                s.info().planes.len(),
                s.info().y0_top
            ),
            None => gst::debug!(CAT, imp = self, "scanout disabled"),
        }
        let old = std::mem::replace(&mut self.state.lock().unwrap().scanout, scanout);
        drop(old);
    }

    pub(super) fn current_scanout(&self) -> Option<Arc<Scanout>> {
        self.state.lock().unwrap().scanout.clone()
    }

    pub(super) fn push_draw(&self, rect: Rect, release: DrawRelease) -> Result<(), DrawError> {
        let max_queued = self.settings.lock().unwrap().max_queued as usize;
        let pts = self.obj().current_running_time();
        let id = release.id();
        let mut state = self.state.lock().unwrap();
        state.stats.draws += 1;
        let Some(scanout) = state.scanout.clone() else {
            state.stats.refused += 1;
            drop(state);
            release.complete(DrawStatus::Refused);
            let err = DrawError::NoScanout(id);
            gst::warning!(CAT, imp = self, "{err}");
            return Err(err);
        };
        if !scanout.contains(&rect) {
            state.stats.refused += 1;
            drop(state);
            release.complete(DrawStatus::Refused);
            let err = DrawError::OutsideScanout {
                id,
                x: rect.x,
                y: rect.y,
                w: rect.w,
                h: rect.h,
                sw: scanout.width(),
                sh: scanout.height(),
            };
            gst::warning!(CAT, imp = self, "{err}");
            return Err(err);
        }
        if !state.started || state.flushing {
            state.stats.dropped += 1;
            drop(state);
            release.complete(DrawStatus::Dropped);
            gst::debug!(CAT, imp = self, "draw {id} dropped: not running");
            return Err(DrawError::NotRunning(id));
        }
        state.queue.push_back(Frame {
            scanout,
            rect,
            release,
            pts,
        });
        let mut superseded = Vec::new();
        while state.queue.len() > max_queued {
            superseded.extend(state.queue.pop_front());
        }
        state.stats.dropped += superseded.len() as u64;
        drop(state);
        self.cond.notify_one();
        for f in superseded {
            gst::debug!(
                CAT,
                imp = self,
                "draw {} superseded before the pipeline took it",
                f.release.id()
            );
        }
        Ok(())
    }

    /// Drops every queued frame (their releases fire `Dropped`), outside the state lock.
    fn drain_queue(&self, why: &str) {
        let frames: Vec<Frame> = {
            let mut state = self.state.lock().unwrap();
            let frames: Vec<Frame> = state.queue.drain(..).collect();
            state.stats.dropped += frames.len() as u64;
            frames
        };
        if !frames.is_empty() {
            gst::debug!(
                CAT,
                imp = self,
                "{why}: dropping {} queued frame(s)",
                frames.len()
            );
        }
    }

    fn stats_structure(&self) -> gst::Structure {
        let state = self.state.lock().unwrap();
        gst::Structure::builder("application/x-spicedmabufsrc-stats")
            .field("draws", state.stats.draws)
            .field("pushed", state.stats.pushed)
            .field("dropped", state.stats.dropped)
            .field("refused", state.stats.refused)
            .field("released", self.released.load(Ordering::Relaxed))
            .field("queued", state.queue.len() as u32)
            .build()
    }

    fn orientation_event(y0_top: bool) -> gst::Event {
        let orientation = if y0_top {
            "rotate-0"
        } else {
            "flip-rotate-180"
        };
        let mut tags = gst::TagList::new();
        tags.get_mut()
            .unwrap()
            .add::<gst::tags::ImageOrientation>(&orientation, gst::TagMergeMode::Replace);
        gst::event::Tag::builder(tags).build()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for SpiceDmabufSrc {
    const NAME: &'static str = "GstSpiceDmabufSrc";
    type Type = super::SpiceDmabufSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for SpiceDmabufSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                /**
                 * GstSpiceDmabufSrc:socket-path:
                 *
                 * Path of a unix SOCK_SEQPACKET socket to listen on for a producer process
                 * (`spice-shim feed`), which sends scanouts (fds by SCM_RIGHTS) and draws and
                 * receives one DONE per draw. Unset: frames come from the in-process API only.
                 */
                glib::ParamSpecString::builder(PROP_SOCKET_PATH)
                    .nick("Socket path")
                    .blurb("Unix socket to receive scanouts and draws on (unset: in-process API only)")
                    .mutable_ready()
                    .build(),
                /**
                 * GstSpiceDmabufSrc:is-live:
                 *
                 * Whether the source is live. A live source timestamps each frame with the
                 * pipeline running time at which its draw arrived.
                 */
                glib::ParamSpecBoolean::builder(PROP_IS_LIVE)
                    .nick("Is live")
                    .blurb("Act as a live source (timestamps from the pipeline clock on arrival)")
                    .default_value(DEFAULT_IS_LIVE)
                    .mutable_ready()
                    .build(),
                /**
                 * GstSpiceDmabufSrc:max-queued:
                 *
                 * Frames that may wait for the streaming thread. When a draw arrives with the
                 * queue full, the oldest waiting frame is dropped and released at once, so a slow
                 * pipeline never holds the host back and latency stays bounded.
                 */
                glib::ParamSpecUInt::builder(PROP_MAX_QUEUED)
                    .nick("Max queued frames")
                    .blurb("Frames waiting for the pipeline; older ones are dropped (newest wins)")
                    .minimum(1)
                    .maximum(64)
                    .default_value(DEFAULT_MAX_QUEUED)
                    .mutable_playing()
                    .build(),
                /**
                 * GstSpiceDmabufSrc:framerate:
                 *
                 * Nominal frame rate put in the caps. Frames come when the host draws and are
                 * timestamped on arrival (variable rate); encoders use this value for rate
                 * control (x264enc emits almost nothing with a 0/1 rate), so give the
                 * host's maximum rate.
                 */
                gst::ParamSpecFraction::builder(PROP_FRAMERATE)
                    .nick("Frame rate")
                    .blurb("Nominal (maximum) frame rate announced in the caps")
                    .minimum(gst::Fraction::new(1, 1))
                    .maximum(gst::Fraction::new(1000, 1))
                    .default_value(DEFAULT_FRAMERATE)
                    .mutable_ready()
                    .build(),
                /**
                 * GstSpiceDmabufSrc:stats:
                 *
                 * Counters: draws received, frames pushed, dropped and refused, frames whose
                 * memory was released, frames queued now.
                 */
                glib::ParamSpecBoxed::builder::<gst::Structure>(PROP_STATS)
                    .nick("Statistics")
                    .blurb("Draw and frame counters")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            PROP_SOCKET_PATH => {
                settings.socket_path = value.get::<Option<String>>().expect("type checked");
            }
            PROP_IS_LIVE => {
                settings.is_live = value.get().expect("type checked");
                let live = settings.is_live;
                drop(settings);
                self.obj().set_live(live);
            }
            PROP_MAX_QUEUED => {
                settings.max_queued = value.get().expect("type checked");
            }
            PROP_FRAMERATE => {
                settings.framerate = value.get().expect("type checked");
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            PROP_SOCKET_PATH => self.settings.lock().unwrap().socket_path.to_value(),
            PROP_IS_LIVE => self.settings.lock().unwrap().is_live.to_value(),
            PROP_MAX_QUEUED => self.settings.lock().unwrap().max_queued.to_value(),
            PROP_FRAMERATE => self.settings.lock().unwrap().framerate.to_value(),
            PROP_STATS => self.stats_structure().to_value(),
            _ => unimplemented!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(DEFAULT_IS_LIVE);
        obj.set_format(gst::Format::Time);
    }
}

impl GstObjectImpl for SpiceDmabufSrc {}

impl ElementImpl for SpiceDmabufSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "SPICE dmabuf scanout source",
                "Source/Video",
                "Wraps a VM host's dmabuf scanouts into video buffers without copying, \
                 with a release notification per draw",
                "spice-dmabuf developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(fourcc::all_formats())
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for SpiceDmabufSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let socket_path = self.settings.lock().unwrap().socket_path.clone();
        {
            let mut state = self.state.lock().unwrap();
            state.started = true;
            state.flushing = false;
            state.caps = None;
            state.y0_top = None;
        }
        if let Some(path) = socket_path {
            let listener = SocketListener::start(&path, &self.obj()).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenRead,
                    ["Cannot listen on socket {}: {}", path, e]
                )
            })?;
            gst::info!(CAT, imp = self, "listening for a producer on {path}");
            *self.listener.lock().unwrap() = Some(listener);
        }
        gst::debug!(CAT, imp = self, "started");
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        {
            let mut state = self.state.lock().unwrap();
            state.started = false;
        }
        self.drain_queue("stopping");
        self.cond.notify_all();
        let listener = self.listener.lock().unwrap().take();
        drop(listener);
        // Unmap the buffers this element imported once its frames are released.
        crate::mapcache::clear();
        gst::debug!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.state.lock().unwrap().flushing = true;
        self.cond.notify_all();
        self.drain_queue("flushing");
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.state.lock().unwrap().flushing = false;
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let current = self.state.lock().unwrap().caps.clone();
        let caps = current.unwrap_or_else(|| self.obj().src_pad().pad_template_caps());
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // Caps are fixed by the frames; before the first one there is nothing to negotiate.
        let caps = self.state.lock().unwrap().caps.clone();
        match caps {
            Some(caps) => self
                .obj()
                .set_caps(&caps)
                .map_err(|_| gst::loggable_error!(CAT, "Failed to negotiate {caps}")),
            None => Ok(()),
        }
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let live = self.obj().is_live();
            q.set(live, gst::ClockTime::ZERO, gst::ClockTime::NONE);
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
    }
}

impl PushSrcImpl for SpiceDmabufSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let framerate = self.settings.lock().unwrap().framerate;
        let (mut frame, new_caps, new_orientation) = {
            let mut state = self.state.lock().unwrap();
            let frame = loop {
                if state.flushing || !state.started {
                    gst::debug!(CAT, imp = self, "flushing");
                    return Err(gst::FlowError::Flushing);
                }
                if let Some(f) = state.queue.pop_front() {
                    break f;
                }
                state = self.cond.wait(state).unwrap();
            };
            let caps = frame.scanout.caps(framerate);
            let new_caps = (state.caps.as_ref() != Some(&caps)).then_some(caps);
            let y0_top = frame.scanout.info().y0_top;
            let new_orientation = (state.y0_top != Some(y0_top)).then_some(y0_top);
            state.stats.pushed += 1;
            (frame, new_caps, new_orientation)
        };

        if let Some(caps) = new_caps {
            gst::info!(CAT, imp = self, "caps {caps}");
            if self.obj().set_caps(&caps).is_err() {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ["Downstream refused caps {}", caps]
                );
                // The frame's release fires (Dropped) as it goes out of scope.
                return Err(gst::FlowError::NotNegotiated);
            }
            self.state.lock().unwrap().caps = Some(caps);
        }
        if let Some(y0_top) = new_orientation {
            let ev = Self::orientation_event(y0_top);
            if self.obj().src_pad().store_sticky_event(&ev).is_err() {
                gst::warning!(CAT, imp = self, "could not store orientation tag");
            }
            self.state.lock().unwrap().y0_top = Some(y0_top);
        }

        if frame.pts.is_none() {
            frame.pts = self.obj().current_running_time();
        }
        gst::log!(
            CAT,
            imp = self,
            "frame for draw {} rect {:?} pts {:?}",
            frame.release.id(),
            frame.rect,
            frame.pts
        );
        match frame::frame_to_buffer(frame, &self.released) {
            Ok(buffer) => Ok(CreateSuccess::NewBuffer(buffer)),
            Err(err) => {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::Read,
                    ["Cannot wrap the scanout: {}", err]
                );
                Err(gst::FlowError::Error)
            }
        }
    }
}
