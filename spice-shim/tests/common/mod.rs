//! Helpers shared by spice-shim's integration tests: temporary directories, child processes that
//! die with the test, and the environment `gst-launch-1.0` needs to find `spicedmabufsrc`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// File name of the plugin built by the `gst-plugin-spicedmabuf` crate.
pub const PLUGIN_FILE: &str = "libgstspicedmabuf.so";

/// The `spice-shim` program built for these tests.
pub fn spice_shim_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_spice-shim"))
}

/// A directory removed on drop; kept (and its path printed) when the test failed, so the logs
/// of the child processes can be read.
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

/// A child process killed (and reaped) when the guard drops, so a failing test leaves nothing
/// running. Its stdout and stderr go to `<name>.stdout` / `<name>.stderr` in the test's
/// directory.
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
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
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_string(),
            child,
            status: None,
            stdout,
            stderr,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited.
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

    /// Panics, with the child's output, if it has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.try_wait() {
            panic!("{} exited with {status} {when}\n{}", self.name, self.logs());
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

    /// Both outputs, the end of stderr only, for failure messages.
    pub fn logs(&self) -> String {
        let err = self.stderr();
        let tail: String = if err.len() > 8000 {
            let mut start = err.len() - 8000;
            while !err.is_char_boundary(start) {
                start += 1;
            }
            format!("…{}", &err[start..])
        } else {
            err
        };
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{tail}",
            self.stdout(),
            name = self.name
        )
    }

    /// Kills the child (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
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

/// The `libgstspicedmabuf.so` built with this test binary.
///
/// Cargo builds every crate type of a dependency's library, so building spice-shim's tests
/// leaves the plugin's cdylib in `target/<profile>/deps/`; `cargo build -p
/// gst-plugin-spicedmabuf` (or a workspace build) also copies it to `target/<profile>/`. The
/// newer of the two is used.
pub fn plugin_library() -> PathBuf {
    let profile = profile_dir();
    let candidates = [
        profile.join("deps").join(PLUGIN_FILE),
        profile.join(PLUGIN_FILE),
    ];
    candidates
        .iter()
        .filter_map(|p| {
            let mtime = std::fs::metadata(p).and_then(|m| m.modified()).ok()?;
            Some((mtime, p.clone()))
        })
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            let name = profile
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug");
            let flag = match name {
                "debug" => String::new(),
                "release" => " --release".to_string(),
                other => format!(" --profile {other}"),
            };
            panic!(
                "{PLUGIN_FILE} not found in {} or its deps/ directory; build it first with \
                 `cargo build -p gst-plugin-spicedmabuf{flag}`",
                profile.display()
            )
        })
}

/// Sets up `dir` so that `gst-launch-1.0` finds `spicedmabufsrc`: a `plugins/` directory
/// holding only a link to the plugin (so GStreamer does not scan all of `deps/`) and a private
/// registry file (so tests running in parallel, or a stale user registry, do not interfere).
pub fn gst_command(program: &str, dir: &TempDir) -> Command {
    let plugins = dir.join("plugins");
    if !plugins.join(PLUGIN_FILE).exists() {
        std::fs::create_dir_all(&plugins).expect("create the plugins directory");
        std::os::unix::fs::symlink(plugin_library(), plugins.join(PLUGIN_FILE))
            .expect("link the plugin");
    }
    let mut cmd = Command::new(program);
    cmd.env("GST_PLUGIN_PATH", &plugins)
        .env("GST_REGISTRY", dir.join("registry.bin"));
    if std::env::var_os("GST_DEBUG").is_none() {
        cmd.env("GST_DEBUG", "*:2,spicedmabufsrc:5");
    }
    cmd
}

/// Checks that GStreamer loads `spicedmabufsrc` with the environment of [`gst_command`]. This
/// also fills the test's registry, so the `gst-launch-1.0` started next comes up quickly.
pub fn check_plugin(dir: &TempDir) {
    let out = gst_command("gst-inspect-1.0", dir)
        .arg("spicedmabufsrc")
        .output()
        .expect("cannot run gst-inspect-1.0 (is GStreamer installed?)");
    assert!(
        out.status.success(),
        "gst-inspect-1.0 does not find spicedmabufsrc in {} ({})\n{}{}",
        plugin_library().display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `gst-launch-1.0` command line (one argument per word) with the plugin environment.
pub fn gst_launch(dir: &TempDir, args: &[&str]) -> Command {
    check_plugin(dir);
    let mut cmd = gst_command("gst-launch-1.0", dir);
    cmd.args(args);
    cmd
}

/// The numbers of a `spice-shim feed` report line (`feed: 61 draws, 60 released, …`), by the
/// word that follows each number (`"draws"`, `"released"`, `"protocol"` for "protocol errors").
pub fn report_numbers(line: &str) -> std::collections::HashMap<String, u64> {
    let words: Vec<&str> = line
        .trim_start_matches("feed:")
        .split([',', ' '])
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .filter_map(|w| Some((w[1].to_string(), w[0].parse().ok()?)))
        .collect()
}
