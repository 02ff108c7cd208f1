//! End-to-end tests of `spice-shim qemu` with a real QEMU (`-display dbus` on a private bus,
//! TCG): what the spice-gtk clients show must be what QEMU's own `screendump` shows, keys typed
//! in a client must reach the guest, and the shim must exit cleanly when QEMU goes away.
//!
//! The guests, the QMP client and the picture comparison are in `qemu/mod.rs`. One Linux guest
//! boot (about 10 s under TCG) serves all the framebuffer and keyboard checks; the SeaBIOS guest
//! (text mode, ready within a few seconds) serves the text-mode and the QEMU-killed checks.

mod qemu;
mod support;
mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qemu::{
    DbusDaemon, FB_HEIGHT, FB_WIDTH, Guest, Qemu, Rect, SHIM_TIMEOUT, Shim, Stable, Tolerance,
    compare, find_unscaled, picture, spicy_screenshot,
};
use support::{CLIENT_TIMEOUT, Xvfb, display_peers};
use test_guest::Image;
use util::{ChildGuard, TempDir, poll};

/// The default codec (H.264) as decoded by spice-gtk, against QEMU's screendump, for SeaBIOS'
/// text screen (measured: PSNR 52–55 dB, worst block 1.0–1.3). Blanking one character of that
/// screen gives a block an error of 18 (median over its characters; at least 9 for all but
/// dots, commas and dashes).
const TEXT: Tolerance = Tolerance {
    min_psnr: 35.0,
    max_block_error: 6.0,
};

/// The same for the Linux guest's pictures of solid blocks (measured: PSNR 34–35 dB, worst
/// block 8.5–10, on the colour edges, which chroma subsampling smears over 2 pixels). A block
/// of the wrong colour would give an error of 42 at least.
const PICTURES: Tolerance = Tolerance {
    min_psnr: 28.0,
    max_block_error: 20.0,
};

/// How long the text screen must stay unchanged (but for the cursor) to count as settled.
const SETTLE: Duration = Duration::from_secs(2);

/// Panics unless `client` shows `reference` (unclipped, within `tol`); logs the match.
fn assert_shows(
    what: &str,
    client: &Image,
    reference: &Image,
    ignore: &[Rect],
    tol: Tolerance,
    dir: &TempDir,
) {
    match compare(client, reference, ignore, tol) {
        Ok(m) => eprintln!(
            "{what}: {}x{} client picture vs {}x{} screendump: {m}",
            client.width, client.height, reference.width, reference.height
        ),
        Err(e) => panic!("{what}: {e}\n(pictures in {})", dir.path().display()),
    }
}

/// Panics unless the shim said that it stopped because QEMU went away.
fn assert_qemu_left(exit: &support::ServerExit) {
    assert!(
        exit.stderr.contains("QEMU left"),
        "the shim exited without saying that QEMU left\n{}",
        exit.report()
    );
}

/// Sanity of the SeaBIOS oracle: the final "No bootable device." text screen, 720x400, with
/// text in its top rows and nothing below them.
fn assert_seabios_text_screen(stable: &Stable) {
    let img = &stable.image;
    assert_eq!(
        (img.width, img.height),
        (720, 400),
        "SeaBIOS' screendump {} is not 720x400 text mode",
        stable.path.display()
    );
    let lit = |y0: u32, y1: u32| {
        (y0..y1)
            .flat_map(|y| (0..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y).iter().any(|&c| c > 100))
            .count()
    };
    // Nine lines of 16 pixels ending with "No bootable device." (y 144..160); the cursor blinks
    // at y 173..175.
    assert!(
        lit(0, 16) > 300 && lit(144, 160) > 300 && lit(200, 400) == 0,
        "SeaBIOS' screendump {} does not look like its final text screen",
        stable.path.display()
    );
}

