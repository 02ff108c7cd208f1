//! The display channel: a remote client gets the scanout as a video stream
//! ([`StreamClient`]); a local client on a unix socket that can import dmabufs gets the fd
//! itself ([`GlClient`]).

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use gstspicedmabuf::{Rect, Scanout};

use crate::channel::read_messages;
use crate::conn::Conn;
use crate::encoder::{AccessUnit, Subscriber};
use crate::encoders::{Encoders, LostFn, Subscription};
use crate::latency::{Latency, Verdict};
use crate::ledger::DrawHandle;
use crate::log;
use crate::outbox::Outbox;
use crate::proto::caps::display_cap;
use crate::proto::consts::{gl_scanout_flags, stream_flags};
use crate::proto::{
    Caps, ClientBaseMsg, ClientDisplayMsg, GlDraw, GlScanoutUnix, HeaderKind, LinkMess, Mark,
    MonitorsConfig, Ping, StreamActivateReport, StreamCreate, StreamDestroy, StreamReport,
    SurfaceCreate, SurfaceDestroy, VideoCodec, parse_client_display,
};
use crate::ratecontrol::{RateController, Throughput};
use crate::shim::{ClientStats, Core, MmClock};

/// Unsent bytes the kernel may hold for a remote client's display socket (`TCP_NOTSENT_LOWAT`):
/// about 65 ms at 4 Mbit/s. Beyond it the writer waits and frames back up in the client's send
/// queue, which rate control watches and which drops frames when full; without the bound the
/// socket buffer grows to megabytes, seconds of video behind a slow link.
pub const NOTSENT_LOWAT: u32 = 32 * 1024;

/// Serves one display channel until it closes.
pub fn run(
    core: &Arc<Core>,
    id: u64,
    mut conn: Conn,
    header: HeaderKind,
    mess: &LinkMess,
    peer: String,
) {
    let Some((outbox, writer)) = Outbox::start(header, &conn, "shim-display-writer") else {
        return;
    };
    let caps = mess.channel_caps.clone();
    let gl = conn.is_unix() && caps.has(display_cap::GL_SCANOUT);
    if !gl && let Err(e) = conn.set_notsent_lowat(NOTSENT_LOWAT) {
        log::warn(&format!(
            "{peer}: cannot bound the socket's unsent data: {e}"
        ));
    }
    if gl {
        run_gl(core, id, &mut conn, header, &outbox, &peer);
    } else {
        run_stream(core, id, &mut conn, header, &outbox, caps, &peer);
    }
    outbox.close();
    conn.shutdown();
    let _ = writer.join();
}

// ----- remote clients: the video stream -------------------------------------------------------

#[derive(Default)]
struct StreamState {
    /// The codec in use, or being switched to.
    codec: Option<VideoCodec>,
    /// The subscription to that codec's pipeline.
    sub: Option<Subscription>,
    surface: Option<(u32, u32)>,
    stream_id: Option<u32>,
    params: Option<(VideoCodec, u32, u32, bool)>,
    next_stream_id: u32,
    need_keyframe: bool,
    /// Client's codec preference (PREFERRED_VIDEO_CODEC_TYPE), empty if none.
    prefs: Vec<VideoCodec>,
    /// Codecs the client failed to decode.
    failed: HashSet<VideoCodec>,
}

/// A remote client of the video stream.
///
/// Lock order: `picking` before `st` before `latency` and `rate`; `st` before the encoders'
/// state (through [`Subscription`]). A subscription is always dropped with no lock of the
/// client held.
pub struct StreamClient {
    pub id: u64,
    peer: String,
    outbox: Arc<Outbox>,
    caps: Caps,
    encoders: Arc<Encoders>,
    clock: MmClock,
    st: Mutex<StreamState>,
    /// Serialises codec switches (channel thread, supervisor thread).
    picking: Mutex<bool>,
    sent: AtomicU64,
    dropped: AtomicU64,
    max_frames: usize,
    rate: Mutex<Option<RateController>>,
    /// What the link delivered per second lately: bytes acknowledged by the client (TCP), else
    /// bytes written (the link's rate while the queue is backed up).
    throughput: Mutex<Throughput>,
    /// The client's TCP socket, for its acknowledged bytes (`None` for unix sockets).
    tcp: Option<OwnedFd>,
    /// When the client shows frames: each STREAM_DATA's `multi_media_time`.
    latency: Mutex<Latency>,
}

