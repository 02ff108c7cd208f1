//! The C library as QEMU uses it: `tests/c/qemu_like.c` (a C program acting as QEMU's display
//! code) is compiled with gcc against `include/spice-shim.h` and the `libspice_shim.so` that
//! cargo built for this very test run, then run without a client, with `spicy-screenshot`
//! clients, with spice-gtk cursor clients (`cli/tests/cursor_client.py`: the pointer shapes,
//! moves and mouse modes of `qemu_like cursor`), and under valgrind. Also: the header compiles
//! as C and C++ and declares exactly the exported functions, and `scripts/install-lib.sh` + the
//! pkg-config file give working shared and static builds.
//!
//! Which library: for integration tests cargo builds the crate's cdylib and staticlib into
//! `target/<profile>/deps/` (it copies them up to `target/<profile>/` only for `cargo build`),
//! so the tests take them from there, next to this test binary. Each test process links them
//! into its own directory first (`target/<profile>/c-embedding/<pid>`), so a concurrent
//! `cargo build` cannot swap them mid-run.
//!
//! Nothing is skipped: gcc, g++, nm, pkg-config, valgrind, spicy-screenshot and /usr/bin/python3
//! with python3-gi and spice-gtk's GObject introspection data must be installed
//! (`scripts/install-deps.sh`).

#[path = "../../cli/tests/util/mod.rs"]
mod util;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use util::{KillOnDrop, TempDir, profile_dir, workspace_root};

/// Upper bound for one run of the C program without valgrind (it takes about 5 s).
const RUN: Duration = Duration::from_secs(120);
/// Upper bound for the valgrind runs (about 10 s here).
const VALGRIND: Duration = Duration::from_secs(600);

fn header_dir() -> PathBuf {
    workspace_root().join("spice-shim/include")
}

fn pipelines_option() -> String {
    format!("pipelines={}", workspace_root().join("pipelines").display())
}

// ---------------------------------------------------------------------------------------------
// processes
// ---------------------------------------------------------------------------------------------

/// Starts `cmd`. `LD_LIBRARY_PATH` is removed: cargo points it at `target/<profile>/deps`,
/// which would take precedence over the programs' RUNPATH and load another libspice_shim.so.
fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot run {what} ({:?}): {e}; install it with scripts/install-deps.sh",
            cmd.get_program()
        )
    })
}

/// Runs `cmd` to completion (stdin closed), killing it after `limit`.
fn run_limited(cmd: &mut Command, what: &str, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(cmd, what);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            // Only the process we started, by its pid.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// the library and the C program
// ---------------------------------------------------------------------------------------------

/// The library files of this test run, copied into a private directory.
struct Lib {
    /// Directory holding `libspice_shim.so` and `libspice_shim.a`.
    dir: PathBuf,
}

fn build_with_cargo() -> PathBuf {
    let dir = profile_dir();
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(p) => p.to_owned(),
        None => panic!("no profile in {}", dir.display()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run_limited(
        Command::new(cargo).current_dir(workspace_root()).args([
            "build",
            "-p",
            "spice-shim",
            "--lib",
            "--profile",
            &profile,
        ]),
        "cargo build",
        Duration::from_secs(1800),
    );
    assert_success(&out, "cargo build -p spice-shim");
    dir
}

fn lib() -> &'static Lib {
    static LIB: OnceLock<Lib> = OnceLock::new();
    LIB.get_or_init(|| {
        let deps = profile_dir().join("deps");
        let from =
            if deps.join("libspice_shim.so").is_file() && deps.join("libspice_shim.a").is_file() {
                deps
            } else {
                eprintln!("libspice_shim.so not in {}: building it", deps.display());
                build_with_cargo()
            };
        // target/<profile>/c-embedding/<pid>: same file system as deps/, so hard links work;
        // directories of test processes that are gone are removed.
        let root = profile_dir().join("c-embedding");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["libspice_shim.so", "libspice_shim.a"] {
            // A hard link keeps this run's file even if cargo replaces deps/ meanwhile (the
            // linkers write a new file); a copy where links are not possible.
            if std::fs::hard_link(from.join(f), dir.join(f)).is_err() {
                std::fs::copy(from.join(f), dir.join(f))
                    .unwrap_or_else(|e| panic!("copying {}: {e}", from.join(f).display()));
            }
        }
        // Programs linked against it load it by its SONAME, as from an installation.
        std::os::unix::fs::symlink("libspice_shim.so", dir.join("libspice_shim.so.0")).unwrap();
        eprintln!("using libspice_shim from {}", from.display());
        Lib { dir }
    })
}

/// Compiles `tests/c/qemu_like.c` against the header and the shared library (once).
fn qemu_like() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let lib = lib();
        let bin = lib.dir.join("qemu_like");
        let out = run_limited(
            Command::new("gcc")
                .args([
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-std=c11",
                    "-pedantic",
                    "-g",
                    "-O1",
                ])
                .arg("-I")
                .arg(header_dir())
                .arg(workspace_root().join("tests/c/qemu_like.c"))
                .arg("-o")
                .arg(&bin)
                .arg(format!("-L{}", lib.dir.display()))
                .arg(format!("-Wl,-rpath,{}", lib.dir.display()))
                .args(["-lspice_shim", "-lpthread"]),
            "gcc",
            RUN,
        );
        assert_success(&out, "gcc tests/c/qemu_like.c");
        bin
    })
}

