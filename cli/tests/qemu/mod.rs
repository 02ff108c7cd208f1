//! A real QEMU guest for the end-to-end tests of `spice-shim qemu`: a private D-Bus daemon, QEMU
//! with `-display dbus` on it (TCG, no KVM), a minimal QMP client whose `screendump` is the
//! oracle for what a SPICE client must see, a Linux guest that shows known pictures in its
//! framebuffer and changes them on key presses, the `spice-shim qemu` launcher, and the
//! comparison of a client's picture with QEMU's.
//!
//! # Guests
//! - [`Guest::SeaBios`]: no disk and no kernel. SeaBIOS ends on "No bootable device." in 720x400
//!   VGA text mode within a few seconds, with a blinking text cursor (a 9x2 bar, so the screen
//!   keeps changing: about 40 `Update` calls a second).
//! - [`Guest::Linux`]: the newest `/boot/vmlinuz-*` with an initramfs built at test time
//!   ([`initramfs`]) from busybox-static, the init script `tests/qemu/init` and raw framebuffer
//!   pictures generated here ([`picture`]). vesafb at 800x600, 24 bpp (`vga=0x315`); the kernel
//!   and the script print only to the serial console (a file, [`Qemu::serial_log`]), so fbcon
//!   never draws over the pictures. The guest shows picture `a`, prints `READY`, then reads keys
//!   from the VT keyboard (QEMU's PS/2 keyboard): on key `k` it copies `/pic/k.raw` to
//!   `/dev/fb0` and then prints `KEY k`. So once `KEY k` is in the serial log,
//!   [`Qemu::screendump`] shows [`picture`]`(k)`, exactly. With [`REDRAW`] on its kernel
//!   command line ([`QemuBuilder::kernel_arg`]) it reads no keys and redraws its pictures in
//!   turn, flat out, forever ([`Qemu::wait_redrawing`], [`Qemu::redraw_count`]); the benchmark
//!   `cli/benches/qemu_dbus.rs` uses that. With [`MARKS`] it takes commands on a second
//!   serial port instead (the benchmark `cli/benches/upstream.rs`).
//!
//! QEMU has `-vga std` and `-display dbus` unless [`QemuBuilder::vga`] and
//! [`QemuBuilder::start_with_display`] say otherwise (e.g. `-vga qxl -spice …` for upstream
//! SPICE).
//!
//! # Comparing a client's picture with QEMU's ([`compare`])
//! The client's picture must not be clipped: it must be at least as large as QEMU's screendump
//! in both dimensions (the shim may serve a larger surface, e.g. 720x480 for a 720x400 text
//! screen whose size QEMU never reports; the extra area is not checked). The screendump is
//! compared with the client's top-left region of the same size, leaving out `ignore`
//! rectangles (e.g. a blinking cursor), with two metrics over 8-bit R, G, B:
//! - PSNR = 10·log10(255² / MSE), MSE being the mean of the squared channel differences over
//!   all compared pixels, must be at least [`Tolerance::min_psnr`] (identical pictures: +∞);
//! - in every 16x16 block (smaller at the right and bottom edges), the mean absolute channel
//!   difference must be at most [`Tolerance::max_block_error`], so one wrong area is caught
//!   even when the rest of a large picture pulls the PSNR up.
//!
//! [`find_unscaled`] looks for a screendump drawn 1:1 in a screenshot of a whole X screen (a
//! remote-viewer window) and compares it there the same way.
//!
//! Every child process is killed when its owner drops, also when a test fails.
// Each test binary that includes this module uses only part of it.
#![allow(dead_code)]

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use test_guest::Image;

use crate::support::{CLIENT_TIMEOUT, ServerExit, Stats};
use crate::util::{ChildGuard, TempDir, free_port, poll, port_open, profile_dir, tail};

/// How long a guest gets to boot (a Linux guest reaches init about 10 s after QEMU starts
/// under TCG; this machine may be loaded by other tests).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a QMP command (or connecting to QMP) may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the shim gets to start serving once QEMU is up, and to exit once QEMU is gone.
pub const SHIM_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// D-Bus
// ---------------------------------------------------------------------------------------------

/// A private bus: `dbus-daemon --session --address=unix:path=DIR/bus --nofork`, killed on
/// drop. QEMU owns `org.qemu` on it, so each test needs its own.
pub struct DbusDaemon {
    proc: ChildGuard,
    address: String,
}

impl DbusDaemon {
    /// Starts the daemon with its socket at `dir/bus` and waits until it accepts connections.
    pub fn start(dir: &TempDir) -> Self {
        let socket = dir.join("bus");
        let address = format!("unix:path={}", socket.display());
        let mut cmd = Command::new("dbus-daemon");
        cmd.arg("--session")
            .arg(format!("--address={address}"))
            .args(["--nofork", "--print-address"]);
        let mut proc = ChildGuard::spawn("dbus-daemon", cmd, dir);
        let ready = poll(Duration::from_secs(20), || {
            if let Some(status) = proc.try_wait() {
                return Some(Err(status));
            }
            (proc.stdout().starts_with("unix:") && UnixStream::connect(&socket).is_ok())
                .then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => Self { proc, address },
            Some(Err(status)) => panic!("dbus-daemon exited with {status}\n{}", proc.logs()),
            None => panic!(
                "dbus-daemon does not accept connections on {} after 20 s\n{}",
                socket.display(),
                proc.logs()
            ),
        }
    }

    /// `unix:path=DIR/bus`
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}

// ---------------------------------------------------------------------------------------------
// The Linux guest: pictures, initramfs, kernel
// ---------------------------------------------------------------------------------------------

/// The guest framebuffer (vesafb with `vga=0x315`): 800x600, 24 bpp, B, G, R bytes.
pub const FB_WIDTH: u32 = 800;
pub const FB_HEIGHT: u32 = 600;
pub const FB_BPP: u32 = 24;
pub const FB_STRIDE: u32 = FB_WIDTH * 3;

/// The keys the Linux guest has a picture for; `a` is shown at boot.
pub const PICTURE_KEYS: [char; 4] = ['a', 'b', 'c', 'd'];

/// Side of the solid colour blocks of the pictures.
const CELL: u32 = 200;

/// Colours of the blocks: far apart from each other, so that pictures stay distinguishable
/// after a lossy codec.
const PALETTE: [[u8; 3]; 12] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [0, 255, 255],
    [255, 0, 255],
    [255, 255, 255],
    [128, 128, 128],
    [0, 0, 0],
    [255, 128, 0],
    [0, 128, 255],
    [128, 0, 255],
];

