//! Helpers for the end-to-end tests that drive `spice-shim serve` with the real spice-gtk
//! clients (spicy-screenshot, remote-viewer under Xvfb): the server launcher and its exit
//! report, and a locator for the colour bars inside a screenshot of a whole X screen. The
//! generic plumbing (test directories, child processes, free ports) is in `util`, which the
//! test binary must include too.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use test_guest::{BARS, Image};

use crate::util::{ChildGuard, TempDir, free_port, poll, port_open, tail};

/// How long a spice-gtk client gets to produce its picture.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server gets to start listening, and to exit after SIGTERM.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-channel tolerance for pictures that went through H.264 (or MJPEG/VP8).
pub const TOLERANCE: u8 = 48;

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A running `spice-shim serve` on 127.0.0.1 (killed if the test fails).
pub struct Server {
    proc: ChildGuard,
    port: u16,
}

impl Server {
    /// Starts `spice-shim serve --listen 127.0.0.1:<free port> <args>` with `SPICE_PASSWORD`
    /// set to `password` (or unset), and waits until it accepts TCP connections. A port taken
    /// meanwhile by someone else is retried with another one.
    pub fn start(dir: &TempDir, args: &[&str], password: Option<&str>) -> Self {
        Self::start_with_env(dir, args, password, &[])
    }

    /// [`Server::start`] with extra environment variables (e.g. `GST_DEBUG`).
    pub fn start_with_env(
        dir: &TempDir,
        args: &[&str],
        password: Option<&str>,
        envs: &[(&str, &str)],
    ) -> Self {
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_spice-shim"));
            cmd.arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(args)
                .envs(envs.iter().copied());
            match password {
                Some(p) => cmd.env("SPICE_PASSWORD", p),
                None => cmd.env_remove("SPICE_PASSWORD"),
            };
            let name = if attempt == 0 {
                "server".to_string()
            } else {
                format!("server-{attempt}")
            };
            let mut proc = ChildGuard::spawn(&name, cmd, dir);
            let listening = format!("listening on spice://127.0.0.1:{port}");
            let ready = poll(SERVER_TIMEOUT, || {
                if let Some(status) = proc.try_wait() {
                    return Some(Err(status));
                }
                (proc.stderr().contains(&listening) && port_open(port)).then_some(Ok(()))
            });
            match ready {
                Some(Ok(())) => return Self { proc, port },
                Some(Err(status)) => {
                    let logs = proc.logs();
                    let in_use = logs.contains("in use") || logs.contains("AddrInUse");
                    if !in_use {
                        panic!("the server exited with {status} at start-up\n{logs}");
                    }
                    last = logs;
                }
                None => panic!(
                    "the server does not listen on 127.0.0.1:{port} after {SERVER_TIMEOUT:?}\n{}",
                    proc.logs()
                ),
            }
        }
        panic!("the server could not bind a free port in 5 attempts\n{last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `spice://127.0.0.1:<port>`
    pub fn uri(&self) -> String {
        format!("spice://127.0.0.1:{}", self.port)
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// Panics, with the server's output, if it has exited.
    pub fn assert_running(&mut self, when: &str) {
        self.proc.assert_running(when);
    }

    /// Waits up to `timeout` for `needle` to appear in the server's stderr.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        poll(timeout, || self.stderr().contains(needle).then_some(())).is_some()
    }

    /// Stops the server with SIGTERM, waits for it to exit and parses its report. Panics if it
    /// had already exited, does not exit in time, or prints no report.
    pub fn stop(mut self) -> ServerExit {
        self.proc.assert_running("before it was asked to stop");
        assert!(self.proc.signal(Signal::TERM), "cannot send SIGTERM");
        let Some(status) = self.proc.wait_timeout(SERVER_TIMEOUT) else {
            panic!(
                "the server is still running {SERVER_TIMEOUT:?} after SIGTERM\n{}",
                self.proc.logs()
            );
        };
        let stdout = self.proc.stdout();
        let stderr = self.proc.stderr();
        let stats = Stats::parse(&stdout).unwrap_or_else(|e| {
            panic!(
                "cannot parse the server's exit report ({e}); it exited with {status}\n{}",
                self.proc.logs()
            )
        });
        ServerExit {
            status,
            stdout,
            stderr,
            stats,
        }
    }
}

/// How the server ended.
pub struct ServerExit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub stats: Stats,
}

