//! Generic plumbing shared by all of spice-shim's integration tests: temporary directories kept
//! when a test fails, child processes that die with the test, free TCP ports and waiting for a
//! listener, and the paths of the workspace and of `target/<profile>`.
//!
//! Each test binary includes this module with `mod util;` (the protocol-specific helper modules
//! `common`, `support` and `glclient` use it through `crate::util`).
// Every test binary compiles this module but uses only part of it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal, kill_process};

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// The workspace root (the parent of the spice-shim crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe.parent().expect("test binary directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile directory")
    } else {
        deps
    };
    dir.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------

/// A directory for one test's files (process logs, sockets, pictures). Removed when the test
/// passes; kept, with its path printed, when it fails, so the logs can be read.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory under the system temporary directory. The path stays short, so
    /// unix socket paths inside it fit in `sun_path`.
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ss-{tag}-{}-{}-{nanos:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// A child process killed (SIGKILL) and reaped when the guard drops, so a failing test leaves
/// nothing running; with [`ChildGuard::sigterm_on_drop`] it gets SIGTERM and a grace period
/// first. Its stdout and stderr go to `<name>.stdout` / `<name>.stderr` in the test's
/// directory.
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
    term_grace: Option<Duration>,
}

impl ChildGuard {
    /// Starts `cmd` with stdin closed and its output sent to files in `dir`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &TempDir) -> Self {
        let stdout = dir.join(&format!("{name}.stdout"));
        let stderr = dir.join(&format!("{name}.stderr"));
        let file = |p: &Path| {
            std::fs::File::create(p)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr));
        Self::spawn_configured(name, cmd, stdout, stderr)
    }

    /// Starts `cmd` whose standard streams the caller set up; `stdout`/`stderr` name the
    /// files [`ChildGuard::stdout`]/[`ChildGuard::stderr`] read.
    pub fn spawn_configured(
        name: &str,
        mut cmd: Command,
        stdout: PathBuf,
        stderr: PathBuf,
    ) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_string(),
            child,
            status: None,
            stdout,
            stderr,
            term_grace: None,
        }
    }

    /// On drop, sends SIGTERM first and waits up to `grace` for the child to exit before it is
    /// killed (e.g. so that `timeout` passes the signal on to its own child).
    pub fn sigterm_on_drop(mut self, grace: Duration) -> Self {
        self.term_grace = Some(grace);
        self
    }

    /// The child's stdout pipe, if the command was set up with `Stdio::piped()`.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (it is reaped then).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the child to exit and panics, with its output, if it does not
    /// or if it fails.
    pub fn expect_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(status) if status.success() => {}
            Some(status) => panic!("{} failed with {status}\n{}", self.name, self.logs()),
            None => panic!(
                "{} still running after {timeout:?}\n{}",
                self.name,
                self.logs()
            ),
        }
    }

    /// Sends `signal` if the child has not been reaped yet (so its pid cannot have been
    /// reused). Returns whether it was sent.
    pub fn signal(&mut self, signal: Signal) -> bool {
        if self.try_wait().is_some() {
            return false;
        }
        kill_process(Pid::from_child(&self.child), signal).is_ok()
    }

    /// Panics, with the child's output, if it has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.try_wait() {
            panic!("{} exited with {status} {when}\n{}", self.name, self.logs());
        }
    }

    /// Kills the child (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs (the end of stderr only), for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}",
            self.stdout(),
            tail(&self.stderr(), 8000),
            name = self.name
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(grace) = self.term_grace
            && self.signal(Signal::TERM)
        {
            self.wait_timeout(grace);
        }
        self.kill();
    }
}

/// A bare child process killed (SIGKILL) and reaped when dropped, for tests that handle its
/// standard streams themselves.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The last `max` bytes of `s` (on a character boundary), marked with `…` when cut.
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

// ---------------------------------------------------------------------------------------------
// Waiting and TCP ports
// ---------------------------------------------------------------------------------------------

/// Polls `cond` every 50 ms until it returns `Some` or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick). Another
/// process may still take it before the server binds it.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Waits up to `timeout` until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    poll(timeout, || port_open(port).then_some(())).is_some()
}