/// The "OK cookies=N frames=F ..." line: (cookies, frames).
fn ok_line(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("no OK line in:\n{stdout}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    (field("cookies="), field("frames="))
}

fn assert_holds(stdout: &str) {
    let holds: Vec<&str> = stdout.lines().filter(|l| l.starts_with("HOLD ")).collect();
    assert_eq!(
        holds,
        [
            "HOLD first 1280x720",
            "HOLD small 800x600",
            "HOLD final 1280x720"
        ],
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------------------------

/// The header compiles alone, twice included, as C (c99, c11, -pedantic) and as C++ (g++), and
/// declares exactly the `spice_shim_*` functions the library exports.
#[test]
fn header_is_self_contained_and_matches_the_library() {
    let dir = TempDir::new("header");
    let src = "#include \"spice-shim.h\"\n#include \"spice-shim.h\"\n\
               static void cb(void *o, uint64_t c) { (void)o; (void)c; }\n\
               int main(void) {\n\
               SpiceShimAsyncComplete f = cb;\n\
               SpiceShimInputCallbacks cbs = {0, 0, 0, 0};\n\
               SpiceShim *s = spice_shim_new(\"\", f, 0);\n\
               spice_shim_set_input_callbacks(s, &cbs, 0);\n\
               spice_shim_free(s);\n\
               return spice_shim_last_error() != 0;\n}\n";
    let c = dir.join("h.c");
    let cpp = dir.join("h.cpp");
    std::fs::write(&c, src).unwrap();
    std::fs::write(&cpp, src).unwrap();
    for std in ["-std=c99", "-std=c11"] {
        let out = run_limited(
            Command::new("gcc")
                .args([std, "-pedantic", "-Wall", "-Wextra", "-Werror"])
                .args([
                    "-Wstrict-prototypes",
                    "-Wmissing-prototypes",
                    "-fsyntax-only",
                ])
                .arg("-I")
                .arg(header_dir())
                .arg(&c),
            "gcc",
            RUN,
        );
        assert_success(&out, &format!("gcc {std} on the header"));
    }
    let out = run_limited(
        Command::new("g++")
            .args([
                "-std=c++11",
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
            ])
            .arg("-I")
            .arg(header_dir())
            .arg(&cpp),
        "g++",
        RUN,
    );
    assert_success(&out, "g++ on the header");

    // Declared in the header == exported by the library.
    let header = std::fs::read_to_string(header_dir().join("spice-shim.h")).unwrap();
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .filter_map(|l| {
            let i = l.find("spice_shim_")?;
            let rest = &l[i..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest[name.len()..].starts_with('(').then_some(name)
        })
        .collect();
    declared.sort();
    declared.dedup();
    let out = run_limited(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(lib().dir.join("libspice_shim.so")),
        "nm",
        RUN,
    );
    assert_success(&out, "nm -D");
    // Every defined dynamic symbol, not only spice_shim_*: the version script hides the rest
    // (Rust's runtime, GStreamer plugin entry points).
    let mut exported: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    exported.sort();
    assert_eq!(declared, exported, "header declarations vs library exports");
    assert_eq!(declared.len(), 11, "{declared:?}");
    assert_eq!(
        soname(&lib().dir.join("libspice_shim.so")).as_deref(),
        Some("libspice_shim.so.0")
    );
}

/// The SONAME in `readelf -d` of `file`.
fn soname(file: &Path) -> Option<String> {
    let out = run_limited(Command::new("readelf").arg("-d").arg(file), "readelf", RUN);
    assert_success(&out, "readelf -d");
    text(&out.stdout)
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_owned()))
}

/// QEMU without any client: replaced, resized, multi-planar, tiled (refused) and disabled
/// scanouts at 60 Hz; every cookie comes back exactly once, on a shim thread, none after
/// spice_shim_free, and every fd handed over is closed in the end (all checked by the program).
#[test]
fn qemu_like_without_client() {
    let started = Instant::now();
    let out = run_limited(
        Command::new(qemu_like()).args(["auto", &pipelines_option()]),
        "qemu_like auto",
        RUN,
    );
    assert_success(&out, "qemu_like auto");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("PORT "), "{stdout}");
    assert_holds(&stdout);
    let (cookies, frames) = ok_line(&stdout);
    // 3 holds of 1 s and 3 stages of 0.5 s at 60 Hz, plus 4 draws without a usable scanout.
    assert!(frames >= 100, "only {frames} frames: {stdout}");
    assert_eq!(cookies, frames + 4, "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DRM modifier 0x0100000000000001 is not linear"),
        "{stderr}"
    );
    eprintln!("{} in {:?}", stdout.trim_end(), started.elapsed());
}

/// A line-oriented view of a child's stdout, with timeouts.
struct Lines {
    rx: mpsc::Receiver<String>,
    /// Every line read so far, for the reports.
    seen: Vec<String>,
    /// Whose lines (for the reports).
    name: String,
    /// The child's stderr file, quoted in the reports.
    stderr: Option<PathBuf>,
}

