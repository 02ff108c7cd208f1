//! Helpers for the socket-mode tests: the environment `gst-launch-1.0` needs to find
//! `spicedmabufsrc`, and the report of `spice-shim feed`. The generic plumbing (temporary
//! directories, child processes) is in `util`, which the test binary must include too.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{TempDir, profile_dir};

/// File name of the plugin built by the `gst-plugin-spicedmabuf` crate.
pub const PLUGIN_FILE: &str = "libgstspicedmabuf.so";

/// The `spice-shim` program built for these tests.
pub fn spice_shim_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_spice-shim"))
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
