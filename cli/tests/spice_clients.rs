//! End-to-end tests of `spice-shim serve` with the real spice-gtk clients installed on the
//! system: `spicy-screenshot` (saves the first displayed frame as a PPM) and `remote-viewer`
//! (the SpiceDisplay widget, run under a private Xvfb and photographed with `import`).
//!
//! Every test starts its own server on a free port (and its own X server, which picks a free
//! display number), so the tests may run in parallel. Every child process is killed when the
//! test ends, also on failure; the test's directory (logs, screenshots) is kept and printed
//! when it fails.

mod support;
mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::{
    CLIENT_TIMEOUT, Found, Server, TOLERANCE, Xvfb, display_peers, find_bars, spicy_screenshot,
    square_x,
};
use util::{ChildGuard, TempDir, poll};

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const BARS: &[&str] = &["--pattern", "bars", "--size", "1280x720"];

/// The single client line of a report, with its codec and a non-zero frame count.
fn only_client<'a>(exit: &'a support::ServerExit, codec: &str) -> &'a support::ClientLine {
    let [client] = exit.stats.clients.as_slice() else {
        panic!("expected exactly one client line\n{}", exit.report());
    };
    assert_eq!(
        client.codec,
        codec,
        "codec of the client\n{}",
        exit.report()
    );
    assert!(
        client.sent > 0,
        "no frame was sent to the client\n{}",
        exit.report()
    );
    client
}

#[test]
fn spicy_screenshot_shows_bars() {
    let dir = TempDir::new("screenshot");
    let server = Server::start(&dir, BARS, None);

    spicy_screenshot(&dir, "shot", &server, None).expect_bars(WIDTH, HEIGHT);

    let exit = server.stop();
    exit.assert_cookies_balanced(1);
    assert!(
        exit.encoded("h264") > 0,
        "no frame was encoded with h264\n{}",
        exit.report()
    );
    let client = only_client(&exit, "h264");
    assert!(
        client.disconnected,
        "spicy-screenshot quit, but its client line does not say so\n{}",
        exit.report()
    );
}

/// A guest that drew one frame long ago still shows in clients that join later: the server
/// encodes the last scanout again for each of them.
fn idle_guest_second_client(codecs: Option<&str>) {
    let dir = TempDir::new("idle");
    let mut args = BARS.to_vec();
    args.extend(["--frames", "1"]);
    if let Some(c) = codecs {
        args.extend(["--video-codecs", c]);
    }
    let mut server = Server::start(&dir, &args, None);

    spicy_screenshot(&dir, "first", &server, None).expect_bars(WIDTH, HEIGHT);
    std::thread::sleep(Duration::from_secs(3));
    server.assert_running("while the guest was idle");
    spicy_screenshot(&dir, "second", &server, None).expect_bars(WIDTH, HEIGHT);

    let exit = server.stop();
    exit.assert_cookies_balanced(1);
    assert_eq!(
        exit.stats.drawn,
        1,
        "the guest was told to draw one frame\n{}",
        exit.report()
    );
    let codec = codecs.unwrap_or("h264");
    assert_eq!(exit.stats.clients.len(), 2, "{}", exit.report());
    for c in &exit.stats.clients {
        assert_eq!(c.codec, codec, "{}", exit.report());
        assert!(
            c.sent >= 1,
            "client {} got no frame\n{}",
            c.id,
            exit.report()
        );
    }
}

#[test]
fn idle_guest_second_client_h264() {
    idle_guest_second_client(None);
}

#[test]
fn idle_guest_second_client_vp8() {
    idle_guest_second_client(Some("vp8"));
}

/// Starts remote-viewer on `xvfb` for `server`. `overlay`: let the widget use the
/// GstVideoOverlay path (playbin draws into a child X window) instead of the canvas.
fn start_remote_viewer(xvfb: &Xvfb, server: &Server, dir: &TempDir, overlay: bool) -> ChildGuard {
    let mut cmd = xvfb.command("remote-viewer", dir);
    cmd.arg(server.uri());
    if overlay {
        cmd.env_remove("DISABLE_GSTVIDEOOVERLAY");
    } else {
        cmd.env("DISABLE_GSTVIDEOOVERLAY", "1");
    }
    ChildGuard::spawn("remote-viewer", cmd, dir)
}