impl Lines {
    fn new(child: &mut Child) -> Self {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
            name: "qemu_like".into(),
            stderr: None,
        }
    }

    /// Names the child and its stderr file in the reports.
    fn named(mut self, name: &str, stderr: &Path) -> Self {
        self.name = name.into();
        self.stderr = Some(stderr.to_path_buf());
        self
    }

    /// What was read so far, and the child's stderr.
    fn report(&self) -> String {
        let stderr = self
            .stderr
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default();
        format!(
            "--- {0} stdout\n{1}\n--- {0} stderr\n{stderr}",
            self.name,
            self.seen.join("\n")
        )
    }

    /// The next line starting with `prefix` (other lines are kept for the report).
    fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        self.next_where(
            |l| l.starts_with(prefix),
            &format!("starting with {prefix:?}"),
            limit,
        )
    }

    /// The next line for which `pred` holds (other lines are kept for the report).
    fn next_where(&mut self, pred: impl Fn(&str) -> bool, what: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no line {what} within {limit:?} ({e}); got:\n{}",
                    self.name,
                    self.report()
                ),
            }
        }
    }

    /// The lines not read yet, up to the end of the output (the child has exited or closes its
    /// stdout within `limit`).
    fn rest(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    rest.push(line);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: output not closed within {limit:?}\n{}",
                        self.name,
                        self.report()
                    )
                }
            }
        }
    }
}

fn next_stage(stdin: &mut ChildStdin) {
    writeln!(stdin, "next").expect("writing to qemu_like");
    stdin.flush().unwrap();
}

fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// the pointer: `qemu_like cursor` and a spice-gtk cursor client
// ---------------------------------------------------------------------------------------------

/// Upper bound for one event to reach a client or the program (they take milliseconds).
const EVENT: Duration = Duration::from_secs(60);

/// A pointer shape of `cursor_pixel()` in qemu_like.c.
#[derive(Debug, Clone, Copy)]
struct Shape {
    w: u32,
    h: u32,
    hot_x: u32,
    hot_y: u32,
}

impl Shape {
    const fn new(w: u32, h: u32, hot_x: u32, hot_y: u32) -> Self {
        Self { w, h, hot_x, hot_y }
    }

    /// The ARGB8888 word of pixel (x, y), as `cursor_pixel()` in qemu_like.c computes it.
    fn pixel(&self, x: u32, y: u32) -> u32 {
        const ALPHAS: [u32; 4] = [0, 255, 128, 37];
        let a = ALPHAS[((x + 2 * y + self.w + self.h) % 4) as usize];
        let r = (x * 8 + self.w) & 0xff;
        let g = (y * 8 + self.h) & 0xff;
        let b = (x * y + self.hot_x + self.hot_y) & 0xff;
        (a << 24) | (r << 16) | (g << 8) | b
    }

    /// The bytes spice-gtk hands to `cursor-set`: R, G, B, A per pixel, straight alpha.
    fn rgba(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.w * self.h * 4) as usize);
        for y in 0..self.h {
            for x in 0..self.w {
                let [a, r, g, b] = self.pixel(x, y).to_be_bytes();
                out.extend_from_slice(&[r, g, b, a]);
            }
        }
        out
    }

    /// The line cursor_client.py prints when it gets this shape.
    fn set_line(&self) -> String {
        use sha2::Digest;
        let rgba = self.rgba();
        let sha: String = sha2::Sha256::digest(&rgba)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "SET {} {} {} {} {sha} {} {} {} {}",
            self.w, self.h, self.hot_x, self.hot_y, rgba[0], rgba[1], rgba[2], rgba[3]
        )
    }

    fn define_command(&self) -> String {
        format!("define {} {} {} {}", self.w, self.h, self.hot_x, self.hot_y)
    }
}

/// The shape qemu_like's sequence defines before hold "first" (`stage_cursors[0]`).
const STAGE0_CURSOR: Shape = Shape::new(17, 31, 5, 29);

/// `qemu_like cursor`: the pointer of a C host, driven line by line.
struct CursorHost {
    child: KillOnDrop,
    stdin: ChildStdin,
    lines: Lines,
    port: u16,
}

impl CursorHost {
    fn start(dir: &TempDir) -> Self {
        let stderr = dir.join("qemu_like.stderr");
        let mut child = KillOnDrop(spawn(
            Command::new(qemu_like())
                .args(["cursor", &pipelines_option()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr).unwrap()),
            "qemu_like cursor",
        ));
        let stdin = child.0.stdin.take().unwrap();
        let mut lines = Lines::new(&mut child.0).named("qemu_like cursor", &stderr);
        let port = lines.expect("PORT ", RUN)["PORT ".len()..].parse().unwrap();
        Self {
            child,
            stdin,
            lines,
            port,
        }
    }

    /// Sends `command` and returns the program's answer, the next line starting with `answer`.
    fn command(&mut self, command: &str, answer: &str) -> String {
        writeln!(self.stdin, "{command}").expect("writing to qemu_like cursor");
        self.stdin.flush().unwrap();
        self.lines.expect(answer, EVENT)
    }

    fn define(&mut self, shape: Shape) {
        let answer = self.command(&shape.define_command(), "DEFINE ");
        assert_eq!(answer, "DEFINE 0", "{shape:?}\n{}", self.lines.report());
    }

    /// `command` (a define) is refused: -1, and spice_shim_last_error() contains `why`.
    fn refused(&mut self, command: &str, why: &str) {
        let answer = self.command(command, "DEFINE ");
        assert!(
            answer.starts_with("DEFINE -1 spice_shim_cursor_define: ") && answer.contains(why),
            "{command}: {answer} (expected -1 and an error containing {why:?})"
        );
    }

    fn mouse(&mut self, x: i32, y: i32, visible: bool) {
        let v = i32::from(visible);
        let answer = self.command(&format!("mouse {x} {y} {v}"), "MOUSE ");
        assert_eq!(answer, format!("MOUSE {x} {y} {v}"));
    }