/// The picture the Linux guest shows for `key` ([`PICTURE_KEYS`]): 4x3 solid blocks of
/// 200x200 pixels, each picture with the palette rotated by a different amount, so that every
/// block differs between any two pictures, and none is symmetric.
pub fn picture(key: char) -> Image {
    let n = PICTURE_KEYS
        .iter()
        .position(|&k| k == key)
        .unwrap_or_else(|| panic!("the guest has no picture for key {key:?}"));
    let rotation = [0, 5, 7, 3][n];
    let cols = FB_WIDTH / CELL;
    let mut rgb = Vec::with_capacity((FB_WIDTH * FB_HEIGHT * 3) as usize);
    for y in 0..FB_HEIGHT {
        for x in 0..FB_WIDTH {
            let cell = (y / CELL * cols + x / CELL) as usize;
            rgb.extend_from_slice(&PALETTE[(cell + rotation) % PALETTE.len()]);
        }
    }
    Image::new(FB_WIDTH, FB_HEIGHT, rgb).expect("picture size")
}

/// `image` in the guest framebuffer's layout (24 bpp, B, G, R, rows [`FB_STRIDE`] apart).
fn framebuffer_bytes(image: &Image) -> Vec<u8> {
    assert_eq!((image.width, image.height), (FB_WIDTH, FB_HEIGHT));
    let mut out = vec![0u8; (FB_STRIDE * FB_HEIGHT) as usize];
    for (y, row) in out.chunks_exact_mut(FB_STRIDE as usize).enumerate() {
        for x in 0..FB_WIDTH {
            let [r, g, b] = image.pixel(x, y as u32);
            let i = x as usize * 3;
            row[i..i + 3].copy_from_slice(&[b, g, r]);
        }
    }
    out
}

/// The init script of the Linux guest.
const INIT: &str = include_str!("../../../tests/qemu/init");

/// The guest's initramfs: busybox-static, `tests/qemu/init` and the pictures, packed with
/// `cpio -o -H newc`. Built once per test process, into `target/<profile>/qemu-guest/` under a
/// name made from a hash of its contents (so concurrent test processes and later runs share
/// it, and a changed script or picture gives a new file).
pub fn initramfs() -> &'static Path {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(build_initramfs)
}

fn build_initramfs() -> PathBuf {
    let busybox = std::fs::read("/bin/busybox")
        .unwrap_or_else(|e| panic!("cannot read /bin/busybox (busybox-static): {e}"));
    let format = format!("{FB_BPP} {FB_STRIDE} {FB_WIDTH},{FB_HEIGHT}\n");
    let pictures: Vec<(char, Vec<u8>)> = PICTURE_KEYS
        .iter()
        .map(|&k| (k, framebuffer_bytes(&picture(k))))
        .collect();

    let mut hash = Fnv::default();
    hash.add(&busybox);
    hash.add(INIT.as_bytes());
    hash.add(format.as_bytes());
    for (k, raw) in &pictures {
        hash.add(&[*k as u8]);
        hash.add(raw);
    }
    let dir = profile_dir().join("qemu-guest");
    let out = dir.join(format!("initrd-{:016x}.cpio", hash.0));
    if out.exists() {
        return out;
    }

    // A private staging tree and archive name, renamed into place at the end, so that test
    // processes building the same archive at once do not disturb each other.
    let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let root = dir.join(format!("root-{tag}"));
    let partial = dir.join(format!("initrd-{tag}.partial"));
    let _ = std::fs::remove_dir_all(&root);
    let io = |what: &str, p: &Path, r: std::io::Result<()>| {
        r.unwrap_or_else(|e| panic!("initramfs: cannot {what} {}: {e}", p.display()))
    };
    for sub in ["bin", "pic", "dev", "proc", "sys", "tmp"] {
        let p = root.join(sub);
        io("create", &p, std::fs::create_dir_all(&p));
    }
    let write = |rel: &str, bytes: &[u8], mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let p = root.join(rel);
        io("write", &p, std::fs::write(&p, bytes));
        io(
            "chmod",
            &p,
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)),
        );
    };
    write("bin/busybox", &busybox, 0o755);
    write("init", INIT.as_bytes(), 0o755);
    write("pic/format", format.as_bytes(), 0o644);
    for (k, raw) in &pictures {
        write(&format!("pic/{k}.raw"), raw, 0o644);
    }
    let sh = root.join("bin/sh");
    io("create", &sh, std::os::unix::fs::symlink("busybox", &sh));

    let mut list = String::new();
    list_tree(&root, Path::new(""), &mut list);
    let archive = std::fs::File::create(&partial)
        .unwrap_or_else(|e| panic!("initramfs: cannot create {}: {e}", partial.display()));
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(archive)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("initramfs: cannot run cpio: {e}"));
    cpio.stdin
        .take()
        .expect("cpio stdin")
        .write_all(list.as_bytes())
        .expect("initramfs: writing the file list to cpio");
    let result = cpio
        .wait_with_output()
        .expect("initramfs: waiting for cpio");
    assert!(
        result.status.success(),
        "initramfs: cpio failed with {}: {}",
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
    io("rename", &partial, std::fs::rename(&partial, &out));
    out
}

