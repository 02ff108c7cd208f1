//! The shim: SPICE listeners, sessions, encoder pipelines and the cookie ledger behind the
//! host-facing calls (`gl_scanout`, `gl_draw`), shared by the C library and `spice-shim serve`.
//!
//! Lock order: `Core::state` before any `StreamClient::st` / `GlClient` lock before an
//! `Outbox` lock. Encoder pipelines are started and stopped outside `Core::state`, so host calls
//! never wait for a pipeline to change state.

use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstspicedmabuf::{Rect, Scanout, ScanoutError, ScanoutInfo};

use crate::conn::Conn;
use crate::display::{GlClient, StreamClient};
use crate::encoder;
use crate::encoders::{Counters, Encoders};
use crate::handshake::{self, Linked};
use crate::ledger::{CompleteFn, Ledger, LedgerStats};
use crate::log;
use crate::mouse::MouseModes;
use crate::proto::consts::{channel_type, link_err};
use crate::proto::{InputEvent, LinkMess, VideoCodec};
use crate::ticket::TicketKey;

/// Departed clients whose counters are kept for the exit report.
const MAX_FINISHED: usize = 256;
/// Connections served at once; more are closed at accept (a connection flood must not exhaust
/// threads).
const MAX_CONNECTIONS: usize = 128;

/// Callback for keyboard and mouse events from the inputs channel.
pub type InputFn = Arc<dyn Fn(&InputEvent) + Send + Sync>;

/// Errors of [`Shim::start`].
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot listen on {addr}: {err}")]
    Listen { addr: String, err: std::io::Error },
    #[error("no usable video codec: {0}")]
    NoCodec(String),
    #[error("cannot create the ticket key: {0}")]
    Key(String),
    #[error("GStreamer: {0}")]
    Gst(String),
}

/// Server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP address (`host:port`; port 0 picks a free one). `None`: no TCP listener.
    pub tcp: Option<String>,
    /// Unix socket path for local clients. `None`: no unix listener.
    pub unix: Option<PathBuf>,
    /// Codecs in order of preference.
    pub codecs: Vec<VideoCodec>,
    /// Directory of `<codec>.pipeline` files.
    pub pipelines_dir: PathBuf,
    /// Password for the SPICE ticket (`None`: any ticket is accepted).
    pub password: Option<String>,
    /// How far the client's multimedia clock runs behind the server's (ms).
    pub mm_latency_ms: u32,
    /// How long a local GL client may take to answer GL_DRAW_DONE.
    pub gl_done_timeout: Duration,
    /// Encoded frames queued per remote client before frames are dropped for it.
    pub max_queued_frames: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tcp: Some("127.0.0.1:5930".into()),
            unix: None,
            codecs: vec![VideoCodec::H264, VideoCodec::Vp8, VideoCodec::Mjpeg],
            pipelines_dir: default_pipelines_dir(),
            password: None,
            mm_latency_ms: 150,
            gl_done_timeout: Duration::from_secs(1),
            max_queued_frames: 8,
        }
    }
}

/// `pipelines/` next to the executable's project, or `$SPICE_SHIM_PIPELINES`, or the
/// installed data directory.
pub fn default_pipelines_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SPICE_SHIM_PIPELINES") {
        return PathBuf::from(d);
    }
    let source_tree = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines"));
    if source_tree.is_dir() {
        return source_tree;
    }
    PathBuf::from("/usr/local/share/spice-shim/pipelines")
}

/// Counters reported at exit.
#[derive(Debug, Clone, Default)]
pub struct ShimStats {
    pub ledger: LedgerStats,
    pub encoded: Vec<(VideoCodec, u64)>,
    /// Bitrate of each running encoder (kbit/s), as rate control set it.
    pub bitrates: Vec<(VideoCodec, u32)>,
    pub clients: Vec<ClientStats>,
}

/// Frames sent to and dropped for one remote client.
#[derive(Debug, Clone)]
pub struct ClientStats {
    pub id: u64,
    pub peer: String,
    pub codec: Option<VideoCodec>,
    pub sent: u64,
    pub dropped: u64,
    pub connected: bool,
}