    fn absolute(&mut self, absolute: bool) {
        let n = i32::from(absolute);
        let answer = self.command(&format!("absolute {n}"), "ABSOLUTE ");
        assert_eq!(answer, format!("ABSOLUTE {n}"));
    }

    /// The next input callback the program reports.
    fn input(&mut self) -> String {
        self.lines.expect("INPUT ", EVENT)
    }

    /// `quit`: spice_shim_free, "OK", exit 0. Returns every line the program printed.
    fn quit(mut self) -> Vec<String> {
        self.command("quit", "OK");
        let rest = self.lines.rest(RUN);
        assert!(rest.is_empty(), "after OK: {rest:?}");
        let status = wait_exit(&mut self.child.0, RUN, "qemu_like cursor");
        assert!(status.success(), "{status}\n{}", self.lines.report());
        std::mem::take(&mut self.lines.seen)
    }
}

/// `cli/tests/cursor_client.py`: a real spice-gtk client (python3-gi) that prints its cursor
/// channel's events, mouse modes and the input it sent. It runs until [`CursorClient::stop`].
struct CursorClient {
    child: KillOnDrop,
    lines: Lines,
}

impl CursorClient {
    fn start(dir: &TempDir, name: &str, port: u16, extra: &[&str]) -> Self {
        let stderr = dir.join(&format!("{name}.stderr"));
        let mut child = KillOnDrop(spawn(
            Command::new("/usr/bin/python3")
                .arg(workspace_root().join("cli/tests/cursor_client.py"))
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--duration", "600"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr).unwrap()),
            "cursor_client.py (python3-gi and gir1.2-spiceclientglib-2.0)",
        ));
        let lines = Lines::new(&mut child.0).named(name, &stderr);
        Self { child, lines }
    }

    fn is_cursor_event(line: &str) -> bool {
        ["SET ", "MOVE ", "HIDE", "RESET"]
            .iter()
            .any(|p| line.starts_with(p))
    }

    /// The next cursor event: a SET, MOVE, HIDE or RESET line.
    fn event(&mut self) -> String {
        self.lines
            .next_where(Self::is_cursor_event, "with a cursor event", EVENT)
    }

    /// The next `n` cursor events.
    fn events(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.event()).collect()
    }

    /// The next line starting with `prefix`.
    fn expect(&mut self, prefix: &str) -> String {
        self.lines.expect(prefix, EVENT)
    }

    /// Waits until its cursor channel is open, then SIGTERM: the client disconnects and exits
    /// 0. spice-gtk printed no critical or warning (it does for a malformed or out-of-order
    /// cursor message). Returns every line it printed.
    fn stop(mut self) -> Vec<String> {
        if !self.lines.seen.iter().any(|l| l == "OPEN cursor") {
            self.lines.expect("OPEN cursor", EVENT);
        }
        let pid = rustix::process::Pid::from_child(&self.child.0);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = wait_exit(&mut self.child.0, RUN, &self.lines.name);
        self.lines.rest(RUN);
        assert!(status.success(), "{status}\n{}", self.lines.report());
        let stderr = std::fs::read_to_string(self.lines.stderr.as_ref().unwrap()).unwrap();
        assert!(
            !stderr.contains("CRITICAL") && !stderr.contains("WARNING"),
            "{}",
            self.lines.report()
        );
        std::mem::take(&mut self.lines.seen)
    }

    /// Stops the client and checks that no cursor event came after those already read.
    fn stop_with_no_more_events(self) {
        let name = self.lines.name.clone();
        let read = self.lines.seen.len();
        let lines = self.stop();
        let more: Vec<&String> = lines[read..]
            .iter()
            .filter(|l| Self::is_cursor_event(l))
            .collect();
        assert!(more.is_empty(), "{name}: unexpected cursor events {more:?}");
    }
}

/// At hold "first" of the sequence the pointer is [`STAGE0_CURSOR`], moved at each refresh,
/// hidden one block of refreshes in four, its shape defined again every 90 refreshes. A
/// spice-gtk cursor client that connects then gets exactly that shape at once, and every later
/// SET (the redefinitions) is that shape too; it sees the pointer hide and move again.
fn cursor_during_hold(dir: &TempDir, tag: &str, port: u16) {
    let mut client = CursorClient::start(dir, &format!("{tag}-cursor"), port, &[]);
    let want = STAGE0_CURSOR.set_line();
    assert_eq!(client.event(), want, "{}", client.lines.report());
    let (mut sets, mut hidden, mut shown_again) = (1, false, false);
    while sets < 2 || !shown_again {
        let event = client.event();
        if event.starts_with("SET ") {
            assert_eq!(event, want, "{}", client.lines.report());
            sets += 1;
        } else if event == "HIDE" {
            hidden = true;
        } else if event.starts_with("MOVE ") && hidden {
            shown_again = true;
        }
    }
    client.stop();
}