/// Appends the paths under `root/rel` (directories before their contents, sorted) to `list`,
/// one per line, relative to `root`.
fn list_tree(root: &Path, rel: &Path, list: &mut String) {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))
        .unwrap_or_else(|e| panic!("initramfs: cannot list {}: {e}", root.join(rel).display()))
        .map(|e| e.expect("directory entry").file_name())
        .collect();
    entries.sort();
    for name in entries {
        let path = rel.join(&name);
        list.push_str(path.to_str().expect("UTF-8 path"));
        list.push('\n');
        if std::fs::symlink_metadata(root.join(&path)).is_ok_and(|m| m.is_dir()) {
            list_tree(root, &path, list);
        }
    }
}

/// FNV-1a, 64 bits: names the cached initramfs after its contents.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The newest kernel in `/boot` (`vmlinuz-<version>`, versions compared number by number).
pub fn kernel() -> PathBuf {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .unwrap_or_else(|e| panic!("cannot list /boot: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by_key(|p| version_key(&p.to_string_lossy()));
    let newest = kernels
        .pop()
        .unwrap_or_else(|| panic!("no /boot/vmlinuz-* (install linux-image-amd64)"));
    if let Err(e) = std::fs::File::open(&newest) {
        panic!("cannot read {} (run as root): {e}", newest.display());
    }
    newest
}

/// `s` as a sort key in which runs of digits compare as numbers.
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            key.push((0, rest[..text].to_string()));
            rest = &rest[text..];
        }
    }
    key
}

// ---------------------------------------------------------------------------------------------
// QEMU
// ---------------------------------------------------------------------------------------------

/// What QEMU boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// SeaBIOS alone: "No bootable device." in 720x400 text mode.
    SeaBios,
    /// The busybox Linux guest showing [`picture`]s at 800x600 (see the module doc).
    Linux,
}

/// Options for [`Qemu`]: the guest and extra command-line arguments.
pub struct QemuBuilder {
    guest: Guest,
    args: Vec<String>,
    kernel_args: Vec<String>,
    vga: String,
}

impl QemuBuilder {
    /// An extra QEMU argument, e.g. `-device` then `usb-tablet`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// An extra word for the Linux guest's kernel command line, after [`LINUX_CMDLINE`]
    /// (e.g. [`REDRAW`]). Ignored for the other guests.
    pub fn kernel_arg(mut self, word: &str) -> Self {
        self.kernel_args.push(word.to_string());
        self
    }

    /// The display device for `-vga` (default `std`; e.g. `qxl`).
    pub fn vga(mut self, vga: &str) -> Self {
        self.vga = vga.to_string();
        self
    }

    /// Starts `qemu-system-x86_64 -accel tcg -m 256 -nic none -vga std` (or
    /// [`QemuBuilder::vga`]) `-display dbus,addr=<bus> -qmp unix:DIR/qmp.sock,server=on,wait=off
    /// -serial file:DIR/serial.log -no-reboot` with the guest's and the extra arguments. Does
    /// not wait for anything (see [`Qemu::wait_serial`], [`Qemu::wait_ready`]).
    pub fn start(self, dir: &TempDir, bus: &DbusDaemon) -> Qemu {
        let display = [
            "-display".to_string(),
            format!("dbus,addr={}", bus.address()),
        ];
        self.start_with_display(dir, &display)
    }

    /// As [`QemuBuilder::start`], with `display` (e.g. `-display none -spice …`) instead of
    /// `-display dbus,addr=<bus>`.
    pub fn start_with_display(self, dir: &TempDir, display: &[String]) -> Qemu {
        let qmp = dir.join("qmp.sock");
        let serial = dir.join("serial.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        // No KVM: a guest hangs on this nested host.
        cmd.args(["-accel", "tcg", "-m", "256", "-nic", "none", "-vga"])
            .arg(&self.vga)
            .args(display)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-no-reboot");
        if self.guest == Guest::Linux {
            let mut cmdline = LINUX_CMDLINE.to_string();
            for word in &self.kernel_args {
                cmdline.push(' ');
                cmdline.push_str(word);
            }
            cmd.arg("-kernel")
                .arg(kernel())
                .arg("-initrd")
                .arg(initramfs())
                .arg("-append")
                .arg(cmdline);
        }
        cmd.args(&self.args);
        let started = Instant::now();
        let proc = ChildGuard::spawn("qemu", cmd, dir);
        Qemu {
            proc,
            guest: self.guest,
            dir: dir.path().to_path_buf(),
            serial,
            qmp_path: qmp,
            qmp: None,
            started,
            dumps: 0,
        }
    }
}

/// The Linux guest's kernel command line: serial console only, quiet, no cursor, no blanking,
/// vesafb 800x600x24, and QEMU exits (`-no-reboot`) if init dies.
pub const LINUX_CMDLINE: &str = "console=ttyS0 vga=0x315 loglevel=1 \
     vt.global_cursor_default=0 consoleblank=0 panic=-1";

/// The kernel command-line word ([`QemuBuilder::kernel_arg`]) that makes the Linux guest write
/// its pictures into `/dev/fb0` in turn, flat out, forever, instead of reading keys; it prints
/// `REDRAW <n>` (pictures written so far) at the start and after every 16th picture.
pub const REDRAW: &str = "spice_test=redraw";

/// The kernel command-line word that makes the Linux guest take commands on its second serial
/// port (`show <k>`, `run`, `video`, `mark`, `count`, `halt`; see `tests/qemu/init`) instead of
/// reading keys; it prints `MARKS READY` on the console when it listens. QEMU must give it that
/// port, e.g. `-serial unix:<path>,server=on,wait=off` after the harness's own `-serial`. The
/// benchmark `cli/benches/upstream.rs` uses that.
pub const MARKS: &str = "spice_test=marks";

/// A running QEMU (SIGKILLed on drop).
pub struct Qemu {
    proc: ChildGuard,
    guest: Guest,
    dir: PathBuf,
    serial: PathBuf,
    qmp_path: PathBuf,
    qmp: Option<Qmp>,
    started: Instant,
    dumps: u32,
}

impl Qemu {
    /// Options for a QEMU booting `guest`.
    pub fn builder(guest: Guest) -> QemuBuilder {
        QemuBuilder {
            guest,
            args: Vec::new(),
            kernel_args: Vec::new(),
            vga: "std".to_string(),
        }
    }