impl StreamClient {
    /// The codec in use.
    pub fn codec(&self) -> Option<VideoCodec> {
        self.st.lock().unwrap().codec
    }

    /// Feeds the rate controller: `congested` with what the link `delivered` meanwhile
    /// (kbit/s) if known; a changed target goes to the pipeline.
    fn rate_event(&self, congested: bool, delivered: Option<u32>) {
        let changed = {
            let mut rate = self.rate.lock().unwrap();
            let Some(r) = rate.as_mut() else { return };
            let now = Instant::now();
            if congested {
                r.congestion(now, delivered)
            } else {
                r.calm(now)
            }
        };
        if let Some(kbps) = changed {
            log::debug(&format!(
                "{}: target bitrate {kbps} kbit/s{}",
                self.peer,
                delivered.map_or(String::new(), |d| format!(" (link delivered {d} kbit/s)"))
            ));
            if let Some(sub) = &self.st.lock().unwrap().sub {
                sub.set_target_kbps(kbps);
            }
        }
    }

    /// Frames waiting in the send queue from which on the link counts as congested: about
    /// 130 ms at 30 fps with the default queue of 8, well before frames must be dropped.
    fn backlog_frames(&self) -> usize {
        (self.max_frames / 2).max(2)
    }

    /// A STREAM_REPORT (not the decoder-failure one): adapts the latency (automatic mode) and
    /// feeds the rate controller.
    fn on_report(&self, r: &StreamReport) {
        let now = Instant::now();
        let (verdict, settled, rtt) = {
            let mut l = self.latency.lock().unwrap();
            let v = l.report(r, now);
            (v, l.settled(now), l.rtt())
        };
        let rtt = rtt.map_or(String::new(), |d| {
            format!(", round trip {:.1} ms", d.as_secs_f64() * 1000.0)
        });
        match verdict {
            Verdict::Raised { from, to, again } => {
                log::info(&format!(
                    "{}: display latency {from} -> {to} ms ({} of {} frames late, the last by {} ms{rtt})",
                    self.peer,
                    r.num_drops,
                    r.num_frames,
                    (-r.last_frame_delay).max(0)
                ));
                // Late again soon after a raise: the link is congested, not just jittery.
                if again {
                    self.rate_event(true, None);
                }
            }
            Verdict::Lowered { from, to } => {
                log::debug(&format!(
                    "{}: display latency {from} -> {to} ms (calm){rtt}",
                    self.peer
                ));
                self.rate_event(false, None);
            }
            Verdict::Late => self.rate_event(true, None),
            Verdict::Calm => self.rate_event(false, None),
            Verdict::Ignored | Verdict::Queued => {}
        }
        if let Some(ms) = settled {
            log::info(&format!(
                "{}: display latency settled at {ms} ms{rtt}",
                self.peer
            ));
        }
    }

    /// A PONG to one of our PINGs: a round-trip sample.
    fn on_pong(&self, timestamp: u64) {
        let rtt = self.latency.lock().unwrap().pong(timestamp, Instant::now());
        if let Some(rtt) = rtt {
            log::debug(&format!(
                "{}: round trip {:.2} ms",
                self.peer,
                rtt.as_secs_f64() * 1000.0
            ));
        }
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            id: self.id,
            peer: self.peer.clone(),
            codec: self.codec(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bytes: self.outbox.written.load(Ordering::Relaxed),
            target_kbps: self.rate.lock().unwrap().as_ref().map(|r| r.target_kbps()),
            connected: !self.outbox.is_closed(),
        }
    }

    /// Disconnects the client.
    pub fn close(&self) {
        self.outbox.close();
    }

    fn request_keyframe(st: &StreamState) {
        if let Some(sub) = &st.sub {
            sub.request_keyframe();
        }
    }