/// A real spice-gtk client gets exactly the pointer a C host defines through
/// spice_shim_cursor_define (size, hot spot, and the RGBA bytes, compared by sha256, for 1x1,
/// 17x31 and 64x64 shapes with alphas 0, 255 and in between), also from its cache, and the
/// host's spice_shim_mouse_set calls as MOVE and HIDE in the order made. Clients that join
/// late get the current shape at once; one that joins while the pointer is hidden shows none
/// (cursor-set, then cursor-hide). Refused shapes (0x0, 513x1, hot spot outside, NULL pixels)
/// return -1 with an error naming the problem and send clients nothing.
#[test]
fn cursor_shapes_from_a_c_host_reach_spice_gtk() {
    const S1: Shape = Shape::new(1, 1, 0, 0);
    const S17: Shape = STAGE0_CURSOR;
    const S64: Shape = Shape::new(64, 64, 63, 1);
    let started = Instant::now();
    let dir = TempDir::new("cursor");
    let mut host = CursorHost::start(&dir);
    let port = host.port;

    // No shape yet: INIT without a cursor, which spice-gtk reports as hidden.
    let mut a = CursorClient::start(&dir, "a", port, &[]);
    assert_eq!(a.event(), "HIDE");

    // Each shape: SET with the host's exact pixels, then MOVE to where the host has it.
    host.define(S1);
    assert_eq!(a.events(2), [S1.set_line(), "MOVE 0 0".into()]);
    host.mouse(100, 50, true);
    assert_eq!(a.event(), "MOVE 100 50");
    for shape in [S17, S64] {
        host.define(shape);
        assert_eq!(a.events(2), [shape.set_line(), "MOVE 100 50".into()]);
    }

    // Moves and hides arrive in the host's order; a move while hidden shows nothing.
    for (x, y, visible) in [
        (10, 20, true),
        (30, 40, true),
        (30, 40, false),
        (31, 41, false),
        (50, 60, true),
        (70, 80, false),
    ] {
        host.mouse(x, y, visible);
    }
    assert_eq!(
        a.events(5),
        ["MOVE 10 20", "MOVE 30 40", "HIDE", "MOVE 50 60", "HIDE"]
    );

    // A shape defined while hidden (one the client has cached): SET, and it stays hidden.
    host.define(S17);
    assert_eq!(a.events(2), [S17.set_line(), "HIDE".into()]);

    // Refused shapes: -1, an error naming the problem.
    host.refused("define 0 0 0 0", "0x0 refused (1x1 to 512x512)");
    host.refused("define 0 5 0 0", "0x5 refused");
    host.refused("define 513 1 0 0", "513x1 refused (1x1 to 512x512)");
    host.refused("define 4 4 4 0", "cursor hot spot (4, 0) is outside 4x4");
    host.refused("define 4 4 0 4", "cursor hot spot (0, 4) is outside 4x4");
    host.refused("define-null 4 4 0 0", "argb is NULL");

    // Joining while hidden: the current shape (not a refused one), and no visible cursor.
    let mut b = CursorClient::start(&dir, "b", port, &[]);
    assert_eq!(b.events(2), [S17.set_line(), "HIDE".into()]);

    // The refusals sent nothing: the next event of both is the host's next move.
    host.mouse(5, 6, true);
    assert_eq!(a.event(), "MOVE 5 6");
    assert_eq!(b.event(), "MOVE 5 6");
    host.define(S64);
    assert_eq!(a.events(2), [S64.set_line(), "MOVE 5 6".into()]);
    assert_eq!(b.events(2), [S64.set_line(), "MOVE 5 6".into()]);

    // A late joiner gets the current shape at once, where the host has it.
    let mut c = CursorClient::start(&dir, "c", port, &[]);
    assert_eq!(c.events(2), [S64.set_line(), "MOVE 5 6".into()]);

    // Refused while visible with three clients: still nothing but the next move.
    host.refused("define 513 1 0 0", "513x1 refused");
    host.refused("define-null 64 64 0 0", "argb is NULL");
    host.mouse(7, 8, true);
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(client.event(), "MOVE 7 8");
    }
    for client in [a, b, c] {
        client.stop_with_no_more_events();
    }
    host.quit();
    eprintln!("cursor shapes: {:?}", started.elapsed());
}

/// The client's cursor cache with real spice-gtk: 33 distinct 256x256 shapes (256 KiB each)
/// overflow the 8 MiB the server lets a client cache, so the first is evicted (INVAL_ONE) and
/// must go out with its pixels again, while a recent one comes from the cache. Every SET has
/// the host's exact pixels, and spice-gtk never misses its cache (it would report a hide and a
/// critical).
#[test]
fn cursor_cache_eviction_keeps_spice_gtk_shapes_exact() {
    let started = Instant::now();
    let dir = TempDir::new("cursor-cache");
    let mut host = CursorHost::start(&dir);
    let mut client = CursorClient::start(&dir, "a", host.port, &[]);
    assert_eq!(client.event(), "HIDE");
    host.mouse(3, 4, true);
    assert_eq!(client.event(), "MOVE 3 4");
    let shape = |i: u32| Shape::new(256, 256, i, 255 - i);
    for i in (0..33).chain([0, 32, 1, 0]) {
        host.define(shape(i));
        assert_eq!(
            client.events(2),
            [shape(i).set_line(), "MOVE 3 4".into()],
            "shape {i}"
        );
    }
    client.stop_with_no_more_events();
    host.quit();
    eprintln!("cursor cache: {:?}", started.elapsed());
}

/// The largest shape the header allows, 512x512, reaches a connected client and a late joiner.
#[test]
fn cursor_of_the_largest_size_reaches_spice_gtk() {
    const MAX: Shape = Shape::new(512, 512, 511, 1);
    let dir = TempDir::new("cursor-max");
    let mut host = CursorHost::start(&dir);
    let mut a = CursorClient::start(&dir, "a", host.port, &[]);
    assert_eq!(a.event(), "HIDE");
    host.define(MAX);
    assert_eq!(a.events(2), [MAX.set_line(), "MOVE 0 0".into()]);
    let mut b = CursorClient::start(&dir, "b", host.port, &[]);
    assert_eq!(b.events(2), [MAX.set_line(), "MOVE 0 0".into()]);
    host.mouse(9, 9, true);
    assert_eq!(a.event(), "MOVE 9 9");
    assert_eq!(b.event(), "MOVE 9 9");
    a.stop_with_no_more_events();
    b.stop_with_no_more_events();
    host.quit();
}