impl ServerExit {
    /// Panics (with the output) unless every cookie came back, at least `min_drawn` frames
    /// were drawn, and the server exited with status 0.
    pub fn assert_cookies_balanced(&self, min_drawn: u64) {
        let s = &self.stats;
        assert_eq!(
            s.returned,
            s.drawn,
            "cookies returned != frames drawn\n{}",
            self.report()
        );
        assert!(
            s.drawn >= min_drawn,
            "only {} frames drawn, expected at least {min_drawn}\n{}",
            s.drawn,
            self.report()
        );
        assert!(
            self.status.success(),
            "the server exited with {}\n{}",
            self.status,
            self.report()
        );
    }

    /// The report and the end of stderr, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "--- server stdout ---\n{}\n--- server stderr ---\n{}",
            self.stdout,
            tail(&self.stderr, 6000)
        )
    }

    /// Frames encoded with `codec`, 0 if the codec was never used.
    pub fn encoded(&self, codec: &str) -> u64 {
        self.stats
            .encoded
            .iter()
            .find(|(c, _)| c == codec)
            .map_or(0, |(_, n)| *n)
    }

    /// The client line whose peer address is `peer`.
    pub fn client(&self, peer: &str) -> &ClientLine {
        self.stats
            .clients
            .iter()
            .find(|c| c.peer == peer)
            .unwrap_or_else(|| panic!("no client line for {peer}\n{}", self.report()))
    }
}

/// The counters `spice-shim serve` prints to stdout at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub drawn: u64,
    pub returned: u64,
    /// `(codec, frames)` from the `frames encoded (<codec>): N` lines.
    pub encoded: Vec<(String, u64)>,
    pub clients: Vec<ClientLine>,
}

/// One `client <id> (<peer>, <codec>): N frames sent, M dropped[ (disconnected)]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLine {
    pub id: u64,
    pub peer: String,
    pub codec: String,
    pub sent: u64,
    pub dropped: u64,
    pub disconnected: bool,
}

impl Stats {
    /// Parses the exit report; the `frames drawn` line is required, lines that are not part of
    /// the report are ignored.
    pub fn parse(stdout: &str) -> Result<Self, String> {
        let mut stats = Stats::default();
        let mut found = false;
        for line in stdout.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("frames drawn: ") {
                let (drawn, returned) = rest
                    .split_once(", cookies returned: ")
                    .ok_or_else(|| format!("bad line {line:?}"))?;
                stats.drawn = num(drawn, line)?;
                stats.returned = num(returned, line)?;
                found = true;
            } else if let Some(rest) = line.strip_prefix("frames encoded (") {
                let (codec, n) = rest
                    .split_once("): ")
                    .ok_or_else(|| format!("bad line {line:?}"))?;
                stats.encoded.push((codec.to_string(), num(n, line)?));
            } else if let Some(rest) = line.strip_prefix("client ") {
                stats.clients.push(ClientLine::parse(rest, line)?);
            }
        }
        if !found {
            return Err("no `frames drawn: …` line".into());
        }
        Ok(stats)
    }
}

impl ClientLine {
    fn parse(rest: &str, line: &str) -> Result<Self, String> {
        let bad = || format!("bad line {line:?}");
        let (id, rest) = rest.split_once(" (").ok_or_else(bad)?;
        let (inside, rest) = rest.split_once("): ").ok_or_else(bad)?;
        let (peer, codec) = inside.split_once(", ").ok_or_else(bad)?;
        let (sent, rest) = rest.split_once(" frames sent, ").ok_or_else(bad)?;
        let (dropped, rest) = rest.split_once(" dropped").ok_or_else(bad)?;
        Ok(Self {
            id: num(id, line)?,
            peer: peer.to_string(),
            codec: codec.to_string(),
            sent: num(sent, line)?,
            dropped: num(dropped, line)?,
            disconnected: rest.trim() == "(disconnected)",
        })
    }
}

fn num(s: &str, line: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("bad number {s:?} in {line:?}"))
}