    /// Delivers one access unit (called on the encoder's streaming thread; never blocks).
    fn on_access_unit(&self, codec: VideoCodec, au: &Arc<AccessUnit>) {
        let mut st = self.st.lock().unwrap();
        if st.codec != Some(codec) {
            return;
        }
        if st.need_keyframe && !au.keyframe {
            Self::request_keyframe(&st);
            return;
        }
        let top_down = self.encoders.y0_top();
        let params = (codec, au.width, au.height, top_down);
        if st.params != Some(params) {
            if !au.keyframe {
                st.need_keyframe = true;
                Self::request_keyframe(&st);
                return;
            }
            self.create_stream(&mut st, params);
        }
        let Some(stream_id) = st.stream_id else {
            return;
        };
        let backlog = self.outbox.queued_frames() + 1 >= self.backlog_frames();
        let (mm_time, ping) = {
            let mut l = self.latency.lock().unwrap();
            let stamp = l.stamp(self.clock.now());
            if backlog {
                l.queued();
            }
            (stamp, l.ping_due(Instant::now()))
        };
        if let Some((id, timestamp)) = ping {
            self.outbox.send(&Ping {
                id,
                timestamp,
                payload: &[],
            });
        }
        let delivered = {
            let bytes = match &self.tcp {
                Some(fd) => crate::conn::tcp_bytes_acked(fd.as_fd()),
                None => Some(self.outbox.written.load(Ordering::Relaxed)),
            };
            let mut tp = self.throughput.lock().unwrap();
            if let Some(b) = bytes {
                tp.sample(Instant::now(), b);
            }
            tp.kbps()
        };
        if self
            .outbox
            .send_stream(stream_id, mm_time, au, self.max_frames)
        {
            self.sent.fetch_add(1, Ordering::Relaxed);
            if au.keyframe {
                st.need_keyframe = false;
            }
            let queued = self.outbox.queued_frames();
            drop(st);
            // The socket holds little unsent data (see `NOTSENT_LOWAT`), so frames waiting
            // here mean the link is slower than the stream.
            if queued >= self.backlog_frames() {
                self.rate_event(true, delivered);
            } else if queued == 0 {
                self.rate_event(false, None);
            }
        } else {
            // Too slow (or gone): drop whole access units for this client only and resume at
            // the next keyframe.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if !st.need_keyframe {
                log::debug(&format!(
                    "{}: send queue full, dropping frames until the next keyframe",
                    self.peer
                ));
            }
            st.need_keyframe = true;
            Self::request_keyframe(&st);
            drop(st);
            self.rate_event(true, delivered);
        }
    }

    fn create_stream(&self, st: &mut StreamState, params: (VideoCodec, u32, u32, bool)) {
        let (codec, w, h, top_down) = params;
        if let Some(id) = st.stream_id.take() {
            self.outbox.send(&StreamDestroy { id });
        }
        if st.surface != Some((w, h)) {
            if st.surface.is_some() {
                self.outbox.send(&SurfaceDestroy { surface_id: 0 });
            }
            self.outbox.send(&SurfaceCreate::primary(w, h, false));
            self.outbox.send(&MonitorsConfig::single(0, w, h));
            self.outbox.send(&Mark);
            st.surface = Some((w, h));
        }
        let id = st.next_stream_id;
        st.next_stream_id = (st.next_stream_id + 1) % 50;
        let mut create = StreamCreate::top_down(0, id, codec, w, h);
        if !top_down {
            // Bottom-up scanout: the client flips the picture (no CPU flip here).
            create.flags &= !stream_flags::TOP_DOWN;
        }
        self.outbox.send(&create);
        let report_window = {
            let mut l = self.latency.lock().unwrap();
            l.stream_started();
            l.report_window()
        };
        if self.caps.has(display_cap::STREAM_REPORT) {
            self.outbox.send(&StreamActivateReport {
                stream_id: id,
                unique_id: id,
                max_window_size: report_window,
                timeout_ms: 1000,
            });
        }
        log::info(&format!(
            "{}: stream {id}: {codec} {w}x{h}{}",
            self.peer,
            if top_down { "" } else { " (bottom-up)" }
        ));
        st.stream_id = Some(id);
        st.params = Some(params);
    }

    /// The pipeline of the codec in use failed; with `give_up`, never use that codec again.
    fn lost(self: &Arc<Self>, give_up: bool) {
        let old = {
            let mut st = self.st.lock().unwrap();
            if give_up && let Some(c) = st.codec {
                st.failed.insert(c);
            }
            st.codec = None;
            st.sub.take()
        };
        drop(old);
        self.pick();
    }

    /// (Re)subscribes to the codec the client should use now.
    fn pick(self: &Arc<Self>) {
        let finished = self.picking.lock().unwrap();
        if *finished {
            return;
        }
        loop {
            let (want, old) = {
                let mut st = self.st.lock().unwrap();
                let want = self.encoders.choose(&st.prefs, &st.failed, &self.caps);
                if want.is_some() && want == st.codec && st.sub.is_some() {
                    return;
                }
                st.codec = want;
                st.need_keyframe = true;
                (want, st.sub.take())
            };
            drop(old);
            *self.rate.lock().unwrap() = None;
            let Some(codec) = want else {
                log::error(&format!(
                    "{}: no offered codec is decodable by this client (its display caps {:?})",
                    self.peer,
                    self.caps.words()
                ));
                return;
            };
            log::info(&format!("{}: using {codec}", self.peer));
            let weak = Arc::downgrade(self);
            let on_au: Subscriber = Arc::new(move |au| {
                if let Some(c) = weak.upgrade() {
                    c.on_access_unit(codec, au);
                }
            });
            let weak = Arc::downgrade(self);
            let on_lost: LostFn = Arc::new(move |give_up| {
                if let Some(c) = weak.upgrade() {
                    c.lost(give_up);
                }
            });
            match self.encoders.subscribe(codec, on_au, on_lost) {
                Ok(sub) => {
                    *self.rate.lock().unwrap() = sub
                        .max_kbps()
                        .map(|k| RateController::new(k, Instant::now()));
                    self.st.lock().unwrap().sub = Some(sub);
                    return;
                }
                Err(e) => {
                    log::error(&format!(
                        "{}: cannot start the {codec} encoder: {e}",
                        self.peer
                    ));
                    let mut st = self.st.lock().unwrap();
                    st.failed.insert(codec);
                    st.codec = None;
                }
            }
        }
    }

    /// Unsubscribes for good (the channel closed).
    fn finish(&self) {
        let mut finished = self.picking.lock().unwrap();
        *finished = true;
        let old = self.st.lock().unwrap().sub.take();
        drop(old);
    }
}