impl std::fmt::Display for ShimStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "frames drawn: {}, cookies returned: {}",
            self.ledger.drawn, self.ledger.returned
        )?;
        for (codec, n) in &self.encoded {
            writeln!(f, "frames encoded ({codec}): {n}")?;
        }
        for c in &self.clients {
            writeln!(
                f,
                "client {} ({}, {}): {} frames sent, {} dropped{}",
                c.id,
                c.peer,
                c.codec.map(|c| c.name()).unwrap_or("no codec"),
                c.sent,
                c.dropped,
                if c.connected { "" } else { " (disconnected)" }
            )?;
        }
        Ok(())
    }
}

/// The server's multimedia clock (ms), shared by every channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MmClock {
    start: Instant,
}

impl MmClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Milliseconds since the server started, offset so that it is never 0.
    pub fn now(&self) -> u32 {
        (self.start.elapsed().as_millis() as u32).wrapping_add(10_000)
    }
}

struct State {
    scanout: Option<Arc<Scanout>>,
    sessions: HashSet<u32>,
    streams: HashMap<u64, Arc<StreamClient>>,
    gl_clients: HashMap<u64, Arc<GlClient>>,
}

/// What the channels share. Lock order: `state` before the encoders' state (see
/// [`crate::encoders`]) and before any client's lock.
pub(crate) struct Core {
    config: Config,
    ledger: Ledger,
    key: TicketKey,
    encoders: Arc<Encoders>,
    clock: MmClock,
    state: Mutex<State>,
    input: Mutex<Option<InputFn>>,
    mouse: MouseModes,
    stopping: AtomicBool,
    next_id: AtomicU64,
    finished_clients: Mutex<Vec<ClientStats>>,
    conns: Mutex<HashMap<u64, Conn>>,
    /// Connections being served (link stage included).
    active: std::sync::atomic::AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Core {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn encoders(&self) -> &Arc<Encoders> {
        &self.encoders
    }

    pub fn clock(&self) -> MmClock {
        self.clock
    }

    /// The server's multimedia clock in ms (never 0).
    pub fn mm_now(&self) -> u32 {
        self.clock.now()
    }

    pub fn mouse(&self) -> &MouseModes {
        &self.mouse
    }

    /// The embedder's keyboard and mouse callback, if any.
    pub fn input_callback(&self) -> Option<InputFn> {
        self.input.lock().unwrap().clone()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A remote client, counted in the stats and disconnected at shutdown.
    pub fn add_stream_client(&self, client: Arc<StreamClient>) {
        self.state.lock().unwrap().streams.insert(client.id, client);
    }

    /// The client left; its counters are kept for the exit report.
    pub fn remove_stream_client(&self, client: &StreamClient) {
        self.state.lock().unwrap().streams.remove(&client.id);
        self.record_finished(client.stats());
    }

    /// A local client: it gets the current scanout now and every scanout and draw after.
    pub fn add_gl_client(&self, id: u64, client: Arc<GlClient>) {
        let mut st = self.state.lock().unwrap();
        client.send_scanout(st.scanout.as_ref());
        st.gl_clients.insert(id, client);
    }

    pub fn remove_gl_client(&self, id: u64) {
        self.state.lock().unwrap().gl_clients.remove(&id);
    }

    /// Restarts failed pipelines and flushes idle ones until the server stops.
    fn supervise(&self) {
        while !self.stopping.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50));
            self.encoders.tend();
        }
    }

    /// Keeps the counters of a client that left (the last [`MAX_FINISHED`] of them).
    fn record_finished(&self, stats: ClientStats) {
        let mut f = self.finished_clients.lock().unwrap();
        if f.len() >= MAX_FINISHED {
            f.remove(0);
        }
        f.push(stats);
    }

    fn register_conn(&self, id: u64, conn: &Conn) {
        if let Ok(c) = conn.try_clone() {
            self.conns.lock().unwrap().insert(id, c);
        }
    }

    fn unregister_conn(&self, id: u64) {
        self.conns.lock().unwrap().remove(&id);
    }

    pub fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) {
        match std::thread::Builder::new().name(name.into()).spawn(f) {
            Ok(h) => {
                let mut threads = self.threads.lock().unwrap();
                threads.retain(|t| !t.is_finished());
                threads.push(h);
            }
            Err(e) => log::error(&format!("cannot start thread {name}: {e}")),
        }
    }

    fn admit(&self, mess: &LinkMess) -> Result<(), u32> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(link_err::ERROR);
        }
        match mess.channel_type {
            channel_type::MAIN if mess.connection_id == 0 => Ok(()),
            channel_type::MAIN => Err(link_err::BAD_CONNECTION_ID),
            channel_type::DISPLAY | channel_type::INPUTS if mess.channel_id == 0 => {
                if self
                    .state
                    .lock()
                    .unwrap()
                    .sessions
                    .contains(&mess.connection_id)
                {
                    Ok(())
                } else {
                    Err(link_err::BAD_CONNECTION_ID)
                }
            }
            _ => Err(link_err::CHANNEL_NOT_AVAILABLE),
        }
    }

    fn new_session(&self) -> u32 {
        let mut st = self.state.lock().unwrap();
        loop {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            let id = u32::from_le_bytes(b);
            if id != 0 && st.sessions.insert(id) {
                return id;
            }
        }
    }

    fn handle_connection(self: Arc<Self>, mut conn: Conn) {
        let peer = conn.peer();
        let linked = handshake::handshake(
            &mut conn,
            &self.key,
            self.config.password.as_deref(),
            &|m| self.admit(m),
        );
        let Linked { mess, header } = match linked {
            Ok(l) => l,
            Err(e) => {
                log::warn(&format!("{peer}: link failed: {e}"));
                return;
            }
        };
        let id = self.next_id();
        self.register_conn(id, &conn);
        log::info(&format!(
            "{peer}: {} channel linked",
            channel_type::name(mess.channel_type)
        ));
        match mess.channel_type {
            channel_type::MAIN => {
                let session = self.new_session();
                crate::main_channel::run(&self, id, conn, header, session);
                self.state.lock().unwrap().sessions.remove(&session);
            }
            channel_type::DISPLAY => {
                crate::display::run(&self, id, conn, header, &mess, peer.clone())
            }
            channel_type::INPUTS => crate::inputs_channel::run(&self, conn, header),
            _ => {}
        }
        self.unregister_conn(id);
        log::info(&format!(
            "{peer}: {} channel closed",
            channel_type::name(mess.channel_type)
        ));
    }
}