/// Peers (`addr:port`) of the display channels the server logged as linked, in order.
pub fn display_peers(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("spice-shim: ")?
                .strip_suffix(": display channel linked")
        })
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// spicy-screenshot
// ---------------------------------------------------------------------------------------------

/// How a spicy-screenshot run ended.
pub struct Screenshot {
    /// `None` when it was killed after `timeout`.
    pub status: Option<ExitStatus>,
    pub timeout: Duration,
    pub out: PathBuf,
    /// spicy-screenshot's output, then the server's.
    pub logs: String,
}

impl Screenshot {
    /// Panics unless it exited 0 and wrote a `width`x`height` picture showing the colour bars
    /// the right way up; returns the picture.
    pub fn expect_bars(&self, width: u32, height: u32) -> Image {
        match self.status {
            Some(s) if s.success() => {}
            Some(s) => panic!("spicy-screenshot failed with {s}\n{}", self.logs),
            None => panic!(
                "spicy-screenshot wrote no picture within {:?}\n{}",
                self.timeout, self.logs
            ),
        }
        let image = test_guest::read_ppm(&self.out)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", self.out.display(), self.logs));
        assert_eq!(
            (image.width, image.height),
            (width, height),
            "size of the screenshot {}",
            self.out.display()
        );
        if let Err(e) = test_guest::check_bars(&image, TOLERANCE) {
            panic!("{}: {e}", self.out.display());
        }
        if let Err(e) = test_guest::check_upright_bars(&image, TOLERANCE) {
            panic!("{}: {e}", self.out.display());
        }
        image
    }

    /// Panics unless spicy-screenshot was refused: it exited non-zero (neither 0 nor killed
    /// after the timeout) and saved no picture.
    pub fn expect_refused(&self) {
        match self.status {
            Some(s) if !s.success() => {}
            Some(s) => panic!("spicy-screenshot exited with {s}\n{}", self.logs),
            None => panic!(
                "spicy-screenshot was neither refused nor served within {:?}\n{}",
                self.timeout, self.logs
            ),
        }
        assert!(
            !self.out.exists(),
            "spicy-screenshot saved {}\n{}",
            self.out.display(),
            self.logs
        );
    }
}

/// Runs `spicy-screenshot -h 127.0.0.1 -p <port> [-w <password>] -o <dir>/<name>.ppm` against
/// `server`, killed after [`CLIENT_TIMEOUT`].
pub fn spicy_screenshot(
    dir: &TempDir,
    name: &str,
    server: &Server,
    password: Option<&str>,
) -> Screenshot {
    spicy_screenshot_within(dir, name, server, password, CLIENT_TIMEOUT)
}

/// [`spicy_screenshot`], killed after `timeout`.
pub fn spicy_screenshot_within(
    dir: &TempDir,
    name: &str,
    server: &Server,
    password: Option<&str>,
    timeout: Duration,
) -> Screenshot {
    let out = dir.join(&format!("{name}.ppm"));
    let mut cmd = Command::new("spicy-screenshot");
    cmd.args(["-h", "127.0.0.1", "-p", &server.port().to_string(), "-o"])
        .arg(&out);
    if let Some(p) = password {
        cmd.args(["-w", p]);
    }
    let mut proc = ChildGuard::spawn(name, cmd, dir);
    let status = proc.wait_timeout(timeout);
    proc.kill();
    Screenshot {
        status,
        timeout,
        out,
        logs: format!("{}\n{}", proc.logs(), server.logs()),
    }
}

// ---------------------------------------------------------------------------------------------
// X11: Xvfb, GUI clients, screenshots of the screen
// ---------------------------------------------------------------------------------------------

/// A private X server (Xvfb) on a display number it picked itself (`-displayfd`), so tests
/// running in parallel never collide. Dropping it stops Xvfb with SIGTERM (SIGKILL after 5 s).
pub struct Xvfb {
    proc: ChildGuard,
    display: u32,
    // Kept open: Xvfb would get SIGPIPE if it wrote to a closed pipe.
    _pipe: ChildStdout,
}

impl Xvfb {
    pub const WIDTH: u32 = 1600;
    pub const HEIGHT: u32 = 1000;