fn run_stream(
    core: &Arc<Core>,
    id: u64,
    conn: &mut Conn,
    header: HeaderKind,
    outbox: &Arc<Outbox>,
    caps: Caps,
    peer: &str,
) {
    let setting = core.config().mm_latency_ms;
    let mut latency = Latency::new(setting, Instant::now());
    match setting {
        Some(ms) => log::info(&format!("{peer}: display latency fixed at {ms} ms")),
        None if !caps.has(display_cap::STREAM_REPORT) => {
            latency.no_reports(Instant::now());
            log::info(&format!(
                "{peer}: display latency {} ms: the client does not report late frames",
                latency.target_ms()
            ));
        }
        None => log::info(&format!(
            "{peer}: display latency automatic, starting at {} ms",
            latency.target_ms()
        )),
    }
    let client = Arc::new(StreamClient {
        id,
        peer: peer.to_string(),
        outbox: outbox.clone(),
        caps,
        encoders: core.encoders().clone(),
        clock: core.clock(),
        st: Mutex::default(),
        picking: Mutex::new(false),
        sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        max_frames: core.config().max_queued_frames,
        rate: Mutex::new(None),
        throughput: Mutex::default(),
        tcp: (!conn.is_unix())
            .then(|| conn.as_fd().try_clone_to_owned().ok())
            .flatten()
            .filter(|fd| crate::conn::tcp_bytes_acked(fd.as_fd()).is_some()),
        latency: Mutex::new(latency),
    });
    core.add_stream_client(client.clone());
    client.pick();
    let why = read_messages(conn, header, |t, body| {
        match parse_client_display(t, &body) {
            Ok(ClientDisplayMsg::StreamReport(r)) => {
                if r.is_decoder_failure() {
                    let codec = client.codec();
                    log::warn(&format!(
                        "{peer}: the client cannot decode {}; falling back",
                        codec.map(|c| c.name()).unwrap_or("?")
                    ));
                    if let Some(c) = codec {
                        client.st.lock().unwrap().failed.insert(c);
                    }
                    client.pick();
                } else {
                    log::debug(&format!("{peer}: stream report {r:?}"));
                    client.on_report(&r);
                }
            }
            Ok(ClientDisplayMsg::Base(ClientBaseMsg::Pong { timestamp, .. })) => {
                client.on_pong(timestamp);
            }
            Ok(ClientDisplayMsg::PreferredVideoCodecs(p)) => {
                client.st.lock().unwrap().prefs = p.known();
                client.pick();
            }
            Ok(other) => log::debug(&format!("{peer}: display: {other:?}")),
            Err(e) => log::warn(&format!("{peer}: display channel: {e}")),
        }
        true
    });
    log::debug(&format!("{peer}: display channel: {why}"));
    {
        let l = client.latency.lock().unwrap();
        if l.is_auto() {
            let (raises, lowerings, highest) = l.counts();
            log::info(&format!(
                "{peer}: display latency at the end {} ms (raised {raises} times, lowered \
                 {lowerings} times, highest {highest} ms{})",
                l.target_ms(),
                l.rtt().map_or(String::new(), |d| format!(
                    ", round trip {:.1} ms",
                    d.as_secs_f64() * 1000.0
                ))
            ));
        }
    }
    client.finish();
    outbox.close();
    core.remove_stream_client(&client);
}