    /// Starts QEMU with `guest` and no extra arguments.
    pub fn start(dir: &TempDir, bus: &DbusDaemon, guest: Guest) -> Self {
        Self::builder(guest).start(dir, bus)
    }

    pub fn guest(&self) -> Guest {
        self.guest
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Everything the guest wrote to its serial console so far.
    pub fn serial_log(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// QEMU's output and the guest's serial console, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "{}\n--- guest serial console ---\n{}",
            self.proc.logs(),
            tail(&self.serial_log(), 6000)
        )
    }

    /// Panics, with the logs, if QEMU has exited.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.proc.try_wait() {
            panic!("QEMU exited with {status} {when}\n{}", self.logs());
        }
    }

    /// Waits up to `timeout` for `needle` in the serial log; returns the time since QEMU
    /// started. Panics, with the logs, if it does not appear or QEMU exits.
    pub fn wait_serial(&mut self, needle: &str, timeout: Duration) -> Duration {
        let found = poll(timeout, || {
            if self.serial_log().contains(needle) {
                return Some(Ok(self.started.elapsed()));
            }
            self.proc.try_wait().map(Err)
        });
        match found {
            Some(Ok(elapsed)) => elapsed,
            Some(Err(status)) => panic!(
                "QEMU exited with {status} before the guest printed {needle:?}\n{}",
                self.logs()
            ),
            None => panic!(
                "the guest did not print {needle:?} within {timeout:?}\n{}",
                self.logs()
            ),
        }
    }

    /// For the Linux guest: waits until it shows picture `a` and reads keys (`READY`), and
    /// checks that its framebuffer is what the pictures were made for. Returns the boot time
    /// (since QEMU started).
    pub fn wait_ready(&mut self) -> Duration {
        assert_eq!(self.guest, Guest::Linux, "only the Linux guest says READY");
        let elapsed = self.wait_serial("READY", BOOT_TIMEOUT);
        let log = self.serial_log();
        let want = format!("FB {FB_BPP} {FB_STRIDE} {FB_WIDTH},{FB_HEIGHT}");
        assert!(
            log.lines().any(|l| l.trim() == want),
            "the guest's framebuffer is not {want:?}\n{}",
            self.logs()
        );
        elapsed
    }

    /// For the Linux guest started with [`REDRAW`]: waits until it redraws (`REDRAW 0`) and
    /// checks its framebuffer as [`Qemu::wait_ready`] does. Returns the boot time.
    pub fn wait_redrawing(&mut self) -> Duration {
        assert_eq!(self.guest, Guest::Linux, "only the Linux guest redraws");
        let elapsed = self.wait_serial("REDRAW 0", BOOT_TIMEOUT);
        let log = self.serial_log();
        let want = format!("FB {FB_BPP} {FB_STRIDE} {FB_WIDTH},{FB_HEIGHT}");
        assert!(
            log.lines().any(|l| l.trim() == want),
            "the guest's framebuffer is not {want:?}\n{}",
            self.logs()
        );
        elapsed
    }

    /// The pictures the redrawing guest ([`REDRAW`]) last said it had written (a multiple of
    /// 16), `None` before its first `REDRAW` line.
    pub fn redraw_count(&self) -> Option<u64> {
        self.serial_log()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("REDRAW ")?.parse().ok())
            .next_back()
    }

    /// Counts the lines `KEY <key>` in the serial log.
    pub fn key_count(&self, key: char) -> usize {
        let line = format!("KEY {key}");
        self.serial_log()
            .lines()
            .filter(|l| l.trim() == line)
            .count()
    }

    /// The QMP connection (connected, with capabilities negotiated, on first use).
    pub fn qmp(&mut self) -> &mut Qmp {
        if self.qmp.is_none() {
            let qmp = Qmp::connect(&self.qmp_path, || match self.proc.try_wait() {
                Some(status) => Err(format!("QEMU exited with {status}")),
                None => Ok(()),
            })
            .unwrap_or_else(|e| panic!("QMP: {e}\n{}", self.logs()));
            self.qmp = Some(qmp);
        }
        self.qmp.as_mut().expect("connected above")
    }

    /// Runs a QMP command (`arguments` is a JSON object or `None`); returns the reply line.
    /// Panics, with the logs, on an error reply or a broken connection.
    pub fn execute(&mut self, command: &str, arguments: Option<&str>) -> String {
        let result = self.qmp().execute(command, arguments);
        result.unwrap_or_else(|e| panic!("QMP {command}: {e}\n{}", self.logs()))
    }

    /// QMP `screendump` of the first console, into `DIR/<name>.ppm`.
    pub fn screendump(&mut self, name: &str) -> Image {
        self.screendump_of(name, None, None)
    }

    /// QMP `screendump` of `device` (a display device's QOM id) and `head`, into
    /// `DIR/<name>.ppm`.
    pub fn screendump_of(&mut self, name: &str, device: Option<&str>, head: Option<u32>) -> Image {
        let path = self.dir.join(format!("{name}.ppm"));
        let _ = std::fs::remove_file(&path);
        let mut args = format!("{{\"filename\": {}", json_string(&path.to_string_lossy()));
        if let Some(d) = device {
            args.push_str(&format!(", \"device\": {}", json_string(d)));
        }
        if let Some(h) = head {
            args.push_str(&format!(", \"head\": {h}"));
        }
        args.push('}');
        self.execute("screendump", Some(&args));
        test_guest::read_ppm(&path)
            .unwrap_or_else(|e| panic!("cannot read QEMU's screendump {}: {e}", path.display()))
    }

    /// Takes a screendump every 100 ms until the picture stays the same for `quiet`, apart
    /// from one small changing area (at most 32x32 pixels: the blinking text cursor), and
    /// returns it with that area. Panics after `timeout`.
    pub fn stable_screendump(&mut self, name: &str, quiet: Duration, timeout: Duration) -> Stable {
        const MAX_BLINK: u32 = 32;
        let deadline = Instant::now() + timeout;
        // (time, picture, area that changed since the previous one)
        let mut shots: Vec<(Instant, Image, Option<Rect>)> = Vec::new();
        loop {
            self.dumps += 1;
            let image = self.screendump(&format!("{name}-{}", self.dumps % 2));
            let now = Instant::now();
            let changed = match shots.last() {
                Some((_, prev, _)) => diff_bounds(prev, &image),
                None => None,
            };
            shots.push((now, image, changed));
            // The shots of the last `quiet`, and the first one before them.
            let first = shots
                .iter()
                .rposition(|(t, _, _)| now.duration_since(*t) >= quiet);
            if let Some(first) = first {
                shots.drain(..first);
                let mut area: Option<Rect> = None;
                let mut ok = true;
                for (_, _, changed) in &shots[1..] {
                    match changed {
                        Some(Rect { w: 0, .. }) => ok = false, // size changed
                        Some(r) => area = Some(area.map_or(*r, |a| a.union(r))),
                        None => {}
                    }
                }
                if ok && area.is_none_or(|a| a.w <= MAX_BLINK && a.h <= MAX_BLINK) {
                    let (_, image, _) = shots.pop().expect("at least one shot");
                    let path = self.dir.join(format!("{name}.ppm"));
                    std::fs::write(&path, image.to_ppm())
                        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                    return Stable {
                        image,
                        path,
                        changing: area,
                    };
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "QEMU's screen did not settle within {timeout:?} (last shots in {})\n{}",
                    self.dir.display(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// QMP `send-key` with one QEMU key code (`"b"`, `"ret"`, `"shift"` …): press and release.
    pub fn send_key(&mut self, qcode: &str) {
        let args = format!(
            "{{\"keys\": [{{\"type\": \"qcode\", \"data\": {}}}]}}",
            json_string(qcode)
        );
        self.execute("send-key", Some(&args));
    }

    /// QMP `quit`, then waits for QEMU to exit.
    pub fn quit(&mut self) -> ExitStatus {
        // QEMU may close the connection before it replies.
        let _ = self.qmp().execute("quit", None);
        self.wait_exit(QMP_TIMEOUT)
            .unwrap_or_else(|| panic!("QEMU still runs {QMP_TIMEOUT:?} after quit"))
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        self.qmp = None;
        self.proc.kill();
    }

    /// Waits up to `timeout` for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_timeout(timeout)
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A screendump that stopped changing, but for `changing` (the blinking cursor, if any).
pub struct Stable {
    pub image: Image,
    pub path: PathBuf,
    pub changing: Option<Rect>,
}

impl Stable {
    /// The changing area grown by `margin` pixels on each side (lossy codecs smear its
    /// edges), for [`compare`]'s `ignore`.
    pub fn ignore(&self, margin: u32) -> Vec<Rect> {
        self.changing.iter().map(|r| r.grow(margin)).collect()
    }
}

/// The bounding box of the pixels that differ between `a` and `b`; `None` if they are equal,
/// a zero-width rectangle if their sizes differ.
fn diff_bounds(a: &Image, b: &Image) -> Option<Rect> {
    if (a.width, a.height) != (b.width, b.height) {
        return Some(Rect::new(0, 0, 0, 0));
    }
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (i, (pa, pb)) in a.rgb.chunks_exact(3).zip(b.rgb.chunks_exact(3)).enumerate() {
        if pa != pb {
            let (x, y) = (i as u32 % a.width, i as u32 / a.width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x + 1);
            y1 = y1.max(y + 1);
        }
    }
    (x0 != u32::MAX).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
}

// ---------------------------------------------------------------------------------------------
// QMP
// ---------------------------------------------------------------------------------------------

/// A minimal QMP client: JSON written by hand, replies read line by line (QEMU writes one
/// JSON object per line), events skipped.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Qmp {
    /// Connects to QEMU's QMP socket (retrying until it appears, while `alive` says QEMU
    /// runs), reads the greeting and negotiates capabilities.
    pub fn connect(
        path: &Path,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> Result<Self, String> {
        let deadline = Instant::now() + QMP_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    alive()?;
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "cannot connect to {} within {QMP_TIMEOUT:?}: {e}",
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream
            .set_read_timeout(Some(QMP_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        };
        let greeting = qmp.read_line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("unexpected greeting {greeting:?}"));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QEMU closed the QMP connection".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("reading from QMP: {e}")),
        }
    }

    /// Sends `{"execute": command, "arguments": arguments, "id": N}` and returns the reply
    /// line `{"return": …, "id": N}`; an `{"error": …}` reply is an `Err` with its text.
    pub fn execute(&mut self, command: &str, arguments: Option<&str>) -> Result<String, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = format!("{{\"execute\": {}", json_string(command));
        if let Some(a) = arguments {
            msg.push_str(&format!(", \"arguments\": {a}"));
        }
        msg.push_str(&format!(", \"id\": {id}}}\n"));
        self.writer
            .write_all(msg.as_bytes())
            .map_err(|e| format!("sending {msg:?}: {e}"))?;
        let tag = format!("\"id\": {id}");
        loop {
            let line = self.read_line()?;
            if line.starts_with("{\"return\"") && line.contains(&tag) {
                return Ok(line);
            }
            if line.starts_with("{\"error\"") {
                return Err(format!("{msg:?} failed: {line}"));
            }
            // An event (or a reply to a command given up on): skip it.
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// spice-shim qemu
// ---------------------------------------------------------------------------------------------

/// A running `spice-shim qemu --dbus <bus> --listen 127.0.0.1:<port> …` (killed on drop).
pub struct Shim {
    proc: ChildGuard,
    port: u16,
}

impl Shim {
    /// Starts the shim on a free port. It may start before QEMU (it waits for it on the bus),
    /// so this does not wait for it to listen: see [`Shim::wait_listening`].
    pub fn start(dir: &TempDir, bus: &DbusDaemon, args: &[&str]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spice-shim"));
        cmd.arg("qemu")
            .arg("--dbus")
            .arg(bus.address())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env_remove("SPICE_PASSWORD")
            // Nothing outside the test's own bus.
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:");
        Self {
            proc: ChildGuard::spawn("shim", cmd, dir),
            port,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// `spice://127.0.0.1:<port>`
    pub fn uri(&self) -> String {
        format!("spice://127.0.0.1:{}", self.port)
    }

    /// Stops the shim with SIGTERM (as Ctrl-C does) while QEMU runs on, and parses its exit
    /// report. Panics if it had exited already, does not exit within `timeout` or prints no
    /// report.
    pub fn stop(mut self, timeout: Duration) -> ServerExit {
        self.proc.assert_running("before it was asked to stop");
        assert!(self.proc.signal(Signal::TERM), "cannot send SIGTERM");
        if self.proc.wait_timeout(timeout).is_none() {
            panic!(
                "spice-shim qemu still runs {timeout:?} after SIGTERM\n{}",
                self.logs()
            );
        }
        self.wait_exit(Duration::ZERO)
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr()
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    pub fn assert_running(&mut self, when: &str) {
        self.proc.assert_running(when);
    }

    /// Waits until the shim says it listens and accepts TCP connections. Panics if it exits
    /// or does not within [`SHIM_TIMEOUT`].
    pub fn wait_listening(&mut self) {
        let line = format!("listening on spice://127.0.0.1:{}", self.port);
        let port = self.port;
        let ready = poll(SHIM_TIMEOUT, || {
            if let Some(status) = self.proc.try_wait() {
                return Some(Err(status));
            }
            (self.proc.stderr().contains(&line) && port_open(port)).then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => {}
            Some(Err(status)) => panic!(
                "spice-shim qemu exited with {status} instead of listening\n{}",
                self.logs()
            ),
            None => panic!(
                "spice-shim qemu does not listen on 127.0.0.1:{port} after {SHIM_TIMEOUT:?}\n{}",
                self.logs()
            ),
        }
    }

    /// Waits up to `timeout` for `needle` in the shim's stderr (panics if it exits first).
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        poll(timeout, || {
            if self.proc.stderr().contains(needle) {
                return Some(true);
            }
            self.proc.try_wait().map(|status| {
                panic!(
                    "spice-shim qemu exited with {status} while waiting for {needle:?}\n{}",
                    self.logs()
                )
            })
        })
        .is_some()
    }

    /// Waits for the shim to exit by itself (QEMU went away) and parses its exit report.
    /// Panics if it does not exit within `timeout` or prints no report.
    pub fn wait_exit(mut self, timeout: Duration) -> ServerExit {
        let Some(status) = self.proc.wait_timeout(timeout) else {
            panic!(
                "spice-shim qemu still runs {timeout:?} after QEMU went away\n{}",
                self.logs()
            );
        };
        let stdout = self.proc.stdout();
        let stderr = self.proc.stderr();
        let stats = Stats::parse(&stdout).unwrap_or_else(|e| {
            panic!(
                "cannot parse the exit report of spice-shim qemu ({e}); it exited with \
                 {status}\n{}",
                self.logs()
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

/// Runs `spicy-screenshot` against the shim (killed after [`CLIENT_TIMEOUT`]) and returns the
/// picture it saved in `DIR/<name>.ppm`. Panics, with its and the shim's logs, if it fails.
pub fn spicy_screenshot(dir: &TempDir, name: &str, shim: &Shim) -> Image {
    let out = dir.join(&format!("{name}.ppm"));
    let mut cmd = Command::new("spicy-screenshot");
    cmd.args(["-h", "127.0.0.1", "-p", &shim.port().to_string(), "-o"])
        .arg(&out);
    let mut proc = ChildGuard::spawn(name, cmd, dir);
    let status = proc.wait_timeout(CLIENT_TIMEOUT);
    proc.kill();
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "spicy-screenshot failed with {s}\n{}\n{}",
            proc.logs(),
            shim.logs()
        ),
        None => panic!(
            "spicy-screenshot wrote no picture within {CLIENT_TIMEOUT:?}\n{}\n{}",
            proc.logs(),
            shim.logs()
        ),
    }
    test_guest::read_ppm(&out).unwrap_or_else(|e| panic!("cannot read {}: {e}", out.display()))
}

// ---------------------------------------------------------------------------------------------
// Comparing pictures
// ---------------------------------------------------------------------------------------------

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self { x, y, w, h }
    }

    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && y >= self.y && x - self.x < self.w && y - self.y < self.h
    }

    pub fn union(&self, o: &Rect) -> Rect {
        let (x0, y0) = (self.x.min(o.x), self.y.min(o.y));
        let x1 = (self.x + self.w).max(o.x + o.w);
        let y1 = (self.y + self.h).max(o.y + o.h);
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// `margin` more pixels on each side (not beyond 0).
    pub fn grow(&self, margin: u32) -> Rect {
        let (x0, y0) = (self.x.saturating_sub(margin), self.y.saturating_sub(margin));
        Rect::new(
            x0,
            y0,
            self.x + self.w + margin - x0,
            self.y + self.h + margin - y0,
        )
    }
}

impl fmt::Display for Rect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}+{}+{}", self.w, self.h, self.x, self.y)
    }
}

/// Side of the blocks of [`compare`]'s per-block check.
pub const BLOCK: u32 = 16;

/// Limits for [`compare`].
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Lowest PSNR over the compared area, in dB.
    pub min_psnr: f64,
    /// Highest mean absolute channel difference in any 16x16 block (0–255).
    pub max_block_error: f64,
}

/// The outcome of a successful [`compare`].
#[derive(Debug, Clone)]
pub struct Match {
    /// PSNR in dB (`f64::INFINITY` for identical pictures).
    pub psnr: f64,
    /// The block with the largest mean absolute error, and that error.
    pub worst_block: Rect,
    pub worst_error: f64,
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PSNR {:.1} dB, worst 16x16 block {} with mean abs error {:.1}",
            self.psnr, self.worst_block, self.worst_error
        )
    }
}

/// Compares the client's picture with QEMU's screendump `reference` (see the module doc);
/// pixels inside `ignore` are left out. `Err` describes what is wrong.
pub fn compare(
    client: &Image,
    reference: &Image,
    ignore: &[Rect],
    tol: Tolerance,
) -> Result<Match, String> {
    let (w, h) = (reference.width, reference.height);
    if client.width < w || client.height < h {
        return Err(format!(
            "the client's picture ({}x{}) is smaller than QEMU's ({w}x{h}): it is clipped",
            client.width, client.height
        ));
    }
    let mut sq_sum = 0u64;
    let mut count = 0u64;
    // Per block: (sum of absolute differences, compared channel values).
    let bw = w.div_ceil(BLOCK);
    let bh = h.div_ceil(BLOCK);
    let mut blocks = vec![(0u64, 0u64); (bw * bh) as usize];
    for y in 0..h {
        for x in 0..w {
            if ignore.iter().any(|r| r.contains(x, y)) {
                continue;
            }
            let a = client.pixel(x, y);
            let b = reference.pixel(x, y);
            let block = &mut blocks[((y / BLOCK) * bw + x / BLOCK) as usize];
            for c in 0..3 {
                let d = u64::from(a[c].abs_diff(b[c]));
                sq_sum += d * d;
                block.0 += d;
                block.1 += 1;
            }
            count += 3;
        }
    }
    if count == 0 {
        return Err("nothing left to compare outside the ignored areas".into());
    }
    let mse = sq_sum as f64 / count as f64;
    let psnr = if sq_sum == 0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    };
    let block_rect = |i: usize| {
        let (bx, by) = (i as u32 % bw * BLOCK, i as u32 / bw * BLOCK);
        Rect::new(bx, by, BLOCK.min(w - bx), BLOCK.min(h - by))
    };
    let errors: Vec<f64> = blocks
        .iter()
        .map(|&(sum, n)| if n == 0 { 0.0 } else { sum as f64 / n as f64 })
        .collect();
    let (worst, worst_error) = errors.iter().copied().enumerate().fold(
        (0, -1.0),
        |best, (i, e)| if e > best.1 { (i, e) } else { best },
    );
    let result = Match {
        psnr,
        worst_block: block_rect(worst),
        worst_error,
    };
    let bad_blocks = errors.iter().filter(|&&e| e > tol.max_block_error).count();
    if psnr < tol.min_psnr || bad_blocks > 0 {
        let r = result.worst_block;
        return Err(format!(
            "the client's {}x{} picture does not match QEMU's {w}x{h} screendump in its \
             top-left corner: PSNR {psnr:.1} dB (at least {:.1} wanted); {bad_blocks} of {} \
             16x16 blocks have a mean abs error above {:.1}; the worst, {r}, has {worst_error:.1} \
             (mean colour: client {:?}, QEMU {:?})",
            client.width,
            client.height,
            tol.min_psnr,
            blocks.len(),
            tol.max_block_error,
            mean_colour(client, r),
            mean_colour(reference, r),
        ));
    }
    Ok(result)
}

/// The mean R, G, B of `image` over `r`.
pub fn mean_colour(image: &Image, r: Rect) -> [u8; 3] {
    let mut sum = [0u64; 3];
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            let p = image.pixel(x, y);
            for c in 0..3 {
                sum[c] += u64::from(p[c]);
            }
        }
    }
    let n = u64::from(r.w * r.h).max(1);
    sum.map(|s| (s / n) as u8)
}

/// The `rect` part of `image`.
pub fn crop(image: &Image, rect: Rect) -> Image {
    assert!(
        rect.x + rect.w <= image.width && rect.y + rect.h <= image.height,
        "{rect} is not inside a {}x{} picture",
        image.width,
        image.height
    );
    let mut rgb = Vec::with_capacity((rect.w * rect.h * 3) as usize);
    for y in rect.y..rect.y + rect.h {
        let start = ((y * image.width + rect.x) * 3) as usize;
        rgb.extend_from_slice(&image.rgb[start..start + (rect.w * 3) as usize]);
    }
    Image::new(rect.w, rect.h, rgb).expect("crop size")
}

/// Finds `reference` drawn unscaled somewhere in `screen` (e.g. in a remote-viewer window on
/// Xvfb) and [`compare`]s it there; returns where its top-left corner is and the match.
///
/// Places are screened with sample points of `reference` outside `ignore`: up to 512 pixels 2
/// or 3 pixels away from its colour edges (lossy codecs and chroma upsampling smear the edges
/// themselves) and not of its most common colour, and an 8x8 grid. A place passes if at most a quarter of the first 32 and 10 %
/// of all samples differ by more than 64 in a channel. Of the places that pass, the one with
/// the smallest total difference on the pixels right at the edges is compared.
pub fn find_unscaled(
    screen: &Image,
    reference: &Image,
    ignore: &[Rect],
    tol: Tolerance,
) -> Result<(u32, u32, Match), String> {
    let (w, h) = (reference.width, reference.height);
    if screen.width < w || screen.height < h {
        return Err(format!(
            "the {}x{} screen cannot hold the {w}x{h} picture",
            screen.width, screen.height
        ));
    }
    let ignored = |x: u32, y: u32| ignore.iter().any(|r| r.contains(x, y));
    // Pixels on both sides of each colour edge (`at`) and a little away from it (`near`).
    let mut at: Vec<(u32, u32)> = Vec::new();
    let mut near: Vec<(u32, u32)> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let p = reference.pixel(x, y);
            if x > 0 && reference.pixel(x - 1, y) != p {
                at.extend([(x - 1, y), (x, y)]);
                if x >= 3 {
                    near.push((x - 3, y));
                }
                if x + 2 < w {
                    near.push((x + 2, y));
                }
            }
            if y > 0 && reference.pixel(x, y - 1) != p {
                at.extend([(x, y - 1), (x, y)]);
                if y >= 3 {
                    near.push((x, y - 3));
                }
                if y + 2 < h {
                    near.push((x, y + 2));
                }
            }
        }
    }
    let pick = |points: &[(u32, u32)]| -> Vec<(u32, u32, [u8; 3])> {
        let step = (points.len() / 512).max(1);
        points
            .iter()
            .step_by(step)
            .filter(|&&(x, y)| !ignored(x, y))
            .map(|&(x, y)| (x, y, reference.pixel(x, y)))
            .collect()
    };
    // The edge samples not of the picture's most common colour first (the background: e.g.
    // black text-mode samples would match a black desktop anywhere); they rule out most places
    // at once.
    let mut counts = std::collections::HashMap::<[u8; 3], usize>::new();
    for p in reference.rgb.chunks_exact(3) {
        *counts.entry([p[0], p[1], p[2]]).or_default() += 1;
    }
    let background = counts.into_iter().max_by_key(|&(_, n)| n).map(|(c, _)| c);
    near.retain(|&(x, y)| Some(reference.pixel(x, y)) != background);
    let mut samples = pick(&near);
    for j in 0..8 {
        for i in 0..8 {
            let (x, y) = ((2 * i + 1) * w / 16, (2 * j + 1) * h / 16);
            if !ignored(x, y) {
                samples.push((x, y, reference.pixel(x, y)));
            }
        }
    }
    let edges = pick(&at);
    let screen_px = |x: u32, y: u32| {
        let i = ((y * screen.width + x) * 3) as usize;
        [screen.rgb[i], screen.rgb[i + 1], screen.rgb[i + 2]]
    };
    let allowed = samples.len() / 10;
    let quick = samples.len().min(32);
    let mut best: Option<(u64, u32, u32)> = None;
    for y0 in 0..=screen.height - h {
        for x0 in 0..=screen.width - w {
            let misses = |n: usize, allowed: usize| {
                let mut misses = 0;
                for &(x, y, c) in &samples[..n] {
                    let p = screen_px(x0 + x, y0 + y);
                    if (0..3).any(|k| p[k].abs_diff(c[k]) > 64) {
                        misses += 1;
                        if misses > allowed {
                            break;
                        }
                    }
                }
                misses
            };
            if misses(quick, quick / 4) > quick / 4 || misses(samples.len(), allowed) > allowed {
                continue;
            }
            let score: u64 = edges
                .iter()
                .map(|&(x, y, c)| {
                    let p = screen_px(x0 + x, y0 + y);
                    (0..3).map(|k| u64::from(p[k].abs_diff(c[k]))).sum::<u64>()
                })
                .sum();
            if best.is_none_or(|(s, _, _)| score < s) {
                best = Some((score, x0, y0));
            }
        }
    }
    let Some((_, x0, y0)) = best else {
        return Err(format!(
            "no place on the screen looks like the {w}x{h} picture"
        ));
    };
    compare(
        &crop(screen, Rect::new(x0, y0, w, h)),
        reference,
        ignore,
        tol,
    )
    .map(|m| (x0, y0, m))
    .map_err(|e| format!("the best place, +{x0}+{y0}: {e}"))
}