    pub fn start(dir: &TempDir) -> Self {
        let stderr = dir.join("xvfb.stderr");
        let mut cmd = Command::new("Xvfb");
        cmd.args([
            "-displayfd",
            "1",
            "-nolisten",
            "tcp",
            "-noreset",
            "-screen",
            "0",
        ])
        .arg(format!("{}x{}x24", Self::WIDTH, Self::HEIGHT))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(&stderr)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr.display())),
        );
        let mut proc = ChildGuard::spawn_configured("xvfb", cmd, dir.join("xvfb.stdout"), stderr);
        let pipe = proc.take_stdout().expect("Xvfb stdout pipe");
        // Xvfb writes the display number once it accepts connections; read it on a thread so
        // that a hung Xvfb cannot hang the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send((line, reader.into_inner()));
        });
        let Ok((line, pipe)) = rx.recv_timeout(SERVER_TIMEOUT) else {
            panic!("Xvfb did not report its display number\n{}", proc.logs());
        };
        let display: u32 = line.trim().parse().unwrap_or_else(|_| {
            panic!("Xvfb reported display {line:?}\n{}", proc.logs());
        });
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{display}"));
        if poll(SERVER_TIMEOUT, || socket.exists().then_some(())).is_none() {
            panic!("{} does not exist\n{}", socket.display(), proc.logs());
        }
        Self {
            // SIGTERM first, so that Xvfb removes its socket and lock file; it is killed if it
            // does not exit within 5 s.
            proc: proc.sigterm_on_drop(Duration::from_secs(5)),
            display,
            _pipe: pipe,
        }
    }

    /// `:N`
    pub fn display(&self) -> String {
        format!(":{}", self.display)
    }

    pub fn assert_running(&mut self, when: &str) {
        self.proc.assert_running(when);
    }

    /// A command for a GTK program on this display: X11 backend, no pointer grab, no session
    /// bus, accessibility bridge or dconf (so nothing outside the test is touched), settings in
    /// `dir`.
    pub fn command(&self, program: &str, dir: &TempDir) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", self.display())
            .env("GDK_BACKEND", "x11")
            .env("SPICE_NOGRAB", "1")
            .env("NO_AT_BRIDGE", "1")
            .env("GSETTINGS_BACKEND", "memory")
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("SPICE_DEBUG");
        cmd
    }

    /// A screenshot of the whole screen (`import -window root`).
    pub fn screenshot(&self, path: &Path) -> Result<Image, String> {
        let out = Command::new("import")
            .args([
                "-display",
                &self.display(),
                "-window",
                "root",
                "-depth",
                "8",
            ])
            .arg(format!("ppm:{}", path.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run import: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "import failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        test_guest::read_ppm(path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Where the colour bars were found in a screenshot, and that part of the screenshot.
pub struct Found {
    pub x: u32,
    pub y: u32,
    pub picture: Image,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}+{}+{}",
            self.picture.width, self.picture.height, self.x, self.y
        )
    }
}

/// Largest per-channel difference.
fn deviation(a: [u8; 3], b: [u8; 3]) -> u8 {
    (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0)
}

fn pixel(image: &Image, x: u32, y: u32) -> [u8; 3] {
    let i = (y as usize * image.width as usize + x as usize) * 3;
    [image.rgb[i], image.rgb[i + 1], image.rgb[i + 2]]
}

/// Which bar colour (index into [`BARS`]) the pixel is, within `tolerance` per channel.
fn bar_of(px: [u8; 3], tolerance: u8) -> Option<usize> {
    BARS.iter().position(|b| deviation(px, b.rgb) <= tolerance)
}