/// SeaBIOS' 720x400 text screen (whose size QEMU never reports over D-Bus: it only shows in
/// the updates) reaches a client through the shim, unclipped. The shim starts before QEMU and
/// waits for it on the bus.
#[test]
fn seabios_text_screen_reaches_client_unclipped() {
    let dir = TempDir::new("qemu-text");
    let bus = DbusDaemon::start(&dir);
    let mut shim = Shim::start(&dir, &bus, &[]);
    assert!(
        shim.wait_stderr("waiting for QEMU", SHIM_TIMEOUT),
        "the shim does not say that it waits for QEMU\n{}",
        shim.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    shim.assert_running("while waiting for QEMU to appear on the bus");

    let mut vm = Qemu::start(&dir, &bus, Guest::SeaBios);
    shim.wait_listening();
    let stable = vm.stable_screendump("qemu-text", SETTLE, Duration::from_secs(60));
    eprintln!(
        "SeaBIOS settled {:?} after QEMU started; blinking area {:?}",
        vm.uptime(),
        stable.changing
    );
    assert_seabios_text_screen(&stable);

    let client = spicy_screenshot(&dir, "client-text", &shim);
    // Not the 640x480 that QEMU announces in `Scanout`: `compare` rejects a clipped picture.
    assert_shows(
        "text mode",
        &client,
        &stable.image,
        &stable.ignore(8),
        TEXT,
        &dir,
    );

    vm.quit();
    let exit = shim.wait_exit(SHIM_TIMEOUT);
    assert_qemu_left(&exit);
    exit.assert_cookies_balanced(1);
}

/// remote-viewer on a private Xvfb, drawing on its canvas (not through an overlay window, so
/// that `import` sees the picture).
struct RemoteViewer {
    xvfb: Xvfb,
    proc: ChildGuard,
}

impl RemoteViewer {
    fn start(shim: &Shim, dir: &TempDir) -> Self {
        let xvfb = Xvfb::start(dir);
        let mut cmd = xvfb.command("remote-viewer", dir);
        cmd.arg(shim.uri()).env("DISABLE_GSTVIDEOOVERLAY", "1");
        let proc = ChildGuard::spawn("remote-viewer", cmd, dir);
        Self { xvfb, proc }
    }

    /// Runs `xdotool <args>` on the X server.
    fn xdotool(&self, args: &[&str]) {
        let out = Command::new("xdotool")
            .env("DISPLAY", self.xvfb.display())
            .args(args)
            .output()
            .expect("xdotool runs");
        assert!(
            out.status.success(),
            "xdotool {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Takes screenshots of the X screen until `reference` shows in it, unscaled (with no
    /// window manager, remote-viewer shows the guest 1:1), and returns where. Panics after
    /// [`CLIENT_TIMEOUT`] or if a process exits.
    fn wait_for(
        &mut self,
        shim: &mut Shim,
        reference: &Image,
        ignore: &[Rect],
        tol: Tolerance,
        path: &Path,
    ) -> (u32, u32) {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let mut last = String::from("no screenshot taken");
        while Instant::now() < deadline {
            self.proc.assert_running("while waiting for its picture");
            shim.assert_running("while remote-viewer waited for its picture");
            self.xvfb
                .assert_running("while remote-viewer waited for its picture");
            match self
                .xvfb
                .screenshot(path)
                .and_then(|s| find_unscaled(&s, reference, ignore, tol))
            {
                Ok((x, y, m)) => {
                    eprintln!(
                        "{}: remote-viewer shows the picture at +{x}+{y}: {m}",
                        path.display()
                    );
                    return (x, y);
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "remote-viewer does not show the expected picture after {CLIENT_TIMEOUT:?}: \
             {last}\nlast screenshot: {}\n{}\n{}",
            path.display(),
            self.proc.logs(),
            shim.logs()
        );
    }
}

/// The Linux guest's framebuffer through the shim: the client shows what QEMU shows, follows
/// when the guest draws another picture, and keys typed in remote-viewer reach the guest,
/// which visibly reacts. Then QEMU quits and the shim exits cleanly.
#[test]
fn linux_framebuffer_follows_guest_and_client_keys() {
    let dir = TempDir::new("qemu-fb");
    let bus = DbusDaemon::start(&dir);
    let mut vm = Qemu::start(&dir, &bus, Guest::Linux);
    let boot = vm.wait_ready();
    eprintln!("the Linux guest showed picture a {boot:?} after QEMU started");
    // This time the shim starts after QEMU, on a running guest.
    let mut shim = Shim::start(&dir, &bus, &[]);
    shim.wait_listening();

    // The oracle itself: QEMU shows exactly what the guest wrote.
    let dump_a = vm.screendump("qemu-a");
    assert!(
        dump_a == picture('a'),
        "QEMU's screendump is not the guest's picture a ({}x{})",
        dump_a.width,
        dump_a.height
    );
    let client_a = spicy_screenshot(&dir, "client-a", &shim);
    assert_shows("picture a", &client_a, &dump_a, &[], PICTURES, &dir);

    // The guest draws another picture (on a key sent through QMP); a new client sees it.
    vm.send_key("b");
    vm.wait_serial("KEY b", Duration::from_secs(30));
    let dump_b = vm.screendump("qemu-b");
    assert!(dump_b == picture('b'), "QEMU's screendump is not picture b");
    let client_b = spicy_screenshot(&dir, "client-b", &shim);
    assert_shows("picture b", &client_b, &dump_b, &[], PICTURES, &dir);
    assert!(
        compare(&client_b, &dump_a, &[], PICTURES).is_err(),
        "the client's picture after the change still matches picture a"
    );

    // A key typed in a real client reaches the guest through the shim and QEMU's D-Bus
    // keyboard: remote-viewer under Xvfb, focused by a click on the picture.
    let mut viewer = RemoteViewer::start(&shim, &dir);
    let (x, y) = viewer.wait_for(&mut shim, &dump_b, &[], PICTURES, &dir.join("screen-b.ppm"));
    assert!(
        shim.wait_stderr("inputs channel linked", Duration::from_secs(20)),
        "remote-viewer linked no inputs channel\n{}",
        shim.logs()
    );
    let (cx, cy) = (x + FB_WIDTH / 2, y + FB_HEIGHT / 2);
    viewer.xdotool(&["mousemove", &cx.to_string(), &cy.to_string()]);
    viewer.xdotool(&["click", "1"]);
    // Typed again if it got lost (e.g. before the widget had the focus); the guest shows
    // picture c on every `c`.
    let typed = poll(Duration::from_secs(40), || {
        if vm.key_count('c') > 0 {
            return Some(());
        }
        viewer.xdotool(&["key", "c"]);
        poll(Duration::from_secs(10), || {
            (vm.key_count('c') > 0).then_some(())
        })
    });
    if typed.is_none() {
        panic!(
            "the guest did not get the `c` typed in remote-viewer\n{}\n{}\n{}",
            vm.logs(),
            viewer.proc.logs(),
            shim.logs()
        );
    }
    let log = vm.serial_log();
    assert!(
        !log.contains("KEY other") && !log.contains("(no picture)"),
        "the guest got other keys than the ones typed\n{log}"
    );
    let dump_c = vm.screendump("qemu-c");
    assert!(dump_c == picture('c'), "QEMU's screendump is not picture c");
    viewer.wait_for(&mut shim, &dump_c, &[], PICTURES, &dir.join("screen-c.ppm"));
    let client_c = spicy_screenshot(&dir, "client-c", &shim);
    assert_shows("picture c", &client_c, &dump_c, &[], PICTURES, &dir);

    // QEMU quits while remote-viewer watches: the shim exits by itself, every cookie back.
    vm.quit();
    let exit = shim.wait_exit(SHIM_TIMEOUT);
    assert_qemu_left(&exit);
    exit.assert_cookies_balanced(3);
    assert_eq!(
        exit.stats.clients.len(),
        4,
        "three spicy-screenshots and remote-viewer\n{}",
        exit.report()
    );
}

/// QEMU killed (SIGKILL) while a client watches a live screen (SeaBIOS' blinking cursor): the
/// shim notices, exits 0 with every cookie returned, and nothing hangs.
#[test]
fn qemu_killed_mid_stream() {
    let dir = TempDir::new("qemu-kill");
    let bus = DbusDaemon::start(&dir);
    let mut vm = Qemu::start(&dir, &bus, Guest::SeaBios);
    let mut shim = Shim::start(&dir, &bus, &[]);
    shim.wait_listening();
    let stable = vm.stable_screendump("qemu-text", SETTLE, Duration::from_secs(60));
    assert_seabios_text_screen(&stable);

    let mut viewer = RemoteViewer::start(&shim, &dir);
    let ignore = stable.ignore(8);
    let path = dir.join("screen-text.ppm");
    viewer.wait_for(&mut shim, &stable.image, &ignore, TEXT, &path);
    let peers = display_peers(&shim.stderr());
    let [peer] = peers.as_slice() else {
        panic!(
            "expected one display channel, the shim logged {peers:?}\n{}",
            shim.logs()
        );
    };
    // The cursor keeps blinking: frames are being drawn and sent right now.
    std::thread::sleep(Duration::from_secs(1));
    shim.assert_running("before QEMU was killed");

    vm.kill();
    let exit = shim.wait_exit(SHIM_TIMEOUT);
    assert_qemu_left(&exit);
    exit.assert_cookies_balanced(2);
    let client = exit.client(peer);
    assert!(
        client.sent >= 2,
        "remote-viewer got {} frames of the blinking screen\n{}",
        client.sent,
        exit.report()
    );
    viewer.proc.kill();
}

// Checks of the comparison itself.

fn solid(w: u32, h: u32, rgb: [u8; 3]) -> Image {
    Image::new(w, h, rgb.repeat((w * h) as usize)).unwrap()
}

/// `image` with the `r` area painted `rgb`.
fn paint(image: &Image, r: Rect, rgb: [u8; 3]) -> Image {
    let mut out = image.clone();
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            let i = ((y * out.width + x) * 3) as usize;
            out.rgb[i..i + 3].copy_from_slice(&rgb);
        }
    }
    out
}

/// `image` in the top-left corner of a `w`x`h` picture filled with `fill`.
fn embed(image: &Image, w: u32, h: u32, fill: [u8; 3]) -> Image {
    let mut out = solid(w, h, fill);
    for y in 0..image.height {
        for x in 0..image.width {
            let i = ((y * w + x) * 3) as usize;
            out.rgb[i..i + 3].copy_from_slice(&image.pixel(x, y));
        }
    }
    out
}

#[test]
fn compare_accepts_identical_and_larger_pictures() {
    let a = picture('a');
    let m = compare(&a, &a, &[], PICTURES).unwrap();
    assert!(m.psnr.is_infinite() && m.worst_error == 0.0, "{m}");
    // A larger client surface (e.g. 720x480 for 720x400 text) is fine, whatever its extra area.
    let larger = embed(&a, FB_WIDTH + 80, FB_HEIGHT + 40, [200, 10, 10]);
    compare(&larger, &a, &[], PICTURES).unwrap();
    // Codec-like noise: every channel off by a few levels.
    let mut noisy = a.clone();
    for (i, v) in noisy.rgb.iter_mut().enumerate() {
        *v = v.saturating_add((i % 7) as u8).saturating_sub(3);
    }
    let m = compare(&noisy, &a, &[], PICTURES).unwrap();
    assert!(m.psnr > 35.0 && m.psnr.is_finite(), "{m}");
}

#[test]
fn compare_rejects_one_wrong_block() {
    let a = picture('a');
    // One 16x16 block of 800x600 barely moves the PSNR, but the block check catches it.
    let wrong = paint(&a, Rect::new(400, 304, 16, 16), [255, 128, 0]);
    let err = compare(&wrong, &a, &[], PICTURES).unwrap_err();
    assert!(err.contains("16x16+400+304"), "{err}");
    // Unless that area is ignored.
    compare(&wrong, &a, &[Rect::new(396, 300, 24, 24)], PICTURES).unwrap();
    // The guest's pictures are told apart everywhere.
    let b = picture('b');
    assert!(compare(&b, &a, &[], PICTURES).is_err());
}

#[test]
fn compare_rejects_clipped_pictures() {
    let text = solid(720, 400, [0, 0, 0]);
    for (w, h) in [(640, 480), (720, 399), (719, 480)] {
        let client = solid(w, h, [0, 0, 0]);
        let err = compare(&client, &text, &[], PICTURES).unwrap_err();
        assert!(err.contains("clipped"), "{w}x{h}: {err}");
    }
}

#[test]
fn find_unscaled_locates_the_picture() {
    let c = picture('c');
    // The picture 1:1 in a window on a black screen, below a grey title bar.
    let screen = solid(1600, 1000, [0, 0, 0]);
    let mut screen = paint(&screen, Rect::new(0, 0, 810, 51), [60, 60, 60]);
    for y in 0..c.height {
        for x in 0..c.width {
            let i = (((y + 51) * 1600 + x + 5) * 3) as usize;
            screen.rgb[i..i + 3].copy_from_slice(&c.pixel(x, y));
        }
    }
    let (x, y, _) = find_unscaled(&screen, &c, &[], PICTURES).unwrap();
    assert_eq!((x, y), (5, 51));
    assert!(find_unscaled(&screen, &picture('a'), &[], PICTURES).is_err());
}