/// Mouse modes with a C host: with absolute pointing (the default) a spice-gtk client is in
/// client mode (MOUSE_MODE 2) and its position arrives at the host's pointer_position callback
/// as is; a connected client follows the host's spice_shim_set_absolute_pointer switches (1,
/// 2, 1). Without absolute pointing a client is in server mode (MOUSE_MODE 1) and its motion
/// arrives at pointer_motion as relative motion. No other input callback runs.
#[test]
fn mouse_modes_and_pointer_input_from_spice_gtk_to_a_c_host() {
    let started = Instant::now();
    let dir = TempDir::new("mouse");
    let mut host = CursorHost::start(&dir);
    let port = host.port;

    let mut a = CursorClient::start(
        &dir,
        "a",
        port,
        &["--mode", "client", "--move-to", "123", "45"],
    );
    assert_eq!(a.expect("MOUSE_MODE "), "MOUSE_MODE 2");
    assert_eq!(a.expect("SENT "), "SENT POSITION 123 45");
    assert_eq!(host.input(), "INPUT position 123 45 0");

    // The host switches while the client is connected.
    for (absolute, mode) in [(false, 1), (true, 2), (false, 1)] {
        host.absolute(absolute);
        assert_eq!(a.expect("MOUSE_MODE "), format!("MOUSE_MODE {mode}"));
    }
    let lines = a.stop();
    let modes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("MOUSE_MODE ") || l.starts_with("SENT "))
        .collect();
    assert_eq!(
        modes,
        [
            "MOUSE_MODE 2",
            "SENT POSITION 123 45",
            "MOUSE_MODE 1",
            "MOUSE_MODE 2",
            "MOUSE_MODE 1"
        ],
        "{lines:?}"
    );

    // Without absolute pointing: server mode, relative motion.
    let mut b = CursorClient::start(
        &dir,
        "b",
        port,
        &["--mode", "server", "--move-to", "7", "-3"],
    );
    assert_eq!(b.expect("MOUSE_MODE "), "MOUSE_MODE 1");
    assert_eq!(b.expect("SENT "), "SENT MOTION 7 -3");
    assert_eq!(host.input(), "INPUT motion 7 -3 0");
    let lines = b.stop();
    let modes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("MOUSE_MODE ") || l.starts_with("SENT "))
        .collect();
    assert_eq!(modes, ["MOUSE_MODE 1", "SENT MOTION 7 -3"], "{lines:?}");

    let lines = host.quit();
    let inputs: Vec<&String> = lines.iter().filter(|l| l.starts_with("INPUT ")).collect();
    assert_eq!(
        inputs,
        ["INPUT position 123 45 0", "INPUT motion 7 -3 0"],
        "{lines:?}"
    );
    eprintln!("mouse modes: {:?}", started.elapsed());
}

