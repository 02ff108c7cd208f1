//! The display channel: a remote client gets the scanout as a video stream
//! ([`StreamClient`]); a local client on a unix socket that can import dmabufs gets the fd
//! itself ([`GlClient`]).

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use gstspicedmabuf::{Rect, Scanout};

use crate::channel::read_messages;
use crate::conn::Conn;
use crate::encoder::{AccessUnit, KeyframeRequester};
use crate::ledger::DrawHandle;
use crate::log;
use crate::outbox::Outbox;
use crate::proto::caps::display_cap;
use crate::proto::consts::{gl_scanout_flags, stream_flags};
use crate::proto::{
    Caps, ClientDisplayMsg, GlDraw, GlScanoutUnix, HeaderKind, LinkMess, Mark, MonitorsConfig,
    StreamActivateReport, StreamCreate, StreamDestroy, SurfaceCreate, SurfaceDestroy, VideoCodec,
    parse_client_display,
};
use crate::ratecontrol::RateController;
use crate::shim::{ClientStats, Core};

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
    codec: Option<VideoCodec>,
    keyframes: Option<KeyframeRequester>,
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
pub struct StreamClient {
    pub id: u64,
    peer: String,
    outbox: Arc<Outbox>,
    caps: Caps,
    core: Weak<Core>,
    st: Mutex<StreamState>,
    sent: AtomicU64,
    dropped: AtomicU64,
    max_frames: usize,
    rate: Mutex<Option<RateController>>,
}

impl StreamClient {
    /// The codec in use.
    pub fn codec(&self) -> Option<VideoCodec> {
        self.st.lock().unwrap().codec
    }

    /// Forgets the codec in use (its pipeline is gone); with `failed`, never use it again.
    pub fn reset_codec(&self, failed: bool) {
        let mut st = self.st.lock().unwrap();
        if let Some(c) = st.codec.take()
            && failed
        {
            st.failed.insert(c);
        }
        st.keyframes = None;
    }

    /// This client's bitrate target, kbit/s.
    pub fn target_kbps(&self) -> Option<u32> {
        self.rate.lock().unwrap().as_ref().map(|r| r.target_kbps())
    }

    /// Feeds the rate controller; applies a changed target to the encoder.
    fn rate_event(&self, congested: bool) {
        let changed = {
            let mut rate = self.rate.lock().unwrap();
            let Some(r) = rate.as_mut() else { return };
            let now = Instant::now();
            if congested {
                r.congestion(now)
            } else {
                r.calm(now)
            }
        };
        if let (Some(kbps), Some(codec), Some(core)) = (changed, self.codec(), self.core.upgrade())
        {
            log::debug(&format!("{}: target bitrate {kbps} kbit/s", self.peer));
            core.apply_bitrate(codec);
        }
    }

    /// Switches to `codec`; the stream restarts at the next keyframe.
    pub fn begin(&self, codec: VideoCodec, keyframes: KeyframeRequester, max_kbps: Option<u32>) {
        *self.rate.lock().unwrap() = max_kbps.map(|k| RateController::new(k, Instant::now()));
        let mut st = self.st.lock().unwrap();
        st.codec = Some(codec);
        st.keyframes = Some(keyframes);
        st.need_keyframe = true;
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            id: self.id,
            peer: self.peer.clone(),
            codec: self.codec(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            connected: !self.outbox.is_closed(),
        }
    }

    /// Disconnects the client.
    pub fn close(&self) {
        self.outbox.close();
    }