/// Takes screenshots of the X screen until one shows the colour bars, upright, in a
/// 16:9 picture, and returns it. Panics after 30 s with the last reason.
fn wait_for_bars(
    xvfb: &mut Xvfb,
    viewer: &mut ChildGuard,
    server: &mut Server,
    dir: &TempDir,
    tag: &str,
) -> Found {
    let path = dir.join(&format!("{tag}.ppm"));
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut last = String::from("no screenshot taken");
    while Instant::now() < deadline {
        viewer.assert_running("while waiting for its picture");
        server.assert_running("while remote-viewer waited for its picture");
        xvfb.assert_running("while remote-viewer waited for its picture");
        match xvfb.screenshot(&path).and_then(|s| check_screen(&s)) {
            Ok(found) => return found,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "{} shows no correct picture after {CLIENT_TIMEOUT:?}: {last}\nlast screenshot: {}\n{}\n{}",
        viewer.name(),
        path.display(),
        viewer.logs(),
        server.logs()
    );
}

/// The bars picture inside a screenshot, checked.
fn check_screen(screen: &test_guest::Image) -> Result<Found, String> {
    let found = find_bars(screen, TOLERANCE)?;
    let p = &found.picture;
    let aspect = f64::from(p.width) / f64::from(p.height);
    let want = f64::from(WIDTH) / f64::from(HEIGHT);
    if p.width < 320 || (aspect / want - 1.0).abs() > 0.05 {
        return Err(format!(
            "found the bars at {found}, which is not a 16:9 picture of a useful size"
        ));
    }
    test_guest::check_bars(p, TOLERANCE).map_err(|e| format!("at {found}: {e}"))?;
    test_guest::check_upright_bars(p, TOLERANCE).map_err(|e| format!("at {found}: {e}"))?;
    Ok(found)
}

/// Waits until the moving square was seen at `positions` different places (the picture is
/// live, not a frozen frame), every screenshot being a correct picture.
fn wait_for_motion(
    xvfb: &mut Xvfb,
    viewer: &mut ChildGuard,
    server: &mut Server,
    dir: &TempDir,
    positions: usize,
) {
    let mut seen = BTreeSet::new();
    for n in 0.. {
        let found = wait_for_bars(xvfb, viewer, server, dir, "motion");
        if let Some(x) = square_x(&found.picture) {
            seen.insert(x);
        }
        if seen.len() >= positions {
            return;
        }
        assert!(
            n < 60,
            "the moving square was only seen at {seen:?} in {n} screenshots: the picture does \
             not move\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn remote_viewer_shows_bars(overlay: bool) {
    let dir = TempDir::new(if overlay { "rv-overlay" } else { "rv" });
    let mut xvfb = Xvfb::start(&dir);
    let mut server = Server::start(&dir, BARS, None);
    let mut viewer = start_remote_viewer(&xvfb, &server, &dir, overlay);

    let found = wait_for_bars(&mut xvfb, &mut viewer, &mut server, &dir, "screen");
    eprintln!(
        "remote-viewer shows the bars at {found} on {}",
        xvfb.display()
    );
    wait_for_motion(&mut xvfb, &mut viewer, &mut server, &dir, 3);

    viewer.kill();
    let exit = server.stop();
    exit.assert_cookies_balanced(10);
    assert!(exit.encoded("h264") > 0, "{}", exit.report());
    let client = only_client(&exit, "h264");
    assert!(
        client.sent >= 10,
        "remote-viewer got only {} frames\n{}",
        client.sent,
        exit.report()
    );
}

#[test]
fn remote_viewer_under_xvfb() {
    remote_viewer_shows_bars(false);
}

#[test]
fn remote_viewer_under_xvfb_overlay() {
    remote_viewer_shows_bars(true);
}

/// Keyboard and mouse events from remote-viewer reach the server's inputs channel (logged at
/// `GST_DEBUG=spice-shim:5`; the embedder's callback gets the same events): a click in the middle
/// of the picture arrives as a position in scanout pixels plus press and release, a key as its
/// PC scancodes.
#[test]
fn remote_viewer_sends_keyboard_and_mouse() {
    let dir = TempDir::new("inputs");
    let mut xvfb = Xvfb::start(&dir);
    let mut server = Server::start_with_env(&dir, BARS, None, &[("GST_DEBUG", "spice-shim:5")]);
    let mut viewer = start_remote_viewer(&xvfb, &server, &dir, false);
    let found = wait_for_bars(&mut xvfb, &mut viewer, &mut server, &dir, "inputs");

    // The middle of the picture, in screen and in scanout coordinates.
    let (pw, ph) = (found.picture.width, found.picture.height);
    let (sx, sy) = (found.x + pw / 2, found.y + ph / 2);
    let (ex, ey) = (WIDTH / 2, HEIGHT / 2);
    let xdotool = |args: &[&str]| {
        let status = std::process::Command::new("xdotool")
            .env("DISPLAY", xvfb.display())
            .args(args)
            .status()
            .expect("xdotool runs");
        assert!(status.success(), "xdotool {args:?}: {status}");
    };
    xdotool(&["mousemove", &sx.to_string(), &sy.to_string()]);
    xdotool(&["click", "1"]);
    xdotool(&["key", "a"]);

    let wanted = [
        "input MousePress { button: 1",
        "input MouseRelease { button: 1",
    ];
    let got = poll(Duration::from_secs(20), || {
        let log = server.stderr();
        let key = log.contains("input KeyScancode([30, 158])")
            || (log.contains("input KeyDown { code: 30") && log.contains("input KeyUp"));
        (key && wanted.iter().all(|w| log.contains(w))).then_some(log)
    })
    .unwrap_or_else(|| {
        panic!(
            "the server did not get the click and the key\n{}",
            server.logs()
        )
    });
    // The last position before the press is the middle of the scanout (within the scaling error).
    let press = got.find(wanted[0]).unwrap();
    let before = &got[..press];
    let pos = before
        .rfind("input MousePosition { x: ")
        .map(|i| &before[i + "input MousePosition { x: ".len()..])
        .unwrap_or_else(|| panic!("no position before the press\n{}", server.logs()));
    let nums: Vec<u32> = pos
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .take(2)
        .collect();
    let tol = 2 * WIDTH / pw.max(1) + 4;
    assert!(
        nums.len() == 2 && nums[0].abs_diff(ex) <= tol && nums[1].abs_diff(ey) <= tol,
        "click at screen {sx},{sy} arrived as {nums:?}, expected about {ex},{ey}"
    );

    viewer.kill();
    let exit = server.stop();
    exit.assert_cookies_balanced(1);
}

/// A GL-style guest stores its frames bottom-up (y0_top false): the shim leaves TOP_DOWN off in
/// STREAM_CREATE and the client turns the picture upright, with no CPU flip on the server.
#[test]
fn bottom_up_guest_reaches_the_client_upright() {
    let dir = TempDir::new("bottom-up");
    let mut args = BARS.to_vec();
    args.push("--bottom-up");
    let server = Server::start(&dir, &args, None);
    spicy_screenshot(&dir, "shot", &server, None).expect_bars(WIDTH, HEIGHT);
    let exit = server.stop();
    assert!(
        exit.stderr.contains("(bottom-up)"),
        "the stream was not created for a bottom-up scanout\n{}",
        exit.report()
    );
    exit.assert_cookies_balanced(1);
}

#[test]
fn password() {
    let dir = TempDir::new("password");
    let server = Server::start(&dir, BARS, Some("s3cret"));

    for (name, password) in [("wrong", Some("wrong")), ("none", None)] {
        spicy_screenshot(&dir, name, &server, password).expect_refused();
    }
    spicy_screenshot(&dir, "right", &server, Some("s3cret")).expect_bars(WIDTH, HEIGHT);

    let exit = server.stop();
    let refused = exit.stderr.matches("ticket refused").count();
    assert!(
        refused >= 2,
        "the server logged {refused} refused tickets, expected one per bad password\n{}",
        exit.report()
    );
    assert!(
        !exit.stderr.contains("no password set"),
        "the server says it has no password\n{}",
        exit.report()
    );
    exit.assert_cookies_balanced(1);
    // Only the client with the right password got a display channel.
    only_client(&exit, "h264");
}

#[test]
fn killed_client_leaves_others_working() {
    let dir = TempDir::new("killed");
    let mut xvfb = Xvfb::start(&dir);
    let mut server = Server::start(&dir, BARS, None);
    let mut viewer = start_remote_viewer(&xvfb, &server, &dir, false);
    wait_for_bars(&mut xvfb, &mut viewer, &mut server, &dir, "before");
    let peers = display_peers(&server.stderr());
    let [peer] = peers.as_slice() else {
        panic!(
            "expected one display channel, the server logged {peers:?}\n{}",
            server.logs()
        );
    };

    // Mid-stream, without a goodbye.
    assert!(viewer.signal(Signal::KILL), "cannot kill remote-viewer");
    assert!(
        viewer.wait_timeout(Duration::from_secs(10)).is_some(),
        "remote-viewer survived SIGKILL"
    );
    let closed = format!("{peer}: display channel closed");
    assert!(
        server.wait_for_stderr(&closed, Duration::from_secs(15)),
        "the server did not notice that remote-viewer ({peer}) died\n{}",
        server.logs()
    );
    server.assert_running("after a client was killed");

    spicy_screenshot(&dir, "after", &server, None).expect_bars(WIDTH, HEIGHT);
    server.assert_running("after the second client");

    let exit = server.stop();
    exit.assert_cookies_balanced(10);
    let killed = exit.client(peer);
    assert!(
        killed.disconnected && killed.sent > 0,
        "line of the killed client: {killed:?}\n{}",
        exit.report()
    );
    let closed_at = exit.stderr.find(&closed).expect("logged above");
    let stopping_at = exit.stderr.find("spice-shim: stopping");
    assert!(
        stopping_at.is_some_and(|s| closed_at < s),
        "the killed client's channel was closed only at shutdown\n{}",
        exit.report()
    );
    let others: Vec<_> = exit
        .stats
        .clients
        .iter()
        .filter(|c| &c.peer != peer)
        .collect();
    assert!(
        others.len() == 1 && others[0].sent > 0,
        "spicy-screenshot's client line: {others:?}\n{}",
        exit.report()
    );
}

/// A client that stops reading (SIGSTOP) must not stall the guest or the other clients, and
/// gets a correct, moving picture again once it reads again.
#[test]
fn stalled_client_recovers_and_blocks_nobody() {
    const STALL: Duration = Duration::from_secs(8);
    let dir = TempDir::new("stalled");
    let mut xvfb = Xvfb::start(&dir);
    let started = Instant::now();
    let mut server = Server::start(&dir, BARS, None);
    let mut viewer = start_remote_viewer(&xvfb, &server, &dir, false);
    wait_for_bars(&mut xvfb, &mut viewer, &mut server, &dir, "before");

    assert!(viewer.signal(Signal::STOP), "cannot stop remote-viewer");
    std::thread::sleep(STALL);
    spicy_screenshot(&dir, "during", &server, None).expect_bars(WIDTH, HEIGHT);
    assert!(viewer.signal(Signal::CONT), "cannot continue remote-viewer");

    wait_for_motion(&mut xvfb, &mut viewer, &mut server, &dir, 3);
    viewer.kill();
    let elapsed = started.elapsed();
    let exit = server.stop();
    // The guest draws at 30 fps unless its buffers are not given back; allow for a slow,
    // loaded machine, but not for a guest that stopped during the stall.
    let min = (elapsed.as_secs_f64() * 30.0 * 0.3) as u64;
    exit.assert_cookies_balanced(min);
    assert_eq!(exit.stats.clients.len(), 2, "{}", exit.report());
}

/// `--video-codecs <codec>` alone: spicy-screenshot (which decodes all three) gets the bars in
/// that codec.
fn single_codec(codec: &str) {
    let dir = TempDir::new(codec);
    let mut args = BARS.to_vec();
    args.extend(["--video-codecs", codec]);
    let server = Server::start(&dir, &args, None);

    spicy_screenshot(&dir, "shot", &server, None).expect_bars(WIDTH, HEIGHT);

    let exit = server.stop();
    exit.assert_cookies_balanced(1);
    assert!(exit.encoded(codec) > 0, "{}", exit.report());
    only_client(&exit, codec);
}

#[test]
fn mjpeg_only() {
    single_codec("mjpeg");
}

#[test]
fn vp8_only() {
    single_codec("vp8");
}

/// The readiness poll and the exit report parser agree with a server that gets no client.
#[test]
fn server_without_clients_reports_balanced_cookies() {
    let dir = TempDir::new("noclient");
    let server = Server::start(&dir, BARS, None);
    assert!(
        poll(Duration::from_secs(10), || server
            .stderr()
            .contains("test guest")
            .then_some(()))
        .is_some()
    );
    std::thread::sleep(Duration::from_secs(1));
    let exit = server.stop();
    exit.assert_cookies_balanced(1);
    assert!(exit.stats.clients.is_empty(), "{}", exit.report());
}

// Checks of the screenshot locator itself, on synthetic screens: it must find a scaled picture
// inside a desktop, and the checks must reject wrong pictures.

/// A fake X screen: black desktop, a dark grey title bar, and a `w`x`h` bars picture at
/// (`x`, `y`), upside down if `flip`, mirrored if `mirror`.
fn fake_screen(w: u32, h: u32, x: u32, y: u32, flip: bool, mirror: bool) -> test_guest::Image {
    let (sw, sh) = (Xvfb::WIDTH, Xvfb::HEIGHT);
    let mut data = vec![0u8; (w * h * 4) as usize];
    test_guest::render_xrgb(test_guest::Pattern::Bars, 37, &mut data, w, h, w * 4).unwrap();
    let picture = test_guest::Image::from_bgrx(&data, w, h, w * 4).unwrap();
    let mut rgb = vec![0u8; (sw * sh * 3) as usize];
    let mut put = |px: u32, py: u32, c: [u8; 3]| {
        let i = ((py * sw + px) * 3) as usize;
        rgb[i..i + 3].copy_from_slice(&c);
    };
    for py in y - 40..y {
        for px in x - 4..x + w + 4 {
            put(px, py, [45, 45, 45]);
        }
    }
    for py in 0..h {
        for px in 0..w {
            let sy = if flip { h - 1 - py } else { py };
            let sx = if mirror { w - 1 - px } else { px };
            let i = ((sy * w + sx) * 3) as usize;
            let c = [picture.rgb[i], picture.rgb[i + 1], picture.rgb[i + 2]];
            put(x + px, y + py, c);
        }
    }
    test_guest::Image::new(sw, sh, rgb).unwrap()
}

#[test]
fn locator_finds_scaled_picture() {
    for (w, h, x, y) in [
        (1280, 720, 5, 51),
        (960, 540, 300, 200),
        (640, 360, 957, 637),
    ] {
        let found = check_screen(&fake_screen(w, h, x, y, false, false))
            .unwrap_or_else(|e| panic!("{w}x{h}+{x}+{y}: {e}"));
        assert_eq!(
            (found.x, found.y, found.picture.width, found.picture.height),
            (x, y, w, h)
        );
        assert!(square_x(&found.picture).is_some(), "no square in {w}x{h}");
    }
}

#[test]
fn locator_rejects_wrong_pictures() {
    let flipped = check_screen(&fake_screen(960, 540, 300, 200, true, false));
    assert!(
        flipped.as_ref().is_err_and(|e| e.contains("upside down")),
        "upside down: {:?}",
        flipped.map(|f| f.to_string())
    );
    let mirrored = check_screen(&fake_screen(960, 540, 300, 200, false, true));
    assert!(mirrored.is_err(), "mirrored picture accepted");
    let blank = test_guest::Image::new(
        Xvfb::WIDTH,
        Xvfb::HEIGHT,
        vec![0; (Xvfb::WIDTH * Xvfb::HEIGHT * 3) as usize],
    )
    .unwrap();
    assert!(check_screen(&blank).is_err(), "blank screen accepted");
}

/// The X pointer image (XFixes) on `xvfb`: width, height, hot spot and ARGB words.
fn x_pointer(xvfb: &Xvfb) -> (u32, u32, u32, u32, Vec<u32>) {
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(util::workspace_root().join("cli/tests/xcursor.py"))
        .env("DISPLAY", xvfb.display())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "xcursor.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 5, "{text}");
    let n = |i: usize| f[i].parse::<u32>().unwrap();
    let pixels = f[4]
        .split(',')
        .map(|p| u32::from_str_radix(p, 16).unwrap())
        .collect();
    (n(0), n(1), n(2), n(3), pixels)
}

/// The guest's pointer is drawn by the client: over remote-viewer's picture the X pointer is
/// the test guest's 32x32 arrow with its hot spot at the tip (client mouse mode), pixel for
/// pixel; with `--cursor none` it is not.
#[test]
fn remote_viewer_shows_the_guests_arrow_as_its_pointer() {
    let dir = TempDir::new("pointer");
    let mut xvfb = Xvfb::start(&dir);
    let mut server = Server::start(&dir, BARS, None);
    let mut viewer = start_remote_viewer(&xvfb, &server, &dir, false);
    let found = wait_for_bars(&mut xvfb, &mut viewer, &mut server, &dir, "pointer");
    let (sx, sy) = (
        found.x + found.picture.width / 2,
        found.y + found.picture.height / 2,
    );
    let display = xvfb.display();
    let xdotool = |args: &[&str]| {
        let status = std::process::Command::new("xdotool")
            .env("DISPLAY", &display)
            .args(args)
            .status()
            .expect("xdotool runs");
        assert!(status.success(), "xdotool {args:?}: {status}");
    };
    let arrow = test_guest::arrow();
    let mut last = None;
    let shown = poll(Duration::from_secs(20), || {
        // Moving the pointer over the picture makes the widget set its cursor.
        xdotool(&["mousemove", &sx.to_string(), &sy.to_string()]);
        xdotool(&["mousemove_relative", "--", "1", "1"]);
        let p = x_pointer(&xvfb);
        let ok = p.0 == test_guest::ARROW_SIZE
            && p.1 == test_guest::ARROW_SIZE
            && (p.2, p.3) == (0, 0)
            && p.4 == arrow;
        last = Some((p.0, p.1, p.2, p.3));
        ok.then_some(())
    });
    assert!(
        shown.is_some(),
        "the X pointer over the picture is not the guest's arrow (last: {last:?})\n{}",
        server.logs()
    );
    viewer.kill();
    server.stop().assert_cookies_balanced(1);

    // Without a guest pointer the client does not show the arrow.
    let mut args = BARS.to_vec();
    args.extend(["--cursor", "none"]);
    let mut server = Server::start(&dir, &args, None);
    let mut viewer = start_remote_viewer(&xvfb, &server, &dir, false);
    let found = wait_for_bars(&mut xvfb, &mut viewer, &mut server, &dir, "no-pointer");
    let (sx, sy) = (
        found.x + found.picture.width / 2,
        found.y + found.picture.height / 2,
    );
    xdotool(&["mousemove", &sx.to_string(), &sy.to_string()]);
    std::thread::sleep(Duration::from_secs(1));
    let p = x_pointer(&xvfb);
    assert_ne!(
        p.4, arrow,
        "the arrow is shown although the guest has no pointer"
    );
    viewer.kill();
    server.stop().assert_cookies_balanced(1);
}