/// Finds the picture of the colour bars (at any scale) inside `screen`, e.g. a screenshot
/// of a remote-viewer window with its title bar and the black desktop around it, and cuts
/// it out.
///
/// Rows are scanned for the eight bars in order (white … blue of similar widths, then black
/// at least half as wide; short stretches of other colours between them, from scaling or
/// chroma bleeding, are allowed). The picture's width is 8 × the mean width of the first seven
/// bars, since the black bar may merge with a dark frame. Its top and bottom are the medians,
/// over the seven non-black bars, of how far each bar's colour extends up and down along its
/// centre column, so the moving square (in one bar at most) does not shorten the picture.
pub fn find_bars(screen: &Image, tolerance: u8) -> Result<Found, String> {
    let (w, h) = (screen.width, screen.height);
    for y in (0..h).step_by(2) {
        let Some((x0, bar_w)) = bars_in_row(screen, y, tolerance) else {
            continue;
        };
        let width = (bar_w * 8.0).round() as u32;
        if x0 + width > w {
            continue;
        }
        let mut tops = Vec::new();
        let mut bottoms = Vec::new();
        for i in 0..7 {
            let cx = x0 + ((i as f64 + 0.5) * bar_w) as u32;
            let is_bar = |yy: u32| bar_of(pixel(screen, cx, yy), tolerance) == Some(i);
            let mut top = y;
            while top > 0 && is_bar(top - 1) {
                top -= 1;
            }
            let mut bottom = y + 1;
            while bottom < h && is_bar(bottom) {
                bottom += 1;
            }
            tops.push(top);
            bottoms.push(bottom);
        }
        tops.sort_unstable();
        bottoms.sort_unstable();
        let (y0, y1) = (tops[3], bottoms[3]);
        if y1 - y0 < 20 || width < 16 {
            continue;
        }
        let mut rgb = Vec::with_capacity(width as usize * (y1 - y0) as usize * 3);
        for yy in y0..y1 {
            let start = (yy as usize * w as usize + x0 as usize) * 3;
            rgb.extend_from_slice(&screen.rgb[start..start + width as usize * 3]);
        }
        let picture = Image::new(width, y1 - y0, rgb).map_err(|e| e.to_string())?;
        return Ok(Found {
            x: x0,
            y: y0,
            picture,
        });
    }
    Err(format!(
        "no row of the {w}x{h} screenshot shows the eight colour bars in order (tolerance {tolerance})"
    ))
}

/// In row `y`, the first run of the eight bars in order: `(left edge, mean width of the first
/// seven bars)`.
fn bars_in_row(screen: &Image, y: u32, tolerance: u8) -> Option<(u32, f64)> {
    const MIN_BAR: u32 = 8;
    const MAX_GAP: u32 = 4;
    // Runs of equal classification: (class, start, length).
    let mut runs: Vec<(Option<usize>, u32, u32)> = Vec::new();
    for x in 0..screen.width {
        let class = bar_of(pixel(screen, x, y), tolerance);
        match runs.last_mut() {
            Some((c, _, len)) if *c == class => *len += 1,
            _ => runs.push((class, x, 1)),
        }
    }
    'start: for first in 0..runs.len() {
        if runs[first].0 != Some(0) || runs[first].2 < MIN_BAR {
            continue;
        }
        let mut bars = vec![runs[first]];
        let mut next = first + 1;
        for want in 1..8 {
            let mut gap = 0;
            loop {
                let Some(&run) = runs.get(next) else {
                    continue 'start;
                };
                next += 1;
                // The black bar's width is checked below.
                if run.0 == Some(want) && (want == 7 || run.2 >= MIN_BAR) {
                    bars.push(run);
                    break;
                }
                gap += run.2;
                if gap > MAX_GAP {
                    continue 'start;
                }
            }
        }
        let x0 = bars[0].1;
        let end_blue = bars[6].1 + bars[6].2;
        let bar_w = f64::from(end_blue - x0) / 7.0;
        let similar = bars[..7]
            .iter()
            .all(|&(_, _, len)| (f64::from(len) - bar_w).abs() <= bar_w * 0.2 + 2.0);
        if similar && f64::from(bars[7].2) >= bar_w * 0.5 {
            return Some((x0, bar_w));
        }
    }
    None
}

/// Column of the centre of the grey moving square in a bars picture, if it is visible in the
/// bottom 10 %.
pub fn square_x(picture: &Image) -> Option<u32> {
    let (w, h) = (picture.width, picture.height);
    // The square (side h/20) is centred in the bottom band (h/10): probe the band's middle row.
    let y = h - h / 20;
    let grey: Vec<u32> = (0..w)
        .filter(|&x| deviation(pixel(picture, x, y), [test_guest::GREY; 3]) <= TOLERANCE)
        .collect();
    let side = (h / 20).max(1);
    if (grey.len() as u32) < side / 2 {
        return None;
    }
    Some(grey.iter().sum::<u32>() / grey.len() as u32)
}