    /// Delivers one access unit (called on the encoder's streaming thread; never blocks).
    pub fn on_access_unit(&self, codec: VideoCodec, au: &Arc<AccessUnit>) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let mut st = self.st.lock().unwrap();
        if st.codec != Some(codec) {
            return;
        }
        if st.need_keyframe && !au.keyframe {
            if let Some(k) = &st.keyframes {
                k.request(false);
            }
            return;
        }
        let top_down = core.y0_top.load(Ordering::Relaxed);
        let params = (codec, au.width, au.height, top_down);
        if st.params != Some(params) {
            if !au.keyframe {
                st.need_keyframe = true;
                if let Some(k) = &st.keyframes {
                    k.request(false);
                }
                return;
            }
            self.create_stream(&mut st, params);
        }
        let Some(stream_id) = st.stream_id else {
            return;
        };
        if self
            .outbox
            .send_stream(stream_id, core.mm_now(), au, self.max_frames)
        {
            self.sent.fetch_add(1, Ordering::Relaxed);
            if au.keyframe {
                st.need_keyframe = false;
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
            if let Some(k) = &st.keyframes {
                k.request(false);
            }
            drop(st);
            self.rate_event(true);
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
        if self.caps.has(display_cap::STREAM_REPORT) {
            self.outbox.send(&StreamActivateReport {
                stream_id: id,
                unique_id: id,
                max_window_size: 5,
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

    /// The codec to use: the client's preference order if it sent one, else the server's;
    /// only codecs the client can decode and has not failed on.
    fn choose_codec(&self, core: &Core) -> Option<VideoCodec> {
        let st = self.st.lock().unwrap();
        let multi = self.caps.has(display_cap::MULTI_CODEC);
        let offered: Vec<VideoCodec> = core.codecs.iter().map(|(c, _)| *c).collect();
        let mut order: Vec<VideoCodec> = st
            .prefs
            .iter()
            .copied()
            .filter(|c| offered.contains(c))
            .collect();
        for c in offered {
            if !order.contains(&c) {
                order.push(c);
            }
        }
        order.into_iter().find(|c| {
            !st.failed.contains(c)
                && match c {
                    VideoCodec::Mjpeg => !multi || self.caps.has(display_cap::CODEC_MJPEG),
                    other => multi && self.caps.has(other.client_cap()),
                }
        })
    }
}

/// (Re)subscribes `client` to the codec it should use now.
pub(crate) fn pick_and_attach(core: &Arc<Core>, client: &Arc<StreamClient>) {
    let want = client.choose_codec(core);
    let have = client.codec();
    if want == have && have.is_some() {
        return;
    }
    if have.is_some() {
        core.detach_stream(client);
    }
    match want {
        Some(codec) => {
            log::info(&format!("{}: using {codec}", client.peer));
            if let Err(e) = core.attach_stream(client, codec) {
                log::error(&format!(
                    "{}: cannot start the {codec} encoder: {e}",
                    client.peer
                ));
                client.st.lock().unwrap().failed.insert(codec);
                pick_and_attach(core, client);
            }
        }
        None => log::error(&format!(
            "{}: no offered codec is decodable by this client (its display caps {:?})",
            client.peer,
            client.caps.words()
        )),
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
    let client = Arc::new(StreamClient {
        id,
        peer: peer.to_string(),
        outbox: outbox.clone(),
        caps,
        core: Arc::downgrade(core),
        st: Mutex::default(),
        sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        max_frames: core.config.max_queued_frames,
        rate: Mutex::new(None),
    });
    core.state
        .lock()
        .unwrap()
        .streams
        .insert(id, client.clone());
    pick_and_attach(core, &client);
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
                    pick_and_attach(core, &client);
                } else {
                    log::debug(&format!("{peer}: stream report {r:?}"));
                    client.rate_event(r.num_drops > 0 || r.last_frame_delay < 0);
                }
            }
            Ok(ClientDisplayMsg::PreferredVideoCodecs(p)) => {
                client.st.lock().unwrap().prefs = p.known();
                pick_and_attach(core, &client);
            }
            Ok(other) => log::debug(&format!("{peer}: display: {other:?}")),
            Err(e) => log::warn(&format!("{peer}: display channel: {e}")),
        }
        true
    });
    log::debug(&format!("{peer}: display channel: {why}"));
    core.detach_stream(&client);
    outbox.close();
    core.state.lock().unwrap().streams.remove(&id);
    core.record_finished(client.stats());
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
    fn send_scanout(&self, scanout: Option<&Arc<Scanout>>) {
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
    {
        let mut st = core.state.lock().unwrap();
        client.send_scanout(st.scanout.as_ref());
        st.gl_clients.insert(id, client.clone());
    }
    // Watchdog: a client that does not answer GL_DRAW_DONE in time is treated as gone.
    let timeout = core.config.gl_done_timeout;
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
    core.state.lock().unwrap().gl_clients.remove(&id);
    client.close();
    if let Ok(w) = watchdog {
        let _ = w.join();
    }
}