// ----- local clients: the dmabuf itself ---------------------------------------------------------

#[derive(Default)]
struct GlState {
    /// The draw the client is rendering; its cookie waits for GL_DRAW_DONE.
    in_flight: Option<(DrawHandle, Instant)>,
    /// The newest draw waiting for the one in flight.
    queued: Option<(Rect, DrawHandle)>,
    /// A scanout change waiting for the draw in flight (`Some(None)`: disabled).
    pending_scanout: Option<Option<Arc<Scanout>>>,
    closed: bool,
}

/// GL_SCANOUT_UNIX with fourcc 0: no scanout (and no fd follows).
const GL_SCANOUT_DISABLED: GlScanoutUnix = GlScanoutUnix {
    width: 0,
    height: 0,
    stride: 0,
    drm_fourcc_format: 0,
    flags: 0,
};

/// A local client that imports the scanout dmabuf (GL_SCANOUT_UNIX + GL_DRAW).
pub struct GlClient {
    peer: String,
    outbox: Arc<Outbox>,
    st: Mutex<GlState>,
    cond: Condvar,
    gone: AtomicBool,
}

impl GlClient {
    pub(crate) fn send_scanout(&self, scanout: Option<&Arc<Scanout>>) {
        match scanout {
            Some(s) if s.info().planes.len() == 1 && s.info().planes[0].offset == 0 => {
                let info = s.info();
                let fd =
                    rustix::io::fcntl_dupfd_cloexec(s.fds()[info.planes[0].fd_index].as_fd(), 0);
                let Ok(fd) = fd else {
                    log::error(&format!("{}: cannot dup the scanout fd", self.peer));
                    return;
                };
                let fd: OwnedFd = fd;
                self.outbox
                    .send(&SurfaceCreate::primary(s.width(), s.height(), false));
                self.outbox
                    .send(&MonitorsConfig::single(0, s.width(), s.height()));
                self.outbox.send(&Mark);
                self.outbox.send_with_fd(
                    &GlScanoutUnix {
                        width: s.width(),
                        height: s.height(),
                        stride: info.planes[0].stride,
                        drm_fourcc_format: info.fourcc,
                        flags: if info.y0_top {
                            gl_scanout_flags::Y0TOP
                        } else {
                            0
                        },
                    },
                    fd,
                );
                self.outbox
                    .send(&MonitorsConfig::single(0, s.width(), s.height()));
            }
            Some(s) => {
                // GL_SCANOUT_UNIX carries one plane at offset 0 and nothing else.
                log::warn(&format!(
                    "{}: a scanout with {} plane(s) at offset {} cannot be sent as GL_SCANOUT_UNIX; local client disabled until the next scanout",
                    self.peer,
                    s.info().planes.len(),
                    s.info().planes[0].offset
                ));
                self.outbox.send(&GL_SCANOUT_DISABLED);
            }
            None => {
                self.outbox.send(&GL_SCANOUT_DISABLED);
            }
        }
    }

