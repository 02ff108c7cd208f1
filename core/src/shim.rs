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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstspicedmabuf::{Rect, Scanout, ScanoutError, ScanoutInfo};

use crate::conn::Conn;
use crate::cursor_channel::CursorState;
use crate::display::{GlClient, StreamClient};
use crate::encoder;
use crate::encoders::{Counters, Encoders};
use crate::handshake::{self, Linked};
use crate::ledger::{CompleteFn, Ledger, LedgerStats};
use crate::log;
use crate::mouse::MouseModes;
use crate::pipeline_files;
use crate::proto::consts::{channel_type, link_err};
use crate::proto::{CursorShape, HeaderKind, InputEvent, LinkMess, VideoCodec};
use crate::throttle::Throttle;
use crate::ticket::TicketKey;
use crate::tls::{TlsConfig, TlsError};
use crate::trim;

/// Departed clients whose counters are kept for the exit report.
const MAX_FINISHED: usize = 256;
/// Connections in the link stage at once. When one more arrives, the oldest is dropped: a real
/// client links in milliseconds, so the oldest is the likeliest to be a peer that stalls on
/// purpose, and a flood of them cannot keep a new client out.
const MAX_HANDSHAKES: usize = 64;
/// Linked channels at once (their own room: handshakes in progress do not count).
const MAX_LINKED: usize = 128;

/// Callback for keyboard and mouse events from the inputs channel.
pub type InputFn = Arc<dyn Fn(&InputEvent) + Send + Sync>;

/// Errors of [`Shim::start`].
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot listen on {addr}: {err}")]
    Listen { addr: String, err: std::io::Error },
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and there is neither a password nor TLS, so any host could connect; {hint}"
    )]
    Exposed { addr: String, hint: &'static str },
    #[error("no usable video codec: {0}")]
    NoCodec(String),
    #[error("cannot create the ticket key: {0}")]
    Key(String),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
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
    /// Directory of pipeline files: `<codec>.d/*.pipeline`, else `<codec>.pipeline` (see
    /// [`crate::pipeline_files`]).
    pub pipelines_dir: PathBuf,
    /// Password for the SPICE ticket (`None`: any ticket is accepted).
    pub password: Option<String>,
    /// How long after a frame leaves the encoder remote clients show it (ms): spice-gtk shows
    /// each frame at its `multi_media_time`. `Some(n)`: fixed at `n`; `None` (the default):
    /// automatic, from [`crate::latency::START_MS`] within [`crate::latency::MIN_MS`] to
    /// [`crate::latency::MAX_MS`], raised when a client reports late frames and lowered slowly
    /// when it does not (see [`crate::latency`]).
    pub mm_latency_ms: Option<u32>,
    /// How long a local GL client may take to answer GL_DRAW_DONE.
    pub gl_done_timeout: Duration,
    /// Encoded frames queued per remote client before frames are dropped for it.
    pub max_queued_frames: usize,
    /// How long a connection may take for the whole link stage.
    pub handshake_timeout: Duration,
    /// Allow a non-loopback address without a password or TLS.
    pub disable_ticketing: bool,
    /// A TLS port, and which channels must use it.
    pub tls: Option<TlsListen>,
    /// How the front end spells its options, for messages that name them.
    pub spelling: OptionSpelling,
}

/// The TLS port (QEMU's `tls-port`): where, with which certificate, and which channels may
/// still link on the plain port.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// `host:port`.
    pub addr: String,
    /// Holds `ca-cert.pem`, `server-cert.pem` and `server-key.pem`.
    pub x509_dir: PathBuf,
    /// Channel types that must use TLS: a link on the plain port gets
    /// SPICE_LINK_ERR_NEED_SECURED and the client retries on the TLS port. Default: all.
    pub secure_channels: Vec<u8>,
}

impl TlsListen {
    /// Every channel this server has.
    pub const ALL_CHANNELS: [u8; 4] = [
        channel_type::MAIN,
        channel_type::DISPLAY,
        channel_type::INPUTS,
        channel_type::CURSOR,
    ];

    /// A TLS port on `addr` that every channel must use.
    pub fn new(addr: String, x509_dir: PathBuf) -> Self {
        Self {
            addr,
            x509_dir,
            secure_channels: Self::ALL_CHANNELS.to_vec(),
        }
    }