/// A running shim.
pub struct Shim {
    core: Arc<Core>,
    tcp_addr: Option<std::net::SocketAddr>,
    unix_path: Option<PathBuf>,
    accept_threads: Vec<JoinHandle<()>>,
}

impl Shim {
    /// Checks the pipelines, listens, and returns. `on_complete(cookie)` runs on a shim thread
    /// once per `gl_draw` cookie.
    pub fn start(config: Config, on_complete: CompleteFn) -> Result<Shim, ShimError> {
        gst::init().map_err(|e| ShimError::Gst(e.to_string()))?;
        gstspicedmabuf::register_static().map_err(|e| ShimError::Gst(e.to_string()))?;

        let mut codecs = Vec::new();
        let mut problems = Vec::new();
        for &codec in &config.codecs {
            match encoder::read_pipeline(&config.pipelines_dir, codec)
                .and_then(|t| encoder::check(&t).map(|_| t))
            {
                Ok(text) => {
                    log::info(&format!(
                        "codec {codec}: pipeline {}",
                        encoder::one_line(&text)
                    ));
                    codecs.push((codec, text));
                }
                Err(e) => {
                    log::warn(&format!("codec {codec} not offered: {e}"));
                    problems.push(format!("{codec}: {e}"));
                }
            }
        }
        if codecs.is_empty() {
            return Err(ShimError::NoCodec(problems.join("; ")));
        }
        log::info(&format!(
            "codecs offered: {}",
            codecs
                .iter()
                .map(|(c, _)| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        if config.password.is_none() {
            log::warn(
                "no password set: any client may connect (set SPICE_PASSWORD or password-file= to require one)",
            );
        }
        let key = TicketKey::generate().map_err(|e| ShimError::Key(e.to_string()))?;

        let tcp = match &config.tcp {
            Some(addr) => {
                let sock = addr
                    .to_socket_addrs()
                    .map_err(|err| ShimError::Listen {
                        addr: addr.clone(),
                        err,
                    })?
                    .next()
                    .ok_or_else(|| ShimError::Listen {
                        addr: addr.clone(),
                        err: std::io::ErrorKind::NotFound.into(),
                    })?;
                let l = TcpListener::bind(sock).map_err(|err| ShimError::Listen {
                    addr: addr.clone(),
                    err,
                })?;
                Some(l)
            }
            None => None,
        };
        let unix = match &config.unix {
            Some(path) => {
                if std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(path);
                }
                Some(UnixListener::bind(path).map_err(|err| ShimError::Listen {
                    addr: path.display().to_string(),
                    err,
                })?)
            }
            None => None,
        };

        let core = Arc::new(Core {
            config: config.clone(),
            ledger: Ledger::new(on_complete),
            key,
            encoders: Encoders::new(codecs),
            clock: MmClock::new(),
            state: Mutex::new(State {
                scanout: None,
                sessions: HashSet::new(),
                streams: HashMap::new(),
                gl_clients: HashMap::new(),
            }),
            input: Mutex::new(None),
            mouse: MouseModes::new(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            finished_clients: Mutex::default(),
            conns: Mutex::default(),
            active: std::sync::atomic::AtomicUsize::new(0),
            threads: Mutex::default(),
        });

        let mut accept_threads = Vec::new();
        {
            let core2 = core.clone();
            core.spawn("shim-supervisor", move || core2.supervise());
        }
        let mut tcp_addr = None;
        if let Some(l) = tcp {
            tcp_addr = l.local_addr().ok();
            log::info(&format!(
                "listening on spice://{}",
                tcp_addr.map(|a| a.to_string()).unwrap_or_default()
            ));
            l.set_nonblocking(true).ok();
            let weak = Arc::downgrade(&core);
            accept_threads.push(
                std::thread::Builder::new()
                    .name("shim-accept-tcp".into())
                    .spawn(move || {
                        accept_loop(weak, || {
                            l.accept().map(|(s, _)| {
                                let _ = s.set_nodelay(true);
                                let _ = s.set_nonblocking(false);
                                Conn::Tcp(s)
                            })
                        })
                    })
                    .expect("spawn the accept thread"),
            );
        }
        if let Some(l) = unix {
            log::info(&format!(
                "listening on spice+unix://{}",
                config.unix.as_ref().unwrap().display()
            ));
            l.set_nonblocking(true).ok();
            let weak = Arc::downgrade(&core);
            accept_threads.push(
                std::thread::Builder::new()
                    .name("shim-accept-unix".into())
                    .spawn(move || {
                        accept_loop(weak, || {
                            l.accept().map(|(s, _)| {
                                let _ = s.set_nonblocking(false);
                                Conn::Unix(s)
                            })
                        })
                    })
                    .expect("spawn the accept thread"),
            );
        }
        Ok(Shim {
            core,
            tcp_addr,
            unix_path: config.unix.clone(),
            accept_threads,
        })
    }

    /// The TCP address actually listened on.
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp_addr
    }

    /// Codecs offered to clients.
    pub fn codecs(&self) -> Vec<VideoCodec> {
        self.core.encoders.offered()
    }

    /// Sets the callback for keyboard and mouse events (None: events are only logged).
    pub fn set_input_callback(&self, cb: Option<InputFn>) {
        *self.core.input.lock().unwrap() = cb;
    }

    /// Whether the host takes absolute pointer positions (QEMU: a tablet). Clients get client
    /// mouse mode only while it does, server mode (relative motion) otherwise; every connected
    /// client is told at once. Default: true.
    pub fn set_client_mouse_available(&self, available: bool) {
        self.core.mouse.set_client_available(available);
    }

    /// Replaces the scanout (`info == None`: scanout disabled). Takes ownership of `fds`. Frames
    /// in flight keep the old scanout (and its fds) alive until GStreamer releases them.
    pub fn gl_scanout(
        &self,
        info: Option<ScanoutInfo>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), ScanoutError> {
        let scanout = match info {
            Some(info) => match Scanout::new(info, fds) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    log::error(&format!("gl_scanout refused: {e}; scanout disabled"));
                    self.set_scanout(None);
                    return Err(e);
                }
            },
            None => None,
        };
        self.set_scanout(scanout);
        Ok(())
    }