    /// A new scanout: sent now, or after the draw in flight is done.
    pub fn scanout(&self, scanout: Option<&Arc<Scanout>>) {
        let mut st = self.st.lock().unwrap();
        if st.closed {
            return;
        }
        if st.in_flight.is_some() {
            st.pending_scanout = Some(scanout.cloned());
            // A queued draw belongs to the old scanout: let it go.
            st.queued = None;
        } else {
            self.send_scanout(scanout);
        }
    }

    /// A draw: sent now, or kept (newest wins) until the one in flight is done.
    pub fn draw(&self, rect: Rect, handle: DrawHandle) {
        let mut st = self.st.lock().unwrap();
        if st.closed {
            return;
        }
        if st.in_flight.is_some() {
            st.queued = Some((rect, handle));
        } else {
            self.send_draw(&mut st, rect, handle);
        }
    }

    fn send_draw(&self, st: &mut GlState, rect: Rect, handle: DrawHandle) {
        if self.outbox.send(&GlDraw {
            x: rect.x,
            y: rect.y,
            w: rect.w,
            h: rect.h,
        }) {
            st.in_flight = Some((handle, Instant::now()));
            self.cond.notify_all();
        }
    }

    fn done(&self) {
        let mut st = self.st.lock().unwrap();
        if st.in_flight.take().is_none() {
            log::warn(&format!("{}: GL_DRAW_DONE without a draw", self.peer));
            return;
        }
        if let Some(s) = st.pending_scanout.take() {
            self.send_scanout(s.as_ref());
        }
        if let Some((rect, h)) = st.queued.take() {
            self.send_draw(&mut st, rect, h);
        }
    }

    /// Drops every draw it holds (their cookies may complete) and disconnects.
    pub fn close(&self) {
        let mut st = self.st.lock().unwrap();
        st.closed = true;
        st.in_flight = None;
        st.queued = None;
        st.pending_scanout = None;
        drop(st);
        self.gone.store(true, Ordering::Release);
        self.cond.notify_all();
        self.outbox.close();
    }
}

fn run_gl(
    core: &Arc<Core>,
    id: u64,
    conn: &mut Conn,
    header: HeaderKind,
    outbox: &Arc<Outbox>,
    peer: &str,
) {
    let client = Arc::new(GlClient {
        peer: peer.to_string(),
        outbox: outbox.clone(),
        st: Mutex::default(),
        cond: Condvar::new(),
        gone: AtomicBool::new(false),
    });
    log::info(&format!(
        "{peer}: local client: the scanout dmabuf is passed as is"
    ));
    core.add_gl_client(id, client.clone());
    // Watchdog: a client that does not answer GL_DRAW_DONE in time is treated as gone.
    let timeout = core.config().gl_done_timeout;
    let watchdog = {
        let client = client.clone();
        std::thread::Builder::new()
            .name("shim-gl-watchdog".into())
            .spawn(move || {
                let mut st = client.st.lock().unwrap();
                loop {
                    if st.closed {
                        return;
                    }
                    let wait = match &st.in_flight {
                        Some((_, since)) if since.elapsed() >= timeout => {
                            drop(st);
                            log::warn(&format!(
                                "{}: no GL_DRAW_DONE within {} ms; treating the local client as gone",
                                client.peer,
                                timeout.as_millis()
                            ));
                            client.close();
                            return;
                        }
                        Some((_, since)) => timeout - since.elapsed(),
                        None => timeout,
                    };
                    st = client.cond.wait_timeout(st, wait).unwrap().0;
                }
            })
    };
    let why = read_messages(conn, header, |t, body| {
        match parse_client_display(t, &body) {
            Ok(ClientDisplayMsg::GlDrawDone) => client.done(),
            Ok(other) => log::debug(&format!("{peer}: display: {other:?}")),
            Err(e) => log::warn(&format!("{peer}: display channel: {e}")),
        }
        !client.gone.load(Ordering::Acquire)
    });
    log::debug(&format!("{peer}: display channel: {why}"));
    core.remove_gl_client(id);
    client.close();
    if let Ok(w) = watchdog {
        let _ = w.join();
    }
}