    /// Applies QEMU's `tls-channels`/`plaintext-channels` lists (channel names, or `default`
    /// for every channel not named in the other list).
    pub fn set_channel_lists(
        &mut self,
        tls: &[String],
        plaintext: &[String],
    ) -> Result<(), String> {
        let parse = |list: &[String]| -> Result<(Vec<u8>, bool), String> {
            let mut out = Vec::new();
            let mut default = false;
            for name in list {
                match name.as_str() {
                    "default" => default = true,
                    "main" => out.push(channel_type::MAIN),
                    "display" => out.push(channel_type::DISPLAY),
                    "inputs" => out.push(channel_type::INPUTS),
                    "cursor" => out.push(channel_type::CURSOR),
                    other => {
                        return Err(format!(
                            "unknown channel '{other}' (known: main, display, inputs, cursor, default)"
                        ));
                    }
                }
            }
            Ok((out, default))
        };
        let (secure, secure_default) = parse(tls)?;
        let (plain, plain_default) = parse(plaintext)?;
        if secure_default && plain_default {
            return Err("'default' cannot be in both tls-channels and plaintext-channels".into());
        }
        if let Some(c) = secure.iter().find(|c| plain.contains(c)) {
            return Err(format!(
                "channel {} is in both tls-channels and plaintext-channels",
                channel_type::name(*c)
            ));
        }
        self.secure_channels = Self::ALL_CHANNELS
            .into_iter()
            .filter(|c| secure.contains(c) || (!plain.contains(c) && !plain_default))
            .collect();
        Ok(())
    }
}

/// How a front end spells the options that messages name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptionSpelling {
    /// `spice-shim serve`/`qemu`: `--disable-ticketing`, `SPICE_PASSWORD`.
    #[default]
    CommandLine,
    /// The C library's QEMU-style option string: `disable-ticketing=on`, `password-file=`.
    OptionString,
}