    fn set_scanout(&self, scanout: Option<Arc<Scanout>>) {
        let st = &mut *self.core.state.lock().unwrap();
        self.core.encoders.set_scanout(scanout.clone());
        for gl in st.gl_clients.values() {
            gl.scanout(scanout.as_ref());
        }
        if scanout.is_none() {
            log::info("scanout disabled: remote clients keep the last picture");
        }
        st.scanout = scanout;
    }

    /// Announces that `rect` of the scanout changed. `cookie` comes back exactly once through
    /// the completion callback. Never blocks on clients or encoders.
    pub fn gl_draw(&self, rect: Rect, cookie: u64) {
        let handle = self.core.ledger.open(cookie);
        if self.core.stopping.load(Ordering::Acquire) {
            return;
        }
        let st = self.core.state.lock().unwrap();
        let Some(scanout) = st.scanout.clone() else {
            log::error(&format!(
                "gl_draw (cookie {cookie}) without a scanout: completed at once"
            ));
            return;
        };
        if !scanout.contains(&rect) {
            log::error(&format!(
                "gl_draw (cookie {cookie}): rectangle {},{} {}x{} lies outside the {}x{} scanout; completed at once",
                rect.x,
                rect.y,
                rect.w,
                rect.h,
                scanout.width(),
                scanout.height()
            ));
            return;
        }
        self.core.encoders.draw(rect, cookie, &handle);
        for gl in st.gl_clients.values() {
            gl.draw(rect, handle.clone());
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ShimStats {
        stats_of(&self.core)
    }

    /// Stops everything: clients are disconnected, pipelines stopped, every pending cookie
    /// completed (the callback has run for all of them when this returns).
    pub fn shutdown(mut self) -> ShimStats {
        self.stop();
        stats_of(&self.core)
    }

    fn stop(&mut self) {
        if self.core.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        for t in self.accept_threads.drain(..) {
            let _ = t.join();
        }
        for conn in self.core.conns.lock().unwrap().values() {
            conn.shutdown();
        }
        let (streams, gls) = {
            let mut st = self.core.state.lock().unwrap();
            st.scanout = None;
            (
                st.streams.drain().map(|(_, c)| c).collect::<Vec<_>>(),
                st.gl_clients.drain().map(|(_, c)| c).collect::<Vec<_>>(),
            )
        };
        for c in &streams {
            c.close();
        }
        for c in &gls {
            c.close();
        }
        self.core.encoders.stop();
        let threads: Vec<_> = self.core.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.core.ledger.shutdown();
        gstspicedmabuf::mapcache::clear();
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stats_of(core: &Core) -> ShimStats {
    let Counters { encoded, bitrates } = core.encoders.counters();
    let mut clients = core.finished_clients.lock().unwrap().clone();
    clients.extend(
        core.state
            .lock()
            .unwrap()
            .streams
            .values()
            .map(|c| c.stats()),
    );
    clients.sort_by_key(|c| c.id);
    ShimStats {
        ledger: core.ledger.stats(),
        encoded,
        bitrates,
        clients,
    }
}

fn accept_loop(core: Weak<Core>, accept: impl Fn() -> std::io::Result<Conn>) {
    loop {
        let Some(c) = core.upgrade() else { return };
        if c.stopping.load(Ordering::Acquire) {
            return;
        }
        match accept() {
            Ok(conn) => {
                if c.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    c.active.fetch_sub(1, Ordering::AcqRel);
                    log::warn(&format!(
                        "{}: refused, {MAX_CONNECTIONS} connections already served",
                        conn.peer()
                    ));
                    continue;
                }
                let core2 = c.clone();
                c.spawn("shim-conn", move || {
                    core2.clone().handle_connection(conn);
                    core2.active.fetch_sub(1, Ordering::AcqRel);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                drop(c);
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                log::warn(&format!("accept failed: {e}"));
                drop(c);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