/// Runs `qemu_like client` (through `cmd`, which is the program itself or valgrind running
/// it) and takes a `spicy-screenshot` at each hold point. Returns the OK line and the stderr
/// of `cmd`.
fn client_session(mut cmd: Command, tag: &str) -> (String, String) {
    let started = Instant::now();
    let dir = TempDir::new(tag);
    let stderr_path = dir.join("qemu_like.stderr");
    let mut child = KillOnDrop(spawn(
        cmd.args(["client", &pipelines_option()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap()),
        "qemu_like",
    ));
    let mut stdin = child.0.stdin.take().unwrap();
    let mut lines = Lines::new(&mut child.0);
    let port: u16 = lines
        .expect("PORT ", VALGRIND)
        .strip_prefix("PORT ")
        .unwrap()
        .parse()
        .unwrap();

    for (name, w, h) in [
        ("first", 1280, 720),
        ("small", 800, 600),
        ("final", 1280, 720),
    ] {
        let hold = lines.expect("HOLD ", VALGRIND);
        assert_eq!(hold, format!("HOLD {name} {w}x{h}"));
        if name == "first" {
            let t = Instant::now();
            cursor_during_hold(&dir, tag, port);
            eprintln!("{tag}: hold {name}: cursor client in {:?}", t.elapsed());
        }
        let shot = dir.join(&format!("{name}.ppm"));
        let t = Instant::now();
        let out = run_limited(
            Command::new("timeout")
                .args(["60", "spicy-screenshot", "-h", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-o")
                .arg(&shot),
            "spicy-screenshot",
            Duration::from_secs(70),
        );
        assert_success(&out, &format!("spicy-screenshot at hold {name}"));
        let img = test_guest::read_ppm(&shot).unwrap();
        assert_eq!((img.width, img.height), (w, h), "screenshot at hold {name}");
        test_guest::check_bars(&img, 48)
            .unwrap_or_else(|e| panic!("screenshot at hold {name}: {e}"));
        test_guest::check_upright_bars(&img, 48)
            .unwrap_or_else(|e| panic!("screenshot at hold {name}: {e}"));
        eprintln!(
            "{tag}: hold {name}: {w}x{h} screenshot in {:?}",
            t.elapsed()
        );
        next_stage(&mut stdin);
    }
    let ok = lines.expect("OK ", VALGRIND);
    drop(stdin);
    let status = wait_exit(&mut child.0, VALGRIND, "qemu_like");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "{tag}: {status}\n{stderr}");
    let (cookies, frames) = ok_line(&ok);
    assert!(frames > 0 && cookies == frames + 4, "{ok}");
    eprintln!("{tag}: {ok} in {:?}", started.elapsed());
    (ok, stderr)
}

/// QEMU with clients: at each of the three hold points (1280x720, resized to 800x600, back to
/// 1280x720 after scanout2, NV12, a refused tiled scanout and a disabled one), a real
/// spice-gtk client (`spicy-screenshot`) connects while the program draws at 60 Hz and saves
/// the first picture it shows: it has the size of the current scanout and shows the eight
/// colour bars the right way up. At the first, a spice-gtk cursor client gets the program's
/// pointer (see [`cursor_during_hold`]) while it moves, hides and is redefined. Every cookie
/// comes back exactly once.
#[test]
fn qemu_like_with_spicy_screenshot() {
    client_session(Command::new(qemu_like()), "client");
}

fn valgrind_command() -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.env("QEMU_LIKE_SLOW", "1")
        .args([
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--error-exitcode=99",
            "--num-callers=40",
        ])
        .arg(format!(
            "--suppressions={}",
            workspace_root().join("tests/c/valgrind.supp").display()
        ))
        .arg(qemu_like());
    cmd
}

/// Fails on any memcheck error or definitely lost block in a valgrind report.
fn assert_clean_valgrind(stderr: &str, context: &str) {
    for bad in [
        "Invalid read",
        "Invalid write",
        "Invalid free",
        "uninitialised",
        "Mismatched free",
        "are definitely lost",
    ] {
        assert!(
            !stderr.contains(bad),
            "valgrind found '{bad}':\n{context}\n--- valgrind\n{stderr}"
        );
    }
    for good in [
        "ERROR SUMMARY: 0 errors",
        "definitely lost: 0 bytes in 0 blocks",
    ] {
        assert!(
            stderr.contains(good),
            "no '{good}' in the valgrind report:\n{context}\n--- valgrind\n{stderr}"
        );
    }
}

fn valgrind(args: &[&str], what: &str) -> Output {
    run_limited(valgrind_command().args(args), what, VALGRIND)
}

/// The whole sequence (shorter stages, 30 Hz, with the pointer calls: shapes of 1x1 to
/// 512x512, refused shapes, moves, hides) under memcheck: no invalid access, no use of
/// uninitialised memory, no definitely lost block (tests/c/valgrind.supp only names GLib's
/// one-time quark block), and still every cookie exactly once.
#[test]
fn qemu_like_under_valgrind() {
    let started = Instant::now();
    let out = valgrind(&["quick", &pipelines_option()], "valgrind qemu_like quick");
    let stderr = text(&out.stderr);
    let context = format!("exit {}\n--- stdout\n{}", out.status, text(&out.stdout));
    assert!(out.status.success(), "{context}\n--- valgrind\n{stderr}");
    assert_clean_valgrind(&stderr, &context);
    let stdout = text(&out.stdout);
    assert_holds(&stdout);
    let (cookies, frames) = ok_line(&stdout);
    assert_eq!(cookies, frames + 4, "{stdout}");
    eprintln!("valgrind: {} in {:?}", stdout.trim_end(), started.elapsed());
}

/// The client session under memcheck: the encoder path (GstMemory wrapping the host's fds,
/// release notifications, streams to clients, scanouts replaced while frames are in flight)
/// and the cursor channel (shapes defined, refused, moved and hidden with a spice-gtk cursor
/// client connected) are free of memcheck errors and definite leaks too.
#[test]
fn qemu_like_with_spicy_screenshot_under_valgrind() {
    let (ok, stderr) = client_session(valgrind_command(), "client-valgrind");
    assert_clean_valgrind(&stderr, &ok);
}

/// The valgrind set-up does catch leaks: the program loses 4242 bytes on purpose after
/// spice_shim_free, and memcheck must fail the run for it (so the suppressions do not hide
/// the embedding program's or the library's leaks).
#[test]
fn valgrind_setup_reports_a_definite_leak() {
    let out = valgrind(&["leak", &pipelines_option()], "valgrind qemu_like leak");
    let stderr = text(&out.stderr);
    assert!(text(&out.stdout).contains("LEAKED"), "{stderr}");
    assert_eq!(out.status.code(), Some(99), "{stderr}");
    assert!(
        stderr.contains("4,242 bytes in 1 blocks are definitely lost"),
        "{stderr}"
    );
    assert!(
        stderr.contains("definitely lost: 4,242 bytes in 1 blocks"),
        "{stderr}"
    );
}

/// `scripts/install-lib.sh` installs the library, header, pkg-config file and pipelines into a
/// prefix; programs built with `pkg-config --cflags --libs spice-shim` (shared) and
/// `pkg-config --static --libs spice-shim` (static, libspice_shim.a) run; both find the
/// installed pipelines without a pipelines= option.
#[test]
fn install_script_and_pkg_config() {
    let dir = TempDir::new("install");
    let prefix = dir.join("prefix");
    let out = run_limited(
        Command::new("bash")
            .arg(workspace_root().join("scripts/install-lib.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .arg("--artifacts")
            .arg(&lib().dir),
        "install-lib.sh",
        RUN,
    );
    assert_success(&out, "scripts/install-lib.sh");
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libspice_shim.so.{version}");
    let libdir = prefix.join("lib");
    assert_eq!(
        std::fs::read_link(libdir.join("libspice_shim.so")).unwrap(),
        Path::new("libspice_shim.so.0")
    );
    assert_eq!(
        std::fs::read_link(libdir.join("libspice_shim.so.0")).unwrap(),
        Path::new(&real)
    );
    assert_eq!(
        soname(&libdir.join(&real)).as_deref(),
        Some("libspice_shim.so.0")
    );
    // Stripped: no symbol table and no debug sections, in the .so and the .a.
    for f in [real.as_str(), "libspice_shim.a"] {
        let out = run_limited(
            Command::new("readelf").arg("-S").arg(libdir.join(f)),
            "readelf -S",
            RUN,
        );
        assert_success(&out, "readelf -S");
        let sections = text(&out.stdout);
        assert!(!sections.contains(".debug_"), "{f} has debug sections");
        if f == real {
            assert!(!sections.contains(".symtab"), "{f} is not stripped");
        }
    }
    // The installed pkg-config file keeps the template's comments word for word.
    let template =
        std::fs::read_to_string(workspace_root().join("spice-shim/spice-shim.pc.in")).unwrap();
    let installed = std::fs::read_to_string(libdir.join("pkgconfig/spice-shim.pc")).unwrap();
    let comments = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert!(!comments(&template).is_empty());
    assert_eq!(comments(&installed), comments(&template));
    for f in [
        "lib/libspice_shim.so",
        "lib/libspice_shim.a",
        "lib/pkgconfig/spice-shim.pc",
        "include/spice-shim.h",
        "share/spice-shim/pipelines/h264.d/10-va.pipeline",
        "share/spice-shim/pipelines/h264.d/90-x264.pipeline",
        "share/spice-shim/pipelines/mjpeg.pipeline",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed");
    }

    let pkg_config = |args: &[&str]| -> String {
        let out = run_limited(
            Command::new("pkg-config")
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
                .args(args)
                .arg("spice-shim"),
            "pkg-config",
            RUN,
        );
        assert_success(&out, &format!("pkg-config {args:?}"));
        text(&out.stdout).trim().to_owned()
    };
    assert_eq!(pkg_config(&["--modversion"]), env!("CARGO_PKG_VERSION"));
    let pipelinesdir = prefix.join("share/spice-shim/pipelines");
    assert_eq!(
        pkg_config(&["--variable=pipelinesdir"]),
        pipelinesdir.display().to_string()
    );
    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);
    assert_eq!(
        libs,
        format!("-L{} -lspice_shim", prefix.join("lib").display())
    );
    let static_libs =
        pkg_config(&["--static", "--libs"]).replace("-lspice_shim", "-l:libspice_shim.a");

    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let gcc = |out_name: &str, libs: &str, extra: &[String]| -> PathBuf {
        let exe = bin.join(out_name);
        let out = run_limited(
            Command::new("gcc")
                .args([
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-std=c11",
                    "-pedantic",
                    "-O1",
                ])
                .args(cflags.split_whitespace())
                .arg(workspace_root().join("tests/c/qemu_like.c"))
                .arg("-o")
                .arg(&exe)
                .args(libs.split_whitespace())
                .args(extra),
            "gcc",
            RUN,
        );
        assert_success(&out, &format!("gcc {out_name}"));
        exe
    };
    let shared = gcc(
        "qemu_like_shared",
        &libs,
        &[format!("-Wl,-rpath,{}", prefix.join("lib").display())],
    );
    let out = run_limited(
        Command::new("readelf").arg("-d").arg(&shared),
        "readelf",
        RUN,
    );
    assert_success(&out, "readelf");
    assert!(
        text(&out.stdout).contains("Shared library: [libspice_shim.so.0]"),
        "the shared build must need the SONAME:\n{}",
        text(&out.stdout)
    );
    let stat = gcc("qemu_like_static", &static_libs, &[]);
    let out = run_limited(Command::new("readelf").arg("-d").arg(&stat), "readelf", RUN);
    assert_success(&out, "readelf");
    assert!(
        !text(&out.stdout).contains("libspice_shim"),
        "the static build needs libspice_shim.so:\n{}",
        text(&out.stdout)
    );

    // Both run the whole sequence with the installed pipelines (no pipelines= option).
    for exe in [&shared, &stat] {
        let out = run_limited(
            Command::new(exe)
                .arg("quick")
                .env_remove("SPICE_SHIM_PIPELINES"),
            "qemu_like",
            RUN,
        );
        assert_success(&out, &exe.display().to_string());
        ok_line(&text(&out.stdout));
    }
    // ... and it is the installed directory they use: without its h264.d/ they fail,
    // naming it.
    std::fs::remove_dir_all(pipelinesdir.join("h264.d")).unwrap();
    for exe in [&shared, &stat] {
        let out = run_limited(
            Command::new(exe)
                .arg("probe")
                .env_remove("SPICE_SHIM_PIPELINES"),
            "qemu_like probe",
            RUN,
        );
        let stdout = text(&out.stdout);
        assert!(!out.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "NEW FAIL spice_shim_new: no usable video codec: h264: {}",
                pipelinesdir.join("h264.pipeline").display()
            )),
            "{}: {stdout}",
            exe.display()
        );
    }
    // An explicit pipelines= still wins.
    let out = run_limited(
        Command::new(&shared).args(["probe", &pipelines_option()]),
        "qemu_like probe",
        RUN,
    );
    assert_success(&out, "probe with pipelines=");
}