impl OptionSpelling {
    fn exposed_hint(self) -> &'static str {
        match self {
            OptionSpelling::CommandLine => {
                "set a password (SPICE_PASSWORD or --password-file), or allow it with --disable-ticketing"
            }
            OptionSpelling::OptionString => {
                "set a password (password-secret= or password-file=), or allow it with disable-ticketing=on"
            }
        }
    }

    fn no_password_hint(self) -> &'static str {
        match self {
            OptionSpelling::CommandLine => "set SPICE_PASSWORD or --password-file to require one",
            OptionSpelling::OptionString => "set password-secret= or password-file= to require one",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tcp: Some("127.0.0.1:5930".into()),
            unix: None,
            codecs: vec![VideoCodec::H264, VideoCodec::Vp8, VideoCodec::Mjpeg],
            pipelines_dir: default_pipelines_dir(),
            password: None,
            mm_latency_ms: None,
            gl_done_timeout: Duration::from_secs(1),
            max_queued_frames: 8,
            handshake_timeout: Duration::from_secs(10),
            disable_ticketing: false,
            tls: None,
            spelling: OptionSpelling::CommandLine,
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
    /// Bytes written to its display channel (every message, not only video).
    pub bytes: u64,
    /// Its rate-control bitrate target (kbit/s), once its stream has a rate controller.
    pub target_kbps: Option<u32>,
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
    cursor: CursorState,
    stopping: AtomicBool,
    next_id: AtomicU64,
    finished_clients: Mutex<Vec<ClientStats>>,
    conns: Mutex<HashMap<u64, Conn>>,
    /// Connections in the link stage: since when, and a handle to drop them.
    handshakes: Mutex<HashMap<u64, (Instant, Conn)>>,
    /// Linked channels being served.
    linked: AtomicUsize,
    /// Wrong tickets per address.
    throttle: Mutex<Throttle>,
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

    pub fn cursor(&self) -> &CursorState {
        &self.cursor
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
        let mut last_trim = Instant::now();
        let mut last_tend = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            // Every 10 ms a lone change's follow-up frame may be due; the rest every 50 ms.
            std::thread::sleep(Duration::from_millis(10));
            if last_tend.elapsed() < Duration::from_millis(50) {
                self.encoders.flush_idle();
                continue;
            }
            last_tend = Instant::now();
            self.encoders.tend();
            if last_trim.elapsed() >= trim::INTERVAL && trim::take_wanted() {
                trim::release_free_memory();
                last_trim = Instant::now();
            }
            for line in self.throttle.lock().unwrap().expire(Instant::now()) {
                log::info(&line);
            }
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

    fn admit(&self, mess: &LinkMess, secure: bool) -> Result<(), u32> {
        if !secure
            && let Some(t) = &self.config.tls
            && t.secure_channels.contains(&mess.channel_type)
        {
            return Err(link_err::NEED_SECURED);
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err(link_err::ERROR);
        }
        if self.linked.load(Ordering::Acquire) >= MAX_LINKED {
            log::warn(&format!(
                "link refused: {MAX_LINKED} channels already linked"
            ));
            return Err(link_err::ERROR);
        }
        match mess.channel_type {
            channel_type::MAIN if mess.connection_id == 0 => Ok(()),
            channel_type::MAIN => Err(link_err::BAD_CONNECTION_ID),
            channel_type::DISPLAY | channel_type::INPUTS | channel_type::CURSOR
                if mess.channel_id == 0 =>
            {
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

    /// Takes a new connection into the link stage, dropping the oldest one in it if there
    /// are already [`MAX_HANDSHAKES`].
    fn begin_handshake(&self, conn: &Conn) -> Option<u64> {
        let handle = conn.try_clone().ok()?;
        let id = self.next_id();
        let mut hs = self.handshakes.lock().unwrap();
        if hs.len() >= MAX_HANDSHAKES {
            let oldest = hs.iter().min_by_key(|(_, (t, _))| *t).map(|(id, _)| *id);
            if let Some((_, old)) = oldest.and_then(|o| hs.remove(&o)) {
                log::debug(&format!(
                    "{}: dropped: {MAX_HANDSHAKES} connections in the link stage and this one is the oldest",
                    old.peer()
                ));
                old.shutdown();
            }
        }
        hs.insert(id, (Instant::now(), handle));
        Some(id)
    }

    fn handle_connection(self: Arc<Self>, mut conn: Conn, handshake_id: u64) {
        let peer = conn.peer();
        let peer_ip = conn.peer_ip();
        // Unix sockets are local: as private as TLS.
        let secure = matches!(conn, Conn::Tls(_) | Conn::Unix(_));
        let linked = handshake::handshake(
            &mut conn,
            peer_ip,
            &handshake::Policy {
                key: &self.key,
                password: self.config.password.as_deref(),
                admit: &|m| self.admit(m, secure),
                throttle: &self.throttle,
                deadline: Instant::now() + self.config.handshake_timeout,
            },
        );
        self.handshakes.lock().unwrap().remove(&handshake_id);
        let Linked { mess, header } = match linked {
            Ok(l) => l,
            Err(e) => {
                log::warn(&format!("{peer}: link failed: {e}"));
                return;
            }
        };
        self.linked.fetch_add(1, Ordering::AcqRel);
        self.serve_linked(conn, peer, mess, header);
        self.linked.fetch_sub(1, Ordering::AcqRel);
    }

    fn serve_linked(
        self: &Arc<Self>,
        conn: Conn,
        peer: String,
        mess: LinkMess,
        header: HeaderKind,
    ) {
        let id = self.next_id();
        self.register_conn(id, &conn);
        log::info(&format!(
            "{peer}: {} channel linked",
            channel_type::name(mess.channel_type)
        ));
        match mess.channel_type {
            channel_type::MAIN => {
                let session = self.new_session();
                crate::main_channel::run(self, id, conn, header, session);
                self.state.lock().unwrap().sessions.remove(&session);
            }
            channel_type::DISPLAY => {
                crate::display::run(self, id, conn, header, &mess, peer.clone())
            }
            channel_type::INPUTS => crate::inputs_channel::run(self, conn, header),
            channel_type::CURSOR => crate::cursor_channel::run(self, id, conn, header),
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
    tls_addr: Option<std::net::SocketAddr>,
    unix_path: Option<PathBuf>,
    accept_threads: Vec<JoinHandle<()>>,
}

impl Shim {
    /// Checks the pipelines, listens, and returns. `on_complete(cookie)` runs on a shim thread
    /// once per `gl_draw` cookie.
    pub fn start(config: Config, on_complete: CompleteFn) -> Result<Shim, ShimError> {
        gst::init().map_err(|e| ShimError::Gst(e.to_string()))?;
        gstspicedmabuf::register_static().map_err(|e| ShimError::Gst(e.to_string()))?;

        // Each codec's pipeline: the first of its files that parses and starts here (see
        // pipeline_files); the files after it are the hub's fallbacks.
        let mut codecs = Vec::new();
        let mut problems = Vec::new();
        for &codec in &config.codecs {
            match pipeline_files::choose(&config.pipelines_dir, codec, &encoder::probe) {
                Ok(choice) => {
                    if let Some(plain) = &choice.shadowed {
                        log::warn(&format!(
                            "{} is ignored: {codec}.d/ is used instead (move it into {codec}.d/, \
                             e.g. as {codec}.d/05-local.pipeline)",
                            plain.display()
                        ));
                    }
                    log::info(&choice.summary());
                    log::info(&format!(
                        "codec {codec}: pipeline {}",
                        encoder::one_line(&choice.text)
                    ));
                    codecs.push((codec, choice.variants()));
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
            log::warn(&format!(
                "no password set: any client may connect ({})",
                config.spelling.no_password_hint()
            ));
        }
        let key = TicketKey::generate().map_err(|e| ShimError::Key(e.to_string()))?;

        let tls = match &config.tls {
            Some(t) => Some((TlsConfig::from_x509_dir(&t.x509_dir)?, bind(&t.addr)?.0)),
            None => None,
        };
        let tcp = match &config.tcp {
            Some(addr) => {
                let (l, sock) = bind(addr)?;
                if !sock.ip().is_loopback()
                    && config.password.is_none()
                    && config.tls.is_none()
                    && !config.disable_ticketing
                {
                    return Err(ShimError::Exposed {
                        addr: addr.clone(),
                        hint: config.spelling.exposed_hint(),
                    });
                }
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
            cursor: CursorState::new(),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            finished_clients: Mutex::default(),
            conns: Mutex::default(),
            handshakes: Mutex::default(),
            linked: AtomicUsize::new(0),
            throttle: Mutex::default(),
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
        let mut tls_addr = None;
        if let Some((tls, l)) = tls {
            tls_addr = l.local_addr().ok();
            let t = config.tls.as_ref().expect("TLS configured");
            log::info(&format!(
                "listening on spice+tls://{} (certificate from {}); channels that must use TLS: {}",
                tls_addr.map(|a| a.to_string()).unwrap_or_default(),
                t.x509_dir.display(),
                if t.secure_channels.is_empty() {
                    "none".to_string()
                } else {
                    t.secure_channels
                        .iter()
                        .map(|c| channel_type::name(*c))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            l.set_nonblocking(true).ok();
            let weak = Arc::downgrade(&core);
            accept_threads.push(
                std::thread::Builder::new()
                    .name("shim-accept-tls".into())
                    .spawn(move || {
                        accept_loop(weak, || {
                            let (s, _) = l.accept()?;
                            let _ = s.set_nodelay(true);
                            let _ = s.set_nonblocking(false);
                            Ok(Conn::Tls(Box::new(tls.accept(s)?)))
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
            tls_addr,
            unix_path: config.unix.clone(),
            accept_threads,
        })
    }

    /// The TLS address actually listened on.
    pub fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        self.tls_addr
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

    /// Defines the pointer's shape (QEMU's `dpy_cursor_define`); clients draw it themselves.
    pub fn cursor_define(&self, shape: CursorShape) {
        self.core.cursor.define(shape);
    }

    /// Moves, shows or hides the pointer (QEMU's `dpy_mouse_set`); `x`, `y` is where its hot
    /// spot is, in scanout pixels.
    pub fn mouse_set(&self, x: i32, y: i32, visible: bool) {
        self.core.cursor.set_position(x, y, visible);
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
        for (_, conn) in self.core.handshakes.lock().unwrap().values() {
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

/// Resolves and binds `addr` (`host:port`).
fn bind(addr: &str) -> Result<(TcpListener, std::net::SocketAddr), ShimError> {
    let listen = |err| ShimError::Listen {
        addr: addr.to_owned(),
        err,
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(listen)?
        .next()
        .ok_or_else(|| listen(std::io::ErrorKind::NotFound.into()))?;
    let l = TcpListener::bind(sock).map_err(listen)?;
    Ok((l, sock))
}

fn accept_loop(core: Weak<Core>, accept: impl Fn() -> std::io::Result<Conn>) {
    loop {
        let Some(c) = core.upgrade() else { return };
        if c.stopping.load(Ordering::Acquire) {
            return;
        }
        match accept() {
            Ok(conn) => {
                let Some(id) = c.begin_handshake(&conn) else {
                    continue;
                };
                let core2 = c.clone();
                c.spawn("shim-conn", move || {
                    core2.handle_connection(conn, id);
                    // What the connection's threads freed goes back to the system.
                    trim::wanted();
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
